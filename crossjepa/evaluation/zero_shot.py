"""Zero-shot 3D classification through the 2D teacher's own classifier: no 3D label is used.

The ImageNet EfficientNet-Lite teacher's global embedding is its classifier's input. A linear
readout from a point encoder's pooled features (concat(max, mean), standardised) to that
embedding, fitted by ridge regression (alpha by efficient leave-one-out) on the pretraining
splits' objects and their cached teacher embeddings (averaged over the views, standardised), maps
a point cloud into the teacher's space; the teacher's classifier then gives ImageNet logits. The
readout reads no label, so the number is a zero-shot accuracy, and the same readout on the same
encoder architecture at random initialisation (eval.seeds) says how much of it pretraining put into
the encoder, as the linear probe does with labels. With train.target = 'object' the head trained
with the encoder is a readout of its own (its prediction brought back from the target
standardisation), reported beside it.

A 3D class is named by the ImageNet classes that are that object (one table per source,
`MAPPINGS`, or eval.zero_shot_classes' JSON file; by name, resolved against TFDS's ImageNet label
list; each ImageNet class names at most one 3D class of a source). An object gets the 3D class of
its highest-scoring mapped ImageNet class, among the classes of the split that have a mapping;
objects of the other classes are left out. Chance is 1 / (mapped classes). Beside it, the teacher
itself on the same objects' rendered views (its cached view-averaged embedding through its
classifier): the ceiling of what the point cloud can inherit.

A CLIP teacher converted with its text tower (`crossjepa.convert_teacher`, the folder's text/) names
the classes in words instead: each class's words (its own name, ShapeNet-55's synsets by their
words, or eval.zero_shot_classes' free text) in the prompts (eval.zero_shot_templates, default
TEMPLATES), through the text tower, normalised and averaged, are its column of the classifier; an
object gets the class whose text embedding has the highest cosine with its readout (every class of
the split is named, none left out). The readout is the same ridge regression into the teacher's
(CLIP image) embedding.

An export carries the readout (`export_readout`: folded with the classifier into one affine map,
READOUT_FILE, with the random-init controls), so records without a teacher (an eval-only run of
the export on ModelNet40 or ScanObjectNN) get a zero-shot number too (`evaluate_export`), and
crossjepa.classify names single files with it.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# A 3D class -> the ImageNet classes (by the first name of each class in TFDS's list) that are that
# object. One table per source's class vocabulary; a class with no ImageNet counterpart is left out
# (and its objects with it), and no ImageNet class names two classes of one source.
CARS = ('sports car', 'convertible', 'beach wagon', 'racer', 'cab', 'minivan')
BOTTLES = ('beer bottle', 'pop bottle', 'water bottle', 'wine bottle')
BOWLS = ('mixing bowl', 'soup bowl')
PLANES = ('airliner', 'warplane')
DISPLAYS = ('monitor', 'screen', 'television', 'desktop computer')
CHAIRS = ('folding chair', 'rocking chair', 'barber chair')
PIANOS = ('grand piano', 'upright')
GUITARS = ('acoustic guitar', 'electric guitar')
KEYBOARDS = ('computer keyboard', 'typewriter keyboard')

# The synthetic source's classes. Left out: the primitives, and the classes whose nearest ImageNet
# class is already another's (lamp / desk_lamp, the tables, bench / park_bench, shelf / bookcase,
# the stools and chairs ImageNet has no class for).
IMAGENET_NAMES: dict[str, tuple[str, ...]] = {
    'chair': ('folding chair', 'rocking chair'),
    'sofa': ('studio couch',),
    'square_table': ('dining table',),
    'bookcase': ('bookcase',),
    'lamp': ('table lamp',),
    'bed': ('four-poster',),
    'park_bench': ('park bench',),
    'desk': ('desk',),
    'bottle': BOTTLES,
    'vase': ('vase',),
    'cup': ('cup',),
    'mug': ('coffee mug',),
    'bowl': BOWLS,
    'goblet': ('goblet',),
    'pitcher': ('pitcher', 'water jug'),
    'car': CARS,
    'plane': PLANES,
    'rocket': ('missile', 'space shuttle'),
    'mushroom': ('mushroom', 'agaric'),
    'dumbbell': ('dumbbell',),
}

# ModelNet40 (and ModelNet10, its subset): 30 of the 40 classes. Left out: cone, glass_box, mantel,
# night_stand (ImageNet's chest of drawers is the dresser's), person, plant (its pot is
# flower_pot's), range_hood, stairs, stool, xbox.
MODELNET40: dict[str, tuple[str, ...]] = {
    'airplane': PLANES,
    'bathtub': ('bathtub', 'tub'),
    'bed': ('four-poster',),
    'bench': ('park bench',),
    'bookshelf': ('bookcase',),
    'bottle': BOTTLES,
    'bowl': BOWLS,
    'car': CARS,
    'chair': CHAIRS,
    'cup': ('cup', 'coffee mug'),
    'curtain': ('shower curtain', 'theater curtain', 'window shade'),
    'desk': ('desk',),
    'door': ('sliding door',),
    'dresser': ('chiffonier',),
    'flower_pot': ('pot',),
    'guitar': GUITARS,
    'keyboard': KEYBOARDS,
    'lamp': ('table lamp', 'lampshade'),
    'laptop': ('laptop', 'notebook'),
    'monitor': DISPLAYS,
    'piano': PIANOS,
    'radio': ('radio',),
    'sink': ('washbasin',),
    'sofa': ('studio couch',),
    'table': ('dining table',),
    'tent': ('mountain tent',),
    'toilet': ('toilet seat',),
    'tv_stand': ('entertainment center',),
    'vase': ('vase',),
    'wardrobe': ('wardrobe',),
}

# ScanObjectNN: all 15 classes.
SCANOBJECTNN: dict[str, tuple[str, ...]] = {
    'bag': ('backpack', 'purse', 'mailbag', 'plastic bag'),
    'bin': ('ashcan',),
    'box': ('carton', 'crate'),
    'cabinet': ('file', 'china cabinet', 'medicine chest', 'chiffonier'),
    'chair': CHAIRS,
    'desk': ('desk',),
    'display': DISPLAYS,
    'door': ('sliding door',),
    'shelf': ('bookcase',),
    'table': ('dining table',),
    'bed': ('four-poster',),
    'pillow': ('pillow',),
    'sink': ('washbasin',),
    'sofa': ('studio couch',),
    'toilet': ('toilet seat',),
}

# ShapeNet-55, whose class names are ShapeNetCore's WordNet synset ids: 50 of the 55. Left out:
# can, cap, earphone, faucet, skateboard (no ImageNet class).
SHAPENET55_NAMES = {
    '02691156': 'airplane', '02747177': 'trash bin', '02773838': 'bag', '02801938': 'basket',
    '02808440': 'bathtub', '02818832': 'bed', '02828884': 'bench', '02843684': 'birdhouse',
    '02871439': 'bookshelf', '02876657': 'bottle', '02880940': 'bowl', '02924116': 'bus',
    '02933112': 'cabinet', '02942699': 'camera', '02946921': 'can', '02954340': 'cap',
    '02958343': 'car', '02992529': 'cellphone', '03001627': 'chair', '03046257': 'clock',
    '03085013': 'keyboard', '03207941': 'dishwasher', '03211117': 'display', '03261776': 'earphone',
    '03325088': 'faucet', '03337140': 'file cabinet', '03467517': 'guitar', '03513137': 'helmet',
    '03593526': 'jar', '03624134': 'knife', '03636649': 'lamp', '03642806': 'laptop',
    '03691459': 'loudspeaker', '03710193': 'mailbox', '03759954': 'microphone',
    '03761084': 'microwave', '03790512': 'motorcycle', '03797390': 'mug', '03928116': 'piano',
    '03938244': 'pillow', '03948459': 'pistol', '03991062': 'pot', '04004475': 'printer',
    '04074963': 'remote control', '04090263': 'rifle', '04099429': 'rocket',
    '04225987': 'skateboard', '04256520': 'sofa', '04330267': 'stove', '04379243': 'table',
    '04401088': 'telephone', '04460130': 'tower', '04468005': 'train', '04530566': 'vessel',
    '04554684': 'washer',
}
SHAPENET55: dict[str, tuple[str, ...]] = {
    '02691156': PLANES,
    '02747177': ('ashcan',),
    '02773838': ('backpack', 'purse', 'mailbag'),
    '02801938': ('shopping basket', 'hamper'),
    '02808440': ('bathtub', 'tub'),
    '02818832': ('four-poster',),
    '02828884': ('park bench',),
    '02843684': ('birdhouse',),
    '02871439': ('bookcase',),
    '02876657': BOTTLES,
    '02880940': BOWLS,
    '02924116': ('school bus', 'trolleybus', 'minibus'),
    '02933112': ('china cabinet', 'medicine chest', 'chiffonier'),
    '02942699': ('reflex camera', 'Polaroid camera'),
    '02958343': CARS,
    '02992529': ('cellular telephone',),
    '03001627': CHAIRS,
    '03046257': ('analog clock', 'wall clock', 'digital clock'),
    '03085013': KEYBOARDS,
    '03207941': ('dishwasher',),
    '03211117': DISPLAYS,
    '03337140': ('file',),
    '03467517': GUITARS,
    '03513137': ('crash helmet', 'football helmet'),
    '03593526': ('vase',),
    '03624134': ('cleaver',),
    '03636649': ('table lamp', 'lampshade'),
    '03642806': ('laptop', 'notebook'),
    '03691459': ('loudspeaker',),
    '03710193': ('mailbox',),
    '03759954': ('microphone',),
    '03761084': ('microwave',),
    '03790512': ('moped', 'motor scooter'),
    '03797390': ('coffee mug',),
    '03928116': PIANOS,
    '03938244': ('pillow',),
    '03948459': ('revolver',),
    '03991062': ('pot',),
    '04004475': ('printer', 'photocopier'),
    '04074963': ('remote control',),
    '04090263': ('rifle', 'assault rifle'),
    '04099429': ('missile',),
    '04256520': ('studio couch',),
    '04330267': ('stove',),
    '04379243': ('dining table', 'desk'),
    '04401088': ('dial telephone', 'pay-phone'),
    '04460130': ('water tower', 'beacon'),
    '04468005': ('electric locomotive', 'steam locomotive', 'bullet train', 'passenger car',
                 'freight car', 'streetcar'),
    '04530566': ('liner', 'container ship', 'fireboat', 'schooner', 'speedboat', 'yawl',
                 'catamaran', 'trimaran', 'canoe', 'aircraft carrier', 'submarine', 'lifeboat'),
    '04554684': ('washer',),
}

# data.source -> its table (mesh_folder's class names are the user's: eval.zero_shot_classes).
MAPPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    'synthetic': IMAGENET_NAMES, 'modelnet40': MODELNET40, 'scanobjectnn': SCANOBJECTNN,
    'shapenet55': SHAPENET55,
}


def read_mapping(path: str, what: str = 'eval.zero_shot_classes') -> dict[str, tuple[str, ...]]:
  """A class file (eval.zero_shot_classes, crossjepa.classify's --classes; `what` names it in the
  errors): a JSON object {3D class name: [ImageNet class names]}."""
  import json  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what}={path!r}: no such file; expected a JSON object '
                            '{"3D class": ["ImageNet class name", ...]}')
  with open(path, 'rb') as f:
    try:
      raw = json.load(f)
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
      raise ValueError(f'{what}: {path} is not valid JSON: {e}') from e
  if not isinstance(raw, dict) or not raw:
    raise ValueError(f'{what}: {path} holds {type(raw).__name__} {raw!r:.80}; '
                     'expected a non-empty JSON object {"3D class": ["ImageNet class name", ...]}')
  out = {}
  for name, value in raw.items():
    if isinstance(value, str):
      value = [value]
    if (not isinstance(value, list) or not value
        or not all(isinstance(v, str) and v for v in value)):
      raise ValueError(f'{what}: {path}: {name!r} maps to {value!r}; expected a '
                       'non-empty list of ImageNet class names')
    out[name] = tuple(value)
  return out


def check_mapping_file(path: str) -> dict[str, tuple[str, ...]]:
  """eval.zero_shot_classes' file read and its ImageNet names checked (what can be checked
  before the records exist: run.run does it before the first stage)."""
  mapping = read_mapping(path)
  try:
    class_indices(list(mapping), mapping)
  except ValueError as e:
    raise ValueError(f'eval.zero_shot_classes: {path}: {e}') from e
  return mapping


def check_class_file(config) -> dict[str, tuple[str, ...]]:
  """eval.zero_shot_classes read before the run's first stage: ImageNet names checked
  (check_mapping_file), or free text where a CLIP text tower names the classes (the run's teacher
  folder has one, or the evaluated export's readout is a CLIP one)."""
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  path, checkpoint = str(config.eval.zero_shot_classes), str(config.teacher.checkpoint or '')
  text = bool(checkpoint) and os.path.isdir(checkpoint) and teacher_io.has_text(checkpoint)
  zinfo = {}
  if config.eval.encoder:
    from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
    zinfo = export_lib.read_info(str(config.eval.encoder)).get('zero_shot') or {}
    text = zinfo.get('classifier') == 'clip_text'
  if not text:
    return check_mapping_file(path)
  mapping = read_mapping(path)
  if zinfo and not config.eval.text_tower:   # an export alone names only the words it carries
    carried = (zinfo.get('text') or {}).get('words') or []
    lacking = missing_words(carried, mapping.values())
    if lacking:
      raise ValueError(f'eval.zero_shot_classes: {path}: the export {config.eval.encoder} '
                       f'{not_carried(len(carried), lacking)}; use those words, or give its '
                       'teacher\'s text tower (eval.text_tower=DIR)')
  return mapping


def missing_words(carried: Iterable[str], classes: Iterable[Sequence[str]]) -> list[str]:
  """The words of `classes` (each a list of words) that are not in `carried`, sorted."""
  return sorted({w for ws in classes for w in ws} - set(carried))


def not_carried(count: int, lacking: Sequence[str]) -> str:
  """What a CLIP export lacks, for the errors that name words it has no text embedding of."""
  return (f'carries the text embeddings of {count} words (its pretraining classes\' and the '
          f'built-in sources\'), not of {list(lacking[:8])}{" ..." if len(lacking) > 8 else ""}')


def carried_columns(zinfo: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
  """A CLIP export's words -> their text embeddings [E] (the columns of its text_kernel)."""
  return dict(zip(zinfo['text']['words'], np.asarray(arrays['text_kernel']).T))


def check_text_tower(zinfo: Mapping[str, Any], tower, what: str) -> None:
  """ValueError unless `tower` (teacher_io.load_text) is the text tower of the teacher a CLIP
  export was pretrained with (the checksum the export records): another tower's text embeddings
  live in another space than the export's readout."""
  recorded = ((zinfo.get('text') or {}).get('param_checksum')) or ''
  if recorded != tower.param_checksum:
    raise ValueError(f'{what}: the text tower given (checksum {tower.param_checksum[:16]}) is not '
                     f'the one of the teacher it was pretrained with '
                     f'({recorded[:16] or "not recorded in this export"})')


def load_text_tower(path: str, what: str):
  """teacher_io.load_text(path) with errors naming `what` (the flag or field that gave the path),
  kept until release_shared while the folder's files stay: a run's check before its first stage
  and its evaluation load the tower once."""
  from crossjepa.data import fingerprint  # pylint: disable=g-import-not-at-top
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  key = (os.path.abspath(path),
         fingerprint.file_listing(path)['digest'] if os.path.isdir(path) else None)
  if _TEXT_TOWER.get('key') != key:
    try:
      tower = teacher_io.load_text(path)
    except (OSError, ValueError) as e:
      raise ValueError(f'{what}: {e}') from e
    _TEXT_TOWER.clear()
    _TEXT_TOWER.update(key=key, tower=tower)
  return _TEXT_TOWER['tower']


def export_text_tower(config, zinfo: Mapping[str, Any]):
  """eval.text_tower for an eval-only run of an export (`zinfo`: its encoder.json's zero_shot):
  the teacher folder's text tower (a clip_text.TextEncoder) once checked (check_text_tower), or
  None where the field is empty. ValueError naming the field where the export names ImageNet
  classes, the folder has no text tower, or the tower is another."""
  path = str(config.eval.text_tower)
  if not path:
    return None
  what = f'eval.text_tower = {path!r}'
  if zinfo.get('classifier') != 'clip_text':
    raise ValueError(f'{what}: the export {config.eval.encoder} has no readout into a CLIP '
                     'teacher\'s embedding (it names ImageNet classes, or none), so no words to '
                     'embed: leave eval.text_tower empty')
  tower = load_text_tower(path, what)
  check_text_tower(zinfo, tower, f'{what} for the export {config.eval.encoder}')
  return tower


def mapping_for(config, class_names: Sequence[str], *, words: bool = False
                ) -> dict[str, tuple[str, ...]]:
  """The class mapping of a run: eval.zero_shot_classes' file, else data.source's table (empty
  for a source without one). A file's class that `class_names` does not have is an error.
  words (a CLIP teacher's text tower names the classes): the file's names are free text, and
  without a file every class is named by its own words (class_words)."""
  path = str(config.eval.zero_shot_classes)
  if not path and words:
    return {n: (class_words(str(config.data.source), n),) for n in class_names}
  if not path:
    return dict(MAPPINGS.get(str(config.data.source), {}))
  mapping = read_mapping(path) if words else check_mapping_file(path)
  unknown = sorted(set(mapping) - set(class_names))
  if unknown:
    raise ValueError(f'eval.zero_shot_classes: {path} names classes {unknown} that the records do '
                     f'not have; their classes are {list(class_names)}')
  return mapping


def mapped_classes(config, class_names: Sequence[str]) -> dict[int, list[int]]:
  """class_indices of the run's mapping (mapping_for); NotApplicable where no class has one."""
  indices = class_indices(class_names, mapping_for(config, class_names))
  if not indices:
    more = ' ...' if len(class_names) > 8 else ''
    raise NotApplicable(f'zero-shot: none of the classes {list(class_names[:8])}{more} has an '
                        'ImageNet mapping (zero_shot.MAPPINGS has none for '
                        f'data.source={str(config.data.source)!r}; name them in a JSON file, '
                        '--config.eval.zero_shot_classes=FILE)')
  return indices


def display_name(source: str, class_name: str) -> str:
  """A class's name for people (ShapeNet-55's synset ids get their words)."""
  if source == 'shapenet55' and class_name in SHAPENET55_NAMES:
    return f'{SHAPENET55_NAMES[class_name]} ({class_name})'
  return class_name


# CLIP teachers: the prompts each class's words are put in (their text embeddings, normalised, are
# averaged: CLIP's prompt ensembling), for views rendered from 3D objects; eval.zero_shot_templates
# gives others.
TEMPLATES = ('a photo of a {}.', 'a rendering of a {}.', 'a 3D model of a {}.', 'a photo of the {}.',
             'a rendering of the {}.', 'a 3D rendering of a {}.', 'a render of a {}.',
             'a picture of a {}.')


def templates_for(config) -> tuple[str, ...]:
  """A run's prompts: eval.zero_shot_templates, or TEMPLATES where it is empty."""
  return tuple(str(t) for t in config.eval.zero_shot_templates) or TEMPLATES


def class_words(source: str, class_name: str) -> str:
  """A class's words for a text tower: ShapeNet-55's synset ids by their words, underscores as
  spaces ('night_stand' -> 'night stand')."""
  if source == 'shapenet55' and class_name in SHAPENET55_NAMES:
    return SHAPENET55_NAMES[class_name]
  return class_name.replace('_', ' ')


# The classes of the sources with a fixed class list, whose words an export of a CLIP run carries
# (ModelNet40's 40 include ModelNet10's; a mesh folder of ModelNet10 names its folders alike).
MODELNET40_CLASSES = tuple(
    'airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door '
    'dresser flower_pot glass_box guitar keyboard lamp laptop mantel monitor night_stand person '
    'piano plant radio range_hood sink sofa stairs stool table tent toilet tv_stand vase wardrobe '
    'xbox'.split())


SOURCE_CLASSES = ('synthetic', 'modelnet40', 'scanobjectnn', 'shapenet55')


def source_classes(source: str) -> list[str]:
  """The class names of a built-in source (SOURCE_CLASSES) in its label order."""
  from crossjepa.data import source_scanobjectnn  # pylint: disable=g-import-not-at-top
  from crossjepa.data import synthetic  # pylint: disable=g-import-not-at-top
  return list({'synthetic': synthetic.CLASS_NAMES, 'modelnet40': MODELNET40_CLASSES,
               'scanobjectnn': source_scanobjectnn.SCANOBJECTNN_CLASSES,
               'shapenet55': sorted(SHAPENET55_NAMES)}[source])


def builtin_words() -> list[str]:
  """The words of every class of the built-in sources (synthetic, ModelNet40/10, ScanObjectNN,
  ShapeNet-55), sorted: what an export of a CLIP run can name without its text tower."""
  return sorted({class_words(s, n) for s in SOURCE_CLASSES for n in source_classes(s)})


def word_columns(text_encoder, words: Sequence[str], templates: Sequence[str] = TEMPLATES
                 ) -> np.ndarray:
  """[E, W]: column w the normalised mean of the normalised text embeddings of words[w] in every
  template (CLIP's prompt ensembling)."""
  if not words:
    return np.zeros((text_encoder.dim, 0), np.float32)
  emb = np.asarray(text_encoder([t.format(w) for w in words for t in templates]), np.float64)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  mean = emb.reshape(len(words), len(templates), -1).mean(axis=1)
  return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).T.astype(np.float32)


def class_columns(columns: Mapping[str, np.ndarray], words: Sequence[Sequence[str]]) -> np.ndarray:
  """[E, K]: class k the normalised mean of its words' columns (word -> [E], word_columns')."""
  out = []
  for ws in words:
    mean = np.mean([np.asarray(columns[w], np.float64) for w in ws], axis=0)
    out.append(mean / np.linalg.norm(mean))
  return np.stack(out, axis=1).astype(np.float32)


def imagenet_class_names() -> list[str]:
  """The 1,000 ImageNet class names in label order (TFDS's list: 'tench, Tinca tinca', ...)."""
  from tensorflow_datasets.datasets.siscore import labels  # pylint: disable=g-import-not-at-top
  names = list(labels.IMAGENET_LABELS_LIST)
  if len(names) != 1000:
    raise ValueError(f'TFDS\'s ImageNet label list has {len(names)} names, expected 1000')
  return names


def class_indices(class_names: Sequence[str], mapping: Mapping[str, Sequence[str]] = IMAGENET_NAMES
                  ) -> dict[int, list[int]]:
  """{3D label: [ImageNet indices]} for the classes of `class_names` that `mapping` names.

  An ImageNet name is the first comma-separated name of a class ('coffee mug', 'four-poster'); a
  name that is not one, or an ImageNet class given to two 3D classes, is an error."""
  first = {n.split(',')[0].strip(): i for i, n in enumerate(imagenet_class_names())}
  out, owner = {}, {}
  for label, name in enumerate(class_names):
    if name not in mapping:
      continue
    indices = []
    for inet in mapping[name]:
      if inet not in first:
        raise ValueError(f'zero-shot mapping {name!r}: {inet!r} is not an ImageNet class name')
      if first[inet] in owner:
        raise ValueError(f'zero-shot mapping: ImageNet class {inet!r} is given to both '
                         f'{owner[first[inet]]!r} and {name!r}')
      owner[first[inet]] = name
      indices.append(first[inet])
    out[label] = indices
  return out


def class_scores(logits: np.ndarray, indices: Mapping[int, Sequence[int]]
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(the mapped 3D labels, sorted; scores [rows, labels]): each class's best mapped ImageNet
  logit."""
  labels = np.array(sorted(indices))
  scores = np.stack([np.asarray(logits)[:, indices[int(c)]].max(axis=1) for c in labels], axis=1)
  return labels, scores


def predict(logits: np.ndarray, indices: Mapping[int, Sequence[int]]) -> np.ndarray:
  """The 3D label of each row: the class whose best mapped ImageNet logit is highest."""
  labels, scores = class_scores(logits, indices)
  return labels[np.argmax(scores, axis=1)]


def accuracy(logits, labels, indices: Mapping[int, Sequence[int]]) -> dict[str, Any]:
  """Zero-shot accuracy over the objects whose class is mapped, with chance and the count."""
  labels = np.asarray(labels)
  keep = np.isin(labels, list(indices))
  if not keep.any():
    raise ValueError('zero-shot: no object of the split has a mapped class')
  pred = predict(np.asarray(logits)[keep], indices)
  return {'accuracy': float(np.mean(pred == labels[keep])), 'objects': int(keep.sum()),
          'classes': len(indices), 'chance': 1.0 / len(indices)}


def features(embed_fn, arrays, batch: int = 64) -> np.ndarray:
  """An encoder's pooled features [n, F] of load_split arrays (points, centers, groups)."""
  return np.concatenate([
      embed_fn(arrays['points'][i:i + batch], arrays['centers'][i:i + batch],
               arrays['groups'][i:i + batch]) for i in range(0, len(arrays['points']), batch)])


class NotApplicable(ValueError):
  """The run has no zero-shot evaluation (the reason is the message); evaluate_run skips it."""


def classifier(teacher) -> tuple[np.ndarray, np.ndarray] | str:
  """(kernel [D,1000], bias [1000]) of a loaded teacher's ImageNet classifier on its global
  embedding, or why there is none."""
  params = teacher.variables.get('params', {}) if hasattr(teacher.variables, 'get') else {}
  head = params.get('classifier') if hasattr(params, 'get') else None
  if head is None or 'kernel' not in head:
    return (f'the teacher {teacher.name!r} has no ImageNet classifier on its global embedding '
            '(the EfficientNet-Lite teachers have one)')
  kernel, bias = np.asarray(head['kernel'], np.float32), np.asarray(head['bias'], np.float32)
  if kernel.shape[1] != 1000:
    return f'the teacher {teacher.name!r}\'s classifier has {kernel.shape[1]} outputs, not 1000'
  return kernel, bias


def not_applicable(config) -> str | None:
  """Why the run has no zero-shot evaluation (None when it has one, so far as the config tells)."""
  if not config.eval.zero_shot:
    return 'eval.zero_shot = False'
  if config.data.eval_only:
    return 'data.eval_only: the records carry no teacher embeddings to fit the readout on'
  return None


def has_head(config) -> bool:
  """Whether the run trained an object head that reads out the teacher's embedding."""
  return (config.recipe == 'crossjepa' and config.train.target == 'object'
          and not config.train.normalize_target and not config.eval.encoder)


def object_target_stats(config, workdir, view_means: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
  """(mean, std) that the 'object' target was standardised with, or None when it was not.

  'batch': each batch's statistics, whose expectation the pretraining splits' view-averaged
  embeddings (`view_means`) give, with batch_standardize's eps; 'dataset': the per-view
  statistics of pipeline.teacher_stats (the view average of standardised views is the
  standardised view average)."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  mode = str(config.train.standardize_target)
  if mode == 'none':
    return None
  if mode == 'dataset':
    stats = pipeline.teacher_stats(config, workdir)['cls']
    return stats['mean'], stats['std']
  from crossjepa.training import losses  # pylint: disable=g-import-not-at-top
  return view_means.mean(axis=0), np.sqrt(view_means.var(axis=0) + losses.BATCH_STANDARDIZE_EPS)


# One run's stages (evaluate, the benchmark's rows, export, in --mode=all) fit readouts of the same
# encoders on the same pretraining records. What that takes, the records' arrays, the teacher's
# classifier and each fitted readout, is kept for the process under the records' and the teacher's
# files (names, sizes, mtimes): files changed since are read again and nothing is fitted twice.
# One entry, the last records asked for; crossjepa.run releases it when a run ends.
_SHARED: dict[str, Any] = {}
# The last text tower load_text_tower read, under its folder's files (released with _SHARED).
_TEXT_TOWER: dict[str, Any] = {}


def release_shared() -> None:
  """Drops what ZeroShot evaluators shared (the records' arrays and the fitted readouts) and the
  text tower load_text_tower kept."""
  _SHARED.clear()
  _TEXT_TOWER.clear()


def _files_key(config, workdir: str) -> tuple:
  from crossjepa.data import fingerprint  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(records.dataset_dir(config, workdir))
  teacher = os.path.abspath(str(config.teacher.checkpoint)) if config.teacher.checkpoint else ''
  return (path, fingerprint.file_listing(path)['digest'] if os.path.isdir(path) else None,
          tuple(str(s) for s in config.data.pretrain_splits), teacher,
          fingerprint.file_listing(teacher)['digest'] if os.path.isdir(teacher) else None)


def _shared_state(config, workdir: str) -> dict[str, Any]:
  """The records' metadata, the teacher's classifier, the pretraining splits' arrays and target
  (view-averaged teacher embeddings, and standardised), and the fitted readouts (`fitted`), for this run's records: shared while their files stay."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
  key = _files_key(config, workdir)
  if _SHARED.get('key') == key:
    return _SHARED['state']
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  meta = dict(records.open_dataset(config, workdir).info.metadata or {})
  teacher_info = dict(meta.get('teacher') or {})
  checkpoint = str(config.teacher.checkpoint or '')
  head, text = None, None
  if teacher_info.get('architecture') == 'efficientnet_lite':   # before loading weights
    head = classifier(teacher_cache.load_config_teacher(config))
    if isinstance(head, str):
      raise NotApplicable(f'zero-shot: {head}')
  elif checkpoint and teacher_io.has_text(checkpoint):
    text = teacher_io.load_text(checkpoint)
  else:
    raise NotApplicable(f'zero-shot: the records\' teacher {teacher_info.get("name")!r} '
                        f'({teacher_info.get("architecture")}) has no ImageNet classifier on '
                        'its global embedding (the EfficientNet-Lite teachers have one) nor a CLIP '
                        'text tower (convert a whole CLIP model with its vocabulary)')
  keys = list(ZeroShot.KEYS) + ['teacher/cls']
  parts = [pipeline.load_split(config, workdir, s, keys) for s in config.data.pretrain_splits]
  target = np.concatenate([p['teacher/cls'].astype(np.float32).mean(axis=1) for p in parts])
  mean, std = target.mean(0), target.std(0) + 1e-6
  state = {'teacher_info': teacher_info, 'class_names': list(meta['class_names']),
           'head': head, 'text': text, 'text_columns': {}, 'view_means': target,
           'target_mean': mean, 'target_std': std,
           'target': (target - mean) / std,
           'fit_data': {k: np.concatenate([p[k] for p in parts]) for k in ZeroShot.KEYS},
           'fitted': {}}
  _SHARED.clear()
  _SHARED.update(key=key, state=state)
  return state


class ZeroShot:
  """A run's zero-shot evaluator: its teacher's classifier, the class mapping of its records and
  the pretraining splits' objects and teacher embeddings that readouts are fitted on (config and
  workdir of the run whose records hold the pretraining splits). Evaluators of the same records
  share those and their fitted readouts (`_shared_state`)."""

  KEYS = ('label', 'points', 'centers', 'groups')
  ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)

  def __init__(self, config, workdir: str, *, classes: bool = True):
    """`classes`: whether the run's classes must have a mapping (an export's readout reads none:
    it is fitted without labels and mapped where it is evaluated)."""
    reason = not_applicable(config)
    if reason is not None:
      raise NotApplicable(f'zero-shot: {reason}')
    state = _shared_state(config, workdir)
    self.teacher_info = state['teacher_info']
    self.class_names = state['class_names']
    self.source = str(config.data.source)
    self.text = state['text']            # a CLIP teacher's text tower, or None
    self.templates = templates_for(config)
    self.words, self._columns = {}, state['text_columns'].setdefault(self.templates, {})
    if self.text is None:
      self.indices = mapped_classes(config, self.class_names) if classes else {}
      self.kernel, self.bias = state['head']
    else:
      self.words = mapping_for(config, self.class_names, words=True) if classes else {}
      labels = [c for c, n in enumerate(self.class_names) if n in self.words]
      self.indices = {c: [j] for j, c in enumerate(labels)}
      words = [self.words[self.class_names[c]] for c in labels]
      self.word_matrix([w for ws in words for w in ws])
      self.kernel = (class_columns(self._columns, words) if words
                     else np.zeros((self.text.dim, 0), np.float32))
      self.bias = np.zeros(len(labels), np.float32)
    self.fit_data = state['fit_data']
    self.target_mean, self.target_std = state['target_mean'], state['target_std']
    self.target = state['target']
    self.head_stats = (object_target_stats(config, workdir, state['view_means'])
                       if has_head(config) else None)
    self._fitted = state['fitted']

  def word_matrix(self, words: Sequence[str]) -> np.ndarray:
    """[E, W]: word_columns of these words in the run's templates, each computed once per run (the
    shared state)."""
    new = sorted(set(words) - set(self._columns))
    self._columns.update(zip(new, word_columns(self.text, new, self.templates).T))
    if not words:
      return np.zeros((self.text.dim, 0), np.float32)
    return np.stack([self._columns[w] for w in words], axis=1)

  def _logits(self, embedding: np.ndarray) -> np.ndarray:
    return embedding @ self.kernel + self.bias

  def _fit(self, embed_fn, batch: int = 64):
    """(scaler, ridge) of an encoder's readout, fitted on the pretraining splits (no label), once
    per encoder: kept under its module, pooling and params' checksum."""
    from sklearn.linear_model import RidgeCV  # pylint: disable=g-import-not-at-top
    from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
    from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
    key = (repr(embed_fn.module), embed_fn.pooling, vit_lib.param_checksum(embed_fn.params), batch)
    fitted = self._fitted.get(key)
    if fitted is None:
      train_x = features(embed_fn, self.fit_data, batch)
      scaler = StandardScaler().fit(train_x)
      fitted = (scaler, RidgeCV(alphas=self.ALPHAS).fit(scaler.transform(train_x), self.target))
      self._fitted[key] = fitted
    return fitted

  def readout(self, embed_fn, data, *, batch: int = 64) -> dict[str, Any]:
    """The accuracy on `data` (load_split arrays of KEYS) of an encoder's features (`embed_fn`,
    evaluation.features) read out by ridge into the teacher's embedding (fitted on the
    pretraining splits, no label, once per encoder), through the teacher's classifier."""
    scaler, ridge = self._fit(embed_fn, batch)
    pred = ridge.predict(scaler.transform(features(embed_fn, data, batch))) * self.target_std
    return {**accuracy(self._logits(pred + self.target_mean), data['label'], self.indices),
            'alpha': float(ridge.alpha_)}

  def to_embedding(self, embed_fn, *, batch: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """(kernel [F, D], bias [D], alpha) in float64: the encoder's readout as one affine map from
    its pooled features to the teacher's embedding (the standardisations folded in)."""
    scaler, ridge = self._fit(embed_fn, batch)
    coef = np.asarray(ridge.coef_, np.float64).T                     # [F, D]
    inv = 1.0 / np.asarray(scaler.scale_, np.float64)
    std, mean = self.target_std.astype(np.float64), self.target_mean.astype(np.float64)
    offset = (np.asarray(ridge.intercept_, np.float64)
              - (np.asarray(scaler.mean_, np.float64) * inv) @ coef) * std + mean
    return (coef * inv[:, None]) * std[None, :], offset, float(ridge.alpha_)

  def affine(self, embed_fn, *, batch: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """(kernel [F, 1000], bias [1000], alpha): the encoder's readout and the teacher's classifier
    as one affine map from its pooled features to ImageNet logits (folded in float64; what an
    export carries, READOUT_FILE); for a CLIP teacher the map into its embedding (float32),
    whose classes the export's text classifiers give."""
    kernel_e, bias_e, alpha = self.to_embedding(embed_fn, batch=batch)
    if self.text is not None:
      return kernel_e.astype(np.float32), bias_e.astype(np.float32), alpha
    kernel = self.kernel.astype(np.float64)
    return (kernel_e @ kernel).astype(np.float32), \
        (bias_e @ kernel + self.bias.astype(np.float64)).astype(np.float32), alpha

  def head(self, config, params, data, batch: int = 64) -> dict[str, Any]:
    """The accuracy of the run's encoder + object head (params['student'], params['predictor'])
    on `data`, its prediction brought back from the target standardisation."""
    from crossjepa.training.recipes import models as models_lib  # pylint: disable=g-import-not-at-top
    models = models_lib.build_models(config, self.teacher_info)

    @jax.jit
    def apply(p, x, c, g):
      tokens = models.point.apply({'params': p['student']}, x, c, g)['tokens']
      return models.predictor.apply({'params': p['predictor']}, tokens).astype(jnp.float32)

    inputs = [np.asarray(data[k]) for k in ('points', 'centers', 'groups')]
    n = len(inputs[0])
    padded = [np.concatenate([a, np.repeat(a[-1:], -n % batch, axis=0)]) for a in inputs]
    pred = np.concatenate([np.asarray(apply(params, *(a[i:i + batch] for a in padded)))
                           for i in range(0, len(padded[0]), batch)])[:n]
    if self.head_stats is not None:
      pred = pred * self.head_stats[1] + self.head_stats[0]
    return accuracy(self._logits(pred), data['label'], self.indices)

  def teacher(self, data) -> dict[str, Any]:
    """The teacher's own accuracy on the objects' views: its cached embeddings averaged over the
    views (`data['teacher/cls']`), through its classifier."""
    emb = np.asarray(data['teacher/cls'], np.float32).mean(axis=1)
    return accuracy(self._logits(emb), data['label'], self.indices)

  def describe(self) -> dict[str, Any]:
    if self.text is not None:
      return describe_text(self.source, self.class_names, self.words, self.templates)
    return describe(self.source, self.class_names, self.indices)


def describe_text(source: str, class_names: Sequence[str], words: Mapping[str, Sequence[str]],
                  templates: Sequence[str]) -> dict[str, Any]:
  """results.json's class words, prompts and protocol for a CLIP teacher's text classifier."""
  return {'classes': {display_name(source, n): list(words[n]) for n in class_names if n in words},
          'classifier': 'clip_text', 'templates': list(templates), 'protocol': TEXT_PROTOCOL}


def describe(source: str, class_names: Sequence[str], indices: Mapping[int, Sequence[int]]
             ) -> dict[str, Any]:
  """results.json's class mapping (3D class -> its ImageNet classes' first names) and protocol."""
  names = imagenet_class_names()
  return {'classes': {display_name(source, class_names[c]): [names[i].split(',')[0]
                                                             for i in indices[c]]
                      for c in sorted(indices)},
          'protocol': PROTOCOL}


PROTOCOL = ('no 3D label: RidgeCV(alphas 0.1 .. 1e4, leave-one-out) from standardised '
            'concat(max, mean) features to the standardised view-averaged teacher embedding, fitted '
            'on the pretraining splits; through the teacher\'s ImageNet classifier; a 3D class = '
            'the best of its mapped ImageNet classes (zero_shot.MAPPINGS or eval.zero_shot_classes); objects of '
            'unmapped classes left out')


TEXT_PROTOCOL = ('no 3D label: RidgeCV(alphas 0.1 .. 1e4, leave-one-out) from standardised '
                 'concat(max, mean) features to the standardised view-averaged CLIP image '
                 'embedding, fitted on the pretraining splits; a 3D class = the highest cosine with '
                 'its words\' text embeddings (in eval.zero_shot_templates, default '
                 'zero_shot.TEMPLATES; normalised and averaged; its own name, or '
                 'eval.zero_shot_classes)')


def random_init_summary(per_seed: Sequence[Mapping[str, Any]], seeds) -> dict[str, Any]:
  """results.json's zero_shot.random_init: the accuracies' mean and std over the seeds."""
  values = [r['accuracy'] for r in per_seed]
  return {'accuracy': float(np.mean(values)), 'accuracy_std': float(np.std(values)),
          'per_seed': list(per_seed), 'seeds': [int(s) for s in seeds]}


def evaluate(config, workdir: str, module, params, embed_fn, *, run_params=None,
             split: str | None = None) -> dict[str, Any]:
  """results.json's zero_shot: the readout on the evaluated encoder (`module`, `params`, through
  `embed_fn`) and on the same encoder at random init (eval.seeds), the run's object head where it
  has one (`run_params`: the checkpoint's whole params), and the teacher on the views."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  zs = ZeroShot(config, workdir)
  split = split or str(config.data.eval_test_split)
  data = pipeline.load_split(config, workdir, split, list(ZeroShot.KEYS) + ['teacher/cls'])
  out = {'split': split, 'pretrained': zs.readout(embed_fn.with_params(params), data)}
  random = [zs.readout(embed_fn.with_params(p), data)
            for p in protocol.random_init_params(module, data['points'], config.eval.seeds)]
  out['random_init'] = random_init_summary(random, config.eval.seeds)
  if run_params is not None and has_head(config):
    out['object_head'] = zs.head(config, run_params, data)
  out['teacher_on_views'] = zs.teacher(data)
  return {**out, **zs.describe()}


# ------------------------------------------------------------------ the readout an export carries

READOUT_FILE = 'zero_shot.npz'
EXPORT_PROTOCOL = ('no 3D label: the export\'s readout (RidgeCV from standardised pooled features '
                   'to the standardised view-averaged teacher embedding, fitted on its pretraining '
                   'records) folded with the teacher\'s ImageNet classifier into one affine map; '
                   'a 3D class = the best of its mapped ImageNet classes (zero_shot.MAPPINGS or '
                   'eval.zero_shot_classes); objects of unmapped classes left out')


def export_readout(config, workdir: str, module, params, pooling: str
                   ) -> tuple[dict[str, np.ndarray] | None, dict[str, Any]]:
  """(arrays, info) of the zero-shot readout an export carries (READOUT_FILE and encoder.json's
  `zero_shot`): the encoder's readout and the teacher's classifier as one affine map to ImageNet
  logits, and the same for the encoder at random init under each of eval.seeds (the control),
  with those params' checksums. (None, {'skipped': why}) where the run has no zero-shot."""
  from crossjepa.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  try:
    zs = ZeroShot(config, workdir, classes=False)
  except NotApplicable as e:
    return None, {'skipped': str(e)}
  except FileNotFoundError as e:   # the records are gone (or were never prepared here)
    return None, {'skipped': f'zero-shot: no records to fit the readout on: {e}'}
  embed = features_lib.make_embed_fn(module, params, pooling=pooling)
  kernel, bias, alpha = zs.affine(embed)
  arrays = {'pretrained_kernel': kernel, 'pretrained_bias': bias}
  alphas = {'pretrained': alpha}
  seeds = [int(s) for s in config.eval.seeds]
  checksums = {}
  for seed, p in zip(seeds, protocol.random_init_params(module, zs.fit_data['points'], seeds)):
    kernel, bias, alpha = zs.affine(embed.with_params(p))
    arrays[f'random_init_{seed}_kernel'], arrays[f'random_init_{seed}_bias'] = kernel, bias
    alphas[f'random_init_{seed}'] = alpha
    checksums[str(seed)] = vit_lib.param_checksum(p)
  if zs.text is not None:   # the classes are named where the export is evaluated: carry words
    words = sorted(set(builtin_words()) | {class_words(str(config.data.source), n)
                                           for n in zs.class_names})
    arrays['text_kernel'] = zs.word_matrix(words)
  info = {
      'file': READOUT_FILE,
      'classifier': 'imagenet' if zs.text is None else 'clip_text',
      'teacher': {k: zs.teacher_info.get(k) for k in ('name', 'architecture', 'width')},
      'fitted_on': {'source': str(config.data.source), 'name': str(config.data.name),
                    'splits': [str(s) for s in config.data.pretrain_splits],
                    'objects': int(len(zs.fit_data['points']))},
      'alpha': alphas,
      'random_init': {'seeds': seeds, 'param_checksums': checksums},
  }
  if zs.text is not None:
    info['text'] = {'words': words, 'templates': list(zs.templates), 'dim': int(zs.text.dim),
                    'param_checksum': zs.text.param_checksum}
  return arrays, info


def load_readout(export_dir: str, info: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """An export's readout arrays, checked against encoder.json (its sha256, keys and shapes)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  zinfo = info.get('zero_shot') or {}
  where = os.path.join(export_dir, 'encoder.json')
  if zinfo.get('file') != READOUT_FILE or not isinstance(zinfo.get('sha256'), str):
    raise ValueError(f'{where}: zero_shot names file {zinfo.get("file")!r} with sha256 '
                     f'{zinfo.get("sha256")!r}; expected {READOUT_FILE!r} and its digest')
  path = os.path.join(export_dir, READOUT_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: missing; {where} lists it (zero_shot.file). Copy the whole '
                            'export folder, or export it again')
  with open(path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  if digest != zinfo['sha256']:
    raise ValueError(f'{path}: sha256 {digest} differs from {zinfo["sha256"]} in {where}: the '
                     'file was changed after export; export it again, or copy it again from its '
                     'source')
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: np.asarray(z[k]) for k in z.files}
  dim = int(info.get('feature_dim', -1))
  seeds = [int(s) for s in (zinfo.get('random_init') or {}).get('seeds', [])]
  names = ['pretrained'] + [f'random_init_{s}' for s in seeds]
  outputs = 1000
  if zinfo.get('classifier') == 'clip_text':   # the map into CLIP's embedding, and the words
    text = zinfo.get('text') or {}
    outputs = int(text.get('dim', -1))
    shape = (outputs, len(text.get('words') or []))
    if arrays.get('text_kernel') is None or arrays['text_kernel'].shape != shape:
      got = arrays['text_kernel'].shape if 'text_kernel' in arrays else 'missing'
      raise ValueError(f'{path}: text_kernel is {got}; expected {shape} (zero_shot.text in {where})')
  for name in names:
    for part, shape in (('kernel', (dim, outputs)), ('bias', (outputs,))):
      key = f'{name}_{part}'
      if key not in arrays or arrays[key].shape != shape:
        got = arrays[key].shape if key in arrays else 'missing'
        raise ValueError(f'{path}: {key} is {got}; expected {shape} (feature_dim {dim} in {where})')
  return arrays


def evaluate_export(config, workdir: str, export_dir: str, export_info: Mapping[str, Any], module,
                    params) -> dict[str, Any]:
  """results.json's zero_shot for an exported encoder on records without a teacher (an eval-only
  run, e.g. ModelNet40): the export's readout on data.eval_test_split, and its random-init
  control (the same seeds' params, checked against the recorded checksums)."""
  from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossjepa.data import records  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import features as features_lib  # pylint: disable=g-import-not-at-top
  from crossjepa.evaluation import protocol  # pylint: disable=g-import-not-at-top
  from crossjepa.models import vit as vit_lib  # pylint: disable=g-import-not-at-top
  if not config.eval.zero_shot:
    raise NotApplicable('zero-shot: eval.zero_shot = False')
  zinfo = dict(export_info.get('zero_shot') or {})
  if not zinfo or 'skipped' in zinfo:
    why = zinfo.get('skipped') or 'it was exported by a crossjepa version without one'
    raise NotApplicable(f'zero-shot: the export {export_dir} carries no readout ({why})')
  arrays = load_readout(export_dir, export_info)
  meta = dict(records.open_dataset(config, workdir).info.metadata or {})
  class_names = list(meta['class_names'])
  source = str(config.data.source)
  words, text, embedded, templates = {}, None, [], ()
  if zinfo.get('classifier') == 'clip_text':
    words, text, embedded, templates = export_words(config, class_names, zinfo, arrays)
    labels = [c for c, n in enumerate(class_names) if n in words]
    indices = {c: [j] for j, c in enumerate(labels)}
  else:
    indices = mapped_classes(config, class_names)
  split = str(config.data.eval_test_split)
  data = pipeline.load_split(config, workdir, split, list(ZeroShot.KEYS))
  embed = features_lib.make_embed_fn(module, params, pooling=str(export_info['pooling']))

  def score(fn, name):
    logits = features(fn, data) @ arrays[f'{name}_kernel'] + arrays[f'{name}_bias']
    if text is not None:
      logits = logits @ text
    return {**accuracy(logits, data['label'], indices),
            'alpha': (zinfo.get('alpha') or {}).get(name)}

  out = {'split': split, 'pretrained': score(embed, 'pretrained')}
  rinfo = zinfo.get('random_init') or {}
  seeds = [int(s) for s in rinfo.get('seeds', [])]    # load_readout checked their arrays
  checksums = rinfo.get('param_checksums') or {}
  per_seed, differ = [], []
  for seed, p in zip(seeds, protocol.random_init_params(module, data['points'], seeds)):
    if vit_lib.param_checksum(p) != checksums.get(str(seed)):
      differ.append(seed)
    else:
      per_seed.append(score(embed.with_params(p), f'random_init_{seed}'))
  if differ or not seeds:
    out['random_init'] = {'skipped': f'the random-init params of seeds {differ} differ from those '
                                     'the export\'s control readouts were fitted on (another JAX '
                                     'version or platform?)' if differ else 'no seeds'}
  else:
    out['random_init'] = random_init_summary(per_seed, seeds)
  described = (describe(source, class_names, indices) if text is None
               else describe_text(source, class_names, words, templates))
  return {**out, **described, 'protocol': EXPORT_PROTOCOL if text is None else EXPORT_TEXT_PROTOCOL,
          'readout': {'export': os.path.abspath(export_dir), 'teacher': zinfo.get('teacher'),
                      'fitted_on': zinfo.get('fitted_on')},
          **({'text_tower': {'folder': os.path.abspath(str(config.eval.text_tower)),
                             'words': embedded}} if embedded else {})}


EXPORT_TEXT_PROTOCOL = ('no 3D label: the export\'s readout (RidgeCV from standardised pooled '
                        'features to the standardised view-averaged CLIP image embedding, fitted on '
                        'its pretraining records); a 3D class = the highest cosine with its words\' '
                        'text embeddings carried by the export, or embedded by eval.text_tower '
                        '(in the export\'s prompts, or eval.zero_shot_templates)')


def export_templates(zinfo: Mapping[str, Any]) -> tuple[str, ...]:
  """The prompts a CLIP export's carried words were embedded in (encoder.json)."""
  return tuple((zinfo.get('text') or {}).get('templates') or TEMPLATES)


def templates_differ(config, zinfo: Mapping[str, Any]) -> str | None:
  """Why an export's carried words cannot serve this run's prompts (eval.zero_shot_templates set
  and not the export's), or None."""
  mine, exported = tuple(config.eval.zero_shot_templates), export_templates(zinfo)
  if not mine or mine == exported:
    return None
  return (f'eval.zero_shot_templates = {list(mine)} are not the prompts the export\'s words were '
          f'embedded in ({list(exported)})')


def check_text_options(config) -> None:
  """Before a run's first stage: eval.text_tower and eval.zero_shot_templates where they apply.
  An eval-only run of an export (eval.encoder): the tower loaded and checked (export_text_tower),
  and prompts other than the export's need it. Otherwise prompts need a teacher folder with a
  text tower (teacher.checkpoint). ValueError naming the field."""
  from crossjepa.weights import teacher_io  # pylint: disable=g-import-not-at-top
  templates = list(config.eval.zero_shot_templates)
  if config.eval.encoder:
    from crossjepa.evaluation import export as export_lib  # pylint: disable=g-import-not-at-top
    zinfo = export_lib.read_info(str(config.eval.encoder)).get('zero_shot') or {}
    if templates and zinfo.get('classifier') != 'clip_text':
      raise ValueError(f'eval.zero_shot_templates = {templates}: prompts for a CLIP text tower, '
                       f'but the export {config.eval.encoder} has no readout into a CLIP '
                       'teacher\'s embedding: leave it empty')
    tower = export_text_tower(config, zinfo)
    differ = templates_differ(config, zinfo)
    if differ and tower is None:
      raise ValueError(f'{differ}: give its teacher\'s text tower (eval.text_tower=DIR) to embed '
                       'the words in them, or leave eval.zero_shot_templates empty')
    return
  checkpoint = str(config.teacher.checkpoint or '')
  if templates and not (checkpoint and os.path.isdir(checkpoint)
                        and teacher_io.has_text(checkpoint)):
    raise ValueError(f'eval.zero_shot_templates = {templates}: prompts for a CLIP teacher\'s text '
                     f'tower, but the teacher ({config.teacher.kind}'
                     f'{", " + checkpoint if checkpoint else ""}) has none: leave it empty, or set '
                     'teacher.checkpoint to a CLIP folder converted with its text tower')


def export_words(config, class_names: Sequence[str], zinfo: Mapping[str, Any],
                 arrays: Mapping[str, np.ndarray]
                 ) -> tuple[dict[str, tuple[str, ...]], np.ndarray, list[str], tuple[str, ...]]:
  """(3D class -> words, the classifier [E, K] of those classes, the words embedded here, the
  prompts) for the evaluation of a CLIP export: the classes' words (mapping_for(words=True)) from
  the words whose text embeddings the export carries, the others through eval.text_tower
  (export_text_tower), and all of them there when eval.zero_shot_templates are not the export's;
  without it, NotApplicable naming the words the export lacks."""
  mapping = mapping_for(config, class_names, words=True)
  differ = templates_differ(config, zinfo)
  templates = templates_for(config) if differ else export_templates(zinfo)
  columns = {} if differ else carried_columns(zinfo, arrays)
  lacking = missing_words(columns, mapping.values())
  if lacking:
    tower = export_text_tower(config, zinfo)
    if tower is None and differ:
      raise NotApplicable(f'zero-shot: {differ}: give its teacher\'s text tower '
                          '(eval.text_tower=DIR) to embed the words in them, or leave '
                          'eval.zero_shot_templates empty')
    if tower is None:
      raise NotApplicable(f'zero-shot: the export {not_carried(len(columns), lacking)}: give its '
                          'teacher\'s text tower (eval.text_tower=DIR), name the classes with '
                          'those words (eval.zero_shot_classes), or export from a run whose '
                          'classes have them')
    columns.update(zip(lacking, word_columns(tower, lacking, templates).T))
  labels = [n for n in class_names if n in mapping]
  return mapping, class_columns(columns, [mapping[n] for n in labels]), lacking, templates
