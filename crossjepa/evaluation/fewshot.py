"""N-way K-shot few-shot classification on frozen features over fixed folds.

Follows the protocol of Sharma & Kaul (2020) as released for Point-BERT / Point-MAE
(`ModelNetFewshot/<N>way<K>shot/<fold>.pkl`): each fold picks N classes; per class K support
objects from the TRAIN split and `queries` (20 in the papers) query objects from the TEST split;
10 folds; mean +- std of the query accuracy over folds. The papers fine-tune on each fold; here a
linear SVM (`SVC(kernel='linear')`, fixed C = eval.fewshot_C, no selection of anything) is trained
on the support features, as CrossPoint's linear few-shot evaluation does; the papers' fine-tuned
version on the same folds is finetune.finetune_fewshot (eval.finetune.fewshot).

The folds are drawn from the LABELS only, by `numpy.random.default_rng(seed)`: every encoder
evaluated with the same seed and data sees exactly the same folds (which is what "fixed folds"
means), and the features never influence which objects are drawn.
"""
from __future__ import annotations

import numpy as np

from crossjepa.evaluation import linear_probe as lp


def draw_folds(train_y: np.ndarray, test_y: np.ndarray, *, ways: int, shots: int, queries: int,
               folds: int, seed: int) -> tuple[list[dict], str | None]:
  """Returns ([{'classes', 'support', 'query'} index arrays per fold], None) or ([], reason)."""
  train_y, test_y = np.asarray(train_y), np.asarray(test_y)
  eligible = [k for k in np.unique(train_y)
              if k >= 0 and np.sum(train_y == k) >= shots and np.sum(test_y == k) >= queries]
  if ways < 2 or shots < 1 or queries < 1 or folds < 1:
    return [], f'invalid setting ways={ways} shots={shots} queries={queries} folds={folds}'
  if len(eligible) < ways:
    return [], (f'{ways}-way {shots}-shot needs {ways} classes with >= {shots} train and '
                f'>= {queries} test objects; only {len(eligible)} class(es) qualify')
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(folds):
    classes = np.sort(rng.choice(np.asarray(eligible), size=ways, replace=False))
    support = np.concatenate([rng.choice(np.flatnonzero(train_y == k), shots, replace=False)
                              for k in classes])
    query = np.concatenate([rng.choice(np.flatnonzero(test_y == k), queries, replace=False)
                            for k in classes])
    out.append({'classes': classes, 'support': support, 'query': query})
  return out, None


def fewshot(train_x, train_y, test_x, test_y, *, ways: int, shots: int, queries: int, folds: int,
            seed: int, C: float = 0.01, standardize: bool = False) -> dict:
  """Returns {'mean', 'std', 'per_fold', 'protocol'} or {'skipped': True, 'reason', 'protocol'}.

  std is the population std (ddof=0) over folds, as Point-BERT/Point-MAE report.
  """
  train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
  train_y, test_y = np.asarray(train_y), np.asarray(test_y)
  if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
    raise ValueError(f'fewshot: features/labels of different lengths: train {train_x.shape} vs '
                     f'{train_y.shape}, test {test_x.shape} vs {test_y.shape}')
  protocol = {
      'ways': int(ways), 'shots': int(shots), 'queries_per_class': int(queries),
      'folds': int(folds), 'seed': int(seed),
      'support': 'train split', 'query': 'test split',
      'classifier': f"SVC(kernel='linear', C={C}) on the support set, fixed C (nothing selected)",
      'standardize': 'StandardScaler fitted on the support set' if standardize else 'none',
      'fold_draw': 'numpy default_rng(seed) over labels only: classes, then support, then queries',
      'std': 'population std over folds (ddof=0)',
  }
  fold_list, reason = draw_folds(train_y, test_y, ways=ways, shots=shots, queries=queries,
                                 folds=folds, seed=seed)
  if reason is not None:
    return {'skipped': True, 'reason': reason, 'protocol': protocol}
  per_fold = []
  for fold in fold_list:
    clf = lp._fit(train_x[fold['support']], train_y[fold['support']], C,  # pylint: disable=protected-access
                  classifier='svc_linear', standardize=standardize, seed=seed)
    pred = clf.predict(test_x[fold['query']])
    per_fold.append(float(np.mean(pred == test_y[fold['query']])))
  return {'mean': float(np.mean(per_fold)), 'std': float(np.std(per_fold)),
          'per_fold': per_fold, 'protocol': protocol}
