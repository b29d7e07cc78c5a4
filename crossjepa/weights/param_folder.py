"""A weights folder: an Orbax checkpoint of a numpy tree in `params/` and a JSON file beside it.

The layout of both ViT checkpoints (`vit_io`, `vit_config.json`) and teacher folders
(`teacher_io`, `teacher.json`). `write` builds the folder under a temporary name and swaps it in
whole (`crossjepa.fileio.atomic_dir`), so a reader never sees a half-written one.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import numpy as np

from crossjepa import fileio

PARAMS_DIR = 'params'


def write(directory: str, tree, json_name: str, info: dict[str, Any],
          also: Callable[[str], None] | None = None) -> None:
  """Writes `directory/params` (Orbax, `tree`) + `directory/json_name` (`info`), and whatever
  `also(folder)` writes into the folder (a teacher's text tower), atomically."""
  with fileio.atomic_dir(directory) as tmp:
    write_into(tmp, tree, json_name, info)
    if also is not None:
      also(tmp)


def write_into(folder: str, tree, json_name: str, info: dict[str, Any]) -> None:
  """Writes `folder/params` (Orbax, `tree`) + `folder/json_name` (`info`) into a folder that is
  being built (not atomic by itself: `write` is)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.PyTreeCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(folder, PARAMS_DIR), tree)
  with open(os.path.join(folder, json_name), 'w') as f:
    json.dump(info, f, indent=2, sort_keys=True)


def check_checksum(tree, expected: str, where: str, recorded_in: str, remedy: str) -> None:
  """Raises ValueError when `expected` (the param_checksum `recorded_in` holds; '' = none recorded)
  is not the checksum of `tree` (crossjepa.models.vit.param_checksum). Orbax checks its index, not
  the arrays' bytes: this is what catches a modified or damaged weights folder."""
  from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  if expected and vit_lib.param_checksum(tree) != expected:
    raise ValueError(f'{where}: the parameters\' checksum does not match {recorded_in}\'s '
                     f'param_checksum {str(expected)[:16]}... (the folder was modified or '
                     f'damaged): {remedy}')


def restore(path: str):
  """The tree of the Orbax checkpoint folder `path` (absolute), as numpy arrays."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.PyTreeCheckpointer() as checkpointer, fileio.reading_checkpoint(path):
    metadata = checkpointer.metadata(path).item_metadata
    if metadata is None:   # orbax logs a warning and returns None for unreadable metadata
      raise ValueError('its tree metadata (_METADATA) is missing or unreadable')
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata.tree)
    return checkpointer.restore(path, restore_args=restore_args)
