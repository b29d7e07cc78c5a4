"""Side-by-side comparison of the pretraining recipes at equal compute, under one probe protocol.

    .venv/bin/python experiments/compare_recipes.py --workdir=/tmp/compare --steps=300 --seeds=0,1,2
    .venv/bin/python experiments/compare_recipes.py --workdir=/tmp/compare_quick --quick
    # with a converted DINOv2 or an offline teacher (python -m crossjepa.main --mode=teacher):
    .venv/bin/python experiments/compare_recipes.py --workdir=/tmp/compare --teacher=/tmp/run/teacher

Methods (same data, same point encoder, same train.steps and train.batch_size, same seeds):
  crossjepa[random teacher]  the published recipe against a frozen random-init ViT teacher
  crossjepa[teacher]         the same against --teacher (records prepared again with its cache)
  seed                       the design card's reverse direction (ViT context -> EMA point targets)
  seed[vit from teacher]     the same with the ViT started from --teacher (model.vit_init)
  point_jepa                 the in-modal baseline (configs/point_jepa.py's block settings)
  random_init                the same encoder architecture at initialisation (no pretraining)

The records are prepared once per teacher (WORKDIR/shared_<teacher>/data) and every run gets its
own sub-workdir WORKDIR/runs/<method>_s<seed> whose data/ is a symlink to them; a finished run is
reused when the script is run again. Evaluation is crossjepa.evaluation.protocol.evaluate_encoder
(frozen student features = concat(max, mean) of the final tokens, linear SVM with C chosen by CV
on the train split only, few-shot over fixed folds), with the run's seed as the protocol seed.
Collapse diagnostics on the test features: the per-dimension std averaged over dimensions, and the
effective rank exp(H(p)), p = singular values of the centred feature matrix / their sum (Roy &
Vetterli 2007). Writes WORKDIR/compare.md, compare.json and compare.png.
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import flags
from absl import logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from crossjepa import config_util  # noqa: E402  pylint: disable=g-import-not-at-top
from crossjepa import console  # noqa: E402  pylint: disable=g-import-not-at-top
from crossjepa import fileio  # noqa: E402  pylint: disable=g-import-not-at-top
from crossjepa import run as run_lib  # noqa: E402  pylint: disable=g-import-not-at-top

flags.DEFINE_string('workdir', None, 'output folder (shared data, runs, table, JSON, plot)')
flags.DEFINE_string('config', os.path.join(_ROOT, 'configs', 'default.py'), 'base config file')
flags.DEFINE_integer('steps', 300, 'pretraining steps of every method (equal compute)',
                     lower_bound=1)
flags.DEFINE_integer('batch_size', 0, 'train.batch_size of every method (0 = the config\'s)',
                     lower_bound=0)
flags.DEFINE_list('seeds', ['0', '1', '2'], 'pretraining / init / protocol seeds')
flags.DEFINE_string('teacher', '', 'a converted or offline-trained ViT folder (vit_config.json)')
flags.DEFINE_list('methods', [], 'subset of methods to run (default: all that apply)')
flags.DEFINE_integer('num_classes', -1, 'data.synthetic.num_classes override (-1 = the config\'s)',
                     lower_bound=-1)
flags.DEFINE_bool('quick', False, 'tiny sizes (configs/smoke.py geometry, 6 steps, 1 seed)')
flags.DEFINE_bool('svm_standardize', False, 'eval.svm_standardize (StandardScaler fitted on train '
                  'only): a probe check independent of the feature scale; outputs get a _std suffix. '
                  'Finished runs are reused, so this only re-evaluates them.')
FLAGS = flags.FLAGS
flags.register_validator('seeds', lambda v: bool(v) and console.each_parses(console.int_arg(0))(v),
                         'expected comma-separated integers >= 0')


# ------------------------------------------------------------------ configs


def base_config(path: str, *, steps: int, batch_size: int, quick: bool, num_classes: int,
                svm_standardize: bool = False):
  """The shared config: every method differs from it only in recipe / teacher / seed."""
  c = config_util.get_config_file(path)
  if quick:
    c = config_util.get_config_file(os.path.join(_ROOT, 'configs', 'smoke.py'))
    c.train.point_jepa.num_targets = 2   # G = 8: two blocks of <= 2 groups leave 4 for context
  if num_classes >= 0:
    c.data.synthetic.num_classes = num_classes
  c.train.steps = steps
  if batch_size:
    c.train.batch_size = batch_size
  c.train.checkpoint_every = steps       # one checkpoint at the end: nothing else is needed here
  c.train.probe_every = 0
  c.train.log_every = max(1, steps // 20)
  c.teacher.random_init = True
  c.teacher.checkpoint = ''
  c.teacher.feature_stage = ''     # the random ViT teacher: its patch grid
  if not quick:
    # The geometry and crossjepa settings this study was run with (the default has since moved to
    # the ImageNet Lite0 teacher at 160 px and the object target; see experiments/README.md).
    c.data.image_size, c.data.patch_size, c.data.num_views = 84, 14, 6
    c.train.views_per_step, c.train.target, c.train.loss = 2, 'groups', 'smooth_l1'
    c.train.lr, c.train.standardize_target, c.train.normalize_target = 5e-4, 'none', True
    c.eval.params = 'ema'
  c.eval.svm_standardize = bool(svm_standardize)
  return c


def method_config(base, method: str, seed: int, teacher: str):
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict(base.to_dict())
  c.seed = seed
  point_jepa = config_util.get_config_file(os.path.join(_ROOT, 'configs', 'point_jepa.py')).train.point_jepa
  if method.startswith('crossjepa'):
    c.recipe = 'crossjepa'
  elif method.startswith('seed'):
    c.recipe = 'seed'
  elif method == 'point_jepa':
    c.recipe = 'point_jepa'
  else:
    raise ValueError(f'unknown method {method!r}')
  if c.recipe in ('seed', 'point_jepa') and int(c.data.num_groups) >= 32:
    # configs/point_jepa.py's (and configs/seed.py's) block settings, for both in-modal losses
    c.train.point_jepa = ml_collections.ConfigDict(point_jepa.to_dict())
  if method == 'crossjepa[teacher]':
    c.teacher.random_init = False
    c.teacher.checkpoint = teacher
  if method == 'seed[vit from teacher]':
    c.model.vit_init = teacher
  return c


def data_key(method: str) -> str:
  """Which prepared records a method reads (the teacher cache differs; the geometry does not)."""
  return 'teacher' if method == 'crossjepa[teacher]' else 'random'


# ------------------------------------------------------------------ diagnostics


def collapse_diagnostics(x):
  """{'feature_std': mean over dims of the per-dim std, 'effective_rank': exp(entropy)} of x [n,F]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  x = np.asarray(x, np.float64)
  std = float(np.mean(np.std(x, axis=0)))
  s = np.linalg.svd(x - x.mean(0, keepdims=True), compute_uv=False)
  if s.sum() <= 0:
    return {'feature_std': std, 'effective_rank': 1.0}
  p = s / s.sum()
  p = p[p > 0]
  return {'feature_std': std, 'effective_rank': float(np.exp(-np.sum(p * np.log(p))))}


def evaluate_params(config, workdir, module, params, seed, embed_fn=None):
  """Probe + few-shot (protocol.evaluate_encoder) + collapse diagnostics of the test features."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  bs = int(config.eval.batch_size)
  tr, te = str(config.data.eval_train_split), str(config.data.eval_test_split)
  out, arrays = protocol.evaluate_encoder(
      config, module, params, pipeline.iterate_split(config, workdir, tr, bs),
      pipeline.iterate_split(config, workdir, te, bs), seed=seed, embed_fn=embed_fn,
      return_arrays=True)
  out['diagnostics'] = collapse_diagnostics(arrays['test_x'])
  return out


# ------------------------------------------------------------------ runs


def prepare_shared(base, workdir: str, key: str, teacher: str) -> str:
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict(base.to_dict())
  if key == 'teacher':
    c.teacher.random_init = False
    c.teacher.checkpoint = teacher
  shared = os.path.join(workdir, f'shared_{key}')
  start = time.time()
  report = run_lib.run(c, shared, 'prepare')
  logging.info('prepare[%s]: %s in %.1f s', key, report['prepare'].get('splits'), time.time() - start)
  return os.path.join(shared, 'data')


def run_method(base, workdir: str, method: str, seed: int, data_dir: str, teacher: str) -> dict:
  """Pretrains one (method, seed) in its own sub-workdir (resumes / reuses) and evaluates it."""
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.training import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  c = method_config(base, method, seed, teacher)
  slug = method.replace('[', '_').replace(']', '').replace(' ', '_')
  wd = os.path.join(workdir, 'runs', f'{slug}_s{seed}')
  os.makedirs(wd, exist_ok=True)
  link = os.path.join(wd, 'data')
  if not os.path.lexists(link):
    os.symlink(os.path.abspath(data_dir), link)
  start = time.time()
  report = run_lib.run(c, wd, 'pretrain')['pretrain']
  pretrain_s = time.time() - start
  if report.get('final_loss') is None:
    # A finished run reused: its last logged metrics are in metrics.jsonl.
    path = os.path.join(wd, 'metrics.jsonl')
    lines = [json.loads(l) for l in open(path).read().splitlines() if l.strip()] if os.path.exists(path) else []
    lines = [l for l in lines if 'loss' in l]
    if lines:
      report = dict(report, final_loss=lines[-1]['loss'], final_metrics=lines[-1])
  params, ema_params, step = ckpt_lib.restore_params(wd, c)
  enc = export_lib.select_encoder_params(params, ema_params, str(c.eval.params))
  module = export_lib.point_encoder_from_config(c)
  start = time.time()
  ev = evaluate_params(c, wd, module, enc, seed)
  return {'method': method, 'seed': seed, 'recipe': c.recipe, 'step': step,
          'final_loss': report.get('final_loss'),
          'final_metrics': report.get('final_metrics', {}),
          'pretrain_seconds': round(pretrain_s, 1),
          'pretrain_resumed': bool(report.get('resumed')),
          'steps_per_sec': report.get('steps_per_sec'),
          'eval_seconds': round(time.time() - start, 1), **ev}


def run_random_init(base, workdir: str, seed: int, data_dir: str) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  c = method_config(base, 'point_jepa', seed, '')   # geometry only; nothing is trained
  wd = os.path.join(workdir, 'runs', f'random_init_s{seed}')
  os.makedirs(wd, exist_ok=True)
  link = os.path.join(wd, 'data')
  if not os.path.lexists(link):
    os.symlink(os.path.abspath(data_dir), link)
  module = export_lib.point_encoder_from_config(c)
  first = next(iter(pipeline.iterate_split(c, wd, str(c.data.eval_test_split), 1,
                                           keys=('points', 'label'))))
  params = jax.jit(module.init)(jax.random.PRNGKey(seed), first['points'][:1])['params']
  start = time.time()
  ev = evaluate_params(c, wd, module, params, seed)
  return {'method': 'random_init', 'seed': seed, 'recipe': None, 'step': 0, 'final_loss': None,
          'pretrain_seconds': 0.0, 'eval_seconds': round(time.time() - start, 1), **ev}


# ------------------------------------------------------------------ summary


def summarize(rows: list[dict]) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  out = {}
  for method in dict.fromkeys(r['method'] for r in rows):
    rs = [r for r in rows if r['method'] == method]

    def agg(values):
      values = [float(v) for v in values if v is not None]
      if not values:
        return None
      return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values),
              'per_seed': values}

    fewshot = {}
    for setting, first in rs[0]['fewshot'].items():
      if not first.get('skipped'):
        fewshot[setting] = agg([r['fewshot'][setting]['mean'] for r in rs])
    out[method] = {
        'probe_accuracy': agg([r['linear_probe']['accuracy'] for r in rs]),
        'probe_mean_class_accuracy': agg([r['linear_probe'].get('mean_class_accuracy') for r in rs]),
        'fewshot': fewshot,
        'feature_std': agg([r['diagnostics']['feature_std'] for r in rs]),
        'effective_rank': agg([r['diagnostics']['effective_rank'] for r in rs]),
        'final_loss': agg([r['final_loss'] for r in rs]),
        'pretrain_seconds': agg([r['pretrain_seconds'] for r in rs]),
        'seeds': [r['seed'] for r in rs],
    }
  return out


def _fmt(a, digits=3):
  if a is None:
    return '-'
  return f'{a["mean"]:.{digits}f} ± {a["std"]:.{digits}f}' if a['n'] > 1 else f'{a["mean"]:.{digits}f}'


def markdown_table(summary: dict, protocol: dict) -> str:
  settings = list(dict.fromkeys(s for m in summary.values() for s in m['fewshot']))
  head = (['method', 'linear probe acc.'] + [f'few-shot {s}' for s in settings]
          + ['feature std', 'eff. rank', 'final loss', 'pretrain s/run'])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for method, m in summary.items():
    cells = [method, _fmt(m['probe_accuracy'])]
    cells += [_fmt(m['fewshot'].get(s)) for s in settings]
    cells += [_fmt(m['feature_std']), _fmt(m['effective_rank'], 1), _fmt(m['final_loss']),
              _fmt(m['pretrain_seconds'], 0)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  notes = [
      '',
      f'Mean ± population std over seeds {protocol["seeds"]}; {protocol["steps"]} pretraining steps '
      f'at batch {protocol["batch_size"]} for every method; data: {protocol["data"]}.',
      f'Probe: {protocol["probe"]}. Features: {protocol["features"]}.',
      'Diagnostics on the test features: feature std = per-dimension std averaged over dimensions; '
      'eff. rank = exp(entropy of the normalised singular values of the centred feature matrix) '
      f'(at most min(test objects - 1, feature dim {protocol["feature_dim"]})). Final loss values '
      'are not comparable across recipes (different targets).',
  ]
  return '\n'.join(lines + notes) + '\n'


def bar_plot(summary: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  methods = list(summary)
  settings = list(dict.fromkeys(s for m in summary.values() for s in m['fewshot']))
  series = [('linear probe', [summary[m]['probe_accuracy'] for m in methods])]
  series += [(f'few-shot {s}', [summary[m]['fewshot'].get(s) for m in methods]) for s in settings]
  fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(methods)), 4))
  width = 0.8 / len(series)
  for i, (name, values) in enumerate(series):
    xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(methods))]
    means = [v['mean'] if v else 0 for v in values]
    stds = [v['std'] if v else 0 for v in values]
    ax.bar(xs, means, width, yerr=stds, capsize=3, label=name)
  ax.set_xticks(range(len(methods)))
  ax.set_xticklabels(methods, rotation=20, ha='right')
  ax.set_ylabel('test accuracy')
  ax.set_ylim(0, 1)
  ax.legend(fontsize=8)
  ax.set_title('recipes at equal steps (mean ± std over seeds)')
  fig.tight_layout()
  tmp = f'{path}.tmp-{os.getpid()}.png'
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


def compare(workdir: str, *, config_path: str, steps: int, seeds: list[int], teacher: str = '',
            quick: bool = False, batch_size: int = 0, methods: list[str] | None = None,
            num_classes: int = -1, svm_standardize: bool = False) -> dict:
  """Runs every method and seed; writes compare.md / compare.json / compare.png; returns the JSON."""
  import jax  # pylint: disable=g-import-not-at-top
  # Every mistake of the caller's (flags, the config file) is found before anything is written.
  if teacher and not os.path.exists(os.path.join(teacher, 'vit_config.json')):
    raise config_util.ConfigError(f'--teacher={teacher!r}: no vit_config.json there (a folder '
                                  'written by crossjepa.convert_teacher or --mode=teacher)')
  base = base_config(config_path, steps=steps, batch_size=batch_size, quick=quick,
                     num_classes=num_classes, svm_standardize=svm_standardize)
  suffix = '_std' if svm_standardize else ''
  all_methods = ['crossjepa[random teacher]'] + (['crossjepa[teacher]'] if teacher else []) + [
      'seed'] + (['seed[vit from teacher]'] if teacher else []) + ['point_jepa', 'random_init']
  methods = methods or all_methods
  unknown = sorted(set(methods) - set(all_methods))
  if unknown:
    raise config_util.ConfigError(f'--methods: unknown {unknown}; available {all_methods}')
  os.makedirs(workdir, exist_ok=True)
  # Seeds of one recipe compile the same programs: the persistent cache makes repeats cheap.
  jax.config.update('jax_compilation_cache_dir', os.path.join(os.path.abspath(workdir), 'xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  t0 = time.time()
  data = {}
  for key in dict.fromkeys(data_key(m) for m in methods):
    data[key] = prepare_shared(base, workdir, key, teacher)
  prepare_s = time.time() - t0
  rows = []
  for method in methods:
    for seed in seeds:
      logging.info('compare: %s seed %d', method, seed)
      if method == 'random_init':
        rows.append(run_random_init(base, workdir, seed, data['random']))
      else:
        rows.append(run_method(base, workdir, method, seed, data[data_key(method)], teacher))
      r = rows[-1]
      print(f'{method:28s} seed {seed}: probe {r["linear_probe"]["accuracy"]:.3f} '
            f'eff.rank {r["diagnostics"]["effective_rank"]:.1f} '
            f'pretrain {r["pretrain_seconds"]:.0f}s eval {r["eval_seconds"]:.0f}s', flush=True)
  summary = summarize(rows)
  first = rows[0]
  protocol = {
      'seeds': seeds, 'steps': steps, 'batch_size': int(base.train.batch_size),
      'data': (f'{base.data.source} ({base.data.synthetic.kind}), '
               f'{first["features"]["num_train"]} train / {first["features"]["num_test"]} test objects, '
               f'N={base.data.num_points}, G={base.data.num_groups}, K={base.data.group_size}, '
               f'pretrain splits {list(base.data.pretrain_splits)}'),
      'probe': (f'{first["linear_probe"]["protocol"]}' if isinstance(
          first['linear_probe'].get('protocol'), str) else json.dumps(
              first['linear_probe'].get('protocol'), default=str)),
      'features': first['features'].get('encoder', '') + f', pooling {first["features"]["pooling"]}',
      'feature_dim': first['features']['dim'],
      'point_encoder': str(base.model.point), 'config': os.path.abspath(config_path),
      'teacher': teacher or None, 'quick': quick, 'svm_standardize': bool(svm_standardize),
  }
  result = {'summary': summary, 'protocol': protocol, 'runs': rows,
            'seconds': {'prepare': round(prepare_s, 1), 'total': round(time.time() - t0, 1)}}
  table = markdown_table(summary, protocol)
  fileio.atomic_write_text(os.path.join(workdir, f'compare{suffix}.md'), table)
  fileio.atomic_write_text(os.path.join(workdir, f'compare{suffix}.json'),
                json.dumps(result, indent=2, default=str))
  bar_plot(summary, os.path.join(workdir, f'compare{suffix}.png'))
  print(table)
  print(f'total {result["seconds"]["total"]:.0f} s (prepare {prepare_s:.0f} s); '
        f'written to {workdir}/compare{suffix}.{{md,json,png}}')
  return result


def main(argv):
  del argv
  if not FLAGS.workdir:
    console.fail('compare_recipes', '--workdir is required')
  seeds = [int(s) for s in FLAGS.seeds]
  steps = FLAGS.steps
  if FLAGS.quick:
    seeds = seeds[:1]
    steps = min(steps, 6)
  try:
    compare(FLAGS.workdir, config_path=FLAGS.config, steps=steps, seeds=seeds,
            teacher=FLAGS.teacher, quick=FLAGS.quick, batch_size=FLAGS.batch_size,
            methods=FLAGS.methods or None, num_classes=FLAGS.num_classes,
            svm_standardize=FLAGS.svm_standardize)
  except (config_util.ConfigError, run_lib.UserError) as e:  # a config or input that cannot work
    console.fail('compare_recipes', e)


if __name__ == '__main__':
  console.run_app(main, 'compare_recipes')
