"""The one train step, the device mesh and the shardings (big_vision / flax-examples style).

`train_step(state, batch, rng, *, recipe, config, models)` is a module-level pure function:
randomness is `fold_in(rng, state.step)`, the EMA update runs inside the step, and every schedule is
a function of `state.step`. `make_train_step` binds the static parts with `functools.partial` and
jits it once with explicit in/out shardings and a donated state (pjit is now `jax.jit`).

Mesh: axes ('data', 'fsdp') from `config.mesh` (data = -1 takes the devices fsdp leaves). The batch
is split over both axes on its leading dimension. Parameter/optimizer sharding rule (simple on
purpose): with fsdp = 1 everything is replicated; otherwise every state leaf with at least
`FSDP_MIN_SIZE` elements is split over 'fsdp' along its largest axis divisible by the fsdp size
(ties to the last such axis), and the rest is replicated. XLA inserts the all-gathers.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crossjepa.training import recipes as recipes_lib
from crossjepa.training import state as state_lib

FSDP_MIN_SIZE = 2 ** 14


# ------------------------------------------------------------------ the step


def train_step(state: state_lib.TrainState, batch, rng, *, recipe: recipes_lib.Recipe, config,
               models: recipes_lib.Models):
  """One optimisation step: grads of the recipe's loss, AdamW update, EMA update, metrics."""
  rng = jax.random.fold_in(rng, state.step)

  def loss(params):
    return recipe.loss_fn(params, state.ema_params, batch, rng, config=config, models=models)

  (loss_value, aux), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  momentum = state_lib.ema_momentum_schedule(config.train)(state.step)
  ema_params = state_lib.ema_update(state.ema_params, recipes_lib.ema_source(params), momentum)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema_params)
  metrics = {
      'loss': loss_value,
      'grad_norm': optax.global_norm(grads),
      'param_norm': optax.global_norm(params),
      'update_norm': optax.global_norm(updates),
      'lr': state_lib.learning_rate_schedule(config.train)(state.step),
      'ema_momentum': momentum,
      **aux,
  }
  metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)
  return new_state, metrics


# ------------------------------------------------------------------ mesh and shardings


def make_mesh(config, devices: Optional[list] = None) -> Mesh:
  """Mesh with axes ('data', 'fsdp') over all (global) devices, from config.mesh."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  fsdp = int(config.mesh.fsdp)
  data = int(config.mesh.data)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f'config.mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices')
  if data == -1:
    data = n // fsdp
  if data * fsdp != n:
    raise ValueError(f'config.mesh: data={config.mesh.data} x fsdp={fsdp} must use all {n} devices')
  return Mesh(np.array(devices).reshape(data, fsdp), ('data', 'fsdp'))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(('data', 'fsdp')))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def leaf_sharding(mesh: Mesh, shape) -> NamedSharding:
  """The FSDP rule of the module docstring for one array shape."""
  fsdp = mesh.shape['fsdp']
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
    return replicated(mesh)
  best = None
  for axis, size in enumerate(shape):
    if size % fsdp == 0 and (best is None or size >= shape[best]):
      best = axis
  if best is None:
    return replicated(mesh)
  spec = [None] * len(shape)
  spec[best] = 'fsdp'
  return NamedSharding(mesh, P(*spec))


def state_shardings(mesh: Mesh, abstract_state) -> Any:
  return jax.tree.map(lambda x: leaf_sharding(mesh, x.shape), abstract_state)


def batch_shardings(mesh: Mesh, batch) -> Any:
  """The batch sharding for every leaf; checks the batch divides over the devices."""
  n = mesh.devices.size
  for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
    if leaf.shape[0] % n:
      raise ValueError(f'batch leaf {state_lib.param_path(path)} has leading size {leaf.shape[0]}, '
                       f'not divisible by the {n} devices of the mesh (config.train.batch_size)')
  return jax.tree.map(lambda _: batch_sharding(mesh), batch)


# ------------------------------------------------------------------ creation


def create_train_state(config, mesh: Mesh, rng, example_batch, *,
                       models: Optional[recipes_lib.Models] = None):
  """Sharded initial TrainState.

  jax.eval_shape gives the abstract state, from which come the shardings; the init is then jitted
  with those out_shardings so large params are created in place. Returns (state, state_shardings).
  `example_batch` may be host arrays; only its first example's shapes/values feed the init.
  """
  recipe = recipes_lib.get_recipe(config.recipe)
  models = models or recipes_lib.build_models(config, example_batch)
  one = jax.tree.map(lambda x: np.asarray(x[:1]), example_batch)

  def init(rng, one):
    params = recipe.init_params(config, rng, one, models)
    ema = jax.tree.map(jnp.copy, recipes_lib.ema_source(params))
    return state_lib.create(params, ema, config.train)

  abstract = jax.eval_shape(init, rng, one)
  shardings = state_shardings(mesh, abstract)
  rep = replicated(mesh)
  state = jax.jit(init, in_shardings=(rep, rep), out_shardings=shardings)(rng, one)
  return state, shardings


def abstract_train_state(config, rng, example_batch, *, models: Optional[recipes_lib.Models] = None):
  """The ShapeDtypeStruct tree of the TrainState (Orbax restore target, compatibility checks)."""
  recipe = recipes_lib.get_recipe(config.recipe)
  models = models or recipes_lib.build_models(config, example_batch)
  one = jax.tree.map(lambda x: np.asarray(x[:1]), example_batch)

  def init(rng, one):
    params = recipe.init_params(config, rng, one, models)
    return state_lib.create(params, recipes_lib.ema_source(params), config.train)

  return jax.eval_shape(init, rng, one)


def make_train_step(config, mesh: Mesh, state_shardings_, batch_shardings_, *,
                    models: recipes_lib.Models):
  """jax.jit(partial(train_step, ...)) with explicit shardings and donated state.

  The result compiles on its first call and never again for the same shapes (the loop's batches
  all have the config's shapes).
  """
  recipe = recipes_lib.get_recipe(config.recipe)
  step_fn = functools.partial(train_step, recipe=recipe, config=config, models=models)
  rep = replicated(mesh)
  return jax.jit(step_fn, in_shardings=(state_shardings_, batch_shardings_, rep),
                 out_shardings=(state_shardings_, rep), donate_argnums=0)


def global_batch(batch, shardings):
  """Host-local numpy batch -> global jax.Arrays (each process passes its own rows)."""
  return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
                      batch, shardings)



# ------------------------------------------------------------------ device-resident mode
#
# train.device_resident: the prepared training set lives on the device as one pytree with the
# training batch's structure but a leading object axis M and ALL V views per object
# (points [M,N,3], centers [M,G,3], groups [M,G,K], label [M], views/* [M,V,...], teacher/* [M,V,...];
# floats may be stored narrower, e.g. the records' float16 teacher features, and are cast after the
# gather). Each step samples its batch inside the jitted step: `batch_size` distinct objects and
# `views_per_step` distinct views per object, with keys that are a function of (run rng, state.step)
# only, so a resumed run samples exactly what an uninterrupted one would, with no iterator state.
# The augmentations are crossjepa.data.pipeline.TrainTransform's, in jnp and in the same order:
# rotation about the up axis (points, centres, world_to_cam' = world_to_cam @ R^-1), uniform scale +
# translation (world_to_cam' = [[R_c, s t_c - R_c t], [0, 1]]), clipped jitter on the points only.
# Their random draws differ from the host pipeline's (jax.random, not numpy), the geometry is the same.

_RESIDENT_SALT = 0x5EED


def _rotation_about_up(angle):
  """[..., 3, 3] rotation about the world up axis (y); pipeline.rotation_about_up in jnp."""
  c, s = jnp.cos(angle), jnp.sin(angle)
  zero, one = jnp.zeros_like(angle), jnp.ones_like(angle)
  rows = [jnp.stack([c, zero, s], -1), jnp.stack([zero, one, zero], -1),
          jnp.stack([-s, zero, c], -1)]
  return jnp.stack(rows, -2)


def device_resident_sample(dataset, key, *, batch_size: int, views_per_step: int,
                           augment) -> dict:
  """One training batch (ARCHITECTURE.md "Training batch") sampled from a device-resident set.

  Args:
    dataset: the nested dict described above ([M, ...] per object, [M, V, ...] per view).
    key: PRNG key of this step (the caller folds in the step).
    batch_size: B objects, drawn without replacement.
    views_per_step: Kv views per object, distinct (a per-row permutation: argsort of uniform noise).
    augment: config.train.augment (scale, translate, jitter, rotate_up).
  """
  k_obj, k_view, k_rot, k_scale, k_shift, k_jit = jax.random.split(key, 6)
  num = dataset['points'].shape[0]
  num_views = dataset['views']['corr'].shape[1]
  idx = jax.random.choice(k_obj, num, (batch_size,), replace=False)                  # [B]
  pick = jnp.argsort(jax.random.uniform(k_view, (batch_size, num_views)), axis=1)
  pick = pick[:, :views_per_step]                                                     # [B,Kv]

  def per_object(x):
    return jnp.take(x, idx, axis=0)

  def per_view(x):
    return x[idx[:, None], pick]                                                      # [B,Kv,...]

  def as32(x):
    return x.astype(jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else jnp.int32)

  views = {k: as32(per_view(v)) for k, v in dataset['views'].items()}
  teacher = {k: as32(per_view(v)) for k, v in dataset['teacher'].items()}
  points = as32(per_object(dataset['points']))
  centers = as32(per_object(dataset['centers']))
  w2c = views['world_to_cam']
  if bool(augment.rotate_up):
    rot = _rotation_about_up(jax.random.uniform(k_rot, (batch_size,), maxval=2 * jnp.pi))
    points = jnp.einsum('bnj,bij->bni', points, rot)                                 # R x
    centers = jnp.einsum('bnj,bij->bni', centers, rot)
    rot4 = jnp.zeros((batch_size, 4, 4), jnp.float32).at[:, 3, 3].set(1.0)
    rot4 = rot4.at[:, :3, :3].set(jnp.swapaxes(rot, -1, -2))                          # R^-1 = R^T
    w2c = jnp.einsum('bkij,bjl->bkil', w2c, rot4)
  lo, hi = (float(x) for x in augment.scale)
  translate = float(augment.translate)
  if lo != hi or lo != 1.0 or translate:
    scale = (jax.random.uniform(k_scale, (batch_size,), minval=lo, maxval=hi) if lo != hi
             else jnp.full((batch_size,), lo, jnp.float32))
    shift = (jax.random.uniform(k_shift, (batch_size, 3), minval=-translate, maxval=translate)
             if translate else jnp.zeros((batch_size, 3), jnp.float32))
    rot_c, t_c = w2c[..., :3, :3], w2c[..., :3, 3]
    t_new = scale[:, None, None] * t_c - jnp.einsum('bkij,bj->bki', rot_c, shift)
    w2c = w2c.at[..., :3, 3].set(t_new)
    points = points * scale[:, None, None] + shift[:, None]
    centers = centers * scale[:, None, None] + shift[:, None]
  jitter = float(augment.jitter)
  if jitter:
    from crossjepa.data.pipeline import JITTER_CLIP  # pylint: disable=g-import-not-at-top
    noise = jitter * jax.random.normal(k_jit, points.shape)
    points = points + jnp.clip(noise, -JITTER_CLIP * jitter, JITTER_CLIP * jitter)
  views['world_to_cam'] = w2c
  batch = {'points': points, 'centers': centers, 'groups': as32(per_object(dataset['groups'])),
           'views': views, 'teacher': teacher}
  if 'label' in dataset:
    batch['label'] = as32(per_object(dataset['label']))
  return batch


def device_resident_key(rng, step):
  """The sampling key of a step: a function of the run rng (config.seed) and the step only."""
  return jax.random.fold_in(jax.random.fold_in(rng, _RESIDENT_SALT), step)


def device_resident_train_step(state, dataset, rng, *, batch_size: int, views_per_step: int,
                               batch_sharding_, recipe, config, models):
  """train_step on a batch sampled on the device (see the section comment above)."""
  batch = device_resident_sample(dataset, device_resident_key(rng, state.step),
                                 batch_size=batch_size, views_per_step=views_per_step,
                                 augment=config.train.augment)
  batch = jax.lax.with_sharding_constraint(batch, jax.tree.map(lambda _: batch_sharding_, batch))
  return train_step(state, batch, rng, recipe=recipe, config=config, models=models)


def make_device_resident_train_step(config, mesh: Mesh, state_shardings_, dataset, *,
                                    models: recipes_lib.Models):
  """jit of device_resident_train_step; `dataset` (the pytree above) is replicated on the mesh.

  Called as fn(state, dataset, rng) -> (state, metrics), like make_train_step's result.
  """
  recipe = recipes_lib.get_recipe(config.recipe)
  if recipe.needs_images:
    raise ValueError(f'train.device_resident does not support recipe {config.recipe!r} (it needs '
                     'the rendered views/image); set train.device_resident=False (grain pipeline)')
  num = dataset['points'].shape[0]
  num_views = dataset['views']['corr'].shape[1]
  batch_size, views = int(config.train.batch_size), int(config.train.views_per_step)
  if num < batch_size:
    raise ValueError(f'train.device_resident: {num} objects, fewer than train.batch_size='
                     f'{batch_size}')
  if not 1 <= views <= num_views:
    raise ValueError(f'train.views_per_step={views} must be in [1, {num_views}] (the views per '
                     'object of the device-resident set)')
  rep = replicated(mesh)
  fn = functools.partial(device_resident_train_step, batch_size=batch_size, views_per_step=views,
                         batch_sharding_=batch_sharding(mesh), recipe=recipe, config=config,
                         models=models)
  return jax.jit(fn, in_shardings=(state_shardings_, jax.tree.map(lambda _: rep, dataset), rep),
                 out_shardings=(state_shardings_, rep), donate_argnums=0)
