"""The embedded benchmark table: does knowledge move from a 2D encoder into the 3D one?

On the synthetic benchmark's two evaluation sets -- `clean` (meshes, like ModelNet40) and `scan`
(one-camera partial scans with noise and background, like ScanObjectNN PB_T50_RS) -- it reports,
with the linear-probe and few-shot protocols of `crossjepa.evaluation.protocol`:

  random init            the same point encoder at initialisation, over eval.seeds
  <variant> per target   crossjepa pretraining (config.benchmark.variants: e.g. CLS target,
                         per-group target), over benchmark.seeds pretraining seeds
  2D teacher             the teacher's own probe on the same objects' rendered views (the ceiling)

and, with a teacher that has an ImageNet classifier or a CLIP text tower, a zero-shot column: the
class named through that classifier (or by its words' text embeddings) after a label-free ridge
readout into the teacher's embedding (crossjepa.evaluation.zero_shot), for every row.

Every pretraining run is a normal run folder (WORKDIR/runs/<variant>_s<seed>/) that shares the
prepared records of WORKDIR/data, so runs resume like any other and a rerun recomputes nothing
that is finished. The run of the main config at config.seed is WORKDIR itself.
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from crossjepa import console
from crossjepa import fileio


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(config.to_dict())


def _set(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  node = config
  *parents, leaf = dotted.split('.')
  for part in parents:
    if part not in node:
      raise KeyError(f'benchmark override {dotted!r}: config has no key {part!r}')
    node = node[part]
  if leaf not in node:
    raise KeyError(f'benchmark override {dotted!r}: config has no key {leaf!r}')
  node[leaf] = value


def eval_set_config(config, kind: str) -> ml_collections.ConfigDict:
  """The evaluation dataset of one kind: `clean` is the prepared dataset itself; `scan` is an
  eval-only dataset of the same classes seen as partial scans."""
  c = _copy(config)
  if kind == 'scan':
    c.data.name = f'{config.data.name}_scan'
    c.data.synthetic.kind = 'scan'
    c.data.eval_only = True
  elif kind != 'clean':
    raise ValueError(f'config.benchmark.eval_sets: unknown kind {kind!r}; expected clean or scan')
  return c


def variant_config(config, overrides: dict[str, Any], seed: int) -> ml_collections.ConfigDict:
  c = _copy(config)
  for key, value in overrides.items():
    _set(c, key, value)
  c.seed = int(seed)
  c.train.probe_every = 0        # the benchmark probes at the end; curves come from the main run
  return c


def _same_run(a, b) -> bool:
  return json.dumps(a.to_dict(), sort_keys=True, default=str) == json.dumps(
      b.to_dict(), sort_keys=True, default=str)


def run_dir(config, workdir: str, name: str, seed: int, run_config) -> str:
  """WORKDIR for the main config at its own seed; else WORKDIR/runs/<name>_s<seed>."""
  main = _copy(config)
  main.train.probe_every = 0
  if _same_run(main, run_config):
    return workdir
  path = os.path.join(workdir, 'runs', f'{name}_s{seed}')
  os.makedirs(path, exist_ok=True)
  link = os.path.join(path, 'data')
  if not os.path.lexists(link):
    os.symlink(os.path.abspath(os.path.join(workdir, 'data')), link)
  return path


def _fmt(mean: float, std: float | None = None) -> str:
  if std is None:
    return f'{100 * mean:.1f}'
  return f'{100 * mean:.1f} ± {100 * std:.1f}'


def _fewshot_key(config) -> str:
  ways = max(int(w) for w in config.eval.fewshot_ways)
  shots = max(int(s) for s in config.eval.fewshot_shots)
  return f'{ways}way_{shots}shot'


def _summary(values: list[float]) -> dict[str, Any]:
  return {'mean': float(np.mean(values)), 'std': float(np.std(values)),
          'per_seed': [float(v) for v in values]}


def run_benchmark(config, workdir: str) -> dict[str, Any]:
  """Pretrains every (variant, seed) not yet done, evaluates all on every eval set, writes
  WORKDIR/benchmark.json and WORKDIR/benchmark.md and returns the table's numbers."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  from crossjepa.training import loop  # pylint: disable=g-import-not-at-top

  b = config.benchmark
  seeds = [int(s) for s in b.seeds]
  kinds = [str(k) for k in b.eval_sets]
  if config.data.source != 'synthetic' and 'scan' in kinds:
    raise ValueError('config.benchmark.eval_sets includes "scan", which only the synthetic source '
                     f'has; data.source is {config.data.source!r}')
  # 1. the evaluation sets (the clean one is the prepared dataset itself)
  eval_configs = {kind: eval_set_config(config, kind) for kind in kinds}
  for kind, c in eval_configs.items():
    if kind != 'clean':
      prepare_lib.prepare(c, workdir)

  # 2. pretraining runs
  # One bar over the runs on the terminal; each run's step bar is transient (crossjepa.console).
  runs: dict[str, list[tuple[int, Any, str]]] = {}
  with console.progress(total=len(b.variants) * len(seeds), desc='benchmark pretrain',
                        unit='run') as bar:
    for name, overrides in b.variants:
      runs[name] = []
      for seed in seeds:
        rc = variant_config(config, dict(overrides), seed)
        path = run_dir(config, workdir, name, seed, rc)
        logging.info('benchmark: pretraining %s seed %d in %s', name, seed, path)
        bar.set_postfix_str(f'{name} s{seed}', refresh=False)
        out = loop.pretrain(rc, path, leave_progress=False)
        logging.info('benchmark: %s seed %d: step %d, final loss %s, %.1f s', name, seed,
                     out['step'], out['final_loss'], out['wall_s'])
        runs[name].append((seed, rc, path))
        bar.update(1)

  # 3. evaluation
  zs = _zero_shot_evaluator(config, workdir)
  fs_key = _fewshot_key(config)
  bs = int(config.eval.batch_size)
  table: dict[str, dict[str, Any]] = {}
  embed = None
  # One bar over the evaluations: every run, the random-init baseline and the teacher, per set.
  num_evals = sum(sum(len(e) for e in runs.values()) + 1
                  + int(bool(b.teacher_probe) and not ec.data.eval_only)
                  for ec in eval_configs.values())
  with console.progress(total=num_evals, desc='benchmark evaluate', unit='probe') as bar:
    for kind, ec in eval_configs.items():
      train_split, test_split = str(ec.data.eval_train_split), str(ec.data.eval_test_split)
      bar.set_postfix_str(kind, refresh=False)

      def batches(split, ec=ec):
        return lambda: pipeline.iterate_split(ec, workdir, split, bs)

      rows: dict[str, Any] = {}
      zs_data = _zero_shot_data(zs, ec, workdir, test_split)
      for name, entries in runs.items():
        probes, shots, zeros = [], [], []
        for seed, rc, path in entries:
          module, enc, step, _ = protocol._encoder_under_test(rc, path)  # pylint: disable=protected-access
          if embed is None:
            embed = features_lib.make_embed_fn(module, enc, pooling=str(config.eval.pooling))
          res = protocol.evaluate_encoder(ec, module, enc, batches(train_split)(),
                                          batches(test_split)(), seed=seed, embed_fn=embed)
          probes.append(res['linear_probe']['accuracy'])
          shots.append(res['fewshot'].get(fs_key, {}).get('mean', float('nan')))
          if zs_data is not None:
            zeros.append(zs.readout(embed.with_params(enc), zs_data)['accuracy'])
          bar.update(1)
        rows[name] = {'linear_probe': _summary(probes), fs_key: _summary(shots),
                      'pretrain_seeds': seeds, 'steps': int(config.train.steps),
                      'overrides': dict(dict(b.variants)[name])}
        if zeros:
          rows[name]['zero_shot'] = _summary(zeros)
      module = export_lib.point_encoder_from_config(config)
      example = protocol.arrays_first_points(ec, workdir, test_split)
      rand = protocol.random_init_baseline(ec, module, example, batches(train_split),
                                           batches(test_split), embed_fn=embed)
      bar.update(1)
      rows['random_init'] = {'linear_probe': rand['linear_probe'],
                             fs_key: rand['fewshot'].get(fs_key, {}),
                             'seeds': rand['protocol']['seeds']}
      if zs_data is not None:
        seeds_init = [int(s) for s in config.eval.seeds]
        rows['random_init']['zero_shot'] = _summary([
            zs.readout(embed.with_params(p), zs_data)['accuracy']
            for s, p in zip(seeds_init, protocol.random_init_params(module, example, seeds_init))])
      if b.teacher_probe and not ec.data.eval_only:
        rows['teacher_2d'] = cached_teacher_probe(ec, workdir, train_split, test_split)
        if zs_data is not None:
          rows['teacher_2d']['zero_shot'] = {'mean': zs.teacher(zs_data)['accuracy']}
        bar.update(1)
      table[kind] = rows

  out = {'table': table, 'fewshot_setting': fs_key, 'eval_sets': kinds,
         'protocol': {
             'probe': 'SVC(kernel=linear), C by stratified k-fold CV on the train split only '
                      f'(grid {list(config.eval.svm_C)}), features concat(max, mean) of final tokens',
             'fewshot': f'{fs_key}, {int(config.eval.fewshot_folds)} folds, support from train, '
                        'queries from test',
             'pretraining': f'{int(config.train.steps)} steps x batch {int(config.train.batch_size)}, '
                            f'seeds {seeds}; mean ± std over pretraining seeds',
             'random_init': f'seeds {list(config.eval.seeds)}',
             'teacher_2d': 'the 2D teacher\'s global embedding (as cached) averaged over the views, '
                           'same probe',
         }}
  if zs is not None:
    rule = zero_shot.PROTOCOL if zs.text is None else zero_shot.TEXT_PROTOCOL
    out['protocol']['zero_shot'] = (f'{rule}: {len(zs.indices)} classes, chance '
                                    f'{100 / len(zs.indices):.1f} %')
  text = format_table(out)
  fileio.atomic_write_text(os.path.join(workdir, 'benchmark.json'), json.dumps(out, indent=2, default=str))
  fileio.atomic_write_text(os.path.join(workdir, 'benchmark.md'), text)
  return out


def _zero_shot_evaluator(config, workdir: str):
  """The benchmark's zero-shot evaluator (evaluation/zero_shot.py), or None where the main run
  has none (the reason logged)."""
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  try:
    return zero_shot.ZeroShot(config, workdir)
  except zero_shot.NotApplicable as e:
    logging.info('benchmark: no %s', e)
    return None


def _zero_shot_data(zs, eval_config, workdir: str, test_split: str):
  """The eval set's test objects for the zero-shot column (with the teacher's cache where the
  records have one), or None when there is no evaluator or the set's classes differ."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  if zs is None:
    return None
  meta = dict(records.open_dataset(eval_config, workdir).info.metadata or {})
  if list(meta.get('class_names') or []) != zs.class_names:
    logging.info('benchmark: no zero-shot on %s: its classes differ from the pretraining records\'',
                 eval_config.data.name)
    return None
  keys = list(zero_shot.ZeroShot.KEYS) + ([] if eval_config.data.eval_only else ['teacher/cls'])
  return pipeline.load_split(eval_config, workdir, test_split, keys)


def cached_teacher_probe(config, workdir: str, train_split: str, test_split: str) -> dict[str, Any]:
  """The benchmark's `teacher_2d` row: evaluation.teacher_probe.probe_cached's accuracy."""
  from crossjepa.evaluation import teacher_probe  # pylint: disable=g-import-not-at-top
  res = teacher_probe.probe_cached(config, workdir, train_split, test_split)
  return {'linear_probe': {'mean': float(res['accuracy'])}, 'protocol': res['protocol']}


def format_table(out: dict[str, Any]) -> str:
  fs_key = out['fewshot_setting']
  kinds = out['eval_sets']
  # A kind's zero-shot column where one of its rows has one (evaluation/zero_shot.py).
  zero = {k: any('zero_shot' in row for row in out['table'][k].values()) for k in kinds}
  head = '| features | ' + ' | '.join(
      f'{k}: linear probe | {k}: {fs_key}' + (f' | {k}: zero-shot' if zero[k] else '')
      for k in kinds) + ' |'
  sep = '|---|' + ''.join('---|---|' + ('---|' if zero[k] else '') for k in kinds)
  names = list(next(iter(out['table'].values())).keys())
  order = ['random_init'] + [n for n in names if n not in ('random_init', 'teacher_2d')]
  if 'teacher_2d' in names:
    order.append('teacher_2d')
  lines = [head, sep]
  labels = {}
  for kind in kinds:
    teacher = out['table'][kind].get('teacher_2d', {}).get('protocol', {}).get('teacher', {})
    if teacher.get('name'):
      labels['teacher_2d'] = f"2D teacher's own probe ({teacher['name']})"
  for name in order:
    cells = []
    for kind in kinds:
      row = out['table'][kind].get(name, {})
      lp = row.get('linear_probe', {})
      fs = row.get(fs_key, {})
      cells.append(_fmt(lp['mean'], lp.get('std')) if 'mean' in lp else '-')
      cells.append(_fmt(fs['mean'], fs.get('std')) if 'mean' in fs else '-')
      if zero[kind]:
        zs = row.get('zero_shot', {})
        cells.append(_fmt(zs['mean'], zs.get('std')) if 'mean' in zs else '-')
    lines.append(f'| {labels.get(name, name)} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  for key, value in out['protocol'].items():
    lines.append(f'- {key}: {value}')
  return '\n'.join(lines) + '\n'
