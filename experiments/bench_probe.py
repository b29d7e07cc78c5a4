"""The linear probe's cross-validation fits on threads (eval.svm_workers) against one at a time,
in one process, on synthetic features of ShapeNet-55's shape.

    .venv/bin/python experiments/bench_probe.py [--config=configs/paper.py] [--train=3000] \
        [--test=1000] [--workers=0] [--repeats=1] [--out=FILE]

Features: about --train + --test objects of 55 classes, 576-d (the paper encoder's concat(max,
mean) of 288-d tokens), class sizes falling as 1/rank like ShapeNet-55's (at least 8 a class),
class means 0.25 apart in units of the noise (the probe near 93 % at 3,000 objects). The probe
is the config's (evaluation.linear_probe with its C grid, CV folds, classifier,
standardisation), run with workers=1 and with --workers (0 = one per core), alternately,
--repeats times: medians of each,
their ratio, and whether every result (CV scores, C, accuracy, predictions) is the same. Also
one fit's time at the largest and smallest C, and the fits per probe (len(C) x folds + the
refit). Prints one JSON object.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import numpy as np  # noqa: E402

import bench_step  # noqa: E402
from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa.evaluation import linear_probe  # noqa: E402

CLASSES, DIM, SEPARATION = 55, 576, 0.25


def features(n: int, seed: int, means: np.ndarray):
  """n objects (about: at least 8 a class), class k's share 1/(k+1) normalised."""
  p = 1.0 / np.arange(1, CLASSES + 1)
  counts = np.maximum(8, np.round(n * p / p.sum()).astype(int))
  y = np.random.default_rng(seed).permutation(np.repeat(np.arange(CLASSES), counts))
  x = means[y] + np.random.default_rng(seed + 1).normal(size=(len(y), DIM))
  return x.astype(np.float32), y


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default=os.path.join(os.path.dirname(HERE), 'configs', 'paper.py'))
  p.add_argument('--train', type=console.int_arg(200), default=3000, help='train objects')
  p.add_argument('--test', type=console.int_arg(1), default=1000, help='test objects')
  p.add_argument('--workers', type=console.int_arg(0), default=0,
                 help='threads of the compared run (0 = one per core)')
  p.add_argument('--repeats', type=console.int_arg(1), default=1)
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()
  config = bench_step.load_config(args.config)
  kwargs = linear_probe.probe_kwargs(config.eval, int(config.seed))
  means = np.random.default_rng(0).normal(size=(CLASSES, DIM)) * SEPARATION
  train_x, train_y = features(args.train, 1, means)
  test_x, test_y = features(args.test, 3, means)
  threads = linear_probe.worker_count(args.workers)
  forms = {'one_at_a_time': 1, f'threads_{threads}': threads}
  times = {f: [] for f in forms}
  results = {}
  for _ in range(args.repeats):
    for form, workers in forms.items():
      t = time.perf_counter()
      results[form] = linear_probe.linear_probe(train_x, train_y, test_x, test_y,
                                                **{**kwargs, 'workers': workers})
      times[form].append(time.perf_counter() - t)
  one, many = (results[f] for f in forms)
  same = all(one[k] == many[k] for k in ('cv_scores', 'cv_scores_std', 'best_C', 'accuracy')) \
      and bool(np.array_equal(one['predictions'], many['predictions']))
  single = {}
  for c in (min(kwargs['C_grid']), max(kwargs['C_grid'])):
    t = time.perf_counter()
    linear_probe.make_classifier(c, classifier=kwargs['classifier'],
                                 standardize=kwargs['standardize']).fit(train_x, train_y)
    single[repr(c)] = round(time.perf_counter() - t, 2)
  med = {f: float(np.median(v)) for f, v in times.items()}
  names = list(forms)
  fileio.print_json({
      'config': os.path.relpath(args.config), 'classes': CLASSES, 'dim': DIM,
      'train': int(len(train_y)), 'test': int(len(test_y)), 'cores': linear_probe.worker_count(0),
      'classifier': kwargs['classifier'], 'C_grid': list(kwargs['C_grid']),
      'cv_folds': kwargs['cv_folds'], 'fits_per_probe': len(kwargs['C_grid']) * kwargs['cv_folds'] + 1,
      'accuracy': one['accuracy'], 'best_C': one['best_C'], 'repeats': args.repeats,
      'median_s': {f: round(v, 2) for f, v in med.items()},
      f'speedup_{names[1]}_over_{names[0]}': round(med[names[0]] / med[names[1]], 3),
      'same_results': same, 'one_fit_on_all_train_s': single}, args.out)


if __name__ == '__main__':
  main()
