"""Bytes the pretraining step keeps for its backward pass, per model.remat, and the batch that fits.

    .venv/bin/python experiments/memory.py [--config=configs/paper.py] [--dtype=bfloat16] \
        [--views_per_step=0] [--remats=none,full,dots] [--at=512,2048] [--device_gib=80,139] \
        [--skip_anchor] [--out=FILE]

For each remat value: the recipe's loss, `jax.vjp` over the trainable params, traced abstractly
(`jax.eval_shape`: nothing runs, no device needed, a few seconds): the vjp function's leaves are
what the backward pass reads, the params and every residual the forward keeps for it. Traced at
batches 8 and 16, that splits into bytes per object and a fixed part. With the TrainState (params,
AdamW moments, EMA; abstract_state) and the batch itself, the predicted footprint at batch B is

    state + fixed + B * (kept per object + batch per object)

jax's count, before XLA: its fusion may drop or re-derive cheap residuals (a dtype convert, a ReLU
mask) and the backward has temporaries of its own, so this is the model to check a measurement
against, not the measurement: bench_step.py's `peak_bytes_in_use` on a GPU (gpu_check.sh) is.
`max_batch` is the largest multiple of 8 whose prediction fits in each `--device_gib`. The biggest
residuals at batch 8 are listed by shape and dtype (`top`). Also the same count for the
yardstick step_jax.py's model (`anchor_step_jax`: 1 view, bf16, its MSE loss; `--skip_anchor`
leaves it out). Prints one JSON object.
"""
import argparse
import collections
import os
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_step  # noqa: E402
from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa import testing  # noqa: E402
from crossjepa.models import layers  # noqa: E402
from crossjepa.training import pretraining  # noqa: E402
from crossjepa.training import recipes as recipes_lib  # noqa: E402
from crossjepa.training.recipes import models as models_lib  # noqa: E402

TRACE_BATCHES = (8, 16)


def kept(config, batch_size: int):
  """(the vjp function's leaves as ShapeDtypeStructs, the abstract TrainState, the abstract
  batch) of the config's pretraining loss at `batch_size`."""
  config = config.copy_and_resolve_references()
  config.train.batch_size = batch_size
  dim = bench_step.teacher_dim(config)
  teacher = models_lib.teacher_widths(dim)
  models = models_lib.build_models(config, teacher)
  state = pretraining.abstract_state(config, jax.random.PRNGKey(0), models, teacher)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       testing.synthetic_batch(config, batch_size, teacher_dim=dim))
  recipe = recipes_lib.get_recipe(config.recipe)
  loss = lambda p, ema_params, batch, rng: recipe.loss_fn(p, ema_params, batch, rng, config=config,
                                                          models=models)[0]
  rng = jax.ShapeDtypeStruct((2,), np.uint32)
  leaves = testing.backward_residuals(loss, state.params, state.ema_params, batch, rng)
  return leaves, state, batch


def split_per_object(kept_bytes: dict) -> tuple[float, float]:
  """(bytes per object, fixed bytes) from {batch: kept bytes} at the two TRACE_BATCHES: the line
  through both."""
  (lo, hi) = TRACE_BATCHES
  per_object = (kept_bytes[hi] - kept_bytes[lo]) / (hi - lo)
  return per_object, kept_bytes[lo] - lo * per_object


def top(leaves, n: int = 8) -> list:
  sizes = collections.Counter()
  for x in leaves:
    sizes[f'{list(x.shape)} {np.dtype(x.dtype).name}'] += testing.nbytes(x)
  return [{'shape': k, 'mb': round(v / 1e6, 2)} for k, v in sizes.most_common(n)]


def measure(config, remat: str, at, device_gib) -> dict:
  config = config.copy_and_resolve_references()
  config.model.remat = remat
  traced = {b: kept(config, b) for b in TRACE_BATCHES}
  lo = TRACE_BATCHES[0]
  per_object, fixed = split_per_object({b: testing.nbytes(t[0]) for b, t in traced.items()})
  state = testing.nbytes(traced[lo][1])
  batch = testing.nbytes(traced[lo][2]) / lo
  predicted = lambda b: state + fixed + b * (per_object + batch)
  fits = {}
  for gib in device_gib:
    room = (gib * 2 ** 30 - state - fixed) / (per_object + batch)
    fits[f'{gib:g}'] = int(room // 8 * 8) if room >= 8 else 0
  return {
      'remat': remat, 'kept_mb_per_object': round(per_object / 1e6, 3),
      'kept_mb_fixed': round(fixed / 1e6, 2), 'state_mb': round(state / 1e6, 2),
      'batch_mb_per_object': round(batch / 1e6, 4),
      'predicted_gb': {str(b): round(predicted(b) / 1e9, 2) for b in at},
      'max_batch': fits, 'top': top(traced[lo][0]),
  }


ANCHOR_MODEL_END = 'B, G, K = a.batch'   # step_jax.py: its model ends where its data begins


def anchor_kept() -> dict:
  """The same count for the yardstick step_jax.py's model (1 view, its default sizes, bf16):
  its source up to ANCHOR_MODEL_END (argument parsing, the modules) run with its defaults, its
  MSE loss's vjp traced at batches 8 and 16. {'error': ...} when the file is missing or changed."""
  import flops  # pylint: disable=g-import-not-at-top  (anchor_path: where the file lives)
  path = flops.anchor_path()
  if not path:
    return {'error': 'step_jax.py not found (shared/anchors, ../shared/anchors, .device_wheels/anchors)'}
  source = open(path).read()
  if ANCHOR_MODEL_END not in source:
    return {'error': f'{path}: no line {ANCHOR_MODEL_END!r}; the yardstick changed'}
  namespace, argv = {'__name__': 'step_jax_model'}, sys.argv
  try:
    sys.argv = [path]
    exec(compile(source.split(ANCHOR_MODEL_END)[0], path, 'exec'), namespace)  # pylint: disable=exec-used
  finally:
    sys.argv = argv
  model, f32 = namespace['Model'](), np.float32
  inputs = lambda b: {'nbhd': jax.ShapeDtypeStruct((b, 64, 32, 3), f32),
                      'centers': jax.ShapeDtypeStruct((b, 64, 3), f32),
                      'pose': jax.ShapeDtypeStruct((b, 12), f32),
                      'hist': jax.ShapeDtypeStruct((b, 48), f32),
                      'target': jax.ShapeDtypeStruct((b, 768), f32)}
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x['nbhd'], x['centers'],
                                               x['pose'], x['hist']), inputs(2))

  def loss(p, x):
    pred = model.apply(p, x['nbhd'], x['centers'], x['pose'], x['hist'])
    return ((pred - x['target']) ** 2).mean()
  per_object, _ = split_per_object({
      b: testing.nbytes(testing.backward_residuals(loss, params, inputs(b)))
      for b in TRACE_BATCHES})
  return {'path': os.path.relpath(path, REPO), 'views_per_step': 1,
          'kept_mb_per_object': round(per_object / 1e6, 3)}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default=os.path.join(REPO, 'configs', 'paper.py'))
  p.add_argument('--dtype', default='bfloat16', help="train.dtype ('' = the config's)")
  p.add_argument('--views_per_step', type=console.int_arg(0), default=0, help="0 = the config's")
  p.add_argument('--remats', type=console.list_arg(choices=layers.REMATS),
                 default=','.join(layers.REMATS))
  p.add_argument('--at', type=console.list_arg(console.int_arg(1)), default='512,2048',
                 help='batches to predict the footprint at')
  p.add_argument('--device_gib', type=console.list_arg(console.float_arg(0, strict=True)),
                 default='80,139', help='device memories for max_batch (GiB)')
  p.add_argument('--skip_anchor', action='store_true', help="leave step_jax.py's count out")
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()
  config = bench_step.load_config(args.config, {'train.dtype': args.dtype,
                                                'train.views_per_step': args.views_per_step})
  t0 = time.time()
  rows = [measure(config, r, args.at, args.device_gib) for r in args.remats]
  fileio.print_json({
      'config': os.path.relpath(os.path.abspath(args.config), REPO), 'recipe': config.recipe,
      'dtype': str(config.train.dtype), 'views_per_step': int(config.train.views_per_step),
      'method': 'jax.vjp residuals over the trainable params, traced at batches 8 and 16',
      'rows': rows, 'anchor_step_jax': None if args.skip_anchor else anchor_kept(),
      'wall_s': round(time.time() - t0, 1)}, args.out)


if __name__ == '__main__':
  main()
