"""Frozen-encoder features for the evaluators: pooled final tokens of a point encoder.

The field's linear-probe protocol (Point-JEPA, point2vec; see shared/DATASETS.md) takes
concat(max, mean) over the encoder's last-layer tokens; that is the default pooling
(`config.eval.pooling = 'max+mean'`). 'max', 'mean' and 'cls' (when the encoder has a CLS token)
are there for ablations, never mixed silently: the pooling is recorded beside every number.

The embedding function is jitted once per (encoder, pooling, mesh) and takes the parameters as an
argument, so evaluating several parameter sets (random-init seeds, EMA vs student) compiles once.
The batch is sharded over all devices of the mesh (NamedSharding); a batch whose size is not a
multiple of the device count is padded to one (copies of its first row) and the padded rows are
dropped again.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

POOLINGS = ('max+mean', 'max', 'mean', 'cls')


def pool_tokens(out: dict[str, jax.Array], pooling: str) -> jax.Array:
  """Encoder output dict -> [B, F] features. 'max+mean' gives [B, 2D] as concat(max, mean)."""
  tokens = out['tokens']
  if pooling == 'max+mean':
    return jnp.concatenate([jnp.max(tokens, axis=1), jnp.mean(tokens, axis=1)], axis=-1)
  if pooling == 'max':
    return jnp.max(tokens, axis=1)
  if pooling == 'mean':
    return jnp.mean(tokens, axis=1)
  if pooling == 'cls':
    if 'cls' not in out:
      raise ValueError("eval.pooling='cls' but the point encoder has no CLS token "
                       '(set model.point_overrides.use_cls=True, or use max+mean)')
    return out['cls']
  raise ValueError(f'eval.pooling: unknown pooling {pooling!r}; expected one of {POOLINGS}')


def default_mesh() -> Mesh:
  """A 1-D mesh over all devices; the batch is sharded along it."""
  return Mesh(np.asarray(jax.devices()), ('data',))


def batch_spec(mesh: Mesh) -> P:
  # Shard the leading (batch) axis over every mesh axis together: pure data parallelism, whatever
  # axis names the training mesh uses (e.g. ('data', 'fsdp')).
  return P(tuple(mesh.axis_names))


class EmbedFn:
  """Callable `(points [B,N,3], centers [B,G,3]|None, groups [B,G,K]|None) -> features [B,F]` (np).

  `with_params(params)` returns an EmbedFn sharing the same compiled function.
  """

  def __init__(self, encoder_module, params, mesh: Optional[Mesh], pooling: str,
               _jitted: Optional[Callable] = None):
    if pooling not in POOLINGS:
      raise ValueError(f'eval.pooling: unknown pooling {pooling!r}; expected one of {POOLINGS}')
    self.module = encoder_module
    self.pooling = pooling
    self.mesh = mesh if mesh is not None else default_mesh()
    self.num_shards = int(np.prod(list(self.mesh.shape.values())))
    replicated = NamedSharding(self.mesh, P())
    self._batch_sharding = NamedSharding(self.mesh, batch_spec(self.mesh))
    if _jitted is None:
      module = encoder_module

      def embed(params, points, centers, groups):
        out = module.apply({'params': params}, points, centers, groups, train=False)
        return pool_tokens(out, pooling)

      # centers/groups may be None (the encoder then groups on the fly); jit treats None as an
      # empty pytree, so the two call patterns compile separately and each only once.
      _jitted = jax.jit(embed, out_shardings=self._batch_sharding)
    self._jitted = _jitted
    self.params = jax.device_put(params, replicated)

  def with_params(self, params) -> 'EmbedFn':
    return EmbedFn(self.module, params, self.mesh, self.pooling, _jitted=self._jitted)

  def __call__(self, points, centers=None, groups=None) -> np.ndarray:
    points = np.asarray(points, np.float32)
    if points.ndim != 3 or points.shape[-1] != 3:
      raise ValueError(f'embed: `points` must be [B,N,3], got {points.shape}')
    b = points.shape[0]
    pad = (-b) % self.num_shards

    def prep(x, dtype):
      if x is None:
        return None
      x = np.asarray(x, dtype)
      if pad:
        # Pad with copies of the first row (not zeros) so the encoder sees a valid cloud.
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)], axis=0)
      return jax.device_put(x, self._batch_sharding)

    feats = self._jitted(self.params, prep(points, np.float32), prep(centers, np.float32),
                         prep(groups, np.int32))
    return np.asarray(jax.device_get(feats))[:b]


def make_embed_fn(encoder_module, params, mesh: Optional[Mesh] = None, *,
                  pooling: str = 'max+mean') -> EmbedFn:
  """Frozen encoder -> `fn(points, centers=None, groups=None) -> np.ndarray [B, F]`.

  `params` are the encoder's params (the inner dict, without the {'params': ...} wrapper).
  F = 2 D for 'max+mean', D otherwise.
  """
  return EmbedFn(encoder_module, params, mesh, pooling)


def extract_features(embed_fn: Callable, batches: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
  """Runs `embed_fn` over the batches; returns (features [n,F] f32, labels [n] i64).

  A batch is either a dict with a `valid` [B] bool entry (data.pipeline.iterate_split) or a
  `(batch, valid)` pair. `valid` marks the real rows of a padded last batch; padded rows are
  dropped, so n is exactly the split's size.
  """
  feats, labels = [], []
  for item in batches:
    if isinstance(item, dict):
      if 'valid' not in item:
        raise ValueError(f'extract_features: a batch dict needs `valid`, got keys {sorted(item)}')
      batch, valid = item, item['valid']
    else:
      batch, valid = item
    if 'points' not in batch or 'label' not in batch:
      raise ValueError(f'extract_features: a batch needs `points` and `label`, got keys '
                       f'{sorted(batch)}')
    valid = np.asarray(valid, bool)
    f = embed_fn(batch['points'], batch.get('centers'), batch.get('groups'))
    if valid.shape != (f.shape[0],):
      raise ValueError(f'extract_features: valid mask of shape {valid.shape} for a batch of '
                       f'{f.shape[0]}')
    feats.append(f[valid])
    labels.append(np.asarray(batch['label'])[valid])
  if not feats:
    raise ValueError('extract_features: no batches')
  return (np.concatenate(feats, 0).astype(np.float32),
          np.concatenate(labels, 0).astype(np.int64))
