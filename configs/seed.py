"""The design card's formulation (the reverse direction): 2D context -> EMA 3D targets.

    python -m crossjepa.main --config=configs/seed.py --workdir=/tmp/seed

A trainable ViT (model.vit; optionally started from model.vit_init, a converted DINOv2 or a
--mode=teacher folder) embeds one rendered view; a predictor reads its patch tokens plus the
view's pose and colour histogram and is queried at the 3D centres of the point groups visible in
that view (views/corr >= 0); the targets are the EMA point encoder's tokens of those groups
(stop-gradient, layer-normed). A local Point-JEPA loss (weight train.seed_local_weight) against
the same EMA targets trains the point encoder itself; it is the only loss that does (the targets are
stop-gradient, so the cross loss trains the ViT and predictor alone). Everything else (data, embedded synthetic
benchmark, evaluation) is configs/default.py; see crossjepa/training/recipes/ and
experiments/README.md for how it compares with crossjepa and point_jepa at equal steps.
"""
from crossjepa import config_util

default = config_util.sibling_config(__file__, 'default')


def get_config():
  c = default.get_config()
  c.recipe = 'seed'
  # The ViT trains from scratch unless a converted / offline teacher is given, e.g.
  #   --config.model.vit_init=/tmp/seed/teacher  (after --mode=teacher of configs/default.py).
  c.model.vit_init = ''
  c.data.keep_images = True            # the context encoder reads the rendered views
  # A size both grids divide: the ViT's 14 px patches (8 x 8) and the Lite0 teacher's 16 px cells.
  c.data.image_size = 112
  c.data.patch_size = 14
  # The local loss's blocks: at G = 32, three blocks of <= round(0.2 * 32) = 6 groups leave a
  # static context of 14 groups (44 %, inside Point-JEPA's 0.4-0.75); four would leave only 8.
  c.train.point_jepa.num_targets = 3
  c.train.seed_local_weight = 1.0
  c.train.normalize_target = True
  c.train.lr = 5e-4                    # the setting the seed recipe was measured with
  c.train.standardize_target = 'none'
  return c
