"""The frozen-feature evaluation protocol: features -> linear SVM probe -> few-shot.

Every number is returned next to the protocol that produced it (DESIGN.md section 7): pooling,
classifier, C grid and CV, few-shot folds, seeds. Nothing is selected on the test split. The
random-init baseline evaluates the same encoder architecture at initialisation over
`config.eval.seeds` and reports mean +- std, the floor every pretrained number is read against.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from absl import logging
import jax
import numpy as np

from crossjepa import fileio
from crossjepa.evaluation import features as features_lib
from crossjepa.evaluation import fewshot as fewshot_lib
from crossjepa.evaluation import linear_probe as probe_lib

Batches = Iterable[tuple[dict[str, Any], Any]]


def probe_features(config, train_x, train_y, test_x, test_y, *, seed: int) -> dict:
  """Linear probe + every few-shot setting of config.eval on given features."""
  e = config.eval
  probe = probe_lib.linear_probe(train_x, train_y, test_x, test_y,
                                 **probe_lib.probe_kwargs(e, seed))
  fewshot = {}
  for ways in e.fewshot_ways:
    for shots in e.fewshot_shots:
      fewshot[f'{int(ways)}way_{int(shots)}shot'] = fewshot_lib.fewshot(
          train_x, train_y, test_x, test_y, ways=int(ways), shots=int(shots),
          queries=int(e.fewshot_queries), folds=int(e.fewshot_folds), seed=seed,
          C=float(e.fewshot_C), standardize=bool(e.svm_standardize))
  return {'linear_probe': probe, 'fewshot': fewshot}


def evaluate_encoder(config, encoder_module, params, train_batches: Batches, test_batches: Batches,
                     *, seed: int, embed_fn: features_lib.EmbedFn | None = None,
                     return_arrays: bool = False):
  """Frozen encoder -> {'features', 'linear_probe', 'fewshot'} (JSON-ready).

  `train_batches` / `test_batches`: iterables of (batch, valid) as data.pipeline.iterate_split
  yields. With return_arrays=True also returns {'train_x', 'train_y', 'test_x', 'test_y',
  'predictions'} (for the t-SNE and confusion plots).
  """
  pooling = str(config.eval.pooling)
  if embed_fn is None:
    embed_fn = features_lib.make_embed_fn(encoder_module, params, pooling=pooling)
  else:
    embed_fn = embed_fn.with_params(params)
  train_x, train_y = features_lib.extract_features(embed_fn, train_batches)
  test_x, test_y = features_lib.extract_features(embed_fn, test_batches)
  out = probe_features(config, train_x, train_y, test_x, test_y, seed=seed)
  predictions = out['linear_probe'].pop('predictions')
  out['features'] = {
      'pooling': pooling, 'dim': int(train_x.shape[1]),
      'encoder': 'frozen, final LayerNorm tokens, float32, no test-time augmentation',
      'num_train': int(train_x.shape[0]), 'num_test': int(test_x.shape[0]),
  }
  if return_arrays:
    return out, {'train_x': train_x, 'train_y': train_y, 'test_x': test_x, 'test_y': test_y,
                 'predictions': np.asarray(predictions)}
  return out


def _mean_std(values: list[float]) -> dict:
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)),
          'per_seed': [float(v) for v in values]}


def random_init_params(encoder_module, example_points, seeds) -> Iterator[Any]:
  """The encoder's params at random init under each seed in turn (PRNGKey(seed), flax's
  initialisers): what the random-init baseline, the zero-shot control and the benchmark evaluate."""
  init = jax.jit(encoder_module.init)   # one compile for all seeds (eager init is slow)
  example = np.asarray(example_points, np.float32)[:1]
  for seed in seeds:
    yield init(jax.random.PRNGKey(int(seed)), example)['params']


def random_init_baseline(config, encoder_module, example_points, train_batches_fn: Callable[[], Batches],
                         test_batches_fn: Callable[[], Batches],
                         embed_fn: features_lib.EmbedFn | None = None) -> dict:
  """The same encoder at random init, one per seed of config.eval.seeds: mean +- std.

  Returns {'accuracy': mean probe accuracy (the number results.json reports as
  probe.random_init.accuracy), 'accuracy_std', 'linear_probe': {mean, std, per_seed},
  'fewshot': {setting: {mean, std, per_seed} of the fold means}, 'per_seed': [full results],
  'protocol'}. The probe/few-shot seed equals the init seed.
  """
  seeds = [int(s) for s in config.eval.seeds]
  if not seeds:
    raise ValueError('config.eval.seeds is empty; the random-init baseline needs at least one seed')
  # embed_fn: an EmbedFn of the same module (e.g. the pretrained one), reused so nothing recompiles.
  per_seed = []
  for seed, params in zip(seeds, random_init_params(encoder_module, example_points, seeds)):
    if embed_fn is None:
      embed_fn = features_lib.make_embed_fn(encoder_module, params, pooling=str(config.eval.pooling))
    per_seed.append(evaluate_encoder(config, encoder_module, params, train_batches_fn(),
                                     test_batches_fn(), seed=seed, embed_fn=embed_fn))
  probe = _mean_std([r['linear_probe']['accuracy'] for r in per_seed])
  fewshot = {}
  for setting, first in per_seed[0]['fewshot'].items():
    if first.get('skipped'):
      fewshot[setting] = {'skipped': True, 'reason': first['reason']}
    else:
      fewshot[setting] = _mean_std([r['fewshot'][setting]['mean'] for r in per_seed])
  return {
      'accuracy': probe['mean'], 'accuracy_std': probe['std'],
      'linear_probe': probe, 'fewshot': fewshot, 'per_seed': per_seed,
      'protocol': {
          'encoder': f'{type(encoder_module).__name__} at random init (flax default initialisers)',
          'seeds': seeds, 'aggregate': 'mean and population std (ddof=0) over seeds',
          'probe': per_seed[0]['linear_probe']['protocol'],
      },
  }


# ------------------------------------------------------------------ run-level entry points
# crossjepa.run calls these two; they only wire the pieces above to the run's folder.


def _eval_splits(config):
  return str(config.data.eval_train_split), str(config.data.eval_test_split)


def per_class_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted indices of at most `per_class` examples of every class (all of a smaller class),
  drawn with `seed`: the same subset in every probe of a run and on resume."""
  rng = np.random.default_rng(seed)
  keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
  return np.sort(np.concatenate(keep))


def make_probe_fn(config, workdir: str) -> Callable[[Any, Any, int], dict]:
  """A cheap probe for pretraining: `probe_fn(params, ema_params, step) -> {'accuracy', 'best_C'}`.

  The eval splits are read once; the embed function compiles once. Same linear-probe protocol as
  the final evaluation (C by CV on the train split only), so the curve is comparable to it; with
  train.probe_per_class > 0 its classifier fits on at most that many train objects per class (a
  linear SVC's fit grows as n^1.6-1.9: ShapeNet-55's 41,952 train objects would cost 20-80 min a
  probe), on every test object.
  """
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  train_split, test_split = _eval_splits(config)
  train = pipeline.load_split(config, workdir, train_split)
  test = pipeline.load_split(config, workdir, test_split)
  per_class = int(config.train.probe_per_class)
  if per_class > 0:
    keep = per_class_subset(train['label'], per_class, int(config.seed))
    logging.info('probe during pretraining: %d of the %d %s objects (at most %d a class), all %d '
                 '%s objects', len(keep), len(train['label']), train_split, per_class,
                 len(test['label']), test_split)
    train = {k: v[keep] for k, v in train.items()}
  module = export_lib.point_encoder_from_config(config)
  holder: dict[str, features_lib.EmbedFn] = {}
  bs = int(config.eval.batch_size)
  e = config.eval

  def feats(embed, data):
    n = data['points'].shape[0]
    out = [embed(data['points'][i:i + bs], data['centers'][i:i + bs], data['groups'][i:i + bs])
           for i in range(0, n, bs)]
    return np.concatenate(out, 0)

  def probe_fn(params, ema_params, step):
    del step
    enc = export_lib.select_encoder_params(params, ema_params, str(e.params))
    if 'embed' not in holder:
      holder['embed'] = features_lib.make_embed_fn(module, enc, pooling=str(e.pooling))
    embed = holder['embed'].with_params(enc)
    r = probe_lib.linear_probe(feats(embed, train), train['label'], feats(embed, test),
                               test['label'], **probe_lib.probe_kwargs(e, int(config.seed)))
    return {'accuracy': r['accuracy'], 'best_C': r['best_C']}

  return probe_fn


def check_export_geometry(config, export_dir: str) -> dict:
  """An export's encoder.json, after checking its num_points / num_groups / group_size.

  The exported encoder groups with its own num_groups / group_size and was trained on num_points
  points; evaluating it on records of another geometry would silently change what it computes, so
  any difference is an error naming each key. crossjepa.run calls this before preparing records.
  """
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  info = export_lib.read_info(export_dir)
  d = config.data
  problems = []
  for key in ('num_points', 'num_groups', 'group_size'):
    have, want = info.get(key), int(d[key])
    if have is None or int(have) != want:
      problems.append(f'{key}: export has {have!r}, config has data.{key}={want}')
  if problems:
    raise ValueError(
        f'eval.encoder={export_dir!r} was exported with another data geometry than this config:\n  '
        + '\n  '.join(problems) + '\nSet --config.data.num_points / num_groups / group_size to the '
        "export's values (in a fresh --workdir: the records are prepared with them).")
  return info


def load_exported_encoder(config, export_dir: str):
  """(module, params, info) of an export (--mode=export), checked against config.data."""
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  check_export_geometry(config, export_dir)
  loaded = export_lib.load_encoder(export_dir)
  return loaded.module, loaded.params, loaded.info


def _encoder_under_test(config, workdir: str):
  """(module, params, step, description) of the encoder to evaluate: eval.encoder or the run's."""
  import os  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.training import checkpoint  # pylint: disable=g-import-not-at-top
  export_dir = str(config.eval.encoder)
  if export_dir:
    module, enc, info = load_exported_encoder(config, export_dir)
    keys = ('variant', 'params_source', 'pooling', 'step', 'recipe', 'feature_dim', 'param_count',
            'num_points', 'num_groups', 'group_size', 'config_digest', 'crossjepa_version')
    desc = {'source': 'export', 'path': os.path.abspath(export_dir),
            **{k: info[k] for k in keys if k in info}}
    return module, enc, int(info.get('step', -1)), desc
  params, ema_params, step = checkpoint.restore_params(workdir, config)
  enc = export_lib.select_encoder_params(params, ema_params, str(config.eval.params))
  module = export_lib.point_encoder_from_config(config)
  # A checkpoint written under another model config fails here with the leaves that differ,
  # not deep inside the encoder's apply.
  export_lib.check_params(
      enc, export_lib.abstract_params(module, int(config.data.num_points)),
      f'evaluate: the checkpoint under {os.path.join(workdir, "checkpoints")} (step {step}) was '
      f'made with another config than model.point={config.model.point!r}, model.point_overrides, '
      f'data.num_groups={config.data.num_groups}, data.group_size={config.data.group_size}')
  desc = {'source': 'checkpoint', 'path': os.path.abspath(os.path.join(workdir, 'checkpoints')),
          'variant': str(config.model.point), 'params_source': str(config.eval.params),
          'step': int(step)}
  return module, enc, int(step), desc


def _zero_shot(config, workdir: str, module, enc, embed, from_checkpoint: bool) -> dict:
  """results.json's zero_shot (evaluation/zero_shot.py), or {'skipped': why} where the run has
  none. Records without a teacher (data.eval_only) take an export's own readout."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  from crossjepa.training import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    if config.data.eval_only:
      if not config.eval.encoder:
        raise zero_shot.NotApplicable(f'zero-shot: {zero_shot.not_applicable(config)}')
      export_dir = str(config.eval.encoder)
      return zero_shot.evaluate_export(config, workdir, export_dir,
                                       export_lib.read_info(export_dir), module, enc)
    run_params = (checkpoint.restore_params(workdir, config)[0]
                  if from_checkpoint and zero_shot.has_head(config) else None)
    return zero_shot.evaluate(config, workdir, module, enc, embed, run_params=run_params)
  except zero_shot.NotApplicable as e:
    logging.info('evaluate: no %s', e)
    return {'skipped': str(e)}


def evaluate_run(config, workdir: str) -> dict:
  """Evaluates the run's last checkpoint (or eval.encoder, an export); writes results.json + plots.

  results.json: probe.pretrained (linear probe + few-shot + features, each with its protocol),
  probe.random_init (mean +- std over eval.seeds, the same architecture), finetune (when
  eval.finetune.enabled), step, encoder (where the evaluated params came from), data (the
  benchmark: source, variant, geometry, class count, split sizes).
  """
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import finetune as finetune_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import plots  # pylint: disable=g-import-not-at-top
  train_split, test_split = _eval_splits(config)
  bs = int(config.eval.batch_size)
  module, enc, step, encoder_desc = _encoder_under_test(config, workdir)

  def batches(split):
    return lambda: pipeline.iterate_split(config, workdir, split, bs)

  embed = features_lib.make_embed_fn(module, enc, pooling=str(config.eval.pooling))
  pretrained, arrays = evaluate_encoder(config, module, enc, batches(train_split)(),
                                        batches(test_split)(), seed=int(config.seed),
                                        embed_fn=embed, return_arrays=True)
  pretrained['params'] = str(encoder_desc.get('params_source', config.eval.params))
  pretrained['step'] = int(step)
  random_init = random_init_baseline(config, module, arrays_first_points(config, workdir, test_split),
                                     batches(train_split), batches(test_split), embed_fn=embed)
  results = {
      'probe': {'pretrained': {'accuracy': pretrained['linear_probe']['accuracy'], **pretrained},
                'random_init': random_init},
      'splits': {'train': train_split, 'test': test_split},
      'recipe': str(config.recipe), 'step': int(step),
      'encoder': encoder_desc,
      'data': {'source': str(config.data.source), 'variant': str(config.data.variant),
               'root': str(config.data.root), 'num_points': int(config.data.num_points),
               'num_groups': int(config.data.num_groups),
               'group_size': int(config.data.group_size),
               'num_train': int(arrays['train_y'].shape[0]),
               'num_test': int(arrays['test_y'].shape[0])},
  }
  if not config.data.eval_only:
    # The 2D teacher whose cache the pretraining read, as the records' metadata names it.
    from crossjepa.data import records  # pylint: disable=g-import-not-at-top
    meta = dict(records.open_dataset(config, workdir).info.metadata or {})
    results['teacher'] = dict(meta.get('teacher') or {})
    results['target'] = {'train.target': str(config.train.target),
                         'standardize_target': str(config.train.standardize_target)}
  results['zero_shot'] = _zero_shot(config, workdir, module, enc, embed,
                                    encoder_desc['source'] == 'checkpoint')
  if config.eval.finetune.enabled or config.eval.finetune.fewshot:
    train = pipeline.load_split(config, workdir, train_split)
    test = pipeline.load_split(config, workdir, test_split)
  if config.eval.finetune.enabled:
    results['finetune'] = finetune_lib.finetune(config, module, enc, train, test,
                                                seed=int(config.seed))
  if config.eval.finetune.fewshot:
    results['fewshot_finetune'] = finetune_lib.finetune_fewshot(config, module, enc, train, test,
                                                                seed=int(config.seed))
  plot_dir = os.path.join(workdir, 'plots')
  try:
    names = sources.class_names(config.data)
  except Exception:  # pylint: disable=broad-except
    names = None    # the plots then label classes by index; the numbers do not depend on it
  plots.plot_confusion(arrays['test_y'], arrays['predictions'], names,
                       os.path.join(plot_dir, 'confusion.png'))
  plots.plot_tsne(arrays['test_x'], arrays['test_y'], names, os.path.join(plot_dir, 'tsne.png'),
                  seed=int(config.seed))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(metrics_path):
    plots.plot_curves(metrics_path, os.path.join(plot_dir, 'curves.png'))
  path = os.path.join(workdir, 'results.json')
  with fileio.atomic_write(path) as f:
    json.dump(results, f, indent=2, default=str)
  return {'results': path,
          'probe.pretrained.accuracy': results['probe']['pretrained']['accuracy'],
          'probe.random_init.accuracy': random_init['accuracy']}


def arrays_first_points(config, workdir, split):
  """One example cloud (for initialising the random-init encoders)."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  first = next(iter(pipeline.iterate_split(config, workdir, split, 1, keys=('points', 'label'))))
  return first['points']
