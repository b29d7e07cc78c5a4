"""--mode=prepare: shapes of a source -> records under WORKDIR/data, and WORKDIR/plots/views.png.

Per object (DESIGN.md §2, CrossJEPA arXiv 2511.18424 §3 "offline rendering and caching"):

  1. points: N surface points, area-weighted, from the mesh; for point-only sources the given points
     are normalised, then N are taken by farthest point sampling (the ModelNet/ShapeNet loaders'
     convention: "1,024 points by FPS"; fewer than N given points are topped up by random repeats).
     That FPS runs per chunk of objects in the main process, as the jitted, batched
     `crossjepa.ops.farthest_point_sampling` in float32 (`sampling.sample_clouds`; the indices of
     the float64 reference `sampling.farthest_point_sampling_np` on the tested clouds, a near-tie
     aside), so a GPU runs it when there is one.
  2. unit-sphere normalisation of the points (Point-BERT's pc_normalize); the SAME centre and scale
     move the mesh before rendering, so the 2D-3D pairing is exact.
  3. V cameras seeded by (config.seed, object id): deterministic, independent of order and workers.
  4. renders (mesh rasteriser, or point splats for point-only sources), base colour = the shape's
     colour when data.colored else grey; colour histogram per view. With data.render_set, steps 3
     and 4 read the object's given renders and poses instead (render_set.py: V evenly spaced of
     them, the poses moved into the unit-sphere frame, the silhouette check; the rasteriser then
     gives only the depth for step 6).
  5. FPS centres + kNN groups (crossjepa.ops, jitted once over a padded chunk of objects).
  6. correspondence map per view on the teacher's feature grid (its stride; depth test within
     data.depth_tolerance).
  7. teacher cache (crossjepa.data.teacher_cache) over the chunk.

Steps 1-4 are the pure `per_object.process_shape(shape, data_config, seed)` (a spawn-safe Pool
when data.num_workers > 0, which also reads the files of a one-file-per-object source: the main
process never parses); the raw-cloud FPS and steps 5-7 are `finish_chunk` in the main process
(batched jax, compiled in the background while the first objects are read; the map steps of a Beam
pipeline, too). jax runs the FPS and the teacher asynchronously, so a chunk's objects are read
while the chunk before has its FPS and the one before that its teacher (`start_chunk`,
`end_chunk`): in one process on 2 cores the default's prepare takes 0.81x the time of waiting for
each teacher call (960 objects: 33.6 / 34.1 s against 41.0 / 42.7 s; the records the same).
With data.eval_only only steps 1, 2 and 5 run, over the evaluation splits
(`per_object.process_points`, `finish_chunk_geometry`): records of id/label/points/centers/groups,
the points the same as the full path's for the same seed.
"""
from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from absl import logging
import numpy as np

from crossjepa import console
from crossjepa.data import per_object
from crossjepa.data import records
from crossjepa.data import render_set
from crossjepa.data import sampling

PLOT_OBJECTS = 3   # objects shown in plots/views.png


# ------------------------------------------------------------------------------------------ per chunk
def finish_chunk(partials: Sequence[dict[str, Any]], config, teacher, *, dispatched=None
                 ) -> list[dict[str, Any]]:
  """Centres/groups, correspondence maps and the teacher cache for a chunk of partial examples."""
  return end_chunk(start_chunk(partials, config, teacher, dispatched=dispatched))


def start_chunk(partials: Sequence[dict[str, Any]], config, teacher, *, dispatched=None):
  """finish_chunk up to the teacher's calls, which are launched, not waited for (`end_chunk`
  waits): the main process reads the next chunk's objects while the teacher runs."""
  from crossjepa.data import correspondence  # pylint: disable=g-import-not-at-top
  d = config.data
  partials = sampling.with_points(partials, d, teacher.chunk_objects, dispatched)
  points = np.stack([p['points'] for p in partials])
  centers, groups = sampling.group_chunk(points, d, teacher.chunk_objects)
  corr = np.stack([
      np.asarray(correspondence.correspondence_map(
          centers[i], p['views']['world_to_cam'], p['views']['intrinsics'], p['depth'],
          teacher.stride, float(d.depth_tolerance)), np.int32)
      for i, p in enumerate(partials)])
  images = np.stack([p['views']['image'] for p in partials])
  return partials, config, teacher, centers, groups, corr, teacher.dispatch(images, corr)


def end_chunk(started) -> list[dict[str, Any]]:
  """The examples of a start_chunk, once its teacher calls are done."""
  partials, config, teacher, centers, groups, corr, calls = started
  d = config.data
  cls, group_feats = teacher.collect(calls)
  out = []
  for i, p in enumerate(partials):
    views = dict(p['views'], corr=corr[i])
    if not d.keep_images:
      views.pop('image')
    cached = {'cls': cls[i]}
    if d.cache_group_features:
      cached['groups'] = group_feats[i]
    out.append({'id': p['id'], 'label': np.int64(p['label']), 'points': p['points'],
                'centers': centers[i], 'groups': groups[i], 'views': views, 'teacher': cached})
  return out


def finish_chunk_geometry(partials: Sequence[dict[str, Any]], config, chunk_objects: int, *,
                          dispatched=None) -> list[dict[str, Any]]:
  """Eval-only records of a chunk: centres and groups, no correspondence, no teacher."""
  partials = sampling.with_points(partials, config.data, chunk_objects, dispatched)
  points = np.stack([p['points'] for p in partials])
  centers, groups = sampling.group_chunk(points, config.data, chunk_objects)
  return [{'id': p['id'], 'label': np.int64(p['label']), 'points': p['points'],
           'centers': centers[i], 'groups': groups[i]} for i, p in enumerate(partials)]


def _chunk_objects(config, teacher) -> int:
  if teacher is not None:
    return int(teacher.chunk_objects)
  return int(config.data.teacher_chunk)


def _chunks(iterable: Iterable, size: int) -> Iterator[list]:
  it = iter(iterable)
  while chunk := list(itertools.islice(it, size)):
    yield chunk


class InFlight:
  """At most `limit` objects between a Pool's task feeder and the consumer of its results.

  multiprocessing.Pool.imap takes its whole task iterator at once (its feeder thread) and keeps
  every finished result until it is read, so with workers faster than the main process (rendering
  in 8 processes, the teacher slower: a CPU, a small GPU) the renders piled up in memory, about
  4 MB an object at the paper's size, without bound. `feed` wraps the tasks: it hands one out only
  when a slot is free; `consumed` wraps the results: each one read frees a slot. `stop` lets a
  feeder waiting for a slot end, so that Pool.terminate (which joins the feeder) cannot hang.
  """

  def __init__(self, limit: int):
    self._slots = threading.Semaphore(int(limit))
    self._stopped = threading.Event()

  def feed(self, tasks: Iterable) -> Iterator:
    for task in tasks:
      while not self._slots.acquire(timeout=0.1):
        if self._stopped.is_set():
          return
      if self._stopped.is_set():
        return
      yield task

  def consumed(self, results: Iterable) -> Iterator:
    for result in results:
      self._slots.release()
      yield result

  def stop(self) -> None:
    self._stopped.set()


def in_flight_limit(workers: int, chunksize: int, chunk_objects: int) -> int:
  """Objects allowed between the pool's feeder and the main process: every worker busy with one
  batch of `chunksize` and one more queued, and two of the main process's chunks (no fewer than
  one imap batch, which the feeder must fill before it sends it)."""
  return max(2 * workers * chunksize, 2 * chunk_objects, chunksize)


def generate_examples(config, split: str, teacher, *, shapes: Iterable | None = None,
                      on_example: Callable[[dict[str, Any]], None] | None = None,
                      silhouettes: list | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
  """(key, example) for every shape of `split` (keys are the object ids, unique per split).

  `teacher` may be None when data.eval_only (no teacher cache is computed). With data.render_set,
  each object's (id, silhouette agreement) is appended to `silhouettes` when it is given.
  """
  d = config.data
  eval_only = records.is_eval_only(d)
  if teacher is None and not eval_only:
    raise ValueError('generate_examples: a teacher is needed unless data.eval_only')
  chunk_objects = _chunk_objects(config, teacher)
  if shapes is None:
    from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
    shapes = sources.iter_shapes(d, split, deferred=True)
  tasks = ((s, d, per_object.object_seed(config.seed, s.id), eval_only) for s in shapes)
  workers = per_object.worker_count(d)
  pool = flow = None
  if workers > 0:
    # spawn: safe with jax/threads in the parent; imap keeps the source order; InFlight bounds
    # what the workers may run ahead of the main process.
    chunksize = max(1, chunk_objects // workers)
    flow = InFlight(in_flight_limit(workers, chunksize, chunk_objects))
    pool = multiprocessing.get_context('spawn').Pool(workers)
    partials = flow.consumed(pool.imap(per_object.process_task, flow.feed(tasks),
                                       chunksize=chunksize))
  else:
    partials = map(per_object.process_task, tasks)
  partials = _tap_silhouettes(partials, silhouettes)

  def start(chunk, dispatched):
    if eval_only:
      return finish_chunk_geometry(chunk, config, chunk_objects, dispatched=dispatched)
    return start_chunk(chunk, config, teacher, dispatched=dispatched)

  def end(started):
    return started if eval_only else end_chunk(started)

  try:
    # Three chunks in flight: chunk k is read (its objects rendered) while the FPS of chunk k-1
    # and the teacher of chunk k-2 run (jax dispatches them asynchronously; on the CPU, XLA's
    # threads run beside the reading).
    read = started = None
    chunks = _chunks(sampling.compile_ahead(partials, d, chunk_objects), chunk_objects)
    for chunk in itertools.chain(chunks, [None]):   # None: the last chunk read goes on too
      current = None if chunk is None else (chunk, sampling.dispatch_points(chunk, d, chunk_objects))
      if read is not None:
        launched = start(*read)
        if started is not None:
          yield from _emit(end(started), on_example)
        started = launched
      read = current
    if started is not None:
      yield from _emit(end(started), on_example)
  finally:
    if pool is not None:
      flow.stop()
      pool.terminate()
      pool.join()


def _tap_silhouettes(partials: Iterable[dict[str, Any]], silhouettes: list | None) -> Iterator:
  """The partials without their 'silhouette' (not a record field), kept in `silhouettes`."""
  for partial in partials:
    value = partial.pop('silhouette', None)
    if value is not None and silhouettes is not None:
      silhouettes.append((partial['id'], value))
    yield partial


def silhouette_summary(silhouettes) -> dict[str, Any] | None:
  """{'objects', 'median', 'lowest', 'lowest_id'} of (id, agreement) pairs, or None."""
  if not silhouettes:
    return None
  values = np.array([v for _, v in silhouettes])
  low = int(np.argmin(values))
  return {'objects': len(values), 'median': round(float(np.median(values)), 4),
          'lowest': round(float(values[low]), 4), 'lowest_id': silhouettes[low][0]}


# ------------------------------------------------------------------------------------------ stage
def _emit(examples, on_example):
  for example in examples:
    if on_example is not None:
      on_example(example)
    yield example['id'], example


def splits_to_prepare(config) -> list[str]:
  """The pretraining splits plus the evaluation splits the source has (ordered, unique).

  With data.eval_only: the two evaluation splits only, and each must exist.
  """
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  d = config.data
  available = list(sources.available_splits(d))
  if records.is_eval_only(d):
    wanted = list(dict.fromkeys([d.eval_train_split, d.eval_test_split]))
    missing = [s for s in wanted if s not in available]
    if missing:
      raise ValueError(f'data.eval_train_split / data.eval_test_split {missing} are not splits of '
                       f'source {d.source!r} (variant {d.variant!r}; it has {available})')
    return wanted
  wanted = list(dict.fromkeys(list(d.pretrain_splits) + [d.eval_train_split, d.eval_test_split]))
  missing = [s for s in d.pretrain_splits if s not in available]
  if missing:
    raise ValueError(f'data.pretrain_splits {missing} are not splits of source {d.source!r} '
                     f'(it has {available})')
  return [s for s in wanted if s in available]


def check_num_classes(data_config, class_names: Sequence[str]) -> None:
  """data.num_classes (when > 0) must equal the number of the source's class names."""
  want = int(data_config.num_classes)
  if want and len(class_names) != want:
    raise ValueError(f'data.num_classes = {want}, but source {data_config.source!r} (root '
                     f'{data_config.root!r}, variant {data_config.variant!r}) has '
                     f'{len(class_names)} classes: {list(class_names)[:8]}...')


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def prepare(config, workdir, *, teacher=None, shapes_fn: Callable[[str], Iterable] | None = None,
            class_names: Sequence[str] | None = None, splits: Sequence[str] | None = None
            ) -> dict[str, Any]:
  """Builds the records of `config` under WORKDIR/data; returns a summary.

  Skips the work when the dataset is already prepared and its metadata matches the config (a
  mismatch is an error: use a fresh workdir). `teacher`, `shapes_fn(split)`, `class_names` and
  `splits` replace the config's (tests, custom sources).
  """
  from crossjepa.data import fingerprint as fingerprint_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  from crossjepa.data import view_plots  # pylint: disable=g-import-not-at-top
  d = config.data
  eval_only = records.is_eval_only(d)
  path = records.dataset_dir(config, workdir)
  for stale in records.remove_stale_incomplete(config, workdir):
    logging.warning('prepare: removed %s, left by an interrupted prepare', stale)
  if class_names is None:
    class_names = sources.class_names(d)
  # A custom source (shapes_fn) is fingerprinted by its class names and the config only.
  fingerprint = fingerprint_lib.source_fingerprint(d, class_names, files=shapes_fn is None)
  if os.path.exists(os.path.join(path, 'dataset_info.json')):
    builder = records.open_dataset(config, workdir, check=False)
    try:
      if eval_only:
        expected = None   # eval-only records carry no teacher cache
      elif teacher is not None:
        expected = teacher.teacher_info()
      else:
        expected = teacher_cache.expected_teacher_info(config)
      records.check_metadata(dict(builder.info.metadata or {}), config, teacher_info=expected)
    except ValueError as e:
      raise ValueError(f'{e}\nThe records in {path} were prepared with another config: use a fresh '
                       '--workdir (or delete that folder) to prepare them again.') from None
    sizes = {s: int(builder.info.splits[s].num_examples) for s in records.split_names(builder)}
    wanted = list(splits) if splits is not None else splits_to_prepare(config)
    missing = [s for s in wanted if s not in sizes]
    if missing:
      raise ValueError(f'the records in {path} lack the splits {missing} (they have {sorted(sizes)}): '
                       'use a fresh --workdir to prepare them.')
    changed = fingerprint_lib.differences(
        dict(builder.info.metadata or {}).get('fingerprint'), fingerprint)
    if shapes_fn is None and not changed:
      now = {s: sources.count(d, s) for s in sizes}
      changed = [f'split {s}: records hold {sizes[s]} objects, the source now has {now[s]}'
                 for s in sizes if now[s] != sizes[s]]
    if changed:
      raise ValueError(
          f'the records in {path} were prepared from other data than data.source / data.root now '
          'give:\n  ' + '\n  '.join(changed) + '\nThey are not reused: prepare into a fresh '
          '--workdir (or delete that folder) to build records of the current data.')
    logging.info('prepare: reusing %s %s', path, sizes)
    return {'data_dir': path, 'skipped': True, 'splits': sizes}

  for old in records.other_versions(config, workdir):
    logging.warning('prepare: %s holds records of schema %s (%.1f MB), written by another crossjepa '
                    'and not read by this one (%s); they are left as they are: delete that folder '
                    'to free the space', old, os.path.basename(old), _dir_bytes(old) / 1e6,
                    records.VERSION)
  if splits is None:
    splits = splits_to_prepare(config)
  check_num_classes(d, class_names)
  # The progress bar's total (and so its ETA) when the shapes come from the config's source.
  sizes = {s: sources.count(d, s) for s in splits} if shapes_fn is None else None
  num_objects = None if sizes is None else sum(sizes.values())
  if sizes is not None and (empty := [s for s, n in sizes.items() if n == 0]):
    # TFDS would fail on the empty split after the others were written ("No examples were yielded").
    raise ValueError(f'data.source {d.source!r} has no objects in split(s) {empty}: leave them '
                     f'out of data.pretrain_splits (now {list(d.pretrain_splits)}; e.g. '
                     f'--config.data.pretrain_splits=train) or give them objects (the synthetic '
                     f'source: data.synthetic.<split>_per_class)')
  if shapes_fn is None:
    shapes_fn = functools.partial(sources.iter_shapes, d, deferred=True)
  if not eval_only and render_set.enabled(d) and d.render_set.layout == 'zero123':
    # zero123 finds renders by an id's last part: two objects must not share a folder
    render_set.check_unique_folders(
        d.render_set, (shape.id for split in splits for shape in shapes_fn(split)))
  if teacher is None and not eval_only:
    teacher = teacher_cache.Teacher(config)

  shown: list[dict[str, Any]] = []
  counts = {s: 0 for s in splits}
  silhouettes: list[tuple[str, float]] = []
  start = time.time()

  def example_fn(split):
    def on_example(example):
      counts[split] += 1
      if len(shown) < PLOT_OBJECTS and 'image' in example.get('views', {}):
        shown.append(example)
      total = sum(counts.values())
      bar.set_postfix_str(split, refresh=False)
      bar.update(1)
      if total % 200 == 0:   # log.txt; the terminal has the bar
        logging.info('prepare: %d objects, %.1f objects/s', total, total / (time.time() - start))
    return generate_examples(config, split, teacher, shapes=shapes_fn(split), on_example=on_example,
                             silhouettes=silhouettes)

  teacher_info = {'name': None, 'width': 0} if eval_only else teacher.teacher_info()
  builder = records.make_builder(config, workdir, teacher_info=teacher_info,
                                 class_names=class_names, splits=splits, example_fn=example_fn,
                                 fingerprint=fingerprint)
  logging.info('prepare: %s objects of splits %s into %s',
               'the given' if num_objects is None else num_objects, splits, path)
  with console.progress(total=num_objects, desc=f'prepare[{d.name}]', unit='obj') as bar:
    with console.tfds_quiet():   # TFDS's own bars and prints: ours above, its prints to log.txt
      records.write(builder, d.shards)
  seconds = time.time() - start
  total = sum(counts.values())
  summary = {'data_dir': path, 'skipped': False, 'splits': counts, 'seconds': round(seconds, 2),
             'objects_per_s': round(total / max(seconds, 1e-9), 2),
             'bytes': _dir_bytes(path), 'teacher': None if eval_only else teacher.name,
             'eval_only': eval_only}
  logging.info('prepare: %d objects in %.1f s (%.1f objects/s) -> %s', total, seconds,
               summary['objects_per_s'], path)
  if (silhouette := silhouette_summary(silhouettes)) is not None:
    summary['silhouette'] = silhouette
    console.say(f'   render set: {silhouette["objects"]} objects, silhouette agreement median '
                f'{silhouette["median"]:.3f}, lowest {silhouette["lowest"]:.3f} '
                f'({silhouette["lowest_id"]}; refused below {float(d.render_set.min_agreement)})')
  if shown:
    plot = os.path.join(os.fspath(workdir), 'plots', 'views.png')
    view_plots.plot_examples(plot, shown, int(teacher.stride))
    summary['plot'] = plot
  return summary
