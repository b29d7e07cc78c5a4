"""Profile of the pretraining step: where one step's time goes, by op kind and by model part.

    python experiments/profile_step.py --config=configs/paper.py --batch=16 --steps=3 \
        [--dtype=bfloat16] [--views_per_step=N] [--attention=...] [--top=15] [--out=FILE]

Runs the compiled step (fake batches with the config's shapes, one device) under
`jax.profiler.trace`, reads the trace back with `jax.profiler.ProfileData`, and matches every
executed XLA op to its instruction in the compiled module's HLO:
- on the CPU, the thunk events of the PjRt client's threads (named after the HLO instruction);
- on a GPU, the device plane's "XLA Ops" line (kernels named after the HLO instruction).
Each instruction gets
- a kind: `matmul` (dot / convolution, or a fusion or library call holding one), `gather/scatter`,
  `reduce` (reductions, sort), `layout` (copy / transpose only), `collective`, `elementwise` (the
  rest: loop fusions of element-wise ops);
- a pass: `forward` (under jvp), `backward` (under transpose(jvp)), `update` (outside the
  gradient: optimizer, EMA, metrics);
- a model part: the flax module its metadata (op_name) names, and `--depth` levels of the path
  inside it, e.g. `PointEncoder/transformer`; `-` when it has none (optimizer, loss arithmetic).
Prints one JSON object: the compile time, the compiled module's entry ops (total, by pass and
kind: on a GPU about one kernel each), the median step time, the op time per kind / pass / part
(ms per step and share of the op total), and the `--top` instructions. `--optimizer=chain` runs
the per-leaf optax update instead of the flat one, to compare. Op time is the sum of the ops'
durations; on the CPU, independent thunks can overlap, so it can exceed the step's wall time.
"""
import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_step  # noqa: E402  (experiments/bench_step.py: config loading)
from crossjepa import console  # noqa: E402
from crossjepa import fileio  # noqa: E402
from crossjepa import testing  # noqa: E402
from crossjepa.models import layers  # noqa: E402
from crossjepa.training import mesh as mesh_lib  # noqa: E402
from crossjepa.training import pretraining  # noqa: E402
from crossjepa.training.recipes import models as models_lib  # noqa: E402

_INSTR = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(')
_ASSIGN = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')
_OPNAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_CUSTOM_TARGET = re.compile(r'custom_call_target="([^"]*)"')

MATMUL_OPS = {'dot', 'convolution'}
GATHER_OPS = {'gather', 'scatter', 'dynamic-slice', 'dynamic-update-slice'}
REDUCE_OPS = {'reduce', 'reduce-window', 'sort', 'select-and-scatter'}
LAYOUT_OPS = {'copy', 'transpose', 'bitcast', 'reshape', 'parameter', 'tuple', 'get-tuple-element',
              'constant', 'broadcast'}
COLLECTIVE_OPS = {'all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute',
                  'all-reduce-start', 'all-gather-start', 'collective-permute-start'}


def parse_hlo(text: str) -> dict[str, dict]:
  """{instruction name: {opcode, op_name, ops, entry}} for every instruction of every computation;
  `ops` is the set of opcodes the instruction executes, its fused / called computations' included;
  `entry`: whether it is in the entry computation (one launched op each, on a GPU a kernel or a
  library call, unless it only names a buffer)."""
  comps, current, instrs, entry = collections.defaultdict(list), None, {}, False
  for line in text.splitlines():
    m = _COMPUTATION.match(line)
    if m and not _ASSIGN.match(line):           # a header, not `%name = ...`
      current, entry = m.group(1), line.startswith('ENTRY')
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, opcode = m.group(1), m.group(2)
    op_name = _OPNAME.search(line)
    calls = _CALLS.findall(line)
    target = _CUSTOM_TARGET.search(line)
    instrs[name] = {'opcode': opcode, 'op_name': op_name.group(1) if op_name else '',
                    'calls': calls, 'target': target.group(1) if target else '',
                    'fusion_kind': 'ynn' if '__ynn_fusion' in line else '', 'entry': entry}
    comps[current].append(name)

  def ops_of(name, seen):
    ins = instrs[name]
    out = {ins['opcode']}
    for comp in ins['calls']:
      if comp in seen:
        continue
      seen.add(comp)
      for child in comps.get(comp, ()):
        out |= ops_of(child, seen)
    return out

  for name, ins in instrs.items():
    ins['ops'] = ops_of(name, set())
  return instrs


def kind_of(ins: dict) -> str:
  ops, target = ins['ops'], ins['target'].lower()
  if ops & MATMUL_OPS or any(k in target for k in ('gemm', 'matmul', 'dot', 'conv', 'cudnn')):
    return 'matmul'
  if ops & COLLECTIVE_OPS:
    return 'collective'
  if ops & GATHER_OPS:
    return 'gather/scatter'
  if ops & REDUCE_OPS:
    return 'reduce'
  if ops <= LAYOUT_OPS | {'fusion'}:
    return 'layout'
  return 'elementwise'


def pass_and_part(op_name: str, depth: int) -> tuple[str, str]:
  """('forward' | 'backward' | 'update', module path) from an HLO op_name such as
  'jit(train_step)/transpose(jvp(PointEncoder))/transformer/block2/mlp/fc1/dot_general': the
  module the gradient traced (PointEncoder), then `depth` levels of its path (transformer/block2)."""
  direction = ('backward' if 'transpose(' in op_name else
               'forward' if 'jvp(' in op_name else 'update')
  top = re.findall(r'jvp\(([\w.]+)\)', op_name)
  parts = [p for p in op_name.split('/') if p and '(' not in p and ')' not in p]
  path = top[-1:] + parts[:-1][:depth]     # the last component is the primitive
  return direction, '/'.join(path) if path else '-'


def op_events(profile, backend: str):
  """(instruction name, duration in ns) of every executed XLA op in the trace: the CPU client's
  thunk events; on a GPU the device plane's "XLA Ops" line, else its streams' kernels by their
  `hlo_op` stat."""
  skip = ('end: ', 'ThreadpoolListener', 'ThunkExecutor')
  if backend == 'cpu':
    for plane in profile.planes:
      for line in plane.lines:
        if 'XLAPjRtCpuClient' in line.name or 'XLAEigen' in line.name:
          for ev in line.events:
            if not ev.name.startswith(skip):
              yield ev.name, float(ev.duration_ns)
    return
  devices = [pl for pl in profile.planes if pl.name.startswith('/device:')]
  ops = [(ev.name, float(ev.duration_ns)) for pl in devices for line in pl.lines
         if line.name == 'XLA Ops' for ev in line.events]
  if not ops:
    for pl in devices:
      for line in pl.lines:
        if line.name.startswith('Stream'):
          for ev in line.events:
            stats = dict(ev.stats)
            if 'hlo_op' in stats:
              ops.append((str(stats['hlo_op']), float(ev.duration_ns)))
  yield from ops


NO_OP = {'parameter', 'get-tuple-element', 'tuple', 'constant', 'bitcast'}


def entry_ops(instrs: dict[str, dict]) -> dict:
  """The entry computation's executed ops (buffer-naming ones left out): total, by pass, by kind."""
  by_pass, by_kind = collections.Counter(), collections.Counter()
  for ins in instrs.values():
    if ins['entry'] and ins['opcode'] not in NO_OP:
      by_pass[pass_and_part(ins['op_name'], 0)[0]] += 1
      by_kind[kind_of(ins)] += 1
  return {'total': sum(by_pass.values()), 'by_pass': dict(by_pass.most_common()),
          'by_kind': dict(by_kind.most_common())}


def _table(totals: dict[str, float], steps: int, all_ns: float) -> dict[str, dict]:
  return {k: {'ms_per_step': round(v / steps / 1e6, 3), 'share': round(v / all_ns, 4)}
          for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--config', required=True)
  p.add_argument('--batch', type=console.int_arg(1), default=16)
  p.add_argument('--steps', type=console.int_arg(1), default=3,
                 help='profiled steps (after one warm-up)')
  p.add_argument('--dtype', default='', help='float32 | bfloat16 (default: the config)')
  p.add_argument('--views_per_step', type=console.int_arg(0), default=0, help="0 = the config's")
  p.add_argument('--attention', default='', choices=('',) + tuple(layers.ATTENTIONS))
  p.add_argument('--optimizer', default='flat', choices=('flat', 'chain'),
                 help="flat: the update on one vector per parameter group (the default on a "
                      "replicated state); chain: optax's per-leaf chain (FSDP's), to compare")
  p.add_argument('--depth', type=console.int_arg(1), default=1,
                 help='levels of the module path under the traced module in the part column')
  p.add_argument('--top', type=console.int_arg(1), default=15)
  p.add_argument('--trace_dir', default='', help='keep the trace here (default: a temp folder)')
  p.add_argument('--out', type=console.out_file_arg, default='')
  args = p.parse_args()

  config = bench_step.load_config(args.config, {
      'train.batch_size': args.batch, 'mesh.data': 1, 'mesh.fsdp': 1, 'train.dtype': args.dtype,
      'train.views_per_step': args.views_per_step, 'model.attention': args.attention})
  bench_step.use_optimizer(args.optimizer)
  dim = bench_step.teacher_dim(config)
  mesh = mesh_lib.make_mesh(config, jax.devices()[:1])
  teacher = models_lib.teacher_widths(dim)
  models = models_lib.build_models(config, teacher)
  state, shardings = pretraining.init_state(config, mesh, jax.random.PRNGKey(0), models, teacher)
  fn = pretraining.make_step(config, mesh, shardings, models)
  bsh = mesh_lib.batch_sharding(mesh)
  batch = mesh_lib.global_batch(testing.synthetic_batch(config, args.batch, teacher_dim=dim), bsh)
  rng = jax.random.PRNGKey(1)
  t = time.perf_counter()
  compiled = fn.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t
  instrs = parse_hlo(compiled.as_text())
  state, m = fn(state, batch, rng)       # warm-up
  jax.block_until_ready(m)

  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='profile_step_')
  times = []
  with jax.profiler.trace(trace_dir):
    for _ in range(args.steps):
      t = time.perf_counter()
      state, m = fn(state, batch, rng)
      jax.block_until_ready(m)
      times.append(time.perf_counter() - t)
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True),
                 key=os.path.getmtime)
  if not files:
    raise SystemExit(f'profile_step: no .xplane.pb trace under {trace_dir}')
  profile = jax.profiler.ProfileData.from_file(files[-1])

  backend = jax.default_backend()
  by_kind, by_pass, by_part, by_instr = (collections.Counter() for _ in range(4))
  unmatched = 0.0
  for name, ns in op_events(profile, backend):
    ins = instrs.get(name)
    if ins is None:
      unmatched += ns
      by_kind['(not in the module)'] += ns
      continue
    direction, part = pass_and_part(ins['op_name'], args.depth)
    by_kind[kind_of(ins)] += ns
    by_pass[direction] += ns
    by_part[part] += ns
    by_instr[name] += ns
  total = sum(by_kind.values())
  if not total:
    raise SystemExit(f'profile_step: the trace in {trace_dir} holds no XLA op events for backend '
                     f'{backend!r}')
  top = []
  for name, ns in by_instr.most_common(args.top):
    ins = instrs[name]
    top.append({'instruction': name, 'kind': kind_of(ins), 'ms_per_step': round(ns / args.steps / 1e6, 3),
                'share': round(ns / total, 4), 'op_name': ins['op_name']})
  step_ms = float(np.median(times)) * 1e3
  out = {
      'config': args.config, 'backend': backend, 'device': jax.devices()[0].device_kind,
      'batch': args.batch, 'dtype': str(config.train.dtype),
      'views_per_step': int(config.train.views_per_step), 'attention': str(config.model.attention),
      'optimizer': args.optimizer, 'params': int(sum(x.size for x in jax.tree.leaves(state.params))),
      'param_leaves': len(jax.tree.leaves(state.params)),
      'compile_s': round(compile_s, 2), 'entry_ops': entry_ops(instrs),
      'steps': args.steps, 'median_step_ms': round(step_ms, 3),
      'op_ms_per_step': round(total / args.steps / 1e6, 3),
      'op_time_over_step_time': round(total / args.steps / 1e6 / step_ms, 3),
      'not_in_module_share': round(unmatched / total, 4),
      'by_kind': _table(by_kind, args.steps, total),
      'by_pass': _table(by_pass, args.steps, total),
      'by_part': _table(by_part, args.steps, total),
      'top': top,
      'trace': files[-1] if args.trace_dir else None,
  }
  fileio.print_json(out, args.out)


if __name__ == '__main__':
  main()
