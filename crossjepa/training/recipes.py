"""Loss functions of the three pretraining recipes over one batch schema.

- `crossjepa` (CrossJEPA, arXiv 2511.18424, section 3): a point encoder reads each object once; a
  predictor, given the point tokens plus one rendered view's camera pose and colour histogram,
  predicts the frozen image teacher's cached embedding of that view. K = train.views_per_step
  views share the encoder pass (the tokens are tiled K times over the batch axis). Target 'cls':
  the view's CLS embedding, one global query per view. Target 'groups': the teacher's patch
  feature at each group centre (via the 2D<->3D correspondence map), one query per group at the
  group centre; occluded groups (corr = -1) are masked out of the loss. No EMA is needed by the
  method; `ema_params` still carries a Polyak average of the student for evaluation.
- `point_jepa` (Point-JEPA, Saito et al. 2024; I-JEPA's masking): contiguous target blocks of
  groups (a random seed group and its nearest groups in centre space); the context (the groups
  nearest a second random seed, excluding all targets) goes through the student; an EMA target
  encoder over all groups gives the targets (stop-gradient, layer-normed); the predictor is queried
  at the target centres, one predictor call per target block.
- `seed` (the design card's reverse direction): a trainable ViT embeds one rendered view; a
  predictor reads its patch tokens (+ pose, histogram) and is queried at the group centres that are
  visible in that view; targets are the EMA point encoder's tokens of those groups (stop-gradient,
  layer-normed when train.normalize_target), masked by visibility. A local in-modal loss (the
  point_jepa loss on the same batch and the same EMA targets, weight train.seed_local_weight)
  trains the student point encoder, whose EMA gives the targets. The ViT starts from
  model.vit_init (a folder written by crossjepa.models.vit.save: a converted DINOv2 or an offline
  teacher) or, when that is '', from random init.

Every recipe exposes `init_params(config, rng, example_batch, models=None) -> params` and
`loss_fn(params, ema_params, batch, rng, *, config, models) -> (loss, aux)`; `ema_params` is always
`{'student': EMA of params['student']}`. Shapes are static: blocks are chosen by sorting random
scores and distances, never by boolean indexing.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import ops

# The EMA tracks the student point encoder only, in every recipe. In `seed` the ViT trains too, but
# no loss reads an EMA of it (the targets are the EMA *point* encoder's tokens, the ViT is the
# online context encoder, as I-JEPA's context encoder) and the exported artefact is the point
# encoder; an EMA copy of the ViT would double its memory (86 M params at B/14) for nothing.
EMA_KEYS = ('student',)


# ------------------------------------------------------------------ models


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


def _overrides(cfg_dict) -> dict:
  if cfg_dict is None:
    return {}
  return dict(cfg_dict.to_dict() if hasattr(cfg_dict, 'to_dict') else cfg_dict)


def compute_dtype(config):
  name = str(config.train.dtype)
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f"config.train.dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


def build_models(config, example_batch) -> Models:
  """Builds the modules of `config.recipe`; the teacher width is read from the batch."""
  from crossjepa.models import point as point_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.models import predictor as predictor_lib  # pylint: disable=g-import-not-at-top
  dtype = compute_dtype(config)
  m = config.model
  point = point_lib.point_encoder(m.point, **{**_overrides(m.point_overrides), 'dtype': dtype})
  pred_over = {**_overrides(m.predictor_overrides), 'dtype': dtype}
  recipe = config.recipe
  if recipe == 'crossjepa':
    target = config.train.target
    if target not in ('cls', 'groups', 'object'):
      raise ValueError(f"config.train.target must be 'cls', 'groups' or 'object', got {target!r}")
    key = 'groups' if target == 'groups' else 'cls'
    if 'teacher' not in example_batch or key not in example_batch['teacher']:
      raise ValueError(f'crossjepa recipe with train.target={target!r} needs batch teacher/{key}')
    out_dim = int(example_batch['teacher'][key].shape[-1])
    if target == 'object':
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
    from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
    if 'image' not in example_batch.get('views', {}):
      raise ValueError('seed recipe needs batch views/image (train_iterator(need_images=True))')
    view_encoder = _view_encoder(config, dtype)
    cross = predictor_lib.predictor(m.predictor, **{
        **pred_over, 'out_dim': point.width, 'use_pose': bool(config.train.condition_pose),
        'use_hist': bool(config.train.condition_hist), 'query_dim': 3})
    local = predictor_lib.predictor(m.predictor, **{
        **pred_over, 'out_dim': point.width, 'use_pose': False, 'use_hist': False, 'query_dim': 3})
    return Models(point=point, predictor=cross, local_predictor=local, vit=view_encoder)
  raise ValueError(f"config.recipe must be 'crossjepa', 'seed' or 'point_jepa', got {recipe!r}")


def _view_encoder(config, dtype):
  """seed's ViT: model.vit (+ vit_overrides), or the architecture saved in model.vit_init."""
  from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  m = config.model
  init_dir = str(m.get('vit_init', '') or '')
  if not init_dir:
    return vit_lib.vit(m.vit, **{**_overrides(m.get('vit_overrides')), 'dtype': dtype})
  if not os.path.exists(os.path.join(init_dir, 'vit_config.json')):
    raise FileNotFoundError(
        f'config.model.vit_init={init_dir!r}: no vit_config.json there (expected a folder written '
        'by crossjepa.convert_teacher or --mode=teacher, i.e. crossjepa.models.vit.save)')
  fields = dict(vit_lib.load_info(init_dir)['fields'])
  # The checkpoint fixes the architecture; vit_overrides may still change fields that keep the
  # param shapes (drop_path_rate, ...); one that does not fails the check_params below.
  fields.update(_overrides(m.get('vit_overrides')))
  fields['dtype'] = dtype
  module = vit_lib.ViT(**fields)
  # Read (and check) the params here, outside any trace; seed_init then takes the cached copy.
  vit_lib.check_params(module, _load_vit_params(os.path.abspath(init_dir)),
                       where=f'config.model.vit_init={init_dir!r} params')
  return module


@functools.lru_cache(maxsize=2)
def _load_vit_params(init_dir: str):
  """Host copy of a saved ViT's params (read once per process: init runs under eval_shape and jit)."""
  from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  with jax.ensure_compile_time_eval():   # may be first reached while init is being traced
    _, params = vit_lib.load(init_dir)
    return jax.tree.map(np.asarray, params)


# ------------------------------------------------------------------ losses


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm over the last axis without affine (target normalisation, as I-JEPA)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


def batch_standardize(target: jax.Array, weights: jax.Array, eps: float = 1e-4) -> jax.Array:
  """(x - mean) / std per target dimension over the batch's valid entries (weights > 0), the
  statistics taken over the whole global batch (jit reduces across the sharded batch axis).
  A target-side batch norm: every dimension of the teacher's embedding weighs the same in the loss,
  whatever its scale (train.standardize_target='batch')."""
  w = weights.reshape(-1, 1)
  flat = target.reshape(-1, target.shape[-1])
  count = jnp.maximum(jnp.sum(w), 1.0)
  mean = jnp.sum(flat * w, axis=0) / count
  var = jnp.sum(jnp.square(flat - mean) * w, axis=0) / count
  return (target - mean) * jax.lax.rsqrt(var + eps)


def elementwise_loss(pred: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-entry loss [...]: mean over the feature axis (mse, smooth_l1 with beta 1) or 1 - cos."""
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  if kind == 'mse':
    return jnp.mean(jnp.square(pred - target), axis=-1)
  if kind == 'smooth_l1':
    diff = jnp.abs(pred - target)
    return jnp.mean(jnp.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5), axis=-1)
  if kind == 'cosine':
    num = jnp.sum(pred * target, axis=-1)
    den = jnp.linalg.norm(pred, axis=-1) * jnp.linalg.norm(target, axis=-1)
    return 1.0 - num / jnp.maximum(den, 1e-8)
  raise ValueError(f"config.train.loss must be 'mse', 'smooth_l1' or 'cosine', got {kind!r}")


def masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def batch_std(x: jax.Array, weights: Optional[jax.Array] = None) -> jax.Array:
  """Std across the batch axis, averaged over positions and features (a collapse watch).

  x [B, ..., D]; weights [B, ...] (1 = valid). Each position's std uses its valid entries only.
  """
  x = x.astype(jnp.float32)
  if weights is None:
    weights = jnp.ones(x.shape[:-1], jnp.float32)
  w = weights[..., None].astype(jnp.float32)
  count = jnp.sum(w, axis=0)
  mean = jnp.sum(w * x, axis=0) / jnp.maximum(count, 1.0)
  var = jnp.sum(w * jnp.square(x - mean), axis=0) / jnp.maximum(count, 1.0)
  has = (count > 1.0).astype(jnp.float32) * jnp.ones_like(var)
  return jnp.sqrt(jnp.sum(var * has) / jnp.maximum(jnp.sum(has), 1.0))


# ------------------------------------------------------------------ crossjepa


def _flat_views(x: jax.Array) -> jax.Array:
  """[B,K,...] -> [B*K,...] (b-major, matching jnp.repeat(tokens, K, axis=0))."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _point_inputs(batch):
  return batch['points'], batch['centers'], batch['groups']


def crossjepa_init(config, rng, example_batch, models: Optional[Models] = None):
  models = models or build_models(config, example_batch)
  batch = jax.tree.map(lambda x: x[:1], example_batch)
  k_point, k_pred = jax.random.split(rng)
  points, centers, groups = _point_inputs(batch)
  student = models.point.init(k_point, points, centers, groups)['params']
  tokens = models.point.apply({'params': student}, points, centers, groups)['tokens']
  views = batch['views']
  if config.train.target == 'object':
    return {'student': student, 'predictor': models.predictor.init(k_pred, tokens)['params']}
  kwargs = _conditioning(config, views, 0)
  if config.train.target == 'groups':
    kwargs['query_pos'] = centers
  predictor = models.predictor.init(k_pred, tokens, **kwargs)['params']
  return {'student': student, 'predictor': predictor}


def _conditioning(config, views, k: Optional[int]):
  """world_to_cam / hist of view k ([B,...]), or of all views flattened (k None)."""
  take = (lambda x: x[:, k]) if k is not None else _flat_views
  out = {}
  if config.train.condition_pose:
    out['world_to_cam'] = take(views['world_to_cam'])
  if config.train.condition_hist:
    out['hist'] = take(views['hist'])
  return out


def crossjepa_loss(params, ema_params, batch, rng, *, config, models: Models):
  del ema_params
  points, centers, groups = _point_inputs(batch)
  # One encoder pass per object, shared by its K views.
  tokens = models.point.apply({'params': params['student']}, points, centers, groups, train=True,
                              rngs={'dropout': jax.random.fold_in(rng, 0)})['tokens']
  views = batch['views']
  num_views = views['world_to_cam'].shape[1]
  context = jnp.repeat(tokens, num_views, axis=0)                       # [B*K,G,D]
  kwargs = _conditioning(config, views, None)
  rngs = {'dropout': jax.random.fold_in(rng, 1)}
  if config.train.target == 'object':
    target = batch['teacher']['cls'].astype(jnp.float32).mean(axis=1)   # [B,Dt]
    pred = models.predictor.apply({'params': params['predictor']}, tokens)
    weights = jnp.ones(target.shape[:-1], jnp.float32)
  elif config.train.target == 'cls':
    target = batch['teacher']['cls'].astype(jnp.float32)                # [B,K,Dt]
    pred = models.predictor.apply({'params': params['predictor']}, context, num_queries=1,
                                  train=True, rngs=rngs, **kwargs)
    pred = pred.reshape(target.shape)
    weights = jnp.ones(target.shape[:-1], jnp.float32)
  else:
    target = batch['teacher']['groups'].astype(jnp.float32)             # [B,K,G,Dt]
    query_pos = jnp.repeat(centers, num_views, axis=0)                  # [B*K,G,3]
    pred = models.predictor.apply({'params': params['predictor']}, context, query_pos=query_pos,
                                  train=True, rngs=rngs, **kwargs)
    pred = pred.reshape(target.shape)
    weights = (views['corr'] >= 0).astype(jnp.float32)                  # [B,K,G]
  if config.train.standardize_target == 'batch':
    target = batch_standardize(target, weights)
  if config.train.normalize_target:
    target = layer_norm(target)
  target = jax.lax.stop_gradient(target)
  per_entry = elementwise_loss(pred, target, config.train.loss)
  loss = masked_mean(per_entry, weights)
  aux = {'pred_std': batch_std(pred, weights), 'target_std': batch_std(target, weights),
         'valid_fraction': jnp.mean(weights)}
  return loss, aux


# ------------------------------------------------------------------ point_jepa


def block_sizes(config, num_groups: int) -> tuple[int, int, int]:
  """(max target block size, number of target blocks, context size) for G groups, static."""
  pj = config.train.point_jepa
  lo, hi = (float(v) for v in pj.target_size)
  num_targets = int(pj.num_targets)
  target_max = max(1, int(round(hi * num_groups)))
  ctx_hi = float(pj.context_size[1])
  # The context excludes every target group; with at most num_targets * target_max of them the
  # remaining pool always holds G - num_targets * target_max groups, so that many fit statically.
  context = min(max(1, int(round(ctx_hi * num_groups))), num_groups - num_targets * target_max)
  if context < 1 or not 0 < lo <= hi <= 1:
    raise ValueError(
        f'config.train.point_jepa: num_targets={num_targets} blocks of up to '
        f'round({hi} * G={num_groups}) = {target_max} groups leave no context group; lower '
        f'num_targets or target_size (target_size must satisfy 0 < lo <= hi <= 1)')
  return target_max, num_targets, context


def sample_blocks(rng, centers: jax.Array, config):
  """Target blocks and context indices, fixed shapes.

  Returns target_idx [B,T,S] int32 (a seed group and its S-1 nearest groups by centre distance,
  nearest first), target_weight [B,T,S] (1 for the first n_t entries, n_t drawn uniformly from
  round(target_size * G)), context_idx [B,C] int32 (the C groups nearest a random context seed
  among the groups in no target block).
  """
  b, g = centers.shape[:2]
  size_max, num_targets, num_context = block_sizes(config, g)
  lo = max(1, int(round(float(config.train.point_jepa.target_size[0]) * g)))
  k_seed, k_size, k_ctx = jax.random.split(rng, 3)
  dist = ops.squared_distances(centers, centers)                        # [B,G,G]
  seeds = jax.random.randint(k_seed, (b, num_targets), 0, g)
  seed_dist = jnp.take_along_axis(dist, seeds[:, :, None], axis=1)       # [B,T,G]
  # Ties broken by index (top_k keeps the lower index first), so the seed itself comes first.
  _, target_idx = jax.lax.top_k(-seed_dist, size_max)                   # [B,T,S]
  sizes = jax.random.randint(k_size, (b, num_targets, 1), lo, size_max + 1)
  target_weight = (jnp.arange(size_max)[None, None] < sizes).astype(jnp.float32)
  in_target = jnp.zeros((b, g), jnp.float32)
  in_target = jax.vmap(lambda m, i, w: m.at[i.reshape(-1)].max(w.reshape(-1)))(
      in_target, target_idx, target_weight)                              # [B,G] 1 = a target
  ctx_seed = jax.random.randint(k_ctx, (b, 1), 0, g)
  ctx_dist = jnp.take_along_axis(dist, ctx_seed[:, :, None], axis=1)[:, 0]   # [B,G]
  # Target groups get +inf-like distance so they are never picked; the pool is large enough.
  score = ctx_dist + in_target * 1e9
  _, context_idx = jax.lax.top_k(-score, num_context)
  return target_idx.astype(jnp.int32), target_weight, context_idx.astype(jnp.int32)


def point_jepa_init(config, rng, example_batch, models: Optional[Models] = None):
  models = models or build_models(config, example_batch)
  batch = jax.tree.map(lambda x: x[:1], example_batch)
  k_point, k_pred = jax.random.split(rng)
  points, centers, groups = _point_inputs(batch)
  student = models.point.init(k_point, points, centers, groups)['params']
  tokens = models.point.apply({'params': student}, points, centers, groups)['tokens']
  predictor = models.predictor.init(k_pred, tokens, query_pos=centers)['params']
  return {'student': student, 'predictor': predictor}


def _target_tokens(models: Models, ema_params, batch, config):
  """The EMA point encoder's tokens of every group [B,G,D]: stop-gradient, layer-normed (no
  affine, as I-JEPA / Point-JEPA) when train.normalize_target."""
  points, centers, groups = _point_inputs(batch)
  tokens = models.point.apply({'params': ema_params['student']}, points, centers, groups)['tokens']
  tokens = tokens.astype(jnp.float32)
  if config.train.normalize_target:
    tokens = layer_norm(tokens)
  return jax.lax.stop_gradient(tokens)


def _in_modal_loss(student_params, predictor_params, predictor, models: Models, batch, targets,
                   rng, config):
  """Point-JEPA masked block prediction against precomputed (EMA, normalised) target tokens."""
  points, centers, groups = _point_inputs(batch)
  k_blocks, k_drop = jax.random.split(rng)
  target_idx, target_weight, context_idx = sample_blocks(k_blocks, centers, config)
  b, num_targets, size = target_idx.shape
  context = models.point.apply({'params': student_params}, points, centers, groups,
                               keep_idx=context_idx, train=True,
                               rngs={'dropout': k_drop})['tokens']     # [B,C,D]
  flat_idx = target_idx.reshape(b, num_targets * size)
  query_pos = ops.gather(centers, flat_idx).reshape(b * num_targets, size, 3)
  target = ops.gather(targets, flat_idx).reshape(b, num_targets, size, -1)
  context = jnp.repeat(context, num_targets, axis=0)                    # one call per block
  pred = predictor.apply({'params': predictor_params}, context, query_pos=query_pos, train=True,
                         rngs={'dropout': jax.random.fold_in(k_drop, 1)})
  pred = pred.reshape(target.shape)
  loss = masked_mean(elementwise_loss(pred, target, config.train.loss), target_weight)
  aux = {'pred_std': batch_std(pred, target_weight), 'target_std': batch_std(target, target_weight),
         'valid_fraction': jnp.mean(target_weight),
         'context_fraction': jnp.asarray(context_idx.shape[1] / centers.shape[1], jnp.float32)}
  return loss, aux


def point_jepa_loss(params, ema_params, batch, rng, *, config, models: Models):
  targets = _target_tokens(models, ema_params, batch, config)
  return _in_modal_loss(params['student'], params['predictor'], models.predictor, models, batch,
                        targets, rng, config)


# ------------------------------------------------------------------ seed


def _pick_view(rng, views, batch_size: int):
  """One random view per object: every views/* leaf [B,K,...] -> [B,...]."""
  num_views = views['corr'].shape[1]
  k = jax.random.randint(rng, (batch_size,), 0, num_views)

  def take(x):
    idx = k.reshape((batch_size, 1) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)[:, 0]

  return jax.tree.map(take, views)


def seed_init(config, rng, example_batch, models: Optional[Models] = None):
  models = models or build_models(config, example_batch)
  batch = jax.tree.map(lambda x: x[:1], example_batch)
  k_point, k_vit, k_pred, k_local = jax.random.split(rng, 4)
  points, centers, groups = _point_inputs(batch)
  student = models.point.init(k_point, points, centers, groups)['params']
  tokens = models.point.apply({'params': student}, points, centers, groups)['tokens']
  view = jax.tree.map(lambda x: x[:, 0], batch['views'])
  init_dir = str(config.model.vit_init)
  if not init_dir:
    vit_params = models.vit.init(k_vit, view['image'].astype(jnp.float32))['params']
  else:
    # Trainable context encoder initialised from a converted / offline-trained ViT (the saved
    # params become constants of the jitted init).
    loaded = _load_vit_params(os.path.abspath(init_dir))   # checked against models.vit in build_models
    vit_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), loaded)
  patches = models.vit.apply({'params': vit_params}, view['image'].astype(jnp.float32))['patches']
  kwargs = {}
  if config.train.condition_pose:
    kwargs['world_to_cam'] = view['world_to_cam']
  if config.train.condition_hist:
    kwargs['hist'] = view['hist']
  predictor = models.predictor.init(k_pred, patches, query_pos=centers, **kwargs)['params']
  local = models.local_predictor.init(k_local, tokens, query_pos=centers)['params']
  return {'student': student, 'vit': vit_params, 'predictor': predictor, 'local_predictor': local}


def seed_loss(params, ema_params, batch, rng, *, config, models: Models):
  points, centers, groups = _point_inputs(batch)
  del points, groups
  b = centers.shape[0]
  k_view, k_vit, k_pred, k_local = jax.random.split(rng, 4)
  targets = _target_tokens(models, ema_params, batch, config)           # [B,G,D], EMA
  view = _pick_view(k_view, batch['views'], b)
  patches = models.vit.apply({'params': params['vit']}, view['image'].astype(jnp.float32),
                             train=True, rngs={'dropout': k_vit})['patches']
  kwargs = {}
  if config.train.condition_pose:
    kwargs['world_to_cam'] = view['world_to_cam']
  if config.train.condition_hist:
    kwargs['hist'] = view['hist']
  pred = models.predictor.apply({'params': params['predictor']}, patches, query_pos=centers,
                                train=True, rngs={'dropout': k_pred}, **kwargs)   # [B,G,D]
  weights = (view['corr'] >= 0).astype(jnp.float32)                     # visible groups only
  cross = masked_mean(elementwise_loss(pred, targets, config.train.loss), weights)
  local, local_aux = _in_modal_loss(params['student'], params['local_predictor'],
                                    models.local_predictor, models, batch, targets, k_local, config)
  loss = cross + float(config.train.seed_local_weight) * local
  aux = {'cross_loss': cross, 'local_loss': local, 'pred_std': batch_std(pred, weights),
         'target_std': batch_std(targets, weights), 'valid_fraction': jnp.mean(weights),
         'local_pred_std': local_aux['pred_std']}
  return loss, aux


# ------------------------------------------------------------------ registry


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  init_params: Callable[..., Any]
  loss_fn: Callable[..., Any]
  needs_images: bool = False


RECIPES = {
    'crossjepa': Recipe('crossjepa', crossjepa_init, crossjepa_loss),
    'point_jepa': Recipe('point_jepa', point_jepa_init, point_jepa_loss),
    'seed': Recipe('seed', seed_init, seed_loss, needs_images=True),
}


def get_recipe(name: str) -> Recipe:
  if name not in RECIPES:
    raise ValueError(f'config.recipe must be one of {sorted(RECIPES)}, got {name!r}')
  return RECIPES[name]


def ema_source(params) -> dict:
  """The part of the params the EMA tracks: {'student': ...}."""
  return {k: params[k] for k in EMA_KEYS}


def init_params(config, rng, example_batch, models: Optional[Models] = None):
  return get_recipe(config.recipe).init_params(config, rng, example_batch, models)


def loss_fn(params, ema_params, batch, rng, *, config, models: Models):
  return get_recipe(config.recipe).loss_fn(params, ema_params, batch, rng, config=config,
                                           models=models)



# ------------------------------------------------------------------ synthetic inputs


_group_points_jit = jax.jit(ops.group_points, static_argnums=(1, 2))


def synthetic_examples(config, num: int, *, teacher_dim: int = 32, seed: int = 0,
                       images: Optional[bool] = None) -> list[dict]:
  """`num` random per-object examples with the training batch's shapes (ARCHITECTURE.md
  "Training batch", views already subsampled to train.views_per_step). For tests and benchmarks:
  points on a jittered sphere, centres/groups from crossjepa.ops, random cameras, histograms and
  teacher features, about 40 % of group-view pairs visible."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  d, tr = config.data, config.train
  n, g, k, kv = int(d.num_points), int(d.num_groups), int(d.group_size), int(tr.views_per_step)
  hb = 3 * int(d.hist_bins)
  side = int(d.image_size) // int(d.patch_size)
  images = config.recipe == 'seed' if images is None else images
  rs = np.random.RandomState(seed)
  points = rs.normal(size=(num, n, 3)).astype(np.float32)
  points /= np.linalg.norm(points, axis=-1, keepdims=True)
  points *= rs.uniform(0.5, 1.0, size=(num, 1, 3)).astype(np.float32)   # anisotropic: distinct objects
  centers, groups = _group_points_jit(jnp.asarray(points), g, k)
  centers, groups = np.asarray(centers), np.asarray(groups)
  out = []
  for i in range(num):
    w2c = np.tile(np.eye(4, dtype=np.float32), (kv, 1, 1))
    w2c[:, :3, :3] = np.linalg.qr(rs.normal(size=(kv, 3, 3)))[0].astype(np.float32)
    w2c[:, 2, 3] = 2.6
    hist = rs.uniform(size=(kv, hb)).astype(np.float32)
    corr = np.where(rs.uniform(size=(kv, g)) < 0.4, rs.randint(0, side * side, size=(kv, g)), -1)
    views = {'world_to_cam': w2c,
             'intrinsics': np.tile(np.eye(3, dtype=np.float32), (kv, 1, 1)),
             'hist': hist / hist.sum(-1, keepdims=True),
             'corr': corr.astype(np.int32)}
    if images:
      views['image'] = rs.normal(size=(kv, d.image_size, d.image_size, 3)).astype(np.float32)
    teacher = {'cls': rs.normal(size=(kv, teacher_dim)).astype(np.float32)}
    if tr.target == 'groups':
      teacher['groups'] = (rs.normal(size=(kv, g, teacher_dim)) * (corr >= 0)[..., None]).astype(np.float32)
    out.append({'points': points[i], 'centers': centers[i], 'groups': groups[i].astype(np.int32),
                'label': np.int32(i % 4), 'views': views, 'teacher': teacher})
  return out


def synthetic_batch(config, batch_size: int, *, teacher_dim: int = 32, seed: int = 0,
                    images: Optional[bool] = None) -> dict:
  """A stacked batch of `synthetic_examples` (numpy)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  examples = synthetic_examples(config, batch_size, teacher_dim=teacher_dim, seed=seed, images=images)
  return jax.tree.map(lambda *xs: np.stack(xs), *examples)
