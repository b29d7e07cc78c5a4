"""The `Shape` record: one object of a source, a triangle mesh or a point cloud, with its colour.

One record type for all sources (sources.py): a `Shape` has exactly one of `mesh` (a triangle
mesh, for sources with surfaces) or `points` (a point cloud, for point-only releases). Real
datasets carry no colour: their `color` is a neutral grey (GREY), which is also the base colour of
uncoloured renders (data.colored = False).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from crossjepa.data.meshes import Mesh

GREY = np.array([0.6, 0.6, 0.6], np.float32)


@dataclasses.dataclass
class Shape:
  """One object. Exactly one of mesh / points is set. label = -1 when unlabelled."""
  id: str
  label: int
  split: str
  mesh: Mesh | None
  points: np.ndarray | None
  color: np.ndarray

  def __post_init__(self):
    if (self.mesh is None) == (self.points is None):
      raise ValueError(f'Shape {self.id}: exactly one of mesh / points must be set')
    if self.points is not None:
      p = np.asarray(self.points, np.float32)
      if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f'Shape {self.id}: points must be [M,3], got shape {p.shape}')
      bad = np.flatnonzero(~np.isfinite(p).all(axis=1))
      if bad.size:
        rows = ', '.join(str(int(r)) for r in bad[:10]) + (', ...' if bad.size > 10 else '')
        raise ValueError(f'Shape {self.id}: {bad.size} of its {len(p)} points are not finite '
                         f'(NaN or Inf), at rows [{rows}]; expected finite x, y, z')
      self.points = p
    c = np.asarray(self.color, np.float32).reshape(-1)
    if c.shape != (3,) or np.any(c < 0) or np.any(c > 1):
      raise ValueError(f'Shape {self.id}: color must be 3 floats in [0,1], got {c}')
    self.color = c


@dataclasses.dataclass(frozen=True)
class DeferredShape:
  """A Shape still in its file: the id, label and split come from the source's listing, `load()`
  reads the file. Sources of one file per object yield these, so that prepare's worker processes
  (data.num_workers > 0) parse the files, not the main process; `sources.iter_shapes` loads them
  for every other caller. `read` must pickle (a functools.partial of a module-level function)."""
  id: str
  label: int
  split: str
  read: Callable[[], 'Shape']

  def load(self) -> Shape:
    return self.read()


def loaded(shape: Shape | DeferredShape) -> Shape:
  """The Shape itself, or a DeferredShape read from its file (in the calling process)."""
  return shape.load() if isinstance(shape, DeferredShape) else shape


def point_shape(where: str, sid: str, label: int, split: str, points) -> Shape:
  """A point-cloud Shape; an invalid cloud (NaN / Inf rows, wrong shape) names `where`."""
  try:
    return Shape(sid, label, split, None, points, GREY)
  except ValueError as e:
    raise ValueError(f'{where}: {e}') from None

