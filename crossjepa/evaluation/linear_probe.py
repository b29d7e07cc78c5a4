"""Linear SVM probe on frozen features, with C chosen by cross-validation on the train split only.

Protocol (returned beside the accuracy, so no number travels without it):
- classifier: `SVC(kernel='linear')` (libsvm, one-vs-one), as Point-JEPA, point2vec, I2P-MAE and
  CrossPoint use (shared/DATASETS.md); `LinearSVC` (liblinear, one-vs-rest, squared hinge, as
  Point-BERT) is available with classifier='linear_svc'.
- features are used as they come (no standardisation) unless `standardize=True`; then a
  StandardScaler is fitted inside every CV fold and on the full train split, never on test.
- C from `C_grid` by StratifiedKFold(k, shuffle, random_state=seed) on the train split only:
  the best mean CV accuracy wins, ties to the smallest C (the most regularised). The model is then
  refitted on the whole train split and the test split is predicted exactly once.

The len(C_grid) x k cross-validation fits are independent: with `workers` > 1 and the libsvm
classifier they run on that many threads (libsvm fits and predicts without the GIL, and uses no
random numbers without probability=True), so the scores, C and predictions are the same as one at
a time, bit for bit (tests/test_evaluation.py). liblinear ('linear_svc') draws from one
process-wide random generator: its fits stay one at a time. Each running fit holds its fold's
features (float64, and a standardised copy) and libsvm's 200 MB kernel cache.

The field mostly reports a C tuned on the test set (or a fixed C copied from a paper): the numbers
here are lower-variance-of-selection and honest, not comparable to those without saying so.
"""
from __future__ import annotations

import concurrent.futures
import warnings
from typing import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from crossjepa.data import per_object

CLASSIFIERS = {
    'svc_linear': "SVC(kernel='linear')",
    'linear_svc': 'LinearSVC(squared hinge, one-vs-rest)',
}


MAX_AUTO_WORKERS = 16   # eval.svm_workers = 0 stops here: each running fit holds its fold and
                        # its standardised copy (ShapeNet-55 train: ~300 MB in float64) and
                        # libsvm's 200 MB kernel cache


def worker_count(workers: int) -> int:
  """Threads for the CV fits: `workers`, or for 0 one per usable CPU core (at most
  MAX_AUTO_WORKERS)."""
  if workers < 0:
    raise ValueError(f'eval.svm_workers: expected an integer >= 0 (0 = one per core), got {workers}')
  return per_object.usable_cores(MAX_AUTO_WORKERS) if workers == 0 else workers


def make_classifier(C: float, *, classifier: str = 'svc_linear', standardize: bool = False,
                    seed: int = 0):
  if classifier == 'svc_linear':
    # libsvm's linear SVC is deterministic; random_state only matters for probability=True.
    clf = SVC(kernel='linear', C=C, random_state=seed)
  elif classifier == 'linear_svc':
    clf = LinearSVC(C=C, random_state=seed, max_iter=10000, dual='auto')
  else:
    raise ValueError(f'eval.svm_classifier: unknown classifier {classifier!r}; expected one of '
                     f'{sorted(CLASSIFIERS)}')
  return make_pipeline(StandardScaler(), clf) if standardize else clf


def _check_xy(name: str, x, y) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(x, np.float64)
  y = np.asarray(y)
  if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
    raise ValueError(f'linear_probe: {name} features must be [n,F] and labels [n], got '
                     f'{x.shape} and {y.shape}')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'linear_probe: {name} features contain non-finite values')
  if np.any(y < 0):
    raise ValueError(f'linear_probe: {name} labels contain -1 (unlabelled objects)')
  return x, y


def _fit(x, y, C, *, classifier, standardize, seed):
  clf = make_classifier(C, classifier=classifier, standardize=standardize, seed=seed)
  if classifier != 'linear_svc':
    return clf.fit(x, y)            # libsvm: no iteration cap, no ConvergenceWarning
  with warnings.catch_warnings():   # (process-wide: only where fits run one at a time)
    # A small-C liblinear fit may stop at max_iter; the CV score then speaks for that C.
    warnings.simplefilter('ignore', ConvergenceWarning)
    clf.fit(x, y)
  return clf


def probe_kwargs(eval_config, seed: int) -> dict:
  """The linear-probe settings of `config.eval` as `linear_probe` keyword arguments: the one place
  that reads them, so every probe (evaluate, the training-time probe, benchmark, the teacher's)
  uses the same protocol."""
  e = eval_config
  return {'C_grid': tuple(float(c) for c in e.svm_C), 'cv_folds': int(e.cv_folds),
          'seed': int(seed), 'classifier': str(e.svm_classifier),
          'standardize': bool(e.svm_standardize), 'workers': int(e.get('svm_workers', 0))}


def linear_probe(train_x, train_y, test_x, test_y, *, C_grid: Sequence[float], cv_folds: int,
                 seed: int, classifier: str = 'svc_linear', standardize: bool = False,
                 workers: int = 1) -> dict:
  """Fits the probe; returns accuracy, best_C, cv_scores, predictions and the protocol.
  `workers`: threads for the CV fits (0 = one per core; module docstring), the same results.

  Returns a dict with: accuracy (test, fraction), mean_class_accuracy (test), best_C,
  cv_scores {str(C): mean CV accuracy}, cv_scores_std, predictions (np.ndarray [n_test] of labels;
  drop it before writing JSON), num_train, num_test, num_classes, protocol.
  """
  train_x, train_y = _check_xy('train', train_x, train_y)
  test_x, test_y = _check_xy('test', test_x, test_y)
  if train_x.shape[1] != test_x.shape[1]:
    raise ValueError(f'linear_probe: train features have {train_x.shape[1]} dims, test '
                     f'{test_x.shape[1]}')
  C_grid = sorted(float(c) for c in C_grid)
  if not C_grid or any(c <= 0 for c in C_grid):
    raise ValueError(f'eval.svm_C: need a non-empty grid of positive values, got {C_grid}')
  classes, counts = np.unique(train_y, return_counts=True)
  if len(classes) < 2:
    raise ValueError(f'linear_probe: the train split has {len(classes)} class(es); need >= 2')
  unseen = sorted(set(np.unique(test_y).tolist()) - set(classes.tolist()))
  # StratifiedKFold needs every class in every fold; fewer folds (never fewer than 2) when the
  # smallest class cannot fill k of them. The folds actually used are recorded.
  folds = int(min(cv_folds, counts.min()))
  if folds < 2:
    raise ValueError(f'linear_probe: class {classes[counts.argmin()]} has {counts.min()} train '
                     'example(s); cross-validating C needs at least 2 per class')
  cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
  splits = list(cv.split(train_x, train_y))

  def fold_score(job: tuple[float, int]) -> float:
    c, fold = job
    tr, va = splits[fold]
    clf = _fit(train_x[tr], train_y[tr], c, classifier=classifier, standardize=standardize,
               seed=seed)
    return float(np.mean(clf.predict(train_x[va]) == train_y[va]))

  jobs = [(c, fold) for c in C_grid for fold in range(len(splits))]
  threads = min(worker_count(int(workers)), len(jobs)) if classifier == 'svc_linear' else 1
  if threads > 1:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      # A fit that raises, or Ctrl-C: map's iterator cancels the fits not started, so only the
      # running ones finish (a libsvm fit cannot be stopped midway).
      scores = dict(zip(jobs, pool.map(fold_score, jobs)))
  else:
    scores = {job: fold_score(job) for job in jobs}
  cv_scores, cv_std = {}, {}
  for c in C_grid:
    per_fold = [scores[(c, fold)] for fold in range(len(splits))]
    cv_scores[repr(c)] = float(np.mean(per_fold))
    cv_std[repr(c)] = float(np.std(per_fold))
  # Ties to the smallest C: iterate the sorted grid and keep the first maximum.
  best_c = max(C_grid, key=lambda c: (cv_scores[repr(c)], -c))
  clf = _fit(train_x, train_y, best_c, classifier=classifier, standardize=standardize, seed=seed)
  pred = clf.predict(test_x)
  per_class = [float(np.mean(pred[test_y == k] == k)) for k in np.unique(test_y)]
  return {
      'accuracy': float(np.mean(pred == test_y)),
      'mean_class_accuracy': float(np.mean(per_class)),
      'best_C': best_c,
      'cv_scores': cv_scores,
      'cv_scores_std': cv_std,
      'predictions': pred,
      'num_train': int(train_x.shape[0]),
      'num_test': int(test_x.shape[0]),
      'num_classes': int(len(classes)),
      'protocol': {
          'classifier': CLASSIFIERS.get(classifier, classifier),
          'standardize': (('StandardScaler fitted on train only (inside each CV fold)')
                          if standardize else 'none (raw features)'),
          'C_grid': C_grid,
          'cv': f'StratifiedKFold(k={folds}, shuffle=True, random_state={seed}) on train only',
          'cv_folds_requested': int(cv_folds),
          'selection': 'best mean CV accuracy, ties to the smallest C; refit on all of train; '
                       'test predicted once',
          'feature_dim': int(train_x.shape[1]),
          'test_classes_unseen_in_train': unseen,
          'seed': int(seed),
      },
  }
