"""Cameras: look-at extrinsics, pinhole intrinsics, orbit rigs and ShapeNetRendering's poses.

The cameras that render the views (render.py) and that the correspondence maps project with
(correspondence.py). All cameras follow the OpenCV convention in a y-up world:

- `world_to_cam [4,4]` maps homogeneous world points to camera coordinates: x right, y down,
  z forward (depth = camera z, positive in front of the camera).
- `intrinsics [3,3]` are pixel intrinsics; pixel (i, j) (row i, column j) covers u in [j, j+1),
  v in [i, i+1), so its centre is (j + 0.5, i + 0.5) and the principal point of a centred camera is
  (W/2, H/2).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def look_at(eye, target, up=(0.0, 1.0, 0.0)) -> np.ndarray:
  """OpenCV world_to_cam [4,4] float32 for a camera at `eye` looking at `target`.

  Camera z points from eye to target, x = normalise(z cross up) (right in the image), y = z cross x
  (down in the image). When the view direction is parallel to `up` (looking straight down or up),
  the up vector is replaced by world -z (or +z) so the result stays a proper rotation; the image
  roll is then arbitrary but deterministic.
  """
  eye = np.asarray(eye, np.float64).reshape(3)
  target = np.asarray(target, np.float64).reshape(3)
  up = np.asarray(up, np.float64).reshape(3)
  forward = target - eye
  norm = np.linalg.norm(forward)
  if not norm > 0:
    raise ValueError(f'look_at: eye {eye} and target {target} coincide')
  forward /= norm
  right = np.cross(forward, up)
  if np.linalg.norm(right) < 1e-8 * max(np.linalg.norm(up), 1e-30):
    # Degenerate: looking along the up axis. Any perpendicular up works; pick one deterministically.
    alt = np.array([0.0, 0.0, -1.0]) if forward[1] < 0 else np.array([0.0, 0.0, 1.0])
    right = np.cross(forward, alt)
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
  world_to_cam = np.eye(4)
  world_to_cam[:3, :3] = rotation
  world_to_cam[:3, 3] = -rotation @ eye
  return world_to_cam.astype(np.float32)


def pinhole_intrinsics(image_size: int, fov_deg: float) -> np.ndarray:
  """[3,3] float32 intrinsics of a square image with vertical field of view `fov_deg`."""
  if not 0.0 < fov_deg < 180.0:
    raise ValueError(f'pinhole_intrinsics: fov_deg must be in (0, 180), got {fov_deg}')
  if int(image_size) <= 0:
    raise ValueError(f'pinhole_intrinsics: image_size must be positive, got {image_size}')
  size = float(image_size)
  focal = 0.5 * size / np.tan(0.5 * np.deg2rad(fov_deg))
  # Pixel centres at integer + 0.5, so the image centre (the principal point) is at size / 2.
  return np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]], np.float32)


def _orbit_eye(distance: float, azimuth_rad, elevation_rad) -> np.ndarray:
  """Camera position on a sphere about the origin; azimuth about +y, measured from +z towards +x."""
  azimuth_rad = np.asarray(azimuth_rad, np.float64)
  elevation_rad = np.asarray(elevation_rad, np.float64)
  return distance * np.stack([
      np.cos(elevation_rad) * np.sin(azimuth_rad),
      np.sin(elevation_rad),
      np.cos(elevation_rad) * np.cos(azimuth_rad)], axis=-1)


def _cfg_get(cfg: Any, key: str):
  try:
    return cfg[key]
  except (KeyError, TypeError, AttributeError):
    pass
  if hasattr(cfg, key):
    return getattr(cfg, key)
  raise KeyError(f'data.camera.{key} is missing from the camera config')


def make_cameras(camera_config, num_views: int, image_size: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Orbit cameras looking at the origin: (world_to_cam [V,4,4], intrinsics [V,3,3]) float32.

  `camera_config` is `config.data.camera` (mode ring|random, distance, elevation_range in degrees,
  fov in degrees, vertical). ring: V equally spaced azimuths from a random offset, at the mean
  elevation of the range; random: azimuth uniform in [0, 360), elevation uniform in the range.
  """
  mode = _cfg_get(camera_config, 'mode')
  distance = float(_cfg_get(camera_config, 'distance'))
  elevation_range = tuple(float(x) for x in _cfg_get(camera_config, 'elevation_range'))
  fov = float(_cfg_get(camera_config, 'fov'))
  if len(elevation_range) != 2 or elevation_range[0] > elevation_range[1]:
    raise ValueError(f'data.camera.elevation_range must be (low, high) degrees, got {elevation_range}')
  if not -90.0 <= elevation_range[0] <= elevation_range[1] <= 90.0:
    raise ValueError(f'data.camera.elevation_range must lie in [-90, 90], got {elevation_range}')
  if not distance > 1.0:
    # Objects are normalised to the unit sphere; a camera inside it would cut the object.
    raise ValueError(f'data.camera.distance must be > 1 (outside the unit sphere), got {distance}')
  if num_views <= 0:
    raise ValueError(f'make_cameras: num_views must be positive, got {num_views}')
  if mode == 'ring':
    offset = rng.uniform(0.0, 2 * np.pi)
    azimuth = offset + 2 * np.pi * np.arange(num_views) / num_views
    elevation = np.full(num_views, np.deg2rad(np.mean(elevation_range)))
  elif mode == 'random':
    azimuth = rng.uniform(0.0, 2 * np.pi, size=num_views)
    elevation = np.deg2rad(rng.uniform(elevation_range[0], elevation_range[1], size=num_views))
  else:
    raise ValueError(f"data.camera.mode must be 'ring' or 'random', got {mode!r}")
  eyes = _orbit_eye(distance, azimuth, elevation)
  world_to_cam = np.stack([look_at(eye, (0.0, 0.0, 0.0)) for eye in eyes])
  intrinsics = np.broadcast_to(pinhole_intrinsics(image_size, fov), (num_views, 3, 3)).copy()
  return world_to_cam, intrinsics


# ----------------------------------------------------------------------------- ShapeNetRendering
# Blender's default camera, which 3D-R2N2's renderer (ShapeNetRendering) and Zero-1-to-3's Objaverse
# script keep: a 35 mm lens on a 32 mm sensor, square renders -> 2 atan(16 / 35) = 49.13 degrees.
BLENDER_FOV_DEG = float(np.rad2deg(2.0 * np.arctan(16.0 / 35.0)))


def read_rendering_metadata(path: str) -> np.ndarray:
  """Parse a 3D-R2N2 `rendering_metadata.txt`: [V,5] float32 rows.

  Columns: azimuth (deg), elevation (deg), in-plane rotation (deg), distance ratio, and what the
  release calls the field of view (25 in every row; not the renders' lens, see
  cameras_from_rendering_metadata). Blank lines are skipped; numbers may be separated by spaces or commas. Any other row (wrong
  count, not a number, not finite, distance ratio <= 0, fov outside (0, 180)) is an error naming
  the file and the line.
  """
  rows = []
  with open(path, 'r', encoding='utf-8') as f:
    for line_no, line in enumerate(f, start=1):
      text = line.strip()
      if not text:
        continue
      fields = text.replace(',', ' ').replace('[', ' ').replace(']', ' ').split()
      if len(fields) != 5:
        raise ValueError(f'{path}:{line_no}: expected 5 numbers (azimuth, elevation, in-plane '
                         f'rotation, distance ratio, fov), got {len(fields)}: {text!r}')
      try:
        values = [float(x) for x in fields]
      except ValueError:
        raise ValueError(f'{path}:{line_no}: not a number in {text!r}') from None
      if not all(np.isfinite(values)):
        raise ValueError(f'{path}:{line_no}: non-finite value in {text!r}')
      if values[3] <= 0:
        raise ValueError(f'{path}:{line_no}: distance ratio must be > 0, got {values[3]}')
      if not 0 < values[4] < 180:
        raise ValueError(f'{path}:{line_no}: fov must be in (0, 180) degrees, got {values[4]}')
      rows.append(values)
  if not rows:
    raise ValueError(f'{path}: no camera rows')
  return np.asarray(rows, np.float32)


def cameras_from_rendering_metadata(
    rows: np.ndarray, image_size: int, distance_scale: float = 1.75,
    object_center=(0.0, 0.0, 0.0), object_scale: float = 1.0,
    fov_deg: float = BLENDER_FOV_DEG) -> tuple[np.ndarray, np.ndarray]:
  """OpenCV cameras (world_to_cam [V,4,4], intrinsics [V,3,3]) from ShapeNetRendering rows.

  3D-R2N2's Blender renderer, as its own voxel-projection tools and Occupancy Networks' and DISN's
  `getBlenderProj` invert it: ShapeNetCore v1 coordinates are y-up (Blender imports them z-up);
  the camera sits at d * (cos(el) cos(az), sin(el), cos(el) sin(az)) with d = distance ratio *
  `distance_scale` (its CAM_MAX_DIST = 1.75), looks at the origin with +y up, then rolls by the
  in-plane rotation about its optical axis (positive = counter-clockwise in the image; 0 in the
  released data, and those tools ignore it). The lens is Blender's default camera, 35 mm on a
  32 mm sensor (`fov_deg` = 49.13 degrees, principal point at the centre): the fifth column (25
  in every row of the release) is not the renders' field of view, and the tools above do not read
  it. The extrinsics equal that getBlenderProj's to float error (checked by hand; not on the real
  renders here: the silhouette check does that on the first object).

  The renders show the mesh in its original coordinates; if the points were normalised as
  p' = (p - object_center) * object_scale, pass the same centre/scale so the cameras see p'.
  """
  rows = np.asarray(rows, np.float64)
  if rows.ndim != 2 or rows.shape[1] != 5:
    raise ValueError(f'cameras_from_rendering_metadata: rows must be [V,5], got {rows.shape}')
  center = np.asarray(object_center, np.float64).reshape(3)
  world_to_cam, intrinsics = [], []
  for azimuth, elevation, roll, ratio, _ in rows:
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    d = ratio * distance_scale
    eye = d * np.array([np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)])
    w2c = look_at((eye - center) * object_scale, (-center) * object_scale).astype(np.float64)
    if roll != 0.0:
      c, s = np.cos(np.deg2rad(roll)), np.sin(np.deg2rad(roll))
      # Rolling the camera by +roll turns the image content by -roll about the optical axis.
      roll_m = np.array([[c, s, 0, 0], [-s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
      w2c = roll_m @ w2c
    world_to_cam.append(w2c)
    intrinsics.append(pinhole_intrinsics(image_size, fov_deg))
  return np.asarray(world_to_cam, np.float32), np.asarray(intrinsics, np.float32)
