"""Command-line entry point (a thin absl main, as in the flax examples).

    python -m crossjepa.main --config=configs/default.py --workdir=/tmp/crossjepa [--mode=all]

All logic lives in `crossjepa.run.run(config, workdir, mode)`, which tests call directly.
`--config.a.b=value` overrides a key of the locked config; an unknown key is an error naming it.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from crossjepa import run as run_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (data, checkpoints, results).')
_MODE = flags.DEFINE_enum('mode', 'all', run_lib.MODES, 'Which stage(s) to run.')
flags.mark_flags_as_required(['config', 'workdir'])

_in_main = False


def main(argv):
  global _in_main
  _in_main = True
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  try:
    run_lib.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except run_lib.UserError as e:
    print(f'crossjepa: error: {e}', file=sys.stderr)
    sys.exit(2)


def run_main():
  try:
    app.run(main)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if _in_main:
      raise
    # Raised while absl parsed `--config.x.y=v` overrides: an unknown key or a wrong type.
    msg = str(e).strip('\'"').replace('\\n', ' ').replace('\\\'', "'")
    print(f'crossjepa: error in a --config override: {msg}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run_main()
