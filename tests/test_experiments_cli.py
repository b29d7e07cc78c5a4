"""The experiments' scripts answer a bad flag value like crossjepa.main: exit 2 and one
`PROG: error: ...` line naming the flag, before any work; not a traceback, a NaN result, an error
row in the JSON with exit 1, or absl's usage text with exit 1.

The argparse scripts run in-process (runpy; argparse exits before the script's work starts), the
absl ones in a subprocess each (their flags are module-level definitions in absl's global registry).
"""
import argparse
import json
import os
import runpy
import subprocess
import sys

import pytest

from crossjepa import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, 'experiments')
SMOKE = f"--config={os.path.join(REPO, 'configs', 'smoke.py')}"


def test_argument_types_accept_and_refuse(capsys):
  p = argparse.ArgumentParser(prog='x')
  p.add_argument('--n', type=console.int_arg(1))
  p.add_argument('--k', type=console.int_arg(0, 6))
  p.add_argument('--f', type=console.float_arg(0, strict=True))
  p.add_argument('--at', type=console.list_arg(console.int_arg(1)), default='512,2048')
  p.add_argument('--kinds', type=console.list_arg(choices=('vit', 'lite0')))
  args = p.parse_args(['--n=3', '--k=0', '--f=1e-3', '--kinds=lite0, vit'])
  assert (args.n, args.k, args.f, args.at, args.kinds) == (3, 0, 1e-3, [512, 2048], ['lite0', 'vit'])
  capsys.readouterr()
  for bad, wanted in [('--n=0', "argument --n: expected an integer >= 1, got '0'"),
                      ('--n=2.5', "argument --n: expected an integer, got '2.5'"),
                      ('--k=7', "argument --k: expected an integer >= 0 and <= 6, got '7'"),
                      ('--f=0', "argument --f: expected a number > 0, got '0'"),
                      ('--f=nan', "argument --f: expected a number > 0, got 'nan'"),
                      ('--f=inf', "argument --f: expected a number > 0, got 'inf'"),
                      ('--at=512,x', "argument --at: item 'x': expected an integer, got 'x'"),
                      ('--at=,', 'argument --at: expected a comma-separated list, got an empty one'),
                      ('--kinds=vit,clip', "argument --kinds: item 'clip': expected one of "
                                           "['vit', 'lite0']")]:
    with pytest.raises(SystemExit) as e:
      p.parse_args([bad])
    assert e.value.code == 2, bad
    assert capsys.readouterr().err.splitlines()[-1] == f'x: error: {wanted}', bad


ARGPARSE_CASES = [
    ('bench_step.py', [SMOKE, '--steps=0'],
     "argument --steps: expected an integer >= 1, got '0'"),
    ('bench_step.py', [SMOKE, '--device_resident', '--objects=3'],
     '--objects=3: the device-resident set needs at least one batch (8 objects)'),
    ('flops.py', ['--at=512,0'], "argument --at: item '0': expected an integer >= 1, got '0'"),
    ('classify_demo.py', ['--encoder=x', '--top=0'],
     "argument --top: expected an integer >= 1, got '0'"),
    ('flops.py', [f'--out={EXPERIMENTS}'],
     f'argument --out: {EXPERIMENTS} is a folder; expected the path of the JSON file'),
    ('memory.py', ['--remats=none,bogus'],
     "argument --remats: item 'bogus': expected one of ['none', 'full', 'dots']"),
    ('bench_teacher.py', ['--dtypes=float32,float16'],
     "argument --dtypes: item 'float16': expected one of ['float32', 'bfloat16']"),
    ('bench_teacher.py', ['--vit_image_size=225'],
     "argument --vit_image_size: 225 is not a multiple of the ViT's patch size 14"),
    ('bench_render.py', ['--objects=0'], "argument --objects: expected an integer >= 1, got '0'"),
    ('bench_text.py', ['--tokens=76'],
     "argument --tokens: expected an integer >= 1 and <= 75, got '76'"),
    ('profile_step.py', [SMOKE, '--top=0'],
     "argument --top: expected an integer >= 1, got '0'"),
    ('bench_tokenizer.py', ['--repeats=0'], "argument --repeats: expected an integer >= 1, got '0'"),
    ('bench_norm.py', ['--norm_batch=0'],
     "argument --norm_batch: expected an integer >= 1, got '0'"),
    ('bench_probe.py', ['--train=100'], "argument --train: expected an integer >= 200, got '100'"),
    ('ab.py', [], 'a library of bench_tokenizer.py, bench_predictor.py and bench_norm.py, not a script'),
    ('gpu_summary.py', ['--logs=no/such/logs', '--out=o'],
     "argument --logs: no/such/logs: no such folder"),
]


@pytest.mark.parametrize('script,args,wanted', ARGPARSE_CASES,
                         ids=[':'.join([c[0], *c[1][-1:]]) for c in ARGPARSE_CASES])
def test_argparse_scripts_refuse_a_bad_value(script, args, wanted, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(EXPERIMENTS)
  monkeypatch.setattr(sys, 'argv', [script, *args])
  with pytest.raises(SystemExit) as e:
    runpy.run_path(os.path.join(EXPERIMENTS, script), run_name='__main__')
  assert e.value.code == 2
  out = capsys.readouterr()
  errors = [l for l in out.err.splitlines() if l.startswith(f'{script}: error: ')]
  assert len(errors) == 1 and wanted in errors[0], out.err[-2000:]
  assert 'Traceback' not in out.err and not out.out.strip() and not os.listdir(tmp_path)


ABSL_CASES = [
    (['experiments/headroom.py', '--kinds=clean,bogus'],
     "headroom.py: error: flag --kinds=['clean', 'bogus']: expected a comma-separated subset of "
     "['clean', 'scan']"),
    (['experiments/compare_recipes.py', '--workdir=w', '--seeds=0,a'],
     "compare_recipes: error: flag --seeds=['0', 'a']: expected comma-separated integers >= 0"),
    (['experiments/bench_prepare.py', '--modelnet_objects=10'],
     'bench_prepare.py: error: flag --modelnet_objects=10: 10 is not integer >= 40'),
    (['experiments/bench_prepare.py', '--modelnet_only', '--out=results/'],
     'bench_prepare.py: error: flag --out=results/: is a folder; expected the path of the JSON file'),
    (['experiments/bench_prepare.py', '--config=configs/default.py'],
     "bench_prepare.py: error: Unknown command line flag 'config'"),
    (['experiments/bench_input.py', '--objects=100'],
     'bench_input.py: error: flags objects=100, batch_size=128: --objects must be at least two '
     'batches of --batch_size'),
    (['experiments/bench_input.py', '--cache_group_features=true,maybe'],
     "bench_input.py: error: flag --cache_group_features=['true', 'maybe']: expected a list of "
     'true / false'),
    (['-m', 'crossjepa.convert_teacher', '--source=hf', 'model.safetensors'],
     "crossjepa.convert_teacher: error: unexpected arguments ['model.safetensors'] (every option "
     'is a --flag=value)'),
]


@pytest.mark.parametrize('args,wanted', ABSL_CASES, ids=[c[0][-1] for c in ABSL_CASES])
def test_absl_scripts_refuse_a_bad_flag_with_one_line_and_exit_2(args, wanted, tmp_path):
  proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO},
                        timeout=300) if args[0] == '-m' else subprocess.run(
      [sys.executable, os.path.join(REPO, args[0]), *args[1:]], capture_output=True, text=True,
      cwd=tmp_path, env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [wanted]
  assert not proc.stdout.strip() and not os.listdir(tmp_path)


def test_bench_input_counts_the_paper_records_bytes(tmp_path):
  """experiments/bench_input.py at tiny counts: the paper geometry's record is its arrays' bytes
  plus a little framing, and the per-group features add exactly their float16 bytes."""
  out = tmp_path / 'input.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments/bench_input.py'), '--objects=4',
       '--batch_size=2', '--workers=0', '--repeats=1', '--seconds=0.2', f'--out={out}'],
      capture_output=True, text=True, cwd=tmp_path, env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not proc.stderr.strip(), proc.stderr[-3000:]     # TFDS's prints and INFO records: log only
  rows = {r['cache_group_features']: r for r in json.loads(out.read_text())['rows']}
  v, g, k, n, width = 12, 64, 32, 1024, 768
  arrays = (n * 3 * 4 + g * 3 * 4 + g * k * 4 + v * (16 + 9 + 24) * 4 + v * g * 4
            + v * width * 2)
  assert 0 < rows[False]['record_bytes'] - arrays < 320, rows[False]
  assert 0 <= rows[True]['record_bytes'] - rows[False]['record_bytes'] - v * g * width * 2 < 64
  for row in rows.values():
    assert row['objects'] == 4
    for key in ('read_objects_per_s', 'decode_objects_per_s', 'transform_objects_per_s',
                'iterator_objects_per_s_workers0'):
      assert row[key] > 0, (key, row)
