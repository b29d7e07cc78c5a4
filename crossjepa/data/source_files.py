"""Reading the files of the on-disk dataset layouts: data.root, line lists and h5 point clouds.

Shared by the source families (source_*.py): `data_root` checks data.root, `strict_counts` says
whether the published split counts are asserted (data.strict_counts), `read_lines` reads a list
file, and the h5 helpers read the `data` / `label` arrays of the PointNet-style h5 files of
ModelNet40 (ply_hdf5_2048) and ScanObjectNN.
"""
from __future__ import annotations

import os

import numpy as np

from crossjepa.data.shape import point_shape


def data_root(data_config) -> str:
  root = data_config.root
  if not root:
    raise ValueError(f'data.root must name the folder of the {data_config.source!r} files')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'data.root={root!r} is not a folder (source {data_config.source!r})')
  return root


def strict_counts(data_config) -> bool:
  return bool(data_config.strict_counts)


def read_lines(path, what):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing; expected {what}')
  with open(path, 'r', encoding='utf-8') as f:
    return [line.strip() for line in f if line.strip()]


def h5_dataset(h5file, key, path, expected):
  if key not in h5file:
    raise KeyError(f'{path}: no h5 key {key!r}; expected {expected}; found keys {list(h5file.keys())}')
  return h5file[key]


def iter_h5_points(path, points_per_shape, label_range, split, id_prefix, ids=None,
                   chunk=256):
  """Reads `data` (n, P, 3) and `label` (n,) or (n,1) from one h5 file, a chunk at a time."""
  import h5py  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing h5 file')
  with h5py.File(path, 'r') as f:
    data = h5_dataset(f, 'data', path, f'float (n, {points_per_shape}, 3) points')
    label = h5_dataset(f, 'label', path, 'integer labels (n,) or (n, 1)')
    n = data.shape[0]
    if data.ndim != 3 or data.shape[1:] != (points_per_shape, 3):
      raise ValueError(f'{path}: h5 key data has shape {data.shape}, expected (n, {points_per_shape}, 3)')
    if label.shape not in ((n,), (n, 1)):
      raise ValueError(f'{path}: h5 key label has shape {label.shape}, expected ({n},) or ({n}, 1)')
    if ids is not None and len(ids) != n:
      ids = None
    for start in range(0, n, chunk):
      points = np.asarray(data[start:start + chunk], np.float32)
      labels = np.asarray(label[start:start + chunk]).reshape(-1).astype(np.int64)
      for k in range(len(points)):
        lab = int(labels[k])
        if not 0 <= lab < label_range:
          raise ValueError(f'{path}: row {start + k}: label {lab} outside [0, {label_range})')
        sid = ids[start + k] if ids is not None else f'{id_prefix}_{start + k:05d}'
        yield point_shape(f'{path}: row {start + k}', sid, lab, split, points[k])


def h5_rows(path, key='data'):
  import h5py  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing h5 file')
  with h5py.File(path, 'r') as f:
    return int(h5_dataset(f, key, path, 'float (n, 2048, 3) points').shape[0])

