"""Atomic writes: build a file or folder under a temporary name, then rename it into place."""
import os
import shutil
import tempfile


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


def atomic_write_text(path: str, text: str) -> None:
  """Writes `path` via a temporary sibling renamed into place (never half-written)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_save_npz(path: str, arrays) -> None:
  """np.savez of `arrays` (a dict) via a temporary sibling renamed into place."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp-{os.getpid()}.npz'
  try:
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
