"""Reads a state dict from a .safetensors / .bin / .pth / .pt file or a Hugging Face model folder.

Nothing is downloaded, and torch is not needed: .safetensors files are read with the numpy reader
(bfloat16 ones with torch when it is installed), torch pickles by `crossjepa.weights.torch_reader`,
which admits only tensor-rebuild globals. Every failure on the user's file is a `ConvertError` (or
a FileNotFoundError) whose message starts with the file.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from crossjepa.weights import errors
from crossjepa.weights import torch_reader


def _to_numpy(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in tensors.items():
    if not isinstance(v, np.ndarray):     # a torch tensor: torch is installed then
      import torch  # pylint: disable=g-import-not-at-top
      if isinstance(v, torch.Tensor):
        v = v.detach().to(torch.float32).cpu().numpy()  # bf16 / f16 have no exact numpy route
    out[k] = np.asarray(v)
  return out


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file as numpy; every failure is a ConvertError naming the file."""
  # The numpy reader needs no torch (a core install has none); bfloat16 files need torch.
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    try:
      return _to_numpy(load_file(path))
    except (TypeError, ValueError) as numpy_error:  # a dtype numpy lacks (bfloat16)
      try:
        from safetensors.torch import load_file as load_torch  # pylint: disable=g-import-not-at-top
      except ImportError:
        raise errors.ConvertError(f'{path}: cannot read with numpy ({numpy_error}); install torch '
                                  "(pip install -e '.[test]') to read bfloat16 weights") from None
      return _to_numpy(load_torch(path))
  except (SafetensorError, TypeError, ValueError) as e:  # HeaderTooLarge, invalid header, ...
    raise errors.ConvertError(f'{path}: not a readable .safetensors file ({e}); expected a '
                              'safetensors state dict (truncated or not a safetensors '
                              'file?)') from None


def _read_hf_config(cfg_path: str) -> dict[str, Any]:
  """An HF folder's config.json (or open_clip_config.json); {} when there is none."""
  if not os.path.isfile(cfg_path):
    return {}
  try:
    with open(cfg_path) as f:
      hf_config = json.load(f)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
    raise errors.ConvertError(f'{cfg_path}: not a valid JSON file ({e}); expected the HF model '
                              'config') from None
  except OSError as e:
    raise errors.ConvertError(errors.os_error_text(e)) from None
  if not isinstance(hf_config, dict):
    raise errors.ConvertError(f'{cfg_path}: expected a JSON object (the HF model config), got '
                              f'{type(hf_config).__name__}')
  return hf_config


# A folder's (config files, weight files, shard indexes) per layout, in the order they are tried.
_HF_FILES = (('config.json',), ('model.safetensors', 'pytorch_model.bin'),
             ('model.safetensors.index.json', 'pytorch_model.bin.index.json'))
_OPEN_CLIP_FILES = (('open_clip_config.json',),
                    ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin'), ())


def read_state_dict(path: str, *,
                    open_clip: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads a state dict from a .safetensors / .bin / .pth file or an HF folder.

  Returns (state dict as float32 numpy, the folder's config.json or {}). A missing file raises
  FileNotFoundError, an unreadable or corrupt one ConvertError; both messages start with the file.
  A folder's checkpoint may be sharded (model.safetensors.index.json or pytorch_model.bin.index.json
  and the shards it names: HF's layout for large models). open_clip: a folder's open_clip files
  (open_clip_config.json, open_clip_model.safetensors, ...) come first: a hub folder of a LAION
  CLIP holds both layouts side by side.
  """
  hf_config: dict[str, Any] = {}
  if os.path.isdir(path):
    order = (_OPEN_CLIP_FILES, _HF_FILES) if open_clip else (_HF_FILES, _OPEN_CLIP_FILES)
    for cfg_name in order[0][0] + order[1][0]:
      hf_config = _read_hf_config(os.path.join(path, cfg_name))
      if hf_config:
        break
    names = order[0][1] + order[1][1]
    indexes = order[0][2] + order[1][2]
    for name in names:
      if os.path.isfile(os.path.join(path, name)):
        return _read_file(os.path.join(path, name)), hf_config
    for name in indexes:
      if os.path.isfile(os.path.join(path, name)):
        return _read_sharded(os.path.join(path, name)), hf_config
    raise FileNotFoundError(f'{path}: none of {", ".join(names + indexes)} in this folder')
  return _read_file(path), hf_config


def _read_sharded(index_path: str) -> dict[str, np.ndarray]:
  """The shards an HF index (`weight_map`: key -> shard file beside it) names, merged; every key
  must be in the shard the index names."""
  try:
    with open(index_path) as f:
      index = json.load(f)
  except ValueError as e:
    raise errors.ConvertError(f'{index_path}: not a valid JSON file ({e}); expected a shard index '
                              'with a "weight_map"') from None
  except OSError as e:
    raise errors.ConvertError(errors.os_error_text(e)) from None
  weight_map = index.get('weight_map') if isinstance(index, dict) else None
  if (not isinstance(weight_map, dict) or not weight_map
      or not all(isinstance(v, str) for v in weight_map.values())):
    raise errors.ConvertError(f'{index_path}: no "weight_map" of key -> shard file names (expected '
                              "an HF shard index)")
  folder = os.path.dirname(index_path)
  out: dict[str, np.ndarray] = {}
  for shard in sorted(set(weight_map.values())):
    if os.path.basename(shard) != shard:
      raise errors.ConvertError(f'{index_path}: shard {shard!r} is not a file name beside the '
                                'index')
    shard_path = os.path.join(folder, shard)
    if not os.path.isfile(shard_path):
      raise FileNotFoundError(f'{shard_path}: no such file (a shard {index_path} names)')
    tensors = _read_file(shard_path)
    missing = sorted(k for k, v in weight_map.items() if v == shard and k not in tensors)
    if missing:
      raise errors.ConvertError(f'{shard_path}: lacks {len(missing)} key(s) its index '
                                f'{os.path.basename(index_path)} puts there, e.g. {missing[:3]}')
    out.update(tensors)
  return out


def _read_file(path: str) -> dict[str, np.ndarray]:
  """One .safetensors / .bin / .pth / .pt file as float32 numpy arrays."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file (expected a .safetensors, .bin or .pth file or '
                            'an HF model folder)')
  if path.endswith('.safetensors'):
    try:
      return _read_safetensors(path)
    except OSError as e:
      raise errors.ConvertError(errors.os_error_text(e)) from None
  if path.endswith(('.bin', '.pth', '.pt')):
    # No torch needed, no arbitrary unpickling (an allow-list of tensor globals); a top-level
    # 'state_dict' / 'model' wrapper is unwrapped there. Its messages start with the file.
    try:
      return torch_reader.load_state_dict(path)
    except FileNotFoundError:
      raise
    except ValueError as e:  # UnsafeCheckpointError, truncated, not a torch file
      raise errors.ConvertError(str(e)) from e
    except OSError as e:
      raise errors.ConvertError(errors.os_error_text(e)) from None
  raise errors.ConvertError(f'{path}: unsupported checkpoint file type (expected .safetensors, '
                            '.bin, .pth or .pt)')
