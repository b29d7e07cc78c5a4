"""`python -m crossjepa.classify`: name 3D objects with no 3D label, through an export's readout.

    python -m crossjepa.classify --encoder=WORKDIR/export --input=mug.obj,chair.off,scan.npy
        [--top=5] [--classes=classes.json] [--json]      (an --input folder: its mesh and point files)

An export of a run whose teacher has an ImageNet classifier (the EfficientNet-Lite teachers) carries
a zero-shot readout (crossjepa/evaluation/zero_shot.py): the encoder's pooled features read out into
the teacher's embedding, then the teacher's classifier. Each input becomes the export's num_points
points as prepare makes them: a mesh (MESH_EXTENSIONS, read by prepare's readers) by area-weighted
surface samples, a point file (.npy [M, >=3]; .txt / .xyz / .pts with x y z first, separated by
spaces or commas) by farthest point sampling; both normalised to the unit sphere. The surface
samples are drawn under a seed from the file's name, so a file gets the same answer every time.

Without --classes: the --top ImageNet classes, with softmax probabilities over the 1,000. With
--classes (a JSON object {"3D class": ["ImageNet class name", ...]}, the format of
eval.zero_shot_classes, or the name of a source whose table to use: modelnet40, scanobjectnn,
shapenet55, synthetic): every 3D class ranked by the best logit of its ImageNet classes, with
softmax probabilities over those scores.

The export of a run with a CLIP teacher (converted with its text tower) carries the readout into
CLIP's image embedding and the text embeddings of the words it can name (its pretraining classes'
and the built-in sources'): without --classes the --top of those words, with --classes a source's
classes by their words or a JSON file {"3D class": [words]} (words it carries), ranked by CLIP's
logits (100 x the cosine), softmax probabilities over them. Other words: --text_tower=DIR, the
teacher folder the export was pretrained with (its text tower's checksum must match).

A missing or malformed file, non-finite coordinates, an export without a readout, a bad --classes
file: one line naming it on stderr, exit 2.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Sequence

from absl import flags
import numpy as np

from crossjepa import console

PROG = 'crossjepa.classify'
POINT_EXTENSIONS = ('.npy', '.txt', '.xyz', '.pts')
CHUNK = 64   # files read and encoded at a time

FLAGS = flags.FLAGS
flags.DEFINE_string('encoder', None, 'An export folder (WORKDIR/export of a run with an '
                    'EfficientNet-Lite teacher, or a CLIP teacher with its text tower).',
                    required=True)
flags.DEFINE_list('input', None, 'Comma-separated mesh or point files, or folders of them.',
                  required=True)
flags.DEFINE_integer('top', 5, 'How many classes to list per object.', lower_bound=1)
flags.DEFINE_string('classes', '', 'Rank these classes instead of ImageNet\'s 1,000 (a CLIP '
                    'export: instead of every word it carries): a JSON file {"3D class": '
                    '["ImageNet class name" | words, ...]}, or a source\'s class table: '
                    'synthetic, modelnet40, scanobjectnn, shapenet55.')
flags.DEFINE_string('text_tower', '', 'A CLIP export: its teacher folder (converted with the text '
                    'tower), to name words the export does not carry in --classes.')
flags.DEFINE_bool('json', False, 'Print JSON instead of lines for people.')


def read_points(path: str) -> np.ndarray:
  """[M, 3] float32 of a point file (POINT_EXTENSIONS); ValueError naming the file otherwise."""
  ext = os.path.splitext(path)[1].lower()
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such file')
  if ext == '.npy':
    try:
      points = np.load(path, allow_pickle=False)
    except ValueError as e:   # an object array, or not an .npy file at all
      raise ValueError(f'{path}: not a numeric .npy array ({e})') from e
  else:
    with open(path, 'rb') as f:
      text = f.read().decode('utf-8', errors='replace').replace(',', ' ')
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith('#')]
    width = min((len(r) for r in rows), default=0)
    try:
      points = np.array([r[:3] for r in rows], np.float64) if width >= 3 else np.zeros((0, 0))
    except ValueError as e:
      raise ValueError(f'{path}: expected rows of numbers, x y z first ({e})') from e
  points = np.asarray(points)
  if points.ndim != 2 or points.shape[1] < 3 or len(points) == 0:
    raise ValueError(f'{path}: expected points [M, >=3] with M > 0, got an array of shape '
                     f'{points.shape}')
  if not np.issubdtype(points.dtype, np.number):
    raise ValueError(f'{path}: expected numbers, got dtype {points.dtype}')
  points = points[:, :3].astype(np.float64)
  bad = np.flatnonzero(~np.isfinite(points).all(axis=1))
  if bad.size:
    raise ValueError(f'{path}: {bad.size} of {len(points)} points are not finite (NaN or Inf), '
                     f'the first at row {int(bad[0])}')
  return points.astype(np.float32)


def expand_inputs(paths: Sequence[str]) -> list[str]:
  """The files to classify: each path, a folder standing for its mesh and point files (sorted,
  not recursive)."""
  from crossjepa.data import mesh_readers  # pylint: disable=g-import-not-at-top
  known = tuple(mesh_readers.MESH_EXTENSIONS) + POINT_EXTENSIONS
  out = []
  for path in paths:
    if os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path)
                     if os.path.splitext(f)[1].lower() in known
                     and os.path.isfile(os.path.join(path, f)))
      if not found:
        raise ValueError(f'{path}: a folder with no mesh {mesh_readers.MESH_EXTENSIONS} or point '
                         f'{POINT_EXTENSIONS} files')
      out.extend(found)
    else:
      out.append(path)
  if not out:
    raise ValueError('--input: no files given')
  return out


def object_points(path: str, num_points: int) -> np.ndarray:
  """The [num_points, 3] unit-sphere points of one mesh or point file, as prepare makes them."""
  from crossjepa.data import mesh_readers  # pylint: disable=g-import-not-at-top
  from crossjepa.data import per_object  # pylint: disable=g-import-not-at-top
  from crossjepa.data.shape import GREY, Shape  # pylint: disable=g-import-not-at-top
  ext = os.path.splitext(path)[1].lower()
  if ext in POINT_EXTENSIONS:
    mesh, points = None, read_points(path)
  elif ext in mesh_readers.MESH_EXTENSIONS:
    mesh, points = mesh_readers.read_mesh(path), None
  else:
    raise ValueError(f'{path}: unknown extension {ext!r}; expected a mesh '
                     f'{mesh_readers.MESH_EXTENSIONS} or points {POINT_EXTENSIONS}')
  name = os.path.basename(path)
  shape = Shape(name, -1, 'input', mesh, points, GREY)
  rng = np.random.default_rng(per_object.object_seed(0, name))
  try:
    return per_object.normalize(shape, _Geometry(num_points), rng)[0]
  except ValueError as e:   # all points in one place, a mesh without area
    raise ValueError(f'{path}: {e}') from e


class _Geometry:
  """The one data setting that normalize reads."""

  def __init__(self, num_points: int):
    self.num_points = num_points


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def classify(export_dir: str, paths: Sequence[str], top: int = 5, classes: str = '',
             text_tower: str = '') -> list[dict[str, Any]]:
  """[{input, classes: [{name, probability, logit}] best first}] for each path (see the module)."""
  from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  paths = expand_inputs(paths)
  encoder = export_lib.load_encoder(export_dir)
  if encoder.readout_kind == 'clip_text':
    return _classify_text(encoder, paths, top, classes, text_tower)
  if text_tower:
    raise ValueError(f'--text_tower={text_tower}: the export {export_dir} names ImageNet classes '
                     '(an EfficientNet-Lite teacher), not words; leave --text_tower out')
  names = [n.split(',')[0] for n in zero_shot.imagenet_class_names()]
  if classes:
    preset = classes in zero_shot.MAPPINGS
    mapping = (dict(zero_shot.MAPPINGS[classes]) if preset
               else zero_shot.read_mapping(classes, '--classes'))
    labels = list(mapping)
    try:
      indices = zero_shot.class_indices(labels, mapping)
    except ValueError as e:
      raise ValueError(f'--classes={classes}: {e}') from e
    shown = [zero_shot.display_name(classes, l) if preset else l for l in labels]
  logits = _logits(paths, encoder, encoder.imagenet_logits)
  if classes:   # the labels index `shown` (class_indices maps every class of the file)
    _, logits = zero_shot.class_scores(logits, indices)
    names = shown
  return _ranked(paths, logits, names, top)


def _logits(paths: Sequence[str], encoder, fn) -> np.ndarray:
  """fn(points) of every file: read and encoded a chunk at a time (memory bounded by the chunk,
  not the file count; the last chunk padded, so one compiled shape serves every chunk)."""
  parts = []
  with console.progress(total=len(paths), desc='classify', unit='file',
                        disable=len(paths) <= CHUNK) as bar:
    for start in range(0, len(paths), CHUNK):
      chunk = np.stack([object_points(p, encoder.num_points)
                        for p in paths[start:start + CHUNK]])
      rows = len(chunk)
      if len(paths) > CHUNK:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], CHUNK - rows, axis=0)])
      parts.append(fn(chunk)[:rows])
      bar.update(rows)
  return np.concatenate(parts)


def _classify_text(encoder, paths: Sequence[str], top: int, classes: str,
                   text_tower: str) -> list[dict[str, Any]]:
  """classify through a CLIP export: every word it carries, or --classes (a source's classes by
  their words, or a file {"3D class": [words]}), ranked by CLIP's logits; words it does not carry
  through --text_tower (its teacher folder)."""
  from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
  tower = zero_shot.load_text_tower(text_tower, f'--text_tower={text_tower}') if text_tower else None
  if not classes:
    names = sorted(encoder.text_columns())
    words = [[w] for w in names]
  elif classes in zero_shot.SOURCE_CLASSES:
    labels = zero_shot.source_classes(classes)
    names = [zero_shot.display_name(classes, n) for n in labels]
    words = [[zero_shot.class_words(classes, n)] for n in labels]
  else:
    mapping = zero_shot.read_mapping(classes, '--classes')
    names, words = list(mapping), [list(v) for v in mapping.values()]
  try:
    logits = _logits(paths, encoder, lambda x: encoder.text_logits(x, words, tower))
  except ValueError as e:
    raise ValueError(f'--classes={classes}: {e}' if classes else str(e)) from e
  return _ranked(paths, logits, names, top)


def _ranked(paths: Sequence[str], logits: np.ndarray, names: Sequence[str], top: int
            ) -> list[dict[str, Any]]:
  probs = _softmax(logits.astype(np.float64))
  out = []
  for path, row, p in zip(paths, logits, probs):
    order = np.argsort(-row, kind='stable')[:top]
    out.append({'input': path, 'classes': [
        {'name': names[i], 'probability': float(p[i]), 'logit': float(row[i])} for i in order]})
  return out


def main(argv):
  del argv  # console.parse_flags refused positional arguments
  try:
    results = classify(FLAGS.encoder, FLAGS.input, FLAGS.top, FLAGS.classes, FLAGS.text_tower)
  except (ValueError, OSError) as e:   # a user's file or flag: one line naming it, exit 2
    console.fail(PROG, e)
  if FLAGS.json:
    print(json.dumps(results, indent=2))
    return
  for r in results:
    ranked = ', '.join(f"{c['name']} {100 * c['probability']:.1f} %" for c in r['classes'])
    print(f"{r['input']}: {ranked}")
  sys.stdout.flush()


if __name__ == '__main__':
  console.run_app(main, PROG)
