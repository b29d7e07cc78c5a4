"""The trained models' LayerNorm with its own backward pass (layers.LayerNorm, what a bfloat16 step
uses: 'kept') against autodiff of nn.LayerNorm ('flax'), in one process.

    .venv/bin/python experiments/bench_norm.py [--config=configs/paper.py] [--batch=8] \
        [--views_per_step=0] [--norm_batch=16] [--repeats=10] [--skip_step] [--out=FILE]

(a) one LayerNorm alone on the mini-PointNet's widest activation ([norm_batch, G, K, w2]):
    gradients of its params and its input, bfloat16 (the `norm` list's one entry); (b) the whole
    pretraining step of the config (its dtype, batch --batch, one device, --views_per_step: 0 =
    the config's). Each pair compiled once per form and timed interleaved (experiments/ab.py's
    main, as bench_tokenizer.py and bench_predictor.py): medians, their ratio, XLA's FLOPs of
    each compile (CPU), and what the backward pass keeps per object (jax's count of the vjp's
    residuals, as experiments/memory.py counts them). The bytes are the point:
    on a GPU the LayerNorms' element-wise passes are bound by memory traffic. Prints one JSON
    object.
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
import memory  # noqa: E402
from crossjepa import testing  # noqa: E402
from crossjepa.models import layers  # noqa: E402

FORMS = ('kept', 'flax')


def norm_case(config, models, batch: int, dtype, repeats: int) -> dict:
  del config
  encoder = models.point
  g, k, w = int(encoder.num_groups), int(encoder.group_size), int(encoder.tokenizer_widths[2])
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, g, k, w)) * 2 + 0.5, dtype)
  weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  modules = {'kept': layers.LayerNorm(1e-5, dtype), 'flax': testing.flax_norm(1e-5, dtype, None)}
  params = {'norm': modules['kept'].init(jax.random.key(0), x), 'x': x}
  losses = {f: lambda p, w, m=m: jnp.sum(m.apply(p['norm'], p['x']).astype(jnp.float32) * w)
            for f, m in modules.items()}
  kept = {}        # what the vjp over the params and x keeps beyond the params (x is kept)
  for f, m in modules.items():
    linear = lambda p, m=m: jnp.sum(m.apply(p['norm'], p['x']).astype(jnp.float32))
    leaves = testing.backward_residuals(linear, params)
    kept[f] = round((testing.nbytes(leaves) - testing.nbytes(params['norm'])) / batch / 1e6, 3)
  return {'shape': list(x.shape), 'dtype': jnp.dtype(dtype).name, 'kept_mb_per_object': kept,
          **ab.grad_ab(losses, params, weights, repeats)}


def kept_per_object(config) -> float:
  """MB per object the config's step keeps for its backward pass (memory.py's count)."""
  per_object, _ = memory.split_per_object(
      {b: testing.nbytes(memory.kept(config, b)[0]) for b in memory.TRACE_BATCHES})
  return round(per_object / 1e6, 3)


def step_kept(config) -> dict:
  """What the whole step keeps per object with each form (added to the step's result)."""
  kept = {}
  for f in FORMS:
    testing.use_norm(f)
    try:
      kept[f] = kept_per_object(config)
    finally:
      testing.use_norm('kept')
  return {'kept_mb_per_object': kept}


if __name__ == '__main__':
  ab.main(__doc__, 'norm', 16, 'objects in the LayerNorm-only case', norm_case,
          ab.switched_forms(testing.use_norm, FORMS), done=lambda: testing.use_norm('kept'),
          dtypes=(jnp.bfloat16,), step_extra=step_kept)
