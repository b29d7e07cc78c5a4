"""The validators of config values: small callables, `validator(value)` -> an error text or None.

`crossjepa.config_schema.SCHEMA` assigns one to every config key (`Int(1)`, `Choice(...)`, ...);
the texts say what was expected, and config_schema.check puts the key and the value in front.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import ml_collections


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


@dataclasses.dataclass(frozen=True)
class Int:
  lo: int | None = None
  hi: int | None = None
  also: tuple = ()   # extra allowed values outside [lo, hi] (e.g. -1 = "all")

  def __call__(self, v):
    if not _is_int(v):
      return f'expected an integer{self._range()}'
    if v in self.also:
      return None
    if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
      return f'expected an integer{self._range()}'
    return None

  def _range(self):
    parts = []
    if self.lo is not None and self.hi is not None:
      parts.append(f' in [{self.lo}, {self.hi}]')
    elif self.lo is not None:
      parts.append(f' >= {self.lo}')
    elif self.hi is not None:
      parts.append(f' <= {self.hi}')
    if self.also:
      parts.append(' or ' + ' or '.join(map(str, self.also)))
    return ''.join(parts)


@dataclasses.dataclass(frozen=True)
class Float:
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False   # lo itself excluded
  hi_open: bool = False

  def __call__(self, v):
    if not _is_number(v):
      return f'expected a finite number{self._range()}'
    bad_lo = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
    bad_hi = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
    if bad_lo or bad_hi:
      return f'expected a number{self._range()}'
    return None

  def _range(self):
    if self.lo is None and self.hi is None:
      return ''
    lo = '-inf' if self.lo is None else f'{self.lo:g}'
    hi = 'inf' if self.hi is None else f'{self.hi:g}'
    return f' in {"(" if self.lo_open or self.lo is None else "["}{lo}, {hi}{")" if self.hi_open or self.hi is None else "]"}'


class Bool:

  def __call__(self, v):
    return None if isinstance(v, bool) else 'expected True or False'


@dataclasses.dataclass(frozen=True)
class Str:
  pattern: str | None = None   # full match, when given
  empty: bool = True
  what: str = ''

  def __call__(self, v):
    if not isinstance(v, str):
      return 'expected a string' + (f' ({self.what})' if self.what else '')
    if not v and not self.empty:
      return 'expected a non-empty string' + (f' ({self.what})' if self.what else '')
    if v and self.pattern and not re.fullmatch(self.pattern, v):
      return f'expected a string matching {self.pattern}' + (f' ({self.what})' if self.what else '')
    return None


@dataclasses.dataclass(frozen=True)
class Choice:
  choices: tuple

  def __call__(self, v):
    return None if v in self.choices else f'expected one of {list(self.choices)}'


@dataclasses.dataclass(frozen=True)
class Seq:
  """A tuple (or list) of values that each pass `item`; `length` fixed or `min_len` at least."""
  item: Any
  length: int | None = None
  min_len: int = 0
  ordered: bool = False   # a (lo, hi) pair with lo <= hi

  def __call__(self, v):
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
      return f'expected a tuple{self._shape()}'
    if (self.length is not None and len(v) != self.length) or len(v) < self.min_len:
      return f'expected a tuple{self._shape()}, got {len(v)} values'
    for x in v:
      err = self.item(x)
      if err:
        return f'item {x!r}: {err}'
    if self.ordered and len(v) == 2 and v[0] > v[1]:
      return 'expected (low, high) with low <= high'
    return None

  def _shape(self):
    if self.length is not None:
      return f' of {self.length} values'
    return f' of at least {self.min_len} value(s)' if self.min_len else ''


class Dict:
  """A free-form mapping (dataclass-field overrides): its keys are checked by the code that uses
  it, against the dataclass it overrides."""

  def __call__(self, v):
    if isinstance(v, (dict, ml_collections.ConfigDict)):
      return None
    return 'expected a mapping (e.g. {\'depth\': 4})'


class ParamRules:
  """Ordered (regex, {'freeze': bool, 'weight_decay': bool, 'lr_mult': float}) pairs."""

  FIELDS = {'freeze': Bool(), 'weight_decay': Bool(), 'lr_mult': Float(0.0)}

  def __call__(self, v):
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
      return 'expected a tuple of (regex, {field: value}) pairs'
    for rule in v:
      if (isinstance(rule, (str, bytes)) or not isinstance(rule, Sequence) or len(rule) != 2
          or not isinstance(rule[0], str) or not isinstance(rule[1], (dict, ml_collections.ConfigDict))):
        return f'rule {rule!r}: expected a (regex, {{field: value}}) pair'
      try:
        re.compile(rule[0])
      except re.error as e:
        return f'rule {rule[0]!r}: not a regular expression ({e})'
      for field, value in dict(rule[1]).items():
        if field not in self.FIELDS:
          return f'rule {rule[0]!r}: unknown field {field!r}; expected {list(self.FIELDS)}'
        err = self.FIELDS[field](value)
        if err:
          return f'rule {rule[0]!r}, {field}: {err}'
    return None
