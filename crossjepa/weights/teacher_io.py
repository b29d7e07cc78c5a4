"""Teacher folders: any registered teacher read into a `crossjepa.models.teacher.Teacher`, and written.

A folder is `teacher.json` (the `TeacherSpec`) + `params/` (Orbax, the module's variables), written
by `save_teacher`; a ViT checkpoint folder (`vit_config.json`, `crossjepa.weights.vit_io`: a
converted DINOv2 or the offline ViT of --mode=teacher) is read through the same protocol, its spec
derived from that file.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from crossjepa.models import teacher as teacher_lib
from crossjepa.models import vit as vit_lib
from crossjepa.weights import param_folder
from crossjepa.weights import vit_io

SPEC_FILE = 'teacher.json'


def is_teacher_dir(directory: str) -> bool:
  return bool(directory) and (os.path.isfile(os.path.join(directory, SPEC_FILE)) or
                              os.path.isfile(os.path.join(directory, vit_io.CONFIG_FILE)))


def _spec_from_vit(directory: str) -> teacher_lib.TeacherSpec:
  info = vit_io.load_info(directory)
  name = info.get('name') or os.path.basename(os.path.normpath(directory))
  return teacher_lib.vit_spec(
      dict(info['fields']), name=str(name),
      input_size=info.get('image_size') or 0, param_checksum=str(info.get('param_checksum', '')),
      param_count=int(info.get('param_count', 0)),
      extra={k: info[k] for k in ('source', 'input', 'variant', 'kind') if k in info})


def load_spec(directory: str) -> teacher_lib.TeacherSpec:
  """The spec of a teacher folder (teacher.json, or derived from a ViT's vit_config.json)."""
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
    return teacher_lib.TeacherSpec.from_json(data, path)
  if os.path.isfile(os.path.join(directory, vit_io.CONFIG_FILE)):
    return _spec_from_vit(directory)
  raise FileNotFoundError(f'{directory} is not a teacher folder: it has neither {SPEC_FILE} nor '
                          f'{vit_io.CONFIG_FILE} (convert one with python -m crossjepa.convert_teacher)')


def load_teacher(directory: str, *, feature_stage: str = '') -> teacher_lib.Teacher:
  """Reads any registered teacher folder -> `Teacher`.

  `feature_stage` (CNN teachers) picks another stage's map than the spec's without reconverting:
  the weights are the same; spec.stride / feature_width / feature_stage follow it.
  """
  spec = load_spec(directory)
  if feature_stage and feature_stage != spec.feature_stage:
    spec = teacher_lib.with_feature_stage(spec, feature_stage)
  arch = teacher_lib.ARCHITECTURES[spec.architecture]
  module = arch.build(spec.fields)
  weights = os.path.join(directory, param_folder.PARAMS_DIR)
  path = os.path.abspath(weights)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'teacher weights not found: expected the folder {path}')
  tree = param_folder.restore(path)
  # A teacher.json folder holds the module's variables as save_teacher wrote them ({'params'},
  # + 'batch_stats' for EfficientNet-Lite); a ViT checkpoint folder (vit_io) the params alone.
  has_spec = os.path.isfile(os.path.join(directory, SPEC_FILE))
  variables = tree if has_spec else {'params': tree}
  teacher_lib.check_variables(spec, module, variables, where=f'the weights in {weights}')
  param_folder.check_checksum(tree, spec.param_checksum, directory, 'the spec',
                              'convert the teacher again')
  return teacher_lib.Teacher(spec, module, jax.tree.map(jnp.asarray, variables))


def save_teacher(directory: str, spec: teacher_lib.TeacherSpec,
                 variables) -> teacher_lib.TeacherSpec:
  """Writes `directory/params` (Orbax) + `directory/teacher.json` atomically; returns the spec
  with param_count and param_checksum filled in from the weights."""
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  module = teacher_lib.ARCHITECTURES[spec.architecture].build(spec.fields)
  teacher_lib.check_variables(spec, module, variables, where='save_teacher: the variables')
  spec = dataclasses.replace(spec, param_checksum=vit_lib.param_checksum(variables),
                             param_count=vit_lib.param_count(variables))
  param_folder.write(directory, variables, SPEC_FILE, spec.to_json())
  return spec
