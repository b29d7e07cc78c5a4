"""A vectorised numpy software rasteriser: triangle meshes and point splats, with depth.

The views that the teacher embeds and that the correspondence maps index (DESIGN.md §2-3), seen by
the cameras of cameras.py (OpenCV convention: `world_to_cam [V,4,4]`, pixel `intrinsics [V,3,3]`,
pixel (i, j) covers u in [j, j+1), v in [i, i+1)).

The rasteriser is a z-buffer over pixel centres with no Python loop over triangles: every
(triangle, pixel-in-its-bounding-box) candidate of every view is enumerated in one flat array, tested
with affine barycentrics, and the nearest candidate per pixel is found with one `np.minimum.at` over
a packed (float32 depth bits << 32 | triangle id) int64 key (positive float32 bit patterns sort like
the floats, so the minimum key is the nearest fragment and names its triangle exactly). Depth is
perspective-correct (1/z is affine in screen space for a planar triangle). Shading is flat Lambertian
from a directional light fixed in camera space plus ambient, with two-sided normals (|n.l|), so open
or inconsistently oriented meshes shade the same on both sides.

Limitations (documented, not hidden): triangles with a vertex closer than `_NEAR` to the camera plane
are dropped rather than clipped (objects are unit-sphere normalised and cameras sit outside the
sphere, so this never happens in the pipeline); coverage is "pixel centre inside the closed triangle"
with a small tolerance, so shared edges can be written by both triangles (the z-test picks one).
"""
from __future__ import annotations

import numpy as np

# Nearest allowed camera-space depth of a vertex / point; anything closer is dropped.
_NEAR = 1e-3
# Barycentric tolerance so pixel centres exactly on a shared edge are not missed by both sides.
_EDGE_EPS = 1e-5
# Light direction (towards the light) in camera space: from the upper left, in front of the object.
_LIGHT_DIR = np.array([-0.45, -0.65, -0.62])
_LIGHT_DIR = _LIGHT_DIR / np.linalg.norm(_LIGHT_DIR)
_AMBIENT = 0.35
_DIFFUSE = 0.65
_BACKGROUND = 255
_NO_HIT = np.iinfo(np.int64).max

# Settings recorded in the dataset metadata (DESIGN.md §3: "the renderer settings").
RENDER_SETTINGS = {
    'rasteriser': 'numpy z-buffer, pixel centres, perspective-correct depth, flat shading',
    'light_dir_camera': [float(x) for x in _LIGHT_DIR],
    'ambient': _AMBIENT,
    'diffuse': _DIFFUSE,
    'background': _BACKGROUND,
    'near': _NEAR,
}


# ----------------------------------------------------------------------------- rasteriser


def _check_cameras(world_to_cam, intrinsics, image_size) -> tuple[np.ndarray, np.ndarray, int]:
  world_to_cam = np.asarray(world_to_cam, np.float64)
  intrinsics = np.asarray(intrinsics, np.float64)
  if world_to_cam.ndim != 3 or world_to_cam.shape[1:] != (4, 4):
    raise ValueError(f'world_to_cam must be [V,4,4], got {world_to_cam.shape}')
  if intrinsics.shape != (world_to_cam.shape[0], 3, 3):
    raise ValueError(f'intrinsics must be [V,3,3] = [{world_to_cam.shape[0]},3,3], got {intrinsics.shape}')
  if not np.allclose(intrinsics[:, 2], [0.0, 0.0, 1.0]):
    raise ValueError('intrinsics: last row must be [0, 0, 1] (pixel intrinsics)')
  size = int(image_size)
  if size <= 0:
    raise ValueError(f'image_size must be positive, got {image_size}')
  return world_to_cam, intrinsics, size


def _to_camera(points: np.ndarray, world_to_cam: np.ndarray) -> np.ndarray:
  """[V,M,3] camera coordinates of world points [M,3] for each view."""
  return np.einsum('vij,mj->vmi', world_to_cam[:, :3, :3], points) + world_to_cam[:, None, :3, 3]


def _screen(cam: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Pixel coordinates [V,M] u, v of camera points (caller guarantees z > 0 where it matters)."""
  z = cam[..., 2]
  safe_z = np.where(np.abs(z) > 1e-12, z, 1e-12)
  x, y = cam[..., 0] / safe_z, cam[..., 1] / safe_z
  k = intrinsics[:, None]
  u = k[..., 0, 0] * x + k[..., 0, 1] * y + k[..., 0, 2]
  v = k[..., 1, 0] * x + k[..., 1, 1] * y + k[..., 1, 2]
  return u, v


def _zbuffer_resolve(pixel: np.ndarray, depth: np.ndarray, ident: np.ndarray,
                     num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
  """Nearest fragment per pixel: (depth [P] f32 with +inf where empty, id [P] int64, -1 where empty).

  The key packs the float32 depth bits (monotone for positive floats) above the fragment id, so one
  scatter-min gives both the nearest depth and which fragment it was; ties go to the lower id.
  """
  key = (depth.astype(np.float32).view(np.int32).astype(np.int64) << 32) | ident.astype(np.int64)
  buffer = np.full(num_pixels, _NO_HIT, np.int64)
  np.minimum.at(buffer, pixel, key)
  hit = buffer != _NO_HIT
  out_depth = np.full(num_pixels, np.inf, np.float32)
  out_depth[hit] = (buffer[hit] >> 32).astype(np.int32).view(np.float32)
  out_id = np.full(num_pixels, -1, np.int64)
  out_id[hit] = buffer[hit] & 0xFFFFFFFF
  return out_depth, out_id


def _as_color(color) -> np.ndarray:
  color = np.asarray(color, np.float64).reshape(-1)
  if color.shape != (3,) or not np.all(np.isfinite(color)):
    raise ValueError(f'color must be 3 finite floats in [0, 1], got {color}')
  return np.clip(color, 0.0, 1.0)


def render_mesh(vertices, faces, color, world_to_cam, intrinsics,
                image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Rasterise a triangle mesh into V views.

  Args:
    vertices: [Nv,3] world coordinates.
    faces: [Nf,3] vertex indices.
    color: [3] base colour in [0,1] (pass a grey for grey views).
    world_to_cam: [V,4,4] OpenCV extrinsics.
    intrinsics: [V,3,3] pixel intrinsics.
    image_size: H = W.

  Returns:
    rgb [V,H,W,3] uint8 (white background) and depth [V,H,W] float32 (camera z of the nearest
    surface at each pixel centre, +inf on the background).
  """
  world_to_cam, intrinsics, size = _check_cameras(world_to_cam, intrinsics, image_size)
  vertices = np.asarray(vertices, np.float64)
  faces = np.asarray(faces)
  if vertices.ndim != 2 or vertices.shape[1] != 3:
    raise ValueError(f'render_mesh: vertices must be [Nv,3], got {vertices.shape}')
  if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
    raise ValueError(f'render_mesh: faces must be integer [Nf,3], got {faces.shape} {faces.dtype}')
  if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
    raise ValueError(f'render_mesh: face indices must be in [0, {len(vertices)}), '
                     f'got [{faces.min()}, {faces.max()}]')
  base = _as_color(color)
  num_views = world_to_cam.shape[0]
  num_pixels = num_views * size * size

  cam = _to_camera(vertices, world_to_cam)                     # [V,Nv,3]
  u, v = _screen(cam, intrinsics)                              # [V,Nv]
  tri_cam = cam[:, faces]                                      # [V,Nf,3(vertex),3]
  tri_u, tri_v, tri_z = u[:, faces], v[:, faces], tri_cam[..., 2]

  # Flat shading from the camera-space face normal (two-sided).
  normal = np.cross(tri_cam[:, :, 1] - tri_cam[:, :, 0], tri_cam[:, :, 2] - tri_cam[:, :, 0])
  normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-20)
  shade = _AMBIENT + _DIFFUSE * np.abs(normal @ _LIGHT_DIR)    # [V,Nf]

  # Flatten (view, face) into one triangle list.
  tri_u = tri_u.reshape(-1, 3)
  tri_v = tri_v.reshape(-1, 3)
  tri_z = tri_z.reshape(-1, 3)
  view_of_tri = np.repeat(np.arange(num_views), faces.shape[0])
  area2 = ((tri_u[:, 1] - tri_u[:, 0]) * (tri_v[:, 2] - tri_v[:, 0])
           - (tri_u[:, 2] - tri_u[:, 0]) * (tri_v[:, 1] - tri_v[:, 0]))
  # Bounding box over pixel centres (j + 0.5 in [min_u, max_u]).
  col0 = np.maximum(np.ceil(tri_u.min(1) - 0.5), 0)
  col1 = np.minimum(np.floor(tri_u.max(1) - 0.5), size - 1)
  row0 = np.maximum(np.ceil(tri_v.min(1) - 0.5), 0)
  row1 = np.minimum(np.floor(tri_v.max(1) - 0.5), size - 1)
  keep = ((tri_z.min(1) > _NEAR) & (np.abs(area2) > 1e-12)
          & (col1 >= col0) & (row1 >= row0))
  idx = np.flatnonzero(keep)
  rgb = np.full((num_pixels, 3), _BACKGROUND, np.uint8)
  if idx.size == 0:
    return rgb.reshape(num_views, size, size, 3), np.full((num_views, size, size), np.inf, np.float32)

  tu, tv, tz, a2 = tri_u[idx], tri_v[idx], tri_z[idx], area2[idx]
  c0, r0 = col0[idx], row0[idx]
  width = (col1[idx] - c0 + 1).astype(np.int64)
  height = (row1[idx] - r0 + 1).astype(np.int64)
  # Affine barycentrics in coordinates local to each box corner (x = col - c0, y = row - r0, so
  # the numbers stay small): w1(x, y) = ((x - x0)(y2 - y0) - (y - y0)(x2 - x0)) / area2, w2
  # likewise, w0 = 1 - w1 - w2. Each w_i = a_i x + b_i y + c_i.
  x0, y0 = tu[:, 0] - (c0 + 0.5), tv[:, 0] - (r0 + 0.5)
  e1x, e1y = tu[:, 1] - tu[:, 0], tv[:, 1] - tv[:, 0]
  e2x, e2y = tu[:, 2] - tu[:, 0], tv[:, 2] - tv[:, 0]
  inv_a = 1.0 / a2
  w1_a, w1_b = e2y * inv_a, -e2x * inv_a
  w1_c = -(x0 * w1_a + y0 * w1_b)
  w2_a, w2_b = -e1y * inv_a, e1x * inv_a
  w2_c = -(x0 * w2_a + y0 * w2_b)
  edge_a = np.stack([-w1_a - w2_a, w1_a, w2_a], 1)             # [T,3] for w0, w1, w2
  edge_b = np.stack([-w1_b - w2_b, w1_b, w2_b], 1)
  edge_c = np.stack([1.0 - w1_c - w2_c, w1_c, w2_c], 1)
  iz = 1.0 / tz
  # 1/z = iz0 + w1 (iz1 - iz0) + w2 (iz2 - iz0): affine in screen space for a planar triangle.
  d1, d2 = iz[:, 1] - iz[:, 0], iz[:, 2] - iz[:, 0]
  iz_a = w1_a * d1 + w2_a * d2
  iz_b = w1_b * d1 + w2_b * d2
  iz_c = iz[:, 0] + w1_c * d1 + w2_c * d2

  # Scanlines: one (triangle, row) pair per box row; on that row's centre line each half-plane
  # w_i >= -eps is an interval of x, so the covered pixels form one span [start, stop] and only
  # covered pixels are ever enumerated (no per-pixel inside test, no bounding-box waste).
  rows_per_tri = height
  pair_tri = np.repeat(np.arange(idx.size), rows_per_tri)
  dy = (np.arange(pair_tri.size) - np.repeat(np.cumsum(rows_per_tri) - rows_per_tri, rows_per_tri)
        ).astype(np.float64)
  a = edge_a[pair_tri]
  rhs = -_EDGE_EPS - (edge_b[pair_tri] * dy[:, None] + edge_c[pair_tri])   # need a * x >= rhs
  with np.errstate(divide='ignore', invalid='ignore'):
    bound = rhs / a
  lo = np.where(a > 0, bound, -np.inf).max(1)
  hi = np.where(a < 0, bound, np.inf).min(1)
  # An edge parallel to the scanline (a == 0) either admits the whole row or none of it.
  blocked = ((a == 0) & (rhs > 0)).any(1)
  start = np.maximum(np.ceil(lo), 0)
  stop = np.minimum(np.floor(hi), (width - 1)[pair_tri])
  span = np.where(blocked | ~(stop >= start), 0, stop - start + 1).astype(np.int64)
  keep_pair = np.flatnonzero(span)
  pair_tri, dy, start, span = pair_tri[keep_pair], dy[keep_pair], start[keep_pair], span[keep_pair]
  iz_start = iz_a[pair_tri] * start + iz_b[pair_tri] * dy + iz_c[pair_tri]
  pixel_start = (view_of_tri[idx][pair_tri] * (size * size) + (r0[pair_tri] + dy).astype(np.int64) * size
                 + (c0[pair_tri] + start).astype(np.int64))

  # Expand spans to pixels: the k-th pixel of a span is start + k, with 1/z advancing by iz_a.
  total = int(span.sum())
  pair = np.repeat(np.arange(span.size, dtype=np.int64), span)
  offset = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(span) - span, span)
  pixel = pixel_start[pair] + offset
  inv_depth = (iz_start.astype(np.float32)[pair]
               + iz_a[pair_tri].astype(np.float32)[pair] * offset.astype(np.float32))
  front = inv_depth > 0
  if not front.all():
    pixel, inv_depth, pair = pixel[front], inv_depth[front], pair[front]
  depth, winner_pair = _zbuffer_resolve(pixel, 1.0 / inv_depth, pair, num_pixels)
  winner = np.where(winner_pair >= 0, pair_tri[np.maximum(winner_pair, 0)], -1)

  hit = winner >= 0
  face_shade = shade.reshape(-1)[idx]                           # [kept triangles]
  face_rgb = np.clip(np.round(face_shade[:, None] * base[None] * 255.0), 0, 255).astype(np.uint8)
  rgb[hit] = face_rgb[winner[hit]]
  return rgb.reshape(num_views, size, size, 3), depth.reshape(num_views, size, size)


def splat_radius_px(num_points: int, intrinsics, distance: float, coverage: float = 1.5) -> float:
  """A splat radius (pixels) that closes the gaps between the visible points of a unit-sphere cloud.

  About half of `num_points` face the camera and spread over the object's projected disc (radius
  f / distance pixels for a unit sphere at `distance`), so the mean spacing is
  sqrt(pi (f / d)^2 / (N / 2)); `coverage` times half of that spacing, at least 1 px.
  """
  focal = float(np.asarray(intrinsics, np.float64).reshape(-1, 3, 3)[0, 1, 1])
  disc_area = np.pi * (focal / float(distance)) ** 2
  spacing = np.sqrt(disc_area / max(num_points / 2.0, 1.0))
  return float(max(1.0, coverage * 0.5 * spacing))


def render_points(points, color, world_to_cam, intrinsics, image_size: int,
                  radius_px: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
  """Depth-tested round splats of a point cloud (for sources without meshes, e.g. ScanObjectNN).

  Each point covers the pixels whose centres lie within `radius_px` of its projection (see
  `splat_radius_px` for a radius matched to the point density), at the point's own camera depth; the nearest point wins per pixel. Shading is a depth cue: the nearest
  point of each view is drawn at full base colour, the farthest at 55 %.

  Returns rgb [V,H,W,3] uint8 (white background) and depth [V,H,W] float32 (+inf background).
  """
  world_to_cam, intrinsics, size = _check_cameras(world_to_cam, intrinsics, image_size)
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 3:
    raise ValueError(f'render_points: points must be [M,3], got {points.shape}')
  if not radius_px > 0:
    raise ValueError(f'render_points: radius_px must be > 0, got {radius_px}')
  base = _as_color(color)
  num_views, num_points = world_to_cam.shape[0], points.shape[0]
  num_pixels = num_views * size * size
  cam = _to_camera(points, world_to_cam)
  u, v = _screen(cam, intrinsics)
  z = cam[..., 2]
  front = z > _NEAR
  # Per view depth range of the points in front, for the depth cue.
  z_front = np.where(front, z, np.nan)
  with np.errstate(all='ignore'):
    z_lo = np.nanmin(np.where(front.any(1, keepdims=True), z_front, 0.0), axis=1, keepdims=True)
    z_hi = np.nanmax(np.where(front.any(1, keepdims=True), z_front, 0.0), axis=1, keepdims=True)
  point_shade = 1.0 - 0.45 * (z - z_lo) / np.maximum(z_hi - z_lo, 1e-9)

  window = int(np.floor(2 * radius_px)) + 1
  col0 = np.ceil(u - 0.5 - radius_px)[..., None, None]
  row0 = np.ceil(v - 0.5 - radius_px)[..., None, None]
  offsets = np.arange(window)
  cols = col0 + offsets[None, :]                  # [V,M,1,window]
  rows = row0 + offsets[:, None]                  # [V,M,window,1]
  dist2 = (cols + 0.5 - u[..., None, None]) ** 2 + (rows + 0.5 - v[..., None, None]) ** 2
  ok = ((dist2 <= radius_px ** 2) & (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
        & front[..., None, None])
  vi, mi, ri, ci = np.nonzero(ok)
  pixel = (vi * size * size + (row0[vi, mi, 0, 0] + ri).astype(np.int64) * size
           + (col0[vi, mi, 0, 0] + ci).astype(np.int64))
  ident = vi.astype(np.int64) * num_points + mi
  depth, winner = _zbuffer_resolve(pixel, z[vi, mi], ident, num_pixels)
  rgb = np.full((num_pixels, 3), _BACKGROUND, np.uint8)
  hit = winner >= 0
  shade = point_shade.reshape(-1)[winner[hit]]
  rgb[hit] = np.clip(np.round(shade[:, None] * base[None] * 255.0), 0, 255).astype(np.uint8)
  return rgb.reshape(num_views, size, size, 3), depth.reshape(num_views, size, size)


def icosphere(subdivisions: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """Unit icosphere (vertices [Nv,3] f32, faces [20 * 4^s, 3] i32), outward winding.

  A closed, well-conditioned test and benchmark mesh (level 3: 1,280 triangles).
  """
  t = (1.0 + 5.0 ** 0.5) / 2.0
  verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t),
           (0, 1, -t), (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
  faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
           (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
           (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
  vertices = [np.asarray(v, np.float64) / np.linalg.norm(v) for v in verts]
  for _ in range(int(subdivisions)):
    midpoint: dict[tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
      key = (min(a, b), max(a, b))
      if key not in midpoint:
        m = vertices[a] + vertices[b]
        vertices.append(m / np.linalg.norm(m))
        midpoint[key] = len(vertices) - 1
      return midpoint[key]

    new_faces = []
    for a, b, c in faces:
      ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
      new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    faces = new_faces
  return np.asarray(vertices, np.float32), np.asarray(faces, np.int32)
