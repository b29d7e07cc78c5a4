"""Command-line entry point (a thin absl main, as in the flax examples).

    python -m crossjepa.main --config=configs/default.py --workdir=/tmp/crossjepa [--mode=all]

All logic lives in `crossjepa.run.run(config, workdir, mode)`, which tests call directly.
`--config.a.b=value` overrides a key of the locked config; an unknown key is an error naming it.

The terminal shows stage headers, progress bars, warnings, errors and the results tables; every
INFO record (ours, orbax, TFDS, grain, jax) goes to WORKDIR/log.txt only, unless `--verbosity=0`
or `-v 1` (absl's flag) asks for them on the terminal too (crossjepa/console.py).
"""
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from crossjepa import config_util
from crossjepa import console
from crossjepa import run as run_lib

PROG = 'crossjepa'
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (data, checkpoints, results).')
_MODE = flags.DEFINE_enum('mode', 'all', run_lib.MODES, 'Which stage(s) to run.')
_DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'Call jax.distributed.initialize(): auto = when the environment is a multi-process job '
    '(JAX_COORDINATOR_ADDRESS, SLURM with several tasks, or a multi-host TPU slice).')
flags.mark_flags_as_required(['config', 'workdir'])


def _multi_process_environment() -> bool:
  env = os.environ
  if env.get('JAX_COORDINATOR_ADDRESS'):
    return True
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1:
    return True
  hosts = env.get('TPU_WORKER_HOSTNAMES', '')
  return len([h for h in hosts.split(',') if h]) > 1


def maybe_initialize_distributed(mode: str) -> None:
  if mode == 'on' or (mode == 'auto' and _multi_process_environment()):
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
    logging.info('jax.distributed: process %d of %d, %d devices', jax.process_index(),
                 jax.process_count(), jax.device_count())

_in_main = False


def main(argv):
  global _in_main
  _in_main = True
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # absl's app.run leaves the loggers at INFO (or what --verbosity says); the terminal shows less.
  console.configure_terminal()
  maybe_initialize_distributed(_DISTRIBUTED.value)
  try:   # config_flags reports a config file that failed to load only here
    config = _CONFIG.value
    config.keys()   # a config that failed to load raises on first use
  except Exception as e:  # pylint: disable=broad-except
    config_util.fail_on_flag_error(e, sys.argv, PROG)
  try:
    run_lib.run(config, _WORKDIR.value, _MODE.value)
  except run_lib.UserError as e:
    print(f'{PROG}: error: {e}', file=sys.stderr)
    log = os.path.join(_WORKDIR.value, console.LOG_FILE)
    if os.path.exists(log):
      print(f'{PROG}: full log: {log}', file=sys.stderr)
    sys.exit(2)
  except run_lib.Stopped as e:   # SIGTERM / Ctrl-C during pretrain: checkpoint saved
    print(f'{PROG}: {e}', file=sys.stderr)
    sys.exit(e.exit_status)
  except KeyboardInterrupt:      # Ctrl-C anywhere else (or twice): no traceback
    print(f'\n{PROG}: interrupted (Ctrl-C); {run_lib.RERUN}', file=sys.stderr)
    sys.exit(128 + signal.SIGINT)


def _parse_flags(argv):
  """absl's parsing, but a missing or bad flag is a user error: one line, exit 2."""
  return config_util.parse_flags(argv, PROG)


def run_main():
  try:
    app.run(main, flags_parser=_parse_flags)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if _in_main:
      raise
    # Raised while absl parsed `--config.x.y=v` overrides: an unknown key or a wrong type.
    print(f'{PROG}: {config_util.override_error(e, sys.argv)}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run_main()
