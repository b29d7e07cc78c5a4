"""Schedules, EMA invariants and per-parameter rules of crossjepa.training.state."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from crossjepa.training import state as state_lib


def _train_config(**kw):
  c = ml_collections.ConfigDict(dict(
      steps=100, lr=1e-3, min_lr=1e-5, warmup_steps=10, weight_decay=0.1, b1=0.9, b2=0.95,
      grad_clip=0.0, ema_momentum=(0.996, 1.0), param_rules=()))
  c.update(kw)
  return c


def test_learning_rate_schedule_at_known_steps():
  lr = state_lib.learning_rate_schedule(_train_config())
  np.testing.assert_allclose(float(lr(0)), 0.0)
  np.testing.assert_allclose(float(lr(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(10)), 1e-3, rtol=1e-6)
  # halfway through the cosine: (peak + floor) / 2
  np.testing.assert_allclose(float(lr(55)), (1e-3 + 1e-5) / 2, rtol=1e-5)
  np.testing.assert_allclose(float(lr(100)), 1e-5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(1000)), 1e-5, rtol=1e-5)   # held after the end


def test_ema_momentum_schedule_is_cosine():
  m = state_lib.ema_momentum_schedule((0.996, 1.0), 100)
  np.testing.assert_allclose(float(m(0)), 0.996, rtol=1e-7)
  np.testing.assert_allclose(float(m(50)), 0.998, rtol=1e-7)
  np.testing.assert_allclose(float(m(25)), 1.0 - 0.004 * 0.5 * (1 + math.cos(math.pi / 4)), rtol=1e-7)
  np.testing.assert_allclose(float(m(100)), 1.0, rtol=1e-7)


def test_ema_update_invariants():
  rng = np.random.RandomState(0)
  ema = {'a': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), 'b': jnp.asarray(rng.normal(size=5), jnp.float32)}
  params = jax.tree.map(lambda x: x * 3.0 + 1.0, ema)
  out0 = state_lib.ema_update(ema, params, jnp.float32(0.0))
  out1 = state_lib.ema_update(ema, params, jnp.float32(1.0))
  for k in ema:
    np.testing.assert_array_equal(np.asarray(out0[k]), np.asarray(params[k]))
    np.testing.assert_array_equal(np.asarray(out1[k]), np.asarray(ema[k]))
  half = state_lib.ema_update(ema, params, jnp.float32(0.25))
  np.testing.assert_allclose(np.asarray(half['a']), 0.25 * np.asarray(ema['a']) + 0.75 * np.asarray(params['a']),
                             rtol=1e-6)


def test_rules_first_match_wins_and_defaults():
  rules = ((r'student/.*bias', {'weight_decay': False}),
           (r'student/.*', {'lr_mult': 0.5}),
           (r'.*', {'freeze': True}))
  assert state_lib.resolve_rule('student/Block_0/bias', rules) == {
      'freeze': False, 'weight_decay': False, 'lr_mult': 1.0}
  assert state_lib.resolve_rule('student/Block_0/kernel', rules) == {
      'freeze': False, 'weight_decay': True, 'lr_mult': 0.5}
  assert state_lib.resolve_rule('predictor/kernel', rules)['freeze'] is True
  assert state_lib.resolve_rule('predictor/kernel', ()) == state_lib.DEFAULT_RULE
  with pytest.raises(ValueError, match='unknown keys'):
    state_lib.resolve_rule('x', ((r'.*', {'frozen': True}),))


def test_frozen_unchanged_no_decay_unaffected_lr_mult_scales():
  params = {'student': {'w': jnp.ones((4, 4)), 'bias': jnp.ones((4,))},
            'predictor': {'w': jnp.ones((4, 4)), 'slow': jnp.ones((4,))}}
  rules = ((r'predictor/w', {'freeze': True}),
           (r'.*bias', {'weight_decay': False}),
           (r'predictor/slow', {'lr_mult': 0.1}))
  tc = _train_config(warmup_steps=0, lr=1e-2, min_lr=1e-2, weight_decay=0.5, param_rules=rules,
                     grad_clip=1.0)
  st = state_lib.create(params, None, tc, tc.param_rules)
  zero = jax.tree.map(jnp.zeros_like, params)
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.3), params)

  @jax.jit
  def apply(st, g):
    return st.apply_gradients(grads=g)

  # zero gradients: only weight decay moves the params
  s1 = apply(st, zero)
  np.testing.assert_array_equal(np.asarray(s1.params['student']['bias']), 1.0)   # no decay
  np.testing.assert_array_equal(np.asarray(s1.params['predictor']['w']), 1.0)    # frozen
  np.testing.assert_allclose(np.asarray(s1.params['student']['w']), 1.0 - 1e-2 * 0.5, rtol=1e-6)
  s = st
  for _ in range(3):
    s = apply(s, grads)
  np.testing.assert_array_equal(np.asarray(s.params['predictor']['w']), 1.0)
  # Adam with constant grads: each step moves by ~lr (plus decay); lr_mult 0.1 moves 10x less.
  moved = 1.0 - np.asarray(s.params['student']['bias'])
  slow = 1.0 - np.asarray(s.params['predictor']['slow'])
  np.testing.assert_allclose(moved, 3e-2, rtol=1e-3)
  # lr_mult 0.1 with decay 0.5: 3 steps of 0.1 * lr * (1 + 0.5 * p), p ~ 1
  np.testing.assert_allclose(slow, 3 * 1e-3 * 1.5, rtol=1e-2)
  # the frozen leaf has no Adam moments
  counts = state_lib.describe_rules(params, rules)
  assert counts['frozen'] == 16 and counts['wd=0,lr_mult=1.0'] == 4


def test_bad_schedule_config():
  with pytest.raises(ValueError, match='steps'):
    state_lib.learning_rate_schedule(_train_config(steps=0))
  with pytest.raises(ValueError, match='momentum'):
    state_lib.ema_momentum_schedule((0.9, 1.5), 100)


@pytest.mark.parametrize('grad_clip', [0.0, 0.5])
def test_flat_adamw_matches_the_per_leaf_optax_chain(grad_clip):
  """flat_adamw (one vector per group) against make_optimizer(flat=False), the optax chain, over
  steps of random gradients, with a frozen leaf, a no-decay group, an lr_mult group and clipping
  that triggers (grad_clip 0.5 is below the gradients' norm)."""
  rng = np.random.RandomState(0)
  shapes = {'student': {'w': (6, 5), 'bias': (5,)}, 'predictor': {'w': (5, 3), 'slow': (3,)},
            'frozen': {'w': (4, 4)}}
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))
  rules = ((r'frozen/.*', {'freeze': True}), (r'.*bias', {'weight_decay': False}),
           (r'predictor/slow', {'lr_mult': 0.1}))
  tc = _train_config(warmup_steps=2, lr=1e-2, weight_decay=0.05, grad_clip=grad_clip,
                     param_rules=rules)
  flat = state_lib.make_optimizer(tc, params, rules, flat=True)
  chain = state_lib.make_optimizer(tc, params, rules, flat=False)

  @jax.jit
  def step(tx_state, p, g, which):
    tx = flat if which == 'flat' else chain
    updates, tx_state = tx.update(g, tx_state, p)
    return tx_state, optax.apply_updates(p, updates), updates
  step = jax.jit(step.__wrapped__, static_argnums=3)

  # without clipping the arithmetic is the chain's, element for element (XLA may fuse it into
  # other instructions: an ulp); the clipping norm sums in another order, and Adam's division
  # amplifies that last-bit difference where nu is small
  tol = 1e-6 if grad_clip == 0 else 1e-5
  pf, pc = params, params
  sf, sc = flat.init(params), chain.init(params)
  assert len(sf.mu) == 3 and sf.mu[0].ndim == 1            # three trainable groups, flat
  for _ in range(5):
    g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    sf, pf, uf = step(sf, pf, g, 'flat')
    sc, pc, uc = step(sc, pc, g, 'chain')
    for a, b in zip(jax.tree.leaves(uf), jax.tree.leaves(uc)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=1e-9)
  for a, b in zip(jax.tree.leaves(pf), jax.tree.leaves(pc)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=1e-8)
  np.testing.assert_array_equal(np.asarray(pf['frozen']['w']), np.asarray(params['frozen']['w']))
  assert int(sf.count) == 5
  # the flat moments are the chain's, concatenated group by group in tree order
  adam = [s for s in jax.tree.leaves(sc, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  chain_mu = sorted((np.concatenate([np.ravel(x) for x in jax.tree.leaves(s.mu)]) for s in adam),
                    key=len)
  flat_mu = sorted((np.asarray(m) for m in sf.mu), key=len)
  for a, b in zip(flat_mu, chain_mu):
    np.testing.assert_allclose(a, b, rtol=tol, atol=1e-9)


def test_global_norm_is_optax_global_norm():
  rng = np.random.RandomState(1)
  tree = {'a': jnp.asarray(rng.normal(size=(7, 3)), jnp.float32), 'b': [jnp.ones((4,), jnp.bfloat16)]}
  np.testing.assert_allclose(float(state_lib.global_norm(tree)), float(optax.global_norm(tree)),
                             rtol=1e-6)
  assert float(state_lib.global_norm({})) == 0.0
