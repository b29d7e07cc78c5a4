"""The training augmentation geometry, defined once: a numpy twin per example, a jnp twin per batch.

Augmentations and the 2D-3D pairing. The correspondence map is by group index (group g <-> patch
corr[v, g]) and the teacher targets are cached per view, so any transform of the points leaves the
targets correct; only the pose conditioning (`views/world_to_cam`) refers to the world frame, and it
is kept consistent with the transformed points. Applied in this order:
  * rotation R about the up axis (the renderer's world is y-up): points, centres rotated,
    world_to_cam' = world_to_cam @ R^-1, so every point projects to the same pixel as before;
  * uniform scale s and translation t (x' = s x + t):
    world_to_cam' = [[R_c, s t_c - R_c t], [0, 1]], a rigid pose whose camera coordinates are s
    times the old ones, so the perspective projection (and the image) is unchanged — the camera
    moves with the object;
  * jitter (Gaussian noise of std sigma, clipped at JITTER_CLIP * sigma) on the points only: the
    centres stay the exact group references (Point-MAE re-centres groups on their centres).

Drawing the random parameters (a `Draw`) is separate from applying the geometry:
  * numpy, one example (crossjepa.data.pipeline.TrainTransform): `draw_example(rng, spec,
    points_shape)` with a numpy Generator, then `apply_example(points, centers, world_to_cam, draw)`
    on points [N,3], centres [G,3], world_to_cam [V,4,4] (float64 in the pipeline);
  * jnp, a batch (crossjepa.data.resident): `draw_batch(keys, spec, points_shape)` with jax.random,
    then `apply_batch(points, centers, world_to_cam, draw)` on [B,N,3], [B,G,3], [B,V,4,4]
    (float32).
The two twins share the rotation matrix (`rotation_about_up`) and the jitter (`add_jitter`); their
matrix products are written per twin (numpy matmul per example, jnp einsum per batch) so that each
path's numerics stay what they have always been. Their random draws differ (numpy vs jax.random).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

UP_AXIS = 1                 # crossjepa.data.render renders a y-up world; the rotation keeps y
JITTER_CLIP = 5.0           # jitter noise clipped at this many standard deviations


@dataclasses.dataclass(frozen=True)
class Spec:
  """What to augment: config.train.augment's fields (scale (lo, hi); lo == hi: a fixed scale)."""
  rotate_up: bool
  scale: tuple[float, float]
  translate: float
  jitter: float

  @classmethod
  def from_config(cls, augment) -> Spec:
    """From config.train.augment (or anything with its four fields, a Spec included)."""
    lo, hi = (float(x) for x in augment.scale)
    return cls(rotate_up=bool(augment.rotate_up), scale=(lo, hi),
               translate=float(augment.translate), jitter=float(augment.jitter))


class Draw(NamedTuple):
  """One draw of the augmentation parameters; None (or sigma 0) leaves that step out.

  numpy twin: angle float, scale float, shift [3], noise [N,3]; jnp twin: [B], [B], [B,3], [B,N,3].
  `scale` and `shift` are both set or both None. `noise` is sigma x standard normal, unclipped.
  """
  angle: Any = None
  scale: Any = None
  shift: Any = None
  noise: Any = None
  sigma: float = 0.0


# ------------------------------------------------------------------------------------- shared
def rotation_about_up(angle):
  """[..., 3, 3] rotation by `angle` radians about the world up axis (y); numpy or jnp like `angle`.

  A Python / numpy angle gives a float64 numpy matrix, a jax array angle [...] a jnp one.
  """
  xp = jnp if isinstance(angle, jax.Array) else np
  c, s = xp.cos(angle), xp.sin(angle)
  zero, one = xp.zeros_like(angle), xp.ones_like(angle)
  rows = [xp.stack([c, zero, s], -1), xp.stack([zero, one, zero], -1),
          xp.stack([-s, zero, c], -1)]
  return xp.stack(rows, -2)


def add_jitter(points, noise, sigma: float):
  """points + noise clipped at +-JITTER_CLIP * sigma (numpy or jnp, any leading shape)."""
  xp = jnp if isinstance(points, jax.Array) or isinstance(noise, jax.Array) else np
  return points + xp.clip(noise, -JITTER_CLIP * sigma, JITTER_CLIP * sigma)


# ------------------------------------------------------------------------------------- numpy twin
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


def draw_example(rng: np.random.Generator, spec: Spec, points_shape) -> Draw:
  """The parameters for one example, drawn from `rng` in the order angle, scale, shift, noise.

  scale/shift are None when they would do nothing (scale 1 and no translation).
  """
  angle = rng.uniform(0.0, 2 * np.pi) if spec.rotate_up else None
  lo, hi = spec.scale
  scale = rng.uniform(lo, hi) if lo != hi else lo
  shift = rng.uniform(-spec.translate, spec.translate, 3) if spec.translate else np.zeros(3)
  if not (scale != 1.0 or spec.translate):
    scale = shift = None
  noise = rng.normal(0.0, spec.jitter, points_shape) if spec.jitter else None
  return Draw(angle=angle, scale=scale, shift=shift, noise=noise, sigma=spec.jitter)


def _apply(points, centers, world_to_cam, draw: Draw, rotate, scale_translate):
  """The augmentation order shared by the twins: rotation, scale + translation, jitter."""
  if draw.angle is not None:
    points, centers, world_to_cam = rotate(points, centers, world_to_cam,
                                           rotation_about_up(draw.angle))
  if draw.scale is not None:
    points, centers, world_to_cam = scale_translate(points, centers, world_to_cam, draw.scale,
                                                    draw.shift)
  if draw.noise is not None:
    points = add_jitter(points, draw.noise, draw.sigma)
  return points, centers, world_to_cam


def apply_example(points, centers, world_to_cam, draw: Draw):
  """(points [N,3], centers [G,3], world_to_cam [V,4,4]) of one example, augmented by `draw`."""
  return _apply(points, centers, world_to_cam, draw, rotate_example, scale_translate_example)


# ------------------------------------------------------------------------------------- jnp twin
def rotate_batch(points, centers, world_to_cam, rotation):
  """rotate_example per row: points [B,N,3], centers [B,G,3], world_to_cam [B,V,4,4], R [B,3,3]."""
  batch = rotation.shape[0]
  points = jnp.einsum('bnj,bij->bni', points, rotation)                              # R x
  centers = jnp.einsum('bnj,bij->bni', centers, rotation)
  rot4 = jnp.zeros((batch, 4, 4), jnp.float32).at[:, 3, 3].set(1.0)
  rot4 = rot4.at[:, :3, :3].set(jnp.swapaxes(rotation, -1, -2))                      # R^-1 = R^T
  return points, centers, jnp.einsum('bkij,bjl->bkil', world_to_cam, rot4)


def scale_translate_batch(points, centers, world_to_cam, scale, shift):
  """scale_translate_example per row: scale [B], shift [B,3]."""
  rot_c, t_c = world_to_cam[..., :3, :3], world_to_cam[..., :3, 3]
  t_new = scale[:, None, None] * t_c - jnp.einsum('bkij,bj->bki', rot_c, shift)
  world_to_cam = world_to_cam.at[..., :3, 3].set(t_new)
  points = points * scale[:, None, None] + shift[:, None]
  centers = centers * scale[:, None, None] + shift[:, None]
  return points, centers, world_to_cam


def draw_batch(keys, spec: Spec, points_shape) -> Draw:
  """The parameters for a batch (points_shape = [B,N,3]); keys = (k_rot, k_scale, k_shift, k_jit).

  scale/shift are None when the spec can do nothing (scale fixed at 1, no translation).
  """
  k_rot, k_scale, k_shift, k_jit = keys
  batch = points_shape[0]
  angle = (jax.random.uniform(k_rot, (batch,), maxval=2 * jnp.pi) if spec.rotate_up else None)
  lo, hi = spec.scale
  translate = spec.translate
  scale = shift = None
  if lo != hi or lo != 1.0 or translate:
    scale = (jax.random.uniform(k_scale, (batch,), minval=lo, maxval=hi) if lo != hi
             else jnp.full((batch,), lo, jnp.float32))
    shift = (jax.random.uniform(k_shift, (batch, 3), minval=-translate, maxval=translate)
             if translate else jnp.zeros((batch, 3), jnp.float32))
  noise = spec.jitter * jax.random.normal(k_jit, points_shape) if spec.jitter else None
  return Draw(angle=angle, scale=scale, shift=shift, noise=noise, sigma=spec.jitter)


def apply_batch(points, centers, world_to_cam, draw: Draw):
  """apply_example per row: points [B,N,3], centers [B,G,3], world_to_cam [B,V,4,4] (jnp)."""
  return _apply(points, centers, world_to_cam, draw, rotate_batch, scale_translate_batch)


# ------------------------------------------------------------------------------------- fine-tuning
def per_axis_scale_translate(points: jax.Array, rng: jax.Array, scale: tuple[float, float],
                            translate: float) -> jax.Array:
  """Fine-tuning's augmentation (Point-MAE's PointcloudScaleAndTranslate), jnp: points [B,N,3] ->
  per-object, per-axis scale U(scale) and translation U(-translate, translate). Per-axis scaling
  changes nearest neighbours, so the caller regroups; no pose is involved."""
  b = points.shape[0]
  k1, k2 = jax.random.split(rng)
  s = jax.random.uniform(k1, (b, 1, 3), minval=scale[0], maxval=scale[1])
  t = jax.random.uniform(k2, (b, 1, 3), minval=-translate, maxval=translate)
  return points * s + t
