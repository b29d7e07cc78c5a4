"""Tests of crossjepa.data.correspondence against analytic scenes and brute-force depth checks."""
import numpy as np
import pytest

from crossjepa.data import cameras
from crossjepa.data import correspondence
from crossjepa.data import render

SIZE = 84
PATCH = 14
PER_ROW = SIZE // PATCH
TOL = 0.1


def cube_mesh(half=0.5):
  corners = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)],
                     np.float32)
  quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
  faces = [(a, b, c) for a, b, c, _ in quads] + [(a, c, d) for a, _, c, d in quads]
  return corners, np.array(faces, np.int32)


def surface_samples(vertices, faces, count, rng):
  """Uniform-by-area random points on a triangle mesh."""
  tri = vertices[faces].astype(np.float64)
  area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
  pick = rng.choice(len(faces), size=count, p=area / area.sum())
  r1, r2 = rng.random(count), rng.random(count)
  s = np.sqrt(r1)
  w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
  return np.einsum('nk,nkd->nd', w, tri[pick])


def test_project_shapes_and_broadcast():
  w2c, k = cameras.make_cameras({'mode': 'ring', 'distance': 3.0, 'elevation_range': (0.0, 30.0),
                                'fov': 40.0}, 4, SIZE, np.random.default_rng(0))
  points = np.random.default_rng(1).normal(size=(2, 5, 3)) * 0.3
  uv, z = correspondence.project(points, w2c, k)
  assert uv.shape == (4, 2, 5, 2) and z.shape == (4, 2, 5)
  for v in range(4):
    hom = np.concatenate([points, np.ones((2, 5, 1))], -1) @ w2c[v].astype(np.float64).T
    pix = hom[..., :3] @ k[v].astype(np.float64).T
    np.testing.assert_allclose(uv[v], pix[..., :2] / pix[..., 2:], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(z[v], hom[..., 2], rtol=1e-5)


def test_cube_analytic_correspondence():
  distance = 3.0
  vertices, faces = cube_mesh()
  w2c = cameras.look_at((0.0, 0.0, distance), (0.0, 0.0, 0.0))[None]
  k = cameras.pinhole_intrinsics(SIZE, 45.0)[None]
  _, depth = render.render_mesh(vertices, faces, (0.5, 0.5, 0.5), w2c, k, SIZE)
  focal = float(k[0, 0, 0])
  rng = np.random.default_rng(0)
  xy = rng.uniform(-0.45, 0.45, size=(200, 2))
  # Analytic pixel coordinates of front-face points (x, y, 0.5): world y is up, image v is down.
  u = SIZE / 2 + focal * xy[:, 0] / (distance - 0.5)
  v = SIZE / 2 - focal * xy[:, 1] / (distance - 0.5)
  # Drop points within 1e-3 px of a patch boundary, where float rounding may pick either side.
  away = (np.abs(u / PATCH - np.round(u / PATCH)) * PATCH > 1e-3) & (
      np.abs(v / PATCH - np.round(v / PATCH)) * PATCH > 1e-3)
  xy, u, v = xy[away], u[away], v[away]
  expected = (np.floor(v) // PATCH) * PER_ROW + np.floor(u) // PATCH
  front = np.concatenate([xy, np.full((len(xy), 1), 0.5)], 1)
  back = np.concatenate([xy, np.full((len(xy), 1), -0.5)], 1)          # hidden by the front face
  outside = np.array([[3.0, 0.0, 0.5], [0.0, -2.5, 0.0], [0.0, 0.0, distance + 1.0],
                      [0.0, 0.0, distance]])                          # out of frame / behind / at eye
  centers = np.concatenate([front, back, outside]).astype(np.float32)
  corr = correspondence.correspondence_map(centers, w2c, k, depth, PATCH, TOL)
  assert corr.shape == (1, len(centers)) and corr.dtype == np.int32
  np.testing.assert_array_equal(corr[0, :len(xy)], expected)
  np.testing.assert_array_equal(corr[0, len(xy):], -1)
  # Every patch the face covers gets some centre: indices span the covered patch rows and columns.
  assert len(np.unique(expected)) >= 9


def test_silhouette_centres_are_visible_with_neighbourhood():
  distance = 3.0
  vertices, faces = cube_mesh()
  w2c = cameras.look_at((0.0, 0.0, distance), (0.0, 0.0, 0.0))[None]
  k = cameras.pinhole_intrinsics(SIZE, 45.0)[None]
  _, depth = render.render_mesh(vertices, faces, (0.5, 0.5, 0.5), w2c, k, SIZE)
  # Points on the cube's right edge (x = 0.5): the silhouette. Their own pixel may be background.
  ys = np.linspace(-0.4, 0.4, 21)
  edge = np.stack([np.full_like(ys, 0.5), ys, np.full_like(ys, 0.5)], 1)
  uv, z = correspondence.project(edge, w2c[0], k[0])
  own = depth[0, np.floor(uv[:, 1]).astype(int), np.floor(uv[:, 0]).astype(int)]
  corr3 = correspondence.correspondence_map(edge, w2c, k, depth, PATCH, TOL, neighborhood=1)
  corr1 = correspondence.correspondence_map(edge, w2c, k, depth, PATCH, TOL, neighborhood=0)
  assert (corr3 >= 0).all()
  np.testing.assert_array_equal(corr1[0] >= 0, np.isfinite(own))


@pytest.mark.parametrize('seed', [0, 1])
def test_random_scene_brute_force(seed):
  rng = np.random.default_rng(seed)
  # Two spheres, one partly in front of the other from many directions: real occlusion.
  sv, sf = render.icosphere(3)
  small = sv * 0.35 + np.array([0.7, 0.1, 0.0], np.float32)
  big = sv * 0.5 + np.array([-0.2, 0.0, 0.1], np.float32)
  vertices = np.concatenate([small, big])
  faces = np.concatenate([sf, sf + len(sv)])
  camera = {'mode': 'random', 'distance': 2.4, 'elevation_range': (-30.0, 60.0), 'fov': 40.0}
  w2c, k = cameras.make_cameras(camera, 6, SIZE, rng)
  _, depth = render.render_mesh(vertices, faces, (0.5, 0.5, 0.5), w2c, k, SIZE)
  centers = surface_samples(vertices, faces, 300, rng).astype(np.float32)
  corr = correspondence.correspondence_map(centers, w2c, k, depth, PATCH, TOL)
  uv, z = correspondence.project(centers, w2c, k)
  num_visible = 0
  for view in range(6):
    for g in range(len(centers)):
      u, v = float(uv[view, g, 0]), float(uv[view, g, 1])
      in_frame = z[view, g] > 0 and 0 <= u < SIZE and 0 <= v < SIZE
      if in_frame:
        r, c = int(np.floor(v)), int(np.floor(u))
        window = depth[view, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
        matches = abs(z[view, g] - window.min()) <= TOL
      if corr[view, g] >= 0:
        num_visible += 1
        assert in_frame and matches
        assert corr[view, g] == (r // PATCH) * PER_ROW + c // PATCH
      else:
        assert not in_frame or not matches
  visible_fraction = num_visible / corr.size
  assert 0.25 < visible_fraction < 0.75

  # Independent geometric check, no depth map: ray-cast the analytic spheres. Keep only clear cases
  # (far from the horizon and from occluding edges, where the tessellation and pixels may disagree).
  spheres = [(np.array([0.7, 0.1, 0.0]), 0.35), (np.array([-0.2, 0.0, 0.1]), 0.5)]
  # surface_samples picks faces at random: recover each centre's sphere from its distance.
  owner = np.array([0 if abs(np.linalg.norm(p - spheres[0][0]) - 0.35) < 0.02 else 1
                    for p in centers.astype(np.float64)])
  eyes = np.stack([-m[:3, :3].T.astype(np.float64) @ m[:3, 3] for m in w2c])
  agree = checked = 0
  for view in range(6):
    eye = eyes[view]
    for g, p in enumerate(centers.astype(np.float64)):
      cen, rad = spheres[owner[g]]
      n = (p - cen) / rad
      to_eye = (eye - p) / np.linalg.norm(eye - p)
      facing = n @ to_eye
      if abs(facing) < 0.25:
        continue
      # Clearance of the segment p -> eye from the other sphere (positive = misses it by that much).
      oc, orad = spheres[1 - owner[g]]
      seg = eye - p
      t = np.clip((oc - p) @ seg / (seg @ seg), 0, 1)
      clearance = np.linalg.norm(p + t * seg - oc) - orad
      if abs(clearance) < 0.05:
        continue
      u, v = float(uv[view, g, 0]), float(uv[view, g, 1])
      if min(u, v, SIZE - u, SIZE - v) < 2:      # too close to the frame edge to call
        continue
      truth = facing > 0 and clearance > 0
      checked += 1
      agree += truth == (corr[view, g] >= 0)
  assert checked > 500
  assert agree == checked


def test_bad_inputs():
  depth = np.full((2, SIZE, SIZE), np.inf, np.float32)
  w2c, k = cameras.make_cameras({'mode': 'ring', 'distance': 3.0, 'elevation_range': (0.0, 0.0),
                                'fov': 40.0}, 2, SIZE, np.random.default_rng(0))
  with pytest.raises(ValueError, match='centers'):
    correspondence.correspondence_map(np.zeros((4, 2)), w2c, k, depth, PATCH, TOL)
  with pytest.raises(ValueError, match='world_to_cam'):
    correspondence.correspondence_map(np.zeros((4, 3)), w2c[:1], k[:1], depth, PATCH, TOL)
  with pytest.raises(ValueError, match='multiple'):
    correspondence.correspondence_map(np.zeros((4, 3)), w2c, k, depth, 16, TOL)
  # Empty views: nothing visible.
  assert (correspondence.correspondence_map(np.zeros((4, 3)), w2c, k, depth, PATCH, TOL) == -1).all()
