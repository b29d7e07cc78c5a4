"""End-to-end fine-tuning of a pretrained point encoder with a classification head.

Follows Point-MAE's classification fine-tuning (github.com/Pang-Yatian/Point-MAE,
models/Point_MAE.py `PointTransformer`, tools/runner_finetune.py):
- features = pooled final tokens (config.eval.pooling, concat(max, mean) by default), then an MLP
  head Dense(h)-norm-GELU-Dropout-Dense(h)-norm-GELU-Dropout-Dense(classes). LayerNorm replaces
  Point-MAE's BatchNorm1d (no batch statistics to thread; same reason as in models/point.py).
- AdamW, linear warm-up + cosine decay from the optimizer block `eval.finetune` (with the
  config's per-parameter rules: no weight decay on biases/norms), global-norm clipping,
  `eval.finetune.steps` steps, cross-entropy: the one train step of crossjepa.training.step.
- augmentation: per-object, per-axis random scale U(scale) and translation U(-t, t)
  (Point-MAE's PointcloudScaleAndTranslate; crossjepa.data.augment.per_axis_scale_translate).
  Per-axis scaling changes nearest neighbours, so the FPS centres and kNN groups are recomputed on
  the augmented cloud inside the jitted step.
- test accuracy of the final step (nothing is selected on the test split; Point-MAE reports its
  best epoch on test, which we do not do), and SEPARATELY the voting accuracy: logits averaged
  over `eval.finetune.votes` augmented copies of each test object.

The train step is crossjepa.training.step's, jitted once with the state replicated and the batch
sharded over a Mesh of all devices (NamedSharding), state donated.
"""
from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from crossjepa.data import augment
from crossjepa.evaluation import features as features_lib
from crossjepa.training import mesh as mesh_lib
from crossjepa.training import step as step_lib


class ClassificationHead(nn.Module):
  """Point-MAE's cls_head_finetune with LayerNorm for BatchNorm."""
  num_classes: int
  hidden: int = 256
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    for i in range(2):
      x = nn.Dense(self.hidden, name=f'fc{i}')(x)
      x = nn.LayerNorm(name=f'norm{i}')(x)
      x = nn.gelu(x, approximate=False)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='out')(x)


def logits_fn(params, points, centers, groups, rng, *, encoder, head, pooling, train):
  rngs = {'dropout': rng} if train else {}
  out = encoder.apply({'params': params['encoder']}, points, centers, groups, train=train,
                      rngs=rngs)
  feats = features_lib.pool_tokens(out, pooling)
  return head.apply({'params': params['head']}, feats, train=train, rngs=rngs)


def finetune_loss(params, ema_params, batch, rng, *, encoder, head, pooling, scale, translate):
  """Augment, recompute groups, cross-entropy -> (loss, {'accuracy'})."""
  del ema_params
  aug_rng, drop_rng = jax.random.split(rng)
  points = augment.per_axis_scale_translate(batch['points'], aug_rng, scale, translate)
  logits = logits_fn(params, points, None, None, drop_rng, encoder=encoder, head=head,
                     pooling=pooling, train=True)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']).mean()
  return loss, {'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label'])}


def _check_data(name: str, data: dict[str, np.ndarray]) -> None:
  for key in ('points', 'label'):
    if key not in data:
      raise ValueError(f'finetune: {name} data needs `{key}`, got keys {sorted(data)}')
  if np.any(np.asarray(data['label']) < 0):
    raise ValueError(f'finetune: {name} labels contain -1 (unlabelled objects)')


def finetune(config, encoder_module, encoder_params, train_data: dict[str, np.ndarray],
             test_data: dict[str, np.ndarray], *, seed: int, mesh: Mesh | None = None) -> dict:
  """Fine-tunes encoder + head on `train_data`; returns accuracy, accuracy_vote, protocol, curve.

  `train_data` / `test_data`: dicts of np arrays with `points` [n,N,3], `label` [n] (and optionally
  `centers`/`groups`, used for the no-vote test pass), e.g. from data.pipeline.load_split.
  """
  _check_data('train', train_data)
  _check_data('test', test_data)
  ft = config.eval.finetune
  pooling = config.eval.pooling
  mesh = mesh if mesh is not None else features_lib.default_mesh()
  batch_size = int(ft.batch_size)
  mesh_lib.check_batch_size(mesh, batch_size, 'config.eval.finetune.batch_size')
  train_y = np.asarray(train_data['label'], np.int32)
  test_y = np.asarray(test_data['label'], np.int32)
  num_classes = int(max(train_y.max(), test_y.max())) + 1
  head = ClassificationHead(num_classes, int(ft.head_hidden), float(ft.head_dropout))
  scale = tuple(float(s) for s in ft.scale)
  translate = float(ft.translate)

  rng = jax.random.PRNGKey(seed)
  init_rng, step_rng, vote_rng = jax.random.split(rng, 3)
  feat_dim = jax.eval_shape(
      lambda p, x: features_lib.pool_tokens(encoder_module.apply({'params': p}, x), pooling),
      encoder_params, jnp.zeros((1,) + train_data['points'].shape[1:], jnp.float32)).shape[-1]
  head_params = head.init(init_rng, jnp.zeros((1, feat_dim), jnp.float32))['params']
  params = {'encoder': encoder_params, 'head': head_params}
  batch_sharding = mesh_lib.batch_sharding(mesh)
  # The initial params are copied into the state (the step donates it; the caller keeps its own).
  state, state_sharding = step_lib.init_state(lambda p: jax.tree.map(jnp.copy, p), ft, mesh, params,
                                              param_rules=config.train.param_rules)
  loss_fn = functools.partial(finetune_loss, encoder=encoder_module, head=head, pooling=pooling,
                              scale=scale, translate=translate)
  step = step_lib.make_train_step(loss_fn, ft, mesh, state_sharding)

  # Host-side sampling: epoch permutations from a seeded generator (a pure function of the seed).
  np_rng = np.random.default_rng(seed)
  order = np.zeros((0,), np.int64)
  curve = []
  train_points = np.asarray(train_data['points'], np.float32)
  for i in range(int(ft.steps)):
    while order.shape[0] < batch_size:
      order = np.concatenate([order, np_rng.permutation(train_points.shape[0])])
    idx, order = order[:batch_size], order[batch_size:]
    batch = {'points': train_points[idx], 'label': train_y[idx]}
    state, metrics = step(state, batch, step_rng)
    if i == 0 or (i + 1) % max(1, int(ft.steps) // 10) == 0:
      m = jax.device_get(metrics)
      if not np.isfinite(m['loss']):
        raise FloatingPointError(f'finetune: non-finite loss at step {i}')
      curve.append({'step': i + 1, 'loss': float(m['loss']), 'train_accuracy': float(m['accuracy'])})

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def eval_logits(params, points, centers, groups):
    return logits_fn(params, points, centers, groups, None, encoder=encoder_module, head=head,
                     pooling=pooling, train=False)

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def vote_logits(params, points, rng):
    points = augment.per_axis_scale_translate(points, rng, scale, translate)
    return logits_fn(params, points, None, None, None, encoder=encoder_module, head=head,
                     pooling=pooling, train=False)

  test_points = np.asarray(test_data['points'], np.float32)
  n = test_points.shape[0]
  has_groups = 'centers' in test_data and 'groups' in test_data
  logits, vote_sum = [], []
  votes = int(ft.votes)
  for start in range(0, n, batch_size):
    sl = slice(start, min(start + batch_size, n))
    pad = batch_size - (sl.stop - sl.start)

    def padded(x, dtype, pad=pad):
      x = np.asarray(x, dtype)
      if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)], 0)
      return jax.device_put(x, batch_sharding)

    pts = padded(test_points[sl], np.float32)
    ctr = padded(test_data['centers'][sl], np.float32) if has_groups else None
    grp = padded(test_data['groups'][sl], np.int32) if has_groups else None
    logits.append(np.asarray(eval_logits(state.params, pts, ctr, grp))[:batch_size - pad])
    acc = 0.0
    for v in range(votes):
      acc = acc + np.asarray(vote_logits(state.params, pts, jax.random.fold_in(vote_rng, v)))
    if votes:
      vote_sum.append((acc / votes)[:batch_size - pad])
  pred = np.argmax(np.concatenate(logits, 0), -1)
  result = {
      'accuracy': float(np.mean(pred == test_y)),
      'accuracy_vote': (float(np.mean(np.argmax(np.concatenate(vote_sum, 0), -1) == test_y))
                        if votes else None),
      'curve': curve,
      'protocol': {
          'head': f'MLP {feat_dim}-{int(ft.head_hidden)}-{int(ft.head_hidden)}-{num_classes}, '
                  f'LayerNorm, GELU, dropout {float(ft.head_dropout)}',
          'pooling': pooling,
          'optimizer': f'AdamW lr={float(ft.lr)} (warm-up {int(ft.warmup_steps)}, cosine to '
                       f'{float(ft.min_lr)}), wd={float(ft.weight_decay)}, betas=({float(ft.b1)}, '
                       f'{float(ft.b2)}), clip={float(ft.grad_clip)}',
          'steps': int(ft.steps), 'batch_size': batch_size,
          'augment': f'per-axis scale U{scale}, translate U(-{translate}, {translate}); groups '
                     'recomputed on the augmented cloud',
          'encoder': 'fully fine-tuned',
          'selection': 'final step; nothing selected on test',
          'accuracy': 'test, single pass, no augmentation',
          'accuracy_vote': f'test, logits averaged over {votes} augmented copies (reported '
                           'separately, never mixed into accuracy)',
          'seed': int(seed),
      },
  }
  return result


def finetune_fewshot(config, encoder_module, encoder_params, train_data: dict[str, np.ndarray],
                     test_data: dict[str, np.ndarray], *, seed: int,
                     mesh: Mesh | None = None) -> dict[str, Any]:
  """The field's few-shot protocol (Point-BERT / Point-MAE): on every eval.fewshot setting's folds
  (fewshot.draw_folds under `seed`: the frozen few-shot's own folds), the encoder and a fresh head
  are fine-tuned on the fold's support (labels 0..N-1 in the fold's class order) with
  eval.finetune's recipe (fold f under seed + f) and scored on its queries (single pass).
  -> {setting: {'mean', 'std', 'per_fold', 'protocol'} or {'skipped': True, 'reason'}}."""
  from crossjepa import console  # pylint: disable=g-import-not-at-top
  e = config.eval
  out: dict[str, Any] = {}
  settings = [(int(w), int(k)) for w in e.fewshot_ways for k in e.fewshot_shots]
  with console.progress(total=len(settings) * int(e.fewshot_folds), desc='few-shot fine-tune',
                        unit='fold', leave=False) as bar:
    for ways, shots in settings:
      out.update(_finetune_setting(config, encoder_module, encoder_params, train_data, test_data,
                                   ways, shots, seed, mesh, bar))
  return out


def _finetune_setting(config, encoder_module, encoder_params, train_data, test_data, ways: int,
                      shots: int, seed: int, mesh, bar) -> dict[str, Any]:
  """finetune_fewshot's entry for one N-way K-shot setting."""
  from crossjepa.evaluation import fewshot as fewshot_lib  # pylint: disable=g-import-not-at-top
  e = config.eval
  train_y = np.asarray(train_data['label'])
  test_y = np.asarray(test_data['label'])
  key = f'{ways}way_{shots}shot'
  folds, reason = fewshot_lib.draw_folds(
      train_y, test_y, ways=ways, shots=shots, queries=int(e.fewshot_queries),
      folds=int(e.fewshot_folds), seed=seed)
  if reason:
    bar.update(int(e.fewshot_folds))
    return {key: {'skipped': True, 'reason': reason}}
  per_fold = []
  for f, fold in enumerate(folds):
    remap = np.full(int(max(train_y.max(), test_y.max())) + 1, -1, np.int64)
    remap[fold['classes']] = np.arange(len(fold['classes']))
    support = {'points': np.asarray(train_data['points'])[fold['support']],
               'label': remap[train_y[fold['support']]]}
    query = {k: np.asarray(test_data[k])[fold['query']]
             for k in ('points', 'centers', 'groups') if k in test_data}
    query['label'] = remap[test_y[fold['query']]]
    res = finetune(config, encoder_module, encoder_params, support, query, seed=seed + f,
                   mesh=mesh)
    per_fold.append(res['accuracy'])
    bar.update(1)
  return {key: {'mean': float(np.mean(per_fold)), 'std': float(np.std(per_fold)),
                'per_fold': per_fold, 'protocol': {
                    'folds': f'{int(e.fewshot_folds)} folds of fewshot.draw_folds(seed={seed}): '
                             'the frozen few-shot\'s; support from train, '
                             f'{int(e.fewshot_queries)} queries a class from test',
                    'finetune': res['protocol'],
                    'per_fold_seed': f'{seed} + fold index',
                    'std': 'population std over folds (ddof=0)'}}}
