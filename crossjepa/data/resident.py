"""The device-resident training set (train.device_resident): batches sampled in the jitted step.

The prepared training set lives on the device as one pytree with the training batch's structure
(docs/ARCHITECTURE.md "Training batch") but a leading object axis M and ALL V views per object:
points [M,N,3], centers [M,G,3], groups [M,G,K], label [M], views/* [M,V,...], teacher/* [M,V,...];
floats may be stored narrower, e.g. the records' float16 teacher features, and are cast after the
gather. Each step samples its batch inside the jitted step (`sample`): `batch_size` distinct objects
and `views_per_step` distinct views per object, with keys that are a function of (run rng, step)
only (`step_key`), so a resumed run samples exactly what an uninterrupted one would, with no
iterator state. The augmentations are crossjepa.data.augment's jnp twin, i.e. the same geometry as
the grain pipeline's TrainTransform (rotation about up, scale + translation, clipped jitter); their
random draws differ from the host pipeline's (jax.random, not numpy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from crossjepa.data import augment as augment_lib

_SALT = 0x5EED   # folded into the run rng first: the sampling keys differ from the step's own


def step_key(rng, step):
  """The sampling key of a step: a function of the run rng (config.seed) and the step only."""
  return jax.random.fold_in(jax.random.fold_in(rng, _SALT), step)


def sample(dataset, key, *, batch_size: int, views_per_step: int, augment) -> dict:
  """One training batch (ARCHITECTURE.md "Training batch") sampled from a device-resident set.

  Args:
    dataset: the nested dict of the module docstring ([M, ...] per object, [M, V, ...] per view).
    key: PRNG key of this step (`step_key`).
    batch_size: B objects, drawn without replacement.
    views_per_step: Kv views per object, distinct (a per-row permutation: argsort of uniform noise).
    augment: config.train.augment (scale, translate, jitter, rotate_up) or an augment.Spec.
  """
  k_obj, k_view, k_rot, k_scale, k_shift, k_jit = jax.random.split(key, 6)
  num = dataset['points'].shape[0]
  num_views = dataset['views']['corr'].shape[1]
  idx = jax.random.choice(k_obj, num, (batch_size,), replace=False)                  # [B]
  pick = jnp.argsort(jax.random.uniform(k_view, (batch_size, num_views)), axis=1)
  pick = pick[:, :views_per_step]                                                     # [B,Kv]

  def per_object(x):
    return jnp.take(x, idx, axis=0)

  def per_view(x):
    return x[idx[:, None], pick]                                                      # [B,Kv,...]

  def as32(x):
    return x.astype(jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else jnp.int32)

  views = {k: as32(per_view(v)) for k, v in dataset['views'].items()}
  teacher = {k: as32(per_view(v)) for k, v in dataset['teacher'].items()}
  points = as32(per_object(dataset['points']))
  centers = as32(per_object(dataset['centers']))
  draw = augment_lib.draw_batch((k_rot, k_scale, k_shift, k_jit),
                                augment_lib.Spec.from_config(augment), points.shape)
  points, centers, views['world_to_cam'] = augment_lib.apply_batch(
      points, centers, views['world_to_cam'], draw)
  batch = {'points': points, 'centers': centers, 'groups': as32(per_object(dataset['groups'])),
           'views': views, 'teacher': teacher}
  if 'label' in dataset:
    batch['label'] = as32(per_object(dataset['label']))
  return batch
