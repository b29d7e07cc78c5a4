"""Tests of crossjepa.data.sources on tiny files written in the public dataset layouts."""
import importlib.util
import os

import h5py
import ml_collections
import numpy as np
import pytest

from crossjepa.data import source_mesh_folder
from crossjepa.data import source_scanobjectnn
from crossjepa.data import sources
from crossjepa.data import synthetic
from crossjepa.data.shape import GREY, Shape

MODELNET40 = ('airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door '
              'dresser flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand '
              'person piano plant radio range_hood sink sofa stairs stool table tent toilet tv_stand '
              'vase wardrobe xbox').split()


def _default_data_config():
  path = os.path.join(os.path.dirname(__file__), '..', 'configs', 'default.py')
  spec = importlib.util.spec_from_file_location('default_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config().data


def _config(**kw):
  c = _default_data_config()
  c.update(kw)
  return c


# --------------------------------------------------------------------------- synthetic


def _synthetic_config(kind='clean', seed=0):
  data = _default_data_config()
  data.synthetic.kind = kind
  data.synthetic.num_classes = 3
  data.synthetic.train_per_class = 2
  data.synthetic.test_per_class = 1
  data.synthetic.pretrain_per_class = 2
  data.synthetic.teacher_per_class = 1
  data.synthetic.seed = seed
  data.synthetic.scan_points = 256
  return data


def test_synthetic_splits_counts_and_ids():
  data = _synthetic_config()
  assert sources.class_names(data) == synthetic.CLASS_NAMES[:3]
  assert sources.available_splits(data) == ['train', 'test', 'pretrain', 'teacher']
  assert sources.splits(data) == sources.available_splits(data)
  shapes = {s: list(sources.iter_shapes(data, s)) for s in sources.available_splits(data)}
  for split, items in shapes.items():
    assert len(items) == sources.count(data, split)
    for shape in items:
      assert shape.split == split and shape.points is None and shape.mesh is not None
      assert shape.id.startswith(f'synthetic/{split}/{synthetic.CLASS_NAMES[shape.label]}_')
  assert [s.label for s in shapes['train']] == [0, 1, 2, 0, 1, 2]
  assert shapes['train'][4].id == 'synthetic/train/sphere_0001'
  # The pretraining split keeps its labels for diagnostics.
  assert sorted(s.label for s in shapes['pretrain']) == [0, 0, 1, 1, 2, 2]
  # Disjoint by instance: no two objects of any splits share geometry or colour.
  everything = [s for items in shapes.values() for s in items]
  assert len({s.id for s in everything}) == len(everything)
  keys = {(s.mesh.vertices.tobytes(), s.color.tobytes()) for s in everything}
  assert len(keys) == len(everything)
  with pytest.raises(ValueError, match="no split 'val'"):
    sources.iter_shapes(data, 'val')


def test_synthetic_deterministic_and_seeded():
  first = list(sources.iter_shapes(_synthetic_config(), 'test'))
  again = list(sources.iter_shapes(_synthetic_config(), 'test'))
  other = list(sources.iter_shapes(_synthetic_config(seed=1), 'test'))
  for a, b, c in zip(first, again, other):
    np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
    np.testing.assert_array_equal(a.color, b.color)
    assert a.id == c.id and not np.array_equal(a.color, c.color)


def test_synthetic_scan_kind():
  data = _synthetic_config(kind='scan')
  items = list(sources.iter_shapes(data, 'test'))
  assert len(items) == 3
  for shape in items:
    assert shape.mesh is None and shape.points.shape == (256, 3)
  data.synthetic.kind = 'cad'
  with pytest.raises(ValueError, match='kind'):
    list(sources.iter_shapes(data, 'test'))


# --------------------------------------------------------------------------- mesh folder

_OFF = 'OFF4 2 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n4 0 1 3 2\n'
_OBJ = 'mtllib gone.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1/1/1 2/1/1 3/1/1\n'


def _mesh_folder_config(root, **kw):
  """The default data config pointed at a mesh folder (default split keys and mesh_folder block)."""
  data = _default_data_config()
  data.source = 'mesh_folder'
  data.root = str(root)
  data.update(kw)
  return data


def _write_tree(root, files):
  for rel, text in files:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_mesh_folder_modelnet_layout(tmp_path):
  _write_tree(tmp_path, [('table/train/table_0001.off', _OFF), ('chair/train/chair_0001.off', _OFF),
                         ('chair/test/chair_0002.obj', _OBJ), ('chair/train/notes.txt', 'x')])
  data = _mesh_folder_config(tmp_path)
  assert sources.class_names(data) == ['chair', 'table']
  assert sources.available_splits(data) == ['train', 'test', 'pretrain']
  train = list(sources.iter_shapes(data, 'train'))
  assert [(s.id, s.label) for s in train] == [('chair/train/chair_0001', 0),
                                              ('table/train/table_0001', 1)]
  assert train[0].mesh.num_faces == 3
  test = list(sources.iter_shapes(data, 'test'))
  assert [(s.id, s.label, s.mesh.num_faces) for s in test] == [('chair/test/chair_0002', 0, 1)]
  assert sources.count(data, 'train') == 2 and sources.count(data, 'test') == 1
  np.testing.assert_allclose(train[0].color, GREY)
  # The folders decide, whatever data.mesh_folder says; pretraining (pretrain + train) is the
  # whole tree once: `pretrain` adds the test folder's objects.
  data.mesh_folder.split_seed = 5
  assert [s.id for s in sources.iter_shapes(data, 'train')] == [s.id for s in train]
  pretrain = list(sources.iter_shapes(data, 'pretrain'))
  assert [(s.id, s.split) for s in pretrain] == [('chair/test/chair_0002', 'pretrain')]
  data.pretrain_splits = ('pretrain',)
  assert sources.count(data, 'pretrain') == 3


def _class_tree(root, sizes):
  """root/<class>/<class>_NNNN.off, no split folders."""
  files = [(f'{cls}/{cls}_{i:04d}.off', _OFF) for cls, n in sizes.items() for i in range(n)]
  _write_tree(root, files)
  return sorted(rel.rsplit('.', 1)[0] for rel, _ in files)


def _split_ids(data):
  return {s: [shape.id for shape in sources.iter_shapes(data, s)]
          for s in sources.available_splits(data)}


def test_mesh_folder_without_split_folders_stratified(tmp_path):
  sizes = {'bench': 10, 'chair': 5, 'lamp': 2, 'vase': 1}
  everything = _class_tree(tmp_path, sizes)
  data = _mesh_folder_config(tmp_path)     # the default split keys and data.mesh_folder
  assert data.pretrain_splits == ('pretrain', 'train') and data.mesh_folder.test_fraction == 0.2
  assert sources.available_splits(data) == ['train', 'test', 'pretrain']
  ids = _split_ids(data)
  train, test = set(ids['train']), set(ids['test'])
  # Disjoint, together the whole tree; round(0.2 n) per class, >= 1 in test when n >= 2, >= 1 in
  # train always: bench 10 -> 2, chair 5 -> 1, lamp 2 -> 1, vase 1 -> 0.
  assert not train & test and sorted(train | test) == everything
  per_class = {cls: sum(i.startswith(cls + '/') for i in test) for cls in sizes}
  assert per_class == {'bench': 2, 'chair': 1, 'lamp': 1, 'vase': 0}
  assert [source_mesh_folder.mesh_folder_test_count(n, 0.2) for n in (0, 1, 2, 3, 5, 10, 12)] == [0, 0, 1, 1, 1, 2, 2]
  assert sources.count(data, 'test') == 4 and sources.count(data, 'train') == 14
  # Labels: the sorted class folders.
  labels = {s.id: s.label for s in sources.iter_shapes(data, 'test')}
  assert all(labels[i] == sorted(sizes).index(i.split('/')[0]) for i in labels)
  # The default pretraining splits hold every object exactly once: pretrain adds the test part.
  pretraining = ids['pretrain'] + ids['train']
  assert sorted(pretraining) == everything
  assert sorted(ids['pretrain']) == sorted(test)
  # With pretrain alone, pretrain is every object.
  data.pretrain_splits = ('pretrain',)
  assert sorted(_split_ids(data)['pretrain']) == everything
  assert sources.count(data, 'pretrain') == len(everything)
  # Reproducible under the seed, different under another one.
  again = _split_ids(_mesh_folder_config(tmp_path))
  assert again['test'] == ids['test'] and again['train'] == ids['train']
  other = _split_ids(_mesh_folder_config(tmp_path, mesh_folder={'test_fraction': 0.2, 'split_seed': 1}))
  assert other['test'] != ids['test']
  assert {c: sum(i.startswith(c + '/') for i in other['test']) for c in sizes} == per_class
  # A larger fraction, and out-of-range settings.
  half = _split_ids(_mesh_folder_config(tmp_path, mesh_folder={'test_fraction': 0.5, 'split_seed': 0}))
  assert len(half['test']) == 5 + 3 + 1 + 0        # round-half-up: chair 2.5 -> 3
  with pytest.raises(ValueError, match='test_fraction must lie in'):
    sources.available_splits(_mesh_folder_config(tmp_path, mesh_folder={'test_fraction': 1.0,
                                                                         'split_seed': 0}))


def test_mesh_folder_splits_stable_when_a_class_is_added(tmp_path):
  _class_tree(tmp_path, {'bench': 10, 'chair': 6})
  before = _split_ids(_mesh_folder_config(tmp_path))['test']
  _class_tree(tmp_path, {'apple': 7})
  after = _split_ids(_mesh_folder_config(tmp_path))['test']
  assert [i for i in after if not i.startswith('apple/')] == before


def test_mesh_folder_unlabelled_and_errors(tmp_path):
  (tmp_path / 'a.off').write_text(_OFF)
  (tmp_path / 'b.obj').write_text(_OBJ)
  (tmp_path / '.DS_Store').write_bytes(b'\0')
  data = _mesh_folder_config(tmp_path, pretrain_splits=('pretrain',))
  assert sources.class_names(data) == []
  # Unlabelled files are never split off into test: they are train (and pretraining) objects.
  assert sources.available_splits(data) == ['train', 'pretrain']
  assert [(s.id, s.label) for s in sources.iter_shapes(data, 'train')] == [('a', -1), ('b', -1)]
  assert [(s.id, s.label) for s in sources.iter_shapes(data, 'pretrain')] == [('a', -1), ('b', -1)]
  # With the default splits pretrain would hold nothing (train already has everything): an error
  # that says what to set, not an empty split.
  with pytest.raises(ValueError, match=r"holds no objects.*\('pretrain',\)"):
    sources.iter_shapes(_mesh_folder_config(tmp_path), 'pretrain')
  (tmp_path / 'a.ply').write_text(_OFF)
  with pytest.raises(ValueError, match=r'a\.off and a\.ply give the same object id'):
    sources.class_names(data)
  os.remove(tmp_path / 'a.ply')
  (tmp_path / 'c.ply').write_text('ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n')
  with pytest.raises(ValueError, match=r'c\.ply'):
    list(sources.iter_shapes(data, 'train'))
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'scan.fbx').write_bytes(b'x')
  with pytest.raises(FileNotFoundError, match=r'no mesh files.*not read: scan\.fbx'):
    sources.class_names(_config(source='mesh_folder', root=str(tmp_path / 'empty')))
  with pytest.raises(FileNotFoundError, match='is not a folder'):
    sources.class_names(_config(source='mesh_folder', root=str(tmp_path / 'nowhere')))


# --------------------------------------------------------------------------- ModelNet40


def _write_normal_resampled(root, ids_by_split, columns=6):
  (root / 'modelnet40_shape_names.txt').write_text('\n'.join(MODELNET40) + '\n')
  rng = np.random.default_rng(0)
  for split, ids in ids_by_split.items():
    (root / f'modelnet40_{split}.txt').write_text('\n'.join(ids) + '\n')
    for sid in ids:
      cls = sid.rsplit('_', 1)[0]
      (root / cls).mkdir(exist_ok=True)
      table = rng.normal(size=(10, columns))
      (root / cls / f'{sid}.txt').write_text(
          '\n'.join(','.join(f'{x:.6f}' for x in row) for row in table) + '\n')


def test_modelnet40_normal_resampled(tmp_path):
  _write_normal_resampled(tmp_path, {'train': ['flower_pot_0001', 'airplane_0003'],
                                     'test': ['night_stand_0012']})
  data = _config(source='modelnet40', root=str(tmp_path), variant='normal_resampled')
  assert sources.class_names(data) == MODELNET40
  train = list(sources.iter_shapes(data, 'train'))
  assert [(s.id, s.label) for s in train] == [('modelnet40/flower_pot_0001', 15),
                                              ('modelnet40/airplane_0003', 0)]
  expected = np.loadtxt(tmp_path / 'airplane' / 'airplane_0003.txt', delimiter=',')[:, :3]
  np.testing.assert_allclose(train[1].points, expected, rtol=1e-6)
  assert train[1].mesh is None
  assert [s.label for s in sources.iter_shapes(data, 'test')] == [23]
  assert sources.count(data, 'test') == 1
  data.strict_counts = True
  with pytest.raises(ValueError, match='9843'):
    sources.count(data, 'train')


def test_modelnet40_normal_resampled_errors(tmp_path):
  _write_normal_resampled(tmp_path, {'train': ['cup_0001'], 'test': ['cup_0002']}, columns=5)
  data = _config(source='modelnet40', root=str(tmp_path), variant='normal_resampled')
  with pytest.raises(ValueError, match=r'cup_0001\.txt: expected 6 columns'):
    list(sources.iter_shapes(data, 'train'))
  os.remove(tmp_path / 'cup' / 'cup_0002.txt')
  with pytest.raises(FileNotFoundError, match=r'cup_0002\.txt'):
    list(sources.iter_shapes(data, 'test'))
  _write_normal_resampled(tmp_path, {'train': ['cup_0001'], 'test': ['cup_0002']})
  path = tmp_path / 'cup' / 'cup_0001.txt'
  lines = path.read_text().splitlines()
  lines[3] = 'nan,0,0,0,0,1'
  lines[7] = '0,inf,0,0,0,1'
  path.write_text('\n'.join(lines) + '\n')
  with pytest.raises(ValueError, match=r'cup_0001\.txt: Shape modelnet40/cup_0001: 2 of its '
                                       r'\d+ points are not finite \(NaN or Inf\), at rows \[3, 7\]'):
    list(sources.iter_shapes(data, 'train'))
  (tmp_path / 'modelnet40_shape_names.txt').write_text('airplane\n')
  assert sources.class_names(data) == ['airplane']     # a subset, without strict counts
  data.strict_counts = True
  with pytest.raises(ValueError, match="expected the release's 40 class names, found 1"):
    sources.class_names(data)
  with pytest.raises(ValueError, match=r"found 1 \(set data.strict_counts=False for a subset\)"):
    sources.class_names(data)
  data.strict_counts = False
  with pytest.raises(ValueError, match='data.variant'):
    sources.class_names(_config(source='modelnet40', root=str(tmp_path), variant='x'))
  # The text tree read as the default variant (the h5 release, always 40 classes): the message
  # names the variant to set, not data.strict_counts (which cannot relax the h5 release).
  (tmp_path / 'shape_names.txt').write_text('airplane\n')
  h5 = _config(source='modelnet40', root=str(tmp_path), variant='')
  h5.strict_counts = False
  with pytest.raises(ValueError, match=r"found 1 \(data.variant = '' reads the default, "
                                       r"ply_hdf5_2048.*holds the text release's "
                                       r"modelnet40_train\.txt: set data.variant=normal_resampled"):
    sources.class_names(h5)


def _write_h5(path, n, points=2048, label_shape=None, keys=('data', 'label'), mask=False, labels=None):
  rng = np.random.default_rng(n)
  with h5py.File(path, 'w') as f:
    if 'data' in keys:
      f['data'] = rng.normal(size=(n, points, 3)).astype(np.float32)
    if 'label' in keys:
      lab = np.arange(n) if labels is None else np.asarray(labels)
      f['label'] = lab.reshape(label_shape or (n,)).astype(np.uint8)
    if mask:
      f['mask'] = np.where(rng.random((n, points)) < 0.2, -1, 1).astype(np.int32)
  with h5py.File(path, 'r') as f:
    return np.asarray(f['data']) if 'data' in keys else None


def test_modelnet40_ply_hdf5(tmp_path):
  (tmp_path / 'shape_names.txt').write_text('\n'.join(MODELNET40) + '\n')
  d0 = _write_h5(tmp_path / 'ply_data_train0.h5', 3, label_shape=(3, 1))
  d1 = _write_h5(tmp_path / 'ply_data_train1.h5', 2, label_shape=(2, 1), labels=[39, 5])
  _write_h5(tmp_path / 'ply_data_test0.h5', 2, label_shape=(2, 1))
  (tmp_path / 'train_files.txt').write_text(
      'data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n'
      'data/modelnet40_ply_hdf5_2048/ply_data_train1.h5\n')
  data = _config(source='modelnet40', root=str(tmp_path), variant='ply_hdf5_2048')
  train = list(sources.iter_shapes(data, 'train'))
  assert [s.label for s in train] == [0, 1, 2, 39, 5]
  np.testing.assert_array_equal(train[3].points, d1[0])
  np.testing.assert_array_equal(train[1].points, d0[1])
  assert len({s.id for s in train}) == 5
  assert sources.count(data, 'train') == 5 and sources.count(data, 'test') == 2  # test by glob
  data.variant = ''    # the default variant is ply_hdf5_2048
  assert len(list(sources.iter_shapes(data, 'test'))) == 2
  data.strict_counts = True
  with pytest.raises(ValueError, match='9840'):
    list(sources.iter_shapes(data, 'train'))


def test_modelnet40_ply_hdf5_errors(tmp_path):
  (tmp_path / 'shape_names.txt').write_text('\n'.join(MODELNET40) + '\n')
  _write_h5(tmp_path / 'ply_data_train0.h5', 2, keys=('points', 'label'))
  _write_h5(tmp_path / 'ply_data_test0.h5', 2, points=1024)
  data = _config(source='modelnet40', root=str(tmp_path), variant='ply_hdf5_2048')
  with pytest.raises(KeyError, match=r"ply_data_train0\.h5: no h5 key 'data'"):
    list(sources.iter_shapes(data, 'train'))
  with pytest.raises(ValueError, match=r'ply_data_test0\.h5.*\(n, 2048, 3\)'):
    list(sources.iter_shapes(data, 'test'))


# --------------------------------------------------------------------------- ScanObjectNN


def test_scanobjectnn(tmp_path):
  (tmp_path / 'main_split').mkdir()
  d = _write_h5(tmp_path / 'main_split' / 'training_objectdataset_augmentedrot_scale75.h5', 4,
                mask=True, labels=[0, 14, 3, 7])
  _write_h5(tmp_path / 'main_split' / 'test_objectdataset_augmentedrot_scale75.h5', 2, mask=True)
  data = _config(source='scanobjectnn', root=str(tmp_path), variant='PB_T50_RS')
  assert sources.class_names(data) == source_scanobjectnn.SCANOBJECTNN_CLASSES
  assert len(sources.class_names(data)) == 15
  train = list(sources.iter_shapes(data, 'train'))
  assert [s.label for s in train] == [0, 14, 3, 7]
  np.testing.assert_array_equal(train[2].points, d[2])
  assert sources.count(data, 'test') == 2
  data.strict_counts = True
  with pytest.raises(ValueError, match='11416'):
    list(sources.iter_shapes(data, 'train'))
  data.strict_counts = False
  data.variant = 'OBJ_ONLY'
  with pytest.raises(FileNotFoundError, match=r'main_split_nobg/training_objectdataset\.h5'):
    list(sources.iter_shapes(data, 'train'))
  _write_h5(tmp_path / 'main_split' / 'training_objectdataset.h5', 2, labels=[3, 15])
  data.variant = 'OBJ_BG'
  with pytest.raises(ValueError, match=r'training_objectdataset\.h5: row 1: label 15'):
    list(sources.iter_shapes(data, 'train'))


# --------------------------------------------------------------------------- ShapeNet-55


def _write_shapenet(root, names, lists=True):
  (root / 'shapenet_pc').mkdir()
  rng = np.random.default_rng(0)
  for name in names:
    np.save(root / 'shapenet_pc' / name, rng.normal(size=(8192, 3)).astype(np.float32))
  if lists:
    (root / 'ShapeNet-55').mkdir()
    (root / 'ShapeNet-55' / 'train.txt').write_text('\n'.join(names[:2]) + '\n')
    (root / 'ShapeNet-55' / 'test.txt').write_text(names[2] + '\n')


_SHAPENET = ['04379243-aaa1.npy', '02691156-bbb2.npy', '02691156-ccc3.npy']


def test_shapenet55_with_lists(tmp_path):
  _write_shapenet(tmp_path, _SHAPENET)
  data = _config(source='shapenet55', root=str(tmp_path))
  assert sources.class_names(data) == ['02691156', '04379243']
  assert sources.available_splits(data) == ['train', 'test', 'all']
  train = list(sources.iter_shapes(data, 'train'))
  assert [(s.id, s.label) for s in train] == [('shapenet55/04379243-aaa1', 1),
                                              ('shapenet55/02691156-bbb2', 0)]
  np.testing.assert_array_equal(train[0].points, np.load(tmp_path / 'shapenet_pc' / _SHAPENET[0]))
  assert [s.id for s in sources.iter_shapes(data, 'test')] == ['shapenet55/02691156-ccc3']
  assert sources.count(data, 'all') == 3


def test_shapenet55_without_lists_and_bad_shape(tmp_path):
  _write_shapenet(tmp_path, _SHAPENET, lists=False)
  data = _config(source='shapenet55', root=str(tmp_path))
  assert sources.available_splits(data) == ['train', 'all']
  assert sources.count(data, 'train') == 3 and sources.count(data, 'all') == 3
  with pytest.raises(ValueError, match="no split 'test'"):
    sources.iter_shapes(data, 'test')
  np.save(tmp_path / 'shapenet_pc' / '02691156-ddd4.npy', np.zeros((100, 3), np.float32))
  with pytest.raises(ValueError, match=r'02691156-ddd4\.npy: expected an \(8192, 3\)'):
    list(sources.iter_shapes(data, 'train'))


def test_bad_source_and_root(tmp_path):
  with pytest.raises(ValueError, match='data.source'):
    sources.class_names(_config(source='modelnet10'))
  with pytest.raises(ValueError, match='data.root'):
    sources.count(_config(source='scanobjectnn'), 'train')
  with pytest.raises(FileNotFoundError, match='shapenet_pc'):
    sources.class_names(_config(source='shapenet55', root=str(tmp_path)))


def test_shape_validation():
  with pytest.raises(ValueError, match='exactly one of mesh / points'):
    Shape('x', 0, 'train', None, None, GREY)
  with pytest.raises(ValueError, match='color'):
    Shape('x', 0, 'train', None, np.zeros((4, 3)), np.array([2.0, 0, 0]))
