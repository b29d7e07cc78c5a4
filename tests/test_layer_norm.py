"""layers.LayerNorm: nn.LayerNorm's function and params with a backward pass that keeps x in its
own dtype and two float32 numbers a row (the trained models' norm in a bfloat16 step).

Forward bitwise equal to nn.LayerNorm; gradients as close to a float64 reference as autodiff's
are; what the backward pass keeps counted (and what autodiff of nn.LayerNorm keeps, so the
saving is measured, not assumed); layers.norm picks it for narrow dtypes only (float32 results
stay bitwise); nn.remat over it; the models' param trees unchanged (checkpoints still load).
"""
import flax.linen as nn
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


def _case(dtype, shape=(3, 5, 7, 96), x_dtype=None):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape) * 3 + 1.5, x_dtype or dtype)
  w = jnp.asarray(rng.normal(size=shape), jnp.float32)
  params = {'params': {'scale': jnp.asarray(1 + 0.3 * rng.normal(size=shape[-1]), jnp.float32),
                       'bias': jnp.asarray(0.2 * rng.normal(size=shape[-1]), jnp.float32)}}
  return x, w, params


@pytest.mark.parametrize('dtype,x_dtype,fast', [(jnp.bfloat16, None, True),
                                                (jnp.float16, None, True),
                                                (jnp.bfloat16, jnp.float32, True),
                                                (jnp.bfloat16, None, False)])
def test_same_params_values_and_gradients_as_flax(dtype, x_dtype, fast):
  """fast: nn.LayerNorm's use_fast_variance (False: the ViT's, E[(x - mean)^2] as torch)."""
  x, w, params = _case(dtype, x_dtype=x_dtype)
  ours = layers.LayerNorm(1e-5, dtype, fast_variance=fast)
  flax_ln = nn.LayerNorm(epsilon=1e-5, dtype=dtype, use_fast_variance=fast)
  init = lambda m: jax.tree.map(np.asarray, m.init(jax.random.key(0), x))
  jax.tree.map(np.testing.assert_array_equal, init(ours), init(flax_ln))
  got, want = jax.jit(ours.apply)(params, x), jax.jit(flax_ln.apply)(params, x)
  assert got.dtype == want.dtype == jnp.dtype(dtype)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))

  def grads(module):
    f = lambda p, x: jnp.sum(module.apply(p, x).astype(jnp.float32) * w)
    return jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)
  g_ours, g_flax = grads(ours), grads(flax_ln)
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    ref = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float64, param_dtype=jnp.float64,
                       use_fast_variance=False)
    f64 = lambda p, x: jnp.sum(ref.apply(p, x) * np.asarray(w, np.float64))
    g_ref = jax.grad(f64, argnums=(0, 1))(p64, np.asarray(x, np.float64))
    g_ref = jax.tree.map(np.asarray, g_ref)
  for path, a, b, r in zip(jax.tree_util.tree_leaves_with_path(g_ours), jax.tree.leaves(g_ours),
                           jax.tree.leaves(g_flax), jax.tree.leaves(g_ref)):
    name = jax.tree_util.keystr(path[0])
    assert a.dtype == b.dtype, name
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err_ours, err_flax = np.abs(a - r).max(), np.abs(b - r).max()
    # The output's cotangent is rounded to `dtype` on its way in (the cast's vjp), so both sit
    # about dtype's rounding away from float64, and ours no further than autodiff's.
    assert err_ours <= max(1.05 * err_flax, 1e-6 * np.abs(r).max()), (name, err_ours, err_flax)
    assert err_ours <= 4 * float(jnp.finfo(dtype).eps) * np.abs(r).max(), (name, err_ours)


def test_backward_keeps_x_and_two_numbers_a_row():
  """What the vjp over params and a bfloat16 x keeps: x itself (2 bytes an element), the float32
  mean and 1 / std of each row and the scale; autodiff of nn.LayerNorm keeps three float32
  arrays of x's shape (x widened for E[x^2], x - mean, and its product with rsqrt(var) * scale:
  12 bytes an element) beside its per-row statistics."""
  x, _, params = _case(jnp.bfloat16, shape=(4, 16, 32, 128))
  rows, width = x.shape[:-1], x.shape[-1]
  kept = {}
  for name, module in (('ours', layers.LayerNorm(1e-5, jnp.bfloat16)),
                       ('flax', nn.LayerNorm(epsilon=1e-5, dtype=jnp.bfloat16))):
    f = lambda q, m=module: jnp.sum(m.apply(q['p'], q['x']).astype(jnp.float32))
    leaves = testing.backward_residuals(f, {'p': params, 'x': x})
    kept[name] = sorted((tuple(a.shape), jnp.dtype(a.dtype).name) for a in leaves)
  row_stat = (rows + (1,), 'float32')
  assert kept['ours'] == sorted([(x.shape, 'bfloat16'), row_stat, row_stat,
                                 ((width,), 'float32')]), kept['ours']
  assert kept['flax'].count((x.shape, 'float32')) == 3, kept['flax']
  size = lambda leaves: sum(np.prod(s) * np.dtype(d).itemsize for s, d in leaves)
  assert size(kept['ours']) < size(kept['flax']) / 5, kept


def test_norm_picks_by_dtype():
  """float32 (the default config, every recorded CPU result) keeps nn.LayerNorm itself."""
  assert type(layers.norm(1e-6, jnp.float32, 'n')) is nn.LayerNorm
  assert type(layers.norm(1e-6, 'float32', 'n')) is nn.LayerNorm
  assert not layers.norm(1e-6, jnp.float32, 'n', fast_variance=False).use_fast_variance
  for dtype in (jnp.bfloat16, 'bfloat16', jnp.float16):
    assert type(layers.norm(1e-6, dtype, 'n')) is layers.LayerNorm
  assert not layers.norm(1e-6, 'bfloat16', 'n', fast_variance=False).fast_variance


def _models(dtype, remat='none'):
  rng = np.random.default_rng(1)
  points = jnp.asarray(rng.normal(size=(2, 128, 3)), jnp.float32)
  context = jnp.asarray(rng.normal(size=(2, 8, 96)), jnp.float32)
  cond = dict(world_to_cam=jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32),
              hist=jnp.asarray(rng.dirichlet(np.ones(24), size=2), jnp.float32))
  images = jnp.asarray(rng.uniform(size=(2, 28, 28, 3)), jnp.float32)
  enc = point_lib.point_encoder('tiny', num_groups=8, group_size=16, depth=1, dtype=dtype,
                                remat=remat)
  pred = predictor_lib.predictor('tiny', out_dim=32, depth=1, dtype=dtype, remat=remat)
  view_encoder = vit_lib.vit('tiny/14', depth=1, dtype=dtype, remat=remat)
  return (enc, (points,), {}), (pred, (context,), cond), (view_encoder, (images,), {})


def _loss(module, args, kwargs):
  def f(p):
    out = module.apply(p, *args, **kwargs)
    return sum(jnp.sum(jnp.sin(a.astype(jnp.float32))) for a in jax.tree.leaves(out)
               if jnp.issubdtype(a.dtype, jnp.floating))
  return f


def test_models_params_unchanged_and_bfloat16_tracks_flax_norm():
  """The point encoder, predictor and ViT (the seed recipe's view encoder) in bfloat16 build the same param tree with either norm (a
  checkpoint of one loads in the other), give the same loss bitwise and gradients within
  bfloat16's rounding; and they do use layers.LayerNorm (the kept bytes, beyond the params the
  vjp reads, drop)."""
  for module, args, kwargs in _models('bfloat16'):
    results, kept, trees = {}, {}, {}
    for norm in ('flax', 'kept'):
      testing.use_norm(norm)
      try:
        params = fast_init(module, *args, **kwargs)
        trees[norm] = jax.tree.map(lambda a: (a.shape, a.dtype), params)
        f = _loss(module, args, kwargs)
        results[norm] = jax.jit(jax.value_and_grad(f))(params)
        kept[norm] = (testing.nbytes(testing.backward_residuals(lambda p: f(p), params))
                      - testing.nbytes(params))
      finally:
        testing.use_norm('kept')
    name = type(module).__name__
    assert trees['kept'] == trees['flax'], name
    assert float(results['kept'][0]) == float(results['flax'][0]), name
    # Beyond the params: the point encoder keeps under two fifths (its mini-PointNet's per-point
    # norms are most of the saving); the predictor's and ViT's few tokens save less, but save.
    assert kept['kept'] < kept['flax'], (name, kept)
    if name == 'PointEncoder':
      assert kept['kept'] < 0.4 * kept['flax'], kept
    for a, b in zip(jax.tree.leaves(results['kept'][1]), jax.tree.leaves(results['flax'][1])):
      scale = float(np.abs(b).max(initial=0))
      np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2 * scale + 1e-6, err_msg=name)


@pytest.mark.parametrize('remat', ['full', 'dots'])
def test_remat_over_it_gives_the_same_gradients(remat):
  for (module, args, kwargs), (plain, _, _) in zip(_models('bfloat16', remat),
                                                   _models('bfloat16')):
    params = fast_init(plain, *args, **kwargs)
    got = jax.jit(jax.grad(_loss(module, args, kwargs)))(params)
    want = jax.jit(jax.grad(_loss(plain, args, kwargs)))(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      scale = float(np.abs(b).max(initial=0))
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                 rtol=2e-2, atol=2e-2 * scale + 1e-6,
                                 err_msg=f'{type(module).__name__} {remat}')
