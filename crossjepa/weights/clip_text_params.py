"""CLIP text towers (Hugging Face or open_clip layout) -> `crossjepa.models.clip_text.CLIPText` params.

Read from the same whole-model state dict as the image tower (`clip_params`):

  * 'hf_clip': a `CLIPModel` state dict: `text_model.embeddings.{token,position}_embedding`,
    `text_model.encoder.layers.*` (separate q/k/v), `text_model.final_layer_norm`, and
    `text_projection.weight` [E, D] (a torch Linear without bias);
  * 'open_clip': a `CLIP` state dict: `token_embedding`, `positional_embedding` [L, D],
    `transformer.resblocks.*` (fused `attn.in_proj_*`), `ln_final`, and `text_projection` [D, E]
    (a matrix used as x @ proj; a bias-free `text_projection.weight` Linear in some versions).

Both are the same network (`crossjepa.models.clip_text`). The shapes give vocabulary, context
length, width, depth, MLP width and projection; heads come from the config (HF
`text_config.num_attention_heads`, open_clip `text_cfg.heads`) or are 64 wide. The activation is the
image tower's (one `quick_gelu` switch in open_clip; HF's `text_config.hidden_act`). Text towers
that pool otherwise than at the end-of-text token, or without a causal mask, are refused by name.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from crossjepa.models import clip_text
from crossjepa.weights import clip_params
from crossjepa.weights import dinov2_params


class _Names(clip_params.Names):
  """The text tower's torch names of one layout (blocks named as the image tower's)."""

  def __init__(self, source: str):
    super().__init__(source)
    hf = source == 'hf_clip'
    self.tok = 'embeddings.token_embedding.weight' if hf else 'token_embedding.weight'
    self.pos = 'embeddings.position_embedding.weight' if hf else 'positional_embedding'
    self.final = 'final_layer_norm.' if hf else 'ln_final.'
    self.proj = 'text_projection.weight' if hf else 'text_projection'


def text_part(sd: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray] | None:
  """The text tower's entries of a whole CLIP state dict (HF's `text_model.` prefix removed), or
  None when it has none (an image tower alone)."""
  if source == 'hf_clip':
    out = {k[len('text_model.'):]: v for k, v in sd.items() if k.startswith('text_model.')}
    if not out:
      return None
    out.pop('embeddings.position_ids', None)       # a buffer older transformers saved
    if 'text_projection.weight' in sd:
      out['text_projection.weight'] = sd['text_projection.weight']
    return out
  if 'token_embedding.weight' not in sd:
    return None
  out = {k: v for k, v in sd.items()
         if not k.startswith('visual.') and k not in ('logit_scale', 'logit_bias', 'attn_mask')}
  if 'text_projection.weight' in out:     # open_clip's Linear form: [E, D] like HF's
    out['text_projection'] = out.pop('text_projection.weight').T
  return out


def check_open_clip_text_config(config: dict[str, Any]) -> None:
  """Refuses an open_clip_config.json whose text tower is not CLIP's (causal, end-of-text pooling,
  a bias-free projection)."""
  text = clip_params.open_clip_tower_cfg(config, 'text_cfg')
  if text.get('hf_model_name'):
    raise ValueError(f"model_cfg.text_cfg.hf_model_name={text['hf_model_name']!r}: a Hugging Face "
                     'language model as text tower is not supported (only CLIP\'s own)')
  if text.get('pool_type', 'argmax') not in (None, 'argmax'):
    raise ValueError(f"model_cfg.text_cfg.pool_type={text['pool_type']!r}: only CLIP's "
                     "end-of-text pooling ('argmax') is supported")
  if text.get('no_causal_mask') or text.get('proj_bias'):
    raise ValueError('model_cfg.text_cfg: a text tower without a causal mask or with a '
                     'projection bias is not supported (only CLIP\'s)')


def convert_state_dict(state_dict: dict[str, np.ndarray], source: str, *, activation: str,
                       num_heads: int | None = None, head_width: int = 64,
                       layer_norm_eps: float = 1e-5) -> tuple[clip_text.CLIPText, dict[str, Any]]:
  """A torch CLIP state dict (numpy arrays) -> (CLIPText module, float32 params). Raises
  ValueError naming what is missing or mis-shaped when it holds no CLIP text tower of `source`."""
  if source not in clip_params.SOURCES:
    raise ValueError(f'source must be one of {clip_params.SOURCES}, got {source!r}')
  names = _Names(source)
  part = text_part(state_dict, source)
  if part is None:
    raise ValueError(f'{source} state dict has no text tower ({names.tok!r} and the rest)')
  if source == 'open_clip' and 'text_projection.bias' in part:
    raise ValueError('open_clip text tower has a projection bias (text_projection.bias): only '
                     "CLIP's bias-free projection is supported")
  sd = {k: np.asarray(v, np.float32) for k, v in part.items()}
  for key in (names.tok, names.pos):
    if key not in sd:
      raise ValueError(f'{source} state dict has no {key!r}: not a CLIP text tower of the '
                       f'{source!r} layout')
  vocab, width = (int(n) for n in sd[names.tok].shape)
  context = int(sd[names.pos].shape[0])
  depth = dinov2_params.block_indices(sd, names.block, source)[-1] + 1
  fc1 = names.block.format(0) + names.fc1 + 'weight'
  if fc1 not in sd:
    raise ValueError(f'{source} text tower has no {fc1!r} (MLP of block 0)')
  hidden = int(sd[fc1].shape[0])
  heads = num_heads or max(width // head_width, 1)
  if width % heads:
    raise ValueError(f'text width {width} is not divisible into {heads} heads')
  proj = sd.get(names.proj)
  proj_dim = None if proj is None else int(proj.shape[0] if source == 'hf_clip' else proj.shape[1])
  wb = dinov2_params.weight_bias
  expected = {names.tok: (vocab, width), names.pos: (context, width),
              **wb(names.final, (width,), (width,))}
  if proj_dim:
    expected[names.proj] = (proj_dim, width) if source == 'hf_clip' else (width, proj_dim)
  for i in range(depth):
    expected.update(clip_params.block_keys(source, names, names.block.format(i), width, hidden,
                                           False))
  dinov2_params.check_keys(sd, expected, source, [], model='CLIP text')
  module = clip_text.CLIPText(vocab_size=vocab, context_length=context, width=width, depth=depth,
                              num_heads=heads, mlp_dim=None if hidden == 4 * width else hidden,
                              proj_dim=proj_dim, act=activation, layer_norm_eps=layer_norm_eps)
  params: dict[str, Any] = {'token_embed': {'embedding': sd[names.tok]}, 'pos_embed': sd[names.pos],
                            'norm': dinov2_params.norm(sd, names.final)}
  if proj_dim:
    params['proj'] = {'kernel': proj.T if source == 'hf_clip' else proj}
  for i in range(depth):
    params[f'blocks_{i}'] = clip_params.block(sd, names.block.format(i), source, names)
  params = dinov2_params.contiguous(params)
  clip_text.check_params(module, params, where='converted text params')
  return module, params
