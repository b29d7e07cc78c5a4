"""Atomic folder writes: build a folder under a temporary name, then swap it into place."""
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
