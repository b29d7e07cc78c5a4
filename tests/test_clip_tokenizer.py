"""crossjepa.weights.clip_tokenizer: a tiny BPE vocabulary learned here, in both file layouts,
checked against transformers' CLIPTokenizer and against a pure-Python BPE written the way OpenAI's
simple_tokenizer works."""
from __future__ import annotations

import collections
import gzip
import html
import json
import os
import re
import unicodedata

import numpy as np
import pytest
import regex

from crossjepa.weights import clip_tokenizer as ct

SOT, EOT = '<|startoftext|>', '<|endoftext|>'
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLASSES = ['chair', 'airplane', 'bookcase', 'night stand', 'mug', 'bed', 'table', 'sofa', 'bathtub',
           'bench', 'bottle', 'bowl', 'car', 'cone', 'cup', 'curtain', 'desk', 'door', 'dresser',
           'flower pot', 'glass box', 'guitar', 'keyboard', 'lamp', 'laptop', 'mantel', 'monitor',
           'person', 'piano', 'plant', 'radio', 'range hood', 'sink', 'stairs', 'stool', 'tent',
           'toilet', 'tv stand', 'vase', 'wardrobe', 'xbox']
TEMPLATES = ['a photo of a {}.', 'a rendering of the {}.', 'a photo of the {}, it\'s a {}!',
             'a 3d model of a {}', 'a point cloud of the {}']
CORPUS = ' '.join([t.format(c, c) for t in TEMPLATES for c in CLASSES] + [
    'the airplane is on the night stand; a mug, a chair and a bookcase (rendering).',
    "it's the best photo. don't render 0 1 2 3 4 5 6 7 8 9 10 66 - t-shirt red", 'café'])
CONTEXT = 77

PROMPTS = [
    'a photo of a chair.',
    'a rendering of the night stand.',
    'A PHOTO OF THE AIRPLANE',
    '  a   photo\tof a\t\tmug \n ',
    "it's a bookcase, don't you think?",
    'route 66',
    't-shirt, (red)!',
    'café au lait',
    'naïve Ünïcödé straße',
    'zebra 🙂 xylophone',
    '',
    '   \t ',
    'a <|endoftext|> b',
    'rock &amp; roll',
    'fish &amp;amp; chips',
]
LONG = 'a photo of a chair on the night stand next to the bookcase ' * 8


def learn_bpe(text: str, num_merges: int) -> list[tuple[str, str]]:
  """Greedy BPE on CLIP's pre-tokenized, byte-encoded words: the most frequent adjacent pair
  (ties: the smallest pair) whose merged symbol is new, merged everywhere, num_merges times."""
  b2u = ct.bytes_to_unicode()
  words = collections.Counter()
  for w in regex.findall(CLIP_PATTERN, text.lower()):
    w = [b2u[b] for b in w.encode('utf-8')]
    words[tuple(w[:-1] + [w[-1] + '</w>'])] += 1
  have = set(b2u.values()) | {s + '</w>' for s in b2u.values()}
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for w, c in words.items():
      for p in zip(w, w[1:]):
        if p[0] + p[1] not in have:
          pairs[p] += c
    if not pairs:
      break
    best = min(pairs, key=lambda p: (-pairs[p], p))
    merges.append(best)
    have.add(best[0] + best[1])
    merged = collections.Counter()
    for w, c in words.items():
      out, i = [], 0
      while i < len(w):
        if i + 1 < len(w) and (w[i], w[i + 1]) == best:
          out.append(w[i] + w[i + 1])
          i += 2
        else:
          out.append(w[i])
          i += 1
      merged[tuple(out)] += c
    words = merged
  return merges


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
  syms = list(ct.bytes_to_unicode().values())
  tokens = syms + [s + '</w>' for s in syms] + [a + b for a, b in merges] + [SOT, EOT]
  assert len(set(tokens)) == len(tokens)
  return {t: i for i, t in enumerate(tokens)}


def write_hf(folder: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> str:
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(vocab, f, ensure_ascii=False)
  with open(os.path.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
  return folder


def write_gz(path: str, merges: list[tuple[str, str]]) -> str:
  with gzip.open(path, 'wt', encoding='utf-8') as f:
    f.write('"bpe_simple_vocab_16e6.txt#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges))
  return path


@pytest.fixture(scope='module')
def bpe(tmp_path_factory):
  merges = learn_bpe(CORPUS, 200)
  vocab = clip_vocab(merges)
  root = tmp_path_factory.mktemp('clip_bpe')
  return dict(merges=merges, vocab=vocab, hf=write_hf(str(root / 'hf'), vocab, merges),
              gz=write_gz(str(root / 'bpe_simple_vocab_16e6.txt.gz'), merges))


@pytest.fixture(scope='module')
def tok(bpe):
  return ct.CLIPTokenizer.from_path(bpe['hf'])


# ---------------------------------------------------------------------------------- references

def reference_encode(text: str, vocab: dict[str, int], merges: list[tuple[str, str]]) -> list[int]:
  """OpenAI's simple_tokenizer: clean (NFC standing in for ftfy), lowercase, split with the special
  tokens first and case-insensitively, byte-encode, then merge the lowest-ranked pair until none."""
  ranks = {m: i for i, m in enumerate(merges)}
  b2u = ct.bytes_to_unicode()
  text = html.unescape(html.unescape(unicodedata.normalize('NFC', text))).strip()
  text = regex.sub(r'\s+', ' ', text).strip().lower()     # open_clip's whitespace_clean
  pattern = regex.compile(r'<\|startoftext\|>|<\|endoftext\|>|' + CLIP_PATTERN, regex.IGNORECASE)
  ids = [vocab[SOT]]
  for piece in pattern.findall(text):
    if piece in (SOT, EOT):
      ids.append(vocab[piece])
      continue
    chars = [b2u[b] for b in piece.encode('utf-8')]
    word = tuple(chars[:-1]) + (chars[-1] + '</w>',)
    while len(word) > 1:
      pairs = set(zip(word, word[1:]))
      first, second = min(pairs, key=lambda p: ranks.get(p, float('inf')))
      if (first, second) not in ranks:
        break
      out, i = [], 0
      while i < len(word):
        if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
          out.append(first + second)
          i += 2
        else:
          out.append(word[i])
          i += 1
      word = tuple(out)
    ids.extend(vocab[s] for s in word)
  return ids + [vocab[EOT]]


def unpadded(ids: np.ndarray, eot_pos: np.ndarray, i: int) -> list[int]:
  """Row i up to its last eot (a literal '<|endoftext|>' in the text is an earlier one)."""
  row = ids[i].tolist()
  last = max(k for k, t in enumerate(row) if t == row[eot_pos[i]])
  return row[:last + 1]


@pytest.fixture(scope='module')
def hf_tok(bpe):
  transformers = pytest.importorskip('transformers')
  # transformers 5: CLIPTokenizer(vocab_file=, merges_file=) ignores the files (an empty vocab);
  # from_pretrained on the folder reads them.
  classes = [transformers.CLIPTokenizer]
  if getattr(transformers, 'CLIPTokenizerFast', None) not in (None, transformers.CLIPTokenizer):
    classes.append(transformers.CLIPTokenizerFast)
  toks = [c.from_pretrained(bpe['hf']) for c in classes]
  for t in toks:
    assert len(t) == len(bpe['vocab'])
  return toks


# --------------------------------------------------------------------------------------- tests

def test_bytes_to_unicode():
  table = ct.bytes_to_unicode()
  assert list(table) == [*range(33, 127), *range(161, 173), *range(174, 256), *range(0, 33),
                         127, 128, *range(129, 161), 173]
  assert len(set(table.values())) == 256
  assert table[ord('a')] == 'a' and table[ord('ÿ')] == 'ÿ'
  assert table[0] == '\u0100' and table[ord(' ')] == 'Ġ' and table[ord('\n')] == 'Ċ'
  assert table[173] == chr(256 + 67)
  assert not any(c.isspace() for c in table.values())


def test_both_layouts_give_the_same_vocabulary(bpe):
  merges = bpe['merges']
  assert 100 <= len(merges) <= 300
  hf_vocab, hf_merges = ct.read_vocabulary(bpe['hf'])
  gz_vocab, gz_merges = ct.read_vocabulary(bpe['gz'])
  assert hf_merges == gz_merges == merges
  assert hf_vocab == gz_vocab == bpe['vocab']
  assert gz_vocab['!'] == 0 and gz_vocab['!</w>'] == 256 and gz_vocab[''.join(merges[0])] == 512
  assert gz_vocab[SOT] == 512 + len(merges) and gz_vocab[EOT] == 513 + len(merges)
  # A plain .txt of the same content reads the same.
  txt = bpe['gz'][:-len('.gz')]
  with gzip.open(bpe['gz'], 'rb') as src, open(txt, 'wb') as dst:
    dst.write(src.read())
  assert ct.read_vocabulary(txt) == (gz_vocab, gz_merges)


def test_bpe_file_uses_clips_first_48894_merges(tmp_path):
  syms = list(ct.bytes_to_unicode().values())
  merges = [(a, b) for a in syms for b in syms][:ct.NUM_MERGES + 100]
  vocab, read = ct.read_vocabulary(write_gz(str(tmp_path / 'big.txt.gz'), merges))
  assert ct.NUM_MERGES == 48894
  assert read == merges[:48894]
  assert len(vocab) == 49408 and vocab[SOT] == 49406 and vocab[EOT] == 49407
  assert ''.join(merges[48894]) not in vocab


def test_matches_transformers(tok, hf_tok):
  ids, eot_pos = tok.encode(PROMPTS, CONTEXT)
  for hf in hf_tok:
    for i, text in enumerate(PROMPTS):
      ours = unpadded(ids, eot_pos, i)
      if '&' in text:   # transformers does not unescape HTML; open_clip's basic_clean does
        assert hf(text)['input_ids'] != ours, text
        text = html.unescape(html.unescape(text))
      assert hf(text)['input_ids'] == ours, (text, hf.convert_ids_to_tokens(ours))
    long_ids, long_pos = tok.encode([LONG], CONTEXT)
    theirs = hf(LONG)['input_ids']
    assert len(theirs) > CONTEXT
    assert long_ids[0, :CONTEXT - 1].tolist() == theirs[:CONTEXT - 1]
    assert long_ids[0, -1] == tok.eot_id and long_pos[0] == CONTEXT - 1
    assert long_ids[0].tolist() == hf(LONG, max_length=CONTEXT, truncation=True)['input_ids']


def test_matches_reference_bpe(tok, bpe):
  # Beyond the transformers check: Python's final sigma ('ΣΑΣ' -> 'σας'), a control character
  # (a symbol, not whitespace), a special token in capitals (transformers 5 splits it).
  prompts = PROMPTS + [LONG, 'cafe\u0301', 'A <|ENDOFTEXT|> b', "you're I'LL we've i'm he'd",
                       '1234', 'ΣΑΣ σας', 'x\x1cy', 'a&nbsp;b\u3000c\u2028d']
  ids, eot_pos = tok.encode(prompts, 200)
  for i, text in enumerate(prompts):
    assert unpadded(ids, eot_pos, i) == reference_encode(text, bpe['vocab'], bpe['merges']), text
  # Learned merges are used (fewer tokens than bytes) and the byte fallback covers the rest.
  n = {t: int(p) - 1 for t, p in zip(prompts, eot_pos)}
  assert n['a photo of a chair.'] <= 6        # 'a', 'photo', 'of', 'a', 'chair', '.' are learned
  assert n['zebra 🙂 xylophone'] > 10          # mostly single bytes: 🙂 alone is 4
  # NFC: a decomposed accent tokenizes as the composed one.
  np.testing.assert_array_equal(tok.encode(['cafe\u0301'], 8)[0], tok.encode(['caf\u00e9'], 8)[0])


def test_known_tokens(tok, bpe):
  """The symbols behind the ids: CLIP's split, '</w>' on each piece's last symbol, UTF-8 bytes."""
  inv = {i: t for t, i in bpe['vocab'].items()}
  cases = {'A Photo': 'a</w>photo</w>', "it's": "it</w>'s</w>", 'route 66': 'route</w>6</w>6</w>',
           'café': 'caf\u00c3\u00a9</w>', 'rock &amp; roll': 'rock</w>&</w>roll</w>',
           't-shirt, (red)!': 't</w>-</w>shirt</w>,</w>(</w>red</w>)!</w>',
           'a\tb\nc': 'a</w>b</w>c</w>'}
  ids, eot_pos = tok.encode(list(cases), 24)
  for i, symbols in enumerate(cases.values()):
    row = ids[i, :eot_pos[i] + 1].tolist()
    assert row[0] == tok.sot_id and row[-1] == tok.eot_id
    assert ''.join(inv[t] for t in row[1:-1]) == symbols
  assert ids[2, eot_pos[2] - 2:eot_pos[2]].tolist() == [bpe['vocab']['6</w>']] * 2
  photo = tok.tokens('photo')
  assert len(photo) < 5 and ''.join(inv[t] for t in photo) == 'photo</w>'   # merges were applied


def test_padding_and_eot_positions(tok):
  texts = ['', 'a photo of a chair', LONG, 'a <|endoftext|> b']
  ids, eot_pos = tok.encode(texts, 16)
  assert ids.shape == (4, 16) and ids.dtype == np.int32
  assert eot_pos.shape == (4,) and eot_pos.dtype == np.int32
  assert ids[0].tolist() == [tok.sot_id, tok.eot_id] + [0] * 14
  assert (ids[:, 0] == tok.sot_id).all()
  n = len(tok.tokens('a photo of a chair'))
  assert 5 <= n <= 12
  assert eot_pos.tolist() == [1, n + 1, 15, 2]   # a literal '<|endoftext|>': the first eot
  for i in range(4):
    assert ids[i, eot_pos[i]] == tok.eot_id
    assert eot_pos[i] == np.argmax(ids[i])       # where OpenAI's text tower pools
  for i in range(3):
    assert (ids[i, eot_pos[i] + 1:] == 0).all() and (ids[i, 1:eot_pos[i]] != tok.eot_id).all()
  assert ids[1, 1:n + 1].tolist() == tok.tokens('a photo of a chair')
  assert ids[2, 1:15].tolist() == tok.tokens(LONG)[:14]
  assert ids[3].tolist() == [tok.sot_id, tok.vocab['a</w>'], tok.eot_id, tok.vocab['b</w>'],
                             tok.eot_id] + [0] * 11
  two, pos2 = tok.encode(['a photo of a chair'], 2)
  assert two.tolist() == [[tok.sot_id, tok.eot_id]] and pos2.tolist() == [1]
  one, _ = tok.encode('a photo', 8)           # a bare str is one text
  assert one.shape == (1, 8)
  none, none_pos = tok.encode([], 8)
  assert none.shape == (0, 8) and none_pos.shape == (0,)


def test_properties(tok, bpe):
  n = len(bpe['vocab'])
  assert tok.vocab_size == n and tok.sot_id == n - 2 and tok.eot_id == n - 1
  assert tok.merges == bpe['merges'] and tok.vocab == bpe['vocab']


def test_encode_errors(tok):
  with pytest.raises(ValueError, match='context_length'):
    tok.encode(['a'], 1)
  with pytest.raises(ValueError, match=re.escape('texts[1]')):
    tok.encode(['a', 3, 'b'], 8)
  with pytest.raises(ValueError, match=re.escape('texts[0]')):
    tok.encode([None], 8)


def test_save_load_round_trip(tok, bpe, tmp_path):
  tok.save(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['merges.txt', 'vocab.json']   # no temporary files left
  with open(tmp_path / 'merges.txt', encoding='utf-8') as f:
    assert f.readline() == '#version: 0.2\n'
  with open(tmp_path / 'vocab.json', encoding='utf-8') as f:
    assert json.load(f) == bpe['vocab']
  loaded = ct.CLIPTokenizer.load(str(tmp_path))
  texts = PROMPTS + [LONG]
  for a, b in zip(tok.encode(texts, CONTEXT), loaded.encode(texts, CONTEXT)):
    np.testing.assert_array_equal(a, b)
  from_gz = ct.CLIPTokenizer.from_path(bpe['gz'])
  np.testing.assert_array_equal(tok.encode(texts, CONTEXT)[0], from_gz.encode(texts, CONTEXT)[0])
  tok.save(str(tmp_path))                      # overwrites in place
  assert ct.read_vocabulary(str(tmp_path)) == (bpe['vocab'], bpe['merges'])
  with pytest.raises(FileNotFoundError, match='nowhere'):
    tok.save(str(tmp_path / 'nowhere'))
  with pytest.raises(FileNotFoundError, match='nowhere'):
    ct.CLIPTokenizer.load(str(tmp_path / 'nowhere'))


def test_read_errors(bpe, tmp_path):
  vocab, merges = bpe['vocab'], bpe['merges']
  missing = str(tmp_path / 'missing')
  with pytest.raises(FileNotFoundError, match=re.escape(missing)):
    ct.read_vocabulary(missing)

  no_merges = write_hf(str(tmp_path / 'no_merges'), vocab, merges)
  os.remove(os.path.join(no_merges, 'merges.txt'))
  with pytest.raises(FileNotFoundError, match=re.escape(os.path.join(no_merges, 'merges.txt'))):
    ct.read_vocabulary(no_merges)

  bad_line = write_hf(str(tmp_path / 'bad_line'), vocab, merges)
  with open(os.path.join(bad_line, 'merges.txt'), 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n' + ' '.join(merges[0]) + '\nh e l\n')
  bad_merges = os.path.join(bad_line, 'merges.txt')
  with pytest.raises(ValueError, match=re.escape(bad_merges + ': line 3:')):
    ct.read_vocabulary(bad_line)

  gz_bad = str(tmp_path / 'bad.txt.gz')
  with gzip.open(gz_bad, 'wt', encoding='utf-8') as f:
    f.write('header\n' + ' '.join(merges[0]) + '\n' + ' '.join(merges[1]) + '\nlonely\n')
  with pytest.raises(ValueError, match=re.escape(gz_bad + ': line 4:')):
    ct.read_vocabulary(gz_bad)

  as_list = write_hf(str(tmp_path / 'as_list'), vocab, merges)
  with open(os.path.join(as_list, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(list(vocab), f)
  with pytest.raises(ValueError, match=re.escape(os.path.join(as_list, 'vocab.json'))):
    ct.read_vocabulary(as_list)

  broken = write_hf(str(tmp_path / 'broken'), vocab, merges)
  with open(os.path.join(broken, 'vocab.json'), 'w', encoding='utf-8') as f:
    f.write('{"a": 1,')
  with pytest.raises(ValueError, match=re.escape(os.path.join(broken, 'vocab.json'))):
    ct.read_vocabulary(broken)

  bad_id = write_hf(str(tmp_path / 'bad_id'), {**vocab, 'x': 'seven'}, merges)
  with pytest.raises(ValueError, match=re.escape(os.path.join(bad_id, 'vocab.json'))):
    ct.read_vocabulary(bad_id)

  no_special = write_hf(str(tmp_path / 'no_special'),
                        {t: i for t, i in vocab.items() if t not in (SOT, EOT)}, merges)
  with pytest.raises(ValueError, match=re.escape(os.path.join(no_special, 'vocab.json'))) as e:
    ct.read_vocabulary(no_special)
  assert SOT in str(e.value) and EOT in str(e.value)

  unknown = write_hf(str(tmp_path / 'unknown'), vocab, merges + [('zq', 'xj')])
  with pytest.raises(ValueError, match=re.escape(
      os.path.join(unknown, 'merges.txt') + f': line {len(merges) + 2}:')):
    ct.read_vocabulary(unknown)
  gz_unknown = write_gz(str(tmp_path / 'unknown.txt.gz'), merges + [('zq', 'xj')])
  with pytest.raises(ValueError, match=re.escape(gz_unknown + f': line {len(merges) + 2}:')):
    ct.read_vocabulary(gz_unknown)

  not_gz = str(tmp_path / 'not.txt.gz')
  with open(not_gz, 'wb') as f:
    f.write(b'plain text, not gzip')
  with pytest.raises(ValueError, match=re.escape(not_gz)):
    ct.read_vocabulary(not_gz)

  with pytest.raises(ValueError, match=re.escape(SOT)):
    ct.CLIPTokenizer({t: i for t, i in vocab.items() if t != SOT}, merges)
