"""A/B timing in one process, shared by bench_tokenizer.py, bench_predictor.py and bench_norm.py:
each form compiled once, then timed interleaved (a, b, a, b, ...), so drift on a shared machine
hits all.

`main` is their entry point: (a) one part of the model alone (forward + backward, float32 and
bfloat16 unless the script names its dtypes) and (b) the whole pretraining step, each compared
across the forms."""
import argparse
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import bench_step
from crossjepa import console
from crossjepa import fileio
from crossjepa import testing
from crossjepa.training import mesh as mesh_lib
from crossjepa.training import pretraining
from crossjepa.training.recipes import models as models_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def interleaved(fns: dict, repeats: int) -> dict:
  """Median seconds per call of each zero-argument fn, timed in turn, after one warm-up each."""
  for f in fns.values():
    f()
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, f in fns.items():
      t = time.perf_counter()
      f()
      times[k].append(time.perf_counter() - t)
  return {k: float(np.median(v)) for k, v in times.items()}


def compare(med: dict, flops: dict, base: str = '') -> dict:
  """`speedup_{base}_over_{f}` (f's median / base's) and `flop_ratio_{f}_over_{base}` for every
  other form f; base defaults to the first."""
  base = base or next(iter(med))
  out = {}
  for f in med:
    if f != base:
      out[f'speedup_{base}_over_{f}'] = med[f] / med[base]
      out[f'flop_ratio_{f}_over_{base}'] = flops[f] / flops[base]
  return out


def grad_ab(losses: dict[str, Callable], params, x, repeats: int) -> dict:
  """Gradients of the parameters of each form's loss(params, x) -> scalar, jitted and compiled
  once per form, timed interleaved: medians (ms), XLA's FLOPs of each compile and `compare`."""
  fns, flops = {}, {}
  for form, loss in losses.items():
    compiled = jax.jit(jax.grad(loss)).lower(params, x).compile()
    flops[form] = bench_step.cost_of(compiled)['flops']
    fns[form] = lambda c=compiled: jax.block_until_ready(c(params, x))
  med = interleaved(fns, repeats)
  return {'median_ms': {f: round(t * 1e3, 3) for f, t in med.items()}, 'flops': flops,
          **compare(med, flops)}


def switched_forms(use: Callable[[str], None], names) -> dict[str, Callable]:
  """step_ab's forms for a module swap: name -> build(config, teacher) that calls use(name) (a
  crossjepa.testing switch, traced hence fixed at that form's lower()) and builds the models."""
  def build(name):
    def models(config, teacher):
      use(name)
      return models_lib.build_models(config, teacher)
    return models
  return {name: build(name) for name in names}


def step_ab(config, batch: int, repeats: int, forms: dict[str, Callable],
            done: Callable = None) -> dict:
  """The config's whole pretraining step (its dtype, `batch`, one device) once per form: forms[name]
  (config, teacher) -> Models, called just before that form's lower() (so a module swap it makes is
  traced in); `done()` after the last compile. Medians, FLOPs per object (XLA's cost analysis of
  each compile: on the CPU it counts every dot) and `compare` against the first form."""
  config.train.batch_size = batch
  config.mesh.data, config.mesh.fsdp = 1, 1
  dim = bench_step.teacher_dim(config)
  mesh = mesh_lib.make_mesh(config, jax.devices()[:1])
  teacher = models_lib.teacher_widths(dim)
  bsh = mesh_lib.batch_sharding(mesh)
  data = mesh_lib.global_batch(testing.synthetic_batch(config, batch, teacher_dim=dim), bsh)
  rng = jax.random.PRNGKey(1)
  fns, flops, compile_s, holder = {}, {}, {}, {}
  for name, build in forms.items():
    models = build(config, teacher)
    state, shardings = pretraining.init_state(config, mesh, jax.random.PRNGKey(0), models, teacher)
    t = time.time()
    compiled = pretraining.make_step(config, mesh, shardings, models).lower(state, data, rng).compile()
    compile_s[name] = round(time.time() - t, 2)
    flops[name] = bench_step.cost_of(compiled)['flops']
    holder[name] = state

    def run(name=name, compiled=compiled):
      holder[name], metrics = compiled(holder[name], data, rng)
      jax.block_until_ready(metrics)
    fns[name] = run
  if done:
    done()
  med = interleaved(fns, repeats)
  return {'config_dtype': str(config.train.dtype), 'batch': batch,
          'views_per_step': int(config.train.views_per_step), 'compile_s': compile_s,
          'median_step_ms': {f: round(t * 1e3, 1) for f, t in med.items()},
          'flops_per_object': {f: flops[f] / batch for f in forms}, **compare(med, flops)}


def main(doc: str, part: str, part_batch: int, batch_help: str, part_case: Callable,
         step_forms: dict, done: Callable = None, check: Callable = None,
         dtypes: tuple = (jnp.float32, jnp.bfloat16), step_extra: Callable = None):
  """Entry point of a two-form benchmark: flags --config, --batch (the whole step's),
  --{part}_batch (default part_batch), --views_per_step (0 = the config's), --repeats,
  --skip_step, --out. part_case(config, models, batch, dtype, repeats) -> dict times the part
  alone, once per dtype of `dtypes`; step_forms and done go to step_ab; step_extra(config) ->
  dict, when given, adds keys to the step's result; check(config, models) -> an error message
  or '' (printed, exit 2). Prints one JSON object."""
  p = argparse.ArgumentParser(description=doc.split('\n')[0])
  p.add_argument('--config', default=os.path.join(REPO, 'configs', 'paper.py'))
  p.add_argument('--batch', type=console.int_arg(1), default=8,
                 help='batch of the whole-step comparison')
  p.add_argument('--views_per_step', type=console.int_arg(0), default=0, help="0 = the config's")
  p.add_argument(f'--{part}_batch', type=console.int_arg(1), default=part_batch,
                 help=batch_help)
  p.add_argument('--repeats', type=console.int_arg(1), default=10)
  p.add_argument('--skip_step', action='store_true', help=f'the {part} alone')
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()
  t0 = time.time()
  config = bench_step.load_config(args.config, {'train.views_per_step': args.views_per_step})
  models = models_lib.build_models(config, models_lib.teacher_widths(bench_step.teacher_dim(config)))
  problem = check(config, models) if check else ''
  if problem:
    print(f'{args.config}: {problem}', file=sys.stderr)
    sys.exit(2)
  batch = getattr(args, f'{part}_batch')
  out = {'config': os.path.relpath(args.config), 'backend': jax.default_backend(),
         'device': jax.devices()[0].device_kind, 'repeats': args.repeats,
         part: [part_case(config, models, batch, dt, args.repeats) for dt in dtypes]}
  if not args.skip_step:
    out['step'] = step_ab(config, args.batch, args.repeats, step_forms, done)
    if step_extra:
      out['step'].update(step_extra(config))
  out['wall_s'] = round(time.time() - t0, 1)
  fileio.print_json(out, args.out)


if __name__ == '__main__':
  console.fail('ab.py', 'a library of bench_tokenizer.py, bench_predictor.py and bench_norm.py, '
               'not a script: run one of those (--help for their flags)')
