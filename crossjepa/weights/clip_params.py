"""CLIP image towers (Hugging Face or open_clip layout) -> `crossjepa.models.vit.ViT` params.

  * 'hf_clip': a `CLIPVisionModelWithProjection` / `CLIPVisionModel` state dict, or a whole
    `CLIPModel` one (openai/clip-vit-*, laion/CLIP-ViT-*): `vision_model.*` and
    `visual_projection.weight` are read, the text tower (`text_model.*`, `text_projection`,
    `logit_scale`) is ignored.
  * 'open_clip': an open_clip `CLIP` state dict (`visual.*`; the text tower is ignored), or its
    image tower alone (`conv1.weight`, `transformer.resblocks.*`, ...): fused `attn.in_proj_*`
    (torch.nn.MultiheadAttention), `mlp.c_fc` / `mlp.c_proj`, `ln_pre` / `ln_post`, `proj` [D, E]
    (x @ proj), LayerScale `ls_1.gamma` / `ls_2.gamma` where the model has it.

Both are the same network (see `crossjepa.models.vit`): no patch bias, a LayerNorm before the blocks,
CLS pooling, the final LayerNorm on the tokens and a bias-free projection of the CLS token (the image
embedding). The shapes give width, depth, patch size, position grid, MLP width and the projection;
heads are 64 wide unless the config says otherwise (HF num_attention_heads, open_clip head_width:
ViT-bigG-14's are 104 wide). What the weights cannot tell is the activation:
QuickGELU for OpenAI's weights, exact GELU for most open_clip ones (LAION, DataComp). It comes from
the HF config's `hidden_act`, from open_clip_config.json's `quick_gelu`, or from the caller; with
none of them the conversion is refused rather than guessed. Image towers CLIP pools otherwise (an
attentional pooler, average pooling) and ResNet towers (RN50, ...) are refused by name.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from crossjepa.models import vit as vit_lib
from crossjepa.weights import dinov2_params

SOURCES = ('hf_clip', 'open_clip')
ACTIVATIONS = ('gelu', 'quick_gelu')    # ViT.act values; also HF's hidden_act names for them
_HF_CLIP_TYPES = ('clip', 'clip_vision_model')    # config.json model_type of HF's CLIP classes


def _vision_part(sd: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """The image tower's entries, prefixes removed (the text tower and logit scale dropped)."""
  if source == 'hf_clip':
    if any(k.startswith('vision_model.') for k in sd):
      out = {k[len('vision_model.'):]: v for k, v in sd.items() if k.startswith('vision_model.')}
    else:   # transformers 5's CLIPVisionModel: embeddings.*, encoder.*, ... at the top
      out = {k: v for k, v in sd.items() if not k.startswith(('text_model.', 'visual_projection.'))
             and k not in ('text_projection.weight', 'logit_scale')}
    if 'visual_projection.weight' in sd:
      out['visual_projection.weight'] = sd['visual_projection.weight']
    out.pop('embeddings.position_ids', None)       # a buffer older transformers saved
    return out
  if any(k.startswith('visual.') for k in sd):
    return {k[len('visual.'):]: v for k, v in sd.items() if k.startswith('visual.')}
  return dict(sd)


class Names:
  """The torch names of one layout, after `_vision_part`."""

  def __init__(self, source: str):
    hf = source == 'hf_clip'
    self.cls = 'embeddings.class_embedding' if hf else 'class_embedding'
    self.pos = 'embeddings.position_embedding.weight' if hf else 'positional_embedding'
    self.patch = 'embeddings.patch_embedding.weight' if hf else 'conv1.weight'
    self.pre = 'pre_layrnorm.' if hf else 'ln_pre.'
    self.post = 'post_layernorm.' if hf else 'ln_post.'
    self.proj = 'visual_projection.weight' if hf else 'proj'
    self.block = 'encoder.layers.{}.' if hf else 'transformer.resblocks.{}.'
    self.norm1, self.norm2 = ('layer_norm1.', 'layer_norm2.') if hf else ('ln_1.', 'ln_2.')
    self.fc1, self.fc2 = ('mlp.fc1.', 'mlp.fc2.') if hf else ('mlp.c_fc.', 'mlp.c_proj.')
    self.ls1, self.ls2 = ('', '') if hf else ('ls_1.gamma', 'ls_2.gamma')


def _infer_config(sd: dict[str, np.ndarray], source: str, names: Names,
                  num_heads: int | None, head_width: int) -> dict[str, Any]:
  for key in (names.patch, names.pos, names.cls):
    if key not in sd:
      raise ValueError(f'{source} state dict has no {key!r}: is this a CLIP image tower of the '
                       f'{source!r} layout? First keys: {sorted(sd)[:8]}')
  patch = sd[names.patch]
  if patch.ndim != 4 or patch.shape[1] != 3 or patch.shape[2] != patch.shape[3]:
    raise ValueError(f'{names.patch}: expected [width, 3, p, p], got {patch.shape}')
  width, patch_size = int(patch.shape[0]), int(patch.shape[2])
  pos = sd[names.pos]
  if pos.ndim != 2 or pos.shape[1] != width:
    raise ValueError(f'{names.pos}: expected [1 + grid^2, {width}], got {pos.shape}')
  pos_grid = dinov2_params.square_side(int(pos.shape[0]) - 1, names.pos)
  blocks = dinov2_params.block_indices(sd, names.block, source)
  fc1 = names.block.format(0) + names.fc1 + 'weight'
  if fc1 not in sd:
    raise ValueError(f'{source} state dict has no {fc1!r} (MLP of block 0)')
  heads = num_heads or max(width // head_width, 1)
  if width % heads or (not num_heads and width % head_width):
    raise ValueError(f'width {width} is not divisible into {heads} heads'
                     + ('' if num_heads else f' of {head_width}'))
  proj = sd.get(names.proj)
  proj_dim = None
  if proj is not None:   # HF: Linear weight [E, D]; open_clip: a matrix [D, E] used as x @ proj
    proj_dim = int(proj.shape[0] if source == 'hf_clip' else proj.shape[-1])
  return dict(width=width, depth=blocks[-1] + 1, num_heads=heads, patch_size=patch_size,
              pos_grid=pos_grid, pos_len=int(pos.shape[0]), hidden=int(sd[fc1].shape[0]),
              pre_norm=(names.pre + 'weight') in sd, proj_dim=proj_dim,
              layerscale=bool(names.ls1) and (names.block.format(0) + names.ls1) in sd)


def expected_keys(source: str, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  """Torch key -> shape that an image tower of this config must have (after `_vision_part`)."""
  names, d, h = Names(source), cfg['width'], cfg['hidden']
  wb = dinov2_params.weight_bias
  shapes: dict[str, tuple[int, ...]] = {
      names.cls: (d,), names.pos: (cfg['pos_len'], d),
      names.patch: (d, 3, cfg['patch_size'], cfg['patch_size']), **wb(names.post, (d,), (d,))}
  if cfg['pre_norm']:
    shapes.update(wb(names.pre, (d,), (d,)))
  if cfg['proj_dim']:
    e = cfg['proj_dim']
    shapes[names.proj] = (e, d) if source == 'hf_clip' else (d, e)
  for i in range(cfg['depth']):
    shapes.update(block_keys(source, names, names.block.format(i), d, h, cfg['layerscale']))
  return shapes


def block_keys(source: str, names: Names, b: str, d: int, h: int,
               layerscale: bool) -> dict[str, tuple[int, ...]]:
  """Torch key -> shape of the transformer block `b` (width d, MLP width h) of either tower."""
  wb = dinov2_params.weight_bias
  shapes = {**wb(b + names.norm1, (d,), (d,)), **wb(b + names.norm2, (d,), (d,)),
            **wb(b + names.fc1, (h, d), (h,)), **wb(b + names.fc2, (d, h), (d,))}
  if source == 'hf_clip':
    for n in ('q_proj', 'k_proj', 'v_proj', 'out_proj'):
      shapes.update(wb(b + f'self_attn.{n}.', (d, d), (d,)))
  else:
    shapes.update({b + 'attn.in_proj_weight': (3 * d, d), b + 'attn.in_proj_bias': (3 * d,),
                   **wb(b + 'attn.out_proj.', (d, d), (d,))})
    if layerscale:
      shapes.update({b + names.ls1: (d,), b + names.ls2: (d,)})
  return shapes


def block(sd: dict[str, np.ndarray], b: str, source: str, names: Names) -> dict[str, Any]:
  """The flax params of the transformer block `b` of either tower (fused qkv)."""
  dense, norm = dinov2_params.dense, dinov2_params.norm
  if source == 'hf_clip':
    a = b + 'self_attn.'
    attn = {'qkv': {'kernel': np.concatenate([sd[a + f'{n}_proj.weight'].T for n in 'qkv'], 1),
                    'bias': np.concatenate([sd[a + f'{n}_proj.bias'] for n in 'qkv'])},
            'proj': dense(sd, a + 'out_proj.')}
  else:   # nn.MultiheadAttention packs [q; k; v] along the output axis, as the fused qkv does
    attn = {'qkv': {'kernel': sd[b + 'attn.in_proj_weight'].T, 'bias': sd[b + 'attn.in_proj_bias']},
            'proj': dense(sd, b + 'attn.out_proj.')}
  block = {'norm1': norm(sd, b + names.norm1), 'norm2': norm(sd, b + names.norm2), 'attn': attn,
           'mlp': {'fc1': dense(sd, b + names.fc1), 'fc2': dense(sd, b + names.fc2)}}
  if names.ls1 and (b + names.ls1) in sd:
    block['ls1'], block['ls2'] = {'gamma': sd[b + names.ls1]}, {'gamma': sd[b + names.ls2]}
  return block


def hf_vision_config(config: dict[str, Any]) -> dict[str, Any]:
  """An HF config's image-tower part: `vision_config` of a whole CLIPModel's, else the config."""
  vision = config.get('vision_config')
  return vision if isinstance(vision, dict) else config


def open_clip_tower_cfg(config: dict[str, Any], tower: str = 'vision_cfg') -> dict[str, Any]:
  """open_clip_config.json's model_cfg.vision_cfg (or text_cfg: `tower`), {} when absent or not
  an object."""
  model_cfg = config.get('model_cfg')
  part = model_cfg.get(tower) if isinstance(model_cfg, dict) else None
  return part if isinstance(part, dict) else {}


def config_activation(source: str, config: dict[str, Any]) -> str | None:
  """The activation a checkpoint's config names: an HF config's `hidden_act` (top level or under
  `vision_config`; an HF CLIP config without one means transformers' default, QuickGELU: configs
  saved as a diff from the defaults leave it out), open_clip_config.json's `model_cfg.quick_gelu`;
  None when there is no such config."""
  if source == 'hf_clip':
    act = hf_vision_config(config).get('hidden_act')
    if act is None:
      return 'quick_gelu' if config.get('model_type') in _HF_CLIP_TYPES else None
    if act not in ACTIVATIONS:
      raise ValueError(f'hidden_act={act!r} in the config: expected one of {list(ACTIVATIONS)}')
    return act
  model_cfg = config.get('model_cfg')
  if not isinstance(model_cfg, dict):
    return None
  return 'quick_gelu' if model_cfg.get('quick_gelu', False) else 'gelu'


def open_clip_head_width(config: dict[str, Any]) -> int:
  """open_clip_config.json's model_cfg.vision_cfg.head_width (open_clip's default 64)."""
  return int(open_clip_tower_cfg(config).get('head_width', 64))


def check_open_clip_config(config: dict[str, Any]) -> None:
  """Refuses an open_clip_config.json whose image tower pools otherwise than by its CLS token."""
  vision = open_clip_tower_cfg(config)
  pool = vision.get('pool_type', 'tok')
  if pool not in (None, 'tok'):
    raise ValueError(f"model_cfg.vision_cfg.pool_type={pool!r}: only CLS pooling ('tok') is "
                     'supported')
  if vision.get('attentional_pool') or vision.get('global_average_pool'):
    raise ValueError('model_cfg.vision_cfg: an attentional pooler or average pooling is not '
                     'supported (only CLS pooling)')


def convert_state_dict(state_dict: dict[str, np.ndarray], source: str, *, activation: str,
                       num_heads: int | None = None, head_width: int = 64,
                       layer_norm_eps: float = 1e-5) -> tuple[vit_lib.ViT, dict[str, Any]]:
  """A torch CLIP state dict (numpy arrays) -> (ViT module, float32 params); heads: num_heads, or
  the width divided by head_width."""
  if source not in SOURCES:
    raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}')
  names = Names(source)
  sd = {k: np.asarray(v, np.float32) for k, v in _vision_part(state_dict, source).items()}
  if source == 'open_clip' and any(k.startswith(('attnpool.', 'layer1.')) for k in sd):
    raise ValueError('open_clip state dict is a ResNet image tower (layer1.*, attnpool.*: '
                     'RN50 and its kin): only ViT towers are supported')
  if source == 'open_clip' and any(k.startswith('attn_pool') for k in sd):
    raise ValueError('open_clip state dict has an attentional pooler (attn_pool.*): only CLIP '
                     'image towers that pool their CLS token are supported')
  cfg = _infer_config(sd, source, names, num_heads, head_width)
  dinov2_params.check_keys(sd, expected_keys(source, cfg), source, [], model='CLIP')
  d = cfg['width']
  module = vit_lib.ViT(
      width=d, depth=cfg['depth'], num_heads=cfg['num_heads'], patch_size=cfg['patch_size'],
      mlp_dim=None if cfg['hidden'] == 4 * d else cfg['hidden'],
      layerscale_init=1e-5 if cfg['layerscale'] else None, pos_grid=cfg['pos_grid'],
      pos_interp_antialias=False,   # HF's interpolate_pos_encoding, open_clip's resize_pos_embed
      layer_norm_eps=layer_norm_eps, patch_bias=False, pre_norm=cfg['pre_norm'], act=activation,
      proj_dim=cfg['proj_dim'])
  params: dict[str, Any] = {
      'cls_token': sd[names.cls].reshape(1, 1, d), 'pos_embed': sd[names.pos][None],
      'patch_embed': {'kernel': sd[names.patch].transpose(2, 3, 1, 0)},
      'norm': dinov2_params.norm(sd, names.post)}
  if cfg['pre_norm']:
    params['norm_pre'] = dinov2_params.norm(sd, names.pre)
  if cfg['proj_dim']:
    proj = sd[names.proj]
    params['proj'] = {'kernel': proj.T if source == 'hf_clip' else proj}
  for i in range(cfg['depth']):
    params[f'blocks_{i}'] = block(sd, names.block.format(i), source, names)
  params = dinov2_params.contiguous(params)
  vit_lib.check_params(module, params, where='converted params')
  return module, params
