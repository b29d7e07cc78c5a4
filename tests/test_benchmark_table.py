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


def test_format_table_zero_shot_column():
  """A set's zero-shot column appears when one of its rows has one; the rows without show '-'."""
  out = {'fewshot_setting': '2way_1shot', 'eval_sets': ['clean', 'scan'], 'protocol': {'probe': 'p'},
         'table': {
             'clean': {'random_init': {'linear_probe': {'mean': 0.5, 'std': 0.1},
                                       'zero_shot': {'mean': 0.375, 'std': 0.0125}},
                       'x': {'linear_probe': {'mean': 0.75, 'std': 0.05}},
                       'teacher_2d': {'linear_probe': {'mean': 0.9}, 'zero_shot': {'mean': 0.5}}},
             'scan': {'random_init': {'linear_probe': {'mean': 0.25, 'std': 0.0}},
                      'x': {'linear_probe': {'mean': 0.375, 'std': 0.0}}}}}
  lines = benchmark.format_table(out).splitlines()
  assert lines[0] == ('| features | clean: linear probe | clean: 2way_1shot | clean: zero-shot | '
                      'scan: linear probe | scan: 2way_1shot |')
  assert lines[1] == '|---|---|---|---|---|---|'
  assert lines[2] == '| random_init | 50.0 ± 10.0 | - | 37.5 ± 1.2 | 25.0 ± 0.0 | - |'
  assert lines[3] == '| x | 75.0 ± 5.0 | - | - | 37.5 ± 0.0 | - |'
  assert lines[4] == '| teacher_2d | 90.0 | - | 50.0 | - | - |'


@pytest.mark.usefixtures('persistent_compile_cache')   # every run compiles the same programs
def test_benchmark_stage_end_to_end(tmp_path):
  c = _smoke()
  c.benchmark.enabled = True
  # A variant that changes the host-side augmentation only: its own runs, the main run's programs.
  c.benchmark.variants = (('no_translate', {'train.augment.translate': 0.0}),)
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
  v = 'no_translate'
  assert set(clean) == {'random_init', v, 'teacher_2d'} and set(scan) == {'random_init', v}
  for rows in (clean, scan):
    per_seed = rows[v]['linear_probe']['per_seed']
    assert len(per_seed) == 2 and all(0.0 <= a <= 1.0 for a in per_seed)
    assert np.isclose(rows[v]['linear_probe']['mean'], np.mean(per_seed))
  assert clean[v]['overrides'] == {'train.augment.translate': 0.0}
  # seed 1 ran in its own folder sharing the records; seed 0 differs from the main run
  # (augmentation), so it has one too.
  assert os.path.islink(os.path.join(workdir, 'runs', f'{v}_s1', 'data'))
  assert os.path.isdir(os.path.join(workdir, 'runs', f'{v}_s0', 'checkpoints'))
  assert os.path.exists(os.path.join(workdir, 'benchmark.md'))
  # A rerun trains nothing new: every run is finished and resumes at its last step.
  before = sorted(os.listdir(os.path.join(workdir, 'runs', f'{v}_s1', 'checkpoints')))
  run_lib.run(c, workdir, 'benchmark')
  assert sorted(os.listdir(os.path.join(workdir, 'runs', f'{v}_s1', 'checkpoints'))) == before
