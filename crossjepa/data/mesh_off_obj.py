"""Readers of the two text mesh formats: OFF (Princeton ModelNet) and OBJ (Wavefront).

- OFF (Princeton ModelNet): `OFF`, then `n_vertices n_faces n_edges`, vertices, then faces
  `k i j l ...` (0-based). ModelNet's quirk, the first two lines merged (`OFF490 518 0`), is
  accepted, as are comments (`#`), blank lines, COFF/NOFF headers (extra columns ignored) and
  polygons (fan-triangulated).
- OBJ (Wavefront): `v x y z [w | r g b]` and `f a b c ...` where each corner is `v`, `v/vt`,
  `v//vn` or `v/vt/vn`, 1-based, negative = relative to the vertices read so far. Materials,
  texture coordinates, normals, groups and lines are ignored (a missing `.mtl` is fine).

Both return a validated `Mesh` with at least one face; a file that does not parse raises ValueError
naming the file and the line. Why these are hand-written rather than read through trimesh:
mesh_readers.py.
"""
from __future__ import annotations

import numpy as np

from crossjepa.data.meshes import Mesh, fan_triangles, mesh_with_faces


def _content_lines(path: str) -> list[tuple[int, str]]:
  """(1-based line number, text without comment) of the non-blank lines of a text file."""
  with open(path, 'r', encoding='utf-8', errors='replace') as f:
    text = f.read()
  out = []
  for number, line in enumerate(text.splitlines(), start=1):
    line = line.split('#', 1)[0].strip()
    if line:
      out.append((number, line))
  return out


# --------------------------------------------------------------------------------- OFF


def read_off(path: str) -> Mesh:
  """Reads an OFF file (ModelNet's merged-header quirk, comments and polygons included)."""
  lines = _content_lines(path)

  def fail(number, what):
    raise ValueError(f'{path}: line {number}: {what}')

  if not lines:
    raise ValueError(f'{path}: empty file, expected an OFF header')
  number, head = lines[0]
  # Header keyword: OFF, or COFF / NOFF / CNOFF / STOFF / 4OFF (extra columns are ignored),
  # possibly glued to the counts (ModelNet's `OFF490 518 0`).
  upper = head.upper()
  cut = upper.find('OFF')
  if cut < 0 or not set(upper[:cut]) <= set('STCN4') or cut > 3:
    fail(number, f'expected an OFF header, got {head[:40]!r}')
  cut += 3
  rest = head[cut:].split()
  pos = 1
  if len(rest) >= 2:
    count_tokens, count_line = rest, number
  else:
    if len(lines) < 2:
      fail(number, 'expected the counts line `n_vertices n_faces n_edges`')
    count_line, text = lines[1]
    count_tokens = text.split()
    pos = 2
  try:
    num_vertices, num_faces = int(count_tokens[0]), int(count_tokens[1])
  except (ValueError, IndexError):
    fail(count_line, f'expected `n_vertices n_faces n_edges`, got {" ".join(count_tokens)!r}')
  if num_vertices < 0 or num_faces < 0:
    fail(count_line, 'negative vertex or face count')
  if len(lines) < pos + num_vertices + num_faces:
    raise ValueError(f'{path}: expected {num_vertices} vertices and {num_faces} faces after the '
                     f'header, found only {len(lines) - pos} data lines')
  vertex_lines = lines[pos:pos + num_vertices]
  face_lines = lines[pos + num_vertices:pos + num_vertices + num_faces]

  # Fast path: exactly three numbers per vertex line.
  tokens = ' '.join(t for _, t in vertex_lines).split()
  vertices = None
  if len(tokens) == 3 * num_vertices:
    try:
      vertices = np.array(tokens, np.float64).reshape(num_vertices, 3)
    except ValueError:
      vertices = None
  if vertices is None:
    vertices = np.empty((num_vertices, 3), np.float64)
    for i, (number, text) in enumerate(vertex_lines):
      parts = text.split()
      try:
        vertices[i] = [float(x) for x in parts[:3]]
      except ValueError:
        fail(number, f'expected a vertex `x y z`, got {text[:60]!r}')
      if len(parts) < 3:
        fail(number, f'expected a vertex `x y z`, got {text[:60]!r}')

  triangles: list[tuple[int, int, int]] = []
  tokens = ' '.join(t for _, t in face_lines).split()
  fast = None
  if len(tokens) == 4 * num_faces:
    try:
      arr = np.array(tokens, np.int64).reshape(num_faces, 4)
      if np.all(arr[:, 0] == 3):
        fast = arr[:, 1:]
    except ValueError:
      fast = None
  if fast is not None:
    faces = fast
  else:
    for number, text in face_lines:
      parts = text.split()
      try:
        k = int(parts[0])
        polygon = [int(x) for x in parts[1:1 + k]]
      except (ValueError, IndexError):
        fail(number, f'expected a face `k i j ...`, got {text[:60]!r}')
      if k < 3 or len(polygon) != k:
        fail(number, f'expected a face with k >= 3 indices, got {text[:60]!r}')
      triangles.extend(fan_triangles(polygon))
    faces = np.array(triangles, np.int64).reshape(-1, 3)
  return mesh_with_faces(path, vertices, faces, f'the header declares {num_faces} faces')


# --------------------------------------------------------------------------------- OBJ


def read_obj(path: str) -> Mesh:
  """Reads a Wavefront OBJ (v / f only; `v/vt/vn` corners, negative indices, mtl ignored)."""
  vertices: list[list[float]] = []
  triangles: list[tuple[int, int, int]] = []
  for number, text in _content_lines(path):
    parts = text.split()
    key = parts[0]
    if key == 'v':
      try:
        vertices.append([float(x) for x in parts[1:4]])
      except ValueError:
        raise ValueError(f'{path}: line {number}: expected `v x y z`, got {text[:60]!r}') from None
      if len(parts) < 4:
        raise ValueError(f'{path}: line {number}: expected `v x y z`, got {text[:60]!r}')
    elif key == 'f':
      polygon = []
      for corner in parts[1:]:
        try:
          index = int(corner.split('/', 1)[0])
        except ValueError:
          raise ValueError(f'{path}: line {number}: bad face corner {corner!r}') from None
        if index == 0:
          raise ValueError(f'{path}: line {number}: OBJ indices are 1-based, got 0')
        # Negative indices count back from the vertices read so far.
        polygon.append(index - 1 if index > 0 else len(vertices) + index)
      if len(polygon) < 3:
        raise ValueError(f'{path}: line {number}: a face needs >= 3 corners, got {text[:60]!r}')
      if min(polygon) < 0 or max(polygon) >= len(vertices):
        raise ValueError(f'{path}: line {number}: face index out of range '
                         f'(only {len(vertices)} vertices so far): {text[:60]!r}')
      triangles.extend(fan_triangles(polygon))
    # vt, vn, vp, mtllib, usemtl, o, g, s, l, p ...: not geometry we use.
  return mesh_with_faces(path, np.array(vertices, np.float64).reshape(-1, 3),
                          np.array(triangles, np.int64).reshape(-1, 3), 'no `f` lines')

