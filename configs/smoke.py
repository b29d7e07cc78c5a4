"""Tiny config for tests: every stage runs in seconds on one CPU core.

    python -m crossjepa.main --config=configs/smoke.py --workdir=/tmp/smoke
"""
from crossjepa import config_util

default = config_util.sibling_config(__file__, 'default')


def get_config():
  c = default.get_config()
  d = c.data
  d.num_points = 128
  d.num_groups = 8
  d.group_size = 8
  d.num_views = 2
  d.image_size = 28
  d.patch_size = 14
  d.shards = 2
  d.synthetic.train_per_class = 2
  d.synthetic.test_per_class = 2
  d.synthetic.pretrain_per_class = 2
  d.synthetic.teacher_per_class = 2
  d.synthetic.num_classes = 4
  c.model.point = 'tiny'
  c.model.predictor = 'tiny'
  c.model.vit = 'tiny/14'
  c.teacher.random_init = True
  c.teacher.feature_stage = ''     # the random ViT teacher has one map (its patch grid)
  c.teacher.train.steps = 4
  c.teacher.train.batch_size = 4
  tr = c.train
  tr.steps = 6
  tr.batch_size = 8
  tr.views_per_step = 2
  tr.warmup_steps = 2
  tr.checkpoint_every = 3
  tr.log_every = 2
  tr.probe_every = 0
  c.eval.svm_C = (0.1, 1.0)
  c.eval.cv_folds = 2
  c.eval.fewshot_ways = (2,)
  c.eval.fewshot_shots = (1,)
  c.eval.fewshot_queries = 1
  c.eval.fewshot_folds = 2
  c.eval.seeds = (0,)
  c.eval.batch_size = 8
  c.benchmark.enabled = False
  return c
