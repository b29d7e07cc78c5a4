"""What the terminal shows, and what WORKDIR/log.txt keeps (GitHub issue "Nothing silent").

Terminal:
  stderr  stage headers (`== prepare ==`) and their times, one progress bar per long stage,
          WARNING and ERROR records (ours and third parties'), errors;
  stdout  the results tables only.
WORKDIR/log.txt (`log_to_file`, used by `crossjepa.run.run`): every absl / Python logging record
at INFO and above, ours and third parties' (orbax, TFDS, grain, jax), appended; per run a header
with the time, pid and command line, the config attempted, and the traceback of a run that failed.

`--verbosity=N` (absl's flag, `-v N`) given on the command line shows absl's level N on the
terminal too (0: INFO, 1: DEBUG, which then also reaches the file); without it the terminal keeps
WARNING and above (`configure_terminal`, called by crossjepa.main and crossjepa.sweep, and by
`run_app` for crossjepa.convert_teacher and the experiments' absl scripts).

TFDS writes "Downloading and preparing dataset ..." with `print` (termcolor) and draws its own
tqdm bars; `tfds_quiet` disables those bars and sends its prints to the log as INFO records.

Progress bars (`progress`): on a TTY, tqdm with its live rate and ETA. On a non-TTY stderr (CI,
tests, `| tee`) no live updates at all (no carriage returns), and ONE line when the bar closes,
with the final count, elapsed time and rate: a log viewer sees each stage's progress without
hundreds of redraws. A bar made with leave=False prints nothing there (a TTY shows it while it
runs, then clears it).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import logging as py_logging
import math
import os
import shlex
import sys
import traceback
from typing import Iterator

from absl import flags
from absl import logging
import tqdm

LOG_FILE = 'log.txt'


def _process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def is_primary() -> bool:
  """Process 0 of a multi-process job: the one that prints headers and bars."""
  return _process_index() == 0


# ------------------------------------------------------------------------------------------ terminal
def terminal_level() -> int:
  """The Python logging level the terminal shows: WARNING, or absl's level for an explicit -v N."""
  verbosity = flags.FLAGS['verbosity']
  if verbosity.present and verbosity.value >= 0:
    return logging.converter.absl_to_standard(min(verbosity.value, logging.DEBUG))
  return py_logging.WARNING


def configure_terminal() -> None:
  """After absl parsed the flags (crossjepa.main): the terminal handler keeps `terminal_level()`.

  The loggers themselves stay at INFO (or lower with -v 1), so `log_to_file` gets every INFO
  record while the terminal does not.
  """
  logging.get_absl_handler().setLevel(terminal_level())
  if py_logging.root.level > py_logging.INFO:
    py_logging.root.setLevel(py_logging.INFO)
  if not getattr(sys.unraisablehook, 'crossjepa', False):
    sys.unraisablehook = _log_closed_loop_callbacks(sys.unraisablehook)


def _log_closed_loop_callbacks(previous):
  """An unraisable-exception hook that sends 'Event loop is closed' to the log, not the terminal.

  When an Orbax restore fails (a damaged checkpoint: the error names it), tensorstore still
  completes the reads in flight and calls back into the asyncio loop orbax has closed: dozens of
  tracebacks after the one-line error, none of them news. Every other unraisable goes to `previous`.
  """
  def hook(unraisable):
    e = unraisable.exc_value
    if isinstance(e, RuntimeError) and str(e) == 'Event loop is closed':
      logging.info('ignored: a tensorstore callback after its asyncio loop closed (%s)', e)
      return
    previous(unraisable)
  hook.crossjepa = True
  return hook


def one_line(text) -> str:
  """`text` on one line: its non-empty lines joined with '; '."""
  return '; '.join(line.strip() for line in str(text).splitlines() if line.strip())


def fail(prog: str, message) -> None:
  """Ends a command-line program for a user error: `PROG: error: MESSAGE` on one stderr line,
  exit status 2, no traceback (crossjepa.main's flag and config-file errors, crossjepa.convert_teacher,
  crossjepa.sweep, the experiments' scripts)."""
  print(f'{prog}: error: {one_line(message)}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str], prog: str) -> list[str]:
  """absl's flag parsing (app.run's flags_parser) for a program whose flags are all plain ones: an
  unknown flag, a bad value or a missing required flag, and any positional argument, end it with
  `fail` (one line, exit 2) instead of absl's usage text and exit 1. Entry points with a
  `--config` file use config_util.parse_flags, which also names the config file's errors."""
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:  # --objects=abc, --source=caffe, an unknown flag, ...
    fail(prog, e)
  if len(rest) > 1:
    fail(prog, f'unexpected arguments {rest[1:]} (every option is a --flag=value)')
  return rest


def run_app(main, prog: str) -> None:
  """absl's `app.run(main)` for a program whose flags are all plain ones, with this module's
  console: flag mistakes are one line and exit 2 (`parse_flags`), and the terminal keeps WARNING
  and above (`configure_terminal`) unless `--verbosity` is given, so third parties' INFO records
  (orbax's dozens per save, jax's backend probe) stay off it (crossjepa.convert_teacher and the
  experiments' absl scripts)."""
  from absl import app  # pylint: disable=g-import-not-at-top

  def configured(argv):
    configure_terminal()
    return main(argv)

  app.run(configured, flags_parser=lambda argv: parse_flags(argv, prog))


def _number(kind: type, text: str, low, high, strict: bool):
  noun = 'an integer' if kind is int else 'a number'
  try:
    value = kind(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected {noun}, got {text!r}') from None
  if not math.isfinite(value) or value < low or (strict and value == low) or (
      high is not None and value > high):
    bound = f'> {low}' if strict else f'>= {low}'
    if high is not None:
      bound += f' and <= {high}'
    raise argparse.ArgumentTypeError(f'expected {noun} {bound}, got {text!r}')
  return value


def int_arg(low: int, high: int | None = None):
  """An argparse `type=`: an integer in [low, high]; anything else is argparse's one-line
  `error: argument --x: expected ...` with exit 2 (not a traceback or a NaN result later)."""
  return lambda text: _number(int, text, low, high, False)


def float_arg(low: float, strict: bool = False):
  """An argparse `type=`: a finite number >= low (> low when strict)."""
  return lambda text: _number(float, text, low, None, strict)


def list_arg(item=str, choices=None):
  """An argparse `type=`: a non-empty comma-separated list, each item parsed by `item` (e.g.
  int_arg(1)) and, with `choices`, one of them."""
  def parse(text: str) -> list:
    parts = [t.strip() for t in text.split(',') if t.strip()]
    if not parts:
      raise argparse.ArgumentTypeError('expected a comma-separated list, got an empty one')
    values = []
    for t in parts:
      try:
        values.append(item(t))
      except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f'item {t!r}: {e}') from None
      if choices is not None and values[-1] not in choices:
        raise argparse.ArgumentTypeError(f'item {t!r}: expected one of {list(choices)}')
    return values
  return parse


def each_parses(item):
  """An absl list-flag validator from an argparse type above (e.g. int_arg(0)): True when every
  item parses."""
  def ok(values) -> bool:
    try:
      for v in values:
        item(v)
    except argparse.ArgumentTypeError:
      return False
    return True
  return ok


def names_a_folder(path: str) -> bool:
  """True for an `--out` value that is a folder (ends with a separator or is one)."""
  return bool(path) and (path.endswith(('/', os.sep)) or os.path.isdir(path))


def out_file_arg(text: str) -> str:
  """An argparse `type=` for `--out` (where a script also writes its JSON): a file path, refused
  at once when it names a folder (the write would fail only after the work)."""
  if names_a_folder(text):
    raise argparse.ArgumentTypeError(f'{text} is a folder; expected the path of the JSON file')
  return text


def header(text: str) -> None:
  """`== text ==` on the terminal (stderr; process 0 only)."""
  say(f'== {text} ==')


def say(text: str) -> None:
  """A status line on the terminal (stderr; process 0 only); not logged: log it separately."""
  if is_primary():
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ log file
def log_path(workdir: str) -> str:
  """WORKDIR/log.txt on process 0; WORKDIR/log.process<i>.txt on the others."""
  index = _process_index()
  name = LOG_FILE if index == 0 else f'log.process{index}.txt'
  return os.path.join(os.fspath(workdir), name)


@contextlib.contextmanager
def log_to_file(workdir: str) -> Iterator[str]:
  """Appends every logging record at INFO and above to WORKDIR/log.txt while the body runs.

  Writes a header (time, pid, command line) first, and the traceback of an exception that leaves
  the body. The root and absl loggers are lowered to INFO for the duration when they are above it
  (in-process callers such as tests, where absl's app.run did not set them); the terminal's
  handler keeps its own level (`configure_terminal`). Yields the log's path.
  """
  path = log_path(workdir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handler = py_logging.FileHandler(path, mode='a', encoding='utf-8')
  handler.setLevel(min(py_logging.INFO, terminal_level()))   # DEBUG too only with -v 1
  handler.setFormatter(logging.PythonFormatter())
  now = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
  command = shlex.join(getattr(sys, 'orig_argv', sys.argv))
  handler.stream.write(f'\n===== crossjepa run {now}, pid {os.getpid()} =====\n'
                       f'command: {command}\ncwd: {os.getcwd()}\n')
  handler.flush()
  root, absl_logger = py_logging.root, logging.get_absl_logger()
  saved = root.level, absl_logger.level
  root.setLevel(min(root.level, py_logging.INFO))
  if absl_logger.level > py_logging.INFO:
    absl_logger.setLevel(py_logging.INFO)
  root.addHandler(handler)
  try:
    yield path
  except BaseException as e:
    with handler.lock:
      handler.stream.write(f'run failed: {type(e).__name__}: {e}\n' + traceback.format_exc())
      handler.flush()
    raise
  finally:
    root.removeHandler(handler)
    handler.close()
    root.setLevel(saved[0])
    absl_logger.setLevel(saved[1])


class _LogLines(io.TextIOBase):
  """A text stream that logs every complete line it receives as an INFO record."""

  def __init__(self, prefix: str):
    super().__init__()
    self._prefix = prefix
    self._pending = ''

  def writable(self) -> bool:
    return True

  def write(self, text: str) -> int:
    *lines, self._pending = (self._pending + text).split('\n')
    for line in lines:
      if line.strip():
        logging.info('%s%s', self._prefix, line.rstrip())
    return len(text)

  def flush(self) -> None:
    if self._pending.strip():
      logging.info('%s%s', self._prefix, self._pending.rstrip())
    self._pending = ''


@contextlib.contextmanager
def tfds_quiet() -> Iterator[None]:
  """TFDS's own tqdm bars off and its `print`s ("Downloading and preparing dataset ...", "Dataset
  ... downloaded and prepared") logged as INFO instead of printed (tensorflow_datasets 4.9 prints
  them with termcolor.cprint to stdout, whatever the logging levels).

  sys.stdout is process-wide while the body runs: keep the body to the TFDS call.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  sink = _LogLines('tfds: ')
  try:
    with contextlib.redirect_stdout(sink):
      yield
  finally:
    sink.flush()


# ------------------------------------------------------------------------------------------ progress
class _FinalLineBar(tqdm.tqdm):
  """A bar for a non-interactive stderr: no live display; one line when it closes (leave=True)."""

  def __init__(self, *args, **kwargs):
    # delay=inf: tqdm never draws; mininterval=inf: update() never even formats.
    super().__init__(*args, delay=math.inf, mininterval=math.inf, **kwargs)

  def close(self):
    line = None
    if not self.disable and self.leave:
      line = self.format_meter(**self.format_dict)
    super().close()
    if line is not None:
      self.fp.write(line + '\n')
      self.fp.flush()


def interactive() -> bool:
  """Whether stderr is a terminal (live bars) or not (CI, tests, pipes: one line per bar)."""
  return bool(getattr(sys.stderr, 'isatty', lambda: False)())


def progress(total: int | None = None, desc: str = '', unit: str = 'it', *, initial: int = 0,
             leave: bool = True, disable: bool | None = None) -> tqdm.tqdm:
  """A tqdm bar on stderr (see the module docstring); hidden on processes other than 0.

  Close it (`with` or `.close()`) when the stage ends: the non-TTY line is written then.
  """
  if disable is None:
    disable = not is_primary()
  kwargs = dict(total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=disable,
                file=sys.stderr)
  if interactive():
    return tqdm.tqdm(dynamic_ncols=True, **kwargs)
  return _FinalLineBar(**kwargs)
