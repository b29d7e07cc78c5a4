"""Triangle meshes: the `Mesh` record, OFF / OBJ / PLY readers, surface sampling, normalisation.

Readers follow the public formats as the 3D-vision datasets ship them:

- OFF (Princeton ModelNet): `OFF`, then `n_vertices n_faces n_edges`, vertices, then faces
  `k i j l ...` (0-based). ModelNet's quirk, the first two lines merged (`OFF490 518 0`), is
  accepted, as are comments (`#`), blank lines, COFF/NOFF headers (extra columns ignored) and
  polygons (fan-triangulated).
- OBJ (Wavefront): `v x y z [w | r g b]` and `f a b c ...` where each corner is `v`, `v/vt`,
  `v//vn` or `v/vt/vn`, 1-based, negative = relative to the vertices read so far. Materials,
  texture coordinates, normals, groups and lines are ignored (a missing `.mtl` is fine).
- PLY (Stanford): `ascii`, `binary_little_endian` and `binary_big_endian`; a `vertex` element
  with `x y z` among any properties in any order and a `face` element with a list property
  `vertex_indices` (or `vertex_index`); other elements are skipped. Polygons are fan-triangulated.

A file that does not parse raises ValueError naming the file and the line (or byte offset).

Sampling is area-weighted with uniform barycentric coordinates (the standard
`sqrt(r1)` construction, Osada et al. 2002, "Shape distributions"). Normalisation follows
Point-BERT's `pc_normalize`: centre at the MEAN of the points, divide by the max norm, so the
farthest point lies on the unit sphere. The transform is returned so that a mesh can be moved
into exactly the same frame (`apply_normalization`).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class Mesh:
  """A triangle mesh. vertices [Nv,3] float32, faces [Nf,3] int32 (0-based, Nf may be 0)."""
  vertices: np.ndarray
  faces: np.ndarray
  source: str = dataclasses.field(default='', compare=False, repr=False)

  def __post_init__(self):
    where = f'mesh from {self.source}' if self.source else 'mesh'
    v = np.asarray(self.vertices)
    f = np.asarray(self.faces)
    if v.ndim != 2 or v.shape[1] != 3:
      raise ValueError(f'{where}: vertices must be [Nv,3], got shape {v.shape}')
    if f.size == 0:
      f = np.zeros((0, 3), np.int32)
    if f.ndim != 2 or f.shape[1] != 3:
      raise ValueError(f'{where}: faces must be [Nf,3] triangles, got shape {f.shape}')
    if not np.issubdtype(f.dtype, np.integer):
      if not np.all(np.equal(np.mod(f, 1), 0)):
        raise ValueError(f'{where}: face indices must be integers')
    v = v.astype(np.float32, copy=False)
    if not np.all(np.isfinite(v)):
      bad = int(np.argwhere(~np.isfinite(v).all(axis=1))[0, 0])
      raise ValueError(f'{where}: vertex {bad} is not finite: {v[bad].tolist()}')
    if f.size:
      lo, hi = int(f.min()), int(f.max())
      if lo < 0 or hi >= len(v):
        raise ValueError(f'{where}: face indices must lie in [0, {len(v)}), '
                         f'got range [{lo}, {hi}]')
    self.vertices = np.ascontiguousarray(v)
    self.faces = np.ascontiguousarray(f.astype(np.int32, copy=False))

  @property
  def num_vertices(self) -> int:
    return int(self.vertices.shape[0])

  @property
  def num_faces(self) -> int:
    return int(self.faces.shape[0])


def _fan(polygon: list[int]) -> list[tuple[int, int, int]]:
  """Fan triangulation (v0, vi, vi+1): exact for convex polygons, what every loader does."""
  return [(polygon[0], polygon[i], polygon[i + 1]) for i in range(1, len(polygon) - 1)]


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
      triangles.extend(_fan(polygon))
    faces = np.array(triangles, np.int64).reshape(-1, 3)
  return Mesh(vertices, faces, source=path)


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
      triangles.extend(_fan(polygon))
    # vt, vn, vp, mtllib, usemtl, o, g, s, l, p ...: not geometry we use.
  return Mesh(np.array(vertices, np.float64).reshape(-1, 3),
              np.array(triangles, np.int64).reshape(-1, 3), source=path)


# --------------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1',
    'short': 'i2', 'int16': 'i2', 'ushort': 'u2', 'uint16': 'u2',
    'int': 'i4', 'int32': 'i4', 'uint': 'u4', 'uint32': 'u4',
    'float': 'f4', 'float32': 'f4', 'double': 'f8', 'float64': 'f8',
}


@dataclasses.dataclass
class _PlyProperty:
  name: str
  dtype: str                      # scalar type, or the list's item type
  count_dtype: str | None = None  # set for list properties


@dataclasses.dataclass
class _PlyElement:
  name: str
  count: int
  properties: list[_PlyProperty]
  line: int


def _parse_ply_header(path: str, data: bytes):
  end = data.find(b'end_header')
  if not data.startswith(b'ply') or end < 0:
    raise ValueError(f'{path}: line 1: expected a PLY header (`ply` ... `end_header`)')
  newline = data.find(b'\n', end)
  body_start = len(data) if newline < 0 else newline + 1
  header = data[:end].decode('ascii', errors='replace').splitlines()
  fmt = None
  elements: list[_PlyElement] = []
  for number, line in enumerate(header, start=1):
    parts = line.split()
    if not parts or parts[0] in ('ply', 'comment', 'obj_info'):
      continue
    if parts[0] == 'format':
      if len(parts) < 2 or parts[1] not in ('ascii', 'binary_little_endian', 'binary_big_endian'):
        raise ValueError(f'{path}: line {number}: unknown PLY format {line!r}')
      fmt = parts[1]
    elif parts[0] == 'element':
      try:
        elements.append(_PlyElement(parts[1], int(parts[2]), [], number))
      except (IndexError, ValueError):
        raise ValueError(f'{path}: line {number}: expected `element NAME COUNT`, got {line!r}') from None
    elif parts[0] == 'property':
      if not elements:
        raise ValueError(f'{path}: line {number}: property before any element')
      if len(parts) >= 5 and parts[1] == 'list':
        if parts[2] not in _PLY_TYPES or parts[3] not in _PLY_TYPES:
          raise ValueError(f'{path}: line {number}: unknown PLY list types in {line!r}')
        elements[-1].properties.append(
            _PlyProperty(parts[4], _PLY_TYPES[parts[3]], _PLY_TYPES[parts[2]]))
      elif len(parts) == 3 and parts[1] in _PLY_TYPES:
        elements[-1].properties.append(_PlyProperty(parts[2], _PLY_TYPES[parts[1]]))
      else:
        raise ValueError(f'{path}: line {number}: cannot parse property {line!r}')
    else:
      raise ValueError(f'{path}: line {number}: unexpected PLY header line {line!r}')
  if fmt is None:
    raise ValueError(f'{path}: PLY header has no `format` line')
  return fmt, elements, body_start, len(header) + 1


def _face_property(element: _PlyElement, path: str) -> int:
  for i, prop in enumerate(element.properties):
    if prop.count_dtype is not None and prop.name in ('vertex_indices', 'vertex_index'):
      return i
  raise ValueError(f'{path}: line {element.line}: face element has no list property '
                   f'`vertex_indices` / `vertex_index`')


def _xyz_columns(element: _PlyElement, path: str) -> list[int]:
  names = [p.name for p in element.properties]
  try:
    return [names.index(axis) for axis in ('x', 'y', 'z')]
  except ValueError:
    raise ValueError(f'{path}: line {element.line}: vertex element needs properties x, y, z; '
                     f'got {names}') from None


def _read_ply_ascii(path, data, elements, body_start, first_line):
  lines = data[body_start:].decode('ascii', errors='replace').splitlines()
  row = 0
  vertices = faces = None

  def next_lines(count):
    nonlocal row
    chunk = []
    while len(chunk) < count:
      if row >= len(lines):
        raise ValueError(f'{path}: line {first_line + row}: unexpected end of file, expected '
                         f'{count - len(chunk)} more element lines')
      text = lines[row].strip()
      row += 1
      if text:
        chunk.append((first_line + row - 1, text))
    return chunk

  for element in elements:
    chunk = next_lines(element.count)
    has_list = any(p.count_dtype for p in element.properties)
    if element.name == 'vertex':
      columns = _xyz_columns(element, path)
      if has_list:
        raise ValueError(f'{path}: line {element.line}: list properties in vertex are unsupported')
      width = len(element.properties)
      tokens = ' '.join(t for _, t in chunk).split()
      if len(tokens) != width * element.count:
        for number, text in chunk:
          if len(text.split()) != width:
            raise ValueError(f'{path}: line {number}: expected {width} vertex values, got {text[:60]!r}')
      try:
        table = np.array(tokens, np.float64).reshape(element.count, width)
      except ValueError:
        raise ValueError(f'{path}: line {chunk[0][0]}..{chunk[-1][0]}: non-numeric vertex value') from None
      vertices = table[:, columns]
    elif element.name == 'face':
      target = _face_property(element, path)
      triangles = []
      for number, text in chunk:
        parts = text.split()
        pos = 0
        try:
          for i, prop in enumerate(element.properties):
            if prop.count_dtype is None:
              pos += 1
              continue
            k = int(parts[pos])
            items = [int(x) for x in parts[pos + 1:pos + 1 + k]]
            if len(items) != k:
              raise ValueError
            pos += 1 + k
            if i == target:
              if k < 3:
                raise ValueError
              triangles.extend(_fan(items))
        except (ValueError, IndexError):
          raise ValueError(f'{path}: line {number}: cannot parse face {text[:60]!r}') from None
      faces = np.array(triangles, np.int64).reshape(-1, 3)
  return vertices, faces


def _read_ply_binary(path, data, elements, body_start, endian):
  offset = body_start
  vertices = faces = None
  for element in elements:
    props = element.properties
    scalar_only = all(p.count_dtype is None for p in props)
    if scalar_only:
      dtype = np.dtype([(f'p{i}', endian + p.dtype) for i, p in enumerate(props)])
      need = dtype.itemsize * element.count
      if offset + need > len(data):
        raise ValueError(f'{path}: byte {offset}: unexpected end of file in element '
                         f'{element.name!r} (need {need} bytes, {len(data) - offset} left)')
      table = np.frombuffer(data, dtype, element.count, offset)
      offset += need
      if element.name == 'vertex':
        columns = _xyz_columns(element, path)
        vertices = np.stack([table[f'p{c}'].astype(np.float64) for c in columns], axis=1)
      continue
    if element.name == 'vertex':
      raise ValueError(f'{path}: line {element.line}: list properties in vertex are unsupported')
    target = _face_property(element, path) if element.name == 'face' else -1
    # Fast path: every list has the length of the first one (all-triangle meshes).
    lengths = []
    pos = offset
    for p in props:
      if p.count_dtype is None:
        pos += np.dtype(p.dtype).itemsize
      else:
        if pos + np.dtype(p.count_dtype).itemsize > len(data):
          raise ValueError(f'{path}: byte {pos}: unexpected end of file in element {element.name!r}')
        k = int(np.frombuffer(data, endian + p.count_dtype, 1, pos)[0])
        lengths.append(k)
        pos += np.dtype(p.count_dtype).itemsize + k * np.dtype(p.dtype).itemsize
    fields, li = [], 0
    for i, p in enumerate(props):
      if p.count_dtype is None:
        fields.append((f'p{i}', endian + p.dtype))
      else:
        fields.append((f'n{i}', endian + p.count_dtype))
        fields.append((f'p{i}', endian + p.dtype, (lengths[li],)))
        li += 1
    dtype = np.dtype(fields)
    table = None
    if offset + dtype.itemsize * element.count <= len(data):
      candidate = np.frombuffer(data, dtype, element.count, offset)
      li = 0
      ok = True
      for i, p in enumerate(props):
        if p.count_dtype is not None:
          ok &= bool(np.all(candidate[f'n{i}'] == lengths[li]))
          li += 1
      if ok:
        table = candidate
    if table is not None:
      offset += dtype.itemsize * element.count
      if target >= 0:
        polygons = table[f'p{target}'].astype(np.int64)
        k = polygons.shape[1]
        if k < 3:
          raise ValueError(f'{path}: byte {offset}: faces with {k} < 3 corners')
        faces = np.concatenate(
            [np.stack([polygons[:, 0], polygons[:, i], polygons[:, i + 1]], axis=1)
             for i in range(1, k - 1)], axis=0)
        # Keep each polygon's triangles together (fan order per face).
        faces = faces.reshape(k - 2, -1, 3).transpose(1, 0, 2).reshape(-1, 3)
      continue
    # General path: polygons of mixed sizes, one element at a time.
    triangles = []
    for _ in range(element.count):
      for i, p in enumerate(props):
        if p.count_dtype is None:
          offset += np.dtype(p.dtype).itemsize
          continue
        size = np.dtype(p.count_dtype).itemsize
        if offset + size > len(data):
          raise ValueError(f'{path}: byte {offset}: unexpected end of file in element {element.name!r}')
        k = int(np.frombuffer(data, endian + p.count_dtype, 1, offset)[0])
        offset += size
        item = np.dtype(p.dtype).itemsize
        if offset + k * item > len(data):
          raise ValueError(f'{path}: byte {offset}: unexpected end of file in element {element.name!r}')
        items = np.frombuffer(data, endian + p.dtype, k, offset).astype(np.int64).tolist()
        offset += k * item
        if i == target:
          if k < 3:
            raise ValueError(f'{path}: byte {offset}: a face needs >= 3 corners, got {k}')
          triangles.extend(_fan(items))
    if target >= 0:
      faces = np.array(triangles, np.int64).reshape(-1, 3)
  return vertices, faces


def read_ply(path: str) -> Mesh:
  """Reads an ASCII or binary (little / big endian) PLY mesh."""
  with open(path, 'rb') as f:
    data = f.read()
  fmt, elements, body_start, first_line = _parse_ply_header(path, data)
  if not any(e.name == 'vertex' for e in elements):
    raise ValueError(f'{path}: PLY has no `vertex` element')
  if fmt == 'ascii':
    vertices, faces = _read_ply_ascii(path, data, elements, body_start, first_line)
  else:
    endian = '<' if fmt == 'binary_little_endian' else '>'
    vertices, faces = _read_ply_binary(path, data, elements, body_start, endian)
  if faces is None:
    faces = np.zeros((0, 3), np.int64)
  return Mesh(vertices, faces, source=path)


_READERS = {'.off': read_off, '.obj': read_obj, '.ply': read_ply}
MESH_EXTENSIONS = tuple(_READERS)


def read_mesh(path: str) -> Mesh:
  """Reads a mesh, choosing the reader by the file extension (.off, .obj, .ply)."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in _READERS:
    raise ValueError(f'{path}: unknown mesh extension {ext!r}, expected one of {MESH_EXTENSIONS}')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: mesh file not found')
  return _READERS[ext](path)


# ------------------------------------------------------------------ sampling / normalising


def face_areas(mesh: Mesh) -> np.ndarray:
  """[Nf] triangle areas (float64)."""
  v = mesh.vertices.astype(np.float64)
  a, b, c = (v[mesh.faces[:, i]] for i in range(3))
  return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def sample_surface(mesh: Mesh, n: int, rng: np.random.Generator,
                   return_faces: bool = False):
  """n points uniformly on the surface: faces by area, then uniform barycentric coordinates.

  Returns points [n,3] float32 (and the face index of each point when return_faces).
  """
  where = f'mesh from {mesh.source}' if mesh.source else 'mesh'
  areas = face_areas(mesh) if mesh.num_faces else np.zeros((0,))
  total = float(areas.sum())
  extent = float(np.ptp(mesh.vertices, axis=0).max()) if mesh.num_vertices else 0.0
  # Relative threshold: a mesh in any unit is degenerate when its area vanishes vs. its extent.
  if mesh.num_faces == 0 or not np.isfinite(total) or total <= 1e-12 * max(extent, 1e-30) ** 2:
    raise ValueError(f'{where}: cannot sample the surface, total face area is {total:g} '
                     f'({mesh.num_faces} faces): the mesh is degenerate')
  cdf = np.cumsum(areas)
  face = np.searchsorted(cdf, rng.random(n) * cdf[-1], side='right')
  face = np.minimum(face, mesh.num_faces - 1)
  r1 = np.sqrt(rng.random(n))
  r2 = rng.random(n)
  v = mesh.vertices.astype(np.float64)
  tri = mesh.faces[face]
  a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
  points = ((1.0 - r1)[:, None] * a + (r1 * (1.0 - r2))[:, None] * b + (r1 * r2)[:, None] * c)
  points = points.astype(np.float32)
  return (points, face) if return_faces else points


def normalize_unit_sphere(points: np.ndarray):
  """Point-BERT's pc_normalize: centre at the mean, divide by the max norm.

  Returns (normalised points [N,3] float32, center [3] float32, scale float) with
  normalised = (points - center) / scale.
  """
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
    raise ValueError(f'normalize_unit_sphere: expected points [N,3] with N > 0, got {points.shape}')
  if not np.all(np.isfinite(points)):
    raise ValueError('normalize_unit_sphere: points are not all finite')
  center = points.mean(axis=0)
  scale = float(np.linalg.norm(points - center, axis=1).max())
  if scale <= 0:
    raise ValueError('normalize_unit_sphere: all points coincide, cannot scale')
  return ((points - center) / scale).astype(np.float32), center.astype(np.float32), scale


def apply_normalization(mesh: Mesh, center, scale: float) -> Mesh:
  """Moves a mesh into the frame of normalize_unit_sphere: (v - center) / scale."""
  v = (mesh.vertices.astype(np.float64) - np.asarray(center, np.float64)) / float(scale)
  return Mesh(v, mesh.faces, source=mesh.source)


def surface_centroid(mesh: Mesh) -> np.ndarray:
  """Area-weighted centroid of the surface: the expected mean of sample_surface's points."""
  areas = face_areas(mesh)
  v = mesh.vertices.astype(np.float64)
  centers = v[mesh.faces].mean(axis=1)
  return (areas[:, None] * centers).sum(0) / max(areas.sum(), 1e-300)


def normalize_mesh(mesh: Mesh):
  """Unit-sphere normalisation of a mesh without sampling, in Point-BERT's convention.

  Centre = the surface centroid (the limit of the sampled points' mean), scale = the max
  vertex distance (the max norm over the surface is reached at a vertex).
  Returns (mesh, center, scale).
  """
  center = surface_centroid(mesh)
  scale = float(np.linalg.norm(mesh.vertices.astype(np.float64) - center, axis=1).max())
  if scale <= 0:
    raise ValueError(f'mesh from {mesh.source or "?"}: all vertices coincide, cannot normalise')
  return apply_normalization(mesh, center, scale), center.astype(np.float32), scale
