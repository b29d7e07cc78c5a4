"""Atomic writes: build a file or folder under a temporary name, then rename it into place.

The two primitives are `atomic_write(path)` (a file) and `atomic_dir(directory)` (a folder); every
writer in the package goes through them, so nothing a reader sees is ever half-written. The
temporary is a sibling of the target (same file system, so the rename is atomic) and is removed if
the block raises.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from typing import IO, Iterator


def swap_in(tmp: str, directory: str) -> None:
  """Moves the finished folder `tmp` to `directory`, replacing any previous one.

  The old folder is first renamed aside (into a temporary sibling), so `directory` never holds a
  half-written mix; the old copy is removed once the new one is in place. `tmp` and `directory`
  must be on the same file system (make `tmp` a sibling).
  """
  parent = os.path.dirname(os.path.abspath(directory))
  old = None
  if os.path.exists(directory):
    old = tempfile.mkdtemp(prefix=os.path.basename(directory) + '.old-', dir=parent)
    os.rename(directory, os.path.join(old, 'previous'))
  os.rename(tmp, directory)
  if old:
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = 'w') -> Iterator[IO]:
  """`with atomic_write(path) as f:` writes a temporary sibling, renamed to `path` on success.

  The temporary keeps `path`'s extension (libraries that pick a format from the name, such as
  matplotlib's savefig, see the right one). `mode` is 'w' (text) or 'wb'.
  """
  if mode not in ('w', 'wb'):
    raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  base, ext = os.path.splitext(os.path.basename(path))
  fd, tmp = tempfile.mkstemp(prefix=f'.{base}.tmp-', suffix=ext, dir=directory)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(directory: str) -> Iterator[str]:
  """`with atomic_dir(out) as tmp:` fills the temporary folder `tmp`, swapped in as `out` on success
  (`swap_in`: an existing `out` is replaced whole, never mixed); on an error `tmp` is removed."""
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(directory)}.tmp-', dir=parent)
  try:
    yield tmp
    swap_in(tmp, directory)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


# tensorstore appends the JSON spec of the store it failed on: kilobytes that name no cause.
_TENSORSTORE_SPEC = re.compile(r"\s*\[tensorstore_spec='.*'\]\s*$", re.S)


@contextlib.contextmanager
def reading_checkpoint(path: str, remedy: str = 'write it again, or copy it again from its source'
                       ) -> Iterator[None]:
  """Around an Orbax restore of the checkpoint folder `path` (an export, a teacher's params, a
  training checkpoint): a folder that does not read (a failed checksum, a truncated or missing
  file, metadata gone) is a ValueError naming it, with tensorstore's message cut to its cause."""
  try:
    yield
  except (ValueError, OSError, KeyError, AttributeError) as e:
    text = _TENSORSTORE_SPEC.sub('', '; '.join(l.strip() for l in str(e).splitlines() if l.strip()))
    raise ValueError(f'{path}: the Orbax checkpoint does not read ({type(e).__name__}: {text}); '
                     f'it is damaged or incomplete: {remedy}') from e


def output_folder(path: str, flag: str = '--workdir') -> str:
  """Makes the folder `path` a program writes into (parents too) and checks it can be written;
  ValueError naming `flag` when it is a file, cannot be made or is read-only."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f'{flag}={path}: exists and is not a folder')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ValueError(f'{flag}={path}: cannot make the folder ({e.strerror or e})') from None
  if not os.access(path, os.W_OK | os.X_OK):
    raise ValueError(f'{flag}={path}: the folder is not writable')
  return path


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically."""
  with atomic_write(path) as f:
    f.write(text)


def print_json(obj, path: str = '', indent: int = 1) -> str:
  """Prints `obj` as JSON (the benchmark scripts' output) and, if `path`, writes it there
  atomically; returns the text."""
  import json  # pylint: disable=g-import-not-at-top
  text = json.dumps(obj, indent=indent)
  print(text)
  if path:
    atomic_write_text(path, text + '\n')
  return text


def atomic_save_npz(path: str, arrays) -> None:
  """np.savez of `arrays` (a dict) to `path` atomically."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  with atomic_write(path, 'wb') as f:
    np.savez(f, **arrays)
