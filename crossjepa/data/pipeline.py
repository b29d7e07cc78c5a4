"""grain input pipeline over the prepared records: training batches and evaluation arrays.

Training (docs/ARCHITECTURE.md "Training batch"): the union of the pretraining splits, sliced per
host (`jax.process_index()`), globally shuffled with the run seed and repeated forever (grain reseeds
the shuffle every epoch), then per object: `train.views_per_step` of the V views drawn at random,
augmentation, dtype conversion; fixed-size batches (remainder dropped). Only the features the recipe
reads are decoded (no images unless asked for; `teacher/groups` only for the per-group target).
`train_iterator` returns grain's checkpointable iterator (get_state / set_state).

Augmentation (rotation about up, scale + translation with the camera moving along, clipped
jitter; poses kept consistent with the moved points) is crossjepa.data.augment's numpy twin, drawn
per object from the RandomMap's numpy Generator after the view subsampling.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np

from crossjepa import imaging
from crossjepa.data import augment
from crossjepa.data import records

EVAL_KEYS = ('points', 'centers', 'groups', 'label')
_BASE_TRAIN_KEYS = ('points', 'centers', 'groups', 'label', 'views/world_to_cam',
                    'views/intrinsics', 'views/hist', 'views/corr', 'teacher/cls')


def train_keys(config, *, need_images: bool = False, need_groups_target: bool | None = None
               ) -> list[str]:
  if need_groups_target is None:
    need_groups_target = config.train.target == 'groups'
  keys = list(_BASE_TRAIN_KEYS)
  if need_images:
    keys.append('views/image')
  if need_groups_target:
    keys.append('teacher/groups')
  return keys


# ------------------------------------------------------------------------------------------ targets
STATS_EPS = 1e-3   # floor of a target dimension's std (dims that barely vary are not blown up)


def teacher_stats(config, workdir, splits: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Per-dimension mean and std of the cached teacher targets over the pretraining splits:
  {'cls': {'mean', 'std'} over objects x views; 'groups': {...} over the visible entries only}.

  Computed once from the records and kept beside them (`teacher_stats-<splits>.npz`, written
  atomically); records never change once prepared, so the file stays valid with them.
  """
  splits = list(splits if splits is not None else config.data.pretrain_splits)
  directory = records.dataset_dir(config, workdir)
  path = os.path.join(directory, f'teacher_stats-{"+".join(splits)}.npz')
  if os.path.exists(path):
    with np.load(path) as f:
      return {k: {'mean': f[f'{k}/mean'], 'std': f[f'{k}/std']}
              for k in ('cls', 'groups') if f'{k}/mean' in f}
  builder = records.open_dataset(config, workdir)
  records.check_full_records(builder)
  keys = ['teacher/cls', 'views/corr']
  if 'teacher/groups' in records.flat_keys(builder.info.features):   # data.cache_group_features
    keys.append('teacher/groups')
  sums: dict[str, list] = {}
  for split in splits:
    source = records.RecordSource(builder, split, keys)
    for start in range(0, len(source), 256):
      for item in source.__getitems__(range(start, min(len(source), start + 256))):
        visible = np.asarray(item['views']['corr']).reshape(-1) >= 0
        for key, x in item['teacher'].items():
          x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
          if key == 'groups':
            x = x[visible]
          acc = sums.setdefault(key, [0, 0.0, 0.0])
          acc[0] += len(x)
          acc[1] = acc[1] + x.sum(0)
          acc[2] = acc[2] + np.square(x).sum(0)
  out = {}
  for key, (n, s1, s2) in sums.items():
    if n == 0:
      raise ValueError(f'teacher_stats: no {key} target entries in splits {splits} of {directory}')
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - np.square(mean), 0.0))
    out[key] = {'mean': mean.astype(np.float32), 'std': np.maximum(std, STATS_EPS).astype(np.float32)}
  from crossjepa import fileio  # pylint: disable=g-import-not-at-top
  flat = {f'{k}/{s}': v[s] for k, v in out.items() for s in ('mean', 'std')}
  fileio.atomic_save_npz(path, flat)
  return out


def standardize_targets(teacher: Mapping[str, np.ndarray], corr: np.ndarray,
                        stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """(x - mean) / std per dimension; groups entries that are not visible (corr < 0) stay zero."""
  out = dict(teacher)
  if 'cls' in out and 'cls' in stats:
    out['cls'] = ((out['cls'] - stats['cls']['mean']) / stats['cls']['std']).astype(np.float32)
  if 'groups' in out and 'groups' in stats:
    z = (out['groups'] - stats['groups']['mean']) / stats['groups']['std']
    out['groups'] = np.where((np.asarray(corr) >= 0)[..., None], z, 0.0).astype(np.float32)
  return out


class TrainTransform:
  """Per object: view subsampling, augmentation, target standardisation, dtypes (a grain
  RandomMap; picklable)."""

  def __init__(self, config, *, need_images: bool, target_stats=None):
    self.views_per_step = int(config.train.views_per_step)
    self.num_views = int(config.data.num_views)
    if not 1 <= self.views_per_step <= self.num_views:
      raise ValueError(f'train.views_per_step={self.views_per_step} must be in [1, data.num_views='
                       f'{self.num_views}]')
    self.augment = augment.Spec.from_config(config.train.augment)
    self.need_images = need_images
    self.target_stats = target_stats

  def __call__(self, ex: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    pick = rng.choice(self.num_views, self.views_per_step, replace=False)
    views = {k: np.asarray(v)[pick] for k, v in ex['views'].items()}
    teacher = {k: np.asarray(v)[pick].astype(np.float32) for k, v in ex['teacher'].items()}
    if self.target_stats is not None:
      teacher = standardize_targets(teacher, views['corr'], self.target_stats)
    points = np.asarray(ex['points'], np.float64)
    centers = np.asarray(ex['centers'], np.float64)
    w2c = np.asarray(views['world_to_cam'], np.float64)
    draw = augment.draw_example(rng, self.augment, points.shape)
    points, centers, w2c = augment.apply_example(points, centers, w2c, draw)
    views['world_to_cam'] = w2c.astype(np.float32)
    views['intrinsics'] = views['intrinsics'].astype(np.float32)
    views['hist'] = views['hist'].astype(np.float32)
    views['corr'] = views['corr'].astype(np.int32)
    if 'image' in views:
      views['image'] = np.asarray(imaging.normalize_images(views['image']), np.float32)
    return {'points': points.astype(np.float32), 'centers': centers.astype(np.float32),
            'groups': np.asarray(ex['groups'], np.int32), 'label': np.int32(ex['label']),
            'views': views, 'teacher': teacher}


# ------------------------------------------------------------------------------------------ training
def _per_host_batch(config) -> int:
  batch, hosts = int(config.train.batch_size), jax.process_count()
  if batch % hosts:
    raise ValueError(f'train.batch_size={batch} is not divisible by the {hosts} hosts')
  return batch // hosts


def train_dataset(config, workdir, splits: Sequence[str] | None = None, *, need_images: bool = False,
                  need_groups_target: bool | None = None) -> grain.MapDataset:
  """Infinite MapDataset of per-host training batches (see the module docstring)."""
  splits = list(splits if splits is not None else config.data.pretrain_splits)
  builder = records.open_dataset(config, workdir)
  records.check_full_records(builder)
  keys = train_keys(config, need_images=need_images, need_groups_target=need_groups_target)
  parts = [grain.MapDataset.source(records.RecordSource(builder, s, keys)) for s in splits]
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
  # Per-host shard first: every host shuffles its own slice with the same seed.
  ds = ds[jax.process_index()::jax.process_count()]
  batch = _per_host_batch(config)
  if len(ds) < batch:
    raise ValueError(f'splits {splits} hold {len(ds)} objects on this host, fewer than one batch '
                     f'({batch}); lower train.batch_size or prepare more objects')
  seed = int(config.seed)
  ds = ds.shuffle(seed=seed).repeat()   # reshuffled every epoch (seed combined with the epoch)
  stats = (teacher_stats(config, workdir, splits)
           if config.recipe == 'crossjepa' and config.train.standardize_target == 'dataset' else None)
  ds = ds.random_map(TrainTransform(config, need_images=need_images, target_stats=stats),
                     seed=seed + 1)
  return ds.batch(batch, drop_remainder=True)


def train_iterator(config, workdir, splits: Sequence[str] | None = None, *,
                   need_images: bool = False, need_groups_target: bool | None = None):
  """Checkpointable iterator of training batches (grain DatasetIterator: get_state / set_state).

  Worker processes: train.num_workers (0 = threads of this process only).
  """
  ds = train_dataset(config, workdir, splits, need_images=need_images,
                     need_groups_target=need_groups_target)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  workers = int(config.train.num_workers)
  if workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it_ds)


# ------------------------------------------------------------------------------------------ evaluation
def _open_source(config, workdir, split: str, keys: Sequence[str]) -> records.RecordSource:
  builder = records.open_dataset(config, workdir)
  return records.RecordSource(builder, split, keys)


def _flat(example: Mapping[str, Any], keys: Sequence[str]) -> dict[str, np.ndarray]:
  out = {}
  for key in keys:
    node = example
    for part in key.split('/'):
      node = node[part]
    if isinstance(node, (bytes, np.bytes_)):   # Text features (ids) come back as bytes
      out[key] = np.asarray(node.decode('utf-8'), object)
    else:
      out[key] = np.asarray(node)
  return out


def load_split(config, workdir, split: str, keys: Sequence[str] = EVAL_KEYS,
               chunk: int = 256) -> dict[str, np.ndarray]:
  """All examples of a split as arrays {key: [n, ...]} (keys like 'views/corr' stay flat)."""
  source = _open_source(config, workdir, split, keys)
  n = len(source)
  arrays: dict[str, np.ndarray] = {}
  for start in range(0, n, chunk):
    items = source.__getitems__(range(start, min(n, start + chunk)))
    for i, item in enumerate(items):
      for key, value in _flat(item, keys).items():
        if key not in arrays:
          # text (ids) varies in length: an object array, not a fixed-width one that would truncate
          dtype = object if value.dtype.kind in 'SUO' else value.dtype
          arrays[key] = np.empty((n,) + value.shape, dtype)
        arrays[key][start + i] = value.item() if value.dtype == object else value
  if n == 0:
    raise ValueError(f'split {split!r} of the prepared dataset is empty')
  if 'label' in arrays:
    arrays['label'] = arrays['label'].astype(np.int32)
  return arrays


def iterate_split(config, workdir, split: str, batch_size: int, keys: Sequence[str] = EVAL_KEYS
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches {key: [batch_size, ...], 'valid': bool [batch_size]} in record order.

  The final batch is padded by repeating its last example (valid = False there), so a jitted
  evaluation sees one shape only.
  """
  source = _open_source(config, workdir, split, keys)
  n = len(source)
  for start in range(0, n, batch_size):
    idx = list(range(start, min(n, start + batch_size)))
    items = [_flat(x, keys) for x in source.__getitems__(idx)]
    pad = batch_size - len(items)
    batch = {k: np.array([x[k].item() if x[k].dtype == object else x[k]
                          for x in items + [items[-1]] * pad]) for k in keys}
    if 'label' in batch:
      batch['label'] = batch['label'].astype(np.int32)
    batch['valid'] = np.arange(batch_size) < len(items)
    yield batch
