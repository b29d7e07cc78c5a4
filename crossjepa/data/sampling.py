"""Point sampling and grouping of a chunk of objects for the prepare stage.

- `farthest_point_sampling_np`: the NumPy reference FPS of one cloud (float64; starts at index 0,
  ties to the lowest index).
- `sample_clouds`: the same FPS for many clouds at once, as the jitted, batched
  `crossjepa.ops.farthest_point_sampling` (float32: the reference's indices on the tested
  real-looking clouds; a near-tie can go the other way late in the sampling), one compiled call per
  chunk; a GPU runs it when there is one.
- `with_points`: fills the points of the partial examples whose FPS was deferred to the chunk
  (`dispatch_points` starts it early: jax runs it while the host reads the next chunk).
- `group_chunk`: FPS centres + kNN groups of a chunk (`crossjepa.ops.group_points`, jitted once).
- `compile_ahead`: compiles both for the chunk's shapes in background threads while the first
  objects are read (about 2 s of XLA compilation off the stage's start).
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Iterable, Iterator, Sequence

import numpy as np


def farthest_point_sampling_np(points: np.ndarray, num: int) -> np.ndarray:
  """[M,3] -> [num] indices; starts at 0, then argmax of min distance (ties to the lowest index).

  The NumPy reference, in float64. The batched `sample_clouds` computes the same in float32 (the
  XLA sums may also fuse multiply-adds): on a near-tie the two can order two candidates
  differently, late in the sampling (2 of the default's 576 scan test clouds).
  """
  points = np.asarray(points, np.float64)
  idx = np.zeros(num, np.int64)
  dist = np.sum((points - points[0]) ** 2, axis=1)
  for i in range(1, num):
    idx[i] = int(np.argmax(dist))
    dist = np.minimum(dist, np.sum((points - points[idx[i]]) ** 2, axis=1))
  return idx


@functools.lru_cache(maxsize=None)
def _sampler(num: int):
  import jax  # pylint: disable=g-import-not-at-top
  from crossjepa import ops  # pylint: disable=g-import-not-at-top
  return jax.jit(functools.partial(ops.farthest_point_sampling, num=num))


def dispatch_clouds(clouds: Sequence[np.ndarray], num: int, chunk_objects: int):
  """Starts the FPS of `num` points from each cloud [M_i,3] (M_i >= num); `collect` waits for it.

  One jitted call per chunk of `chunk_objects` clouds (the batch is padded with copies of the first
  cloud, the results dropped). Clouds of different sizes are padded to the largest with copies of
  their own point 0: a copy is at distance 0 from the first pick, so it is never chosen before a
  real point (and among zeros the lowest index, a real one, wins), which keeps the indices exactly
  those of each cloud alone. jax dispatches asynchronously, so the host can read the next objects
  while the FPS runs.
  """
  fn = _sampler(int(num))
  started = []
  for start in range(0, len(clouds), chunk_objects):
    part = [np.asarray(c, np.float32) for c in clouds[start:start + chunk_objects]]
    size = max(len(c) for c in part)
    batch = np.stack([np.concatenate([c, np.repeat(c[:1], size - len(c), axis=0)]) for c in part])
    if len(part) < chunk_objects:
      batch = np.concatenate([batch, np.repeat(batch[:1], chunk_objects - len(part), axis=0)])
    started.append((part, fn(batch)))
  return started


def collect(started) -> list[np.ndarray]:
  """The sampled points [num,3] f32 of every cloud given to `dispatch_clouds`, in order."""
  out = []
  for part, idx in started:
    idx = np.asarray(idx)
    out.extend(part[i][idx[i]] for i in range(len(part)))
  return out


def sample_clouds(clouds: Sequence[np.ndarray], num: int, chunk_objects: int) -> list[np.ndarray]:
  """FPS of `num` points from each cloud, batched (`dispatch_clouds`, then `collect`)."""
  return collect(dispatch_clouds(clouds, num, chunk_objects))


def dispatch_points(partials: Sequence[dict[str, Any]], data_config, chunk_objects: int):
  """Starts the FPS of the partial examples whose FPS was deferred; `with_points` finishes them."""
  pending = [i for i, p in enumerate(partials) if 'points' not in p]
  clouds = [partials[i]['cloud'] for i in pending]
  started = dispatch_clouds(clouds, int(data_config.num_points), chunk_objects) if pending else []
  return list(partials), pending, started


def with_points(partials: Sequence[dict[str, Any]], data_config, chunk_objects: int,
                dispatched=None) -> list[dict[str, Any]]:
  """Partials whose FPS was deferred get their points (the batched FPS); the cloud is dropped.

  `dispatched`: what `dispatch_points(partials, ...)` returned, when it was started earlier.
  """
  partials, pending, started = dispatched or dispatch_points(partials, data_config, chunk_objects)
  out = list(partials)
  for i, points in zip(pending, collect(started)):
    out[i] = {k: v for k, v in partials[i].items() if k != 'cloud'}
    out[i]['points'] = points
  return out


@functools.lru_cache(maxsize=None)
def _grouper(num_groups: int, group_size: int):
  import jax  # pylint: disable=g-import-not-at-top
  from crossjepa import ops  # pylint: disable=g-import-not-at-top
  return jax.jit(functools.partial(ops.group_points, num_groups=num_groups, group_size=group_size))


def group_chunk(points: np.ndarray, data_config, chunk_objects: int):
  """points [n,N,3] -> (centers [n,G,3] f32, groups [n,G,K] i32), one compiled shape per run."""
  n = len(points)
  padded = points
  if n < chunk_objects:   # pad with copies of the first object: a fixed shape, results dropped
    padded = np.concatenate([points, np.repeat(points[:1], chunk_objects - n, axis=0)])
  fn = _grouper(int(data_config.num_groups), int(data_config.group_size))
  centers, groups = fn(padded)
  return np.asarray(centers, np.float32)[:n], np.asarray(groups, np.int32)[:n]


def _compile_in_background(fn, shape) -> threading.Thread:
  """`fn.lower(...).compile()` for float32 `shape` in a background thread: it fills the jit's cache,
  so the first real call dispatches at once (a failure is left to that call to raise). Not a daemon:
  a program that ends while XLA compiles (prepare stopping at a malformed mesh: exit 2) waits for
  the compile at shutdown instead of aborting in the middle of it (SIGABRT, exit 134)."""
  import jax  # pylint: disable=g-import-not-at-top

  def run():
    try:
      fn.lower(jax.ShapeDtypeStruct(shape, np.float32)).compile()
    except Exception:  # pylint: disable=broad-except
      pass

  thread = threading.Thread(target=run, name='prepare-compile')
  thread.start()
  return thread


def compile_ahead(partials: Iterable[dict[str, Any]], data_config, chunk_objects: int
                  ) -> Iterator[dict[str, Any]]:
  """The partial examples, unchanged; meanwhile the grouping of [chunk_objects, N, 3] compiles at
  once, and the FPS of clouds as large as the first partial's as soon as it arrives."""
  d = data_config
  _compile_in_background(_grouper(int(d.num_groups), int(d.group_size)),
                         (chunk_objects, int(d.num_points), 3))
  first = True
  for partial in partials:
    if first and 'cloud' in partial:
      _compile_in_background(_sampler(int(d.num_points)), (chunk_objects, len(partial['cloud']), 3))
    first = False
    yield partial
