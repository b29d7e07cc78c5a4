"""Prepare's batched FPS (crossjepa.data.sampling.sample_clouds, the jitted ops FPS over chunks of
objects) picks exactly the points of the NumPy reference, on real-looking clouds: surface samples
of the procedural meshes, scan-like partial clouds, clouds of different sizes in one chunk, a short
chunk, and a cloud with fewer distinct points than asked for."""
import numpy as np

from crossjepa.data import meshes
from crossjepa.data import sampling
from crossjepa.data import synthetic


def _reference(cloud, num):
  return cloud[sampling.farthest_point_sampling_np(cloud, num)]


def _clouds():
  rng = np.random.default_rng(0)
  out = []
  for cls in range(6):                                         # mesh surfaces, 3,000 points
    mesh = synthetic.make_shape(cls, np.random.default_rng(cls))
    out.append(meshes.normalize_unit_sphere(meshes.sample_surface(mesh, 3000, rng))[0])
  for cls in (2, 9, 17):                                       # scan-like (occluded, noisy) clouds
    points, _ = synthetic.make_scan(cls, 1, num_points=2048)
    out.append(meshes.normalize_unit_sphere(points)[0])
  out.append(out[0][:1500])                                    # a smaller cloud in the same chunk
  few = np.repeat(rng.normal(size=(40, 3)).astype(np.float32), 40, axis=0)   # 40 distinct points
  out.append(meshes.normalize_unit_sphere(few)[0])
  return out


def test_sample_clouds_equals_the_numpy_reference():
  clouds = _clouds()
  for num, chunk in ((512, 4), (1024, 16)):
    got = sampling.sample_clouds(clouds, num, chunk)
    assert len(got) == len(clouds)
    for i, (cloud, points) in enumerate(zip(clouds, got)):
      assert points.shape == (num, 3) and points.dtype == np.float32
      np.testing.assert_array_equal(points, _reference(cloud, num), err_msg=f'cloud {i}, {num}')


def test_with_points_fills_only_the_deferred_partials():
  clouds = _clouds()[:3]
  given = np.zeros((512, 3), np.float32)
  partials = [{'id': 'a', 'cloud': clouds[0]}, {'id': 'b', 'points': given},
              {'id': 'c', 'cloud': clouds[2]}]

  class Data:   # the one data.* key with_points reads
    num_points = 512

  out = sampling.with_points(partials, Data, 2)
  assert [sorted(p) for p in out] == [['id', 'points']] * 3
  np.testing.assert_array_equal(out[0]['points'], _reference(clouds[0], 512))
  assert out[1]['points'] is given
  np.testing.assert_array_equal(out[2]['points'], _reference(clouds[2], 512))
