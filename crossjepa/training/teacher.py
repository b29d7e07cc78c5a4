"""--mode=teacher: the offline 2D teacher, a ViT trained on rendered views of a disjoint object set.

In real use the frozen teacher is a converted DINOv2 checkpoint (CrossJEPA, arXiv 2511.18424 §3).
Offline there are no pretrained weights, and a random ViT's CLS carries little geometry (DESIGN.md §8),
so this stage trains the configured ViT (`model.vit`, `model.vit_overrides`) on rendered views of the
source's `teacher` split — objects disjoint from the 3D pretraining and evaluation objects — and saves
it with `crossjepa.models.vit.save` in the format a converted DINOv2 checkpoint has, so the prepare
stage's teacher cache reads either the same way. Two recipes (`teacher.train.kind`):

  * `supervised`: ViT + a zero-initialised linear head on the CLS token, label-smoothed cross-entropy
    on the teacher split's class labels, random horizontal flips and small shifts;
  * `ijepa`: label-free I-JEPA (Assran et al. 2023, facebookresearch/ijepa): a context encoder (the
    ViT over the context patches only, `keep_idx`) and a predictor (`crossjepa.models.predictor`,
    query_dim=2, queried at the normalised (row, col) of each target patch, one pass per target
    block as in the reference) regress the layer-normed patch features that an EMA target ViT
    (stop-gradient) gives the full image, with a smooth-L1 (or MSE) loss. Masks have fixed shapes
    (static for jit): `num_targets` rectangular blocks of a fixed area with a random orientation and
    position, and a context of a fixed number of non-target patches, chosen first inside a random
    context block (I-JEPA's context block minus the targets). The EMA target ViT is what is saved
    (I-JEPA evaluates its target encoder).

Both use AdamW with linear warm-up + cosine decay, the EMA momentum schedule and `TrainState` of
`crossjepa.training.state`, and one module-level jitted `train_step` whose batch is sharded over the
device mesh of `crossjepa.training.step.make_mesh`. Batches are drawn on the host from a per-epoch
permutation that is a pure function of (seed, step).

The views are rendered once with `crossjepa.data.prepare.render_views` (the same seeds as prepare)
and cached in WORKDIR/teacher_views/<split>-<fingerprint>.npz. `teacher_probe` gives the teacher's
own linear-probe accuracy on the evaluation objects' views (CLS averaged over views), the 2D ceiling
that transfer to 3D is measured against.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing
import os
import time
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from crossjepa import fileio
from crossjepa.models import predictor as predictor_lib
from crossjepa.models import vit as vit_lib
from crossjepa.training import state as state_lib
from crossjepa.training import step as step_lib

KINDS = ('supervised', 'ijepa')
LOSSES = ('smooth_l1', 'mse')
VIEWS_DIR = 'teacher_views'
TEACHER_DIR = 'teacher'
VIEWS_FORMAT = 'crossjepa.teacher_views/1'
# data.* keys that do not change a rendered view (so changing them does not re-render)
_NON_RENDER_KEYS = ('shards', 'num_workers', 'file_format', 'name', 'keep_images', 'num_groups',
                    'group_size', 'depth_tolerance', 'pretrain_splits', 'eval_train_split',
                    'eval_test_split', 'teacher_chunk')


def _fingerprint(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _to_dict(cfg) -> dict:
  return cfg.to_dict() if isinstance(cfg, ml_collections.ConfigDict) else dict(cfg or {})


# ============================================================================ views


def teacher_data_config(config) -> ml_collections.ConfigDict:
  """config.data with the teacher's source (`teacher.train.source`, '' = data.source)."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  source = config.teacher.train.source or config.data.source
  data.source = source
  return data


def _render_task(task):
  from crossjepa.data import prepare  # pylint: disable=g-import-not-at-top
  shape, data_config, seed = task
  views = prepare.render_views(shape, data_config, seed)
  return str(shape.id), int(shape.label), views['image']


def render_split(config, workdir: str, split: str, *, data_config=None) -> dict[str, np.ndarray]:
  """Renders (or reads back) every object's views of one split.

  Returns dict(images u8 [n,V,H,W,3], labels i64 [n], ids str [n]). Views are identical to those
  the prepare stage renders for the same object (same seed from (config.seed, object id)). Cached
  as WORKDIR/teacher_views/<split>-<fingerprint>.npz, written atomically; the fingerprint covers
  every data.* key that changes a view, so a changed config renders afresh.
  """
  from crossjepa.data import prepare  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  data_config = data_config if data_config is not None else config.data
  data_dict = {k: v for k, v in _to_dict(data_config).items() if k not in _NON_RENDER_KEYS}
  key = _fingerprint({'format': VIEWS_FORMAT, 'seed': int(config.seed), 'split': split,
                      'data': data_dict})[:16]
  path = os.path.join(workdir, VIEWS_DIR, f'{split.replace("/", "_")}-{key}.npz')
  size, num_views = int(data_config.image_size), int(data_config.num_views)
  if os.path.isfile(path):
    with np.load(path, allow_pickle=False) as f:
      out = {'images': f['images'], 'labels': f['labels'], 'ids': f['ids']}
    if out['images'].shape[1:] != (num_views, size, size, 3) or out['images'].dtype != np.uint8:
      raise ValueError(f'{path}: images are {out["images"].dtype} {out["images"].shape}, expected '
                       f'uint8 [n,{num_views},{size},{size},3]; delete the file to re-render')
    logging.info('teacher views: read %d objects of split %r from %s', len(out['ids']), split, path)
    return out

  start = time.time()
  shapes = sources.iter_shapes(data_config, split)
  tasks = ((s, data_config, prepare.object_seed(config.seed, s.id)) for s in shapes)
  workers = int(data_config.num_workers)
  if workers > 0:
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      rendered = list(pool.imap(_render_task, tasks, chunksize=8))
  else:
    rendered = [_render_task(t) for t in tasks]
  if not rendered:
    raise ValueError(f'split {split!r} of data.source={data_config.source!r} has no objects; the '
                     'teacher needs some (data.synthetic.teacher_per_class for synthetic)')
  out = {'images': np.stack([r[2] for r in rendered]).astype(np.uint8),
         'labels': np.asarray([r[1] for r in rendered], np.int64),
         'ids': np.asarray([r[0] for r in rendered])}
  fileio.atomic_save_npz(path, out)
  logging.info('teacher views: rendered %d objects x %d views of split %r in %.1f s -> %s',
               len(out['ids']), num_views, split, time.time() - start, path)
  return out


# ============================================================================ config


def optim_config(config) -> ml_collections.ConfigDict:
  """The teacher.train keys in the shape `crossjepa.training.state` expects of a train config.

  Parameter rules (no weight decay on norms, biases, position embedding, CLS) are the pretraining
  ones, `train.param_rules`: the same regexes fit the ViT/head/predictor parameter names.
  """
  t = config.teacher.train
  if t.kind not in KINDS:
    raise ValueError(f'config.teacher.train.kind = {t.kind!r}; expected one of {list(KINDS)}')
  for key in ('steps', 'batch_size', 'lr'):
    if not t[key] > 0:
      raise ValueError(f'config.teacher.train.{key} = {t[key]!r}; expected a positive number')
  if t.ijepa.loss not in LOSSES:
    raise ValueError(f'config.teacher.train.ijepa.loss = {t.ijepa.loss!r}; expected one of {list(LOSSES)}')
  return ml_collections.ConfigDict({
      'steps': int(t.steps), 'lr': float(t.lr), 'min_lr': float(t.min_lr),
      'warmup_steps': int(min(t.warmup_steps, t.steps)), 'weight_decay': float(t.weight_decay),
      'b1': float(t.b1), 'b2': float(t.b2), 'grad_clip': float(t.grad_clip),
      'ema_momentum': tuple(t.ijepa.ema_momentum),
      'param_rules': tuple(config.train.param_rules),
  })


# ============================================================================ models


@dataclasses.dataclass(frozen=True)
class TeacherModels:
  """The modules of one teacher recipe (bound statically into the jitted step)."""
  kind: str
  vit: vit_lib.ViT
  head: nn.Module | None = None              # supervised: linear classifier on the CLS
  predictor: nn.Module | None = None         # ijepa
  grid: int = 0                              # patches per side
  target_block: tuple[int, int] = (0, 0)     # ijepa: (rows, cols) of every target block
  num_targets: int = 0
  context_block: int = 0                     # side of the context block (patches)
  num_context: int = 0                       # context patches fed to the context encoder
  pool: str = 'cls'                          # supervised: the head's input (see _readout)


def block_shape(grid: int, scale: float, aspect: float) -> tuple[int, int]:
  """(rows, cols) of a block covering about `scale` of a grid x grid patch grid, rows/cols = aspect."""
  if not 0 < scale <= 1 or aspect <= 0:
    raise ValueError(f'config.teacher.train.ijepa: need 0 < target_scale <= 1 and target_aspect > 0, '
                     f'got {scale}, {aspect}')
  area = scale * grid * grid
  rows = int(np.clip(round(math.sqrt(area * aspect)), 1, grid))
  cols = int(np.clip(round(math.sqrt(area / aspect)), 1, grid))
  return rows, cols


def build_models(config, num_classes: int) -> TeacherModels:
  t = config.teacher.train
  overrides = _to_dict(config.model.vit_overrides)
  module = vit_lib.vit(config.model.vit, **overrides)
  size = int(config.data.image_size)
  if size % module.patch_size:
    raise ValueError(f'config.data.image_size = {size} is not a multiple of the ViT patch size '
                     f'{module.patch_size}')
  grid = size // module.patch_size
  if t.kind == 'supervised':
    if num_classes < 2:
      raise ValueError(f'supervised teacher: the teacher split has {num_classes} class(es); need >= 2')
    head = nn.Dense(num_classes, kernel_init=nn.initializers.zeros, name='head')
    if t.pool not in POOLS:
      raise ValueError(f'config.teacher.train.pool = {t.pool!r}; expected one of {list(POOLS)}')
    return TeacherModels('supervised', module, head=head, grid=grid, pool=str(t.pool))
  ij = t.ijepa
  block = block_shape(grid, float(ij.target_scale), float(ij.target_aspect))
  num_targets = int(ij.num_targets)
  patches = grid * grid
  # A fixed context size that is always available: the patches no target can cover however the
  # blocks fall (targets may overlap, leaving more; the extra are simply not used).
  free = patches - num_targets * block[0] * block[1]
  num_context = min(int(round(float(ij.context_scale) * patches)), free)
  if num_targets < 1 or num_context < 1:
    raise ValueError(f'config.teacher.train.ijepa: {num_targets} target block(s) of {block} patches '
                     f'leave {free} of the {grid}x{grid} patches for the context; reduce num_targets '
                     'or target_scale, or raise data.image_size')
  context_block = int(np.clip(round(math.sqrt(float(ij.context_scale)) * grid), 1, grid))
  width = module.width
  pred = predictor_lib.predictor(str(ij.predictor), out_dim=width, query_dim=2, use_pose=False,
                                 use_hist=False, **_to_dict(ij.predictor_overrides))
  return TeacherModels('ijepa', module, predictor=pred, grid=grid, target_block=block,
                       num_targets=num_targets, context_block=context_block,
                       num_context=num_context)


def init_params(models: TeacherModels, rng, image_size: int) -> dict[str, Any]:
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  k_vit, k_head = jax.random.split(rng)
  params = {'vit': models.vit.init(k_vit, images)['params']}
  if models.kind == 'supervised':
    width = models.vit.width * (1 if models.pool == 'cls' else 2)
    params['head'] = models.head.init(k_head, jnp.zeros((1, width)))['params']
  else:
    context = jnp.zeros((1, 1 + models.num_context, models.vit.width))
    query = jnp.zeros((1, models.target_block[0] * models.target_block[1], 2))
    params['predictor'] = models.predictor.init(k_head, context, query_pos=query)['params']
  return params


# ============================================================================ augmentation, masks


def augment(images: jax.Array, rng, *, flip: bool, shift: int) -> jax.Array:
  """Random horizontal flip and a random shift of up to `shift` px per example (edge padding)."""
  batch, height, width, channels = images.shape
  k_flip, k_shift = jax.random.split(rng)
  if flip:
    flips = jax.random.bernoulli(k_flip, 0.5, (batch,))
    images = jnp.where(flips[:, None, None, None], images[:, :, ::-1], images)
  if shift > 0:
    offsets = jax.random.randint(k_shift, (batch, 2), 0, 2 * shift + 1)
    # the border of a rendered view is background, so edge padding extends the background
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode='edge')
    crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (height, width, channels))
    images = jax.vmap(crop)(padded, offsets)
  return images


def _block_indices(rng, grid: int, rows: int, cols: int) -> jax.Array:
  """Flat patch indices [rows*cols] of one block at a random position, randomly transposed."""
  k_t, k_pos = jax.random.split(rng)
  transpose = jax.random.bernoulli(k_t) if rows != cols else jnp.asarray(False)
  block_rows = jnp.where(transpose, cols, rows)
  block_cols = jnp.where(transpose, rows, cols)
  u = jax.random.uniform(k_pos, (2,))
  row0 = jnp.floor(u[0] * (grid - block_rows + 1)).astype(jnp.int32)
  col0 = jnp.floor(u[1] * (grid - block_cols + 1)).astype(jnp.int32)
  i = jnp.arange(rows * cols)
  d_row = i // block_cols
  d_col = i % block_cols
  return ((row0 + d_row) * grid + col0 + d_col).astype(jnp.int32)


def sample_masks(rng, batch: int, *, grid: int, target_block: tuple[int, int], num_targets: int,
                 context_block: int, num_context: int) -> tuple[jax.Array, jax.Array]:
  """I-JEPA masks with fixed shapes -> (target_idx [B,T,A] int32, context_idx [B,C] int32 sorted).

  Targets: T blocks of A = rows*cols patches each (overlap allowed, as in I-JEPA). Context: C patches
  none of which is in a target; those inside a random context block are taken first, the rest of
  the C at random (top_k on scores, no boolean indexing).
  """
  patches = grid * grid
  rows, cols = target_block

  def one(key):
    k_targets, k_block, k_scores = jax.random.split(key, 3)
    targets = jax.vmap(lambda k: _block_indices(k, grid, rows, cols))(
        jax.random.split(k_targets, num_targets))
    in_target = jnp.zeros((patches,), jnp.float32).at[targets.reshape(-1)].max(1.0)
    block = _block_indices(k_block, grid, context_block, context_block)
    in_block = jnp.zeros((patches,), jnp.float32).at[block].max(1.0)
    scores = jax.random.uniform(k_scores, (patches,)) + in_block - 4.0 * in_target
    context = jnp.sort(jax.lax.top_k(scores, num_context)[1]).astype(jnp.int32)
    return targets, context

  return jax.vmap(one)(jax.random.split(rng, batch))


def patch_positions(idx: jax.Array, grid: int) -> jax.Array:
  """Flat patch indices [...] -> centre (row, col) in [-1, 1], [..., 2] (the predictor's queries)."""
  rows = (idx // grid).astype(jnp.float32)
  cols = (idx % grid).astype(jnp.float32)
  return jnp.stack([(rows + 0.5) / grid, (cols + 0.5) / grid], axis=-1) * 2.0 - 1.0


def _layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


# ============================================================================ losses and the step


POOLS = ('cls', 'cls+gap')


def _readout(out: dict[str, jax.Array], pool: str) -> jax.Array:
  """The supervised head's input: the CLS, or the CLS and the mean patch token side by side.

  'cls+gap' trains the CLS and the patch tokens directly (the cache reads both: teacher/cls and
  the per-group patch features); mean-pooled patches also learn faster on small data (big_vision's
  'gap' head), which pulls the CLS along.
  """
  if pool == 'cls':
    return out['cls']
  return jnp.concatenate([out['cls'], out['patches'].mean(axis=1)], axis=-1)


def supervised_loss(params, batch, rng, *, models: TeacherModels, tcfg):
  """Label-smoothed cross-entropy of a linear head on the CLS token of augmented views."""
  k_aug, k_drop = jax.random.split(rng)
  images = augment(vit_lib.normalize_images(batch['image']), k_aug,
                   flip=bool(tcfg.augment_flip), shift=int(tcfg.augment_shift))
  out = models.vit.apply({'params': params['vit']}, images, train=True, rngs={'dropout': k_drop})
  logits = models.head.apply({'params': params['head']}, _readout(out, tcfg.pool))
  one_hot = jax.nn.one_hot(batch['label'], logits.shape[-1])
  targets = optax.smooth_labels(one_hot, float(tcfg.label_smoothing))
  loss = optax.softmax_cross_entropy(logits, targets).mean()
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
  return loss, {'accuracy': accuracy}


def ijepa_loss(params, ema_vit_params, batch, rng, *, models: TeacherModels, tcfg):
  """I-JEPA: predict the EMA ViT's layer-normed target-block patches from the context patches."""
  k_aug, k_mask, k_drop = jax.random.split(rng, 3)
  images = augment(vit_lib.normalize_images(batch['image']), k_aug,
                   flip=bool(tcfg.augment_flip), shift=int(tcfg.augment_shift))
  batch_size = images.shape[0]
  target_idx, context_idx = sample_masks(
      k_mask, batch_size, grid=models.grid, target_block=models.target_block,
      num_targets=models.num_targets, context_block=models.context_block,
      num_context=models.num_context)
  num_targets, area = target_idx.shape[1:]

  # Targets: the EMA ViT over the full image, layer-normed per patch (I-JEPA), no gradient.
  target_out = jax.lax.stop_gradient(models.vit.apply({'params': ema_vit_params}, images))
  target_patches = _layer_norm(target_out['patches'])
  flat_idx = target_idx.reshape(batch_size, num_targets * area)
  targets = jnp.take_along_axis(target_patches, flat_idx[..., None], axis=1)
  targets = targets.reshape(batch_size * num_targets, area, -1)

  out = models.vit.apply({'params': params['vit']}, images, keep_idx=context_idx, train=True,
                         rngs={'dropout': k_drop})
  # The CLS token joins the context so that it is trained too: the teacher cache reads the CLS.
  context = jnp.concatenate([out['cls'][:, None], out['patches']], axis=1)
  # One predictor pass per target block (as the reference): the context is repeated per block.
  context = jnp.repeat(context, num_targets, axis=0)
  queries = patch_positions(target_idx, models.grid).reshape(batch_size * num_targets, area, 2)
  pred = models.predictor.apply({'params': params['predictor']}, context, query_pos=queries)
  if tcfg.ijepa.loss == 'smooth_l1':
    loss = optax.huber_loss(pred, targets, delta=1.0).mean()   # = torch smooth_l1 (beta 1)
  else:
    loss = jnp.mean((pred - targets) ** 2)
  # A collapsing target encoder shows as a vanishing spread of its raw features over the batch.
  return loss, {'target_std': jnp.mean(jnp.std(target_out['cls'], axis=0))}


def train_step(state: state_lib.TrainState, batch, rng, *, models: TeacherModels, tcfg, ocfg):
  """One teacher step: grads, AdamW update, EMA of the ViT (ijepa), metrics. rng = fold_in(rng, step)."""
  rng = jax.random.fold_in(rng, state.step)
  if models.kind == 'supervised':
    loss_fn = lambda p: supervised_loss(p, batch, rng, models=models, tcfg=tcfg)
  else:
    loss_fn = lambda p: ijepa_loss(p, state.ema_params, batch, rng, models=models, tcfg=tcfg)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  metrics = {'loss': loss, 'grad_norm': optax.global_norm(grads),
             'param_norm': optax.global_norm(params), 'update_norm': optax.global_norm(updates),
             'lr': state_lib.learning_rate_schedule(ocfg)(state.step), **aux}
  if models.kind == 'ijepa':
    momentum = state_lib.ema_momentum_schedule(ocfg)(state.step)
    ema_params = state_lib.ema_update(ema_params, params['vit'], momentum)
    metrics['ema_momentum'] = momentum
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema_params)
  return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)


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
    cfg = ml_collections.ConfigDict({'mesh': {'data': -1, 'fsdp': 1}})
    return step_lib.make_mesh(cfg, devices[:count])
  return step_lib.make_mesh(config, devices)


def fit(config, images: np.ndarray, labels: np.ndarray, num_classes: int, *,
        log_fn: Callable[[int, dict], None] | None = None):
  """Trains the teacher recipe on flat views (images u8 [n,H,W,3], labels [n]).

  Returns (state, models, history) where history is a list of (step, metrics dict) at the log
  steps; raises FloatingPointError on a non-finite loss.
  """
  t = config.teacher.train
  ocfg = optim_config(config)
  models = build_models(config, num_classes)
  batch_size, steps = int(t.batch_size), int(t.steps)
  mesh = _mesh(config, batch_size)
  rep = step_lib.replicated(mesh)
  size = int(config.data.image_size)
  seed = int(config.seed)

  def init(rng):
    params = init_params(models, rng, size)
    ema = jax.tree.map(jnp.copy, params['vit']) if models.kind == 'ijepa' else None
    return state_lib.create(params, ema, ocfg)

  rng = jax.random.PRNGKey(seed)
  init_rng, step_rng = jax.random.split(jax.random.fold_in(rng, 0x7EAC))
  abstract = jax.eval_shape(init, init_rng)
  state_sh = step_lib.state_shardings(mesh, abstract)
  state = jax.jit(init, in_shardings=rep, out_shardings=state_sh)(init_rng)
  example = {'image': images[:batch_size], 'label': labels[:batch_size].astype(np.int32)}
  batch_sh = step_lib.batch_shardings(mesh, example)
  step_fn = jax.jit(functools.partial(train_step, models=models, tcfg=t, ocfg=ocfg),
                    in_shardings=(state_sh, batch_sh, rep), out_shardings=(state_sh, rep),
                    donate_argnums=0)
  log_every = int(t.log_every)
  procs, proc = jax.process_count(), jax.process_index()
  history = []
  for step in range(steps):
    idx = batch_indices(seed, step, len(images), batch_size)
    local = idx.reshape(procs, -1)[proc]   # each host feeds its own rows of the global batch
    batch = {'image': images[local], 'label': labels[local].astype(np.int32)}
    state, metrics = step_fn(state, step_lib.global_batch(batch, batch_sh), step_rng)
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
    out = models.vit.apply({'params': params['vit']}, vit_lib.normalize_images(images))
    return jnp.argmax(models.head.apply({'params': params['head']}, _readout(out, models.pool)), -1)

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
  data = {k: v for k, v in _to_dict(teacher_data_config(config)).items() if k not in _NON_RENDER_KEYS}
  return _fingerprint({'teacher.train': _to_dict(config.teacher.train), 'vit': config.model.vit,
                       'vit_overrides': _to_dict(config.model.vit_overrides), 'data': data,
                       'seed': int(config.seed),
                       'param_rules': _to_dict({'r': config.train.param_rules})})


def train_teacher(config, workdir: str) -> dict[str, Any]:
  """Renders the teacher split once, trains the teacher, saves its ViT to WORKDIR/teacher.

  A teacher already saved there by the same config (same fingerprint) is reused; one saved by a
  different config is an error (delete the folder or use another workdir), never silently replaced.
  Returns dict(teacher, kind, steps, seconds, final_loss, train_accuracy (supervised), reused, ...).
  """
  optim_config(config)   # validates teacher.train before any rendering
  out_dir = os.path.join(workdir, TEACHER_DIR)
  if os.path.exists(os.path.join(out_dir, vit_lib.CONFIG_FILE)):
    info = vit_lib.load_info(out_dir)
    if info.get('train_fingerprint') != train_fingerprint(config):
      raise ValueError(f'{out_dir} holds a teacher ({info.get("name")!r}) trained with a different '
                       'config (teacher.train / model.vit / data); delete it or use another workdir')
    logging.info('teacher: reusing %s', out_dir)
    return {'teacher': out_dir, 'reused': True, **info.get('train_result', {})}
  result, _, _ = train_and_save(config, workdir)
  return result


def train_and_save(config, workdir: str):
  """train_teacher without the reuse check -> (result dict, final TrainState, TeacherModels)."""
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  t = config.teacher.train
  out_dir = os.path.join(workdir, TEACHER_DIR)
  fingerprint = train_fingerprint(config)
  data_config = teacher_data_config(config)
  split = str(t.split)
  start = time.time()
  views = render_split(config, workdir, split, data_config=data_config)
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
  vit_lib.save(out_dir, models.vit, params, extra=extra)
  logging.info('teacher: saved %s (%s) in %.1f s, final loss %.4f%s', out_dir, extra['name'],
               result['seconds'], result['final_loss'],
               f", train accuracy {result['train_accuracy']:.3f}" if 'train_accuracy' in result else '')
  return {'teacher': out_dir, 'reused': False, **result}, state, models


def teacher_probe(config, workdir: str, teacher_dir: str, train_split: str = 'train',
                  test_split: str = 'test') -> dict[str, Any]:
  """The teacher's own linear-probe accuracy on the evaluation objects' rendered views.

  Features: the teacher's CLS (computed exactly as the prepare stage's teacher cache computes it)
  averaged over each object's V views; classifier and C selection as `evaluation.linear_probe`
  (C by stratified CV on the train split only). The 2D ceiling beside the 3D results.
  """
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import linear_probe  # pylint: disable=g-import-not-at-top
  from crossjepa.models import teacher as protocol  # pylint: disable=g-import-not-at-top
  teacher = teacher_cache.Teacher(config, teacher=protocol.load_teacher(teacher_dir))
  name = teacher.name
  features, labels = {}, {}
  for split in (train_split, test_split):
    views = render_split(config, workdir, split)
    n, v = views['images'].shape[:2]
    corr = np.full((n, v, int(config.data.num_groups)), -1, np.int32)
    cls, _ = teacher(views['images'], corr)
    features[split] = cls.astype(np.float32).mean(axis=1)
    labels[split] = views['labels']
  e = config.eval
  result = linear_probe.linear_probe(
      features[train_split], labels[train_split], features[test_split], labels[test_split],
      **linear_probe.probe_kwargs(e, int(config.seed)))
  result.pop('predictions')
  result['protocol'].update(
      features=f'teacher global embedding (float16, as cached) averaged over the {v} rendered '
               'views per object',
      teacher=name, teacher_dir=teacher_dir, train_split=train_split, test_split=test_split)
  return result
