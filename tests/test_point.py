"""PointEncoder: parameter counts, precomputed vs computed groups, invariances, jit, sharding, bf16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crossjepa import ops
from crossjepa import testing
from crossjepa.testing import fast_init
from crossjepa.models import point

B, N = 8, 128


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def block_formula(d: int) -> int:
  # norm1 2d + qkv (3d^2 + 3d) + proj (d^2 + d) + norm2 2d + fc1 (4d^2 + 4d) + fc2 (4d^2 + d)
  return 12 * d * d + 13 * d


def encoder_formula(width, depth, tokenizer_widths, pos_hidden, use_cls=False, **_) -> int:
  w0, w1, w2 = tokenizer_widths
  d = width
  tokenizer = (3 * w0 + w0) + 2 * w0 + (w0 * w1 + w1) + (2 * w1 * w2 + w2) + 2 * w2 + (w2 * d + d)
  center_embed = (3 * pos_hidden + pos_hidden) + (pos_hidden * d + d)
  cls = 2 * d if use_cls else 0        # cls_token + cls_pos_embed
  return tokenizer + center_embed + depth * block_formula(d) + 2 * d + cls


def abstract_params(module, n=64):
  return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, n, 3))))['params']


@pytest.mark.parametrize('variant', sorted(point.VARIANTS))
def test_param_counts(variant):
  fields = point.VARIANTS[variant]
  assert count(abstract_params(point.point_encoder(variant))) == encoder_formula(**fields)
  assert (count(abstract_params(point.point_encoder(variant, use_cls=True)))
          == encoder_formula(**fields, use_cls=True))


def test_named_sizes():
  assert count(abstract_params(point.point_encoder('paper'))) == 8_476_032
  assert abs(count(abstract_params(point.point_encoder('paper'))) - 8.5e6) <= 0.3e6
  s = point.VARIANTS['S']
  assert (s['depth'], s['width'], s['num_heads'], s['num_groups'], s['group_size']) == (12, 384, 6, 64, 32)


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  pts = jnp.asarray(rng.normal(size=(B, N, 3)), jnp.float32)
  enc = point.point_encoder('tiny', num_groups=16, group_size=8)
  params = fast_init(enc, pts)
  centers, groups = ops.group_points(pts, 16, 8)
  # One jitted apply for every test (eager op-by-op execution is far slower on CPU); None
  # arguments are empty pytrees, so each pattern of given inputs compiles once.
  apply = jax.jit(lambda p, x, c=None, g=None, k=None: enc.apply(p, x, c, g, keep_idx=k))
  return enc, params, pts, centers, groups, apply


def test_computed_vs_precomputed_groups(setup):
  enc, params, pts, centers, groups, apply = setup
  computed = apply(params, pts)
  given = apply(params, pts, centers, groups)
  np.testing.assert_array_equal(computed['centers'], centers)
  np.testing.assert_allclose(computed['tokens'], given['tokens'], atol=1e-6)
  only_centers = apply(params, pts, centers)
  np.testing.assert_allclose(only_centers['tokens'], given['tokens'], atol=1e-6)
  assert given['tokens'].shape == (B, 16, 96) and given['tokens'].dtype == jnp.float32
  assert 'cls' not in given
  # The output is not trivially constant across groups/objects.
  assert float(jnp.std(given['tokens'][:, :, 0])) > 1e-2


def test_keep_idx(setup):
  enc, params, pts, centers, groups, apply = setup
  full = apply(params, pts, centers, groups)
  all_idx = jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (B, 16))
  kept = apply(params, pts, centers, groups, all_idx)
  np.testing.assert_allclose(kept['tokens'], full['tokens'], atol=1e-6)
  # A subset equals encoding that subset's centres/groups directly.
  sub = jnp.asarray(np.stack([np.random.default_rng(b).permutation(16)[:6] for b in range(B)]), jnp.int32)
  kept = apply(params, pts, centers, groups, sub)
  direct = apply(params, pts, ops.gather(centers, sub), ops.gather(groups, sub))
  np.testing.assert_allclose(kept['tokens'], direct['tokens'], atol=1e-6)
  np.testing.assert_array_equal(kept['centers'], ops.gather(centers, sub))
  assert kept['tokens'].shape == (B, 6, 96)


def test_group_order_equivariance_and_point_order_invariance(setup):
  enc, params, pts, centers, groups, apply = setup
  full = apply(params, pts, centers, groups)['tokens']
  perm = np.random.default_rng(1).permutation(16)
  permuted = apply(params, pts, centers[:, perm], groups[:, perm])['tokens']
  np.testing.assert_allclose(permuted, full[:, perm], atol=1e-5)
  # Shuffling the points inside each group leaves every token unchanged (max-pooled PointNet).
  inner = np.random.default_rng(2).permutation(8)
  np.testing.assert_allclose(apply(params, pts, centers, groups[:, :, inner])['tokens'], full, atol=1e-5)
  # Shuffling the cloud itself (and remapping the group indices) changes nothing either.
  cloud_perm = np.random.default_rng(3).permutation(N)
  inverse = np.argsort(cloud_perm)
  moved = apply(params, pts[:, cloud_perm], centers, jnp.asarray(inverse)[groups])['tokens']
  np.testing.assert_allclose(moved, full, atol=1e-5)


def test_no_recompile(setup):
  enc, params, pts, centers, groups, apply = setup
  apply(params, pts, centers, groups)
  before = apply._cache_size()
  apply(params, pts + 0.1, centers, groups)
  apply(params, pts * 0.5, centers * 0.5, groups)
  assert apply._cache_size() == before
  apply(params, pts[:4], centers[:4], groups[:4])   # a new shape does compile: the count works
  assert apply._cache_size() == before + 1


def test_sharded_equals_single_device(setup):
  enc, params, pts, centers, groups, apply = setup
  assert len(jax.devices()) == 8
  mesh = Mesh(np.array(jax.devices()), ('data',))
  data, repl = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  fn = jax.jit(lambda p, x: enc.apply(p, x), in_shardings=(repl, data), out_shardings=data)
  sharded = fn(jax.device_put(params, repl), jax.device_put(pts, data))
  single = apply(params, pts)
  assert len(sharded['tokens'].sharding.device_set) == 8
  np.testing.assert_allclose(sharded['tokens'], single['tokens'], atol=1e-5)
  np.testing.assert_array_equal(sharded['centers'], single['centers'])


def test_cls_and_bf16(setup):
  _, _, pts, centers, groups, _ = setup
  enc = point.point_encoder('tiny', use_cls=True)
  params = fast_init(enc, pts, centers, groups, seed=1)
  out = jax.jit(enc.apply)(params, pts, centers, groups)
  assert out['cls'].shape == (B, 96) and out['tokens'].shape == (B, 16, 96)
  enc16 = point.point_encoder('tiny', use_cls=True, dtype='bfloat16')
  out16 = jax.jit(enc16.apply)(params, pts, centers, groups)       # same float32 params
  assert out16['tokens'].dtype == jnp.float32 and out16['cls'].dtype == jnp.float32
  for key in ('tokens', 'cls'):
    err = float(jnp.max(jnp.abs(out16[key] - out[key])))
    assert err < 0.1, (key, err)                   # outputs are layer-normed: O(1) values
    assert float(jnp.mean(jnp.abs(out16[key] - out[key]))) < 0.02


def test_drop_path_only_in_training(setup):
  _, _, pts, centers, groups, _ = setup
  enc = point.point_encoder('tiny', drop_path=0.5)
  params = fast_init(enc, pts, centers, groups, seed=1)
  run = jax.jit(lambda p, key, train: enc.apply(p, pts, centers, groups, train=train,
                                                  rngs={'dropout': key})['tokens'], static_argnums=2)
  key = jax.random.key(0)
  ev = run(params, key, False)
  assert float(jnp.max(jnp.abs(run(params, key, True) - ev))) > 1e-3
  np.testing.assert_array_equal(run(params, key, True), run(params, key, True))
  assert float(jnp.max(jnp.abs(run(params, jax.random.key(1), True) - run(params, key, True)))) > 1e-3


def test_bad_inputs():
  enc = point.point_encoder('tiny')
  pts = jnp.zeros((2, 64, 3))
  with pytest.raises(ValueError, match='groups` given without `centers'):
    enc.init(jax.random.key(0), pts, None, jnp.zeros((2, 32, 16), jnp.int32))
  with pytest.raises(ValueError, match=r'`points` must be \[B,N,3\]'):
    enc.init(jax.random.key(0), jnp.zeros((2, 64)))
  with pytest.raises(ValueError, match='unknown field'):
    point.point_encoder('tiny', widht=3)
  with pytest.raises(ValueError, match='unknown variant'):
    point.point_encoder('huge')


def _tokenizer_pair(dtype=jnp.float32, widths=(32, 64, 128), out=96):
  return (point.MiniPointNet(widths, out, dtype), testing.ConcatMiniPointNet(widths, out, dtype))


def test_tokenizer_equals_point_mae_concat_form():
  """conv3 as GlobalLocalDense: the same parameters and init values as Point-MAE's Dense on the
  concatenation, the same tokens and gradients (float32 within 1e-5; bfloat16 within its rounding)."""
  split, concat = _tokenizer_pair()
  nb = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 16, 3)), jnp.float32)
  p_split = jax.jit(split.init)(jax.random.key(3), nb)
  p_concat = jax.jit(concat.init)(jax.random.key(3), nb)
  assert jax.tree.structure(p_split) == jax.tree.structure(p_concat)
  for a, b in zip(jax.tree.leaves(p_split), jax.tree.leaves(p_concat)):
    np.testing.assert_array_equal(a, b)
  params = fast_init(split, nb, seed=1)
  want = jax.jit(concat.apply)(params, nb)
  got = jax.jit(split.apply)(params, nb)
  assert got.shape == (2, 4, 96)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
  loss = lambda m: (lambda p: jnp.sum(jnp.sin(m.apply(p, nb))))
  g_split, g_concat = (jax.jit(jax.grad(loss(m)))(params) for m in (split, concat))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_split), jax.tree.leaves(g_concat)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()),
                               err_msg=jax.tree_util.keystr(path))
  assert float(jnp.abs(g_split['params']['conv3']['kernel'][:64]).max()) > 0   # group half is used
  split16, concat16 = _tokenizer_pair(jnp.bfloat16)
  got16 = jax.jit(split16.apply)(params, nb.astype(jnp.bfloat16)).astype(jnp.float32)
  want16 = jax.jit(concat16.apply)(params, nb.astype(jnp.bfloat16)).astype(jnp.float32)
  scale = float(jnp.abs(want).max())
  assert float(jnp.abs(got16 - want).max()) < 0.03 * scale
  assert float(jnp.abs(got16 - want16).max()) < 0.03 * scale


def test_tokenizer_flops_drop_by_the_group_half_of_conv3():
  """XLA's count (CPU compile) of the forward drops by 2 B G (K - 1) w1 w2: the group half of
  conv3 runs once per group instead of once per point."""
  b, g, k, w1, w2 = 2, 4, 16, 64, 128
  split, concat = _tokenizer_pair()
  nb = jax.ShapeDtypeStruct((b, g, k, 3), jnp.float32)
  params = jax.eval_shape(lambda: split.init(jax.random.key(0), jnp.zeros(nb.shape)))

  def flops(module):
    cost = jax.jit(module.apply).lower(params, nb).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])
  saved = flops(concat) - flops(split)
  predicted = 2 * b * g * (k - 1) * w1 * w2
  assert abs(saved - predicted) <= 0.02 * predicted, (saved, predicted)
