"""`python -m crossjepa.convert_teacher` fails like crossjepa.main: exit 2, one line naming the file.

Every case builds its own small input (no torch needed: the custom-class pickle is written with the
stdlib `pickle` + `zipfile`, laid out like a torch zip checkpoint). Each subprocess imports jax, so
the subprocess cases are few; the messages and the no-half-written-output guarantee are checked
in-process, on the library functions that main() reports.
"""
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from crossjepa import fileio
from crossjepa.weights import dinov2_params
from crossjepa.weights import errors
from crossjepa.weights import teacher_conversion
from crossjepa.weights import vit_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = 'crossjepa.convert_teacher: error: '


class _Config:
  """A custom class a training script might pickle into its checkpoint."""


def _tiny_hf_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """A complete 1-block HF Dinov2Model state dict (width 64, 2x2 patch grid), random values."""
  cfg = dict(width=64, depth=1, patch_size=14, hidden=256, ffn_layer='mlp', num_registers=0,
             layerscale=True)
  rng = np.random.default_rng(seed)
  shapes = dinov2_params.expected_keys('hf', cfg, pos_len=1 + 4)
  return {k: rng.normal(0, 0.02, s).astype(np.float32) for k, s in shapes.items()}


def _save_safetensors(sd, path) -> str:
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file(sd, str(path))
  return str(path)


def _custom_class_pth(path) -> str:
  """A torch-style zip checkpoint whose data.pkl references a custom class (torch.load would
  answer with its 'retry with weights_only=False' hint)."""
  with zipfile.ZipFile(path, 'w') as zf:
    zf.writestr('archive/data.pkl', pickle.dumps({'cfg': _Config(), 'epoch': 3}, protocol=2))
    zf.writestr('archive/version', '3\n')
  return str(path)


def _convert_cli(args):
  return subprocess.run([sys.executable, '-m', 'crossjepa.convert_teacher', *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=120,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def _make_case(case, tmp_path):
  """(argv, what the one line must contain) of one user mistake."""
  out = f'--output={tmp_path / "out"}'
  if case == 'garbage_safetensors':
    path = tmp_path / 'garbage.safetensors'
    path.write_bytes(b'\xff' * 64)
    return ['--source=hf', f'--input={path}', out], [str(path), 'not a readable .safetensors']
  if case == 'custom_class_pth':
    path = _custom_class_pth(tmp_path / 'custom.pth')
    return ['--source=timm', f'--input={path}', out], [path, 'refusing to load', '_Config']
  if case == 'missing_file':
    path = str(tmp_path / 'nothing_here.bin')
    return ['--source=hf', f'--input={path}', out], [path, 'no such file']
  if case == 'missing_key':
    sd = _tiny_hf_state_dict()
    del sd['encoder.layer.0.norm2.bias']
    path = _save_safetensors(sd, tmp_path / 'dinov2.safetensors')
    return (['--source=hf', f'--input={path}', out],
            [path, "missing keys (1): ['encoder.layer.0.norm2.bias']"])
  if case == 'unknown_source':
    return ['--source=caffe', '--input=x.pth', out], ['--source=caffe', 'hf|timm|hf_clip|open_clip|efficientnet_lite']
  raise AssertionError(case)


@pytest.mark.parametrize('case', ['garbage_safetensors', 'custom_class_pth', 'missing_file',
                                  'missing_key', 'unknown_source'])
def test_cli_user_errors_are_one_line_and_exit_2(case, tmp_path):
  args, wanted = _make_case(case, tmp_path)
  proc = _convert_cli(args)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(PREFIX), proc.stderr[-3000:]
  for text in wanted:
    assert text in lines[0], (text, lines[0])
  assert 'Traceback' not in proc.stderr and 'weights_only' not in proc.stderr
  assert not proc.stdout.strip()
  assert not (tmp_path / 'out').exists()


def test_messages_name_the_file_and_nothing_is_written(tmp_path, monkeypatch):
  out = tmp_path / 'out'
  # Every user mistake is a ConvertError (or FileNotFoundError) whose message starts with the file
  # or flag and is one line; main() prints exactly that.
  cases = {
      'garbage': (b'\x08\x00\x00\x00\x00\x00\x00\x00{"a": 1}', 'garbage.safetensors'),
      'empty': (b'', 'empty.safetensors'),
      'legacy_bytes': (b'not a checkpoint at all', 'weights.pth'),
  }
  for content, name in cases.values():
    (tmp_path / name).write_bytes(content)
    with pytest.raises(errors.ConvertError) as err:
      teacher_conversion.convert_vit('hf', str(tmp_path / name), str(out))
    assert str(err.value).startswith(str(tmp_path / name) + ':'), err.value
    assert '\n' not in str(err.value) and 'weights_only' not in str(err.value)

  sd = _tiny_hf_state_dict()
  sd['encoder.layer.0.attention.k_proj.weight'] = np.zeros((64, 32), np.float32)
  sd['encoder.layer.0.extra.weight'] = np.zeros(3, np.float32)
  bad = _save_safetensors(sd, tmp_path / 'bad.safetensors')
  with pytest.raises(errors.ConvertError) as err:
    teacher_conversion.convert_vit('hf', bad, str(out))
  msg = str(err.value)
  assert msg.startswith(f'{bad}: hf state dict does not match') and '\n' not in msg, msg
  assert "unexpected keys (1): ['encoder.layer.0.extra.weight']" in msg, msg
  assert 'k_proj.weight: (64, 32) (expected (64, 64))' in msg, msg

  folder = tmp_path / 'hf'
  folder.mkdir()
  _save_safetensors(_tiny_hf_state_dict(), folder / 'model.safetensors')
  (folder / 'config.json').write_text('{"num_attention_heads": 2,')
  with pytest.raises(errors.ConvertError, match=r'config\.json: not a valid JSON file'):
    teacher_conversion.convert_vit('hf', str(folder), str(out))
  (folder / 'config.json').write_text('{"num_attention_heads": 2}')
  with pytest.raises(errors.ConvertError, match=r"^--variant='B/99': not a ViT variant"):
    teacher_conversion.convert_vit('hf', str(folder), str(out), variant='B/99')
  with pytest.raises(errors.ConvertError, match=r'^--image_size=100: not a multiple'):
    teacher_conversion.convert_vit('hf', str(folder), str(out), image_size=100)

  # --output: a file, or a folder of the user's, is never replaced; a failure while writing leaves
  # neither the output nor a temporary folder behind.
  keep = tmp_path / 'mine'
  keep.mkdir()
  (keep / 'notes.txt').write_text('mine')
  for target in (keep, folder / 'config.json'):
    with pytest.raises(errors.ConvertError, match='refusing to replace|not a folder'):
      teacher_conversion.convert_vit('hf', str(folder), str(target))
  assert (keep / 'notes.txt').read_text() == 'mine'
  under_a_file = folder / 'config.json' / 'teacher'   # checked before any work, nothing made
  with pytest.raises(errors.ConvertError, match=rf'^{under_a_file}: --output cannot be made: '
                                                rf'{folder / "config.json"} is a file'):
    teacher_conversion.convert_vit('hf', str(folder), str(under_a_file))

  def broken_swap(tmp, directory):
    raise OSError(28, 'No space left on device', directory)
  monkeypatch.setattr(fileio, 'swap_in', broken_swap)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(OSError, match='No space left'):
    teacher_conversion.convert_vit('hf', str(folder), str(out))
  assert sorted(os.listdir(tmp_path)) == before and not out.exists()
  monkeypatch.undo()
  info = teacher_conversion.convert_vit('hf', str(folder), str(out))   # the same input converts
  assert info['fields']['num_heads'] == 2 and (out / vit_io.CONFIG_FILE).is_file()
