"""Headroom of the embedded synthetic benchmark: how well does a model that learned NOTHING do?

    .venv/bin/python experiments/headroom.py [--kinds=clean,scan] [--train_per_class=24]
        [--test_per_class=12] [--extra_C=10]

A benchmark can only tell encoders apart if the floor is low (DESIGN.md §8). This script measures
the floor with the project's own protocol (evaluation/protocol.probe_features' linear probe):
the default config's `tiny` PointEncoder at random init (init seeds = config.eval.seeds), frozen
features pooled as config.eval.pooling, SVC(kernel='linear') with C chosen by k-fold CV on train
only; and a hand-made descriptor (`synthetic.shape_descriptor`: PCA-aligned extents and second
moments) under the same probe. The eval sets are built in memory exactly as --mode=prepare builds
them (sources.iter_shapes -> per_object.normalized_geometry with per_object.object_seed -> ops.group_points)
but without writing records.

Prints JSON: per kind, the random-init accuracy mean +- std over seeds (with best C per seed), the
descriptor accuracy, counts, classes and generation ms per object. `--extra_C` appends larger C
values to the grid (reported separately, so the default-grid numbers stay the reference).
Takes 1-3 minutes on two busy CPU cores.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from crossjepa import console  # noqa: E402

KINDS = ('clean', 'scan')

flags.DEFINE_list('kinds', list(KINDS), 'synthetic kinds to measure')
flags.DEFINE_integer('train_per_class', 24, 'train objects per class (default config: 24; at least '
                     'the probe\'s 4 CV folds)', lower_bound=4)
flags.DEFINE_integer('test_per_class', 12, 'test objects per class (default config: 12)',
                     lower_bound=1)
flags.DEFINE_list('extra_C', [], 'extra C values appended to config.eval.svm_C (e.g. 3,10)')
flags.DEFINE_integer('batch_size', 64, 'objects per encoder call', lower_bound=1)
FLAGS = flags.FLAGS


flags.register_validator('kinds', lambda v: bool(v) and set(v) <= set(KINDS),
                         f'expected a comma-separated subset of {list(KINDS)}')
flags.register_validator('extra_C', console.each_parses(console.float_arg(0, strict=True)),
                         'expected comma-separated numbers > 0')


def build_split(config, split):
  """-> (points [n,N,3] f32, centers [n,G,3], groups [n,G,K] i32, labels [n], ms per object)."""
  import jax  # pylint: disable=g-import-not-at-top
  from crossjepa import ops  # pylint: disable=g-import-not-at-top
  from crossjepa.data import per_object  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  d = config.data
  points, labels = [], []
  gen_s = 0.0
  shapes = sources.iter_shapes(d, split)
  while True:
    start = time.perf_counter()
    shape = next(shapes, None)
    gen_s += time.perf_counter() - start
    if shape is None:
      break
    seed = per_object.object_seed(config.seed, shape.id)
    p, _, _ = per_object.normalized_geometry(shape, d, np.random.default_rng([int(seed), 0]))
    points.append(p)
    labels.append(shape.label)
  points = np.stack(points).astype(np.float32)
  group = jax.jit(lambda x: ops.group_points(x, int(d.num_groups), int(d.group_size)))
  centers, groups = [], []
  for i in range(0, len(points), FLAGS.batch_size):
    chunk = points[i:i + FLAGS.batch_size]
    pad = FLAGS.batch_size - len(chunk)   # one compiled shape
    c, g = group(np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)]) if pad else chunk)
    centers.append(np.asarray(c)[:len(chunk)])
    groups.append(np.asarray(g)[:len(chunk)])
  return (points, np.concatenate(centers), np.concatenate(groups).astype(np.int32),
          np.asarray(labels, np.int64), 1000.0 * gen_s / max(len(points), 1))


def embed_all(embed_fn, points, centers, groups, batch_size):
  out = []
  for i in range(0, len(points), batch_size):
    sl = slice(i, i + batch_size)
    n = len(points[sl])
    pad = batch_size - n

    def fill(x):
      return np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
    out.append(embed_fn(fill(points[sl]), fill(centers[sl]), fill(groups[sl]))[:n])
  return np.concatenate(out)


def probe(config, train, test, seed, C_grid):
  from crossjepa.evaluation import linear_probe  # pylint: disable=g-import-not-at-top
  e = config.eval
  r = linear_probe.linear_probe(
      train[0], train[1], test[0], test[1], C_grid=C_grid, cv_folds=int(e.cv_folds), seed=seed,
      classifier=str(e.get('svm_classifier', 'svc_linear')),
      standardize=bool(e.get('svm_standardize', False)), workers=int(e.get('svm_workers', 0)))
  return {'accuracy': r['accuracy'], 'best_C': r['best_C']}


def _summary(runs):
  acc = [r['accuracy'] for r in runs]
  return {'mean': float(np.mean(acc)), 'std': float(np.std(acc)),
          'per_seed': [round(a, 4) for a in acc], 'best_C': [r['best_C'] for r in runs]}


def measure(config, kind):
  import jax  # pylint: disable=g-import-not-at-top
  from crossjepa.data import synthetic  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import export  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import features  # pylint: disable=g-import-not-at-top
  config.data.synthetic.kind = kind
  t0 = time.perf_counter()
  tr = build_split(config, 'train')
  te = build_split(config, 'test')
  build_s = time.perf_counter() - t0
  grid = sorted(float(c) for c in config.eval.svm_C)
  grids = {'default_grid': grid}
  if FLAGS.extra_C:
    grids['extended_grid'] = sorted(set(grid) | {float(c) for c in FLAGS.extra_C})
  module = export.point_encoder_from_config(config)
  init = jax.jit(module.init)
  embed_fn = None
  results = {name: [] for name in grids}
  t0 = time.perf_counter()
  for seed in config.eval.seeds:
    params = init(jax.random.PRNGKey(int(seed)), tr[0][:1])['params']
    embed_fn = (features.make_embed_fn(module, params, pooling=str(config.eval.pooling))
                if embed_fn is None else embed_fn.with_params(params))
    x_tr = embed_all(embed_fn, tr[0], tr[1], tr[2], FLAGS.batch_size)
    x_te = embed_all(embed_fn, te[0], te[1], te[2], FLAGS.batch_size)
    for name, g in grids.items():
      results[name].append(probe(config, (x_tr, tr[3]), (x_te, te[3]), int(seed), g))
  encoder_s = time.perf_counter() - t0
  d_tr = np.stack([synthetic.shape_descriptor(p) for p in tr[0]])
  d_te = np.stack([synthetic.shape_descriptor(p) for p in te[0]])
  descriptor = {name: probe(config, (d_tr, tr[3]), (d_te, te[3]), 0, g)
                for name, g in grids.items()}
  num_classes = int(len(np.unique(tr[3])))
  return {
      'random_init': {name: _summary(r) for name, r in results.items()},
      'descriptor': descriptor,
      'chance': 1.0 / num_classes,
      'num_classes': num_classes,
      'num_train': int(len(tr[3])), 'num_test': int(len(te[3])),
      'generation_ms_per_object': round(0.5 * (tr[4] + te[4]), 2),
      'seconds': {'build': round(build_s, 1), 'encode_and_probe': round(encoder_s, 1)},
  }


def main(argv):
  del argv
  from configs import default  # pylint: disable=g-import-not-at-top
  from crossjepa.data import synthetic  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.data.source = 'synthetic'
  config.data.synthetic.train_per_class = FLAGS.train_per_class
  config.data.synthetic.test_per_class = FLAGS.test_per_class
  out = {
      'protocol': {
          'encoder': f'PointEncoder {config.model.point!r} at random init, seeds '
                     f'{list(config.eval.seeds)}',
          'points': {'num_points': int(config.data.num_points),
                     'num_groups': int(config.data.num_groups),
                     'group_size': int(config.data.group_size)},
          'pooling': str(config.eval.pooling),
          'probe': f"{config.eval.get('svm_classifier', 'svc_linear')}, C by "
                   f'{int(config.eval.cv_folds)}-fold CV on train only',
          'descriptor': 'synthetic.shape_descriptor (PCA-aligned extents, variances, mean |x|)',
      },
      'classes': list(synthetic.CLASS_NAMES),
  }
  for kind in FLAGS.kinds:
    out[kind] = measure(config, kind)
    print(kind, json.dumps(out[kind]), file=sys.stderr, flush=True)
  print(json.dumps(out, indent=1))


if __name__ == '__main__':
  console.run_app(main, 'headroom.py')
