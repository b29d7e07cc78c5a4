"""The user-error type of weight conversion, and the one-line text of an OSError.

A `ConvertError` means the user's input (a file, a flag, an --output) cannot be converted; its
message starts with that file or flag. `crossjepa.convert_teacher` turns it into one line on stderr
and exit status 2; any other ValueError is a bug and keeps its traceback.
"""
from __future__ import annotations


class ConvertError(ValueError):
  """The user's input cannot be converted; the one-line message starts with the file or flag."""


def os_error_text(e: OSError) -> str:
  """'<file>: <reason>' for an OSError (str() of one reads '[Errno 13] Permission denied: ...')."""
  if e.filename:
    return f'{e.filename}: {e.strerror or e}'
  return str(e)
