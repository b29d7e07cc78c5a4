"""The declared schema of the config: the type and range (or choices) of every key.

`check(config)` is run once at start-up by every entry point (crossjepa.main, crossjepa.sweep,
the experiments that take a config): a key that is missing, undeclared, of the wrong type or out of
range is a `SchemaError` naming the key, what it holds and what is expected. Code reads declared
keys directly (`config.train.lr`), never `config.get(key, default)`: the default lives in
configs/default.py and nowhere else.

A key's validator is one of the small classes of crossjepa.config_validators (or `Variants`
below, which checks against SCHEMA itself); a value is checked with `validator(value)`,
which returns an error text or None. Cross-field rules (num_groups <= num_points, ...) live in
`crossjepa.config_util.check_config`, which calls `check` first.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import ml_collections

from crossjepa.config_validators import Bool, Choice, Dict, Float, Int, ParamRules, Seq, Str


class SchemaError(ValueError):
  """A config key is missing, undeclared, mistyped or out of range; the message names it."""


POSITIVE = Float(0.0, lo_open=True)
NON_NEGATIVE = Float(0.0)
BETA = Float(0.0, 1.0, hi_open=True)


class Variants:
  """benchmark.variants: (name, {dotted key: value}) pairs; the keys must be declared."""

  def __call__(self, v):
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not v:
      return 'expected a non-empty tuple of (name, {config key: value}) pairs'
    for item in v:
      if (isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2
          or not isinstance(item[0], str) or not isinstance(item[1], (dict, ml_collections.ConfigDict))):
        return f'{item!r}: expected a (name, {{config key: value}}) pair'
      for key, value in dict(item[1]).items():
        if key not in SCHEMA:
          return f'variant {item[0]!r}: {key!r} is not a config key'
        err = SCHEMA[key](value)
        if err:
          return f'variant {item[0]!r}, {key} = {value!r}: {err}'
    return None


# --------------------------------------------------------------------------------- the schema
# Choices that belong to other modules are copied here, not imported, so that this module stays
# import-light (tests/test_config_schema.py checks that they follow the code); the string lists
# here are the config-level vocabulary.
RECIPES = ('crossjepa', 'seed', 'point_jepa')
SOURCES = ('synthetic', 'mesh_folder', 'modelnet40', 'scanobjectnn', 'shapenet55')
RENDER_SET_LAYOUTS = ('transforms_json', 'shapenet_rendering', 'zero123')
RENDER_SET_CONVENTIONS = ('opengl', 'opencv')
RENDER_SET_AXES = ('file', 'y_up_to_z_up')
RENDER_SET_WORLDS = ('file', 'unit_cube')
TARGETS = ('cls', 'groups', 'object')
LOSSES = ('mse', 'smooth_l1', 'cosine')
TEACHER_KINDS = ('efficientnet_lite', 'offline_vit')
EFFICIENTNET_VARIANTS = ('lite0', 'lite1', 'lite2', 'lite3', 'lite4')
EFFICIENTNET_STAGES = ('stage1', 'stage2', 'stage3', 'stage4', 'stage5', 'stage6', 'stage7', 'head')
POINT_VARIANTS = ('tiny', 'small', 'S', 'paper')
PREDICTOR_VARIANTS = ('tiny', 'small', 'paper')
VIT_VARIANTS = ('tiny/14', 'S/14', 'B/14', 'L/14', 'g/14')
POOLINGS = ('max+mean', 'max', 'mean', 'cls')
ATTENTIONS = ('einsum', 'dot_product', 'cudnn')
REMATS = ('none', 'full', 'dots')
SPLIT = Str(r'[A-Za-z0-9_\-]+', empty=False, what='a split name')
FRACTION = Float(0.0, 1.0, lo_open=True)
MOMENTUM = Seq(Float(0.0, 1.0), length=2, ordered=True)

# The optimizer block (crossjepa.training.state.make_optimizer): the same keys, checked the same way,
# wherever an optimizer is configured (pretraining, the offline teacher, fine-tuning).
OPTIMIZER: dict[str, Any] = {
    'steps': Int(1), 'lr': POSITIVE, 'min_lr': NON_NEGATIVE, 'warmup_steps': Int(0),
    'weight_decay': NON_NEGATIVE, 'b1': BETA, 'b2': BETA, 'grad_clip': NON_NEGATIVE,
}
OPTIMIZER_BLOCKS = ('train', 'teacher.train', 'eval.finetune')

SCHEMA: dict[str, Any] = {
    'seed': Int(0),
    'recipe': Choice(RECIPES),
    # data
    'data.source': Choice(SOURCES),
    'data.root': Str(),
    'data.variant': Str(),
    'data.file_format': Choice(('array_record', 'tfrecord')),
    'data.name': Str(r'[a-z][a-z0-9_]*', empty=False, what='a TFDS dataset name'),
    'data.num_points': Int(1),
    'data.num_groups': Int(1),
    'data.group_size': Int(1),
    'data.num_views': Int(1),
    'data.image_size': Int(8, 4096),
    'data.patch_size': Int(1),
    'data.hist_bins': Int(1, 256),
    'data.colored': Bool(),
    'data.keep_images': Bool(),
    'data.cache_group_features': Bool(),
    'data.depth_tolerance': POSITIVE,
    'data.shards': Int(1),
    'data.num_workers': Int(0, also=(-1,)),   # -1 = one per usable CPU core
    'data.teacher_chunk': Int(1),
    'data.eval_only': Bool(),
    'data.num_classes': Int(0),
    'data.strict_counts': Bool(),
    'data.camera.mode': Choice(('ring', 'random')),
    'data.camera.distance': POSITIVE,
    'data.camera.elevation_range': Seq(Float(-90.0, 90.0), length=2, ordered=True),
    'data.camera.fov': Float(0.0, 180.0, lo_open=True, hi_open=True),
    'data.render_set.root': Str(),
    'data.render_set.layout': Choice(RENDER_SET_LAYOUTS),
    'data.render_set.min_agreement': Float(0.0, 1.0),
    'data.render_set.axes': Choice(RENDER_SET_AXES),
    'data.render_set.world': Choice(RENDER_SET_WORLDS),
    'data.render_set.convention': Choice(RENDER_SET_CONVENTIONS),
    'data.render_set.camera_angle_x': Float(0.0, math.pi, hi_open=True),
    'data.synthetic.kind': Choice(('clean', 'scan')),
    'data.synthetic.train_per_class': Int(1),
    'data.synthetic.test_per_class': Int(1),
    'data.synthetic.pretrain_per_class': Int(0),
    'data.synthetic.teacher_per_class': Int(0),
    'data.synthetic.num_classes': Int(0),
    'data.synthetic.seed': Int(0),
    'data.synthetic.scan_points': Int(1),
    'data.mesh_folder.test_fraction': Float(0.0, 1.0, lo_open=True, hi_open=True),
    'data.mesh_folder.split_seed': Int(0),
    'data.mesh_folder.expected_train': Int(0),
    'data.mesh_folder.expected_test': Int(0),
    'data.mesh_folder.expected_classes': Int(0),
    'data.pretrain_splits': Seq(SPLIT, min_len=1),
    'data.eval_train_split': SPLIT,
    'data.eval_test_split': SPLIT,
    # models
    'model.point': Choice(POINT_VARIANTS),
    'model.predictor': Choice(PREDICTOR_VARIANTS),
    'model.vit': Choice(VIT_VARIANTS),
    'model.point_overrides': Dict(),
    'model.predictor_overrides': Dict(),
    'model.vit_overrides': Dict(),
    'model.vit_init': Str(),
    'model.attention': Choice(ATTENTIONS),
    'model.remat': Choice(REMATS),
    # teacher
    'teacher.checkpoint': Str(),
    'teacher.kind': Choice(TEACHER_KINDS),
    'teacher.variant': Choice(EFFICIENTNET_VARIANTS),
    'teacher.weights': Str(),
    'teacher.random_weights': Bool(),
    'teacher.feature_stage': Choice(('',) + EFFICIENTNET_STAGES),
    'teacher.random_init': Bool(),
    'teacher.train.kind': Choice(('supervised', 'ijepa')),
    'teacher.train.batch_size': Int(1),
    'teacher.train.source': Choice(('',) + SOURCES),
    'teacher.train.split': SPLIT,
    'teacher.train.label_smoothing': Float(0.0, 1.0, hi_open=True),
    'teacher.train.pool': Choice(('cls', 'cls+gap')),
    'teacher.train.augment_flip': Bool(),
    'teacher.train.augment_shift': Int(0),
    'teacher.train.log_every': Int(1),
    'teacher.train.ijepa.predictor': Choice(PREDICTOR_VARIANTS),
    'teacher.train.ijepa.predictor_overrides': Dict(),
    'teacher.train.ijepa.num_targets': Int(1),
    'teacher.train.ijepa.target_scale': FRACTION,
    'teacher.train.ijepa.target_aspect': POSITIVE,
    'teacher.train.ijepa.context_scale': FRACTION,
    'teacher.train.ijepa.loss': Choice(('smooth_l1', 'mse')),
    'teacher.train.ijepa.ema_momentum': MOMENTUM,
    # pretraining
    'train.batch_size': Int(1),
    'train.views_per_step': Int(1),
    'train.target': Choice(TARGETS),
    'train.loss': Choice(LOSSES),
    'train.normalize_target': Bool(),
    'train.standardize_target': Choice(('none', 'batch', 'dataset')),
    'train.condition_pose': Bool(),
    'train.condition_hist': Bool(),
    'train.ema_momentum': MOMENTUM,
    'train.dtype': Choice(('float32', 'bfloat16')),
    'train.param_rules': ParamRules(),
    'train.augment.scale': Seq(POSITIVE, length=2, ordered=True),
    'train.augment.translate': NON_NEGATIVE,
    'train.augment.jitter': NON_NEGATIVE,
    'train.augment.rotate_up': Bool(),
    'train.checkpoint_every': Int(1),
    # 0 would keep no checkpoint: the trained model would be lost (and export would fail).
    'train.keep_checkpoints': Int(1),
    'train.log_every': Int(1),
    'train.probe_every': Int(0),
    'train.probe_per_class': Int(0),
    'train.device_resident': Bool(),
    'train.device_resident_max_gb': POSITIVE,
    'train.num_workers': Int(0),
    'train.point_jepa.num_targets': Int(1),
    'train.point_jepa.target_size': Seq(FRACTION, length=2, ordered=True),
    'train.point_jepa.context_size': FRACTION,
    'train.seed_local_weight': NON_NEGATIVE,
    # device mesh
    'mesh.data': Int(1, also=(-1,)),
    'mesh.fsdp': Int(1),
    # evaluation
    'eval.zero_shot': Bool(),
    'eval.zero_shot_classes': Str(),
    'eval.text_tower': Str(),
    'eval.zero_shot_templates': Seq(Str(pattern=r'[^{}]*\{\}[^{}]*', empty=False,
                                        what='a prompt with one {} for the class words')),
    'eval.params': Choice(('student', 'ema')),
    'eval.pooling': Choice(POOLINGS),
    'eval.svm_C': Seq(POSITIVE, min_len=1),
    'eval.cv_folds': Int(2),
    'eval.fewshot_ways': Seq(Int(2), min_len=1),
    'eval.fewshot_shots': Seq(Int(1), min_len=1),
    'eval.fewshot_queries': Int(1),
    'eval.fewshot_folds': Int(1),
    'eval.seeds': Seq(Int(0), min_len=1),
    'eval.batch_size': Int(1),
    'eval.encoder': Str(),
    'eval.svm_classifier': Choice(('svc_linear', 'linear_svc')),
    'eval.svm_standardize': Bool(),
    'eval.svm_workers': Int(0),
    'eval.fewshot_C': POSITIVE,
    'eval.finetune.enabled': Bool(),
    'eval.finetune.fewshot': Bool(),
    'eval.finetune.votes': Int(1),
    'eval.finetune.batch_size': Int(1),
    'eval.finetune.head_hidden': Int(1),
    'eval.finetune.head_dropout': Float(0.0, 1.0, hi_open=True),
    'eval.finetune.scale': Seq(POSITIVE, length=2, ordered=True),
    'eval.finetune.translate': NON_NEGATIVE,
    # benchmark table
    'benchmark.enabled': Bool(),
    'benchmark.variants': Variants(),
    'benchmark.seeds': Seq(Int(0), min_len=1),
    'benchmark.eval_sets': Seq(Choice(('clean', 'scan')), min_len=1),
    'benchmark.teacher_probe': Bool(),
}
SCHEMA.update({f'{block}.{key}': check for block in OPTIMIZER_BLOCKS
               for key, check in OPTIMIZER.items()})

# Keys whose value is a free-form mapping: not descended into when the config is flattened.
_LEAF_MAPPINGS = tuple(k for k, v in SCHEMA.items() if isinstance(v, Dict))


def flatten(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, Any]:
  """{dotted key: value} of every leaf (free-form mappings stay one leaf)."""
  out = {}
  for key, value in config.items():
    name = prefix + key
    if isinstance(value, (ml_collections.ConfigDict, dict)) and name not in _LEAF_MAPPINGS:
      out.update(flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def check(config: ml_collections.ConfigDict) -> None:
  """Raises SchemaError listing every key that is undeclared, missing or invalid."""
  flat = flatten(config)
  problems = []
  for key, value in flat.items():
    if key not in SCHEMA:
      close = [k for k in SCHEMA if k.rsplit('.', 1)[-1] == key.rsplit('.', 1)[-1]]
      hint = f' (did you mean config.{close[0]}?)' if close else ''
      problems.append(f'config.{key} is not a known key{hint}')
      continue
    err = SCHEMA[key](value)
    if err:
      problems.append(f'config.{key} = {value!r}: {err}')
  for key in SCHEMA:
    if key not in flat:
      problems.append(f'config.{key} is missing (configs/default.py declares it)')
  if problems:
    raise SchemaError('; '.join(problems) if len(problems) == 1 else
                      f'{len(problems)} config problems:\n  ' + '\n  '.join(problems))
