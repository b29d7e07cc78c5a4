"""ModelNet10 frozen-feature evaluation from the `ModelNet10/<class>/{train,test}/*.off` mesh release.

The same protocol as configs/modelnet40.py (linear probe with C by CV on train, few-shot, random-init
floor; 1,024 points, 64 groups of 32), on the 10-class OFF release: the mesh_folder source reads the
tree's own train/test layout, surface points are sampled from each mesh (area-weighted) and
unit-sphere normalised. With data.strict_counts (the default here) the release's 3,991 train / 908
test shapes in 10 classes are asserted; --config.data.strict_counts=False runs a subset.

    python -m crossjepa.main --config=configs/modelnet10.py --workdir=/tmp/mn10off \
        --config.data.root=/path/ModelNet10 \
        --config.eval.encoder=PRETRAIN_WORKDIR/export --mode=all

The release's `normal_resampled` text files read through its ModelNet10 lists are
configs/modelnet40.py:modelnet10_normal_resampled.
"""
from crossjepa import config_util

modelnet40 = config_util.sibling_config(__file__, 'modelnet40')


def get_config(arg=None):
  if arg:
    raise ValueError(f'configs/modelnet10.py takes no variant, got {arg!r}')
  c = modelnet40.get_config('normal_resampled')
  d = c.data
  d.source = 'mesh_folder'
  d.variant = ''
  d.name = 'modelnet10_off'
  d.mesh_folder.expected_train = 3991
  d.mesh_folder.expected_test = 908
  d.mesh_folder.expected_classes = 10
  return c
