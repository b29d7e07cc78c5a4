"""EfficientNet-Lite 0-4 (inference) in flax.linen.

Follows EfficientNet (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", arXiv:1905.11946) in its Lite form, as built by the TensorFlow reference
`tensorflow/tpu/models/official/efficientnet/lite/efficientnet_lite_builder.py` (with
`efficientnet_model.py`), and by its PyTorch port `efficientnet_lite_pytorch` 0.1.0 (ML Illustrated,
github.com/ml-illustrated/EfficientNet-Lite-PyTorch, a light modification of lukemelas'
EfficientNet-PyTorch; `model.py`, `utils.py`), whose state dicts
`crossjepa.weights.efficientnet_params.convert_state_dict` reads:

  * MBConv blocks (inverted bottleneck: 1x1 expand conv, depthwise kxk conv, 1x1 linear project conv,
    each followed by batch norm; identity skip when stride 1 and in == out filters);
  * Lite changes: no squeeze-excite, ReLU6 instead of swish, and stem (32 filters) and head
    (1280 filters) are NOT width-scaled ("fix_head_stem"); with it, the first and last block groups
    also keep their repeat count (1) under depth scaling, and the first block's input is the 32-wide
    stem whatever the width coefficient;
  * filters: `round_filters` (multiply by the width coefficient, round to a multiple of 8, never more
    than 10 % down); repeats: `round_repeats` = ceil(depth coefficient * repeats);
  * batch norm with the TF momentum 0.99 and epsilon 1e-3 (only the running statistics are used here);
  * TF 'SAME' padding computed from the actual input (total pad max((ceil(i/s)-1)*s + k - i, 0), the
    smaller half first), like TF's padding='same'. The PyTorch port instead pads statically with the
    amounts computed for the variant's trained image size (`Conv2dStaticSamePadding`); the two agree
    whenever every stride-2 conv sees an input of the same parity as at the trained size (e.g. any
    multiple of 32 for lite0, whose trained size 224 keeps all stride-2 inputs even), but differ by a
    one-pixel shift otherwise (e.g. lite2, trained at 260, run at 224); the port built with
    `image_size=None` (dynamic padding) matches this module at every size;
  * inference only: batch norm uses its running statistics ('batch_stats' collection), no dropout and
    no drop-connect (both are identities at inference in the reference).

Inputs are float NHWC images already normalised; the ImageNet Lite weights expect (x - 127) / 128 of
RGB uint8 values. Outputs: 'global' [B,1280] (global average of the head map, the classifier's input),
'feature_map' [B,h,w,C] (the map of `feature_stage`) and 'logits' [B,num_classes] when num_classes > 0.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from crossjepa.models import fields as fields_lib

# (width_coefficient, depth_coefficient, resolution, dropout_rate) of efficientnet_lite_builder.py.
# image_size and dropout are informational (trained resolution; dropout is not applied at inference).
VARIANTS: dict[str, dict[str, Any]] = {
    'lite0': dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout=0.2),
    'lite1': dict(width_coefficient=1.0, depth_coefficient=1.1, image_size=240, dropout=0.2),
    'lite2': dict(width_coefficient=1.1, depth_coefficient=1.2, image_size=260, dropout=0.3),
    'lite3': dict(width_coefficient=1.2, depth_coefficient=1.4, image_size=280, dropout=0.3),
    'lite4': dict(width_coefficient=1.4, depth_coefficient=1.8, image_size=300, dropout=0.3),
}

STAGES: tuple[str, ...] = tuple(f'stage{i}' for i in range(1, 8)) + ('head',)

STEM_FILTERS = 32     # fixed (not width-scaled) in Lite
HEAD_FILTERS = 1280   # fixed (not width-scaled) in Lite
DEPTH_DIVISOR = 8
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99  # TF convention (torch momentum 0.01); irrelevant at inference


class _GroupArgs(NamedTuple):
  """One block group of the reference's blocks_args ('r1_k3_s11_e1_i32_o16' ...)."""
  num_repeat: int
  kernel_size: int
  stride: int
  expand_ratio: int
  input_filters: int
  output_filters: int


# efficientnet_lite_builder.py blocks_args (Lite: no 'se0.25').
_BLOCK_GROUPS: tuple[_GroupArgs, ...] = (
    _GroupArgs(1, 3, 1, 1, 32, 16),
    _GroupArgs(2, 3, 2, 6, 16, 24),
    _GroupArgs(2, 5, 2, 6, 24, 40),
    _GroupArgs(3, 3, 2, 6, 40, 80),
    _GroupArgs(3, 5, 1, 6, 80, 112),
    _GroupArgs(4, 5, 2, 6, 112, 192),
    _GroupArgs(1, 3, 1, 6, 192, 320),
)


class BlockConfig(NamedTuple):
  """One MBConv block after scaling; stage is 1..7 (the block group it belongs to)."""
  stage: int
  input_filters: int
  output_filters: int
  expand_ratio: int
  kernel_size: int
  stride: int


def round_filters(filters: int, width_coefficient: float, divisor: int = DEPTH_DIVISOR) -> int:
  """The reference's round_filters (min_depth None = divisor)."""
  if not width_coefficient:
    return filters
  scaled = filters * width_coefficient
  new_filters = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if new_filters < 0.9 * scaled:  # never round down by more than 10 %
    new_filters += divisor
  return int(new_filters)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
  """The reference's round_repeats: ceil(depth_coefficient * repeats)."""
  if not depth_coefficient:
    return repeats
  return int(math.ceil(depth_coefficient * repeats))


def block_layout(width_coefficient: float, depth_coefficient: float) -> tuple[BlockConfig, ...]:
  """All MBConv blocks in order (index N = the reference's _blocks.N), with fix_head_stem."""
  blocks = []
  last = len(_BLOCK_GROUPS) - 1
  for i, group in enumerate(_BLOCK_GROUPS):
    in_f = round_filters(group.input_filters, width_coefficient)
    out_f = round_filters(group.output_filters, width_coefficient)
    if i in (0, last):  # fix_head_stem: first and last groups keep their repeats
      repeats = group.num_repeat
      if i == 0:
        in_f = STEM_FILTERS  # the first block reads the unscaled stem
    else:
      repeats = round_repeats(group.num_repeat, depth_coefficient)
    for r in range(repeats):
      blocks.append(BlockConfig(stage=i + 1, input_filters=in_f if r == 0 else out_f,
                                output_filters=out_f, expand_ratio=group.expand_ratio,
                                kernel_size=group.kernel_size, stride=group.stride if r == 0 else 1))
  return tuple(blocks)


def _check_stage(feature_stage: str) -> None:
  if feature_stage not in STAGES:
    raise ValueError(f'EfficientNetLite: unknown feature_stage {feature_stage!r}; '
                     f'expected one of {list(STAGES)}')


def feature_stride(feature_stage: str) -> int:
  """Input pixels per cell of feature_stage's map (stem stride 2, then the groups' strides)."""
  _check_stage(feature_stage)
  stride = 2
  for i, group in enumerate(_BLOCK_GROUPS):
    stride *= group.stride
    if feature_stage == f'stage{i + 1}':
      return stride
  return stride  # head: 1x1 conv on stage7


def _relu6(x):
  return jnp.clip(x, 0, 6)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, tuple[int, int]]:
  """TF 'SAME': (output size, (low, high) padding); the smaller half goes first."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, (total // 2, total - total // 2)


class DepthwiseConv(nn.Module):
  """Depthwise k x k conv, 'SAME' padding, as a sum of k*k strided slices times per-channel weights.

  Same parameter ('kernel' [k,k,1,C]) and the same values as nn.Conv(feature_group_count=C), but
  XLA's CPU backend runs grouped convolutions slowly: measured on this project's 2-core CPU at the
  Lite0 shapes (batch 64), the slice sum is 5-12x faster (e.g. 80x80x96 3x3/2: 90 vs 486 ms), which
  is what makes the ImageNet teacher affordable in the CPU default. It stays a handful of fused
  elementwise ops on accelerators.
  """
  kernel_size: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    c = x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, 1, c), jnp.float32)
    kernel = kernel.astype(self.dtype)
    b, h, w, _ = x.shape
    oh, pad_h = same_padding(h, k, s)
    ow, pad_w = same_padding(w, k, s)
    x = jnp.pad(x.astype(self.dtype), ((0, 0), pad_h, pad_w, (0, 0)))
    out = None
    for i in range(k):
      for j in range(k):
        tap = jax.lax.slice(x, (0, i, j, 0), (b, i + (oh - 1) * s + 1, j + (ow - 1) * s + 1, c),
                            (1, s, s, 1)) * kernel[i, j, 0]
        out = tap if out is None else out + tap
    return out


class PointwiseConv(nn.Module):
  """1x1 stride-1 conv as a matmul over channels: nn.Conv's parameter ('kernel' [1,1,I,O]) and
  values; XLA's CPU backend runs it 1.2-2x faster as a dot than as a convolution (measured at the
  Lite0 shapes, batch 64: 80x80 16->96 87 vs 163 ms)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    return jnp.einsum('bhwc,cd->bhwd', x.astype(self.dtype), kernel[0, 0].astype(self.dtype))


class ConvBN(nn.Module):
  """Bias-free conv ('SAME' padding as TF) + inference batch norm, optionally + ReLU6."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  depthwise: bool = False
  activation: bool = True
  batch_norm_epsilon: float = BATCH_NORM_EPSILON
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s = self.kernel_size, self.stride
    if self.depthwise:
      if x.shape[-1] != self.features:
        raise ValueError(f'ConvBN: depthwise conv of {x.shape[-1]} channels to {self.features}')
      x = DepthwiseConv(k, s, dtype=self.dtype, name='conv')(x)
    elif k == 1 and s == 1:
      x = PointwiseConv(self.features, dtype=self.dtype, name='conv')(x)
    else:
      x = nn.Conv(self.features, (k, k), strides=(s, s), padding='SAME', use_bias=False,
                  dtype=self.dtype, param_dtype=jnp.float32, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, momentum=BATCH_NORM_MOMENTUM,
                     epsilon=self.batch_norm_epsilon, dtype=self.dtype, param_dtype=jnp.float32,
                     name='bn')(x)
    return _relu6(x) if self.activation else x


class MBConvBlock(nn.Module):
  """Mobile inverted bottleneck without squeeze-excite (Lite), ReLU6, identity skip if possible."""
  input_filters: int
  output_filters: int
  expand_ratio: int
  kernel_size: int
  stride: int
  batch_norm_epsilon: float = BATCH_NORM_EPSILON
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    if inputs.shape[-1] != self.input_filters:
      raise ValueError(f'MBConvBlock: expected {self.input_filters} input channels, '
                       f'got {inputs.shape[-1]}')
    kw = dict(batch_norm_epsilon=self.batch_norm_epsilon, dtype=self.dtype)
    hidden = self.input_filters * self.expand_ratio
    x = inputs
    if self.expand_ratio != 1:
      x = ConvBN(hidden, 1, name='expand', **kw)(x)
    x = ConvBN(hidden, self.kernel_size, self.stride, depthwise=True, name='depthwise', **kw)(x)
    x = ConvBN(self.output_filters, 1, activation=False, name='project', **kw)(x)
    if self.stride == 1 and self.input_filters == self.output_filters:
      x = x + inputs  # drop-connect is an identity at inference
    return x


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite, inference only, NHWC.

  apply({'params': p, 'batch_stats': s}, images [B,H,W,3] float (normalised, e.g. (x - 127) / 128))
    -> {'global': [B,1280], 'feature_map': [B,h,w,C] of feature_stage,
        'logits': [B,num_classes] (only when num_classes > 0)}, all float32.
  feature_stage: 'stage1'..'stage7' (output of the reference's 7 block groups; strides
  2,4,8,16,16,32,32) or 'head' (conv_head + bn + ReLU6, stride 32, 1280 channels). The whole
  network is always evaluated ('global' needs the head).
  """
  width_coefficient: float = 1.0
  depth_coefficient: float = 1.0
  num_classes: int = 1000             # 0 = no classifier, no 'logits'
  feature_stage: str = 'head'
  batch_norm_epsilon: float = BATCH_NORM_EPSILON
  dtype: Any = jnp.float32            # compute dtype; params / batch stats stay float32

  @property
  def blocks(self) -> tuple[BlockConfig, ...]:
    return block_layout(self.width_coefficient, self.depth_coefficient)

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    _check_stage(self.feature_stage)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'EfficientNetLite: expected NHWC RGB images [B,H,W,3], got shape {images.shape}')
    dtype = jnp.dtype(self.dtype)
    kw = dict(batch_norm_epsilon=self.batch_norm_epsilon, dtype=dtype)

    x = ConvBN(STEM_FILTERS, 3, 2, name='stem', **kw)(images.astype(dtype))
    maps = {}
    blocks = self.blocks
    for n, b in enumerate(blocks):
      x = MBConvBlock(b.input_filters, b.output_filters, b.expand_ratio, b.kernel_size, b.stride,
                      name=f'blocks_{n}', **kw)(x)
      if n + 1 == len(blocks) or blocks[n + 1].stage != b.stage:
        maps[f'stage{b.stage}'] = x
    x = ConvBN(HEAD_FILTERS, 1, name='head', **kw)(x)
    maps['head'] = x

    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    out = {'global': pooled, 'feature_map': maps[self.feature_stage].astype(jnp.float32)}
    if self.num_classes:
      out['logits'] = nn.Dense(self.num_classes, dtype=dtype, param_dtype=jnp.float32,
                               name='classifier')(pooled.astype(dtype)).astype(jnp.float32)
    return out


def variant_name(variant: str) -> str:
  """'liteN' of 'liteN' or 'efficientnet-liteN'; raises on an unknown variant."""
  name = variant[len('efficientnet-'):] if variant.startswith('efficientnet-') else variant
  if name not in VARIANTS:
    raise ValueError(f'Unknown EfficientNet-Lite variant {variant!r}; '
                     f'expected one of {sorted(VARIANTS)}')
  return name


def efficientnet_lite(variant: str, **overrides) -> EfficientNetLite:
  """Builds 'lite0'..'lite4' (also accepted as 'efficientnet-liteN'), fields overridable."""
  name = variant_name(variant)
  fields = fields_lib.field_names(EfficientNetLite)
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f'Unknown EfficientNetLite field(s) {unknown} in overrides; '
                     f'fields are {sorted(fields)}')
  spec = VARIANTS[name]
  kwargs = dict(width_coefficient=spec['width_coefficient'],
                depth_coefficient=spec['depth_coefficient'], **overrides)
  _check_stage(kwargs.get('feature_stage', 'head'))
  return EfficientNetLite(**kwargs)


def feature_width(module: EfficientNetLite) -> int:
  """Channels of module.feature_stage's map."""
  _check_stage(module.feature_stage)
  if module.feature_stage == 'head':
    return HEAD_FILTERS
  stage = int(module.feature_stage[len('stage'):])
  return [b.output_filters for b in module.blocks if b.stage == stage][-1]


def abstract_variables(module: EfficientNetLite, image_size: int | tuple[int, int]) -> Any:
  """{'params', 'batch_stats'} shapes/dtypes (jax.ShapeDtypeStruct tree) without allocating them."""
  h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
  images = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  return jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x), images)
