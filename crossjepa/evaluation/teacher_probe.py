"""The 2D teacher's own linear probe: the ceiling that transfer to 3D is measured against.

Features are the teacher's CLS of each view (float16, as the prepare stage caches it) averaged over
an object's V views; the classifier and the C selection (stratified CV on the train split only) are
crossjepa.evaluation.linear_probe's. Two sources of the same features:
  * `probe_cached`: the records' cached teacher/cls (the benchmark's `teacher_2d` row);
  * `teacher_probe`: a teacher folder run over freshly rendered views (crossjepa.data.teacher_views),
    for a teacher that has no records yet (e.g. the offline teacher stage's output).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from crossjepa.data import pipeline
from crossjepa.data import records
from crossjepa.data import teacher_cache
from crossjepa.data import teacher_views
from crossjepa.evaluation import linear_probe
from crossjepa.weights import teacher_io


def _probe(config, features: dict, labels: dict, train_split: str, test_split: str) -> dict:
  """linear_probe of view-averaged CLS features (train / test splits), predictions dropped."""
  result = linear_probe.linear_probe(
      features[train_split], labels[train_split], features[test_split], labels[test_split],
      **linear_probe.probe_kwargs(config.eval, int(config.seed)))
  result.pop('predictions')
  return result


def probe_cached(config, workdir: str, train_split: str, test_split: str) -> dict[str, Any]:
  """The probe of the records' cached teacher/cls (eval-only sets carry none: clean sets only)."""
  features, labels = {}, {}
  for split in (train_split, test_split):
    arrays = pipeline.load_split(config, workdir, split, keys=('teacher/cls', 'label'))
    features[split] = arrays['teacher/cls'].astype(np.float32).mean(axis=1)
    labels[split] = arrays['label']
  result = _probe(config, features, labels, train_split, test_split)
  meta = records.open_dataset(config, workdir).info.metadata
  result['protocol'].update(features='cached teacher/cls averaged over the object\'s views',
                            teacher=dict(meta.get('teacher', {})))
  return result


def teacher_probe(config, workdir: str, teacher_dir: str, train_split: str = 'train',
                  test_split: str = 'test') -> dict[str, Any]:
  """The teacher's own linear-probe accuracy on the evaluation objects' rendered views.

  Features: the teacher's CLS (computed exactly as the prepare stage's teacher cache computes it)
  averaged over each object's V views; classifier and C selection as `evaluation.linear_probe`
  (C by stratified CV on the train split only). The 2D ceiling beside the 3D results.
  """
  teacher = teacher_cache.Teacher(config, teacher=teacher_io.load_teacher(teacher_dir))
  name = teacher.name
  features, labels = {}, {}
  for split in (train_split, test_split):
    views = teacher_views.render_split(config, workdir, split)
    n, v = views['images'].shape[:2]
    corr = np.full((n, v, int(config.data.num_groups)), -1, np.int32)
    cls, _ = teacher(views['images'], corr)
    features[split] = cls.astype(np.float32).mean(axis=1)
    labels[split] = views['labels']
  result = _probe(config, features, labels, train_split, test_split)
  result['protocol'].update(
      features=f'teacher global embedding (float16, as cached) averaged over the {v} rendered '
               'views per object',
      teacher=name, teacher_dir=teacher_dir, train_split=train_split, test_split=test_split)
  return result
