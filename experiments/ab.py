"""A/B timing in one process, shared by bench_tokenizer.py and bench_predictor.py: each form
compiled once, then timed interleaved (a, b, a, b, ...), so drift on a shared machine hits all."""
import time
from typing import Callable

import jax
import numpy as np

import bench_step
from crossjepa import testing
from crossjepa.training import mesh as mesh_lib
from crossjepa.training import pretraining
from crossjepa.training.recipes import models as models_lib


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


def step_ab(config, batch: int, repeats: int, forms: dict[str, Callable], done: Callable = None,
            base: str = '') -> dict:
  """The config's whole pretraining step (its dtype, `batch`, one device) once per form: forms[name]
  (config, teacher) -> Models, called just before that form's lower() (so a module swap it makes is
  traced in); `done()` after the last compile. Medians, FLOPs per object (XLA's cost analysis of
  each compile: on the CPU it counts every dot) and the speedup of `base` (the first form) over
  each other form."""
  base = base or next(iter(forms))
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
          'median_step_ms': {f: round(med[f] * 1e3, 1) for f in forms},
          'speedup': {f'{base}_over_{f}': med[f] / med[base] for f in forms if f != base},
          'flops_per_object': {f: flops[f] / batch for f in forms},
          'flop_ratio': {f'{f}_over_{base}': flops[f] / flops[base] for f in forms if f != base}}
