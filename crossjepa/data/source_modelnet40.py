"""The `modelnet40` source: ModelNet40 (or its ModelNet10 lists) as `normal_resampled` text files,
or ModelNet40 as `ply_hdf5_2048` h5 files.

Variants (data.variant), in the layouts of shared/DATASETS.md:
  * `ply_hdf5_2048` (default): PointNet's h5 release, 40 classes (shape_names.txt).
  * `normal_resampled`: `<class>/<class>_NNNN.txt` with the release's `modelnet40_shape_names.txt`,
    `modelnet40_{train,test}.txt`.
  * `modelnet10_normal_resampled`: the same tree read through the release's own ModelNet10 lists,
    `modelnet10_shape_names.txt`, `modelnet10_{train,test}.txt` (3,991 / 908 shapes).
The class list is the release's own file. With data.strict_counts the release's class count and
published split counts are asserted, and a listed file that is missing is an error naming it (and
the classes with no file at all). Without it a subset runs: listed files that are absent are
skipped, and a warning states what the split holds (files and classes present, of how many).
"""
from __future__ import annotations

import functools
import glob
import json
import os
import re
from typing import Iterator

from absl import logging
import numpy as np

from crossjepa.data.shape import DeferredShape, Shape, point_shape
from crossjepa.data.source_files import data_root, h5_rows, iter_h5_points, read_lines
from crossjepa.data.source_files import strict_counts

MODELNET40_COUNTS = {'normal_resampled': {'train': 9843, 'test': 2468},
                     'ply_hdf5_2048': {'train': 9840, 'test': 2468},
                     'modelnet10_normal_resampled': {'train': 3991, 'test': 908}}
# normal_resampled variants: (the release's list prefix, its number of classes)
_LISTS = {'normal_resampled': ('modelnet40', 40), 'modelnet10_normal_resampled': ('modelnet10', 10)}
_REPORTED: set[tuple[str, str]] = set()   # (root, split) subsets already described in a warning


def _modelnet_variant(data_config) -> str:
  variant = data_config.variant or 'ply_hdf5_2048'
  if variant not in MODELNET40_COUNTS:
    raise ValueError(f'data.variant for modelnet40 must be one of {list(MODELNET40_COUNTS)}, '
                     f'got {variant!r}')
  return variant


def class_names(data_config) -> list[str]:
  root = data_root(data_config)
  variant = _modelnet_variant(data_config)
  prefix, expected = _LISTS.get(variant, ('', 40))
  fname = f'{prefix}_shape_names.txt' if prefix else 'shape_names.txt'
  path = os.path.join(root, fname)
  names = read_lines(path, f'the {expected} class names of the release, one per line')
  if len(set(names)) != len(names):
    raise ValueError(f'{path}: class names repeat')
  if variant == 'ply_hdf5_2048' or strict_counts(data_config):
    if len(names) != expected:
      raise ValueError(f'{path}: expected the release\'s {expected} class names, found '
                       f'{len(names)} ({_subset_hint(data_config, variant, root)})')
  return names


def _subset_hint(data_config, variant: str, root: str) -> str:
  """How to read a tree whose class list is not the release's full one."""
  if variant != 'ply_hdf5_2048':
    return 'set data.strict_counts=False for a subset'
  chosen = (f'data.variant = {variant!r}' if data_config.variant else
            "data.variant = '' reads the default, ply_hdf5_2048")
  text_lists = [f for f in ('modelnet40_train.txt', 'modelnet10_train.txt')
                if os.path.isfile(os.path.join(root, f))]
  if text_lists:
    return (f'{chosen}, which has all 40 classes; this root holds the text release\'s '
            f'{text_lists[0]}: set data.variant=normal_resampled (or '
            'modelnet10_normal_resampled), where data.strict_counts=False allows a subset')
  return (f'{chosen}, which always has all 40 classes; a subset of classes is read from the '
          'text release (data.variant=normal_resampled) with data.strict_counts=False')


def _modelnet_class_of(shape_id: str) -> str:
  # `flower_pot_0001` -> `flower_pot`: strip only the last `_NNNN`.
  match = re.fullmatch(r'(.+)_(\d+)', shape_id)
  if not match:
    raise ValueError(f'ModelNet40 id {shape_id!r} does not end in _NNNN')
  return match.group(1)


def _listed_ids(data_config, split) -> tuple[str, list[str]]:
  root = data_root(data_config)
  prefix, _ = _LISTS[_modelnet_variant(data_config)]
  path = os.path.join(root, f'{prefix}_{split}.txt')
  ids = read_lines(path, f'the {prefix} {split} ids, one per line (e.g. chair_0001)')
  expected = MODELNET40_COUNTS[_modelnet_variant(data_config)][split]
  if strict_counts(data_config) and len(ids) != expected:
    raise ValueError(f'{path}: expected {expected} ids in the full release, found {len(ids)}')
  return path, ids


def _modelnet_ids(data_config, split) -> list[tuple[str, str, str]]:
  """(id, class, file) of every listed shape whose file is present (all of them under strict
  counts, else an error naming the missing ones)."""
  root = data_root(data_config)
  names = class_names(data_config)
  listing, ids = _listed_ids(data_config, split)
  present, missing, unknown = [], [], []
  for sid in ids:
    cls = _modelnet_class_of(sid)
    if cls not in names:
      unknown.append(sid)
      continue
    path = os.path.join(root, cls, f'{sid}.txt')
    (present if os.path.isfile(path) else missing).append((sid, cls, path))
  strict = strict_counts(data_config)
  names_file = os.path.basename(listing).replace(f'_{split}.txt', '_shape_names.txt')
  if unknown and strict:
    raise ValueError(f'{listing}: {len(unknown)} id(s) of classes not in {names_file}, e.g. '
                     f'{unknown[:3]}')
  if missing and strict:
    absent = sorted({c for _, c, _ in missing} - {c for _, c, _ in present})
    raise FileNotFoundError(
        f'{root}: {len(missing)} of the {len(ids)} files listed in {os.path.basename(listing)} '
        f'are missing (e.g. {[m[2] for m in missing[:3]]})'
        + (f'; classes with no file at all: {absent}' if absent else '')
        + '; expected lines of x,y,z,nx,ny,nz. Set data.strict_counts=False to use the files '
          'that are there')
  if (missing or unknown) and (root, split) not in _REPORTED:
    _REPORTED.add((root, split))
    classes = sorted({c for _, c, _ in present})
    logging.warning('modelnet40 %s (%s): a subset, %d of the %d listed files in %d of the %d '
                    'classes (%s); %d listed files are missing, %d have an unlisted class',
                    split, root, len(present), len(ids), len(classes), len(names),
                    ', '.join(classes[:10]) + (' ...' if len(classes) > 10 else ''),
                    len(missing), len(unknown))
  if not present:
    raise FileNotFoundError(f'{root}: none of the {len(ids)} files listed in '
                            f'{os.path.basename(listing)} is there (e.g. '
                            f'{[m[2] for m in missing[:3]]})')
  return present


_COLUMNS = ('x', 'y', 'z', 'nx', 'ny', 'nz')


def read_xyz_normals(path: str) -> np.ndarray:
  """A `normal_resampled` file (lines of x,y,z,nx,ny,nz) -> its points [M,3] f32.

  Parsed by pyarrow's CSV reader, about 3.5x `np.loadtxt` on a 10,000-line file and the same
  float32 values. Every row must have the 6 columns (an error names the file and the row); the
  normals are not used, so only x, y, z are converted (a malformed x, y or z is an error, and a
  NaN or Inf in them is rejected by the Shape).
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from pyarrow import csv  # pylint: disable=g-import-not-at-top
  xyz = _COLUMNS[:3]
  try:
    table = csv.read_csv(
        path, read_options=csv.ReadOptions(column_names=list(_COLUMNS), use_threads=False),
        parse_options=csv.ParseOptions(delimiter=','),
        convert_options=csv.ConvertOptions(column_types={c: pa.float32() for c in xyz},
                                           include_columns=list(xyz)))
  except pa.ArrowInvalid as e:
    message = str(e).replace('CSV parse error: ', '')
    columns = re.search(r'Expected 6 columns, got (\d+)', message)
    if columns:
      raise ValueError(f'{path}: expected 6 columns (x,y,z,nx,ny,nz), found {columns.group(1)} '
                       f'({message})') from None
    raise ValueError(f'{path}: cannot parse as comma-separated floats x,y,z,nx,ny,nz: '
                     f'{message}') from None
  if table.num_rows == 0:
    raise ValueError(f'{path}: no points (expected lines of x,y,z,nx,ny,nz)')
  return np.stack([table.column(c).to_numpy() for c in xyz], axis=1)


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


def _read_shape(path: str, sid: str, label: int, split: str) -> Shape:
  return point_shape(path, sid, label, split, read_xyz_normals(path))


def iter_shapes(data_config, split) -> Iterator[Shape | DeferredShape]:
  """normal_resampled: one DeferredShape per listed file (parsed on load); h5: Shapes."""
  variant = _modelnet_variant(data_config)
  names = class_names(data_config)
  root = data_root(data_config)
  if variant in _LISTS:
    for sid, cls, path in _modelnet_ids(data_config, split):
      full_id, label = f'{_LISTS[variant][0]}/{sid}', names.index(cls)
      yield DeferredShape(full_id, label, split,
                          functools.partial(_read_shape, path, full_id, label, split))
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
  if _modelnet_variant(data_config) in _LISTS:
    return len(_modelnet_ids(data_config, split))
  return sum(h5_rows(p) for p in _h5_split_files(data_config, split, 'ply_data_'))
