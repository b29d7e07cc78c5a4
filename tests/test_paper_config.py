"""configs/paper.py end to end at a tiny size: the published recipe's own settings (ShapeNet-55's
format, a ViT teacher's CLS targets cached without per-group features, pose + histogram
conditioning, bfloat16 compute with layers.LayerNorm, the device-resident training set, the
probe during pretraining on a per-class subset, threaded CV fits), only the sizes shrunk, through
run.run(..., 'all'): teacher -> prepare -> pretrain -> evaluate -> export.
"""
import json
import os

import numpy as np
import pytest

import crossjepa
from crossjepa import config_util
from crossjepa import run as run_lib
from crossjepa.data import pipeline
from crossjepa.data import records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNSETS = ('02691156', '04379243')          # two ShapeNet-55 classes (airplane, table)


def _write_shapenet55(root, train_per_class=8, test_per_class=4):
  """Point-BERT's ShapeNet-55 layout: shapenet_pc/<synset>-<model>.npy (8,192 x 3) and the
  ShapeNet-55/{train,test}.txt lists; class 0 a sphere, class 1 a flat slab."""
  (root / 'shapenet_pc').mkdir(parents=True)
  (root / 'ShapeNet-55').mkdir()
  rng = np.random.default_rng(0)
  lists = {'train': [], 'test': []}
  for label, synset in enumerate(SYNSETS):
    for split, n in (('train', train_per_class), ('test', test_per_class)):
      for i in range(n):
        pts = rng.normal(size=(8192, 3))
        if label == 0:
          pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        else:
          pts *= (0.8, 0.5, 0.05)
        name = f'{synset}-{split}{i:03d}.npy'
        np.save(root / 'shapenet_pc' / name, pts.astype(np.float32))
        lists[split].append(name)
  for split, names in lists.items():
    (root / 'ShapeNet-55' / f'{split}.txt').write_text('\n'.join(names) + '\n')


def _tiny_paper_config(root):
  c = config_util.get_config_file(os.path.join(REPO, 'configs', 'paper.py'))
  d = c.data
  d.root = str(root)
  d.strict_counts = False            # 24 objects, not ShapeNet-55's 52,470
  d.num_points, d.num_groups, d.group_size = 128, 8, 16
  d.num_views, d.image_size = 3, 28   # a 2 x 2 patch grid of the tiny ViT
  d.shards, d.num_workers = 1, 0
  c.model.point = 'tiny'
  c.model.point_overrides.depth = 1
  c.model.predictor = 'tiny'
  c.model.predictor_overrides.depth = 1
  c.model.vit = 'tiny/14'
  c.teacher.random_init = True       # a fixed-seed random ViT instead of a converted DINOv2
  tr = c.train
  tr.batch_size, tr.steps, tr.warmup_steps = 8, 6, 1   # 8 fake devices
  tr.views_per_step = 2
  tr.checkpoint_every, tr.log_every = 6, 1
  tr.probe_every, tr.probe_per_class = 3, 3
  c.eval.svm_C = (0.01, 1.0)
  c.eval.cv_folds = 2
  c.eval.seeds = (0,)
  c.eval.fewshot_ways, c.eval.fewshot_shots = (2,), (1,)
  c.eval.fewshot_queries, c.eval.fewshot_folds = 1, 2
  c.eval.batch_size = 8
  return c


@pytest.mark.usefixtures('persistent_compile_cache')
def test_paper_config_end_to_end(tmp_path):
  _write_shapenet55(tmp_path / 'ShapeNet55')
  c = _tiny_paper_config(tmp_path / 'ShapeNet55')
  # The recipe's own settings are left as paper.py has them.
  assert (c.recipe, c.train.target, c.train.dtype) == ('crossjepa', 'cls', 'bfloat16')
  assert c.train.condition_pose and c.train.condition_hist and c.train.device_resident
  assert not c.data.cache_group_features and c.eval.svm_workers == 0
  workdir = str(tmp_path / 'run')
  report = run_lib.run(c, workdir, 'all')
  assert set(report) >= {'teacher', 'prepare', 'pretrain', 'evaluate', 'export'}

  results = json.load(open(os.path.join(workdir, 'results.json')))
  assert results['step'] == 6 and results['target']['train.target'] == 'cls'
  probe = results['probe']
  linear = probe['pretrained']['linear_probe']
  assert (linear['num_train'], linear['num_test'], linear['num_classes']) == (16, 8, 2)
  # Sphere against slab: every encoder separates them, at init too; this is the plumbing's check.
  assert probe['pretrained']['accuracy'] >= 0.75 and probe['random_init']['accuracy'] >= 0.75

  # The probe during pretraining at steps 3 and 6; every step's loss finite.
  lines = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [l['step'] for l in lines if 'probe/accuracy' in l] == [3, 6]
  losses = [l['loss'] for l in lines if 'loss' in l]
  assert len(losses) == 6 and np.all(np.isfinite(losses)), losses
  log = open(os.path.join(workdir, 'log.txt')).read()
  assert 'probe during pretraining: 6 of the 16 train objects (at most 3 a class)' in log

  # The records hold what the CLS target reads: no per-group teacher features.
  split = pipeline.load_split(c, workdir, 'test', keys=('teacher/cls', 'label'))
  assert split['teacher/cls'].shape == (8, 3, 64)
  with pytest.raises(KeyError, match=r'prepared with data.cache_group_features=False'):
    pipeline.load_split(c, workdir, 'test', keys=('teacher/groups',))

  # The export embeds clouds in a fresh encoder.
  embed = crossjepa.load_encoder(os.path.join(workdir, 'export'))
  pts = np.load(tmp_path / 'ShapeNet55' / 'shapenet_pc' / f'{SYNSETS[0]}-test000.npy')[:128]
  feats = np.asarray(embed(pts[None]))
  assert feats.shape[0] == 1 and feats.ndim == 2 and np.all(np.isfinite(feats))


def test_missing_features_are_explained():
  assert 'data.cache_group_features=False' in records.missing_features_hint(['teacher/groups'])
  assert 'data.keep_images=False' in records.missing_features_hint(['views/image'])
  assert 'data.eval_only=True' in records.missing_features_hint(['teacher/cls', 'views/hist'])
  both = records.missing_features_hint(['views/image', 'teacher/groups'])
  assert 'keep_images' in both and 'cache_group_features' in both
  assert records.missing_features_hint(['label']) == 'no prepare setting writes them'
