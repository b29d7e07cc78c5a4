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
from typing import Any

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
                 variables, text=None) -> teacher_lib.TeacherSpec:
  """Writes `directory/params` (Orbax) + `directory/teacher.json` atomically; returns the spec
  with param_count and param_checksum filled in from the weights. `text`: a CLIP text tower
  (module, params, tokenizer, source), written into TEXT_DIR and recorded in extra['text']."""
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  module = teacher_lib.ARCHITECTURES[spec.architecture].build(spec.fields)
  teacher_lib.check_variables(spec, module, variables, where='save_teacher: the variables')
  spec = dataclasses.replace(spec, param_checksum=vit_lib.param_checksum(variables),
                             param_count=vit_lib.param_count(variables))
  also = None
  if text is not None:
    module_t, params_t, tokenizer, source = text
    info = text_info(module_t, params_t, tokenizer, source)
    spec = dataclasses.replace(spec, extra={**spec.extra, 'text': {
        k: info[k] for k in ('param_checksum', 'param_count', 'embedding_dim', 'source')}})
    also = lambda folder: write_text(folder, params_t, tokenizer, info)
  param_folder.write(directory, variables, SPEC_FILE, spec.to_json(), also=also)
  return spec


# ----------------------------------------------------------------------------- CLIP text towers
# A CLIP teacher folder may hold its text tower in TEXT_DIR: text.json (the CLIPText fields,
# param_checksum), params/ (Orbax) and the tokenizer's vocab.json + merges.txt. teacher.json's
# extra['text'] records the same checksum, so the folder's fingerprint covers it.

TEXT_DIR = 'text'
TEXT_FILE = 'text.json'


def text_info(module, params, tokenizer, source: str) -> dict[str, Any]:
  """text.json's content (and teacher.json's extra['text']) for a converted text tower."""
  from crossjepa.models import clip_text  # pylint: disable=g-import-not-at-top
  return {'fields': clip_text.fields(module), 'source': source,
          'param_checksum': vit_lib.param_checksum(params),
          'param_count': vit_lib.param_count(params),
          'embedding_dim': int(module.proj_dim or module.width),
          'tokenizer': {'vocab_size': int(tokenizer.vocab_size), 'sot_id': int(tokenizer.sot_id),
                        'eot_id': int(tokenizer.eot_id)}}


def write_text(folder: str, params, tokenizer, info: dict[str, Any]) -> None:
  """Writes the text tower into `folder`/TEXT_DIR of a teacher folder being built."""
  text_dir = os.path.join(folder, TEXT_DIR)
  os.makedirs(text_dir)
  param_folder.write_into(text_dir, jax.tree.map(lambda x: np.asarray(x, np.float32), params),
                          TEXT_FILE, info)
  tokenizer.save(text_dir)


def has_text(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, TEXT_DIR, TEXT_FILE))


def load_text(directory: str):
  """The text tower of a CLIP teacher folder -> `crossjepa.models.clip_text.TextEncoder`, checked
  against its text.json and teacher.json (fields, shapes, checksums, vocabulary); raises
  FileNotFoundError when the folder has none, ValueError naming the file for a damaged one."""
  from crossjepa.models import clip_text  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import clip_tokenizer  # pylint: disable=g-import-not-at-top
  text_dir = os.path.join(directory, TEXT_DIR)
  path = os.path.join(text_dir, TEXT_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{directory}: the teacher folder has no text tower ({path} is '
                            'missing): convert a whole CLIP model (image and text towers) with its '
                            'vocabulary, python -m crossjepa.convert_teacher --source=hf_clip|open_clip')
  try:
    with open(path) as f:
      info = json.load(f)
    module = clip_text.CLIPText(**{k: info['fields'][k] for k in clip_text.FIELDS})
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{path}: not a readable text tower description ({e!r})') from None
  recorded = (load_spec(directory).extra.get('text') or {}).get('param_checksum')
  if recorded != info.get('param_checksum'):
    raise ValueError(f'{path}: param_checksum {str(info.get("param_checksum"))[:16]} differs from '
                     f'teacher.json\'s extra.text ({str(recorded)[:16]}): the text tower is not the '
                     'one converted with this teacher; convert the teacher again')
  params = param_folder.restore(os.path.abspath(os.path.join(text_dir, param_folder.PARAMS_DIR)))
  clip_text.check_params(module, params, where=f'the weights in {text_dir}')
  param_folder.check_checksum(params, info['param_checksum'], text_dir, path,
                              'convert the teacher again')
  tokenizer = clip_tokenizer.CLIPTokenizer.load(text_dir)
  if tokenizer.vocab_size > module.vocab_size or tokenizer.eot_id != info['tokenizer']['eot_id']:
    raise ValueError(f'{text_dir}: its vocabulary ({tokenizer.vocab_size} tokens, end-of-text '
                     f'{tokenizer.eot_id}) does not match {path} (token embedding of '
                     f'{module.vocab_size}, end-of-text {info["tokenizer"]["eot_id"]})')
  encoder = clip_text.TextEncoder(module, jax.tree.map(jnp.asarray, params), tokenizer)
  encoder.param_checksum = str(info['param_checksum'])
  return encoder
