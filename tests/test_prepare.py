"""prepare: end to end on the synthetic source, teacher cache vs. brute force, skip / mismatch."""
import os

import jax
import numpy as np
import pytest

from crossjepa import imaging
from crossjepa.data import correspondence
from crossjepa.data import pipeline
from crossjepa.data import per_object
from crossjepa.data import prepare
from crossjepa.data import records
from crossjepa.data import sampling
from crossjepa.data import sources
from crossjepa.data import teacher_cache
from crossjepa.data.shape import Shape
from crossjepa.models import vit
from test_records import tiny_config  # pylint: disable=g-bad-import-order


def prepare_config(**data_overrides):
  c = tiny_config(name='prepared_objects', **data_overrides)
  s = c.data.synthetic
  s.num_classes = 2
  s.pretrain_per_class = 1
  s.train_per_class = 2
  s.test_per_class = 1
  s.teacher_per_class = 1
  return c


@pytest.fixture(scope='module')
def teacher():
  return teacher_cache.Teacher(prepare_config(), chunk_objects=2)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory, teacher):
  config = prepare_config()
  workdir = str(tmp_path_factory.mktemp('prepare'))
  summary = prepare.prepare(config, workdir, teacher=teacher)
  return config, workdir, summary


def test_teacher_matches_brute_force(teacher):
  rng = np.random.default_rng(0)
  n, v, g = 3, 2, 8      # 3 objects with chunks of 2: two calls, the second padded
  images = rng.integers(0, 256, (n, v, 28, 28, 3)).astype(np.uint8)
  corr = rng.integers(-1, 4, (n, v, g)).astype(np.int32)
  corr[0, 0] = -1        # a view with no visible group
  cls, groups = teacher(images, corr)
  assert cls.dtype == np.float16 and cls.shape == (n, v, teacher.width)
  assert groups.dtype == np.float16 and groups.shape == (n, v, g, teacher.width)
  out = teacher.module.apply({'params': jax.device_get(teacher.params)},
                             imaging.normalize_images(images.reshape(n * v, 28, 28, 3)))
  ref_cls = np.asarray(out['cls']).reshape(n, v, -1)
  patches = np.asarray(out['patches']).reshape(n, v, 4, -1)
  np.testing.assert_allclose(cls, ref_cls, rtol=2e-3, atol=2e-3)
  for i in range(n):
    for j in range(v):
      for k in range(g):
        if corr[i, j, k] < 0:
          assert np.all(groups[i, j, k] == 0)
        else:
          np.testing.assert_allclose(groups[i, j, k], patches[i, j, corr[i, j, k]],
                                     rtol=2e-3, atol=2e-3)
  info = teacher.teacher_info()
  assert info['name'] == 'random_init:tiny/14:seed0' and info['width'] == 64
  assert info['checksum'] == vit.param_checksum(jax.device_get(teacher.params))


def test_teacher_needs_a_source():
  config = prepare_config()
  config.teacher.random_init = False
  with pytest.raises(ValueError, match='convert_teacher.*--mode=teacher'):
    teacher_cache.Teacher(config)


def test_prepare_end_to_end(prepared, teacher):
  config, workdir, summary = prepared
  assert summary['splits'] == {'pretrain': 2, 'train': 4, 'test': 2} and not summary['skipped']
  assert os.path.exists(os.path.join(workdir, 'plots', 'views.png'))
  builder = records.open_dataset(config, workdir)
  meta = builder.info.metadata
  assert meta['teacher']['name'] == teacher.name
  assert meta['class_names'] == sources.class_names(config.data) and len(meta['class_names']) == 2
  arrays = pipeline.load_split(config, workdir, 'train', keys=[
      'id', 'label', 'points', 'centers', 'groups', 'views/image', 'views/world_to_cam',
      'views/intrinsics', 'views/corr', 'teacher/cls', 'teacher/groups'])
  shapes = {s.id: s for s in sources.iter_shapes(config.data, 'train')}
  for i in range(4):
    sid = arrays['id'][i]
    shape = shapes[sid]
    assert arrays['label'][i] == shape.label
    points, centers, groups = arrays['points'][i], arrays['centers'][i], arrays['groups'][i]
    # unit sphere: centred at the mean, max norm 1
    np.testing.assert_allclose(points.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1).max(), 1.0, atol=1e-5)
    # FPS starts at point 0; each group's nearest neighbour is its centre
    np.testing.assert_array_equal(centers[0], points[0])
    np.testing.assert_allclose(points[groups[:, 0]], centers, atol=1e-6)
    # the stored views are what render_views gives for the object's seed (deterministic)
    seed = per_object.object_seed(config.seed, sid)
    views = per_object.render_views(shape, config.data, seed)
    np.testing.assert_array_equal(arrays['views/image'][i], views['image'])
    np.testing.assert_array_equal(arrays['views/world_to_cam'][i], views['world_to_cam'])
    # correspondence recomputed from the rendered depth
    corr = correspondence.correspondence_map(centers, views['world_to_cam'], views['intrinsics'],
                                             views['depth'], 14, config.data.depth_tolerance)
    np.testing.assert_array_equal(arrays['views/corr'][i], corr)
    assert (corr >= 0).any()
  # teacher cache equals the teacher on the stored images
  cls, grp = teacher(arrays['views/image'], arrays['views/corr'])
  np.testing.assert_array_equal(arrays['teacher/cls'], cls)
  np.testing.assert_array_equal(arrays['teacher/groups'], grp)
  assert np.all(arrays['teacher/groups'][arrays['views/corr'] < 0] == 0)


def test_prepare_skips_when_done_and_refuses_a_mismatch(prepared, teacher):
  config, workdir, _ = prepared
  again = prepare.prepare(config, workdir, teacher=teacher)
  assert again['skipped'] and again['splits'] == {'pretrain': 2, 'test': 2, 'train': 4}
  other = prepare_config(num_views=3)
  with pytest.raises(ValueError, match='(?s)num_views: dataset has 2, config has 3.*fresh'):
    prepare.prepare(other, workdir, teacher=teacher)


def test_point_source_uses_fps_of_the_normalised_cloud():
  config = prepare_config()
  rng = np.random.default_rng(1)
  cloud = rng.normal(size=(300, 3)).astype(np.float32) * [1.0, 2.0, 0.5] + 3.0
  shape = Shape('scan_0', 1, 'train', None, cloud, np.array([0.2, 0.4, 0.8]))
  partial = per_object.process_shape(shape, config.data, 7)
  normalised = (cloud - cloud.mean(0)) / np.linalg.norm(cloud - cloud.mean(0), axis=1).max()
  # The FPS is deferred to the chunk: the partial carries the normalised cloud, and the chunk
  # step (sampling.with_points, the batched jitted FPS) takes the points from it.
  assert 'points' not in partial
  np.testing.assert_allclose(partial['cloud'], normalised, atol=1e-5)
  (partial,) = sampling.with_points([partial], config.data, 4)
  idx = sampling.farthest_point_sampling_np(normalised, 64)
  np.testing.assert_allclose(partial['points'], normalised[idx], atol=1e-5)
  assert idx[0] == 0 and len(set(idx.tolist())) == 64
  # brute-force FPS: each pick is the farthest from the previous picks
  for m in range(1, 64):
    d = np.min(np.linalg.norm(normalised[:, None] - normalised[idx[:m]][None], axis=2), axis=1)
    assert np.isclose(d[idx[m]], d.max())
  assert partial['views']['image'].shape == (2, 28, 28, 3)
  assert (partial['views']['image'] != partial['views']['image'][0, 0, 0]).any()   # something drawn
  np.testing.assert_allclose(partial['views']['hist'].sum(-1), 1.0, atol=1e-4)


def test_worker_processes_give_the_same_examples(teacher):
  config = prepare_config(num_workers=2)
  serial = prepare_config()
  shapes = list(sources.iter_shapes(config.data, 'test'))
  a = list(prepare.generate_examples(config, 'test', teacher, shapes=shapes))
  b = list(prepare.generate_examples(serial, 'test', teacher, shapes=shapes))
  assert [k for k, _ in a] == [k for k, _ in b] == [s.id for s in shapes]
  for (_, x), (_, y) in zip(a, b):
    np.testing.assert_array_equal(x['points'], y['points'])
    np.testing.assert_array_equal(x['views']['image'], y['views']['image'])
    np.testing.assert_array_equal(x['teacher']['groups'], y['teacher']['groups'])


def test_chunks_in_flight_keep_each_objects_own_teacher_output():
  """generate_examples keeps three chunks in flight (one read while the FPS of the one before and
  the teacher of the one before that run): over 5 chunks of one object each, every example is
  finish_chunk's on that object alone, in the shapes' order."""
  config = prepare_config()
  one = teacher_cache.Teacher(config, chunk_objects=1)
  shapes = [s for split in ('train', 'test', 'pretrain')
            for s in sources.iter_shapes(config.data, split)][:5]
  got = list(prepare.generate_examples(config, 'train', one, shapes=shapes))
  assert [k for k, _ in got] == [s.id for s in shapes]
  for (_, example), shape in zip(got, shapes):
    partial = per_object.process_shape(shape, config.data,
                                       per_object.object_seed(config.seed, shape.id))
    want = prepare.finish_chunk([partial], config, one)[0]
    for key in ('points', 'centers', 'groups'):
      np.testing.assert_array_equal(example[key], want[key])
    np.testing.assert_array_equal(example['views']['corr'], want['views']['corr'])
    np.testing.assert_array_equal(example['teacher']['cls'], want['teacher']['cls'])
    np.testing.assert_array_equal(example['teacher']['groups'], want['teacher']['groups'])
  assert len({example['teacher']['cls'].tobytes() for _, example in got}) == 5


def test_in_flight_bounds_what_the_workers_run_ahead():
  """Pool.imap takes every task at once and keeps every result until read: with a consumer
  slower than the workers the backlog grew to the whole source (renders of 4 MB each at the
  paper's size). Through InFlight the tasks handed out minus the results read stay <= the limit,
  in the source's order; stopping it lets terminate() end while the feeder waits for a slot."""
  import multiprocessing  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  total, limit = 60, prepare.in_flight_limit(workers=2, chunksize=2, chunk_objects=4)
  assert limit == 8
  for bounded in (False, True):
    handed = [0]

    def counted(tasks):   # what the pool's feeder takes
      for task in tasks:
        handed[0] += 1
        yield task

    flow = prepare.InFlight(limit)
    pool = multiprocessing.get_context('spawn').Pool(2)
    try:
      tasks = (-i for i in range(total))
      results = (flow.consumed(pool.imap(abs, counted(flow.feed(tasks)), chunksize=2)) if bounded
                 else pool.imap(abs, counted(tasks), chunksize=2))
      ahead = []
      for read, value in enumerate(results, 1):
        assert value == read - 1                        # the source's order
        time.sleep(0.01)                                # a consumer slower than the workers
        ahead.append(handed[0] - read)
        if bounded and read == total // 2:
          break
    finally:
      flow.stop()
      start = time.time()
      pool.terminate()
      pool.join()
      assert time.time() - start < 5
    if bounded:
      assert max(ahead) <= limit and handed[0] < total, (max(ahead), handed[0])
    else:
      assert max(ahead) == total - 1                    # every task taken at the first read


def test_teacher_stats_brute_force(prepared):
  config, workdir, _ = prepared
  stats = pipeline.teacher_stats(config, workdir)
  splits = list(config.data.pretrain_splits)
  arrays = [pipeline.load_split(config, workdir, s, ('teacher/cls', 'teacher/groups', 'views/corr'))
            for s in splits]
  cls = np.concatenate([a['teacher/cls'].reshape(-1, a['teacher/cls'].shape[-1]) for a in arrays])
  visible = np.concatenate([a['views/corr'].reshape(-1) >= 0 for a in arrays])
  groups = np.concatenate([a['teacher/groups'].reshape(-1, a['teacher/groups'].shape[-1])
                           for a in arrays])[visible]
  for key, x in (('cls', cls), ('groups', groups)):
    x = x.astype(np.float64)
    np.testing.assert_allclose(stats[key]['mean'], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats[key]['std'], np.maximum(x.std(0), pipeline.STATS_EPS),
                               rtol=1e-4, atol=1e-6)
  again = pipeline.teacher_stats(config, workdir)          # read back from the cached file
  np.testing.assert_array_equal(again['cls']['mean'], stats['cls']['mean'])


def test_records_without_group_features(prepared, teacher, tmp_path):
  """data.cache_group_features=False: the same records but teacher/groups, whose bytes are then
  gone (ViT-B/14 at the paper's geometry: 96 % of a record); the CLS statistics unchanged; a
  config that wants them is refused by name; the groups target is refused up front."""
  from crossjepa import config_util  # pylint: disable=g-import-not-at-top
  config, workdir, _ = prepared
  lean = prepare_config(cache_group_features=False)
  lean_dir = str(tmp_path)
  prepare.prepare(lean, lean_dir, teacher=teacher)
  builder = records.open_dataset(lean, lean_dir)
  assert 'groups' not in builder.info.features['teacher']
  keys = ('id', 'points', 'groups', 'views/corr', 'teacher/cls')
  full, part = (pipeline.load_split(c, w, 'train', keys)
                for c, w in ((config, workdir), (lean, lean_dir)))
  order = np.argsort(part['id'])
  np.testing.assert_array_equal(np.sort(full['id']), part['id'][order])
  full_order = np.argsort(full['id'])
  for key in keys[1:]:
    np.testing.assert_array_equal(full[key][full_order], part[key][order], err_msg=key)
  full_builder = records.open_dataset(config, workdir)
  lean_bytes = builder.info.splits['train'].num_bytes
  full_bytes = full_builder.info.splits['train'].num_bytes
  grp = 4 * 2 * 8 * teacher.feature_width * 2     # 4 objects x [V=2, G=8, C] float16
  assert abs((full_bytes - lean_bytes) - grp) < 0.05 * grp, (full_bytes, lean_bytes, grp)
  stats = pipeline.teacher_stats(lean, lean_dir)
  assert set(stats) == {'cls'}
  np.testing.assert_allclose(stats['cls']['mean'], pipeline.teacher_stats(config, workdir)['cls']['mean'])
  with pytest.raises(ValueError, match='cache_group_features: dataset has False, config has True'):
    prepare.prepare(prepare_config(), lean_dir, teacher=teacher)
  lean.train.target = 'groups'
  with pytest.raises(config_util.ConfigError, match='target = groups.*cache_group_features = False'):
    config_util.check_config(lean)


def test_records_of_an_older_schema_are_named_and_left(prepared, teacher, tmp_path, caplog):
  """Records of another schema version are never read: prepare writes this version beside them
  and says which folder holds the old ones, and how much, instead of leaving them unmentioned."""
  import shutil  # pylint: disable=g-import-not-at-top
  config, workdir, _ = prepared
  old = os.path.join(str(tmp_path), 'data', config.data.name, '1.0.0')
  shutil.copytree(records.dataset_dir(config, workdir), old)
  with caplog.at_level('WARNING'):
    summary = prepare.prepare(config, str(tmp_path), teacher=teacher)
  assert not summary['skipped'] and os.path.isdir(old)
  size = prepare._dir_bytes(old) / 1e6   # pylint: disable=protected-access
  assert any(f'{old} holds records of schema 1.0.0 ({size:.1f} MB)' in r.getMessage()
             for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_records_of_other_synthetic_data_are_not_reused(prepared, teacher):
  config, workdir, _ = prepared
  other = prepare_config()
  other.data.synthetic.train_per_class = 3
  with pytest.raises(ValueError, match=r"(?s)prepared from other data.*synthetic: records were "
                                       r"built from .*'train_per_class': 2.*'train_per_class': 3"):
    prepare.prepare(other, workdir, teacher=teacher)


_TETRA = 'OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n'


def _mesh_tree(root, classes, per_split=1):
  for c, name in enumerate(classes):
    for split in ('train', 'test'):
      os.makedirs(os.path.join(root, name, split), exist_ok=True)
      for i in range(per_split):
        with open(os.path.join(root, name, split, f'{name}_{i}.off'), 'w') as f:
          f.write(_TETRA.replace('0 0 1\n', f'0 0 {1 + c + 0.1 * i}\n'))


def test_mesh_folder_records_follow_the_files(tmp_path):
  """Another root, a class folder added, a file edited: each is named, nothing is reused; a
  stale incomplete.* folder of an interrupted prepare is removed by the next one."""
  root = str(tmp_path / 'meshes')
  _mesh_tree(root, ['chair', 'table'])
  config = prepare_config(source='mesh_folder', root=root, eval_only=True)
  workdir = str(tmp_path / 'w')
  stale = os.path.join(records.data_dir(workdir), config.data.name, f'incomplete.AB12CD_{records.VERSION}')
  os.makedirs(stale)
  first = prepare.prepare(config, workdir)
  assert not first['skipped'] and first['splits'] == {'train': 2, 'test': 2}
  assert not os.path.exists(stale)
  assert prepare.prepare(config, workdir)['skipped']

  copy = str(tmp_path / 'copy')
  _mesh_tree(copy, ['chair', 'table'])
  moved = prepare_config(source='mesh_folder', root=copy, eval_only=True)
  with pytest.raises(ValueError, match=r'(?s)root: records were built from .*meshes.*copy'):
    prepare.prepare(moved, workdir)

  _mesh_tree(root, ['lamp'])
  with pytest.raises(ValueError, match=r"(?s)class_names: added \['lamp'\].*not reused"):
    prepare.prepare(config, workdir)
  import shutil
  shutil.rmtree(os.path.join(root, 'lamp'))
  assert prepare.prepare(config, workdir)['skipped']   # back to the data it was built from

  path = os.path.join(root, 'chair', 'train', 'chair_0.off')
  st = os.stat(path)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  with pytest.raises(ValueError, match=r'files under data.root: the same 4 files .* modified'):
    prepare.prepare(config, workdir)


def test_worker_count(monkeypatch):
  """data.num_workers: as given, or -1 = one per usable core, at most MAX_AUTO_WORKERS."""
  data = prepare_config().data
  data.num_workers = 3
  assert per_object.worker_count(data) == 3
  data.num_workers = -1
  monkeypatch.setattr(per_object.os, 'sched_getaffinity', lambda pid: set(range(2)), raising=False)
  assert per_object.worker_count(data) == 2
  monkeypatch.setattr(per_object.os, 'sched_getaffinity', lambda pid: set(range(96)), raising=False)
  assert per_object.worker_count(data) == per_object.MAX_AUTO_WORKERS == 16
