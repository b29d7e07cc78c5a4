"""The seed and point_jepa recipes through the main entry (run.run 'all') on the smoke sizes, the
EMA invariants through the real loop (momentum 0: EMA == student; momentum 1: EMA == the initial
student), seed's ViT initialisation (model.vit_init) and its visibility-masked cross loss.

The records are prepared once (module fixture) and shared by symlinking WORKDIR/data, so each
recipe's run.run(..., 'all') reuses them (prepare reports skipped) and only pretrains/evaluates.
"""
import importlib.util
import json
import math
import os

import jax
import numpy as np
import pytest

from crossjepa import config_util
from crossjepa import run as run_lib
from crossjepa.models import vit as vit_lib
from crossjepa import testing
from crossjepa.training import recipes
from crossjepa.training.recipes import models as models_lib
from crossjepa.training.recipes import point_jepa as point_jepa_recipe
from crossjepa.training.recipes import seed as seed_recipe
from crossjepa.training import loop
from crossjepa.weights import vit_io
from tests.test_step import fake_batch, smoke_config

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_file(name):
  spec = importlib.util.spec_from_file_location(f'_cfg_{name}', os.path.join(_ROOT, 'configs', f'{name}.py'))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def recipe_config(recipe):
  # One checkpoint (at the end) and depth-1 models: compiles and Orbax saves dominate the time.
  c = smoke_config(steps=4, checkpoint_every=4, log_every=1, warmup_steps=1)
  c.recipe = recipe
  c.mesh.data = -1
  c.model.vit_overrides.depth = 1
  return c


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """One prepared records folder (smoke sizes, random-init teacher) shared by every run below."""
  shared = str(tmp_path_factory.mktemp('shared'))
  report = run_lib.run(recipe_config('point_jepa'), shared, 'prepare')
  assert not report['prepare']['skipped']
  return os.path.join(shared, 'data')


@pytest.mark.parametrize('name', ['seed', 'point_jepa'])
def test_config_files_select_their_recipe(name):
  c = _config_file(name)
  config_util.check_config(c)
  assert c.recipe == name
  # Both leave a static context of >= 40 % of the default G = 32 groups (Point-JEPA's range).
  target_max, _, context = point_jepa_recipe.block_sizes(c, int(c.data.num_groups))
  assert context / c.data.num_groups >= 0.4 and target_max == 6
  assert c.model.vit_init == ''


def _save_test_vit(config, directory):
  """A "teacher" ViT with known, non-default params (the config's model.vit + vit_overrides)."""
  module = vit_lib.vit(config.model.vit, **config.model.vit_overrides.to_dict())
  params = module.init(jax.random.PRNGKey(7), np.zeros((1, 28, 28, 3), np.float32))['params']
  params = jax.tree.map(lambda x: np.asarray(x) + 0.01, params)
  vit_io.save(directory, module, params, extra={'name': 'test-vit'})
  return params


def _max_change(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


@pytest.mark.parametrize('recipe', ['seed', 'point_jepa'])
def test_run_all(recipe, prepared, tmp_path):
  """run.run(config, workdir, 'all') per recipe, plus the EMA invariants through the real loop
  (the EMA update is recipe-independent, step.train_step): seed runs with train.ema_momentum =
  (0, 0), so after its 4 steps the EMA equals the student exactly, and starts its ViT from
  model.vit_init; point_jepa runs with (1, 1), so its EMA still equals the initial student."""
  workdir = str(tmp_path / recipe)
  os.makedirs(workdir)
  os.symlink(prepared, os.path.join(workdir, 'data'))
  c = recipe_config(recipe)
  if recipe == 'seed':
    c.train.ema_momentum = (0.0, 0.0)
    saved_vit = _save_test_vit(c, str(tmp_path / 'vit'))
    c.model.vit_init = str(tmp_path / 'vit')
  else:
    c.train.ema_momentum = (1.0, 1.0)
  report = run_lib.run(c, workdir, 'all')
  assert report['prepare']['skipped']
  pre = report['pretrain']
  assert pre['recipe'] == recipe and pre['step'] == 4 and pre['finished']
  assert math.isfinite(pre['final_loss']) and pre['final_loss'] > 0
  m = pre['final_metrics']
  if recipe == 'seed':
    # the total is the cross-modal loss plus the weighted local loss (weight 1 in the smoke config)
    assert m['loss'] == pytest.approx(m['cross_loss'] + m['local_loss'], rel=1e-5)
    assert 0 < m['valid_fraction'] < 1
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['recipe'] == recipe and results['step'] == 4
  for key in ('pretrained', 'random_init'):
    assert 0.0 <= results['probe'][key]['accuracy'] <= 1.0
  assert os.path.exists(os.path.join(workdir, 'export', 'encoder.json'))

  params, ema, _ = loop.restore_params(workdir)
  assert set(ema) == {'student'}
  if recipe == 'seed':
    assert m['ema_momentum'] == 0.0
    jax.tree.map(np.testing.assert_array_equal, ema['student'], params['student'])
    # the ViT trained, starting from the saved one (same tree; moved by 4 small AdamW steps)
    assert 0 < _max_change(params['vit'], saved_vit) < 0.05
  else:
    assert m['ema_momentum'] == 1.0
    # The initial student: the loop's init (same rng, same shapes; values do not depend on data).
    init_rng = jax.random.split(jax.random.PRNGKey(int(c.seed)))[0]
    batch = fake_batch(c, 1)
    models = models_lib.build_models(c, testing.teacher_widths_of(batch))
    init_params = recipes.get_recipe(c.recipe).init_params
    init = jax.jit(lambda r: init_params(c, r, batch, models)['student'])(init_rng)
    init = jax.device_get(init)
    jax.tree.map(np.testing.assert_array_equal, ema['student'], init)
    assert _max_change(params['student'], init) > 0


def test_vit_init_mismatch_is_a_clear_error(tmp_path):
  c = recipe_config('seed')
  batch = fake_batch(c, 2)
  c.model.vit_init = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match='model.vit_init'):
    models_lib.build_models(c, testing.teacher_widths_of(batch))
  # A teacher folder (a converted CLIP or EfficientNet-Lite) is not a ViT checkpoint: said so.
  (tmp_path / 'clip').mkdir()
  (tmp_path / 'clip' / 'teacher.json').write_text('{}')
  c.model.vit_init = str(tmp_path / 'clip')
  with pytest.raises(ValueError, match=r"vit_init=.*clip': a teacher folder .*teacher.checkpoint"):
    models_lib.build_models(c, testing.teacher_widths_of(batch))
  # A saved depth-2 ViT cannot start a config that overrides depth=1: the extra leaves are named.
  module = vit_lib.vit(c.model.vit)
  params = module.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 3), np.float32))['params']
  vit_io.save(str(tmp_path / 'deep'), module, params)
  c.model.vit_init = str(tmp_path / 'deep')
  with pytest.raises(ValueError, match=r"vit_init.*unexpected \['blocks_1"):
    models_lib.build_models(c, testing.teacher_widths_of(batch))


def test_seed_cross_loss_ignores_invisible_groups_and_normalize_flag():
  """Only groups visible in the chosen view (corr >= 0) enter the cross-modal loss; the EMA
  targets are layer-normed exactly when train.normalize_target."""
  c = recipe_config('seed')
  batch = fake_batch(c, 4)
  models = models_lib.build_models(c, testing.teacher_widths_of(batch))
  init_params = recipes.get_recipe(c.recipe).init_params
  params = jax.jit(lambda r: init_params(c, r, batch, models))(jax.random.PRNGKey(0))
  ema = recipes.ema_source(params)
  loss = jax.jit(lambda b: seed_recipe.loss_fn(params, ema, b, jax.random.PRNGKey(3), config=c,
                                                 models=models)[1])
  aux = loss(batch)
  # All views hidden -> no visible group: the cross loss is exactly 0 (nothing to predict).
  hidden = jax.tree.map(lambda x: x, batch)
  hidden['views'] = dict(batch['views'], corr=np.full_like(batch['views']['corr'], -1))
  aux_hidden = loss(hidden)
  assert float(aux['cross_loss']) > 0 and float(aux_hidden['cross_loss']) == 0.0
  assert float(aux_hidden['local_loss']) == pytest.approx(float(aux['local_loss']), rel=1e-6)
  targets = point_jepa_recipe.target_tokens(models, ema, batch, c)
  np.testing.assert_allclose(np.asarray(targets).mean(-1), 0, atol=1e-5)
  c.train.normalize_target = False
  raw = np.asarray(point_jepa_recipe.target_tokens(models, ema, batch, c))
  ref = models.point.apply({'params': ema['student']}, batch['points'], batch['centers'],
                           batch['groups'])['tokens']
  np.testing.assert_allclose(raw, np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_seed_cross_loss_trains_the_2d_side_only():
  """The design card's contract, measured on the gradients: the cross-modal loss reaches the ViT
  view encoder and its predictor only (the EMA targets are stop-gradient), the local in-modal loss
  the student point encoder and its own predictor only. So the seed recipe's point encoder learns
  from the 3D side alone; nothing of what the 2D side knows reaches it (README: Configs)."""
  c = recipe_config('seed')
  batch = fake_batch(c, 4)
  models = models_lib.build_models(c, testing.teacher_widths_of(batch))
  init_params = recipes.get_recipe(c.recipe).init_params
  params = jax.jit(lambda r: init_params(c, r, batch, models))(jax.random.PRNGKey(0))
  # EMA params unlike the student's, as after some steps: the targets still depend on the batch.
  ema = jax.tree.map(lambda x: x * 1.5, recipes.ema_source(params))

  def grads(term):
    def f(p):
      return seed_recipe.loss_fn(p, ema, batch, jax.random.PRNGKey(3), config=c, models=models)[1][term]
    return jax.jit(jax.grad(f))(params)

  def norms(g):
    return {part: float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64)))
                                    for x in jax.tree.leaves(g[part])))) for part in g}

  cross, local = norms(grads('cross_loss')), norms(grads('local_loss'))
  assert set(cross) == {'student', 'vit', 'predictor', 'local_predictor'}
  assert cross['student'] == 0.0 and cross['local_predictor'] == 0.0, cross
  assert cross['vit'] > 1e-4 and cross['predictor'] > 1e-4, cross
  assert local['vit'] == 0.0 and local['predictor'] == 0.0, local
  assert local['student'] > 1e-4 and local['local_predictor'] > 1e-4, local
