"""--mode=teacher: the offline 2D teacher, a ViT trained on rendered views of a disjoint object set.

In real use the frozen teacher is a converted DINOv2 checkpoint (CrossJEPA, arXiv 2511.18424 §3).
Offline there are no pretrained weights, and a random ViT's CLS carries little geometry (DESIGN.md §8),
so this stage trains the configured ViT (`model.vit`, `model.vit_overrides`) on rendered views of the
source's `teacher` split — objects disjoint from the 3D pretraining and evaluation objects — and saves
it with `crossjepa.weights.vit_io.save` in the format a converted DINOv2 checkpoint has, so the prepare
stage's teacher cache reads either the same way. Two recipes (`teacher.train.kind`; models and masks
in crossjepa.training.teacher_models):

  * `supervised`: label-smoothed cross-entropy of a linear head on the teacher split's class labels,
    random horizontal flips and small shifts;
  * `ijepa`: label-free I-JEPA: the context encoder and predictor regress the layer-normed patch
    features that an EMA target ViT (stop-gradient) gives the full image, with a smooth-L1 (or MSE)
    loss. The EMA target ViT is what is saved (I-JEPA evaluates its target encoder).

Both train on the one train step of crossjepa.training.step (AdamW with linear warm-up + cosine
decay from the optimizer block `teacher.train`, the EMA of the ViT for ijepa), the batch sharded
over the device mesh. Batches are drawn on the host from a per-epoch permutation that is a pure
function of (seed, step). The views are rendered once and cached by crossjepa.data.teacher_views;
the teacher's own linear probe is crossjepa.evaluation.teacher_probe.
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from crossjepa import config_util
from crossjepa import imaging
from crossjepa.data import sources
from crossjepa.data import teacher_views
from crossjepa.training import losses
from crossjepa.training import mesh as mesh_lib
from crossjepa.training import step as step_lib
from crossjepa.training import teacher_models
from crossjepa.training.teacher_models import TeacherModels
from crossjepa.weights import vit_io

TEACHER_DIR = 'teacher'


# ============================================================================ losses


def supervised_loss(params, batch, rng, *, models: TeacherModels, tcfg):
  """Label-smoothed cross-entropy of a linear head on the CLS token of augmented views."""
  k_aug, k_drop = jax.random.split(rng)
  images = teacher_models.augment(imaging.normalize_images(batch['image']), k_aug,
                                  flip=bool(tcfg.augment_flip), shift=int(tcfg.augment_shift))
  out = models.vit.apply({'params': params['vit']}, images, train=True, rngs={'dropout': k_drop})
  logits = models.head.apply({'params': params['head']}, teacher_models.readout(out, tcfg.pool))
  one_hot = jax.nn.one_hot(batch['label'], logits.shape[-1])
  targets = optax.smooth_labels(one_hot, float(tcfg.label_smoothing))
  loss = optax.softmax_cross_entropy(logits, targets).mean()
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
  return loss, {'accuracy': accuracy}

def ijepa_loss(params, ema_vit_params, batch, rng, *, models: TeacherModels, tcfg):
  """I-JEPA: predict the EMA ViT's layer-normed target-block patches from the context patches."""
  k_aug, k_mask, k_drop = jax.random.split(rng, 3)
  images = teacher_models.augment(imaging.normalize_images(batch['image']), k_aug,
                                  flip=bool(tcfg.augment_flip), shift=int(tcfg.augment_shift))
  batch_size = images.shape[0]
  target_idx, context_idx = teacher_models.sample_masks(
      k_mask, batch_size, grid=models.grid, target_block=models.target_block,
      num_targets=models.num_targets, context_block=models.context_block,
      num_context=models.num_context)
  num_targets, area = target_idx.shape[1:]

  # Targets: the EMA ViT over the full image, layer-normed per patch (I-JEPA), no gradient.
  target_out = jax.lax.stop_gradient(models.vit.apply({'params': ema_vit_params}, images))
  target_patches = losses.layer_norm(target_out['patches'])
  flat_idx = target_idx.reshape(batch_size, num_targets * area)
  targets = jnp.take_along_axis(target_patches, flat_idx[..., None], axis=1)
  targets = targets.reshape(batch_size * num_targets, area, -1)

  out = models.vit.apply({'params': params['vit']}, images, keep_idx=context_idx, train=True,
                         rngs={'dropout': k_drop})
  # The CLS token joins the context so that it is trained too: the teacher cache reads the CLS.
  context = jnp.concatenate([out['cls'][:, None], out['patches']], axis=1)
  # One predictor pass per target block (as the reference): the context is repeated per block.
  context = jnp.repeat(context, num_targets, axis=0)
  queries = teacher_models.patch_positions(target_idx, models.grid).reshape(batch_size * num_targets, area, 2)
  pred = models.predictor.apply({'params': params['predictor']}, context, query_pos=queries)
  if tcfg.ijepa.loss == 'smooth_l1':
    loss = optax.huber_loss(pred, targets, delta=1.0).mean()   # = torch smooth_l1 (beta 1)
  else:
    loss = jnp.mean((pred - targets) ** 2)
  # A collapsing target encoder shows as a vanishing spread of its raw features over the batch.
  return loss, {'target_std': jnp.mean(jnp.std(target_out['cls'], axis=0))}


def _loss_fn(models: TeacherModels, tcfg):
  """The step's loss(params, ema_params, batch, rng) of the configured kind."""
  if models.kind == 'supervised':
    return lambda params, ema, batch, rng: supervised_loss(params, batch, rng, models=models,
                                                           tcfg=tcfg)
  return functools.partial(ijepa_loss, models=models, tcfg=tcfg)


# ============================================================================ fitting


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Indices of the global batch at `step`: consecutive slices of per-epoch permutations."""
  positions = step * batch_size + np.arange(batch_size)
  epochs = positions // num_examples
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([int(seed), 17, int(epoch)]).permutation(num_examples)
    sel = epochs == epoch
    out[sel] = perm[positions[sel] % num_examples]
  return out


def _mesh(config, batch_size: int):
  devices = jax.devices()
  count = len(devices)
  if batch_size % count:
    # Use the most devices the batch divides over rather than fail on small test batches.
    count = max(n for n in range(1, count + 1) if batch_size % n == 0 and len(devices) % n == 0)
    logging.warning('teacher.train.batch_size=%d does not divide over %d devices; using %d',
                    batch_size, len(devices), count)
    return mesh_lib.data_mesh(devices[:count])
  return mesh_lib.make_mesh(config, devices)


def fit(config, images: np.ndarray, labels: np.ndarray, num_classes: int, *,
        log_fn: Callable[[int, dict], None] | None = None):
  """Trains the teacher recipe on flat views (images u8 [n,H,W,3], labels [n]).

  Returns (state, models, history) where history is a list of (step, metrics dict) at the log
  steps; raises FloatingPointError on a non-finite loss.
  """
  t = config.teacher.train
  models = teacher_models.build_models(config, num_classes)
  batch_size, steps = int(t.batch_size), int(t.steps)
  mesh = _mesh(config, batch_size)
  size = int(config.data.image_size)
  seed = int(config.seed)
  ema = (step_lib.Ema(lambda params: params['vit'], tuple(float(m) for m in t.ijepa.ema_momentum))
         if models.kind == 'ijepa' else None)
  rng = jax.random.PRNGKey(seed)
  init_rng, step_rng = jax.random.split(jax.random.fold_in(rng, 0x7EAC))
  state, state_sh = step_lib.init_state(
      lambda r: teacher_models.init_params(models, r, size), t, mesh, init_rng,
      param_rules=config.train.param_rules, ema=ema)
  step_fn = step_lib.make_train_step(_loss_fn(models, t), t, mesh, state_sh, ema=ema)
  batch_sh = mesh_lib.batch_sharding(mesh)
  log_every = int(t.log_every)
  procs, proc = jax.process_count(), jax.process_index()
  history = []
  for step in range(steps):
    idx = batch_indices(seed, step, len(images), batch_size)
    local = idx.reshape(procs, -1)[proc]   # each host feeds its own rows of the global batch
    batch = {'image': images[local], 'label': labels[local].astype(np.int32)}
    state, metrics = step_fn(state, mesh_lib.global_batch(batch, batch_sh), step_rng)
    if (step + 1) % log_every == 0 or step + 1 == steps or step == 0:
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not math.isfinite(metrics['loss']):
        raise FloatingPointError(f'teacher ({models.kind}): non-finite loss {metrics["loss"]} at step '
                                 f'{step}; lower teacher.train.lr or check the views')
      history.append((step + 1, metrics))
      if log_fn:
        log_fn(step + 1, metrics)
  return state, models, history


def classify(models: TeacherModels, params, images: np.ndarray, batch_size: int) -> np.ndarray:
  """Predicted classes of the supervised teacher (no augmentation), fixed-size padded chunks."""
  def predict(params, images):
    out = models.vit.apply({'params': params['vit']}, imaging.normalize_images(images))
    logits = models.head.apply({'params': params['head']}, teacher_models.readout(out, models.pool))
    return jnp.argmax(logits, -1)

  fn = jax.jit(predict)
  preds = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)])
    preds.append(np.asarray(fn(params, chunk))[:real])
  return np.concatenate(preds)


# ============================================================================ stage entry points


def teacher_name(config) -> str:
  return f'offline-{config.teacher.train.kind}-{config.model.vit}'


def train_fingerprint(config) -> str:
  """Everything that determines the trained teacher (its training config, model, views, seed)."""
  data = teacher_views.render_settings(teacher_views.teacher_data_config(config))
  to_dict = config_util.as_dict
  return teacher_views.config_hash({
      'teacher.train': to_dict(config.teacher.train), 'vit': config.model.vit,
      'vit_overrides': to_dict(config.model.vit_overrides), 'data': data,
      'seed': int(config.seed), 'param_rules': to_dict({'r': config.train.param_rules})})


def train_teacher(config, workdir: str) -> dict[str, Any]:
  """Renders the teacher split once, trains the teacher, saves its ViT to WORKDIR/teacher.

  A teacher already saved there by the same config (same fingerprint) is reused; one saved by a
  different config is an error (delete the folder or use another workdir), never silently replaced.
  Returns dict(teacher, kind, steps, seconds, final_loss, train_accuracy (supervised), reused, ...).
  """
  teacher_models.build_models(config, 2)   # checks teacher.train's model settings before rendering
  out_dir = os.path.join(workdir, TEACHER_DIR)
  if os.path.exists(os.path.join(out_dir, vit_io.CONFIG_FILE)):
    info = vit_io.load_info(out_dir)
    if info.get('train_fingerprint') != train_fingerprint(config):
      raise ValueError(f'{out_dir} holds a teacher ({info.get("name")!r}) trained with a different '
                       'config (teacher.train / model.vit / data); delete it or use another workdir')
    logging.info('teacher: reusing %s', out_dir)
    return {'teacher': out_dir, 'reused': True, **info.get('train_result', {})}
  result, _, _ = train_and_save(config, workdir)
  return result


def train_and_save(config, workdir: str):
  """train_teacher without the reuse check -> (result dict, final TrainState, TeacherModels)."""
  t = config.teacher.train
  out_dir = os.path.join(workdir, TEACHER_DIR)
  fingerprint = train_fingerprint(config)
  data_config = teacher_views.teacher_data_config(config)
  split = str(t.split)
  start = time.time()
  views = teacher_views.render_split(config, workdir, split, data_config=data_config)
  render_seconds = time.time() - start
  n, v = views['images'].shape[:2]
  images = views['images'].reshape((n * v,) + views['images'].shape[2:])
  labels = np.repeat(views['labels'], v)
  classes = sources.class_names(data_config)
  if t.kind == 'supervised':
    if labels.min() < 0 or labels.max() >= len(classes):
      raise ValueError(f'supervised teacher: split {split!r} of {data_config.source!r} has labels '
                       f'outside [0, {len(classes)}) (unlabelled objects?); use teacher.train.kind='
                       '"ijepa"')
  else:
    labels = np.zeros_like(labels)   # label-free: the labels never reach the loss

  def log_fn(step, metrics):
    logging.info('teacher %s step %d/%d: %s', t.kind, step, int(t.steps),
                 ', '.join(f'{k}={v:.4g}' for k, v in sorted(metrics.items())))

  train_start = time.time()
  state, models, history = fit(config, images, labels, len(classes), log_fn=log_fn)
  train_seconds = time.time() - train_start
  params = jax.device_get(state.params['vit'] if t.kind == 'supervised' else state.ema_params)
  result = {'kind': str(t.kind), 'steps': int(t.steps), 'objects': int(n), 'views': int(n * v),
            'final_loss': history[-1][1]['loss'], 'render_seconds': round(render_seconds, 2),
            'train_seconds': round(train_seconds, 2),
            'loss_curve': [(s, m['loss']) for s, m in history]}
  if t.kind == 'supervised':
    preds = classify(models, jax.device_get(state.params), images, int(t.batch_size))
    result['train_accuracy'] = float(np.mean(preds == labels))
  else:
    result.update(target_block=list(models.target_block), num_targets=models.num_targets,
                  num_context=models.num_context, saved_params='ema (target encoder)')
  result['seconds'] = round(time.time() - start, 2)
  extra = {'name': teacher_name(config), 'variant': config.model.vit,
           'image_size': int(config.data.image_size), 'kind': str(t.kind), 'classes': list(classes),
           'source': f'crossjepa --mode=teacher ({data_config.source} split {split!r})',
           'train_fingerprint': fingerprint, 'train_result': result}
  vit_io.save(out_dir, models.vit, params, extra=extra)
  logging.info('teacher: saved %s (%s) in %.1f s, final loss %.4f%s', out_dir, extra['name'],
               result['seconds'], result['final_loss'],
               f", train accuracy {result['train_accuracy']:.3f}" if 'train_accuracy' in result else '')
  return {'teacher': out_dir, 'reused': False, **result}, state, models
