"""The teacher protocol: any frozen, pretrained image encoder behind one spec and one call.

CrossJEPA (arXiv 2511.18424) distils a frozen image encoder; which one is a choice, not a code path.
A teacher folder holds the encoder's weights and a small spec beside them (DESIGN.md §4):

  architecture     registry key (`ARCHITECTURES`): 'vit' (DINOv2-compatible) | 'efficientnet_lite'
  name             what results and record metadata call it
  input_size       the size (px) the weights were trained at
  mean, std        preprocessing in pixel units: x = (uint8 - mean) / std per RGB channel
                   (ImageNet mean/std for DINOv2; 127 / 128 for the TF EfficientNet-Lite weights)
  stride           pixels per cell of the feature map (ViT: the patch size; CNN: the stage's stride)
  global_width     width of 'global' (ViT CLS, CNN pooled head)
  feature_width    width of 'feature_map' (may differ from global_width)
  feature_stage    which map 'feature_map' is (CNN stage name; 'patches' for a ViT)
  has_logits       whether 'logits' come out (a classifier head is in the checkpoint)
  param_checksum   sha256 of the weights (`vit.param_checksum`), so caches can tell teachers apart

`load_teacher(DIR)` returns a `Teacher`: `teacher(images uint8 [B,H,W,3])` ->
{'global': [B,D], 'feature_map': [B,h,w,C]} (+ 'logits'), preprocessing inside, one jit per input
shape; `teacher.apply(variables, images_u8)` is the same pure function for callers that jit and
shard it themselves (the prepare stage's teacher cache). H and W must be multiples of the stride,
so cell (row, col) covers pixels [row * stride, (row + 1) * stride) exactly (the correspondence map
of DESIGN.md §3 indexes these cells).

Folders: `teacher.json` + `params/` (Orbax, the module's variables) written by `save_teacher`; a
folder written by `crossjepa.models.vit.save` (`vit_config.json`: converted DINOv2 or the offline
ViT of --mode=teacher) is read through the same protocol, its spec derived from that file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import fileio

SPEC_FILE = 'teacher.json'
PARAMS_DIR = 'params'
FORMAT = 'crossjepa.teacher/1'

IMAGENET_MEAN_PX = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD_PX = tuple(255.0 * s for s in (0.229, 0.224, 0.225))
TF_LITE_MEAN_PX = (127.0, 127.0, 127.0)   # efficientnet/lite: MEAN_RGB = [127.0] * 3
TF_LITE_STD_PX = (128.0, 128.0, 128.0)    # STDDEV_RGB = [128.0] * 3


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
  variables: Callable[[Any], Any]                         # stored tree -> apply() variables


def _fields(fields) -> dict[str, Any]:
  """Stored module fields -> constructor kwargs (dtype is stored by name)."""
  fields = dict(fields)
  if isinstance(fields.get('dtype'), str):
    fields['dtype'] = getattr(jnp, fields['dtype'])
  return fields


def _vit_build(fields):
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  return vit.ViT(**_fields(fields))


def _vit_outputs(module, variables, x):
  out = module.apply(variables, x)
  b, _, d = out['patches'].shape
  h, w = x.shape[1] // module.patch_size, x.shape[2] // module.patch_size
  return {'global': out['cls'], 'feature_map': out['patches'].reshape(b, h, w, d)}


def _efficientnet_build(fields):
  from crossjepa.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  return efficientnet_lite.EfficientNetLite(**_fields(fields))


def _efficientnet_outputs(module, variables, x):
  return dict(module.apply(variables, x))


ARCHITECTURES: dict[str, Architecture] = {
    # ViT checkpoints store the 'params' collection only (vit.save); EfficientNet-Lite stores
    # {'params', 'batch_stats'} (inference-mode batch norm).
    'vit': Architecture(_vit_build, _vit_outputs, lambda tree: {'params': tree}),
    'efficientnet_lite': Architecture(_efficientnet_build, _efficientnet_outputs, lambda tree: tree),
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


# ----------------------------------------------------------------------------- folders


def _spec_from_vit(directory: str) -> tuple[TeacherSpec, dict[str, Any]]:
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  info = vit.load_info(directory)
  fields = dict(info['fields'])
  width = int(fields['width'])
  spec = TeacherSpec(
      architecture='vit',
      name=str(info.get('name') or os.path.basename(os.path.normpath(directory))),
      input_size=int(info.get('image_size') or fields['pos_grid'] * fields['patch_size']),
      mean=IMAGENET_MEAN_PX, std=IMAGENET_STD_PX, stride=int(fields['patch_size']),
      global_width=width, feature_width=width, feature_stage='patches', has_logits=False,
      param_checksum=str(info.get('param_checksum', '')), param_count=int(info.get('param_count', 0)),
      fields=fields, extra={k: info[k] for k in ('source', 'input', 'variant', 'kind') if k in info})
  return spec, info


def is_teacher_dir(directory: str) -> bool:
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  return bool(directory) and (os.path.isfile(os.path.join(directory, SPEC_FILE)) or
                              os.path.isfile(os.path.join(directory, vit.CONFIG_FILE)))


def load_spec(directory: str) -> TeacherSpec:
  """The spec of a teacher folder (teacher.json, or derived from a ViT's vit_config.json)."""
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'teacher folder not found: {directory}')
  path = os.path.join(directory, SPEC_FILE)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f'{path}: not a readable teacher spec ({e})') from None
    if not isinstance(data, dict):
      raise ValueError(f'{path}: expected a JSON object (a teacher spec)')
    return TeacherSpec.from_json(data, path)
  if os.path.isfile(os.path.join(directory, vit.CONFIG_FILE)):
    return _spec_from_vit(directory)[0]
  raise FileNotFoundError(f'{directory} is not a teacher folder: it has neither {SPEC_FILE} nor '
                          f'{vit.CONFIG_FILE} (convert one with python -m crossjepa.convert_teacher)')


def _restore(path: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(path):
    raise FileNotFoundError(f'teacher weights not found: expected the folder {path}')
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, restore_args=restore_args)


def _check_tree(got, want, where: str) -> None:
  flat = lambda t: {jax.tree_util.keystr(p): tuple(np.shape(x))
                    for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
  g, w = flat(got), flat(want)
  missing, unexpected = sorted(set(w) - set(g)), sorted(set(g) - set(w))
  shapes = sorted(f'{k}: {g[k]} (expected {w[k]})' for k in set(g) & set(w) if g[k] != w[k])
  if missing or unexpected or shapes:
    raise ValueError(f'{where} do not match the teacher spec: missing {missing[:8]}, unexpected '
                     f'{unexpected[:8]}, wrong shape {shapes[:8]}')


def abstract_variables(spec: TeacherSpec, module) -> Any:
  side = spec.input_size - spec.input_size % spec.stride or spec.stride
  x = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  return jax.eval_shape(lambda a: module.init(jax.random.PRNGKey(0), a), x)


def load_teacher(directory: str, *, feature_stage: str = '') -> Teacher:
  """Reads any registered teacher folder -> `Teacher`.

  `feature_stage` (CNN teachers) picks another stage's map than the spec's without reconverting:
  the weights are the same; spec.stride / feature_width / feature_stage follow it.
  """
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  spec = load_spec(directory)
  if feature_stage and feature_stage != spec.feature_stage:
    spec = with_feature_stage(spec, feature_stage)
  arch = ARCHITECTURES[spec.architecture]
  module = arch.build(spec.fields)
  tree = _restore(os.path.abspath(os.path.join(directory, PARAMS_DIR)))
  variables = arch.variables(tree)
  _check_tree(variables, abstract_variables(spec, module),
              where=f'the weights in {os.path.join(directory, PARAMS_DIR)}')
  if spec.param_checksum and vit.param_checksum(tree) != spec.param_checksum:
    raise ValueError(f'{directory}: the weights\' checksum does not match the spec\'s '
                     f'param_checksum {spec.param_checksum[:16]}... (the folder was modified or '
                     'half-written): convert the teacher again')
  return Teacher(spec, module, jax.tree.map(jnp.asarray, variables))


def with_feature_stage(spec: TeacherSpec, feature_stage: str) -> TeacherSpec:
  """The same teacher with `feature_map` taken from another stage (CNN teachers only)."""
  if spec.architecture != 'efficientnet_lite':
    raise ValueError(f'teacher {spec.name!r} ({spec.architecture}) has one feature map '
                     f'({spec.feature_stage!r}); teacher.feature_stage={feature_stage!r} applies to '
                     'CNN teachers only: leave it empty')
  from crossjepa.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  if feature_stage not in efficientnet_lite.STAGES:
    raise ValueError(f'teacher.feature_stage={feature_stage!r}; expected one of '
                     f'{list(efficientnet_lite.STAGES)}')
  fields = dict(spec.fields, feature_stage=feature_stage)
  module = _efficientnet_build(fields)
  return dataclasses.replace(
      spec, fields=fields, feature_stage=feature_stage,
      stride=int(efficientnet_lite.feature_stride(feature_stage)),
      feature_width=int(efficientnet_lite.feature_width(module)))


def save_teacher(directory: str, spec: TeacherSpec, variables) -> TeacherSpec:
  """Writes `directory/params` (Orbax) + `directory/teacher.json` atomically; returns the spec
  with param_count and param_checksum filled in from the weights."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  module = ARCHITECTURES[spec.architecture].build(spec.fields)
  _check_tree(variables, abstract_variables(spec, module), where='save_teacher: the variables')
  spec = dataclasses.replace(spec, param_checksum=vit.param_checksum(variables),
                             param_count=int(sum(np.size(x) for x in jax.tree.leaves(variables))))
  directory = os.path.abspath(directory)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(directory) + '.tmp-', dir=parent)
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, PARAMS_DIR), variables)
    with open(os.path.join(tmp, SPEC_FILE), 'w') as f:
      json.dump(spec.to_json(), f, indent=2, sort_keys=True)
    fileio.swap_in(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return spec


def from_module(module, variables, *, name: str, architecture: str = 'vit',
                input_size: int = 0) -> Teacher:
  """A Teacher around an in-memory ViT (random-init teachers, tests): spec derived from its fields."""
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  if architecture != 'vit':
    raise ValueError('from_module: only ViT modules are wrapped in memory')
  fields = vit.module_config(module)
  params = variables['params'] if 'params' in variables else variables
  spec = TeacherSpec(
      architecture='vit', name=name,
      input_size=int(input_size or module.pos_grid * module.patch_size),
      mean=IMAGENET_MEAN_PX, std=IMAGENET_STD_PX, stride=int(module.patch_size),
      global_width=int(module.width), feature_width=int(module.width), feature_stage='patches',
      has_logits=False, param_checksum=vit.param_checksum(jax.device_get(params)),
      param_count=vit.param_count(params), fields=fields)
  return Teacher(spec, module, {'params': params})
