"""The `scanobjectnn` source: ScanObjectNN's official `h5_files` folder, one h5 file per split.

Variant (data.variant) OBJ_BG | OBJ_ONLY | PB_T25 | PB_T25_R | PB_T50_R | PB_T50_RS (default); the
15 class names are fixed, the published split counts asserted only when data.strict_counts.
"""
from __future__ import annotations

import os
from typing import Iterator

from crossjepa.data.shape import Shape
from crossjepa.data.source_files import data_root, h5_rows, iter_h5_points, strict_counts

SCANOBJECTNN_CLASSES = ['bag', 'bin', 'box', 'cabinet', 'chair', 'desk', 'display', 'door',
                        'shelf', 'table', 'bed', 'pillow', 'sink', 'sofa', 'toilet']
SCANOBJECTNN_VARIANTS = {
    'OBJ_BG': ('main_split', '_objectdataset.h5'),
    'OBJ_ONLY': ('main_split_nobg', '_objectdataset.h5'),
    'PB_T25': ('main_split', '_objectdataset_augmented25_norot.h5'),
    'PB_T25_R': ('main_split', '_objectdataset_augmented25rot.h5'),
    'PB_T50_R': ('main_split', '_objectdataset_augmentedrot.h5'),
    'PB_T50_RS': ('main_split', '_objectdataset_augmentedrot_scale75.h5'),
}
SCANOBJECTNN_COUNTS = {'PB_T50_RS': {'train': 11416, 'test': 2882},
                       'OBJ_BG': {'train': 2309, 'test': 581},
                       'OBJ_ONLY': {'train': 2309, 'test': 581}}


def _scanobjectnn_file(data_config, split) -> str:
  variant = data_config.variant or 'PB_T50_RS'
  if variant not in SCANOBJECTNN_VARIANTS:
    raise ValueError(f'data.variant for scanobjectnn must be one of {list(SCANOBJECTNN_VARIANTS)}, '
                     f'got {variant!r}')
  folder, suffix = SCANOBJECTNN_VARIANTS[variant]
  root = data_root(data_config)
  name = ('training' if split == 'train' else 'test') + suffix
  path = os.path.join(root, folder, name)
  if not os.path.isfile(path) and os.path.isfile(os.path.join(root, name)):
    path = os.path.join(root, name)   # root points at the split folder itself
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing; expected the ScanObjectNN {variant} {split} file '
                            f'(data.root = the h5_files folder)')
  return path


def iter_shapes(data_config, split) -> Iterator[Shape]:
  path = _scanobjectnn_file(data_config, split)
  variant = data_config.variant or 'PB_T50_RS'
  n = h5_rows(path)
  expected = SCANOBJECTNN_COUNTS.get(variant, {}).get(split)
  if strict_counts(data_config) and expected is not None and n != expected:
    raise ValueError(f'{path}: {n} shapes, expected {expected} in the full {variant} release')
  yield from iter_h5_points(path, 2048, 15, split, f'scanobjectnn/{variant}/{split}')


def class_names(data_config) -> list[str]:
  del data_config
  return list(SCANOBJECTNN_CLASSES)


def available_splits(data_config) -> list[str]:
  del data_config
  return ['train', 'test']


def count(data_config, split: str) -> int:
  return h5_rows(_scanobjectnn_file(data_config, split))
