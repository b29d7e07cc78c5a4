"""Runs a config file's `sweep()` one run after another and tabulates their results.

    python -m crossjepa.sweep --config=configs/X.py --workdir=DIR [--dry_run] [--rerun]

A config file may define `sweep()` returning a list of override dicts, e.g.
`[{'train.target': 'cls'}, {'train.target': 'groups'}]` (big_vision's habit: the sweep lives next
to the config it sweeps). Run i goes to DIR/<i>_<slug of its overrides> through
`crossjepa.run.run(config, workdir, mode='all')`; afterwards every run's results.json is collected
into DIR/sweep.json (full results, overrides, status) and DIR/sweep.md (a table of the headline
numbers; with the embedded benchmark, also its table's every row as mean ± std over its seeds,
from each run's benchmark.json). `--dry_run` prints the equivalent `python -m crossjepa.main` command of each run
instead, so a sweep can be handed to a cluster scheduler. `--config.a.b=v` overrides on the sweep's
command line apply to every run (and appear in the printed commands).

A run whose folder already holds results.json is collected without rerunning it, unless --rerun.

Errors fail like `crossjepa.main`: one line `crossjepa.sweep: error: <file>: <what was wrong>` on
stderr and exit status 2, without a traceback, for every mistake found before the first run starts
(a missing config file, one that does not import or whose get_config() / sweep() raises -- named
with its line --, a sweep() that is not a list of override dicts, an override of a key the config
lacks or with a value of the wrong type, in sweep() or on the command line, a bad flag). All runs'
overrides are checked before the first run, so a typo in run 7 costs nothing.

A run that fails does not stop the sweep (the others are usually worth having): it is marked failed
in the table, with the exit status `python -m crossjepa.main` would have ended with (2: a user
error, whose one-line message is kept; 1: a crash, whose traceback is logged and kept in
sweep.json), and the sweep goes on. After the last run the sweep prints the table and, if any run failed, one error
line naming DIR/sweep.md and every failed run with its exit status and error, then exits 2. Rerun
the same command to retry only the failed runs (finished ones are collected).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import sys
import traceback
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from crossjepa import config_util
from crossjepa import console
from crossjepa import fileio
from crossjepa import run as run_lib

PROG = 'crossjepa.sweep'
_FLAGS: dict[str, Any] = {}


def define_flags() -> None:
  """Defines the absl flags; only when run as a script, so importing this module (tests, the
  lead's code) never clashes with crossjepa.main's --config/--workdir flags."""
  _FLAGS['config'] = config_flags.DEFINE_config_file(
      'config', None, 'Path to a config file that defines sweep().', lock_config=True)
  _FLAGS['workdir'] = flags.DEFINE_string('workdir', None,
                                          'Sweep folder; run i goes to WORKDIR/<i>_<slug>.')
  _FLAGS['dry_run'] = flags.DEFINE_bool('dry_run', False,
                                        'Print one crossjepa.main command per run instead.')
  _FLAGS['rerun'] = flags.DEFINE_bool('rerun', False,
                                      'Rerun runs whose folder already has results.json.')
  flags.mark_flags_as_required(['config', 'workdir'])


# Headline numbers first in the table; every other scalar accuracy/mean/std follows.
HEADLINE = ('probe.pretrained.accuracy', 'probe.random_init.accuracy')
_METRIC_RE = re.compile(r'(^|\.)(accuracy|accuracy_std|accuracy_vote|mean|std|mean_class_accuracy)$')


class SweepError(ValueError):
  """A sweep definition or override cannot work; the message names the file/key."""


def load_sweep(config_path: str) -> list[dict[str, Any]]:
  """Imports the config file and returns its validated `sweep()` list."""
  path = config_path.split(':', 1)[0]
  try:
    module = config_util.import_config_file(path)
    fn = getattr(module, 'sweep', None)
    if not callable(fn):
      raise SweepError(f'{path} defines no sweep() function; add `def sweep(): return '
                       "[{'train.steps': 100}, ...]` to sweep this config")
    runs = config_util.call_config_code(path, fn, 'sweep()')
  except config_util.ConfigError as e:  # the user's file does not load: its line is enough
    raise SweepError(str(e)) from e
  if not isinstance(runs, (list, tuple)) or not runs:
    raise SweepError(f'{path}: sweep() must return a non-empty list of override dicts, got {runs!r}')
  for i, r in enumerate(runs):
    if not isinstance(r, dict) or not all(isinstance(k, str) for k in r):
      raise SweepError(f'{path}: sweep()[{i}] must be a dict of dotted keys to values, got {r!r}')
  return [dict(r) for r in runs]


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]
                    ) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted-key overrides; an unknown key is an error naming it."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    parts = key.split('.')
    node = config
    for depth, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(parts[:depth]) or '<root>'
        raise SweepError(f'sweep override {key!r}: config has no key {part!r} under {where}')
      if depth < len(parts) - 1:
        node = node[part]
    old = node[parts[-1]]
    if isinstance(old, ml_collections.ConfigDict) and not isinstance(value, dict):
      raise SweepError(f'sweep override {key!r}: {key} is a group of keys, not a value')
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[parts[-1]] = value
    except (TypeError, ValueError, KeyError) as e:
      raise SweepError(f'sweep override {key!r} = {value!r}: {e}') from e
  return config


def _value_text(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return '(' + ','.join(_value_text(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def slug(overrides: dict[str, Any], max_len: int = 80) -> str:
  """'train.target=cls,train.steps=100' -> 'target=cls_steps=100' (file-system safe)."""
  text = '_'.join(f'{k.split(".")[-1]}={_value_text(v)}' for k, v in overrides.items()) or 'base'
  text = re.sub(r'[^A-Za-z0-9._=+-]+', '-', text).strip('-')
  return text[:max_len]


def run_dirname(index: int, overrides: dict[str, Any]) -> str:
  return f'{index:02d}_{slug(overrides)}'


def command_line(config_arg: str, run_workdir: str, overrides: dict[str, Any],
                 base_overrides: Sequence[str] = ()) -> str:
  args = ['python', '-m', 'crossjepa.main', f'--config={config_arg}', f'--workdir={run_workdir}',
          *base_overrides]
  args += [f'--config.{k}={_value_text(v)}' for k, v in overrides.items()]
  return ' '.join(shlex.quote(a) for a in args)


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  out = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(flatten(v, f'{prefix}.{k}' if prefix else str(k)))
  else:
    out[prefix] = tree
  return out


def headline_metrics(results: dict) -> dict[str, float]:
  """Scalar accuracy/mean/std entries of a results.json, protocols and per-seed lists excluded."""
  flat = flatten(results)
  return {k: v for k, v in flat.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and _METRIC_RE.search(k)
          and '.protocol.' not in f'.{k}.' and '.per_seed.' not in f'.{k}.'}


def benchmark_metrics(benchmark: dict) -> dict[str, float]:
  """The benchmark's table (a run's benchmark.json: every row over its seeds) as
  'benchmark.<set>.<row>.<metric>.mean' / '.std' scalars; per-seed lists and counts left out."""
  flat = flatten(benchmark.get('table', {}), 'benchmark')
  return {k: v for k, v in flat.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and k.endswith(('.mean', '.std'))}


def write_table(workdir: str, runs: list[dict]) -> dict:
  """Writes WORKDIR/sweep.json and WORKDIR/sweep.md from the collected runs; returns the table.

  sweep.json keeps every column; sweep.md shows a `X.mean` column and its `X.std` as one column
  `X`, cells `mean ± std`.
  """
  columns = sorted({k for r in runs for k in r.get('metrics', {})},
                   key=lambda k: (HEADLINE.index(k) if k in HEADLINE else len(HEADLINE), k))
  shown = []   # (header, column, its std column or None)
  for c in columns:
    base = c[:-len('.mean')]
    if c.endswith('.mean') and base + '.std' in columns:
      shown.append((base, c, base + '.std'))
    elif not (c.endswith('.std') and c[:-len('.std')] + '.mean' in columns):
      shown.append((c, c, None))
  lines = ['| run | overrides | status | ' + ' | '.join(h for h, _, _ in shown) + ' |',
           '|---|---|---|' + '---|' * len(shown)]
  for r in runs:
    status = r['status']
    if r.get('exit_status') is not None and status != 'ok':
      status += f' (exit {r["exit_status"]})'
    cells = [r['name'], ', '.join(f'`{k}={_value_text(v)}`' for k, v in r['overrides'].items()),
             status]
    metrics = r.get('metrics', {})
    for _, c, std in shown:
      v, sd = metrics.get(c), metrics.get(std)
      cells.append('' if v is None else f'{v:.4f}' + ('' if sd is None else f' ± {sd:.4f}'))
    lines.append('| ' + ' | '.join(cells) + ' |')
  table = {'columns': columns, 'runs': runs}
  fileio.atomic_write_text(os.path.join(workdir, 'sweep.json'),
                           json.dumps(table, indent=2, default=str))
  fileio.atomic_write_text(os.path.join(workdir, 'sweep.md'), '\n'.join(lines) + '\n')
  return table


def _read_json(path: str, what: str) -> tuple[Any, Optional[str]]:
  """(the file's JSON, None), or (None, a one-line error naming it)."""
  try:
    with open(path) as f:
      return json.load(f), None
  except (OSError, ValueError) as e:
    return None, f'{path}: not a readable {what} file ({e})'


def run_sweep(config: ml_collections.ConfigDict, config_path: str, workdir: str, *,
              dry_run: bool = False, rerun: bool = False,
              run_fn: Optional[Callable[..., Any]] = None, base_overrides: Sequence[str] = (),
              print_fn: Callable[[str], None] = print) -> dict:
  """Runs (or, with dry_run, prints) every run of the config file's sweep(); returns the table."""
  sweep = load_sweep(config_path)
  path = config_path.split(':', 1)[0]
  # Validate every run's overrides before starting the first one: a typo in run 7 should not
  # surface hours into the sweep.
  configs = []
  for i, o in enumerate(sweep):
    try:
      configs.append(apply_overrides(config, o))
      config_util.check_config(configs[-1])   # the declared schema and cross-field rules
    except (SweepError, config_util.ConfigError) as e:
      raise SweepError(f'{path}: sweep()[{i}]: {e}') from e
  names = [run_dirname(i, o) for i, o in enumerate(sweep)]
  if not dry_run:
    try:
      fileio.output_folder(workdir)
    except ValueError as e:
      raise SweepError(str(e)) from None
    for i, (name, cfg) in enumerate(zip(names, configs)):   # before the first run, like the keys
      run_workdir = os.path.join(workdir, name)
      if os.path.exists(os.path.join(run_workdir, 'results.json')):
        continue                                              # collected, not run
      try:
        run_lib.check_teacher_wheel(cfg, run_workdir)
      except (OSError, ValueError) as e:
        raise SweepError(f'{path}: sweep()[{i}]: {e}') from e
  if dry_run:
    for name, o in zip(names, sweep):
      print_fn(command_line(config_path, os.path.join(workdir, name), o, base_overrides))
    return {'commands': len(sweep)}
  if run_fn is None:
    run_fn = run_lib.run
  runs = []
  for name, o, cfg in zip(names, sweep, configs):
    run_workdir = os.path.join(workdir, name)
    results_path = os.path.join(run_workdir, 'results.json')
    record = {'name': name, 'overrides': o, 'workdir': run_workdir}
    if os.path.exists(results_path) and not rerun:
      logging.info('sweep: %s already has results.json; collecting it (--rerun to redo)', name)
    else:
      logging.info('sweep: run %s with %s', name, o)
      try:
        run_fn(cfg, run_workdir, mode='all')
      except run_lib.Stopped:   # a signal stops the sweep, not just this run
        write_table(workdir, runs)
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Recorded, not swallowed: the table shows it and the sweep exits 2 at the end. The exit
        # status is crossjepa.main's for the same run: 2 for a user error, 1 for a crash.
        user_error = isinstance(e, run_lib.UserError)
        record.update(status='failed', exit_status=2 if user_error else 1,
                      error=console.one_line(e) if user_error else f'{type(e).__name__}: {console.one_line(e)}',
                      traceback=traceback.format_exc())
        if user_error:
          logging.error('sweep: run %s failed: %s', name, record['error'])
        else:  # a programming error keeps its traceback
          logging.error('sweep: run %s crashed:\n%s', name, record['traceback'])
        runs.append(record)
        write_table(workdir, runs)
        continue
    if not os.path.exists(results_path):
      record.update(status='failed', exit_status=0, error=f'{results_path} was not written')
    else:
      results, error = _read_json(results_path, 'results')
      bench_path = os.path.join(run_workdir, 'benchmark.json')
      if not error:
        record.update(status='ok', metrics=headline_metrics(results), results=results)
        if os.path.exists(bench_path):   # the embedded benchmark's table, over its seeds
          bench, error = _read_json(bench_path, 'benchmark')
          if not error:
            record['metrics'].update(benchmark_metrics(bench))
            record['benchmark'] = bench
      if error:
        record.update(status='failed', error=error)
    runs.append(record)
    write_table(workdir, runs)  # after every run, so a long sweep can be watched
  return write_table(workdir, runs)


def failure_summary(workdir: str, runs: list[dict]) -> Optional[str]:
  """The one error line of a sweep with failed runs (None when every run is ok)."""
  failed = [r for r in runs if r['status'] != 'ok']
  if not failed:
    return None
  parts = []
  for r in failed:
    status = f'exit status {r["exit_status"]}: ' if r.get('exit_status') is not None else ''
    parts.append(f'{r["name"]} ({status}{r.get("error", "failed")})')
  return (f'{os.path.join(workdir, "sweep.md")}: {len(failed)} of {len(runs)} runs failed: '
          + '; '.join(parts))


def fail(message: str) -> None:
  """Ends the program like crossjepa.main does for a user error: one line on stderr, exit 2."""
  console.fail(PROG, message)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with user errors failing like crossjepa.main (one line, exit 2)."""
  return config_util.parse_flags(argv, PROG)


def main(argv):
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]} (every option is a --flag=value)')
  console.configure_terminal()   # INFO to each run's WORKDIR/log.txt, not to the terminal
  config_path = config_flags.get_config_filename(flags.FLAGS['config'])
  workdir = _FLAGS['workdir'].value
  base = [a for a in sys.argv[1:] if a.startswith('--config.')]
  try:
    table = run_sweep(_FLAGS['config'].value, config_path, workdir,
                      dry_run=_FLAGS['dry_run'].value, rerun=_FLAGS['rerun'].value,
                      base_overrides=base)
  except SweepError as e:
    fail(str(e))
  except KeyboardInterrupt:
    print(f'\n{PROG}: interrupted (Ctrl-C); run the same command again: finished runs are '
          'collected, the others go on', file=sys.stderr)
    sys.exit(128 + signal.SIGINT)
  except run_lib.Stopped as e:
    print(f'{PROG}: {e}; the sweep stops at this run', file=sys.stderr)
    sys.exit(e.exit_status)
  except BrokenPipeError:
    # `--dry_run | head`: the reader has what it wanted. Python's own flush of stdout at exit
    # would fail again on the closed pipe, so stdout is pointed at /dev/null first.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  if not _FLAGS['dry_run'].value:
    with open(os.path.join(workdir, 'sweep.md')) as f:
      print(f.read())
    summary = failure_summary(workdir, table['runs'])
    if summary:
      fail(summary)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=parse_flags)
