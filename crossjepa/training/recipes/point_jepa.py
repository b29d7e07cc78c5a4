"""The `point_jepa` recipe (Point-JEPA, Saito et al. 2024; I-JEPA's masking) and its masked block
prediction, which the `seed` recipe also uses as its local in-modal loss.

Contiguous target blocks of groups (a random seed group and its nearest groups in centre space);
the context (the groups nearest a second random seed, excluding all targets) goes through the
student; an EMA target encoder over all groups gives the targets (stop-gradient, layer-normed); the
predictor is queried at the target centres, one predictor call per target block. Shapes are
static: blocks are chosen by sorting random scores and distances, never by boolean indexing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from crossjepa import ops
from crossjepa.training import losses
from crossjepa.training.recipes.crossjepa import init_student, point_inputs
from crossjepa.training.recipes.models import Models


def block_sizes(config, num_groups: int) -> tuple[int, int, int]:
  """(max target block size, number of target blocks, context size) for G groups, static."""
  pj = config.train.point_jepa
  lo, hi = (float(v) for v in pj.target_size)
  num_targets = int(pj.num_targets)
  target_max = max(1, int(round(hi * num_groups)))
  context_fraction = float(pj.context_size)
  # The context excludes every target group; with at most num_targets * target_max of them the
  # remaining pool always holds G - num_targets * target_max groups, so that many fit statically.
  context = min(max(1, int(round(context_fraction * num_groups))),
                num_groups - num_targets * target_max)
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


def init_params(config, rng, example_batch, models: Models):
  del config
  batch = jax.tree.map(lambda x: x[:1], example_batch)
  k_point, k_pred = jax.random.split(rng)
  student, tokens = init_student(models, k_point, batch)
  predictor = models.predictor.init(k_pred, tokens, query_pos=batch['centers'])['params']
  return {'student': student, 'predictor': predictor}


def target_tokens(models: Models, ema_params, batch, config):
  """The EMA point encoder's tokens of every group [B,G,D]: stop-gradient, layer-normed (no
  affine, as I-JEPA / Point-JEPA) when train.normalize_target."""
  points, centers, groups = point_inputs(batch)
  tokens = models.point.apply({'params': ema_params['student']}, points, centers, groups)['tokens']
  tokens = tokens.astype(jnp.float32)
  if config.train.normalize_target:
    tokens = losses.layer_norm(tokens)
  return jax.lax.stop_gradient(tokens)


def in_modal_loss(student_params, predictor_params, predictor, models: Models, batch, targets,
                  rng, config):
  """Point-JEPA masked block prediction against precomputed (EMA, normalised) target tokens."""
  points, centers, groups = point_inputs(batch)
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
  loss = losses.masked_mean(losses.elementwise_loss(pred, target, config.train.loss), target_weight)
  aux = {'pred_std': losses.batch_std(pred, target_weight),
         'target_std': losses.batch_std(target, target_weight),
         'valid_fraction': jnp.mean(target_weight),
         'context_fraction': jnp.asarray(context_idx.shape[1] / centers.shape[1], jnp.float32)}
  return loss, aux


def loss_fn(params, ema_params, batch, rng, *, config, models: Models):
  targets = target_tokens(models, ema_params, batch, config)
  return in_modal_loss(params['student'], params['predictor'], models.predictor, models, batch,
                       targets, rng, config)
