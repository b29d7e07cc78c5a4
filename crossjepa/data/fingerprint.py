"""The fingerprint of a source's data: what prepared records were built from.

`source_fingerprint(data_config)` describes everything outside the records that determines them and
that the geometry / renderer / teacher checks (records.check_metadata) do not already cover: the
source, its variant and root, the list of its files with their sizes and modification times (one
SHA-256 digest over the sorted list, plus the count and total bytes), the class names, the
synthetic generator's settings and, when the views come from given renders, the render set (its
root, layout, threshold and files). Prepare writes it into the records' metadata and, before reusing
records, compares it with the source as it is now: a change (a file added, removed or edited,
another root, another class folder, other synthetic counts) stops the run with the differing fields;
records are never reused for other data.

Hidden files (names starting with '.') are not part of the data and are left out.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping, Sequence


def file_listing(root: str) -> dict[str, Any]:
  """{'count', 'bytes', 'digest'} of every file under `root` (relative path, size, mtime_ns)."""
  h = hashlib.sha256()
  count = total = 0
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    for name in sorted(filenames):
      if name.startswith('.'):
        continue
      path = os.path.join(dirpath, name)
      st = os.stat(path)
      rel = os.path.relpath(path, root).replace(os.sep, '/')
      h.update(f'{rel}\t{st.st_size}\t{st.st_mtime_ns}\n'.encode('utf-8'))
      count += 1
      total += st.st_size
  return {'count': count, 'bytes': total, 'digest': h.hexdigest()}


def _plain(x):
  if hasattr(x, 'to_dict'):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in sorted(x.items())}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


def source_fingerprint(data_config, class_names: Sequence[str] | None, *,
                       files: bool = True) -> dict[str, Any]:
  """The fingerprint of the data `data_config` reads (see the module docstring); files=False leaves
  out the file listing (a custom source that does not read data.root)."""
  d = data_config
  fp: dict[str, Any] = {'source': str(d.source), 'variant': str(d.variant)}
  if d.source == 'synthetic':
    fp['synthetic'] = _plain(d.synthetic)
  else:
    root = os.path.abspath(str(d.root))
    fp['root'] = root
    if files:
      fp['files'] = file_listing(root) if os.path.isdir(root) else None
  if d.source == 'mesh_folder':
    # Its 'pretrain' split is the objects the other pretraining splits do not hold
    # (source_mesh_folder.py).
    fp['mesh_folder'] = {**_plain(d.mesh_folder), 'pretrain_splits': _plain(d.pretrain_splits)}
  fp['class_names'] = None if class_names is None else [str(c) for c in class_names]
  if d.render_set.root and not d.eval_only:   # the views' renders (render_set.py)
    fp['render_set'] = render_set_fingerprint(d.render_set)
  return fp


def render_set_fingerprint(render_config) -> dict[str, Any]:
  """A render set's root, layout, silhouette threshold, world and file listing (zero123: also the
  camera convention its poses are read with; zero123 and shapenet_rendering: the field of view)."""
  root = os.path.abspath(str(render_config.root))
  out = {'root': root, 'layout': str(render_config.layout),
         'min_agreement': float(render_config.min_agreement), 'axes': str(render_config.axes),
         'world': str(render_config.world),
         'files': file_listing(root) if os.path.isdir(root) else None}
  if out['layout'] == 'zero123':   # (only there: transforms_json records keep their fingerprint)
    out.update(convention=str(render_config.convention))
  if out['layout'] in ('zero123', 'shapenet_rendering'):
    out.update(camera_angle_x=float(render_config.camera_angle_x))
  return out


def differences(have: Mapping[str, Any] | None, want: Mapping[str, Any]) -> list[str]:
  """'field: records were built from X, the source now has Y' for every field that differs."""
  if not have:
    return ['fingerprint: the records carry none (prepared by an older crossjepa)']
  out = []
  for key in sorted(set(have) | set(want)):
    a, b = _plain(have.get(key)), _plain(want.get(key))
    if a == b:
      continue
    if key == 'files' and isinstance(a, Mapping) and isinstance(b, Mapping):
      if (a['count'], a['bytes']) == (b['count'], b['bytes']):
        detail = (f'the same {a["count"]} files and {a["bytes"]} bytes, but a file was renamed or '
                  'modified (sizes / modification times differ)')
      else:
        detail = (f'records were built from {a["count"]} files ({a["bytes"]} bytes), the root now '
                  f'has {b["count"]} files ({b["bytes"]} bytes)')
      out.append(f'files under data.root: {detail}')
    elif key == 'render_set' and isinstance(a, Mapping) and isinstance(b, Mapping):
      fields = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
      detail = ', '.join(f'{k} {a.get(k)!r} -> {b.get(k)!r}' for k in fields if k != 'files')
      if 'files' in fields:
        detail += (', ' if detail else '') + 'its files (added, removed or modified)'
      out.append(f'data.render_set: the views were taken from another render set: {detail}')
    elif key == 'class_names' and isinstance(a, list) and isinstance(b, list):
      gone, new = sorted(set(a) - set(b)), sorted(set(b) - set(a))
      detail = f'removed {gone}' if gone else ''
      detail += ('; ' if detail and new else '') + (f'added {new}' if new else '')
      out.append(f'class_names: {detail or "same names in another order"}')
    else:
      out.append(f'{key}: records were built from {a!r}, the config / source now gives {b!r}')
  return out
