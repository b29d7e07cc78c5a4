"""Point-cloud grouping ops in plain jnp: farthest point sampling, kNN, batched gather.

These replace the CUDA add-ons (`pointnet2_ops.furthest_point_sample`, `knn_cuda.KNN`) that the
Point-MAE / Point-BERT tokenizer relies on. Everything has fixed shapes, so a jitted caller
compiles once per (B, N, G, K) and never per batch.

Conventions (the records in DESIGN.md section 3 are built with these, so they are a contract):
- FPS starts at point 0; each next point is the argmax of the running minimum squared distance to
  the points chosen so far, ties to the lowest index (pointnet2_ops keeps the first maximum too).
  Unlike pointnet2_ops we do not skip points within 1e-3 of the origin (a CUDA quirk).
- kNN returns neighbours nearest first, ties to the lowest index. Squared distances are computed
  as sum((q - p)^2), not |q|^2 + |p|^2 - 2 q.p: the expansion loses precision by cancellation and
  turns exact ties (duplicate points) into arbitrary orderings.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def _check_cloud(name: str, x: jax.Array) -> None:
  if x.ndim != 3 or x.shape[-1] != 3:
    raise ValueError(f'crossjepa.ops: `{name}` must be [B, N, 3], got shape {tuple(x.shape)}')


def squared_distances(queries: jax.Array, points: jax.Array) -> jax.Array:
  """[B,M,3], [B,N,3] -> [B,M,N] squared Euclidean distances, computed as sum of squared diffs."""
  diff = queries[:, :, None, :] - points[:, None, :, :]
  return jnp.sum(diff * diff, axis=-1)


def farthest_point_sampling(points: jax.Array, num: int) -> jax.Array:
  """Indices [B, num] int32 of `num` farthest-point samples of `points` [B, N, 3].

  Starts at index 0; ties to the lowest index. With fewer distinct points than `num` the
  remaining picks repeat (index 0 first, as the running minimum is then zero everywhere).

  Written for the CPU as much as for accelerators: the cloud is held coordinate-major ([B,3,N], so
  each update is three contiguous vector passes) and the arg-max is a max followed by the lowest
  index attaining it (two plain reductions instead of XLA's pair-valued arg-max reduction). Same
  indices as the direct form; about 10x faster on CPU at N = 10,000 (experiments/bench_prepare.py).
  """
  _check_cloud('points', points)
  batch, n = points.shape[0], points.shape[1]
  if not 1 <= num <= n:
    raise ValueError(f'crossjepa.ops.farthest_point_sampling: num must be in [1, N={n}], got {num}')
  coords = jnp.swapaxes(points.astype(jnp.float32), 1, 2)                 # [B,3,N]
  iota = lax.broadcasted_iota(jnp.int32, (batch, n), 1)

  def body(i, carry):
    idx, min_dist, last = carry                                           # last [B,3]
    diff = coords - last[:, :, None]
    dist = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]
    min_dist = jnp.minimum(min_dist, dist)
    best = jnp.max(min_dist, axis=1, keepdims=True)
    nxt = jnp.min(jnp.where(min_dist == best, iota, n), axis=1).astype(jnp.int32)
    last = jnp.take_along_axis(coords, nxt[:, None, None], axis=2)[:, :, 0]
    return idx.at[:, i].set(nxt), min_dist, last

  idx = jnp.zeros((batch, num), jnp.int32)
  min_dist = jnp.full((batch, n), jnp.inf, jnp.float32)
  idx, _, _ = lax.fori_loop(1, num, body, (idx, min_dist, coords[:, :, 0]))
  return idx


def knn(points: jax.Array, queries: jax.Array, k: int) -> jax.Array:
  """Indices [B, M, k] int32 of the k nearest `points` [B,N,3] to each query [B,M,3].

  Nearest first; equal distances ordered by the lower point index (lax.top_k is documented to put
  the lower index first among equal values, and the tests check it).
  """
  _check_cloud('points', points)
  _check_cloud('queries', queries)
  if points.shape[0] != queries.shape[0]:
    raise ValueError(f'crossjepa.ops.knn: batch mismatch, points {tuple(points.shape)} vs '
                     f'queries {tuple(queries.shape)}')
  n = points.shape[1]
  if not 1 <= k <= n:
    raise ValueError(f'crossjepa.ops.knn: k must be in [1, N={n}], got {k}')
  dist = squared_distances(queries.astype(jnp.float32), points.astype(jnp.float32))
  _, idx = lax.top_k(-dist, k)
  return idx.astype(jnp.int32)


def gather(x: jax.Array, idx: jax.Array) -> jax.Array:
  """Batched take: x [B,N,...], idx [B,*S] -> [B,*S,...] with out[b, s] = x[b, idx[b, s]]."""
  if x.shape[0] != idx.shape[0]:
    raise ValueError(f'crossjepa.ops.gather: batch mismatch, x {tuple(x.shape)} vs idx {tuple(idx.shape)}')
  return jax.vmap(lambda xb, ib: jnp.take(xb, ib, axis=0, mode='clip'))(x, idx)


def group_points(points: jax.Array, num_groups: int, group_size: int) -> tuple[jax.Array, jax.Array]:
  """FPS centres and kNN groups: points [B,N,3] -> (centers [B,G,3], groups [B,G,K] int32).

  `groups` index into `points`; each group's first entry is at distance 0 from its centre: the
  centre itself, or the lowest-index exact duplicate of it.
  """
  centers = gather(points, farthest_point_sampling(points, num_groups))
  return centers, knn(points, centers, group_size)
