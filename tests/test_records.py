"""Records: TFDS builder round trip with the DESIGN.md §3 schema, metadata checks, interruption."""
import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from crossjepa.data import records

WIDTH = 16   # teacher width D of the fake records


def tiny_config(**data_overrides):
  """N=64, G=8, K=8, V=2, 28 px: configs/default.py with tiny sizes and a random ViT teacher."""
  from configs import default as default_config  # pylint: disable=g-import-not-at-top
  c = default_config.get_config()
  d = c.data
  d.name = 'test_objects'
  d.num_points = 64
  d.num_groups = 8
  d.group_size = 8
  d.num_views = 2
  d.image_size = 28
  d.patch_size = 14
  d.hist_bins = 4
  d.shards = 2
  d.teacher_chunk = 2
  d.synthetic.num_classes = 4
  for k, v in data_overrides.items():
    d[k] = v
  c.model.vit = 'tiny/14'
  c.teacher.random_init = True
  c.teacher.feature_stage = ''
  t = c.train
  t.batch_size = 4
  t.views_per_step = 1
  t.target = 'groups'
  t.standardize_target = 'none'
  return c


def fake_example(config, index: int, split: str):
  """A schema-conforming example whose every value identifies (split, object, view)."""
  d = config.data
  rng = np.random.default_rng([index, len(split)])
  n, g, k, v, h = d.num_points, d.num_groups, d.group_size, d.num_views, d.image_size
  views = {
      'world_to_cam': np.stack([np.eye(4, dtype=np.float32) * (1 + j) + index for j in range(v)]),
      'intrinsics': rng.normal(size=(v, 3, 3)).astype(np.float32),
      'hist': rng.random((v, 3 * d.hist_bins)).astype(np.float32),
      'corr': rng.integers(-1, (h // d.patch_size) ** 2, (v, g)).astype(np.int32),
  }
  if d.keep_images:
    views['image'] = rng.integers(0, 256, (v, h, h, 3)).astype(np.uint8)
  points = rng.normal(size=(n, 3)).astype(np.float32)
  groups = rng.integers(0, n, (g, k)).astype(np.int32)
  return {
      'id': f'{split}_{index:03d}', 'label': np.int64(index % 3),
      'points': points, 'centers': points[:g].copy(), 'groups': groups, 'views': views,
      'teacher': {'cls': (np.arange(v)[:, None] * 100 + index + np.zeros((v, WIDTH))).astype(np.float16),
                  'groups': rng.normal(size=(v, g, WIDTH)).astype(np.float16)},
  }


TEACHER_INFO = {'name': 'fake_teacher', 'image_size': [28, 28], 'patch_size': 14, 'width': WIDTH,
                'checksum': 'abc123'}


def write_fake_records(config, workdir, sizes=None, fail_after=None):
  """Writes fake records of `sizes` {split: count}; raises after `fail_after` examples if set."""
  sizes = sizes or {'pretrain': 6, 'train': 4, 'test': 3}
  produced = [0]

  def example_fn(split):
    for i in range(sizes[split]):
      if fail_after is not None and produced[0] >= fail_after:
        raise RuntimeError('simulated crash during prepare')
      produced[0] += 1
      ex = fake_example(config, i, split)
      yield ex['id'], ex

  builder = records.make_builder(config, workdir, teacher_info=TEACHER_INFO,
                                 class_names=['a', 'b', 'c'], splits=list(sizes),
                                 example_fn=example_fn)
  records.write(builder, config.data.shards)
  return builder


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp('records'))
  write_fake_records(config, workdir)
  return config, workdir


def test_round_trip_schema(prepared):
  config, workdir = prepared
  builder = records.open_dataset(config, workdir)
  assert records.split_names(builder) == ['pretrain', 'test', 'train']
  assert builder.info.splits['train'].num_examples == 4
  # sharded as configured
  shards = [f for f in os.listdir(records.dataset_dir(config, workdir)) if '-train.array_record-' in f]
  assert len(shards) == 2
  source = records.RecordSource(builder, 'train')
  got = {str(source[i]['id'], 'utf-8') if isinstance(source[i]['id'], bytes) else source[i]['id']: source[i]
         for i in range(len(source))}
  assert sorted(got) == [f'train_{i:03d}' for i in range(4)]
  expect_dtypes = {
      'label': (np.int64, ()), 'points': (np.float32, (64, 3)), 'centers': (np.float32, (8, 3)),
      'groups': (np.int32, (8, 8)), 'views/image': (np.uint8, (2, 28, 28, 3)),
      'views/world_to_cam': (np.float32, (2, 4, 4)), 'views/intrinsics': (np.float32, (2, 3, 3)),
      'views/hist': (np.float32, (2, 12)), 'views/corr': (np.int32, (2, 8)),
      'teacher/cls': (np.float16, (2, WIDTH)), 'teacher/groups': (np.float16, (2, 8, WIDTH)),
  }
  for i in range(4):
    ref = fake_example(config, i, 'train')
    ex = got[ref['id']]
    for key, (dtype, shape) in expect_dtypes.items():
      a, b = ex, ref
      for part in key.split('/'):
        a, b = a[part], b[part]
      a = np.asarray(a)
      assert a.dtype == dtype and a.shape == shape, key
      np.testing.assert_array_equal(a, b, err_msg=key)


def test_metadata_recorded(prepared):
  config, workdir = prepared
  meta = dict(records.open_dataset(config, workdir).info.metadata)
  assert meta['num_points'] == 64 and meta['num_groups'] == 8 and meta['group_size'] == 8
  assert meta['num_views'] == 2 and meta['image_size'] == [28, 28] and meta['patch_size'] == 14
  assert meta['hist_bins'] == 4 and meta['class_names'] == ['a', 'b', 'c']
  assert meta['teacher']['name'] == 'fake_teacher' and meta['teacher']['checksum'] == 'abc123'
  assert meta['renderer'] == {'camera': {'mode': 'random', 'distance': 2.6,
                                         'elevation_range': [-10.0, 50.0], 'fov': 45.0},
                              'colored': True, 'depth_tolerance': 0.1}
  import crossjepa
  assert meta['code_version'] == crossjepa.__version__
  records.check_metadata(meta, config, teacher_info={'name': 'fake_teacher', 'checksum': 'abc123'})


def test_check_metadata_lists_every_difference(prepared):
  config, workdir = prepared
  meta = dict(records.open_dataset(config, workdir).info.metadata)
  other = tiny_config(num_points=128, image_size=56, depth_tolerance=0.2)
  with pytest.raises(ValueError) as e:
    records.check_metadata(meta, other, teacher_info={'name': 'dinov2_vitb14'})
  msg = str(e.value)
  assert 'num_points: dataset has 64, config has 128' in msg
  assert 'image_size: dataset has [28, 28], config has [56, 56]' in msg
  assert 'renderer' in msg and 'teacher.name' in msg
  assert 'num_groups' not in msg and 'hist_bins' not in msg
  with pytest.raises(ValueError, match='does not match|do not match'):
    records.open_dataset(other, workdir)


def test_missing_dataset_and_split(prepared, tmp_path):
  config, workdir = prepared
  with pytest.raises(FileNotFoundError, match='run --mode=prepare first') as e:
    records.open_dataset(config, str(tmp_path))
  assert os.path.join(str(tmp_path), 'data') in str(e.value)
  builder = records.open_dataset(config, workdir)
  with pytest.raises(KeyError, match=r"split 'valid'.*\['pretrain', 'test', 'train'\]"):
    records.RecordSource(builder, 'valid')


def test_records_of_an_older_version_are_named(prepared, tmp_path):
  config, workdir = prepared
  import shutil  # pylint: disable=g-import-not-at-top
  old = os.path.join(str(tmp_path), 'data', config.data.name, '1.0.0')
  shutil.copytree(records.dataset_dir(config, workdir), old)
  with pytest.raises(FileNotFoundError,
                     match=r'holds records of version 1\.0\.0.*run --mode=prepare'):
    records.open_dataset(config, str(tmp_path))


def test_arrays_are_stored_at_their_own_width(prepared):
  """Raw bytes, not tf.train.Example value lists: a float16 value takes 2 bytes (a float list
  took 4), an int32 4; one record is its arrays' bytes plus a small framing overhead."""
  config, workdir = prepared
  builder = records.open_dataset(config, workdir)
  raw = builder.as_data_source('train', deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  example = records.RecordSource(builder, 'train')[0]
  arrays = [np.asarray(x) for x in jax.tree.leaves(example) if np.ndim(x) > 0]
  payload = sum(a.nbytes for a in arrays if a.dtype != np.uint8)   # images: zlib
  image = example['views']['image']
  assert payload == (64 * 3 * 4 + 8 * 3 * 4 + 8 * 8 * 4 + 2 * (16 + 9 + 12 + 8) * 4
                     + 2 * WIDTH * 2 + 2 * 8 * WIDTH * 2)
  encoded = tfds.features.Tensor(shape=image.shape, dtype=np.uint8,
                                 encoding=tfds.features.Encoding.ZLIB).encode_example(image)
  overhead = len(raw[0]) - payload - len(encoded)
  assert 0 < overhead < 320, overhead   # keys, lengths, the id and the label (269 measured;
  # the same record with value lists: 632)


def test_partial_decoding(prepared):
  config, workdir = prepared
  builder = records.open_dataset(config, workdir)
  source = records.RecordSource(builder, 'test', ['label', 'views/corr'])
  ex = source[0]
  assert set(ex) == {'label', 'views'} and set(ex['views']) == {'corr'}
  with pytest.raises(KeyError, match='not in the records'):
    records.RecordSource(builder, 'test', ['views/depth'])


def test_interrupted_prepare_leaves_nothing_and_rerun_completes(tmp_path):
  config = tiny_config(name='crash_objects', keep_images=False)
  workdir = str(tmp_path)
  with pytest.raises(RuntimeError, match='simulated crash'):
    write_fake_records(config, workdir, sizes={'train': 4, 'test': 3}, fail_after=5)
  with pytest.raises(FileNotFoundError, match='run --mode=prepare first'):
    records.open_dataset(config, workdir)
  leftovers = [p for p in os.listdir(os.path.join(workdir, 'data', 'crash_objects'))
               if p.startswith('incomplete') or p == records.VERSION]
  assert not leftovers, leftovers
  write_fake_records(config, workdir, sizes={'train': 4, 'test': 3})
  builder = records.open_dataset(config, workdir)
  assert builder.info.splits['train'].num_examples == 4
  assert builder.info.splits['test'].num_examples == 3
  assert 'image' not in builder.info.features['views']


def _read_all(config, workdir, split):
  source = records.RecordSource(records.open_dataset(config, workdir), split)
  return [source[i] for i in range(len(source))]


def test_a_split_over_the_shufflers_memory_buffer_writes_the_same_records(tmp_path, monkeypatch):
  """TFDS's shuffler moves a split over MAX_MEM_BUFFER_SIZE (1 GiB) to bucket files through
  tf.io.gfile; without TensorFlow that raised "No module named 'tensorflow'" after the whole
  split had been generated. Forced here with a 1-byte buffer: the spilled records equal the
  in-memory ones, in the same order, and the shuffler's file backend is restored afterwards."""
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  config = tiny_config(name='spill_objects')
  sizes = {'train': 7, 'test': 3}
  write_fake_records(config, str(tmp_path / 'memory'), sizes=sizes)
  backend = shuffle.tf
  monkeypatch.setattr(shuffle, 'MAX_MEM_BUFFER_SIZE', 1)
  spilled = []
  real_add = shuffle._Bucket.add   # pylint: disable=protected-access

  def counting_add(bucket, key, data):
    spilled.append(key)
    return real_add(bucket, key, data)

  monkeypatch.setattr(shuffle._Bucket, 'add', counting_add)   # pylint: disable=protected-access
  write_fake_records(config, str(tmp_path / 'disk'), sizes=sizes)
  assert len(spilled) == sum(sizes.values())      # every example went through a bucket file
  assert shuffle.tf is backend
  for split in sizes:
    memory = _read_all(config, str(tmp_path / 'memory'), split)
    disk = _read_all(config, str(tmp_path / 'disk'), split)
    assert [m['id'] for m in memory] == [d['id'] for d in disk]
    for m, d in zip(memory, disk):
      for key in ('points', 'groups'):
        np.testing.assert_array_equal(m[key], d[key])
      np.testing.assert_array_equal(m['teacher']['groups'], d['teacher']['groups'])
  leftovers = [p for p in (tmp_path / 'disk').rglob('bucket_*.tmp')]
  assert not leftovers, leftovers


def test_tfrecord_without_tensorflow_is_a_clear_error(tmp_path):
  try:
    import tensorflow  # noqa: F401
    pytest.skip('TensorFlow is installed')
  except ImportError:
    pass
  config = tiny_config(file_format='tfrecord')
  with pytest.raises(ImportError, match='`tf` extra'):
    write_fake_records(config, str(tmp_path))


def test_bad_name_is_an_error():
  with pytest.raises(ValueError, match='data.name'):
    records.builder_class('Bad-Name')
