"""Pretraining on the one train step: a recipe's bound loss, the student EMA, state from the spec.

The generic pieces (crossjepa.training.step) get, for `config.recipe`:
- the loss `recipe.loss_fn` with the config and the models bound;
- the EMA of `params['student']` (recipes.ema_source) with `train.ema_momentum`;
- the optimizer block `config.train` and the rules `train.param_rules`;
- the init from a zero example batch built from the config and the teacher's widths
  (crossjepa.data.batch_spec), so nothing is read from the data to build or restore a state;
- with a device-resident dataset, the in-step sampler of crossjepa.data.resident.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from jax.sharding import Mesh

from crossjepa.data import batch_spec
from crossjepa.data import records
from crossjepa.data import resident
from crossjepa.training import recipes as recipes_lib
from crossjepa.training import step as step_lib


def teacher_info(config, workdir) -> dict[str, Any]:
  """The teacher entry (name, widths, ...) of the records prepared under WORKDIR/data."""
  meta = dict(records.open_dataset(config, workdir).info.metadata or {})
  return dict(meta.get('teacher') or {})


def example_batch(config, teacher: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """A one-example zero batch with the training batch's shapes (what the init reads)."""
  recipe = recipes_lib.get_recipe(config.recipe)
  # point_jepa and seed read no teacher target: without a teacher the batch carries a width-1 one.
  widths = teacher if teacher and int(teacher.get('width', 0) or 0) else {'width': 1}
  return batch_spec.example_batch(config, widths, need_images=recipe.needs_images)


def ema(config) -> step_lib.Ema:
  return step_lib.Ema(recipes_lib.ema_source, tuple(float(m) for m in config.train.ema_momentum))


def _init_fn(config, models):
  recipe = recipes_lib.get_recipe(config.recipe)
  return lambda rng, one: recipe.init_params(config, rng, one, models)


def init_state(config, mesh: Mesh, rng, models, teacher: Optional[Mapping[str, Any]]):
  """(sharded initial TrainState, its shardings)."""
  return step_lib.init_state(_init_fn(config, models), config.train, mesh, rng,
                             example_batch(config, teacher), param_rules=config.train.param_rules,
                             ema=ema(config))


def abstract_state(config, rng, models, teacher: Optional[Mapping[str, Any]]):
  """The ShapeDtypeStruct tree of the TrainState (Orbax restore target, compatibility checks)."""
  return step_lib.abstract_state(_init_fn(config, models), config.train, rng,
                                 example_batch(config, teacher),
                                 param_rules=config.train.param_rules, ema=ema(config),
                                 fsdp=int(config.mesh.fsdp))


def _resident_sampler(config, recipe, dataset):
  """sample(dataset, rng, step) -> batch for a device-resident set (crossjepa.data.resident)."""
  if recipe.needs_images:
    raise ValueError(f'train.device_resident does not support recipe {config.recipe!r} (it '
                     'needs the rendered views/image); set train.device_resident=False (grain '
                     'pipeline)')
  num = dataset['points'].shape[0]
  num_views = dataset['views']['corr'].shape[1]
  batch_size, views = int(config.train.batch_size), int(config.train.views_per_step)
  if num < batch_size:
    raise ValueError(f'train.device_resident: {num} objects, fewer than train.batch_size='
                     f'{batch_size}')
  if not 1 <= views <= num_views:
    raise ValueError(f'train.views_per_step={views} must be in [1, {num_views}] (the views per '
                     'object of the device-resident set)')
  augment = config.train.augment

  def sample(data, rng, step):
    return resident.sample(data, resident.step_key(rng, step), batch_size=batch_size,
                           views_per_step=views, augment=augment)

  return sample


def make_step(config, mesh: Mesh, state_shardings, models: recipes_lib.models.Models, *,
              dataset=None):
  """The jitted pretraining step fn(state, batch, rng); with `dataset` (a device-resident set, see
  crossjepa.data.resident) fn(state, dataset, rng), the batch drawn inside the step."""
  recipe = recipes_lib.get_recipe(config.recipe)
  loss_fn = lambda params, ema_params, batch, rng: recipe.loss_fn(
      params, ema_params, batch, rng, config=config, models=models)
  sample = _resident_sampler(config, recipe, dataset) if dataset is not None else None
  return step_lib.make_train_step(loss_fn, config.train, mesh, state_shardings, ema=ema(config),
                                  sample=sample)
