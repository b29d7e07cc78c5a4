"""Frozen image teacher over rendered views: the cached targets `teacher/cls` and `teacher/groups`.

CrossJEPA (arXiv 2511.18424, §3) computes the frozen teacher's embeddings of every rendered view once,
before pretraining; the student never runs the teacher. Per view we keep the CLS embedding and, for
each point group, the teacher's patch feature at the image patch its centre projects to (the
correspondence map of DESIGN.md §3; zeros where the group is not visible).

The teacher is a converted checkpoint (DINOv2, `convert_teacher`) or one trained by --mode=teacher
(`config.teacher.checkpoint`, both in `crossjepa.models.vit` format), or — only when
`config.teacher.random_init` is set, for tests and the CPU default — a fixed-seed random ViT.

One jitted function for a fixed chunk of images (the last chunk is padded), its batch sharded over
all local devices (NamedSharding on a 1-D mesh of `jax.local_devices()`), so the cache uses every
accelerator of the host and compiles once.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

RANDOM_INIT_SEED = 0   # fixed: a random teacher must be the same in every run for the cache to mean anything


def gather_group_features(patches: jnp.ndarray, corr: jnp.ndarray) -> jnp.ndarray:
  """patches [B,P,D], corr [B,G] (patch index or -1) -> [B,G,D], zeros where corr = -1."""
  idx = jnp.clip(corr, 0, patches.shape[1] - 1)
  picked = jnp.take_along_axis(patches, idx[..., None], axis=1)
  return jnp.where((corr >= 0)[..., None], picked, 0.0)


def _teacher_fn(params, images, corr, *, module):
  out = module.apply({'params': params}, images)
  cls, patches = out['cls'], out['patches']
  groups = gather_group_features(patches, corr)
  return cls.astype(jnp.float16), groups.astype(jnp.float16)


def _normalize(images_u8: np.ndarray) -> np.ndarray:
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  return np.asarray(vit.normalize_images(images_u8), np.float32)


class Teacher:
  """Frozen ViT -> (cls [n,V,D] f16, groups [n,V,G,D] f16) for chunks of objects.

  Args:
    config: the run config (teacher.*, model.vit*, data.image_size/patch_size/num_views/num_groups).
    module, params, name: a ViT and its params to use instead of the config's (tests).
    chunk_objects: objects per jitted call (default: config.data.teacher_chunk).
  """

  def __init__(self, config, *, module=None, params=None, name: str | None = None,
               chunk_objects: int | None = None, normalize=None):
    d = config.data
    self.image_size = int(d.image_size)
    self.num_views = int(d.num_views)
    self.num_groups = int(d.num_groups)
    self._normalize = normalize or _normalize
    if module is None:
      module, params, name, trained_size = _load_teacher(config)
    else:
      trained_size = self.image_size
      name = name or type(module).__name__
    self.module, self.name, self.trained_image_size = module, name, trained_size
    self.patch_size = int(getattr(module, 'patch_size', d.patch_size))
    if self.patch_size != int(d.patch_size):
      raise ValueError(f'teacher patch size {self.patch_size} != data.patch_size {d.patch_size}: '
                       'the correspondence map indexes the teacher\'s patch grid.')
    if self.image_size % self.patch_size:
      raise ValueError(f'data.image_size={self.image_size} is not a multiple of '
                       f'data.patch_size={self.patch_size}')
    self.num_patches = (self.image_size // self.patch_size) ** 2

    devices = jax.local_devices()
    self.mesh = Mesh(np.array(devices), ('data',))
    self._replicated = NamedSharding(self.mesh, P())
    self._batch = NamedSharding(self.mesh, P('data'))
    self.chunk_objects = int(chunk_objects or getattr(d, 'teacher_chunk', 16) or 16)
    # Images per call: the chunk's views, rounded up so every device gets the same number.
    self.chunk_images = math.ceil(self.chunk_objects * self.num_views / len(devices)) * len(devices)
    self.params = jax.device_put(params, self._replicated)
    from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
    self.checksum = str(vit.param_checksum(params)) if hasattr(vit, 'param_checksum') else ''
    self.width = int(jax.eval_shape(
        lambda p, x: module.apply({'params': p}, x),
        params, jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32)
    )['cls'].shape[-1])
    self._fn = jax.jit(functools.partial(_teacher_fn, module=module),
                       in_shardings=(self._replicated, self._batch, self._batch),
                       out_shardings=(self._batch, self._batch))

  def teacher_info(self) -> dict[str, Any]:
    """dict(name, image_size, trained_image_size, patch_size, width, checksum), for the metadata."""
    return {'name': self.name, 'image_size': [self.image_size, self.image_size],
            'trained_image_size': self.trained_image_size, 'patch_size': self.patch_size,
            'width': self.width, 'checksum': self.checksum}

  def __call__(self, images: np.ndarray, corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 [n,V,H,W,3], corr int32 [n,V,G] -> (cls [n,V,D] f16, groups [n,V,G,D] f16)."""
    images, corr = np.asarray(images), np.asarray(corr)
    n, v = images.shape[:2]
    want = (v, self.image_size, self.image_size, 3)
    if images.dtype != np.uint8 or images.shape[1:] != want:
      raise ValueError(f'teacher input: expected uint8 [n,{",".join(map(str, want))}], '
                       f'got {images.dtype} {images.shape}')
    if corr.shape != (n, v, self.num_groups):
      raise ValueError(f'teacher corr: expected [{n},{v},{self.num_groups}], got {corr.shape}')
    if corr.max(initial=-1) >= self.num_patches:
      raise ValueError(f'corr has patch index {corr.max()} >= {self.num_patches} patches')
    flat_images = images.reshape((n * v,) + images.shape[2:])
    flat_corr = corr.reshape(n * v, -1).astype(np.int32)
    cls_out, groups_out = [], []
    for start in range(0, n * v, self.chunk_images):
      img = flat_images[start:start + self.chunk_images]
      cor = flat_corr[start:start + self.chunk_images]
      real = img.shape[0]
      if real < self.chunk_images:   # pad the last chunk: one compiled shape
        img = np.concatenate([img, np.zeros((self.chunk_images - real,) + img.shape[1:], img.dtype)])
        cor = np.concatenate([cor, np.full((self.chunk_images - real, cor.shape[1]), -1, np.int32)])
      c, g = self._fn(self.params, self._normalize(img), cor)
      cls_out.append(np.asarray(c)[:real])
      groups_out.append(np.asarray(g)[:real])
    cls = np.concatenate(cls_out).reshape(n, v, -1)
    groups = np.concatenate(groups_out).reshape(n, v, self.num_groups, -1)
    return cls, groups


def random_init_name(config) -> str:
  return f'random_init:{config.model.vit}:seed{RANDOM_INIT_SEED}'


def expected_teacher_name(config) -> str | None:
  """The teacher name a config implies, without loading weights (None when it names none)."""
  if config.teacher.checkpoint:
    from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
    info = vit.load_info(config.teacher.checkpoint)
    return str(info.get('name') or os.path.basename(os.path.normpath(config.teacher.checkpoint)))
  if config.teacher.random_init:
    return random_init_name(config)
  return None


def _load_teacher(config):
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  t = config.teacher
  if t.checkpoint:
    if not os.path.isdir(t.checkpoint):
      raise FileNotFoundError(f'teacher.checkpoint={t.checkpoint!r} is not a folder: convert a '
                              'checkpoint (python -m crossjepa.convert_teacher) or run --mode=teacher.')
    module, params = vit.load(t.checkpoint)
    info = vit.load_info(t.checkpoint)
    name = str(info.get('name') or os.path.basename(os.path.normpath(t.checkpoint)))
    return module, params, name, info.get('image_size')
  if t.random_init:
    overrides = dict(config.model.vit_overrides.to_dict()) if config.model.vit_overrides else {}
    module = vit.vit(config.model.vit, **overrides)
    size = int(config.data.image_size)
    params = jax.jit(module.init)(jax.random.PRNGKey(RANDOM_INIT_SEED),
                                  jnp.zeros((1, size, size, 3), jnp.float32))['params']
    return module, params, random_init_name(config), size
  raise ValueError('no teacher: set teacher.checkpoint to a converted teacher folder '
                   '(python -m crossjepa.convert_teacher --source=hf|timm --input=... --output=DIR), '
                   'or run --mode=teacher first to train the offline teacher '
                   '(teacher.random_init=True is for tests and the CPU default only).')
