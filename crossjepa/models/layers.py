"""Shared pre-LN transformer layers for the point encoder, the predictor and the ViT.

Follows the timm `Block` that Point-MAE / Point-BERT / I-JEPA use: x + Attn(LN(x)), then
x + MLP(LN(x)) with an exact-erf GELU MLP of hidden width mlp_ratio * width, optional
stochastic depth. The DINOv2-compatible ViT (vit.py) builds its own block (LayerScale, torch-exact
LayerNorm) from the same `Attention` and `Mlp`, with its truncated-normal `kernel_init`.

Parameters are float32; `dtype` is the compute dtype (e.g. bfloat16). Softmax and LayerNorm
statistics run in float32 whatever the compute dtype, for stability. The trained models'
LayerNorm is `norm(...)`: in a bfloat16 step `LayerNorm`, whose own backward pass keeps x and two
numbers a row instead of autodiff's three float32 copies of x; nn.LayerNorm in float32.

`attention` (config model.attention) picks how `Attention` computes softmax(q k^T / sqrt(d)) v:
'einsum' writes it out; 'dot_product' calls `jax.nn.dot_product_attention(implementation=None)`
(in JAX 0.10.2 None still means its XLA lowering); 'cudnn' calls it with implementation='cudnn'
(cuDNN's fused flash-attention kernel) where that kernel applies: on a GPU, bfloat16/float16
compute, head dim a multiple of 8 up to 128. Elsewhere 'cudnn' runs the 'dot_product' XLA lowering
and logs the reason once (`cudnn_unavailable`). All have the same params. They differ only in rounding, and only for
bfloat16: 'einsum' rounds q k^T to bfloat16 before the scale and the float32 softmax; the XLA
lowering of 'dot_product' keeps the logits in float32 from the matmul on (its softmax is float32
too; the weights are cast back to bfloat16 for the product with v).

`rows` (Block, Attention) / `out_rows` (Transformer): when a caller reads only the last few
tokens' outputs (the predictor's query tokens), the last block computes only those rows: every
token's key and value, the kept rows' queries, attention rows, projection and MLP. Same params,
same values up to the matmuls' summation order.

`remat` (config model.remat) recomputes each block's activations in the backward pass instead of
keeping them (`nn.remat`, same params and names, same values): 'none' keeps them all; 'full'
keeps only each block's input; 'dots' keeps the outputs of the dense layers (qkv, proj, fc1,
fc2: matmuls without batch dimensions, `jax.checkpoint_policies.dots_with_no_batch_dims_saveable`)
and recomputes the LayerNorms, the attention's batched products
and softmax, and the GELU. The point encoder applies the same to its mini-PointNet
(`checkpointed`).

Parameter count of one Block of width D, hidden h = int(mlp_ratio * D), with qkv bias:
  2D (norm1) + 3D^2 + 3D (qkv) + D^2 + D (proj) + 2D (norm2) + D h + h (fc1) + h D + D (fc2)
  = 4 D^2 + 2 D h + 9 D + h     (= 12 D^2 + 13 D for mlp_ratio 4).
"""
from __future__ import annotations

import functools
from typing import Any, Optional

from absl import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Initializer = Any   # a jax.nn.initializers function

ATTENTIONS = ('einsum', 'dot_product', 'cudnn')   # the values of `attention` (model.attention)
REMATS = ('none', 'full', 'dots')                 # the values of `remat` (model.remat)
_CUDNN_FALLBACKS: set[str] = set()   # reasons already logged


def cudnn_unavailable(dtype, head_dim: int) -> str | None:
  """Why cuDNN's fused attention kernel does not apply here (None when it does)."""
  if jax.default_backend() != 'gpu':
    return f'the backend is {jax.default_backend()!r}, not a GPU'
  if jnp.dtype(dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    return f'the compute dtype is {jnp.dtype(dtype).name} (cuDNN needs bfloat16 or float16)'
  if head_dim % 8 or head_dim > 128:
    return f'the head dim is {head_dim} (cuDNN needs a multiple of 8, at most 128)'
  return None


def checkpointed(block: type[nn.Module], remat: str, static_argnums: tuple[int, ...]):
  """`block` itself for remat 'none', else `block` under nn.remat with the policy `remat` names
  (module docstring); static_argnums count the block's __call__ arguments after self from 1.
  Params keep their names: the lifted module is built with the same `name`."""
  if remat not in REMATS:
    raise ValueError(f'remat must be one of {list(REMATS)}, got {remat!r}')
  if remat == 'none':
    return block
  policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if remat == 'dots' else None
  return nn.remat(block, static_argnums=static_argnums, policy=policy)


def gelu(x: jax.Array) -> jax.Array:
  # Exact (erf) GELU, as torch.nn.GELU() in Point-MAE; flax's default is the tanh approximation.
  return nn.gelu(x, approximate=False)


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the activation OpenAI's CLIP models were trained with (HF 'quick_gelu',
  open_clip QuickGELU)."""
  return x * nn.sigmoid(1.702 * x)


ACTIVATIONS = {'gelu': gelu, 'quick_gelu': quick_gelu}


def block_param_count(width: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> int:
  """Number of parameters of one `Block` (the formula in the module docstring)."""
  d, h = width, int(mlp_ratio * width)
  return 4 * d * d + 2 * d * h + 9 * d + h - (0 if qkv_bias else 3 * d)


def check_rows(rows: Optional[int], tokens: int, where: str) -> None:
  if rows is not None and not 1 <= rows <= tokens:
    raise ValueError(f'{where}: rows must be in [1, {tokens}] (the tokens), got {rows}')


def _layer_norm_stats(x: jax.Array, epsilon: float, fast_variance: bool):
  # nn.LayerNorm's statistics, in float32 (or wider): with use_fast_variance E[x^2] - E[x]^2
  # clipped at 0, else E[(x - E[x])^2] (torch's, the ViT's); then 1 / sqrt(var + eps).
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = xf.mean(-1, keepdims=True)
  if fast_variance:
    var = jnp.maximum(0.0, jax.lax.square(xf).mean(-1, keepdims=True) - jax.lax.square(mean))
  else:
    var = jax.lax.square(xf - mean).mean(-1, keepdims=True)
  return xf, mean, jax.lax.rsqrt(var + epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
               dtype: Any, fast_variance: bool = True) -> jax.Array:
  """nn.LayerNorm's function over the last axis: ((x - mean) * (rsqrt(var + eps) * scale) +
  bias) in float32, in the same order of operations, cast to `dtype` (`fast_variance`: its
  use_fast_variance). Its backward pass keeps x as it came (bfloat16 in a bfloat16 step) and two
  float32 numbers a row, where autodiff of nn.LayerNorm keeps float32 copies of x-sized
  intermediates (`LayerNorm`)."""
  return _layer_norm_fwd(x, scale, bias, epsilon, dtype, fast_variance)[0]


def _layer_norm_fwd(x, scale, bias, epsilon, dtype, fast_variance):
  xf, mean, rstd = _layer_norm_stats(x, epsilon, fast_variance)
  y = (xf - mean) * (rstd * scale) + bias
  return y.astype(dtype), (x, mean, rstd, scale)


def _layer_norm_bwd(epsilon, dtype, fast_variance, residuals, dy):
  # d/dx of (x - m) r with m = mean(x), r = (var(x) + eps)^-1/2 over the last axis, g = dy scale:
  #   dx = r (g - mean(g) - xhat mean(g xhat)),  xhat = (x - m) r
  # (both variance formulas have the same derivative, 2 (x - m) / n).
  del epsilon, dtype, fast_variance
  x, mean, rstd, scale = residuals
  xhat = (x.astype(mean.dtype) - mean) * rstd
  dy = dy.astype(mean.dtype)
  g = dy * scale
  dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
  rows = tuple(range(x.ndim - 1))
  return (dx.astype(x.dtype), (dy * xhat).sum(rows).astype(scale.dtype),
          dy.sum(rows).astype(scale.dtype))


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """nn.LayerNorm over the last axis (its 'scale' and 'bias' params, initialisers and float32
  statistics; the same forward values), with a backward pass that keeps less.

  Autodiff of nn.LayerNorm keeps, for a bfloat16 input, three float32 arrays the size of x (x
  widened for its statistics, x - mean, and their product with rsqrt(var) * scale): 12 bytes an
  element beside the input's 2. `layer_norm`'s own vjp keeps x (2 bytes an element) and the row's
  mean and 1 / std, and recomputes x_hat in the backward pass. In the paper step (bfloat16, 1
  view) that is 45.3 -> 26.8 MB an object of what the backward pass keeps (experiments/memory.py;
  XLA's own fusion had already dropped part of it: README, "Speed and size").
  """
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32
  fast_variance: bool = True       # nn.LayerNorm's use_fast_variance (False: the ViT's, torch's)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones_init(), (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (features,), jnp.float32)
    return layer_norm(x, scale, bias, self.epsilon, jnp.dtype(self.dtype), self.fast_variance)


def flax_layer_norm(epsilon: float, dtype: Dtype, name: Optional[str],
                    fast_variance: bool = True) -> nn.LayerNorm:
  """nn.LayerNorm with float32 params (`fast_variance`: its use_fast_variance)."""
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
                      use_fast_variance=fast_variance, name=name)


def norm(epsilon: float, dtype: Dtype, name: str, fast_variance: bool = True) -> nn.Module:
  """The trained models' LayerNorm: `LayerNorm` for a compute dtype narrower than float32, where
  it keeps a sixth of the bytes; nn.LayerNorm itself for float32, where autodiff's copies are
  x-sized anyway (it keeps x - mean and its scaled product: 8 bytes an element against 4) and
  the float32 results recorded so far stay bitwise. The same params either way."""
  if jnp.finfo(dtype).bits >= 32:
    return flax_layer_norm(epsilon, dtype, name, fast_variance)
  return LayerNorm(epsilon, dtype, fast_variance, name=name)


class Mlp(nn.Module):
  """Dense(hidden) -> GELU -> Dense(out). Used for the transformer MLP and position embeddings.
  `act` names the activation in ACTIVATIONS (exact GELU unless a CLIP ViT says 'quick_gelu')."""
  hidden: int
  out: int
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.linear.default_kernel_init
  act: str = 'gelu'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=self.kernel_init, name='fc1')(x)
    x = ACTIVATIONS[self.act](x)
    return nn.Dense(self.out, dtype=self.dtype, kernel_init=self.kernel_init, name='fc2')(x)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection (timm layout): every token attends to
  every token, or with `causal` (CLIP's text tower) to itself and the tokens before it."""
  width: int
  num_heads: int
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.linear.default_kernel_init
  attention: str = 'einsum'        # one of ATTENTIONS; see the module docstring
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, rows: Optional[int] = None) -> jax.Array:
    """[B,T,D] -> [B,T,D]; with `rows`, only the last `rows` tokens' outputs [B,rows,D] (every
    token's key and value still enters their attention)."""
    if self.width % self.num_heads:
      raise ValueError(f'Attention: width {self.width} is not divisible by num_heads {self.num_heads}')
    if self.attention not in ATTENTIONS:
      raise ValueError(f'Attention: attention must be one of {list(ATTENTIONS)}, got {self.attention!r}')
    b, t, _ = x.shape
    head_dim = self.width // self.num_heads
    qkv = nn.Dense(3 * self.width, use_bias=self.qkv_bias, dtype=self.dtype,
                   kernel_init=self.kernel_init, name='qkv')(x)
    q, k, v = jnp.split(qkv.reshape(b, t, 3, self.num_heads, head_dim), 3, axis=2)
    q, k, v = (a[:, :, 0] for a in (q, k, v))                        # [B,T,H,Dh]
    if rows is not None:
      q = q[:, t - rows:]                                              # [B,rows,H,Dh]
    t_q = q.shape[1]
    if self.causal and rows is not None:
      raise ValueError('Attention: causal attention computes every row (rows must be None)')
    if self.attention in ('dot_product', 'cudnn'):
      implementation = None
      # A few query rows (a predictor's last block) gain nothing from the fused kernel: there
      # 'cudnn' runs the XLA lowering, without a log line.
      if self.attention == 'cudnn' and rows is None:
        reason = cudnn_unavailable(q.dtype, head_dim)
        if reason is None:
          implementation = 'cudnn'
        elif reason not in _CUDNN_FALLBACKS:
          _CUDNN_FALLBACKS.add(reason)
          logging.warning("model.attention='cudnn': %s; this attention runs the XLA lowering of "
                          'jax.nn.dot_product_attention instead', reason)
      out = jax.nn.dot_product_attention(q, k, v, scale=head_dim ** -0.5, is_causal=self.causal,
                                         implementation=implementation)
      out = out.reshape(b, t_q, self.width)
    else:
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * (head_dim ** -0.5)
      if self.causal:   # a large negative, as torch's float mask: the diagonal always stays
        logits = jnp.where(jnp.tril(jnp.ones((t, t), bool)), logits, jnp.finfo(logits.dtype).min)
      weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
      out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, t_q, self.width)
    return nn.Dense(self.width, dtype=self.dtype, kernel_init=self.kernel_init, name='proj')(out)


class Block(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)); x + MLP(LN(x)); optional stochastic depth."""
  width: int
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = 'einsum'

  def _drop_path(self, y: jax.Array, train: bool) -> jax.Array:
    # Stochastic depth per sample (Huang et al. 2016), as timm's DropPath; needs the 'dropout' rng.
    if not train or self.drop_path == 0.0:
      return y
    keep = 1.0 - self.drop_path
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
    return y * mask.astype(y.dtype) / keep

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, rows: Optional[int] = None) -> jax.Array:
    """[B,T,D] -> [B,T,D], or with `rows` the last `rows` tokens' outputs only, [B,rows,D]: the
    same values, without the other tokens' attention rows, projection and MLP (`Attention`)."""
    check_rows(rows, x.shape[1], 'Block')
    y = norm(1e-6, self.dtype, 'norm1')(x)
    y = Attention(self.width, self.num_heads, self.qkv_bias, self.dtype,
                  attention=self.attention, name='attn')(y, rows=rows)
    if rows is not None:
      x = x[:, x.shape[1] - rows:]
    x = x + self._drop_path(y, train)
    y = norm(1e-6, self.dtype, 'norm2')(x)
    y = Mlp(int(self.mlp_ratio * self.width), self.width, self.dtype, name='mlp')(y)
    return x + self._drop_path(y, train)


class Transformer(nn.Module):
  """A stack of `depth` pre-LN Blocks (no final norm: callers own theirs).

  `pos`, when given, is added before every block, as Point-MAE's TransformerEncoder does
  (`x = block(x + pos)`); `pos_every_layer=False` adds it once, before the first block.
  Stochastic depth rises linearly from 0 to `drop_path` over the blocks (timm convention).
  """
  depth: int
  width: int
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  pos_every_layer: bool = True
  dtype: Dtype = jnp.float32
  attention: str = 'einsum'
  remat: str = 'none'              # REMATS: what each block keeps for the backward pass

  @nn.compact
  def __call__(self, x: jax.Array, pos: Optional[jax.Array] = None, *, train: bool = False,
               out_rows: Optional[int] = None) -> jax.Array:
    """[B,T,D] -> [B,T,D]; with `out_rows`, only the last `out_rows` tokens' outputs
    [B,out_rows,D], the same values: the last block computes just those rows (`Block`)."""
    check_rows(out_rows, x.shape[1], 'Transformer')
    block = checkpointed(Block, self.remat, static_argnums=(2, 3))      # train, rows
    x = x.astype(self.dtype)
    if pos is not None:
      pos = pos.astype(self.dtype)
    for i in range(self.depth):
      if pos is not None and (self.pos_every_layer or i == 0):
        x = x + pos
      rate = self.drop_path * i / max(self.depth - 1, 1)
      x = block(self.width, self.num_heads, self.mlp_ratio, self.qkv_bias, rate, self.dtype,
                self.attention, name=f'block{i}')(
                    x, train, out_rows if i == self.depth - 1 else None)
    if self.depth == 0 and out_rows is not None:
      x = x[:, x.shape[1] - out_rows:]
    return x
