"""The PLY (Stanford) mesh reader: ASCII and binary, polygon faces and triangle strips.

- PLY (Stanford): `ascii`, `binary_little_endian` and `binary_big_endian`; a `vertex` element
  with `x y z` among any properties in any order, and the faces from a `face` element with a list
  property `vertex_indices` (or `vertex_index`), polygons fan-triangulated, and/or a `tristrips`
  element (the Stanford / Cyberware scans, e.g. igea.ply): strips separated by -1, triangle i of a
  strip is (s[i], s[i+1], s[i+2]) with the first two swapped for odd i (alternating winding), and
  the degenerate triangles that stitch strips together are dropped. Other elements are skipped.

It returns a validated `Mesh` with at least one face; a file that does not parse raises ValueError
naming the file and the header line or byte offset. Why it is hand-written rather than read through
trimesh: mesh_readers.py.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from crossjepa.data.meshes import Mesh, fan_triangles, mesh_with_faces

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


# Elements whose `vertex_indices` lists hold faces: polygons (`face`) or triangle strips.
_FACE_ELEMENTS = ('face', 'tristrips')


def _index_property(element: _PlyElement, path: str) -> int:
  for i, prop in enumerate(element.properties):
    if prop.count_dtype is not None and prop.name in ('vertex_indices', 'vertex_index'):
      return i
  raise ValueError(f'{path}: line {element.line}: {element.name} element has no list property '
                   f'`vertex_indices` / `vertex_index`')


def _xyz_columns(element: _PlyElement, path: str) -> list[int]:
  names = [p.name for p in element.properties]
  try:
    return [names.index(axis) for axis in ('x', 'y', 'z')]
  except ValueError:
    raise ValueError(f'{path}: line {element.line}: vertex element needs properties x, y, z; '
                     f'got {names}') from None


def strip_triangles(strips) -> np.ndarray:
  """[T,3] triangles of triangle strips (PLY `tristrips` lists; -1 inside a list restarts a strip).

  Triangle i of a strip s is (s[i], s[i+1], s[i+2]) for even i and (s[i+1], s[i], s[i+2]) for odd i,
  so that all keep the winding of the first; triangles with a repeated index (the degenerate ones
  that stitch strips together) are dropped.
  """
  flat = np.concatenate([np.append(np.asarray(s, np.int64).reshape(-1), -1) for s in strips]
                        ) if len(strips) else np.zeros((0,), np.int64)
  if len(flat) < 3:
    return np.zeros((0, 3), np.int64)
  restart = flat == -1
  index = np.arange(len(flat))
  # Position of each entry within its strip: distance to the last -1 before it.
  position = index - np.maximum.accumulate(np.where(restart, index, -1)) - 1
  a, b, c = flat[:-2], flat[1:-1], flat[2:]
  odd = (position[:-2] % 2) == 1
  triangles = np.stack([np.where(odd, b, a), np.where(odd, a, b), c], axis=1)
  keep = ~(restart[:-2] | restart[1:-1] | restart[2:]) & (a != b) & (b != c) & (a != c)
  return triangles[keep]


def _fan_table(polygons: np.ndarray) -> np.ndarray:
  """[n,k] polygons (all of k corners) -> [n*(k-2),3] fan triangles, each polygon's together."""
  k = polygons.shape[1]
  faces = np.stack([np.stack([polygons[:, 0], polygons[:, i], polygons[:, i + 1]], axis=1)
                    for i in range(1, k - 1)], axis=1)
  return faces.reshape(-1, 3)


def _read_ply_ascii(path, data, elements, body_start, first_line):
  lines = data[body_start:].decode('ascii', errors='replace').splitlines()
  row = 0
  vertices = None
  parts = []

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
    elif element.name in _FACE_ELEMENTS:
      target = _index_property(element, path)
      is_face = element.name == 'face'
      triangles, strips = [], []
      for number, text in chunk:
        parts_of_line = text.split()
        pos = 0
        try:
          for i, prop in enumerate(element.properties):
            if prop.count_dtype is None:
              pos += 1
              continue
            k = int(parts_of_line[pos])
            items = [int(x) for x in parts_of_line[pos + 1:pos + 1 + k]]
            if len(items) != k:
              raise ValueError
            pos += 1 + k
            if i == target:
              if is_face:
                if k < 3:
                  raise ValueError
                triangles.extend(fan_triangles(items))
              else:
                strips.append(items)
        except (ValueError, IndexError):
          raise ValueError(f'{path}: line {number}: cannot parse {element.name} '
                           f'{text[:60]!r}') from None
      parts.append(np.array(triangles, np.int64).reshape(-1, 3) if is_face
                   else strip_triangles(strips))
  return vertices, parts


def _read_ply_binary(path, data, elements, body_start, endian):
  offset = body_start
  vertices = None
  parts = []
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
    if element.count == 0:
      continue
    target = _index_property(element, path) if element.name in _FACE_ELEMENTS else -1
    is_face = element.name == 'face'
    # Fast path: every list has the length of the first one (all-triangle meshes, one strip list).
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
        lists = table[f'p{target}'].astype(np.int64).reshape(element.count, -1)
        if not is_face:
          parts.append(strip_triangles(list(lists)))
        elif element.count:
          if lists.shape[1] < 3:
            raise ValueError(f'{path}: byte {offset}: faces with {lists.shape[1]} < 3 corners')
          parts.append(_fan_table(lists))
      continue
    # General path: lists of mixed sizes, one element at a time.
    triangles, strips = [], []
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
        if k < 0 or offset + k * item > len(data):
          raise ValueError(f'{path}: byte {offset}: unexpected end of file in element {element.name!r}')
        items = np.frombuffer(data, endian + p.dtype, k, offset).astype(np.int64)
        offset += k * item
        if i == target:
          if not is_face:
            strips.append(items)
          elif k < 3:
            raise ValueError(f'{path}: byte {offset}: a face needs >= 3 corners, got {k}')
          else:
            triangles.extend(fan_triangles(items.tolist()))
    if target >= 0:
      parts.append(np.array(triangles, np.int64).reshape(-1, 3) if is_face
                   else strip_triangles(strips))
  return vertices, parts


def read_ply(path: str) -> Mesh:
  """Reads an ASCII or binary (little / big endian) PLY mesh (faces and / or triangle strips)."""
  with open(path, 'rb') as f:
    data = f.read()
  fmt, elements, body_start, first_line = _parse_ply_header(path, data)
  if not any(e.name == 'vertex' for e in elements):
    raise ValueError(f'{path}: PLY has no `vertex` element')
  if fmt == 'ascii':
    vertices, parts = _read_ply_ascii(path, data, elements, body_start, first_line)
  else:
    endian = '<' if fmt == 'binary_little_endian' else '>'
    vertices, parts = _read_ply_binary(path, data, elements, body_start, endian)
  faces = np.concatenate(parts) if parts else np.zeros((0, 3), np.int64)
  counts = ', '.join(f'{e.name} {e.count}' for e in elements)
  return mesh_with_faces(path, vertices, faces,
                          f'elements [{counts}]; faces come from `face` or `tristrips`')

