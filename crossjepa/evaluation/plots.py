"""Figures of a run: training curves, t-SNE of frozen features, probe confusion matrix.

matplotlib with the Agg backend (no display); every PNG is written through fileio.atomic_write, so
a partially written figure is never left behind.
"""
from __future__ import annotations

import json
import math
import os
from typing import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-order

from crossjepa import fileio  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _save(fig, out_png: str) -> str:
  out_png = os.path.abspath(out_png)
  try:
    with fileio.atomic_write(out_png, 'wb') as f:
      fig.savefig(f, format='png', dpi=120, bbox_inches='tight')
  finally:
    plt.close(fig)
  return out_png


def read_metrics(metrics_jsonl_path: str) -> list[dict]:
  rows = []
  with open(metrics_jsonl_path) as f:
    for i, line in enumerate(f, 1):
      line = line.strip()
      if not line:
        continue
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{metrics_jsonl_path}:{i}: not a JSON object: {e}') from e
  return rows


def _is_accuracy(key: str) -> bool:
  """probe/accuracy, probe/fewshot_acc...: fractions in [0, 1] that share one axis."""
  return 'acc' in key.rsplit('/', 1)[-1]


def curve_series(rows: Sequence[dict]) -> dict[str, dict[str, list[tuple[float, float]]]]:
  """metrics.jsonl rows -> {axis: {key: [(step, value), ...]}} as `plot_curves` draws them.

  Axes: 'loss' (the training loss), 'probe accuracy' (probe/* accuracies, fractions) and
  'probe hyperparameters' (every other probe/* value, e.g. probe/best_C: the C the probe's
  cross-validation chose, on its own log axis, not among the accuracies). Empty axes are left out.
  """
  def points(key):
    return [(r['step'], r[key]) for r in rows if isinstance(r.get(key), (int, float))
            and not isinstance(r.get(key), bool) and math.isfinite(r[key])]

  probe_keys = sorted({k for r in rows for k in r if k.startswith('probe/')})
  axes = {'loss': {'loss': points('loss')},
          'probe accuracy': {k: points(k) for k in probe_keys if _is_accuracy(k)},
          'probe hyperparameters': {k: points(k) for k in probe_keys if not _is_accuracy(k)}}
  return {name: {k: v for k, v in series.items() if v} for name, series in axes.items()
          if name == 'loss' or any(series.values())}


def curves_figure(rows: Sequence[dict]):
  """The matplotlib figure of `curve_series(rows)`: one panel per axis, left to right."""
  series = curve_series(rows)
  titles = {'loss': ('pretraining loss', 'training loss'),
            'probe accuracy': ('linear probe during pretraining', 'accuracy'),
            'probe hyperparameters': ('probe: selected hyperparameters', 'value')}
  fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 4), squeeze=False)
  for ax, (name, lines) in zip(axes[0], series.items()):
    for key, pts in lines.items():
      ax.plot(*zip(*pts), marker='o' if name != 'loss' else None, label=key)
    ax.set_title(titles[name][0])
    ax.set_ylabel(titles[name][1])
    if name == 'probe hyperparameters' and all(v > 0 for pts in lines.values() for _, v in pts):
      ax.set_yscale('log')   # C comes from a log-spaced grid
      ax.set_ylabel('value (log scale)')
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if name != 'loss':
      ax.legend(fontsize=8)
  return fig


def plot_curves(metrics_jsonl_path: str, out_png: str) -> str:
  """Loss over steps, and the probe/* metrics if any ran (accuracies; best_C on its own axis)."""
  rows = [r for r in read_metrics(metrics_jsonl_path) if 'step' in r]
  if not rows:
    raise ValueError(f'{metrics_jsonl_path}: no rows with a `step`')
  return _save(curves_figure(rows), out_png)


def plot_tsne(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None,
              out_png: str, seed: int = 0, title: str = 't-SNE of frozen features') -> str:
  """2-D t-SNE (sklearn, PCA init, perplexity min(30, (n-1)/3)) coloured by class."""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
  features = np.asarray(features, np.float64)
  labels = np.asarray(labels)
  n = features.shape[0]
  if n < 5:
    raise ValueError(f'plot_tsne: need at least 5 points, got {n}')
  perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
  # Barnes-Hut's thread start-up dominates for small n (20 s for 24 points on 2 busy cores);
  # the exact method is O(n^2) but fast below a thousand points.
  method = 'exact' if n <= 1000 else 'barnes_hut'
  emb = TSNE(n_components=2, perplexity=perplexity, init='pca', random_state=seed,
             method=method).fit_transform(features)
  fig, ax = plt.subplots(figsize=(7, 6))
  classes = np.unique(labels)
  cmap = plt.get_cmap('tab20' if len(classes) > 10 else 'tab10')
  for i, k in enumerate(classes):
    sel = labels == k
    name = class_names[k] if class_names is not None and 0 <= k < len(class_names) else str(k)
    ax.scatter(emb[sel, 0], emb[sel, 1], s=8, color=cmap(i % cmap.N), label=name)
  ax.set_title(f'{title} (perplexity {perplexity:.0f}, seed {seed})')
  ax.set_xticks([])
  ax.set_yticks([])
  if len(classes) <= 40:
    ax.legend(fontsize=6, markerscale=2, loc='center left', bbox_to_anchor=(1.0, 0.5))
  return _save(fig, out_png)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
  return cm


def plot_confusion(y_true, y_pred, class_names: Sequence[str] | None, out_png: str,
                   title: str = 'linear probe, test split') -> str:
  """Row-normalised confusion matrix (rows: true class), with the counts' accuracy in the title."""
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  if y_true.shape != y_pred.shape:
    raise ValueError(f'plot_confusion: y_true {y_true.shape} and y_pred {y_pred.shape} differ')
  k = int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1
  if class_names is not None:
    k = max(k, len(class_names))
  cm = confusion_matrix(y_true, y_pred, k)
  norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(max(5, 0.3 * k + 2), max(4, 0.3 * k + 1.5)))
  im = ax.imshow(norm, cmap='Blues', vmin=0, vmax=1)
  names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
  names += [str(i) for i in range(len(names), k)]
  ax.set_xticks(range(k))
  ax.set_yticks(range(k))
  ax.set_xticklabels(names, rotation=90, fontsize=6 if k > 20 else 8)
  ax.set_yticklabels(names, fontsize=6 if k > 20 else 8)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  if k <= 20:
    for i in range(k):
      for j in range(k):
        if cm[i, j]:
          ax.text(j, i, str(cm[i, j]), ha='center', va='center', fontsize=7,
                  color='white' if norm[i, j] > 0.5 else 'black')
  acc = float(np.mean(y_true == y_pred)) if y_true.size else float('nan')
  ax.set_title(f'{title}: accuracy {acc:.3f} (n={y_true.size})')
  fig.colorbar(im, ax=ax, fraction=0.046)
  return _save(fig, out_png)
