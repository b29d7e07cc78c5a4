"""Prepared-object records: the TFDS builder, its schema and metadata, and reading them back.

One example per object, with the nested FeaturesDict of DESIGN.md §3:

  id, label, points [N,3] f32, centers [G,3] f32, groups [G,K] i32,
  views/{image [V,H,W,3] u8 (optional), world_to_cam [V,4,4] f32, intrinsics [V,3,3] f32,
         hist [V,3*bins] f32, corr [V,G] i32},
  teacher/{cls [V,D] f16, groups [V,G,C] f16 (with data.cache_group_features)}.

With data.eval_only the records hold only id, label, points, centers and groups (what frozen-feature
evaluation reads; no renders, no teacher): the metadata says so and training refuses them.

The builder is an ordinary `tfds.core.GeneratorBasedBuilder` (ArrayRecord shards by default,
TFRecord with the `tf` extra) under WORKDIR/data/<data.name>/<version>. TFDS writes every split into
an `incomplete.*` folder and renames it only when all splits are done, so an interrupted prepare
leaves nothing a reader would take for a prepared dataset, and a rerun starts afresh.

The examples come from an `example_fn(split) -> Iterator[(key, example)]` given to the builder
(crossjepa.data.prepare.generate_examples in practice). For a Beam run, `_generate_examples` would map
the pure per-object function `per_object.process_shape(shape, data_config, seed)` over the shapes and
then `prepare.finish_chunk` over batches of its outputs (beam.BatchElements) — both are pure functions
of their inputs, so the in-process generator and a Beam pipeline give the same records. Beam is not a
dependency; only the in-process path is exercised.

`DatasetInfo.metadata` records the geometry (N, G, K, V, image size, patch, bins), the teacher (name,
input size, param checksum), the renderer settings, the class names, the source and the code version;
`check_metadata` turns any disagreement with a config into a clear error instead of a silent reshape.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
from typing import Any, Callable, Iterator, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from crossjepa import version

# Bump when the schema, the encoding or the meaning of a field changes: readers refuse other
# versions. 1.1.0: arrays stored as raw bytes (Encoding.BYTES) instead of tf.train.Example's
# float / int64 lists (which widened float16 teacher features to 4 bytes a value).
VERSION = '1.1.0'

ExampleFn = Callable[[str], Iterator[tuple[str, dict[str, Any]]]]


# ------------------------------------------------------------------------------------------ schema
def is_eval_only(data_config) -> bool:
  """data.eval_only: records with id/label/points/centers/groups only."""
  return bool(data_config.eval_only)


def features(data_config, teacher_width: int, feature_width: int | None = None
             ) -> tfds.features.FeaturesDict:
  """The FeaturesDict of DESIGN.md §3 with the shapes of `data_config`, the teacher's global width D
  (`teacher/cls`) and its feature-map width C (`teacher/groups`; default D)."""
  d = data_config
  n, g, k, v = int(d.num_points), int(d.num_groups), int(d.group_size), int(d.num_views)
  h = w = int(d.image_size)

  def t(shape, dtype):
    # Raw bytes, not tf.train.Example's value lists: a float list stores float16 as 4 bytes a
    # value and an int64 list int32 as varints; bytes keep each dtype's width and decode with one
    # frombuffer (paper geometry, ViT-B/14 features: 2.42 -> 1.23 MB a record; experiments/README).
    if shape == ():
      return tfds.features.Tensor(shape=shape, dtype=dtype)
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)
  geometry = {
      'id': tfds.features.Text(),
      'label': t(shape=(), dtype=np.int64),
      'points': t(shape=(n, 3), dtype=np.float32),
      'centers': t(shape=(g, 3), dtype=np.float32),
      'groups': t(shape=(g, k), dtype=np.int32),
  }
  if is_eval_only(d):
    # Evaluation reads only these (pipeline.EVAL_KEYS): no views, no teacher cache.
    return tfds.features.FeaturesDict(geometry)
  views = {
      'world_to_cam': t(shape=(v, 4, 4), dtype=np.float32),
      'intrinsics': t(shape=(v, 3, 3), dtype=np.float32),
      'hist': t(shape=(v, 3 * int(d.hist_bins)), dtype=np.float32),
      'corr': t(shape=(v, g), dtype=np.int32),
  }
  if d.keep_images:
    # zlib: renders are mostly flat background, they compress several-fold.
    views['image'] = tfds.features.Tensor(shape=(v, h, w, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.ZLIB)
  teacher = {'cls': t(shape=(v, int(teacher_width)), dtype=np.float16)}
  if d.cache_group_features:
    teacher['groups'] = t(shape=(v, g, int(feature_width or teacher_width)), dtype=np.float16)
  return tfds.features.FeaturesDict({**geometry, 'views': views, 'teacher': teacher})


def _jsonable(x):
  """ConfigDict / tuples / numpy scalars -> plain JSON values (so metadata compares as JSON)."""
  return json.loads(json.dumps(x.to_dict() if hasattr(x, 'to_dict') else x, default=_np_default))


def _np_default(x):
  if hasattr(x, 'to_dict'):
    return x.to_dict()
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  raise TypeError(f'not JSON serialisable: {type(x)}')


def renderer_settings(data_config) -> dict[str, Any]:
  d = data_config
  return _jsonable({'camera': d.camera, 'colored': bool(d.colored),
                    'depth_tolerance': float(d.depth_tolerance)})


def _rasteriser_settings() -> dict[str, Any]:
  from crossjepa.data import render  # pylint: disable=g-import-not-at-top
  return _jsonable(dict(render.RENDER_SETTINGS))


def geometry(data_config) -> dict[str, Any]:
  """The record shapes a config implies: written into the metadata and checked against it."""
  d = data_config
  return {
      'num_points': int(d.num_points),
      'num_groups': int(d.num_groups),
      'group_size': int(d.group_size),
      'num_views': int(d.num_views),
      'image_size': [int(d.image_size), int(d.image_size)],
      'patch_size': int(d.patch_size),
      'hist_bins': int(d.hist_bins),
  }


def metadata(config, teacher_info: Mapping[str, Any], class_names: Sequence[str],
             split_sizes: Mapping[str, int] | None = None,
             fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The DatasetInfo.metadata of a prepared dataset (plain JSON values)."""
  d = config.data
  meta = {
      **geometry(d),
      'keep_images': bool(d.keep_images),
      'cache_group_features': bool(d.cache_group_features) and not is_eval_only(d),
      'eval_only': is_eval_only(d),
      'teacher': _jsonable(dict(teacher_info)),
      'renderer': renderer_settings(d),
      'rasteriser': _rasteriser_settings(),
      'class_names': [str(c) for c in class_names],
      'source': _jsonable({'source': d.source, 'variant': d.variant, 'root': d.root,
                           'synthetic': d.synthetic if d.source == 'synthetic' else None}),
      'seed': int(config.seed),
      'code_version': version.VERSION,
      'schema_version': VERSION,
  }
  if split_sizes is not None:
    meta['split_sizes'] = {k: int(v) for k, v in split_sizes.items()}
  if fingerprint is not None:
    meta['fingerprint'] = _jsonable(dict(fingerprint))   # data/fingerprint.py
  return meta


# ------------------------------------------------------------------------------------------ builder
class _ObjectsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes the prepared objects; subclassed per data.name (see `builder_class`)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): 'DESIGN.md §3 schema.'}

  def __init__(self, *, config_obj, teacher_width: int, meta: Mapping[str, Any],
               splits: Sequence[str], example_fn: ExampleFn | None, feature_width: int = 0,
               **kwargs):
    self._cj_config = config_obj
    self._cj_teacher_width = int(teacher_width)
    self._cj_feature_width = int(feature_width or teacher_width)
    self._cj_meta = dict(meta)
    self._cj_splits = list(splits)
    self._cj_example_fn = example_fn
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # dataset_info_from_configs() needs a TFDS package dir (it reads README/citation files next to
    # the builder's module); the plain constructor does not.
    return tfds.core.DatasetInfo(
        builder=self,
        description='crossjepa prepared objects (DESIGN.md §3).',
        features=features(self._cj_config.data, self._cj_teacher_width, self._cj_feature_width),
        metadata=tfds.core.MetadataDict(self._cj_meta),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in self._cj_splits}

  def _generate_examples(self, split):
    if self._cj_example_fn is None:
      raise ValueError('this builder was created without an example_fn; build records with '
                       'crossjepa.data.prepare.prepare (--mode=prepare).')
    yield from self._cj_example_fn(split)


_BUILDER_CLASSES: dict[str, type] = {}


def builder_class(name: str) -> type:
  """A builder class named `name` (TFDS takes the dataset's name from the class)."""
  if not re.fullmatch(r'[a-z][a-z0-9_]*', name):
    raise ValueError(f'data.name={name!r}: a TFDS dataset name must match [a-z][a-z0-9_]*')
  if name not in _BUILDER_CLASSES:
    cls_name = ''.join(p.capitalize() for p in name.split('_')) or 'Objects'
    _BUILDER_CLASSES[name] = type(cls_name, (_ObjectsBuilder,), {'name': name},
                                  skip_registration=True)
  return _BUILDER_CLASSES[name]


def data_dir(workdir) -> str:
  return os.path.join(os.fspath(workdir), 'data')


def dataset_dir(config, workdir) -> str:
  """WORKDIR/data/<data.name>/<version>: where a finished dataset lives."""
  return os.path.join(data_dir(workdir), config.data.name, VERSION)


def file_format(config) -> str:
  fmt = str(config.data.file_format)
  if fmt not in ('array_record', 'tfrecord'):
    raise ValueError(f"data.file_format={fmt!r}: expected 'array_record' or 'tfrecord'")
  if fmt == 'tfrecord':
    try:
      import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError as e:
      raise ImportError("data.file_format='tfrecord' needs TensorFlow: install the `tf` extra "
                        "(pip install 'crossjepa[tf]') or use data.file_format='array_record'."
                        ) from e
  return fmt


def make_builder(config, workdir, *, teacher_info: Mapping[str, Any], class_names: Sequence[str],
                 splits: Sequence[str], example_fn: ExampleFn | None,
                 split_sizes: Mapping[str, int] | None = None,
                 fingerprint: Mapping[str, Any] | None = None) -> tfds.core.GeneratorBasedBuilder:
  """The builder that writes `splits` of `config.data.name` under WORKDIR/data."""
  cls = builder_class(str(config.data.name))
  return cls(config_obj=config, teacher_width=int(teacher_info.get('width', 0)),
             feature_width=int(teacher_info.get('feature_width', 0) or 0),
             meta=metadata(config, teacher_info, class_names, split_sizes, fingerprint),
             splits=splits,
             example_fn=example_fn, data_dir=data_dir(workdir), file_format=file_format(config))


def remove_stale_incomplete(config, workdir) -> list[str]:
  """Removes the `incomplete.*` folders that an interrupted prepare (SIGKILL, power loss) left
  beside the dataset folder; returns their paths. One prepare per workdir runs at a time."""
  parent = os.path.dirname(dataset_dir(config, workdir))
  if not os.path.isdir(parent):
    return []
  stale = [os.path.join(parent, n) for n in sorted(os.listdir(parent))
           if n.startswith('incomplete.') and os.path.isdir(os.path.join(parent, n))]
  for path in stale:
    shutil.rmtree(path, ignore_errors=True)
  return stale


class _PathFiles:
  """The three `tf.io.gfile` calls of TFDS's split shuffler (`GFile`, `exists`, `remove`), on
  etils.epath instead of TensorFlow; `errors.ResourceExhaustedError` is an error nothing raises
  (open() reports "Too many open files" as OSError; `_spilling_without_tensorflow` raises the
  descriptor limit first)."""

  class errors:  # pylint: disable=invalid-name
    class ResourceExhaustedError(Exception):
      pass

  class io:  # pylint: disable=invalid-name
    class gfile:  # pylint: disable=invalid-name
      @staticmethod
      def GFile(path, mode='r'):  # pylint: disable=invalid-name
        return epath.Path(path).open(mode)

      @staticmethod
      def exists(path) -> bool:
        return epath.Path(path).exists()

      @staticmethod
      def remove(path) -> None:
        epath.Path(path).unlink()


# TFDS's shuffler holds a split's serialized examples in memory up to 1 GiB, then moves them to
# 1,000 bucket files on disk, which it opens through TensorFlow's tf.io.gfile. Without TensorFlow
# (not a dependency: ArrayRecord needs none) the first split over 1 GiB failed after all of its
# objects had been rendered and cached ("No module named 'tensorflow'"): ShapeNet-55 at the paper's
# geometry passes it after about 850 objects. `_spilling_without_tensorflow` gives the shuffler
# these files through etils.epath for the time of a write; the records are the same, in the same
# order, as when the split fits in memory (tests/test_records.py).
SHUFFLE_BUCKETS_MIN_FILES = 4096   # open descriptors wanted while the shuffler's buckets are open


@contextlib.contextmanager
def _spilling_without_tensorflow():
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    has_tensorflow = True
  except ImportError:
    has_tensorflow = False
  if has_tensorflow:   # TFDS's own path (an ImportError of the write itself is not caught here)
    yield
    return
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  if not hasattr(shuffle, 'tf') or not hasattr(shuffle, '_Bucket'):
    raise RuntimeError(
        f'tensorflow-datasets {tfds.__version__} no longer has the split shuffler this project '
        'writes through (tensorflow_datasets.core.shuffle); install tensorflow-datasets 4.9.x')
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  wanted = SHUFFLE_BUCKETS_MIN_FILES if hard == resource.RLIM_INFINITY else min(
      hard, SHUFFLE_BUCKETS_MIN_FILES)
  if soft != resource.RLIM_INFINITY and soft < wanted:
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
  saved = shuffle.tf
  shuffle.tf = _PathFiles
  try:
    yield
  finally:
    shuffle.tf = saved


def write(builder: tfds.core.GeneratorBasedBuilder, num_shards: int | None) -> None:
  """Generates all splits (TFDS: temporary `incomplete.*` folder, renamed at the end); a split of
  any size, with or without TensorFlow installed (`_spilling_without_tensorflow`)."""
  cfg = tfds.download.DownloadConfig(num_shards=int(num_shards) if num_shards else None)
  with _spilling_without_tensorflow():
    builder.download_and_prepare(download_config=cfg)


# ------------------------------------------------------------------------------------------ reading
def check_metadata(meta: Mapping[str, Any], config, *, teacher_info: Mapping[str, Any] | None = None
                   ) -> None:
  """Raises ValueError listing every field where the records and `config` disagree.

  Compares N, G, K, V, image size, patch size, histogram bins, the renderer settings and the
  source; the teacher's name (and checksum, when `teacher_info` carries one) when the config names a
  teacher (teacher.checkpoint or teacher.random_init) and `teacher_info` is given.
  """
  d = config.data
  want = {
      **geometry(d),
      'renderer': renderer_settings(d),
      'source.source': str(d.source),
      'source.variant': str(d.variant),
      'eval_only': is_eval_only(d),
  }
  if not is_eval_only(d):   # eval-only records have no teacher cache either way
    want['cache_group_features'] = bool(d.cache_group_features)
  have = dict(meta)
  have.setdefault('eval_only', False)   # datasets written before the key existed are full records
  have_src = _jsonable(have.get('source') or {})
  have['source.source'] = have_src.get('source')
  have['source.variant'] = have_src.get('variant')
  if teacher_info is not None:
    tmeta = _jsonable(have.get('teacher') or {})
    want['teacher.name'] = teacher_info.get('name')
    have['teacher.name'] = tmeta.get('name')
    # The cache depends on the weights and on which map / grid the per-group features come from.
    for key in ('checksum', 'feature_stage', 'stride'):
      if teacher_info.get(key):
        want[f'teacher.{key}'] = teacher_info[key]
        have[f'teacher.{key}'] = tmeta.get(key)
  problems = []
  for key, value in want.items():
    got = _jsonable(have.get(key)) if key in have else '<missing>'
    if got != _jsonable(value):
      problems.append(f'{key}: dataset has {got!r}, config has {value!r}')
  if problems:
    if have['eval_only'] and not want['eval_only']:
      problems.append('(records prepared with data.eval_only=True hold only id/label/points/'
                      'centers/groups: pretraining needs full records, prepared with '
                      'data.eval_only=False in another --workdir)')
    raise ValueError('prepared records do not match the config:\n  ' + '\n  '.join(problems))


def check_full_records(builder) -> None:
  """Raises ValueError when the records are eval-only (no views / teacher cache to train on)."""
  if bool(dict(builder.info.metadata or {}).get('eval_only', False)):
    raise ValueError(
        f'the records in {builder.data_dir} were prepared with data.eval_only=True (id, label, '
        'points, centers, groups only): pretraining needs the views and the teacher cache. '
        'Prepare full records (data.eval_only=False) in another --workdir, or evaluate an '
        'exported encoder with --config.eval.encoder=EXPORT_DIR.')


def other_versions(config, workdir) -> list[str]:
  """The finished datasets of `data.name` under WORKDIR/data in another schema VERSION (written by
  another crossjepa; never read by this one)."""
  parent = os.path.dirname(dataset_dir(config, workdir))
  names = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
  return [os.path.join(parent, n) for n in names
          if n != VERSION and os.path.exists(os.path.join(parent, n, 'dataset_info.json'))]


def open_dataset(config, workdir, *, check: bool = True) -> tfds.core.DatasetBuilder:
  """The prepared dataset of `config` under WORKDIR/data (a read-only TFDS builder)."""
  path = dataset_dir(config, workdir)
  if not os.path.exists(os.path.join(path, 'dataset_info.json')):
    older = [os.path.basename(p) for p in other_versions(config, workdir)]
    note = (f' (it holds records of version {", ".join(older)}, written by an earlier crossjepa '
            f'in a format this one does not read: prepare writes {VERSION} beside them, and the '
            'old folder can be deleted)' if older else '')
    raise FileNotFoundError(
        f'no prepared dataset {config.data.name!r} (version {VERSION}) in {path}{note}: '
        f'run --mode=prepare first (python -m crossjepa.main --mode=prepare --workdir={workdir}).')
  builder = tfds.builder_from_directory(path)
  if check:
    check_metadata(dict(builder.info.metadata or {}), config)
  return builder


def split_names(builder) -> list[str]:
  return sorted(builder.info.splits.keys())


def check_split(builder, split: str) -> None:
  available = split_names(builder)
  if split not in available:
    raise KeyError(f'split {split!r} is not in the prepared dataset at {builder.data_dir}; '
                   f'available splits: {available}')


def flat_keys(feats: tfds.features.FeaturesDict, prefix: str = '') -> list[str]:
  out = []
  for k, f in feats.items():
    if isinstance(f, tfds.features.FeaturesDict):
      out += flat_keys(f, prefix + k + '/')
    else:
      out.append(prefix + k)
  return out


# Features only some records carry: what leaves them out.
_OPTIONAL_FEATURES = {
    'views/image': 'they were prepared with data.keep_images=False',
    'teacher/groups': ('they were prepared with data.cache_group_features=False (set it True and '
                       'prepare again)'),
}


def missing_features_hint(missing: Sequence[str]) -> str:
  """Why records lack `missing` features: the prepare setting that leaves each out, or, for
  other views/ and teacher/ features, that eval-only records carry neither."""
  hints = [_OPTIONAL_FEATURES[k] for k in missing if k in _OPTIONAL_FEATURES]
  if any(k.split('/')[0] in ('views', 'teacher') and k not in _OPTIONAL_FEATURES for k in missing):
    hints.append('records prepared with data.eval_only=True carry no views and no teacher targets')
  return '; '.join(dict.fromkeys(hints)) or 'no prepare setting writes them'


class PartialDecoder:
  """Decodes only some features of a serialized example (picklable, for grain workers).

  TFDS' NumPy path has no partial decoding, so this builds a FeaturesDict with only the wanted
  features; the example parser ignores the other keys, so unwanted images are never decompressed.
  """

  def __init__(self, feats: tfds.features.FeaturesDict, keys: Sequence[str] | None):
    available = flat_keys(feats)
    keys = available if keys is None else list(keys)
    missing = [k for k in keys if k not in available]
    if missing:
      raise KeyError(f'features {missing} are not in the records (they have {available}): '
                     + missing_features_hint(missing))
    self.keys = keys
    nested: dict[str, Any] = {}
    for key in keys:
      node, parts = nested, key.split('/')
      sub = feats
      for p in parts[:-1]:
        node = node.setdefault(p, {})
        sub = sub[p]
      node[parts[-1]] = sub[parts[-1]]
    self._feats = tfds.features.FeaturesDict(nested)

  def __call__(self, serialized: bytes) -> dict[str, Any]:
    return self._feats.deserialize_example_np(serialized)


class RecordSource:
  """Random-access source of decoded examples of one split (only `keys`), for grain."""

  def __init__(self, builder, split: str, keys: Sequence[str] | None = None):
    check_split(builder, split)
    self._raw = builder.as_data_source(
        split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    self._decode = PartialDecoder(builder.info.features, keys)
    self.split = split

  def __len__(self) -> int:
    return len(self._raw)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._decode(self._raw[int(index)])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[i] for i in indices]
