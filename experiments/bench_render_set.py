"""Prepare's per-object work with given renders (data.render_set) against rendering the views.

    .venv/bin/python experiments/bench_render_set.py [--objects 16] [--repeats 3] [--out FILE]

One process, one core (process time). For each size, a set of objects is first rendered by our own
renderer and written as a transforms_json render set (render_set.write_transforms_json, poses in
each object's file frame); then `per_object.process_shape` (steps 1-4 of prepare: normalisation,
views, histograms, and with a render set the PNG reads, the silhouette check and the depth render)
runs over them with and without the render set, alternating, best of --repeats. The records must
come out the same (checked here: images, histograms, cameras). Sizes: the embedded default (4
views at 160 px, 512 points, synthetic meshes) and the paper's (12 views at 224 px, 1,024 points
from 8,192-point clouds, as ShapeNet-55). Prints one JSON object.
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from configs import default as default_config  # noqa: E402
from crossjepa.data import per_object  # noqa: E402
from crossjepa.data import render_set  # noqa: E402
from crossjepa.data import sources  # noqa: E402
from crossjepa.data.shape import point_shape  # noqa: E402


def _clouds(n, rng):
  """Bumpy anisotropic blobs of 8,192 surface-like points, off-centre (a file frame of their own)."""
  out = []
  for i in range(n):
    d = rng.normal(size=(8192, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = 1.0 + 0.2 * np.sin(3 * d @ rng.normal(size=3))
    pts = d * r[:, None] * rng.uniform(0.3, 1.0, size=3) * 40.0 + rng.normal(size=3) * 10.0
    out.append(point_shape('bench', f'bench/cloud_{i:03d}', 0, 'train', pts.astype(np.float32)))
  return out


def _write_set(shapes, data_config, root):
  size, views = int(data_config.image_size), int(data_config.num_views)
  for shape in shapes:
    seed = per_object.object_seed(0, shape.id)
    _, mesh, cloud, frame = per_object.normalize(shape, data_config, np.random.default_rng([seed, 0]))
    rendered = per_object.render_views(shape, data_config, seed)
    w2c = render_set.from_normalized_frame(rendered['world_to_cam'], render_set.world_similarity(
        data_config.render_set, frame, mesh.vertices if mesh is not None else cloud))
    assert rendered['image'].shape == (views, size, size, 3)
    render_set.write_transforms_json(os.path.join(root, *shape.id.split('/')), rendered['image'],
                                     np.isfinite(rendered['depth']), w2c, rendered['intrinsics'])


def _time(shapes, data_config, repeats):
  best, out = float('inf'), None
  for _ in range(repeats):
    start = time.process_time()
    out = [per_object.process_shape(s, data_config, per_object.object_seed(0, s.id)) for s in shapes]
    best = min(best, time.process_time() - start)
  return len(shapes) / best, out


def bench(name, shapes, data_config, repeats):
  with tempfile.TemporaryDirectory() as root:
    _write_set(shapes, data_config, root)
    given = data_config.copy_and_resolve_references()
    given.render_set.root = root
    per_object.process_shape(shapes[0], data_config, 0)     # warm-up: imports
    per_object.process_shape(shapes[0], given, 0)
    rendered_rate, a = _time(shapes, data_config, repeats)
    given_rate, b = _time(shapes, given, repeats)
    png_bytes = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root)
                    for f in fs if f.endswith('.png'))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['views']['image'], y['views']['image'])
    np.testing.assert_array_equal(x['views']['hist'], y['views']['hist'])
    np.testing.assert_allclose(x['views']['world_to_cam'], y['views']['world_to_cam'], atol=1e-4)
  return {'size': name, 'objects': len(shapes), 'views': int(data_config.num_views),
          'image_size': int(data_config.image_size),
          'rendered_objects_per_s': round(rendered_rate, 2),
          'given_objects_per_s': round(given_rate, 2),
          'ratio_given_over_rendered': round(given_rate / rendered_rate, 3),
          'png_kb_per_object': round(png_bytes / len(shapes) / 1024, 1),
          'records_equal': True}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--objects', type=int, default=16)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  c = default_config.get_config()
  meshes = list(sources.iter_shapes(c.data, 'train'))[:args.objects]
  rows = [bench('default (4 x 160 px, meshes)', meshes, c.data, args.repeats)]
  paper = default_config.get_config()
  paper.data.num_views, paper.data.image_size, paper.data.num_points = 12, 224, 1024
  rows.append(bench('paper (12 x 224 px, 8,192-point clouds)', _clouds(args.objects, rng),
                    paper.data, args.repeats))
  result = {'benchmark': 'bench_render_set', 'machine': platform.processor() or platform.machine(),
            'timing': 'process time, one core, best of repeats', 'rows': rows}
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    with open(args.out + '.tmp', 'w') as f:
      f.write(text + '\n')
    os.replace(args.out + '.tmp', args.out)


if __name__ == '__main__':
  main()
