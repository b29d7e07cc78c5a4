"""The pretraining loop: data, sharded state, the jitted step, checkpoints, resume, logging.

`pretrain(config, workdir)` (flax examples' `train_and_evaluate` shape):
- data: `crossjepa.data.pipeline.train_iterator` (or a given checkpointable grain iterator);
- state: built sharded on `make_mesh(config)`, or restored from the latest checkpoint in
  WORKDIR/checkpoints (together with the data iterator's position). Because every schedule and the
  step randomness are functions of `state.step`, a run stopped and resumed ends with bitwise the
  same params as one that never stopped (tests/test_loop.py checks it on CPU);
- checkpoints every train.checkpoint_every steps, at the end, on SIGTERM or a first Ctrl-C (the
  handler sets a flag checked each step; the loop saves and returns with `preempted`, which ends
  crossjepa.run's run: exit 143 / 130) and when `max_steps_this_run` is reached;
- a non-finite loss raises FloatingPointError naming the step; the last saved checkpoint is kept
  (the step's loss is checked before any later checkpoint is written);
- logging: TensorBoard scalars (WORKDIR/tb, tensorboardX), WORKDIR/metrics.jsonl (one JSON per
  logged step, read by the plots), a progress bar with steps/s and ETA (crossjepa.console: live on
  a TTY, one final line otherwise; absl INFO records go to WORKDIR/log.txt); an optional cheap probe
  `probe_fn(params, ema_params, step) -> dict` every train.probe_every steps, logged as 'probe/*'.

Device-resident mode (train.device_resident = True; GitHub issue "Pretraining" §6): when the
prepared training set fits in accelerator memory (ShapeNet-55 with cached CLS targets does), the
union of data.pretrain_splits is loaded once (only the record keys the recipe reads,
`pipeline.train_keys`), with ALL V views per object, and put on the device REPLICATED on every
device of the mesh. Each step samples its batch inside the one jitted step
(`pretraining.make_step(..., dataset=)`, sampler in crossjepa.data.resident): train.batch_size distinct objects and
train.views_per_step distinct views per object, with keys that are a function of (config.seed,
state.step) only, then the pipeline's augmentations in jnp (rotation about up applied to points,
centres and world_to_cam together, scale + translation with the camera moving along, clipped
jitter; the jnp twin of crossjepa.data.augment, same geometry as the grain pipeline, different random draws). No host input
pipeline runs, and checkpoints hold no data-iterator item: resume is exact from the state alone.
Objects are drawn independently every step (without replacement within a batch), not in epochs.
Limits: a set larger than train.device_resident_max_gb (GiB, default 8) is refused (use the grain
path); recipes that need images (seed) are refused. A checkpoint written in one mode is not resumed
in the other (the data position would not carry over): that is a ValueError naming both modes.
For tests, `pretrain(..., device_dataset=)` takes the set directly (flat record keys such as
'views/corr' or the nested batch structure, [M, ...] / [M, V, ...] numpy arrays).

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
from typing import Any, Callable, Iterator, Mapping, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from crossjepa import console
from crossjepa import fileio
from crossjepa.training import checkpoint as ckpt_lib
from crossjepa.training import mesh as mesh_lib
from crossjepa.training import pretraining
from crossjepa.training import recipes as recipes_lib
from crossjepa.training import state as state_lib
from crossjepa.training.recipes import models as models_lib


class _StopFlag:
  """SIGTERM or the first SIGINT (Ctrl-C) -> flag, checked once per step: the loop saves a
  checkpoint and returns (`preempted`, `signal`). A second Ctrl-C interrupts at once
  (KeyboardInterrupt). The previous handlers are restored afterwards."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.signum = 0
    self._previous = {}

  def _handler(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested, self.signum = True, signum
    extra = ' (Ctrl-C again to quit at once)' if signum == signal.SIGINT else ''
    logging.warning('pretrain: %s received; saving a checkpoint and stopping%s',
                    signal.Signals(signum).name, extra)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
    return self

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


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
      fileio.atomic_write_text(os.fspath(self.path), ''.join(l + '\n' for l in kept))
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


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
  """{'views/corr': x, ...} -> {'views': {'corr': x}, ...}; nested input passes through."""
  out: dict[str, Any] = {}
  for key, value in flat.items():
    if isinstance(value, dict):
      out.setdefault(key, {}).update(_nest(value))
      continue
    node = out
    *parents, leaf = key.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def _load_device_dataset(config, workdir, recipe) -> dict[str, Any]:
  """The union of data.pretrain_splits as host arrays, all V views (only the keys the recipe reads)."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  keys = pipeline.train_keys(config, need_images=recipe.needs_images)
  parts = [pipeline.load_split(config, workdir, split, keys)
           for split in config.data.pretrain_splits]
  data = {k: np.concatenate([p[k] for p in parts]) for k in keys}
  if config.recipe == 'crossjepa' and config.train.standardize_target == 'dataset':
    teacher = {k.split('/', 1)[1]: data[k].astype(np.float32) for k in keys if k.startswith('teacher/')}
    stats = pipeline.teacher_stats(config, workdir)
    for k, v in pipeline.standardize_targets(teacher, data['views/corr'], stats).items():
      data[f'teacher/{k}'] = v
  return data


def _device_dataset(config, workdir, recipe, mesh, given) -> Any:
  """The replicated device-resident set (the nested batch structure, [M, ...] / [M, V, ...])."""
  tr = config.train
  if recipe.needs_images:
    raise ValueError(f'train.device_resident=True does not support recipe {config.recipe!r}: it '
                     'needs the rendered views (views/image); set train.device_resident=False to '
                     'use the grain pipeline')
  host = _nest(given if given is not None else _load_device_dataset(config, workdir, recipe))
  for key in ('points', 'centers', 'groups', 'views', 'teacher'):
    if key not in host:
      raise ValueError(f'device-resident dataset lacks {key!r} (has {sorted(host)})')
  host = jax.tree.map(np.asarray, host)
  if 'label' in host:
    host['label'] = host['label'].astype(np.int32)
  nbytes = sum(x.nbytes for x in jax.tree.leaves(host))
  limit_gb = float(tr.device_resident_max_gb)
  if nbytes > limit_gb * 2 ** 30:
    raise ValueError(
        f'train.device_resident: the training set ({", ".join(config.data.pretrain_splits)}) is '
        f'{nbytes / 2 ** 30:.2f} GiB, over train.device_resident_max_gb={limit_gb}; set '
        'train.device_resident=False to stream it with the grain pipeline (or raise the limit if '
        'it fits in every device\'s memory next to the model)')
  num = host['points'].shape[0]
  if num < int(tr.batch_size):
    raise ValueError(f'train.device_resident: {num} objects, fewer than train.batch_size='
                     f'{int(tr.batch_size)}')
  rep = mesh_lib.replicated(mesh)
  # Every process holds the whole set; make_array_from_callback builds the global replicated array.
  dataset = jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, rep, lambda i: x[i]), host)
  logging.info('pretrain: device-resident set of %d objects, %.1f MiB, replicated', num,
               nbytes / 2 ** 20)
  return dataset


def _checkpoint_has_data(manager, step: int) -> bool:
  return (epath.Path(manager.directory) / str(step) / 'data').exists()


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
             max_steps_this_run: Optional[int] = None,
             device_dataset: Optional[dict[str, Any]] = None,
             teacher: Optional[Mapping[str, Any]] = None,
             leave_progress: bool = True) -> dict[str, Any]:
  """Pretrains (or resumes) `config.recipe`; returns a summary dict (see the module docstring).

  Args:
    config: the experiment ConfigDict.
    workdir: output folder (checkpoints/, tb/, metrics.jsonl).
    data_iterator: a checkpointable grain iterator of host-local batches (tests); default: the
      records under WORKDIR/data via crossjepa.data.pipeline.train_iterator.
    probe_fn: optional cheap evaluation, called every train.probe_every steps.
    max_steps_this_run: stop (with a checkpoint) after this many updates in this call, as a
      preemption would; a later call resumes.
    device_dataset: train.device_resident only: the training set as numpy arrays (tests); default:
      the records of data.pretrain_splits under WORKDIR/data.
    teacher: the teacher's widths ({'width', 'feature_width'}, e.g. recipes.models.teacher_widths)
      that size the crossjepa recipe's predictor; default: the teacher entry of the records'
      metadata under WORKDIR/data (required with data_iterator / device_dataset for crossjepa).
    leave_progress: False: the step bar is cleared when done (a non-TTY stderr gets no line for
      it), for callers that show their own bar over several runs (crossjepa.benchmark).
  """
  t_start = time.time()
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tr = config.train
  total = int(tr.steps)
  recipe = recipes_lib.get_recipe(config.recipe)
  resident = bool(tr.device_resident)
  mesh = mesh_lib.make_mesh(config)
  mesh_lib.check_batch_size(mesh, int(tr.batch_size), 'config.train.batch_size')
  if teacher is None and data_iterator is None and device_dataset is None:
    teacher = pretraining.teacher_info(config, workdir)
  if resident:
    if data_iterator is not None:
      raise ValueError('pretrain: data_iterator is given but train.device_resident=True samples on '
                       'the device (pass device_dataset=, or set train.device_resident=False)')
    iterator = None
    dataset = _device_dataset(config, workdir, recipe, mesh, device_dataset)
  else:
    iterator = (data_iterator if data_iterator is not None
                else _default_iterator(config, workdir, recipe))

  models = models_lib.build_models(config, teacher)
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))
  manager = ckpt_lib.make_manager(workdir, config)
  latest = manager.latest_step()
  if latest is not None:
    abstract = pretraining.abstract_state(config, init_rng, models, teacher)
    ckpt_lib.check_compatible(manager, latest, abstract)
    if _checkpoint_has_data(manager, latest) == resident:
      was, now = (('grain', 'device-resident') if resident else ('device-resident', 'grain'))
      raise ValueError(
          f'checkpoint {manager.directory}/{latest} was written by the {was} data path '
          f'(train.device_resident={not resident}) but this run uses the {now} one; the data '
          f'position does not carry over between them. Resume with train.device_resident='
          f'{not resident}, or start a fresh --workdir.')
    shardings = mesh_lib.state_shardings(mesh, abstract)
    state = ckpt_lib.restore(manager, latest, abstract, shardings, iterator, tr.param_rules)
    logging.info('pretrain: resumed from %s/%d', manager.directory, latest)
  else:
    state, shardings = pretraining.init_state(config, mesh, init_rng, models, teacher)
  start = int(jax.device_get(state.step))
  if resident:
    resident_step = pretraining.make_step(config, mesh, shardings, models, dataset=dataset)
    train_step = lambda state, rng: resident_step(state, dataset, rng)
  else:
    data_step = pretraining.make_step(config, mesh, shardings, models)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    train_step = lambda state, rng: data_step(
        state, mesh_lib.global_batch(next(iterator), batch_sharding), rng)
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  if jax.process_index() == 0:
    logging.info('pretrain: recipe=%s params=%d groups=%s mesh=%s start=%d steps=%d',
                 config.recipe, num_params,
                 state_lib.describe_rules(state.params, tr.param_rules),
                 dict(mesh.shape), start, total)

  writer = _Writer(workdir, start)
  end = total if max_steps_this_run is None else min(total, start + int(max_steps_this_run))
  log_every = max(1, int(tr.log_every))
  ckpt_every = int(tr.checkpoint_every)
  probe_every = int(tr.probe_every)
  pending = None            # (step, metrics) of the last dispatched step, not yet checked
  last_host: dict[str, float] = {}
  saved_step = latest
  preempted, stop_signal = False, 0
  step = start
  t_loop = None
  bar = console.progress(total=total, initial=start, desc=f'pretrain[{config.recipe}]', unit='step',
                         leave=leave_progress)   # shown on process 0 only
  try:

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
        state, metrics = train_step(state, step_rng)
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
          preempted, stop_signal = True, stop.signum
          checkpoint(step)
          break
        if (ckpt_every > 0 and step % ckpt_every == 0) or step == end:
          checkpoint(step)
      settle()
      if saved_step != step:
        checkpoint(step)
  finally:
    bar.close()
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
      'device_resident': resident,
      'preempted': preempted,
      'signal': signal.Signals(stop_signal).name if stop_signal else '',
      'finished': step >= total,
      'num_params': num_params,
      'checkpoint_dir': os.fspath(manager.directory),
  }


def restore_params(workdir, config=None, step: Optional[int] = None):
  """(params, ema_params, step) of the latest checkpoint in WORKDIR (export / evaluation)."""
  return ckpt_lib.restore_params(workdir, config, step)
