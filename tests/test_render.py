"""Tests of cameras, render, histograms and view_plots: poses, rasteriser, splats, plots."""
import os

import numpy as np
import pytest

from crossjepa.data import cameras
from crossjepa.data import correspondence
from crossjepa.data import histograms
from crossjepa.data import render
from crossjepa.data import view_plots

SIZE = 84
CAMERA = {'mode': 'random', 'distance': 2.6, 'elevation_range': (-10.0, 50.0), 'fov': 45.0}


def cube_mesh(half=0.5):
  corners = np.array([[x, y, z] for x in (-half, half) for y in (-half, half) for z in (-half, half)],
                     np.float32)
  # Index = 4 * (x > 0) + 2 * (y > 0) + (z > 0); two triangles per face.
  quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
  faces = [(a, b, c) for a, b, c, _ in quads] + [(a, c, d) for a, _, c, d in quads]
  return corners, np.array(faces, np.int32)


def front_camera(distance, fov=45.0, size=SIZE):
  world_to_cam = cameras.look_at((0.0, 0.0, distance), (0.0, 0.0, 0.0))[None]
  return world_to_cam, cameras.pinhole_intrinsics(size, fov)[None]


def test_look_at_is_opencv_and_projects_axis_to_centre():
  w2c = cameras.look_at((0.3, 1.2, 2.5), (0.1, -0.2, 0.4))
  rot = w2c[:3, :3].astype(np.float64)
  np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-6)
  assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-6)
  k = cameras.pinhole_intrinsics(SIZE, 45.0)
  # The eye maps to the camera origin; the target is straight ahead, at the image centre.
  eye_cam = w2c @ np.array([0.3, 1.2, 2.5, 1.0])
  np.testing.assert_allclose(eye_cam[:3], 0.0, atol=1e-5)
  uv, z = correspondence.project(np.array([[0.1, -0.2, 0.4]]), w2c, k)
  np.testing.assert_allclose(uv[0], [SIZE / 2, SIZE / 2], atol=1e-4)
  assert z[0] == pytest.approx(np.linalg.norm([0.2, 1.4, 2.1]), rel=1e-5)
  # Camera at +z looking at the origin: world +x is image right (u grows), world +y is up (v falls).
  w2c, k = front_camera(3.0)
  uv, z = correspondence.project(np.array([[0, 0, 0], [0.2, 0, 0], [0, 0.2, 0]], np.float32), w2c[0], k[0])
  assert uv[1, 0] > uv[0, 0] and uv[1, 1] == pytest.approx(uv[0, 1], abs=1e-4)
  assert uv[2, 1] < uv[0, 1] and uv[2, 0] == pytest.approx(uv[0, 0], abs=1e-4)
  focal = SIZE / 2 / np.tan(np.deg2rad(22.5))
  assert uv[1, 0] - SIZE / 2 == pytest.approx(focal * 0.2 / 3.0, rel=1e-5)
  np.testing.assert_allclose(z, 3.0, rtol=1e-6)
  # Looking straight down stays a proper rotation.
  w2c = cameras.look_at((0.0, 3.0, 0.0), (0.0, 0.0, 0.0))
  assert np.linalg.det(w2c[:3, :3].astype(np.float64)) == pytest.approx(1.0, abs=1e-6)
  np.testing.assert_allclose(w2c[2, :3], [0.0, -1.0, 0.0], atol=1e-6)


def test_pixel_centre_convention():
  w2c, k = front_camera(3.0)
  focal = float(k[0, 0, 0])
  # World (x, y) chosen so the point projects to (u, v) = (0.5, 42.5): the centre of pixel (42, 0).
  x = (0.5 - SIZE / 2) * 3.0 / focal
  y = -(42.5 - SIZE / 2) * 3.0 / focal
  uv, _ = correspondence.project(np.array([x, y, 0.0]), w2c[0], k[0])
  np.testing.assert_allclose(uv, [0.5, 42.5], atol=1e-4)
  assert correspondence.patch_index(uv, SIZE, 14) == 3 * (SIZE // 14)   # row 42 -> patch row 3, col 0
  # A splat of radius 0.4 px covers only the pixel whose centre it sits on.
  _, depth = render.render_points(np.array([[x, y, 0.0]]), (1, 0, 0), w2c, k, SIZE, radius_px=0.4)
  np.testing.assert_array_equal(np.argwhere(np.isfinite(depth[0])), [[42, 0]])
  assert depth[0, 42, 0] == pytest.approx(3.0, abs=1e-5)
  np.testing.assert_array_equal(correspondence.patch_index(
      np.array([[0.0, 0.0], [13.99, 0.0], [14.0, 0.0], [0.0, 14.0], [83.9, 83.9], [84.0, 1.0], [-0.01, 1.0]]),
      SIZE, 14), [0, 0, 1, 6, 35, -1, -1])


def test_cube_front_face_depth_and_coverage():
  distance = 3.0
  vertices, faces = cube_mesh()
  w2c, k = front_camera(distance)
  rgb, depth = render.render_mesh(vertices, faces, (0.2, 0.6, 0.9), w2c, k, SIZE)
  assert rgb.shape == (1, SIZE, SIZE, 3) and rgb.dtype == np.uint8
  assert depth.dtype == np.float32
  # Centre pixel sees the front face at z = 0.5: camera depth = distance - 0.5, flat everywhere on it.
  assert depth[0, SIZE // 2, SIZE // 2] == pytest.approx(distance - 0.5, abs=1e-5)
  finite = np.isfinite(depth[0])
  np.testing.assert_allclose(depth[0][finite], distance - 0.5, atol=1e-4)
  # Covered square: pixel centres j + 0.5 within W/2 +- f * 0.5 / (distance - 0.5).
  focal = float(k[0, 0, 0])
  half = focal * 0.5 / (distance - 0.5)
  lo, hi = SIZE / 2 - half, SIZE / 2 + half
  expected = np.arange(SIZE)[(np.arange(SIZE) + 0.5 >= lo) & (np.arange(SIZE) + 0.5 <= hi)]
  rows = np.flatnonzero(finite.any(1))
  cols = np.flatnonzero(finite.any(0))
  assert abs(rows[0] - expected[0]) <= 1 and abs(rows[-1] - expected[-1]) <= 1
  assert abs(cols[0] - expected[0]) <= 1 and abs(cols[-1] - expected[-1]) <= 1
  # The face is a solid square (no holes along the diagonal shared edge).
  assert finite[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
  assert finite.sum() == pytest.approx(len(expected) ** 2, abs=4 * len(expected))
  # Background is white; the face is one flat, lit shade of the base colour.
  assert (rgb[0][~finite] == 255).all()
  face_rgb = rgb[0][finite]
  assert (face_rgb == face_rgb[0]).all()
  shade = face_rgb[0] / (255.0 * np.array([0.2, 0.6, 0.9]))
  np.testing.assert_allclose(shade, shade[2], atol=0.02)
  assert 0.35 < shade[2] <= 1.0


def test_render_depth_matches_sphere_and_is_z_buffered():
  vertices, faces = render.icosphere(3)
  distance = 2.6
  w2c, k = front_camera(distance)
  _, depth = render.render_mesh(vertices, faces, (0.5, 0.5, 0.5), w2c, k, SIZE)
  # Nearest surface along each pixel ray: analytic sphere depth, within the tessellation error.
  focal = float(k[0, 0, 0])
  cols = np.arange(SIZE) + 0.5
  x = (cols[None, :] - SIZE / 2) / focal
  y = (cols[:, None] - SIZE / 2) / focal
  # Ray t * (x, y, 1) from the camera at distance d: |t(x,y,1) - (0,0,d)|^2 = 1.
  a = x ** 2 + y ** 2 + 1
  disc = distance ** 2 - a * (distance ** 2 - 1)
  inside = disc > 0.02     # away from the silhouette
  t = (distance - np.sqrt(np.where(inside, disc, 0))) / a
  assert np.isfinite(depth[0][inside]).all()
  # Flat facets sit inside the sphere (sagitta ~0.005 at level 3); grazing rays magnify that.
  np.testing.assert_allclose(depth[0][inside], t[inside], atol=0.05)
  frontal = disc > 0.5
  np.testing.assert_allclose(depth[0][frontal], t[frontal], atol=0.01)
  assert np.isinf(depth[0][disc < -0.02]).all()
  # Camera depth, not ray length: the nearest of the front and back hemisphere is kept.
  assert depth[0][inside].max() < distance


def test_render_points_sphere_depth():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(60000, 3))
  points /= np.linalg.norm(points, axis=1, keepdims=True)
  w2c, k = front_camera(3.0)
  rgb, depth = render.render_points(points, (1.0, 0.0, 0.0), w2c, k, SIZE, radius_px=1.5)
  centre = depth[0, SIZE // 2 - 2:SIZE // 2 + 2, SIZE // 2 - 2:SIZE // 2 + 2]
  np.testing.assert_allclose(centre, 2.0, atol=0.01)
  # Nearest point wins: no far-hemisphere depth anywhere near the middle.
  focal = float(k[0, 0, 0])
  radius_px = focal / np.sqrt(3.0 ** 2 - 1)        # silhouette of the unit sphere from distance 3
  jj, ii = np.meshgrid(np.arange(SIZE) + 0.5, np.arange(SIZE) + 0.5)
  inner = (jj - SIZE / 2) ** 2 + (ii - SIZE / 2) ** 2 < (0.7 * radius_px) ** 2
  assert np.isfinite(depth[0][inner]).all() and (depth[0][inner] < 3.0).all()
  assert np.isinf(depth[0][(jj - SIZE / 2) ** 2 + (ii - SIZE / 2) ** 2 > (radius_px + 3) ** 2]).all()
  # Depth cue: nearer is brighter; background white; blue and green stay 0 on the object.
  finite = np.isfinite(depth[0])
  assert (rgb[0][~finite] == 255).all() and (rgb[0][finite][:, 1:] == 0).all()
  assert rgb[0, SIZE // 2, SIZE // 2, 0] == 255


def test_make_cameras_ring_and_random():
  rng = np.random.default_rng(1)
  ring = dict(CAMERA, mode='ring')
  w2c, k = cameras.make_cameras(ring, 6, SIZE, rng)
  assert w2c.shape == (6, 4, 4) and k.shape == (6, 3, 3) and w2c.dtype == np.float32
  eyes = np.stack([-m[:3, :3].T.astype(np.float64) @ m[:3, 3] for m in w2c])
  np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), 2.6, rtol=1e-5)
  elevation = np.rad2deg(np.arcsin(eyes[:, 1] / 2.6))
  np.testing.assert_allclose(elevation, 20.0, atol=1e-3)
  azimuth = np.arctan2(eyes[:, 0], eyes[:, 2])
  steps = np.mod(np.diff(azimuth), 2 * np.pi)
  np.testing.assert_allclose(steps, 2 * np.pi / 6, atol=1e-4)
  # Every camera looks at the origin.
  uv, _ = correspondence.project(np.zeros(3), w2c, k)
  np.testing.assert_allclose(uv, SIZE / 2, atol=1e-3)
  w2c, k = cameras.make_cameras(CAMERA, 64, SIZE, rng)
  eyes = np.stack([-m[:3, :3].T.astype(np.float64) @ m[:3, 3] for m in w2c])
  elevation = np.rad2deg(np.arcsin(eyes[:, 1] / 2.6))
  assert elevation.min() >= -10.0 - 1e-3 and elevation.max() <= 50.0 + 1e-3
  assert elevation.max() - elevation.min() > 30.0
  with pytest.raises(ValueError, match='mode'):
    cameras.make_cameras(dict(CAMERA, mode='spiral'), 2, SIZE, rng)
  with pytest.raises(ValueError, match='distance'):
    cameras.make_cameras(dict(CAMERA, distance=0.5), 2, SIZE, rng)


def test_color_histogram():
  rgb = np.full((3, 4, 4, 3), 255, np.uint8)
  depth = np.full((3, 4, 4), np.inf, np.float32)
  # View 0: 4 object pixels, 3 of colour (0, 128, 255) and 1 of (31, 32, 200); background ignored.
  rgb[0, 0, :3] = (0, 128, 255)
  rgb[0, 1, 0] = (31, 32, 200)
  depth[0, 0, :3] = 1.0
  depth[0, 1, 0] = 1.0
  # View 1: everything object. View 2: no object pixel.
  rgb[1] = (10, 20, 30)
  depth[1] = 2.0
  hist = histograms.color_histogram(rgb, depth, 8)
  assert hist.shape == (3, 24) and hist.dtype == np.float32
  np.testing.assert_allclose(hist[:2].sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(hist[:2].reshape(2, 3, 8).sum(-1), 1 / 3, atol=1e-6)
  expected = np.zeros((3, 8))
  expected[0, 0] = 4          # red 0, 0, 0, 31 -> bin 0
  expected[1, 4] = 3          # green 128 -> bin 4
  expected[1, 1] = 1          # green 32 -> bin 1
  expected[2, 7] = 3          # blue 255 -> bin 7
  expected[2, 6] = 1          # blue 200 -> bin 6
  np.testing.assert_allclose(hist[0], expected.reshape(-1) / 12.0, atol=1e-7)
  np.testing.assert_array_equal(hist[2], 0.0)
  assert np.isfinite(hist).all()


def test_grey_and_colored_views_histogram():
  vertices, faces = render.icosphere(2)
  w2c, k = cameras.make_cameras(CAMERA, 2, SIZE, np.random.default_rng(0))
  grey, depth = render.render_mesh(vertices, faces, (0.7, 0.7, 0.7), w2c, k, SIZE)
  obj = np.isfinite(depth)
  assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
  assert 0.3 < obj.mean() < 0.9
  hist = histograms.color_histogram(grey, depth, 8).reshape(2, 3, 8)
  np.testing.assert_allclose(hist[:, 0], hist[:, 1])
  assert hist[:, :, 7].sum() == 0.0          # the white background is not counted


def test_rendering_metadata(tmp_path):
  path = tmp_path / 'rendering_metadata.txt'
  path.write_text('0 0 0 0.8 25\n\n90.5, 30, 0, 0.6, 25\n')
  rows = cameras.read_rendering_metadata(str(path))
  np.testing.assert_allclose(rows, [[0, 0, 0, 0.8, 25], [90.5, 30, 0, 0.6, 25]])
  w2c, k = cameras.cameras_from_rendering_metadata(rows, 137)
  eyes = np.stack([-m[:3, :3].T.astype(np.float64) @ m[:3, 3] for m in w2c])
  # Azimuth 0, elevation 0 -> on +x at 0.8 * 1.75; azimuth 90.5 turns towards +z; elevation lifts y.
  np.testing.assert_allclose(eyes[0], [1.4, 0.0, 0.0], atol=1e-5)
  assert np.linalg.norm(eyes[1]) == pytest.approx(0.6 * 1.75, rel=1e-5)
  assert eyes[1, 2] > 0.8 and eyes[1, 1] == pytest.approx(1.05 * np.sin(np.deg2rad(30)), rel=1e-4)
  # Blender's default lens (35 mm on a 32 mm sensor), not the fifth column's 25 degrees.
  np.testing.assert_allclose(k[:, 0, 0], 137 * 35 / 32, rtol=1e-5)
  np.testing.assert_allclose(k[:, :2, 2], 68.5)
  uv, _ = correspondence.project(np.zeros(3), w2c, k)
  np.testing.assert_allclose(uv, 68.5, atol=1e-3)
  uv, _ = correspondence.project(np.array([0.0, 0.3, 0.0]), w2c[0], k[0])
  assert uv[1] < 68.5                         # y-up world -> up in the image
  # Normalised objects: p' = (p - c) * s moves the camera with them.
  w2c_n, _ = cameras.cameras_from_rendering_metadata(rows[:1], 137, object_center=(0.1, 0, 0),
                                                    object_scale=2.0)
  eye_n = -w2c_n[0, :3, :3].T.astype(np.float64) @ w2c_n[0, :3, 3]
  np.testing.assert_allclose(eye_n, [2.6, 0.0, 0.0], atol=1e-5)

  # The same camera built in Blender's world as 3D-R2N2's renderer places it: the file turned z-up,
  # (x, y, z) -> (x, -z, y); the camera at d (cos az cos el, -sin az cos el, sin el), tracking the
  # origin with +z up; Blender's camera axes (x right, y up, looking down -z) turned OpenCV's.
  to_blender = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
  for row, m in zip(rows.astype(np.float64), w2c):
    az, el, d = np.deg2rad(row[0]), np.deg2rad(row[1]), 1.75 * row[3]
    eye = d * np.array([np.cos(az) * np.cos(el), -np.sin(az) * np.cos(el), np.sin(el)])
    back = eye / np.linalg.norm(eye)                     # Blender's camera +z points away
    right = np.cross([0.0, 0, 1], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    blender_w2c = np.stack([right, -up, -back])          # OpenCV rows: x right, y down, z forward
    np.testing.assert_allclose(m[:3, :3], blender_w2c @ to_blender, atol=1e-6)
    np.testing.assert_allclose(m[:3, 3], -blender_w2c @ eye, atol=1e-6)

  bad = tmp_path / 'bad.txt'
  bad.write_text('0 0 0 0.8 25\n10 20 0 0.7\n')
  with pytest.raises(ValueError, match=r'bad\.txt:2: expected 5 numbers'):
    cameras.read_rendering_metadata(str(bad))
  bad.write_text('0 0 0 0.8 25\n0 0 0 zero 25\n')
  with pytest.raises(ValueError, match=r'bad\.txt:2: not a number'):
    cameras.read_rendering_metadata(str(bad))
  bad.write_text('\n\n')
  with pytest.raises(ValueError, match='no camera rows'):
    cameras.read_rendering_metadata(str(bad))


def test_plot_views_writes_png(tmp_path):
  vertices, faces = render.icosphere(1)
  w2c, k = cameras.make_cameras(CAMERA, 2, 28, np.random.default_rng(0))
  rgb, depth = render.render_mesh(vertices, faces, (0.9, 0.4, 0.1), w2c, k, 28)
  centers = vertices[:5]
  uv, _ = correspondence.project(centers, w2c, k)
  corr = correspondence.correspondence_map(centers, w2c, k, depth, 14, 0.1)
  path = tmp_path / 'plots' / 'views.png'
  view_plots.plot_views(str(path), rgb[None], uv[None], corr[None], 14)
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert [p for p in os.listdir(path.parent) if p.startswith('.tmp_')] == []


def brute_force_depth(vertices, faces, world_to_cam, intrinsics, size):
  """Per pixel centre, per triangle, float64: nearest camera depth and whether a centre is near an edge."""
  cam = vertices.astype(np.float64) @ world_to_cam[:3, :3].T.astype(np.float64) + world_to_cam[:3, 3]
  pix = cam @ intrinsics.T.astype(np.float64)
  uv = pix[:, :2] / pix[:, 2:]
  centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1).reshape(-1, 2)
  depth = np.full(len(centres), np.inf)
  ambiguous = np.zeros(len(centres), bool)
  for tri in faces:
    p0, p1, p2 = uv[tri]
    area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p2[0] - p0[0]) * (p1[1] - p0[1])
    if abs(area) < 1e-9:
      continue
    d = centres - p0
    w1 = (d[:, 0] * (p2[1] - p0[1]) - d[:, 1] * (p2[0] - p0[0])) / area
    w2 = ((p1[0] - p0[0]) * d[:, 1] - (p1[1] - p0[1]) * d[:, 0]) / area
    w = np.stack([1 - w1 - w2, w1, w2], 1)
    inside = (w >= 0).all(1)
    ambiguous |= (np.abs(w) < 1e-3).any(1) & (w >= -1e-3).all(1)
    z = 1.0 / (w @ (1.0 / cam[tri, 2]))
    depth = np.where(inside & (z < depth), z, depth)
  return depth.reshape(size, size), ambiguous.reshape(size, size)


def test_rasteriser_matches_brute_force():
  rng = np.random.default_rng(3)
  # A soup of random, overlapping, interpenetrating triangles of all sizes and orientations.
  centres = rng.uniform(-0.7, 0.7, size=(40, 1, 3))
  vertices = (centres + rng.normal(size=(40, 3, 3)) * rng.uniform(0.05, 0.5, size=(40, 1, 1))).reshape(-1, 3)
  faces = np.arange(120, dtype=np.int32).reshape(40, 3)
  w2c, k = cameras.make_cameras(CAMERA, 3, 32, rng)
  _, depth = render.render_mesh(vertices.astype(np.float32), faces, (1, 1, 1), w2c, k, 32)
  for view in range(3):
    ref, ambiguous = brute_force_depth(vertices, faces, w2c[view], k[view], 32)
    clear = ~ambiguous
    assert clear.mean() > 0.8
    np.testing.assert_array_equal(np.isfinite(depth[view])[clear], np.isfinite(ref)[clear])
    both = clear & np.isfinite(ref)
    assert both.sum() > 100
    np.testing.assert_allclose(depth[view][both], ref[both], rtol=1e-4)
