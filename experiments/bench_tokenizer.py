"""The mini-PointNet's conv3 as point.GlobalLocalDense ('split') against Point-MAE's Dense on the
built concatenation ('concat', crossjepa.testing.ConcatMiniPointNet), in one process.

    .venv/bin/python experiments/bench_tokenizer.py [--config=configs/paper.py] [--batch=8] \
        [--views_per_step=0] [--tokenizer_batch=16] [--repeats=10] [--skip_step] [--out=FILE]

(a) the tokenizer alone at the config's sizes (G groups of K points, its widths): forward +
    backward (gradients of the parameters), float32 and bfloat16; (b) the whole pretraining step
    of the config (its dtype, batch --batch, one device, --views_per_step: 0 = the config's).
    Each pair is compiled once per form and timed interleaved (split, concat, split, ...), so
    drift hits both; medians, their ratio, and XLA's FLOP count of each compile (on the CPU it
    counts every dot). Prints one JSON object.
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
from crossjepa import testing  # noqa: E402
from crossjepa.training.recipes import models as models_lib  # noqa: E402

FORMS = tuple(testing.TOKENIZERS)


def tokenizer_case(encoder, batch: int, dtype, repeats: int) -> dict:
  widths, out = tuple(encoder.tokenizer_widths), int(encoder.width)
  g, k = int(encoder.num_groups), int(encoder.group_size)
  nb = jnp.asarray(np.random.default_rng(0).normal(size=(batch, g, k, 3)) * 0.1, dtype)
  modules = {form: testing.TOKENIZERS[form](widths, out, dtype) for form in FORMS}
  params = jax.jit(modules['split'].init)(jax.random.key(0), nb)
  fns, flops = {}, {}
  for form, m in modules.items():
    grad = jax.jit(jax.grad(lambda p, x, m=m: jnp.sum(m.apply(p, x).astype(jnp.float32) ** 2)))
    compiled = grad.lower(params, nb).compile()
    flops[form] = bench_step.cost_of(compiled)['flops']
    fns[form] = lambda c=compiled: jax.block_until_ready(c(params, nb))
  med = ab.interleaved(fns, repeats)
  return {'dtype': jnp.dtype(dtype).name, 'batch': batch, 'groups': g, 'group_size': k,
          'widths': list(widths), 'out': out,
          'median_ms': {f: round(med[f] * 1e3, 3) for f in FORMS},
          'speedup_split_over_concat': med['concat'] / med['split'],
          'flops': flops, 'flop_ratio_concat_over_split': flops['concat'] / flops['split']}


def step_case(config, batch: int, repeats: int) -> dict:
  def form(name):
    def build(config, teacher):
      testing.use_tokenizer(name)            # traced (hence fixed) at this form's lower()
      return models_lib.build_models(config, teacher)
    return build
  out = ab.step_ab(config, batch, repeats, {f: form(f) for f in FORMS},
                   done=lambda: testing.use_tokenizer('split'))
  out['speedup_split_over_concat'] = out.pop('speedup')['split_over_concat']
  out['flop_ratio_concat_over_split'] = out.pop('flop_ratio')['concat_over_split']
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default=os.path.join(os.path.dirname(HERE), 'configs', 'paper.py'))
  p.add_argument('--batch', type=int, default=8, help='batch of the whole-step comparison')
  p.add_argument('--views_per_step', type=int, default=0, help="0 = the config's")
  p.add_argument('--tokenizer_batch', type=int, default=16, help='objects in the tokenizer-only case')
  p.add_argument('--repeats', type=int, default=10)
  p.add_argument('--skip_step', action='store_true', help='the tokenizer alone')
  p.add_argument('--out', default='')
  args = p.parse_args()
  t0 = time.time()
  config = bench_step.load_config(args.config)
  if args.views_per_step:
    config.train.views_per_step = args.views_per_step
  models = models_lib.build_models(config, models_lib.teacher_widths(bench_step.teacher_dim(config)))
  out = {'config': os.path.relpath(args.config), 'backend': jax.default_backend(),
         'device': jax.devices()[0].device_kind, 'repeats': args.repeats,
         'tokenizer': [tokenizer_case(models.point, args.tokenizer_batch, dt, args.repeats)
                       for dt in (jnp.float32, jnp.bfloat16)]}
  if not args.skip_step:
    out['step'] = step_case(config, args.batch, args.repeats)
  out['wall_s'] = round(time.time() - t0, 1)
  fileio.print_json(out, args.out)


if __name__ == '__main__':
  main()
