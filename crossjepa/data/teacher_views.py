"""The offline teacher's views: every object of a split rendered once and cached (WORKDIR/teacher_views).

Views are identical to those the prepare stage renders for the same object (same seed from
(config.seed, object id), `crossjepa.data.per_object.render_views`). The cache file is
WORKDIR/teacher_views/<split>-<fingerprint>.npz, written atomically; the fingerprint covers every
data.* key that changes a view (`render_settings`), so a changed config renders afresh.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time

from absl import logging
import ml_collections
import numpy as np

from crossjepa import config_util
from crossjepa import fileio
from crossjepa.data import per_object
from crossjepa.data import sources
from crossjepa.data import shape as shape_lib

VIEWS_DIR = 'teacher_views'
VIEWS_FORMAT = 'crossjepa.teacher_views/1'
# data.* keys that do not change a rendered view (so changing them does not re-render)
NON_RENDER_KEYS = ('shards', 'num_workers', 'file_format', 'name', 'keep_images', 'num_groups',
                   'group_size', 'depth_tolerance', 'pretrain_splits', 'eval_train_split',
                   'eval_test_split', 'teacher_chunk')


def config_hash(obj) -> str:
  """sha256 of a JSON-able object (keys sorted)."""
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def render_settings(data_config) -> dict:
  """The data.* settings that determine a rendered view (all but NON_RENDER_KEYS)."""
  return {k: v for k, v in config_util.as_dict(data_config).items() if k not in NON_RENDER_KEYS}


def teacher_data_config(config) -> ml_collections.ConfigDict:
  """config.data with the teacher's source (`teacher.train.source`, '' = data.source)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  source = config.teacher.train.source or config.data.source
  data.source = source
  return data


def _render_task(task):
  shape, data_config, seed = task
  shape = shape_lib.loaded(shape)   # read in the worker
  views = per_object.render_views(shape, data_config, seed)
  return str(shape.id), int(shape.label), views['image']


def render_split(config, workdir: str, split: str, *, data_config=None) -> dict[str, np.ndarray]:
  """Renders (or reads back) every object's views of one split.

  Returns dict(images u8 [n,V,H,W,3], labels i64 [n], ids str [n]) (see the module docstring).
  """
  data_config = data_config if data_config is not None else config.data
  key = config_hash({'format': VIEWS_FORMAT, 'seed': int(config.seed), 'split': split,
                     'data': render_settings(data_config)})[:16]
  path = os.path.join(workdir, VIEWS_DIR, f'{split.replace("/", "_")}-{key}.npz')
  size, num_views = int(data_config.image_size), int(data_config.num_views)
  if os.path.isfile(path):
    with np.load(path, allow_pickle=False) as f:
      out = {'images': f['images'], 'labels': f['labels'], 'ids': f['ids']}
    if out['images'].shape[1:] != (num_views, size, size, 3) or out['images'].dtype != np.uint8:
      raise ValueError(f'{path}: images are {out["images"].dtype} {out["images"].shape}, expected '
                       f'uint8 [n,{num_views},{size},{size},3]; delete the file to re-render')
    logging.info('teacher views: read %d objects of split %r from %s', len(out['ids']), split, path)
    return out

  start = time.time()
  shapes = sources.iter_shapes(data_config, split, deferred=True)
  tasks = ((s, data_config, per_object.object_seed(config.seed, s.id)) for s in shapes)
  workers = per_object.worker_count(data_config)
  if workers > 0:
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      rendered = list(pool.imap(_render_task, tasks, chunksize=8))
  else:
    rendered = [_render_task(t) for t in tasks]
  if not rendered:
    raise ValueError(f'split {split!r} of data.source={data_config.source!r} has no objects; the '
                     'teacher needs some (data.synthetic.teacher_per_class for synthetic)')
  out = {'images': np.stack([r[2] for r in rendered]).astype(np.uint8),
         'labels': np.asarray([r[1] for r in rendered], np.int64),
         'ids': np.asarray([r[0] for r in rendered])}
  fileio.atomic_save_npz(path, out)
  logging.info('teacher views: rendered %d objects x %d views of split %r in %.1f s -> %s',
               len(out['ids']), num_views, split, time.time() - start, path)
  return out
