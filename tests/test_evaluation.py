"""Evaluation protocol: pooling, linear SVM probe (CV on train only), few-shot, fine-tuning, plots."""
import json
import os
import threading
import time

import jax
import numpy as np
import pytest

from configs import default as default_config
from crossjepa.evaluation import features as features_lib
from crossjepa.evaluation import fewshot as fewshot_lib
from crossjepa.evaluation import finetune as finetune_lib
from crossjepa.evaluation import linear_probe as probe_lib
from crossjepa.evaluation import plots
from crossjepa.evaluation import protocol
from crossjepa.models import point as point_lib

N_POINTS, GROUPS, K = 64, 8, 8


def blobs(n_per_class, classes, dim, sep, seed):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(classes, dim)) * sep
  y = np.repeat(np.arange(classes), n_per_class)
  x = means[y] + rng.normal(size=(len(y), dim))
  return x.astype(np.float32), y


@pytest.fixture(scope='module')
def encoder():
  # The tiny variant with one block: compile time dominates these tests on a busy CPU.
  module = point_lib.point_encoder('tiny', num_groups=GROUPS, group_size=K, depth=1)
  params = jax.jit(module.init)(jax.random.PRNGKey(0),
                                np.zeros((1, N_POINTS, 3), np.float32))['params']
  return module, params


def clouds(n, seed):
  """Two easy classes: points on a sphere (0) or on a flat square (1), unit-sphere scale."""
  rng = np.random.default_rng(seed)
  y = np.arange(n) % 2
  pts = rng.normal(size=(n, N_POINTS, 3))
  pts /= np.linalg.norm(pts, axis=-1, keepdims=True)
  flat = rng.uniform(-0.7, 0.7, size=(n, N_POINTS, 3))
  flat[..., 2] = 0.0
  pts = np.where(y[:, None, None] == 1, flat, pts)
  return pts.astype(np.float32), y


# ------------------------------------------------------------------ linear probe


def test_linear_probe_separable_and_random_labels():
  x, y = blobs(30, 4, 16, sep=6.0, seed=0)
  xt, yt = blobs(20, 4, 16, sep=6.0, seed=0)   # same means (same seed), fresh noise below
  xt = xt + np.random.default_rng(1).normal(size=xt.shape).astype(np.float32) * 0.1
  r = probe_lib.linear_probe(x, y, xt, yt, C_grid=(0.01, 0.1, 1.0), cv_folds=3, seed=0)
  assert r['accuracy'] >= 0.98
  assert set(r['cv_scores']) == {'0.01', '0.1', '1.0'}
  assert r['predictions'].shape == (80,)
  assert 'train only' in r['protocol']['cv'] and r['protocol']['classifier'] == "SVC(kernel='linear')"
  # Random labels: nothing to learn, test accuracy near chance (1/4).
  rng = np.random.default_rng(2)
  xr = rng.normal(size=(200, 16)).astype(np.float32)
  r2 = probe_lib.linear_probe(xr[:120], rng.integers(0, 4, 120), xr[120:], rng.integers(0, 4, 80),
                              C_grid=(0.01, 1.0), cv_folds=3, seed=0)
  assert 0.1 <= r2['accuracy'] <= 0.42


def test_linear_probe_cv_never_sees_test_and_is_deterministic():
  x, y = blobs(12, 3, 8, sep=1.0, seed=3)     # overlapping: CV scores differ across C
  xt, yt = blobs(10, 3, 8, sep=1.0, seed=4)
  kw = dict(C_grid=(0.001, 0.01, 0.1, 1.0), cv_folds=3, seed=7)
  a = probe_lib.linear_probe(x, y, xt, yt, **kw)
  b = probe_lib.linear_probe(x, y, np.random.default_rng(0).normal(size=xt.shape),
                             np.random.default_rng(0).permutation(yt), **kw)
  assert a['best_C'] == b['best_C'] and a['cv_scores'] == b['cv_scores']
  c = probe_lib.linear_probe(x, y, xt, yt, **kw)
  assert c['accuracy'] == a['accuracy'] and np.array_equal(c['predictions'], a['predictions'])
  # The chosen C is the argmax of the CV scores, ties to the smallest C.
  best = max(a['cv_scores'].values())
  assert a['best_C'] == min(float(k) for k, v in a['cv_scores'].items() if v == best)


def test_linear_probe_errors():
  x, y = blobs(3, 2, 4, sep=3.0, seed=0)
  with pytest.raises(ValueError, match='at least 2 per class'):
    probe_lib.linear_probe(x[:4], np.array([0, 0, 0, 1]), x, y, C_grid=(1.0,), cv_folds=2, seed=0)
  with pytest.raises(ValueError, match='svm_C'):
    probe_lib.linear_probe(x, y, x, y, C_grid=(), cv_folds=2, seed=0)


def test_linear_probe_threads_give_the_same_results(monkeypatch):
  """eval.svm_workers: the CV fits of the libsvm probe on several threads give the same scores,
  C, accuracy and predictions, bit for bit, as one at a time; they do run on several threads;
  liblinear's stay on one (its random generator is process-wide)."""
  x, y = blobs(40, 6, 24, sep=0.6, seed=5)    # overlapping: the CV scores differ across C
  xt, yt = blobs(15, 6, 24, sep=0.6, seed=6)
  threads = []
  fit = probe_lib._fit

  def recording_fit(*args, **kwargs):
    threads.append(threading.get_ident())
    time.sleep(0.05)                          # every fit outlasts the start of 4 threads
    return fit(*args, **kwargs)
  monkeypatch.setattr(probe_lib, '_fit', recording_fit)
  kw = dict(C_grid=(0.001, 0.01, 0.1, 1.0), cv_folds=3, seed=3, standardize=True)
  results = {}
  for classifier in ('svc_linear', 'linear_svc'):
    for workers in (1, 4):
      threads.clear()
      r = probe_lib.linear_probe(x, y, xt, yt, classifier=classifier, workers=workers, **kw)
      results[classifier, workers] = (r, len(set(threads[:-1])), len(threads))
  for classifier in ('svc_linear', 'linear_svc'):
    one, many = results[classifier, 1][0], results[classifier, 4][0]
    assert len(set(one['cv_scores'].values())) > 1, one['cv_scores']
    for key in ('cv_scores', 'cv_scores_std', 'best_C', 'accuracy', 'mean_class_accuracy'):
      assert one[key] == many[key], (classifier, key)
    np.testing.assert_array_equal(one['predictions'], many['predictions'])
  assert results['svc_linear', 1][1:] == (1, 13)        # 4 C x 3 folds, then the refit
  assert results['svc_linear', 4][1:] == (4, 13)        # the CV fits on 4 threads
  assert results['linear_svc', 4][1:] == (1, 13)


def test_linear_probe_threads_stop_at_the_first_error(monkeypatch):
  """A fit that raises (or Ctrl-C in the main thread) drops the CV fits not yet started: only
  those already running finish."""
  x, y = blobs(10, 2, 4, sep=3.0, seed=0)
  fit, calls = probe_lib._fit, []

  def failing_fit(x, y, C, **kwargs):
    calls.append(C)
    if C == 0.01:                          # the first C's folds: the first results map yields
      raise ValueError('bad fold')
    time.sleep(1.0)                        # slack for a slow main thread on a busy machine
    return fit(x, y, C, **kwargs)
  monkeypatch.setattr(probe_lib, '_fit', failing_fit)
  with pytest.raises(ValueError, match='bad fold'):
    probe_lib.linear_probe(x, y, x, y, C_grid=(0.01, 0.1, 1.0, 10.0, 100.0), cv_folds=3, seed=0,
                           workers=2)
  time.sleep(1.5)                          # what was still running has finished by now
  assert len(calls) <= 6, calls            # of 15 CV fits: at most the 3 failed and 3 more


def test_worker_count():
  cores = len(os.sched_getaffinity(0))
  assert probe_lib.worker_count(0) == max(1, min(cores, probe_lib.MAX_AUTO_WORKERS))
  assert probe_lib.worker_count(3) == 3
  with pytest.raises(ValueError, match=r'eval.svm_workers: expected an integer >= 0'):
    probe_lib.worker_count(-1)
  config = default_config.get_config()
  assert probe_lib.probe_kwargs(config.eval, 0)['workers'] == 0


# ------------------------------------------------------------------ few-shot


def test_fewshot_separable_random_and_skip():
  x, y = blobs(20, 8, 16, sep=8.0, seed=0)
  xt, yt = x + 0.05, y
  r = fewshot_lib.fewshot(x, y, xt, yt, ways=5, shots=3, queries=5, folds=10, seed=0)
  assert r['mean'] >= 0.99 and r['std'] <= 0.01 and len(r['per_fold']) == 10
  rng = np.random.default_rng(0)
  rx, rxt = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
  ry, ryt = np.arange(400) % 5, np.arange(400) % 5
  r = fewshot_lib.fewshot(rx, ry, rxt, ryt, ways=5, shots=5, queries=10, folds=10, seed=0)
  assert abs(r['mean'] - 0.2) < 0.08
  s = fewshot_lib.fewshot(x, y, xt, yt, ways=10, shots=3, queries=5, folds=2, seed=0)
  assert s['skipped'] and 'only 8 class(es)' in s['reason']


def test_fewshot_folds_fixed_by_seed_and_labels_only():
  y = np.arange(60) % 6
  f1, _ = fewshot_lib.draw_folds(y, y, ways=3, shots=2, queries=3, folds=4, seed=5)
  f2, _ = fewshot_lib.draw_folds(y, y, ways=3, shots=2, queries=3, folds=4, seed=5)
  f3, _ = fewshot_lib.draw_folds(y, y, ways=3, shots=2, queries=3, folds=4, seed=6)
  for a, b in zip(f1, f2):
    assert all(np.array_equal(a[k], b[k]) for k in a)
  assert any(not np.array_equal(a['support'], b['support']) for a, b in zip(f1, f3))
  for f in f1:   # support and queries belong to the fold's classes, `shots`/`queries` per class
    assert np.array_equal(np.bincount(y[f['support']], minlength=6)[f['classes']], [2, 2, 2])
    assert np.array_equal(np.bincount(y[f['query']], minlength=6)[f['classes']], [3, 3, 3])


# ------------------------------------------------------------------ features


def test_pooling_matches_numpy_and_padding(encoder):
  module, params = encoder
  pts, y = clouds(5, seed=0)      # 5 rows over 8 devices: padded inside, sliced back
  embed = features_lib.make_embed_fn(module, params)
  assert embed.num_shards == len(jax.devices())
  f = embed(pts)
  tokens = np.asarray(jax.jit(module.apply)({'params': params}, pts)['tokens'])
  ref = np.concatenate([tokens.max(1), tokens.mean(1)], -1)
  assert f.shape == (5, 2 * module.width)
  np.testing.assert_allclose(f, ref, atol=1e-5)
  # extract_features drops the padded rows of a padded last batch.
  batch = {'points': np.concatenate([pts, pts[:3]]), 'label': np.concatenate([y, [9, 9, 9]])}
  valid = np.array([True] * 5 + [False] * 3)
  fx, fy = features_lib.extract_features(embed, [(batch, valid)])
  np.testing.assert_allclose(fx, ref, atol=1e-5)
  assert np.array_equal(fy, y)
  # max / mean poolings alone, and the same params through with_params (no recompile needed).
  np.testing.assert_allclose(features_lib.make_embed_fn(module, params, pooling='mean')(pts),
                             tokens.mean(1), atol=1e-5)
  with pytest.raises(ValueError, match='no CLS token'):
    features_lib.make_embed_fn(module, params, pooling='cls')(pts)


def small_config():
  c = default_config.get_config()
  c.eval.svm_C = (0.1, 1.0)
  c.eval.cv_folds = 2
  c.eval.fewshot_ways = (2,)
  c.eval.fewshot_shots = (2,)
  c.eval.fewshot_queries = 2
  c.eval.fewshot_folds = 3
  c.eval.seeds = (0, 1)
  ft = c.eval.finetune
  ft.steps = 24
  ft.batch_size = 16
  ft.lr = 2e-3
  ft.warmup_steps = 3
  ft.votes = 2
  ft.head_hidden = 32
  ft.head_dropout = 0.0
  return c


def test_evaluate_encoder_and_random_init_baseline(encoder):
  module, _ = encoder
  config = small_config()
  tr_pts, tr_y = clouds(16, seed=1)
  te_pts, te_y = clouds(8, seed=2)

  def batches(pts, y):
    return [({'points': pts[i:i + 8], 'label': y[i:i + 8]}, np.ones(8, bool))
            for i in range(0, len(y), 8)]

  base = protocol.random_init_baseline(config, module, tr_pts[:1], lambda: batches(tr_pts, tr_y),
                                       lambda: batches(te_pts, te_y))
  assert base['protocol']['seeds'] == [0, 1] and len(base['per_seed']) == 2
  accs = [r['linear_probe']['accuracy'] for r in base['per_seed']]
  assert base['accuracy'] == pytest.approx(np.mean(accs))
  assert base['accuracy_std'] == pytest.approx(np.std(accs))
  assert base['accuracy'] >= 0.9   # sphere vs square is easy even for random features
  r = base['per_seed'][0]
  assert r['features']['dim'] == 2 * module.width and r['features']['pooling'] == 'max+mean'
  assert '2way_2shot' in r['fewshot'] and 'predictions' not in r['linear_probe']
  json.dumps(base)   # JSON-ready


def test_finetune_beats_chance_and_reports_voting_separately(encoder):
  module, params = encoder
  config = small_config()
  tr_pts, tr_y = clouds(32, seed=3)
  te_pts, te_y = clouds(12, seed=4)
  r = finetune_lib.finetune(config, module, params, {'points': tr_pts, 'label': tr_y},
                            {'points': te_pts, 'label': te_y}, seed=0)
  assert r['accuracy'] >= 0.8 and r['accuracy_vote'] is not None
  assert r['curve'][-1]['loss'] < r['curve'][0]['loss']
  assert 'separately' in r['protocol']['accuracy_vote'] and r['protocol']['steps'] == 24


def test_fewshot_finetune_is_finetune_on_each_fold(encoder):
  """The fine-tuned few-shot: the frozen few-shot's folds, each fine-tuned on its support with
  its classes renumbered 0..N-1 (here labels 3 and 4), equal to finetune() called by hand; a
  setting with more ways than classes is skipped with why."""
  module, params = encoder
  config = small_config()
  e = config.eval
  e.fewshot_ways, e.fewshot_shots, e.fewshot_queries, e.fewshot_folds = (2, 3), (2,), 2, 2
  tr_pts, tr_y = clouds(16, seed=5)
  te_pts, te_y = clouds(8, seed=6)
  tr_y, te_y = tr_y + 3, te_y + 3
  out = finetune_lib.finetune_fewshot(config, module, params, {'points': tr_pts, 'label': tr_y},
                                      {'points': te_pts, 'label': te_y}, seed=7)
  assert out['3way_2shot'] == {'skipped': True, 'reason': (
      '3-way 2-shot needs 3 classes with >= 2 train and >= 2 test objects; only 2 class(es) '
      'qualify')}
  r = out['2way_2shot']
  assert len(r['per_fold']) == 2 and r['mean'] == pytest.approx(np.mean(r['per_fold']))
  assert r['std'] == pytest.approx(np.std(r['per_fold']))
  folds, _ = fewshot_lib.draw_folds(tr_y, te_y, ways=2, shots=2, queries=2, folds=2, seed=7)
  fold = folds[1]
  direct = finetune_lib.finetune(
      config, module, params, {'points': tr_pts[fold['support']], 'label': tr_y[fold['support']] - 3},
      {'points': te_pts[fold['query']], 'label': te_y[fold['query']] - 3}, seed=8)
  assert r['per_fold'][1] == direct['accuracy']
  assert r['protocol']['finetune']['steps'] == 24 and 'the frozen few-shot' in r['protocol']['folds']
  json.dumps(out)


# ------------------------------------------------------------------ plots


def test_plots(tmp_path):
  metrics = tmp_path / 'metrics.jsonl'
  metrics.write_text('\n'.join(json.dumps(r) for r in [
      {'step': 1, 'loss': 2.0}, {'step': 2, 'loss': 1.5, 'probe/accuracy': 0.5},
      {'step': 3, 'loss': 1.0, 'probe/accuracy': 0.7}]) + '\n')
  out = plots.plot_curves(str(metrics), str(tmp_path / 'p' / 'curves.png'))
  assert os.path.getsize(out) > 1000
  x, y = blobs(8, 3, 5, sep=5.0, seed=0)
  out = plots.plot_tsne(x, y, ['a', 'b', 'c'], str(tmp_path / 'tsne.png'), seed=0)
  assert os.path.getsize(out) > 1000
  cm = plots.confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
  assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
  out = plots.plot_confusion([0, 1, 1, 2], [0, 1, 2, 2], ['a', 'b', 'c'], str(tmp_path / 'cm.png'))
  assert os.path.getsize(out) > 1000
  assert sorted(os.listdir(tmp_path)) == ['cm.png', 'metrics.jsonl', 'p', 'tsne.png']


def test_per_class_subset_brute_force():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 6, 300)
  labels[labels == 5] = 4          # class 5 empty, class 4 large
  labels[:3] = 7                   # a class of 3, under the cap
  keep = protocol.per_class_subset(labels, 20, seed=1)
  assert np.all(np.diff(keep) > 0)                       # sorted, no repeats
  for c in np.unique(labels):
    assert np.sum(labels[keep] == c) == min(20, np.sum(labels == c)), c
  np.testing.assert_array_equal(keep, protocol.per_class_subset(labels, 20, seed=1))
  assert not np.array_equal(keep, protocol.per_class_subset(labels, 20, seed=2))


def test_probe_during_pretraining_fits_on_the_per_class_subset(monkeypatch):
  """train.probe_per_class: the probe's classifier sees that subset of the train split (the same
  objects in every probe) and every test object; 0 keeps the whole split."""
  from crossjepa import ops  # pylint: disable=g-import-not-at-top
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  config = default_config.get_config()
  config.data.num_points, config.data.num_groups, config.data.group_size = N_POINTS, GROUPS, K
  config.model.point_overrides = {'depth': 1}
  config.eval.svm_C = (0.1, 1.0)
  config.eval.cv_folds = 2

  def split(n, seed):
    pts, y = clouds(n, seed)
    centers, groups = ops.group_points(pts, GROUPS, K)
    return {'points': pts, 'centers': np.asarray(centers), 'groups': np.asarray(groups), 'label': y}

  data = {'train': split(40, 0), 'test': split(10, 1)}
  monkeypatch.setattr(pipeline, 'load_split', lambda c, w, s, *a, **k: dict(data[s]))
  seen = []
  real = probe_lib.linear_probe

  def recording(train_x, train_y, test_x, test_y, **kw):
    seen.append((len(train_y), len(test_y)))
    return real(train_x, train_y, test_x, test_y, **kw)

  monkeypatch.setattr(probe_lib, 'linear_probe', recording)
  module = export_lib.point_encoder_from_config(config)
  params = module.init(jax.random.PRNGKey(0), data['train']['points'][:1])['params']
  for per_class, train_n in ((6, 12), (0, 40)):
    config.train.probe_per_class = per_class
    probe = protocol.make_probe_fn(config, 'unused')
    first, again = probe(params, None, 1), probe(params, None, 2)
    assert first == again and 0.0 <= first['accuracy'] <= 1.0
    assert seen[-2:] == [(train_n, 10)] * 2
