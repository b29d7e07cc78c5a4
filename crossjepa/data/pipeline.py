"""grain input pipeline over the prepared records: training batches and evaluation arrays.

Training (docs/ARCHITECTURE.md "Training batch"): the union of the pretraining splits, sliced per
host (`jax.process_index()`), globally shuffled with the run seed and repeated forever (grain reseeds
the shuffle every epoch), then per object: `train.views_per_step` of the V views drawn at random,
augmentation, dtype conversion; fixed-size batches (remainder dropped). Only the features the recipe
reads are decoded (no images unless asked for; `teacher/groups` only for the per-group target).
`train_iterator` returns grain's checkpointable iterator (get_state / set_state).

Augmentations and the 2D-3D pairing. The correspondence map is by group index (group g <-> patch
corr[v, g]) and the teacher targets are cached per view, so any transform of the points leaves the
targets correct; only the pose conditioning (`views/world_to_cam`) refers to the world frame, and we
keep it consistent with the transformed points:
  * rotation R about the up axis (the renderer's world is y-up): points, centres rotated,
    world_to_cam' = world_to_cam @ R^-1, so every point projects to the same pixel as before;
  * uniform scale s and translation t (x' = s x + t): world_to_cam' = [[R_c, s t_c - R_c t], [0, 1]],
    a rigid pose whose camera coordinates are s times the old ones, so the perspective projection
    (and the image) is unchanged — the camera moves with the object;
  * jitter (small Gaussian noise, clipped) on the points only: the centres stay the exact group
    references (Point-MAE re-centres groups on their centres).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np

from crossjepa.data import records

UP_AXIS = 1                 # crossjepa.data.render renders a y-up world
JITTER_CLIP = 5.0           # jitter noise clipped at this many standard deviations
EVAL_KEYS = ('points', 'centers', 'groups', 'label')
_BASE_TRAIN_KEYS = ('points', 'centers', 'groups', 'label', 'views/world_to_cam',
                    'views/intrinsics', 'views/hist', 'views/corr', 'teacher/cls')


def train_keys(config, *, need_images: bool = False, need_groups_target: bool | None = None
               ) -> list[str]:
  if need_groups_target is None:
    need_groups_target = config.train.target == 'groups'
  keys = list(_BASE_TRAIN_KEYS)
  if need_images:
    keys.append('views/image')
  if need_groups_target:
    keys.append('teacher/groups')
  return keys


# ------------------------------------------------------------------------------------------ geometry
def rotation_about_up(angle: float) -> np.ndarray:
  """[3,3] rotation by `angle` radians about the world up axis (y)."""
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], np.float64)


def rotate_example(points, centers, world_to_cam, rotation):
  """x' = R x for points/centres, world_to_cam' = world_to_cam @ R^-1 (projections unchanged)."""
  rot4 = np.eye(4)
  rot4[:3, :3] = rotation.T            # R^-1 = R^T
  return (points @ rotation.T, centers @ rotation.T, world_to_cam @ rot4)


def scale_translate_example(points, centers, world_to_cam, scale, shift):
  """x' = s x + t; the camera moves with the object: rigid world_to_cam', same projections."""
  rot_c, t_c = world_to_cam[..., :3, :3], world_to_cam[..., :3, 3]
  new = np.array(world_to_cam, np.float64, copy=True)
  new[..., :3, 3] = scale * t_c - np.einsum('...ij,j->...i', rot_c, shift)
  return points * scale + shift, centers * scale + shift, new


# ------------------------------------------------------------------------------------------ targets
STATS_EPS = 1e-3   # floor of a target dimension's std (dims that barely vary are not blown up)


def teacher_stats(config, workdir, splits: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Per-dimension mean and std of the cached teacher targets over the pretraining splits:
  {'cls': {'mean', 'std'} over objects x views; 'groups': {...} over the visible entries only}.

  Computed once from the records and kept beside them (`teacher_stats-<splits>.npz`, written
  atomically); records never change once prepared, so the file stays valid with them.
  """
  splits = list(splits if splits is not None else config.data.pretrain_splits)
  directory = records.dataset_dir(config, workdir)
  path = os.path.join(directory, f'teacher_stats-{"+".join(splits)}.npz')
  if os.path.exists(path):
    with np.load(path) as f:
      return {k: {'mean': f[f'{k}/mean'], 'std': f[f'{k}/std']}
              for k in ('cls', 'groups') if f'{k}/mean' in f}
  builder = records.open_dataset(config, workdir)
  records.check_full_records(builder)
  keys = ['teacher/cls', 'teacher/groups', 'views/corr']
  sums: dict[str, list] = {}
  for split in splits:
    source = records.RecordSource(builder, split, keys)
    for start in range(0, len(source), 256):
      for item in source.__getitems__(range(start, min(len(source), start + 256))):
        t = item['teacher']
        cls = np.asarray(t['cls'], np.float64).reshape(-1, t['cls'].shape[-1])
        visible = np.asarray(item['views']['corr']).reshape(-1) >= 0
        groups = np.asarray(t['groups'], np.float64).reshape(-1, t['groups'].shape[-1])[visible]
        for key, x in (('cls', cls), ('groups', groups)):
          acc = sums.setdefault(key, [0, 0.0, 0.0])
          acc[0] += len(x)
          acc[1] = acc[1] + x.sum(0)
          acc[2] = acc[2] + np.square(x).sum(0)
  out = {}
  for key, (n, s1, s2) in sums.items():
    if n == 0:
      raise ValueError(f'teacher_stats: no {key} target entries in splits {splits} of {directory}')
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - np.square(mean), 0.0))
    out[key] = {'mean': mean.astype(np.float32), 'std': np.maximum(std, STATS_EPS).astype(np.float32)}
  from crossjepa import fileio  # pylint: disable=g-import-not-at-top
  flat = {f'{k}/{s}': v[s] for k, v in out.items() for s in ('mean', 'std')}
  fileio.atomic_save_npz(path, flat)
  return out


def standardize_targets(teacher: Mapping[str, np.ndarray], corr: np.ndarray,
                        stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """(x - mean) / std per dimension; groups entries that are not visible (corr < 0) stay zero."""
  out = dict(teacher)
  if 'cls' in out and 'cls' in stats:
    out['cls'] = ((out['cls'] - stats['cls']['mean']) / stats['cls']['std']).astype(np.float32)
  if 'groups' in out and 'groups' in stats:
    z = (out['groups'] - stats['groups']['mean']) / stats['groups']['std']
    out['groups'] = np.where((np.asarray(corr) >= 0)[..., None], z, 0.0).astype(np.float32)
  return out


class TrainTransform:
  """Per object: view subsampling, augmentation, target standardisation, dtypes (a grain
  RandomMap; picklable)."""

  def __init__(self, config, *, need_images: bool, target_stats=None):
    a = config.train.augment
    self.views_per_step = int(config.train.views_per_step)
    self.num_views = int(config.data.num_views)
    if not 1 <= self.views_per_step <= self.num_views:
      raise ValueError(f'train.views_per_step={self.views_per_step} must be in [1, data.num_views='
                       f'{self.num_views}]')
    self.scale = tuple(float(x) for x in a.scale)
    self.translate = float(a.translate)
    self.jitter = float(a.jitter)
    self.rotate_up = bool(a.rotate_up)
    self.need_images = need_images
    self.target_stats = target_stats

  def __call__(self, ex: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    pick = rng.choice(self.num_views, self.views_per_step, replace=False)
    views = {k: np.asarray(v)[pick] for k, v in ex['views'].items()}
    teacher = {k: np.asarray(v)[pick].astype(np.float32) for k, v in ex['teacher'].items()}
    if self.target_stats is not None:
      teacher = standardize_targets(teacher, views['corr'], self.target_stats)
    points = np.asarray(ex['points'], np.float64)
    centers = np.asarray(ex['centers'], np.float64)
    w2c = np.asarray(views['world_to_cam'], np.float64)
    if self.rotate_up:
      points, centers, w2c = rotate_example(points, centers, w2c,
                                            rotation_about_up(rng.uniform(0.0, 2 * np.pi)))
    scale = rng.uniform(*self.scale) if self.scale[0] != self.scale[1] else self.scale[0]
    shift = rng.uniform(-self.translate, self.translate, 3) if self.translate else np.zeros(3)
    if scale != 1.0 or self.translate:
      points, centers, w2c = scale_translate_example(points, centers, w2c, scale, shift)
    if self.jitter:
      noise = np.clip(rng.normal(0.0, self.jitter, points.shape),
                      -JITTER_CLIP * self.jitter, JITTER_CLIP * self.jitter)
      points = points + noise
    views['world_to_cam'] = w2c.astype(np.float32)
    views['intrinsics'] = views['intrinsics'].astype(np.float32)
    views['hist'] = views['hist'].astype(np.float32)
    views['corr'] = views['corr'].astype(np.int32)
    if 'image' in views:
      from crossjepa.models import vit  # pylint: disable=g-import-not-at-top
      views['image'] = np.asarray(vit.normalize_images(views['image']), np.float32)
    return {'points': points.astype(np.float32), 'centers': centers.astype(np.float32),
            'groups': np.asarray(ex['groups'], np.int32), 'label': np.int32(ex['label']),
            'views': views, 'teacher': teacher}


# ------------------------------------------------------------------------------------------ training
def _per_host_batch(config) -> int:
  batch, hosts = int(config.train.batch_size), jax.process_count()
  if batch % hosts:
    raise ValueError(f'train.batch_size={batch} is not divisible by the {hosts} hosts')
  return batch // hosts


def train_dataset(config, workdir, splits: Sequence[str] | None = None, *, need_images: bool = False,
                  need_groups_target: bool | None = None) -> grain.MapDataset:
  """Infinite MapDataset of per-host training batches (see the module docstring)."""
  splits = list(splits if splits is not None else config.data.pretrain_splits)
  builder = records.open_dataset(config, workdir)
  records.check_full_records(builder)
  keys = train_keys(config, need_images=need_images, need_groups_target=need_groups_target)
  parts = [grain.MapDataset.source(records.RecordSource(builder, s, keys)) for s in splits]
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
  # Per-host shard first: every host shuffles its own slice with the same seed.
  ds = ds[jax.process_index()::jax.process_count()]
  batch = _per_host_batch(config)
  if len(ds) < batch:
    raise ValueError(f'splits {splits} hold {len(ds)} objects on this host, fewer than one batch '
                     f'({batch}); lower train.batch_size or prepare more objects')
  seed = int(config.seed)
  ds = ds.shuffle(seed=seed).repeat()   # reshuffled every epoch (seed combined with the epoch)
  stats = (teacher_stats(config, workdir, splits)
           if config.recipe == 'crossjepa' and config.train.standardize_target == 'dataset' else None)
  ds = ds.random_map(TrainTransform(config, need_images=need_images, target_stats=stats),
                     seed=seed + 1)
  return ds.batch(batch, drop_remainder=True)


def train_iterator(config, workdir, splits: Sequence[str] | None = None, *,
                   need_images: bool = False, need_groups_target: bool | None = None):
  """Checkpointable iterator of training batches (grain DatasetIterator: get_state / set_state).

  Worker processes: train.num_workers (0 = threads of this process only).
  """
  ds = train_dataset(config, workdir, splits, need_images=need_images,
                     need_groups_target=need_groups_target)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  workers = int(config.train.num_workers)
  if workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iter(it_ds)


# ------------------------------------------------------------------------------------------ evaluation
def _open_source(config, workdir, split: str, keys: Sequence[str]) -> records.RecordSource:
  builder = records.open_dataset(config, workdir)
  return records.RecordSource(builder, split, keys)


def _flat(example: Mapping[str, Any], keys: Sequence[str]) -> dict[str, np.ndarray]:
  out = {}
  for key in keys:
    node = example
    for part in key.split('/'):
      node = node[part]
    if isinstance(node, (bytes, np.bytes_)):   # Text features (ids) come back as bytes
      out[key] = np.asarray(node.decode('utf-8'), object)
    else:
      out[key] = np.asarray(node)
  return out


def load_split(config, workdir, split: str, keys: Sequence[str] = EVAL_KEYS,
               chunk: int = 256) -> dict[str, np.ndarray]:
  """All examples of a split as arrays {key: [n, ...]} (keys like 'views/corr' stay flat)."""
  source = _open_source(config, workdir, split, keys)
  n = len(source)
  arrays: dict[str, np.ndarray] = {}
  for start in range(0, n, chunk):
    items = source.__getitems__(range(start, min(n, start + chunk)))
    for i, item in enumerate(items):
      for key, value in _flat(item, keys).items():
        if key not in arrays:
          # text (ids) varies in length: an object array, not a fixed-width one that would truncate
          dtype = object if value.dtype.kind in 'SUO' else value.dtype
          arrays[key] = np.empty((n,) + value.shape, dtype)
        arrays[key][start + i] = value.item() if value.dtype == object else value
  if n == 0:
    raise ValueError(f'split {split!r} of the prepared dataset is empty')
  if 'label' in arrays:
    arrays['label'] = arrays['label'].astype(np.int32)
  return arrays


def iterate_split(config, workdir, split: str, batch_size: int, keys: Sequence[str] = EVAL_KEYS
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches {key: [batch_size, ...], 'valid': bool [batch_size]} in record order.

  The final batch is padded by repeating its last example (valid = False there), so a jitted
  evaluation sees one shape only.
  """
  source = _open_source(config, workdir, split, keys)
  n = len(source)
  for start in range(0, n, batch_size):
    idx = list(range(start, min(n, start + batch_size)))
    items = [_flat(x, keys) for x in source.__getitems__(idx)]
    pad = batch_size - len(items)
    batch = {k: np.array([x[k].item() if x[k].dtype == object else x[k]
                          for x in items + [items[-1]] * pad]) for k in keys}
    if 'label' in batch:
      batch['label'] = batch['label'].astype(np.int32)
    batch['valid'] = np.arange(batch_size) < len(items)
    yield batch
