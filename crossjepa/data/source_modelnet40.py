"""The `modelnet40` source: ModelNet40 as `normal_resampled` text files or `ply_hdf5_2048` h5 files.

Variant (data.variant) `normal_resampled` or `ply_hdf5_2048` (default), in the layouts of
shared/DATASETS.md; the 40 class names are asserted, the published split counts only when
data.strict_counts.
"""
from __future__ import annotations

import glob
import json
import os
import re
from typing import Iterator

import numpy as np

from crossjepa.data.shape import Shape, point_shape
from crossjepa.data.source_files import data_root, h5_rows, iter_h5_points, read_lines
from crossjepa.data.source_files import strict_counts

MODELNET40_COUNTS = {'normal_resampled': {'train': 9843, 'test': 2468},
                     'ply_hdf5_2048': {'train': 9840, 'test': 2468}}


def _modelnet_variant(data_config) -> str:
  variant = data_config.variant or 'ply_hdf5_2048'
  if variant not in MODELNET40_COUNTS:
    raise ValueError(f'data.variant for modelnet40 must be one of {list(MODELNET40_COUNTS)}, '
                     f'got {variant!r}')
  return variant


def class_names(data_config) -> list[str]:
  root = data_root(data_config)
  variant = _modelnet_variant(data_config)
  fname = 'modelnet40_shape_names.txt' if variant == 'normal_resampled' else 'shape_names.txt'
  path = os.path.join(root, fname)
  names = read_lines(path, 'the 40 ModelNet40 class names, one per line')
  if len(names) != 40:
    raise ValueError(f'{path}: expected 40 class names, found {len(names)}')
  return names


def _modelnet_class_of(shape_id: str) -> str:
  # `flower_pot_0001` -> `flower_pot`: strip only the last `_NNNN`.
  match = re.fullmatch(r'(.+)_(\d+)', shape_id)
  if not match:
    raise ValueError(f'ModelNet40 id {shape_id!r} does not end in _NNNN')
  return match.group(1)


def _modelnet_ids(data_config, split) -> list[str]:
  root = data_root(data_config)
  path = os.path.join(root, f'modelnet40_{split}.txt')
  ids = read_lines(path, f'the ModelNet40 {split} ids, one per line (e.g. airplane_0001)')
  expected = MODELNET40_COUNTS['normal_resampled'][split]
  if strict_counts(data_config) and len(ids) != expected:
    raise ValueError(f'{path}: expected {expected} ids in the full release, found {len(ids)}')
  return ids


def _h5_split_files(data_config, split, prefix) -> list[str]:
  """The ply_hdf5_2048 files of a split, from `<split>_files.txt` if present, else by glob."""
  root = data_root(data_config)
  listing = os.path.join(root, f'{split}_files.txt')
  if os.path.isfile(listing):
    # The lists hold paths such as data/modelnet40_ply_hdf5_2048/ply_data_train0.h5.
    files = [os.path.join(root, os.path.basename(p)) for p in read_lines(listing, 'h5 paths')]
  else:
    files = glob.glob(os.path.join(root, f'{prefix}{split}*.h5'))
    files.sort(key=lambda p: int(re.sub(r'\D', '', os.path.basename(p)) or 0))
  if not files:
    raise FileNotFoundError(f'{root}: no {prefix}{split}*.h5 files and no {split}_files.txt')
  for f in files:
    if not os.path.isfile(f):
      raise FileNotFoundError(f'{f}: missing (listed in {listing})')
  return files


def iter_shapes(data_config, split) -> Iterator[Shape]:
  variant = _modelnet_variant(data_config)
  names = class_names(data_config)
  root = data_root(data_config)
  if variant == 'normal_resampled':
    for sid in _modelnet_ids(data_config, split):
      cls = _modelnet_class_of(sid)
      if cls not in names:
        raise ValueError(f'{root}/modelnet40_{split}.txt: id {sid!r} has class {cls!r}, '
                         'not in modelnet40_shape_names.txt')
      path = os.path.join(root, cls, f'{sid}.txt')
      if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: missing; expected lines of x,y,z,nx,ny,nz')
      try:
        table = np.loadtxt(path, delimiter=',', dtype=np.float32, ndmin=2)
      except ValueError as e:
        raise ValueError(f'{path}: cannot parse as comma-separated floats: {e}') from None
      if table.shape[1] != 6:
        raise ValueError(f'{path}: expected 6 columns (x,y,z,nx,ny,nz), found {table.shape[1]}')
      yield point_shape(path, f'modelnet40/{sid}', names.index(cls), split, table[:, :3])
  else:
    total = 0
    for k, path in enumerate(_h5_split_files(data_config, split, 'ply_data_')):
      ids = _modelnet_h5_ids(path)
      for shape in iter_h5_points(path, 2048, 40, split,
                                  f'modelnet40/{split}{k}', ids):
        total += 1
        yield shape
    expected = MODELNET40_COUNTS[variant][split]
    if strict_counts(data_config) and total != expected:
      raise ValueError(f'{root}: ModelNet40 ply_hdf5_2048 {split} has {total} shapes, expected '
                       f'{expected} in the full release')


def _modelnet_h5_ids(h5_path):
  """Ids from PointNet's `ply_data_<split>_<k>_id2file.json` when present, else None."""
  stem = os.path.splitext(os.path.basename(h5_path))[0]     # ply_data_train0
  match = re.fullmatch(r'(.*?)(\d+)', stem)
  if not match:
    return None
  path = os.path.join(os.path.dirname(h5_path), f'{match.group(1)}_{match.group(2)}_id2file.json')
  if not os.path.isfile(path):
    return None
  with open(path, 'r', encoding='utf-8') as f:
    entries = json.load(f)
  if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
    raise ValueError(f'{path}: expected a JSON list of file names')
  return ['modelnet40/' + os.path.splitext(os.path.basename(e))[0] for e in entries]


def available_splits(data_config) -> list[str]:
  del data_config
  return ['train', 'test']


def count(data_config, split: str) -> int:
  if _modelnet_variant(data_config) == 'normal_resampled':
    return len(_modelnet_ids(data_config, split))
  return sum(h5_rows(p) for p in _h5_split_files(data_config, split, 'ply_data_'))
