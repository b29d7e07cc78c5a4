"""The predictor's last block over the query rows only (Predictor.last_block_queries_only, the
default: 'queries') against every row of every block ('all'), in one process.

    .venv/bin/python experiments/bench_predictor.py [--config=configs/paper.py] [--batch=8] \
        [--views_per_step=0] [--predictor_batch=32] [--repeats=10] [--skip_step] [--out=FILE]

(a) the predictor alone at the config's sizes (its context of G point tokens, pose, histogram and
    the target's queries; --predictor_batch views): forward + backward (gradients of the
    parameters), float32 and bfloat16; (b) the whole pretraining step of the config (its dtype,
    batch --batch, one device, --views_per_step: 0 = the config's). Each pair is compiled once per
    form and timed interleaved (experiments/ab.py); medians, their ratio and XLA's FLOP count of
    each compile (on the CPU it counts every dot). Prints one JSON object.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ab  # noqa: E402
import bench_step  # noqa: E402
from crossjepa.training.recipes import models as models_lib  # noqa: E402

FORMS = bench_step.PREDICTOR_ROWS          # name -> Predictor.last_block_queries_only


def predictor_case(config, models, batch: int, dtype, repeats: int) -> dict:
  predictor = models.predictor
  g, hb = int(config.data.num_groups), 3 * int(config.data.hist_bins)
  rng = np.random.default_rng(0)
  x = dict(context=jnp.asarray(rng.normal(size=(batch, g, int(models.point.width))), dtype),
           world_to_cam=jnp.asarray(rng.normal(size=(batch, 4, 4)), jnp.float32),
           hist=jnp.asarray(rng.dirichlet(np.ones(hb), size=batch), jnp.float32))
  if str(config.train.target) == 'groups':
    x['query_pos'] = jnp.asarray(rng.normal(size=(batch, g, 3)), jnp.float32)
  modules = {f: predictor.clone(dtype=dtype, last_block_queries_only=v) for f, v in FORMS.items()}
  params = jax.jit(lambda: modules['queries'].init(jax.random.key(0), **x))()
  losses = {f: lambda p, x, m=m: jnp.sum(jnp.sin(m.apply(p, **x))) for f, m in modules.items()}
  return {'dtype': jnp.dtype(dtype).name, 'views': batch, 'context_tokens': g,
          'queries': g if 'query_pos' in x else 1, 'width': int(predictor.width),
          'depth': int(predictor.depth), **ab.grad_ab(losses, params, x, repeats)}


def form(value):
  def build(config, teacher):
    with config.unlocked():
      config.model.predictor_overrides.last_block_queries_only = value
    return models_lib.build_models(config, teacher)
  return build


def check(config, models) -> str:
  if hasattr(models.predictor, 'last_block_queries_only'):
    return ''
  return (f'train.target={config.train.target!r} builds {type(models.predictor).__name__}, '
          'not a Predictor; nothing to compare')


if __name__ == '__main__':
  ab.main(__doc__, 'predictor', 32, 'views in the predictor-only case', predictor_case,
          {f: form(v) for f, v in FORMS.items()}, check=check)
