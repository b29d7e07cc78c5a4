"""The entry points' config handling: loading config files, checking every value a stage relies on
up front (with the key's name), and turning flag and config-file mistakes into one-line errors."""
import importlib.util
import json
import os
import re
import traceback
from typing import Optional, Sequence

from absl import flags
import ml_collections

from crossjepa import config_schema
from crossjepa import console


class ConfigError(ValueError):
  """A config value is missing or out of range; the message names the key."""


def check_config(config: ml_collections.ConfigDict, reads_data: bool = True) -> None:
  """Raises ConfigError naming every key whose value cannot work: first the declared schema
  (config_schema: type, range, choices of every key), then the rules that tie keys together.
  `reads_data=False` leaves out the data.root rules, for programs that build batches of the
  config's shapes themselves (experiments/bench_step.py and the scripts on its load_config)."""
  try:
    config_schema.check(config)
  except config_schema.SchemaError as e:
    raise ConfigError(str(e)) from None
  d, t, tr = config.data, config.teacher, config.train
  # data.patch_size is the seed recipe's view-encoder grid; the teacher cache uses the teacher's
  # own stride (checked against data.image_size when the teacher is loaded).
  if config.recipe == 'seed' and d.image_size % d.patch_size:
    raise ConfigError(f'config.data.image_size = {d.image_size} is not a multiple of '
                      f'config.data.patch_size = {d.patch_size} (the seed recipe\'s view encoder)')
  if t.random_weights and (t.kind != 'efficientnet_lite' or t.weights or t.checkpoint):
    raise ConfigError(f'config.teacher.random_weights = True draws an EfficientNet-Lite\'s weights '
                      f'instead of reading them: it needs config.teacher.kind = efficientnet_lite '
                      f'(got {t.kind!r}), no config.teacher.weights (got {t.weights!r}) and no '
                      f'config.teacher.checkpoint (got {t.checkpoint!r})')
  if t.kind == 'offline_vit' and not t.checkpoint and not t.random_init and (
      t.feature_stage or d.image_size % 14):
    raise ConfigError(
        f'config.teacher.kind = offline_vit trains a ViT with 14 px patches: set '
        f'config.teacher.feature_stage to \'\' (got {t.feature_stage!r}) and config.data.image_size '
        f'to a multiple of 14 that the views are rendered at (got {d.image_size}; e.g. 112)')
  if d.num_groups > d.num_points or d.group_size > d.num_points:
    raise ConfigError(f'config.data.num_groups ({d.num_groups}) and config.data.group_size '
                      f'({d.group_size}) must not exceed config.data.num_points ({d.num_points})')
  if config.recipe == 'crossjepa' and tr.target == 'groups' and not d.cache_group_features:
    raise ConfigError('config.train.target = groups reads the teacher\'s per-group features, '
                      'which config.data.cache_group_features = False leaves out of the records: '
                      'set it True (the records are then prepared again) or use the cls or '
                      'object target')
  if tr.views_per_step > d.num_views:
    raise ConfigError(f'config.train.views_per_step = {tr.views_per_step} exceeds '
                      f'config.data.num_views = {d.num_views}')
  for block in config_schema.OPTIMIZER_BLOCKS:
    optim = config
    for part in block.split('.'):
      optim = optim[part]
    if optim.min_lr > optim.lr:
      raise ConfigError(f'config.{block}.min_lr = {optim.min_lr} exceeds config.{block}.lr = '
                        f'{optim.lr}')
  if reads_data and d.source != 'synthetic' and not d.root:
    raise ConfigError(f'config.data.root is empty; the {d.source!r} source reads its files from there')
  if reads_data and d.source == 'synthetic' and d.root:
    raise ConfigError(f'config.data.root = {d.root!r}, but the synthetic source reads no files: '
                      'set config.data.source (mesh_folder, modelnet40, ...) or leave data.root empty')
  rs = d.render_set
  if rs.root and rs.layout == 'shapenet_rendering' and d.source != 'shapenet55':
    raise ConfigError(f'config.data.render_set.layout = shapenet_rendering finds renders by '
                      f'ShapeNet-55 ids (<synset>/<modelid>/rendering/): it needs '
                      f'config.data.source = shapenet55, got {d.source!r}; other sources use '
                      f'layout transforms_json')
  if rs.root and rs.layout != 'zero123' and rs.convention != 'opengl':
    raise ConfigError(f'config.data.render_set.convention = {rs.convention!r} is for layout zero123 '
                      f'(its .npy poses do not say); layout {rs.layout} reads the camera axes from '
                      f'its own files: leave it at opengl')
  if rs.root and rs.layout == 'transforms_json' and rs.camera_angle_x:
    raise ConfigError(f'config.data.render_set.camera_angle_x = {rs.camera_angle_x} is for layouts '
                      f'zero123 and shapenet_rendering (their files do not give the lens); layout '
                      f'transforms_json reads it from each transforms.json: leave it at 0')
  if reads_data and rs.root and not d.eval_only and not os.path.isdir(rs.root):
    raise ConfigError(f'config.data.render_set.root = {rs.root!r} is not a folder; expected the '
                      f'render set ({rs.layout}), or \'\' to render the views here')
  if config.eval.text_tower and not config.eval.encoder:
    raise ConfigError(f'config.eval.text_tower = {config.eval.text_tower!r} embeds words for an '
                      'eval-only run of a CLIP export (config.eval.encoder, empty here); a run '
                      'with a CLIP teacher names its classes with that teacher\'s own text tower: '
                      'leave it empty')
  if d.source == 'synthetic' and d.synthetic.kind == 'scan' and d.synthetic.scan_points < d.num_points:
    raise ConfigError(f'config.data.synthetic.scan_points = {d.synthetic.scan_points} is below '
                      f'config.data.num_points = {d.num_points}')


def as_dict(cfg) -> dict:
  """A ConfigDict, a mapping or None (an empty block) as a plain dict."""
  if cfg is None:
    return {}
  return dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def load_config_module(path: str):
  """Loads a config file (configs/*.py) as a module: configs are files, not a package, so that
  `--config=configs/x.py` works from any working directory."""
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file not found: {path}')
  name = '_crossjepa_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def import_config_file(path: str):
  """load_config_module for a user's file: a missing or unreadable file, or one whose own code
  raises while it imports, is a ConfigError naming the file (and the line); any other error is a
  bug and keeps its traceback."""
  if not os.path.isfile(path):
    raise ConfigError(f'{path}: no such config file')
  try:
    return load_config_module(path)
  except Exception as e:  # pylint: disable=broad-except
    if isinstance(e, OSError) and user_code_error(path, e, 'importing it') is None:
      raise ConfigError(f'{path}: cannot read the config file ({e.strerror or e})') from None
    _raise_user_error(path, e, 'importing it')


def call_config_code(path: str, fn, during: str):
  """fn() of the config file at `path` (its get_config, its sweep): an error raised in that file's
  own code is a ConfigError '<file>:<line>: <during> raised ...'; any other error propagates."""
  try:
    return fn()
  except ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    _raise_user_error(path, e, during)


def _raise_user_error(path: str, error: Exception, during: str):
  msg = user_code_error(path, error, during)
  if msg is None:
    raise error
  raise ConfigError(msg) from error


def get_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config file at `path`, its mistakes (see import_config_file and
  call_config_code) a ConfigError naming the file; what experiments/ scripts load `--config` with."""
  fn = getattr(import_config_file(path), 'get_config', None)
  if not callable(fn):
    raise ConfigError(f'{path} defines no get_config() function')
  return call_config_code(path, fn, 'loading the config (get_config())')


def sibling_config(config_file: str, name: str):
  """The config module `name` beside `config_file` (e.g. the default that an experiment overrides)."""
  return load_config_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py'))


# ------------------------------------------------------------- errors while a config file loads
def _same_file(a: str, b: str) -> bool:
  return os.path.realpath(a) == os.path.realpath(b)


def user_code_error(path: str, error: BaseException, during: str) -> Optional[str]:
  """'<file>:<line>: <during> raised <error>' when `error` came from the config file at `path`
  (its deepest frame there), else None. A SyntaxError names its own line."""
  if isinstance(error, SyntaxError) and error.filename and _same_file(error.filename, path):
    return f'{path}:{error.lineno}: {error.msg} (a syntax error, found while {during})'
  frames = [f for f in traceback.extract_tb(error.__traceback__) if _same_file(f.filename, path)]
  if not frames:
    return None
  return (f'{path}:{frames[-1].lineno}: {during} raised {type(error).__name__}: '
          f'{console.one_line(error)}')


def _config_arg(argv: Sequence[str]) -> str:
  for i, arg in enumerate(argv):
    m = re.match(r'^--?config(=(.*))?$', arg)
    if m:
      return m[2] if m[1] else (argv[i + 1] if i + 1 < len(argv) else '')
  return ''


def _override_text(error: BaseException, argv: Sequence[str]) -> tuple[str, list[str], list[str]]:
  """(the error's text, unquoted; the keys of argv's `--config.a.b=v` overrides; those of them
  whose last part the text names)."""
  msg = str(error).strip('\'"').replace('\\n', ' ').replace("\\'", "'")
  overrides = [a.split('=', 1)[0].lstrip('-')[len('config.'):] for a in argv[1:]
               if re.match(r'^--?config\.', a)]
  named = [o for o in overrides if f"'{o.rsplit('.', 1)[-1]}'" in msg]
  return msg, overrides, named


def flag_error(error: BaseException, argv: Sequence[str]) -> Optional[str]:
  """The one-line message of an error raised while absl parsed the flags, None if it is a bug.

  config_flags imports the config file and applies `--config.a.b=v` overrides during parsing, so
  a broken config file or an unknown override key surfaces here, not as a flags.Error.
  """
  path = _config_arg(argv).split(':', 1)[0]
  if path and not os.path.isfile(path) and isinstance(error, (OSError, flags.Error)):
    return f'{path}: no such config file'
  chain, e = [], error
  while e is not None and e not in chain:  # absl re-raises config errors (__context__ keeps them)
    chain.append(e)
    e = e.__cause__ or e.__context__
  if path:
    for e in reversed(chain):
      msg = user_code_error(path, e, 'loading the config (get_config())')
      if msg:
        return msg
  msg, overrides, named = _override_text(error, argv)
  if isinstance(error, (AttributeError, KeyError)) and overrides:
    # An override of a key the config lacks (ml_collections raises it, a did-you-mean included).
    named = named or overrides
    leaf = named[0].rsplit('.', 1)[-1]
    detail = '' if msg.strip("'") == leaf else f' ({console.one_line(msg)})'
    return f'{path}: --config.{named[0]}: the config has no key {leaf!r}{detail}'
  if isinstance(error, flags.Error):  # a bad value (--config.train.steps=x), a missing flag
    text = console.one_line(error)
    return f'{path}: {text}' if path and '--config' in text else text
  return None


def override_error(error: BaseException, argv: Sequence[str]) -> str:
  """The message of an error that absl let escape while applying `--config.a.b=v` overrides (an
  unknown key or a wrong type that flag_error did not recognise), naming the override if it can."""
  msg, _, named = _override_text(error, argv)
  where = f' --config.{named[0]}' if named else ''
  return f'error in a --config override{where}: unknown key or bad value: {msg}'


def parse_flags(argv: Sequence[str], prog: str) -> list[str]:
  """absl's flag parsing for the entry point `prog`, but a missing or bad flag (--workdir, --mode=x,
  a --config override, a config file that does not load) is a user error: one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    fail_on_flag_error(e, argv, prog)


def fail_on_flag_error(error: BaseException, argv: Sequence[str], prog: str) -> None:
  """Ends the program with flag_error's one line (console.fail: exit 2) when `error` is a user's
  flag or config-file mistake; re-raises it (a bug, traceback kept) otherwise."""
  msg = flag_error(error, argv)
  if msg is None:
    raise error
  console.fail(prog, msg)
