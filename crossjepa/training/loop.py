"""The pretraining loop: data, sharded state, the jitted step, checkpoints, resume, logging.

`pretrain(config, workdir)` (flax examples' `train_and_evaluate` shape):
- data: `crossjepa.data.pipeline.train_iterator` (or a given checkpointable grain iterator);
- state: built sharded on `make_mesh(config)`, or restored from the latest checkpoint in
  WORKDIR/checkpoints (together with the data iterator's position). Because every schedule and the
  step randomness are functions of `state.step`, a run stopped and resumed ends with bitwise the
  same params as one that never stopped (tests/test_loop.py checks it on CPU);
- checkpoints every train.checkpoint_every steps, at the end, on SIGTERM (the handler sets a flag
  checked each step; the loop saves and returns cleanly) and when `max_steps_this_run` is reached;
- a non-finite loss raises FloatingPointError naming the step; the last saved checkpoint is kept
  (the step's loss is checked before any later checkpoint is written);
- logging: TensorBoard scalars (WORKDIR/tb, tensorboardX), WORKDIR/metrics.jsonl (one JSON per
  logged step, read by the plots), a tqdm bar with steps/s and ETA; an optional cheap probe
  `probe_fn(params, ema_params, step) -> dict` every train.probe_every steps, logged as 'probe/*'.

Step numbers in logs, errors and checkpoints count completed updates: "step 3" is the state after
three updates, and its loss is the loss of the third update.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from crossjepa.training import checkpoint as ckpt_lib
from crossjepa.training import recipes as recipes_lib
from crossjepa.training import state as state_lib
from crossjepa.training import step as step_lib


class _StopFlag:
  """SIGTERM -> flag (checked once per step); the previous handler is restored afterwards."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def _handler(self, signum, frame):
    del frame
    logging.warning('pretrain: signal %d received; saving a checkpoint and stopping', signum)
    self.requested = True

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _Writer:
  """TensorBoard + metrics.jsonl, on process 0 only."""

  def __init__(self, workdir: epath.Path, start_step: int):
    self.active = jax.process_index() == 0
    self.path = workdir / 'metrics.jsonl'
    self.tb = None
    if not self.active:
      return
    # On resume, drop lines logged after the checkpoint we resume from (they will be redone).
    if self.path.exists():
      kept = [l for l in self.path.read_text().splitlines()
              if l.strip() and json.loads(l).get('step', 0) <= start_step]
      tmp = self.path.parent / (self.path.name + '.tmp')
      tmp.write_text(''.join(l + '\n' for l in kept))
      os.replace(tmp, self.path)
    import tensorboardX  # pylint: disable=g-import-not-at-top
    self.tb = tensorboardX.SummaryWriter(os.fspath(workdir / 'tb'))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.active:
      return
    for key, value in scalars.items():
      self.tb.add_scalar(key if '/' in key else f'train/{key}', value, step)
    with self.path.open('a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')

  def close(self):
    if self.tb is not None:
      self.tb.close()


def _default_iterator(config, workdir, recipe):
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.train_iterator(config, workdir, tuple(config.data.pretrain_splits),
                                 need_images=recipe.needs_images)


def _check_finite(step: int, metrics: dict[str, Any]) -> dict[str, float]:
  host = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if not math.isfinite(host['loss']):
    raise FloatingPointError(
        f'non-finite loss at step {step} (loss={host["loss"]}, grad_norm={host["grad_norm"]}); '
        'the last checkpoint written before this step is kept. Lower train.lr, check the data, '
        'or try train.dtype=float32.')
  return host


def pretrain(config, workdir, *, data_iterator: Optional[Iterator] = None,
             probe_fn: Optional[Callable[[Any, Any, int], dict]] = None,
             max_steps_this_run: Optional[int] = None) -> dict[str, Any]:
  """Pretrains (or resumes) `config.recipe`; returns a summary dict (see the module docstring).

  Args:
    config: the experiment ConfigDict.
    workdir: output folder (checkpoints/, tb/, metrics.jsonl).
    data_iterator: a checkpointable grain iterator of host-local batches (tests); default: the
      records under WORKDIR/data via crossjepa.data.pipeline.train_iterator.
    probe_fn: optional cheap evaluation, called every train.probe_every steps.
    max_steps_this_run: stop (with a checkpoint) after this many updates in this call, as a
      preemption would; a later call resumes.
  """
  t_start = time.time()
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tr = config.train
  total = int(tr.steps)
  recipe = recipes_lib.get_recipe(config.recipe)
  iterator = data_iterator if data_iterator is not None else _default_iterator(config, workdir, recipe)

  # One batch for the shapes, then rewind, so the first trained batch is this same one.
  first_state = iterator.get_state()
  example = next(iterator)
  iterator.set_state(first_state)

  mesh = step_lib.make_mesh(config)
  models = recipes_lib.build_models(config, example)
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))
  manager = ckpt_lib.make_manager(workdir, config)
  latest = manager.latest_step()
  if latest is not None:
    abstract = step_lib.abstract_train_state(config, init_rng, example, models=models)
    ckpt_lib.check_compatible(manager, latest, abstract)
    shardings = step_lib.state_shardings(mesh, abstract)
    state = ckpt_lib.restore(manager, latest, abstract, shardings, iterator)
    logging.info('pretrain: resumed from %s/%d', manager.directory, latest)
  else:
    state, shardings = step_lib.create_train_state(config, mesh, init_rng, example, models=models)
  start = int(jax.device_get(state.step))
  batch_shardings = step_lib.batch_shardings(mesh, jax.tree.map(
      lambda x: np.zeros((x.shape[0] * jax.process_count(),) + x.shape[1:], x.dtype), example))
  train_step = step_lib.make_train_step(config, mesh, shardings, batch_shardings, models=models)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  if jax.process_index() == 0:
    logging.info('pretrain: recipe=%s params=%d groups=%s mesh=%s start=%d steps=%d',
                 config.recipe, num_params,
                 state_lib.describe_rules(state.params, tr.get('param_rules', ())),
                 dict(mesh.shape), start, total)

  writer = _Writer(workdir, start)
  end = total if max_steps_this_run is None else min(total, start + int(max_steps_this_run))
  log_every = max(1, int(tr.log_every))
  ckpt_every = int(tr.checkpoint_every)
  probe_every = int(tr.get('probe_every', 0) or 0)
  pending = None            # (step, metrics) of the last dispatched step, not yet checked
  last_host: dict[str, float] = {}
  saved_step = latest
  preempted = False
  step = start
  t_loop = None
  try:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=total, initial=start, desc=f'pretrain[{config.recipe}]', unit='step',
               disable=jax.process_index() != 0, dynamic_ncols=True)

    def settle():
      """Checks (and logs) the pending step's metrics; called one step late to keep dispatch async."""
      nonlocal pending, last_host
      if pending is None:
        return
      done_step, metrics = pending
      pending = None
      host = _check_finite(done_step, metrics)
      last_host = host
      if done_step % log_every == 0 or done_step == end:
        elapsed = time.time() - t_loop if t_loop else 0.0
        host['steps_per_sec'] = (done_step - start) / elapsed if elapsed > 0 else 0.0
        writer.write(done_step, host)
        bar.set_postfix(loss=f'{host["loss"]:.4f}', refresh=False)

    def checkpoint(at: int):
      nonlocal saved_step
      settle()
      ckpt_lib.save(manager, at, state, iterator, config)
      saved_step = at

    with _StopFlag() as stop:
      t_loop = time.time()
      while step < end:
        batch = step_lib.global_batch(next(iterator), batch_shardings)
        state, metrics = train_step(state, batch, step_rng)
        step += 1
        settle()                      # the previous step's metrics; this one runs meanwhile
        pending = (step, metrics)
        bar.update(1)
        if probe_fn is not None and probe_every > 0 and step % probe_every == 0:
          settle()
          probe = {f'probe/{k}': float(v) for k, v in probe_fn(state.params, state.ema_params,
                                                               step).items()}
          writer.write(step, probe)
        if stop.requested:
          preempted = True
          checkpoint(step)
          break
        if (ckpt_every > 0 and step % ckpt_every == 0) or step == end:
          checkpoint(step)
      settle()
      if saved_step != step:
        checkpoint(step)
    bar.close()
  finally:
    manager.wait_until_finished()
    manager.close()
    writer.close()
  wall = time.time() - t_start
  loop_s = time.time() - t_loop if t_loop else 0.0
  return {
      'recipe': config.recipe,
      'start_step': start,
      'step': step,
      'total_steps': total,
      'final_loss': last_host.get('loss'),
      'final_metrics': last_host,
      'steps_per_sec': (step - start) / loop_s if loop_s > 0 else 0.0,
      'wall_s': wall,
      'resumed': latest is not None,
      'preempted': preempted,
      'finished': step >= total,
      'num_params': num_params,
      'checkpoint_dir': os.fspath(manager.directory),
  }


def restore_params(workdir, config=None, step: Optional[int] = None):
  """(params, ema_params, step) of the latest checkpoint in WORKDIR (export / evaluation)."""
  return ckpt_lib.restore_params(workdir, config, step)
