"""The `mesh_folder` source: a tree of mesh files, its classes, its train / test / pretrain splits.

A tree of mesh files (mesh_readers.MESH_EXTENSIONS: .off .obj .ply .stl .glb .gltf). The class is
the nearest folder above the file that is not `train`/`test` (sorted names = labels); files directly
in root are unlabelled (-1). Companion files (MESH_FOLDER_COMPANIONS: materials, textures, glTF
buffers, notes) are ignored; any other non-mesh file is named in a warning; hidden files and
folders (`.name`) are skipped; a mesh file that does not read is an error naming it. Splits:

- `train` / `test`, the evaluation splits: when any file lies under a `train/` or `test/` folder,
  the tree's own layout (ModelNet's `<class>/{train,test}/x.off`; the innermost such folder
  decides, files outside both are in `train`). Otherwise a seeded stratified split: per class,
  round(data.mesh_folder.test_fraction * n) objects (at least 1 when the class has >= 2, never
  all) go to `test`, drawn with a stream seeded by (data.mesh_folder.split_seed, class name);
  the rest, and every unlabelled file, are in `train`.
- `pretrain`, for self-supervised pretraining: every object of the tree (test objects included,
  with or without a layout, as Point-MAE pretrains on all of ShapeNet; pretraining reads no
  label), LESS the objects that the other splits named in data.pretrain_splits already hold.
  The pipeline concatenates the splits of data.pretrain_splits (pipeline.train_dataset), so this
  is what makes them hold every object exactly once: the default ('pretrain', 'train') gives
  `pretrain` = the test objects and, with `train`, the whole tree; ('pretrain',) alone gives
  `pretrain` = the whole tree; ('train',) pretrains on the train objects only (a held-out test
  set that pretraining never sees). A `pretrain` left empty (e.g. an unlabelled tree, all in
  `train`, with the default) is an error saying so.
"""
from __future__ import annotations

import functools
import hashlib
import os
from typing import Iterator, NamedTuple

from absl import logging
import numpy as np

from crossjepa.data.mesh_readers import MESH_EXTENSIONS, read_mesh
from crossjepa.data.shape import GREY, DeferredShape, Shape
from crossjepa.data.source_files import data_root, strict_counts

# Files that sit beside meshes and are not objects: materials and textures of OBJ / glTF, glTF
# buffers, and notes / metadata. Ignored without a word; any other file that is not a mesh
# (MESH_EXTENSIONS) is reported in a warning by name (e.g. an .fbx we cannot read).
MESH_FOLDER_COMPANIONS = ('.mtl', '.png', '.jpg', '.jpeg', '.bmp', '.tga', '.tif', '.tiff',
                          '.gif', '.webp', '.exr', '.hdr', '.dds', '.ktx', '.ktx2', '.bin',
                          '.txt', '.md', '.json', '.csv', '.yaml', '.yml', '.html', '.pdf', '.log')
MESH_FOLDER_SPLIT_DIRS = ('train', 'test')
_REPORTED_UNREAD: set[tuple[str, tuple[str, ...]]] = set()   # warn once per (root, file list)


class _MeshFile(NamedTuple):
  rel: str               # path under data.root
  cls: str | None        # class folder name, None = unlabelled (a file directly in root)
  split: str             # 'train' | 'test' (the evaluation split; 'pretrain' is chosen later)


def _mesh_folder_settings(data_config) -> tuple[float, int]:
  """(test_fraction, split_seed) of data.mesh_folder, checked."""
  if 'mesh_folder' not in data_config:
    raise ValueError('data.mesh_folder.test_fraction / split_seed are needed to split a '
                     'mesh_folder tree without train/ and test/ folders (configs/default.py '
                     'declares them)')
  fraction = float(data_config.mesh_folder.test_fraction)
  seed = data_config.mesh_folder.split_seed
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'data.mesh_folder.test_fraction must lie in (0, 1), got {fraction}')
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f'data.mesh_folder.split_seed must be an int >= 0, got {seed!r}')
  return fraction, seed


def mesh_folder_test_count(num_objects: int, test_fraction: float) -> int:
  """Objects of a class that go to `test`: round(fraction * n), at least 1 when n >= 2, and
  always at least one left in `train`."""
  if num_objects < 2:
    return 0
  return min(max(int(np.floor(test_fraction * num_objects + 0.5)), 1), num_objects - 1)


def _stratified_test_files(files: dict[str, list[str]], test_fraction: float,
                           seed: int) -> set[str]:
  """The files of the seeded per-class test split. Each class draws from its own stream, seeded by
  (split_seed, class name): adding or removing a class leaves the other classes' splits alone."""
  test = set()
  for cls, rels in files.items():
    class_key = int.from_bytes(hashlib.sha256(cls.encode('utf-8')).digest()[:8], 'little')
    rng = np.random.default_rng([seed, class_key])
    order = rng.permutation(len(rels))
    test.update(rels[i] for i in order[:mesh_folder_test_count(len(rels), test_fraction)])
  return test


def _mesh_folder_index(data_config):
  """(root, [_MeshFile] sorted by path, [relative paths of unread non-mesh files])."""
  root = data_root(data_config)
  found, unread = [], []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))   # .git, .ipynb_checkpoints
    for name in sorted(filenames):
      if name.startswith('.'):          # .DS_Store and other hidden files are not data
        continue
      rel = os.path.relpath(os.path.join(dirpath, name), root)
      ext = os.path.splitext(name)[1].lower()
      if ext in MESH_EXTENSIONS:
        found.append(rel)
      elif ext not in MESH_FOLDER_COMPANIONS:
        unread.append(rel)
  if not found:
    extensions = ', '.join(MESH_EXTENSIONS)
    raise FileNotFoundError(f'data.root={root!r}: no mesh files ({extensions}) found'
                            + (f'; not read: {_examples(unread)}' if unread else ''))
  if unread and (root, tuple(unread)) not in _REPORTED_UNREAD:
    _REPORTED_UNREAD.add((root, tuple(unread)))
    logging.warning('mesh_folder %s: %d files are neither meshes (%s) nor known companions, and '
                    'are not read: %s', root, len(unread), ', '.join(MESH_EXTENSIONS),
                    _examples(unread))
  ids: dict[str, str] = {}
  for rel in found:
    sid = _mesh_folder_id(rel)
    if sid in ids:
      raise ValueError(f'data.root={root!r}: {ids[sid]} and {rel} give the same object id {sid!r}; '
                       'keep one of them')
    ids[sid] = rel
  folders = {rel: rel.split(os.sep)[:-1] for rel in found}
  classes = {rel: ([f for f in parts if f not in MESH_FOLDER_SPLIT_DIRS] or [None])[-1]
             for rel, parts in folders.items()}
  if any(f in MESH_FOLDER_SPLIT_DIRS for parts in folders.values() for f in parts):
    # The tree's own train/test layout (ModelNet's <class>/{train,test}/x.off); the innermost
    # train/ or test/ folder decides, files outside both are in train.
    def split_of(rel):
      marks = [f for f in folders[rel] if f in MESH_FOLDER_SPLIT_DIRS]
      return marks[-1] if marks else 'train'
    entries = [_MeshFile(rel, classes[rel], split_of(rel)) for rel in found]
  else:
    fraction, seed = _mesh_folder_settings(data_config)
    by_class: dict[str, list[str]] = {}
    for rel in found:
      if classes[rel] is not None:      # unlabelled files stay in train: never in a probe's test
        by_class.setdefault(classes[rel], []).append(rel)
    test = _stratified_test_files(by_class, fraction, seed)
    entries = [_MeshFile(rel, classes[rel], 'test' if rel in test else 'train') for rel in found]
  if strict_counts(data_config):
    _check_release(data_config, root, entries)
  return root, entries, unread


def _check_release(data_config, root: str, entries: list[_MeshFile]) -> None:
  """data.strict_counts with a known release (data.mesh_folder.expected_*): the tree must hold its
  published split sizes and class count; the error names what is missing."""
  m = data_config.mesh_folder
  names = sorted({e.cls for e in entries if e.cls is not None})
  problems = []
  if int(m.expected_classes) and len(names) != int(m.expected_classes):
    problems.append(f'{len(names)} classes, expected {int(m.expected_classes)} (found: '
                    f'{", ".join(names[:12])}{" ..." if len(names) > 12 else ""})')
  for split in ('train', 'test'):
    want = int(m[f'expected_{split}'])
    got = [e for e in entries if e.split == split]
    if want and len(got) != want:
      empty = sorted(set(names) - {e.cls for e in got})
      problems.append(f'{split}: {len(got)} objects, expected {want}'
                      + (f' (classes with none: {", ".join(empty)})' if empty else ''))
  if problems:
    raise ValueError(f'mesh_folder {root}: not the full release: ' + '; '.join(problems)
                     + '. Set data.strict_counts=False to use the files that are there')


def _examples(rels: list[str], limit: int = 5) -> str:
  shown = ', '.join(rels[:limit])
  return shown + (f', ... ({len(rels) - limit} more)' if len(rels) > limit else '')


def _mesh_folder_id(rel: str) -> str:
  return os.path.splitext(rel)[0].replace(os.sep, '/')


def _mesh_folder_select(data_config, split) -> tuple[str, list[_MeshFile], list[str]]:
  """(root, the files of `split`, class names). `pretrain` = every object that no other split of
  data.pretrain_splits already holds, so that the pretraining splits together hold each object of
  the tree exactly once (see the module docstring)."""
  root, entries, _ = _mesh_folder_index(data_config)
  names = sorted({e.cls for e in entries if e.cls is not None})
  if split != 'pretrain':
    return root, [e for e in entries if e.split == split], names
  others = [s for s in data_config.pretrain_splits if s != 'pretrain']
  chosen = [e for e in entries if e.split not in others]
  return root, chosen, names


def iter_shapes(data_config, split) -> Iterator[DeferredShape]:
  """One DeferredShape per mesh file of the split (the mesh is read on load)."""
  root, chosen, names = _mesh_folder_select(data_config, split)
  if not chosen:
    # Only 'pretrain' can be empty here (train / test are offered only when they hold objects).
    others = tuple(data_config.pretrain_splits)
    raise ValueError(f'mesh_folder {root}: split {split!r} holds no objects: data.pretrain_splits '
                     f"{others} already hold all of the tree's objects in its other splits. Drop "
                     f"{split!r} from data.pretrain_splits, or pretrain on data.pretrain_splits = "
                     "('pretrain',) (every object).")

  def shapes():
    for entry in chosen:
      sid = _mesh_folder_id(entry.rel)
      label = -1 if entry.cls is None else names.index(entry.cls)
      yield DeferredShape(sid, label, split, functools.partial(
          _read_shape, os.path.join(root, entry.rel), sid, label, split))
  return shapes()


def _read_shape(path: str, sid: str, label: int, split: str) -> Shape:
  return Shape(sid, label, split, read_mesh(path), None, GREY)


def class_names(data_config) -> list[str]:
  _, entries, _ = _mesh_folder_index(data_config)
  return sorted({e.cls for e in entries if e.cls is not None})


def available_splits(data_config) -> list[str]:
  _, entries, _ = _mesh_folder_index(data_config)
  return [s for s in ('train', 'test') if any(e.split == s for e in entries)] + ['pretrain']


def count(data_config, split: str) -> int:
  return len(_mesh_folder_select(data_config, split)[1])
