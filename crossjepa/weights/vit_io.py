"""ViT checkpoint folders: `params/` (Orbax) + `vit_config.json` (the module's fields and more).

Written for a converted DINOv2 (`crossjepa.weights.teacher_conversion`) and for the offline ViT of
--mode=teacher; read by the recipes (model.vit_init) and, through the teacher protocol, by
`crossjepa.weights.teacher_io`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossjepa.models import fields as fields_lib
from crossjepa.models import vit as vit_lib
from crossjepa.weights import param_folder

CONFIG_FILE = 'vit_config.json'
FORMAT = 'crossjepa.vit/1'


def save(directory: str, module: vit_lib.ViT, params, extra: dict[str, Any] | None = None) -> None:
  """Writes `directory/params` (Orbax) + `directory/vit_config.json`, atomically.

  Everything is written into a temporary sibling folder that is then renamed onto `directory`
  (an existing checkpoint there is replaced only once the new one is complete).
  `extra` (e.g. name, image_size, source) is stored beside the fields; the JSON also records the
  param count and `param_checksum`.
  """
  vit_lib.check_params(module, params)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  info = dict(extra or {})
  reserved = {'fields', 'param_count', 'param_checksum', 'format'}
  if reserved & set(info):
    raise ValueError(f'save: extra may not set {sorted(reserved & set(info))}')
  info.update(fields=fields_lib.module_config(module), param_count=vit_lib.param_count(params),
              param_checksum=vit_lib.param_checksum(params), format=FORMAT)
  info.setdefault('variant', None)
  param_folder.write(directory, params, CONFIG_FILE, info)


def load_info(directory: str) -> dict[str, Any]:
  """The checkpoint's `vit_config.json` (fields, variant, name, image_size, param_checksum, ...)."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'ViT checkpoint folder not found: {directory}')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'ViT checkpoint {directory} has no {CONFIG_FILE} (expected {path})')
  try:
    with open(path) as f:
      info = json.load(f)
  except (OSError, ValueError) as e:   # ValueError: JSONDecodeError, UnicodeDecodeError
    raise ValueError(f'{path}: not a readable ViT checkpoint config ({e}); expected the JSON '
                     'object written with the checkpoint') from None
  if not isinstance(info, dict) or 'fields' not in info:
    raise ValueError(f'{path}: missing the "fields" entry (not a crossjepa ViT checkpoint?)')
  return info


def load(directory: str, **overrides) -> tuple[vit_lib.ViT, Any]:
  """Reads a checkpoint written by `save` -> (module, params as jax arrays).

  `overrides` replace module fields that do not change the params (e.g. dtype=jnp.bfloat16).
  """
  info = load_info(directory)
  module = vit_lib.ViT(**dict(fields_lib.from_config(info['fields']), **overrides))
  path = os.path.abspath(os.path.join(directory, param_folder.PARAMS_DIR))
  if not os.path.isdir(path):
    raise FileNotFoundError(f'ViT checkpoint {directory} has no {param_folder.PARAMS_DIR}/ folder '
                            f'(expected {path})')
  params = param_folder.restore(path)
  vit_lib.check_params(module, params, where=f'params in {path}')
  param_folder.check_checksum(params, info.get('param_checksum', ''), path, CONFIG_FILE,
                              'write it again, or copy it again from its source')
  return module, jax.tree.map(jnp.asarray, params)
