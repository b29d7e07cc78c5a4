"""DINOv2 torch state dicts (Hugging Face or timm layout) -> `crossjepa.models.vit.ViT` params.

  * 'hf': a `Dinov2Model` / `Dinov2WithRegistersModel` state dict. Both the current transformers
    key names (attention.q_proj, mlp.gate_proj, ...) and the ones on the hub
    (attention.attention.query, mlp.weights_in, ...) are accepted; a `dinov2.` prefix
    (classification checkpoints) is stripped.
  * 'timm': a `vit_*_patch14_dinov2` / `vit_*_patch14_reg4_dinov2` state dict (fused attn.qkv,
    ls1.gamma, ...; pos_embed with or without the CLS position), also the original
    facebookresearch/dinov2 hub files (register_tokens, mlp.w12 / mlp.w3, mask_token). Those are
    resampled the timm way (antialiased bicubic to the exact grid): identical at the trained grid
    (518 px), while DINOv2's own code (scale factors with a 0.1 offset, antialias only for the
    register models) can differ slightly at other sizes.

The config is inferred from the weights' shapes (width, depth, heads = width / 64 unless given,
registers, position grid, LayerScale, MLP hidden size or SwiGLU). Missing, unexpected or mis-shaped
keys raise one ValueError listing all of them. The position-embedding interpolation follows the
source: HF Dinov2Model resizes without antialiasing, HF with-registers and timm with it (see
`crossjepa.models.vit.bicubic_resize_matrix`).
"""
from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np

from crossjepa.models import vit as vit_lib

SOURCES = ('hf', 'timm')

# Keys that checkpoints carry but inference does not use (DINOv2's iBOT mask token).
_IGNORED = ('mask_token', 'embeddings.mask_token')

# hub-era HF names -> current transformers names (transformers' own conversion_mapping.py renames).
_HF_RENAMES = (
    ('.attention.attention.query.', '.attention.q_proj.'),
    ('.attention.attention.key.', '.attention.k_proj.'),
    ('.attention.attention.value.', '.attention.v_proj.'),
    ('.attention.output.dense.', '.attention.o_proj.'),
    ('.mlp.weights_out.', '.mlp.down_proj.'),
)


class _Layout(NamedTuple):
  """The (normalised) torch names that both layouts have, each under its own name."""
  cls: str
  pos: str
  reg: str
  patch: str        # prefix of the patch embedding's weight / bias
  norm: str         # prefix of the final norm's weight / bias
  block: str        # prefix of block i: block.format(i)
  ls1: str          # LayerScale gammas, under the block prefix
  ls2: str


_LAYOUTS = {
    'hf': _Layout('embeddings.cls_token', 'embeddings.position_embeddings',
                  'embeddings.register_tokens', 'embeddings.patch_embeddings.projection.',
                  'layernorm.', 'encoder.layer.{}.', 'layer_scale1.lambda1', 'layer_scale2.lambda1'),
    'timm': _Layout('cls_token', 'pos_embed', 'reg_token', 'patch_embed.proj.', 'norm.', 'blocks.{}.',
                    'ls1.gamma', 'ls2.gamma'),
}


def listing(items: list[str], limit: int = 8) -> str:
  """A list for an error message, cut after `limit` entries (a wrong layout misses hundreds)."""
  if len(items) <= limit:
    return repr(items)
  return f'{items[:limit]!r} and {len(items) - limit} more'


def _strip_prefix(sd: dict[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
  for prefix in prefixes:
    if any(k.startswith(prefix) for k in sd):
      return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
  return sd


def _normalise_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  sd = _strip_prefix(sd, ('dinov2_with_registers.', 'dinov2.'))
  out = {}
  for key, value in sd.items():
    for old, new in _HF_RENAMES:
      key = key.replace(old, new)
    m = re.match(r'^(.*\.mlp)\.weights_in\.(weight|bias)$', key)
    if m:  # fused SwiGLU input projection = [gate | up] along the output axis
      gate, up = np.split(value, 2, axis=0)
      out[f'{m[1]}.gate_proj.{m[2]}'], out[f'{m[1]}.up_proj.{m[2]}'] = gate, up
      continue
    out[key] = value
  return out


def _normalise_timm(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  sd = _strip_prefix(sd, ('module.', 'backbone.'))
  out = {}
  for key, value in sd.items():
    key = 'reg_token' if key == 'register_tokens' else key  # original DINOv2 name
    key = re.sub(r'\.mlp\.w12\.', '.mlp.fc1.', key)  # original DINOv2 SwiGLUFFNFused names
    key = re.sub(r'\.mlp\.w3\.', '.mlp.fc2.', key)
    out[key] = value
  return out


def block_indices(keys, template: str, source: str) -> list[int]:
  """The sorted block indices i of the keys that start with template.format(i) (e.g.
  'encoder.layer.{}.'); raises naming the pattern when there are none."""
  pattern = '^' + re.escape(template).replace(r'\{\}', r'(\d+)')
  blocks = sorted({int(m[1]) for k in keys if (m := re.match(pattern, k))})
  if not blocks:
    raise ValueError(f'{source} state dict has no transformer blocks (keys like {pattern})')
  return blocks


def square_side(n: int, what: str) -> int:
  side = int(round(math.sqrt(n)))
  if side * side != n:
    raise ValueError(f'{what}: {n} positions is not a square grid')
  return side


def _square_side_or_none(n: int) -> int | None:
  side = int(round(math.sqrt(max(n, 0))))
  return side if side * side == n and n > 0 else None


def weight_bias(prefix: str, weight: tuple[int, ...], bias: tuple[int, ...]) -> dict:
  return {prefix + 'weight': weight, prefix + 'bias': bias}


def _hf_block_keys(b: str, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  d, hidden = cfg['width'], cfg['hidden']
  shapes = {}
  for n in ('q_proj', 'k_proj', 'v_proj', 'o_proj'):
    shapes.update(weight_bias(b + f'attention.{n}.', (d, d), (d,)))
  if cfg['layerscale']:
    shapes.update({b + _LAYOUTS['hf'].ls1: (d,), b + _LAYOUTS['hf'].ls2: (d,)})
  if cfg['ffn_layer'] == 'swiglu':
    for n in ('gate_proj', 'up_proj'):
      shapes.update(weight_bias(b + f'mlp.{n}.', (hidden, d), (hidden,)))
    shapes.update(weight_bias(b + 'mlp.down_proj.', (d, hidden), (d,)))
  else:
    shapes.update(weight_bias(b + 'mlp.fc1.', (hidden, d), (hidden,)))
    shapes.update(weight_bias(b + 'mlp.fc2.', (d, hidden), (d,)))
  return shapes


def _timm_block_keys(b: str, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  d, hidden = cfg['width'], cfg['hidden']
  fc1_out = 2 * hidden if cfg['ffn_layer'] == 'swiglu' else hidden
  shapes = {**weight_bias(b + 'attn.qkv.', (3 * d, d), (3 * d,)),
            **weight_bias(b + 'attn.proj.', (d, d), (d,)),
            **weight_bias(b + 'mlp.fc1.', (fc1_out, d), (fc1_out,)),
            **weight_bias(b + 'mlp.fc2.', (d, hidden), (d,))}
  if cfg['layerscale']:
    shapes.update({b + _LAYOUTS['timm'].ls1: (d,), b + _LAYOUTS['timm'].ls2: (d,)})
  return shapes


def expected_keys(source: str, cfg: dict[str, Any], pos_len: int) -> dict[str, tuple[int, ...]]:
  """Torch key -> shape that a checkpoint of this config must have (in the normalised names)."""
  d, p = cfg['width'], cfg['patch_size']
  names = _LAYOUTS[source]
  shapes: dict[str, tuple[int, ...]] = {
      names.cls: (1, 1, d), names.pos: (1, pos_len, d),
      **weight_bias(names.patch, (d, 3, p, p), (d,)), **weight_bias(names.norm, (d,), (d,))}
  if cfg['num_registers']:
    shapes[names.reg] = (1, cfg['num_registers'], d)
  block_keys = _hf_block_keys if source == 'hf' else _timm_block_keys
  for i in range(cfg['depth']):
    b = names.block.format(i)
    for n in ('norm1', 'norm2'):
      shapes.update(weight_bias(b + n + '.', (d,), (d,)))
    shapes.update(block_keys(b, cfg))
  return shapes


def _infer_config(sd: dict[str, np.ndarray], source: str, num_heads: int | None) -> dict[str, Any]:
  """Reads the architecture off the weights' shapes (raises naming the key that is missing)."""
  hf = source == 'hf'
  names = _LAYOUTS[source]
  patch_key = names.patch + 'weight'
  for key in (patch_key, names.pos):
    if key not in sd:
      raise ValueError(f'{source} state dict has no {key!r}: is this a DINOv2 ViT checkpoint of '
                       f'the {source!r} layout? First keys: {sorted(sd)[:8]}')
  patch = sd[patch_key]
  if patch.ndim != 4 or patch.shape[1] != 3 or patch.shape[2] != patch.shape[3]:
    raise ValueError(f'{patch_key}: expected [width, 3, p, p], got {patch.shape}')
  width, patch_size = int(patch.shape[0]), int(patch.shape[2])
  blocks = block_indices(sd, names.block, source)
  depth = blocks[-1] + 1  # a gap in the indices shows up as missing keys
  heads = num_heads or max(width // 64, 1)  # DINOv2's heads are 64 wide
  if width % heads:
    raise ValueError(f'width {width} is not divisible by num_heads {heads}')
  registers = int(sd[names.reg].shape[1]) if names.reg in sd else 0

  pos_len = int(sd[names.pos].shape[1])
  if hf:
    pos_grid, cls_pos = square_side(pos_len - 1, names.pos), True
  else:  # timm reg4 models (no_embed_class) keep no CLS position: its value lives in cls_token
    cls_pos = _square_side_or_none(pos_len - 1) is not None
    pos_grid = square_side(pos_len - 1 if cls_pos else pos_len, names.pos)

  b0 = names.block.format(0)
  layerscale = (b0 + names.ls1) in sd
  if hf:
    swiglu = (b0 + 'mlp.gate_proj.weight') in sd
    hidden_key = b0 + ('mlp.gate_proj.weight' if swiglu else 'mlp.fc1.weight')
    if hidden_key not in sd:
      raise ValueError(f'hf state dict has no {hidden_key!r} (MLP of block 0)')
    hidden = int(sd[hidden_key].shape[0])
  else:
    fc1, fc2 = b0 + 'mlp.fc1.weight', b0 + 'mlp.fc2.weight'
    if fc1 not in sd or fc2 not in sd:
      raise ValueError(f'timm state dict has no {fc1!r} / {fc2!r} (MLP of block 0)')
    hidden = int(sd[fc2].shape[1])
    swiglu = int(sd[fc1].shape[0]) == 2 * hidden  # packed [gate | up] (timm SwiGLUPacked)
  ffn_layer = 'swiglu' if swiglu else 'mlp'
  return dict(width=width, depth=depth, num_heads=heads, patch_size=patch_size,
              num_registers=registers, pos_grid=pos_grid, cls_pos=cls_pos, pos_len=pos_len,
              layerscale=layerscale, ffn_layer=ffn_layer, hidden=hidden)


def check_keys(sd: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: str,
               ignored: list[str], model: str = 'DINOv2') -> None:
  """Raises one ValueError listing the missing, unexpected and mis-shaped keys of `sd`."""
  keys = set(sd) - set(ignored)
  missing = sorted(set(expected) - keys)
  unexpected = sorted(keys - set(expected))
  wrong = sorted(f'{k}: {tuple(sd[k].shape)} (expected {expected[k]})'
                 for k in keys & set(expected) if tuple(sd[k].shape) != expected[k])
  if missing or unexpected or wrong:
    parts = []
    if missing:
      parts.append(f'missing keys ({len(missing)}): {listing(missing)}')
    if unexpected:
      parts.append(f'unexpected keys ({len(unexpected)}): {listing(unexpected)}')
    if wrong:
      parts.append(f'wrong shapes ({len(wrong)}): {listing(wrong)}')
    raise ValueError(f'{source} state dict does not match the inferred {model} config: '
                     + '; '.join(parts))


def dense(sd: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """torch Linear `prefix`{weight, bias} -> flax Dense {kernel, bias}."""
  return {'kernel': sd[prefix + 'weight'].T, 'bias': sd[prefix + 'bias']}


def norm(sd: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """torch LayerNorm `prefix`{weight, bias} -> flax LayerNorm {scale, bias}."""
  return {'scale': sd[prefix + 'weight'], 'bias': sd[prefix + 'bias']}


def _hf_block(sd: dict[str, np.ndarray], b: str, cfg: dict[str, Any]) -> dict[str, Any]:
  """Attention and FFN of HF block `b` (separate q/k/v; SwiGLU as gate/up/down projections)."""
  a = b + 'attention.'
  attn = {'qkv': {'kernel': np.concatenate([sd[a + f'{n}_proj.weight'].T for n in 'qkv'], 1),
                  'bias': np.concatenate([sd[a + f'{n}_proj.bias'] for n in 'qkv'])},
          'proj': dense(sd, a + 'o_proj.')}
  if cfg['ffn_layer'] == 'swiglu':
    gate, up = b + 'mlp.gate_proj.', b + 'mlp.up_proj.'
    mlp = {'w12': {'kernel': np.concatenate([sd[gate + 'weight'].T, sd[up + 'weight'].T], 1),
                   'bias': np.concatenate([sd[gate + 'bias'], sd[up + 'bias']])},
           'w3': dense(sd, b + 'mlp.down_proj.')}
  else:
    mlp = {'fc1': dense(sd, b + 'mlp.fc1.'), 'fc2': dense(sd, b + 'mlp.fc2.')}
  return {'attn': attn, 'mlp': mlp}


def _timm_block(sd: dict[str, np.ndarray], b: str, cfg: dict[str, Any]) -> dict[str, Any]:
  """Attention and FFN of timm block `b` (fused qkv; SwiGLU packed [gate | up] in fc1)."""
  fc1, fc2 = dense(sd, b + 'mlp.fc1.'), dense(sd, b + 'mlp.fc2.')
  return {'attn': {'qkv': dense(sd, b + 'attn.qkv.'), 'proj': dense(sd, b + 'attn.proj.')},
          'mlp': {'w12': fc1, 'w3': fc2} if cfg['ffn_layer'] == 'swiglu' else {'fc1': fc1, 'fc2': fc2}}


def convert_state_dict(state_dict: dict[str, np.ndarray], source: str, *,
                       num_heads: int | None = None,
                       layer_norm_eps: float = 1e-6) -> tuple[vit_lib.ViT, dict[str, Any]]:
  """A torch DINOv2 state dict (numpy arrays) -> (ViT module, float32 params)."""
  if source not in SOURCES:
    raise ValueError(f"source must be 'hf' or 'timm', got {source!r}")
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  sd = _normalise_hf(sd) if source == 'hf' else _normalise_timm(sd)
  cfg = _infer_config(sd, source, num_heads)
  check_keys(sd, expected_keys(source, cfg, cfg['pos_len']), source,
              [k for k in sd if k in _IGNORED])

  d = cfg['width']
  default_hidden = (vit_lib.swiglu_hidden_dim(d, 4.0) if cfg['ffn_layer'] == 'swiglu'
                    else int(d * 4.0))
  module = vit_lib.ViT(
      width=d, depth=cfg['depth'], num_heads=cfg['num_heads'], patch_size=cfg['patch_size'],
      mlp_dim=None if cfg['hidden'] == default_hidden else cfg['hidden'],
      ffn_layer=cfg['ffn_layer'], num_registers=cfg['num_registers'],
      layerscale_init=1e-5 if cfg['layerscale'] else None, pos_grid=cfg['pos_grid'],
      # HF Dinov2Model resizes without antialias; HF Dinov2WithRegistersModel and timm with it.
      pos_interp_antialias=(source == 'timm' or cfg['num_registers'] > 0),
      layer_norm_eps=layer_norm_eps)

  names = _LAYOUTS[source]
  pos = sd[names.pos]
  if not cfg['cls_pos']:
    # timm (no_embed_class) folded the CLS position into cls_token; a zero CLS position is exact.
    pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
  params: dict[str, Any] = {
      'cls_token': sd[names.cls], 'pos_embed': pos,
      'patch_embed': {'kernel': sd[names.patch + 'weight'].transpose(2, 3, 1, 0),
                      'bias': sd[names.patch + 'bias']},
      'norm': norm(sd, names.norm)}
  if cfg['num_registers']:
    params['reg_token'] = sd[names.reg]
  block_params = _hf_block if source == 'hf' else _timm_block
  for i in range(cfg['depth']):
    b = names.block.format(i)
    block = {'norm1': norm(sd, b + 'norm1.'), 'norm2': norm(sd, b + 'norm2.'),
             **block_params(sd, b, cfg)}
    if cfg['layerscale']:
      block['ls1'] = {'gamma': sd[b + names.ls1]}
      block['ls2'] = {'gamma': sd[b + names.ls2]}
    params[f'blocks_{i}'] = block
  params = contiguous(params)
  vit_lib.check_params(module, params, where='converted params')
  return module, params


def contiguous(tree):
  if isinstance(tree, dict):
    return {k: contiguous(v) for k, v in tree.items()}
  return np.ascontiguousarray(tree, dtype=np.float32)
