"""Throughput of the training input at the paper's record geometry (host side, per process).

    .venv/bin/python experiments/bench_input.py [--objects=512] [--workers=0,2] [--out=F]

Writes --objects records with the project's writer (records.make_builder + records.write) at
configs/paper.py's geometry: 1,024 points, 64 x 32 groups, 12 views, a ViT-B/14 teacher's 768-d
CLS and per-group features (random values of the schema's dtypes; the data's content does not
change what reading costs), with and without the per-group features
(`data.cache_group_features`; the paper config's CLS target does not read them). Then, for each,
in this process after one warm-up pass:

  record_bytes     the serialized record (what ArrayRecord stores and reads per object)
  disk_bytes       the split's shards on disk per object (ArrayRecord compresses its chunks)
  read             ArrayRecord random-access reads of the raw records, objects/s
  decode           records.RecordSource: read + TFDS decode of the keys training reads, objects/s
  transform        pipeline.TrainTransform (view sampling, augmentation, dtypes), objects/s
  iterator         pipeline.train_iterator batches (train.batch_size 128) for each --workers
                   (0: two read threads of this process; N: N grain worker processes), objects/s

Each rate is the median of --repeats timed passes over the objects, the three stages timed in
turn (ab.interleaved; wall time: the decode and the transform run on one thread). The GPU step it feeds runs 13.4k objects/s for the plain-JAX
yardstick on an H100 (../shared/anchors/RESULTS.md); the device-resident path
(train.device_resident) samples inside the step instead and needs none of this per step.
"""
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from crossjepa import console  # noqa: E402

flags.DEFINE_integer('objects', 512, 'records written and read (at least two batches)',
                     lower_bound=2)
flags.DEFINE_integer('batch_size', 128, 'train.batch_size of the iterator (configs/paper.py: 128)',
                     lower_bound=1)
flags.DEFINE_list('workers', ['0', '2'], 'train.num_workers values for the iterator (0 = two '
                  'read threads of this process)')
flags.DEFINE_integer('repeats', 3, 'timed passes per rate', lower_bound=1)
flags.DEFINE_float('seconds', 10.0, 'seconds each iterator is timed', lower_bound=0.1)
flags.DEFINE_list('cache_group_features', ['true', 'false'], 'record layouts to time')
flags.DEFINE_string('out', '', 'also write the JSON to this file')
FLAGS = flags.FLAGS
flags.register_validator('workers', console.each_parses(console.int_arg(0)),
                         'expected integers >= 0')
flags.register_validator('cache_group_features',
                         lambda v: bool(v) and set(v) <= {'true', 'false'},
                         'expected a list of true / false')
flags.register_validator('out', lambda v: not console.names_a_folder(v),
                         'is a folder; expected the path of the JSON file')
flags.register_multi_flags_validator(
    ['objects', 'batch_size'], lambda f: f['objects'] >= 2 * f['batch_size'],
    '--objects must be at least two batches of --batch_size')

TEACHER_WIDTH = 768   # DINOv2 ViT-B/14: CLS and patch features
YARDSTICK_OBJECTS_PER_S = 13_417   # step_jax.py, batch 512, H100 (../shared/anchors/RESULTS.md)


def paper_config(cache_group_features: bool, batch_size: int, workers: int):
  from configs import paper  # pylint: disable=g-import-not-at-top
  c = paper.get_config()
  c.data.name = 'bench_input'
  c.data.root = '/not/read'
  c.data.cache_group_features = cache_group_features
  c.train.batch_size = batch_size
  c.train.num_workers = workers
  return c


def fake_example(config, index: int, rng: np.random.Generator) -> dict:
  d = config.data
  n, g, k, v = d.num_points, d.num_groups, d.group_size, d.num_views
  cells = (d.image_size // d.patch_size) ** 2
  w2c = np.tile(np.eye(4, dtype=np.float32), (v, 1, 1))
  w2c[:, 2, 3] = 2.6
  teacher = {'cls': rng.standard_normal((v, TEACHER_WIDTH)).astype(np.float16)}
  if d.cache_group_features:
    teacher['groups'] = rng.standard_normal((v, g, TEACHER_WIDTH)).astype(np.float16)
  return {
      'id': f'object_{index:06d}', 'label': np.int64(index % 55),
      'points': rng.uniform(-0.6, 0.6, (n, 3)).astype(np.float32),
      'centers': rng.uniform(-0.6, 0.6, (g, 3)).astype(np.float32),
      'groups': rng.integers(0, n, (g, k)).astype(np.int32),
      'views': {'world_to_cam': w2c,
                'intrinsics': np.tile(np.eye(3, dtype=np.float32), (v, 1, 1)),
                'hist': rng.dirichlet(np.ones(3 * d.hist_bins), v).astype(np.float32),
                'corr': rng.integers(-1, cells, (v, g)).astype(np.int32)},
      'teacher': teacher,
  }


def write_records(config, workdir: str, num_objects: int) -> float:
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)

  def example_fn(split):
    del split
    for i in range(num_objects):
      yield f'{i:06d}', fake_example(config, i, rng)

  builder = records.make_builder(
      config, workdir, teacher_info={'name': 'bench', 'width': TEACHER_WIDTH,
                                     'feature_width': TEACHER_WIDTH},
      class_names=[f'c{i}' for i in range(55)], splits=['train'], example_fn=example_fn)
  start = time.perf_counter()
  with console.tfds_quiet():
    records.write(builder, 4)
  return time.perf_counter() - start


def _iterator_rate(config, workdir: str, seconds: float) -> float:
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.train_iterator(config, workdir)
  try:
    next(it)   # workers started, first batch through
    batch = int(config.train.batch_size)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      next(it)
      count += batch
    return count / (time.perf_counter() - start)
  finally:
    it.close()   # grain's worker processes and read threads


def bench(cache_group_features: bool, args) -> dict:
  # Here, not at the top: grain's spawned workers import this module, and ab brings the step's.
  import ab  # pylint: disable=g-import-not-at-top
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  workdir = tempfile.mkdtemp(prefix='bench_input_')
  try:
    config = paper_config(cache_group_features, args.batch_size, 0)
    write_s = write_records(config, workdir, args.objects)
    builder = records.open_dataset(config, workdir)
    raw = builder.as_data_source('train',
                                 deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    source = records.RecordSource(builder, 'train', pipeline.train_keys(config))
    n = len(source)
    shards = records.dataset_dir(config, workdir)
    disk = sum(os.path.getsize(os.path.join(shards, f)) for f in os.listdir(shards)
               if '.array_record-' in f)
    order = np.random.default_rng(1).permutation(n)    # training reads in shuffled order
    examples = [source[int(i)] for i in order]
    transform = pipeline.TrainTransform(config, need_images=False)
    rng = np.random.default_rng(2)
    seconds = ab.interleaved({   # median of --repeats passes in turn, after one warm-up each
        'read': lambda: [raw[int(i)] for i in order],
        'decode': lambda: [source[int(i)] for i in order],
        'transform': lambda: [transform(e, rng) for e in examples]}, args.repeats)
    row = {
        'cache_group_features': cache_group_features,
        'objects': n,
        'record_bytes': len(raw[0]),
        'disk_bytes_per_object': round(disk / n),
        'write_objects_per_s': round(n / write_s, 1),
        **{f'{k}_objects_per_s': round(n / v, 1) for k, v in seconds.items()},
    }
    for workers in map(int, args.workers):
      config = paper_config(cache_group_features, args.batch_size, workers)
      row[f'iterator_objects_per_s_workers{workers}'] = round(
          _iterator_rate(config, workdir, args.seconds), 1)
    return row
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv):
  del argv
  rows = [bench(v == 'true', FLAGS) for v in FLAGS.cache_group_features]
  result = {'benchmark': 'training input at the paper geometry (N 1024, G 64 x K 32, V 12, '
                         f'teacher width {TEACHER_WIDTH}, views_per_step 4), one process',
            'host': f'{platform.machine()}, {os.cpu_count()} cores',
            'yardstick_step_objects_per_s': YARDSTICK_OBJECTS_PER_S, 'rows': rows}
  from crossjepa import fileio  # pylint: disable=g-import-not-at-top
  fileio.print_json(result, FLAGS.out, indent=1)


if __name__ == '__main__':
  console.run_app(main, 'bench_input.py')
