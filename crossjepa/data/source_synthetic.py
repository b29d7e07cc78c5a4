"""The `synthetic` source: the embedded procedural benchmark (crossjepa.data.synthetic) as Shapes.

Splits `train`, `test`, `pretrain` and `teacher`, disjoint by instance: instance seeds come from
(data.synthetic.seed, split, class, index). The `pretrain` split is meant to be used WITHOUT
labels, but its `label` still holds the class index so that diagnostics (e.g. a probe on the
pretraining set) remain possible; stages that must be label-free ignore it. `teacher` holds the
objects for the offline 2D teacher, disjoint from all the others. Kind `clean` -> Shape.mesh,
`scan` -> Shape.points (ScanObjectNN PB_T50_RS-like partial scans).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from crossjepa.data import synthetic
from crossjepa.data.shape import Shape

SYNTHETIC_SPLITS = ('train', 'test', 'pretrain', 'teacher')


def _synthetic_classes(data_config) -> list[str]:
  n = int(data_config.synthetic.num_classes)
  if n < 0 or n > synthetic.NUM_CLASSES:
    raise ValueError(f'data.synthetic.num_classes must lie in [0, {synthetic.NUM_CLASSES}], got {n}')
  return synthetic.CLASS_NAMES[:n or synthetic.NUM_CLASSES]


def _synthetic_per_class(data_config, split) -> int:
  key = f'{split}_per_class'
  n = int(getattr(data_config.synthetic, key))
  if n < 0:
    raise ValueError(f'data.synthetic.{key} must be >= 0, got {n}')
  return n


def instance_seed(base_seed: int, split: str, class_index: int, index: int) -> int:
  """A 63-bit seed unique to (base seed, split, class, index): disjoint, deterministic splits."""
  state = np.random.SeedSequence(
      [int(base_seed), SYNTHETIC_SPLITS.index(split), int(class_index), int(index)]
  ).generate_state(2, np.uint32)
  return int((int(state[0]) << 31) ^ int(state[1]))


def iter_shapes(data_config, split) -> Iterator[Shape]:
  kind = data_config.synthetic.kind
  if kind not in ('clean', 'scan'):
    raise ValueError(f"data.synthetic.kind must be 'clean' or 'scan', got {kind!r}")
  base_seed = int(data_config.synthetic.seed)
  per_class = _synthetic_per_class(data_config, split)
  names = _synthetic_classes(data_config)
  num_points = int(data_config.synthetic.scan_points)
  # Class-interleaved order, so that any prefix of the stream is class-balanced.
  for index in range(per_class):
    for label, name in enumerate(names):
      seed = instance_seed(base_seed, split, label, index)
      sid = f'synthetic/{split}/{name}_{index:04d}'
      if kind == 'clean':
        mesh, color = synthetic.make_object(label, seed)
        yield Shape(sid, label, split, mesh, None, color)
      else:
        points, color = synthetic.make_scan(label, seed, num_points=num_points)
        yield Shape(sid, label, split, None, points, color)


def class_names(data_config) -> list[str]:
  return list(_synthetic_classes(data_config))


def available_splits(data_config) -> list[str]:
  del data_config
  return list(SYNTHETIC_SPLITS)


def count(data_config, split: str) -> int:
  return _synthetic_per_class(data_config, split) * len(_synthetic_classes(data_config))
