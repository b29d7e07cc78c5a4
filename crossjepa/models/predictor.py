"""JEPA predictor: a narrow transformer from context tokens (+ view conditioning) to target latents.

CrossJEPA (arXiv 2511.18424): given the point tokens of an object and the camera pose and colour
histogram of one rendered view, predict the frozen image teacher's embedding of that view, either
its CLS (global query tokens) or its patch features at the group centres (one query per target
position). The same module serves the design card's reverse direction (ViT context tokens, queries
at 3D group positions) and the Point-JEPA baseline (point context, queries at masked group centres),
in the manner of the I-JEPA predictor (facebookresearch/ijepa, src/models/vision_transformer.py:
VisionTransformerPredictor): project context to the predictor width, append position-embedded mask
tokens, run a transformer, final norm, project back to the target width.

Token sequence: [pose token?, histogram token?, context tokens (T), query tokens (Q)]. There is no
attention mask: every token attends to every token. That leaks nothing, because the targets never
enter the predictor; and the queries cannot see each other's answers, only their own positions.
The output is the Q query tokens. Nothing reads the other tokens after the last block, so that
block computes the query rows only (`last_block_queries_only`; `layers.Transformer(out_rows=Q)`).

Both query kinds' parameters (global `query_tokens` and the position MLP + `mask_token`) are always
created at init, so a module initialised with one kind can be applied with the other.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjepa.models import fields as fields_lib
from crossjepa.models import layers

Dtype = Any


class Predictor(nn.Module):
  """See the module docstring; signature per docs/ARCHITECTURE.md."""
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  out_dim: int = 0                 # the target width; must be set (e.g. the teacher's width)
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  use_pose: bool = True            # a token embedding world_to_cam[:, :3, :4] (12 numbers)
  use_hist: bool = True            # a token embedding the view's colour histogram
  query_dim: int = 3               # 3: group centres; 2: image patch positions
  max_queries: int = 1             # number of learned global query tokens available
  pos_hidden: int = 128            # hidden width of the query-position MLP (as Point-MAE's)
  dtype: Dtype = jnp.float32
  attention: str = 'einsum'        # layers.ATTENTIONS: how attention is computed (same params)
  # Only the query tokens are read out, so the last block computes only their rows (attention
  # over every token's key and value, projection, MLP): the same output, fewer FLOPs. False runs
  # every row of every block (the reference the tests and experiments/bench_predictor.py use).
  last_block_queries_only: bool = True
  remat: str = 'none'              # layers.REMATS: what each block keeps for the backward pass

  @nn.compact
  def __call__(self, context: jax.Array, *, world_to_cam: Optional[jax.Array] = None,
               hist: Optional[jax.Array] = None, query_pos: Optional[jax.Array] = None,
               num_queries: int = 1, train: bool = False) -> jax.Array:
    if self.out_dim <= 0:
      raise ValueError(f'Predictor.out_dim must be set to the target width, got {self.out_dim}')
    if context.ndim != 3:
      raise ValueError(f'Predictor: `context` must be [B,T,Dc], got {tuple(context.shape)}')
    b = context.shape[0]
    init = nn.initializers.normal(0.02)
    tokens = []

    if self.use_pose:
      if world_to_cam is None:
        raise ValueError('Predictor: `world_to_cam` [B,4,4] is required because use_pose=True')
      if world_to_cam.shape not in ((b, 4, 4), (b, 3, 4)):
        raise ValueError(f'Predictor: `world_to_cam` must be [B={b},4,4], got {tuple(world_to_cam.shape)}')
      pose = world_to_cam[:, :3, :4].reshape(b, 12).astype(self.dtype)
      tokens.append(nn.Dense(self.width, dtype=self.dtype, name='pose_embed')(pose)[:, None])
    if self.use_hist:
      if hist is None:
        raise ValueError('Predictor: `hist` [B,Hb] is required because use_hist=True')
      if hist.ndim != 2 or hist.shape[0] != b:
        raise ValueError(f'Predictor: `hist` must be [B={b},Hb], got {tuple(hist.shape)}')
      hist_token = nn.Dense(self.width, dtype=self.dtype, name='hist_embed')(hist.astype(self.dtype))
      tokens.append(hist_token[:, None])

    tokens.append(nn.Dense(self.width, dtype=self.dtype, name='context_proj')(context.astype(self.dtype)))

    query_tokens = self.param('query_tokens', init, (self.max_queries, self.width), jnp.float32)
    mask_token = self.param('mask_token', init, (self.width,), jnp.float32)
    position_mlp = layers.Mlp(self.pos_hidden, self.width, self.dtype, name='target_position_mlp')
    if query_pos is not None:
      if query_pos.ndim != 3 or query_pos.shape[0] != b or query_pos.shape[-1] != self.query_dim:
        raise ValueError(f'Predictor: `query_pos` must be [B={b},Q,query_dim={self.query_dim}], '
                         f'got {tuple(query_pos.shape)}')
      queries = mask_token.astype(self.dtype) + position_mlp(query_pos.astype(self.dtype))
    else:
      if not 1 <= num_queries <= self.max_queries:
        raise ValueError(f'Predictor: num_queries must be in [1, max_queries={self.max_queries}], '
                         f'got {num_queries}')
      if self.is_initializing():
        position_mlp(jnp.zeros((1, 1, self.query_dim), self.dtype))   # create its params too
      queries = jnp.broadcast_to(query_tokens[:num_queries].astype(self.dtype),
                                 (b, num_queries, self.width))
    num_q = queries.shape[1]
    tokens.append(queries)

    x = jnp.concatenate(tokens, axis=1)
    x = layers.Transformer(self.depth, self.width, self.num_heads, self.mlp_ratio, self.qkv_bias,
                           self.drop_path, dtype=self.dtype, attention=self.attention,
                           remat=self.remat, name='transformer')(
                               x, train=train, out_rows=num_q if self.last_block_queries_only else None)
    x = layers.norm(1e-6, self.dtype, 'norm')(x[:, -num_q:])
    return nn.Dense(self.out_dim, dtype=self.dtype, name='out_proj')(x).astype(jnp.float32)


# Named variants, decoded only by `predictor`. out_dim (the target width) comes from the caller.
VARIANTS: dict[str, dict[str, Any]] = {
    'tiny': dict(width=64, depth=2, num_heads=4),
    'small': dict(width=192, depth=4, num_heads=6),
    # CrossJEPA reports 14.1 M trainable parameters in all, 8.5 M of them in the point encoder, so
    # about 5.6 M in the predictor. Narrower than the 'paper' point encoder (288) and deeper, as
    # I-JEPA's predictor: 7 x 256 (4 heads of 64). With context width 288, out_dim 768 (ViT-B),
    # a 24-bin histogram and 3-D queries: 7 x 789,760 (blocks) + 73,984 (context_proj)
    # + 197,376 (out_proj) + 33,536 (position MLP) + 3,328 (pose) + 6,400 (hist) + 256 + 256
    # (query/mask tokens) + 512 (norm) = 5,843,968; with point_encoder('paper') 14,320,000 (14.3 M).
    # 3 x 384 would give 14.27 M but is wider than the encoder; 6 x 256 gives only 13.53 M.
    'paper': dict(width=256, depth=7, num_heads=4),
}


def predictor(variant: str = 'tiny', **overrides) -> Predictor:
  """Predictor of a named variant, with dataclass-field overrides (out_dim, use_pose, ...)."""
  if variant not in VARIANTS:
    raise ValueError(f'predictor: unknown variant {variant!r}; expected one of {sorted(VARIANTS)}')
  fields = {**VARIANTS[variant], **overrides}
  return Predictor(**fields_lib.decode_overrides(Predictor, f'predictor({variant!r})', fields))
