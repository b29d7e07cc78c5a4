"""The summary of experiments/gpu_check.sh: one markdown table and $OUT/gpu_step.json.

    python experiments/gpu_summary.py --logs=$OUT/logs --out=$OUT [--peak_tflops=790] [--batch=512]
        [--flops_json=experiments/results/flops_paper.json]

Reads what gpu_check.sh left in --logs: bench_step.py's JSON files (step_*.json, resident_*.json),
step_jax.py's JSON line (anchor_b*.log), bench_teacher.py's (teacher*.json), ceiling.json and
runs.tsv (each run's exit status and seconds). FLOPs per object: on a GPU, XLA's cost analysis
misses the cuBLAS calls, so they come from experiments/flops.py's CPU compile (--flops_json:
(step - fixed part) / its batch + fixed part / this batch, for the run's views_per_step); a run on
the CPU (the dry run) uses its own count. MFU = FLOPs/object x objects/s / peak.
gpu_step.json: device, batch, project_objects_per_s, anchor_objects_per_s, ratio, mfu,
teacher_views_per_s, and more (every run's row, skipped and failed runs, the ceilings).
"""
import argparse
import glob
import json
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _json_line(path):
  """The last line of a log that parses as a JSON object, or None."""
  try:
    with open(path) as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  for line in reversed(lines):
    line = line.strip()
    if line.startswith('{') and line.endswith('}'):
      try:
        return json.loads(line)
      except json.JSONDecodeError:
        continue
  return None


def _load(path):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


def runs_status(logs):
  out = {}
  try:
    with open(os.path.join(logs, 'runs.tsv')) as f:
      for line in f:
        parts = line.rstrip('\n').split('\t')
        if len(parts) >= 3:
          out[parts[0]] = {'rc': parts[1], 'seconds': int(parts[2] or 0),
                           'cap': int(parts[3]) if len(parts) > 3 and parts[3] else None}
  except OSError:
    pass
  return out


def project_flops(run, flops):
  """FLOPs per object of a bench_step run: its own count on the CPU, else flops.py's."""
  if run.get('backend') == 'cpu' and run.get('flops_per_object'):
    return float(run['flops_per_object']), 'its own CPU compile'
  var = ((flops or {}).get('variants') or {}).get(f"views{run.get('views_per_step')}")
  if var and (flops or {}).get('config', '').endswith(os.path.basename(run.get('config', ''))):
    if run.get('num_params') and int(var['params']) != int(run['num_params']):
      return float('nan'), (f"none: flops.py counted another model ({var['params']} params, this "
                            f"run {run['num_params']}): rerun experiments/flops.py")
    comp = var['compile']
    b0, b = comp['batch'], run['batch']
    fixed = comp['fixed_part']['flops']
    return (comp['step']['flops'] - fixed) / b0 + fixed / b, 'flops.py CPU compile'
  return float('nan'), 'none'


def anchor_flops(run, flops, dry):
  if run.get('device') == 'cpu':
    return run['gflop_per_object'] * 1e9, 'its own CPU compile'
  a = (flops or {}).get('anchor_step_jax') or {}
  if 'gflop_per_object_reported' in a:
    b0, fixed = a['batch'], a['fixed_part_adamw']['flops']
    return (a['gflop_per_object_reported'] * 1e9 * b0 - fixed) / b0 + fixed / run['batch'], \
        'flops.py (step_jax.py CPU compile)'
  if not dry:
    return 10.1e9, 'RESULTS.md (10.1 GFLOP/object)'
  return float('nan'), 'none'


def fmt(x, nd=1):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return '-'
  if isinstance(x, int) or (isinstance(x, float) and abs(x) >= 1000):
    return f'{x:,.0f}'
  return f'{x:.{nd}f}'


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--logs', required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--peak_tflops', type=float, default=790.0)
  p.add_argument('--batch', type=int, default=512, help='the headline batch')
  p.add_argument('--flops_json', default=os.path.join(HERE, 'results', 'flops_paper.json'))
  p.add_argument('--wall_s', type=float, default=float('nan'))
  args = p.parse_args()
  # The standard library only (this runs on the device even when the wheel installs failed).
  if not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
    p.error(f'argument --peak_tflops: expected a number > 0, got {args.peak_tflops}')
  if args.batch < 1:
    p.error(f'argument --batch: expected an integer >= 1, got {args.batch}')
  if not os.path.isdir(args.logs):
    p.error(f'argument --logs: {args.logs}: no such folder (gpu_check.sh\'s $OUT/logs)')
  status = runs_status(args.logs)
  flops = _load(args.flops_json)
  ceiling = _load(os.path.join(args.logs, 'ceiling.json')) or {}
  peak = args.peak_tflops * 1e12
  meas = ceiling.get('bf16_matmul_tflops')
  rows, device, backend = [], None, None

  for path in sorted(glob.glob(os.path.join(args.logs, '*.json'))):
    name = os.path.splitext(os.path.basename(path))[0]
    run = _load(path)
    if not run or 'samples_per_s' not in run:
      continue
    device, backend = device or run.get('device'), backend or run.get('backend')
    fpo, src = project_flops(run, flops)
    ops = float(run['samples_per_s'])
    rows.append({
        'name': name, 'impl': 'project' + (' device-resident' if run.get('device_resident') else '')
                              + (' concat tokenizer (MFU on split FLOPs)'
                                 if run.get('tokenizer') == 'concat' else '')
                              + (' predictor every row (MFU on query-row FLOPs)'
                                 if run.get('predictor_rows') == 'all' else '')
                              + (' flax LayerNorm' if run.get('norm') == 'flax' else '')
                              + (f" remat {run['remat']} (MFU on no-remat FLOPs)"
                                 if run.get('remat', 'none') != 'none' else ''),
        'batch': run['batch'], 'views_per_step': run.get('views_per_step'),
        'attention': run.get('attention'), 'device_resident': bool(run.get('device_resident')),
        'optimizer': run.get('optimizer', 'flat'), 'tokenizer': run.get('tokenizer', 'split'),
        'predictor_rows': run.get('predictor_rows', 'queries'), 'remat': run.get('remat', 'none'),
        'temp_bytes': run.get('temp_bytes'), 'peak_bytes_in_use': run.get('peak_bytes_in_use'),
        'step_ms': run['median_step_ms'], 'objects_per_s': ops, 'gflop_per_object': fpo / 1e9,
        'flops_source': src, 'achieved_tflops': fpo * ops / 1e12, 'mfu': fpo * ops / peak,
        'mfu_vs_measured_ceiling': fpo * ops / (meas * 1e12) if meas else None,
        'compile_s': run.get('compile_s'), 'wall_s': run.get('wall_s'),
        'num_params': run.get('num_params'), 'final_loss': run.get('final_loss')})
  dry = backend == 'cpu'
  for path in sorted(glob.glob(os.path.join(args.logs, 'anchor_b*.log'))):
    name = os.path.splitext(os.path.basename(path))[0]
    run = _json_line(path)
    if not run or 'objects_per_s' not in run:
      continue
    device = device or run.get('device')
    fpo, src = anchor_flops(run, flops, dry)
    ops = float(run['objects_per_s'])
    rows.append({
        'name': name, 'impl': 'anchor step_jax.py', 'batch': run['batch'], 'views_per_step': 1,
        'attention': 'flax MHA', 'device_resident': False, 'step_ms': run['step_ms'],
        'objects_per_s': ops, 'gflop_per_object': fpo / 1e9, 'flops_source': src,
        'achieved_tflops': fpo * ops / 1e12, 'mfu': fpo * ops / peak,
        'mfu_vs_measured_ceiling': fpo * ops / (meas * 1e12) if meas else None,
        'compile_s': None, 'wall_s': status.get(name, {}).get('seconds'),
        'num_params': run.get('params'), 'final_loss': run.get('loss'),
        'gflop_per_object_device_cost_analysis': run.get('gflop_per_object')})
  order = lambda r: (r['batch'], r['impl'].startswith('anchor'), r['device_resident'],
                     -(r['views_per_step'] or 0), str(r['attention']))
  rows.sort(key=order)
  by_name = {r['name']: r for r in rows}

  teacher = {}
  teacher_rows = []
  for path in sorted(glob.glob(os.path.join(args.logs, 'teacher*.json'))):
    t = _load(path) or {}
    device = device or t.get('device')
    for r in t.get('runs', []):
      teacher_rows.append(r)
      if 'views_per_s' in r:
        key = f"{r['name']}_{r['image_size']}px_{r['dtype']}"
        teacher[key] = r['views_per_s']

  profile = None
  for path in sorted(glob.glob(os.path.join(args.logs, 'profile*.json'))):
    prof = _load(path) or {}
    if 'by_kind' in prof:
      profile = {k: prof.get(k) for k in ('batch', 'dtype', 'views_per_step', 'median_step_ms',
                                          'op_ms_per_step', 'compile_s', 'entry_ops', 'by_kind',
                                          'by_pass', 'by_part')}
      profile['top'] = (prof.get('top') or [])[:5]

  host_input = None
  for r in ((_load(os.path.join(args.logs, 'input.json')) or {}).get('rows') or []):
    host_input = {k: v for k, v in r.items() if k.startswith(('iterator_', 'decode_', 'record_'))}
  probe_run = _load(os.path.join(args.logs, 'probe.json')) or {}
  host_probe = {k: v for k, v in probe_run.items()
                if k in ('cores', 'train', 'median_s', 'same_results') or k.startswith('speedup_')}

  b = args.batch
  big = max([r['batch'] for r in rows] or [b])
  def ops(name):
    return by_name.get(name, {}).get('objects_per_s')
  def ratio(x, y):
    return (x / y) if x and y else None
  def peak(name):
    return by_name.get(name, {}).get('peak_bytes_in_use')
  proj, anc = ops(f'step_b{b}_vpaper'), ops(f'anchor_b{b}')
  failed = {k: v for k, v in status.items() if v['rc'] not in ('0', 'skipped')}
  skipped = [k for k, v in status.items() if v['rc'] == 'skipped']
  summary = {
      'device': device, 'backend': backend, 'batch': b,
      'project_objects_per_s': proj, 'anchor_objects_per_s': anc, 'ratio': ratio(proj, anc),
      'mfu': by_name.get(f'step_b{b}_vpaper', {}).get('mfu'),
      'anchor_mfu': by_name.get(f'anchor_b{b}', {}).get('mfu'),
      'ratio_views1': ratio(ops(f'step_b{b}_v1'), anc),
      'ratio_cudnn_over_einsum': ratio(ops(f'step_b{b}_vpaper_cudnn'), proj),
      'ratio_device_resident_over_fed': ratio(ops(f'resident_b{b}_vpaper'), proj),
      'ratio_flat_over_per_leaf_optimizer': ratio(proj, ops(f'step_b{b}_vpaper_chain')),
      'ratio_split_over_concat_tokenizer': ratio(proj, ops(f'step_b{b}_vpaper_concat')),
      'ratio_query_rows_over_all_rows_predictor': ratio(proj, ops(f'step_b{b}_vpaper_allrows')),
      'ratio_kept_over_flax_norm': ratio(proj, ops(f'step_b{b}_vpaper_flaxnorm')),
      f'ratio_no_remat_over_dots_b{big}': ratio(ops(f'step_b{big}_vpaper'),
                                                 ops(f'step_b{big}_vpaper_dots')),
      f'peak_bytes_b{big}': {'none': peak(f'step_b{big}_vpaper'),
                             'dots': peak(f'step_b{big}_vpaper_dots')},
      f'ratio_b{big}': ratio(ops(f'step_b{big}_vpaper'), ops(f'anchor_b{big}')),
      f'ratio_views1_b{big}': ratio(ops(f'step_b{big}_v1'), ops(f'anchor_b{big}')),
      'teacher_views_per_s': teacher, 'profile': profile, 'host_input': host_input,
      'host_probe': host_probe or None,
      'peak_tflops': args.peak_tflops, 'ceiling': ceiling,
      'flops_json': os.path.relpath(args.flops_json) if flops else None,
      'rows': rows, 'teacher_rows': teacher_rows, 'runs': status, 'failed': failed,
      'skipped': skipped, 'wall_s': args.wall_s,
  }
  head = ('| run | impl | batch | views | attention | step ms | objects/s | GFLOP/obj | TFLOP/s | '
          f'MFU ({args.peak_tflops:g}) | compile s | run s |')
  lines = [f"## Pretraining step on {device} ({backend})", '', head,
           '|' + '---|' * 12]
  for r in rows:
    lines.append(
        f"| {r['name']} | {r['impl']} | {r['batch']} | {r['views_per_step']} | {r['attention']} | "
        f"{fmt(r['step_ms'], 2)} | {fmt(r['objects_per_s'])} | {fmt(r['gflop_per_object'], 2)} | "
        f"{fmt(r['achieved_tflops'], 1)} | {fmt(100 * r['mfu'] if r['mfu'] is not None else None)} % | "
        f"{fmt(r['compile_s'])} | {fmt(r['wall_s'])} |")
  lines.append('')
  lines.append(f"Headline (batch {b}, paper views, einsum): project {fmt(proj)} objects/s, anchor "
               f"{fmt(anc)} objects/s, ratio {fmt(summary['ratio'], 3)}, MFU "
               f"{fmt(100 * summary['mfu'] if summary['mfu'] else None)} %; views=1 / anchor "
               f"{fmt(summary['ratio_views1'], 3)}; batch {big}: ratio {fmt(summary[f'ratio_b{big}'], 3)}"
               f" (views=1: {fmt(summary[f'ratio_views1_b{big}'], 3)}); cudnn / einsum "
               f"{fmt(summary['ratio_cudnn_over_einsum'], 3)}; device-resident / fed "
               f"{fmt(summary['ratio_device_resident_over_fed'], 3)}; flat / per-leaf optimizer "
               f"{fmt(summary['ratio_flat_over_per_leaf_optimizer'], 3)}; split / concat tokenizer "
               f"{fmt(summary['ratio_split_over_concat_tokenizer'], 3)}; query rows / every row "
               f"{fmt(summary['ratio_query_rows_over_all_rows_predictor'], 3)}; LayerNorm kept / flax "
               f"{fmt(summary['ratio_kept_over_flax_norm'], 3)}; batch {big} no remat"
               f" / remat dots {fmt(summary[f'ratio_no_remat_over_dots_b{big}'], 3)} (peak bytes "
               f"{summary[f'peak_bytes_b{big}']}).")
  if ceiling:
    lines.append(f"Ceilings measured: bf16 matmul {ceiling.get('bf16_matmul_tflops')} TFLOP/s "
                 f"(n={ceiling.get('matmul_n')}), copy {ceiling.get('copy_gb_per_s')} GB/s.")
  if teacher_rows:
    lines += ['', '| teacher | px | views/object | images/call | dtype | views/s | views/s on device | '
              'compile s | error |', '|' + '---|' * 9]
    for r in teacher_rows:
      lines.append(f"| {r.get('teacher', r['name'])} | {r.get('image_size', '-')} | "
                   f"{r.get('views_per_object', '-')} | {r.get('chunk_images', '-')} | {r['dtype']} | "
                   f"{fmt(r.get('views_per_s'))} | {fmt(r.get('views_per_s_device'))} | "
                   f"{fmt(r.get('compile_s'))} | {r.get('error', '')[:120]} |")
  if host_input:
    lines += ['', 'Host input, paper records without per-group features (experiments/bench_input.py): '
              + ', '.join(f'{k} {fmt(v)}' for k, v in host_input.items()) + '.']
  if host_probe:
    lines += ['', 'Host linear probe, CV fits on threads against one at a time '
              '(experiments/bench_probe.py): ' + ', '.join(f'{k} {v}' for k, v in host_probe.items())
              + '.']
  if profile:
    share = lambda table: ', '.join(f"{k} {100 * v['share']:.0f} %" for k, v in
                                    list((table or {}).items())[:5])
    lines += ['', f"Profile (experiments/profile_step.py, batch {profile['batch']}, "
              f"{profile['dtype']}, step {fmt(profile['median_step_ms'], 2)} ms): by kind "
              f"{share(profile['by_kind'])}; by pass {share(profile['by_pass'])}; by part "
              f"{share(profile['by_part'])}; {(profile.get('entry_ops') or {}).get('total')} "
              "launched ops."]
    for t in profile['top']:
      lines.append(f"- {t['instruction']} ({t['kind']}, {fmt(t['ms_per_step'], 3)} ms, "
                   f"{100 * t['share']:.1f} %): {t['op_name'][:140]}")
  if failed or skipped:
    lines.append('')
    why = lambda v: 'timed out' if v['rc'] in ('124', '137') else f"rc {v['rc']}"
    lines.append('Failed: ' + (', '.join(f"{k} ({why(v)}, {v['seconds']} s)" for k, v in failed.items())
                               or 'none') + '; skipped (budget): ' + (', '.join(skipped) or 'none') + '.')
  text = '\n'.join(lines) + '\n'
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'gpu_summary.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(args.out, 'gpu_step.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  print(text)


if __name__ == '__main__':
  main()
