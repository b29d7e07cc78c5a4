"""What a CLIP export's words cost: the text embeddings of zero_shot.builtin_words() in every
template (zero_shot.word_columns, what `--mode=export` computes with a CLIP teacher), through a
random text tower of ViT-B/16's size (crossjepa.models.clip_text.CLIPText's defaults: 512 wide,
12 blocks, 49,408 tokens, 77 positions), with the ids cut after the longest end-of-text token
(TextEncoder, the default) and at the full 77 tokens, in one process.

    .venv/bin/python experiments/bench_text.py [--tokens=12] [--repeats=3] [--out=FILE]

No CLIP vocabulary installs offline, so the ids are random with the end-of-text token at
--tokens (a class prompt, "a rendering of a night stand.", is about a dozen of CLIP's tokens).
Prints one JSON object: seconds (medians of --repeats), their ratio, and the largest difference
between the two forms' word columns (causal attention: the tokens after the end do not matter).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa.evaluation import zero_shot  # noqa: E402
from crossjepa.models import clip_text  # noqa: E402


class _RandomIds:
  """A stand-in tokenizer: random ids, end-of-text at `tokens`, zeros after it."""

  def __init__(self, tokens: int, vocab_size: int):
    self.tokens, self.vocab_size = tokens, vocab_size

  def encode(self, texts, context_length):
    rng = np.random.default_rng(len(texts))
    ids = rng.integers(1, self.vocab_size - 2, (len(texts), context_length)).astype(np.int32)
    ids[:, self.tokens] = self.vocab_size - 1
    ids[:, self.tokens + 1:] = 0
    return ids, np.full(len(texts), self.tokens, np.int32)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--tokens', type=console.int_arg(1, 75), default=12,
                 help='position of the end-of-text token (the prompts\' length)')
  p.add_argument('--repeats', type=console.int_arg(1), default=3)
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()
  module = clip_text.CLIPText()
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, module.context_length), jnp.int32),
                       jnp.zeros((1,), jnp.int32))['params']
  tokenizer = _RandomIds(args.tokens, module.vocab_size)
  words = zero_shot.builtin_words()
  forms = {'cut': clip_text.TextEncoder(module, params, tokenizer),
           'full_77': clip_text.TextEncoder(module, params, tokenizer, cut_ids=False)}
  for encoder in forms.values():         # compiled before the timing
    encoder(['warm-up'] * encoder.batch)
  columns, seconds = {}, {k: [] for k in forms}
  for _ in range(args.repeats):
    for name, encoder in forms.items():   # interleaved
      start = time.perf_counter()
      columns[name] = zero_shot.word_columns(encoder, words)
      seconds[name].append(time.perf_counter() - start)
  med = {k: float(np.median(v)) for k, v in seconds.items()}
  out = {'words': len(words), 'prompts': len(words) * len(zero_shot.TEMPLATES),
         'tokens_to_end': args.tokens, 'text_tower_params': int(sum(
             x.size for x in jax.tree.leaves(params))),
         'seconds_median': med, 'seconds_each': seconds,
         'ratio_full_over_cut': med['full_77'] / med['cut'],
         'max_abs_difference': float(np.abs(columns['cut'] - columns['full_77']).max()),
         'devices': str(jax.devices()[0].device_kind), 'cpu_count': os.cpu_count()}
  text = json.dumps(out, indent=2)
  if args.out:
    fileio.atomic_write_text(args.out, text + '\n')
  print(text)


if __name__ == '__main__':
  main()
