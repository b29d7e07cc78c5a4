"""The STL, GLB and glTF mesh readers, through trimesh (whose answers are checked).

- STL: a triangle soup; corners with bit-identical coordinates are merged into one vertex (vertex
  order = first appearance), as every STL loader does.
- GLB / glTF: the scene flattened into one mesh: every node that instances a triangle mesh adds
  that mesh with the node's world transform applied (nodes in name order); point and line
  primitives are not surfaces and are left out (logged). A .gltf reads its buffers from the files
  it names beside it.

Each returns a validated `Mesh` with at least one face. trimesh answers an unreadable STL
(truncated, empty, garbage) with an empty scene rather than an error: that is turned into a
ValueError saying what is wrong (e.g. a binary header declaring more triangles than the file holds),
and trimesh's own exceptions are re-raised as ValueError naming the file.
"""
from __future__ import annotations

from absl import logging
import numpy as np

from crossjepa.data.meshes import Mesh, mesh_with_faces


def _stl_problem(path: str) -> str:
  """Why an STL gave no triangles (trimesh answers an empty scene, not an error)."""
  with open(path, 'rb') as f:
    data = f.read()
  if not data:
    return 'empty file'
  if data.lstrip()[:5].lower() == b'solid':
    return 'ASCII STL (`solid ...`) with no complete `facet normal ... endfacet` block'
  if len(data) < 84:
    return (f'binary STL needs an 80-byte header and a uint32 triangle count, the file has '
            f'{len(data)} bytes')
  count = int(np.frombuffer(data, '<u4', 1, 80)[0])
  expected = 84 + 50 * count
  if len(data) != expected:
    return (f'binary STL header declares {count} triangles ({expected} bytes), the file has '
            f'{len(data)} bytes')
  return f'binary STL with {count} triangles'


def _merge_identical_vertices(vertices: np.ndarray, faces: np.ndarray):
  """Merges bit-identical vertices (STL's per-corner copies); vertex order = first appearance."""
  vertices = np.ascontiguousarray(vertices, np.float32)
  keys = vertices.view(np.dtype((np.void, vertices.dtype.itemsize * 3))).reshape(-1)
  _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
  order = np.argsort(first)
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  return vertices[first[order]], rank[inverse.reshape(-1)][faces]


def _read_with_trimesh(path: str, file_type: str) -> Mesh:
  """STL / GLB / glTF through trimesh; scenes are flattened with each node's world transform."""
  import trimesh  # pylint: disable=g-import-not-at-top  (about 1 s to import; only these formats)
  name = file_type.upper()
  try:
    loaded = trimesh.load(path, file_type=file_type, process=False)
  except Exception as e:  # pylint: disable=broad-except  (trimesh raises many kinds; re-raised)
    raise ValueError(f'{path}: cannot read as {name} (trimesh {trimesh.__version__}): '
                     f'{type(e).__name__}: {e}') from e
  parts, dropped = [], []
  if isinstance(loaded, trimesh.Trimesh):
    parts.append((np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64)))
  elif isinstance(loaded, trimesh.Scene):
    for node in sorted(loaded.graph.nodes_geometry):
      world, geometry_name = loaded.graph[node]
      geometry = loaded.geometry[geometry_name]
      if not isinstance(geometry, trimesh.Trimesh):
        dropped.append(f'{node} ({type(geometry).__name__})')
        continue
      world = np.asarray(world, np.float64)
      vertices = np.asarray(geometry.vertices, np.float64) @ world[:3, :3].T + world[:3, 3]
      parts.append((vertices, np.asarray(geometry.faces, np.int64)))
  else:
    dropped.append(type(loaded).__name__)
  if dropped:
    logging.warning('%s: not triangle meshes, left out: %s', path, ', '.join(dropped))
  if not parts:
    what = _stl_problem(path) if file_type == 'stl' else 'the file holds no triangle mesh'
    raise ValueError(f'{path}: no faces: {what}')
  offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
  vertices = np.concatenate([v for v, _ in parts]).reshape(-1, 3)
  faces = np.concatenate([f.reshape(-1, 3) + o for (_, f), o in zip(parts, offsets)])
  if file_type == 'stl':
    vertices, faces = _merge_identical_vertices(vertices, faces)
  return mesh_with_faces(path, vertices, faces, f'the {name} holds no triangles')


def read_stl(path: str) -> Mesh:
  """Reads an ASCII or binary STL (through trimesh), merging identical corners."""
  return _read_with_trimesh(path, 'stl')


def read_glb(path: str) -> Mesh:
  """Reads a binary glTF (.glb) scene as one mesh (through trimesh), node transforms applied."""
  return _read_with_trimesh(path, 'glb')


def read_gltf(path: str) -> Mesh:
  """Reads a glTF (.gltf + its buffers) scene as one mesh (through trimesh), transforms applied."""
  return _read_with_trimesh(path, 'gltf')
