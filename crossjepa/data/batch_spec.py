"""The training batch's structure and shapes (docs/ARCHITECTURE.md "Training batch"), from the
config and the teacher's widths alone: no data is read, no iterator is advanced.

`example_batch(config, teacher, need_images=...)` is a zero batch with the shapes and dtypes the
input pipeline (`crossjepa.data.pipeline`) yields for the recipe, built from the record schema
(`records.features`) and the keys the recipe reads (`pipeline.train_keys`): views subsampled to
`train.views_per_step`, floats (and the normalised image) float32, integers int32. Model init
needs only shapes, so this is what the trainers initialise from.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from crossjepa.data import pipeline
from crossjepa.data import records


def _feature(features, key: str):
  node = features
  for part in key.split('/'):
    node = node[part]
  return node


def example_batch(config, teacher: Mapping[str, Any], *, need_images: bool,
                  batch_size: int = 1) -> dict[str, Any]:
  """A zero training batch of `batch_size` examples; `teacher` holds `width` / `feature_width`."""
  features = records.features(config.data, int(teacher['width']),
                              int(teacher.get('feature_width', 0) or 0) or None)
  views = int(config.train.views_per_step)
  out: dict[str, Any] = {}
  for key in pipeline.train_keys(config, need_images=need_images):
    feature = _feature(features, key)
    shape = tuple(feature.shape)
    if key.startswith(('views/', 'teacher/')):
      shape = (views,) + shape[1:]
    integer = np.issubdtype(np.dtype(feature.np_dtype), np.integer) and key != 'views/image'
    array = np.zeros((batch_size,) + shape, np.int32 if integer else np.float32)
    node = out
    *parents, leaf = key.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = array
  return out
