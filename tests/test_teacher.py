"""Tests of the offline 2D teacher (crossjepa/training/teacher.py): tiny shapes, few steps.

4 classes x 3 teacher objects, 2 views at 28 px (a 2 x 2 patch grid), the tiny ViT. The supervised
run is trained once per module and shared.
"""
import hashlib
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossjepa import imaging
from crossjepa.data import sources
from crossjepa.data import teacher_views
from crossjepa.evaluation import linear_probe
from crossjepa.evaluation import teacher_probe
from crossjepa.training import state as state_lib
from crossjepa.training import teacher
from crossjepa.training import teacher_models
from crossjepa.weights import vit_io

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(kind='supervised'):
  spec = importlib.util.spec_from_file_location('_smoke', os.path.join(_ROOT, 'configs', 'smoke.py'))
  smoke = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(smoke)
  c = smoke.get_config()
  c.data.synthetic.teacher_per_class = 3
  c.teacher.random_init = False
  t = c.teacher.train
  t.kind = kind
  t.steps = 16 if kind == 'ijepa' else 40
  t.batch_size = 8
  t.lr = 3e-3
  t.warmup_steps = 2
  t.log_every = 1
  t.augment_shift = 2
  t.ijepa.num_targets = 2
  t.ijepa.target_scale = 0.25      # 1 x 1 blocks on the 2 x 2 grid, context of the other 2
  t.ijepa.context_scale = 1.0
  t.ijepa.ema_momentum = (0.9, 1.0)
  return c


@pytest.fixture(scope='module')
def supervised(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher'))
  config = _config()
  result, state, models = teacher.train_and_save(config, workdir)
  return config, workdir, result, state, models


def test_supervised_loss_falls_and_beats_chance(supervised):
  _, _, result, _, _ = supervised
  losses = [loss for _, loss in result['loss_curve']]
  assert len(losses) == 40 and all(np.isfinite(losses))
  assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.05
  assert result['objects'] == 12 and result['views'] == 24
  assert result['train_accuracy'] > 0.25 + 0.15     # chance is 1/4


def test_saved_teacher_loads_with_identical_outputs(supervised):
  config, workdir, result, state, models = supervised
  module, params = vit_io.load(result['teacher'])
  info = vit_io.load_info(result['teacher'])
  assert module == models.vit
  assert info['name'] == 'offline-supervised-tiny/14' and info['kind'] == 'supervised'
  assert info['image_size'] == 28 and len(info['classes']) == 4
  assert set(params) == set(state.params['vit'])   # the ViT only: no head in the checkpoint
  images = imaging.normalize_images(
      np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8))
  got = module.apply({'params': params}, images)
  want = models.vit.apply({'params': state.params['vit']}, images)
  for key in ('cls', 'patches'):
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
  # The prepare stage's teacher cache reads it as it reads a converted checkpoint.
  from crossjepa.data import teacher_cache
  config = _config()
  config.teacher.checkpoint = result['teacher']
  cache = teacher_cache.Teacher(config)
  assert cache.name == info['name']
  views = teacher_views.render_split(config, workdir, 'teacher', data_config=config.data)
  cls, _ = cache(views['images'][:2], np.full((2, 2, config.data.num_groups), -1, np.int32))
  direct = models.vit.apply({'params': state.params['vit']},
                            imaging.normalize_images(views['images'][:2].reshape(4, 28, 28, 3)))
  np.testing.assert_allclose(cls.reshape(4, -1), np.asarray(direct['cls']), rtol=2e-3, atol=2e-3)


def test_rerun_reuses_teacher_and_views(supervised):
  config, workdir, result, _, _ = supervised
  path = os.path.join(result['teacher'], vit_io.CONFIG_FILE)
  views_dir = os.path.join(workdir, teacher_views.VIEWS_DIR)
  (views_file,) = os.listdir(views_dir)
  before = (os.stat(path).st_mtime_ns, os.stat(os.path.join(views_dir, views_file)).st_mtime_ns)
  again = teacher.train_teacher(config, workdir)
  assert again['reused'] and again['final_loss'] == result['final_loss']
  assert again['train_accuracy'] == result['train_accuracy']
  after = (os.stat(path).st_mtime_ns, os.stat(os.path.join(views_dir, views_file)).st_mtime_ns)
  assert before == after
  cached = teacher_views.render_split(config, workdir, 'teacher')
  assert cached['images'].shape == (12, 2, 28, 28, 3) and cached['images'].dtype == np.uint8
  changed = _config()
  changed.teacher.train.steps = 17
  with pytest.raises(ValueError, match='different'):
    teacher.train_teacher(changed, workdir)


def test_teacher_probe(supervised):
  config, workdir, result, _, _ = supervised
  probe = teacher_probe.teacher_probe(config, workdir, result['teacher'])
  assert probe['num_train'] == 8 and probe['num_test'] == 8 and probe['num_classes'] == 4
  assert probe['best_C'] in (0.1, 1.0)
  assert 'averaged over the 2' in probe['protocol']['features']
  # Brute force: the saved ViT's CLS of every view (float16, as cached), averaged per object, into
  # the same probe gives the same accuracy (the features are the teacher's, not a stand-in).
  module, params = vit_io.load(result['teacher'])
  feats, labels = {}, {}
  for split in ('train', 'test'):
    views = teacher_views.render_split(config, workdir, split)
    n, v = views['images'].shape[:2]
    flat = imaging.normalize_images(views['images'].reshape((n * v,) + views['images'].shape[2:]))
    cls = np.asarray(module.apply({'params': params}, flat)['cls']).astype(np.float16)
    feats[split] = cls.astype(np.float32).reshape(n, v, -1).mean(axis=1)
    labels[split] = views['labels']
  want = linear_probe.linear_probe(feats['train'], labels['train'], feats['test'], labels['test'],
                                   **linear_probe.probe_kwargs(config.eval, int(config.seed)))
  assert probe['accuracy'] == want['accuracy']
  assert probe['best_C'] == want['best_C'] and probe['cv_scores'] == want['cv_scores']


def test_teacher_split_is_disjoint():
  config = _config()
  data = config.data
  data.synthetic.train_per_class = data.synthetic.test_per_class = 3
  data.synthetic.pretrain_per_class = 3

  def fingerprints(split):
    out = {}
    for shape in sources.iter_shapes(data, split):
      out[shape.id] = hashlib.sha256(np.asarray(shape.mesh.vertices).tobytes()).hexdigest()
    return out

  held = fingerprints('teacher')
  assert len(held) == 12 and len(set(held.values())) == 12
  for split in ('train', 'test', 'pretrain'):
    other = fingerprints(split)
    assert not set(held) & set(other)
    assert not set(held.values()) & set(other.values()), split


def test_ijepa_loss_falls_and_ema_lags(tmp_path):
  config = _config('ijepa')
  views = teacher_views.render_split(config, str(tmp_path), 'teacher')
  images = views['images'].reshape(24, 28, 28, 3)
  state, models, history = teacher.fit(config, images, np.zeros(24, np.int64), 4)
  assert models.target_block == (1, 1) and models.num_context == 2
  losses = np.array([m['loss'] for _, m in history])
  assert np.all(np.isfinite(losses))
  assert losses[-4:].mean() < losses[:4].mean()
  momenta = [m['ema_momentum'] for _, m in history]
  assert abs(momenta[0] - 0.9) < 1e-6 and np.all(np.diff(momenta) > 0) and momenta[-1] < 1.0
  student = jax.tree.leaves(state.params['vit'])
  ema = jax.tree.leaves(state.ema_params)
  assert max(float(jnp.max(jnp.abs(s - e))) for s, e in zip(student, ema)) > 1e-5
  # the shared EMA helper: momentum 0 copies the student, momentum 1 keeps the EMA
  copy = state_lib.ema_update(state.ema_params, state.params['vit'], jnp.float32(0.0))
  keep = state_lib.ema_update(state.ema_params, state.params['vit'], jnp.float32(1.0))
  for c, s, k, e in zip(jax.tree.leaves(copy), student, jax.tree.leaves(keep), ema):
    np.testing.assert_array_equal(np.asarray(c), np.asarray(s))
    np.testing.assert_array_equal(np.asarray(k), np.asarray(e))


def test_sample_masks_brute_force():
  grid, rows, cols, num_targets, num_context = 6, 2, 3, 3, 12
  sample = jax.jit(lambda rng: teacher_models.sample_masks(
      rng, 16, grid=grid, target_block=(rows, cols), num_targets=num_targets, context_block=5,
      num_context=num_context))
  targets, context = sample(jax.random.PRNGKey(3))
  targets, context = np.asarray(targets), np.asarray(context)
  assert targets.shape == (16, 3, 6) and context.shape == (16, 12)
  orientations = set()
  for b in range(16):
    for block in targets[b]:
      r, c = block // grid, block % grid
      h, w = r.max() - r.min() + 1, c.max() - c.min() + 1
      assert (h, w) in ((rows, cols), (cols, rows))       # a full rectangle, either way round
      assert len(set(block.tolist())) == rows * cols
      orientations.add((h, w))
    assert len(set(context[b].tolist())) == num_context
    assert np.all(np.diff(context[b]) > 0)
    assert not set(context[b].tolist()) & set(targets[b].reshape(-1).tolist())
  assert orientations == {(2, 3), (3, 2)}


def test_patch_positions_and_batch_indices():
  pos = np.asarray(teacher_models.patch_positions(jnp.array([0, 5, 35]), 6))
  np.testing.assert_allclose(pos, [[-5 / 6, -5 / 6], [-5 / 6, 5 / 6], [5 / 6, 5 / 6]], atol=1e-6)
  idx = np.concatenate([teacher.batch_indices(0, s, 10, 4) for s in range(5)])
  assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:20].tolist()) == list(range(10))
  np.testing.assert_array_equal(teacher.batch_indices(0, 3, 10, 4), idx[12:16])


def test_augment_identity_flip_and_shift():
  images = jnp.asarray(np.random.default_rng(1).normal(size=(32, 8, 8, 3)), jnp.float32)
  same = teacher_models.augment(images, jax.random.PRNGKey(0), flip=False, shift=0)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(images))
  host = np.asarray(images)
  flipped = np.asarray(teacher_models.augment(images, jax.random.PRNGKey(0), flip=True, shift=0))
  kinds = []
  for b in range(32):
    if np.array_equal(flipped[b], host[b]):
      kinds.append('same')
    else:
      np.testing.assert_array_equal(flipped[b], host[b][:, ::-1])   # a mirror image, nothing else
      kinds.append('flipped')
  assert 4 <= kinds.count('flipped') <= 28    # a fair coin per image (P(fail) < 1e-4)
  # Shift: every image is an 8 x 8 crop of its edge-padded copy at an offset in [-2, 2]^2.
  shifted = np.asarray(teacher_models.augment(images, jax.random.PRNGKey(1), flip=False, shift=2))
  padded = np.pad(host, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='edge')
  offsets = set()
  for b in range(32):
    found = [(dy, dx) for dy in range(5) for dx in range(5)
             if np.array_equal(shifted[b], padded[b, dy:dy + 8, dx:dx + 8])]
    assert found, b
    offsets.add(found[0])
  assert len(offsets) > 5      # offsets vary across the batch
