"""Orbax checkpoints of pretraining: train state + data-iterator state + config, and their restore.

Layout: WORKDIR/checkpoints/<step>/{state, data, config}, written by one `ocp.CheckpointManager`
with three items: 'state' (the TrainState pytree, StandardCheckpointHandler, sharded arrays),
'data' (grain's own CheckpointHandler: one JSON of `iterator.get_state()` per process, so each host
resumes its own shard of the records exactly), 'config' (the ConfigDict as JSON, for the record).

A checkpoint whose params do not match the abstract state built from the current config is an
error that lists the differing paths; it never silently restarts at step 0.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from crossjepa.training import state as state_lib

ITEMS = ('state', 'data', 'config')


def checkpoint_dir(workdir) -> epath.Path:
  return epath.Path(workdir) / 'checkpoints'


def make_manager(workdir, config=None, *, create: bool = True) -> ocp.CheckpointManager:
  keep = int(config.train.keep_checkpoints) if config is not None else None
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
  handlers = {'state': ocp.StandardCheckpointHandler(),
              'data': grain.checkpoint.CheckpointHandler(),
              'config': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS,
                               item_handlers=handlers)


def config_json(config) -> dict:
  return json.loads(config.to_json_best_effort())


def save(manager: ocp.CheckpointManager, step: int, state, data_iterator, config) -> None:
  """Saves (asynchronously; call manager.wait_until_finished() before exiting)."""
  items = {'state': ocp.args.StandardSave(state), 'config': ocp.args.JsonSave(config_json(config))}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(int(step), args=ocp.args.Composite(**items), force=True)


def _shapes(tree, prefixes=('params', 'ema_params')) -> dict[str, tuple]:
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = state_lib.param_path(path)
    if name.split('/')[0] in prefixes:
      out[name] = (tuple(leaf.shape), np.dtype(leaf.dtype).name)
  return out


def check_compatible(manager: ocp.CheckpointManager, step: int, abstract_state) -> None:
  """Raises ValueError listing param paths/shapes that differ between checkpoint and config."""
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


def restore(manager: ocp.CheckpointManager, step: int, abstract_state, shardings,
            data_iterator=None):
  """Restores the state (with `shardings`) and, in place, the data iterator's position."""
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_state, shardings)
  items = {'state': ocp.args.StandardRestore(target)}
  if data_iterator is not None:
    items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = manager.restore(int(step), args=ocp.args.Composite(**items))
  return restored['state']


def restore_params(workdir, config=None, step: Optional[int] = None) -> tuple[Any, Any, int]:
  """(params, ema_params, step) of the latest (or given) checkpoint, as host numpy trees.

  Needs no model or data: the arrays are read with the shapes they were saved with.
  """
  manager = make_manager(workdir, config, create=False)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint under {checkpoint_dir(workdir)}')
  metadata = manager.item_metadata(step)['state']
  target = jax.tree.map(lambda m: np.empty(m.shape, m.dtype), metadata)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))['state']
  manager.close()
  return restored['params'], restored['ema_params'], int(restored['step'])
