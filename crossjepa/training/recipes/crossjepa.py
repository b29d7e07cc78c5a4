"""The `crossjepa` recipe (CrossJEPA, arXiv 2511.18424, section 3).

A point encoder reads each object once; a predictor, given the point tokens plus one rendered
view's camera pose and colour histogram, predicts the frozen image teacher's cached embedding of
that view. K = train.views_per_step views share the encoder pass (the tokens are tiled K times over
the batch axis). Target 'cls': the view's CLS embedding, one global query per view. Target
'groups': the teacher's patch feature at each group centre (via the 2D<->3D correspondence map),
one query per group at the group centre; occluded groups (corr = -1) are masked out of the loss.
Target 'object': a linear head on the pooled tokens predicts the view-averaged CLS. No EMA is
needed by the method; `ema_params` still carries a Polyak average of the student for evaluation.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from crossjepa.training import losses
from crossjepa.training.recipes.models import Models


def point_inputs(batch):
  """(points, centers, groups) of a training batch."""
  return batch['points'], batch['centers'], batch['groups']


def init_student(models: Models, rng, batch):
  """The student point encoder's params and its tokens of `batch` (every recipe's first init)."""
  points, centers, groups = point_inputs(batch)
  student = models.point.init(rng, points, centers, groups)['params']
  return student, models.point.apply({'params': student}, points, centers, groups)['tokens']


def _flat_views(x: jax.Array) -> jax.Array:
  """[B,K,...] -> [B*K,...] (b-major, matching jnp.repeat(tokens, K, axis=0))."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def init_params(config, rng, example_batch, models: Models):
  batch = jax.tree.map(lambda x: x[:1], example_batch)
  k_point, k_pred = jax.random.split(rng)
  student, tokens = init_student(models, k_point, batch)
  centers = batch['centers']
  views = batch['views']
  if config.train.target == 'object':
    return {'student': student, 'predictor': models.predictor.init(k_pred, tokens)['params']}
  kwargs = _conditioning(config, views, 0)
  if config.train.target == 'groups':
    kwargs['query_pos'] = centers
  predictor = models.predictor.init(k_pred, tokens, **kwargs)['params']
  return {'student': student, 'predictor': predictor}


def _conditioning(config, views, k: Optional[int]):
  """world_to_cam / hist of view k ([B,...]), or of all views flattened (k None)."""
  take = (lambda x: x[:, k]) if k is not None else _flat_views
  out = {}
  if config.train.condition_pose:
    out['world_to_cam'] = take(views['world_to_cam'])
  if config.train.condition_hist:
    out['hist'] = take(views['hist'])
  return out


def loss_fn(params, ema_params, batch, rng, *, config, models: Models):
  del ema_params
  points, centers, groups = point_inputs(batch)
  # One encoder pass per object, shared by its K views.
  tokens = models.point.apply({'params': params['student']}, points, centers, groups, train=True,
                              rngs={'dropout': jax.random.fold_in(rng, 0)})['tokens']
  views = batch['views']
  num_views = views['world_to_cam'].shape[1]
  context = jnp.repeat(tokens, num_views, axis=0)                       # [B*K,G,D]
  kwargs = _conditioning(config, views, None)
  rngs = {'dropout': jax.random.fold_in(rng, 1)}
  if config.train.target == 'object':
    target = batch['teacher']['cls'].astype(jnp.float32).mean(axis=1)   # [B,Dt]
    pred = models.predictor.apply({'params': params['predictor']}, tokens)
    weights = jnp.ones(target.shape[:-1], jnp.float32)
  elif config.train.target == 'cls':
    target = batch['teacher']['cls'].astype(jnp.float32)                # [B,K,Dt]
    pred = models.predictor.apply({'params': params['predictor']}, context, num_queries=1,
                                  train=True, rngs=rngs, **kwargs)
    pred = pred.reshape(target.shape)
    weights = jnp.ones(target.shape[:-1], jnp.float32)
  else:
    target = batch['teacher']['groups'].astype(jnp.float32)             # [B,K,G,Dt]
    query_pos = jnp.repeat(centers, num_views, axis=0)                  # [B*K,G,3]
    pred = models.predictor.apply({'params': params['predictor']}, context, query_pos=query_pos,
                                  train=True, rngs=rngs, **kwargs)
    pred = pred.reshape(target.shape)
    weights = (views['corr'] >= 0).astype(jnp.float32)                  # [B,K,G]
  if config.train.standardize_target == 'batch':
    target = losses.batch_standardize(target, weights)
  if config.train.normalize_target:
    target = losses.layer_norm(target)
  target = jax.lax.stop_gradient(target)
  per_entry = losses.elementwise_loss(pred, target, config.train.loss)
  loss = losses.masked_mean(per_entry, weights)
  aux = {'pred_std': losses.batch_std(pred, weights),
         'target_std': losses.batch_std(target, weights),
         'valid_fraction': jnp.mean(weights)}
  return loss, aux
