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
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ab  # noqa: E402
import bench_step  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa.training.recipes import models as models_lib  # noqa: E402

FORMS = {'queries': True, 'all': False}      # name -> Predictor.last_block_queries_only


def predictor_case(config, predictor, context_width: int, batch: int, dtype, repeats: int) -> dict:
  g, hb = int(config.data.num_groups), 3 * int(config.data.hist_bins)
  rng = np.random.default_rng(0)
  x = dict(context=jnp.asarray(rng.normal(size=(batch, g, context_width)), dtype),
           world_to_cam=jnp.asarray(rng.normal(size=(batch, 4, 4)), jnp.float32),
           hist=jnp.asarray(rng.dirichlet(np.ones(hb), size=batch), jnp.float32))
  if str(config.train.target) == 'groups':
    x['query_pos'] = jnp.asarray(rng.normal(size=(batch, g, 3)), jnp.float32)
  modules = {f: predictor.clone(dtype=dtype, last_block_queries_only=v) for f, v in FORMS.items()}
  params = jax.jit(lambda: modules['queries'].init(jax.random.key(0), **x))()
  fns, flops = {}, {}
  for form, m in modules.items():
    grad = jax.jit(jax.grad(lambda p, x, m=m: jnp.sum(jnp.sin(m.apply(p, **x)))))
    compiled = grad.lower(params, x).compile()
    flops[form] = bench_step.cost_of(compiled)['flops']
    fns[form] = lambda c=compiled: jax.block_until_ready(c(params, x))
  med = ab.interleaved(fns, repeats)
  return {'dtype': jnp.dtype(dtype).name, 'views': batch, 'context_tokens': g,
          'queries': g if 'query_pos' in x else 1, 'width': int(predictor.width),
          'depth': int(predictor.depth),
          'median_ms': {f: round(med[f] * 1e3, 3) for f in FORMS},
          'speedup_queries_over_all': med['all'] / med['queries'],
          'flops': flops, 'flop_ratio_all_over_queries': flops['all'] / flops['queries']}


def step_case(config, batch: int, repeats: int) -> dict:
  def form(value):
    def build(config, teacher):
      with config.unlocked():
        config.model.predictor_overrides.last_block_queries_only = value
      return models_lib.build_models(config, teacher)
    return build
  out = ab.step_ab(config, batch, repeats, {f: form(v) for f, v in FORMS.items()})
  out['speedup_queries_over_all'] = out.pop('speedup')['queries_over_all']
  out['flop_ratio_all_over_queries'] = out.pop('flop_ratio')['all_over_queries']
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default=os.path.join(os.path.dirname(HERE), 'configs', 'paper.py'))
  p.add_argument('--batch', type=int, default=8, help='batch of the whole-step comparison')
  p.add_argument('--views_per_step', type=int, default=0, help="0 = the config's")
  p.add_argument('--predictor_batch', type=int, default=32, help='views in the predictor-only case')
  p.add_argument('--repeats', type=int, default=10)
  p.add_argument('--skip_step', action='store_true', help='the predictor alone')
  p.add_argument('--out', default='')
  args = p.parse_args()
  t0 = time.time()
  config = bench_step.load_config(args.config)
  if args.views_per_step:
    config.train.views_per_step = args.views_per_step
  models = models_lib.build_models(config, models_lib.teacher_widths(bench_step.teacher_dim(config)))
  if not hasattr(models.predictor, 'last_block_queries_only'):
    print(f'{args.config}: train.target={config.train.target!r} builds '
          f'{type(models.predictor).__name__}, not a Predictor; nothing to compare', file=sys.stderr)
    sys.exit(2)
  out = {'config': os.path.relpath(args.config), 'backend': jax.default_backend(),
         'device': jax.devices()[0].device_kind, 'repeats': args.repeats,
         'predictor': [predictor_case(config, models.predictor, int(models.point.width),
                                      args.predictor_batch, dt, args.repeats)
                       for dt in (jnp.float32, jnp.bfloat16)]}
  if not args.skip_step:
    out['step'] = step_case(config, args.batch, args.repeats)
  out['wall_s'] = round(time.time() - t0, 1)
  fileio.print_json(out, args.out)


if __name__ == '__main__':
  main()
