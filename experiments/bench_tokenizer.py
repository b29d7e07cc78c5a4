"""The mini-PointNet's conv3 as point.GlobalLocalDense ('split') against Point-MAE's Dense on the
built concatenation ('concat', crossjepa.testing.ConcatMiniPointNet), in one process.

    .venv/bin/python experiments/bench_tokenizer.py [--config=configs/paper.py] [--batch=8] \
        [--views_per_step=0] [--tokenizer_batch=16] [--repeats=10] [--skip_step] [--out=FILE]

(a) the tokenizer alone at the config's sizes (G groups of K points, its widths): forward +
    backward (gradients of the parameters), float32 and bfloat16; (b) the whole pretraining step
    of the config (its dtype, batch --batch, one device, --views_per_step: 0 = the config's).
    Each pair is compiled once per form and timed interleaved (experiments/ab.py); medians,
    their ratio and XLA's FLOP count of each compile (on the CPU it counts every dot). Prints one
    JSON object.
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
from crossjepa import testing  # noqa: E402

FORMS = tuple(testing.TOKENIZERS)


def tokenizer_case(config, models, batch: int, dtype, repeats: int) -> dict:
  encoder = models.point
  widths, out = tuple(encoder.tokenizer_widths), int(encoder.width)
  g, k = int(encoder.num_groups), int(encoder.group_size)
  nb = jnp.asarray(np.random.default_rng(0).normal(size=(batch, g, k, 3)) * 0.1, dtype)
  modules = {form: testing.TOKENIZERS[form](widths, out, dtype) for form in FORMS}
  params = jax.jit(modules['split'].init)(jax.random.key(0), nb)
  losses = {f: lambda p, x, m=m: jnp.sum(m.apply(p, x).astype(jnp.float32) ** 2)
            for f, m in modules.items()}
  return {'dtype': jnp.dtype(dtype).name, 'batch': batch, 'groups': g, 'group_size': k,
          'widths': list(widths), 'out': out, **ab.grad_ab(losses, params, nb, repeats)}


if __name__ == '__main__':
  ab.main(__doc__, 'tokenizer', 16, 'objects in the tokenizer-only case', tokenizer_case,
          ab.switched_forms(testing.use_tokenizer, FORMS),
          done=lambda: testing.use_tokenizer('split'))
