"""Given renders + poses (data.render_set): parity with our renderer, the layouts, the silhouette
check and every refusal."""
import json
import os

import ml_collections
import numpy as np
from PIL import Image
import pytest

from crossjepa import config_schema
from crossjepa import config_util
from crossjepa.data import cameras
from crossjepa.data import fingerprint
from crossjepa.data import pipeline
from crossjepa.data import per_object
from crossjepa.data import prepare
from crossjepa.data import render
from crossjepa.data import render_set
from crossjepa.data import sources
from crossjepa.data.shape import GREY, Shape
from test_prepare import prepare_config  # pylint: disable=g-bad-import-order

KEYS = ['id', 'views/image', 'views/world_to_cam', 'views/intrinsics', 'views/hist', 'views/corr',
        'teacher/cls', 'teacher/groups']


def _write_png(path, rgb, depth):
  """RGBA: the render's colour, alpha 255 where it drew the object."""
  alpha = np.where(np.isfinite(depth), 255, 0).astype(np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1), 'RGBA').save(path)


def write_transforms_set(config, root, shapes, *, extra=1, opencv_poses=False):
  """A transforms_json render set of `shapes` from our own renderer, in the world that
  config.data.render_set's axes and world say (by default each file's frame).

  Each object gets (1 + extra) * V renders; the evenly spaced ones (every (1 + extra)-th) are
  exactly the views prepare renders for the object's seed, the others another camera ring, so
  prepare's records must come out as without the render set. opencv_poses rewrites the poses as
  OpenCV camera-to-world matrices (a convention mistake the silhouette check must catch)."""
  d = config.data
  size, num_views = int(d.image_size), int(d.num_views)
  for shape in shapes:
    seed = per_object.object_seed(config.seed, shape.id)
    _, mesh, cloud, frame = per_object.normalize(shape, d, np.random.default_rng([seed, 0]))
    similarity = render_set.world_similarity(d.render_set, frame,
                                             mesh.vertices if mesh is not None else cloud)
    w2c, k = cameras.make_cameras(d.camera, num_views, size, np.random.default_rng([seed, 1]))
    other, _ = cameras.make_cameras(d.camera, num_views * extra, size,
                                    np.random.default_rng([seed, 99]))
    step = 1 + extra
    order = np.stack([w2c[i // step] if i % step == 0 else other[i - i // step - 1]
                      for i in range(num_views * step)])
    k = np.broadcast_to(k[:1], (len(order), 3, 3))
    rgb, depth = per_object._render(mesh, cloud, per_object.base_color(shape, d), order, k, size)
    folder = os.path.join(root, *shape.id.split('/'))
    render_set.write_transforms_json(folder, rgb, np.isfinite(depth),
                                     render_set.from_normalized_frame(order, similarity), k)
    if opencv_poses:
      path = os.path.join(folder, 'transforms.json')
      with open(path) as f:
        data = json.load(f)
      for frame in data['frames']:
        frame['transform_matrix'] = (np.asarray(frame['transform_matrix'])
                                     @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist()
      with open(path, 'w') as f:
        json.dump(data, f)


@pytest.fixture(scope='module')
def given(tmp_path_factory):
  config = prepare_config()
  root = str(tmp_path_factory.mktemp('renders'))
  shapes = [s for split in ('pretrain', 'train', 'test') for s in sources.iter_shapes(config.data, split)]
  write_transforms_set(config, root, shapes)
  return root


def test_layouts_follow_the_schema():
  assert config_schema.RENDER_SET_LAYOUTS == render_set.LAYOUTS
  assert config_schema.RENDER_SET_AXES == tuple(render_set.AXES)
  assert config_schema.RENDER_SET_WORLDS == render_set.WORLDS


def test_evenly_spaced():
  assert render_set.evenly_spaced(24, 4, 'x').tolist() == [0, 6, 12, 18]
  assert render_set.evenly_spaced(30, 12, 'x').tolist() == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27]
  assert render_set.evenly_spaced(3, 3, 'x').tolist() == [0, 1, 2]
  with pytest.raises(ValueError, match='x: 2 render.*num_views = 3 needs at least 3'):
    render_set.evenly_spaced(2, 3, 'x')


def test_frame_change_moves_no_pixel():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(50, 3)) * 0.3 + [0.5, -1.0, 2.0]
  w2c, k = cameras.make_cameras({'mode': 'random', 'distance': 9.0, 'elevation_range': (-30, 60),
                                 'fov': 40.0}, 3, 64, rng)
  w2c = np.asarray(w2c, np.float64)
  w2c[:, :3, 3] -= np.einsum('vij,j->vi', w2c[:, :3, :3], [0.5, -1.0, 2.0])   # look at the points
  from crossjepa.data import correspondence  # pylint: disable=g-import-not-at-top
  center, scale = np.array([0.4, -0.9, 2.1]), 2.5
  normalised = (points - center) / scale
  uv, z = correspondence.project(points, w2c, k)
  for axes in render_set.AXES:
    for world in render_set.WORLDS:
      rs = {'axes': axes, 'world': world}
      sim = render_set.world_similarity(ml_collections.ConfigDict(rs), (center, scale), normalised)
      # the render set's world, by its definition: turned, then centred on the box, longest side 1
      turned = points @ render_set.AXES[axes].T
      lo, hi = turned.min(0), turned.max(0)
      expected = (turned - (lo + hi) / 2) / (hi - lo).max() if world == 'unit_cube' else turned
      np.testing.assert_allclose(sim.scale * normalised @ sim.rotation.T + sim.offset, expected,
                                 atol=1e-12)
      # w2c taken as cameras of that world: moved into the unit-sphere frame they see the
      # normalised points at the same pixels, they stay rigid, and the inverse brings them back
      moved = render_set.to_normalized_frame(w2c, sim)
      np.testing.assert_allclose(correspondence.project(normalised, moved, k)[0],
                                 correspondence.project(expected, w2c, k)[0], atol=1e-3)
      np.testing.assert_allclose(np.linalg.det(moved[:, :3, :3]), 1.0, atol=1e-9)
      np.testing.assert_allclose(render_set.from_normalized_frame(moved, sim), w2c, atol=1e-12)
  sim = render_set.world_similarity(ml_collections.ConfigDict({'axes': 'file', 'world': 'file'}),
                                    (center, scale), normalised)
  uv2, z2 = correspondence.project(normalised, render_set.to_normalized_frame(w2c, sim), k)
  np.testing.assert_allclose(uv2, uv, atol=1e-3)
  np.testing.assert_allclose(z2, z / scale, rtol=1e-5)


def test_given_renders_of_our_renderer_give_the_same_records(given, tmp_path):
  """The render set holds our renderer's views (in each file's frame, as OpenGL poses, amid other
  renders): prepare must take the right ones, move the cameras back and keep every value."""
  plain = prepare_config()
  with_set = prepare_config()
  with_set.data.render_set.root = given
  config_util.check_config(with_set)
  a = prepare.prepare(plain, str(tmp_path / 'plain'))
  b = prepare.prepare(with_set, str(tmp_path / 'given'))
  assert a['splits'] == b['splits'] == {'pretrain': 2, 'train': 4, 'test': 2}
  assert 'silhouette' not in a
  assert b['silhouette']['objects'] == 8 and b['silhouette']['median'] >= 0.98
  assert 0.9 <= b['silhouette']['lowest'] <= b['silhouette']['median']
  assert b['silhouette']['lowest_id'].startswith('synthetic/')
  for split in ('train', 'test', 'pretrain'):
    x = pipeline.load_split(plain, str(tmp_path / 'plain'), split, keys=KEYS)
    y = pipeline.load_split(with_set, str(tmp_path / 'given'), split, keys=KEYS)
    assert list(x['id']) == list(y['id'])
    np.testing.assert_array_equal(y['views/image'], x['views/image'])
    np.testing.assert_allclose(y['views/world_to_cam'], x['views/world_to_cam'], atol=2e-5)
    np.testing.assert_allclose(y['views/intrinsics'], x['views/intrinsics'], rtol=1e-6)
    np.testing.assert_array_equal(y['views/hist'], x['views/hist'])
    np.testing.assert_array_equal(y['views/corr'], x['views/corr'])
    assert (y['views/corr'] >= 0).any()
    np.testing.assert_array_equal(y['teacher/cls'], x['teacher/cls'])
    np.testing.assert_array_equal(y['teacher/groups'], x['teacher/groups'])


def _given_against_rendering(config, shape):
  """(given, plain, seed): process_shape with config's render set and with rendering; the images
  equal, the cameras within 2e-5."""
  seed = per_object.object_seed(config.seed, shape.id)
  given = per_object.process_shape(shape, config.data, seed)
  plain = per_object.process_shape(shape, prepare_config().data, seed)
  np.testing.assert_array_equal(given['views']['image'], plain['views']['image'])
  np.testing.assert_allclose(given['views']['world_to_cam'], plain['views']['world_to_cam'],
                             atol=2e-5)
  return given, plain, seed


def test_a_blender_world(tmp_path):
  """Poses in the world of an Objaverse render script (the file turned z-up as Blender imports it,
  centred on its box, longest side 1): with data.render_set.axes / world saying so the views are
  those of rendering; with the file's world the silhouette check refuses them."""
  config = prepare_config()
  rs = config.data.render_set
  rs.root, rs.axes, rs.world = str(tmp_path), 'y_up_to_z_up', 'unit_cube'
  shape = _one_shape(config, 'train')
  write_transforms_set(config, str(tmp_path), [shape])
  given, plain, seed = _given_against_rendering(config, shape)
  np.testing.assert_array_equal(given['depth'], plain['depth'])
  rs.axes, rs.world = 'file', 'file'
  with pytest.raises(ValueError, match=r'(?s)do not see object.*axes = file and world = file.*'
                     r'axes = y_up_to_z_up.*world = unit_cube'):
    per_object.process_shape(shape, config.data, seed)


def test_records_know_their_render_set(given, tmp_path):
  config = prepare_config()
  config.data.render_set.root = given
  workdir = str(tmp_path / 'w')
  prepare.prepare(config, workdir, splits=['test'])
  assert prepare.prepare(config, workdir, splits=['test'])['skipped']
  png = os.path.join(given, 'synthetic', 'test', os.listdir(os.path.join(given, 'synthetic', 'test'))[0],
                     'r_0.png')
  os.utime(png, ns=(os.stat(png).st_atime_ns, os.stat(png).st_mtime_ns + 10**9))
  with pytest.raises(ValueError, match=r'(?s)data.render_set: the views were taken from another '
                     r'render set: its files.*not reused'):
    prepare.prepare(config, workdir, splits=['test'])
  config.data.render_set.min_agreement = 0.5
  with pytest.raises(ValueError, match=r"min_agreement 0.9 -> 0.5, its files"):
    prepare.prepare(config, workdir, splits=['test'])
  plain = prepare_config()
  with pytest.raises(ValueError, match=r'render_set: records were built from'):
    prepare.prepare(plain, workdir, splits=['test'])


def _one_shape(config, split='test'):
  return next(iter(sources.iter_shapes(config.data, split)))


def test_a_wrong_convention_is_caught(tmp_path):
  """OpenCV camera-to-world matrices where OpenGL ones belong: every camera looks away from the
  object, and the silhouette check stops prepare naming the folder."""
  config = prepare_config()
  shape = _one_shape(config)
  root = str(tmp_path / 'cv')
  write_transforms_set(config, root, [shape], opencv_poses=True)
  config.data.render_set.root = root
  with pytest.raises(ValueError, match=r"(?s)do not see object 'synthetic/test/.*0.00 of its surface"
                     r".*r_0.png 0.00.*\(transforms_json\)"):
    per_object.process_shape(shape, config.data, 0)
  config.data.render_set.min_agreement = 0.0     # the check off: the views are taken as given
  partial = per_object.process_shape(shape, config.data, 0)
  assert partial['views']['image'].shape == (2, 28, 28, 3)


def test_agreement_of_matching_cameras_is_near_one(given):
  config = prepare_config()
  config.data.render_set.root = given
  for shape in sources.iter_shapes(config.data, 'train'):
    seed = per_object.object_seed(config.seed, shape.id)
    points, mesh, _, frame = per_object.normalize(shape, config.data, np.random.default_rng([seed, 0]))
    views = render_set.read_views(config.data, shape.id)
    w2c = render_set.to_normalized_frame(views.world_to_cam, render_set.world_similarity(
        config.data.render_set, frame, mesh.vertices))
    agreement = render_set.silhouette_agreement(points, w2c, views.intrinsics, views.mask)
    assert agreement.shape == (2,) and agreement.min() >= 0.98, agreement


def _rgba(path, size=(20, 20), mode='RGBA'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new(mode, size, (10, 20, 30, 255)[:len(mode)]).save(path)


def _transforms(folder, frames, **intrinsics):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'transforms.json'), 'w') as f:
    json.dump({**intrinsics, 'frames': frames}, f)


def test_transforms_json_refusals(tmp_path):
  config = prepare_config()
  d = config.data
  d.render_set.root = str(tmp_path)
  folder = str(tmp_path / 'obj')
  pose = np.eye(4).tolist()
  with pytest.raises(FileNotFoundError, match=r"obj: missing; data.render_set.root has no renders "
                     r"of object 'obj'"):
    render_set.read_views(d, 'obj')
  os.makedirs(folder)
  with pytest.raises(FileNotFoundError, match='transforms.json: missing'):
    render_set.read_views(d, 'obj')
  with open(os.path.join(folder, 'transforms.json'), 'w') as f:
    f.write('{"frames": [')
  with pytest.raises(ValueError, match='transforms.json: not valid JSON'):
    render_set.read_views(d, 'obj')
  _transforms(folder, [], camera_angle_x=0.7)
  with pytest.raises(ValueError, match='"frames" must be a non-empty list'):
    render_set.read_views(d, 'obj')
  _transforms(folder, [{'file_path': 'a', 'transform_matrix': pose}], camera_angle_x=0.7)
  with pytest.raises(ValueError, match=r'transforms.json: 1 render\(s\), data.num_views = 2'):
    render_set.read_views(d, 'obj')
  two = [{'file_path': 'a', 'transform_matrix': pose}, {'file_path': 'b.png', 'transform_matrix': pose}]
  _transforms(folder, two, camera_angle_x=0.7)
  with pytest.raises(FileNotFoundError, match=r'obj/a.png: missing \(a render listed'):
    render_set.read_views(d, 'obj')
  _rgba(os.path.join(folder, 'a.png'), mode='RGB')
  _rgba(os.path.join(folder, 'b.png'))
  with pytest.raises(ValueError, match='a.png: mode RGB has no alpha channel'):
    render_set.read_views(d, 'obj')
  _rgba(os.path.join(folder, 'a.png'))
  _transforms(folder, two)
  with pytest.raises(ValueError, match='no intrinsics; expected "fl_x"'):
    render_set.read_views(d, 'obj')
  _transforms(folder, two, camera_angle_x=0.7, w=32)
  with pytest.raises(ValueError, match=r'"w" = 32 but the PNGs are 20 x 20'):
    render_set.read_views(d, 'obj')
  _transforms(folder, two, fl_x=-3.0)
  with pytest.raises(ValueError, match='"fl_x" must be a positive finite number, got -3.0'):
    render_set.read_views(d, 'obj')
  skew = (np.diag([2.0, 1.0, 1.0, 1.0])).tolist()
  _transforms(folder, [two[0], {'file_path': 'b', 'transform_matrix': skew}], camera_angle_x=0.7)
  with pytest.raises(ValueError, match=r'frames\[1\].transform_matrix is not a rigid transform'):
    render_set.read_views(d, 'obj')
  _transforms(folder, [two[0], {'file_path': 'b', 'transform_matrix': [[1, 2]]}], camera_angle_x=0.7)
  with pytest.raises(ValueError, match=r'frames\[1\].transform_matrix must be a finite 4 x 4'):
    render_set.read_views(d, 'obj')
  with open(os.path.join(folder, 'b.png'), 'wb') as f:
    f.write(b'not a png')
  _transforms(folder, two, fl_x=30.0)
  with pytest.raises(ValueError, match='b.png: not a readable image'):
    render_set.read_views(d, 'obj')
  # and a good one: resized to data.image_size, intrinsics scaled, colour composited over white
  half = np.zeros((20, 20, 4), np.uint8)
  half[..., :3] = (200, 100, 0)
  half[:, :10, 3] = 255
  Image.fromarray(half, 'RGBA').save(os.path.join(folder, 'b.png'))
  _transforms(folder, [two[0], {**two[1], 'fl_x': 15.0, 'cx': 9.0}], fl_x=30.0)  # b's own intrinsics
  views = render_set.read_views(d, 'obj')
  assert views.image.shape == (2, 28, 28, 3) and views.mask.shape == (2, 28, 28)
  np.testing.assert_allclose(views.intrinsics[0], [[42.0, 0, 14.0], [0, 42.0, 14.0], [0, 0, 1]])
  np.testing.assert_allclose(views.intrinsics[1], [[21.0, 0, 12.6], [0, 21.0, 14.0], [0, 0, 1]])
  np.testing.assert_array_equal(views.image[1, 5, 2], [200, 100, 0])
  np.testing.assert_array_equal(views.image[1, 5, 25], [255, 255, 255])
  assert views.mask[1, :, :13].all() and not views.mask[1, :, 15:].any()
  np.testing.assert_allclose(views.world_to_cam[0], np.diag([1.0, -1.0, -1.0, 1.0]))


def test_config_refusals(tmp_path):
  config = prepare_config()
  config.data.render_set.layout = 'shapenet_rendering'
  config.data.render_set.root = str(tmp_path)
  with pytest.raises(config_util.ConfigError, match="shapenet_rendering .* needs config.data.source "
                     "= shapenet55, got 'synthetic'"):
    config_util.check_config(config)
  config.data.render_set.layout = 'transforms_json'
  config.data.render_set.root = str(tmp_path / 'nowhere')
  with pytest.raises(config_util.ConfigError, match=r"render_set.root = .*nowhere' is not a folder"):
    config_util.check_config(config)
  config.data.render_set.root = str(tmp_path)
  config.data.render_set.min_agreement = 1.5
  with pytest.raises(config_util.ConfigError, match='data.render_set.min_agreement'):
    config_util.check_config(config)
  config.data.render_set.min_agreement = 0.9
  config.data.render_set.layout = 'blender'
  with pytest.raises(config_util.ConfigError, match='data.render_set.layout'):
    config_util.check_config(config)


# ------------------------------------------------------------------------- ShapeNetRendering
def _box_points(rng, n=8192, half=(0.4, 0.1, 0.05), offset=(0.05, -0.02, 0.03)):
  """Points on an elongated box's surface, off-centre and not unit-scaled, as ShapeNetCore's files
  are (prepare's unit-sphere frame is another one)."""
  p = rng.uniform(-1, 1, (n, 3))
  axis = rng.integers(0, 3, n)
  p[np.arange(n), axis] = np.sign(p[np.arange(n), axis])
  return (p * half + offset).astype(np.float32)


def write_shapenet(root, rng, *, azimuth_error=0.0, fov_deg=cameras.BLENDER_FOV_DEG,
                   ratios=(0.65, 0.9)):
  """A ShapeNet-55 tree of 2 objects and their ShapeNetRendering folders (5 renders of 64 px by
  our point splatter, seen by the cameras cameras_from_rendering_metadata reads from the rows,
  distance ratios in `ratios` (the release's), through a lens of `fov_deg`; the rows' fifth column
  is 25 as there)."""
  os.makedirs(os.path.join(root, 'shapenet_pc'))
  render_root = os.path.join(root, 'ShapeNetRendering')
  for model in ('aaa', 'bbb'):
    points = _box_points(rng)
    np.save(os.path.join(root, 'shapenet_pc', f'02691156-{model}.npy'), points)
    rows = np.stack([rng.uniform(0, 360, 5), rng.uniform(10, 40, 5), np.zeros(5),
                     rng.uniform(*ratios, 5), np.full(5, 25.0)], 1)
    w2c, k = cameras.cameras_from_rendering_metadata(rows, 64, fov_deg=fov_deg)
    rgb, depth = render.render_points(points, GREY, w2c, k, 64)
    folder = os.path.join(render_root, '02691156', model, 'rendering')
    names = [f'{i:02d}.png' for i in range(5)]
    for name, im, dep in zip(names, rgb, depth):
      _write_png(os.path.join(folder, name), im, dep)
    with open(os.path.join(folder, 'renderings.txt'), 'w') as f:
      f.write('\n'.join(names) + '\n')
    written = rows.copy()
    written[:, 0] += azimuth_error
    with open(os.path.join(folder, 'rendering_metadata.txt'), 'w') as f:
      f.write('\n'.join(' '.join(f'{x:.6f}' for x in row) for row in written) + '\n')
  return render_root


def shapenet_config(root, render_root):
  config = prepare_config(source='shapenet55', root=root, num_points=256)
  config.data.render_set.root = render_root
  config.data.render_set.layout = 'shapenet_rendering'
  return config


def test_shapenet_rendering(tmp_path):
  """Cameras from rendering_metadata.txt in the .npy's frame (off-centre, not unit-scaled):
  the evenly spaced renders at data.image_size, their poses moved into the unit-sphere frame, and
  a metadata file whose azimuths are off by 90 degrees refused."""
  rng = np.random.default_rng(3)
  root = str(tmp_path / 'good')
  render_root = write_shapenet(root, rng)
  config = shapenet_config(root, render_root)
  config_util.check_config(config)
  shapes = list(sources.iter_shapes(config.data, 'train'))
  assert [s.id for s in shapes] == ['shapenet55/02691156-aaa', 'shapenet55/02691156-bbb']
  for shape in shapes:
    views = render_set.read_views(config.data, shape.id)
    assert [os.path.basename(f) for f in views.files] == ['00.png', '02.png']
    _, _, cloud, frame = per_object.normalize(shape, config.data, np.random.default_rng(0))
    w2c = render_set.to_normalized_frame(views.world_to_cam, render_set.world_similarity(
        config.data.render_set, frame, cloud))
    agreement = render_set.silhouette_agreement(cloud, w2c, views.intrinsics, views.mask)
    assert agreement.min() >= 0.97, agreement
    partial = per_object.process_shape(shape, config.data, 0)
    np.testing.assert_array_equal(partial['views']['image'], views.image)
    np.testing.assert_allclose(partial['views']['world_to_cam'], w2c, atol=1e-5)
    np.testing.assert_allclose(partial['views']['intrinsics'][0, 0, 0], 28 * 35 / 32, rtol=1e-5)
    assert np.isfinite(partial['depth']).any()
  # Read through the rows' fifth column (25 degrees) instead, the points overflow the masks.
  config.data.render_set.camera_angle_x = float(np.deg2rad(25.0))
  with pytest.raises(ValueError, match=r'do not see object .* (0\.[0-7]\d) of its surface points '
                     r'project onto the render\'s mask'):
    per_object.process_shape(shapes[0], config.data, 0)
  bad_root = str(tmp_path / 'bad')
  bad = shapenet_config(bad_root, write_shapenet(bad_root, np.random.default_rng(3), azimuth_error=90.0))
  shape = next(iter(sources.iter_shapes(bad.data, 'train')))
  with pytest.raises(ValueError, match=r"(?s)02691156/aaa/rendering: the given cameras do not see "
                     r"object 'shapenet55/02691156-aaa'.*shapenet_rendering"):
    per_object.process_shape(shape, bad.data, 0)


def test_shapenet_rendering_field_of_view(tmp_path):
  """Renders through another lens than Blender's default (here the 25 degrees of the rows' fifth
  column, which 3D-R2N2's renders were not taken with) are refused, the message naming
  camera_angle_x; with it set to their lens they are taken, and it is in the records' fingerprint."""
  root = str(tmp_path / 'narrow')
  config = shapenet_config(root, write_shapenet(root, np.random.default_rng(3), fov_deg=25.0,
                                                ratios=(1.3, 1.6)))   # the whole object in view
  shape = next(iter(sources.iter_shapes(config.data, 'train')))
  with pytest.raises(ValueError, match=r'(?s)do not see object.*camera_angle_x = 0.8576 radians'):
    per_object.process_shape(shape, config.data, 0)
  before = fingerprint.render_set_fingerprint(config.data.render_set)
  config.data.render_set.camera_angle_x = float(np.deg2rad(25.0))
  config_util.check_config(config)
  partial = per_object.process_shape(shape, config.data, 0)
  np.testing.assert_allclose(partial['views']['intrinsics'][0, 0, 0],
                             14 / np.tan(np.deg2rad(12.5)), rtol=1e-5)
  after = fingerprint.render_set_fingerprint(config.data.render_set)
  assert (before['camera_angle_x'], after['camera_angle_x']) == (0.0, float(np.deg2rad(25.0)))
  assert 'convention' not in after


def test_shapenet_rendering_refusals(tmp_path):
  config = shapenet_config(str(tmp_path), str(tmp_path / 'r'))
  folder = tmp_path / 'r' / '02691156' / 'aaa' / 'rendering'
  with pytest.raises(ValueError, match='ids shapenet55/<synset>-<modelid>.*got id'):
    render_set.read_views(config.data, 'synthetic/train/cube_0000')
  os.makedirs(folder)
  with pytest.raises(FileNotFoundError, match='renderings.txt: missing'):
    render_set.read_views(config.data, 'shapenet55/02691156-aaa')
  (folder / 'renderings.txt').write_text('00.png\n01.png\n')
  (folder / 'rendering_metadata.txt').write_text('10 20 0 0.8 25\n')
  with pytest.raises(ValueError, match='renderings.txt lists 2 PNGs but rendering_metadata.txt has 1'):
    render_set.read_views(config.data, 'shapenet55/02691156-aaa')
  (folder / 'rendering_metadata.txt').write_text('10 20 0 0.8 25\n10 20 0 0.8\n')
  with pytest.raises(ValueError, match=r'rendering_metadata.txt:2: expected 5 numbers'):
    render_set.read_views(config.data, 'shapenet55/02691156-aaa')
  (folder / 'rendering_metadata.txt').write_text('10 20 0 0.8 25\n10 20 0 0.8 25\n')
  _rgba(str(folder / '00.png'), size=(20, 16))
  _rgba(str(folder / '01.png'))
  with pytest.raises(ValueError, match="00.png: 20 x 16; ShapeNetRendering's renders are square"):
    render_set.read_views(config.data, 'shapenet55/02691156-aaa')


def write_zero123_set(config, root, shape, *, opencv=False, square=True):
  """write_transforms_set's views of `shape`, rewritten in the zero123 layout:
  <root>/<last id part>/NNN.png with NNN.npy, the 3 x 4 world-to-camera matrix in Blender's
  (OpenGL) camera axes, or OpenCV's with `opencv`. -> the folder."""
  staging = os.path.join(root, '_transforms')
  write_transforms_set(config, staging, [shape])
  source = os.path.join(staging, *shape.id.split('/'))
  with open(os.path.join(source, 'transforms.json')) as f:
    frames = json.load(f)['frames']
  folder = os.path.join(root, shape.id.split('/')[-1])
  os.makedirs(folder)
  for i, frame in enumerate(frames):
    w2c = np.linalg.inv(np.asarray(frame['transform_matrix']))
    if opencv:
      w2c = np.diag([1.0, -1.0, -1.0, 1.0]) @ w2c
    np.save(os.path.join(folder, f'{i:03d}.npy'), w2c[:3].astype(np.float32))
    image = Image.open(os.path.join(source, frame['file_path'] + '.png'))
    if not square:
      image = image.resize((image.width + 2, image.height))
    image.save(os.path.join(folder, f'{i:03d}.png'))
  return folder


def test_zero123_layout(tmp_path):
  """Zero-1-to-3's Objaverse layout (NNN.png + NNN.npy, Blender camera axes, the glTF turned z-up in
  a unit cube): the views, cameras and depth of rendering; OpenCV-axes poses refused unless
  data.render_set.convention says so; the script's field of view when camera_angle_x is 0."""
  config = prepare_config()
  rs = config.data.render_set
  rs.root, rs.layout, rs.axes, rs.world = str(tmp_path / 'z'), 'zero123', 'y_up_to_z_up', 'unit_cube'
  rs.camera_angle_x = float(np.deg2rad(config.data.camera.fov))   # our renderer's square views
  shape = _one_shape(config, 'train')
  folder = write_zero123_set(config, rs.root, shape)
  config_util.check_config(config)
  assert folder == render_set.object_dir(rs, shape.id) == os.path.join(rs.root,
                                                                       shape.id.split('/')[-1])
  given, plain, seed = _given_against_rendering(config, shape)
  np.testing.assert_allclose(given['views']['intrinsics'], plain['views']['intrinsics'], rtol=1e-5)
  # (the poses are float32 in the .npy files, the field of view one angle: depth within 1e-6)
  np.testing.assert_allclose(given['depth'], plain['depth'], rtol=1e-6)
  np.testing.assert_array_equal(given['views']['hist'], plain['views']['hist'])
  # camera_angle_x 0: the render script's 35 mm lens on a 32 mm sensor
  rs.camera_angle_x = 0.0
  views = render_set.read_views(config.data, shape.id)
  size = config.data.image_size
  np.testing.assert_allclose(views.intrinsics[:, 0, 0], 0.5 * size / (16.0 / 35.0))
  np.testing.assert_allclose(views.intrinsics[:, :2, 2], size / 2.0)
  # poses in OpenCV's camera axes: refused as Blender's, taken with convention = opencv
  rs.root = str(tmp_path / 'cv')
  rs.camera_angle_x = float(np.deg2rad(config.data.camera.fov))
  write_zero123_set(config, rs.root, shape, opencv=True)
  with pytest.raises(ValueError, match=r"(?s)do not see object.*zero123's poses are read with "
                     r'data.render_set.convention = opengl.*try the other convention'):
    per_object.process_shape(shape, config.data, seed)
  rs.convention = 'opencv'
  np.testing.assert_allclose(per_object.process_shape(shape, config.data, seed)['views'][
      'world_to_cam'], plain['views']['world_to_cam'], atol=2e-5)
  # the convention and field of view are part of the records' fingerprint (for zero123 only)
  from crossjepa.data import fingerprint  # pylint: disable=g-import-not-at-top
  fp = fingerprint.render_set_fingerprint(rs)
  assert (fp['convention'], fp['camera_angle_x']) == ('opencv', rs.camera_angle_x)
  rs.layout = 'transforms_json'
  assert 'convention' not in fingerprint.render_set_fingerprint(rs)


def test_zero123_refusals(tmp_path):
  config = prepare_config()
  rs = config.data.render_set
  rs.root, rs.layout = str(tmp_path), 'zero123'
  folder = tmp_path / 'thing'
  with pytest.raises(FileNotFoundError, match=r'thing: missing; .*layout zero123'):
    render_set.read_views(config.data, 'chair/train/thing')
  folder.mkdir()
  with pytest.raises(FileNotFoundError, match=r'thing: no PNG renders'):
    render_set.read_views(config.data, 'chair/train/thing')
  rgba = np.zeros((28, 28, 4), np.uint8)
  for i in range(2):
    Image.fromarray(rgba, 'RGBA').save(folder / f'{i:03d}.png')
  with pytest.raises(FileNotFoundError, match=r'thing/000.npy: missing; .*beside each render'):
    render_set.read_views(config.data, 'chair/train/thing')
  np.save(folder / '000.npy', np.eye(4)[:3])
  np.save(folder / '001.npy', np.eye(3))
  with pytest.raises(ValueError, match=r'001.npy: expected a finite 3 x 4 world-to-camera matrix'):
    render_set.read_views(config.data, 'chair/train/thing')
  np.save(folder / '001.npy', np.array([{'R': 1}], dtype=object), allow_pickle=True)
  with pytest.raises(ValueError, match=r'001.npy: not a numeric .npy array'):
    render_set.read_views(config.data, 'chair/train/thing')
  np.save(folder / '001.npy', np.diag([1.0, 1.0, 2.0, 1.0])[:3])
  with pytest.raises(ValueError, match=r'001.npy is not a rigid transform'):
    render_set.read_views(config.data, 'chair/train/thing')
  np.save(folder / '001.npy', np.eye(4)[:3])
  Image.fromarray(np.zeros((28, 30, 4), np.uint8), 'RGBA').save(folder / '001.png')
  with pytest.raises(ValueError, match=r"001.png: 30 x 28; the zero123 layout's renders are square"):
    render_set.read_views(config.data, 'chair/train/thing')
  # the synthetic source's ids repeat their last part across splits: refused before any work
  with pytest.raises(ValueError, match=r"objects 'synthetic/pretrain/box_0000' and "
                     r"'synthetic/train/box_0000' would both take their renders from .*box_0000"):
    prepare.prepare(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w' / 'data')
  other = prepare_config()
  other.data.render_set.root = str(tmp_path)
  other.data.render_set.convention = 'opencv'
  with pytest.raises(config_util.ConfigError, match=r"convention = 'opencv' is for layout zero123"):
    config_util.check_config(other)
  other.data.render_set.convention = 'opengl'
  other.data.render_set.camera_angle_x = 0.5
  with pytest.raises(config_util.ConfigError, match=r'camera_angle_x = 0.5 is for layouts zero123 '
                     r'and shapenet_rendering.*transforms_json reads it'):
    config_util.check_config(other)
  other.data.render_set.camera_angle_x = 4.0
  with pytest.raises(config_util.ConfigError, match='data.render_set.camera_angle_x'):
    config_util.check_config(other)
