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

Two layouts of the same AdamW: on a replicated state, `flat_adamw` (one f32 vector per group, a
few XLA ops for the whole update); on an FSDP-sharded one, optax's per-leaf chain. A checkpoint
moves from one to the other through `moments_of` / `opt_state_from_moments`.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
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


class FlatAdamWState(NamedTuple):
  """The state of `flat_adamw`: the step count and, per trainable group (sorted labels), the first
  and second Adam moments of all its leaves as one f32 vector each (leaves in tree order)."""
  count: jax.Array
  mu: tuple
  nu: tuple


def _flat(leaves: Sequence[jax.Array]) -> jax.Array:
  return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm of all leaves, as one reduction over their concatenation (optax.global_norm
  reduces leaf by leaf: one more XLA op per leaf)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros([], jnp.float32)
  flat = _flat(leaves)
  return jnp.sqrt(jnp.sum(flat * flat))


def _trainable_groups(label_leaves: Sequence[str]) -> list[tuple[str, list[int]]]:
  """(label, leaf indices in tree order) of each trainable group, labels sorted: the groups of
  `flat_adamw` and the order of its moment vectors."""
  return [(name, [i for i, l in enumerate(label_leaves) if l == name])
          for name in sorted(set(label_leaves) - {'frozen'})]


def flat_adamw(optim, labels: Any) -> optax.GradientTransformation:
  """The optimizer of `make_optimizer`, computed on one flat vector per trainable group.

  The same arithmetic as the optax chain (frozen leaves zeroed, global-norm clipping over the
  trainable leaves, `scale_by_adam`, `add_decayed_weights`, `scale_by_learning_rate`), but each
  step concatenates a group's gradients and parameters, runs AdamW once over the whole vector and
  slices the updates back into leaves. XLA then emits a few ops for the whole update instead of
  several per leaf (`experiments/profile_step.py --optimizer=flat|chain`: the smoke step's
  compiled ops 1,134 -> 546, update 773 -> 185). The clipping norm sums in another order than
  optax's (the parity is tested). The moments are concatenations, so this is for replicated
  parameters; `make_optimizer` gives the per-leaf chain for FSDP-sharded states.
  """
  label_leaves, treedef = jax.tree.flatten(labels)
  named = _trainable_groups(label_leaves)
  groups = [idx for _, idx in named]
  specs = [_parse_label(name) for name, _ in named]
  lr = learning_rate_schedule(optim)
  b1, b2, eps = float(optim.b1), float(optim.b2), 1e-8
  wd, clip = float(optim.weight_decay), float(optim.grad_clip)

  def init(params):
    leaves = treedef.flatten_up_to(params)
    sizes = [sum(int(math.prod(leaves[i].shape)) for i in idx) for idx in groups]
    return FlatAdamWState(count=jnp.zeros([], jnp.int32),
                          mu=tuple(jnp.zeros((n,), jnp.float32) for n in sizes),
                          nu=tuple(jnp.zeros((n,), jnp.float32) for n in sizes))

  def update(grads, state, params=None):
    g_leaves, p_leaves = treedef.flatten_up_to(grads), treedef.flatten_up_to(params)
    g = [_flat([g_leaves[i] for i in idx]) for idx in groups]
    if clip > 0:
      norm = jnp.sqrt(sum(jnp.sum(x * x) for x in g)) if g else jnp.zeros([], jnp.float32)
      g = [jax.lax.select(norm < clip, x, (x / norm) * clip) for x in g]
    count = optax.safe_int32_increment(state.count)
    b1_fix = (1 - b1 ** count).astype(jnp.float32)
    b2_fix = (1 - b2 ** count).astype(jnp.float32)
    rate = jnp.asarray(lr(state.count), jnp.float32)
    out = [None] * len(p_leaves)
    mus, nus = [], []
    for idx, spec, gv, mu, nu in zip(groups, specs, g, state.mu, state.nu):
      mu = (1 - b1) * gv + b1 * mu
      nu = (1 - b2) * (gv ** 2) + b2 * nu
      u = (mu / b1_fix) / (jnp.sqrt(nu / b2_fix) + eps)
      if spec['weight_decay'] and wd > 0:
        u = u + wd * _flat([p_leaves[i] for i in idx])
      u = -(rate * spec['lr_mult']) * u
      start = 0
      for i in idx:
        shape = p_leaves[i].shape
        out[i] = u[start:start + math.prod(shape)].reshape(shape).astype(p_leaves[i].dtype)
        start += math.prod(shape)
      mus.append(mu)
      nus.append(nu)
    out = [jnp.zeros(x.shape, x.dtype) if o is None else o           # frozen leaves: zero
           for o, x in zip(out, p_leaves)]
    return treedef.unflatten(out), FlatAdamWState(count=count, mu=tuple(mus), nu=tuple(nus))

  return optax.GradientTransformation(init, update)


def make_optimizer(optim, params: Any, param_rules=(), flat: bool = True):
  """AdamW (+ global-norm clipping) of one optimizer block, with ordered per-parameter rules.

  `params` (arrays or ShapeDtypeStructs) fixes the groups, one per distinct (freeze,
  weight_decay, lr_mult) combination. `flat`: `flat_adamw` (replicated parameters); otherwise one
  optax chain per group, combined with `optax.multi_transform` (leaf by leaf, for FSDP-sharded
  states, and the reference `flat_adamw` is tested against).
  """
  labels = param_labels(params, param_rules)
  if flat:
    return flat_adamw(optim, labels)
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


def create(params: Any, ema_params: Any, optim, param_rules=(), flat: bool = True) -> TrainState:
  """A fresh TrainState at step 0 (call inside jit for sharded initialisation)."""
  tx = make_optimizer(optim, params, param_rules, flat)
  return TrainState.create(apply_fn=None, params=params, tx=tx, ema_params=ema_params)


def describe_rules(params: Any, rules) -> dict[str, int]:
  """{label: number of parameters} (logged at start so a rule that matches nothing shows)."""
  labels = param_labels(params, rules)
  counts: dict[str, int] = {}
  for label, leaf in zip(jax.tree.leaves(labels), jax.tree.leaves(params)):
    counts[label] = counts.get(label, 0) + int(math.prod(leaf.shape))
  return counts


# ------------------------------------------------------------------ optimizer-state layouts

# A per-leaf chain's Adam moments: opt_state/2/inner_states/<label>/inner_state/0/{mu,nu}/<param>
_CHAIN_MOMENT = re.compile(r'(?:^|/)inner_states/([^/]+)/inner_state/0/(mu|nu|count)(?:/(.+))?$')


def leaf_paths(tree: Any) -> dict[str, Any]:
  """{'a/b/c' path: leaf} of a tree, in tree order."""
  return {param_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def opt_entries(tree: Any) -> dict[str, Any]:
  """{path under 'opt_state/': leaf} of a TrainState-shaped tree (or its checkpoint metadata)."""
  return {k[len('opt_state/'):]: v for k, v in leaf_paths(tree).items()
          if k.startswith('opt_state/')}


def _flat_groups(labels: Any) -> list[list[str]]:
  """Per trainable group of `flat_adamw`, in its order, the parameter paths in tree order."""
  paths = list(leaf_paths(labels))
  return [[paths[i] for i in idx] for _, idx in _trainable_groups(jax.tree.leaves(labels))]


def moments_of(opt_state: Mapping[str, Any], params: Any, labels: Any) -> tuple[int, dict]:
  """(step count, {param path: {'mu': array, 'nu': array}}) of an optimizer state in either
  layout (`flat_adamw`'s or the per-leaf chain's), given as {path under opt_state: array};
  `params` (shapes) and `labels` are those the state was written with. Raises ValueError when
  the state is in neither layout or its sizes do not fit `params`."""
  shapes = {k: tuple(v.shape) for k, v in leaf_paths(params).items()}
  moments: dict[str, dict] = {}
  if any('inner_states/' in k for k in opt_state):
    counts = []
    for key, value in opt_state.items():
      m = _CHAIN_MOMENT.search(key)
      if m and m.group(2) == 'count':
        counts.append(int(np.asarray(value)))
      elif m:
        moments.setdefault(m.group(3), {})[m.group(2)] = np.asarray(value)
    return (max(counts) if counts else 0), moments
  if 'count' not in opt_state:
    raise ValueError(f'optimizer state with entries {sorted(opt_state)[:6]}... is neither '
                     'the flat AdamW state (count, mu/<g>, nu/<g>) nor the per-leaf chain')
  for g, paths in enumerate(_flat_groups(labels)):
    sizes = [math.prod(shapes[p]) for p in paths]
    for kind in ('mu', 'nu'):
      vec = np.asarray(opt_state.get(f'{kind}/{g}', np.zeros((0,), np.float32)))
      if vec.shape != (sum(sizes),):
        raise ValueError(f'optimizer state {kind}/{g} has shape {vec.shape}, but the parameter '
                         f'group {g} (its first parameter {paths[0]!r}) has {sum(sizes)} values '
                         '(train.param_rules changed since the checkpoint was written?)')
      for path, start, size in zip(paths, np.cumsum([0] + sizes[:-1]), sizes):
        moments.setdefault(path, {})[kind] = vec[start:start + size].reshape(shapes[path])
  return int(np.asarray(opt_state['count'])), moments


def opt_state_from_moments(abstract_opt_state: Any, params: Any, labels: Any, count: int,
                           moments: Mapping[str, Mapping[str, np.ndarray]]) -> Any:
  """A tree like `abstract_opt_state` (either layout) of numpy arrays holding `count` and the
  given Adam moments. Raises ValueError naming a trainable parameter that has none."""
  shapes = {k: tuple(v.shape) for k, v in leaf_paths(params).items()}

  def moment(path, kind):
    if path not in moments or kind not in moments[path]:
      raise ValueError(f'the saved optimizer state has no Adam {kind} for parameter {path!r} '
                       '(it was frozen, or not in the model, when the checkpoint was written)')
    value = np.asarray(moments[path][kind], np.float32)
    if value.shape != shapes[path]:
      raise ValueError(f'the saved Adam {kind} of {path!r} has shape {value.shape}, the parameter '
                       f'{shapes[path]}')
    return value

  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_opt_state)
  groups = _flat_groups(labels)
  out = []
  for key_path, leaf in leaves:
    key = param_path(key_path)
    m = _CHAIN_MOMENT.search(key)
    if key == 'count' or key.endswith('/count'):
      value = np.asarray(count, np.int32)
    elif m:
      value = moment(m.group(3), m.group(2))
    elif re.fullmatch(r'(mu|nu)/\d+', key):
      kind, g = key.split('/')
      value = np.concatenate([moment(p, kind).ravel() for p in groups[int(g)]])
    else:
      raise ValueError(f'optimizer state entry {key!r} is in neither layout')
    if value.shape != tuple(leaf.shape):
      raise ValueError(f'optimizer state entry {key!r}: built {value.shape}, expected {leaf.shape}')
    out.append(value.astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)
