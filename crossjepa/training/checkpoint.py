"""Orbax checkpoints of pretraining: train state + data-iterator state + config, and their restore.

Layout: WORKDIR/checkpoints/<step>/{state, data, config}, written by one `ocp.CheckpointManager`
with three items: 'state' (the TrainState pytree, a PyTreeCheckpointHandler of the standard type
handlers, replica-parallel saving kept to large slices: see `state_handler`; sharded arrays),
'data' (grain's own CheckpointHandler: one JSON of `iterator.get_state()` per process, so each host
resumes its own shard of the records exactly), 'config' (the ConfigDict as JSON, for the record).

A checkpoint whose params do not match the abstract state built from the current config is an
error that lists the differing paths; it never silently restarts at step 0.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import grain
from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from crossjepa import fileio
from crossjepa.training import state as state_lib

ITEMS = ('state', 'data', 'config')

# Orbax's default jax.Array handler saves a replicated array "replica-parallel": every replica
# writes a slice of it, cut on the device by one small jitted `slice` program per array shape and
# replica. A data-parallel TrainState is a few hundred replicated arrays of at most a few MB, for
# which the slicing costs far more than it spreads: measured on 8 CPU devices, 228 arrays of
# 5.8 MB, the first save blocked training for 2.6 s and each later one for 0.9 s, against 0.23 and
# 0.06 s with replica-parallel kept to slices of at least this size; in the smoke pretrain run,
# 208 `slice` compiles took 12 s of 79. Arrays above it (a large model's embeddings) still save
# replica-parallel.
REPLICA_PARALLEL_MIN_SLICE_BYTES = 8 * 2 ** 20


def checkpoint_dir(workdir) -> epath.Path:
  return epath.Path(workdir) / 'checkpoints'


def state_handler() -> ocp.PyTreeCheckpointHandler:
  """The 'state' item's handler: orbax's standard type handlers (what StandardCheckpointHandler
  uses; the files are the same and either reads the other's), but jax.Array's with
  replica-parallel saving only for slices of >= REPLICA_PARALLEL_MIN_SLICE_BYTES."""
  th = ocp.type_handlers
  standard = [(t, th.get_type_handler(t)) for t in (int, float, bytes, np.number, np.ndarray, str)]
  default = th.get_type_handler(jax.Array)
  array = th.ArrayHandler(
      min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_SLICE_BYTES,
      # the per-array metadata files the default handler writes (no public accessor)
      array_metadata_store=getattr(default, '_array_metadata_store', None))
  registry = th.create_type_handler_registry(*standard, (jax.Array, array))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _restore_args(target):
  return ocp.args.PyTreeRestore(item=target,
                                restore_args=ocp.checkpoint_utils.construct_restore_args(target))


def make_manager(workdir, config=None, *, create: bool = True) -> ocp.CheckpointManager:
  keep = int(config.train.keep_checkpoints) if config is not None else None
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
  handlers = {'state': state_handler(),
              'data': grain.checkpoint.CheckpointHandler(),
              'config': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS,
                               item_handlers=handlers)


def config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, config) -> None:
  """Saves (asynchronously; call manager.wait_until_finished() before exiting)."""
  items = {'state': ocp.args.PyTreeSave(state), 'config': ocp.args.JsonSave(config_json(config))}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(int(step), args=ocp.args.Composite(**items), force=True)


def _shapes(tree, prefixes=('params', 'ema_params')) -> dict[str, tuple]:
  return {name: (tuple(leaf.shape), np.dtype(leaf.dtype).name)
          for name, leaf in state_lib.leaf_paths(tree).items() if name.split('/')[0] in prefixes}


def _reading(manager: ocp.CheckpointManager, step: int):
  """fileio.reading_checkpoint for step `step`'s folder, with the way out a run has."""
  where = f'{manager.directory}/{step}'
  return fileio.reading_checkpoint(
      where, f'delete {where} to resume from the checkpoint before it (or use a fresh --workdir)')


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state) -> None:
  """Raises ValueError listing param paths/shapes that differ between checkpoint and config."""
  with _reading(manager, step):
    saved = _shapes(manager.item_metadata(step)['state'])
  wanted = _shapes(abstract_state)
  diffs = []
  for name in sorted(set(saved) | set(wanted)):
    if name not in wanted:
      diffs.append(f'  {name}: in the checkpoint {saved[name]}, not in the config')
    elif name not in saved:
      diffs.append(f'  {name}: in the config {wanted[name]}, not in the checkpoint')
    elif saved[name] != wanted[name]:
      diffs.append(f'  {name}: checkpoint {saved[name]} != config {wanted[name]}')
  if diffs:
    shown = diffs[:40] + ([f'  ... and {len(diffs) - 40} more'] if len(diffs) > 40 else [])
    raise ValueError(
        f'checkpoint {manager.directory}/{step} does not match the config (recipe/model/data '
        f'settings changed?); {len(diffs)} differences:\n' + '\n'.join(shown) +
        '\nUse a fresh --workdir or the config the checkpoint was written with '
        f'({manager.directory}/{step}/config).')


def _opt_layout(tree) -> dict[str, tuple]:
  return {k: tuple(v.shape) for k, v in state_lib.opt_entries(tree).items()}


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, shardings,
            data_iterator=None, param_rules=()):
  """Restores the state (with `shardings`) and, in place, the data iterator's position.

  The optimizer state's layout depends on the mesh (crossjepa.training.state.flat_adamw on a
  replicated state, the per-leaf chain under FSDP) and on `train.param_rules` (the groups). A
  checkpoint written in another layout (another fsdp, or before the flat optimizer) is read as
  saved, to the host, and its Adam moments are moved parameter by parameter into this run's
  layout; `param_rules` must then be those it was written with when it is in the flat layout.
  """
  items = {}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
  with _reading(manager, step):
    metadata = manager.item_metadata(step)['state']
    if _opt_layout(metadata) == _opt_layout(abstract_state):
      target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            abstract_state, shardings)
      items['state'] = _restore_args(target)
      return manager.restore(int(step), args=ocp.args.Composite(**items))['state']
    items['state'] = _restore_args(jax.tree.map(lambda m: np.empty(m.shape, m.dtype), metadata))
    saved = manager.restore(int(step), args=ocp.args.Composite(**items))['state']
  labels = state_lib.param_labels(abstract_state.params, param_rules)
  where = f'checkpoint {manager.directory}/{step}'
  opt = state_lib.opt_entries(saved)
  try:
    count, moments = state_lib.moments_of(opt, abstract_state.params, labels)
    opt_state = state_lib.opt_state_from_moments(abstract_state.opt_state, abstract_state.params,
                                                 labels, count, moments)
  except ValueError as e:
    raise ValueError(f'{where}: its optimizer state does not convert to this run\'s layout: '
                     f'{e}') from e
  saved = state_lib.leaf_paths(saved)
  host = abstract_state.replace(opt_state=opt_state)
  leaves = []
  for (name, leaf), sharding in zip(state_lib.leaf_paths(host).items(), jax.tree.leaves(shardings)):
    value = np.asarray(leaf if name.startswith('opt_state/') else saved[name])
    leaves.append(jax.make_array_from_callback(value.shape, sharding, lambda i, v=value: v[i]))
  logging.info('%s: optimizer state moved from its saved layout (%d entries) to this run\'s (%d)',
               where, len(opt), len(_opt_layout(abstract_state)))
  return jax.tree.unflatten(jax.tree.structure(host), leaves)


def restore_params(workdir, config=None, step: Optional[int] = None) -> tuple[Any, Any, int]:
  """(params, ema_params, step) of the latest (or given) checkpoint, as host numpy trees.

  Needs no model or data: the arrays are read with the shapes they were saved with.
  """
  manager = make_manager(workdir, config, create=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint under {checkpoint_dir(workdir)}')
  with _reading(manager, step):
    metadata = manager.item_metadata(step)['state']
    target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), metadata)
    restored = manager.restore(step, args=ocp.args.Composite(state=_restore_args(target)))['state']
  manager.close()
  return restored['params'], restored['ema_params'], int(restored['step'])
