"""CLIP's text tower (Radford et al. 2021), in flax.linen: what names a CLIP teacher's classes.

The network of Hugging Face `CLIPTextModelWithProjection` and of open_clip's `CLIP.encode_text`:

  * token embedding + a learned position embedding over `context_length` positions;
  * pre-LN transformer blocks (`crossjepa.models.vit.Block`, no LayerScale) with causal
    self-attention: each token sees itself and the tokens before it;
  * a final LayerNorm, the hidden state at each text's end-of-text token (the `eot` index the
    tokenizer gives: OpenAI's and open_clip's argmax of the ids, HF's first `eos_token_id`; the
    same token for every tokenizer of this vocabulary), and a bias-free projection: the text
    embedding, in the space of the image tower's embedding.

Because attention is causal, the embedding does not depend on what pads the ids after the
end-of-text token (0 in open_clip, the end-of-text id in HF's tokenizers), nor on the length the
ids are padded to. Params are float32; converted weights come from `crossjepa.weights.clip_text_params`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crossjepa.models import layers
from crossjepa.models import vit as vit_lib

_init = nn.initializers.normal(0.02)


class CLIPText(nn.Module):
  """apply({'params': p}, ids [B, L] int32, eot [B] int32) -> {'embedding': [B, proj_dim or width],
  'tokens': [B, L, width]}, float32 (tokens after the final norm). L <= context_length."""
  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_dim: int | None = None          # None: 4 x width
  proj_dim: int | None = 512          # None: no projection ('embedding' is the normed eot token)
  act: str = 'quick_gelu'             # OpenAI's weights; most open_clip ones: 'gelu'
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids: jax.Array, eot: jax.Array) -> dict[str, jax.Array]:
    if ids.ndim != 2 or eot.shape != ids.shape[:1]:
      raise ValueError(f'CLIPText: expected ids [B, L] and eot [B], got {ids.shape} and {eot.shape}')
    if ids.shape[1] > self.context_length:
      raise ValueError(f'CLIPText: {ids.shape[1]} tokens, more than context_length '
                       f'{self.context_length}')
    dtype = jnp.dtype(self.dtype)
    x = nn.Embed(self.vocab_size, self.width, embedding_init=_init, param_dtype=jnp.float32,
                 name='token_embed')(ids.astype(jnp.int32))
    pos = self.param('pos_embed', nn.initializers.normal(0.01), (self.context_length, self.width),
                     jnp.float32)
    x = (x + pos[None, :ids.shape[1]]).astype(dtype)
    hidden = self.mlp_dim or 4 * self.width
    for i in range(self.depth):
      x = vit_lib.Block(self.width, self.num_heads, hidden, layerscale_init=None,
                        layer_norm_eps=self.layer_norm_eps, dtype=dtype, act=self.act, causal=True,
                        name=f'blocks_{i}')(x)
    x = layers.norm(self.layer_norm_eps, dtype, 'norm', fast_variance=False)(x)
    pooled = jnp.take_along_axis(x, eot.astype(jnp.int32)[:, None, None], axis=1)[:, 0]
    if self.proj_dim:
      pooled = nn.Dense(self.proj_dim, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                        kernel_init=_init, name='proj')(pooled)
    return {'embedding': pooled.astype(jnp.float32), 'tokens': x.astype(jnp.float32)}


FIELDS = ('vocab_size', 'context_length', 'width', 'depth', 'num_heads', 'mlp_dim', 'proj_dim',
          'act', 'layer_norm_eps')


def fields(module: CLIPText) -> dict[str, Any]:
  """The module's fields as JSON values (what text.json records)."""
  return {k: getattr(module, k) for k in FIELDS}


def abstract_params(module: CLIPText) -> Any:
  ids = jax.ShapeDtypeStruct((1, module.context_length), jnp.int32)
  eot = jax.ShapeDtypeStruct((1,), jnp.int32)
  return jax.eval_shape(lambda i, e: module.init(jax.random.PRNGKey(0), i, e), ids, eot)['params']


def check_params(module: CLIPText, params, where: str = 'params') -> None:
  """Raises a ValueError listing missing, unexpected and mis-shaped entries vs. the module."""
  vit_lib.compare_params(abstract_params(module), params, where, "the CLIP text tower's config")


class TextEncoder:
  """A CLIP teacher's text tower with its tokenizer: `__call__(texts) -> [n, E]` float32 text
  embeddings (not normalised), computed in batches of `batch`. The ids are cut after the longest
  text's end-of-text token, rounded up to a multiple of 16 (a few compiled shapes): with causal
  attention nothing after a text's end reaches its embedding, and class prompts are a dozen tokens
  of CLIP's 77 (ViT-B/16's text tower, 896 prompts on 2 CPU cores: 28.9 s at 77 tokens)."""

  def __init__(self, module: CLIPText, params, tokenizer, batch: int = 64, cut_ids: bool = True):
    self.module, self.params, self.tokenizer, self.batch = module, params, tokenizer, batch
    self.cut_ids = cut_ids     # False: every text at the full context length (experiments/bench_text.py)
    self.param_checksum = ''   # teacher_io.load_text: text.json's, which an export records
    self._jit = jax.jit(lambda p, i, e: module.apply({'params': p}, i, e)['embedding'])

  @property
  def dim(self) -> int:
    return int(self.module.proj_dim or self.module.width)

  def __call__(self, texts) -> np.ndarray:
    ids, eot = self.tokenizer.encode(list(texts), self.module.context_length)
    n = len(ids)
    if n and self.cut_ids:
      ids = ids[:, :min(self.module.context_length, -(-(int(eot.max()) + 1) // 16) * 16)]
    pad = -n % self.batch
    ids = np.concatenate([ids, np.repeat(ids[-1:], pad, axis=0)]) if n else ids
    eot = np.concatenate([eot, np.repeat(eot[-1:], pad, axis=0)]) if n else eot
    out = [np.asarray(self._jit(self.params, ids[i:i + self.batch], eot[i:i + self.batch]))
           for i in range(0, len(ids), self.batch)]
    return np.concatenate(out)[:n] if out else np.zeros((0, self.dim), np.float32)
