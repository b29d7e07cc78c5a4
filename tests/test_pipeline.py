"""grain pipeline: batch shapes, seeded determinism, checkpoint restore, augmented batches end to end
(the augmentation geometry itself: tests/test_augment.py)."""
import numpy as np
import pytest

from crossjepa.data import batch_spec
from crossjepa.data import pipeline
from crossjepa.training import pretraining
from test_records import WIDTH, fake_example, tiny_config, write_fake_records  # pylint: disable=g-bad-import-order

SIZES = {'pretrain': 6, 'train': 4, 'test': 3}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp('pipeline'))
  write_fake_records(config, workdir, sizes=SIZES)
  return config, workdir


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  for x, y in zip(a, b):
    for (kx, vx), (ky, vy) in zip(sorted(_leaves(x)), sorted(_leaves(y))):
      assert kx == ky
      np.testing.assert_array_equal(vx, vy, err_msg=kx)


def _leaves(tree, prefix=''):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, prefix + k + '/')
    else:
      yield prefix + k, v


def test_batch_shapes_and_dtypes(prepared):
  config, workdir = prepared
  config = tiny_config()
  config.train.views_per_step = 2
  it = pipeline.train_iterator(config, workdir, need_images=True)
  batch = next(it)
  shapes = {k: (v.shape, v.dtype) for k, v in _leaves(batch)}
  b = config.train.batch_size
  assert shapes == {
      'points': ((b, 64, 3), np.float32), 'centers': ((b, 8, 3), np.float32),
      'groups': ((b, 8, 8), np.int32), 'label': ((b,), np.int32),
      'views/world_to_cam': ((b, 2, 4, 4), np.float32), 'views/intrinsics': ((b, 2, 3, 3), np.float32),
      'views/hist': ((b, 2, 12), np.float32), 'views/corr': ((b, 2, 8), np.int32),
      'views/image': ((b, 2, 28, 28, 3), np.float32),
      'teacher/cls': ((b, 2, WIDTH), np.float32), 'teacher/groups': ((b, 2, 8, WIDTH), np.float32),
  }
  # images are ImageNet-normalised floats, not raw bytes
  assert batch['views']['image'].min() < -1.0 and batch['views']['image'].max() > 1.0
  config.train.target = 'cls'
  keys = {k for k, _ in _leaves(next(pipeline.train_iterator(config, workdir)))}
  assert 'views/image' not in keys and 'teacher/groups' not in keys


@pytest.mark.parametrize('target,images', [('groups', True), ('cls', False), ('object', False)])
def test_example_batch_from_the_spec_matches_the_pipeline(prepared, target, images):
  """The trainers initialise from batch_spec.example_batch (config + the records' teacher widths,
  no data read): it has exactly the keys, shapes (batch axis aside) and dtypes of a real batch."""
  config, workdir = prepared
  config = tiny_config()
  config.train.views_per_step = 2
  config.train.target = target
  teacher = pretraining.teacher_info(config, workdir)
  assert teacher['width'] == WIDTH
  real = next(pipeline.train_iterator(config, workdir, need_images=images))
  spec = batch_spec.example_batch(config, teacher, need_images=images, batch_size=3)
  got = {k: (v.shape[1:], v.dtype) for k, v in _leaves(spec)}
  want = {k: (v.shape[1:], v.dtype) for k, v in _leaves(real)}
  assert got == want
  assert all(v.shape[0] == 3 and not v.any() for _, v in _leaves(spec))


def test_union_of_splits_and_epochs_reshuffled(prepared):
  config, workdir = prepared
  ds = pipeline.train_dataset(config, workdir)   # pretrain (6) + train (4), batch 4
  hists = [ds[i]['views']['hist'][:, 0, 0] for i in range(5)]   # 20 objects = two epochs of 10
  flat = np.concatenate(hists)
  first, second = flat[:10], flat[10:]
  expected = sorted(np.concatenate([
      [fake_example(config, i, s)['views']['hist'][:, 0] for i in range(SIZES[s])] for s in ('pretrain', 'train')
  ]).ravel().tolist())
  # every object exactly once per epoch (each view's hist value identifies the object + view)
  def objects(vals):
    out = []
    for v in vals:
      out.append([i for i, e in enumerate(expected) if np.isclose(e, v)])
    return out
  assert all(len(o) == 1 for o in objects(first)) and all(len(o) == 1 for o in objects(second))
  assert not np.array_equal(first, second)   # a new order (and/or views) in the second epoch


def test_determinism_by_seed(prepared):
  config, workdir = prepared
  a = _take(pipeline.train_iterator(config, workdir), 3)
  b = _take(pipeline.train_iterator(config, workdir), 3)
  _assert_batches_equal(a, b)
  other = tiny_config()
  other.seed = 1
  c = _take(pipeline.train_iterator(other, workdir), 3)
  assert not all(np.array_equal(x['points'], y['points']) for x, y in zip(a, c))


def test_checkpoint_state_restores_next_batches(prepared):
  config, workdir = prepared
  it = pipeline.train_iterator(config, workdir)
  _take(it, 2)
  state = it.get_state()
  expected = _take(it, 3)
  fresh = pipeline.train_iterator(config, workdir)
  fresh.set_state(state)
  _assert_batches_equal(expected, _take(fresh, 3))


def test_view_subsampling_keeps_views_aligned(prepared):
  config, workdir = prepared
  config = tiny_config()
  config.train.augment.rotate_up = False
  config.train.augment.scale = (1.0, 1.0)
  config.train.augment.translate = 0.0
  config.train.augment.jitter = 0.0
  ds = pipeline.train_dataset(config, workdir)
  refs = {}
  for s in ('pretrain', 'train'):
    for i in range(SIZES[s]):
      ex = fake_example(config, i, s)
      refs[(s, i)] = ex
  chosen = []
  for step in range(5):
    batch = ds[step]
    for b in range(config.train.batch_size):
      points = batch['points'][b]
      (key,) = [k for k, ex in refs.items() if np.array_equal(ex['points'], points)]
      ex = refs[key]
      w2c = batch['views']['world_to_cam'][b, 0]
      (view,) = [j for j in range(2) if np.array_equal(ex['views']['world_to_cam'][j], w2c)]
      chosen.append(view)
      # every per-view field comes from that same view
      np.testing.assert_array_equal(batch['views']['corr'][b, 0], ex['views']['corr'][view])
      np.testing.assert_array_equal(batch['views']['hist'][b, 0], ex['views']['hist'][view])
      np.testing.assert_array_equal(batch['teacher']['cls'][b, 0], ex['teacher']['cls'][view])
      np.testing.assert_array_equal(batch['teacher']['groups'][b, 0],
                                    ex['teacher']['groups'][view].astype(np.float32))
      assert batch['label'][b] == ex['label']
  assert set(chosen) == {0, 1}   # both views get drawn


def test_augmented_batch_projects_like_the_record(prepared):
  """End to end: rotated/scaled centres with the batch's poses land on the record's pixels."""
  config, workdir = prepared
  config = tiny_config()
  config.train.augment.jitter = 0.0
  ds = pipeline.train_dataset(config, workdir)
  batch = ds[0]
  refs = [fake_example(config, i, s) for s in ('pretrain', 'train') for i in range(SIZES[s])]
  for b in range(config.train.batch_size):
    hist = batch['views']['hist'][b, 0]
    (ex, view), = [(e, j) for e in refs for j in range(2) if np.array_equal(e['views']['hist'][j], hist)]
    # camera coordinates of the augmented centres under the augmented pose are s times the
    # record's: the same pixels under perspective projection (the fake poses need not be rigid)
    w_new = batch['views']['world_to_cam'][b, 0].astype(np.float64)
    w_old = ex['views']['world_to_cam'][view].astype(np.float64)
    assert not np.allclose(w_new, w_old)
    c_new = batch['centers'][b].astype(np.float64)
    c_old = ex['centers'].astype(np.float64)
    cam_new = c_new @ w_new[:3, :3].T + w_new[:3, 3]
    cam_old = c_old @ w_old[:3, :3].T + w_old[:3, 3]
    scale = np.linalg.norm(batch['points'][b] - batch['points'][b].mean(0), axis=1).max() / \
        np.linalg.norm(ex['points'] - ex['points'].mean(0), axis=1).max()
    np.testing.assert_allclose(cam_new, scale * cam_old, rtol=1e-4, atol=1e-4)


def test_eval_arrays_and_padded_batches(prepared):
  config, workdir = prepared
  arrays = pipeline.load_split(config, workdir, 'test', chunk=2)
  assert arrays['points'].shape == (3, 64, 3) and arrays['label'].dtype == np.int32
  ids = {tuple(np.round(p[0], 5)): None for p in arrays['points']}
  assert len(ids) == 3
  batches = list(pipeline.iterate_split(config, workdir, 'test', 2))
  assert len(batches) == 2
  assert all(b['points'].shape == (2, 64, 3) for b in batches)
  np.testing.assert_array_equal(batches[1]['valid'], [True, False])
  np.testing.assert_array_equal(np.concatenate([b['points'] for b in batches])[:3], arrays['points'])
  np.testing.assert_array_equal(batches[1]['points'][1], batches[1]['points'][0])
  with pytest.raises(KeyError, match="split 'valid'"):
    pipeline.load_split(config, workdir, 'valid')


def test_too_few_objects_is_an_error(prepared):
  config, workdir = prepared
  config = tiny_config()
  config.train.batch_size = 64
  with pytest.raises(ValueError, match='fewer than one batch'):
    pipeline.train_dataset(config, workdir)


def test_records_metadata_mismatch_blocks_training(prepared):
  _, workdir = prepared
  other = tiny_config(num_groups=16)
  with pytest.raises(ValueError, match='num_groups: dataset has 8, config has 16'):
    pipeline.train_dataset(other, workdir)
