"""Train state, optimizer, schedules and per-parameter rules: one optimizer for every trainer.

Follows the JEPA references (I-JEPA `src/helper.py`, Point-JEPA): AdamW with a linear warm-up then
cosine decay of the learning rate, and an EMA target whose momentum follows a cosine schedule from
`train.ema_momentum[0]` to `[1]` over `train.steps`. Every schedule is a pure function of the step
held in the state, so a resumed run replays nothing (no Python generators, unlike I-JEPA).

The optimizer is configured by one block shape, used as is by pretraining (`config.train`), the
offline teacher stage (`config.teacher.train`) and fine-tuning (`config.eval.finetune`): keys `lr`,
`min_lr`, `warmup_steps` (a warm-up longer than `steps` ends at `steps`), `steps`, `b1`, `b2`,
`weight_decay`, `grad_clip`. The per-parameter rules are always `config.train.param_rules`.

Per-parameter policy (big_vision style) is an ordered list of regex rules in the config,
`train.param_rules = ((pattern, {'freeze': bool, 'weight_decay': bool, 'lr_mult': float}), ...)`.
Patterns are matched with `re.fullmatch` against '/'-joined parameter paths such as
'student/Block_0/Attention_0/query/kernel'; the first matching rule wins and keys it leaves out
take the defaults (trainable, decayed, lr x 1). Frozen parameters get `optax.set_to_zero` (no Adam
moments are allocated for them) and are zeroed before gradient clipping, so they do not change the
clipping of the others.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

RULE_KEYS = ('freeze', 'weight_decay', 'lr_mult')
DEFAULT_RULE = {'freeze': False, 'weight_decay': True, 'lr_mult': 1.0}


class TrainState(train_state.TrainState):
  """flax TrainState plus the EMA (Polyak) average used as target encoder / for evaluation.

  `apply_fn` is left None: the models are held outside the state (bound statically into the
  jitted step), so the state holds only arrays, the step and the optax transformation.
  """
  ema_params: Any = None


# ------------------------------------------------------------------ schedules


def learning_rate_schedule(optim) -> Callable[[jax.Array], jax.Array]:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `steps`."""
  peak, floor = float(optim.lr), float(optim.min_lr)
  total = int(optim.steps)
  warmup = min(int(optim.warmup_steps), total)
  if total <= 0 or warmup < 0:
    raise ValueError(f'optimizer: need steps > 0 and warmup_steps >= 0, got steps={total}, '
                     f'warmup_steps={warmup}')

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / max(warmup, 1)
    progress = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    cosine = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(step < warmup, warm, cosine)

  return schedule


def ema_momentum_schedule(momentum: Sequence[float], steps: int) -> Callable[[jax.Array], jax.Array]:
  """Cosine from `momentum[0]` at step 0 to `momentum[1]` at `steps` (held after)."""
  start, end = (float(v) for v in momentum)
  total = int(steps)
  if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
    raise ValueError(f'EMA momentum must be two values in [0, 1], got {(start, end)}')

  def schedule(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total, 1), 0.0, 1.0)
    return end - (end - start) * 0.5 * (1.0 + jnp.cos(math.pi * progress))

  return schedule


def ema_update(ema: Any, params: Any, momentum: jax.Array) -> Any:
  """ema <- momentum * ema + (1 - momentum) * params, leafwise (exact at momentum 0 and 1)."""
  return jax.tree.map(lambda e, p: (momentum * e + (1.0 - momentum) * p).astype(e.dtype), ema, params)


# ------------------------------------------------------------------ parameter rules


def param_path(path: Sequence[Any]) -> str:
  """A jax key path -> 'a/b/c'."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def _normalise_rules(rules) -> list[tuple[re.Pattern, dict]]:
  out = []
  for i, rule in enumerate(rules or ()):
    if len(rule) != 2:
      raise ValueError(f'config.train.param_rules[{i}] must be (pattern, dict), got {rule!r}')
    pattern, spec = rule
    spec = dict(spec)
    unknown = set(spec) - set(RULE_KEYS)
    if unknown:
      raise ValueError(f'config.train.param_rules[{i}] ({pattern!r}): unknown keys {sorted(unknown)}; '
                       f'expected a subset of {RULE_KEYS}')
    try:
      compiled = re.compile(pattern)
    except re.error as e:
      raise ValueError(f'config.train.param_rules[{i}]: bad regex {pattern!r}: {e}') from e
    out.append((compiled, spec))
  return out


def resolve_rule(path: str, rules) -> dict:
  """The policy for one parameter path: the first rule whose pattern fullmatches, over defaults."""
  for pattern, spec in _normalise_rules(rules):
    if pattern.fullmatch(path):
      return {**DEFAULT_RULE, **spec}
  return dict(DEFAULT_RULE)


def _label(spec: Mapping[str, Any]) -> str:
  if spec['freeze']:
    return 'frozen'
  return f"wd={int(bool(spec['weight_decay']))},lr_mult={float(spec['lr_mult'])!r}"


def param_labels(params: Any, rules) -> Any:
  """A tree like `params` whose leaves are group labels ('frozen' or 'wd=..,lr_mult=..')."""
  compiled = _normalise_rules(rules)

  def label(path, _):
    name = param_path(path)
    for pattern, spec in compiled:
      if pattern.fullmatch(name):
        return _label({**DEFAULT_RULE, **spec})
    return _label(DEFAULT_RULE)

  return jax.tree_util.tree_map_with_path(label, params)


def _parse_label(label: str) -> dict:
  if label == 'frozen':
    return {'freeze': True}
  wd, lr_mult = label.split(',')
  return {'freeze': False, 'weight_decay': wd == 'wd=1', 'lr_mult': float(lr_mult.split('=')[1])}


def make_optimizer(optim, params: Any, param_rules=()) -> optax.GradientTransformation:
  """AdamW (+ global-norm clipping) of one optimizer block, with ordered per-parameter rules.

  `params` (arrays or ShapeDtypeStructs) fixes the groups: one optax chain per distinct
  (freeze, weight_decay, lr_mult) combination, combined with `optax.multi_transform`.
  """
  labels = param_labels(params, param_rules)
  lr = learning_rate_schedule(optim)
  groups = {}
  for label in sorted(set(jax.tree.leaves(labels))):
    spec = _parse_label(label)
    if spec['freeze']:
      groups[label] = optax.set_to_zero()
      continue
    lr_mult = spec['lr_mult']
    parts = [optax.scale_by_adam(b1=float(optim.b1), b2=float(optim.b2))]
    if spec['weight_decay'] and float(optim.weight_decay) > 0:
      parts.append(optax.add_decayed_weights(float(optim.weight_decay)))
    parts.append(optax.scale_by_learning_rate(lambda step, m=lr_mult: lr(step) * m))
    groups[label] = optax.chain(*parts)
  frozen_mask = jax.tree.map(lambda l: l == 'frozen', labels)
  chain = [optax.masked(optax.set_to_zero(), frozen_mask)]
  if float(optim.grad_clip) > 0:
    chain.append(optax.clip_by_global_norm(float(optim.grad_clip)))
  chain.append(optax.multi_transform(groups, labels))
  return optax.chain(*chain)


def create(params: Any, ema_params: Any, optim, param_rules=()) -> TrainState:
  """A fresh TrainState at step 0 (call inside jit for sharded initialisation)."""
  tx = make_optimizer(optim, params, param_rules)
  return TrainState.create(apply_fn=None, params=params, tx=tx, ema_params=ema_params)


def describe_rules(params: Any, rules) -> dict[str, int]:
  """{label: number of parameters} (logged at start so a rule that matches nothing shows)."""
  labels = param_labels(params, rules)
  counts: dict[str, int] = {}
  for label, leaf in zip(jax.tree.leaves(labels), jax.tree.leaves(params)):
    counts[label] = counts.get(label, 0) + int(math.prod(leaf.shape))
  return counts

