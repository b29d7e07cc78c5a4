"""ViT view encoder: torch-bicubic parity, HF / timm DINOv2 conversion parity, checkpoints, counts."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from crossjepa import imaging
from crossjepa.models import vit as vit_lib
from crossjepa.weights import dinov2_params
from crossjepa.weights import state_dict_files
from crossjepa.weights import teacher_conversion
from crossjepa.weights import vit_io

transformers = pytest.importorskip('transformers')
safetensors_torch = pytest.importorskip('safetensors.torch')

ATOL = 1e-4


def _apply(module, params, images, **kwargs):
  # one compile beats eager op-by-op dispatch by seconds on the busy 2-core machine
  return jax.jit(lambda p, x: module.apply({'params': p}, x, **kwargs))(params, images)


def _init(module, images):
  return jax.jit(module.init)(jax.random.PRNGKey(0), images)['params']


# ----------------------------------------------------------------------------- helpers


def _randomise(model, seed=0):
  """Random LayerScale, norms, tokens and positions, so that every parameter matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      if 'lambda1' in name or 'gamma' in name:
        p.copy_(0.5 * noise)
      elif 'norm' in name and name.endswith('weight'):
        p.copy_(1.0 + 0.3 * noise)
      elif 'norm' in name and name.endswith('bias'):
        p.copy_(0.3 * noise)
      elif any(t in name for t in ('cls_token', 'register_tokens', 'position_embeddings')):
        p.copy_(noise)
  return model.eval()


def _hf_model(registers=0, swiglu=False, width=64, layers=2, heads=2, image_size=56, seed=0):
  torch.manual_seed(seed)
  common = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                image_size=image_size, patch_size=14, layerscale_value=0.5)
  if registers:
    config = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **common)
    model = transformers.Dinov2WithRegistersModel(config)
  else:
    config = transformers.Dinov2Config(use_swiglu_ffn=swiglu, **common)
    model = transformers.Dinov2Model(config)
  return _randomise(model, seed)


def _state_dict(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _torch_tokens(model, images_nchw):
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(images_nchw))
  # pooler_output is last_hidden_state[:, 0] after the final layernorm
  return out.pooler_output.numpy(), out.last_hidden_state.numpy()


def _compare(module, params, model, size, registers=0, batch=2, seed=1):
  images = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
  cls_ref, tokens_ref = _torch_tokens(model, images)
  out = _apply(module, params, jnp.asarray(images.transpose(0, 2, 3, 1)))
  assert out['patches'].shape == (batch, (size // 14) ** 2, module.width)
  assert out['registers'].shape == (batch, registers, module.width)
  np.testing.assert_allclose(out['cls'], cls_ref, atol=ATOL, rtol=0)
  np.testing.assert_allclose(out['registers'], tokens_ref[:, 1:1 + registers], atol=ATOL, rtol=0)
  np.testing.assert_allclose(out['patches'], tokens_ref[:, 1 + registers:], atol=ATOL, rtol=0)
  return out


def _hf_to_timm(sd, no_embed_class):
  """Renames an HF Dinov2 state dict into timm's vit_*_dinov2 layout (fused qkv, ls*.gamma)."""
  out = {'cls_token': sd['embeddings.cls_token'],
         'pos_embed': sd['embeddings.position_embeddings'],
         'patch_embed.proj.weight': sd['embeddings.patch_embeddings.projection.weight'],
         'patch_embed.proj.bias': sd['embeddings.patch_embeddings.projection.bias'],
         'norm.weight': sd['layernorm.weight'], 'norm.bias': sd['layernorm.bias']}
  if 'embeddings.register_tokens' in sd:
    out['reg_token'] = sd['embeddings.register_tokens']
  if no_embed_class:  # timm reg4 models: the CLS position is folded into cls_token
    out['cls_token'] = out['cls_token'] + out['pos_embed'][:, :1]
    out['pos_embed'] = out['pos_embed'][:, 1:]
  depth = len({k.split('.')[2] for k in sd if k.startswith('encoder.layer.')})
  for i in range(depth):
    h, t = f'encoder.layer.{i}.', f'blocks.{i}.'
    for kind in ('weight', 'bias'):
      out[t + 'attn.qkv.' + kind] = np.concatenate(
          [sd[h + f'attention.{n}_proj.{kind}'] for n in 'qkv'], axis=0)
      out[t + 'attn.proj.' + kind] = sd[h + 'attention.o_proj.' + kind]
      for n in ('norm1', 'norm2', 'mlp.fc1', 'mlp.fc2'):
        out[t + f'{n}.{kind}'] = sd[h + f'{n}.{kind}']
    out[t + 'ls1.gamma'] = sd[h + 'layer_scale1.lambda1']
    out[t + 'ls2.gamma'] = sd[h + 'layer_scale2.lambda1']
  return out


# ----------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize('antialias', [False, True])
def test_bicubic_matches_torch_interpolate(antialias):
  rng = np.random.default_rng(0)
  for (h, w), (out_h, out_w) in [((4, 4), (7, 7)), ((37, 37), (16, 16)), ((6, 6), (3, 5)),
                                 ((5, 3), (9, 2)), ((37, 37), (64, 48)), ((4, 4), (4, 4))]:
    x = rng.standard_normal((1, h * w, 8)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x.reshape(1, h, w, 8).transpose(0, 3, 1, 2)), size=(out_h, out_w),
        mode='bicubic', align_corners=False, antialias=antialias)
    ref = ref.numpy().transpose(0, 2, 3, 1).reshape(1, out_h * out_w, 8)
    out = vit_lib.resize_pos_embed(jnp.asarray(x), (h, w), (out_h, out_w), antialias)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0, err_msg=f'{(h, w)}->{(out_h, out_w)}')
  # the kernels differ: jax.image.resize would not do
  x = rng.standard_normal((4, 4)).astype(np.float32)
  plain = vit_lib.bicubic_resize_matrix(4, 7, False) @ x @ vit_lib.bicubic_resize_matrix(4, 7, False).T
  assert np.abs(np.asarray(jax.image.resize(x, (7, 7), 'bicubic')) - plain).max() > 1e-2


# ----------------------------------------------------------------------------- HF parity


@pytest.mark.parametrize('kind', ['mlp', 'swiglu', 'registers'])
def test_hf_parity_trained_and_interpolated_size(kind, tmp_path):
  registers = 4 if kind == 'registers' else 0
  model = _hf_model(registers=registers, swiglu=kind == 'swiglu', seed=len(kind))
  path = str(tmp_path / 'model.safetensors')
  safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
  state_dict, _ = state_dict_files.read_state_dict(path)
  module, params = dinov2_params.convert_state_dict(state_dict, 'hf', num_heads=2)
  ffn_layer = 'swiglu' if kind == 'swiglu' else 'mlp'
  assert (module.pos_grid, module.num_registers, module.ffn_layer) == (4, registers, ffn_layer)
  assert module.pos_interp_antialias == bool(registers)
  _compare(module, params, model, 56, registers)   # trained grid 4x4: no interpolation
  _compare(module, params, model, 98, registers)   # 7x7: bicubic interpolation
  if kind == 'mlp':
    _compare(module, params, model, 42, registers, batch=1)  # 3x3: downsampling


def test_hf_parity_224px_and_folder_input(tmp_path):
  # An HF folder (config.json + model.safetensors): heads come from config.json (2, not 64/64);
  # save_pretrained writes the hub-era names (attention.attention.query, mlp.weights_in [gate|up]).
  model = _hf_model(width=64, layers=1, heads=2, image_size=98, swiglu=True, seed=3)
  model.save_pretrained(str(tmp_path / 'hf'))
  out_dir = str(tmp_path / 'teacher')
  info = teacher_conversion.convert_vit('hf', str(tmp_path / 'hf'), out_dir, name='tiny_dinov2',
                                        image_size=224)
  assert info['name'] == 'tiny_dinov2' and info['image_size'] == 224 and info['source'] == 'hf'
  assert info['fields']['num_heads'] == 2 and info['fields']['pos_grid'] == 7
  assert info['fields']['ffn_layer'] == 'swiglu' and info['variant'] is None
  module, params = vit_io.load(out_dir)
  assert vit_lib.param_checksum(params) == info['param_checksum']
  _compare(module, params, model, 224, batch=1)   # 7x7 trained grid -> 16x16 at 224 px


# ----------------------------------------------------------------------------- timm


@pytest.mark.parametrize('registers', [0, 4])
def test_timm_layout_matches_hf_conversion(registers):
  """timm could not be imported here (it needs torchvision); its key layout is built by renaming."""
  model = _hf_model(registers=registers, width=128, seed=7)  # heads inferred: 128 / 64 = 2
  sd = _state_dict(model)
  module_hf, params_hf = dinov2_params.convert_state_dict(sd, 'hf')
  module_timm, params_timm = dinov2_params.convert_state_dict(
      _hf_to_timm(sd, no_embed_class=bool(registers)), 'timm')
  assert module_timm.num_heads == 2 and module_timm.num_registers == registers
  assert module_timm.pos_interp_antialias  # timm resamples with antialias=True
  images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 56, 56, 3)), jnp.float32)
  a = _apply(module_hf, params_hf, images)
  b = _apply(module_timm, params_timm, images)
  for key in ('cls', 'patches', 'registers'):
    np.testing.assert_allclose(a[key], b[key], atol=1e-5, rtol=0)
  if registers:  # both HF-with-registers and timm resample with antialias: identical at 98 px too
    images = jnp.asarray(np.random.default_rng(1).standard_normal((1, 98, 98, 3)), jnp.float32)
    a = _apply(module_hf, params_hf, images)
    b = _apply(module_timm, params_timm, images)
    np.testing.assert_allclose(a['patches'], b['patches'], atol=1e-5, rtol=0)
    _compare(module_timm, params_timm, model, 98, registers, batch=1)


def test_timm_parity_if_importable():
  timm = pytest.importorskip('timm')
  model = timm.create_model('vit_small_patch14_reg4_dinov2', pretrained=False, img_size=56,
                            embed_dim=128, num_heads=2, depth=2, dynamic_img_size=True,
                            num_classes=0).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'gamma' in name or 'token' in name or 'pos_embed' in name:
        p.copy_(0.5 * torch.randn_like(p))
  module, params = dinov2_params.convert_state_dict(_state_dict(model), 'timm')
  for size in (56, 98):
    images = np.random.default_rng(size).standard_normal((1, 3, size, size)).astype(np.float32)
    with torch.no_grad():
      ref = model.forward_features(torch.from_numpy(images)).numpy()
    out = _apply(module, params, jnp.asarray(images.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(out['cls'], ref[:, 0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out['patches'], ref[:, 5:], atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- bad input


def test_bad_state_dict_lists_keys_and_writes_nothing(tmp_path):
  sd = _state_dict(_hf_model(layers=1, seed=5))
  del sd['encoder.layer.0.norm2.bias']
  sd['encoder.layer.0.extra.weight'] = np.zeros(3, np.float32)
  sd['encoder.layer.0.attention.k_proj.weight'] = np.zeros((64, 32), np.float32)
  with pytest.raises(ValueError) as err:
    dinov2_params.convert_state_dict(sd, 'hf', num_heads=2)
  msg = str(err.value)
  assert 'encoder.layer.0.norm2.bias' in msg and 'missing' in msg
  assert 'encoder.layer.0.extra.weight' in msg and 'unexpected' in msg
  assert 'encoder.layer.0.attention.k_proj.weight: (64, 32) (expected (64, 64))' in msg

  path = str(tmp_path / 'bad.safetensors')
  safetensors_torch.save_file({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  out_dir = tmp_path / 'out'
  with pytest.raises(ValueError, match='missing'):
    teacher_conversion.convert_vit('hf', path, str(out_dir), num_heads=2)
  assert not out_dir.exists() and sorted(os.listdir(tmp_path)) == ['bad.safetensors']

  with pytest.raises(ValueError, match='patch_embed.proj.weight'):
    dinov2_params.convert_state_dict(sd, 'timm')  # an HF dict is not a timm dict
  with pytest.raises(FileNotFoundError, match='nothing_here'):
    teacher_conversion.convert_vit('hf', str(tmp_path / 'nothing_here.safetensors'), str(out_dir))
  with pytest.raises(ValueError, match='not a S/14 checkpoint'):
    good = _hf_model(layers=1, seed=5)
    good.save_pretrained(str(tmp_path / 'good'))
    teacher_conversion.convert_vit('hf', str(tmp_path / 'good'), str(out_dir), variant='S/14')
  assert not out_dir.exists()


# ----------------------------------------------------------------------------- checkpoints


def test_save_load_roundtrip(tmp_path):
  module = vit_lib.vit('tiny/14', num_registers=2)
  images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 84, 84, 3)), jnp.float32)
  params = _init(module, images)
  out_dir = str(tmp_path / 'ckpt')
  extra = {'name': 'random_tiny', 'image_size': 84, 'variant': 'tiny/14'}
  vit_io.save(out_dir, module, params, extra)
  vit_io.save(out_dir, module, params, extra)
  assert sorted(os.listdir(tmp_path)) == ['ckpt']  # replaced in place, no temp folders left
  info = vit_io.load_info(out_dir)
  assert info['variant'] == 'tiny/14' and info['name'] == 'random_tiny' and info['image_size'] == 84
  assert info['fields']['num_registers'] == 2 and info['fields']['dtype'] == 'float32'
  assert info['param_count'] == vit_lib.param_count(params)
  with open(os.path.join(out_dir, 'vit_config.json')) as f:
    assert json.load(f) == info
  loaded_module, loaded = vit_io.load(out_dir)
  assert loaded_module == module
  assert vit_lib.param_checksum(loaded) == vit_lib.param_checksum(params) == info['param_checksum']
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  a = _apply(module, params, images)
  b = _apply(loaded_module, loaded, images)
  np.testing.assert_array_equal(a['cls'], b['cls'])
  # a changed weight changes the checksum
  changed = jax.tree.map(lambda x: x, params)
  changed['norm']['bias'] = changed['norm']['bias'].at[0].add(1e-3)
  assert vit_lib.param_checksum(changed) != info['param_checksum']

  with pytest.raises(FileNotFoundError, match='missing_dir'):
    vit_io.load(str(tmp_path / 'missing_dir'))
  config_path = os.path.join(out_dir, 'vit_config.json')
  with open(config_path) as f:
    saved_info = json.load(f)
  with open(config_path, 'w') as f:   # weights that are not the ones recorded
    json.dump(dict(saved_info, param_checksum='0' * 64), f)
  with pytest.raises(ValueError, match=r"params: the parameters' checksum does not match "
                                       r"vit_config\.json's param_checksum 0000"):
    vit_io.load(out_dir)
  for text in ('{bad json', '[1, 2]', '\xff'):   # not JSON, not an object, not text
    with open(config_path, 'wb') as f:
      f.write(text.encode('latin-1'))
    with pytest.raises(ValueError, match=r'vit_config\.json: (not a readable|missing the "fields")'):
      vit_io.load_info(out_dir)
  os.remove(config_path)
  with pytest.raises(FileNotFoundError, match='vit_config.json'):
    vit_io.load_info(out_dir)
  with pytest.raises(ValueError, match='missing'):
    del params['norm']
    vit_io.save(str(tmp_path / 'bad'), module, params)
  assert not (tmp_path / 'bad').exists()


# ----------------------------------------------------------------------------- model behaviour


def _expected_count(width, depth, hidden, grid, registers=0, swiglu=False, patch=14):
  ffn = (width * 2 * hidden + 2 * hidden + hidden * width + width if swiglu
         else width * hidden + hidden + hidden * width + width)
  block = 4 * width + (width * 3 * width + 3 * width) + (width * width + width) + 2 * width + ffn
  return (patch * patch * 3 * width + width + width + (1 + grid * grid) * width
          + registers * width + depth * block + 2 * width)


def test_param_counts_of_named_variants():
  counts = {name: vit_lib.param_count(vit_lib.abstract_params(vit_lib.vit(name)))
            for name in vit_lib.VARIANTS}
  assert counts['B/14'] == _expected_count(768, 12, 3072, 37) == 86_579_712  # 86.6 M (518 px grid)
  assert counts['S/14'] == _expected_count(384, 12, 1536, 37)                # 22.1 M
  assert counts['L/14'] == _expected_count(1024, 24, 4096, 37)               # 304.4 M
  assert counts['g/14'] == _expected_count(1536, 40, 4096, 37, swiglu=True)  # 1136.5 M
  assert counts['tiny/14'] == _expected_count(64, 2, 256, 6)
  assert abs(counts['S/14'] - 22.06e6) < 0.01e6 and abs(counts['L/14'] - 304.4e6) < 0.1e6
  assert abs(counts['g/14'] - 1136.5e6) < 0.1e6
  with pytest.raises(ValueError, match='Unknown ViT variant'):
    vit_lib.vit('H/14')
  with pytest.raises(ValueError, match='widht'):
    vit_lib.vit('tiny/14', widht=3)


def test_keep_idx_permutation_equivariance_and_no_recompile():
  module = vit_lib.vit('tiny/14', num_registers=1)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal((2, 56, 56, 3)), jnp.float32)
  params = _init(module, images)
  apply = jax.jit(lambda p, x, idx: module.apply({'params': p}, x, keep_idx=idx))
  full = _apply(module, params, images)
  perm = np.stack([rng.permutation(16) for _ in range(2)]).astype(np.int32)
  out = apply(params, images, jnp.asarray(perm))
  # tokens see each other only through attention, so permuting the kept set permutes the outputs
  np.testing.assert_allclose(out['patches'], np.take_along_axis(np.asarray(full['patches']),
                                                                perm[:, :, None], 1), atol=1e-5)
  np.testing.assert_allclose(out['cls'], full['cls'], atol=1e-5)
  # a context subset: [B,P',D], and a second call with new values but equal shapes reuses the trace
  sub = apply(params, images, jnp.asarray(perm[:, :5]))
  assert sub['patches'].shape == (2, 5, 64) and apply._cache_size() == 2
  assert not np.allclose(sub['cls'], full['cls'], atol=1e-4)
  apply(params, images + 1.0, jnp.asarray(perm[::-1, :5].copy()))
  assert apply._cache_size() == 2


def test_bfloat16_compute_and_normalize_images():
  module = vit_lib.vit('tiny/14')
  images_u8 = np.random.default_rng(0).integers(0, 256, (2, 28, 42, 3), dtype=np.uint8)
  images = imaging.normalize_images(images_u8)
  assert images.dtype == np.float32 and isinstance(images, np.ndarray)
  np.testing.assert_allclose(images[1, 3, 5, 2], (images_u8[1, 3, 5, 2] / 255 - 0.406) / 0.225,
                             rtol=1e-6)
  np.testing.assert_allclose(imaging.normalize_images(jnp.asarray(images_u8)), images, atol=1e-6)
  params = _init(module, images)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  out32 = _apply(module, params, images)
  out16 = _apply(module.clone(dtype=jnp.bfloat16), params, images)
  assert out16['patches'].shape == (2, 6, 64) and out16['cls'].dtype == jnp.float32
  assert np.abs(out16['patches'] - out32['patches']).max() < 0.1
  with pytest.raises(ValueError, match='multiple of the patch size'):
    _apply(module, params, images[:, :27])


def test_safetensors_read_without_torch(tmp_path):
  """A core install (no torch) reads .safetensors teachers: run with torch made unimportable."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = (
      'import sys, numpy as np; sys.modules["torch"] = None\n'
      'from safetensors.numpy import save_file\n'
      'from crossjepa.weights import state_dict_files\n'
      f'p = {str(tmp_path / "m.safetensors")!r}\n'
      'save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, p)\n'
      'sd, _ = state_dict_files.read_state_dict(p)\n'
      'assert sd["w"].dtype == np.float32 and float(sd["w"].sum()) == 15.0\n'
      'print("ok")\n')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=root,
                       timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-2000:]
