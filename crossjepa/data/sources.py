"""Shape sources: every dataset the project reads, as a stream of `Shape` records.

One record type for all sources (ARCHITECTURE.md, Data): a `Shape` has exactly one of `mesh`
(a triangle mesh, for sources with surfaces) or `points` (a point cloud, for point-only releases).
Downstream (`prepare`) samples / normalises to the unit sphere; sources return the data as stored,
except the synthetic benchmark whose instances are already unit-sphere normalised.

Sources (`data.source`), layouts per shared/DATASETS.md:

- `synthetic`: the embedded procedural benchmark (`crossjepa.data.synthetic`). Splits `train`,
  `test`, `pretrain` and `teacher`, disjoint by instance: instance seeds come from
  (data.synthetic.seed, split, class, index). The `pretrain` split is meant to be used WITHOUT
  labels, but its `label` still holds the class index so that diagnostics (e.g. a probe on the
  pretraining set) remain possible; stages that must be label-free ignore it. `teacher` holds the
  objects for the offline 2D teacher, disjoint from all the others. Kind `clean` -> Shape.mesh,
  `scan` -> Shape.points (ScanObjectNN PB_T50_RS-like partial scans).
- `mesh_folder`: a tree of mesh files (meshes.MESH_EXTENSIONS: .off .obj .ply .stl .glb .gltf).
  The class is the nearest folder above the file that is not `train`/`test` (sorted names =
  labels); files directly in root are unlabelled (-1). Companion files (MESH_FOLDER_COMPANIONS:
  materials, textures, glTF buffers, notes) are ignored; any other non-mesh file is named in a
  warning; hidden files and folders (`.name`) are skipped; a mesh file that does not read is an
  error naming it. Splits:
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
- `modelnet40`: variant `normal_resampled` or `ply_hdf5_2048` (default).
- `scanobjectnn`: official `h5_files` folder, variant OBJ_BG | OBJ_ONLY | PB_T25 | PB_T25_R |
  PB_T50_R | PB_T50_RS (default).
- `shapenet55`: Point-BERT's `shapenet_pc/*.npy` + `ShapeNet-55/{train,test}.txt`; split `all` =
  train + test. Labels are indices into the sorted synset ids, which are also the class names.

Real datasets carry no colour: their `color` is a neutral grey (GREY). The dataset shapes are
asserted (40 / 15 class names, 2048 points, 6 columns, 8192 points); the published split counts
only when `data.strict_counts` is True (False in configs/default.py, so that tests can use tiny
files; the benchmark configs set it).
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from typing import Iterator, NamedTuple

from absl import logging
import numpy as np

from crossjepa.data import synthetic
from crossjepa.data.meshes import MESH_EXTENSIONS, Mesh, read_mesh

GREY = np.array([0.6, 0.6, 0.6], np.float32)
SOURCES = ('synthetic', 'mesh_folder', 'modelnet40', 'scanobjectnn', 'shapenet55')


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


def _source(data_config) -> str:
  source = data_config.source
  if source not in SOURCES:
    raise ValueError(f'data.source must be one of {SOURCES}, got {source!r}')
  return source


def _root(data_config) -> str:
  root = data_config.root
  if not root:
    raise ValueError(f'data.root must name the folder of the {data_config.source!r} files')
  if not os.path.isdir(root):
    raise FileNotFoundError(f'data.root={root!r} is not a folder (source {data_config.source!r})')
  return root


def _strict(data_config) -> bool:
  return bool(data_config.strict_counts)


def _check_split(data_config, split):
  splits = available_splits(data_config)
  if split not in splits:
    raise ValueError(f'source {data_config.source!r} has no split {split!r}; '
                     f'available: {splits}')


def _read_lines(path, what):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing; expected {what}')
  with open(path, 'r', encoding='utf-8') as f:
    return [line.strip() for line in f if line.strip()]


# --------------------------------------------------------------------------- synthetic

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


def _iter_synthetic(data_config, split) -> Iterator[Shape]:
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


# --------------------------------------------------------------------------- mesh folder

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
  root = _root(data_config)
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
  return root, entries, unread


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


def _iter_mesh_folder(data_config, split) -> Iterator[Shape]:
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
      mesh = read_mesh(os.path.join(root, entry.rel))
      yield Shape(_mesh_folder_id(entry.rel), -1 if entry.cls is None else names.index(entry.cls),
                  split, mesh, None, GREY)
  return shapes()


# --------------------------------------------------------------------------- ModelNet40

MODELNET40_COUNTS = {'normal_resampled': {'train': 9843, 'test': 2468},
                     'ply_hdf5_2048': {'train': 9840, 'test': 2468}}


def _modelnet_variant(data_config) -> str:
  variant = data_config.variant or 'ply_hdf5_2048'
  if variant not in MODELNET40_COUNTS:
    raise ValueError(f'data.variant for modelnet40 must be one of {list(MODELNET40_COUNTS)}, '
                     f'got {variant!r}')
  return variant


def _modelnet_names(data_config) -> list[str]:
  root = _root(data_config)
  variant = _modelnet_variant(data_config)
  fname = 'modelnet40_shape_names.txt' if variant == 'normal_resampled' else 'shape_names.txt'
  path = os.path.join(root, fname)
  names = _read_lines(path, 'the 40 ModelNet40 class names, one per line')
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
  root = _root(data_config)
  path = os.path.join(root, f'modelnet40_{split}.txt')
  ids = _read_lines(path, f'the ModelNet40 {split} ids, one per line (e.g. airplane_0001)')
  expected = MODELNET40_COUNTS['normal_resampled'][split]
  if _strict(data_config) and len(ids) != expected:
    raise ValueError(f'{path}: expected {expected} ids in the full release, found {len(ids)}')
  return ids


def _h5_split_files(data_config, split, prefix) -> list[str]:
  """The ply_hdf5_2048 files of a split, from `<split>_files.txt` if present, else by glob."""
  root = _root(data_config)
  listing = os.path.join(root, f'{split}_files.txt')
  if os.path.isfile(listing):
    # The lists hold paths such as data/modelnet40_ply_hdf5_2048/ply_data_train0.h5.
    files = [os.path.join(root, os.path.basename(p)) for p in _read_lines(listing, 'h5 paths')]
  else:
    files = glob.glob(os.path.join(root, f'{prefix}{split}*.h5'))
    files.sort(key=lambda p: int(re.sub(r'\D', '', os.path.basename(p)) or 0))
  if not files:
    raise FileNotFoundError(f'{root}: no {prefix}{split}*.h5 files and no {split}_files.txt')
  for f in files:
    if not os.path.isfile(f):
      raise FileNotFoundError(f'{f}: missing (listed in {listing})')
  return files


def _h5_dataset(h5file, key, path, expected):
  if key not in h5file:
    raise KeyError(f'{path}: no h5 key {key!r}; expected {expected}; found keys {list(h5file.keys())}')
  return h5file[key]


def _point_shape(where: str, sid: str, label: int, split: str, points) -> Shape:
  """A point-cloud Shape; an invalid cloud (NaN / Inf rows, wrong shape) names `where`."""
  try:
    return Shape(sid, label, split, None, points, GREY)
  except ValueError as e:
    raise ValueError(f'{where}: {e}') from None


def _iter_h5_points(path, points_per_shape, label_range, split, id_prefix, ids=None,
                    chunk=256):
  """Reads `data` (n, P, 3) and `label` (n,) or (n,1) from one h5 file, a chunk at a time."""
  import h5py  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing h5 file')
  with h5py.File(path, 'r') as f:
    data = _h5_dataset(f, 'data', path, f'float (n, {points_per_shape}, 3) points')
    label = _h5_dataset(f, 'label', path, 'integer labels (n,) or (n, 1)')
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
        yield _point_shape(f'{path}: row {start + k}', sid, lab, split, points[k])


def _h5_rows(path, key='data'):
  import h5py  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing h5 file')
  with h5py.File(path, 'r') as f:
    return int(_h5_dataset(f, key, path, 'float (n, 2048, 3) points').shape[0])


def _iter_modelnet40(data_config, split) -> Iterator[Shape]:
  variant = _modelnet_variant(data_config)
  names = _modelnet_names(data_config)
  root = _root(data_config)
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
      yield _point_shape(path, f'modelnet40/{sid}', names.index(cls), split, table[:, :3])
  else:
    total = 0
    for k, path in enumerate(_h5_split_files(data_config, split, 'ply_data_')):
      ids = _modelnet_h5_ids(path)
      for shape in _iter_h5_points(path, 2048, 40, split,
                                   f'modelnet40/{split}{k}', ids):
        total += 1
        yield shape
    expected = MODELNET40_COUNTS[variant][split]
    if _strict(data_config) and total != expected:
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


# --------------------------------------------------------------------------- ScanObjectNN

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
  root = _root(data_config)
  name = ('training' if split == 'train' else 'test') + suffix
  path = os.path.join(root, folder, name)
  if not os.path.isfile(path) and os.path.isfile(os.path.join(root, name)):
    path = os.path.join(root, name)   # root points at the split folder itself
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing; expected the ScanObjectNN {variant} {split} file '
                            f'(data.root = the h5_files folder)')
  return path


def _iter_scanobjectnn(data_config, split) -> Iterator[Shape]:
  path = _scanobjectnn_file(data_config, split)
  variant = data_config.variant or 'PB_T50_RS'
  n = _h5_rows(path)
  expected = SCANOBJECTNN_COUNTS.get(variant, {}).get(split)
  if _strict(data_config) and expected is not None and n != expected:
    raise ValueError(f'{path}: {n} shapes, expected {expected} in the full {variant} release')
  yield from _iter_h5_points(path, 2048, 15, split, f'scanobjectnn/{variant}/{split}')


# --------------------------------------------------------------------------- ShapeNet-55

SHAPENET55_COUNTS = {'train': 41952, 'test': 10518}


def _shapenet_index(data_config):
  """(pc folder, sorted synsets, {split: [file names]}, whether the split lists exist)."""
  root = _root(data_config)
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
      names = _read_lines(os.path.join(lists, f'{s}.txt'), 'one .npy file name per line')
      splits[s] = [n if n.endswith('.npy') else n + '.npy' for n in names]
      if _strict(data_config) and len(names) != SHAPENET55_COUNTS[s]:
        raise ValueError(f'{lists}/{s}.txt: {len(names)} names, expected {SHAPENET55_COUNTS[s]}')
  else:
    logging.warning('ShapeNet-55: %s/{train,test}.txt not found; every file in %s is in split '
                    "'train' (and 'all')", lists, pc)
    splits['train'] = files
  splits['all'] = [n for s in ('train', 'test') for n in splits.get(s, [])]
  return pc, synsets, splits, have


def _iter_shapenet55(data_config, split) -> Iterator[Shape]:
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


# --------------------------------------------------------------------------- public API


def class_names(data_config) -> list[str]:
  """Class names in label order."""
  source = _source(data_config)
  if source == 'synthetic':
    return list(_synthetic_classes(data_config))
  if source == 'mesh_folder':
    _, entries, _ = _mesh_folder_index(data_config)
    return sorted({e.cls for e in entries if e.cls is not None})
  if source == 'modelnet40':
    return _modelnet_names(data_config)
  if source == 'scanobjectnn':
    return list(SCANOBJECTNN_CLASSES)
  return _shapenet_index(data_config)[1]


def available_splits(data_config) -> list[str]:
  """The splits this source provides."""
  source = _source(data_config)
  if source == 'synthetic':
    return list(SYNTHETIC_SPLITS)
  if source == 'mesh_folder':
    _, entries, _ = _mesh_folder_index(data_config)
    return [s for s in ('train', 'test') if any(e.split == s for e in entries)] + ['pretrain']
  if source in ('modelnet40', 'scanobjectnn'):
    return ['train', 'test']
  _, _, splits, have = _shapenet_index(data_config)
  return ['train', 'test', 'all'] if have else ['train', 'all']


splits = available_splits  # the name ARCHITECTURE.md uses


def iter_shapes(data_config, split: str) -> Iterator[Shape]:
  """Yields the Shape records of one split, in a deterministic order."""
  source = _source(data_config)
  _check_split(data_config, split)
  if source == 'synthetic':
    return _iter_synthetic(data_config, split)
  if source == 'mesh_folder':
    return _iter_mesh_folder(data_config, split)
  if source == 'modelnet40':
    return _iter_modelnet40(data_config, split)
  if source == 'scanobjectnn':
    return _iter_scanobjectnn(data_config, split)
  return _iter_shapenet55(data_config, split)


def count(data_config, split: str) -> int:
  """Number of shapes in a split, without reading the shapes."""
  source = _source(data_config)
  _check_split(data_config, split)
  if source == 'synthetic':
    return _synthetic_per_class(data_config, split) * len(_synthetic_classes(data_config))
  if source == 'mesh_folder':
    return len(_mesh_folder_select(data_config, split)[1])
  if source == 'modelnet40':
    if _modelnet_variant(data_config) == 'normal_resampled':
      return len(_modelnet_ids(data_config, split))
    return sum(_h5_rows(p) for p in _h5_split_files(data_config, split, 'ply_data_'))
  if source == 'scanobjectnn':
    return _h5_rows(_scanobjectnn_file(data_config, split))
  return len(_shapenet_index(data_config)[2][split])
