"""The three pretraining recipes over one batch schema, and their registry.

- `crossjepa` (recipes/crossjepa.py): the published CrossJEPA, 3D context -> frozen 2D teacher.
- `point_jepa` (recipes/point_jepa.py): in-modal masked block prediction against an EMA target.
- `seed` (recipes/seed.py): the reverse direction, a ViT view encoder -> EMA point-encoder tokens,
  with point_jepa's loss beside it.

Every recipe exposes `init_params(config, rng, example_batch, models) -> params` and
`loss_fn(params, ema_params, batch, rng, *, config, models) -> (loss, aux)`; `ema_params` is always
`{'student': EMA of params['student']}`. The modules come from `recipes.models.build_models`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from crossjepa.training.recipes import crossjepa as crossjepa_recipe
from crossjepa.training.recipes import point_jepa as point_jepa_recipe
from crossjepa.training.recipes import seed as seed_recipe

# The EMA tracks the student point encoder only, in every recipe. In `seed` the ViT trains too, but
# no loss reads an EMA of it (the targets are the EMA *point* encoder's tokens, the ViT is the
# online context encoder, as I-JEPA's context encoder) and the exported artefact is the point
# encoder; an EMA copy of the ViT would double its memory (86 M params at B/14) for nothing.
EMA_KEYS = ('student',)


@dataclasses.dataclass(frozen=True)
class Recipe:
  name: str
  init_params: Callable[..., Any]
  loss_fn: Callable[..., Any]
  needs_images: bool = False


RECIPES = {
    'crossjepa': Recipe('crossjepa', crossjepa_recipe.init_params, crossjepa_recipe.loss_fn),
    'point_jepa': Recipe('point_jepa', point_jepa_recipe.init_params, point_jepa_recipe.loss_fn),
    'seed': Recipe('seed', seed_recipe.init_params, seed_recipe.loss_fn, needs_images=True),
}


def get_recipe(name: str) -> Recipe:
  if name not in RECIPES:
    raise ValueError(f'config.recipe must be one of {sorted(RECIPES)}, got {name!r}')
  return RECIPES[name]


def ema_source(params) -> dict:
  """The part of the params the EMA tracks: {'student': ...}."""
  return {k: params[k] for k in EMA_KEYS}
