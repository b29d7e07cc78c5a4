"""model.attention: the fused `jax.nn.dot_product_attention` path equals the explicit einsum one.

Same params, same values (float32 to 1e-5, bfloat16 to its rounding), the same pretraining loss, and
the switch reaches every transformer the config builds.
"""
import jax
import jax.numpy as jnp
import numpy as np
from unittest import mock

import pytest

from crossjepa import config_util
from crossjepa import testing
from crossjepa.data import teacher_cache
from crossjepa.models import layers
from crossjepa.models import point as point_lib
from crossjepa.models import predictor as predictor_lib
from crossjepa.models import teacher as teacher_lib
from crossjepa.models import vit as vit_lib
from crossjepa.training.recipes import models as models_lib
from tests.test_step import run_steps, smoke_config

WIDTH = 48                    # divisible by every head count below
# (num_heads, tokens): head dims 48, 24, 16, 12; odd token counts as a CLS + patch grid gives.
SHAPES = [(1, 65), (2, 257), (3, 16), (4, 65)]
BF16_ATOL = 2e-2              # on O(1) outputs: a few bf16 ulps (2^-8 relative)
BF16_REL = 1e-2               # |out - ref| / |ref|, the top of the bf16 band of device/METHOD.md


def _attention(num_heads, attention, dtype=jnp.float32):
  return layers.Attention(WIDTH, num_heads, dtype=dtype, attention=attention)


def _inputs(tokens, seed, dtype=jnp.float32):
  x = jax.random.normal(jax.random.PRNGKey(seed), (2, tokens, WIDTH), jnp.float32)
  return x.astype(dtype)


def _both(num_heads, tokens, dtype, seed=0):
  x = _inputs(tokens, seed, dtype)
  params = _attention(num_heads, 'einsum').init(jax.random.PRNGKey(seed + 1), x)
  outs = [jax.jit(_attention(num_heads, a, dtype).apply)(params, x)
          for a in ('einsum', 'dot_product')]
  return params, x, [np.asarray(o.astype(jnp.float32)) for o in outs]


def _reference(params, x, num_heads):
  """float64 NumPy attention on the same params (the modules' weights and x upcast)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params['params'])
  x = np.asarray(x.astype(jnp.float32), np.float64)
  b, t, _ = x.shape
  qkv = (x @ p['qkv']['kernel'] + p['qkv']['bias']).reshape(b, t, 3, num_heads, -1)
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, t, WIDTH)
  return out @ p['proj']['kernel'] + p['proj']['bias']


def _rel(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize('num_heads,tokens', SHAPES)
def test_float32_equal(num_heads, tokens):
  _, _, (einsum, dot) = _both(num_heads, tokens, jnp.float32)
  assert np.isfinite(dot).all()
  assert float(np.abs(einsum).max()) > 0.1                       # O(1) outputs: atol is meaningful
  np.testing.assert_allclose(dot, einsum, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('num_heads,tokens', SHAPES)
def test_bfloat16_within_bf16_rounding(num_heads, tokens):
  params, x, (einsum, dot) = _both(num_heads, tokens, jnp.bfloat16)
  assert np.isfinite(dot).all()
  np.testing.assert_allclose(dot, einsum, rtol=0, atol=BF16_ATOL)
  assert _rel(dot, einsum) < BF16_REL
  ref = _reference(params, x, num_heads)       # both are bf16 roundings of the same function
  assert _rel(einsum, ref) < BF16_REL and _rel(dot, ref) < BF16_REL


def test_einsum_path_is_the_reference():
  """The default path against float64: float32 arithmetic, far under 1e-3 (and not the fused op)."""
  params, x, (einsum, _) = _both(2, 65, jnp.float32)
  assert _rel(einsum, _reference(params, x, 2)) < 1e-5


def _shapes(tree):
  return jax.tree.map(lambda a: (a.shape, a.dtype), tree)


def test_same_params_for_both_values():
  x = _inputs(17, 0)
  points = jnp.zeros((1, 64, 3))
  images = jnp.zeros((1, 84, 84, 3))
  context = jnp.zeros((1, 5, 96))
  builders = {
      'attention': (lambda a: _attention(4, a), (x,), {}),
      'point': (lambda a: point_lib.point_encoder('tiny', num_groups=8, group_size=8, attention=a),
                (points,), {}),
      'predictor': (lambda a: predictor_lib.predictor('tiny', out_dim=32, attention=a), (context,),
                    dict(world_to_cam=jnp.eye(4)[None], hist=jnp.zeros((1, 24)))),
      'vit': (lambda a: vit_lib.vit('tiny/14', attention=a), (images,), {}),
  }
  for name, (build, args, kwargs) in builders.items():
    trees = [jax.eval_shape(lambda m=build(a): m.init(jax.random.PRNGKey(0), *args, **kwargs))
             for a in layers.ATTENTIONS]
    for tree in trees[1:]:
      assert jax.tree.structure(tree) == jax.tree.structure(trees[0]), name
      assert _shapes(tree) == _shapes(trees[0]), name


def trained_transformers(**model):
  """The smoke config with `model` fields set: name -> module of every transformer it trains (the
  seed recipe's point encoder, predictors and view encoder; the I-JEPA teacher's ViT and predictor)."""
  c = smoke_config()
  c.recipe = 'seed'
  c.model.update(model)
  config_util.check_config(c)
  models = models_lib.build_models(c, models_lib.teacher_widths(16))
  out = {name: getattr(models, name) for name in ('point', 'predictor', 'local_predictor', 'vit')}
  from crossjepa.training import teacher_models  # pylint: disable=g-import-not-at-top
  t = c.copy_and_resolve_references()
  t.teacher.train.kind = 'ijepa'
  t.data.image_size = 84                        # a 6 x 6 grid leaves context beside the targets
  ijepa = teacher_models.build_models(t, 2)
  return c, {**out, 'teacher_vit': ijepa.vit, 'teacher_predictor': ijepa.predictor}


def test_config_reaches_every_transformer():
  c, modules = trained_transformers(attention='dot_product')
  for name, module in modules.items():
    assert module.attention == 'dot_product', name
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  assert export_lib.point_encoder_from_config(c).attention == 'dot_product'


def test_teacher_cache_follows_the_config():
  c = smoke_config()
  module = vit_lib.vit('tiny/14')
  images = np.random.RandomState(0).randint(0, 256, (2, 28, 28, 3)).astype(np.uint8)
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 3)))['params']
  outs = {}
  for attention in ('einsum', 'dot_product'):
    c.model.attention = attention
    cache = teacher_cache.Teacher(c, module=module, params=params, name='t')
    assert cache.module.attention == attention and cache.spec.fields['attention'] == attention
    outs[attention] = cache.teacher(images)
  for key in outs['einsum']:
    np.testing.assert_allclose(outs['dot_product'][key], outs['einsum'][key], rtol=1e-5, atol=1e-5)
  same = teacher_lib.with_attention(cache.teacher, 'dot_product')
  assert same is cache.teacher                                    # nothing to change: no copy


def test_cudnn_applies_only_where_its_kernel_does(monkeypatch):
  """'cudnn' off a GPU (here: the CPU) is the 'dot_product' XLA lowering, bitwise, with the reason
  logged once; on a GPU the kernel is used for bfloat16/float16 and head dims 8k <= 128 only."""
  x = _inputs(65, 3, jnp.bfloat16)
  params = _attention(4, 'einsum').init(jax.random.PRNGKey(4), x)
  layers._CUDNN_FALLBACKS.clear()   # pylint: disable=protected-access
  with mock.patch.object(layers.logging, 'warning') as warn:
    cudnn = jax.jit(_attention(4, 'cudnn', jnp.bfloat16).apply)(params, x)
    jax.jit(_attention(2, 'cudnn', jnp.bfloat16).apply)(params, x)   # same reason: not again
  dot = jax.jit(_attention(4, 'dot_product', jnp.bfloat16).apply)(params, x)
  np.testing.assert_array_equal(np.asarray(cudnn, np.float32), np.asarray(dot, np.float32))
  assert warn.call_count == 1 and 'not a GPU' in warn.call_args[0][1]
  assert 'not a GPU' in layers.cudnn_unavailable(jnp.bfloat16, 64)
  monkeypatch.setattr(layers.jax, 'default_backend', lambda: 'gpu')
  assert layers.cudnn_unavailable(jnp.bfloat16, 64) is None
  assert layers.cudnn_unavailable(jnp.float16, 128) is None
  assert 'float32' in layers.cudnn_unavailable(jnp.float32, 64)
  assert 'head dim is 12' in layers.cudnn_unavailable(jnp.bfloat16, 12)
  assert 'head dim is 256' in layers.cudnn_unavailable(jnp.bfloat16, 256)


def step_losses(num_steps, **model):
  """The losses of `num_steps` smoke-config pretraining steps on one device, `model` fields set."""
  c = smoke_config()
  c.model.update(model)
  config_util.check_config(c)
  batch = testing.synthetic_batch(c, 4, teacher_dim=16)
  _, hist, _ = run_steps(c, batch, num_steps, devices=jax.devices()[:1])
  return [float(h['loss']) for h in hist]


def test_train_step_loss_equal():
  losses = {a: step_losses(1, attention=a)[0] for a in ('einsum', 'dot_product')}
  assert np.isfinite(losses['einsum'])
  assert losses['dot_product'] == pytest.approx(losses['einsum'], rel=1e-5, abs=1e-5), losses


@pytest.mark.parametrize('field,value', [('attention', 'flash'), ('remat', 'some')])
def test_bad_value_is_named(field, value):
  """model.attention and model.remat (tests/test_remat.py): the config check and the module."""
  c = smoke_config()
  c.model[field] = value
  with pytest.raises(config_util.ConfigError,
                     match=rf"config.model.{field} = '{value}': expected one of"):
    config_util.check_config(c)
  with pytest.raises(ValueError, match=f'{field} must be one of'):
    layers.Transformer(1, WIDTH, 2, **{field: value}).init(jax.random.PRNGKey(0), _inputs(4, 0))
