"""Tests of the mesh readers (mesh_readers and its formats) on files in the public formats, and of
meshes: sampling, normalisation."""
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from crossjepa.data import mesh_off_obj
from crossjepa.data import mesh_ply
from crossjepa.data import mesh_readers
from crossjepa.data import meshes
from crossjepa.data import source_mesh_folder
from crossjepa.data import sources
from crossjepa.data.meshes import Mesh


def _write(path, text):
  path.write_text(text)
  return str(path)


def _area(mesh):
  return meshes.face_areas(mesh).sum()


def test_off_merged_header_comments_and_polygons(tmp_path):
  # ModelNet's quirk (counts glued to OFF), a comment, blank lines, a quad and a triangle.
  path = _write(tmp_path / 'chair_0001.off',
                'OFF5 2 0\n# a comment\n\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n 0.5 0.5 1\n'
                '4 0 1 2 3\n3 0 1 4\n')
  mesh = mesh_off_obj.read_off(path)
  assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
  np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])
  np.testing.assert_allclose(mesh.vertices[4], [0.5, 0.5, 1.0])
  # The quad (area 1) plus the triangle with base 1 and height sqrt(0.25 + 1).
  np.testing.assert_allclose(_area(mesh), 1.0 + 0.5 * np.sqrt(1.25), rtol=1e-6)


def test_off_standard_header_and_pentagon(tmp_path):
  pts = [[np.cos(t), np.sin(t), 0.0] for t in np.linspace(0, 2 * np.pi, 5, endpoint=False)]
  body = '\n'.join(' '.join(f'{x:.9f}' for x in p) for p in pts)
  path = _write(tmp_path / 'p.off', f'OFF\n5 1 5\n{body}\n5 0 1 2 3 4 255 0 0\n')
  mesh = mesh_off_obj.read_off(path)
  assert mesh.num_faces == 3
  # Regular pentagon of circumradius 1: area = 5/2 sin(72 deg).
  np.testing.assert_allclose(_area(mesh), 2.5 * np.sin(np.deg2rad(72)), rtol=1e-6)


def test_off_errors_name_file_and_line(tmp_path):
  path = _write(tmp_path / 'bad.off', 'OFF\n3 1 0\n0 0 0\n1 0 zero\n0 1 0\n3 0 1 2\n')
  with pytest.raises(ValueError, match=r'bad\.off: line 4'):
    mesh_off_obj.read_off(path)
  path = _write(tmp_path / 'range.off', 'OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n')
  with pytest.raises(ValueError, match=r'range\.off.*\[0, 3\)'):
    mesh_off_obj.read_off(path)
  path = _write(tmp_path / 'short.off', 'OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n')
  with pytest.raises(ValueError, match=r'short\.off'):
    mesh_off_obj.read_off(path)
  path = _write(tmp_path / 'nan.off', 'OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n')
  with pytest.raises(ValueError, match=r'nan\.off.*vertex 1 is not finite'):
    mesh_off_obj.read_off(path)


def test_obj_corner_forms_negative_indices_missing_mtl(tmp_path):
  path = _write(tmp_path / 'm.obj',
                'mtllib missing.mtl\no thing\nv 0 0 0\nv 2 0 0\nv 2 2 0\nv 0 2 0\n'
                'vt 0 0\nvn 0 0 1\nusemtl red\ns off\n'
                'f 1/1/1 2/1/1 3/1/1\nf -4//1 -2//1 -1//1\nv 0 0 5\nf 1/1 2/1 5/1 4/1\n')
  mesh = mesh_off_obj.read_obj(path)
  np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 1, 4], [0, 4, 3]])
  assert mesh.num_vertices == 5
  with pytest.raises(ValueError, match=r'bad\.obj: line 2'):
    mesh_off_obj.read_obj(_write(tmp_path / 'bad.obj', 'v 0 0 0\nf 1 2 3\n'))


def _ply_header(fmt, n_vertices, n_faces, vertex_props):
  lines = ['ply', f'format {fmt} 1.0', 'comment made by a test', f'element vertex {n_vertices}']
  lines += [f'property {t} {n}' for t, n in vertex_props]
  lines += [f'element face {n_faces}', 'property list uchar int vertex_indices',
            'property uchar flags', 'end_header']
  return ('\n'.join(lines) + '\n').encode()


# A unit square as a quad plus a triangle sticking up: area 1 + 0.5.
_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float64)
_F = [[0, 1, 2, 3], [0, 1, 4]]
_EXPECTED_FACES = [[0, 1, 2], [0, 2, 3], [0, 1, 4]]


def test_ply_ascii_any_property_order(tmp_path):
  props = [('uchar', 'red'), ('float', 'z'), ('float', 'x'), ('float', 'y')]
  body = ''.join(f'7 {z} {x} {y}\n' for x, y, z in _V)
  body += ''.join(f'{len(f)} {" ".join(map(str, f))} 0\n' for f in _F)
  path = tmp_path / 'a.ply'
  path.write_bytes(_ply_header('ascii', 5, 2, props) + body.encode())
  mesh = mesh_ply.read_ply(str(path))
  np.testing.assert_allclose(mesh.vertices, _V)
  np.testing.assert_array_equal(mesh.faces, _EXPECTED_FACES)


@pytest.mark.parametrize('endian', ['<', '>'])
@pytest.mark.parametrize('mixed', [True, False])
def test_ply_binary(tmp_path, endian, mixed):
  fmt = 'binary_little_endian' if endian == '<' else 'binary_big_endian'
  props = [('double', 'y'), ('float', 'x'), ('uchar', 'alpha'), ('float', 'z')]
  faces = _F if mixed else [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
  body = b''.join(struct.pack(endian + 'dfBf', y, x, 255, z) for x, y, z in _V)
  for f in faces:
    body += struct.pack(endian + 'B' + 'i' * len(f) + 'B', len(f), *f, 0)
  path = tmp_path / 'b.ply'
  path.write_bytes(_ply_header(fmt, 5, len(faces), props) + body)
  mesh = mesh_ply.read_ply(str(path))
  np.testing.assert_allclose(mesh.vertices, _V)
  np.testing.assert_array_equal(mesh.faces, _EXPECTED_FACES)
  # Truncated body -> an error naming the file.
  path.write_bytes(_ply_header(fmt, 5, len(faces), props) + body[:-7])
  with pytest.raises(ValueError, match=r'b\.ply: byte'):
    mesh_ply.read_ply(str(path))


# ---------------------------------------------------------------- PLY triangle strips
# A 1 x 2 rectangle on a 2 x 3 vertex grid (z = 0): v0 (0,0) v1 (1,0) v2 (0,1) v3 (1,1) v4 (0,2)
# v5 (1,2). Its 4 triangles, with the winding of the first one, as a strip decoder must give them.
_GRID = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 2, 0], [1, 2, 0]], np.float32)
_GRID_TRIANGLES = [[0, 1, 2], [2, 1, 3], [2, 3, 4], [4, 3, 5]]
_STRIP_LISTS = {
    # igea.ply's layout: ONE list, strips separated by -1.
    'one_list': [[0, 1, 2, 3, -1, 2, 3, 4, 5]],
    # Two lists of different lengths; the first ends in stitching degenerates (3 3 2).
    'two_lists': [[0, 1, 2, 3, 3, 2], [2, 3, 4, 5]],
}


def _tristrips_ply(fmt, strips):
  header = ['ply', f'format {fmt} 1.0', 'comment Cyberware-style scan', 'element vertex 6',
            'property float x', 'property float y', 'property float z', 'property float confidence',
            f'element tristrips {len(strips)}', 'property list int int vertex_indices', 'end_header']
  head = ('\n'.join(header) + '\n').encode()
  if fmt == 'ascii':
    body = ''.join(f'{x} {y} {z} 0.5\n' for x, y, z in _GRID)
    body += ''.join(f'{len(s)} {" ".join(map(str, s))}\n' for s in strips)
    return head + body.encode()
  body = b''.join(struct.pack('<ffff', *v, 0.5) for v in _GRID)
  body += b''.join(struct.pack(f'<i{len(s)}i', len(s), *s) for s in strips)
  return head + body


@pytest.mark.parametrize('layout', sorted(_STRIP_LISTS))
@pytest.mark.parametrize('fmt', ['binary_little_endian', 'ascii'])
def test_ply_tristrips(tmp_path, fmt, layout):
  path = tmp_path / 'igea.ply'
  path.write_bytes(_tristrips_ply(fmt, _STRIP_LISTS[layout]))
  mesh = mesh_readers.read_mesh(str(path))
  np.testing.assert_array_equal(mesh.vertices, _GRID)
  np.testing.assert_array_equal(mesh.faces, _GRID_TRIANGLES)
  np.testing.assert_allclose(_area(mesh), 2.0, rtol=1e-6)
  # Alternating winding: every triangle's normal points the same way as the first's.
  v = mesh.vertices.astype(np.float64)
  a, b, c = (v[mesh.faces[:, i]] for i in range(3))
  normals = np.cross(b - a, c - a)
  np.testing.assert_allclose(normals, np.tile([0.0, 0.0, 1.0], (4, 1)), atol=1e-6)


def test_strip_triangles_restarts_and_degenerates():
  np.testing.assert_array_equal(mesh_ply.strip_triangles([[0, 1, 2, 3, -1, 7, 8, 9]]),
                                [[0, 1, 2], [2, 1, 3], [7, 8, 9]])
  # Parity counts from the strip's start, also after the dropped stitching triangles.
  np.testing.assert_array_equal(mesh_ply.strip_triangles([[0, 1, 2, 2, 3, 3, 4, 5]]),
                                [[0, 1, 2], [4, 3, 5]])
  assert mesh_ply.strip_triangles([[0, 1], [-1], []]).shape == (0, 3)


def test_ply_without_faces_names_the_file(tmp_path):
  path = tmp_path / 'cloud.ply'
  path.write_bytes(b'ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n'
                   b'property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n')
  with pytest.raises(ValueError, match=r'cloud\.ply: no faces.*tristrips'):
    mesh_readers.read_mesh(str(path))


# ---------------------------------------------------------------- STL, GLB, glTF (via trimesh)


def _box():
  import trimesh  # pylint: disable=g-import-not-at-top
  return trimesh.creation.box(extents=(1.0, 2.0, 3.0))


def _corners(vertices, faces):
  return np.asarray(vertices, np.float64)[np.asarray(faces)]


@pytest.mark.parametrize('file_type', ['stl', 'stl_ascii'])
def test_stl_binary_and_ascii(tmp_path, file_type):
  box = _box()
  path = tmp_path / 'box.stl'
  data = box.export(file_type=file_type)
  path.write_bytes(data if isinstance(data, bytes) else data.encode())
  assert path.read_bytes().startswith(b'solid') == (file_type == 'stl_ascii')
  mesh = mesh_readers.read_mesh(str(path))
  assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
  # The triangle soup's corners are merged back into the box's 8 vertices, faces kept in order.
  assert mesh.num_vertices == 8 and mesh.num_faces == 12
  np.testing.assert_allclose(_corners(mesh.vertices, mesh.faces), _corners(box.vertices, box.faces),
                             atol=1e-6)
  np.testing.assert_allclose(_area(mesh), 2 * (1 * 2 + 1 * 3 + 2 * 3), rtol=1e-6)


def test_stl_malformed_errors_name_the_file(tmp_path):
  data = _box().export(file_type='stl')
  (tmp_path / 'cut.stl').write_bytes(data[:-20])
  with pytest.raises(ValueError, match=r'cut\.stl: no faces: binary STL header declares 12 triangles'):
    mesh_readers.read_mesh(str(tmp_path / 'cut.stl'))
  (tmp_path / 'empty.stl').write_bytes(b'')
  with pytest.raises(ValueError, match=r'empty\.stl: no faces: empty file'):
    mesh_readers.read_mesh(str(tmp_path / 'empty.stl'))
  _write(tmp_path / 'bad.stl', 'solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 zero\n'
         'vertex 1 0 0\nvertex 0 1 0\nendloop\nendfacet\nendsolid x\n')
  with pytest.raises(ValueError, match=r'bad\.stl: cannot read as STL'):
    mesh_readers.read_mesh(str(tmp_path / 'bad.stl'))


def _two_node_scene():
  """A box at x + 5 and the same box instanced again, scaled by 2 and turned 90 deg about z."""
  import trimesh  # pylint: disable=g-import-not-at-top
  box = _box()
  moved = trimesh.transformations.translation_matrix([5.0, 0.0, 0.0])
  turned = (trimesh.transformations.rotation_matrix(np.pi / 2, [0, 0, 1])
            @ trimesh.transformations.scale_matrix(2.0))
  scene = trimesh.Scene()
  scene.add_geometry(box, geom_name='box', node_name='a_moved', transform=moved)
  scene.add_geometry(box, geom_name='box', node_name='b_turned', transform=turned)
  expected = [box.vertices @ t[:3, :3].T + t[:3, 3] for t in (moved, turned)]
  return scene, expected, box.faces


def _check_flattened(mesh, expected, faces):
  # Nodes in name order, each with its world transform: a_moved, then b_turned.
  np.testing.assert_allclose(mesh.vertices, np.concatenate(expected), atol=1e-5)
  np.testing.assert_array_equal(mesh.faces, np.concatenate([faces, faces + len(expected[0])]))
  np.testing.assert_allclose(_area(mesh), 22.0 * (1 + 4), rtol=1e-5)
  np.testing.assert_allclose(mesh.vertices.max(0), [5.5, 1.0, 3.0], atol=1e-5)   # turned: |y| <= 1


def test_glb_scene_flattened_with_node_transforms(tmp_path):
  scene, expected, faces = _two_node_scene()
  path = tmp_path / 'scene.glb'
  path.write_bytes(scene.export(file_type='glb'))
  mesh = mesh_readers.read_mesh(str(path))
  _check_flattened(mesh, expected, faces)
  # The same geometry as trimesh's own flattening.
  import trimesh  # pylint: disable=g-import-not-at-top
  np.testing.assert_allclose(_area(mesh), trimesh.load(str(path)).to_geometry().area, rtol=1e-6)


def test_gltf_with_buffer_files(tmp_path):
  scene, expected, faces = _two_node_scene()
  for name, data in scene.export(file_type='gltf').items():
    (tmp_path / name).write_bytes(data)
  mesh = mesh_readers.read_mesh(str(tmp_path / 'model.gltf'))
  _check_flattened(mesh, expected, faces)
  for name in os.listdir(tmp_path):
    if name.endswith('.bin'):
      os.remove(tmp_path / name)
  with pytest.raises(ValueError, match=r'model\.gltf: cannot read as GLTF'):
    mesh_readers.read_mesh(str(tmp_path / 'model.gltf'))


def test_glb_malformed_errors_name_the_file(tmp_path):
  scene, _, _ = _two_node_scene()
  data = scene.export(file_type='glb')
  (tmp_path / 'cut.glb').write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=r'cut\.glb: cannot read as GLB'):
    mesh_readers.read_mesh(str(tmp_path / 'cut.glb'))
  (tmp_path / 'junk.glb').write_bytes(b'not a glb file' * 10)
  with pytest.raises(ValueError, match=r'junk\.glb: cannot read as GLB'):
    mesh_readers.read_mesh(str(tmp_path / 'junk.glb'))


def test_mesh_folder_reads_stl_glb_and_reports_the_rest(tmp_path):
  box = _box()
  scene, _, _ = _two_node_scene()
  (tmp_path / 'box').mkdir()
  (tmp_path / 'box' / 'b1.stl').write_bytes(box.export(file_type='stl'))
  (tmp_path / 'box' / 'b2.glb').write_bytes(scene.export(file_type='glb'))
  (tmp_path / 'box' / 'b3.obj').write_text('mtllib b3.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n')
  (tmp_path / 'box' / 'b3.mtl').write_text('newmtl red\n')            # companions: ignored
  (tmp_path / 'box' / 'texture.png').write_bytes(b'\x89PNG')
  (tmp_path / 'box' / 'b4.fbx').write_bytes(b'Kaydara FBX Binary')     # an asset we cannot read
  from configs import default   # pylint: disable=g-import-not-at-top
  data = default.get_config().data          # every declared data.* key, with its default
  data.update({'source': 'mesh_folder', 'root': str(tmp_path), 'pretrain_splits': ('pretrain',)})
  shapes = list(sources.iter_shapes(data, 'pretrain'))
  assert [(s.id, s.mesh.num_faces) for s in shapes] == [('box/b1', 12), ('box/b2', 24), ('box/b3', 1)]
  _, _, unread = source_mesh_folder._mesh_folder_index(data)   # pylint: disable=protected-access
  assert unread == [os.path.join('box', 'b4.fbx')]
  # A mesh file that does not read stops the run, naming it (never skipped).
  (tmp_path / 'box' / 'b5.stl').write_bytes(b'')
  with pytest.raises(ValueError, match=r'b5\.stl: no faces'):
    list(sources.iter_shapes(data, 'pretrain'))


def test_main_prepare_stops_at_a_malformed_mesh_with_exit_2(tmp_path):
  """`python -m crossjepa.main --mode=prepare` on a mesh folder whose first file is malformed: one
  line naming the file and line, exit 2. It stops while the FPS / grouping programs still compile
  in the background (sampling.compile_ahead): those threads are waited for at exit, not torn down
  mid-compile (that aborted the process: SIGABRT, exit 134, after the right message)."""
  root = tmp_path / 'meshes'
  for cls in ('chair', 'table'):
    (root / cls).mkdir(parents=True)
  (root / 'chair' / 'a.obj').write_text('v 0 0 0\nv 1 2\n')
  (root / 'table' / 'b.obj').write_text('v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n')
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'crossjepa.main', '--config=configs/smoke.py', '--mode=prepare',
       f'--workdir={tmp_path / "w"}', '--config.data.source=mesh_folder',
       f'--config.data.root={root}', "--config.data.pretrain_splits=('pretrain',)"],
      capture_output=True, text=True, cwd=repo, timeout=300, env={**env, 'JAX_PLATFORMS': 'cpu'})
  errors = [l for l in proc.stderr.splitlines() if l.startswith('crossjepa: error: ')]
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert len(errors) == 1 and "a.obj: line 2: expected `v x y z`, got 'v 1 2'" in errors[0], errors
  assert 'Traceback' not in proc.stderr and 'Fatal Python error' not in proc.stderr


def test_read_mesh_dispatch_and_errors(tmp_path):
  path = _write(tmp_path / 'x.OFF', 'OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n')
  assert mesh_readers.read_mesh(path).num_faces == 1
  with pytest.raises(ValueError, match='unknown mesh extension'):
    mesh_readers.read_mesh(str(tmp_path / 'x.fbx'))
  assert {'.off', '.obj', '.ply', '.stl', '.glb', '.gltf'} == set(mesh_readers.MESH_EXTENSIONS)
  # A file without faces is an error naming it, not a mesh that fails later at sampling.
  with pytest.raises(ValueError, match=r'nofaces\.off: no faces'):
    mesh_readers.read_mesh(_write(tmp_path / 'nofaces.off', 'OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n'))
  with pytest.raises(FileNotFoundError, match='nope.obj'):
    mesh_readers.read_mesh(str(tmp_path / 'nope.obj'))


def test_sample_surface_area_weighted_and_on_faces():
  # Two disjoint triangles with areas 1 and 3 (right triangles in parallel planes).
  s1, s3 = np.sqrt(2.0), np.sqrt(6.0)
  vertices = [[0, 0, 0], [s1, 0, 0], [0, s1, 0], [0, 0, 5], [s3, 0, 5], [0, s3, 5]]
  mesh = Mesh(np.array(vertices), np.array([[0, 1, 2], [3, 4, 5]]))
  np.testing.assert_allclose(meshes.face_areas(mesh), [1.0, 3.0], rtol=1e-6)
  n = 40000
  points, face = meshes.sample_surface(mesh, n, np.random.default_rng(0), return_faces=True)
  assert points.shape == (n, 3) and points.dtype == np.float32
  frac = np.mean(face == 1)
  assert abs(frac - 0.75) < 0.01, frac      # binomial std is 0.0022
  np.testing.assert_array_equal(face == 1, points[:, 2] > 2.5)
  # On the faces: inside each right triangle x, y >= 0 and x + y <= leg.
  leg = np.where(face == 1, s3, s1)
  assert np.all(points[:, :2] >= -1e-6)
  assert np.all(points[:, 0] + points[:, 1] <= leg + 1e-5)
  # Uniform within a triangle: the mean is the centroid.
  np.testing.assert_allclose(points[face == 1, :2].mean(0), [s3 / 3, s3 / 3], atol=0.01)


def test_sample_surface_degenerate_mesh_errors():
  mesh = Mesh(np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]), np.array([[0, 1, 2]]), source='flat.off')
  with pytest.raises(ValueError, match=r'flat\.off.*degenerate'):
    meshes.sample_surface(mesh, 10, np.random.default_rng(0))
  with pytest.raises(ValueError, match='degenerate'):
    meshes.sample_surface(Mesh(np.zeros((3, 3)), np.zeros((0, 3), np.int32)), 10,
                          np.random.default_rng(0))


def test_normalize_unit_sphere_and_mesh_transform():
  rng = np.random.default_rng(1)
  # Unnormalised CAD units: hundreds of units, far from the origin.
  vertices = rng.normal(size=(50, 3)) * np.array([300.0, 80.0, 120.0]) + 1000.0
  mesh = Mesh(vertices, rng.integers(0, 50, size=(80, 3)))
  points = meshes.sample_surface(mesh, 2000, rng)
  normed, center, scale = meshes.normalize_unit_sphere(points)
  np.testing.assert_allclose(np.linalg.norm(normed, axis=1).max(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(normed.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(center, points.astype(np.float64).mean(0), rtol=1e-6)
  moved = meshes.apply_normalization(mesh, center, scale)
  np.testing.assert_allclose(moved.vertices, (vertices - center) / scale, rtol=1e-5, atol=1e-6)
  # Samples of the moved mesh lie where the normalised samples lie (same transform).
  assert np.linalg.norm(moved.vertices, axis=1).max() >= 1.0 - 1e-5
  # normalize_mesh: max vertex norm 1 and centre = surface centroid.
  nm, c2, _ = meshes.normalize_mesh(mesh)
  np.testing.assert_allclose(np.linalg.norm(nm.vertices, axis=1).max(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(meshes.surface_centroid(nm), 0.0, atol=1e-5)
  dense = meshes.sample_surface(mesh, 200000, rng)
  np.testing.assert_allclose(c2, dense.mean(0), atol=2.0)  # vs. a scale of hundreds


def test_mesh_validation():
  with pytest.raises(ValueError, match=r'vertices must be \[Nv,3\]'):
    Mesh(np.zeros((3, 2)), np.zeros((1, 3), np.int32))
  with pytest.raises(ValueError, match='triangles'):
    Mesh(np.zeros((4, 3)), np.zeros((1, 4), np.int32))
  with pytest.raises(ValueError, match=r'a\.ply.*range \[-1, 2\]'):
    Mesh(np.zeros((3, 3)), np.array([[0, 2, -1]]), source='a.ply')
