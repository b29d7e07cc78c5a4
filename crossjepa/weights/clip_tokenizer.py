"""CLIP's byte-level BPE tokenizer, for the text towers of OpenAI CLIP, open_clip and HF CLIP.

A CLIP text tower is only as good as the ids fed to it: they must be the ones its weights were
trained on. This module reproduces OpenAI's `clip/simple_tokenizer.py` (which open_clip copies) on
top of the Hugging Face `tokenizers` library, offline, from either vocabulary layout:

  * a folder with HF CLIP's `vocab.json` + `merges.txt` (openai/clip-vit-*, laion/CLIP-ViT-*);
  * open_clip's / OpenAI's `bpe_simple_vocab_16e6.txt.gz` (a header line, then merges; the
    vocabulary derives from the first 48894 merges: the 256 byte symbols, the same with '</w>', one
    token per merge, '<|startoftext|>', '<|endoftext|>').

The `tokenizers` pipeline is the one transformers' `CLIPConverter` builds (NFC, whitespace collapse,
lowercase; CLIP's regex split; byte-level symbols; BPE with the end-of-word suffix '</w>'), without
its post-processor: `CLIPTokenizer.encode` adds the start / end tokens, truncates and pads the way
open_clip's `tokenize` does. Before that, text is cleaned the way OpenAI's tokenizer does it, less
ftfy's repairs of mojibake: NFC (ftfy's last step), HTML entities unescaped twice (which
transformers' CLIP tokenizer does not do: '&amp;' stays three tokens there), whitespace collapsed,
then Python's lowercasing (whose final sigma 'ς' the normalizer's Lowercase does not produce). The
normalizer repeats NFC, collapse and lowercase, a no-op on cleaned text. The two special tokens
written literally in a prompt are those tokens, in any case, as in OpenAI's tokenizer (its
case-insensitive split pattern lists them).
"""
from __future__ import annotations

import gzip
import html
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Sequence

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE

from crossjepa.weights.errors import ConvertError

SOT = '<|startoftext|>'
EOT = '<|endoftext|>'
EOW = '</w>'                        # CLIP's end-of-word suffix
NUM_MERGES = 49152 - 256 - 2        # the merges OpenAI's CLIP uses from bpe_simple_vocab_16e6
VOCAB_FILE, MERGES_FILE = 'vocab.json', 'merges.txt'
# CLIP's pre-tokenization (OpenAI's pattern less its special tokens, which are added tokens here).
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Python's \s less U+001C..U+001F: the Unicode White_Space that open_clip's `regex` \s matches.
_WHITESPACE = re.compile(r'[^\S\x1c-\x1f]+')


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2 / CLIP's byte -> printable character table: the printable Latin-1 bytes map to
  themselves, the other 68 (controls, space, ...) to U+0100 onwards, in byte order."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
               *range(ord('®'), ord('ÿ') + 1)]
  table = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in table:
      table[b] = chr(256 + extra)
      extra += 1
  return table


def clean_text(text: str) -> str:
  """OpenAI's / open_clip's `whitespace_clean(basic_clean(text)).lower()` with ftfy reduced to its
  NFC: HTML entities unescaped twice, whitespace runs collapsed to one space, ends stripped."""
  text = html.unescape(html.unescape(unicodedata.normalize('NFC', text))).strip()
  return _WHITESPACE.sub(' ', text).strip().lower()


def _read_text(path: str) -> str:
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        data = f.read()
    else:
      with open(path, 'rb') as f:
        data = f.read()
    return data.decode('utf-8')
  except FileNotFoundError:
    raise
  except (OSError, EOFError, UnicodeDecodeError) as e:    # gzip.BadGzipFile is an OSError
    raise ConvertError(f'{path}: cannot read it as UTF-8 text ({e})') from None


def _merge_line(line: str, path: str, lineno: int) -> tuple[str, str]:
  parts = line.split()
  if len(parts) != 2:
    raise ConvertError(f'{path}: line {lineno}: a merge is two space-separated symbols, '
                       f'got {line.strip()!r}')
  return parts[0], parts[1]


def _read_hf_vocab(path: str) -> dict[str, int]:
  try:
    with open(path, encoding='utf-8') as f:
      vocab = json.load(f)
  except FileNotFoundError:
    raise
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ConvertError(f'{path}: not a readable JSON file ({e})') from None
  if not isinstance(vocab, dict):
    raise ConvertError(f'{path}: expected a JSON object token -> id, got a {type(vocab).__name__}')
  for token, i in vocab.items():
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < 2**31:
      raise ConvertError(f'{path}: token {token!r} has id {i!r}; ids are integers in [0, 2^31)')
  return vocab


def _read_hf_folder(folder: str) -> tuple[dict[str, int], list[tuple[str, str]], dict[int, str]]:
  vocab_path, merges_path = os.path.join(folder, VOCAB_FILE), os.path.join(folder, MERGES_FILE)
  for p in (vocab_path, merges_path):
    if not os.path.isfile(p):
      raise FileNotFoundError(f'{p}: not found; a CLIP tokenizer folder holds {VOCAB_FILE} and '
                              f'{MERGES_FILE} (the Hugging Face layout)')
  vocab = _read_hf_vocab(vocab_path)
  merges, lines = [], {}
  for lineno, line in enumerate(_read_text(merges_path).split('\n'), start=1):
    if not line.strip() or (lineno == 1 and line.startswith('#version')):
      continue
    merges.append(_merge_line(line, merges_path, lineno))
    lines[len(merges) - 1] = f'{merges_path}: line {lineno}'
  return vocab, merges, lines


def _read_bpe_file(path: str) -> tuple[dict[str, int], list[tuple[str, str]], dict[int, str]]:
  """open_clip / OpenAI's format: line 0 a header, then merges; the vocabulary derives from them."""
  if path.endswith('.json'):
    raise ConvertError(f'{path}: pass the folder holding {VOCAB_FILE} and {MERGES_FILE}, or a '
                       'bpe_simple_vocab_16e6.txt.gz file')
  all_lines = _read_text(path).split('\n')
  merges, lines = [], {}
  for lineno, line in enumerate(all_lines[1:NUM_MERGES + 1], start=2):
    if line.strip():
      merges.append(_merge_line(line, path, lineno))
      lines[len(merges) - 1] = f'{path}: line {lineno}'
  symbols = list(bytes_to_unicode().values())
  tokens = symbols + [s + EOW for s in symbols] + [a + b for a, b in merges] + [SOT, EOT]
  vocab = {t: i for i, t in enumerate(tokens)}   # a repeated token keeps its last id (open_clip)
  return vocab, merges, lines


def _check_vocab(vocab: dict[str, int], where: str) -> None:
  missing = [t for t in (SOT, EOT) if t not in vocab]
  if missing:
    raise ConvertError(f'{where}: the vocabulary lacks CLIP\'s special token(s) '
                       f'{", ".join(missing)} (needs {SOT} and {EOT})')
  symbols = list(bytes_to_unicode().values())
  absent = [s for s in symbols + [s + EOW for s in symbols] if s not in vocab]
  if absent:   # a missing one would become the unknown token: an end of text mid-prompt
    raise ConvertError(f'{where}: the vocabulary lacks {len(absent)} of the 512 byte symbols, '
                       f'e.g. {absent[:4]}; not a CLIP byte-level BPE vocabulary')


def _check_merges(vocab: dict[str, int], merges: Sequence[tuple[str, str]],
                  where: dict[int, str] | None, default: str) -> None:
  for k, (a, b) in enumerate(merges):
    bad = [t for t in (a, b, a + b) if t not in vocab]
    if bad:
      at = (where or {}).get(k, f'{default}: merge {k}')
      raise ConvertError(f'{at}: merge {a!r} {b!r}: {bad[0]!r} is not in the vocabulary')


def read_vocabulary(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
  """(vocab token -> id, merges in rank order) from a folder with HF CLIP's vocab.json +
  merges.txt, or from an open_clip / OpenAI `bpe_simple_vocab_16e6.txt.gz` (or plain .txt) file.

  Raises FileNotFoundError for a missing path or file, ConvertError (a ValueError) naming the file
  (and line) for malformed contents."""
  path = os.fspath(path)
  if os.path.isdir(path):
    vocab, merges, lines = _read_hf_folder(path)
    where = os.path.join(path, VOCAB_FILE)
  elif os.path.isfile(path):
    vocab, merges, lines = _read_bpe_file(path)
    where = path
  else:
    raise FileNotFoundError(f'{path}: not found; expected a folder with {VOCAB_FILE} + '
                            f'{MERGES_FILE} (Hugging Face CLIP) or a bpe_simple_vocab_16e6.txt.gz '
                            'file (open_clip / OpenAI CLIP)')
  _check_vocab(vocab, where)
  _check_merges(vocab, merges, lines, where)
  return vocab, merges


def _atomic_write(path: str, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.' + os.path.basename(path),
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'w', encoding='utf-8', newline='\n') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class CLIPTokenizer:
  """CLIP's BPE tokenizer: `encode` gives the [n, context_length] ids a CLIP text tower reads."""

  def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]]):
    """vocab: token -> id; merges: symbol pairs in rank order (as `read_vocabulary` gives them)."""
    if not isinstance(vocab, dict):
      raise ConvertError(f'vocab: expected a dict token -> id, got a {type(vocab).__name__}')
    self._vocab = dict(vocab)
    self._merges = [(str(a), str(b)) for a, b in merges]
    _check_vocab(self._vocab, 'vocab')
    _check_merges(self._vocab, self._merges, None, 'merges')
    try:
      model = BPE(vocab=self._vocab, merges=self._merges, dropout=None,
                  continuing_subword_prefix='', end_of_word_suffix=EOW, fuse_unk=False,
                  unk_token=EOT)
    except Exception as e:  # pylint: disable=broad-except  # tokenizers raises plain Exception
      raise ConvertError(f'vocab/merges: not a valid BPE model ({e})') from None
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(Regex(r'\s+'), ' '), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior='removed', invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    # Matched on the normalized (lowercased) text, as OpenAI's case-insensitive pattern does.
    tok.add_special_tokens([AddedToken(t, normalized=True, special=True) for t in (SOT, EOT)])
    self._tokenizer = tok

  @property
  def sot_id(self) -> int:
    """Id of '<|startoftext|>'."""
    return self._vocab[SOT]

  @property
  def eot_id(self) -> int:
    """Id of '<|endoftext|>' (the token a CLIP text tower pools)."""
    return self._vocab[EOT]

  @property
  def vocab_size(self) -> int:
    """Rows the token embedding needs: the largest id + 1 (49408 for CLIP)."""
    return max(self._vocab.values()) + 1

  @property
  def vocab(self) -> dict[str, int]:
    """A copy of the vocabulary, token -> id."""
    return dict(self._vocab)

  @property
  def merges(self) -> list[tuple[str, str]]:
    """A copy of the merges, in rank order."""
    return list(self._merges)

  def tokens(self, text: str) -> list[int]:
    """The BPE ids of one text, without the start / end tokens and untruncated."""
    return self._tokenizer.encode(clean_text(text), add_special_tokens=False).ids

  def encode(self, texts: Sequence[str], context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32 [n, context_length], eot positions int32 [n]) for n texts (a bare str is one).

    Each row is [sot] + tokens + [eot], padded with 0; a longer one is cut to context_length with
    eot as its last token (open_clip's `tokenize`). The position is that of the row's first eot,
    where CLIP text towers pool (OpenAI's argmax, HF's first eos)."""
    if isinstance(texts, str):
      texts = [texts]
    if (isinstance(context_length, bool) or not isinstance(context_length, (int, np.integer))
        or context_length < 2):
      raise ValueError(f'context_length must be an integer >= 2 (start and end tokens), '
                       f'got {context_length!r}')
    texts = list(texts)
    for i, t in enumerate(texts):
      if not isinstance(t, str):
        raise ValueError(f'texts[{i}]: expected a str, got a {type(t).__name__}')
    n, length = len(texts), int(context_length)
    ids = np.zeros((n, length), np.int32)
    eot_pos = np.zeros((n,), np.int32)
    sot, eot = self.sot_id, self.eot_id
    for i, text in enumerate(texts):   # not encode_batch: its thread pool warns in forked children
      row = [sot, *self.tokens(text), eot]
      if len(row) > length:
        row = row[:length]
        row[-1] = eot
      ids[i, :len(row)] = row
      eot_pos[i] = row.index(eot)
    return ids, eot_pos

  def save(self, directory: str) -> None:
    """Writes vocab.json and merges.txt (HF's layout, '#version: 0.2' first) into an existing
    folder, each atomically (a temporary file in that folder, then os.replace)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
      raise FileNotFoundError(f'{directory}: no such folder to save the CLIP tokenizer in')
    ordered = dict(sorted(self._vocab.items(), key=lambda kv: kv[1]))
    _atomic_write(os.path.join(directory, VOCAB_FILE),
                  json.dumps(ordered, ensure_ascii=False) + '\n')
    _atomic_write(os.path.join(directory, MERGES_FILE),
                  '#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in self._merges))

  @classmethod
  def load(cls, directory: str) -> CLIPTokenizer:
    """The tokenizer `save` wrote (or any HF CLIP tokenizer folder)."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
      raise FileNotFoundError(f'{directory}: no such folder; expected one holding {VOCAB_FILE} '
                              f'and {MERGES_FILE}')
    return cls(*read_vocabulary(directory))

  @classmethod
  def from_path(cls, path: str) -> CLIPTokenizer:
    """From an HF CLIP tokenizer folder or a bpe_simple_vocab_16e6.txt.gz (see read_vocabulary)."""
    return cls(*read_vocabulary(path))
