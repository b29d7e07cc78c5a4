"""Mesh-file readers: `read_mesh(path)` chooses the reader of a file by its extension.

Which reader reads what, and why (compared on tests/test_meshes.py's files and on a 327,680-face
icosphere, with trimesh 5.2.0, `trimesh.load(path, process=False)`):

- OFF, OBJ, PLY: the hand-written readers (mesh_off_obj.py, mesh_ply.py). trimesh reads
  well-formed files of these formats alike, but it is wrong or silent where these are right: a
  truncated OFF (fewer face lines than the header counts) reads without error; OBJ negative indices count back from the END of the file
  instead of from the vertices read so far (a wrong face: area 19.3 instead of 14.0 on the test
  file); a binary PLY with polygons of mixed sizes beside another face property fails ("PLY is
  unexpected length!"); a PLY whose faces are a `tristrips` element reads as 0 faces without a
  word; and its errors name neither the file nor the line (`could not convert string to float:
  'zero'`). The hand-written readers are also as fast or faster (OFF 1.1 s vs 2.5 s, binary PLY
  0.03 vs 0.09 s, ASCII PLY 2.0 vs 2.3 s; OBJ, 1.8 s vs 0.7 s, is where trimesh is quicker).
- STL (ASCII and binary), GLB / glTF: trimesh, which reads them correctly, including glTF scene
  graphs; its answers are checked (mesh_stl_gltf.py).

The formats as the 3D-vision datasets ship them are described beside their readers:
mesh_off_obj.py (OFF, OBJ), mesh_ply.py (PLY, with triangle strips), mesh_stl_gltf.py (STL, GLB,
glTF).

Every reader returns a validated `Mesh` (float32 finite vertices, int32 faces in range) with at
least one face. A file that does not parse raises ValueError naming the file and, where the format
has them, the line (or byte offset).
"""
from __future__ import annotations

import os

from crossjepa.data.mesh_off_obj import read_obj, read_off
from crossjepa.data.mesh_ply import read_ply
from crossjepa.data.mesh_stl_gltf import read_glb, read_gltf, read_stl
from crossjepa.data.meshes import Mesh

_READERS = {'.off': read_off, '.obj': read_obj, '.ply': read_ply, '.stl': read_stl,
            '.glb': read_glb, '.gltf': read_gltf}
MESH_EXTENSIONS = tuple(_READERS)


def read_mesh(path: str) -> Mesh:
  """Reads a mesh, choosing the reader by the file extension (MESH_EXTENSIONS)."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in _READERS:
    raise ValueError(f'{path}: unknown mesh extension {ext!r}, expected one of {MESH_EXTENSIONS}')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: mesh file not found')
  return _READERS[ext](path)
