"""crossjepa.ops against brute-force NumPy: FPS, kNN (tie order included), gather, group_points."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossjepa import ops


def fps_reference(points: np.ndarray, num: int) -> np.ndarray:
  """pointnet2_ops furthest_point_sample semantics, float64, one cloud at a time."""
  out = np.zeros((points.shape[0], num), np.int64)
  for b, cloud in enumerate(points.astype(np.float64)):
    min_dist = np.full(len(cloud), np.inf)
    last = 0
    for i in range(1, num):
      min_dist = np.minimum(min_dist, ((cloud - cloud[last]) ** 2).sum(-1))
      last = int(np.argmax(min_dist))      # first maximum = lowest index among ties
      out[b, i] = last
  return out


def knn_reference(points: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
  dist = ((queries[:, :, None, :].astype(np.float64) - points[:, None, :, :]) ** 2).sum(-1)
  return np.argsort(dist, axis=-1, kind='stable')[..., :k]   # stable: ties to the lowest index


def grid_cloud(rng, b, n, lo=-2, hi=3):
  # Small integer coordinates: many exact duplicates and exactly equal distances (exact in f32).
  return rng.integers(lo, hi, size=(b, n, 3)).astype(np.float32)


def test_fps_random_matches_reference():
  pts = np.random.default_rng(0).normal(size=(3, 100, 3)).astype(np.float32)
  idx = ops.farthest_point_sampling(jnp.asarray(pts), 16)
  assert idx.dtype == jnp.int32 and idx.shape == (3, 16)
  np.testing.assert_array_equal(idx, fps_reference(pts, 16))
  assert (np.asarray(idx)[:, 0] == 0).all()


def test_fps_ties_and_duplicates_match_reference():
  pts = grid_cloud(np.random.default_rng(1), 3, 100)
  np.testing.assert_array_equal(ops.farthest_point_sampling(jnp.asarray(pts), 16), fps_reference(pts, 16))


def test_fps_degenerate_clouds():
  n = 100
  # Collinear: x = 0..n-1 shuffled; FPS must go to an end, then the other, then halve.
  x = np.random.default_rng(2).permutation(n).astype(np.float32)
  collinear = np.stack([x, 2 * x, np.zeros_like(x)], -1)[None]
  np.testing.assert_array_equal(ops.farthest_point_sampling(jnp.asarray(collinear), 16),
                                fps_reference(collinear, 16))
  # All points equal: every running distance is 0, argmax picks index 0 every time.
  same = np.full((2, n, 3), 0.25, np.float32)
  np.testing.assert_array_equal(ops.farthest_point_sampling(jnp.asarray(same), 16), np.zeros((2, 16)))
  # num == N on distinct points: a permutation of all indices.
  pts = np.random.default_rng(3).normal(size=(2, n, 3)).astype(np.float32)
  idx = np.asarray(ops.farthest_point_sampling(jnp.asarray(pts), n))
  np.testing.assert_array_equal(idx, fps_reference(pts, n))
  assert all(sorted(row) == list(range(n)) for row in idx)


@pytest.mark.parametrize('n', [ops.FPS_BLOCK * 3, ops.FPS_BLOCK * 2 + 37])
def test_fps_over_several_blocks_matches_reference(n):
  """N over several arg-max blocks, whole and padded: ties across blocks go to the lowest index,
  the padding (copies of point 0) is never picked, and all-duplicate tails repeat index 0."""
  rng = np.random.default_rng(5)
  # Random points, and a lattice with many duplicates and equal distances in every block.
  for pts, num in ((rng.normal(size=(2, n, 3)).astype(np.float32), 96),
                   (grid_cloud(rng, 2, n, lo=-1, hi=2), 40)):   # 27 distinct points < num
    idx = np.asarray(ops.farthest_point_sampling(jnp.asarray(pts), num))
    np.testing.assert_array_equal(idx, fps_reference(pts, num))
    assert idx.max() < n
  # The far point sits in the last (padded) block; its exact twin in the first block wins the tie.
  pts = np.zeros((1, n, 3), np.float32)
  pts[0, :, 0] = np.linspace(0, 1, n)
  pts[0, n - 1] = pts[0, 5] = (4.0, 0.0, 0.0)
  np.testing.assert_array_equal(ops.farthest_point_sampling(jnp.asarray(pts), 3)[0, 1], 5)
  np.testing.assert_array_equal(ops.farthest_point_sampling(jnp.asarray(pts), 8),
                                fps_reference(pts, 8))


def test_knn_random_and_ties_match_reference():
  rng = np.random.default_rng(4)
  pts = rng.normal(size=(3, 100, 3)).astype(np.float32)
  qry = rng.normal(size=(3, 16, 3)).astype(np.float32)
  idx = ops.knn(jnp.asarray(pts), jnp.asarray(qry), 8)
  assert idx.dtype == jnp.int32 and idx.shape == (3, 16, 8)
  np.testing.assert_array_equal(idx, knn_reference(pts, qry, 8))
  # Integer grid with duplicates: many exactly equal distances, ties must go to the lowest index.
  pts = grid_cloud(rng, 3, 100)
  qry = grid_cloud(rng, 3, 16)
  np.testing.assert_array_equal(ops.knn(jnp.asarray(pts), jnp.asarray(qry), 8), knn_reference(pts, qry, 8))
  # k == N: the full stable ordering.
  np.testing.assert_array_equal(ops.knn(jnp.asarray(pts), jnp.asarray(qry), 100),
                                knn_reference(pts, qry, 100))
  # All points equal: neighbours are 0, 1, 2, ... in order.
  same = np.zeros((1, 100, 3), np.float32)
  np.testing.assert_array_equal(ops.knn(jnp.asarray(same), jnp.asarray(same[:, :4]), 8),
                                np.broadcast_to(np.arange(8), (1, 4, 8)))


def test_top_k_is_stable_for_ties():
  # lax.top_k is documented to put the lower index first among equal values; the kNN tie
  # convention rests on it, so check it directly, including -0.0 (from -distance 0).
  x = jnp.array([[1., 3., 3., -0.0, 3., -0.0, 1.]])
  np.testing.assert_array_equal(jax.lax.top_k(x, 7)[1], [[1, 2, 4, 0, 6, 3, 5]])


def test_gather_and_group_points():
  rng = np.random.default_rng(5)
  pts = grid_cloud(rng, 2, 64)
  pts[:, :8] = pts[:, 8:16]                      # guaranteed duplicates
  x = rng.normal(size=(2, 64, 5)).astype(np.float32)
  idx = rng.integers(0, 64, size=(2, 7, 3))
  np.testing.assert_array_equal(ops.gather(jnp.asarray(x), jnp.asarray(idx)),
                                np.stack([x[b][idx[b]] for b in range(2)]))
  centers, groups = ops.group_points(jnp.asarray(pts), 12, 6)
  ref_idx = fps_reference(pts, 12)
  ref_centers = np.stack([pts[b][ref_idx[b]] for b in range(2)])
  np.testing.assert_array_equal(centers, ref_centers)
  np.testing.assert_array_equal(groups, knn_reference(pts, ref_centers, 6))
  # First neighbour is the centre itself or its lowest-index exact duplicate.
  first = np.stack([pts[b][np.asarray(groups)[b, :, 0]] for b in range(2)])
  np.testing.assert_array_equal(first, ref_centers)
  assert (np.asarray(groups)[:, :, 0] <= ref_idx).all()


def test_batch_elements_are_independent():
  pts = np.random.default_rng(6).normal(size=(5, 64, 3)).astype(np.float32)
  c5, g5 = ops.group_points(jnp.asarray(pts), 8, 4)
  c1, g1 = ops.group_points(jnp.asarray(pts[3:4]), 8, 4)
  np.testing.assert_array_equal(c5[3:4], c1)
  np.testing.assert_array_equal(g5[3:4], g1)


def test_jit_compiles_once_per_shape():
  # A fresh wrapper: jit caches are shared per function object, and other tests jit group_points.
  def group(points, num_groups, group_size):
    return ops.group_points(points, num_groups, group_size)

  fn = jax.jit(group, static_argnums=(1, 2))
  rng = np.random.default_rng(7)
  for _ in range(3):
    fn(jnp.asarray(rng.normal(size=(2, 64, 3)), jnp.float32), 8, 4)
  assert fn._cache_size() == 1
  # And the jitted result equals the eager one.
  pts = jnp.asarray(rng.normal(size=(2, 64, 3)), jnp.float32)
  for a, b in zip(fn(pts, 8, 4), ops.group_points(pts, 8, 4)):
    np.testing.assert_array_equal(a, b)


def test_bad_input_errors():
  pts = jnp.zeros((2, 10, 3))
  with pytest.raises(ValueError, match='num must be in'):
    ops.farthest_point_sampling(pts, 11)
  with pytest.raises(ValueError, match='k must be in'):
    ops.knn(pts, pts, 11)
  with pytest.raises(ValueError, match=r'\[B, N, 3\]'):
    ops.knn(jnp.zeros((2, 10, 2)), pts, 1)
  with pytest.raises(ValueError, match='batch mismatch'):
    ops.knn(pts, jnp.zeros((3, 4, 3)), 1)
