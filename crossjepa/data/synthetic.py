"""The embedded procedural shape benchmark: 48 classes of triangle meshes, clean or scanned.

Why it exists: the whole pipeline must run offline, and a benchmark where a random-init encoder
scores 0.90 cannot show a method's worth (DESIGN.md §8). So the classes include fine-grained
look-alike families that differ by STRUCTURE, not by proportions (chair / armchair / office chair;
stool on 4 legs / 3 legs / a pedestal; round table on legs / pedestal table / trestle table /
desk; shelf with 2-3 boards / bookcase with 4-6; bench / park bench; bed / bunk bed; cup / mug /
goblet / bowl with overlapping height ratios; vase / pitcher; lamp / desk lamp), and every class
has strong intra-class variation: random proportions, part counts and part shapes, deformation
(taper, bend, twist, vertex noise), anisotropic scale (0.75-1.33 per axis) and a tilt of up to
6 degrees about two horizontal axes, so that extents alone do not separate the classes, and a
random rotation about the up axis. The base colour of an instance is drawn from its own random
stream and carries no information about the class. docs/DATASET_CARD.md lists the classes and the
measured headroom (experiments/headroom.py).

Conventions: right-handed, **+y is up** (the renderer's world frame; cameras are OpenCV), the
object stands on y = 0 before normalisation. Every instance is normalised to the unit sphere
in Point-BERT's convention (centre = surface centroid, i.e. the mean of dense surface samples;
scale = max distance), see `meshes.normalize_mesh`.

`make_scan` imitates ScanObjectNN's PB_T50_RS (Uy et al., ICCV 2019): the surface points that one
random camera sees (hidden-point removal, Katz et al., SIGGRAPH 2007, with a convex hull), together
with background (a floor patch and a fragment of a neighbouring object) inside a jittered crop
box, sensor noise, rotation about up, anisotropic scale jitter, then unit-sphere normalisation.

Everything is deterministic from the instance seed (source_synthetic.instance_seed). Measured cost
on a busy 2-core CPU: about 1.5 ms per clean mesh, about 30 ms per scan.
"""
from __future__ import annotations

import colorsys
import math

import numpy as np
from scipy.spatial import ConvexHull

from crossjepa.data.meshes import Mesh, normalize_mesh, normalize_unit_sphere, sample_surface

# --------------------------------------------------------------------------- primitives
# Each primitive returns (vertices [n,3] float64, faces [m,3] int64) with outward winding.

_SEG = 20  # segments around an axis of revolution: cheap and round enough at 1-2k points


def _box(size, center=(0.0, 0.0, 0.0)):
  sx, sy, sz = (0.5 * float(s) for s in size)
  v = np.array([[-sx, -sy, -sz], [sx, -sy, -sz], [sx, sy, -sz], [-sx, sy, -sz],
                [-sx, -sy, sz], [sx, -sy, sz], [sx, sy, sz], [-sx, sy, sz]])
  f = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                [3, 7, 6], [3, 6, 2], [0, 4, 7], [0, 7, 3], [1, 2, 6], [1, 6, 5]])
  return v + np.asarray(center, np.float64), f


def _lathe(radius, height, segments=_SEG):
  """Surface of revolution about +y of the profile (radius[i], height[i]).

  A profile that starts and ends on the axis (radius 0) is closed; a profile that goes up the
  outside and back down the inside makes a thin-walled open vessel.
  """
  radius = np.asarray(radius, np.float64)
  height = np.asarray(height, np.float64)
  p = len(radius)
  theta = np.linspace(0.0, 2.0 * np.pi, segments, endpoint=False)
  # x = r cos, z = -r sin: counter-clockwise seen from +y, so faces wind outward.
  v = np.stack([radius[:, None] * np.cos(theta)[None, :],
                np.broadcast_to(height[:, None], (p, segments)),
                -radius[:, None] * np.sin(theta)[None, :]], axis=-1).reshape(-1, 3)
  i = np.arange(p - 1)[:, None]
  j = np.arange(segments)[None, :]
  a = i * segments + j
  b = i * segments + (j + 1) % segments
  c = a + segments
  d = b + segments
  f = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3),
                      np.stack([a, d, c], -1).reshape(-1, 3)])
  return v, f


def _cylinder(r_bottom, r_top, h, y0=0.0, segments=_SEG):
  return _lathe([0.0, r_bottom, r_top, 0.0], [y0, y0, y0 + h, y0 + h], segments)


def _ellipsoid(rx, ry, rz, center=(0.0, 0.0, 0.0), rings=10, segments=_SEG):
  t = np.linspace(-0.5 * np.pi, 0.5 * np.pi, rings + 1)
  v, f = _lathe(np.cos(t), np.sin(t), segments)
  return v * np.array([rx, ry, rz]) + np.asarray(center, np.float64), f


def _capsule(r, h, rings=6, segments=_SEG):
  """Cylinder of length h (along y, from 0) with hemispherical caps of radius r."""
  t = np.linspace(0.0, 0.5 * np.pi, rings + 1)
  rad = np.concatenate([np.sin(t), np.cos(t)]) * r
  hy = np.concatenate([r - r * np.cos(t), r + h + r * np.sin(t)])
  return _lathe(rad, hy, segments)


def _torus(major, minor, arc=2.0 * np.pi, seg_major=24, seg_minor=10):
  """Torus around +y in the xz plane; a partial arc (open ends) when arc < 2 pi."""
  closed = arc >= 2.0 * np.pi - 1e-9
  n_major = seg_major if closed else seg_major + 1
  u = np.linspace(0.0, arc, n_major, endpoint=not closed)
  w = np.linspace(0.0, 2.0 * np.pi, seg_minor, endpoint=False)
  rr = major + minor * np.cos(w)[None, :]
  v = np.stack([rr * np.cos(u)[:, None], np.broadcast_to(minor * np.sin(w)[None, :], (n_major, seg_minor)),
                -rr * np.sin(u)[:, None]], axis=-1).reshape(-1, 3)
  i = np.arange(seg_major)[:, None]
  j = np.arange(seg_minor)[None, :]
  a = i * seg_minor + j
  b = i * seg_minor + (j + 1) % seg_minor
  c = ((i + 1) % n_major) * seg_minor + j
  d = ((i + 1) % n_major) * seg_minor + (j + 1) % seg_minor
  f = np.concatenate([np.stack([a, c, d], -1).reshape(-1, 3),
                      np.stack([a, d, b], -1).reshape(-1, 3)])
  return v, f


def _extrude(polygon, h, y0=0.0, apex=None):
  """Prism of a star-shaped (about the origin) xz polygon, or a pyramid when apex is a height."""
  polygon = np.asarray(polygon, np.float64)
  n = len(polygon)
  bottom = np.stack([polygon[:, 0], np.full(n, y0), polygon[:, 1]], -1)
  if apex is not None:
    v = np.concatenate([bottom, [[0.0, y0, 0.0], [0.0, y0 + apex, 0.0]]])
    k = np.arange(n)
    f = np.concatenate([np.stack([np.full(n, n), (k + 1) % n, k], -1),
                        np.stack([k, (k + 1) % n, np.full(n, n + 1)], -1)])
    return v, f
  top = bottom + np.array([0.0, h, 0.0])
  v = np.concatenate([bottom, top, [[0.0, y0, 0.0], [0.0, y0 + h, 0.0]]])
  k = np.arange(n)
  k1 = (k + 1) % n
  f = np.concatenate([np.stack([k, k1, k1 + n], -1), np.stack([k, k1 + n, k + n], -1),
                      np.stack([np.full(n, 2 * n), k1, k], -1),
                      np.stack([np.full(n, 2 * n + 1), k + n, k1 + n], -1)])
  return v, f


def _regular_polygon(n, radius=1.0, phase=0.0):
  t = phase + 2.0 * np.pi * np.arange(n) / n
  # Clockwise in (x, z) seen from +y so that _extrude winds outward (z = -sin).
  return np.stack([radius * np.cos(t), -radius * np.sin(t)], -1)


def _rotation(axis, angle):
  c, s = math.cos(angle), math.sin(angle)
  if axis == 'x':
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
  if axis == 'y':
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _align_y_to(direction):
  """Rotation matrix taking +y to the unit vector `direction`."""
  d = np.asarray(direction, np.float64)
  d = d / np.linalg.norm(d)
  y = np.array([0.0, 1.0, 0.0])
  axis = np.cross(y, d)
  s, c = np.linalg.norm(axis), float(np.dot(y, d))
  if s < 1e-9:
    return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
  k = axis / s
  kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
  return np.eye(3) + s * kx + (1 - c) * kx @ kx


class _Builder:
  """Collects parts (vertices, faces) and concatenates them into one mesh."""

  def __init__(self):
    self.parts = []

  def add(self, part, rotation=None, offset=(0.0, 0.0, 0.0)):
    v, f = part
    if rotation is not None:
      v = v @ np.asarray(rotation).T
    self.parts.append((v + np.asarray(offset, np.float64), f))

  def box(self, size, center):
    self.add(_box(size, center))

  def rod(self, p0, p1, r, segments=10, r1=None):
    """A cylinder (frustum when r1 is given) from point p0 to point p1."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    length = float(np.linalg.norm(p1 - p0))
    self.add(_cylinder(r, r if r1 is None else r1, length, segments=segments),
             rotation=_align_y_to(p1 - p0), offset=p0)

  def leg(self, rng, style, p0, p1, thickness):
    if style == 'box':
      p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
      length = float(np.linalg.norm(p1 - p0))
      self.add(_box([thickness, length, thickness], [0, 0.5 * length, 0]),
               rotation=_align_y_to(p1 - p0), offset=p0)
    else:
      self.rod(p0, p1, 0.5 * thickness, segments=8)

  def build(self):
    offset, vs, fs = 0, [], []
    for v, f in self.parts:
      vs.append(v)
      fs.append(f + offset)
      offset += len(v)
    return np.concatenate(vs), np.concatenate(fs)


def _u(rng, lo, hi):
  return float(rng.uniform(lo, hi))


def _legs_at(b, rng, corners, y_top, thickness, style, splay=0.0):
  """Vertical (optionally splayed outwards) legs from the floor to y_top under `corners` [(x,z)]."""
  for x, z in corners:
    norm = math.hypot(x, z) + 1e-9
    dx, dz = splay * x / norm, splay * z / norm
    b.leg(rng, style, (x + dx, 0.0, z + dz), (x, y_top, z), thickness)


def _rect_corners(w, d, inset):
  hw, hd = 0.5 * w - inset, 0.5 * d - inset
  return [(-hw, -hd), (hw, -hd), (hw, hd), (-hw, hd)]


# --------------------------------------------------------------------------- furniture


def _seat_base(b, rng, w, d, h, t, pedestal=False):
  """A seat of size w x d at height h on legs / rods / sled runners, or on a star-foot pedestal."""
  style = 'pedestal' if pedestal else rng.choice(['legs4', 'rods4', 'splayed', 'sled'],
                                                 p=[.35, .3, .2, .15])
  if style == 'pedestal':
    b.rod((0, 0.08, 0), (0, h - t, 0), _u(rng, 0.025, 0.05), segments=10)
    n = int(rng.integers(4, 6))
    arm = 0.5 * max(w, d) * _u(rng, 0.8, 1.1)
    for k in range(n):
      a = 2 * np.pi * k / n
      b.rod((0, 0.06, 0), (arm * math.cos(a), 0.02, arm * math.sin(a)), 0.02, segments=6)
  elif style == 'sled':
    for sx in (-1, 1):
      x = sx * (0.5 * w - 0.03)
      b.rod((x, 0.015, -0.5 * d), (x, 0.015, 0.5 * d), 0.015, segments=6)
      b.rod((x, 0.015, -0.4 * d), (x, h - t, -0.4 * d), 0.015, segments=6)
      b.rod((x, 0.015, 0.4 * d), (x, h - t, 0.4 * d), 0.015, segments=6)
  else:
    thick = _u(rng, 0.03, 0.06)
    splay = _u(rng, 0.03, 0.09) if style == 'splayed' else 0.0
    _legs_at(b, rng, _rect_corners(w, d, thick), h - t, thick,
             'box' if style == 'legs4' else 'rod', splay)
  b.box([w, t, d], [0, h - 0.5 * t, 0])
  return h


def _chair_back(b, rng, w, d, y, t):
  bh = _u(rng, 0.3, 0.6)
  z = -0.5 * d + 0.5 * t
  style = rng.choice(['panel', 'slats', 'spindles', 'frame'])
  tilt = _rotation('x', -_u(rng, 0.0, 0.25))
  if style == 'panel':
    b.add(_box([w, bh, t], [0, 0.5 * bh, 0]), rotation=tilt, offset=(0, y, z))
  else:
    post = _u(rng, 0.025, 0.045)
    for sx in (-1, 1):
      b.add(_box([post, bh, post], [sx * (0.5 * w - 0.5 * post), 0.5 * bh, 0]),
            rotation=tilt, offset=(0, y, z))
    if style == 'slats':
      n = int(rng.integers(1, 4))
      for k in range(n):
        yy = bh * (1 - 0.3 * k / max(n, 1)) - 0.05
        b.add(_box([w, _u(rng, 0.04, 0.1), 0.6 * t], [0, yy, 0]), rotation=tilt, offset=(0, y, z))
    elif style == 'spindles':
      n = int(rng.integers(2, 6))
      b.add(_box([w, 0.06, t], [0, bh - 0.03, 0]), rotation=tilt, offset=(0, y, z))
      for k in range(n):
        x = (k + 1) / (n + 1) * w - 0.5 * w
        b.add(_box([0.02, bh, 0.02], [x, 0.5 * bh, 0]), rotation=tilt, offset=(0, y, z))
    else:
      b.add(_box([w, 0.05, t], [0, bh - 0.025, 0]), rotation=tilt, offset=(0, y, z))
      b.add(_box([w, 0.05, t], [0, 0.3 * bh, 0]), rotation=tilt, offset=(0, y, z))


def _chair(rng, arms=False, pedestal=False):
  """'chair', 'armchair' (arms=True) or 'office_chair' (pedestal=True, arms or not)."""
  b = _Builder()
  w, d = _u(rng, 0.4, 0.6), _u(rng, 0.38, 0.6)
  t = _u(rng, 0.03, 0.08)
  y = _seat_base(b, rng, w, d, _u(rng, 0.38, 0.52), t, pedestal)
  if pedestal:
    arms = rng.random() < 0.5
  _chair_back(b, rng, w, d, y, t)
  if arms:
    ah = _u(rng, 0.16, 0.28)
    style = rng.choice(['posts', 'panels', 'loops'])
    for sx in (-1, 1):
      x = sx * (0.5 * w + (0.0 if style == 'posts' else 0.03))
      if style == 'panels':
        b.box([0.05, ah, d * _u(rng, 0.7, 1.0)], [x, y + 0.5 * ah, 0.0])
      elif style == 'loops':
        b.rod((x, y, 0.4 * d), (x, y + ah, 0.35 * d), 0.018, segments=6)
        b.rod((x, y + ah, -0.45 * d), (x, y + ah, 0.45 * d), 0.025, segments=8)
      else:
        b.box([0.04, ah, 0.04], [x, y + 0.5 * ah, 0.4 * d])
        b.box([_u(rng, 0.05, 0.1), 0.04, d * _u(rng, 0.8, 1.05)], [x, y + ah, 0.0])
  return b.build()


def _stool(rng, legs=4):
  """A stool on `legs` legs (4: 'stool', 3: 'tripod_stool') or on one pedestal (legs=0)."""
  b = _Builder()
  h = _u(rng, 0.45, 0.8)
  t = _u(rng, 0.03, 0.07)
  round_seat = rng.random() < 0.6
  size = _u(rng, 0.3, 0.45)
  n = max(legs, 3)
  thick = _u(rng, 0.025, 0.05)
  splay = _u(rng, 0.0, 0.1)
  if round_seat:
    b.add(_cylinder(0.5 * size, 0.5 * size, t, y0=h - t))
    corners = [(0.4 * size * math.cos(2 * np.pi * k / n), 0.4 * size * math.sin(2 * np.pi * k / n))
               for k in range(n)]
  else:
    b.box([size, t, size], [0, h - 0.5 * t, 0])
    corners = _rect_corners(size, size, thick)
  if legs == 0:   # single pedestal with a disk foot, sometimes a foot ring on the post
    b.rod((0, 0, 0), (0, h - t, 0), _u(rng, 0.025, 0.05), segments=10)
    b.add(_cylinder(_u(rng, 0.3, 0.45) * size, 0.25 * size, _u(rng, 0.02, 0.05)))
    if rng.random() < 0.5:
      b.add(_torus(0.35 * size, 0.012, seg_major=16, seg_minor=6), offset=(0, _u(rng, 0.25, 0.4) * h, 0))
  else:
    _legs_at(b, rng, corners, h - t, thick, rng.choice(['box', 'rod']), splay)
    if rng.random() < 0.5:   # foot ring
      yr = _u(rng, 0.2, 0.35) * h
      b.add(_torus(0.4 * size + splay * (1 - yr / h), 0.012, seg_major=16, seg_minor=6),
            offset=(0, yr, 0))
  return b.build()


def _bench(rng, back=False):
  """A backless bench, or with back=True a 'park_bench' (the same seat and supports + a back)."""
  b = _Builder()
  w, d = _u(rng, 1.0, 1.8), _u(rng, 0.3, 0.45)
  h, t = _u(rng, 0.38, 0.5), _u(rng, 0.03, 0.08)
  style = rng.choice(['slabs', 'legs', 'trestle'])
  if style == 'slabs':
    for sx in (-1, 1):
      b.box([_u(rng, 0.04, 0.08), h - t, d * _u(rng, 0.8, 1.0)], [sx * (0.5 * w - 0.1), 0.5 * (h - t), 0])
  elif style == 'legs':
    n = int(rng.integers(2, 4))
    thick = _u(rng, 0.03, 0.06)
    for k in range(n):
      x = -0.5 * w + 0.08 + k * (w - 0.16) / (n - 1)
      for sz in (-1, 1):
        b.leg(rng, 'box', (x, 0, sz * (0.5 * d - 0.04)), (x, h - t, sz * (0.5 * d - 0.04)), thick)
  else:
    for sx in (-1, 1):
      x = sx * (0.5 * w - 0.15)
      b.rod((x, 0, -0.4 * d), (x, h - t, 0), 0.02, segments=6)
      b.rod((x, 0, 0.4 * d), (x, h - t, 0), 0.02, segments=6)
    b.rod((-0.5 * w + 0.15, 0.15, 0), (0.5 * w - 0.15, 0.15, 0), 0.02, segments=6)
  n_planks = int(rng.integers(1, 4))
  for k in range(n_planks):
    pd = d / n_planks
    b.box([w, t, pd * 0.92], [0, h - 0.5 * t, -0.5 * d + (k + 0.5) * pd])
  if back:   # a slatted back: posts and 1-3 rails
    bh = _u(rng, 0.2, 0.45)
    n_posts = int(rng.integers(2, 4))
    for k in range(n_posts):
      x = (-0.5 + k / (n_posts - 1)) * (w - 0.2)
      b.box([0.03, bh + 0.04, 0.03], [x, h + 0.5 * bh, -0.5 * d + 0.02])
    for k in range(int(rng.integers(1, 4))):
      b.box([w, _u(rng, 0.04, 0.09), 0.03], [0, h + bh * (1 - 0.3 * k), -0.5 * d + 0.02])
  return b.build()


def _sofa(rng):
  b = _Builder()
  w, d = _u(rng, 1.2, 2.2), _u(rng, 0.7, 0.95)
  feet = _u(rng, 0.0, 0.12) if rng.random() < 0.6 else 0.0
  base_h = _u(rng, 0.2, 0.32)
  if feet > 0:
    _legs_at(b, rng, _rect_corners(w, d, 0.06), feet, 0.04, 'box')
  b.box([w, base_h, d], [0, feet + 0.5 * base_h, 0])
  y = feet + base_h
  arm_w = _u(rng, 0.1, 0.22) if rng.random() < 0.9 else 0.0
  inner = w - 2 * arm_w
  n_cushions = int(rng.integers(1, 4))
  ch = _u(rng, 0.08, 0.15)
  back_t = _u(rng, 0.15, 0.25)
  for k in range(n_cushions):
    cw = inner / n_cushions
    b.box([cw * 0.96, ch, d - back_t], [-0.5 * inner + (k + 0.5) * cw, y + 0.5 * ch, 0.5 * back_t])
  bh = _u(rng, 0.3, 0.5)
  b.box([w, bh, back_t], [0, y + 0.5 * bh, -0.5 * d + 0.5 * back_t])
  if arm_w > 0:
    ah = _u(rng, 0.15, 0.3)
    for sx in (-1, 1):
      b.box([arm_w, ah, d], [sx * (0.5 * w - 0.5 * arm_w), y + 0.5 * ah, 0])
  return b.build()


def _table_legs(b, rng, w, d, y, round_top):
  style = rng.choice(['box', 'rod', 'splayed'])
  thick = _u(rng, 0.04, 0.08)
  if round_top:
    n = int(rng.integers(3, 5))
    corners = [(0.35 * w * math.cos(2 * np.pi * k / n + 0.3), 0.35 * w * math.sin(2 * np.pi * k / n + 0.3))
               for k in range(n)]
  else:
    corners = _rect_corners(w, d, thick + _u(rng, 0.0, 0.06))
  _legs_at(b, rng, corners, y, thick, 'box' if style == 'box' else 'rod',
           _u(rng, 0.03, 0.1) if style == 'splayed' else 0.0)
  return corners


def _round_top(rng):
  """(radius, thickness, height) of a round table top."""
  r = _u(rng, 0.35, 0.7)
  t = _u(rng, 0.03, 0.07)
  h = _u(rng, 0.45, 0.8)
  return r, t, h


def _rect_top(rng, width=(0.7, 1.6), aspect=(1.0, 1.8), thickness=(0.03, 0.08),
              height=(0.45, 0.8)):
  """A rectangular top (tables, desks): (builder holding the top, width, depth, thickness, height)."""
  b = _Builder()
  w = _u(rng, *width)
  d = w / _u(rng, *aspect)
  t = _u(rng, *thickness)
  h = _u(rng, *height)
  b.box([w, t, d], [0, h - 0.5 * t, 0])
  return b, w, d, t, h


def _round_table(rng):
  b = _Builder()
  r, t, h = _round_top(rng)
  b.add(_cylinder(r, r, t, y0=h - t, segments=24))
  _table_legs(b, rng, 2 * r, 2 * r, h - t, True)
  return b.build()


def _pedestal_table(rng):
  """A round or square top on one central pedestal with a disk or star foot."""
  b = _Builder()
  r, t, h = _round_top(rng)
  if rng.random() < 0.6:
    b.add(_cylinder(r, r, t, y0=h - t, segments=24))
  else:
    b.box([2 * r, t, 2 * r * _u(rng, 0.7, 1.0)], [0, h - 0.5 * t, 0])
  b.rod((0, 0, 0), (0, h - t, 0), _u(rng, 0.04, 0.09), segments=10)
  if rng.random() < 0.5:
    b.add(_cylinder(_u(rng, 0.2, 0.35), _u(rng, 0.1, 0.2), 0.04))
  else:
    n = int(rng.integers(3, 5))
    for k in range(n):
      a = 2 * np.pi * k / n
      b.box([0.05, 0.04, 0.5 * r], [0.25 * r * math.cos(a), 0.02, 0.25 * r * math.sin(a)])
  return b.build()


def _trestle_table(rng):
  """A rectangular top on two trestles (A-frames or slab ends) joined by a stretcher."""
  b, w, d, t, h = _rect_top(rng)
  x = 0.5 * w - _u(rng, 0.08, 0.2)
  slab = rng.random() < 0.4
  for sx in (-1, 1):
    if slab:
      b.box([_u(rng, 0.04, 0.08), h - t, d * _u(rng, 0.5, 0.9)], [sx * x, 0.5 * (h - t), 0])
    else:
      foot = 0.5 * d * _u(rng, 0.6, 0.95)
      b.rod((sx * x, 0, -foot), (sx * x, h - t, 0), 0.025, segments=6)
      b.rod((sx * x, 0, foot), (sx * x, h - t, 0), 0.025, segments=6)
      b.box([0.05, 0.04, 2 * foot], [sx * x, 0.02, 0])
  yb = _u(rng, 0.15, 0.5) * h
  b.rod((-x, yb, 0), (x, yb, 0), _u(rng, 0.015, 0.03), segments=6)
  return b.build()


def _square_table(rng):
  b, w, d, t, h = _rect_top(rng)
  _table_legs(b, rng, w, d, h - t, False)
  if rng.random() < 0.5:   # apron under the top
    ah = _u(rng, 0.05, 0.1)
    b.box([w * 0.9, ah, 0.02], [0, h - t - 0.5 * ah, 0.45 * d - 0.05])
    b.box([w * 0.9, ah, 0.02], [0, h - t - 0.5 * ah, -0.45 * d + 0.05])
  return b.build()


def _two_level_table(rng):
  b = _Builder()
  round_top = rng.random() < 0.3
  w = _u(rng, 0.6, 1.4)
  d = w if round_top else w / _u(rng, 1.0, 1.8)
  t = _u(rng, 0.03, 0.07)
  h = _u(rng, 0.4, 0.75)
  y2 = _u(rng, 0.12, 0.4) * h
  if round_top:
    b.add(_cylinder(0.5 * w, 0.5 * w, t, y0=h - t, segments=24))
    b.add(_cylinder(0.4 * w, 0.4 * w, t, y0=y2, segments=24))
  else:
    b.box([w, t, d], [0, h - 0.5 * t, 0])
    s = _u(rng, 0.8, 0.95)
    b.box([w * s, t, d * s], [0, y2 + 0.5 * t, 0])
  _table_legs(b, rng, w, d, h - t, round_top)
  return b.build()


def _shelf(rng, boards=(2, 3)):
  """A shelf unit with 2-3 boards ('shelf') or 4-6 ('bookcase'), same size range."""
  b = _Builder()
  w, d, h = _u(rng, 0.5, 1.2), _u(rng, 0.25, 0.45), _u(rng, 0.8, 2.0)
  t = _u(rng, 0.02, 0.04)
  n = int(rng.choice(boards))
  frame = rng.random() < 0.3
  if frame:
    for x, z in _rect_corners(w, d, 0.02):
      b.box([0.03, h, 0.03], [x, 0.5 * h, z])
  else:
    for sx in (-1, 1):
      b.box([t, h, d], [sx * (0.5 * w - 0.5 * t), 0.5 * h, 0])
  for k in range(n):
    y = 0.03 + k * (h - 0.06) / (n - 1)
    b.box([w, t, d], [0, y, 0])
  if rng.random() < 0.5 and not frame:
    b.box([w, h, 0.01], [0, 0.5 * h, -0.5 * d])
  return b.build()


def _lamp(rng, bent=False):
  """A lamp on a straight post ('lamp') or on a post bent out to the side ('desk_lamp')."""
  b = _Builder()
  floor = rng.random() < 0.5
  h = _u(rng, 1.2, 1.8) if floor else _u(rng, 0.35, 0.6)
  if rng.random() < 0.6:
    b.add(_cylinder(_u(rng, 0.1, 0.2), _u(rng, 0.06, 0.15), _u(rng, 0.02, 0.05)))
  else:
    b.box([_u(rng, 0.15, 0.3), 0.04, _u(rng, 0.15, 0.3)], [0, 0.02, 0])
  pr = _u(rng, 0.01, 0.025)
  if not bent:
    top = np.array([0.0, h, 0.0])
    b.rod((0, 0.03, 0), top, pr)
  else:   # bent arm: up, then out
    knee = np.array([0.0, _u(rng, 0.5, 0.8) * h, 0.0])
    top = knee + np.array([_u(rng, 0.15, 0.4) * h, _u(rng, 0.1, 0.3) * h, 0.0])
    b.rod((0, 0.03, 0), knee, pr)
    b.rod(knee, top, pr)
  sr = _u(rng, 0.1, 0.25) * (1.5 if floor else 1.0)
  sh = _u(rng, 0.12, 0.3) * (1.4 if floor else 1.0)
  if rng.random() < 0.75:   # open conical shade hanging around the top
    r_top = sr * _u(rng, 0.5, 0.9)
    wall = 0.008
    v, f = _lathe([sr, r_top, r_top - wall, sr - wall, sr],
                  [0, sh, sh, 0, 0.0], 20)
    b.add((v, f), offset=top - np.array([0, 0.6 * sh, 0]))
  else:
    b.add(_ellipsoid(0.6 * sr, 0.6 * sr, 0.6 * sr, center=top + np.array([0, 0.5 * sr, 0]), rings=8))
  return b.build()


def _bunk_bed(rng):
  """Two bed frames with mattresses stacked on four tall corner posts, often a ladder."""
  b = _Builder()
  w, d = _u(rng, 0.9, 1.4), _u(rng, 1.8, 2.2)
  h = _u(rng, 1.4, 1.9)
  for x, z in _rect_corners(w, d, 0.03):
    b.box([0.06, h, 0.06], [x, 0.5 * h, z])
  for y in (_u(rng, 0.15, 0.3), _u(rng, 0.55, 0.7) * h):
    fh, mh = _u(rng, 0.08, 0.15), _u(rng, 0.1, 0.2)
    b.box([w, fh, d], [0, y + 0.5 * fh, 0])
    b.box([w * 0.96, mh, d * 0.96], [0, y + fh + 0.5 * mh, 0])
  if rng.random() < 0.7:
    x = 0.5 * w + 0.03
    for sz in (-1, 1):
      b.box([0.04, h * 0.9, 0.04], [x, 0.45 * h, 0.5 * d - 0.1 + sz * 0.18])
    for k in range(int(rng.integers(3, 6))):
      b.box([0.03, 0.03, 0.36], [x, 0.2 + k * 0.25, 0.5 * d - 0.1])
  return b.build()


def _desk(rng):
  """A rectangular top on legs at one end and a drawer block at the other."""
  b, w, d, t, h = _rect_top(rng, width=(1.0, 1.6), aspect=(1.5, 2.2), thickness=(0.03, 0.06),
                            height=(0.65, 0.8))
  bw = _u(rng, 0.3, 0.45) * w
  side = 1 if rng.random() < 0.5 else -1
  b.box([bw, h - t, d * 0.95], [side * (0.5 * w - 0.5 * bw), 0.5 * (h - t), 0])
  for k in range(int(rng.integers(2, 5))):   # drawer fronts
    y = (k + 0.5) * (h - t) / 4
    b.box([bw * 0.8, 0.03, 0.02], [side * (0.5 * w - 0.5 * bw), y, 0.5 * d * 0.95 + 0.01])
  thick = _u(rng, 0.04, 0.07)
  x = -side * (0.5 * w - thick)
  for sz in (-1, 1):
    b.leg(rng, 'box', (x, 0, sz * (0.5 * d - thick)), (x, h - t, sz * (0.5 * d - thick)), thick)
  return b.build()


def _bed(rng):
  b = _Builder()
  w, d = _u(rng, 0.9, 1.8), _u(rng, 1.8, 2.2)
  leg = _u(rng, 0.05, 0.2)
  fh = _u(rng, 0.12, 0.25)
  mh = _u(rng, 0.12, 0.25)
  _legs_at(b, rng, _rect_corners(w, d, 0.05), leg, 0.06, 'box')
  b.box([w, fh, d], [0, leg + 0.5 * fh, 0])
  b.box([w * 0.96, mh, d * 0.96], [0, leg + fh + 0.5 * mh, 0])
  hh = _u(rng, 0.5, 1.1)
  b.box([w, hh, 0.06], [0, 0.5 * hh, -0.5 * d - 0.03])
  if rng.random() < 0.5:
    fb = _u(rng, 0.3, 0.55)
    b.box([w, fb, 0.05], [0, 0.5 * fb, 0.5 * d + 0.025])
  if rng.random() < 0.5:
    for sx in (-1, 1):
      b.add(_ellipsoid(0.18 * w, 0.05, 0.12, center=(sx * 0.24 * w, leg + fh + mh + 0.04, -0.4 * d)))
  return b.build()


# --------------------------------------------------------------------------- vessels


def _vessel(outer_r, outer_y, wall, bottom):
  """Thin-walled open vessel from the outer profile (radius, height) going up to the rim."""
  outer_r = np.asarray(outer_r, np.float64)
  outer_y = np.asarray(outer_y, np.float64)
  inner_r = np.maximum(outer_r[::-1] - wall, 0.0)
  inner_y = np.maximum(outer_y[::-1], bottom)
  r = np.concatenate([[0.0], outer_r, inner_r, [0.0]])
  y = np.concatenate([[outer_y[0]], outer_y, inner_y, [bottom]])
  return _lathe(r, y)


def _bottle(rng):
  R, H = _u(rng, 0.25, 0.5), _u(rng, 1.0, 1.8)
  body = _u(rng, 0.5, 0.7) * H
  neck_r = R * _u(rng, 0.2, 0.4)
  shoulder = _u(rng, 0.1, 0.25) * H
  t = np.linspace(0, 1, 5)
  sh_r = neck_r + (R - neck_r) * np.cos(0.5 * np.pi * t) ** _u(rng, 0.7, 2.0)
  r = np.concatenate([[0.0, R * 0.9, R], sh_r, [neck_r, neck_r * 1.15, neck_r * 1.15, 0.0]])
  y = np.concatenate([[0.0, 0.0, 0.05 * H], body + shoulder * t,
                      [H - 0.04, H - 0.04, H, H]])
  b = _Builder()
  b.add(_lathe(r, y))
  return b.build()


def _vase(rng):
  H = _u(rng, 0.8, 1.6)
  foot = _u(rng, 0.15, 0.3)
  belly = _u(rng, 0.3, 0.55)
  waist = belly * _u(rng, 0.3, 0.6)
  lip = waist * _u(rng, 1.2, 2.2)
  yb = _u(rng, 0.25, 0.5) * H
  yw = _u(rng, 0.65, 0.85) * H
  r = [foot, belly * 0.8, belly, belly * 0.9, waist, waist * 1.05, lip]
  y = [0.0, yb * 0.5, yb, 0.5 * (yb + yw), yw, 0.5 * (yw + H), H]
  return _vessel(r, y, _u(rng, 0.02, 0.04), 0.04)


def _cup(rng):
  r0 = _u(rng, 0.2, 0.35)
  r1 = r0 * _u(rng, 1.1, 1.6)
  H = _u(rng, 0.4, 1.2) * r1 * 2
  k = _u(rng, 0.7, 1.5)
  t = np.linspace(0, 1, 6)
  r = r0 + (r1 - r0) * t ** k
  return _vessel(r, H * t, _u(rng, 0.015, 0.035), 0.04)


def _bowl(rng):
  R = _u(rng, 0.5, 0.8)
  H = _u(rng, 0.4, 1.0) * R
  foot = rng.random() < 0.5
  t = np.linspace(0.1, 1, 7)
  p = _u(rng, 0.5, 0.9)
  r = R * np.sin(0.5 * np.pi * t) ** p
  y = H * (1 - np.cos(0.5 * np.pi * t))
  if foot:
    r = np.concatenate([[0.35 * R, 0.33 * R], r])
    y = np.concatenate([[0.0, 0.05], y + 0.05])
  return _vessel(r, y, _u(rng, 0.02, 0.04), y[1] + 0.02 if foot else 0.03)


def _goblet(rng):
  """A cup-like bowl on a stem and a foot disk."""
  b = _Builder()
  stem = _u(rng, 0.2, 0.6)
  r0, r1 = _u(rng, 0.08, 0.2), _u(rng, 0.25, 0.45)
  H = _u(rng, 0.5, 1.2) * r1
  t = np.linspace(0, 1, 6)
  v, f = _vessel(r0 + (r1 - r0) * np.sin(0.5 * np.pi * t) ** _u(rng, 0.6, 1.5), H * t,
                 _u(rng, 0.015, 0.03), 0.03)
  b.add((v, f), offset=(0, stem, 0))
  b.rod((0, 0.02, 0), (0, stem + 0.01, 0), _u(rng, 0.02, 0.05), segments=10)
  b.add(_cylinder(_u(rng, 0.15, 0.3), _u(rng, 0.05, 0.1), 0.03))
  return b.build()


def _jar(rng):
  R = _u(rng, 0.3, 0.5)
  H = _u(rng, 0.6, 1.2)
  shoulder = R * _u(rng, 0.1, 0.3)
  neck = R * _u(rng, 0.6, 0.85)
  nh = _u(rng, 0.04, 0.12)
  b = _Builder()
  b.add(_lathe([0.0, R * 0.95, R, R, neck, neck, 0.0],
               [0.0, 0.0, 0.05, H - shoulder, H, H + nh, H + nh]))
  lh = _u(rng, 0.05, 0.12)
  lid_r = neck * _u(rng, 1.05, 1.2)
  b.add(_cylinder(lid_r, lid_r * 0.97, lh, y0=H + nh * 0.5))
  if rng.random() < 0.6:
    b.add(_ellipsoid(0.25 * lid_r, 0.1, 0.25 * lid_r, center=(0, H + nh * 0.5 + lh, 0), rings=6))
  return b.build()


def _pitcher(rng):
  """A vase-like vessel (belly, waist, flared lip) with a handle from the waist to the belly."""
  b = _Builder()
  H = _u(rng, 0.8, 1.6)
  belly = _u(rng, 0.3, 0.55)
  waist = belly * _u(rng, 0.5, 0.8)
  lip = waist * _u(rng, 1.1, 1.5)
  yb, yw = _u(rng, 0.25, 0.5) * H, _u(rng, 0.65, 0.85) * H
  b.add(_vessel([belly * 0.7, belly * 0.85, belly, belly * 0.9, waist, waist * 1.05, lip],
                [0.0, yb * 0.5, yb, 0.5 * (yb + yw), yw, 0.5 * (yw + H), H],
                _u(rng, 0.02, 0.04), 0.04))
  y_hi, y_lo = 0.5 * (yw + H), yb
  out = _u(rng, 0.15, 0.3)
  r = _u(rng, 0.02, 0.04)
  b.rod((waist * 0.95, y_hi, 0), (waist + out, y_hi, 0), r, segments=8)
  b.rod((waist + out, y_hi, 0), (belly + 0.5 * out, y_lo, 0), r, segments=8)
  b.rod((belly + 0.5 * out, y_lo, 0), (belly * 0.95, y_lo, 0), r, segments=8)
  return b.build()


def _mug(rng):
  R = _u(rng, 0.3, 0.45)
  H = _u(rng, 0.7, 1.3) * 2 * R
  taper = _u(rng, 0.85, 1.1)
  b = _Builder()
  t = np.linspace(0, 1, 4)
  b.add(_vessel(R * (1 + (taper - 1) * t), H * t, _u(rng, 0.02, 0.04), 0.04))
  hr = _u(rng, 0.2, 0.4) * H
  minor = _u(rng, 0.025, 0.05)
  if rng.random() < 0.7:   # half-torus handle in the xy plane on the +x side
    v, f = _torus(hr, minor, arc=np.pi, seg_major=12, seg_minor=8)
    rot = _rotation('x', -0.5 * np.pi) @ _rotation('y', -0.5 * np.pi)
    b.add((v, f), rotation=rot, offset=(R * 0.95, 0.5 * H, 0))
  else:   # squared handle from three rods
    x1 = R + hr
    b.rod((R * 0.9, 0.5 * H + hr, 0), (x1, 0.5 * H + hr, 0), minor, segments=8)
    b.rod((x1, 0.5 * H + hr, 0), (x1, 0.5 * H - hr, 0), minor, segments=8)
    b.rod((x1, 0.5 * H - hr, 0), (R * 0.9, 0.5 * H - hr, 0), minor, segments=8)
  return b.build()


# --------------------------------------------------------------------------- vehicles, misc


def _car(rng):
  b = _Builder()
  L, W = _u(rng, 1.6, 2.4), _u(rng, 0.7, 1.0)
  wr = _u(rng, 0.14, 0.22)
  bh = _u(rng, 0.2, 0.35)
  clear = _u(rng, 0.05, 0.12)
  b.box([L, bh, W], [0, wr + clear + 0.5 * bh - 0.1, 0])
  ch = _u(rng, 0.2, 0.35)
  cl = L * _u(rng, 0.35, 0.6)
  cx = _u(rng, -0.15, 0.1) * L
  v, f = _box([cl, ch, W * 0.9], [0, 0.5 * ch, 0])
  top = v[:, 1] > 0
  v[top, 0] *= _u(rng, 0.55, 0.85)   # sloped windscreens: narrow the cabin roof
  b.add((v, f), offset=(cx, wr + clear + bh - 0.1, 0))
  n_axles = 2 if rng.random() < 0.85 else 3
  for k in range(n_axles):
    x = (-0.5 + 0.15 + k * 0.7 / (n_axles - 1)) * L
    for sz in (-1, 1):
      b.add(_cylinder(wr, wr, 0.12, y0=-0.06, segments=14), rotation=_rotation('x', 0.5 * np.pi),
            offset=(x, wr, sz * (0.5 * W - 0.02)))
  if rng.random() < 0.3:
    b.box([0.05, 0.12, W * 0.9], [-0.5 * L + 0.05, wr + clear + bh, 0])
    b.box([0.2, 0.03, W * 0.95], [-0.5 * L + 0.08, wr + clear + bh + 0.08, 0])
  return b.build()


def _plane(rng):
  b = _Builder()
  L = _u(rng, 2.0, 3.0)
  fr = _u(rng, 0.1, 0.18)
  v, f = _capsule(fr, L - 2 * fr, rings=5, segments=14)
  b.add((v, f), rotation=_rotation('z', -0.5 * np.pi), offset=(-0.5 * L, 0.0, 0.0))
  span = _u(rng, 1.6, 3.0)
  chord = _u(rng, 0.25, 0.5)
  sweep = _u(rng, 0.0, 0.5)
  wx = _u(rng, -0.1, 0.15) * L
  wy = _u(rng, -0.6, 0.6) * fr
  for sz in (-1, 1):
    v, f = _box([chord, 0.04, 0.5 * span], [0, 0, sz * 0.25 * span])
    v[:, 0] -= sweep * np.abs(v[:, 2])   # swept back with distance from the root
    b.add((v, f), offset=(wx, wy, 0))
  tail_x = -0.5 * L + 0.15
  fin = _u(rng, 0.25, 0.5)
  v, f = _box([0.3, fin, 0.03], [0, 0.5 * fin, 0])
  v[v[:, 1] > 0, 0] -= 0.15
  b.add((v, f), offset=(tail_x, 0.5 * fr, 0))
  hs = _u(rng, 0.4, 0.8)
  b.box([0.18, 0.03, hs], [tail_x, _u(rng, 0.0, 1.0) * fin * 0.8 + 0.3 * fr, 0])
  n_eng = int(rng.choice([0, 2, 4]))
  for k in range(n_eng):
    sz = (1 if k % 2 else -1) * (0.18 + 0.16 * (k // 2)) * span
    b.rod((wx + 0.25, wy - 0.1, sz), (wx - 0.15, wy - 0.1, sz), 0.06, segments=10)
  return b.build()


def _rocket(rng):
  b = _Builder()
  r = _u(rng, 0.1, 0.2)
  h = _u(rng, 1.0, 2.0)
  nose = _u(rng, 0.2, 0.5)
  t = np.linspace(0, 1, 5)
  nose_r = r * np.cos(0.5 * np.pi * t) ** _u(rng, 0.5, 1.0)
  b.add(_lathe(np.concatenate([[0.0, r], nose_r]),
               np.concatenate([[0.0, 0.0], h + nose * t])))
  n = int(rng.integers(3, 5))
  fh, fw = _u(rng, 0.2, 0.45), _u(rng, 0.12, 0.3)
  for k in range(n):
    a = 2 * np.pi * k / n
    v, f = _box([fw, fh, 0.02], [r + 0.5 * fw, 0.5 * fh, 0])
    v[(v[:, 0] > r + 0.5 * fw) & (v[:, 1] > 0), 1] -= 0.6 * fh   # swept fin tip
    b.add((v, f), rotation=_rotation('y', a), offset=(0, -0.05, 0))
  if rng.random() < 0.3:
    for sx in (-1, 1):
      b.add(_cylinder(0.5 * r, 0.3 * r, 0.5 * h), offset=(sx * 1.5 * r, 0, 0))
  return b.build()


def _mushroom(rng):
  b = _Builder()
  sr = _u(rng, 0.06, 0.15)
  sh = _u(rng, 0.3, 0.8)
  b.add(_cylinder(sr * _u(rng, 1.0, 1.5), sr, sh, segments=12))
  cr = _u(rng, 0.3, 0.6)
  ch = cr * _u(rng, 0.3, 0.9)
  t = np.linspace(0, 0.5 * np.pi, 6)
  b.add(_lathe(np.concatenate([[0.0], cr * np.cos(t)]),
               np.concatenate([[sh - 0.02], sh - 0.02 + ch * np.sin(t)])))
  return b.build()


def _dumbbell(rng):
  b = _Builder()
  L = _u(rng, 0.8, 1.4)
  b.rod((-0.5 * L, 0, 0), (0.5 * L, 0, 0), _u(rng, 0.03, 0.06), segments=10)
  if rng.random() < 0.5:
    r = _u(rng, 0.12, 0.25)
    for sx in (-1, 1):
      b.add(_ellipsoid(r, r, r, center=(sx * 0.5 * L, 0, 0), rings=8))
  else:
    n = int(rng.integers(1, 4))
    r = _u(rng, 0.15, 0.3)
    for sx in (-1, 1):
      for k in range(n):
        x = sx * (0.5 * L - 0.06 - 0.07 * k)
        rk = r * (1 - 0.15 * k)
        b.rod((x - 0.03, 0, 0), (x + 0.03, 0, 0), rk, segments=14)
  return b.build()


def _tree(rng):
  b = _Builder()
  tr = _u(rng, 0.04, 0.1)
  th = _u(rng, 0.2, 0.6)
  b.add(_cylinder(tr * 1.2, tr, th + 0.1, segments=10))
  if rng.random() < 0.55:   # conifer: stacked cones
    n = int(rng.integers(1, 4))
    y = th
    cr = _u(rng, 0.35, 0.6)
    for k in range(n):
      ch = _u(rng, 0.4, 0.8) * cr * 2
      b.add(_cylinder(cr, 0.0, ch, y0=y, segments=16))
      y += 0.55 * ch
      cr *= _u(rng, 0.6, 0.8)
  else:   # broadleaf: one or more blobs
    n = int(rng.integers(1, 4))
    for k in range(n):
      rr = _u(rng, 0.25, 0.45)
      b.add(_ellipsoid(rr, rr * _u(rng, 0.7, 1.1), rr,
                       center=(_u(rng, -0.15, 0.15), th + rr * 0.9 + 0.2 * k, _u(rng, -0.15, 0.15)),
                       rings=8))
  return b.build()


# --------------------------------------------------------------------------- simple solids


def _solid_box(rng):
  return _box([_u(rng, 0.3, 1.0), _u(rng, 0.3, 1.0), _u(rng, 0.3, 1.0)], [0, 0, 0])


def _sphere(rng):
  r = _u(rng, 0.3, 1.0)
  return _ellipsoid(r, r, r, rings=12)


def _solid_ellipsoid(rng):
  # At least one axis 1.6x another: still an ellipsoid after make_shape's anisotropic jitter.
  r = _u(rng, 0.3, 0.6)
  axes = np.array([r, r * _u(rng, 0.6, 1.6), r * _u(rng, 1.6, 2.5)])
  return _ellipsoid(*rng.permutation(axes), rings=12)


def _solid_cylinder(rng):
  r = _u(rng, 0.15, 0.6)
  return _cylinder(r, r, _u(rng, 0.3, 1.5))


def _cone(rng):
  return _cylinder(_u(rng, 0.2, 0.7), 0.0, _u(rng, 0.4, 1.5))


def _frustum(rng):
  r = _u(rng, 0.3, 0.7)
  return _cylinder(r, r * _u(rng, 0.25, 0.65), _u(rng, 0.3, 1.2))


def _solid_torus(rng):
  R = _u(rng, 0.4, 0.8)
  return _torus(R, R * _u(rng, 0.15, 0.5))


def _solid_capsule(rng):
  return _capsule(_u(rng, 0.15, 0.4), _u(rng, 0.3, 1.2))


def _pyramid(rng):
  n = int(rng.integers(3, 6))
  return _extrude(_regular_polygon(n, _u(rng, 0.3, 0.8), _u(rng, 0, 1)), 0.0,
                  apex=_u(rng, 0.4, 1.4))


def _prism(rng):
  n = int(rng.integers(3, 7))
  return _extrude(_regular_polygon(n, _u(rng, 0.2, 0.6), _u(rng, 0, 1)), _u(rng, 0.2, 1.5))


def _star_prism(rng):
  n = int(rng.integers(4, 8))
  outer = _u(rng, 0.4, 0.8)
  inner = outer * _u(rng, 0.35, 0.6)
  poly = _regular_polygon(2 * n, 1.0)
  poly *= np.where(np.arange(2 * n) % 2 == 0, outer, inner)[:, None]
  return _extrude(poly, _u(rng, 0.1, 0.6))


def _l_shape(rng):
  b = _Builder()
  a, c = _u(rng, 0.6, 1.2), _u(rng, 0.5, 1.0)
  t1, t2, depth = _u(rng, 0.15, 0.35), _u(rng, 0.15, 0.35), _u(rng, 0.15, 0.6)
  b.box([a, t1, depth], [0.5 * a, 0.5 * t1, 0])
  b.box([t2, c, depth], [0.5 * t2, t1 + 0.5 * c, 0])
  return b.build()


def _cross(rng):
  b = _Builder()
  L1, L2 = _u(rng, 0.8, 1.4), _u(rng, 0.5, 1.2)
  t, depth = _u(rng, 0.12, 0.3), _u(rng, 0.12, 0.4)
  b.box([t, L1, depth], [0, 0.5 * L1, 0])
  b.box([L2, t, depth], [0, _u(rng, 0.5, 0.75) * L1, 0])
  return b.build()


# --------------------------------------------------------------------------- registry

_CLASSES = (
    ('box', _solid_box), ('sphere', _sphere), ('ellipsoid', _solid_ellipsoid),
    ('cylinder', _solid_cylinder), ('cone', _cone), ('frustum', _frustum),
    ('torus', _solid_torus), ('capsule', _solid_capsule), ('pyramid', _pyramid),
    ('prism', _prism), ('star_prism', _star_prism), ('l_shape', _l_shape), ('cross', _cross),
    ('chair', _chair), ('armchair', lambda rng: _chair(rng, arms=True)), ('stool', _stool),
    ('bench', _bench), ('sofa', _sofa), ('round_table', _round_table),
    ('square_table', _square_table), ('two_level_table', _two_level_table), ('shelf', _shelf),
    ('lamp', _lamp), ('bed', _bed),
    ('bottle', _bottle), ('vase', _vase), ('cup', _cup), ('bowl', _bowl), ('jar', _jar),
    ('mug', _mug),
    ('car', _car), ('plane', _plane), ('rocket', _rocket), ('mushroom', _mushroom),
    ('dumbbell', _dumbbell), ('tree', _tree),
    # Fine-grained look-alikes of the classes above, differing by part structure only
    # (appended, so the first 36 class indices keep their names).
    ('tripod_stool', lambda rng: _stool(rng, legs=3)),
    ('pedestal_stool', lambda rng: _stool(rng, legs=0)),
    ('pedestal_table', _pedestal_table), ('trestle_table', _trestle_table),
    ('bookcase', lambda rng: _shelf(rng, boards=(4, 5, 6))),
    ('park_bench', lambda rng: _bench(rng, back=True)), ('goblet', _goblet),
    ('office_chair', lambda rng: _chair(rng, pedestal=True)), ('bunk_bed', _bunk_bed),
    ('desk', _desk), ('pitcher', _pitcher), ('desk_lamp', lambda rng: _lamp(rng, bent=True)),
)

CLASS_NAMES: list[str] = [name for name, _ in _CLASSES]
NUM_CLASSES = len(CLASS_NAMES)
UP_AXIS = 1  # +y


def _deform(v, rng):
  """Mild global deformation: taper and bend along y, per-vertex noise, relative to the size."""
  lo, hi = v.min(0), v.max(0)
  size = float(np.max(hi - lo))
  h = max(float(hi[1] - lo[1]), 1e-6)
  s = (v[:, 1] - lo[1]) / h  # 0 at the bottom, 1 at the top
  center = 0.5 * (lo + hi)
  taper = 1.0 + _u(rng, -0.25, 0.25) * (s - 0.5)
  v = v.copy()
  v[:, 0] = center[0] + (v[:, 0] - center[0]) * taper
  v[:, 2] = center[2] + (v[:, 2] - center[2]) * taper
  twist = _u(rng, -0.35, 0.35) * s   # radians about the vertical axis, growing with height
  x, z = v[:, 0] - center[0], v[:, 2] - center[2]
  v[:, 0] = center[0] + x * np.cos(twist) - z * np.sin(twist)
  v[:, 2] = center[2] + x * np.sin(twist) + z * np.cos(twist)
  bend = _u(rng, -0.08, 0.08) * size
  v[:, 0] += bend * s ** 2
  v += rng.normal(0.0, 0.004 * size, v.shape)
  return v


def _check_class(class_index):
  if not 0 <= int(class_index) < NUM_CLASSES:
    raise ValueError(f'synthetic: class_index must lie in [0, {NUM_CLASSES}), got {class_index}')


def make_shape(class_index: int, rng: np.random.Generator) -> Mesh:
  """One random instance of a class: deformed, rotated about +y, unit-sphere normalised."""
  _check_class(class_index)
  v, f = _CLASSES[int(class_index)][1](rng)
  v = _deform(v, rng)
  # Anisotropic scale and a tilt of a few degrees: extents and moments alone do not separate the
  # classes (the look-alikes differ by parts, not by proportions).
  v = v * rng.uniform(0.75, 1.33, 3)
  tilt = _rotation('x', math.radians(_u(rng, -6, 6))) @ _rotation('z', math.radians(_u(rng, -6, 6)))
  v = v @ (_rotation('y', _u(rng, 0.0, 2.0 * np.pi)) @ tilt).T
  mesh = Mesh(v, f, source=f'synthetic/{CLASS_NAMES[int(class_index)]}')
  return normalize_mesh(mesh)[0]


def _streams(instance_seed: int):
  """Independent generators for shape, colour and scan, so the colour says nothing of the class."""
  shape_ss, color_ss, scan_ss = np.random.SeedSequence(int(instance_seed)).spawn(3)
  return (np.random.default_rng(shape_ss), np.random.default_rng(color_ss),
          np.random.default_rng(scan_ss))


def _random_color(rng) -> np.ndarray:
  rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.35, 0.95))
  return np.asarray(rgb, np.float32)


def make_object(class_index: int, instance_seed: int):
  """(Mesh, colour [3] float32 in [0,1]) of one instance; deterministic from instance_seed."""
  shape_rng, color_rng, _ = _streams(instance_seed)
  return make_shape(class_index, shape_rng), _random_color(color_rng)


def shape_descriptor(points: np.ndarray) -> np.ndarray:
  """A hand-made baseline descriptor [9]: extents, variances and mean |coordinate| after PCA.

  The benchmark's headroom is measured against it (experiments/headroom.py): a benchmark that
  box extents and second moments solve cannot tell encoders apart.
  """
  points = np.asarray(points, np.float64)
  centred = points - points.mean(0)
  _, vectors = np.linalg.eigh(np.cov(centred.T))
  aligned = centred @ vectors[:, ::-1]
  return np.concatenate([np.ptp(aligned, axis=0), aligned.var(0), np.abs(aligned).mean(0)])


# --------------------------------------------------------------------------- scans


def hidden_point_removal(points: np.ndarray, camera: np.ndarray, radius_exp: float = 2.5):
  """Indices of the points visible from `camera` (Katz, Tal & Basri 2007).

  Spherical flipping about the camera with radius R = max|p - C| * 10**radius_exp, then the
  points whose flips lie on the convex hull (with the camera) are the visible ones.
  """
  p = np.asarray(points, np.float64) - np.asarray(camera, np.float64)
  norm = np.linalg.norm(p, axis=1, keepdims=True)
  norm = np.maximum(norm, 1e-12)
  radius = float(norm.max()) * 10.0 ** radius_exp
  flipped = p + 2.0 * (radius - norm) * p / norm
  hull = ConvexHull(np.concatenate([flipped, np.zeros((1, 3))]))
  vis = hull.vertices
  return np.sort(vis[vis < len(p)])


def make_scan(class_index: int, instance_seed: int, num_points: int = 2048,
              dense_points: int = 6000):
  """A ScanObjectNN-like partial scan (PB_T50_RS style): (points [num_points,3] f32, colour).

  Object + floor patch + a fragment of a neighbouring object are sampled densely, the points one
  random camera sees are kept, a jittered box around the object crops the background, then
  sensor noise, rotation about +y, anisotropic scale jitter and unit-sphere normalisation.
  """
  mesh, color = make_object(class_index, instance_seed)
  _, _, rng = _streams(instance_seed)
  obj = sample_surface(mesh, dense_points, rng).astype(np.float64)
  lo, hi = obj.min(0), obj.max(0)
  extent = hi - lo
  center = 0.5 * (lo + hi)
  floor_y = lo[1]
  # Floor patch under and around the object.
  n_floor = dense_points // 4
  half = 0.5 * extent[[0, 2]] * _u(rng, 1.3, 2.0)
  floor = np.stack([center[0] + rng.uniform(-half[0], half[0], n_floor),
                    np.full(n_floor, floor_y),
                    center[2] + rng.uniform(-half[1], half[1], n_floor)], -1)
  # A neighbouring object (a box standing on the floor) beside this one.
  size = rng.uniform(0.3, 1.0, 3) * np.array([1.0, 1.5, 1.0])
  angle = _u(rng, 0.0, 2.0 * np.pi)
  dist = 0.5 * float(np.linalg.norm(extent[[0, 2]])) + 0.5 * size[0] + _u(rng, 0.0, 0.2)
  nb_center = center + np.array([dist * math.cos(angle), 0.0, dist * math.sin(angle)])
  nb_center[1] = floor_y + 0.5 * size[1]
  neighbour = sample_surface(Mesh(*_box(size, nb_center)), dense_points // 4, rng).astype(np.float64)
  cloud = np.concatenate([obj, floor, neighbour])
  is_object = np.concatenate([np.ones(len(obj), bool), np.zeros(len(floor) + len(neighbour), bool)])
  # One camera above the floor, looking at the object from a random direction.
  azimuth = _u(rng, 0.0, 2.0 * np.pi)
  elevation = math.radians(_u(rng, 10.0, 60.0))
  distance = _u(rng, 2.5, 4.0)
  camera = center + distance * np.array([math.cos(elevation) * math.cos(azimuth),
                                         math.sin(elevation),
                                         math.cos(elevation) * math.sin(azimuth)])
  visible = hidden_point_removal(cloud, camera)
  cloud, is_object = cloud[visible], is_object[visible]
  # Crop box around the visible object, enlarged and shifted (the 'T' perturbation).
  seen = cloud[is_object] if is_object.any() else obj
  box_lo, box_hi = seen.min(0), seen.max(0)
  box_c, box_e = 0.5 * (box_lo + box_hi), (box_hi - box_lo) * _u(rng, 1.05, 1.25)
  shift = rng.uniform(-0.2, 0.2, 3) * box_e * np.array([1.0, 0.0, 1.0])
  box_lo, box_hi = box_c + shift - 0.5 * box_e, box_c + shift + 0.5 * box_e
  box_lo[1] = min(box_lo[1], floor_y - 0.02)
  keep = np.all((cloud >= box_lo) & (cloud <= box_hi), axis=1)
  if keep.sum() >= 64:
    cloud = cloud[keep]
  # Fixed size: subsample, or repeat points when the scan is sparse (noise then separates them).
  if len(cloud) >= num_points:
    idx = rng.choice(len(cloud), num_points, replace=False)
  else:
    idx = np.concatenate([np.arange(len(cloud)),
                          rng.choice(len(cloud), num_points - len(cloud), replace=True)])
  cloud = cloud[idx]
  cloud += rng.normal(0.0, _u(rng, 0.004, 0.012), cloud.shape)
  cloud = cloud @ _rotation('y', _u(rng, 0.0, 2.0 * np.pi)).T
  cloud *= rng.uniform(0.85, 1.15, 3)
  points, _, _ = normalize_unit_sphere(cloud)
  return points, color
