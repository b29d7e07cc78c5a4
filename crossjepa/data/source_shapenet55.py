"""The `shapenet55` source: Point-BERT's ShapeNet-55, `shapenet_pc/*.npy` and its split lists.

Layout: `shapenet_pc/<synset>-<modelid>.npy` (8192 x 3 points) + `ShapeNet-55/{train,test}.txt`.

Split `all` = train + test. Labels are indices into the sorted synset ids, which are also the class
names. Without the split lists every file is in `train` (and `all`).
"""
from __future__ import annotations

import os
from typing import Iterator

from absl import logging
import numpy as np

from crossjepa.data.shape import GREY, Shape
from crossjepa.data.source_files import data_root, read_lines, strict_counts

SHAPENET55_COUNTS = {'train': 41952, 'test': 10518}


def _shapenet_index(data_config):
  """(pc folder, sorted synsets, {split: [file names]}, whether the split lists exist)."""
  root = data_root(data_config)
  pc = os.path.join(root, 'shapenet_pc')
  if not os.path.isdir(pc):
    raise FileNotFoundError(f'{pc}: missing; expected <synset>-<modelid>.npy files')
  files = sorted(f for f in os.listdir(pc) if f.endswith('.npy'))
  if not files:
    raise FileNotFoundError(f'{pc}: no .npy files')
  synsets = sorted({f.split('-', 1)[0] for f in files})
  lists = os.path.join(root, 'ShapeNet-55')
  have = all(os.path.isfile(os.path.join(lists, f'{s}.txt')) for s in ('train', 'test'))
  splits = {}
  if have:
    for s in ('train', 'test'):
      names = read_lines(os.path.join(lists, f'{s}.txt'), 'one .npy file name per line')
      splits[s] = [n if n.endswith('.npy') else n + '.npy' for n in names]
      if strict_counts(data_config) and len(names) != SHAPENET55_COUNTS[s]:
        raise ValueError(f'{lists}/{s}.txt: {len(names)} names, expected {SHAPENET55_COUNTS[s]}')
  else:
    logging.warning('ShapeNet-55: %s/{train,test}.txt not found; every file in %s is in split '
                    "'train' (and 'all')", lists, pc)
    splits['train'] = files
  splits['all'] = [n for s in ('train', 'test') for n in splits.get(s, [])]
  return pc, synsets, splits, have


def iter_shapes(data_config, split) -> Iterator[Shape]:
  pc, synsets, splits, _ = _shapenet_index(data_config)
  for name in splits[split]:
    path = os.path.join(pc, name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: missing (listed in the ShapeNet-55 {split} list)')
    points = np.load(path, allow_pickle=False)
    if points.shape != (8192, 3):
      raise ValueError(f'{path}: expected an (8192, 3) point array, got {points.shape}')
    synset = name.split('-', 1)[0]
    if synset not in synsets:
      raise ValueError(f'{path}: synset {synset!r} has no file in {pc}')
    yield Shape(f'shapenet55/{os.path.splitext(name)[0]}', synsets.index(synset), split, None,
                points.astype(np.float32), GREY)


def class_names(data_config) -> list[str]:
  return _shapenet_index(data_config)[1]


def available_splits(data_config) -> list[str]:
  _, _, _, have = _shapenet_index(data_config)
  return ['train', 'test', 'all'] if have else ['train', 'all']


def count(data_config, split: str) -> int:
  return len(_shapenet_index(data_config)[2][split])
