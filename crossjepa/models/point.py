"""Point-cloud encoder: Point-MAE / Point-BERT tokenizer + pre-LN transformer.

Follows Pang et al., "Masked Autoencoders for Point Cloud Self-supervised Learning" (Point-MAE,
github.com/Pang-Yatian/Point-MAE, models/Point_MAE.py: Group, Encoder, TransformerEncoder):

  points [B,N,3] -> FPS centres [B,G,3] + kNN groups [B,G,K] (crossjepa.ops, or precomputed in
  the records) -> neighbourhoods re-centred on their centre -> mini-PointNet
  (Conv1d(3,w0)+norm+ReLU+Conv1d(w0,w1) -> max over K -> concat [global, per point]
  -> Conv1d(2 w1,w2)+norm+ReLU+Conv1d(w2,D) -> max over K) -> one token per group;
  position embedding MLP(3 -> 128 -> D) of the centres added before every block;
  optional CLS token; final LayerNorm.

A 1x1 Conv1d is a Dense over the channel axis, which is how it is written here.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjepa import ops
from crossjepa.models import fields as fields_lib
from crossjepa.models import layers

Dtype = Any


class GlobalLocalDense(nn.Module):
  """Point-MAE's second-stage 1x1 conv over concat([group feature, point feature]), without
  building the concatenation: its kernel's first rows act on the group's max-pooled feature once
  per group, not once per point, and only the rest run per point.

  dense(concat([broadcast(g), x])) = x @ W[w:] + (g @ W[:w] + b), so conv3's FLOPs per point halve
  (2 w1 w2 -> w1 w2, plus w1 w2 per group; at the paper's 64 x 32 groups of 256 -> 512 that is
  1.6 of 11.3 GFLOP per object per step) and the [.., K, 2 w1] concatenation is never written.
  Parameters are nn.Dense's on the concatenation ('kernel' [2 w, features], 'bias'), with its
  initialisers, so checkpoints, exports and the init values are the same.
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, group_feat: jax.Array, point_feat: jax.Array) -> jax.Array:
    """group_feat [..., w], point_feat [..., K, w] -> [..., K, features]."""
    w = point_feat.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (2 * w, self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    group_feat, point_feat, kernel, bias = nn.dtypes.promote_dtype(
        group_feat, point_feat, kernel, bias, dtype=self.dtype)
    per_group = jnp.dot(group_feat, kernel[:w]) + bias                     # [..., features]
    return jnp.dot(point_feat, kernel[w:]) + per_group[..., None, :]


class MiniPointNet(nn.Module):
  """Per-group PointNet: [B,G,K,3] re-centred neighbourhoods -> [B,G,out] tokens.

  LayerNorm (over channels, per point) replaces Point-MAE's BatchNorm1d. BatchNorm would make the
  module stateful (mutable batch_stats threaded through the train step and EMA), make a token
  depend on the other objects in the batch, and, with the batch sharded over devices, depend on
  the per-device batch unless the statistics are all-reduced. With LayerNorm the encoder is a pure
  function of its input: train == eval, and the 8-device result equals the 1-device result.
  Max-pooling over the K points makes a token invariant to the order of points in its group.
  conv3 on the concatenation is GlobalLocalDense (the same function and parameters, fewer FLOPs).
  """
  widths: tuple[int, int, int]
  out: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, neighborhood: jax.Array) -> jax.Array:
    w0, w1, w2 = self.widths
    x = nn.Dense(w0, dtype=self.dtype, name='conv1')(neighborhood)
    x = nn.relu(layers.norm(1e-5, self.dtype, 'norm1')(x))
    x = nn.Dense(w1, dtype=self.dtype, name='conv2')(x)                      # [B,G,K,w1]
    global_feat = jnp.max(x, axis=-2)                                         # [B,G,w1]
    x = GlobalLocalDense(w2, self.dtype, name='conv3')(global_feat, x)        # [B,G,K,w2]
    x = nn.relu(layers.norm(1e-5, self.dtype, 'norm2')(x))
    x = nn.Dense(self.out, dtype=self.dtype, name='conv4')(x)
    return jnp.max(x, axis=-2)


class PointEncoder(nn.Module):
  """Point-MAE-style encoder; see the module docstring. Output dict per docs/ARCHITECTURE.md.

  num_groups / group_size are used only when centres and groups are not passed in.
  """
  width: int = 96
  depth: int = 3
  num_heads: int = 4
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  num_groups: int = 32
  group_size: int = 16
  tokenizer_widths: tuple[int, int, int] = (128, 256, 512)
  pos_hidden: int = 128
  use_cls: bool = False
  pos_every_layer: bool = True
  dtype: Dtype = jnp.float32
  attention: str = 'einsum'        # layers.ATTENTIONS: how attention is computed (same params)
  remat: str = 'none'              # layers.REMATS: what the tokenizer and each block keep

  @nn.compact
  def __call__(self, points: jax.Array, centers: Optional[jax.Array] = None,
               groups: Optional[jax.Array] = None, *, keep_idx: Optional[jax.Array] = None,
               train: bool = False) -> dict[str, jax.Array]:
    if points.ndim != 3 or points.shape[-1] != 3:
      raise ValueError(f'PointEncoder: `points` must be [B,N,3], got {tuple(points.shape)}')
    b, n = points.shape[:2]
    points = points.astype(jnp.float32)
    if groups is None:
      if centers is None:
        centers, groups = ops.group_points(points, self.num_groups, self.group_size)
      else:
        groups = ops.knn(points, centers.astype(jnp.float32), self.group_size)
    elif centers is None:
      raise ValueError('PointEncoder: `groups` given without `centers`; pass both (as the records '
                       'carry them), only `centers`, or neither')
    if centers.ndim != 3 or centers.shape[0] != b or centers.shape[-1] != 3:
      raise ValueError(f'PointEncoder: `centers` must be [B={b},G,3], got {tuple(centers.shape)}')
    if groups.ndim != 3 or groups.shape[:2] != centers.shape[:2]:
      raise ValueError(f'PointEncoder: `groups` must be [B,G,K] with B,G = {tuple(centers.shape[:2])} '
                       f'of `centers`, got {tuple(groups.shape)}')
    if not jnp.issubdtype(groups.dtype, jnp.integer):
      raise ValueError(f'PointEncoder: `groups` must be integer indices, got {groups.dtype}')
    centers = centers.astype(jnp.float32)
    if keep_idx is not None:
      if keep_idx.ndim != 2 or keep_idx.shape[0] != b or not jnp.issubdtype(keep_idx.dtype, jnp.integer):
        raise ValueError(f'PointEncoder: `keep_idx` must be integer [B={b},G\'], got '
                         f'{tuple(keep_idx.shape)} {keep_idx.dtype}')
      # Selecting groups before the tokenizer equals selecting tokens after it (tokens are
      # per-group) and skips the work on dropped groups.
      centers = ops.gather(centers, keep_idx)
      groups = ops.gather(groups, keep_idx)

    neighborhood = ops.gather(points, groups) - centers[:, :, None, :]      # [B,G,K,3]
    # remat covers the mini-PointNet too: its per-point activations ([B,G,K,w] at four widths)
    # are a large part of what the step keeps for the backward.
    tokenizer = layers.checkpointed(MiniPointNet, self.remat, static_argnums=())
    tokens = tokenizer(tuple(self.tokenizer_widths), self.width, self.dtype,
                       name='tokenizer')(neighborhood.astype(self.dtype))
    pos = layers.Mlp(self.pos_hidden, self.width, self.dtype, name='center_embed')(
        centers.astype(self.dtype))
    if self.use_cls:
      init = nn.initializers.normal(0.02)
      cls_token = self.param('cls_token', init, (1, 1, self.width), jnp.float32)
      cls_pos = self.param('cls_pos_embed', init, (1, 1, self.width), jnp.float32)
      tokens = jnp.concatenate([jnp.broadcast_to(cls_token, (b, 1, self.width)).astype(self.dtype),
                                tokens], axis=1)
      pos = jnp.concatenate([jnp.broadcast_to(cls_pos, (b, 1, self.width)).astype(self.dtype),
                             pos], axis=1)
    x = layers.Transformer(self.depth, self.width, self.num_heads, self.mlp_ratio, self.qkv_bias,
                           self.drop_path, self.pos_every_layer, self.dtype, self.attention,
                           self.remat, name='transformer')(tokens, pos, train=train)
    x = layers.norm(1e-6, self.dtype, 'norm')(x).astype(jnp.float32)
    out = {'tokens': x[:, 1:] if self.use_cls else x, 'centers': centers}
    if self.use_cls:
      out['cls'] = x[:, 0]
    return out


# Named variants, decoded only by `point_encoder`.
VARIANTS: dict[str, dict[str, Any]] = {
    # Tests and the CPU default: 0.37 M parameters.
    'tiny': dict(width=96, depth=3, num_heads=4, tokenizer_widths=(32, 64, 128), pos_hidden=64,
                 num_groups=32, group_size=16),
    # A mid-size encoder for longer CPU/GPU runs: 3.09 M parameters.
    'small': dict(width=192, depth=6, num_heads=6, tokenizer_widths=(128, 256, 512), pos_hidden=128,
                  num_groups=64, group_size=32),
    # Point-MAE / Point-JEPA encoder: 12 x 384, 6 heads, 64 groups of 32 (21.84 M parameters).
    'S': dict(width=384, depth=12, num_heads=6, tokenizer_widths=(128, 256, 512), pos_hidden=128,
              num_groups=64, group_size=32),
    # CrossJEPA's published point encoder has 8.5 M parameters; the paper gives no depth/width.
    # We keep Point-MAE's tokenizer, position MLP and mlp_ratio 4 and shrink the transformer:
    # 8 blocks x 288 wide (6 heads of 48) gives 8,476,032 parameters (8,476,608 with a CLS token),
    # the closest standard-looking configuration to 8.5 M (12 x 256 gives 9.98 M, 12 x 240 8.78 M,
    # 10 x 256 8.36 M). Blocks dominate: 8 x (12 x 288^2 + 13 x 288) = 7.99 M.
    'paper': dict(width=288, depth=8, num_heads=6, tokenizer_widths=(128, 256, 512), pos_hidden=128,
                  num_groups=64, group_size=32),
}


def point_encoder(variant: str = 'tiny', **overrides) -> PointEncoder:
  """PointEncoder of a named variant, with dataclass-field overrides (e.g. dtype='bfloat16')."""
  if variant not in VARIANTS:
    raise ValueError(f'point_encoder: unknown variant {variant!r}; expected one of {sorted(VARIANTS)}')
  fields = {**VARIANTS[variant], **overrides}
  where = f'point_encoder({variant!r})'
  return PointEncoder(**fields_lib.decode_overrides(PointEncoder, where, fields))
