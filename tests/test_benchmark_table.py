"""The embedded benchmark stage: extra pretraining runs evaluated on clean and scan sets."""
import importlib.util
import json
import os

import numpy as np
import pytest

from crossjepa import benchmark
from crossjepa import run as run_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke():
  spec = importlib.util.spec_from_file_location('_smoke', os.path.join(_ROOT, 'configs', 'smoke.py'))
  smoke = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(smoke)
  return smoke.get_config()


def test_format_table_numbers():
  out = {'fewshot_setting': '2way_1shot', 'eval_sets': ['clean'], 'protocol': {'probe': 'p'},
         'table': {'clean': {
             'random_init': {'linear_probe': {'mean': 0.5, 'std': 0.125}, '2way_1shot': {'mean': 0.25, 'std': 0.0}},
             'x': {'linear_probe': {'mean': 0.75, 'std': 0.05}, '2way_1shot': {}},
             'teacher_2d': {'linear_probe': {'mean': 0.9}}}}}
  lines = benchmark.format_table(out).splitlines()
  assert lines[2] == '| random_init | 50.0 ± 12.5 | 25.0 ± 0.0 |'
  assert lines[3] == '| x | 75.0 ± 5.0 | - |'
  assert lines[4] == '| teacher_2d | 90.0 | - |'     # the teacher row comes last


@pytest.mark.usefixtures('persistent_compile_cache')   # the seeds' runs compile the same programs
def test_benchmark_stage_end_to_end(tmp_path):
  c = _smoke()
  c.benchmark.enabled = True
  c.benchmark.variants = (('cls', {'train.target': 'cls'}),)
  c.benchmark.seeds = (0, 1)
  c.benchmark.eval_sets = ('clean', 'scan')
  c.train.steps = 3
  c.lock()
  workdir = str(tmp_path / 'wd')
  report = run_lib.run(c, workdir, 'all')
  assert 'benchmark' in report
  with open(os.path.join(workdir, 'benchmark.json')) as f:
    out = json.load(f)
  clean, scan = out['table']['clean'], out['table']['scan']
  assert set(clean) == {'random_init', 'cls', 'teacher_2d'} and set(scan) == {'random_init', 'cls'}
  for rows in (clean, scan):
    per_seed = rows['cls']['linear_probe']['per_seed']
    assert len(per_seed) == 2 and all(0.0 <= a <= 1.0 for a in per_seed)
    assert np.isclose(rows['cls']['linear_probe']['mean'], np.mean(per_seed))
  # seed 1 ran in its own folder sharing the records; seed 0 differs from the main run (target).
  assert os.path.islink(os.path.join(workdir, 'runs', 'cls_s1', 'data'))
  assert os.path.isdir(os.path.join(workdir, 'runs', 'cls_s0', 'checkpoints'))
  assert os.path.exists(os.path.join(workdir, 'benchmark.md'))
  # A rerun trains nothing new: every run is finished and resumes at its last step.
  before = sorted(os.listdir(os.path.join(workdir, 'runs', 'cls_s1', 'checkpoints')))
  run_lib.run(c, workdir, 'benchmark')
  assert sorted(os.listdir(os.path.join(workdir, 'runs', 'cls_s1', 'checkpoints'))) == before
