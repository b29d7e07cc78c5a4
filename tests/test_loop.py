"""pretrain(): bitwise resume after a real stop (SIGTERM and max_steps_this_run), checkpoint
compatibility errors, the non-finite-loss error, metrics.jsonl / TensorBoard, restore_params."""
import json
import os
import signal

import grain
import jax
import numpy as np
import pytest

from crossjepa.training import checkpoint as ckpt_lib
from crossjepa.training import loop
from crossjepa import testing
from crossjepa.training.recipes import models as models_lib
from tests.test_step import smoke_config


pytestmark = pytest.mark.usefixtures('persistent_compile_cache')   # tests/conftest.py
TEACHER = models_lib.teacher_widths(16)   # the fake examples' teacher_dim


def loop_config(**train):
  c = smoke_config(**{**dict(steps=6, checkpoint_every=3, log_every=1, warmup_steps=2), **train})
  c.mesh.data = -1
  return c


def fake_iterator(config, num_objects=12, seed=0):
  """The same kind of checkpointable grain iterator the real pipeline returns."""
  examples = testing.synthetic_examples(config, num_objects, teacher_dim=16, seed=seed)
  ds = grain.MapDataset.source(examples).shuffle(seed=seed).repeat().batch(
      int(config.train.batch_size), drop_remainder=True)
  return iter(ds.to_iter_dataset())


def _params(workdir):
  params, ema, step = loop.restore_params(workdir)
  return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, ema), step


def test_ctrl_c_stops_like_sigterm_and_twice_interrupts():
  """The first SIGINT sets the stop flag (the loop then checkpoints and returns); a second one
  interrupts at once; the previous handlers come back."""
  before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
  with loop._StopFlag() as stop:   # pylint: disable=protected-access
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested and stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(1000):   # the handler runs between bytecodes of the main thread
        pass
  assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_resume_is_bitwise_and_sigterm_checkpoints(tmp_path):
  c = loop_config()
  full = loop.pretrain(c, tmp_path / 'full', teacher=TEACHER, data_iterator=fake_iterator(c))
  assert full['step'] == 6 and full['finished'] and not full['resumed']

  # Run 1: SIGTERM (sent to this process) during step 2 -> checkpoint at 2, clean return.
  sent = []

  def probe(params, ema_params, step):
    del params, ema_params
    if step == 2 and not sent:
      sent.append(step)
      os.kill(os.getpid(), signal.SIGTERM)
    return {'dummy': float(step)}

  c_probe = loop_config(probe_every=1)
  r1 = loop.pretrain(c_probe, tmp_path / 'stop', teacher=TEACHER,
                     data_iterator=fake_iterator(c), probe_fn=probe)
  assert r1['preempted'] and r1['signal'] == 'SIGTERM' and r1['step'] == 2 and not r1['finished']
  assert ckpt_lib.make_manager(tmp_path / 'stop').latest_step() == 2
  # Run 2: a fresh iterator (as a new process would build), resumed, stopped after 2 more steps.
  r2 = loop.pretrain(c, tmp_path / 'stop', teacher=TEACHER,
                     data_iterator=fake_iterator(c), max_steps_this_run=2)
  assert r2['resumed'] and r2['start_step'] == 2 and r2['step'] == 4
  r3 = loop.pretrain(c, tmp_path / 'stop', teacher=TEACHER, data_iterator=fake_iterator(c))
  assert r3['start_step'] == 4 and r3['step'] == 6 and r3['finished']

  p_full, e_full, s_full = _params(tmp_path / 'full')
  p_stop, e_stop, s_stop = _params(tmp_path / 'stop')
  assert s_full == s_stop == 6
  for a, b in zip(jax.tree.leaves((p_full, e_full)), jax.tree.leaves((p_stop, e_stop))):
    np.testing.assert_array_equal(a, b)
  assert r3['final_loss'] == full['final_loss']

  # metrics.jsonl: one line per step 1..6 (re-done steps replaced), plus the probe lines.
  lines = [json.loads(l) for l in (tmp_path / 'stop' / 'metrics.jsonl').read_text().splitlines()]
  train_steps = [l['step'] for l in lines if 'loss' in l]
  assert train_steps == [1, 2, 3, 4, 5, 6]
  assert [l['probe/dummy'] for l in lines if 'probe/dummy' in l] == [1.0, 2.0]
  assert any(name.startswith('events') for name in os.listdir(tmp_path / 'stop' / 'tb'))
  assert len(ckpt_lib.make_manager(tmp_path / 'stop').all_steps()) <= c.train.keep_checkpoints

  # A config whose params differ -> an error listing the differences, never a restart.
  c_bad = loop_config()
  c_bad.model.point_overrides.width = 48
  with pytest.raises(ValueError, match='does not match the config') as err:
    loop.pretrain(c_bad, tmp_path / 'stop', teacher=TEACHER, data_iterator=fake_iterator(c))
  assert 'params/student' in str(err.value)


def test_non_finite_loss_names_the_step(tmp_path):
  c = loop_config(steps=4, checkpoint_every=1)
  examples = testing.synthetic_examples(c, 16, teacher_dim=16)
  # objects 8.. carry a NaN teacher target: the first batch is finite, the second is not
  for e in examples[8:]:
    e['teacher'] = {k: np.full_like(v, np.nan) for k, v in e['teacher'].items()}
  it = iter(grain.MapDataset.source(examples).batch(8).repeat().to_iter_dataset())
  with pytest.raises(FloatingPointError, match='non-finite loss at step 2'):
    loop.pretrain(c, tmp_path, teacher=TEACHER, data_iterator=it)
  assert ckpt_lib.make_manager(tmp_path).latest_step() == 1


def test_device_resident_samples_on_device_and_resumes_bitwise(tmp_path):
  """train.device_resident: batches sampled in the jitted step from all V views (V=3 > Kv=2),
  augmentations keep every pose consistent with the moved points, resume is bitwise exact with
  no iterator state, and the mode / size / recipe checks raise clear errors."""
  from crossjepa.data import resident
  c = loop_config(steps=4, checkpoint_every=2, device_resident=True)
  c_all = loop_config(views_per_step=3)
  examples = testing.synthetic_examples(c_all, 12, teacher_dim=16, seed=3)
  nested = jax.tree.map(lambda *xs: np.stack(xs), *examples)
  nested['teacher'] = {k: v.astype(np.float16) for k, v in nested['teacher'].items()}  # as stored
  flat = {'points': nested['points'], 'centers': nested['centers'], 'groups': nested['groups'],
          'label': nested['label'], **{f'teacher/{k}': v for k, v in nested['teacher'].items()},
          **{f'views/{k}': v for k, v in nested['views'].items()}}

  # The sampler: distinct views, and camera coordinates of the centres are s x the originals
  # (rotation + scale + translation move camera and object together), one s per object.
  batch = jax.jit(lambda d, k: resident.sample(
      d, k, batch_size=8, views_per_step=2, augment=c.train.augment))(nested, jax.random.PRNGKey(5))
  batch = jax.device_get(batch)
  cls_all = nested['teacher']['cls'].astype(np.float32)                  # [M,V,D], unique rows
  homog = lambda x: np.concatenate([x, np.ones(x.shape[:-1] + (1,))], -1)
  objects = set()
  for b in range(8):
    match = [np.argwhere((cls_all == batch['teacher']['cls'][b, k]).all(-1))[0] for k in range(2)]
    (i0, v0), (i1, v1) = match
    assert i0 == i1 and v0 != v1
    objects.add(int(i0))
    np.testing.assert_array_equal(batch['groups'][b], nested['groups'][i0])
    ratios = []
    for k, (i, v) in enumerate(match):
      cam_new = homog(batch['centers'][b]) @ batch['views']['world_to_cam'][b, k].T
      cam_old = homog(nested['centers'][i]) @ nested['views']['world_to_cam'][i, v].T
      ratios.append(cam_new[:, :3] / cam_old[:, :3])
    ratios = np.stack(ratios)
    np.testing.assert_allclose(ratios, ratios.flat[0], rtol=2e-4)
    assert 0.8 <= ratios.flat[0] <= 1.2
  assert len(objects) == 8                                                  # no repeats in a batch

  full = loop.pretrain(c, tmp_path / 'full', teacher=TEACHER, device_dataset=flat)
  assert full['finished'] and full['device_resident'] and np.isfinite(full['final_loss'])
  r1 = loop.pretrain(c, tmp_path / 'stop', teacher=TEACHER,
                     device_dataset=flat, max_steps_this_run=2)
  assert r1['step'] == 2 and not r1['finished']
  assert not (tmp_path / 'stop' / 'checkpoints' / '2' / 'data').exists()   # no iterator state
  r2 = loop.pretrain(c, tmp_path / 'stop', teacher=TEACHER, device_dataset=flat)
  assert r2['resumed'] and r2['start_step'] == 2 and r2['step'] == 4
  for a, b in zip(jax.tree.leaves(_params(tmp_path / 'full')),
                  jax.tree.leaves(_params(tmp_path / 'stop'))):
    np.testing.assert_array_equal(a, b)
  assert r2['final_loss'] == full['final_loss']

  # Mixing modes, an oversized set, an image recipe: clear errors before any training.
  c_grain = loop_config(steps=6)
  with pytest.raises(ValueError, match='device-resident data path'):
    loop.pretrain(c_grain, tmp_path / 'stop', teacher=TEACHER, data_iterator=fake_iterator(c_grain))
  c_big = loop_config(device_resident=True)
  c_big.train.device_resident_max_gb = 1e-6
  with pytest.raises(ValueError, match='grain pipeline'):
    loop.pretrain(c_big, tmp_path / 'big', teacher=TEACHER, device_dataset=flat)
  c_seed = loop_config(device_resident=True)
  c_seed.recipe = 'seed'
  with pytest.raises(ValueError, match="recipe 'seed'"):
    loop.pretrain(c_seed, tmp_path / 'seed', teacher=TEACHER, device_dataset=flat)
