"""Benchmark of the pretraining step: samples/s, step time, FLOPs and MFU.

    python experiments/bench_step.py --config=configs/default.py --batch=32 --steps=20 \
        --peak_tflops=989 [--dtype=bfloat16] [--device_resident --objects=4096] \
        [--views_per_step=1] [--attention=einsum|dot_product|cudnn] [--optimizer=flat|chain]
        [--tokenizer=split|concat] [--predictor_rows=queries|all] [--remat=none|full|dots]
        [--norm=kept|flax]
        [--skip_cpu_flops] [--out=FILE]

Fake batches with the config's shapes (crossjepa.testing.synthetic_batch); no data needed.
FLOPs per step come from XLA's cost analysis of the compiled step. On GPU that analysis misses the
matmuls XLA hands to cuBLAS (custom calls), so the script also compiles the same step for the host
CPU (where XLA emits the dots itself) and reports that count; MFU uses the CPU count when the
device count looks short (`--skip_cpu_flops` leaves that compile out: take the count from
experiments/flops.py instead). MFU = FLOPs/step * steps/s / (peak_tflops * 1e12 * number of devices).
`--views_per_step` overrides train.views_per_step (0 = the config's), `--attention` sets
model.attention, `--optimizer=chain` runs optax's per-leaf AdamW instead of the flat one,
`--tokenizer=concat` the mini-PointNet's conv3 on the built concatenation (Point-MAE's form)
instead of point.GlobalLocalDense, `--predictor_rows=all` the predictor's last block over every
row instead of the query rows only, `--norm=flax` autodiff of nn.LayerNorm in a bfloat16 step
instead of layers.LayerNorm's own backward pass (which keeps x and two numbers a row, not three
float32 copies of x), `--remat` sets model.remat (what the blocks and the
mini-PointNet keep for the backward pass). Memory: `temp_bytes` is XLA's compiled scratch size of
the step (the CPU backend's does not drop with remat: README), `peak_bytes_in_use` the device
allocator's peak where it reports one (GPU, TPU).
Prints one JSON object (`--out` also writes it to a file).
"""
import argparse
import os
import sys
import time

_START = time.time()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from crossjepa import config_util  # noqa: E402
from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa import sweep  # noqa: E402
from crossjepa import testing  # noqa: E402
from crossjepa.models import layers  # noqa: E402
from crossjepa.training import mesh as mesh_lib  # noqa: E402
from crossjepa.training import pretraining  # noqa: E402
from crossjepa.training import step as step_lib  # noqa: E402
from crossjepa.training.recipes import models as models_lib  # noqa: E402

# --predictor_rows: name -> Predictor.last_block_queries_only (bench_predictor.py's forms)
PREDICTOR_ROWS = {'queries': True, 'all': False}


def load_config(path, overrides: dict | None = None, prog: str = ''):
  """`get_config()` of the config file at `path` (crossjepa.config_util.get_config_file) with the
  dotted-key `overrides` whose value is set (not None, 0 or ''), checked like crossjepa.main checks
  it (config_util.check_config; data.root may be empty: the batches are made up). A missing file, one whose code raises or a value out of range is
  the user's mistake: one line naming it, exit 2 (`prog`, default the running script's name)."""
  try:
    config = config_util.get_config_file(path)
    config = sweep.apply_overrides(config, {
        key: value for key, value in (overrides or {}).items()
        if not (value is None or (value == 0 and not isinstance(value, bool)) or value == '')})
    config_util.check_config(config, reads_data=False)
    return config
  except (config_util.ConfigError, sweep.SweepError) as e:
    msg = str(e)
    console.fail(prog or os.path.basename(sys.argv[0]),
                 msg if msg.startswith(path) else f'{path}: {msg}')


def teacher_dim(config):
  from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
  return int(vit.VARIANTS[config.model.vit]['width'])


def use_optimizer(name: str) -> None:
  """'flat' (the default on a replicated state: crossjepa.training.state.flat_adamw) or 'chain'
  (optax's per-leaf chain, what an FSDP state gets) for the states built after this call."""
  if name == 'chain':
    step_lib.flat_optimizer = lambda fsdp: False


def cost_of(compiled) -> dict:
  """XLA's cost analysis of a compiled function: flops, bytes accessed, transcendentals."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {k: float(cost.get(k, float('nan'))) for k in ('flops', 'bytes accessed', 'transcendentals')}


def memory_of(compiled) -> dict:
  """XLA's compiled memory sizes (bytes; None where the backend gives none)."""
  try:
    mem = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    mem = None
  return {f'{k}_bytes': (int(getattr(mem, f'{k}_size_in_bytes')) if mem is not None and
                         hasattr(mem, f'{k}_size_in_bytes') else None)
          for k in ('temp', 'argument', 'output')}


def peak_bytes_in_use():
  """The first device allocator's peak so far (GPU, TPU), None where it reports none (CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return int(stats['peak_bytes_in_use']) if 'peak_bytes_in_use' in stats else None


def cpu_flops(config, batch, models, teacher):
  """FLOPs of the same step compiled for one host CPU device (abstract inputs, nothing runs)."""
  return cpu_cost(config, batch, models, teacher)['flops']


def cpu_abstract_state(config, models, teacher):
  """What a compile for one host CPU device with abstract inputs needs: (the config on a 1 x 1
  mesh, that mesh, the TrainState as ShapeDtypeStructs carrying their shardings, the shardings)."""
  config = config.copy_and_resolve_references()
  config.mesh.data, config.mesh.fsdp = 1, 1
  mesh = mesh_lib.make_mesh(config, jax.devices('cpu')[:1])
  abstract = pretraining.abstract_state(config, jax.random.PRNGKey(0), models, teacher)
  shardings = mesh_lib.state_shardings(mesh, abstract)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract, shardings)
  return config, mesh, state, shardings


def cpu_cost(config, batch, models, teacher):
  """cost_of() the same step compiled for one host CPU device (abstract inputs, nothing runs)."""
  config, mesh, state, shardings = cpu_abstract_state(config, models, teacher)
  bsh = mesh_lib.batch_sharding(mesh)
  fn = pretraining.make_step(config, mesh, shardings, models)
  rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=mesh_lib.replicated(mesh))
  batch_sds = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=bsh), batch)
  return cost_of(fn.lower(state, batch_sds, rng).compile())


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', required=True)
  p.add_argument('--batch', type=console.int_arg(0), default=0,
                 help='global batch (0 = config.train.batch_size)')
  p.add_argument('--steps', type=console.int_arg(1), default=10)
  p.add_argument('--peak_tflops', type=console.float_arg(0), default=0.0,
                 help='per-device peak, for MFU')
  p.add_argument('--dtype', default='', help='float32 | bfloat16 (default: the config)')
  p.add_argument('--recipe', default='')
  p.add_argument('--device_resident', action='store_true')
  p.add_argument('--objects', type=console.int_arg(1), default=1024,
                 help='device-resident training set size')
  p.add_argument('--skip_cpu_flops', action='store_true')
  p.add_argument('--views_per_step', type=console.int_arg(0), default=0,
                 help='train.views_per_step (0 = the config\'s)')
  p.add_argument('--attention', default='', choices=('',) + tuple(layers.ATTENTIONS),
                 help='model.attention (default: the config\'s)')
  p.add_argument('--optimizer', default='flat', choices=('flat', 'chain'),
                 help="flat: AdamW on one vector per parameter group (the replicated default); "
                      "chain: optax's per-leaf chain, to compare")
  p.add_argument('--tokenizer', default='split', choices=tuple(testing.TOKENIZERS),
                 help="mini-PointNet conv3: 'split' (point.GlobalLocalDense) or 'concat' (Point-MAE's)")
  p.add_argument('--predictor_rows', default='queries', choices=tuple(PREDICTOR_ROWS),
                 help="the predictor's last block over the query rows only (the default) or over "
                      "every row, to compare")
  p.add_argument('--norm', default='kept', choices=tuple(testing.NORMS),
                 help="the trained models' LayerNorm in a bfloat16 step: 'kept' (layers.LayerNorm, "
                      "the default) or 'flax' (autodiff of nn.LayerNorm), to compare")
  p.add_argument('--remat', default='', choices=('',) + tuple(layers.REMATS),
                 help="model.remat (default: the config's)")
  p.add_argument('--out', type=console.out_file_arg, default='',
                 help='also write the JSON to this file')
  args = p.parse_args()
  use_optimizer(args.optimizer)
  testing.use_tokenizer(args.tokenizer)
  testing.use_norm(args.norm)

  config = load_config(args.config, {
      'train.batch_size': args.batch, 'train.dtype': args.dtype, 'recipe': args.recipe,
      'train.views_per_step': args.views_per_step, 'model.attention': args.attention,
      'model.remat': args.remat})
  if not PREDICTOR_ROWS[args.predictor_rows]:
    with config.unlocked():
      config.model.predictor_overrides.last_block_queries_only = False
  bsz = int(config.train.batch_size)
  if args.device_resident and args.objects < bsz:
    p.error(f'--objects={args.objects}: the device-resident set needs at least one batch '
            f'({bsz} objects)')
  dim = teacher_dim(config)
  mesh = mesh_lib.make_mesh(config)
  teacher = models_lib.teacher_widths(dim)
  models = models_lib.build_models(config, teacher)
  state, shardings = pretraining.init_state(config, mesh, jax.random.PRNGKey(0), models, teacher)
  rng = jax.random.PRNGKey(1)
  if args.device_resident:
    data = testing.synthetic_examples(config, args.objects, teacher_dim=dim, seed=1)
    data = jax.tree.map(lambda *xs: np.stack(xs), *data)
    data = jax.device_put(data, mesh_lib.replicated(mesh))
    fn = pretraining.make_step(config, mesh, shardings, models, dataset=data)
    inputs = lambda i: data
  else:
    bsh = mesh_lib.batch_sharding(mesh)
    fn = pretraining.make_step(config, mesh, shardings, models)
    batches = [mesh_lib.global_batch(testing.synthetic_batch(config, bsz, teacher_dim=dim, seed=s),
                                     bsh) for s in range(2)]
    inputs = lambda i: batches[i % 2]
  t0 = time.time()
  compiled = fn.lower(state, inputs(0), rng).compile()
  compile_s = time.time() - t0
  device_flops = cost_of(compiled)['flops']
  memory = memory_of(compiled)
  state, m = fn(state, inputs(0), rng)     # warm-up
  jax.block_until_ready(m)
  times = []
  for i in range(args.steps):
    t = time.perf_counter()
    state, m = fn(state, inputs(i), rng)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  on_cpu = jax.default_backend() == 'cpu'
  if on_cpu or args.skip_cpu_flops:
    host_flops = device_flops if on_cpu else float('nan')
  else:
    host_flops = cpu_flops(config, testing.synthetic_batch(config, bsz, teacher_dim=dim), models,
                           teacher)
  flops = host_flops if np.isfinite(host_flops) else device_flops
  n_dev = jax.device_count()
  out = {
      'config': args.config, 'recipe': config.recipe, 'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind, 'devices': n_dev, 'batch': bsz,
      'dtype': str(config.train.dtype), 'device_resident': args.device_resident,
      'objects': args.objects if args.device_resident else None,
      'views_per_step': int(config.train.views_per_step),
      'attention': str(config.model.attention), 'optimizer': args.optimizer,
      'tokenizer': args.tokenizer, 'predictor_rows': args.predictor_rows, 'norm': args.norm,
      'steps': args.steps,
      'remat': str(config.model.remat),
      'compile_s': round(compile_s, 2), 'median_step_ms': round(step_s * 1e3, 3),
      'min_step_ms': round(float(np.min(times)) * 1e3, 3),
      'max_step_ms': round(float(np.max(times)) * 1e3, 3),
      'samples_per_s': round(bsz / step_s, 2),
      'flops_per_step_device_cost_analysis': device_flops,
      'flops_per_step_cpu_compile': host_flops,
      'flops_per_object': flops / bsz,
      'flops_source': ('cpu compile' if np.isfinite(host_flops) else
                       'device cost analysis (on GPU it misses the cuBLAS calls)'),
      'achieved_tflops': flops / step_s / 1e12,
      'mfu': (flops / step_s / (args.peak_tflops * 1e12 * n_dev)) if args.peak_tflops else None,
      **memory, 'peak_bytes_in_use': peak_bytes_in_use(),
      'final_loss': float(m['loss']),
      'num_params': int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
      'wall_s': round(time.time() - _START, 1),
  }
  fileio.print_json(out, args.out)


if __name__ == '__main__':
  main()
