"""The in-modal baseline: Point-JEPA-style masked point-patch latent prediction.

    python -m crossjepa.main --config=configs/point_jepa.py --workdir=/tmp/point_jepa

Contiguous target blocks of point groups (a random seed group and its nearest groups in centre
space), the groups nearest a second seed among the rest as context, an EMA target encoder over all
groups (stop-gradient, layer-normed targets), smooth-L1 (Saito et al. 2024, Point-JEPA; I-JEPA's
masking). Same data, train step, state and loop as configs/default.py's crossjepa recipe, so the
two compare at equal compute (experiments/compare_recipes.py). No image teacher is used by the
loss; the records still carry the default teacher's cache, so the data can be shared.
"""
from crossjepa import config_util

default = config_util.sibling_config(__file__, 'default')


def get_config():
  c = default.get_config()
  c.recipe = 'point_jepa'
  pj = c.train.point_jepa
  # Point-JEPA's block sizes; at G = 32 three blocks of <= round(0.2 * 32) = 6 groups leave a
  # static context of 14 groups (44 %, inside its 0.4-0.75 range); four would leave only 8.
  pj.num_targets = 3
  pj.target_size = (0.15, 0.2)
  pj.context_size = 0.75
  c.train.loss = 'smooth_l1'
  c.train.normalize_target = True
  c.train.lr = 5e-4                    # Point-JEPA's setting here (the crossjepa default uses 4e-3)
  c.train.standardize_target = 'none'
  c.train.ema_momentum = (0.996, 1.0)
  c.benchmark.variants = (('point_jepa', {}),)
  return c
