"""The teacher protocol: any frozen, pretrained image encoder behind one spec and one call.

CrossJEPA (arXiv 2511.18424) distils a frozen image encoder; which one is a choice, not a code path.
A teacher folder holds the encoder's weights and a small spec beside them (DESIGN.md §4):

  architecture     registry key (`ARCHITECTURES`): 'vit' (DINOv2 or CLIP) | 'efficientnet_lite'
  name             what results and record metadata call it
  input_size       the size (px) the weights were trained at
  mean, std        preprocessing in pixel units: x = (uint8 - mean) / std per RGB channel
                   (ImageNet mean/std for DINOv2; CLIP's own for CLIP; 127 / 128 for the TF
                   EfficientNet-Lite weights)
  stride           pixels per cell of the feature map (ViT: the patch size; CNN: the stage's stride)
  global_width     width of 'global' (ViT CLS, CLIP's projected CLS: the image embedding, CNN
                   pooled head)
  feature_width    width of 'feature_map' (may differ from global_width)
  feature_stage    which map 'feature_map' is (CNN stage name; 'patches' for a ViT)
  has_logits       whether 'logits' come out (a classifier head is in the checkpoint)
  param_checksum   sha256 of the weights (`vit.param_checksum`), so caches can tell teachers apart

A `Teacher` (`crossjepa.weights.teacher_io.load_teacher(DIR)` reads one from a folder, `from_module`
wraps an in-memory ViT): `teacher(images uint8 [B,H,W,3])` -> {'global': [B,D], 'feature_map':
[B,h,w,C]} (+ 'logits'), preprocessing inside, one jit per input shape; `teacher.apply(variables,
images_u8)` is the same pure function for callers that jit and shard it themselves (the prepare
stage's teacher cache). H and W must be multiples of the stride, so cell (row, col) covers pixels
[row * stride, (row + 1) * stride) exactly (the correspondence map of DESIGN.md §3 indexes these
cells).

This file holds only the pure parts (the spec, the registry, the call); the folders (`teacher.json`
+ `params/`, or a ViT checkpoint's `vit_config.json` read through the same protocol) are read and
written by `crossjepa.weights.teacher_io`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import imaging
from crossjepa.models import efficientnet_lite
from crossjepa.models import fields as fields_lib
from crossjepa.models import vit

FORMAT = 'crossjepa.teacher/1'


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
  """What a teacher is, saved beside its weights as teacher.json (see the module docstring)."""
  architecture: str
  name: str
  input_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  stride: int
  global_width: int
  feature_width: int
  feature_stage: str
  has_logits: bool
  param_checksum: str
  param_count: int
  fields: dict[str, Any]            # the module's dataclass fields (architecture-specific)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)   # provenance (source file, ...)

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out['mean'], out['std'] = list(self.mean), list(self.std)
    out['format'] = FORMAT
    return out

  @classmethod
  def from_json(cls, data: dict[str, Any], where: str) -> 'TeacherSpec':
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in data and n != 'extra']
    if missing:
      raise ValueError(f'{where}: teacher spec lacks {missing} (expected the fields {names})')
    if data['architecture'] not in ARCHITECTURES:
      raise ValueError(f'{where}: architecture {data["architecture"]!r} is not registered; '
                       f'expected one of {sorted(ARCHITECTURES)}')
    kwargs = {n: data[n] for n in names if n in data}
    kwargs['mean'], kwargs['std'] = tuple(map(float, data['mean'])), tuple(map(float, data['std']))
    return cls(**kwargs)

  def grid(self, image_size: int) -> tuple[int, int]:
    """(h, w) cells of the feature map for square images of `image_size` px."""
    image_size = int(image_size)
    if image_size <= 0 or image_size % self.stride:
      raise ValueError(f'teacher {self.name!r}: image size {image_size} px is not a positive '
                       f'multiple of its feature stride {self.stride} px (the correspondence map '
                       'indexes whole cells): choose data.image_size accordingly')
    return image_size // self.stride, image_size // self.stride

  def info(self, image_size: int) -> dict[str, Any]:
    """The record metadata's `teacher` entry: everything a cache depends on."""
    h, w = self.grid(image_size)
    return {'name': self.name, 'architecture': self.architecture, 'image_size': [image_size] * 2,
            'trained_image_size': self.input_size, 'stride': self.stride, 'grid': [h, w],
            'patch_size': self.stride, 'feature_stage': self.feature_stage,
            'width': self.global_width, 'feature_width': self.feature_width,
            'checksum': self.param_checksum, 'mean': list(self.mean), 'std': list(self.std)}


# ----------------------------------------------------------------------------- architectures


@dataclasses.dataclass(frozen=True)
class Architecture:
  """How one registered architecture builds its module and maps its outputs to the protocol."""
  build: Callable[[dict[str, Any]], Any]                  # fields -> flax module
  outputs: Callable[[Any, Any, jax.Array], dict]          # (module, variables, x) -> protocol dict


def _vit_build(fields):
  return vit.ViT(**fields_lib.from_config(fields))


def _vit_outputs(module, variables, x):
  out = module.apply(variables, x)
  b, _, d = out['patches'].shape
  h, w = x.shape[1] // module.patch_size, x.shape[2] // module.patch_size
  return {'global': out['embedding'] if module.proj_dim else out['cls'],
          'feature_map': out['patches'].reshape(b, h, w, d)}


def _efficientnet_build(fields):
  return efficientnet_lite.EfficientNetLite(**fields_lib.from_config(fields))


def _efficientnet_outputs(module, variables, x):
  return dict(module.apply(variables, x))


ARCHITECTURES: dict[str, Architecture] = {
    'vit': Architecture(_vit_build, _vit_outputs),
    'efficientnet_lite': Architecture(_efficientnet_build, _efficientnet_outputs),
}


# ----------------------------------------------------------------------------- the callable


def preprocess(images, mean, std):
  """uint8 [..., H, W, 3] -> float32 (x - mean) / std, mean/std in pixel units."""
  x = jnp.asarray(images).astype(jnp.float32)
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class Teacher:
  """A loaded teacher: `.spec`, `.module`, `.variables`, `__call__(uint8 images) -> dict`."""

  def __init__(self, spec: TeacherSpec, module, variables):
    self.spec, self.module, self.variables = spec, module, variables
    self._jit = jax.jit(self.apply)

  @property
  def name(self) -> str:
    return self.spec.name

  def apply(self, variables, images_u8) -> dict[str, jax.Array]:
    """Pure: (variables, uint8 [B,H,W,3]) -> {'global', 'feature_map'[, 'logits']} (float32)."""
    s = self.spec
    s.grid(images_u8.shape[1])
    if images_u8.shape[1] != images_u8.shape[2]:
      raise ValueError(f'teacher {s.name!r}: square images expected, got {images_u8.shape}')
    x = preprocess(images_u8, s.mean, s.std)
    out = ARCHITECTURES[s.architecture].outputs(self.module, variables, x)
    return {k: v.astype(jnp.float32) for k, v in out.items()}

  def __call__(self, images) -> dict[str, np.ndarray]:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'teacher {self.spec.name!r}: expected uint8 images [B,H,W,3], got '
                       f'{images.dtype} {images.shape}')
    return {k: np.asarray(v) for k, v in self._jit(self.variables, images).items()}


# ----------------------------------------------------------------------------- specs and weights


def abstract_variables(spec: TeacherSpec, module) -> Any:
  side = spec.input_size - spec.input_size % spec.stride or spec.stride
  x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  return jax.eval_shape(lambda a: module.init(jax.random.PRNGKey(0), a), x)


def check_variables(spec: TeacherSpec, module, variables, where: str) -> None:
  """Raises a ValueError naming missing, unexpected and mis-shaped entries vs. the spec's module."""
  flat = lambda t: {jax.tree_util.keystr(p): tuple(np.shape(x))
                    for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  g, w = flat(variables), flat(abstract_variables(spec, module))
  missing, unexpected = sorted(set(w) - set(g)), sorted(set(g) - set(w))
  shapes = sorted(f'{k}: {g[k]} (expected {w[k]})' for k in set(g) & set(w) if g[k] != w[k])
  if missing or unexpected or shapes:
    raise ValueError(f'{where} do not match the teacher spec: missing {missing[:8]}, unexpected '
                     f'{unexpected[:8]}, wrong shape {shapes[:8]}')


def with_feature_stage(spec: TeacherSpec, feature_stage: str) -> TeacherSpec:
  """The same teacher with `feature_map` taken from another stage (CNN teachers only)."""
  if spec.architecture != 'efficientnet_lite':
    raise ValueError(f'teacher {spec.name!r} ({spec.architecture}) has one feature map '
                     f'({spec.feature_stage!r}); teacher.feature_stage={feature_stage!r} applies to '
                     'CNN teachers only: leave it empty')
  if feature_stage not in efficientnet_lite.STAGES:
    raise ValueError(f'teacher.feature_stage={feature_stage!r}; expected one of '
                     f'{list(efficientnet_lite.STAGES)}')
  fields = dict(spec.fields, feature_stage=feature_stage)
  module = _efficientnet_build(fields)
  return dataclasses.replace(
      spec, fields=fields, feature_stage=feature_stage,
      stride=int(efficientnet_lite.feature_stride(feature_stage)),
      feature_width=int(efficientnet_lite.feature_width(module)))


def with_attention(teacher: Teacher, attention: str) -> Teacher:
  """The same teacher computing attention as `attention` says (config model.attention; ViT
  teachers only, a CNN teacher is returned as it is): same weights, same features to rounding."""
  if teacher.spec.architecture != 'vit' or teacher.module.attention == attention:
    return teacher
  spec = dataclasses.replace(teacher.spec, fields=dict(teacher.spec.fields, attention=attention))
  return Teacher(spec, teacher.module.clone(attention=attention), teacher.variables)


def vit_spec(fields: dict[str, Any], *, name: str, input_size: int = 0, param_checksum: str = '',
             param_count: int = 0, extra: dict[str, Any] | None = None) -> TeacherSpec:
  """The spec of a ViT teacher from its module fields (`fields.module_config`): CLS and patches,
  ImageNet preprocessing, trained at pos_grid * patch_size px unless `input_size` says otherwise."""
  width = int(fields['width'])
  return TeacherSpec(
      architecture='vit', name=name,
      input_size=int(input_size or fields['pos_grid'] * fields['patch_size']),
      mean=imaging.IMAGENET_MEAN_PX, std=imaging.IMAGENET_STD_PX, stride=int(fields['patch_size']),
      global_width=int(fields.get('proj_dim') or width), feature_width=width,
      feature_stage='patches', has_logits=False,
      param_checksum=param_checksum, param_count=param_count, fields=fields,
      extra=dict(extra or {}))


def from_module(module, variables, *, name: str, architecture: str = 'vit',
                input_size: int = 0) -> Teacher:
  """A Teacher around an in-memory ViT (random-init teachers, tests): spec derived from its fields."""
  if architecture != 'vit':
    raise ValueError('from_module: only ViT modules are wrapped in memory')
  params = variables['params'] if 'params' in variables else variables
  spec = vit_spec(fields_lib.module_config(module), name=name, input_size=input_size,
                  param_checksum=vit.param_checksum(jax.device_get(params)),
                  param_count=vit.param_count(params))
  return Teacher(spec, module, {'params': params})
