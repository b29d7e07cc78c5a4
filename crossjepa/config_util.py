"""Config checks: every value that a stage relies on is validated up front, with the key's name."""
import json

import ml_collections

RECIPES = ('crossjepa', 'seed', 'point_jepa')
SOURCES = ('synthetic', 'mesh_folder', 'modelnet40', 'scanobjectnn', 'shapenet55')
FILE_FORMATS = ('array_record', 'tfrecord')
TARGETS = ('cls', 'groups', 'object')
LOSSES = ('mse', 'smooth_l1', 'cosine')
# What --mode=teacher makes in WORKDIR/teacher when teacher.checkpoint is empty.
TEACHER_KINDS = ('efficientnet_lite', 'offline_vit')
EFFICIENTNET_VARIANTS = ('lite0', 'lite1', 'lite2', 'lite3', 'lite4')
EFFICIENTNET_STAGES = ('stage1', 'stage2', 'stage3', 'stage4', 'stage5', 'stage6', 'stage7', 'head')


class ConfigError(ValueError):
  """A config value is missing or out of range; the message names the key."""


def _choice(config, key, allowed):
  value = config
  for part in key.split('.'):
    value = value[part]
  if value not in allowed:
    raise ConfigError(f'config.{key} = {value!r}; expected one of {list(allowed)}')


def _positive(config, key):
  value = config
  for part in key.split('.'):
    value = value[part]
  if not isinstance(value, (int, float)) or value <= 0:
    raise ConfigError(f'config.{key} = {value!r}; expected a positive number')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first key whose value cannot work."""
  _choice(config, 'recipe', RECIPES)
  _choice(config, 'data.source', SOURCES)
  _choice(config, 'data.file_format', FILE_FORMATS)
  _choice(config, 'train.target', TARGETS)
  _choice(config, 'train.loss', LOSSES)
  _choice(config, 'train.dtype', ('float32', 'bfloat16'))
  _choice(config, 'train.standardize_target', ('none', 'batch', 'dataset'))
  if not config.train.lr > 0:
    raise ConfigError(f'config.train.lr = {config.train.lr!r}; expected a positive number')
  _choice(config, 'eval.params', ('student', 'ema'))
  for key in ('data.num_points', 'data.num_groups', 'data.group_size', 'data.num_views',
              'data.image_size', 'data.patch_size', 'data.hist_bins', 'train.steps',
              'train.batch_size', 'train.views_per_step', 'train.checkpoint_every'):
    _positive(config, key)
  d = config.data
  # data.patch_size is the seed recipe's view-encoder grid; the teacher cache uses the teacher's
  # own stride (checked against data.image_size when the teacher is loaded).
  if config.recipe == 'seed' and d.image_size % d.patch_size:
    raise ConfigError(f'config.data.image_size = {d.image_size} is not a multiple of '
                      f'config.data.patch_size = {d.patch_size} (the seed recipe\'s view encoder)')
  t = config.teacher
  _choice(config, 'teacher.kind', TEACHER_KINDS)
  if t.kind == 'efficientnet_lite':
    _choice(config, 'teacher.variant', EFFICIENTNET_VARIANTS)
  if t.kind == 'offline_vit' and not t.checkpoint and not t.random_init and (
      t.feature_stage or d.image_size % 14):
    raise ConfigError(
        f'config.teacher.kind = offline_vit trains a ViT with 14 px patches: set '
        f'config.teacher.feature_stage to \'\' (got {t.feature_stage!r}) and config.data.image_size '
        f'to a multiple of 14 that the views are rendered at (got {d.image_size}; e.g. 112)')
  if t.feature_stage and t.feature_stage not in EFFICIENTNET_STAGES:
    raise ConfigError(f'config.teacher.feature_stage = {t.feature_stage!r}; expected one of '
                      f'{list(EFFICIENTNET_STAGES)} (CNN teachers) or empty (the spec\'s own map)')
  if d.num_groups > d.num_points or d.group_size > d.num_points:
    raise ConfigError(f'config.data.num_groups ({d.num_groups}) and config.data.group_size '
                      f'({d.group_size}) must not exceed config.data.num_points ({d.num_points})')
  if config.train.views_per_step > d.num_views:
    raise ConfigError(f'config.train.views_per_step = {config.train.views_per_step} exceeds '
                      f'config.data.num_views = {d.num_views}')
  if d.source != 'synthetic' and not d.root:
    raise ConfigError(f'config.data.root is empty; the {d.source!r} source reads its files from there')


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def load_config_module(path: str):
  """Loads a config file (configs/*.py) as a module: configs are files, not a package, so that
  `--config=configs/x.py` works from any working directory."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file not found: {path}')
  name = '_crossjepa_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling_config(config_file: str, name: str):
  """The config module `name` beside `config_file` (e.g. the default that an experiment overrides)."""
  import os  # pylint: disable=g-import-not-at-top
  return load_config_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py'))
