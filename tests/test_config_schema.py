"""The declared config schema: every shipped config passes, every bad value is named."""
import os
import subprocess
import sys

import pytest

from crossjepa import config_schema
from crossjepa import config_util

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = [('default', None), ('default', 'point_jepa'), ('default', 'long'),
           ('default', 'long,point_jepa'), ('paper', None), ('point_jepa', None),
           ('seed', None), ('smoke', None), ('modelnet40', None), ('modelnet40', 'normal_resampled'),
           ('modelnet40', 'modelnet10_normal_resampled'), ('modelnet10', None),
           ('scanobjectnn', None), ('scanobjectnn', 'OBJ_BG')]


def _config(name='default', arg=None):
  module = config_util.load_config_module(os.path.join(REPO, 'configs', f'{name}.py'))
  c = module.get_config() if arg is None else module.get_config(arg)
  if c.data.source != 'synthetic' and not c.data.root:
    c.data.root = '/data/somewhere'
  return c


@pytest.mark.parametrize('name,arg', CONFIGS)
def test_shipped_configs_pass(name, arg):
  c = _config(name, arg)
  config_util.check_config(c)
  flat = config_schema.flatten(c)
  assert set(flat) == set(config_schema.SCHEMA)   # every key declared, every declared key set


def test_default_arguments_combine_and_refuse_unknown_ones():
  plain, long = _config('default'), _config('default', 'long')
  both = _config('default', 'point_jepa,long')
  assert long.train.steps == 10 * plain.train.steps == both.train.steps
  assert [n for n, _ in plain.benchmark.variants] == [n for n, _ in long.benchmark.variants] == [
      'crossjepa']
  assert [n for n, _ in both.benchmark.variants] == ['crossjepa', 'point_jepa']
  pj = dict(both.benchmark.variants)['point_jepa']
  assert pj['train.lr'] == 4e-3 != dict(_config('default', 'point_jepa').benchmark.variants)[
      'point_jepa']['train.lr']
  # :long changes the pretraining length and what goes with it, nothing else
  flat_plain = config_schema.flatten(plain)
  diff = {k for k, v in config_schema.flatten(long).items() if flat_plain[k] != v}
  assert diff == {'train.steps', 'train.checkpoint_every', 'train.probe_every'}
  for arg, word in (('lng', 'unknown'), ('long,long', 'repeated'), ('long,', 'unknown')):
    with pytest.raises(ValueError, match=f"configs/default.py:{arg}: {word} argument"):
      _config('default', arg)


def test_schema_choices_follow_the_code():
  from crossjepa.evaluation import features
  from crossjepa.models import efficientnet_lite
  from crossjepa.models import layers
  from crossjepa.models import point
  from crossjepa.models import predictor
  from crossjepa.models import vit
  from crossjepa.data import sources
  assert config_schema.POINT_VARIANTS == tuple(point.VARIANTS)
  assert config_schema.PREDICTOR_VARIANTS == tuple(predictor.VARIANTS)
  assert config_schema.VIT_VARIANTS == tuple(vit.VARIANTS)
  assert config_schema.EFFICIENTNET_VARIANTS == tuple(efficientnet_lite.VARIANTS)
  assert config_schema.EFFICIENTNET_STAGES == tuple(efficientnet_lite.STAGES)
  assert config_schema.POOLINGS == tuple(features.POOLINGS)
  assert config_schema.ATTENTIONS == tuple(layers.ATTENTIONS)
  assert config_schema.REMATS == tuple(layers.REMATS)
  assert config_schema.SOURCES == tuple(sources.SOURCES)


BAD = [
    ('train.lr', -1.0, r'config.train.lr = -1.0: expected a number in \(0, inf\)'),
    ('train.lr', float('nan'), r'config.train.lr = nan: expected a finite number'),
    ('train.keep_checkpoints', 0, r'config.train.keep_checkpoints = 0: expected an integer >= 1'),
    ('train.steps', 2.5, r'config.train.steps = 2.5: expected an integer >= 1'),
    ('train.batch_size', True, r'config.train.batch_size = True: expected an integer'),
    ('train.b2', 1.0, r'config.train.b2 = 1.0: expected a number in \[0, 1\)'),
    ('train.ema_momentum', (1.0, 0.9), r'low <= high'),
    ('train.augment.scale', (0.8,), r'expected a tuple of 2 values, got 1'),
    ('train.target', 'pixels', r"config.train.target = 'pixels': expected one of \['cls'"),
    ('eval.svm_standardize', 'yes', r'config.eval.svm_standardize = .yes.: expected True or False'),
    ('eval.svm_C', (), r'at least 1 value'),
    ('eval.cv_folds', 1, r'expected an integer >= 2'),
    ('eval.svm_workers', -1, r'expected an integer >= 0'),
    ('eval.zero_shot_templates', ('a {} of {}',), r"item 'a \{\} of \{\}': expected a string "
     r'matching .*\(a prompt with one \{\} for the class words\)'),
    ('eval.zero_shot_templates', ('a photo.',), r"item 'a photo.': expected a string matching"),
    ('eval.zero_shot_templates', ('a {0}.',), r"item 'a \{0\}.': expected a string matching"),
    ('data.image_size', 0, r'config.data.image_size = 0: expected an integer in \[8, 4096\]'),
    ('data.name', 'My Data', r'a TFDS dataset name'),
    ('data.camera.fov', 180.0, r'config.data.camera.fov'),
    ('mesh.data', 0, r'expected an integer >= 1 or -1'),
    ('model.point', 'huge', r"config.model.point = 'huge': expected one of"),
    ('train.param_rules', (('(', {}),), r'not a regular expression'),
    ('train.param_rules', (('.*', {'lr': 2.0}),), r"unknown field 'lr'"),
    ('benchmark.variants', (('x', {'train.nope': 1}),), r"'train.nope' is not a config key"),
    ('benchmark.variants', (('x', {'train.lr': 0.0}),), r'variant .x., train.lr = 0.0'),
]


@pytest.mark.parametrize('key,value,message', BAD)
def test_bad_values_are_named(key, value, message):
  c = _config()
  node = c
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  del node[leaf]   # a config file may hold any type: ConfigDict type-checks only overrides
  node[leaf] = value
  with pytest.raises(config_util.ConfigError, match=message):
    config_util.check_config(c)


def test_unknown_and_missing_keys():
  c = _config()
  c.train.lr_typo = 0.1
  with pytest.raises(config_util.ConfigError, match=r'config.train.lr_typo is not a known key'):
    config_util.check_config(c)
  c = _config()
  del c.eval['svm_standardize']
  with pytest.raises(config_util.ConfigError, match=r'config.eval.svm_standardize is missing'):
    config_util.check_config(c)


def test_cross_field_rules():
  c = _config()
  c.train.min_lr = 1.0
  with pytest.raises(config_util.ConfigError, match='min_lr = 1.0 exceeds config.train.lr'):
    config_util.check_config(c)
  c = _config()
  c.data.root = '/tmp/meshes'
  with pytest.raises(config_util.ConfigError, match='synthetic source reads no files'):
    config_util.check_config(c)


def test_main_exits_2_on_a_bad_value_before_touching_the_workdir(tmp_path):
  """`--config.train.lr=-1.0` and `keep_checkpoints=0` stop at start-up: exit 2, one line, the
  workdir untouched (no config.json written for a rejected config)."""
  workdir = tmp_path / 'w'
  for override in ('--config.train.lr=-1.0', '--config.train.keep_checkpoints=0'):
    proc = subprocess.run(
        [sys.executable, '-m', 'crossjepa.main', f'--config={REPO}/configs/smoke.py',
         f'--workdir={workdir}', override], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    key = override.split('=')[0][len('--config.'):]
    assert f'config.{key} = ' in proc.stderr
    assert not workdir.exists()


def test_main_flag_and_config_file_errors_exit_2(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config():\n  raise RuntimeError("no such dataset")\n')
  cases = [
      ([f'--config={REPO}/configs/smoke.py'], 'flag --workdir=None'),
      ([f'--config={tmp_path}/nope.py', f'--workdir={tmp_path}/w'], 'nope.py: no such config file'),
      ([f'--config={bad}', f'--workdir={tmp_path}/w'],
       'bad.py:2: loading the config (get_config()) raised RuntimeError: no such dataset'),
      ([f'--config={REPO}/configs/smoke.py', f'--workdir={tmp_path}/w', '--mode=bogus'],
       'flag --mode=bogus: value should be one of'),
      ([f'--config={REPO}/configs/smoke.py', f'--workdir={bad}', '--mode=prepare'],
       f'--workdir={bad}: exists and is not a folder'),
      ([f'--config={REPO}/configs/smoke.py', f'--workdir={bad}/w', '--mode=prepare'],
       f'--workdir={bad}/w: cannot make the folder (Not a directory)'),
  ]
  for args, message in cases:
    proc = subprocess.run([sys.executable, '-m', 'crossjepa.main', *args], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
                          timeout=300)
    errors = [l for l in proc.stderr.splitlines() if l.startswith('crossjepa: error: ')]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('source,message', [
    (None, 'cfg.py: no such config file'),
    ('def get_config(:\n', 'cfg.py:1: '),
    ('import no_such_module_here\n', "cfg.py:1: importing it raised ModuleNotFoundError: No module"),
    ('def get_config():\n  return {}["data"]\n',
     "cfg.py:2: loading the config (get_config()) raised KeyError: 'data'"),
    ('x = 1\n', 'cfg.py defines no get_config() function'),
])
def test_get_config_file_names_the_mistake(tmp_path, source, message):
  """config_util.get_config_file (what experiments/ scripts and compare_recipes load --config
  with): every mistake of the file's own is a ConfigError naming the file and its line."""
  path = tmp_path / 'cfg.py'
  if source is not None:
    path.write_text(source)
  with pytest.raises(config_util.ConfigError) as e:
    config_util.get_config_file(str(path))
  assert str(e.value).startswith(str(tmp_path)) and message in str(e.value), str(e.value)


def test_get_config_file_loads_and_lets_bugs_through(tmp_path, monkeypatch):
  c = config_util.get_config_file(os.path.join(REPO, 'configs', 'smoke.py'))
  config_util.check_config(c)
  # An error raised outside the user's file is a bug of ours: it keeps its type and traceback.
  monkeypatch.setattr(config_util, 'load_config_module', lambda p: 1 / 0)
  (tmp_path / 'cfg.py').write_text('def get_config():\n  return None\n')
  with pytest.raises(ZeroDivisionError):
    config_util.get_config_file(str(tmp_path / 'cfg.py'))


def test_experiment_scripts_exit_2_on_a_config_mistake(tmp_path):
  """experiments/bench_step.py (and the scripts built on its load_config) and compare_recipes.py:
  one line naming the file, exit 2, no workdir made."""
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config():\n  raise RuntimeError("no such dataset")\n')
  cases = [
      (['experiments/bench_step.py', f'--config={tmp_path}/nope.py'],
       'bench_step.py: error: ', 'nope.py: no such config file'),
      (['experiments/compare_recipes.py', f'--config={bad}', f'--workdir={tmp_path}/w'],
       'compare_recipes: error: ', 'bad.py:2: loading the config (get_config()) raised RuntimeError'),
  ]
  for args, prefix, message in cases:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=300)
    errors = [l for l in proc.stderr.splitlines() if l.startswith(prefix)]
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'w').exists()


def test_bench_load_config_applies_and_checks_overrides(capsys):
  """bench_step.load_config (every experiments/ step script's): the paper config loads without a
  data.root (its batches are made up), set overrides apply, unset ones (0, '', None) do not, and
  a value out of range exits 2 naming the file and key."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      '_bench_step_under_test', os.path.join(REPO, 'experiments', 'bench_step.py'))
  bench_step = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench_step)
  paper = os.path.join(REPO, 'configs', 'paper.py')
  c = bench_step.load_config(paper, {'train.views_per_step': 1, 'train.batch_size': 2048,
                                     'model.remat': 'dots', 'train.dtype': '', 'recipe': None})
  base = config_util.get_config_file(paper)
  assert (c.train.views_per_step, c.train.batch_size, c.model.remat) == (1, 2048, 'dots')
  assert (c.train.dtype, c.recipe) == (base.train.dtype, base.recipe)
  with pytest.raises(SystemExit) as e:
    bench_step.load_config(paper, {'train.views_per_step': 99}, prog='bench')
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f'bench: error: {paper}: config.train.views_per_step = 99 exceeds'), err
  # A value of the wrong type is refused by ml_collections (through crossjepa.sweep.apply_overrides):
  # one line naming the file, the key and the value.
  with pytest.raises(SystemExit) as e:
    bench_step.load_config(paper, {'train.batch_size': 'many'}, prog='bench')
  assert e.value.code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f'bench: error: {paper}: ') and "'train.batch_size' = 'many'" in err, err
