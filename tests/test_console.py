"""The terminal / log.txt split (crossjepa/console.py), config.json only after a run that succeeded,
and the curves plot keeping probe/best_C off the accuracy axis.

One subprocess case runs the smoke main job as a user would (`python -m crossjepa.main`, stderr a
pipe, not a TTY) and then a failing second run on the same workdir; everything else is in-process.
"""
import io
import json
import logging as py_logging
import os
import re
import subprocess
import sys

from absl import flags
from absl import logging
import pytest

from crossjepa import console
from crossjepa import run as run_lib
from crossjepa.evaluation import plots
from tests.test_step import smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_TERMINAL_LINES = 40     # the smoke job prints ~22: headers, 2 bars, the results table
ABSL_RECORD = re.compile(r'^[IDWEF]\d{4} \d\d:\d\d:\d\d')   # absl's prefix, e.g. "I1201 13:32:36"


# ------------------------------------------------------------------ progress bars
def test_bar_off_a_tty_is_one_final_line(monkeypatch):
  err = io.StringIO()   # not a TTY, like CI or `| tee`
  monkeypatch.setattr(sys, 'stderr', err)
  assert not console.interactive()
  with console.progress(total=300, desc='stage', unit='obj') as bar:
    for _ in range(300):
      bar.update(1)
  with console.progress(total=3, desc='transient', leave=False) as bar:
    bar.update(3)
  with console.progress(total=3, desc='other process', disable=True) as bar:
    bar.update(3)
  text = err.getvalue()
  assert '\r' not in text
  assert text.count('\n') == 1 and text.startswith('stage: 100%')
  assert '300/300' in text and 'obj/s' in text


# ------------------------------------------------------------------ log.txt
def test_log_to_file_keeps_info_of_every_logger(tmp_path):
  absl_logger = logging.get_absl_logger()
  before = py_logging.root.level, absl_logger.level
  with console.log_to_file(str(tmp_path)) as path:
    logging.info('ours %d', 1)
    py_logging.getLogger('orbax.fake_module').info('a third-party python logger')
    logging.debug('not at INFO')
  with pytest.raises(RuntimeError):
    with console.log_to_file(str(tmp_path)):
      raise RuntimeError('boom')
  logging.info('after the run: not in the file')
  text = open(path).read()
  assert path == str(tmp_path / 'log.txt')
  assert text.count('===== crossjepa run ') == 2 and 'command: ' in text
  assert re.search(r'^I\d{4} .*\] ours 1$', text, re.M)
  assert 'a third-party python logger' in text
  assert 'not at INFO' not in text and 'after the run' not in text
  assert 'run failed: RuntimeError: boom' in text and 'Traceback' in text
  assert (py_logging.root.level, absl_logger.level) == before


def test_terminal_level_follows_an_explicit_verbosity():
  flag = flags.FLAGS['verbosity']
  assert not flag.present and console.terminal_level() == py_logging.WARNING
  saved = flag.value, logging.get_absl_logger().level
  try:
    for value, level in ((0, py_logging.INFO), (1, py_logging.DEBUG)):
      flag.present, flag.value = 1, value    # as `--verbosity=N` on the command line
      assert console.terminal_level() == level
  finally:
    flag.present, flag.value = 0, saved[0]
    logging.get_absl_logger().setLevel(saved[1])


def test_tfds_prints_go_to_the_log(tmp_path, capsys):
  with console.log_to_file(str(tmp_path)) as path:
    with console.tfds_quiet():
      print('Downloading and preparing dataset Unknown size ...')
  assert 'Downloading' not in capsys.readouterr().out
  assert 'tfds: Downloading and preparing dataset Unknown size' in open(path).read()


# ------------------------------------------------------------------ config.json
def test_failed_run_leaves_config_json_untouched(tmp_path):
  workdir = str(tmp_path)
  config = smoke_config()
  run_lib.run(config, workdir, 'prepare')
  config_json = tmp_path / 'config.json'
  before = config_json.read_bytes()
  assert json.loads(before)['data']['num_points'] == 128
  log = (tmp_path / 'log.txt').read_text()
  assert 'prepare: 24 objects in' in log                  # our INFO records
  assert 'tfds: Downloading and preparing dataset' in log  # TFDS's print, as a record
  other = smoke_config()
  other.data.num_points = 256
  with pytest.raises(run_lib.UserError, match='num_points: dataset has 128, config has 256'):
    run_lib.run(other, workdir, 'prepare')
  assert config_json.read_bytes() == before
  log = (tmp_path / 'log.txt').read_text()
  assert log.count('===== crossjepa run ') == 2
  assert '"num_points": 256' in log and 'run failed: UserError' in log   # the attempt is logged


def test_a_stopped_pretrain_ends_the_run(tmp_path, monkeypatch):
  """Pretraining that a signal stopped (checkpoint saved) ends the run: run.Stopped with exit
  status 128 + the signal, no evaluation of the unfinished encoder, no config.json."""
  done = []
  for stage in ('teacher', 'prepare', 'evaluate', 'export'):
    monkeypatch.setitem(run_lib.STAGES, stage, lambda c, w, s=stage: done.append(s) or {})
  monkeypatch.setitem(run_lib.STAGES, 'pretrain', lambda c, w: done.append('pretrain') or {
      'preempted': True, 'signal': 'SIGTERM', 'step': 3, 'total_steps': 6})
  with pytest.raises(run_lib.Stopped, match=r'^stopped by SIGTERM: pretrain saved its checkpoint '
                                            r'at step 3 of 6; run the same command again') as e:
    run_lib.run(smoke_config(), str(tmp_path), 'all')
  assert e.value.exit_status == 128 + 15
  assert done == ['teacher', 'prepare', 'pretrain'] and not (tmp_path / 'config.json').exists()


# ------------------------------------------------------------------ the main job as a user runs it
def test_smoke_main_job_terminal_and_failed_rerun(tmp_path):
  workdir = str(tmp_path / 'w')
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'

  def main(*extra):
    return subprocess.run(
        [sys.executable, '-m', 'crossjepa.main', '--config=configs/smoke.py', f'--workdir={workdir}',
         *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        timeout=600, env=env)

  done = main()
  out = done.stdout
  assert done.returncode == 0, out[-3000:]
  lines = out.splitlines()
  assert len(lines) <= MAX_TERMINAL_LINES, out
  assert '\r' not in out                                   # no bar redraws off a TTY
  assert not [l for l in lines if ABSL_RECORD.match(l)], out
  assert 'Downloading and preparing' not in out and 'Shuffling' not in out, out
  for stage in ('teacher', 'prepare', 'pretrain', 'evaluate', 'export'):
    assert any(l.startswith(f'== {stage} ') for l in lines), (stage, out)
  assert any(l.startswith('prepare[') and '24/24' in l for l in lines), out
  assert any(l.startswith('pretrain[crossjepa]: 100%') and '6/6' in l for l in lines), out
  assert '| pretrained (crossjepa, step 6) |' in out       # the results table
  log = open(os.path.join(workdir, 'log.txt')).read()
  assert 'command: ' in log and '--config=configs/smoke.py' in log
  assert 'checkpoint_manager.py' in log                    # orbax's INFO records
  assert 'tfds: Downloading and preparing dataset' in log  # TFDS's print
  assert '=== stage export ===' in log

  config_json = os.path.join(workdir, 'config.json')
  with open(config_json, 'rb') as f:
    before = f.read()
  failed = main('--config.data.num_points=256')
  assert failed.returncode == 2, failed.stdout[-3000:]
  assert 'crossjepa: error: stage prepare' in failed.stdout
  assert 'num_points: dataset has 128, config has 256' in failed.stdout
  with open(config_json, 'rb') as f:
    assert f.read() == before


# ------------------------------------------------------------------ curves plot
def test_curves_keep_best_c_off_the_accuracy_axis(tmp_path):
  rows = [{'step': 2, 'loss': 2.0}, {'step': 4, 'loss': 1.5},
          {'step': 4, 'probe/accuracy': 0.5, 'probe/best_C': 10.0},
          {'step': 8, 'loss': 1.0}, {'step': 8, 'probe/accuracy': 0.7, 'probe/best_C': 0.1}]
  series = plots.curve_series(rows)
  assert list(series) == ['loss', 'probe accuracy', 'probe hyperparameters']
  assert series['loss'] == {'loss': [(2, 2.0), (4, 1.5), (8, 1.0)]}
  assert series['probe accuracy'] == {'probe/accuracy': [(4, 0.5), (8, 0.7)]}
  assert series['probe hyperparameters'] == {'probe/best_C': [(4, 10.0), (8, 0.1)]}
  fig = plots.curves_figure(rows)
  labels = {ax.get_ylabel(): [l.get_label() for l in ax.get_lines()] for ax in fig.axes}
  assert labels == {'training loss': ['loss'], 'accuracy': ['probe/accuracy'],
                    'value (log scale)': ['probe/best_C']}
  assert [ax.get_yscale() for ax in fig.axes] == ['linear', 'linear', 'log']
  plots.plt.close(fig)
  # Without a probe: the loss panel only.
  assert list(plots.curve_series([{'step': 1, 'loss': 1.0}])) == ['loss']
  metrics = tmp_path / 'metrics.jsonl'
  metrics.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert os.path.getsize(plots.plot_curves(str(metrics), str(tmp_path / 'curves.png'))) > 1000
