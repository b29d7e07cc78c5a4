"""crossjepa.data.augment: the numpy and jnp twins agree, and the geometry keeps what it must."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossjepa.data import augment

SPEC = augment.Spec(rotate_up=True, scale=(0.8, 1.2), translate=0.1, jitter=0.01)
KEYS = tuple(jax.random.split(jax.random.PRNGKey(3), 4))


def _rigid_cameras(rng, num_views):
  """[V,4,4] rigid world_to_cam about 3 units from the origin, looking at it; [V,3,3] intrinsics."""
  q = np.linalg.qr(rng.normal(size=(num_views, 3, 3)))[0]
  q[:, 0] *= np.sign(np.linalg.det(q))[:, None]                 # proper rotations (det +1)
  w2c = np.tile(np.eye(4), (num_views, 1, 1))
  w2c[:, :3, :3] = q
  w2c[:, :3, 3] = rng.normal(size=(num_views, 3)) * 0.1 + [0.0, 0.0, 3.0]
  intr = np.array([[40.0, 0.0, 14.0], [0.0, 40.0, 14.0], [0.0, 0.0, 1.0]])
  intr = np.tile(intr, (num_views, 1, 1))
  return w2c, intr


def _example(seed=0, num_points=20, num_groups=8, num_views=3):
  rng = np.random.default_rng(seed)
  points = rng.uniform(-0.5, 0.5, (num_points, 3))
  centers = rng.uniform(-0.5, 0.5, (num_groups, 3))
  w2c, intr = _rigid_cameras(rng, num_views)
  return points, centers, w2c, intr


def _project(points, w2c, intr):
  cam = points @ w2c[:3, :3].T + w2c[:3, 3]
  uvw = cam @ intr.T
  return uvw[:, :2] / uvw[:, 2:], cam


def test_spec_from_config_and_from_spec():
  from configs.default import get_config  # pylint: disable=g-import-not-at-top
  a = get_config().train.augment
  spec = augment.Spec.from_config(a)
  assert spec == augment.Spec(rotate_up=bool(a.rotate_up), scale=tuple(float(x) for x in a.scale),
                              translate=float(a.translate), jitter=float(a.jitter))
  assert augment.Spec.from_config(spec) == spec


def test_rotation_matrix_numpy_and_jnp():
  for angle in (0.0, 1.234, -2.5, 2 * np.pi - 1e-3):
    rot = augment.rotation_about_up(angle)
    assert isinstance(rot, np.ndarray) and rot.dtype == np.float64 and rot.shape == (3, 3)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    np.testing.assert_array_equal(rot[:, augment.UP_AXIS], [0, 1, 0])   # the up axis stays put
    np.testing.assert_array_equal(rot[augment.UP_AXIS], [0, 1, 0])
  np.testing.assert_array_equal(augment.rotation_about_up(0.0), np.eye(3))
  np.testing.assert_allclose(augment.rotation_about_up(0.4) @ augment.rotation_about_up(0.9),
                             augment.rotation_about_up(1.3), atol=1e-12)
  angles = np.array([0.0, 1.234, -2.5], np.float32)
  batched = augment.rotation_about_up(jnp.asarray(angles))
  assert isinstance(batched, jax.Array)
  assert batched.shape == (3, 3, 3) and batched.dtype == jnp.float32
  for i, angle in enumerate(angles):
    np.testing.assert_allclose(batched[i], augment.rotation_about_up(float(angle)), atol=1e-6)


def test_rotation_keeps_norms_up_axis_and_projections():
  points, centers, w2c, intr = _example()
  p2, c2, w2 = augment.apply_example(points, centers, w2c, augment.Draw(angle=1.234))
  assert not np.allclose(c2, centers)
  np.testing.assert_allclose(np.linalg.norm(p2, axis=1), np.linalg.norm(points, axis=1), rtol=1e-12)
  np.testing.assert_array_equal(p2[:, 1], points[:, 1])
  for v in range(len(w2c)):
    for new, old in ((p2, points), (c2, centers)):
      uv2, cam2 = _project(new, w2[v], intr[v])
      uv0, cam0 = _project(old, w2c[v], intr[v])
      np.testing.assert_allclose(uv2, uv0, atol=1e-9)
      np.testing.assert_allclose(cam2, cam0, atol=1e-12)     # the very same camera coordinates
    np.testing.assert_allclose(w2[v, :3, :3] @ w2[v, :3, :3].T, np.eye(3), atol=1e-12)
    np.testing.assert_array_equal(w2[v, 3], [0, 0, 0, 1])


def test_scale_translate_keeps_projections_and_rigid_pose():
  points, centers, w2c, intr = _example(1)
  scale, shift = 1.3, np.array([0.1, -0.05, 0.07])
  p3, c3, w3 = augment.apply_example(points, centers, w2c, augment.Draw(scale=scale, shift=shift))
  np.testing.assert_allclose(p3, points * scale + shift, rtol=0, atol=0)
  np.testing.assert_array_equal(w3[:, :3, :3], w2c[:, :3, :3])            # rotation block untouched
  np.testing.assert_array_equal(w3[:, 3], w2c[:, 3])
  for v in range(len(w2c)):
    for new, old in ((p3, points), (c3, centers)):
      uv3, cam3 = _project(new, w3[v], intr[v])
      uv0, cam0 = _project(old, w2c[v], intr[v])
      np.testing.assert_allclose(uv3, uv0, atol=1e-9)
      np.testing.assert_allclose(cam3, scale * cam0, atol=1e-12)       # the camera moved along


def test_rotation_then_scale_translate_keep_projections_in_the_jnp_twin():
  examples = [_example(20 + i) for i in range(2)]
  batch = tuple(jnp.asarray(np.stack([e[j] for e in examples]), jnp.float32) for j in range(3))
  spec = augment.Spec(rotate_up=True, scale=(0.8, 1.2), translate=0.1, jitter=0.0)
  draw = augment.draw_batch(KEYS, spec, batch[0].shape)
  p, c, w = (np.asarray(x, np.float64) for x in augment.apply_batch(*batch, draw))
  for b, (points, centers, w2c, intr) in enumerate(examples):
    s = float(draw.scale[b])
    for v in range(len(w2c)):
      for new, old in ((p[b], points), (c[b], centers)):
        uv, cam = _project(new, w[b, v], intr[v])
        uv0, cam0 = _project(old, w2c[v], intr[v])
        np.testing.assert_allclose(uv, uv0, atol=1e-3)                # pixels, float32
        np.testing.assert_allclose(cam, s * cam0, atol=1e-5)
      np.testing.assert_allclose(w[b, v, :3, :3] @ w[b, v, :3, :3].T, np.eye(3), atol=1e-6)


@pytest.mark.parametrize('twin', ['numpy', 'jnp'])
def test_jitter_moves_points_only_within_the_clip(twin):
  points, centers, w2c, _ = _example(2)
  sigma = 0.01
  noise = np.random.default_rng(4).normal(0.0, 4 * sigma, points.shape)   # many beyond 5 sigma
  bound = augment.JITTER_CLIP * sigma
  assert (np.abs(noise) > bound).any() and (np.abs(noise) < bound).any()
  base = dict(angle=0.7, scale=1.1, shift=np.array([0.02, 0.0, -0.03]))
  if twin == 'numpy':
    apply, args = augment.apply_example, (points, centers, w2c)
    ref = augment.apply_example(*args, augment.Draw(**base))
    out = augment.apply_example(*args, augment.Draw(**base, noise=noise, sigma=sigma))
  else:
    args = tuple(jnp.asarray(x[None], jnp.float32) for x in (points, centers, w2c))
    base = {k: jnp.asarray(np.asarray(v, np.float32)[None]) for k, v in base.items()}
    apply = augment.apply_batch
    ref = apply(*args, augment.Draw(**base))
    noisy = jnp.asarray(noise[None], jnp.float32)
    out = apply(*args, augment.Draw(**base, noise=noisy, sigma=sigma))
    ref, out = ([np.asarray(x[0]) for x in r] for r in (ref, out))
    noise = noise.astype(np.float32)
  np.testing.assert_array_equal(out[1], ref[1])                  # centres: bitwise untouched
  np.testing.assert_array_equal(out[2], ref[2])                  # poses too
  moved = out[0] - ref[0]
  assert np.abs(moved).max() <= bound * (1 + 1e-6)
  np.testing.assert_allclose(np.abs(moved).max(), bound, rtol=1e-5)   # the clip is engaged
  inside = np.abs(noise) < bound
  np.testing.assert_array_equal(out[0][inside], (ref[0] + noise)[inside])


def test_identity_parameters_give_the_input_back_exactly():
  points, centers, w2c, _ = _example(3)
  identity = augment.Draw(angle=0.0, scale=1.0, shift=np.zeros(3), noise=np.zeros(points.shape),
                          sigma=0.01)
  for draw in (augment.Draw(), identity):
    for new, old in zip(augment.apply_example(points, centers, w2c, draw), (points, centers, w2c)):
      np.testing.assert_array_equal(new, old)
  b = 2
  args = tuple(jnp.asarray(np.stack([x] * b), jnp.float32) for x in (points, centers, w2c))
  identity = augment.Draw(angle=jnp.zeros(b), scale=jnp.ones(b), shift=jnp.zeros((b, 3)),
                          noise=jnp.zeros(args[0].shape), sigma=0.01)
  for draw in (augment.Draw(), identity):
    for new, old in zip(augment.apply_batch(*args, draw), args):
      np.testing.assert_array_equal(new, old)


def test_numpy_and_jnp_twins_agree_on_the_same_draws():
  examples = [_example(10 + i, num_views=2) for i in range(3)]
  batch = tuple(jnp.asarray(np.stack([e[j] for e in examples]), jnp.float32) for j in range(3))
  draw = augment.draw_batch(KEYS, SPEC, batch[0].shape)
  out = jax.device_get(jax.jit(augment.apply_batch)(*batch, draw))
  for b, (points, centers, w2c, _) in enumerate(examples):
    one = augment.Draw(angle=float(draw.angle[b]), scale=float(draw.scale[b]),
                       shift=np.asarray(draw.shift[b], np.float64),
                       noise=np.asarray(draw.noise[b], np.float64), sigma=draw.sigma)
    f32 = [np.asarray(x, np.float32).astype(np.float64) for x in (points, centers, w2c)]
    ref = augment.apply_example(*f32, one)
    for name, x, y in zip(('points', 'centers', 'world_to_cam'), out, ref):
      np.testing.assert_allclose(x[b], y, rtol=1e-5, atol=1e-6, err_msg=name)
  # the jitter is the same function on both sides: bitwise equal on the same float32 inputs
  pts, noise = np.asarray(batch[0]), np.asarray(draw.noise)
  np.testing.assert_array_equal(augment.add_jitter(pts, noise, SPEC.jitter),
                                np.asarray(augment.add_jitter(batch[0], draw.noise, SPEC.jitter)))
  # the rotation keeps the up coordinate exactly on both sides
  rot_only = augment.Draw(angle=draw.angle)
  p_jnp = np.asarray(augment.apply_batch(*batch, rot_only)[0])
  np.testing.assert_array_equal(p_jnp[..., 1], np.asarray(batch[0])[..., 1])
  p_np = augment.apply_example(np.asarray(batch[0][0], np.float64), examples[0][1], examples[0][2],
                               augment.Draw(angle=float(draw.angle[0])))[0]
  np.testing.assert_array_equal(p_np[:, 1], np.asarray(batch[0][0], np.float64)[:, 1])


_OFF = dict(rotate_up=False, scale=(1.0, 1.0), translate=0.0, jitter=0.0)


@pytest.mark.parametrize('spec,on', [
    (SPEC, (True, True, True)),
    (augment.Spec(**_OFF), (False, False, False)),
    (augment.Spec(**{**_OFF, 'scale': (0.9, 0.9)}), (False, True, False)),
    (augment.Spec(**{**_OFF, 'rotate_up': True, 'translate': 0.2}), (True, True, False)),
])
def test_draws_switch_the_same_steps_on_in_both_twins(spec, on):
  shape = (4, 16, 3)
  rng = np.random.default_rng(0)
  d_np = augment.draw_example(rng, spec, shape[1:])
  d_jnp = augment.draw_batch(KEYS, spec, shape)
  for d in (d_np, d_jnp):
    assert (d.angle is not None, d.scale is not None, d.noise is not None) == on
    assert (d.scale is None) == (d.shift is None) and d.sigma == spec.jitter
  if on[1]:
    lo, hi = spec.scale
    assert lo <= d_np.scale <= hi and np.all((lo <= d_jnp.scale) & (d_jnp.scale <= hi))
    if lo == hi:
      assert d_np.scale == lo
      np.testing.assert_array_equal(d_jnp.scale, np.full(4, lo, np.float32))
    t = spec.translate
    assert np.all(np.abs(d_np.shift) <= t) and np.all(np.abs(d_jnp.shift) <= t)
    assert d_jnp.shift.shape == (4, 3) and d_np.shift.shape == (3,)
  if on[0]:
    assert 0.0 <= d_np.angle < 2 * np.pi and d_jnp.angle.shape == (4,)
    assert np.all((d_jnp.angle >= 0.0) & (d_jnp.angle < 2 * np.pi))
  if not any(on):   # nothing drawn: the generator is where it started
    assert rng.random() == np.random.default_rng(0).random()


def test_numpy_draws_follow_the_documented_order():
  shape = (16, 3)
  d = augment.draw_example(np.random.default_rng(5), SPEC, shape)
  rng = np.random.default_rng(5)
  assert d.angle == rng.uniform(0.0, 2 * np.pi)
  assert d.scale == rng.uniform(*SPEC.scale)
  np.testing.assert_array_equal(d.shift, rng.uniform(-SPEC.translate, SPEC.translate, 3))
  np.testing.assert_array_equal(d.noise, rng.normal(0.0, SPEC.jitter, shape))
  a, b = augment.draw_batch(KEYS, SPEC, (4, 16, 3)), augment.draw_batch(KEYS, SPEC, (4, 16, 3))
  for x, y in zip(a[:4], b[:4]):
    np.testing.assert_array_equal(x, y)                       # a function of the keys only
