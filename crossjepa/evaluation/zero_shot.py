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

A 3D class is named by the ImageNet classes that are that object (`IMAGENET_NAMES`, by name,
resolved against TFDS's ImageNet label list; each ImageNet class names at most one 3D class). An
object gets the 3D class of its highest-scoring mapped ImageNet class, among the classes of the
split that have a mapping; objects of the other classes are left out. Chance is 1 / (mapped
classes). Beside it, the teacher itself on the same objects' rendered views (its cached
view-averaged embedding through its classifier): the ceiling of what the point cloud can inherit.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# The synthetic source's classes that ImageNet has (by the first name of each ImageNet class in
# TFDS's list). Left out: the primitives, and the classes whose nearest ImageNet class is already
# another's (lamp / desk_lamp, the tables, bench / park_bench, shelf / bookcase, the stools and
# chairs ImageNet has no class for).
IMAGENET_NAMES: dict[str, tuple[str, ...]] = {
    'chair': ('folding chair', 'rocking chair'),
    'sofa': ('studio couch',),
    'square_table': ('dining table',),
    'bookcase': ('bookcase',),
    'lamp': ('table lamp',),
    'bed': ('four-poster',),
    'park_bench': ('park bench',),
    'desk': ('desk',),
    'bottle': ('beer bottle', 'pop bottle', 'water bottle', 'wine bottle'),
    'vase': ('vase',),
    'cup': ('cup',),
    'mug': ('coffee mug',),
    'bowl': ('mixing bowl', 'soup bowl'),
    'goblet': ('goblet',),
    'pitcher': ('pitcher', 'water jug'),
    'car': ('sports car', 'convertible', 'beach wagon', 'racer', 'cab', 'minivan'),
    'plane': ('airliner', 'warplane'),
    'rocket': ('missile', 'space shuttle'),
    'mushroom': ('mushroom', 'agaric'),
    'dumbbell': ('dumbbell',),
}


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


def predict(logits: np.ndarray, indices: Mapping[int, Sequence[int]]) -> np.ndarray:
  """The 3D label of each row: the class whose best mapped ImageNet logit is highest."""
  labels = np.array(sorted(indices))
  scores = np.stack([np.asarray(logits)[:, indices[int(c)]].max(axis=1) for c in labels], axis=1)
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


class ZeroShot:
  """A run's zero-shot evaluator: its teacher's classifier, the class mapping of its records and
  the pretraining splits' objects and teacher embeddings that readouts are fitted on (config and
  workdir of the run whose records hold the pretraining splits)."""

  KEYS = ('label', 'points', 'centers', 'groups')
  ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)

  def __init__(self, config, workdir: str):
    from crossjepa.data import pipeline  # pylint: disable=g-import-not-at-top
    from crossjepa.data import records  # pylint: disable=g-import-not-at-top
    from crossjepa.data import teacher_cache  # pylint: disable=g-import-not-at-top
    reason = not_applicable(config)
    if reason is not None:
      raise NotApplicable(f'zero-shot: {reason}')
    meta = dict(records.open_dataset(config, workdir).info.metadata or {})
    self.teacher_info = dict(meta.get('teacher') or {})
    if self.teacher_info.get('architecture') != 'efficientnet_lite':   # before loading weights
      raise NotApplicable(f'zero-shot: the records\' teacher {self.teacher_info.get("name")!r} '
                          f'({self.teacher_info.get("architecture")}) has no ImageNet classifier on '
                          'its global embedding (the EfficientNet-Lite teachers have one)')
    self.class_names = list(meta['class_names'])
    self.indices = class_indices(self.class_names)
    if not self.indices:
      raise NotApplicable(f'zero-shot: none of the classes {self.class_names} has an ImageNet '
                          'mapping (zero_shot.IMAGENET_NAMES)')
    head = classifier(teacher_cache.load_config_teacher(config))
    if isinstance(head, str):
      raise NotApplicable(f'zero-shot: {head}')
    self.kernel, self.bias = head
    keys = list(self.KEYS) + ['teacher/cls']
    parts = [pipeline.load_split(config, workdir, s, keys) for s in config.data.pretrain_splits]
    self.fit_data = {k: np.concatenate([p[k] for p in parts]) for k in self.KEYS}
    target = np.concatenate([p['teacher/cls'].astype(np.float32).mean(axis=1) for p in parts])
    self.target_mean, self.target_std = target.mean(0), target.std(0) + 1e-6
    self.target = (target - self.target_mean) / self.target_std
    self.head_stats = object_target_stats(config, workdir, target) if has_head(config) else None
    self._fitted: dict[Any, Any] = {}

  def _logits(self, embedding: np.ndarray) -> np.ndarray:
    return embedding @ self.kernel + self.bias

  def readout(self, embed_fn, data, *, key=None, batch: int = 64) -> dict[str, Any]:
    """The accuracy on `data` (load_split arrays of KEYS) of an encoder's features (`embed_fn`,
    evaluation.features) read out by ridge into the teacher's embedding (fitted on the
    pretraining splits, no label), through the teacher's classifier. A `key` names the encoder:
    its fitted readout is kept and reused for other data (the benchmark's eval sets)."""
    from sklearn.linear_model import RidgeCV  # pylint: disable=g-import-not-at-top
    from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top

    def features(arrays):
      return np.concatenate([
          embed_fn(arrays['points'][i:i + batch], arrays['centers'][i:i + batch],
                   arrays['groups'][i:i + batch]) for i in range(0, len(arrays['points']), batch)])

    fitted = self._fitted.get(key) if key is not None else None
    if fitted is None:
      train_x = features(self.fit_data)
      scaler = StandardScaler().fit(train_x)
      fitted = (scaler, RidgeCV(alphas=self.ALPHAS).fit(scaler.transform(train_x), self.target))
      if key is not None:
        self._fitted[key] = fitted
    scaler, ridge = fitted
    pred = ridge.predict(scaler.transform(features(data))) * self.target_std + self.target_mean
    return {**accuracy(self._logits(pred), data['label'], self.indices),
            'alpha': float(ridge.alpha_)}

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
    names = imagenet_class_names()
    return {'classes': {self.class_names[c]: [names[i].split(',')[0] for i in self.indices[c]]
                        for c in sorted(self.indices)},
            'protocol': PROTOCOL}


PROTOCOL = ('no 3D label: RidgeCV(alphas 0.1 .. 1e4, leave-one-out) from standardised '
            'concat(max, mean) features to the standardised view-averaged teacher embedding, fitted '
            'on the pretraining splits; through the teacher\'s ImageNet classifier; a 3D class = '
            'the best of its mapped ImageNet classes (zero_shot.IMAGENET_NAMES); objects of '
            'unmapped classes left out')


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
  values = [r['accuracy'] for r in random]
  out['random_init'] = {'accuracy': float(np.mean(values)), 'accuracy_std': float(np.std(values)),
                        'per_seed': random, 'seeds': [int(s) for s in config.eval.seeds]}
  if run_params is not None and has_head(config):
    out['object_head'] = zs.head(config, run_params, data)
  out['teacher_on_views'] = zs.teacher(data)
  return {**out, **zs.describe()}
