"""Triangle meshes: the `Mesh` record, building one from a file's polygons, sampling, normalisation.

The mesh-file readers are `mesh_readers.read_mesh` (by extension) and the per-format modules it
dispatches to (mesh_off_obj.py, mesh_ply.py, mesh_stl_gltf.py); they build their `Mesh` with
`fan_triangles` and `mesh_with_faces` below.

Sampling is area-weighted with uniform barycentric coordinates (the standard
`sqrt(r1)` construction, Osada et al. 2002, "Shape distributions"). Normalisation follows
Point-BERT's `pc_normalize`: centre at the MEAN of the points, divide by the max norm, so the
farthest point lies on the unit sphere. The transform is returned so that a mesh can be moved
into exactly the same frame (`apply_normalization`).
"""
from __future__ import annotations

import dataclasses

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


def fan_triangles(polygon: list[int]) -> list[tuple[int, int, int]]:
  """Fan triangulation (v0, vi, vi+1): exact for convex polygons, what every loader does."""
  return [(polygon[0], polygon[i], polygon[i + 1]) for i in range(1, len(polygon) - 1)]


def mesh_with_faces(path: str, vertices, faces, what: str) -> Mesh:
  """The validated Mesh of a file; a file without faces is an error (nothing to sample)."""
  mesh = Mesh(vertices, faces, source=path)
  if mesh.num_faces == 0:
    raise ValueError(f'{path}: no faces ({mesh.num_vertices} vertices): {what}')
  return mesh


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
