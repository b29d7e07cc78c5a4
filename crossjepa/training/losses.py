"""Loss pieces shared by the recipes and the offline teacher: target normalisation, per-entry
losses, masked means and the batch-spread (collapse) watch. Pure jnp functions of arrays."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm over the last axis without affine (target normalisation, as I-JEPA)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


BATCH_STANDARDIZE_EPS = 1e-4   # added to each dimension's variance


def batch_standardize(target: jax.Array, weights: jax.Array,
                      eps: float = BATCH_STANDARDIZE_EPS) -> jax.Array:
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
