"""Shape sources: every dataset the project reads, as a stream of `Shape` records.

One record type for all sources (shape.py): a `Shape` has exactly one of `mesh` (a triangle mesh,
for sources with surfaces) or `points` (a point cloud, for point-only releases). Downstream
(`prepare`) samples / normalises to the unit sphere; sources return the data as stored, except the
synthetic benchmark whose instances are already unit-sphere normalised.

Sources (`data.source`), layouts per shared/DATASETS.md, one module each (the layout, its splits and
their checks are described there):

- `synthetic` (source_synthetic.py): the embedded procedural benchmark, splits `train`, `test`,
  `pretrain` and `teacher`, disjoint by instance.
- `mesh_folder` (source_mesh_folder.py): a tree of mesh files; classes from the folders, splits
  `train` / `test` from the tree's own layout or a seeded stratified split, and `pretrain`.
- `modelnet40` (source_modelnet40.py): variant `normal_resampled` or `ply_hdf5_2048` (default).
- `scanobjectnn` (source_scanobjectnn.py): official `h5_files` folder, variant OBJ_BG | OBJ_ONLY |
  PB_T25 | PB_T25_R | PB_T50_R | PB_T50_RS (default).
- `shapenet55` (source_shapenet55.py): Point-BERT's `shapenet_pc/*.npy` + `ShapeNet-55/{train,
  test}.txt`; split `all` = train + test.

Each source module answers `class_names(data_config)`, `available_splits(data_config)`,
`iter_shapes(data_config, split)` (Shapes, or DeferredShapes read on `load()`) and
`count(data_config, split)`; this module checks data.source
and the split, then asks the source's module.

Real datasets carry no colour: their `color` is a neutral grey (shape.GREY). The dataset shapes are
asserted (40 / 15 class names, 2048 points, 6 columns, 8192 points); the published split counts
only when `data.strict_counts` is True (False in configs/default.py, so that tests can use tiny
files; the benchmark configs set it).
"""
from __future__ import annotations

from typing import Iterator

from crossjepa.data import shape as shape_lib
from crossjepa.data import source_mesh_folder
from crossjepa.data import source_modelnet40
from crossjepa.data import source_scanobjectnn
from crossjepa.data import source_shapenet55
from crossjepa.data import source_synthetic
from crossjepa.data.shape import DeferredShape, Shape

_MODULES = {'synthetic': source_synthetic, 'mesh_folder': source_mesh_folder,
            'modelnet40': source_modelnet40, 'scanobjectnn': source_scanobjectnn,
            'shapenet55': source_shapenet55}
SOURCES = tuple(_MODULES)


def _source(data_config):
  """The module of data.source."""
  source = data_config.source
  if source not in SOURCES:
    raise ValueError(f'data.source must be one of {SOURCES}, got {source!r}')
  return _MODULES[source]


def _check_split(data_config, split):
  splits = available_splits(data_config)
  if split not in splits:
    raise ValueError(f'source {data_config.source!r} has no split {split!r}; '
                     f'available: {splits}')


def class_names(data_config) -> list[str]:
  """Class names in label order."""
  return _source(data_config).class_names(data_config)


def available_splits(data_config) -> list[str]:
  """The splits this source provides."""
  return _source(data_config).available_splits(data_config)


splits = available_splits  # the name ARCHITECTURE.md uses


def iter_shapes(data_config, split: str, *, deferred: bool = False
                ) -> Iterator[Shape | DeferredShape]:
  """Yields the Shape records of one split, in a deterministic order.

  With `deferred`, a source of one file per object (ModelNet40 text files, mesh folders) yields
  `DeferredShape`s whose `load()` reads the file (prepare loads them in its worker processes).
  """
  source = _source(data_config)
  _check_split(data_config, split)
  shapes = source.iter_shapes(data_config, split)
  if deferred:
    return shapes
  return (shape_lib.loaded(s) for s in shapes)


def count(data_config, split: str) -> int:
  """Number of shapes in a split, without reading the shapes."""
  source = _source(data_config)
  _check_split(data_config, split)
  return source.count(data_config, split)
