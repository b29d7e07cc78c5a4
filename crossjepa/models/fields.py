"""The dataclass fields of the linen modules: overrides in, JSON-able config out, and back.

Shared by every model file (named variants with field overrides) and by the weight folders, which
store a module's fields beside its params (dtype by name) and rebuild the module from them.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def field_names(cls: type) -> set[str]:
  """The constructor fields of a linen module class (without linen's own `parent` and `name`)."""
  return {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}


def decode_overrides(cls: type, where: str, overrides: dict[str, Any]) -> dict[str, Any]:
  """Checks override names against `cls`'s fields and normalises values (dtype names, lists)."""
  names = field_names(cls)
  out = {}
  for key, value in overrides.items():
    if key not in names:
      raise ValueError(f'{where}: unknown field {key!r}; expected one of {sorted(names)}')
    if key == 'dtype' and isinstance(value, str):
      value = jnp.dtype(value)
    elif isinstance(value, list):
      value = tuple(value)        # ConfigDict gives lists; module fields must be hashable
    out[key] = value
  return out


def module_config(module: nn.Module) -> dict[str, Any]:
  """The module's dataclass fields as JSON-able values (dtype by name); any linen module."""
  out = {}
  for f in dataclasses.fields(module):
    if f.name in ('parent', 'name'):
      continue
    value = getattr(module, f.name)
    out[f.name] = jnp.dtype(value).name if f.name == 'dtype' else value
  return out


def from_config(fields: dict[str, Any]) -> dict[str, Any]:
  """Stored module fields (`module_config`) -> constructor kwargs (dtype is stored by name)."""
  fields = dict(fields)
  if isinstance(fields.get('dtype'), str):  # jnp.float32 etc., as the field defaults are
    fields['dtype'] = getattr(jnp, fields['dtype'])
  return fields
