"""FLOPs and bytes per object of the pretraining step (forward + backward + update), two ways.

    .venv/bin/python experiments/flops.py [--config=configs/paper.py] [--batch=8] \
        [--views=0,1] [--at=512,2048] [--skip_anchor] [--out=FILE]

(a) `hand`: counted by hand from the built modules' sizes: every matmul of the mini-PointNet, the
    position MLP, the point encoder's blocks (qkv, q k^T, a v, proj, MLP), the predictor with its
    pose + histogram tokens, context projection, blocks and output projection, 2 m n k each, times
    3 for forward + backward (forward, dW, dX; times 2 where the input is data and needs no
    gradient), per component; a rough count of the elementwise work (LayerNorm, GELU, softmax,
    bias, residual, max-pool; flops per element in ELEMENTWISE) and of the update (AdamW, clipping,
    EMA, norms: UPDATE_FLOPS_PER_PARAM), kept apart. Bytes: the step's inputs read once + the state
    (params, Adam moments, EMA) read and written once (`min_bytes`), and with the activations a
    step moves when only elementwise chains are fused (`activation_bytes`: each matmul's input and
    output, each LayerNorm / GELU / softmax / max-pool kernel, once per pass, compute dtype).
(b) `compile`: XLA's cost analysis (`flops`, `bytes accessed`) of the same step compiled for one
    CPU device (bench_step.cpu_cost: ShapeDtypeStruct inputs, nothing runs) at a small --batch, and
    of the step's fixed part alone (the same train_step with a loss whose gradients are an input:
    update, EMA, norms), so per object at batch B = (step - fixed) / batch + fixed / B.
For the config's train.views_per_step (`--views` 0) and any other listed (1: one view per object,
the yardstick's work). Also the yardstick /work/shared/anchors/step_jax.py's own count (its JSON
`gflop_per_object`, XLA's CPU compile, run at --batch on the CPU) corrected to --at the same way
(its AdamW compiled alone), beside a hand count of its model with the same rules.
CPU only; 2.5-4 minutes on 2 shared cores (one compile per variant, plus the anchor's run).
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_step  # noqa: E402
from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402

# Rough flops per element of the elementwise work, forward + backward (as XLA counts: one per
# elementwise op and output element, one per element reduced; transcendentals apart).
ELEMENTWISE = {'layernorm': 24, 'gelu': 12, 'relu': 3, 'softmax': 10, 'bias': 2, 'residual': 2,
               'maxpool': 3, 'scale': 2}
# Elementwise ops that are a kernel of their own (the rest fuse into a neighbour: bias and residual
# adds, scales, a ReLU after a LayerNorm).
ELEMENTWISE_KERNELS = ('layernorm', 'gelu', 'softmax', 'maxpool')
# AdamW (moments, bias correction, decay, lr) + global-norm clipping + EMA + the three logged norms.
UPDATE_FLOPS_PER_PARAM = 30


def anchor_path() -> str:
  """step_jax.py: shared/anchors/ in the checkout, ../shared/anchors beside it, or the carried copy."""
  for base in (os.path.join(REPO, 'shared'), os.path.join(REPO, '..', 'shared'),
               os.path.join(REPO, '.device_wheels')):
    path = os.path.join(base, 'anchors', 'step_jax.py')
    if os.path.isfile(path):
      return os.path.abspath(path)
  return ''


# ------------------------------------------------------------------ hand count


class Count:
  """Per-component forward / forward+backward flops and activation bytes, per object."""

  def __init__(self, act_bytes: int):
    self.act_bytes = act_bytes
    self.parts = {}

  def _part(self, comp):
    return self.parts.setdefault(comp, {'fwd_flops': 0.0, 'fwd_bwd_flops': 0.0,
                                        'elementwise_flops': 0.0, 'matmul_io_bytes': 0.0,
                                        'elementwise_io_bytes': 0.0})

  def matmul(self, comp, m, k, n, *, copies=1, input_grad=True):
    """[m,k] @ [k,n], `copies` times per object; backward = dW (+ dX when the input needs one)."""
    fwd = 2.0 * m * k * n * copies
    part = self._part(comp)
    part['fwd_flops'] += fwd
    part['fwd_bwd_flops'] += fwd * (3 if input_grad else 2)
    # forward: read x, write y; dW: read x, dy; dX: read dy, write dx.
    io = (m * k + m * n) * copies * self.act_bytes
    part['matmul_io_bytes'] += io * (3 if input_grad else 2)

  def elementwise(self, comp, kind, elements, copies=1, io=None, itemsize=None):
    """`elements` outputs of an elementwise op; `io`: whether it is a kernel of its own (one read
    + one write forward, two reads + one write backward), else fused into its neighbour."""
    part = self._part(comp)
    part['elementwise_flops'] += ELEMENTWISE[kind] * elements * copies
    if io is None:
      io = kind in ELEMENTWISE_KERNELS
    if io:
      part['elementwise_io_bytes'] += 5 * elements * copies * (itemsize or self.act_bytes)

  def dense(self, comp, m, k, n, *, copies=1, input_grad=True, bias=True):
    self.matmul(comp, m, k, n, copies=copies, input_grad=input_grad)
    if bias:
      self.elementwise(comp, 'bias', m * n, copies)

  def block(self, comp, t, d, hidden, heads, *, copies=1, pos=False, rows=None):
    """One pre-LN transformer block over t tokens of width d (layers.Block); `rows`: only the
    last `rows` tokens' outputs (keys and values of all t, the rest for `rows` queries)."""
    r = t if rows is None else rows
    if pos:
      self.elementwise(comp, 'residual', t * d, copies)
    self.elementwise(comp, 'layernorm', t * d, copies)
    self.dense(comp, t, d, 3 * d, copies=copies)                          # qkv
    # q k^T and a v over heads: 2 r t (d/heads) each, per head; both operands need gradients.
    self.matmul(comp, r, d // heads, t, copies=copies * heads)           # logits
    self.elementwise(comp, 'scale', heads * r * t, copies)
    self.elementwise(comp, 'softmax', heads * r * t, copies, itemsize=4)   # float32
    self.matmul(comp, r, t, d // heads, copies=copies * heads)           # weights @ v
    self.dense(comp, r, d, d, copies=copies)                              # proj
    self.elementwise(comp, 'residual', r * d, copies)
    self.elementwise(comp, 'layernorm', r * d, copies)
    self.dense(comp, r, d, hidden, copies=copies)                         # fc1
    self.elementwise(comp, 'gelu', r * hidden, copies)
    self.dense(comp, r, hidden, d, copies=copies)                         # fc2
    self.elementwise(comp, 'residual', r * d, copies)

  def totals(self):
    keys = ('fwd_flops', 'fwd_bwd_flops', 'elementwise_flops', 'matmul_io_bytes',
            'elementwise_io_bytes')
    return {k: sum(p[k] for p in self.parts.values()) for k in keys}


def hand_project(config, models, batch_np) -> dict:
  """Hand count of the crossjepa recipe's step for the built modules, per object."""
  pt, pr = models.point, models.predictor
  d_, tr = config.data, config.train
  g, k, v = int(d_.num_groups), int(d_.group_size), int(tr.views_per_step)
  act = jnp.dtype(bench_step.models_lib.compute_dtype(config)).itemsize
  c = Count(act)
  # mini-PointNet over the G x K re-centred points of an object (point.MiniPointNet).
  w0, w1, w2 = (int(w) for w in pt.tokenizer_widths)
  d = int(pt.width)
  comp = 'tokenizer (mini-PointNet)'
  c.dense(comp, g * k, 3, w0, input_grad=False)
  c.elementwise(comp, 'layernorm', g * k * w0)
  c.elementwise(comp, 'relu', g * k * w0)
  c.dense(comp, g * k, w0, w1)
  c.elementwise(comp, 'maxpool', g * k * w1)
  c.dense(comp, g * k, w1, w2)            # conv3's point half (point.GlobalLocalDense), + its sum
  c.dense(comp, g, w1, w2)                # conv3's group half: once per group
  c.elementwise(comp, 'layernorm', g * k * w2)
  c.elementwise(comp, 'relu', g * k * w2)
  c.dense(comp, g * k, w2, d)
  c.elementwise(comp, 'maxpool', g * k * d)
  comp = 'position MLP (centres)'
  c.dense(comp, g, 3, int(pt.pos_hidden), input_grad=False)
  c.elementwise(comp, 'gelu', g * int(pt.pos_hidden))
  c.dense(comp, g, int(pt.pos_hidden), d)
  t_enc = g + (1 if pt.use_cls else 0)
  comp = f'point encoder blocks ({int(pt.depth)} x {d}, {t_enc} tokens)'
  for i in range(int(pt.depth)):
    c.block(comp, t_enc, d, int(pt.mlp_ratio * d), int(pt.num_heads),
            pos=bool(pt.pos_every_layer or i == 0))
  c.elementwise(comp, 'layernorm', t_enc * d)
  target = str(tr.target)
  if target == 'object':
    comp = 'object head (linear)'
    c.dense(comp, 1, 2 * d, int(pr.out_dim))
  else:
    dp = int(pr.width)
    q = g if target == 'groups' else 1
    t_pred = int(pr.use_pose) + int(pr.use_hist) + g + q
    comp = f'predictor inputs ({v} views: pose, hist, context projection, queries)'
    if pr.use_pose:
      c.dense(comp, 1, 12, dp, copies=v, input_grad=False)
    if pr.use_hist:
      c.dense(comp, 1, 3 * int(d_.hist_bins), dp, copies=v, input_grad=False)
    c.dense(comp, g, d, dp, copies=v)                                     # context_proj, per view
    if target == 'groups':
      c.dense(comp, g, 3, int(pr.pos_hidden), copies=v, input_grad=False)
      c.elementwise(comp, 'gelu', g * int(pr.pos_hidden), v)
      c.dense(comp, g, int(pr.pos_hidden), dp, copies=v)
    comp = f'predictor blocks ({int(pr.depth)} x {dp}, {t_pred} tokens, {v} views)'
    for i in range(int(pr.depth)):       # the last block: the query rows only (Predictor)
      last = i == int(pr.depth) - 1 and bool(pr.last_block_queries_only)
      c.block(comp, t_pred, dp, int(pr.mlp_ratio * dp), int(pr.num_heads), copies=v,
              rows=q if last else None)
    comp = f'predictor output ({q} query x {int(pr.out_dim)}, {v} views)'
    c.elementwise(comp, 'layernorm', q * dp, v)
    c.dense(comp, q, dp, int(pr.out_dim), copies=v)
  comp = 'loss (target layer norm, smooth L1 / MSE)'
  out_dim = int(pr.out_dim)
  n_targets = (1 if target == 'object' else v * (g if target == 'groups' else 1))
  c._part(comp)['elementwise_flops'] += 20 * out_dim * n_targets           # pylint: disable=protected-access
  return c


def hand_anchor(args: dict) -> Count:
  """The same rules on step_jax.py's model (its defaults: 8 x 288 encoder with a CLS token, 4 x 256
  predictor over [tokens, pose, hist, query], 768-d head, one view per object)."""
  g, k, w, depth = args['groups'], args['group_size'], args['width'], args['depth']
  c = Count(2 if args['dtype'] == 'bfloat16' else 4)
  comp = 'tokenizer (mini-PointNet)'
  c.dense(comp, g * k, 3, 128, input_grad=False)
  c.elementwise(comp, 'relu', g * k * 128, io=True)
  c.dense(comp, g * k, 128, 256)
  c.elementwise(comp, 'maxpool', g * k * 256)
  c.dense(comp, g * k, 512, 512)
  c.elementwise(comp, 'relu', g * k * 512, io=True)
  c.dense(comp, g * k, 512, w)
  c.elementwise(comp, 'maxpool', g * k * w)
  comp = 'position MLP (centres)'
  c.dense(comp, g, 3, 128, input_grad=False)
  c.elementwise(comp, 'gelu', g * 128)
  c.dense(comp, g, 128, w)
  comp = f'point encoder blocks ({depth} x {w}, {g + 1} tokens)'
  for _ in range(depth):
    c.block(comp, g + 1, w, 4 * w, 6)
  c.elementwise(comp, 'layernorm', (g + 1) * w)
  comp = 'predictor inputs (pose, hist, token projection)'
  c.dense(comp, g + 1, w, 256)
  c.dense(comp, 1, 12, 256, input_grad=False)
  c.dense(comp, 1, 48, 256, input_grad=False)
  comp = f'predictor blocks (4 x 256, {g + 4} tokens, 1 view)'
  for _ in range(4):
    c.block(comp, g + 4, 256, 1024, 4)
  comp = 'predictor output (1 query x 768)'
  c.elementwise(comp, 'layernorm', 256)
  c.dense(comp, 1, 256, 768)
  c._part('loss (MSE)')['elementwise_flops'] += 6 * 768                       # pylint: disable=protected-access
  return c


def hand_summary(c: Count, params: int, input_bytes: float, at) -> dict:
  tot = c.totals()
  per_obj_flops = tot['fwd_bwd_flops'] + tot['elementwise_flops']
  act_bytes = tot['matmul_io_bytes'] + tot['elementwise_io_bytes']
  fixed_flops = UPDATE_FLOPS_PER_PARAM * params
  state_bytes = 32.0 * params     # params, Adam m and v, EMA: f32, read once and written once
  return {
      'components': {name: {k: round(val) for k, val in part.items()}
                     for name, part in c.parts.items()},
      'per_object': {'matmul_fwd_flops': tot['fwd_flops'], 'matmul_fwd_bwd_flops': tot['fwd_bwd_flops'],
                     'elementwise_flops_rough': tot['elementwise_flops'],
                     'flops': per_obj_flops, 'input_bytes': input_bytes,
                     'matmul_io_bytes': tot['matmul_io_bytes'],
                     'elementwise_io_bytes': tot['elementwise_io_bytes'],
                     'activation_bytes': act_bytes,
                     'flops_per_activation_byte': per_obj_flops / act_bytes},
      'per_step_fixed': {'update_flops_rough': fixed_flops, 'state_bytes': state_bytes,
                         'params': params},
      'at_batch': {str(b): {'flops_per_object': per_obj_flops + fixed_flops / b,
                            'matmul_flops_per_object': tot['fwd_bwd_flops'],
                            'min_bytes_per_object': input_bytes + state_bytes / b,
                            'activation_bytes_per_object': (input_bytes + act_bytes +
                                                            state_bytes / b)}
                   for b in at},
  }


# ------------------------------------------------------------------ compile (XLA cost analysis)


def fixed_part_cost(config, models, teacher) -> dict:
  """Cost of the step without the model: the same train_step, with a loss whose gradients are its
  input (sum(p * g) over the params: 2 flops per param of its own, subtracted), so the update,
  the EMA and the logged norms are what is left."""
  from crossjepa.training import pretraining  # pylint: disable=g-import-not-at-top
  from crossjepa.training import step as step_lib  # pylint: disable=g-import-not-at-top
  mesh_lib = bench_step.mesh_lib
  config, mesh, state, shardings = bench_step.cpu_abstract_state(config, models, teacher)

  def loss_fn(params, ema_params, grads, rng):
    del ema_params, rng
    terms = jax.tree.map(lambda p, gr: jnp.sum(p * gr), params, grads)
    return sum(jax.tree.leaves(terms)), {}

  rep = mesh_lib.replicated(mesh)
  fn = jax.jit(lambda s, gr, r: step_lib.train_step(s, gr, r, loss_fn=loss_fn, optim=config.train,
                                                    ema=pretraining.ema(config)),
               in_shardings=(shardings, rep, rep), out_shardings=(shardings, rep))
  grads = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state.params)
  rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=rep)
  cost = bench_step.cost_of(fn.lower(state, grads, rng).compile())
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  cost['flops'] -= 2.0 * params
  return cost


def anchor_fixed_cost(params: int) -> dict:
  """AdamW of step_jax.py (optax.adamw(1e-4, weight_decay=0.05)) over `params` f32 parameters."""
  import optax  # pylint: disable=g-import-not-at-top
  tx = optax.adamw(1e-4, weight_decay=0.05)
  p = jax.ShapeDtypeStruct((params,), jnp.float32)

  def update(params_, grads, opt):
    up, opt = tx.update(grads, opt, params_)
    return optax.apply_updates(params_, up), opt

  opt = jax.eval_shape(tx.init, p)
  return bench_step.cost_of(jax.jit(update).lower(p, p, opt).compile())


def per_object(step: dict, fixed: dict, batch: int, at) -> dict:
  out = {}
  for b in at:
    out[str(b)] = {
        'flops_per_object': (step['flops'] - fixed['flops']) / batch + fixed['flops'] / b,
        'bytes_per_object': ((step['bytes accessed'] - fixed['bytes accessed']) / batch +
                             fixed['bytes accessed'] / b)}
  return out


def project_variant(config_path: str, views: int, batch: int, at) -> dict:
  config = bench_step.load_config(config_path, {'train.views_per_step': views,
                                                'train.batch_size': batch})
  dim = bench_step.teacher_dim(config)
  teacher = bench_step.models_lib.teacher_widths(dim)
  models = bench_step.models_lib.build_models(config, teacher)
  batch_np = bench_step.testing.synthetic_batch(config, batch, teacher_dim=dim)
  input_bytes = sum(x.nbytes for x in jax.tree.leaves(batch_np)) / batch
  t0 = time.time()
  step = bench_step.cpu_cost(config, batch_np, models, teacher)
  t_step = time.time() - t0
  fixed = fixed_part_cost(config, models, teacher)
  from crossjepa.training import pretraining  # pylint: disable=g-import-not-at-top
  abstract = pretraining.abstract_state(config, jax.random.PRNGKey(0), models, teacher)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  hand = hand_summary(hand_project(config, models, batch_np), params, input_bytes, at)
  compiled = {'batch': batch, 'step': step, 'fixed_part': fixed, 'compile_s': round(t_step, 1),
              'at_batch': per_object(step, fixed, batch, at)}
  ratio = {b: hand['at_batch'][b]['flops_per_object'] / compiled['at_batch'][b]['flops_per_object']
           for b in hand['at_batch']}
  matmul_ratio = {b: hand['at_batch'][b]['matmul_flops_per_object'] /
                  compiled['at_batch'][b]['flops_per_object'] for b in hand['at_batch']}
  return {
      'views_per_step': int(config.train.views_per_step), 'target': str(config.train.target),
      'dtype': str(config.train.dtype), 'params': params,
      'point_encoder': {'variant': str(config.model.point), 'width': int(models.point.width),
                        'depth': int(models.point.depth)},
      'predictor': {'variant': str(config.model.predictor),
                    'width': int(getattr(models.predictor, 'width', 0)),
                    'depth': int(getattr(models.predictor, 'depth', 0)),
                    'overrides': dict(config.model.predictor_overrides.to_dict())},
      'hand': hand, 'compile': compiled,
      'hand_over_compile': {'flops_with_elementwise': ratio, 'matmul_flops_only': matmul_ratio},
  }


def anchor(batch: int, at) -> dict:
  path = anchor_path()
  if not path:
    return {'error': 'step_jax.py not found (shared/anchors, ../shared/anchors, .device_wheels/anchors)'}
  t0 = time.time()
  res = subprocess.run([sys.executable, path, '--batch', str(batch), '--steps', '1'],
                       capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS='cpu'),
                       check=False)
  line = [ln for ln in res.stdout.splitlines() if ln.startswith('{')]
  if res.returncode or not line:
    return {'error': f'step_jax.py exited {res.returncode}: {res.stderr[-2000:]}'}
  out = json.loads(line[-1])
  step_flops = out['gflop_per_object'] * 1e9 * batch
  fixed = anchor_fixed_cost(int(out['params']))
  hand_args = {'groups': 64, 'group_size': 32, 'width': 288, 'depth': 8, 'dtype': 'bfloat16'}
  input_bytes = (64 * 32 * 3 + 64 * 3 + 12 + 48 + 768) * 4.0
  hand = hand_summary(hand_anchor(hand_args), int(out['params']), input_bytes, at)
  at_batch = {str(b): {'flops_per_object': (step_flops - fixed['flops']) / batch + fixed['flops'] / b}
              for b in at}
  return {
      'path': path, 'batch': batch, 'run_s': round(time.time() - t0, 1), 'params': out['params'],
      'gflop_per_object_reported': out['gflop_per_object'],
      'fixed_part_adamw': fixed, 'at_batch': at_batch, 'hand': hand,
      'hand_over_compile': {b: hand['at_batch'][b]['flops_per_object'] /
                            at_batch[b]['flops_per_object'] for b in at_batch},
      'note': ('step_jax.py prints only XLA\'s flops (rounded to 1e-3 GFLOP per object), not bytes; '
               'its run here is on the CPU at --batch with --steps 1'),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', default=os.path.join(REPO, 'configs', 'paper.py'))
  p.add_argument('--batch', type=console.int_arg(1), default=8, help='batch of the CPU compiles')
  p.add_argument('--views', type=console.list_arg(console.int_arg(0)), default='0,1',
                 help='views_per_step values (0 = the config\'s)')
  p.add_argument('--at', type=console.list_arg(console.int_arg(1)), default='512,2048',
                 help='batches to report per-object numbers at')
  p.add_argument('--skip_anchor', action='store_true')
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()
  start = time.time()
  at = args.at
  out = {'config': os.path.relpath(os.path.abspath(args.config), REPO), 'compile_batch': args.batch,
         'jax': jax.__version__, 'variants': {}}
  for views in args.views:
    res = project_variant(args.config, views, args.batch, at)
    out['variants'][f"views{res['views_per_step']}"] = res
  if not args.skip_anchor:
    out['anchor_step_jax'] = anchor(args.batch, at)
  # The flat table gpu_summary.py reads: FLOPs per object (the CPU compile's, per batch).
  out['flops_per_object'] = {name: {b: v['flops_per_object'] for b, v in r['compile']['at_batch'].items()}
                             for name, r in out['variants'].items()}
  if 'at_batch' in out.get('anchor_step_jax', {}):
    out['flops_per_object']['anchor'] = {b: v['flops_per_object']
                                         for b, v in out['anchor_step_jax']['at_batch'].items()}
  notes = []
  for name, r in out['variants'].items():
    for b, ratio in r['hand_over_compile']['flops_with_elementwise'].items():
      if abs(ratio - 1) > 0.10:
        notes.append(f'{name} at batch {b}: hand / compile = {ratio:.3f}, outside 10 %')
    ratios = r['hand_over_compile']
    notes.append(f"{name}: hand / compile = {min(ratios['flops_with_elementwise'].values()):.3f} "
                 f"({min(ratios['matmul_flops_only'].values()):.3f} for the matmuls alone; XLA counts a "
                 'dot as 2 m n k too): the rest is elementwise work the rough count '
                 'leaves out or under-weights (dtype converts, float32 LayerNorm / softmax '
                 'statistics, reductions of the backward pass)')
    pr = r['predictor']
    if r['target'] != 'object' and pr['overrides'].get('depth') is not None:
      notes.append(f"{name}: the predictor is {pr['depth']} block(s) deep: model.predictor_overrides "
                   f"= {pr['overrides']} (inherited from configs/default.py) overrides the "
                   f"'{pr['variant']}' variant's own depth")
  notes.append('bytes: the compile\'s are XLA\'s CPU "bytes accessed" (operands + outputs of every '
               'op as the CPU backend fuses them, float32 statistics and converts included): an '
               'upper bound, far above what a GPU moves (at the anchors\' 13-15 k objects/s on an '
               'H100, 3.35 TB/s allows at most about 220 MB per object). The hand min_bytes counts '
               'the inputs and the state (params, Adam moments, EMA) once; activation_bytes adds '
               'one write and one read per pass of every activation (each matmul\'s input and '
               'output, each elementwise kernel: LayerNorm, GELU, softmax, max-pool) in the compute '
               'dtype: the traffic of a step that fuses only the elementwise chains')
  out['note'] = notes
  out['seconds'] = round(time.time() - start, 1)
  fileio.print_json(out, args.out)


if __name__ == '__main__':
  main()
