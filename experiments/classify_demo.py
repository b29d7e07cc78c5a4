"""crossjepa.classify on meshes of the embedded generator: what an export names with no 3D label.

    python experiments/classify_demo.py --encoder=WORKDIR/export [--out=FILE.json]

Writes one OBJ mesh per class of CLASSES (synthetic.make_shape under seed 1234 + class index:
objects no run has seen), classifies them through the export's zero-shot readout over ImageNet's
1,000 classes, then over the classes' own ImageNet names (zero_shot.IMAGENET_NAMES, for those that
have any), and prints one JSON object: each mesh's top classes, how many of the named ones the
restricted ranking gets right, and the wall time of each pass. The README's classify paragraph is
its output for the 3,000-step Lite0 run of seed 0.
"""
import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from crossjepa import classify  # pylint: disable=g-import-not-at-top
from crossjepa import console  # pylint: disable=g-import-not-at-top
from crossjepa import fileio  # pylint: disable=g-import-not-at-top
from crossjepa.data import synthetic  # pylint: disable=g-import-not-at-top
from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top

CLASSES = ('bottle', 'bowl', 'box', 'car', 'chair', 'mug', 'plane', 'sofa')


def write_obj(path: str, mesh) -> None:
  with open(path, 'w') as f:
    f.writelines(f'v {x} {y} {z}\n' for x, y, z in mesh.vertices)
    f.writelines(f'f {a + 1} {b + 1} {c + 1}\n' for a, b, c in mesh.faces)


def main():
  p = argparse.ArgumentParser(prog='classify_demo.py', description=__doc__.splitlines()[0])
  p.add_argument('--encoder', required=True, help='an export folder with a zero-shot readout')
  p.add_argument('--top', type=console.int_arg(1), default=3)
  p.add_argument('--out', type=console.out_file_arg, default='', help='also write the JSON here')
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for name in CLASSES:
      index = synthetic.CLASS_NAMES.index(name)
      paths.append(os.path.join(tmp, f'{name}.obj'))
      write_obj(paths[-1], synthetic.make_shape(index, np.random.default_rng(1234 + index)))
    named = {n: list(zero_shot.IMAGENET_NAMES[n]) for n in CLASSES if n in zero_shot.IMAGENET_NAMES}
    classes = os.path.join(tmp, 'classes.json')
    with open(classes, 'w') as f:
      json.dump(named, f)
    try:
      t = time.perf_counter()
      imagenet = classify.classify(args.encoder, paths, top=args.top)
      t_imagenet = time.perf_counter() - t
      t = time.perf_counter()
      own = classify.classify(args.encoder, paths, top=args.top, classes=classes)
      t_own = time.perf_counter() - t
    except (ValueError, OSError) as e:
      console.fail('classify_demo.py', e)
  rows = {}
  for name, a, b in zip(CLASSES, imagenet, own):
    rows[name] = {'imagenet': [(c['name'], round(c['probability'], 4)) for c in a['classes']],
                  'own_classes': [(c['name'], round(c['probability'], 4)) for c in b['classes']]}
  right = [n for n in named if rows[n]['own_classes'][0][0] == n]
  out = {'encoder': os.path.abspath(args.encoder), 'meshes': rows,
         'own_classes': {'named': len(named), 'right': len(right), 'which': right},
         'seconds': {'imagenet': round(t_imagenet, 2), 'own_classes': round(t_own, 2)},
         'protocol': 'synthetic.make_shape(class, default_rng(1234 + class)) as OBJ; '
                     'crossjepa.classify (seeded surface samples, unit sphere, the export\'s '
                     'readout and the teacher\'s ImageNet classifier)'}
  text = json.dumps(out, indent=2)
  print(text)
  if args.out:
    fileio.atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
  main()
