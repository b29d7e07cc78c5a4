"""Export of the point encoder and loading it in a fresh process with nothing else from the run."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import default as default_config
from crossjepa.evaluation import export as export_lib
from crossjepa.evaluation import features as features_lib
from crossjepa.training import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = default_config.get_config()
  c.data.num_points = 64
  c.data.num_groups = 8
  c.data.group_size = 8
  c.model.point = 'tiny'
  c.model.point_overrides.depth = 1
  return c


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  config = tiny_config()
  module = export_lib.point_encoder_from_config(config)
  assert (module.num_groups, module.group_size, module.depth) == (8, 8, 1)
  params = jax.jit(module.init)(jax.random.PRNGKey(3), np.zeros((1, 64, 3), np.float32))['params']
  workdir = str(tmp_path_factory.mktemp('run'))
  fake = ({'student': params, 'predictor': {'w': np.zeros(3)}}, {'student': params}, 7)
  mp = pytest.MonkeyPatch()
  mp.setattr(checkpoint, 'restore_params', lambda wd, cfg: fake)
  try:
    path = export_lib.export(config, workdir)
    path2 = export_lib.export(config, workdir)   # overwrite in place, atomically
  finally:
    mp.undo()
  assert path == path2 == os.path.join(workdir, 'export')
  return config, module, params, workdir, path


def test_export_layout(exported):
  config, module, params, workdir, path = exported
  assert sorted(os.listdir(workdir)) == ['export']       # no temp folders left behind
  assert sorted(os.listdir(path)) == ['encoder.json', 'params']
  with open(os.path.join(path, 'encoder.json')) as f:
    info = json.load(f)
  assert info['format'] == export_lib.FORMAT and info['variant'] == 'tiny'
  assert (info['num_points'], info['num_groups'], info['group_size']) == (64, 8, 8)
  assert info['params_source'] == config.eval.params and info['pooling'] == 'max+mean'
  assert info['feature_dim'] == 2 * module.width and info['step'] == 7
  assert info['fields']['depth'] == 1 and info['fields']['dtype'] == {'__dtype__': 'float32'}
  assert info['config_digest'] == 'sha256:' + export_lib.config_digest(config)
  assert info['param_count'] == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert export_lib.build_module(info) == module
  # No records here to fit the zero-shot readout on: the export says so, and the loader too.
  assert info['zero_shot']['skipped'].startswith('zero-shot: no records to fit the readout on')
  with pytest.raises(ValueError, match='no zero-shot readout \\(zero-shot: no records to fit'):
    export_lib.load_encoder(path).imagenet_logits(np.zeros((1, 64, 3), np.float32))


def test_load_in_fresh_process_matches_embed_fn(exported, tmp_path):
  _, module, params, _, path = exported
  pts = np.random.default_rng(0).normal(size=(3, 64, 3)).astype(np.float32)
  pts /= np.linalg.norm(pts, axis=-1).max(1)[:, None, None]
  np.save(tmp_path / 'points.npy', pts)
  code = (
      'import sys, numpy as np, crossjepa\n'
      f'fn = crossjepa.load_encoder({path!r})\n'
      f'np.save({str(tmp_path / "feats.npy")!r}, fn(np.load({str(tmp_path / "points.npy")!r})))\n'
      "assert 'crossjepa.training' not in sys.modules and 'crossjepa.data.pipeline' not in sys.modules\n")
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}   # a plain one-device process
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO
  proc = subprocess.run([sys.executable, '-c', code], env=env, cwd=str(tmp_path),
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(tmp_path / 'feats.npy')
  want = features_lib.make_embed_fn(module, params)(pts)
  assert got.shape == (3, 2 * module.width)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_load_errors(exported, tmp_path):
  _, _, params, _, path = exported
  with pytest.raises(ValueError, match='is not a crossjepa export'):
    export_lib.load_encoder(str(tmp_path))
  # An encoder.json whose fields disagree with the saved params: the error names the leaves.
  bad = tmp_path / 'bad'
  bad.mkdir()
  os.symlink(os.path.join(path, 'params'), bad / 'params')
  with open(os.path.join(path, 'encoder.json')) as f:
    info = json.load(f)
  info['fields']['width'] = 64
  (bad / 'encoder.json').write_text(json.dumps(info))
  with pytest.raises(ValueError, match=r'mis-shaped .*transformer.*!= expected'):
    export_lib.load_encoder(str(bad))
  info['format'] = 'something/else'
  (bad / 'encoder.json').write_text(json.dumps(info))
  with pytest.raises(ValueError, match='has format'):
    export_lib.load_encoder(str(bad))
  fn = export_lib.load_encoder(path)
  with pytest.raises(ValueError, match=r'\[B, 64, 3\]'):
    fn(np.zeros((1, 32, 3), np.float32))


def test_export_rejects_mismatched_params(tmp_path):
  config = tiny_config()
  module = export_lib.point_encoder_from_config(config)
  params = jax.eval_shape(module.init, jax.random.PRNGKey(0), np.zeros((1, 64, 3), np.float32))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params['params'])
  params = dict(params)
  del params['norm']
  with pytest.raises(ValueError, match=r'missing \(2\): norm/bias, norm/scale'):
    export_lib.write_export(str(tmp_path / 'export'), module, params, {'num_points': 64})
  assert not os.path.exists(tmp_path / 'export') and os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="no EMA params"):
    export_lib.select_encoder_params({'student': params}, None, 'ema')
  assert export_lib.select_encoder_params({'student': 1}, {'student': 2}, 'ema') == 2


def test_load_encoder_refuses_non_finite_points(exported):
  _, _, _, _, path = exported
  encoder = export_lib.load_encoder(path)
  rng = np.random.default_rng(0)
  points = rng.normal(size=(4, 64, 3)).astype(np.float32)
  assert np.isfinite(encoder(points)).all()
  for bad_value in (np.nan, np.inf):
    bad = points.copy()
    bad[2, 5, 1] = bad_value
    with pytest.raises(ValueError, match=r'batch rows \[2\] \(1 of them\) are not finite'):
      encoder(bad)
  huge = points.copy()
  huge[1] *= 1e30   # finite, but overflows float32 inside the encoder
  with pytest.raises(ValueError, match=r'features of batch rows \[1\].*unit sphere'):
    encoder(huge)


def _damaged_copy(path, dest, what):
  """A copy of the export at `path` with 64 bytes flipped in its largest params file ('data': the
  arrays) or in a b-tree node of Orbax's OCDBT index ('index': params/d/*, CRC-checked), its
  _METADATA cut short ('metadata'), or its params rewritten by Orbax with one value changed
  ('modified': a well-formed checkpoint that is not the exported one)."""
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.copytree(path, dest)
  params = os.path.join(dest, 'params')
  if what == 'metadata':
    target = os.path.join(params, '_METADATA')
    with open(target, 'r+b') as f:
      f.truncate(40)
    return str(dest)
  if what == 'modified':   # params/ and encoder.json written again by the project's own writer
    from crossjepa.weights import param_folder  # pylint: disable=g-import-not-at-top
    leaves, treedef = jax.tree.flatten(param_folder.restore(os.path.abspath(params)))
    leaves[0] = leaves[0].copy()
    leaves[0].flat[0] += 1e-3
    with open(os.path.join(dest, export_lib.INFO_FILE)) as f:
      info = json.load(f)
    param_folder.write(os.path.abspath(dest), jax.tree.unflatten(treedef, leaves),
                       export_lib.INFO_FILE, info)
    return str(dest)
  if what == 'index':
    target = max((os.path.join(params, 'd', f) for f in os.listdir(os.path.join(params, 'd'))),
                 key=os.path.getsize)
  else:
    target = max((os.path.join(d, f) for d, _, fs in os.walk(params) for f in fs),
                 key=os.path.getsize)
  data = bytearray(open(target, 'rb').read())
  for i in range(len(data) // 2, len(data) // 2 + 64):
    data[i] ^= 0xFF
  with open(target, 'wb') as f:
    f.write(data)
  return str(dest)


@pytest.mark.parametrize('what', ['modified', 'data', 'index', 'metadata'])
def test_a_damaged_export_is_one_error_naming_it(exported, tmp_path, what):
  """A changed value in a well-formed checkpoint (encoder.json's param_checksum), flipped array
  bytes (the checksum, or zstd where the flip lands in a compressed chunk's framing), a flipped
  index node (tensorstore's CRC-32C) or a cut _METADATA: a ValueError naming the params folder, on
  one line, without tensorstore's JSON spec."""
  damaged = _damaged_copy(exported[-1], tmp_path / 'damaged', what)
  with pytest.raises(ValueError) as e:
    export_lib.load_encoder(damaged)
  msg = str(e.value)
  checksum = (f'load_encoder: {damaged}/params: the parameters\' checksum does not '
              "match encoder.json's param_checksum")
  unreadable = f'{damaged}/params: the Orbax checkpoint does not read ('
  if what == 'modified':   # the arrays' values are not Orbax's to check: encoder.json's checksum is
    assert msg.startswith(checksum), msg
  elif what == 'data':     # which of the two catches it depends on where the flipped bytes land
    assert msg.startswith(checksum) or msg.startswith(unreadable), msg
  else:
    assert msg.startswith(unreadable), msg
  if msg.startswith(unreadable):
    assert 'damaged or incomplete' in msg and 'tensorstore_spec' not in msg, msg
  if what == 'index':
    assert 'checksum verification failed' in msg, msg
  assert '\n' not in msg, msg


def test_main_on_a_damaged_export_prints_one_error_and_no_tracebacks(exported, tmp_path):
  """crossjepa.main evaluating a damaged export: exit 2, the one line naming it, and none of the
  'Event loop is closed' tracebacks tensorstore's late callbacks raise (console sends them to
  the log)."""
  damaged = _damaged_copy(exported[-1], tmp_path / 'damaged', 'index')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'crossjepa.main', '--config=configs/smoke.py', '--mode=all',
       f'--workdir={tmp_path / "w"}', f'--config.eval.encoder={damaged}',
       '--config.data.num_points=64'],
      capture_output=True, text=True, cwd=REPO, timeout=300, env={**env, 'JAX_PLATFORMS': 'cpu'})
  errors = [l for l in proc.stderr.splitlines() if l.startswith('crossjepa: error: ')]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(errors) == 1 and f'{damaged}/params: the Orbax checkpoint does not read' in errors[0]
  assert 'Traceback' not in proc.stderr and 'Event loop is closed' not in proc.stderr, \
      proc.stderr[-3000:]
