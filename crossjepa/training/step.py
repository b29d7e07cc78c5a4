"""The one train step and state factory of every trainer (pretraining, offline teacher, fine-tuning).

`train_step(state, data, rng, *, loss_fn, optim, ema, sample, batch_sharding)` is a module-level
pure function: randomness is `fold_in(rng, state.step)`, the optional EMA update runs inside the
step, and every schedule is a function of `state.step`. `make_train_step` binds the static parts
with `functools.partial` and jits it once with explicit in/out shardings and a donated state (pjit
is now `jax.jit`); `init_state` builds the sharded initial TrainState the same way for all.

- `loss_fn(params, ema_params, batch, rng) -> (loss, aux dict)`: the trainer's loss, with its
  models and config already bound (`functools.partial`); `rng` is the step's key.
- `optim`: an optimizer block (`config.train`, `config.teacher.train`, `config.eval.finetune`; see
  crossjepa.training.state), `param_rules`: `config.train.param_rules`.
- `ema`: None, or `Ema(source, momentum)`: the state's `ema_params` follow `source(params)` with the
  cosine momentum schedule from `momentum[0]` to `momentum[1]` over `optim.steps`.
- `sample`: None (the step's second argument is a batch, sharded on its leading axis over the
  mesh), or `sample(dataset, rng, step) -> batch`: the second argument is a replicated
  device-resident dataset and the batch is drawn inside the step (crossjepa.data.resident).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from crossjepa.training import mesh as mesh_lib
from crossjepa.training import state as state_lib

LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Ema:
  """What the EMA (Polyak average) tracks and its momentum range over the run."""
  source: Callable[[Any], Any]
  momentum: tuple[float, float]


def train_step(state: state_lib.TrainState, data, rng, *, loss_fn: LossFn, optim,
               ema: Optional[Ema] = None, sample: Optional[Callable] = None, batch_sharding=None):
  """One optimisation step: grads of `loss_fn`, the AdamW update, the EMA update, metrics."""
  if sample is None:
    batch = data
  else:
    batch = sample(data, rng, state.step)
    batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: batch_sharding, batch))
  rng = jax.random.fold_in(rng, state.step)

  def loss(params):
    return loss_fn(params, state.ema_params, batch, rng)

  (loss_value, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # The flat optimizer (replicated state) takes one reduction per norm; FSDP's chain, leaf by leaf.
  norm = (state_lib.global_norm if isinstance(opt_state, state_lib.FlatAdamWState)
          else optax.global_norm)
  metrics = {
      'loss': loss_value,
      'grad_norm': norm(grads),
      'param_norm': norm(params),
      'update_norm': norm(updates),
      'lr': state_lib.learning_rate_schedule(optim)(state.step),
  }
  ema_params = state.ema_params
  if ema is not None:
    momentum = state_lib.ema_momentum_schedule(ema.momentum, optim.steps)(state.step)
    ema_params = state_lib.ema_update(ema_params, ema.source(params), momentum)
    metrics['ema_momentum'] = momentum
  metrics.update(aux)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema_params)
  return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)


def make_train_step(loss_fn: LossFn, optim, mesh: Mesh, state_shardings, *,
                    ema: Optional[Ema] = None, sample: Optional[Callable] = None):
  """jax.jit(partial(train_step, ...)) with explicit shardings and donated state.

  Called as fn(state, batch_or_dataset, rng) -> (state, metrics). The batch is sharded on its
  leading axis over every mesh axis; a device-resident dataset (with `sample`) is replicated. The
  result compiles on its first call and never again for the same shapes.
  """
  rep = mesh_lib.replicated(mesh)
  batch_sharding = mesh_lib.batch_sharding(mesh)
  fn = functools.partial(train_step, loss_fn=loss_fn, optim=optim, ema=ema, sample=sample,
                         batch_sharding=batch_sharding)
  data_sharding = rep if sample is not None else batch_sharding
  return jax.jit(fn, in_shardings=(state_shardings, data_sharding, rep),
                 out_shardings=(state_shardings, rep), donate_argnums=0)


def _initial_state(init_params: Callable, optim, param_rules, ema: Optional[Ema], flat: bool):
  def init(*args):
    params = init_params(*args)
    ema_params = jax.tree.map(jnp.copy, ema.source(params)) if ema is not None else None
    return state_lib.create(params, ema_params, optim, param_rules, flat)
  return init


def flat_optimizer(fsdp: int) -> bool:
  """The flat optimizer (crossjepa.training.state.flat_adamw) for replicated states; FSDP-sharded
  ones (fsdp > 1) keep the per-leaf chain, whose moments shard like their parameters."""
  return int(fsdp) == 1


def abstract_state(init_params: Callable, optim, *args, param_rules: Sequence = (),
                   ema: Optional[Ema] = None, fsdp: int = 1):
  """The ShapeDtypeStruct tree of the state `init_state` builds on a mesh with `fsdp` (Orbax
  restore target, checks)."""
  return jax.eval_shape(_initial_state(init_params, optim, param_rules, ema, flat_optimizer(fsdp)),
                        *args)


def init_state(init_params: Callable, optim, mesh: Mesh, *args, param_rules: Sequence = (),
               ema: Optional[Ema] = None):
  """Sharded initial TrainState of `init_params(*args) -> params` -> (state, state shardings).

  jax.eval_shape gives the abstract state, from which come the shardings (crossjepa.training.mesh);
  the init is then jitted with those out_shardings so large params are created in place. `args`
  (e.g. the rng and an example batch) are replicated inputs of that jit.
  """
  init = _initial_state(init_params, optim, param_rules, ema,
                        flat_optimizer(dict(mesh.shape).get('fsdp', 1)))
  shardings = mesh_lib.state_shardings(mesh, jax.eval_shape(init, *args))
  rep = mesh_lib.replicated(mesh)
  state = jax.jit(init, in_shardings=tuple(rep for _ in args), out_shardings=shardings)(*args)
  return state, shardings
