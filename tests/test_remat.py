"""model.remat: recomputing the blocks' activations in the backward pass changes nothing but memory.

Same params, same outputs and gradients (stochastic depth on), the same pretraining steps; the
residuals kept for the backward pass shrink as predicted ('full': each block's input; 'dots': the
dense layers' outputs); and the switch reaches every trained transformer the config builds
(a bad value: tests/test_attention.py).
"""
import jax
import jax.numpy as jnp
import numpy as np

import pytest

from crossjepa import testing
from crossjepa.testing import fast_init
from crossjepa.models import layers
from crossjepa.models import point as point_lib
from crossjepa.models import predictor as predictor_lib
from crossjepa.models import vit as vit_lib
from tests.test_attention import step_losses, trained_transformers

RNGS = {'dropout': jax.random.key(7)}


def _cases():
  """name -> (build(remat), args, kwargs) with train=True and stochastic depth on."""
  rng = np.random.default_rng(0)
  points = jnp.asarray(rng.normal(size=(2, 64, 3)), jnp.float32)
  images = jnp.asarray(rng.uniform(size=(2, 28, 28, 3)), jnp.float32)
  context = jnp.asarray(rng.normal(size=(2, 5, 96)), jnp.float32)
  tokens = jnp.asarray(rng.normal(size=(2, 9, 48)), jnp.float32)
  cond = dict(world_to_cam=jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32),
              hist=jnp.asarray(rng.dirichlet(np.ones(24), size=2), jnp.float32),
              query_pos=jnp.asarray(rng.normal(size=(2, 3, 3)), jnp.float32))
  return {
      'transformer': (lambda r: layers.Transformer(2, 48, 4, drop_path=0.2, remat=r),
                      (tokens,), {}),
      'point': (lambda r: point_lib.point_encoder('tiny', num_groups=8, group_size=8, depth=2,
                                                  drop_path=0.2, remat=r), (points,), {}),
      'predictor': (lambda r: predictor_lib.predictor('tiny', out_dim=32, depth=2, drop_path=0.2,
                                                      remat=r), (context,), cond),
      'vit': (lambda r: vit_lib.vit('tiny/14', depth=2, drop_path_rate=0.2, remat=r), (images,), {}),
  }


def _scalar(out):
  """A loss of every output leaf (the point encoder's and ViT's are dicts)."""
  return sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(out)
             if jnp.issubdtype(a.dtype, jnp.floating))


@pytest.mark.parametrize('name', ['transformer', 'point', 'predictor', 'vit'])
def test_same_params_outputs_and_gradients(name):
  build, args, kwargs = _cases()[name]
  params = fast_init(build('none'), *args, **kwargs)
  want_tree = jax.tree.map(lambda a: (a.shape, a.dtype), params)
  results = {}
  for remat in layers.REMATS:
    module = build(remat)
    tree = jax.eval_shape(lambda m=module: m.init(jax.random.PRNGKey(0), *args, **kwargs))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), tree) == want_tree, (name, remat)

    def loss(p, m=module):
      out = m.apply(p, *args, train=True, rngs=RNGS, **kwargs)
      return _scalar(out), out
    results[remat] = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  (want_loss, want_out), want_grad = results['none']
  assert max(float(np.abs(g).max(initial=0)) for g in jax.tree.leaves(want_grad)) > 0
  for remat in ('full', 'dots'):
    (got_loss, got_out), got_grad = results[remat]
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-5, abs=1e-5), remat
    for a, b in zip(jax.tree.leaves(got_out), jax.tree.leaves(want_out)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max(initial=0)) + 1e-7)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got_grad),
                            jax.tree.leaves(want_grad)):
      scale = float(np.abs(b).max(initial=0))
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale + 1e-8,
                                 err_msg=f'{name} {remat} {jax.tree_util.keystr(path)}')


def test_residuals_shrink_as_predicted():
  """The bytes jax.vjp keeps for the backward pass (the vjp function's leaves: the params, then
  the residuals) of a depth-3 transformer, B x T x D = 4 x 64 x 96 float32 (one activation A =
  98 kB): 'full' keeps each block's input (depth x A), 'dots' each block's qkv, proj, fc1 and fc2
  outputs (depth x (3 + 1 + 4 + 1) A), each plus at most two more activations (the loss's own);
  'none' keeps far more (the LayerNorms, the attention weights, the GELU)."""
  b, t, d, depth = 4, 64, 96, 3
  x = jax.random.normal(jax.random.PRNGKey(0), (b, t, d))
  act = b * t * d * 4
  kept = {}
  for remat in layers.REMATS:
    module = layers.Transformer(depth, d, 4, drop_path=0.1, remat=remat)
    params = fast_init(module, x)
    f = lambda p, m=module: _scalar(m.apply(p, x, train=True, rngs=RNGS))
    kept[remat] = testing.nbytes(testing.backward_residuals(f, params))
  p_bytes = testing.nbytes(params)
  for remat, per_block in (('full', 1), ('dots', 9)):
    predicted = p_bytes + depth * per_block * act
    assert predicted <= kept[remat] <= predicted + 2 * act, (remat, kept, predicted)
  assert kept['none'] > p_bytes + depth * 20 * act, kept


def test_point_encoder_remats_its_tokenizer():
  """The mini-PointNet's per-point activations are most of the point encoder's residuals:
  'full' keeps only its [B,G,K,3] input (all that is left: < 5 % of no remat's), 'dots' its four
  dense layers' outputs per point (conv1-conv4: w0 + w1 + w2 + D channels), beside the blocks'
  dots (9 token activations a block) and what 'full' keeps anyway (the position MLP, the norm)."""
  b, g, k, depth = 4, 16, 16, 1
  points = jax.random.normal(jax.random.PRNGKey(0), (b, 256, 3))
  kept = {}
  for remat in layers.REMATS:
    module = point_lib.point_encoder('tiny', num_groups=g, group_size=k, depth=depth, remat=remat)
    params = fast_init(module, points)
    f = lambda p, m=module: _scalar(m.apply(p, points)['tokens'])
    kept[remat] = testing.nbytes(testing.backward_residuals(f, params)) - testing.nbytes(params)
  token_act = b * g * module.width * 4
  tokenizer_dots = b * g * k * (sum(module.tokenizer_widths) + module.width) * 4
  assert kept['full'] < 0.05 * kept['none'], kept
  low = tokenizer_dots
  high = tokenizer_dots + kept['full'] + (9 * depth + 2) * token_act
  assert low <= kept['dots'] <= high, (kept, low, high)


def test_config_reaches_every_trained_transformer():
  _, modules = trained_transformers(remat='dots')
  for name, module in modules.items():
    assert module.remat == 'dots', name


def test_train_steps_equal():
  """Three pretraining steps (the warmup starts at lr 0): the later losses read the updates, so
  they check the gradients through the whole train step too."""
  losses = {r: step_losses(3, remat=r) for r in ('none', 'full')}
  assert np.isfinite(losses['none']).all() and losses['none'][0] != losses['none'][2]
  np.testing.assert_allclose(losses['full'], losses['none'], rtol=1e-5, atol=1e-5)

