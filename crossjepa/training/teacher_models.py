"""The offline teacher's models and masks: a ViT with a linear head (supervised) or with an I-JEPA
predictor (ijepa), the image augmentation, and I-JEPA's fixed-shape block masks (static for jit).

  * `supervised`: ViT + a zero-initialised linear head on the CLS token (or CLS and mean patch,
    `teacher.train.pool`);
  * `ijepa` (Assran et al. 2023, facebookresearch/ijepa): a context encoder (the ViT over the
    context patches only, `keep_idx`) and a predictor (`crossjepa.models.predictor`, query_dim=2,
    queried at the normalised (row, col) of each target patch, one pass per target block as in the
    reference). Masks: `num_targets` rectangular blocks of a fixed area with a random orientation
    and position, and a context of a fixed number of non-target patches, chosen first inside a
    random context block (I-JEPA's context block minus the targets).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import config_util
from crossjepa.models import predictor as predictor_lib
from crossjepa.models import vit as vit_lib

KINDS = ('supervised', 'ijepa')
POOLS = ('cls', 'cls+gap')


@dataclasses.dataclass(frozen=True)
class TeacherModels:
  """The modules of one teacher recipe (bound statically into the jitted step)."""
  kind: str
  vit: vit_lib.ViT
  head: nn.Module | None = None              # supervised: linear classifier on the CLS
  predictor: nn.Module | None = None         # ijepa
  grid: int = 0                              # patches per side
  target_block: tuple[int, int] = (0, 0)     # ijepa: (rows, cols) of every target block
  num_targets: int = 0
  context_block: int = 0                     # side of the context block (patches)
  num_context: int = 0                       # context patches fed to the context encoder
  pool: str = 'cls'                          # supervised: the head's input (see readout)


def block_shape(grid: int, scale: float, aspect: float) -> tuple[int, int]:
  """(rows, cols) of a block covering about `scale` of a grid x grid patch grid, rows/cols = aspect."""
  if not 0 < scale <= 1 or aspect <= 0:
    raise ValueError(f'config.teacher.train.ijepa: need 0 < target_scale <= 1 and target_aspect > 0, '
                     f'got {scale}, {aspect}')
  area = scale * grid * grid
  rows = int(np.clip(round(math.sqrt(area * aspect)), 1, grid))
  cols = int(np.clip(round(math.sqrt(area / aspect)), 1, grid))
  return rows, cols


def build_models(config, num_classes: int) -> TeacherModels:
  t = config.teacher.train
  # model.attention and model.remat set the trained modules' compute fields (not the architecture).
  common = {'attention': str(config.model.attention), 'remat': str(config.model.remat)}
  overrides = config_util.as_dict(config.model.vit_overrides)
  module = vit_lib.vit(config.model.vit, **{**overrides, **common})
  size = int(config.data.image_size)
  if size % module.patch_size:
    raise ValueError(f'config.data.image_size = {size} is not a multiple of the ViT patch size '
                     f'{module.patch_size}')
  grid = size // module.patch_size
  if t.kind == 'supervised':
    if num_classes < 2:
      raise ValueError(f'supervised teacher: the teacher split has {num_classes} class(es); need >= 2')
    head = nn.Dense(num_classes, kernel_init=nn.initializers.zeros, name='head')
    if t.pool not in POOLS:
      raise ValueError(f'config.teacher.train.pool = {t.pool!r}; expected one of {list(POOLS)}')
    return TeacherModels('supervised', module, head=head, grid=grid, pool=str(t.pool))
  ij = t.ijepa
  block = block_shape(grid, float(ij.target_scale), float(ij.target_aspect))
  num_targets = int(ij.num_targets)
  patches = grid * grid
  # A fixed context size that is always available: the patches no target can cover however the
  # blocks fall (targets may overlap, leaving more; the extra are simply not used).
  free = patches - num_targets * block[0] * block[1]
  num_context = min(int(round(float(ij.context_scale) * patches)), free)
  if num_targets < 1 or num_context < 1:
    raise ValueError(f'config.teacher.train.ijepa: {num_targets} target block(s) of {block} patches '
                     f'leave {free} of the {grid}x{grid} patches for the context; reduce num_targets '
                     'or target_scale, or raise data.image_size')
  context_block = int(np.clip(round(math.sqrt(float(ij.context_scale)) * grid), 1, grid))
  width = module.width
  pred = predictor_lib.predictor(str(ij.predictor), out_dim=width, query_dim=2, use_pose=False,
                                 use_hist=False,
                                 **{**config_util.as_dict(ij.predictor_overrides), **common})
  return TeacherModels('ijepa', module, predictor=pred, grid=grid, target_block=block,
                       num_targets=num_targets, context_block=context_block,
                       num_context=num_context)


def init_params(models: TeacherModels, rng, image_size: int) -> dict[str, Any]:
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  k_vit, k_head = jax.random.split(rng)
  params = {'vit': models.vit.init(k_vit, images)['params']}
  if models.kind == 'supervised':
    width = models.vit.width * (1 if models.pool == 'cls' else 2)
    params['head'] = models.head.init(k_head, jnp.zeros((1, width)))['params']
  else:
    context = jnp.zeros((1, 1 + models.num_context, models.vit.width))
    query = jnp.zeros((1, models.target_block[0] * models.target_block[1], 2))
    params['predictor'] = models.predictor.init(k_head, context, query_pos=query)['params']
  return params


def augment(images: jax.Array, rng, *, flip: bool, shift: int) -> jax.Array:
  """Random horizontal flip and a random shift of up to `shift` px per example (edge padding)."""
  batch, height, width, channels = images.shape
  k_flip, k_shift = jax.random.split(rng)
  if flip:
    flips = jax.random.bernoulli(k_flip, 0.5, (batch,))
    images = jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)
  if shift > 0:
    offsets = jax.random.randint(k_shift, (batch, 2), 0, 2 * shift + 1)
    # the border of a rendered view is background, so edge padding extends the background
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode='edge')
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (height, width, channels))
    images = jax.vmap(crop)(padded, offsets)
  return images


def _block_indices(rng, grid: int, rows: int, cols: int) -> jax.Array:
  """Flat patch indices [rows*cols] of one block at a random position, randomly transposed."""
  k_t, k_pos = jax.random.split(rng)
  transpose = jax.random.bernoulli(k_t) if rows != cols else jnp.asarray(False)
  block_rows = jnp.where(transpose, cols, rows)
  block_cols = jnp.where(transpose, rows, cols)
  u = jax.random.uniform(k_pos, (2,))
  row0 = jnp.floor(u[0] * (grid - block_rows + 1)).astype(jnp.int32)
  col0 = jnp.floor(u[1] * (grid - block_cols + 1)).astype(jnp.int32)
  i = jnp.arange(rows * cols)
  d_row = i // block_cols
  d_col = i % block_cols
  return ((row0 + d_row) * grid + col0 + d_col).astype(jnp.int32)


def sample_masks(rng, batch: int, *, grid: int, target_block: tuple[int, int], num_targets: int,
                 context_block: int, num_context: int) -> tuple[jax.Array, jax.Array]:
  """I-JEPA masks with fixed shapes -> (target_idx [B,T,A] int32, context_idx [B,C] int32 sorted).

  Targets: T blocks of A = rows*cols patches each (overlap allowed, as in I-JEPA). Context: C patches
  none of which is in a target; those inside a random context block are taken first, the rest of
  the C at random (top_k on scores, no boolean indexing).
  """
  patches = grid * grid
  rows, cols = target_block

  def one(key):
    k_targets, k_block, k_scores = jax.random.split(key, 3)
    targets = jax.vmap(lambda k: _block_indices(k, grid, rows, cols))(
        jax.random.split(k_targets, num_targets))
    in_target = jnp.zeros((patches,), jnp.float32).at[targets.reshape(-1)].max(1.0)
    block = _block_indices(k_block, grid, context_block, context_block)
    in_block = jnp.zeros((patches,), jnp.float32).at[block].max(1.0)
    scores = jax.random.uniform(k_scores, (patches,)) + in_block - 4.0 * in_target
    context = jnp.sort(jax.lax.top_k(scores, num_context)[1]).astype(jnp.int32)
    return targets, context

  return jax.vmap(one)(jax.random.split(rng, batch))


def patch_positions(idx: jax.Array, grid: int) -> jax.Array:
  """Flat patch indices [...] -> centre (row, col) in [-1, 1], [..., 2] (the predictor's queries)."""
  rows = (idx // grid).astype(jnp.float32)
  cols = (idx % grid).astype(jnp.float32)
  return jnp.stack([(rows + 0.5) / grid, (cols + 0.5) / grid], axis=-1) * 2.0 - 1.0


def readout(out: dict[str, jax.Array], pool: str) -> jax.Array:
  """The supervised head's input: the CLS, or the CLS and the mean patch token side by side.

  'cls+gap' trains the CLS and the patch tokens directly (the cache reads both: teacher/cls and
  the per-group patch features); mean-pooled patches also learn faster on small data (big_vision's
  'gap' head), which pulls the CLS along.
  """
  if pool == 'cls':
    return out['cls']
  return jnp.concatenate([out['cls'], out['patches'].mean(axis=1)], axis=-1)
