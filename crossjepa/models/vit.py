"""DINOv2- and CLIP-compatible Vision Transformer (the 2D view encoder / frozen teacher), in flax.linen.

Follows the DINOv2 ViT (Oquab et al. 2023, facebookresearch/dinov2 `vision_transformer.py`) and its two
public re-implementations that checkpoints come from, Hugging Face `Dinov2Model` /
`Dinov2WithRegistersModel` (transformers 5.x) and timm `vit_*_patch14_dinov2` /
`vit_*_patch14_reg4_dinov2`:

  * patch embedding: a stride-14 convolution (kernel [14,14,3,D] = torch Conv2d weight transposed);
  * tokens [CLS, registers..., patches] (Darcet et al. 2023, "Vision Transformers Need Registers");
    the position embedding covers CLS + patches only, registers carry none;
  * pre-LN blocks (LayerNorm eps 1e-6), fused qkv attention, LayerScale, exact-erf GELU MLP or the
    SwiGLU FFN of DINOv2 ViT-g/14, and a final LayerNorm;
  * the position embedding is trained on a `pos_grid` x `pos_grid` patch grid and interpolated to the
    input's grid with torch-compatible bicubic resampling (see `bicubic_resize_matrix`), so converted
    checkpoints reproduce the reference outputs at any input size that is a multiple of 14.

CLIP's image towers (Radford et al. 2021; Hugging Face `CLIPVisionModelWithProjection`, open_clip
`VisionTransformer`) are the same network with four switches (`crossjepa.weights.clip_params` sets
them): a patch convolution without bias (`patch_bias=False`), a LayerNorm before the blocks
(`pre_norm`, CLIP's ln_pre), QuickGELU MLPs (`act='quick_gelu'`, OpenAI's weights) and no
LayerScale; the final norm is CLIP's ln_post and `proj_dim` adds CLIP's bias-free projection of the
normed CLS token, returned as 'embedding' (the image embedding CLIP aligns with text).

Inputs are normalised by the caller: ImageNet mean/std for DINOv2 and the view encoder
(`crossjepa.imaging.normalize_images`), CLIP's own for CLIP (the teacher spec says which). ViT
checkpoint folders (converted DINOv2, or trained by `--mode=teacher`) are read and written by
`crossjepa.weights.vit_io`, converted CLIP towers are teacher folders (`teacher_io`); this file
only defines the module and pure functions on its params.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjepa.models import fields as fields_lib
from crossjepa.models import layers

# Named variants, decoded only here. DINOv2 heads are 64 wide; pos_grid 37 = 518 px / 14, the grid
# DINOv2 was trained at. ViT-g/14 uses the SwiGLU FFN ('swiglufused' in DINOv2: hidden 4096).
# 'tiny/14' is for tests and the CPU default (84 px views -> 6 x 6 grid); its LayerScale starts at 0.1
# (CaiT's value for shallow nets) so that a random or briefly trained tiny teacher is not an identity.
VARIANTS: dict[str, dict[str, Any]] = {
    'tiny/14': dict(width=64, depth=2, num_heads=2, pos_grid=6, layerscale_init=0.1),
    'S/14': dict(width=384, depth=12, num_heads=6, pos_grid=37),
    'B/14': dict(width=768, depth=12, num_heads=12, pos_grid=37),
    'L/14': dict(width=1024, depth=24, num_heads=16, pos_grid=37),
    'g/14': dict(width=1536, depth=40, num_heads=24, pos_grid=37, ffn_layer='swiglu'),
}


# ----------------------------------------------------------------------------- interpolation


def _cubic_conv(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel with parameter `a`, evaluated at |x|."""
  x = np.abs(x)
  near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
  far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
  return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


def bicubic_resize_matrix(in_size: int, out_size: int, antialias: bool = False) -> np.ndarray:
  """The [out_size, in_size] matrix of torch's 1-D bicubic resampling (align_corners=False).

  torch.nn.functional.interpolate(mode='bicubic', size=..., align_corners=False) is separable, so
  resizing a [h, w] grid is `R_h @ X @ R_w.T`. Two torch kernels, both reproduced here:

  * antialias=False (`upsample_bicubic2d`; HF `Dinov2Model`): source coordinate
    (i + 0.5) * in/out - 0.5, the 4 taps around it weighted by Keys' kernel with a = -0.75, tap
    indices clamped to the border (border replication).
  * antialias=True (`_upsample_bicubic2d_aa`; HF `Dinov2WithRegistersModel`, timm): PIL-style
    kernel with a = -0.5, widened by in/out when downsampling, taps outside the input dropped and
    the weights renormalised.

  jax.image.resize('bicubic') matches neither exactly (a = -0.5, no border clamping), hence this.
  """
  # torch computes the scale and the source coordinates in float32; doing the same keeps the
  # taps' positions bit-identical (float64 here drifts by ~1e-5 on 37 -> 64 grids).
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  mat = np.zeros((out_size, in_size), np.float64)
  if not antialias:
    for i in range(out_size):
      src = scale * (f32(i) + f32(0.5)) - f32(0.5)
      base = math.floor(src)
      t = float(src - f32(base))
      taps = _cubic_conv(np.array([t + 1.0, t, 1.0 - t, 2.0 - t]), -0.75)
      for offset, weight in zip(range(-1, 3), taps):
        mat[i, min(max(base + offset, 0), in_size - 1)] += weight
    return mat
  support = f32(2.0) * scale if scale >= 1.0 else f32(2.0)
  invscale = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
  for i in range(out_size):
    center = scale * (f32(i) + f32(0.5))
    lo = max(int(center - support + f32(0.5)), 0)
    hi = min(int(center + support + f32(0.5)), in_size)
    taps = _cubic_conv((np.arange(lo, hi, dtype=f32) - center + f32(0.5)) * invscale, -0.5)
    total = taps.sum()
    mat[i, lo:hi] = taps / total if total != 0.0 else taps
  return mat


def resize_pos_embed(patch_pos: jax.Array, in_grid: tuple[int, int], out_grid: tuple[int, int],
                     antialias: bool = False) -> jax.Array:
  """Bicubic resize of a patch position embedding [1, h*w, D] (row-major grid) to [1, H*W, D].

  Identity (no resampling) when the grids are equal, as in the reference implementations.
  Computed in float32 whatever the input dtype (bicubic in half precision shifts the embedding).
  """
  if tuple(in_grid) == tuple(out_grid):
    return patch_pos
  dim = patch_pos.shape[-1]
  grid = patch_pos.astype(jnp.float32).reshape(in_grid[0], in_grid[1], dim)
  rows = jnp.asarray(bicubic_resize_matrix(in_grid[0], out_grid[0], antialias), jnp.float32)
  cols = jnp.asarray(bicubic_resize_matrix(in_grid[1], out_grid[1], antialias), jnp.float32)
  out = jnp.einsum('Hh,hwd,Ww->HWd', rows, grid, cols, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(1, out_grid[0] * out_grid[1], dim).astype(patch_pos.dtype)


# ----------------------------------------------------------------------------- layers

_dense_init = nn.initializers.truncated_normal(0.02)


def _layer_norm(eps: float, dtype: Any, name: str) -> nn.Module:
  # use_fast_variance=False: E[(x-mean)^2] like torch, not E[x^2]-mean^2 (parity at 1e-5).
  # layers.norm: nn.LayerNorm in float32; in bfloat16 (a trained view encoder) layers.LayerNorm,
  # the same values with a backward pass that keeps less.
  return layers.norm(eps, dtype, name, fast_variance=False)


def swiglu_hidden_dim(width: int, mlp_ratio: float) -> int:
  """DINOv2's SwiGLU hidden size: 2/3 of the MLP hidden size, rounded up to a multiple of 8."""
  hidden = int(width * mlp_ratio)
  return (int(hidden * 2 / 3) + 7) // 8 * 8


class SwiGLU(nn.Module):
  """DINOv2's SwiGLUFFNFused: w12 -> [gate | up]; w3(silu(gate) * up). timm SwiGLUPacked equivalent."""
  width: int
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32,
                                     kernel_init=_dense_init, name=name)
    gate, up = jnp.split(dense(2 * self.hidden, 'w12')(x), 2, axis=-1)
    return dense(self.width, 'w3')(nn.silu(gate) * up)


class LayerScale(nn.Module):
  """Per-channel residual-branch scale (CaiT, Touvron et al. 2021); DINOv2 inits it at 1e-5."""
  init_value: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param('gamma', nn.initializers.constant(self.init_value), (x.shape[-1],),
                       jnp.float32)
    return x * gamma.astype(x.dtype)


class Block(nn.Module):
  """Pre-LN transformer block: x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x)))."""
  width: int
  num_heads: int
  mlp_hidden: int
  ffn_layer: str = 'mlp'
  layerscale_init: float | None = 1e-5
  layer_norm_eps: float = 1e-6
  drop_path: float = 0.0
  dtype: Any = jnp.float32
  attention: str = 'einsum'
  act: str = 'gelu'
  causal: bool = False                # CLIP's text tower: each token sees those before it

  def _residual(self, x, y, name, deterministic):
    if self.layerscale_init is not None:
      y = LayerScale(self.layerscale_init, name=name)(y)
    if self.drop_path > 0.0 and not deterministic:
      # stochastic depth: drop the whole branch per example, rescale the survivors
      keep = 1.0 - self.drop_path
      mask = jax.random.bernoulli(self.make_rng('dropout'), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
      y = jnp.where(mask, y / keep, jnp.zeros_like(y))
    return x + y

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    y = _layer_norm(self.layer_norm_eps, self.dtype, 'norm1')(x)
    y = layers.Attention(self.width, self.num_heads, dtype=self.dtype, kernel_init=_dense_init,
                         attention=self.attention, causal=self.causal, name='attn')(y)
    x = self._residual(x, y, 'ls1', deterministic)
    y = _layer_norm(self.layer_norm_eps, self.dtype, 'norm2')(x)
    if self.ffn_layer == 'swiglu':
      y = SwiGLU(self.width, self.mlp_hidden, self.dtype, name='mlp')(y)
    else:  # fc1 -> exact (erf) GELU -> fc2, as DINOv2 / timm `Mlp` (QuickGELU: OpenAI's CLIP)
      y = layers.Mlp(self.mlp_hidden, self.width, self.dtype, kernel_init=_dense_init,
                     act=self.act, name='mlp')(y)
    return self._residual(x, y, 'ls2', deterministic)


# ----------------------------------------------------------------------------- ViT


class ViT(nn.Module):
  """DINOv2- and CLIP-compatible ViT.

  apply({'params': p}, images [B,H,W,3] f32 (normalised), *, keep_idx=None, train=False)
    -> {'cls': [B,D], 'patches': [B,P,D], 'registers': [B,R,D]}, float32, after the final norm,
    and 'embedding' [B,proj_dim] (the CLS token's projection) when proj_dim is set.
  P = (H/14)*(W/14) in row-major order (index = row * W/14 + col), or P' with keep_idx [B,P'] int32:
  only those patch tokens (gathered after the position embedding, before the blocks) enter the
  transformer, as an I-JEPA context encoder needs. Out-of-range keep_idx values are not checked.
  """
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  patch_size: int = 14
  mlp_ratio: float = 4.0
  mlp_dim: int | None = None          # FFN hidden size; None: int(width * mlp_ratio), SwiGLU 2/3 of it
  ffn_layer: str = 'mlp'              # mlp | swiglu
  num_registers: int = 0
  layerscale_init: float | None = 1e-5   # None = no LayerScale
  pos_grid: int = 37                  # side of the trained position grid (518 px / 14)
  pos_interp_antialias: bool = False  # HF Dinov2Model: False; HF with-registers and timm: True
  layer_norm_eps: float = 1e-6
  drop_path_rate: float = 0.0         # stochastic depth, linear in depth (timm), only when train
  dtype: Any = jnp.float32            # compute dtype (e.g. bfloat16); params stay float32
  attention: str = 'einsum'           # layers.ATTENTIONS: how attention is computed (same params)
  remat: str = 'none'                 # layers.REMATS: what each block keeps for the backward pass
  # CLIP's switches (the defaults are DINOv2's; see the module docstring)
  patch_bias: bool = True             # CLIP: the patch convolution has no bias
  pre_norm: bool = False              # CLIP: LayerNorm ('norm_pre') on the tokens before the blocks
  act: str = 'gelu'                   # MLP activation: gelu (exact) | quick_gelu (OpenAI's CLIP)
  proj_dim: int | None = None         # CLIP: bias-free projection of the normed CLS -> 'embedding'

  @property
  def mlp_hidden(self) -> int:
    if self.mlp_dim is not None:
      return int(self.mlp_dim)
    if self.ffn_layer == 'swiglu':
      return swiglu_hidden_dim(self.width, self.mlp_ratio)
    return int(self.width * self.mlp_ratio)

  def _check_fields(self):
    if self.width % self.num_heads:
      raise ValueError(f'ViT: width {self.width} is not divisible by num_heads {self.num_heads}')
    if self.ffn_layer not in ('mlp', 'swiglu'):
      raise ValueError(f"ViT: ffn_layer must be 'mlp' or 'swiglu', got {self.ffn_layer!r}")
    if self.act not in layers.ACTIVATIONS:
      raise ValueError(f'ViT: act must be one of {sorted(layers.ACTIVATIONS)}, got {self.act!r}')
    if self.ffn_layer == 'swiglu' and self.act != 'gelu':
      raise ValueError(f'ViT: act={self.act!r} applies to the mlp FFN only (SwiGLU gates with SiLU)')

  @nn.compact
  def __call__(self, images: jax.Array, *, keep_idx: jax.Array | None = None,
               train: bool = False) -> dict[str, jax.Array]:
    self._check_fields()
    dtype = jnp.dtype(self.dtype)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'ViT: expected NHWC RGB images [B,H,W,3], got shape {images.shape}')
    batch, height, width_px, _ = images.shape
    p = self.patch_size
    if height % p or width_px % p:
      raise ValueError(f'ViT: image size {height}x{width_px} is not a multiple of the patch size {p}')
    grid = (height // p, width_px // p)

    x = nn.Conv(self.width, (p, p), strides=(p, p), padding='VALID', use_bias=self.patch_bias,
                dtype=dtype, param_dtype=jnp.float32, name='patch_embed')(images.astype(dtype))
    x = x.reshape(batch, grid[0] * grid[1], self.width)

    pos = self.param('pos_embed', _dense_init, (1, 1 + self.pos_grid ** 2, self.width), jnp.float32)
    patch_pos = resize_pos_embed(pos[:, 1:], (self.pos_grid, self.pos_grid), grid,
                                 self.pos_interp_antialias)
    x = x + patch_pos.astype(dtype)
    if keep_idx is not None:
      if keep_idx.ndim != 2 or keep_idx.shape[0] != batch:
        raise ValueError(f'ViT: keep_idx must be [B={batch}, P\'] int32, got shape {keep_idx.shape}')
      x = jnp.take_along_axis(x, keep_idx[:, :, None].astype(jnp.int32), axis=1)

    cls = self.param('cls_token', nn.initializers.normal(1e-6), (1, 1, self.width), jnp.float32)
    prefix = [jnp.broadcast_to((cls + pos[:, :1]).astype(dtype), (batch, 1, self.width))]
    if self.num_registers:
      reg = self.param('reg_token', nn.initializers.normal(1e-6),
                       (1, self.num_registers, self.width), jnp.float32)
      prefix.append(jnp.broadcast_to(reg.astype(dtype), (batch, self.num_registers, self.width)))
    x = jnp.concatenate(prefix + [x], axis=1)
    if self.pre_norm:
      x = _layer_norm(self.layer_norm_eps, dtype, 'norm_pre')(x)

    block = layers.checkpointed(Block, self.remat, static_argnums=(2,))   # deterministic
    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      x = block(self.width, self.num_heads, self.mlp_hidden, self.ffn_layer, self.layerscale_init,
                self.layer_norm_eps, rate, dtype, self.attention, self.act,
                name=f'blocks_{i}')(x, not train)
    x = _layer_norm(self.layer_norm_eps, dtype, 'norm')(x)
    first_patch = 1 + self.num_registers
    out = {'cls': x[:, 0], 'registers': x[:, 1:first_patch], 'patches': x[:, first_patch:]}
    if self.proj_dim:
      out['embedding'] = nn.Dense(self.proj_dim, use_bias=False, dtype=dtype,
                                  param_dtype=jnp.float32, kernel_init=_dense_init,
                                  name='proj')(x[:, 0])
    return {k: v.astype(jnp.float32) for k, v in out.items()}


def vit(variant: str, **overrides) -> ViT:
  """Builds a named variant ('tiny/14', 'S/14', 'B/14', 'L/14', 'g/14'), fields overridable."""
  if variant not in VARIANTS:
    raise ValueError(f'Unknown ViT variant {variant!r}; expected one of {sorted(VARIANTS)}')
  fields = fields_lib.field_names(ViT)
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'Unknown ViT field(s) {unknown} in overrides; fields are {sorted(fields)}')
  return ViT(**{**VARIANTS[variant], **overrides})


# ----------------------------------------------------------------------------- params


def abstract_params(module: ViT, image_size: int | None = None) -> Any:
  """Param shapes/dtypes (jax.ShapeDtypeStruct tree) without allocating them."""
  side = image_size or module.pos_grid * module.patch_size
  images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), images)
  return variables['params']


def _flat(tree) -> dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): leaf for path, leaf in leaves}


def param_count(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def param_checksum(params) -> str:
  """sha256 over the sorted leaf names, dtypes, shapes and bytes (float32, little endian)."""
  digest = hashlib.sha256()
  for key, leaf in sorted(_flat(params).items()):
    value = np.ascontiguousarray(np.asarray(leaf))
    if np.issubdtype(value.dtype, np.floating):
      value = value.astype('<f4')
    digest.update(f'{key}|{value.dtype.str}|{value.shape}\n'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def compare_params(expected_tree, params, where: str, what: str) -> None:
  """Raises a ValueError listing the entries of `params` missing from, unexpected in or shaped
  otherwise than `expected_tree` (abstract params of `what`)."""
  expected = {k: tuple(v.shape) for k, v in _flat(expected_tree).items()}
  got = {k: tuple(np.shape(v)) for k, v in _flat(params).items()}
  missing = sorted(set(expected) - set(got))
  unexpected = sorted(set(got) - set(expected))
  shapes = sorted(f'{k}: {got[k]} (expected {expected[k]})'
                  for k in set(expected) & set(got) if expected[k] != got[k])
  if missing or unexpected or shapes:
    raise ValueError(f'{where} do not match {what}: missing {missing}, '
                     f'unexpected {unexpected}, wrong shape {shapes}')


def check_params(module: ViT, params, where: str = 'params') -> None:
  """Raises a ValueError listing missing, unexpected and mis-shaped entries vs. the module."""
  compare_params(abstract_params(module), params, where, 'the ViT config')
