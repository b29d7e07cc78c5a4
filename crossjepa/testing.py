"""Fakes for tests and benchmarks: random examples with the training batch's shapes, no data needed.

Used by tests/ and experiments/bench_step.py; nothing in the package's own pipeline imports it.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import ops
from crossjepa.models import layers
from crossjepa.models import point


_group_points_jit = jax.jit(ops.group_points, static_argnums=(1, 2))


def fast_init(module, *args, seed=0, **kwargs):
  """Parameters with init's shapes, filled from NumPy (scale 1 +- 0.1, biases 0.1 N(0,1), kernels
  N(0, 1/fan_in)): avoids compiling (or running op by op) the random initialisers, which
  dominates a small model's test time on CPU."""
  rng = np.random.default_rng(seed)
  abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("'scale']"):
      value = 1 + 0.1 * rng.normal(size=leaf.shape)
    elif name.endswith("'bias']") or len(leaf.shape) < 2:
      value = 0.1 * rng.normal(size=leaf.shape)
    else:
      value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    return jnp.asarray(value, leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def synthetic_examples(config, num: int, *, teacher_dim: int = 32, seed: int = 0,
                       images: Optional[bool] = None) -> list[dict]:
  """`num` random per-object examples with the training batch's shapes (ARCHITECTURE.md
  "Training batch", views already subsampled to train.views_per_step). For tests and benchmarks:
  points on a jittered sphere, centres/groups from crossjepa.ops, random cameras, histograms and
  teacher features, about 40 % of group-view pairs visible."""
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
  examples = synthetic_examples(config, batch_size, teacher_dim=teacher_dim, seed=seed, images=images)
  return jax.tree.map(lambda *xs: np.stack(xs), *examples)


def nbytes(tree) -> int:
  """The bytes of a tree of arrays or ShapeDtypeStructs (of a PRNG key array: its key data's)."""
  def size(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.eval_shape(jax.random.key_data, x)
    return int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
  return sum(size(x) for x in jax.tree.leaves(tree))


def backward_residuals(f, primals, *args) -> list:
  """What `jax.vjp` of `f(primals, *args)` over `primals` keeps for the backward pass: the vjp
  function's leaves (the primals it reads and every residual), as ShapeDtypeStructs (traced
  abstractly with jax.eval_shape: nothing runs; `args` may be ShapeDtypeStructs too). How
  model.remat's saving is counted (tests/test_remat.py, experiments/memory.py)."""
  def leaves(p, *a):
    return jax.tree.leaves(jax.vjp(lambda q: f(q, *a), p)[1])
  return jax.eval_shape(leaves, primals, *args)


def teacher_widths_of(batch) -> dict[str, int]:
  """The teacher widths a fake batch carries (teacher/cls, teacher/groups), for build_models."""
  width = int(batch['teacher']['cls'].shape[-1])
  groups = batch['teacher'].get('groups')
  return {'width': width, 'feature_width': int(groups.shape[-1]) if groups is not None else width}


class ConcatMiniPointNet(point.MiniPointNet):
  """The mini-PointNet as Point-MAE writes it: conv3 a Dense on the built [.., K, 2 w1]
  concatenation of the broadcast group feature and each point's. The same parameters as
  point.MiniPointNet; the reference its GlobalLocalDense is tested against, and bench_step's
  `--tokenizer=concat`."""

  @nn.compact
  def __call__(self, neighborhood: jax.Array) -> jax.Array:
    w0, w1, w2 = self.widths
    x = nn.Dense(w0, dtype=self.dtype, name='conv1')(neighborhood)
    x = nn.relu(layers.norm(1e-5, self.dtype, 'norm1')(x))
    x = nn.Dense(w1, dtype=self.dtype, name='conv2')(x)
    global_feat = jnp.max(x, axis=-2, keepdims=True)
    x = jnp.concatenate([jnp.broadcast_to(global_feat, x.shape), x], axis=-1)
    x = nn.Dense(w2, dtype=self.dtype, name='conv3')(x)
    x = nn.relu(layers.norm(1e-5, self.dtype, 'norm2')(x))
    x = nn.Dense(self.out, dtype=self.dtype, name='conv4')(x)
    return jnp.max(x, axis=-2)


# The mini-PointNet forms by name: point.MiniPointNet (conv3 as GlobalLocalDense, the default) and
# Point-MAE's concatenating form.
TOKENIZERS = {'split': point.MiniPointNet, 'concat': ConcatMiniPointNet}


# nn.LayerNorm for every dtype: what layers.norm gave before layers.LayerNorm.
flax_norm = layers.flax_layer_norm


NORMS = {'kept': layers.norm, 'flax': flax_norm}


def use_norm(name: str) -> None:
  """NORMS[name] as the trained models' LayerNorm (layers.norm) for every model applied after
  this call: the A/B switch of experiments/bench_norm.py."""
  if name not in NORMS:
    raise ValueError(f'norm must be one of {sorted(NORMS)}, got {name!r}')
  layers.norm = NORMS[name]


def use_tokenizer(name: str) -> None:
  """TOKENIZERS[name] for every PointEncoder applied after this call: the A/B switch of
  experiments/bench_step.py and bench_tokenizer.py."""
  if name not in TOKENIZERS:
    raise ValueError(f'tokenizer must be one of {sorted(TOKENIZERS)}, got {name!r}')
  point.MiniPointNet = TOKENIZERS[name]
