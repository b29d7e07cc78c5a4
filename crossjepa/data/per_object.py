"""The pure per-object work of --mode=prepare: points, normalisation, cameras, renders, histograms.

`process_shape(shape, data_config, seed)` (steps 1-4 of prepare.py's list) and, for eval-only
records, `process_points`. They run in prepare's worker processes (data.num_workers > 0, a spawn
Pool), so this module imports no TFDS and no jax: a worker starts in a fraction of a second. A
`DeferredShape` (one file per object) is read in `process_task`, in the worker.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from crossjepa.data import render_set
from crossjepa.data import sampling
from crossjepa.data import shape as shape_lib
from crossjepa.data.shape import GREY


MAX_AUTO_WORKERS = 16   # data.num_workers = -1 stops here: the main process's FPS/kNN/write is then
                        # the bound, and each worker holds its own Python + NumPy + pyarrow


def usable_cores(at_most: int) -> int:
  """The CPU cores this process may run on (its affinity where the OS tells it), 1 to at_most:
  what an automatic worker count means (here and eval.svm_workers = 0)."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  return max(1, min(int(cores or 1), at_most))


def worker_count(data_config) -> int:
  """Prepare's worker processes: data.num_workers, or when it is -1 one per usable CPU core (at
  most MAX_AUTO_WORKERS)."""
  workers = int(data_config.num_workers)
  return usable_cores(MAX_AUTO_WORKERS) if workers == -1 else workers


def object_seed(seed: int, object_id: str) -> int:
  """A 63-bit seed from (config seed, object id): stable across runs, orders and processes."""
  digest = hashlib.sha256(f'{int(seed)}/{object_id}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') >> 1


def base_color(shape, data_config) -> np.ndarray:
  if data_config.colored:
    return np.asarray(shape.color, np.float32)
  return np.array(GREY, np.float32)


def normalized_geometry(shape, data_config, rng: np.random.Generator, *, defer_fps: bool = False):
  """-> (points [N,3] f32 on the unit sphere, normalised mesh or None, normalised full cloud or None).

  With `defer_fps`, a cloud of at least N points comes back with points None: the caller takes the
  N points by batched FPS over a chunk (`sampling.sample_clouds`).
  """
  return normalize(shape, data_config, rng, defer_fps=defer_fps)[:3]


def normalize(shape, data_config, rng: np.random.Generator, *, defer_fps: bool = False):
  """normalized_geometry's three, then the frame (center [3], scale): normalised = (p - c) / s."""
  from crossjepa.data import meshes  # pylint: disable=g-import-not-at-top
  n = int(data_config.num_points)
  if (shape.mesh is None) == (shape.points is None):
    raise ValueError(f'shape {shape.id!r}: expected exactly one of mesh / points')
  if shape.mesh is not None:
    sampled = meshes.sample_surface(shape.mesh, n, rng)
    points, center, scale = meshes.normalize_unit_sphere(sampled)
    return points, meshes.apply_normalization(shape.mesh, center, scale), None, (center, scale)
  cloud = np.asarray(shape.points, np.float32)
  if cloud.ndim != 2 or cloud.shape[1] != 3 or len(cloud) == 0:
    raise ValueError(f'shape {shape.id!r}: points must be [M,3] with M > 0, got {cloud.shape}')
  cloud, center, scale = meshes.normalize_unit_sphere(cloud)
  frame = (center, scale)
  if len(cloud) >= n:
    if defer_fps:
      return None, None, cloud, frame
    points = cloud[sampling.farthest_point_sampling_np(cloud, n)]
  else:   # too few points: keep them all, repeat random ones (FPS then picks them as duplicates)
    extra = rng.choice(len(cloud), n - len(cloud), replace=True)
    points = np.concatenate([cloud, cloud[extra]])
  return points.astype(np.float32), None, cloud, frame


def _render(mesh, cloud, color, world_to_cam, intrinsics, image_size):
  from crossjepa.data import render  # pylint: disable=g-import-not-at-top
  if mesh is not None:
    return render.render_mesh(mesh.vertices, mesh.faces, color, world_to_cam, intrinsics, image_size)
  return render.render_points(cloud, color, world_to_cam, intrinsics, image_size)


def _views(shape, data_config, seed, mesh, cloud) -> dict[str, np.ndarray]:
  """Our renderer's V views of the normalised object: cameras from the object's seed."""
  from crossjepa.data import cameras  # pylint: disable=g-import-not-at-top
  from crossjepa.data import histograms  # pylint: disable=g-import-not-at-top
  size = int(data_config.image_size)
  # Cameras from their own stream: the same poses whatever the point sampling consumed.
  cam_rng = np.random.default_rng([int(seed), 1])
  world_to_cam, intrinsics = cameras.make_cameras(data_config.camera, int(data_config.num_views),
                                                  size, cam_rng)
  rgb, depth = _render(mesh, cloud, base_color(shape, data_config), world_to_cam, intrinsics, size)
  hist = histograms.color_histogram(rgb, depth, int(data_config.hist_bins))
  return _view_dict(rgb, world_to_cam, intrinsics, hist, depth)


def _given_views(shape, data_config, surface, mesh, cloud, frame) -> dict[str, np.ndarray]:
  """The object's V views from data.render_set (render_set.py): its images and cameras moved into
  the normalised frame; depth from our rasteriser at those cameras (for the correspondence maps);
  the silhouette check on the `surface` points [P,3] (the sampled points, or the full cloud)
  before anything is kept."""
  from crossjepa.data import histograms  # pylint: disable=g-import-not-at-top
  given = render_set.read_views(data_config, str(shape.id))
  similarity = render_set.world_similarity(data_config.render_set, frame,
                                           mesh.vertices if mesh is not None else cloud)
  world_to_cam = render_set.to_normalized_frame(given.world_to_cam, similarity)
  scores = render_set.silhouette_scores(surface, world_to_cam, given.intrinsics, given.mask)
  render_set.check_agreement(scores, data_config, str(shape.id), given.files)
  agreement = np.minimum(*scores)
  _, depth = _render(mesh, cloud, base_color(shape, data_config), world_to_cam, given.intrinsics,
                     int(data_config.image_size))
  hist = histograms.masked_color_histogram(given.image, given.mask, int(data_config.hist_bins))
  return {**_view_dict(given.image, world_to_cam, given.intrinsics, hist, depth),
          'silhouette': float(np.mean(agreement))}


def _view_dict(rgb, world_to_cam, intrinsics, hist, depth) -> dict[str, np.ndarray]:
  return {'image': np.asarray(rgb, np.uint8),
          'world_to_cam': np.asarray(world_to_cam, np.float32),
          'intrinsics': np.asarray(intrinsics, np.float32),
          'hist': np.asarray(hist, np.float32),
          'depth': np.asarray(depth, np.float32)}


def render_views(shape, data_config, seed: int) -> dict[str, np.ndarray]:
  """Normalises a shape and renders its V views (the 2D-teacher stage reuses this).

  Returns dict(image u8 [V,H,W,3], world_to_cam [V,4,4], intrinsics [V,3,3], hist [V,3B],
  depth [V,H,W] (inf = background)), identical to what `process_shape` stores for the same seed
  without data.render_set (with it, the records hold the given renders).
  """
  _, mesh, cloud = normalized_geometry(shape, data_config, np.random.default_rng([int(seed), 0]))
  return _views(shape, data_config, seed, mesh, cloud)


def process_shape(shape, data_config, seed: int) -> dict[str, Any]:
  """Pure per-object CPU work: points, normalisation, cameras, renders, histograms.

  Returns a partial example: id, label, points [N,3], views/{image, world_to_cam, intrinsics, hist},
  and depth [V,H,W] (for the correspondence map; not stored); with data.render_set also
  'silhouette', the object's mean agreement (not stored: prepare's summary reports them).
  """
  points, mesh, cloud, frame = normalize(shape, data_config,
                                          np.random.default_rng([int(seed), 0]), defer_fps=True)
  if render_set.enabled(data_config):
    views = _given_views(shape, data_config, cloud if points is None else points, mesh, cloud, frame)
  else:
    views = _views(shape, data_config, seed, mesh, cloud)
  depth = views.pop('depth')
  extra = {'silhouette': views.pop('silhouette')} if 'silhouette' in views else {}
  return {'id': str(shape.id), 'label': int(shape.label), **_points_or_cloud(points, cloud),
          'views': views, 'depth': depth, **extra}


def process_points(shape, data_config, seed: int) -> dict[str, Any]:
  """Eval-only per-object work: id, label and the normalised points (as `process_shape`'s)."""
  points, _, cloud = normalized_geometry(shape, data_config, np.random.default_rng([int(seed), 0]),
                                         defer_fps=True)
  return {'id': str(shape.id), 'label': int(shape.label), **_points_or_cloud(points, cloud)}


def _points_or_cloud(points, cloud) -> dict[str, np.ndarray]:
  """The partial's points, or (FPS deferred to the chunk) the normalised cloud to sample them from."""
  return {'points': points} if points is not None else {'cloud': np.asarray(cloud, np.float32)}


def process_task(task):
  """(shape, data_config, seed, eval_only) -> the partial example (`process_points` when
  eval_only, else `process_shape`). A DeferredShape is read here."""
  shape, data_config, seed, eval_only = task
  shape = shape_lib.loaded(shape)   # read here: in a worker process when there are workers
  if eval_only:
    return process_points(shape, data_config, seed)
  return process_shape(shape, data_config, seed)
