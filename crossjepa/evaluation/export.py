"""Export of the pretrained point encoder, and a loader that needs nothing else from the run.

WORKDIR/export/
  params/        Orbax (StandardCheckpointer) tree of the PointEncoder's params, saved as numpy
  encoder.json   format tag, the PointEncoder's dataclass fields, variant, params source
                 (student | ema), pooling, num_points / num_groups / group_size, feature dim,
                 parameter count, crossjepa version, sha256 digest of the source config, step;
                 `zero_shot`: the readout's teacher, fit and sha256, or why there is none
  zero_shot.npz  where the run had a zero-shot evaluation (an EfficientNet-Lite teacher): its
                 ridge readout into the teacher's embedding folded with the teacher's ImageNet
                 classifier, pooled features -> ImageNet logits, and the same for the
                 random-init controls of eval.seeds

The folder is written to a temporary sibling and renamed into place, so a reader never sees a
half-written export. `load_encoder(dir)` rebuilds the encoder from encoder.json alone, checks every
parameter leaf against the rebuilt module (missing, unexpected, mis-shaped: named in the error),
and returns `fn(points [B,N,3]) -> features [B,F]`; the encoder computes the FPS centres and kNN
groups itself with the recorded num_groups / group_size (the same ops the records are built with);
`.imagenet_logits(points)` gives the zero-shot readout's ImageNet logits where the export has one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import config_util
from crossjepa import fileio
from crossjepa import version
from crossjepa.weights import param_folder

FORMAT = 'crossjepa.point_encoder/1'
INFO_FILE = 'encoder.json'
PARAMS_DIR = 'params'


# ------------------------------------------------------------------ module <-> JSON


def _encode_value(name: str, value: Any) -> Any:
  if name == 'dtype' or isinstance(value, np.dtype) or (isinstance(value, type) and
                                                        issubclass(value, np.generic)):
    return {'__dtype__': jnp.dtype(value).name}
  if isinstance(value, tuple):
    return {'__tuple__': [_encode_value(name, v) for v in value]}
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise ValueError(f'export: PointEncoder field {name!r} = {value!r} cannot be written to '
                   f'{INFO_FILE} (only numbers, strings, bools, tuples and dtypes)')


def _decode_value(value: Any) -> Any:
  if isinstance(value, dict) and '__dtype__' in value:
    return jnp.dtype(value['__dtype__'])
  if isinstance(value, dict) and '__tuple__' in value:
    return tuple(_decode_value(v) for v in value['__tuple__'])
  if isinstance(value, list):
    return tuple(_decode_value(v) for v in value)
  return value


def module_fields(module) -> dict[str, Any]:
  """The module's hyperparameters (dataclass fields, without flax's parent/name), JSON-encoded."""
  return {f.name: _encode_value(f.name, getattr(module, f.name))
          for f in dataclasses.fields(module) if f.name not in ('parent', 'name')}


def point_encoder_from_config(config):
  """The PointEncoder that evaluation and export use for `config`.

  Same variant and overrides as pretraining (training.recipes.models.build_models), with num_groups /
  group_size from config.data (so an encoder that groups on its own matches the records),
  model.attention, and float32 compute (features do not depend on the training precision).
  """
  from crossjepa.models import point as point_lib  # pylint: disable=g-import-not-at-top
  m = config.model
  overrides = config_util.as_dict(m.point_overrides)
  overrides.update(num_groups=int(config.data.num_groups), group_size=int(config.data.group_size),
                   dtype='float32', attention=str(m.attention))
  return point_lib.point_encoder(m.point, **overrides)


def config_digest(config) -> str:
  text = json.dumps(config.to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------ param checks


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  out = {}
  for path, leaf in flat:
    key = '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)
    out[key] = tuple(np.shape(leaf))
  return out


def check_params(params, expected, where: str) -> None:
  """Raises ValueError naming missing / unexpected / mis-shaped leaves of `params` vs `expected`."""
  got, want = _flat_shapes(params), _flat_shapes(expected)
  missing = sorted(set(want) - set(got))
  extra = sorted(set(got) - set(want))
  shaped = sorted(f'{k}: {got[k]} != expected {want[k]}' for k in set(got) & set(want)
                  if got[k] != want[k])
  if missing or extra or shaped:
    lines = [f'{where}: the params do not match the encoder config']
    for title, items in (('missing', missing), ('unexpected', extra), ('mis-shaped', shaped)):
      if items:
        more = f' (+{len(items) - 10} more)' if len(items) > 10 else ''
        lines.append(f'  {title} ({len(items)}): ' + ', '.join(items[:10]) + more)
    raise ValueError('\n'.join(lines))


def abstract_params(module, num_points: int):
  x = jax.ShapeDtypeStruct((1, num_points, 3), jnp.float32)
  return jax.eval_shape(lambda p: module.init(jax.random.PRNGKey(0), p), x)['params']


# ------------------------------------------------------------------ export


def select_encoder_params(params, ema_params, which: str):
  """params = {'student': encoder, ...} (training.checkpoint.restore_params); picks the encoder."""
  if which not in ('student', 'ema'):
    raise ValueError(f"config.eval.params = {which!r}; expected 'student' or 'ema'")
  tree = params if which == 'student' else ema_params
  if tree is None:
    raise ValueError("config.eval.params = 'ema' but the checkpoint has no EMA params; "
                     "use --config.eval.params=student")
  if isinstance(tree, dict) and 'student' in tree:
    return tree['student']
  if isinstance(tree, dict) and 'point' in tree:
    return tree['point']
  return tree


def write_export(out_dir: str, module, encoder_params, info: dict,
                 zero_shot: tuple[dict[str, np.ndarray] | None, dict] | None = None) -> str:
  """Writes params + encoder.json to `out_dir` atomically (temp sibling, then rename); with
  `zero_shot` = (arrays, info) of zero_shot.export_readout, also its READOUT_FILE (arrays None:
  only why there is none, in encoder.json)."""
  out_dir = os.path.abspath(out_dir)
  num_points = int(info['num_points'])
  check_params(encoder_params, abstract_params(module, num_points), 'export')
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  with fileio.atomic_dir(out_dir) as tmp:
    host_params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), encoder_params)
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, PARAMS_DIR), host_params)
    if zero_shot is not None:
      arrays, zs_info = zero_shot
      zs_info = dict(zs_info)
      if arrays is not None:
        from crossjepa.evaluation import zero_shot as zero_shot_lib  # pylint: disable=g-import-not-at-top
        path = os.path.join(tmp, zero_shot_lib.READOUT_FILE)
        with open(path, 'wb') as f:
          np.savez(f, **arrays)
        with open(path, 'rb') as f:
          zs_info['sha256'] = hashlib.sha256(f.read()).hexdigest()
      info = {**info, 'zero_shot': zs_info}
    info = {
        'format': FORMAT,
        'module': 'crossjepa.models.point.PointEncoder',
        'fields': module_fields(module),
        'param_count': int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(host_params))),
        'param_checksum': vit_lib.param_checksum(host_params),
        **info,
    }
    with open(os.path.join(tmp, INFO_FILE), 'w') as f:
      json.dump(info, f, indent=2, sort_keys=True)
  return out_dir


def export(config, workdir: str) -> str:
  """Restores the run's last checkpoint and writes WORKDIR/export; returns its path. Where the run
  has a zero-shot evaluation (evaluation/zero_shot.py), the export carries its readout."""
  from crossjepa.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.training import checkpoint  # pylint: disable=g-import-not-at-top
  params, ema_params, step = checkpoint.restore_params(workdir, config)
  which = str(config.eval.params)
  encoder_params = select_encoder_params(params, ema_params, which)
  module = point_encoder_from_config(config)
  pooling = str(config.eval.pooling)
  num_points = int(config.data.num_points)
  feat = jax.eval_shape(
      lambda p, x: features_lib.pool_tokens(module.apply({'params': p}, x), pooling),
      encoder_params, jax.ShapeDtypeStruct((1, num_points, 3), jnp.float32))
  info = {
      'variant': str(config.model.point),
      'params_source': which,
      'pooling': pooling,
      'num_points': num_points,
      'num_groups': int(config.data.num_groups),
      'group_size': int(config.data.group_size),
      'feature_dim': int(feat.shape[-1]),
      'step': int(step),
      'recipe': str(config.recipe),
      'crossjepa_version': version.VERSION,
      'config_digest': 'sha256:' + config_digest(config),
      'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
  }
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  readout = zero_shot.export_readout(config, workdir, module, encoder_params, pooling)
  return write_export(os.path.join(workdir, 'export'), module, encoder_params, info, readout)


# ------------------------------------------------------------------ load


def read_info(export_dir: str) -> dict:
  path = os.path.join(export_dir, INFO_FILE)
  if not os.path.isdir(export_dir):
    raise FileNotFoundError(f'load_encoder: {export_dir} is not a folder')
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(export_dir, PARAMS_DIR)):
    raise ValueError(f'load_encoder: {export_dir} is not a crossjepa export (expected {INFO_FILE} '
                     f'and {PARAMS_DIR}/, found {sorted(os.listdir(export_dir))})')
  with open(path, 'rb') as f:
    try:
      info = json.load(f)
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
      raise ValueError(f'load_encoder: {path} is not valid JSON: {e}') from e
  if not isinstance(info, dict):
    raise ValueError(f'load_encoder: {path} holds a JSON {type(info).__name__}; expected the '
                     'object export() writes')
  if info.get('format') != FORMAT:
    raise ValueError(f'load_encoder: {path} has format {info.get("format")!r}; expected {FORMAT!r}')
  for key in ('fields', 'pooling', 'num_points'):
    if key not in info:
      raise ValueError(f'load_encoder: {path} lacks the key {key!r}')
  return info


def build_module(info: dict):
  from crossjepa.models import point as point_lib  # pylint: disable=g-import-not-at-top
  fields = {k: _decode_value(v) for k, v in info['fields'].items()}
  names = {f.name for f in dataclasses.fields(point_lib.PointEncoder)} - {'parent', 'name'}
  unknown = sorted(set(fields) - names)
  if unknown:
    raise ValueError(f'load_encoder: {INFO_FILE} names PointEncoder fields {unknown} that this '
                     f'crossjepa version does not have (exported by version '
                     f'{info.get("crossjepa_version")})')
  return point_lib.PointEncoder(**fields)


class LoadedEncoder:
  """`fn(points [B,N,3]) -> np.ndarray [B,F]`; also `.module`, `.params`, `.info`."""

  def __init__(self, module, params, info, export_dir: str = ''):
    from crossjepa.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
    self.module, self.params, self.info = module, params, info
    self.export_dir = export_dir
    self._readout = None
    self._more_words = {}     # words embedded by a text tower given to text_logits
    self.num_points = int(info['num_points'])
    pooling = info['pooling']

    def embed(params, points):
      return features_lib.pool_tokens(module.apply({'params': params}, points), pooling)

    self._embed = jax.jit(embed)

  def __call__(self, points) -> np.ndarray:
    """Features [B, F] of points [B, N, 3] (normalised to the unit sphere, as prepare does).

    Raises ValueError naming the batch rows whose points are not finite, or whose features are
    not (coordinates so large that the encoder overflows float32).
    """
    points = np.asarray(points, np.float32)
    if points.ndim != 3 or points.shape[-1] != 3 or points.shape[1] != self.num_points:
      raise ValueError(f'exported encoder: points must be [B, {self.num_points}, 3] (the '
                       f'num_points it was trained with), got {tuple(points.shape)}')
    bad = np.flatnonzero(~np.isfinite(points).all(axis=(1, 2)))
    if bad.size:
      raise ValueError(f'exported encoder: points of batch rows {_rows(bad)} are not finite '
                       '(NaN or Inf coordinates); expected finite points normalised to the unit '
                       'sphere')
    out = np.asarray(self._embed(self.params, jnp.asarray(points)))
    bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
    if bad.size:
      scale = float(np.abs(points[bad]).max())
      raise ValueError(f'exported encoder: the features of batch rows {_rows(bad)} are not finite: '
                       f'their coordinates reach |x| = {scale:.3g} and overflow the encoder; '
                       'expected points normalised to the unit sphere '
                       '(crossjepa.data.meshes.normalize_unit_sphere)')
    return out

  @property
  def readout_kind(self) -> str | None:
    """The zero-shot readout the export carries: 'imagenet' (an EfficientNet-Lite teacher's
    classifier folded in), 'clip_text' (the map into a CLIP teacher's embedding, with the text
    embeddings of the words it can name), or None."""
    zinfo = self.info.get('zero_shot') or {}
    if 'sha256' not in zinfo:
      return None
    return str(zinfo.get('classifier') or 'imagenet')

  def _readout_arrays(self) -> dict[str, np.ndarray]:
    if self._readout is None:
      from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
      zinfo = self.info.get('zero_shot') or {}
      if 'sha256' not in zinfo:
        why = zinfo.get('skipped') or 'it was exported by a crossjepa version without one'
        raise ValueError(f'exported encoder: no zero-shot readout ({why})')
      self._readout = zero_shot.load_readout(self.export_dir, self.info)
    return self._readout

  def imagenet_logits(self, points) -> np.ndarray:
    """ImageNet logits [B, 1000] of points [B, N, 3] through the export's zero-shot readout (no
    3D label: the encoder's features read out into its teacher's embedding, then the teacher's
    classifier; evaluation/zero_shot.py). ValueError where the export has none."""
    arrays = self._readout_arrays()
    if self.readout_kind != 'imagenet':
      raise ValueError('exported encoder: its readout is into a CLIP teacher\'s embedding, not '
                       'ImageNet logits: use .text_logits(points) (or python -m crossjepa.classify)')
    return self(points) @ arrays['pretrained_kernel'] + arrays['pretrained_bias']

  def text_columns(self) -> dict[str, np.ndarray]:
    """A CLIP export's words -> their text embeddings ([E], normalised prompt ensembles)."""
    arrays = self._readout_arrays()
    if self.readout_kind != 'clip_text':
      raise ValueError('exported encoder: its readout names ImageNet classes, not words (a CLIP '
                       'teacher\'s export names words): use .imagenet_logits(points)')
    from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
    return {**zero_shot.carried_columns(self.info['zero_shot'], arrays), **self._more_words}

  def text_logits(self, points, words, text_tower=None) -> np.ndarray:
    """[B, K]: CLIP's logits (100 x the cosine, its trained temperature) of points [B, N, 3] with
    each of `words` (a class: one word, or a list of words whose text embeddings are averaged),
    through a CLIP export's readout into the teacher's embedding. Words the export carries no
    text embedding of are embedded by `text_tower` (teacher_io.load_text of the teacher the
    export was pretrained with, checked by its checksum), or are a ValueError naming them."""
    from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
    columns = self.text_columns()
    classes = [[w] if isinstance(w, str) else list(w) for w in words]
    lacking = zero_shot.missing_words(columns, classes)
    if lacking and text_tower is None:
      raise ValueError(f'exported encoder: it {zero_shot.not_carried(len(columns), lacking)}: give '
                       'its teacher\'s text tower for other words (crossjepa.classify '
                       '--text_tower=DIR)')
    if lacking:
      zero_shot.check_text_tower(self.info['zero_shot'], text_tower, 'exported encoder')
      self._more_words.update(zip(lacking, zero_shot.word_columns(
          text_tower, lacking, zero_shot.export_templates(self.info['zero_shot'])).T))
      columns.update(self._more_words)
    arrays = self._readout_arrays()
    emb = self(points) @ arrays['pretrained_kernel'] + arrays['pretrained_bias']
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return 100.0 * emb @ zero_shot.class_columns(columns, classes)


def _rows(rows: np.ndarray, limit: int = 10) -> str:
  shown = ', '.join(str(int(r)) for r in rows[:limit])
  return f'[{shown}{", ..." if rows.size > limit else ""}] ({rows.size} of them)'


def load_encoder(export_dir: str) -> LoadedEncoder:
  """Loads WORKDIR/export (or any export folder) in a fresh process."""
  export_dir = os.path.abspath(export_dir)
  info = read_info(export_dir)
  module = build_module(info)
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  params_dir = os.path.join(export_dir, PARAMS_DIR)
  with ocp.StandardCheckpointer() as ckptr, fileio.reading_checkpoint(params_dir):
    params = ckptr.restore(params_dir)
  check_params(params, abstract_params(module, int(info['num_points'])),
               f'load_encoder({export_dir})')
  # Exports written before the checksum was recorded have none.
  param_folder.check_checksum(params, info.get('param_checksum', ''),
                              f'load_encoder: {params_dir}', INFO_FILE,
                              'export it again, or copy it again from its source')
  params = jax.tree.map(jnp.asarray, params)
  return LoadedEncoder(module, params, info, export_dir)
