"""SIGKILL (no handler runs, nothing is flushed) of `python -m crossjepa.main` mid-prepare and
mid-pretrain, then a rerun in the same workdir: it completes, and its records / parameters equal an
uninterrupted run's bit for bit. Only the killed runs are subprocesses; the reruns and the
reference run in this process (the same `run.run` that main calls)."""
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from crossjepa.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {'data.synthetic.pretrain_per_class': 16,   # a prepare long enough to kill
            'train.steps': 24, 'train.checkpoint_every': 12, 'train.log_every': 12}
OVERRIDES = [f'--config.{k}={v}' for k, v in SETTINGS.items()]


def _config():
  from crossjepa import config_util
  c = config_util.load_config_module(os.path.join(REPO, 'configs', 'smoke.py')).get_config()
  for key, value in SETTINGS.items():
    node = c
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  c.lock()
  return c


def _command(workdir, mode):
  return [sys.executable, '-m', 'crossjepa.main', f'--config={REPO}/configs/smoke.py',
          f'--workdir={workdir}', f'--mode={mode}', *OVERRIDES]


def _env(cache_env):
  # This process's XLA_FLAGS (tests/conftest.py): the killed run's steps must compile as the
  # rerun's and the reference's do, for the bitwise comparison.
  return {**os.environ, 'JAX_PLATFORMS': 'cpu', **cache_env}


def _run(workdir, mode):
  from crossjepa import run as run_lib
  run_lib.run(_config(), workdir, mode)


def _kill_when(workdir, mode, ready, cache_env, timeout=300.0):
  """Starts `mode`, SIGKILLs it as soon as `ready()` holds; returns how long it ran."""
  proc = subprocess.Popen(_command(workdir, mode), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, cwd=REPO, env=_env(cache_env))
  start = time.time()
  try:
    while not ready():
      assert proc.poll() is None, f'{mode} ended (rc {proc.returncode}) before it could be killed'
      assert time.time() - start < timeout
      time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
  finally:
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  return time.time() - start


def _dataset_dir(workdir):
  from crossjepa.data import records
  return os.path.join(workdir, 'data', 'crossjepa_objects', records.VERSION)


def _records(workdir):
  import tensorflow_datasets as tfds
  from crossjepa.data import records
  builder = tfds.builder_from_directory(_dataset_dir(workdir))
  out = {}
  for split in records.split_names(builder):
    source = records.RecordSource(builder, split)
    out[split] = [source[i] for i in range(len(source))]
  return out


def _checkpoints(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, 'checkpoints', '*'))
                if os.path.basename(p).isdigit())


def test_sigkill_mid_prepare_and_mid_pretrain_then_rerun_is_bitwise(tmp_path, persistent_compile_cache):
  """The killed child and the in-process reruns share one XLA cache: the programs the child
  compiled before its kill are not compiled again here (the runs are the same config)."""
  ref, killed = str(tmp_path / 'ref'), str(tmp_path / 'killed')

  # prepare: killed while TFDS writes its incomplete.* folder; the rerun removes it and rebuilds.
  parent = os.path.dirname(_dataset_dir(killed))
  _kill_when(killed, 'prepare', lambda: glob.glob(os.path.join(parent, 'incomplete.*')),
             persistent_compile_cache)
  assert not os.path.exists(os.path.join(_dataset_dir(killed), 'dataset_info.json'))
  _run(killed, 'prepare')
  _run(ref, 'prepare')
  assert not glob.glob(os.path.join(parent, 'incomplete.*'))
  a, b = _records(ref), _records(killed)
  assert sorted(a) == sorted(b) and sum(len(v) for v in a.values()) == 4 * (16 + 2 + 2)
  for split in a:
    for x, y in zip(a[split], b[split]):
      (kx, vx), (ky, vy) = (jax.tree_util.tree_flatten_with_path(t) for t in (x, y))
      assert [k for k, _ in kx] == [k for k, _ in ky] and vx == vy
      for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
        np.testing.assert_array_equal(u, v)

  # pretrain: killed once a checkpoint is on disk, before the end; the rerun resumes from it.
  _kill_when(killed, 'pretrain', lambda: _checkpoints(killed), persistent_compile_cache)
  assert max(_checkpoints(killed)) == 12
  _run(killed, 'pretrain')
  _run(ref, 'pretrain')
  (p_ref, e_ref, s_ref), (p_k, e_k, s_k) = loop.restore_params(ref), loop.restore_params(killed)
  assert s_ref == s_k == 24
  for x, y in zip(jax.tree.leaves((p_ref, e_ref)), jax.tree.leaves((p_k, e_k))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
