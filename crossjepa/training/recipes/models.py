"""The linen modules of a pretraining recipe, built from the config and the teacher's widths.

`build_models(config, teacher)` reads the output widths from the teacher's spec (the records'
`teacher` metadata entry, or `teacher_widths(width)`), never from a batch: `teacher['width']` is the
width of `teacher/cls` (targets 'cls' and 'object'), `teacher['feature_width']` that of
`teacher/groups` (target 'groups'; 0 means the same as `width`). Hyperparameters only: the params
live in the TrainState.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import config_util
from crossjepa.models import point as point_lib
from crossjepa.models import predictor as predictor_lib
from crossjepa.models import vit as vit_lib
from crossjepa.weights import teacher_io
from crossjepa.weights import vit_io


@dataclasses.dataclass(frozen=True)
class Models:
  """The recipe's linen modules (hyperparameters only; params live in the TrainState)."""
  point: Any
  predictor: Any
  local_predictor: Any = None   # seed: the in-modal predictor of the local loss
  vit: Any = None               # seed: the view (context) encoder


class ObjectHead(nn.Module):
  """train.target='object': a linear map from the encoder's pooled tokens, concat(max, mean) (the
  probe's features), to the teacher's global embedding averaged over the object's views."""
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    pooled = jnp.concatenate([tokens.max(axis=1), tokens.mean(axis=1)], axis=-1)
    return nn.Dense(self.out_dim, dtype=self.dtype, name='out_proj')(pooled).astype(jnp.float32)


def compute_dtype(config):
  name = str(config.train.dtype)
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f"config.train.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


def teacher_widths(width: int, feature_width: int = 0) -> dict[str, int]:
  """A teacher spec's widths for `build_models` when there is no records metadata (tests, fakes)."""
  return {'width': int(width), 'feature_width': int(feature_width or width)}


def target_width(config, teacher: Optional[Mapping[str, Any]]) -> int:
  """The width of the crossjepa recipe's target: teacher/groups for target 'groups', else cls."""
  if teacher is None or not int(teacher.get('width', 0) or 0):
    raise ValueError(f'crossjepa recipe (train.target={config.train.target!r}) needs the teacher\'s '
                     'widths (the prepared records\' teacher metadata); none were given')
  if config.train.target == 'groups':
    return int(teacher.get('feature_width', 0) or teacher['width'])
  return int(teacher['width'])


def build_models(config, teacher: Optional[Mapping[str, Any]] = None) -> Models:
  """Builds the modules of `config.recipe`; the crossjepa recipe's output width is the teacher's."""
  dtype = compute_dtype(config)
  m = config.model
  # dtype, model.attention and model.remat set every module's field (over any *_overrides entry of
  # the same name).
  common = {'dtype': dtype, 'attention': str(m.attention), 'remat': str(m.remat)}
  point = point_lib.point_encoder(m.point, **{**config_util.as_dict(m.point_overrides), **common})
  pred_over = {**config_util.as_dict(m.predictor_overrides), **common}
  recipe = config.recipe
  if recipe == 'crossjepa':
    out_dim = target_width(config, teacher)
    if config.train.target == 'object':
      return Models(point=point, predictor=ObjectHead(out_dim=out_dim, dtype=dtype))
    pred = predictor_lib.predictor(m.predictor, **{
        **pred_over, 'out_dim': out_dim, 'use_pose': bool(config.train.condition_pose),
        'use_hist': bool(config.train.condition_hist), 'query_dim': 3})
    return Models(point=point, predictor=pred)
  if recipe == 'point_jepa':
    pred = predictor_lib.predictor(m.predictor, **{
        **pred_over, 'out_dim': point.width, 'use_pose': False, 'use_hist': False, 'query_dim': 3})
    return Models(point=point, predictor=pred)
  if recipe == 'seed':
    view_encoder = _view_encoder(config, common)
    cross = predictor_lib.predictor(m.predictor, **{
        **pred_over, 'out_dim': point.width, 'use_pose': bool(config.train.condition_pose),
        'use_hist': bool(config.train.condition_hist), 'query_dim': 3})
    local = predictor_lib.predictor(m.predictor, **{
        **pred_over, 'out_dim': point.width, 'use_pose': False, 'use_hist': False, 'query_dim': 3})
    return Models(point=point, predictor=cross, local_predictor=local, vit=view_encoder)
  raise ValueError(f"config.recipe must be 'crossjepa', 'seed' or 'point_jepa', got {recipe!r}")


def _view_encoder(config, common):
  """seed's ViT: model.vit (+ vit_overrides), or the architecture saved in model.vit_init."""
  m = config.model
  init_dir = str(m.vit_init)
  if not init_dir:
    return vit_lib.vit(m.vit, **{**config_util.as_dict(m.vit_overrides), **common})
  if (not os.path.exists(os.path.join(init_dir, vit_io.CONFIG_FILE))
      and os.path.exists(os.path.join(init_dir, teacher_io.SPEC_FILE))):
    raise ValueError(
        f'config.model.vit_init={init_dir!r}: a teacher folder (teacher.json: a converted CLIP or '
        'EfficientNet-Lite), not a ViT checkpoint; the view encoder starts from a ViT checkpoint '
        'folder (vit_config.json: convert_teacher --source=hf|timm, or --mode=teacher). Give this '
        'folder as teacher.checkpoint')
  if not os.path.exists(os.path.join(init_dir, vit_io.CONFIG_FILE)):
    raise FileNotFoundError(
        f'config.model.vit_init={init_dir!r}: no vit_config.json there (expected a folder written '
        'by crossjepa.convert_teacher --source=hf|timm or --mode=teacher, i.e. '
        'crossjepa.weights.vit_io.save)')
  fields = dict(vit_io.load_info(init_dir)['fields'])
  # The checkpoint fixes the architecture; vit_overrides may still change fields that keep the
  # param shapes (drop_path_rate, ...); one that does not fails the check_params below.
  fields.update(config_util.as_dict(m.vit_overrides))
  fields.update(common)   # the compute choices (dtype, attention, remat), not the architecture
  module = vit_lib.ViT(**fields)
  # Read (and check) the params here, outside any trace; seed's init then takes the cached copy.
  vit_lib.check_params(module, load_vit_params(os.path.abspath(init_dir)),
                       where=f'config.model.vit_init={init_dir!r} params')
  return module


@functools.lru_cache(maxsize=2)
def load_vit_params(init_dir: str):
  """Host copy of a saved ViT's params (read once per process: init runs under eval_shape and jit)."""
  with jax.ensure_compile_time_eval():   # may be first reached while init is being traced
    _, params = vit_io.load(init_dir)
    return jax.tree.map(np.asarray, params)
