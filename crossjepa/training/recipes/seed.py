"""The `seed` recipe: the design card's reverse direction (2D context -> 3D targets).

A trainable ViT embeds one rendered view; a predictor reads its patch tokens (+ pose, histogram)
and is queried at the group centres that are visible in that view; targets are the EMA point
encoder's tokens of those groups (stop-gradient, layer-normed when train.normalize_target), masked
by visibility. A local in-modal loss (the point_jepa loss on the same batch and the same EMA
targets, weight train.seed_local_weight) trains the student point encoder, whose EMA gives the
targets. The ViT starts from model.vit_init (a folder written by crossjepa.weights.vit_io.save: a
converted DINOv2 or an offline teacher) or, when that is '', from random init.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from crossjepa.training import losses
from crossjepa.training.recipes import point_jepa
from crossjepa.training.recipes.crossjepa import init_student
from crossjepa.training.recipes.models import Models, load_vit_params


def _view_conditioning(config, view) -> dict:
  """The predictor's pose / histogram inputs of the picked view (as configured)."""
  kwargs = {}
  if config.train.condition_pose:
    kwargs['world_to_cam'] = view['world_to_cam']
  if config.train.condition_hist:
    kwargs['hist'] = view['hist']
  return kwargs


def _pick_view(rng, views, batch_size: int):
  """One random view per object: every views/* leaf [B,K,...] -> [B,...]."""
  num_views = views['corr'].shape[1]
  k = jax.random.randint(rng, (batch_size,), 0, num_views)

  def take(x):
    idx = k.reshape((batch_size, 1) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)[:, 0]

  return jax.tree.map(take, views)


def init_params(config, rng, example_batch, models: Models):
  batch = jax.tree.map(lambda x: x[:1], example_batch)
  k_point, k_vit, k_pred, k_local = jax.random.split(rng, 4)
  student, tokens = init_student(models, k_point, batch)
  centers = batch['centers']
  view = jax.tree.map(lambda x: x[:, 0], batch['views'])
  init_dir = str(config.model.vit_init)
  if not init_dir:
    vit_params = models.vit.init(k_vit, view['image'].astype(jnp.float32))['params']
  else:
    # Trainable context encoder initialised from a converted / offline-trained ViT (the saved
    # params become constants of the jitted init).
    loaded = load_vit_params(os.path.abspath(init_dir))   # checked against models.vit in build_models
    vit_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), loaded)
  patches = models.vit.apply({'params': vit_params}, view['image'].astype(jnp.float32))['patches']
  kwargs = _view_conditioning(config, view)
  predictor = models.predictor.init(k_pred, patches, query_pos=centers, **kwargs)['params']
  local = models.local_predictor.init(k_local, tokens, query_pos=centers)['params']
  return {'student': student, 'vit': vit_params, 'predictor': predictor, 'local_predictor': local}


def loss_fn(params, ema_params, batch, rng, *, config, models: Models):
  centers = batch['centers']
  b = centers.shape[0]
  k_view, k_vit, k_pred, k_local = jax.random.split(rng, 4)
  targets = point_jepa.target_tokens(models, ema_params, batch, config)   # [B,G,D], EMA
  view = _pick_view(k_view, batch['views'], b)
  patches = models.vit.apply({'params': params['vit']}, view['image'].astype(jnp.float32),
                             train=True, rngs={'dropout': k_vit})['patches']
  kwargs = _view_conditioning(config, view)
  pred = models.predictor.apply({'params': params['predictor']}, patches, query_pos=centers,
                                train=True, rngs={'dropout': k_pred}, **kwargs)   # [B,G,D]
  weights = (view['corr'] >= 0).astype(jnp.float32)                     # visible groups only
  cross = losses.masked_mean(losses.elementwise_loss(pred, targets, config.train.loss), weights)
  local, local_aux = point_jepa.in_modal_loss(params['student'], params['local_predictor'],
                                              models.local_predictor, models, batch, targets,
                                              k_local, config)
  loss = cross + float(config.train.seed_local_weight) * local
  aux = {'cross_loss': cross, 'local_loss': local, 'pred_std': losses.batch_std(pred, weights),
         'target_std': losses.batch_std(targets, weights), 'valid_fraction': jnp.mean(weights),
         'local_pred_std': local_aux['pred_std']}
  return loss, aux
