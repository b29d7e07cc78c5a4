"""The 2D teacher's own linear probe: the ceiling that transfer to 3D is measured against.

Features are the teacher's CLS (computed exactly as the prepare stage's teacher cache computes it)
averaged over each evaluation object's V rendered views (crossjepa.data.teacher_views); the
classifier and the C selection are crossjepa.evaluation.linear_probe's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from crossjepa.data import teacher_cache
from crossjepa.data import teacher_views
from crossjepa.evaluation import linear_probe
from crossjepa.weights import teacher_io


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
  e = config.eval
  result = linear_probe.linear_probe(
      features[train_split], labels[train_split], features[test_split], labels[test_split],
      **linear_probe.probe_kwargs(e, int(config.seed)))
  result.pop('predictions')
  result['protocol'].update(
      features=f'teacher global embedding (float16, as cached) averaged over the {v} rendered '
               'views per object',
      teacher=name, teacher_dir=teacher_dir, train_split=train_split, test_split=test_split)
  return result
