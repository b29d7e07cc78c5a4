"""Given renders with camera poses (DESIGN.md §2: "our renderer, or given renders + poses").

With `data.render_set.root` set, prepare takes each object's views from a folder of renders that
the user already has instead of rendering them; everything after the views (correspondence maps,
teacher cache, records) is unchanged. Three layouts (`data.render_set.layout`):

- `transforms_json`: `<root>/<object id>/transforms.json` in the NeRF / instant-ngp form that
  Blender scripts (BlenderProc, the NeRF-synthetic renderer) write: `frames[i].file_path` (relative
  to the folder; '.png' is added when it has no extension) and `frames[i].transform_matrix`, the
  camera-to-world matrix in the OpenGL / Blender camera convention (x right, y up, looking down -z);
  intrinsics from `fl_x` / `fl_y` (and `cx` / `cy`, default the image centre) or `camera_angle_x`
  (radians, square pixels), at the PNGs' size (`w` / `h` when given must match them), the file's
  or a frame's own. The object id is the record id (`synthetic/train/cube_0000`,
  `chair/train/chair_0001` for a mesh folder, `shapenet55/<synset>-<modelid>`), '/' being a
  sub-folder.
- `shapenet_rendering`: 3D-R2N2's ShapeNetRendering for the `shapenet55` source:
  `<root>/<synset>/<modelid>/rendering/` with `renderings.txt` (the PNG names) and
  `rendering_metadata.txt` (one row per PNG; cameras.cameras_from_rendering_metadata reads it as
  3D-R2N2's renderer and the tools that project onto its renders do, with Blender's 35 mm lens on
  a 32 mm sensor; `data.render_set.camera_angle_x` in radians changes the field of view).
- `zero123`: the Objaverse renders of Zero-1-to-3's objaverse-rendering script (`views_release`):
  `<root>/<name>/NNN.png` with `NNN.npy` beside each, a 3 x 4 world-to-camera matrix [R | t];
  `<name>` is the object id's last part (a mesh folder's file name without its extension, e.g.
  the Objaverse uid of `<uid>.glb`). The matrices carry neither the camera axes nor intrinsics:
  `data.render_set.convention` (opengl: Blender's camera, y up, looking down -z, the default; or
  opencv) and `data.render_set.camera_angle_x` (radians; 0 = the script's 35 mm lens on a 32 mm
  sensor, 2 atan(16 / 35), as its blender_script.py sets it); square PNGs, principal point at the centre. The script's world is the
  glTF turned z-up and centred in a unit cube: `axes = y_up_to_z_up`, `world = unit_cube`.

The cameras are in the coordinates of the source's file (the mesh or cloud as read), or in a world
made from them as Blender render scripts make it: `data.render_set.axes = y_up_to_z_up` (Blender's
OBJ / glTF importers turn a y-up file z-up) and `data.render_set.world = unit_cube` (the scene
centred on its bounding box, longest side 1, as Objaverse render scripts do). Prepare moves them
into the unit-sphere frame with the object (`world_similarity`, `to_normalized_frame`).

The PNGs must have an alpha channel: it is the object's mask (the colour histogram's pixels, the
silhouette check) and the colour is composited over the renderer's white background, then resized
to data.image_size (bicubic; the intrinsics are scaled with it). Of an object's n renders,
V = data.num_views evenly spaced ones are taken (indices floor(i n / V)), so a ring of renders
stays a ring.

The visibility test of the correspondence maps needs depth, which render sets rarely carry: the
depth is our rasteriser's, of the same normalised mesh (or point splats) seen by the given cameras.

Silhouette check (nothing silent): a camera convention or coordinate frame that does not match the
renders would pair every view with the wrong pose and the wrong patches without an error. So each
object's surface points are projected with its cameras; the fraction that falls on the render's
mask (dilated by one pixel) is its agreement. An object whose mean agreement over its views is
below data.render_set.min_agreement stops prepare, naming the folder and each view's fraction.
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import numpy as np

from crossjepa.data import render

LAYOUTS = ('transforms_json', 'shapenet_rendering', 'zero123')
_BACKGROUND = int(render.RENDER_SETTINGS['background'])   # composited over the renderer's white
_ALPHA_OBJECT = 128         # alpha at or above this (after resizing) is the object
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])   # OpenGL camera axes (y up, -z forward) -> OpenCV


class GivenViews(NamedTuple):
  """One object's views from a render set, at data.image_size, cameras in the render set's world."""
  image: np.ndarray          # [V,S,S,3] uint8, composited over white
  mask: np.ndarray           # [V,S,S] bool: alpha >= 128
  world_to_cam: np.ndarray   # [V,4,4] float64 OpenCV extrinsics
  intrinsics: np.ndarray     # [V,3,3] float64 pixel intrinsics at S x S
  files: list[str]           # the PNGs taken


def angle_x(render_config) -> float:
  """The horizontal field of view (radians) zero123 and shapenet_rendering renders are read with:
  data.render_set.camera_angle_x, or 0 for Blender's default camera that both renderers keep."""
  from crossjepa.data import cameras  # pylint: disable=g-import-not-at-top
  return float(render_config.camera_angle_x) or float(np.deg2rad(cameras.BLENDER_FOV_DEG))


def enabled(data_config) -> bool:
  return bool(str(data_config.render_set.root))


def object_dir(render_config, object_id: str) -> str:
  """The folder of an object's renders under render_set.root."""
  root = str(render_config.root)
  if render_config.layout == 'shapenet_rendering':
    prefix = 'shapenet55/'
    if not object_id.startswith(prefix) or '-' not in object_id[len(prefix):]:
      raise ValueError(f'data.render_set.layout = shapenet_rendering reads ShapeNet-55 objects '
                       f'(ids shapenet55/<synset>-<modelid>), got id {object_id!r}')
    synset, model = object_id[len(prefix):].split('-', 1)
    return os.path.join(root, synset, model, 'rendering')
  if render_config.layout == 'zero123':
    return os.path.join(root, object_id.split('/')[-1])
  return os.path.join(root, *object_id.split('/'))


def check_unique_folders(render_config, object_ids) -> None:
  """Raises when two objects' renders would come from one folder (zero123 names a folder by the
  id's last part: `chair/train/a_01` and `table/test/a_01` would share `<root>/a_01`)."""
  owner: dict[str, str] = {}
  for object_id in object_ids:
    folder = object_dir(render_config, object_id)
    if folder in owner and owner[folder] != object_id:
      raise ValueError(f'data.render_set.layout = {render_config.layout}: objects '
                       f'{owner[folder]!r} and {object_id!r} would both take their renders from '
                       f'{folder} (the layout names a folder by the id\'s last part); give the '
                       'files unique names, or use layout transforms_json (a folder per whole id)')
    owner[folder] = object_id


def evenly_spaced(available: int, num_views: int, where: str) -> np.ndarray:
  """Indices floor(i * n / V) of V views out of n (an error naming `where` when n < V)."""
  if available < num_views:
    raise ValueError(f'{where}: {available} render(s), data.num_views = {num_views} needs at least '
                     f'{num_views}')
  return (np.arange(num_views) * available) // num_views


# --------------------------------------------------------------------------------- the layouts
def _read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing; the render set\'s layout transforms_json expects one '
                            'transforms.json per object folder')
  try:
    with open(path, 'r', encoding='utf-8') as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a JSON object with "frames", got {type(data).__name__}')
  return data


def _number(data: dict, key: str, path: str, *, positive: bool = True) -> float:
  value = data[key]
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or (
      positive and value <= 0):
    raise ValueError(f'{path}: "{key}" must be a {"positive " if positive else ""}finite number, '
                     f'got {value!r}')
  return float(value)


def _transforms_intrinsics(data: dict, path: str, width: int, height: int) -> np.ndarray:
  for key, size in (('w', width), ('h', height)):
    if key in data and _number(data, key, path) != size:
      raise ValueError(f'{path}: "{key}" = {data[key]} but the PNGs are {width} x {height}')
  if 'fl_x' in data:
    fx = _number(data, 'fl_x', path)
    fy = _number(data, 'fl_y', path) if 'fl_y' in data else fx
  elif 'camera_angle_x' in data:
    angle = _number(data, 'camera_angle_x', path)
    if angle >= np.pi:
      raise ValueError(f'{path}: "camera_angle_x" = {angle} radians; expected the horizontal field '
                       'of view in (0, pi)')
    fx = fy = 0.5 * width / np.tan(0.5 * angle)
  else:
    raise ValueError(f'{path}: no intrinsics; expected "fl_x" (and "fl_y", "cx", "cy") in pixels or '
                     '"camera_angle_x" in radians')
  cx = _number(data, 'cx', path, positive=False) if 'cx' in data else width / 2.0
  cy = _number(data, 'cy', path, positive=False) if 'cy' in data else height / 2.0
  return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


_INTRINSIC_KEYS = ('fl_x', 'fl_y', 'cx', 'cy', 'w', 'h', 'camera_angle_x')


def _transforms_frames(folder: str) -> tuple[list[dict], str, list[str], np.ndarray]:
  """(each frame's intrinsic keys: the file's, overridden by the frame's own as instant-ngp allows;
  the json's path; PNG paths [n]; OpenCV world_to_cam [n,4,4]) of a transforms.json."""
  path = os.path.join(folder, 'transforms.json')
  data = _read_json(path)
  frames = data.get('frames')
  if not isinstance(frames, list) or not frames:
    raise ValueError(f'{path}: "frames" must be a non-empty list of {{"file_path", '
                     '"transform_matrix"}')
  intrinsics, files, w2c = [], [], []
  for i, frame in enumerate(frames):
    if not isinstance(frame, dict) or not isinstance(frame.get('file_path'), str):
      raise ValueError(f'{path}: frames[{i}] has no "file_path" string')
    name = frame['file_path']
    if not os.path.splitext(name)[1]:
      name += '.png'
    try:
      c2w = np.asarray(frame.get('transform_matrix'), np.float64)
    except (TypeError, ValueError):
      c2w = np.zeros(0)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
      raise ValueError(f'{path}: frames[{i}].transform_matrix must be a finite 4 x 4 '
                       f'camera-to-world matrix, got shape {c2w.shape}')
    _rigid(c2w, f'{path}: frames[{i}].transform_matrix')
    files.append(os.path.normpath(os.path.join(folder, name)))
    w2c.append(np.linalg.inv(c2w @ _GL_TO_CV))
    intrinsics.append({k: v for source in (data, frame) for k, v in source.items()
                       if k in _INTRINSIC_KEYS})
  return intrinsics, path, files, np.stack(w2c)


def _shapenet_rendering_frames(folder: str) -> tuple[list[str], np.ndarray]:
  """(PNG paths [n], rows [n,5]) of a ShapeNetRendering object folder."""
  from crossjepa.data import cameras  # pylint: disable=g-import-not-at-top
  listing = os.path.join(folder, 'renderings.txt')
  metadata = os.path.join(folder, 'rendering_metadata.txt')
  for path in (listing, metadata):
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: missing; a ShapeNetRendering object folder holds '
                              'renderings.txt, rendering_metadata.txt and the PNGs they list')
  with open(listing, 'r', encoding='utf-8') as f:
    names = [line.strip() for line in f if line.strip()]
  rows = cameras.read_rendering_metadata(metadata)
  if len(names) != len(rows):
    raise ValueError(f'{folder}: renderings.txt lists {len(names)} PNGs but '
                     f'rendering_metadata.txt has {len(rows)} rows; expected one row per PNG')
  return [os.path.join(folder, n) for n in names], rows


def _rigid(matrix: np.ndarray, what: str) -> None:
  rotation = matrix[:3, :3]
  if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) <= 0:
    raise ValueError(f'{what} is not a rigid transform (its 3 x 3 part must be a rotation: '
                     'orthonormal, determinant +1)')


def _zero123_frames(folder: str, convention: str) -> tuple[list[str], np.ndarray]:
  """(PNG paths [n], OpenCV world_to_cam [n,4,4]) of a zero123 object folder."""
  names = sorted(f for f in os.listdir(folder) if f.lower().endswith('.png'))
  if not names:
    raise FileNotFoundError(f'{folder}: no PNG renders; the zero123 layout holds NNN.png with '
                            'NNN.npy (its 3 x 4 world-to-camera matrix) beside each')
  files, w2c = [], []
  for name in names:
    path = os.path.join(folder, os.path.splitext(name)[0] + '.npy')
    if not os.path.isfile(path):
      raise FileNotFoundError(f'{path}: missing; the zero123 layout has a pose beside each render '
                              f'({name})')
    try:
      pose = np.load(path, allow_pickle=False)
    except ValueError as e:     # an object array, or not an .npy file
      raise ValueError(f'{path}: not a numeric .npy array ({e})') from None
    if pose.shape not in ((3, 4), (4, 4)) or not np.issubdtype(pose.dtype, np.number) or not np.all(
        np.isfinite(pose)):
      raise ValueError(f'{path}: expected a finite 3 x 4 world-to-camera matrix [R | t], got '
                       f'shape {pose.shape} dtype {pose.dtype}')
    matrix = np.eye(4)
    matrix[:3] = np.asarray(pose, np.float64)[:3]
    _rigid(matrix, path)
    files.append(os.path.join(folder, name))
    w2c.append(_GL_TO_CV @ matrix if convention == 'opengl' else matrix)
  return files, np.stack(w2c)


def _load_rgba(path: str, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """(rgb uint8 [S,S,3] composited over white, mask [S,S], the PNG's (width, height))."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing (a render listed for this object)')
  try:
    with Image.open(path) as im:
      im.load()
      mode, native = im.mode, im.size
      if mode not in ('RGBA', 'LA', 'PA') and not (mode == 'P' and 'transparency' in im.info):
        raise ValueError(f'{path}: mode {mode} has no alpha channel; a render set\'s PNGs must be '
                         'RGBA: the alpha is the object\'s mask')
      rgba = np.asarray(im.convert('RGBA'))
  except OSError as e:
    raise ValueError(f'{path}: not a readable image ({e})') from None
  a8 = rgba[..., 3]
  # over white in integers: (c a + 255 (255 - a) + 127) // 255 is round(c a / 255 + 255 - a), no
  # sum of them being a half
  alpha = a8[..., None].astype(np.int32)
  rgb = ((rgba[..., :3] * alpha + _BACKGROUND * (255 - alpha) + 127) // 255).astype(np.uint8)
  if native != (size, size):
    rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC))
    a8 = np.asarray(Image.fromarray(a8).resize((size, size), Image.Resampling.BILINEAR))
  return rgb, a8 >= _ALPHA_OBJECT, native


def read_views(data_config, object_id: str) -> GivenViews:
  """The V views of one object from data.render_set, at data.image_size (see the module docstring)."""
  from crossjepa.data import cameras  # pylint: disable=g-import-not-at-top
  rs = data_config.render_set
  size, num_views = int(data_config.image_size), int(data_config.num_views)
  folder = object_dir(rs, object_id)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'{folder}: missing; data.render_set.root has no renders of object '
                            f'{object_id!r} (layout {rs.layout})')
  if rs.layout == 'transforms_json':
    frame_intrinsics, json_path, files, w2c_all = _transforms_frames(folder)
    where = json_path
  elif rs.layout == 'zero123':
    files, w2c_all = _zero123_frames(folder, str(rs.convention))
    where = folder
  else:
    files, rows = _shapenet_rendering_frames(folder)
    where = folder
  angle = angle_x(rs)
  take = evenly_spaced(len(files), num_views, where)
  images, masks, w2c, intrinsics, taken = [], [], [], [], []
  for i in take:
    rgb, mask, (width, height) = _load_rgba(files[i], size)
    if rs.layout == 'transforms_json':
      k = _transforms_intrinsics(frame_intrinsics[i], json_path, width, height)
      extrinsic = w2c_all[i]
    elif rs.layout == 'zero123':
      if width != height:
        raise ValueError(f'{files[i]}: {width} x {height}; the zero123 layout\'s renders are square')
      k = _transforms_intrinsics({'camera_angle_x': angle}, files[i], width, height)
      extrinsic = w2c_all[i]
    else:
      if width != height:
        raise ValueError(f'{files[i]}: {width} x {height}; ShapeNetRendering\'s renders are square')
      e, k = cameras.cameras_from_rendering_metadata(rows[i:i + 1], width,
                                                     fov_deg=float(np.rad2deg(angle)))
      extrinsic, k = e[0].astype(np.float64), k[0].astype(np.float64)
    scale = np.diag([size / width, size / height, 1.0])
    images.append(rgb)
    masks.append(mask)
    w2c.append(extrinsic)
    intrinsics.append(scale @ k)
    taken.append(files[i])
  return GivenViews(np.stack(images), np.stack(masks), np.stack(w2c), np.stack(intrinsics), taken)


def write_transforms_json(folder: str, rgb, mask, world_to_cam, intrinsics) -> None:
  """Writes views as a transforms_json render set folder: r_<i>.png (RGBA, alpha 255 on `mask`)
  and transforms.json (OpenGL camera-to-world poses, each frame's fl_x / fl_y / cx / cy, w, h),
  each file under a temporary name, then renamed, the json last. rgb [V,H,W,3] uint8, mask [V,H,W],
  world_to_cam [V,4,4] OpenCV, intrinsics [V,3,3] pixel."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rgb = np.asarray(rgb, np.uint8)
  alpha = np.where(np.asarray(mask, bool), 255, 0).astype(np.uint8)
  os.makedirs(folder, exist_ok=True)
  frames = []
  for i, (w2c, k) in enumerate(zip(np.asarray(world_to_cam, np.float64),
                                   np.asarray(intrinsics, np.float64))):
    png = os.path.join(folder, f'r_{i}.png')
    Image.fromarray(np.concatenate([rgb[i], alpha[i][..., None]], -1), 'RGBA').save(
        png + '.tmp', format='PNG')
    os.replace(png + '.tmp', png)
    frames.append({'file_path': f'./r_{i}',
                   'transform_matrix': (np.linalg.inv(w2c) @ _GL_TO_CV).tolist(),
                   'fl_x': float(k[0, 0]), 'fl_y': float(k[1, 1]), 'cx': float(k[0, 2]),
                   'cy': float(k[1, 2]), 'w': int(rgb.shape[2]), 'h': int(rgb.shape[1])})
  path = os.path.join(folder, 'transforms.json')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump({'frames': frames}, f)
  os.replace(path + '.tmp', path)


# ---------------------------------------------------------------------------- frames and checks
# How a render set's world sits on the object's file: `axes` (render_set.axes) and `world`
# (render_set.world). Blender's OBJ and glTF importers turn a y-up file z-up, (x, y, z) ->
# (x, -z, y); Objaverse render scripts (Zero123's and those after it) then centre the scene on its
# bounding box and scale its longest side to 1.
AXES = {'file': np.eye(3), 'y_up_to_z_up': np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])}
WORLDS = ('file', 'unit_cube')


class Similarity(NamedTuple):
  """p_world = scale * rotation @ p + offset, from the unit-sphere frame to the render set's."""
  scale: float
  rotation: np.ndarray   # [3,3]
  offset: np.ndarray     # [3]


def world_similarity(render_config, frame, normalized_geometry) -> Similarity:
  """The map from prepare's unit-sphere frame to the render set's world.

  frame = (center, scale) of the normalisation (normalised = (p_file - center) / scale);
  normalized_geometry [P,3] the object's normalised mesh vertices or cloud, whose bounding box the
  unit_cube world is taken from. p_world = A (p_file - c_box) / e with A the axes' rotation, c_box
  the box centre and e its longest side (1 and 0 in the file world), so with p_file = s p + c:
  scale s / e, rotation A, offset A (c - c_box) / e."""
  center, scale = np.asarray(frame[0], np.float64), float(frame[1])
  axes = AXES[str(render_config.axes)]
  box_center, extent = np.zeros(3), 1.0
  if render_config.world == 'unit_cube':
    g = np.asarray(normalized_geometry, np.float64) * scale + center
    lo, hi = g.min(0), g.max(0)
    box_center, extent = (lo + hi) / 2.0, float((hi - lo).max())
  return Similarity(scale / extent, axes, axes @ (center - box_center) / extent)


def to_normalized_frame(world_to_cam, similarity: Similarity) -> np.ndarray:
  """Extrinsics that see the normalised object as `world_to_cam` sees it in the render set's world.

  With p_world = k M p + b: R p_world + t = k (R M p + (R b + t) / k), and a camera-space scale by
  1 / k moves no pixel, so [R M | (R b + t) / k] is a rigid camera of the normalised frame (depth
  in its units)."""
  w2c = np.array(world_to_cam, np.float64)
  rotation, translation = w2c[..., :3, :3].copy(), w2c[..., :3, 3].copy()
  k, m, b = float(similarity.scale), np.asarray(similarity.rotation), np.asarray(similarity.offset)
  w2c[..., :3, :3] = rotation @ m
  w2c[..., :3, 3] = (np.einsum('...ij,j->...i', rotation, b) + translation) / k
  return w2c


def from_normalized_frame(world_to_cam, similarity: Similarity) -> np.ndarray:
  """The inverse of to_normalized_frame: [R M^T | k t - R M^T b] (writing views seen in the
  unit-sphere frame as a render set in its world)."""
  w2c = np.array(world_to_cam, np.float64)
  k, m, b = float(similarity.scale), np.asarray(similarity.rotation), np.asarray(similarity.offset)
  rotation = w2c[..., :3, :3] @ m.T
  w2c[..., :3, :3] = rotation
  w2c[..., :3, 3] = k * w2c[..., :3, 3] - np.einsum('...ij,j->...i', rotation, b)
  return w2c


def silhouette_scores(points, world_to_cam, intrinsics, mask, *, at_most: int = 2048
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Both sides of a render's silhouette against the object seen by its camera, per view:

  - on_mask [V]: the fraction of `points` [P,3] that project in front of the camera onto the mask
    [V,S,S] dilated by one pixel (a 3 x 3 window); of a larger cloud every k-th point, at most
    `at_most` (a fraction to about 1 %, at a quarter of an 8,192-point cloud's cost);
  - spanned [V]: how much of the mask's extent those on-mask points span, the smaller over the
    image's two axes of (their span + a slack) / the mask's span, at most 1 (0 for an empty mask);
    the slack, 2 pixels (the dilation) + twice the points' spacing on the mask (sqrt(mask pixels /
    on-mask points)), is how far a sparse sample's extremes may fall inside the silhouette's.

  Points that fall on the mask but cover only part of it (renders taken through a narrower lens
  than the cameras say, or of an object scaled up) pass the first and fail the second.
  """
  from crossjepa.data import correspondence  # pylint: disable=g-import-not-at-top
  points = np.asarray(points)
  points = points[::-(-len(points) // at_most)]
  mask = np.asarray(mask, bool)
  size = mask.shape[1]
  uv, z = correspondence.project(points, world_to_cam, intrinsics)            # [V,P,2], [V,P]
  padded = np.pad(mask, [(0, 0), (1, 1), (1, 1)])
  grown = np.zeros_like(mask)
  for di in range(3):
    for dj in range(3):
      grown |= padded[:, di:di + size, dj:dj + size]
  with np.errstate(invalid='ignore'):
    col, row = np.floor(uv[..., 0]), np.floor(uv[..., 1])
    inside = (z > 0) & (col >= 0) & (col < size) & (row >= 0) & (row < size)
  col = np.where(inside, col, 0).astype(np.int64)
  row = np.where(inside, row, 0).astype(np.int64)
  hit = inside & grown[np.arange(len(mask))[:, None], row, col]
  spanned = np.zeros(len(mask))
  for v in range(len(mask)):
    rows_v, cols_v = np.nonzero(mask[v])
    if not len(rows_v) or not hit[v].any():
      continue
    # A sample's extreme falls short of the silhouette's by up to the points' spacing on it.
    slack = 2.0 + 2.0 * np.sqrt(len(rows_v) / hit[v].sum())
    fractions = [(np.ptp(at[hit[v]]) + 1 + slack) / (np.ptp(of) + 1)
                 for at, of in ((col[v], cols_v), (row[v], rows_v))]
    spanned[v] = min(1.0, *fractions)
  return hit.mean(axis=1), spanned


def silhouette_agreement(points, world_to_cam, intrinsics, mask, *, at_most: int = 2048
                         ) -> np.ndarray:
  """[V] the smaller of silhouette_scores' two sides: 1 when the cameras see the object where,
  and as large as, its renders show it."""
  return np.minimum(*silhouette_scores(points, world_to_cam, intrinsics, mask, at_most=at_most))


def check_agreement(scores, data_config, object_id: str, files) -> None:
  """Raises when the object's mean silhouette agreement (the smaller of silhouette_scores' two
  sides, `scores` = (on_mask, spanned)) is below data.render_set.min_agreement."""
  rs = data_config.render_set
  least = float(rs.min_agreement)
  on_mask, spanned = (np.asarray(s, np.float64) for s in scores)
  agreement = np.minimum(on_mask, spanned)
  if float(agreement.mean()) >= least:
    return
  folder = os.path.dirname(files[0]) if files else ''
  per_view = ', '.join(f'{os.path.basename(f)} {a:.2f} / {b:.2f}'
                       for f, a, b in zip(files, on_mask, spanned))
  raise ValueError(
      f'{folder}: the given cameras do not see object {object_id!r} where its renders show it: '
      f'{on_mask.mean():.2f} of its surface points project onto the render\'s mask (alpha), '
      f'spanning {spanned.mean():.2f} of its extent; their smaller is {agreement.mean():.2f}, '
      f'data.render_set.min_agreement = {least} (per view: {per_view}). Expected the layout\'s camera '
      f'convention ({rs.layout}) in the world of data.render_set.axes = {rs.axes} and world = '
      f'{rs.world}; another convention or frame does not match (Blender\'s importers turn a y-up '
      f'file z-up: axes = y_up_to_z_up; Objaverse render scripts centre and scale the scene: '
      f'world = unit_cube)' + (
          f'; zero123\'s poses are read with data.render_set.convention = {rs.convention} and '
          f'camera_angle_x = {angle_x(rs):.4f}: try the other convention (opengl | opencv) or the '
          'renders\' field of view' if rs.layout == 'zero123' else
          f'; the renders\' field of view is read as data.render_set.camera_angle_x = '
          f'{angle_x(rs):.4f} radians (0: Blender\'s 35 mm lens on a 32 mm sensor, as 3D-R2N2 '
          'rendered): try the renders\' own' if rs.layout == 'shapenet_rendering' else ''))
