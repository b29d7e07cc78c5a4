"""Predictor: parameter counts (and the paper total), conditioning switches, query kinds,
permutation properties, jit, sharding, bf16."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crossjepa.models import point
from crossjepa.models import predictor as pred
from crossjepa.testing import fast_init
from tests.test_point import count

B, T, DC, HB, OUT = 8, 12, 16, 24, 32


def predictor_formula(width, depth, context_dim, out_dim, hist_dim, use_pose=True, use_hist=True,
                      query_dim=3, max_queries=1, pos_hidden=128, **_) -> int:
  w = width
  block = 12 * w * w + 13 * w                      # pre-LN block, mlp_ratio 4, qkv bias
  return ((context_dim * w + w)                      # context_proj
          + (12 * w + w if use_pose else 0)          # pose_embed of world_to_cam[:3, :4]
          + (hist_dim * w + w if use_hist else 0)    # hist_embed
          + max_queries * w + w                      # query_tokens, mask_token
          + (query_dim * pos_hidden + pos_hidden) + (pos_hidden * w + w)   # target_position_mlp
          + depth * block + 2 * w                    # transformer, final norm
          + (w * out_dim + out_dim))                 # out_proj


def abstract_params(module, context_dim, hist_dim, **call):
  return jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((1, 4, context_dim)), world_to_cam=jnp.zeros((1, 4, 4)),
      hist=jnp.zeros((1, hist_dim)), **call))['params']


@pytest.mark.parametrize('variant', sorted(pred.VARIANTS))
@pytest.mark.parametrize('flags', [dict(), dict(use_pose=False, use_hist=False, query_dim=2, max_queries=3)])
def test_param_counts(variant, flags):
  module = pred.predictor(variant, out_dim=768, **flags)
  fields = {**pred.VARIANTS[variant], **flags}
  expected = predictor_formula(**fields, context_dim=288, out_dim=768, hist_dim=24)
  assert count(abstract_params(module, 288, 24)) == expected
  # Initialising through the other query kind creates the same parameters.
  q = jnp.zeros((1, 5, module.query_dim))
  assert count(abstract_params(module, 288, 24, query_pos=q)) == expected


def test_paper_total():
  # CrossJEPA: 14.1 M trainable parameters, 8.5 M of them in the point encoder. Target width 768
  # (ViT-B/14), histogram of 3 x 8 bins, 3-D queries.
  enc = point.point_encoder('paper')
  enc_params = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 64, 3))))['params']
  pred_params = abstract_params(pred.predictor('paper', out_dim=768), enc.width, 24)
  assert count(pred_params) == 5_843_968
  total = count(enc_params) + count(pred_params)
  assert total == 14_320_000
  assert abs(total - 14.1e6) <= 0.3e6


def test_paper_config_builds_the_paper_total():
  """configs/paper.py itself (not only the variants): 14.32 M trainable parameters, the paper
  predictor's full depth (configs/default.py's 1-block predictor override must not leak in)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from crossjepa.training import pretraining  # pylint: disable=g-import-not-at-top
  from crossjepa.training.recipes import models as models_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                      'paper.py')
  spec = importlib.util.spec_from_file_location('_paper_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  teacher = models_lib.teacher_widths(768)
  models = models_lib.build_models(config, teacher)
  assert models.predictor.depth == pred.predictor('paper', out_dim=768).depth
  state = pretraining.abstract_state(config, jax.random.PRNGKey(0), models, teacher)
  assert count(state.params) == 14_320_000


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  inputs = dict(
      context=jnp.asarray(rng.normal(size=(B, T, DC)), jnp.float32),
      world_to_cam=jnp.asarray(rng.normal(size=(B, 4, 4)), jnp.float32),
      hist=jnp.asarray(rng.dirichlet(np.ones(HB), size=B), jnp.float32),
      query_pos=jnp.asarray(rng.normal(size=(B, 6, 3)), jnp.float32))
  module = pred.predictor('tiny', out_dim=OUT)
  params = fast_init(module, inputs['context'], world_to_cam=inputs['world_to_cam'],
                     hist=inputs['hist'])
  apply = jax.jit(lambda p, c, w, h, q: module.apply(p, c, world_to_cam=w, hist=h, query_pos=q))
  return module, params, inputs, apply


def test_outputs_and_query_kinds(setup):
  module, params, x, apply = setup
  out = apply(params, x['context'], x['world_to_cam'], x['hist'], x['query_pos'])
  assert out.shape == (B, 6, OUT) and out.dtype == jnp.float32
  glob = jax.jit(lambda p, c, w, h: module.apply(p, c, world_to_cam=w, hist=h))(
      params, x['context'], x['world_to_cam'], x['hist'])
  assert glob.shape == (B, 1, OUT)
  # Each input matters: the pose, the histogram, the context and the query positions.
  for key, value in (('world_to_cam', x['world_to_cam'] + 1), ('hist', x['hist'][::-1]),
                     ('context', x['context'] * 2), ('query_pos', x['query_pos'] + 1)):
    args = {**x, key: value}
    changed = apply(params, args['context'], args['world_to_cam'], args['hist'], args['query_pos'])
    assert float(jnp.max(jnp.abs(changed - out))) > 1e-3, key
  with pytest.raises(ValueError, match='num_queries must be in'):
    jax.eval_shape(lambda: module.apply(params, x['context'], world_to_cam=x['world_to_cam'], hist=x['hist'], num_queries=2))


def test_permutation_properties(setup):
  module, params, x, apply = setup
  out = apply(params, x['context'], x['world_to_cam'], x['hist'], x['query_pos'])
  # No position information on the context: its order does not matter.
  ctx_perm = np.random.default_rng(1).permutation(T)
  np.testing.assert_allclose(apply(params, x['context'][:, ctx_perm], x['world_to_cam'], x['hist'],
                                   x['query_pos']), out, atol=1e-5)
  # Queries are identified only by their positions: permuting them permutes the outputs.
  q_perm = np.random.default_rng(2).permutation(6)
  np.testing.assert_allclose(apply(params, x['context'], x['world_to_cam'], x['hist'],
                                   x['query_pos'][:, q_perm]), out[:, q_perm], atol=1e-5)


def test_conditioning_switches():
  rng = np.random.default_rng(3)
  ctx = jnp.asarray(rng.normal(size=(2, T, DC)), jnp.float32)
  w2c = jnp.asarray(rng.normal(size=(2, 4, 4)), jnp.float32)
  hist = jnp.full((2, HB), 1.0 / HB)
  key = jax.random.key(0)
  # Errors are raised while tracing, so eval_shape checks them without running anything.
  init = lambda module, *a, **k: jax.eval_shape(lambda: module.init(key, *a, **k))

  def run(module, **kw):   # init with the given inputs, apply once with and once without extras
    params = fast_init(module, ctx, **kw)
    fn = jax.jit(lambda p, c, kw: module.apply(p, c, **kw))
    return params, fn(params, ctx, kw), fn(params, ctx, {'world_to_cam': w2c, 'hist': hist})

  off = pred.predictor('tiny', out_dim=OUT, use_pose=False, use_hist=False)
  params, plain, extra = run(off)
  assert 'pose_embed' not in params['params'] and 'hist_embed' not in params['params']
  np.testing.assert_array_equal(plain, extra)
  pose_only = pred.predictor('tiny', out_dim=OUT, use_hist=False)
  with pytest.raises(ValueError, match='world_to_cam'):
    init(pose_only, ctx, hist=hist)
  _, plain, extra = run(pose_only, world_to_cam=w2c)
  np.testing.assert_array_equal(plain, extra)
  with pytest.raises(ValueError, match='hist'):
    init(pred.predictor('tiny', out_dim=OUT, use_pose=False), ctx, world_to_cam=w2c)
  with pytest.raises(ValueError, match='out_dim'):
    init(pred.predictor('tiny'), ctx, world_to_cam=w2c, hist=hist)
  with pytest.raises(ValueError, match='query_pos'):
    init(pred.predictor('tiny', out_dim=OUT, query_dim=2), ctx, world_to_cam=w2c, hist=hist,
         query_pos=jnp.zeros((2, 3, 3)))


def test_no_recompile(setup):
  module, params, x, apply = setup
  apply(params, x['context'], x['world_to_cam'], x['hist'], x['query_pos'])
  apply(params, x['context'] + 1, x['world_to_cam'], x['hist'] * 2, x['query_pos'] - 1)
  assert apply._cache_size() == 1


def test_sharded_equals_single_device(setup):
  module, params, x, apply = setup
  mesh = Mesh(np.array(jax.devices()), ('data',))
  data, repl = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  fn = jax.jit(lambda p, c, w, h, q: module.apply(p, c, world_to_cam=w, hist=h, query_pos=q),
               in_shardings=(repl, data, data, data, data), out_shardings=data)
  args = [x['context'], x['world_to_cam'], x['hist'], x['query_pos']]
  sharded = fn(jax.device_put(params, repl), *[jax.device_put(a, data) for a in args])
  assert len(sharded.sharding.device_set) == 8
  np.testing.assert_allclose(sharded, apply(params, *args), atol=1e-5)


def test_bf16_close_to_f32(setup):
  module, params, x, apply = setup
  out = apply(params, x['context'], x['world_to_cam'], x['hist'], x['query_pos'])
  m16 = pred.predictor('tiny', out_dim=OUT, dtype='bfloat16')
  out16 = jax.jit(lambda p, c, w, h, q: m16.apply(p, c, world_to_cam=w, hist=h, query_pos=q))(
      params, x['context'], x['world_to_cam'], x['hist'], x['query_pos'])
  assert out16.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(out)))
  assert float(jnp.max(jnp.abs(out16 - out))) < 0.05 * scale


@pytest.mark.parametrize('attention', ['einsum', 'dot_product'])
def test_last_block_queries_only_equals_every_row(setup, attention):
  """The last block computes only the query rows (`last_block_queries_only`, the default): the
  same outputs and gradients as the transformer over every row, for both query kinds and with
  stochastic depth on (float32 within 1e-5; bfloat16 within its rounding)."""
  _, params, x, _ = setup
  kw = dict(out_dim=OUT, attention=attention, drop_path=0.2)
  pruned, full = pred.predictor('tiny', **kw), pred.predictor('tiny', last_block_queries_only=False, **kw)
  rngs = {'dropout': jax.random.key(7)}

  def loss(module, query_pos, dtype=jnp.float32):
    m = module.clone(dtype=dtype)
    def f(p):
      q = dict(query_pos=query_pos) if query_pos is not None else {}
      out = m.apply(p, x['context'], world_to_cam=x['world_to_cam'], hist=x['hist'], train=True,
                    rngs=rngs, **q)
      return jnp.sum(jnp.sin(out)), out
    return f

  for query_pos in (x['query_pos'], None):
    (_, want), g_full = jax.jit(jax.value_and_grad(loss(full, query_pos), has_aux=True))(params)
    (_, got), g_pruned = jax.jit(jax.value_and_grad(loss(pruned, query_pos), has_aux=True))(params)
    assert got.shape == want.shape == (B, 1 if query_pos is None else 6, OUT)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_pruned), jax.tree.leaves(g_full)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()),
                                 err_msg=jax.tree_util.keystr(path))
    got16 = jax.jit(loss(pruned, query_pos, jnp.bfloat16))(params)[1]
    assert float(jnp.abs(got16 - want).max()) < 0.05 * float(jnp.abs(want).max())


def test_last_block_queries_only_drops_the_other_rows_flops(setup):
  """XLA's count (CPU compile) of the forward drops by the other rows' work in the last block:
  (T' - Q) rows (T' = the tokens) of proj (2 D^2), fc1 + fc2 (4 D h), attention (4 T' D) and the
  MLP's GELU (64 flops an element in XLA's count of erf), within 5 % (LayerNorm, biases, softmax)."""
  module, params, x, _ = setup
  full = module.clone(last_block_queries_only=False)
  args = [jax.ShapeDtypeStruct(x[k].shape, jnp.float32)
          for k in ('context', 'world_to_cam', 'hist', 'query_pos')]

  def flops(m):
    fn = jax.jit(lambda p, c, w, h, q: m.apply(p, c, world_to_cam=w, hist=h, query_pos=q))
    cost = fn.lower(params, *args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])
  q = x['query_pos'].shape[1]
  t = 2 + T + q                                  # pose, histogram, context, queries
  d, h = module.width, int(module.mlp_ratio * module.width)
  predicted = B * (t - q) * (2 * d * d + 4 * d * h + 4 * t * d + 64 * h)
  saved = flops(full) - flops(module)
  assert predicted <= saved <= 1.05 * predicted, (saved, predicted)


def test_rows_out_of_range_is_an_error():
  from crossjepa.models import layers  # pylint: disable=g-import-not-at-top
  x = jnp.zeros((1, 5, 8))
  for rows in (0, 6):
    with pytest.raises(ValueError, match=r'rows must be in \[1, 5\]'):
      jax.eval_shape(lambda r=rows: layers.Transformer(1, 8, 2).init(jax.random.key(0), x, out_rows=r))
