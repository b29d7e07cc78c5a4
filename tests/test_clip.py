"""CLIP image towers as teachers: parity with Hugging Face CLIP and with an open_clip-layout torch
reference (built here from torch.nn.MultiheadAttention, as open_clip's ResidualAttentionBlock is),
at the trained grid and interpolated, through convert_clip -> teacher folder -> load_teacher; the
teacher cache on a CLIP grid; the user errors of the conversion."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from crossjepa import imaging
from crossjepa.data import teacher_cache
from crossjepa.weights import errors
from crossjepa.weights import teacher_conversion
from crossjepa.weights import teacher_io
from test_records import tiny_config  # pylint: disable=g-bad-import-order

transformers = pytest.importorskip('transformers')
safetensors_torch = pytest.importorskip('safetensors.torch')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 2e-4
WIDTH, PATCH, SIZE, PROJ = 64, 8, 32, 24          # a 4 x 4 trained grid


def _randomise(model, seed):
  """Norms, class embedding and positions away from their init, so that every parameter matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if ('norm' in name or 'ln_' in name) and name.endswith('weight'):
        p.copy_(1.0 + 0.3 * noise)
      elif ('norm' in name or 'ln_' in name) and name.endswith('bias'):
        p.copy_(0.3 * noise)
      elif 'class_embedding' in name or 'position' in name or name.endswith('gamma'):
        p.copy_(noise if 'gamma' not in name else 0.5 * noise)
  return model.eval()


def _hf_config(act='quick_gelu', **kw):
  return transformers.CLIPVisionConfig(
      hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=2,
      image_size=SIZE, patch_size=PATCH, projection_dim=PROJ, hidden_act=act, **kw)


def _uint8(n, size, seed=1):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _clip_pixels(images):
  """uint8 NHWC -> CLIP-normalised float32 NCHW, what CLIPImageProcessor hands the model."""
  x = (images.astype(np.float32) / 255.0 - np.float32(imaging.CLIP_MEAN)) / np.float32(imaging.CLIP_STD)
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _hf_reference(model, images):
  """(image embedding, post-LN patch tokens) of a CLIPVisionModelWithProjection."""
  with torch.no_grad():
    out = model(pixel_values=_clip_pixels(images),
                interpolate_pos_encoding=images.shape[1] != SIZE)
    patches = model.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
  return out.image_embeds.numpy(), patches.numpy()


def _check(teacher, images, embeds, patches):
  got = teacher(images)
  grid = images.shape[1] // PATCH
  assert got['global'].shape == (len(images), PROJ)
  assert got['feature_map'].shape == (len(images), grid, grid, WIDTH)
  np.testing.assert_allclose(got['global'], embeds, atol=ATOL, rtol=0)
  np.testing.assert_allclose(got['feature_map'].reshape(len(images), -1, WIDTH), patches,
                             atol=ATOL, rtol=0)


@pytest.mark.parametrize('act', ['quick_gelu', 'gelu'])
def test_hf_clip_folder_parity_trained_and_interpolated(act, tmp_path):
  torch.manual_seed(0)
  model = _randomise(transformers.CLIPVisionModelWithProjection(_hf_config(act)), seed=2)
  model.save_pretrained(str(tmp_path / 'hf'))           # config.json (hidden_act) + safetensors
  out = str(tmp_path / 'teacher')
  spec = teacher_conversion.convert_clip('hf_clip', str(tmp_path / 'hf'), out, name='tiny_clip')
  assert (spec.architecture, spec.name, spec.stride, spec.input_size) == ('vit', 'tiny_clip', 8, 32)
  assert (spec.global_width, spec.feature_width, spec.fields['act']) == (PROJ, WIDTH, act)
  assert spec.mean == pytest.approx(imaging.CLIP_MEAN_PX) and spec.extra['activation'] == act
  teacher = teacher_io.load_teacher(out)
  assert teacher.spec == spec
  images = _uint8(2, SIZE)
  _check(teacher, images, *_hf_reference(model, images))      # 4 x 4: the trained grid
  big = _uint8(2, 48, seed=3)
  _check(teacher, big, *_hf_reference(model, big))            # 6 x 6: bicubic positions
  # a config saved as a diff from transformers' defaults leaves QuickGELU out: still QuickGELU
  cfg = json.loads((tmp_path / 'hf' / 'config.json').read_text())
  del cfg['hidden_act']
  (tmp_path / 'hf' / 'config.json').write_text(json.dumps(cfg))
  if act == 'quick_gelu':
    again = teacher_conversion.convert_clip('hf_clip', str(tmp_path / 'hf'), str(tmp_path / 'again'))
    assert again.param_checksum == spec.param_checksum and again.fields['act'] == 'quick_gelu'
  else:   # an activation the ViT does not have is refused, naming the folder
    (tmp_path / 'hf' / 'config.json').write_text(json.dumps(dict(cfg, hidden_act='gelu_new')))
    with pytest.raises(errors.ConvertError, match=r"hf: hidden_act='gelu_new' in the config"):
      teacher_conversion.convert_clip('hf_clip', str(tmp_path / 'hf'), str(tmp_path / 'again'))
  # the other activation is a different function: the parity above would have caught a mix-up
  wrong = transformers.CLIPVisionModelWithProjection(
      _hf_config('gelu' if act == 'quick_gelu' else 'quick_gelu'))
  wrong.load_state_dict(model.state_dict())
  assert np.abs(_hf_reference(wrong.eval(), images)[0] - teacher(images)['global']).max() > 1e-3


def test_hf_clip_vision_model_without_projection(tmp_path):
  """A CLIPVisionModel (transformers 5 saves it without the vision_model. prefix) has no
  projection: 'global' is its pooler output, the normed CLS token."""
  torch.manual_seed(2)
  model = _randomise(transformers.CLIPVisionModel(_hf_config()), seed=3)
  model.save_pretrained(str(tmp_path / 'hf'))
  spec = teacher_conversion.convert_clip('hf_clip', str(tmp_path / 'hf'), str(tmp_path / 't'))
  assert spec.global_width == WIDTH and spec.fields['proj_dim'] is None and spec.name == 'hf'
  images = _uint8(2, SIZE, seed=4)
  with torch.no_grad():
    want = model(pixel_values=_clip_pixels(images)).pooler_output.numpy()
  np.testing.assert_allclose(teacher_io.load_teacher(str(tmp_path / 't'))(images)['global'], want,
                             atol=ATOL, rtol=0)


def test_hf_full_clip_model_reads_the_image_tower(tmp_path):
  """A whole CLIPModel file (text tower, logit_scale): its image features, the text ignored."""
  torch.manual_seed(1)
  text = transformers.CLIPTextConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     max_position_embeddings=8)
  config = transformers.CLIPConfig(text_config=text.to_dict(),
                                   vision_config=_hf_config().to_dict(), projection_dim=PROJ)
  model = _randomise(transformers.CLIPModel(config), seed=4)
  path = str(tmp_path / 'clip.safetensors')
  safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
  # a bare file: no config beside it says the activation
  with pytest.raises(errors.ConvertError, match='--activation is required for .*clip.safetensors'):
    teacher_conversion.convert_clip('hf_clip', path, str(tmp_path / 't'))
  assert not (tmp_path / 't').exists()
  # nor the heads: 64-wide (CLIP's) unless told; this tiny tower has two 32-wide ones
  spec = teacher_conversion.convert_clip('hf_clip', path, str(tmp_path / 't'),
                                         activation='quick_gelu', num_heads=2)
  assert spec.global_width == PROJ
  images = _uint8(2, SIZE, seed=5)
  with torch.no_grad():
    want = model.get_image_features(pixel_values=_clip_pixels(images))
  want = getattr(want, 'pooler_output', want)     # transformers 5 may wrap the features
  np.testing.assert_allclose(teacher_io.load_teacher(str(tmp_path / 't'))(images)['global'],
                             want.numpy(), atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- open_clip layout


class _OpenClipBlock(nn.Module):
  """open_clip's ResidualAttentionBlock (no attention mask), names and all."""

  def __init__(self, d, heads, act, layerscale):
    super().__init__()
    self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
    self.attn = nn.MultiheadAttention(d, heads)
    self.mlp = nn.Sequential(collections.OrderedDict(
        c_fc=nn.Linear(d, 4 * d), gelu=act(), c_proj=nn.Linear(4 * d, d)))
    if layerscale:
      self.ls_1, self.ls_2 = _Gamma(d), _Gamma(d)
    else:
      self.ls_1 = self.ls_2 = nn.Identity()

  def forward(self, x):                  # x: [L, B, D] (sequence first, as open_clip had it)
    y = self.ln_1(x)
    x = x + self.ls_1(self.attn(y, y, y, need_weights=False)[0])
    return x + self.ls_2(self.mlp(self.ln_2(x)))


class _Gamma(nn.Module):
  def __init__(self, d):
    super().__init__()
    self.gamma = nn.Parameter(1e-5 * torch.ones(d))

  def forward(self, x):
    return x * self.gamma


class _QuickGELU(nn.Module):
  def forward(self, x):
    return x * torch.sigmoid(1.702 * x)


class _OpenClipVisual(nn.Module):
  """open_clip's VisionTransformer with CLS pooling: conv1, class + positional embedding, ln_pre,
  resblocks, ln_post, pooled @ proj."""

  def __init__(self, act, layerscale=False, depth=2, heads=2):
    super().__init__()
    d, grid = WIDTH, SIZE // PATCH
    self.conv1 = nn.Conv2d(3, d, PATCH, PATCH, bias=False)
    self.class_embedding = nn.Parameter(torch.randn(d))
    self.positional_embedding = nn.Parameter(torch.randn(grid * grid + 1, d))
    self.ln_pre, self.ln_post = nn.LayerNorm(d), nn.LayerNorm(d)
    self.transformer = nn.Module()
    self.transformer.resblocks = nn.ModuleList(
        _OpenClipBlock(d, heads, act, layerscale) for _ in range(depth))
    self.proj = nn.Parameter(torch.randn(d, PROJ) * d ** -0.5)

  def forward(self, x):
    x = self.conv1(x).flatten(2).transpose(1, 2)
    cls = self.class_embedding.expand(x.shape[0], 1, -1)
    x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
    x = x.transpose(0, 1)
    for block in self.transformer.resblocks:
      x = block(x)
    x = self.ln_post(x.transpose(0, 1))
    return x[:, 0] @ self.proj, x[:, 1:]


def _open_clip_file(tmp_path, act, layerscale, seed):
  torch.manual_seed(seed)
  visual = _randomise(_OpenClipVisual(act, layerscale), seed)
  sd = {f'visual.{k}': v for k, v in visual.state_dict().items()}
  sd.update({'logit_scale': torch.tensor(4.6), 'text_projection': torch.randn(32, PROJ),
             'positional_embedding': torch.randn(8, 32),        # the text tower's, not the image's
             'transformer.resblocks.0.ln_1.weight': torch.ones(32)})
  path = str(tmp_path / f'open_clip_{seed}.safetensors')
  safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, path)
  return visual, path


@pytest.mark.parametrize('act,layerscale', [('quick_gelu', False), ('gelu', True)])
def test_open_clip_parity(act, layerscale, tmp_path):
  visual, path = _open_clip_file(tmp_path, _QuickGELU if act == 'quick_gelu' else nn.GELU,
                                 layerscale, seed=6)
  out = str(tmp_path / 'teacher')
  spec = teacher_conversion.convert_clip('open_clip', path, out, activation=act, num_heads=2)
  assert spec.name == 'open_clip_6'          # the file's name without its extension
  assert spec.fields['layerscale_init'] == (1e-5 if layerscale else None)
  assert spec.fields['pre_norm'] and not spec.fields['patch_bias'] and spec.fields['act'] == act
  images = _uint8(3, SIZE, seed=7)
  with torch.no_grad():
    embeds, patches = visual(_clip_pixels(images))
  _check(teacher_io.load_teacher(out), images, embeds.numpy(), patches.numpy())


def test_open_clip_folder_config_gives_the_activation(tmp_path):
  """An open_clip hub folder: open_clip_config.json's quick_gelu says the activation (not the HF
  config.json beside it); a --activation that contradicts it, or a pooling other than the CLS token,
  is refused."""
  visual, path = _open_clip_file(tmp_path, nn.GELU, False, seed=8)
  folder = tmp_path / 'hub'
  folder.mkdir()
  os.rename(path, folder / 'open_clip_model.safetensors')
  (folder / 'open_clip_config.json').write_text(
      '{"model_cfg": {"embed_dim": 24, "vision_cfg": {"head_width": 32}}}')
  # a hub folder of a LAION CLIP holds the HF layout beside it: --source=open_clip reads neither
  (folder / 'config.json').write_text('{"vision_config": {"hidden_act": "quick_gelu"}}')
  (folder / 'model.safetensors').write_bytes(b'not the open_clip weights')
  spec = teacher_conversion.convert_clip('open_clip', str(folder), str(tmp_path / 't'))
  assert spec.fields['act'] == 'gelu' and spec.fields['num_heads'] == 2    # 64 / head_width 32
  images = _uint8(2, SIZE, seed=13)
  with torch.no_grad():
    embeds, patches = visual(_clip_pixels(images))
  _check(teacher_io.load_teacher(str(tmp_path / 't')), images, embeds.numpy(), patches.numpy())
  with pytest.raises(errors.ConvertError, match='--activation=quick_gelu: the config of .*hub says '
                     'gelu'):
    teacher_conversion.convert_clip('open_clip', str(folder), str(tmp_path / 'u'),
                                    activation='quick_gelu')
  (folder / 'open_clip_config.json').write_text(
      '{"model_cfg": {"quick_gelu": true, "vision_cfg": {"pool_type": "avg"}}}')
  with pytest.raises(errors.ConvertError, match="hub: .*pool_type='avg': only CLS pooling"):
    teacher_conversion.convert_clip('open_clip', str(folder), str(tmp_path / 'u'))
  assert not (tmp_path / 'u').exists()


def test_wrong_layout_and_attentional_pooler_are_refused(tmp_path):
  _, path = _open_clip_file(tmp_path, nn.GELU, False, seed=9)
  with pytest.raises(errors.ConvertError, match=r"open_clip_9.safetensors: hf_clip state dict has no "
                     r"'embeddings.patch_embedding.weight'"):
    teacher_conversion.convert_clip('hf_clip', path, str(tmp_path / 't'), activation='gelu')
  sd = safetensors_torch.load_file(path)
  resnet = str(tmp_path / 'rn50.safetensors')       # OpenAI's RN50 tower: a 3 x 3 stem conv1
  safetensors_torch.save_file({'visual.conv1.weight': torch.zeros(32, 3, 3, 3),
                               'visual.layer1.0.conv1.weight': torch.zeros(64, 32, 1, 1),
                               'visual.attnpool.c_proj.weight': torch.zeros(PROJ, 64)}, resnet)
  with pytest.raises(errors.ConvertError, match='rn50.safetensors: .*ResNet image tower'):
    teacher_conversion.convert_clip('open_clip', resnet, str(tmp_path / 't'), activation='gelu')
  sd['visual.attn_pool.query'] = torch.zeros(4, WIDTH)
  safetensors_torch.save_file(sd, path)
  with pytest.raises(errors.ConvertError, match='attentional pooler'):
    teacher_conversion.convert_clip('open_clip', path, str(tmp_path / 't'), activation='gelu')
  del sd['visual.attn_pool.query']
  sd['visual.transformer.resblocks.1.mlp.c_fc.weight'] = torch.zeros(7, WIDTH)
  safetensors_torch.save_file(sd, path)
  with pytest.raises(errors.ConvertError, match=r'does not match the inferred CLIP config: wrong '
                     r'shapes .*resblocks.1.mlp.c_fc.weight: \(7, 64\) \(expected \(256, 64\)\)'):
    teacher_conversion.convert_clip('open_clip', path, str(tmp_path / 't'), activation='gelu')
  assert not (tmp_path / 't').exists()


def test_cache_reads_a_clip_teacher(tmp_path):
  """The prepare stage's cache on a CLIP folder: the embedding is the target, the grid the patches'."""
  _, path = _open_clip_file(tmp_path, nn.GELU, False, seed=10)
  out = str(tmp_path / 'teacher')
  teacher_conversion.convert_clip('open_clip', path, out, activation='gelu')
  config = tiny_config()
  config.data.image_size = 32
  config.data.num_groups = 3
  config.teacher.checkpoint = out
  cache = teacher_cache.Teacher(config, chunk_objects=2)
  assert cache.grid == (4, 4) and cache.width == PROJ and cache.feature_width == WIDTH
  images = _uint8(2, 32, seed=11).reshape(1, 2, 32, 32, 3)
  corr = np.array([[[0, 15, -1], [5, -1, 3]]], np.int32)
  cls, groups = cache(images, corr)
  ref = teacher_io.load_teacher(out)(images[0])
  np.testing.assert_allclose(cls[0], ref['global'], rtol=2e-3, atol=2e-3)
  cells = ref['feature_map'].reshape(2, 16, WIDTH)
  np.testing.assert_allclose(groups[0, 0, 1], cells[0, 15], rtol=2e-3, atol=2e-3)
  np.testing.assert_array_equal(groups[0, 1, 1], 0.0)


@pytest.mark.parametrize('args,names', [
    (['--source=open_clip', '--input={path}'], '--activation is required'),
    (['--source=open_clip', '--input={path}', '--activation=relu'], "--activation='relu'"),
    (['--source=efficientnet_lite', '--activation=gelu'], '--activation: only for a CLIP source'),
    (['--source=hf_clip', '--input={path}', '--variant=B/14'], '--variant: not for a CLIP source'),
])
def test_convert_teacher_cli_clip_errors_exit_2(args, names, tmp_path):
  _, path = _open_clip_file(tmp_path, nn.GELU, False, seed=12)
  proc = subprocess.run(
      [sys.executable, '-m', 'crossjepa.convert_teacher', f'--output={tmp_path / "out"}',
       *[a.format(path=path) for a in args]], capture_output=True, text=True, cwd=ROOT,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=120)
  assert proc.returncode == 2, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('crossjepa.convert_teacher: error:') and names in last, last
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'out').exists()


def test_sharded_hf_folder(tmp_path):
  """HF's layout for large models (ViT-bigG, DINOv2-g): model.safetensors.index.json + shards; a
  missing shard, or a key its shard lacks, is named."""
  torch.manual_seed(5)
  model = _randomise(transformers.CLIPVisionModelWithProjection(_hf_config()), seed=6)
  folder = tmp_path / 'hf'
  model.save_pretrained(str(folder), max_shard_size='100KB')
  shards = sorted(p.name for p in folder.glob('model-*.safetensors'))
  assert len(shards) > 2 and (folder / 'model.safetensors.index.json').exists()
  spec = teacher_conversion.convert_clip('hf_clip', str(folder), str(tmp_path / 't'))
  images = _uint8(2, SIZE, seed=7)
  _check(teacher_io.load_teacher(str(tmp_path / 't')), images, *_hf_reference(model, images))
  assert spec.param_count == sum(p.numel() for p in model.parameters())
  good = (folder / 'model.safetensors.index.json').read_text()
  index = json.loads(good)
  key = sorted(index['weight_map'])[0]
  index['weight_map'][key + '.renamed'] = index['weight_map'][key]
  (folder / 'model.safetensors.index.json').write_text(json.dumps(index))
  with pytest.raises(errors.ConvertError, match=r"lacks 1 key\(s\) its index "
                     r"model.safetensors.index.json puts there"):
    teacher_conversion.convert_clip('hf_clip', str(folder), str(tmp_path / 'u'))
  (folder / 'model.safetensors.index.json').write_text(good)
  os.remove(folder / shards[-1])
  with pytest.raises(FileNotFoundError, match=shards[-1] + ': no such file .*a shard'):
    teacher_conversion.convert_clip('hf_clip', str(folder), str(tmp_path / 'u'))
  assert not (tmp_path / 'u').exists()
