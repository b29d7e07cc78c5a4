"""2D-3D correspondence maps: for each view and each group centre, its image patch index or -1.

DESIGN.md §3 (`views/corr [V,G] i32`): a centre maps to the patch (row * patches_per_row + col)
that contains its projection when it is in front of the camera, inside the frame and visible, and to
-1 otherwise. Visibility is a depth test against the rendered depth map (the prototype's rule,
DESIGN.md §8: |z_centre - z_rendered| <= tolerance, 0.10 in unit-sphere units).

Robustness at silhouettes: FPS centres are surface points, so a visible centre on the object's
outline often projects to a pixel whose centre just misses the surface (rendered depth +inf) and a
plain per-pixel test would call it occluded. The rendered depth used for the test is therefore the
MINIMUM over a (2 * neighborhood + 1)^2 pixel window around the centre's pixel (3 x 3 by default,
clipped to the frame). The minimum is deliberately conservative: near an occluder's edge it may call
a barely visible centre occluded, but it never calls an occluded centre visible unless a surface
within the tolerance is in the window, so a -1 costs one training pair while a wrong patch would be
a wrong target.

Conventions as in `cameras.py`: OpenCV cameras, pixel (i, j) covers u in [j, j+1), v in [i, i+1).
"""
from __future__ import annotations

import numpy as np

# Centres at camera depth below this are "behind the camera".
_NEAR = 1e-6


def project(points, world_to_cam, intrinsics) -> tuple[np.ndarray, np.ndarray]:
  """Pixel coordinates and camera depth of world points.

  Args:
    points: [...P, 3] world points.
    world_to_cam: [4,4] or [...C, 4, 4] OpenCV extrinsics.
    intrinsics: [3,3] or [...C, 3, 3] pixel intrinsics (same leading shape as world_to_cam).

  Returns:
    uv [...C, ...P, 2] (u right, v down, pixel centres at integer + 0.5) and z [...C, ...P] (camera
    depth; uv is meaningless where z <= 0). Camera batch dims come first, then point batch dims:
    every camera sees every point.
  """
  points = np.asarray(points, np.float64)
  world_to_cam = np.asarray(world_to_cam, np.float64)
  intrinsics = np.asarray(intrinsics, np.float64)
  if points.shape[-1:] != (3,):
    raise ValueError(f'project: points must be [...,3], got {points.shape}')
  if world_to_cam.shape[-2:] != (4, 4):
    raise ValueError(f'project: world_to_cam must be [...,4,4], got {world_to_cam.shape}')
  if intrinsics.shape != world_to_cam.shape[:-2] + (3, 3):
    raise ValueError(f'project: intrinsics must be {world_to_cam.shape[:-2] + (3, 3)}, '
                     f'got {intrinsics.shape}')
  cam_batch = world_to_cam.shape[:-2]
  point_batch = points.shape[:-1]
  w2c = world_to_cam.reshape(-1, 4, 4)
  k = intrinsics.reshape(-1, 3, 3)
  flat = points.reshape(-1, 3)
  cam = np.einsum('cij,pj->cpi', w2c[:, :3, :3], flat) + w2c[:, None, :3, 3]   # [C,P,3]
  z = cam[..., 2]
  safe_z = np.where(np.abs(z) > 1e-12, z, 1e-12)
  pix = np.einsum('cij,cpj->cpi', k, cam / safe_z[..., None])                     # [C,P,3]
  uv = pix[..., :2].reshape(cam_batch + point_batch + (2,))
  return uv.astype(np.float32), z.reshape(cam_batch + point_batch).astype(np.float32)


def patch_index(uv, image_size: int, patch_size: int) -> np.ndarray:
  """Patch index (row * (W // patch) + col) of pixel coordinates uv [...,2]; -1 outside the frame."""
  image_size, patch_size = int(image_size), int(patch_size)
  if patch_size <= 0 or image_size % patch_size:
    raise ValueError(f'patch_index: image_size {image_size} must be a positive multiple of '
                     f'patch_size {patch_size}')
  uv = np.asarray(uv, np.float64)
  with np.errstate(invalid='ignore'):
    col = np.floor(uv[..., 0])
    row = np.floor(uv[..., 1])
    inside = (col >= 0) & (col < image_size) & (row >= 0) & (row < image_size)
  col = np.where(inside, col, 0).astype(np.int64)
  row = np.where(inside, row, 0).astype(np.int64)
  per_row = image_size // patch_size
  index = (row // patch_size) * per_row + col // patch_size
  return np.where(inside, index, -1).astype(np.int32)


def min_filter_depth(depth, neighborhood: int = 1) -> np.ndarray:
  """Minimum of depth [V,H,W] over a (2n+1)^2 window clipped to the frame (+inf stays +inf)."""
  depth = np.asarray(depth, np.float32)
  if neighborhood <= 0:
    return depth
  n = int(neighborhood)
  height, width = depth.shape[-2:]
  padded = np.pad(depth, [(0, 0)] * (depth.ndim - 2) + [(n, n), (n, n)], constant_values=np.inf)
  # Separable: min over rows, then over columns.
  rows = padded[..., 0:height, :]
  for d in range(1, 2 * n + 1):
    rows = np.minimum(rows, padded[..., d:d + height, :])
  out = rows[..., :, 0:width]
  for d in range(1, 2 * n + 1):
    out = np.minimum(out, rows[..., :, d:d + width])
  return out


def correspondence_map(centers, world_to_cam, intrinsics, depth, patch_size: int,
                       tolerance: float, neighborhood: int = 1) -> np.ndarray:
  """[V,G] int32: each centre's patch index in each view, or -1 (behind, out of frame, occluded).

  Args:
    centers: [G,3] world-space group centres (surface points).
    world_to_cam: [V,4,4]; intrinsics: [V,3,3] (the cameras that rendered `depth`).
    depth: [V,H,W] rendered camera depth, +inf on the background; H must equal W.
    patch_size: ViT patch size in pixels (H must be a multiple).
    tolerance: visible when |z_centre - min rendered depth in the window| <= tolerance.
    neighborhood: window half-size in pixels (1 = 3 x 3; 0 = the centre's own pixel only).
  """
  depth = np.asarray(depth, np.float32)
  centers = np.asarray(centers)
  if centers.ndim != 2 or centers.shape[1] != 3:
    raise ValueError(f'correspondence_map: centers must be [G,3], got {centers.shape}')
  if depth.ndim != 3 or depth.shape[1] != depth.shape[2]:
    raise ValueError(f'correspondence_map: depth must be [V,H,H] (square), got {depth.shape}')
  world_to_cam = np.asarray(world_to_cam)
  if world_to_cam.shape != (depth.shape[0], 4, 4):
    raise ValueError(f'correspondence_map: world_to_cam must be [{depth.shape[0]},4,4], '
                     f'got {world_to_cam.shape}')
  if not tolerance >= 0:
    raise ValueError(f'correspondence_map: tolerance must be >= 0, got {tolerance}')
  size = depth.shape[1]
  uv, z = project(centers, world_to_cam, intrinsics)                            # [V,G,2], [V,G]
  index = patch_index(uv, size, patch_size)
  in_front = z > _NEAR
  ok = in_front & (index >= 0)
  col = np.clip(np.floor(np.where(ok, uv[..., 0], 0)), 0, size - 1).astype(np.int64)
  row = np.clip(np.floor(np.where(ok, uv[..., 1], 0)), 0, size - 1).astype(np.int64)
  near_depth = min_filter_depth(depth, neighborhood)
  rendered = near_depth[np.arange(depth.shape[0])[:, None], row, col]          # [V,G]
  with np.errstate(invalid='ignore'):
    visible = ok & (np.abs(z - rendered) <= tolerance)
  return np.where(visible, index, -1).astype(np.int32)
