#!/usr/bin/env bash
# One device call: the paper config's pretraining step beside the yardstick step_jax.py, the teacher
# cache and the device-resident loop, on one GPU (H100 / H200), then one summary table.
#
# TIME (estimate for a cold H100/H200, compiles included; nothing of it measured yet):
#   env + wheels + nvidia-smi + jax devices ......................  15 s
#   matmul / copy ceilings (8192^3 bf16 product, 2 GiB array) ....  15 s
#   bench_step paper, one run each: ~12 s start-up (imports, synthetic batches, init) + 25-45 s
#     step compile + < 3 s of timed steps = 40-60 s; six runs (512 and 2048 x views 4 and 1,
#     cudnn attention at 512, device-resident at 512) ............... 240-360 s
#   step_jax.py at 512 and 2048 (compile 15-25 s each) ........... 50-70 s
#   bench_teacher.py: ViT-B/14 224 px + Lite0 160 px, float32 .... 60-90 s
#   profile_step.py at 512 (only with budget left) ................ 40-60 s
#   then the ViT in bf16, the step with the per-leaf optimizer, with flax's LayerNorm, with
#     Point-MAE's concatenating tokenizer and with the predictor's last block over every row
#     (budget left) ................................................ 260 s
#   the step at 2048 with model.remat=dots (budget left) ........... 50-70 s
#   bench_input.py: the host's grain input at 0 and 8 workers (budget left) .... 40-60 s
#   bench_probe.py: the probe's CV fits on the host's cores and one at a time (budget left) 30-40 s
#   summary + tar ................................................   5 s
#   total 6.5-9 min; everything from the start shares a budget of GPU_CHECK_BUDGET_S (default
#   450 s, so about 7.6 min in all with the summary), each run capped by its own `timeout` too, in
#   priority order (headline first); a run that no longer fits is skipped and listed as skipped.
#   Call it with timeout_s=540 (9 min); with the machine's start that is about 9.5 of the 15
#   minutes of device time, too little for a second full call: call give_back after it.
#
# PREPARE (here, on the developer machine, once before the call; nothing is committed):
#   bash experiments/gpu_check.sh --prepare
# downloads, for the device's Python 3.12 (x86-64), the packages that bench_step.py's import chain
# needs and the device image lacks (its image has jax, flax, optax, orbax, chex, absl, etils,
# numpy, protobuf, pyarrow, psutil, tqdm, wrapt, requests, pyyaml ...; KINDS.md), into the ignored
# folder .device_wheels/ (about 10 MB):
#   ml-collections==1.1.0          crossjepa.config_util (every config)
#   tensorflow-datasets==4.9.10    crossjepa.data.records (batch_spec builds the batch from its
#                                  FeaturesDict: a real use, not only an import)
#   tensorflow-metadata==1.21.0    tfds's protos
#   promise==2.3, toml==0.10.2, immutabledict==4.3.1      imported by tfds
#   grain==0.2.18 (cp312)          crossjepa.data.pipeline (imported by batch_spec)
#   array-record==0.8.6 (cp312)    grain's data sources
#   portpicker==1.6.0              grain
#   dm-tree==0.1.10 (cp312)        tfds's FeaturesDict shapes (`tree`, imported lazily)
#   optional/protobuf==7.36.2      installed there only when the image's protobuf is older than
#                                  6.31 (tensorflow-metadata 1.21's generated code checks that)
# and copies /work/shared/anchors/step_jax.py to .device_wheels/anchors/ (the ../shared beside
# the checkout does not travel to the device). Then, with the device tool:
#   run(command="bash experiments/gpu_check.sh", carry=[".device_wheels"], timeout_s=540)
# It installs the missing wheels with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .device_wheels/<missing>.whl ; export PYTHONPATH=/tmp/site
# and needs experiments/results/flops_paper.json (experiments/flops.py, run here: the CPU compile's
# FLOPs, since a GPU compile's cost analysis misses cuBLAS calls) for the MFU.
#
# DRY RUN (CPU, tiny sizes: configs/smoke.py, batches 8 / 16, 2 steps; tests this script's logic):
#   GPU_CHECK_DRY=1 bash experiments/gpu_check.sh        # OUT defaults to /tmp/gpu_check_dry
# within a 200 s budget (about 3 min on 2 shared cores; the later runs are then skipped, which
# tests the budget), or every run with GPU_CHECK_BUDGET_S=900 (about 6 min).
#
# What comes back in $OUT (the device returns at most 8 files): gpu_step.json (the summary and
# every run's row), gpu_summary.md (the table) and logs.tar.gz (logs/ with each run's log and JSON;
# the folder is removed once packed, GPU_CHECK_KEEP_LOGS=1 keeps it).
set -u
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
DRY=${GPU_CHECK_DRY:-0}

WHEELS=(ml-collections==1.1.0 tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0
        promise==2.3 toml==0.10.2 immutabledict==4.3.1 grain==0.2.18 array-record==0.8.6
        portpicker==1.6.0 dm-tree==0.1.10)

find_anchor() {
  local d
  for d in "$REPO/shared/anchors" "$REPO/../shared/anchors" "$REPO/.device_wheels/anchors" \
           /work/shared/anchors; do
    if [ -f "$d/step_jax.py" ]; then echo "$d/step_jax.py"; return 0; fi
  done
  return 1
}

if [ "${1:-}" = "--prepare" ]; then
  PY=${PYTHON:-$REPO/.venv/bin/python}
  W=$REPO/.device_wheels
  mkdir -p "$W/anchors" "$W/optional"
  anchor=$(find_anchor) && install -m 644 "$anchor" "$W/anchors/step_jax.py" || echo "step_jax.py not found"
  plat=(--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  for spec in "${WHEELS[@]}"; do
    if [ "$spec" = "promise==2.3" ]; then   # an sdist only: build its (pure-Python) wheel here
      ls "$W"/promise-2.3-*.whl >/dev/null 2>&1 || "$PY" -m pip wheel -q --no-deps -w "$W" "$spec"
    else
      "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$W" "$spec"
    fi
  done
  "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$W/optional" protobuf==7.36.2
  ls -la "$W" "$W/optional" "$W/anchors"
  du -sh "$W"
  exit 0
fi

if [ "$DRY" = 1 ]; then
  OUT=${OUT:-/tmp/gpu_check_dry}
  export JAX_PLATFORMS=cpu
  PY=${PYTHON:-$REPO/.venv/bin/python}
  [ -x "$PY" ] || PY=python3
  BUDGET=${GPU_CHECK_BUDGET_S:-200}      # ~3 min: the later runs are skipped (900: all, ~6 min)
else
  OUT=${OUT:-/tmp/gpu_check_out}
  PY=${PYTHON:-python3}
  BUDGET=${GPU_CHECK_BUDGET_S:-450}
fi
export PYTHONUNBUFFERED=1
LOGS=$OUT/logs
mkdir -p "$LOGS"
START=$(date +%s)
RESERVE=15                    # seconds kept for the summary
: > "$LOGS/runs.tsv"

elapsed() { echo $(( $(date +%s) - START )); }

# run NAME CAP CMD...: runs CMD under `timeout` (CAP seconds or what is left of the budget),
# output to logs/NAME.log; one line per run in logs/runs.tsv (name, rc, seconds, cap).
run() {
  local name=$1 cap=$2; shift 2
  [ "$DRY" = 1 ] && cap=$(( cap * 2 ))      # the CPU compiles slower than the device's host
  local left=$(( BUDGET - $(elapsed) - RESERVE ))
  if [ "$left" -lt 30 ]; then
    printf '%s\tskipped\t0\t%s\n' "$name" "$cap" >> "$LOGS/runs.tsv"
    echo "== $name: skipped (budget: ${left}s left)"
    return 0
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (cap ${cap}s, at $(elapsed)s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout -k 5 "$cap" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$cap" >> "$LOGS/runs.tsv"
  echo "   rc=$rc in $(( $(date +%s) - t0 ))s"
  [ "$rc" = 0 ] || tail -5 "$LOGS/$name.log"
  return 0
}

# ------------------------------------------------------------------ environment and wheels
{
  echo "date: $(date -u +%FT%TZ)  dry=$DRY  python=$PY  repo=$REPO"
  nvidia-smi 2>&1 || echo "nvidia-smi: not available"
} > "$LOGS/env.log" 2>&1
missing=$("$PY" - <<'EOF'
import importlib.util
mods = {'ml_collections': 'ml_collections', 'tensorflow_datasets': 'tensorflow_datasets',
        'tensorflow_metadata': 'tensorflow_metadata', 'promise': 'promise', 'toml': 'toml',
        'immutabledict': 'immutabledict', 'grain': 'grain', 'array_record': 'array_record',
        'portpicker': 'portpicker', 'tree': 'dm_tree'}   # module: wheel file prefix
print(' '.join(w for m, w in mods.items() if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "missing modules: $missing" | tee -a "$LOGS/env.log"
  whl=()
  for m in $missing; do
    f=$(ls "$REPO"/.device_wheels/"$m"-*.whl 2>/dev/null | head -1)
    if [ -n "$f" ]; then whl+=("$f"); else echo "no carried wheel for $m" | tee -a "$LOGS/env.log"; fi
  done
  if ! "$PY" -c "import google.protobuf as p, sys; v = tuple(int(x) for x in p.__version__.split('.')[:2]); sys.exit(v < (6, 31))" 2>/dev/null; then
    f=$(ls "$REPO"/.device_wheels/optional/protobuf-*.whl 2>/dev/null | head -1)
    [ -n "$f" ] && whl+=("$f")
  fi
  if [ "${#whl[@]}" -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "${whl[@]}" >> "$LOGS/env.log" 2>&1 \
      && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    echo "installed into /tmp/site: ${whl[*]##*/}" | tee -a "$LOGS/env.log"
  fi
fi
"$PY" - >> "$LOGS/env.log" 2>&1 <<'EOF'
import importlib.metadata as md, jax
print('jax devices:', jax.devices(), 'backend:', jax.default_backend())
for d in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy', 'protobuf', 'etils',
          'ml-collections', 'tensorflow-datasets', 'grain', 'array-record'):
  try:
    print(f'{d}=={md.version(d)}')
  except md.PackageNotFoundError:
    print(f'{d}: not installed')
EOF
grep -E "jax devices|NVIDIA|MiB|==" "$LOGS/env.log" | head -20

ANCHOR=$(find_anchor) || ANCHOR=""
echo "anchor: ${ANCHOR:-not found}" | tee -a "$LOGS/env.log"

# ------------------------------------------------------------------ sizes
PEAK=790     # bf16 TFLOP/s: the H100/H200 rate measured here (KINDS.md: 769-798) and the anchors' basis
if [ "$DRY" = 1 ]; then
  CFG=configs/smoke.py; B1=8; B2=16; S1=2; S2=2; OBJ=32
  ANCHOR_ARGS=(--width 48 --depth 1 --groups 8 --group_size 8)   # 48: 6 heads of 8
  TEACHER_ARGS=(--vit tiny/14 --vit_image_size 28 --vit_views 2 --vit_chunk_objects 2
                --lite_image_size 32 --lite_views 2 --lite_chunk_objects 2 --calls 2)
  CEIL_N=512
  INPUT_ARGS=(--objects=8 --batch_size=2 --workers=0,1 --repeats=1 --seconds=1)
  PROBE_ARGS=(--train=200 --test=60)
else
  CFG=configs/paper.py; B1=512; B2=2048; S1=20; S2=10; OBJ=2048
  ANCHOR_ARGS=()
  TEACHER_ARGS=(--calls 5)
  CEIL_N=8192
  INPUT_ARGS=(--objects=1024 --workers=0,8 --repeats=2 --seconds=5)
  PROBE_ARGS=(--train=2000 --test=600)
fi
STEP=(experiments/bench_step.py --config=$CFG --dtype=bfloat16 --peak_tflops=$PEAK --skip_cpu_flops)

# ------------------------------------------------------------------ runs, in priority order
run ceiling 60 "$PY" - "$CEIL_N" "$LOGS/ceiling.json" <<'EOF'
import json, sys, time
import jax, jax.numpy as jnp
n, out = int(sys.argv[1]), sys.argv[2]
ka, kb = jax.random.split(jax.random.PRNGKey(0))
a = jax.random.normal(ka, (n, n), jnp.bfloat16); b = jax.random.normal(kb, (n, n), jnp.bfloat16)
mm = jax.jit(lambda x, y: x @ y)
mm(a, b).block_until_ready()
ts = []
for _ in range(10):
  t = time.perf_counter(); mm(a, b).block_until_ready(); ts.append(time.perf_counter() - t)
tf = 2 * n ** 3 / sorted(ts)[len(ts) // 2] / 1e12
x = jax.random.normal(ka, (n * n * 8,), jnp.float32)    # 2 GiB at n = 8192
cp = jax.jit(lambda v: v * 1.0001)
cp(x).block_until_ready()
ts = []
for _ in range(10):
  t = time.perf_counter(); cp(x).block_until_ready(); ts.append(time.perf_counter() - t)
gbs = 2 * x.nbytes / sorted(ts)[len(ts) // 2] / 1e9
res = {'device': jax.devices()[0].device_kind, 'matmul_n': n, 'bf16_matmul_tflops': round(tf, 1),
       'copy_gb_per_s': round(gbs, 1)}
print(json.dumps(res))
json.dump(res, open(out, 'w'))
EOF
run step_b${B1}_vpaper 90 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 \
    --attention=einsum --out="$LOGS/step_b${B1}_vpaper.json"
if [ -n "$ANCHOR" ]; then
  run anchor_b$B1 60 "$PY" "$ANCHOR" --batch $B1 --steps $S1 --peak $PEAK "${ANCHOR_ARGS[@]}"
fi
run step_b${B2}_vpaper 100 "$PY" "${STEP[@]}" --batch=$B2 --steps=$S2 --attention=einsum \
    --out="$LOGS/step_b${B2}_vpaper.json"
# jax's count of what the step keeps for its backward pass predicts 90.8 GB at batch 2048 without
# remat (experiments/results/memory_paper.json, before XLA's fusion trims it: it fits an H200's
# 139 GiB, not an H100's 80), 32.8 GB with model.remat=dots. If the run above failed (out of
# memory), the same batch with dots right away, so that the big-batch figure is not lost.
DOTS_B2=(--batch=$B2 --steps=$S2 --attention=einsum --remat=dots
         --out="$LOGS/step_b${B2}_vpaper_dots.json")
[ -s "$LOGS/step_b${B2}_vpaper.json" ] || run step_b${B2}_vpaper_dots 100 "$PY" "${STEP[@]}" \
    "${DOTS_B2[@]}"
if [ -n "$ANCHOR" ]; then
  run anchor_b$B2 70 "$PY" "$ANCHOR" --batch $B2 --steps $S2 --peak $PEAK "${ANCHOR_ARGS[@]}"
fi
run teacher 120 "$PY" experiments/bench_teacher.py --teachers=vit,lite0 --dtypes=float32 \
    "${TEACHER_ARGS[@]}" --out="$LOGS/teacher.json"
run step_b${B1}_v1 80 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --views_per_step=1 \
    --attention=einsum --out="$LOGS/step_b${B1}_v1.json"
run step_b${B1}_vpaper_cudnn 90 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --attention=cudnn \
    --out="$LOGS/step_b${B1}_vpaper_cudnn.json"
run step_b${B2}_v1 90 "$PY" "${STEP[@]}" --batch=$B2 --steps=$S2 --views_per_step=1 \
    --attention=einsum --out="$LOGS/step_b${B2}_v1.json"
run resident_b${B1}_vpaper 90 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --device_resident \
    --objects=$OBJ --attention=einsum --out="$LOGS/resident_b${B1}_vpaper.json"
# Extras, only with budget left: where the headline step's time goes (op kinds, passes, model
# parts, top instructions), the ViT teacher in bfloat16, the per-leaf optimizer, flax's
# LayerNorm, the concatenating tokenizer, the predictor over every row, remat at the big batch.
run profile_b$B1 90 "$PY" experiments/profile_step.py --config=$CFG --batch=$B1 --steps=3 \
    --dtype=bfloat16 --attention=einsum --out="$LOGS/profile_b$B1.json"
run teacher_bf16 60 "$PY" experiments/bench_teacher.py --teachers=vit --dtypes=bfloat16 \
    "${TEACHER_ARGS[@]}" --out="$LOGS/teacher_bf16.json"
# The headline step with optax's per-leaf AdamW (what FSDP states use), against the flat update.
run step_b${B1}_vpaper_chain 80 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --attention=einsum \
    --optimizer=chain --out="$LOGS/step_b${B1}_vpaper_chain.json"
# The headline step with autodiff of nn.LayerNorm instead of layers.LayerNorm's own backward pass.
# jax's count of what the step keeps: 69.4 MB/object with flax's (three float32 copies of x per
# norm), 44.2 with ours (x in bfloat16 and two numbers a row). XLA's fusion recomputes most of
# those copies by itself: the CPU compile's bytes accessed drop only 884.8 -> 871.7 MB/object
# (batch 512, 4 views; experiments/results/flops_paper.json). If the GPU compile is alike, 13 MB
# an object less, 6.7 GB a step at batch 512: 1.4-2 ms at the H200's / H100's 4.8 / 3.35 TB/s.
# Predicted ratio kept / flax 1.00-1.05 (the CPU: 1.02 at batch 8, experiments/bench_norm.py);
# the memory it frees shows at batch 2048 (peak_bytes_in_use, 90.8 GB predicted by jax's count).
run step_b${B1}_vpaper_flaxnorm 80 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --attention=einsum \
    --norm=flax --out="$LOGS/step_b${B1}_vpaper_flaxnorm.json"
# The headline step with the mini-PointNet's conv3 on the built concatenation (Point-MAE's form),
# against point.GlobalLocalDense (predicted: about 1.16x at 1 view, 1.09x at the paper's 4, if
# time follows FLOPs).
run step_b${B1}_vpaper_concat 80 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --attention=einsum \
    --tokenizer=concat --out="$LOGS/step_b${B1}_vpaper_concat.json"
# The headline step with the predictor's last block over every row, against the query rows only
# (predicted: about 1.06x at the paper's 4 views, if time follows FLOPs: 16.97 -> 15.94 GFLOP).
run step_b${B1}_vpaper_allrows 80 "$PY" "${STEP[@]}" --batch=$B1 --steps=$S1 --attention=einsum \
    --predictor_rows=all --out="$LOGS/step_b${B1}_vpaper_allrows.json"
# The big-batch step with model.remat=dots (the mini-PointNet and the blocks keep only their dense
# layers' outputs), against no remat (if not run above already): the allocator's peak should drop
# (on the CPU, XLA's scratch did not); the time should rise about as the FLOPs do: the paper
# step's CPU compile (bf16, batch 8) counts 16.74 GFLOP/object without remat, 17.14 with dots
# (+2.4 %), 20.90 with full (+24.8 %).
[ -s "$LOGS/step_b${B2}_vpaper_dots.json" ] || run step_b${B2}_vpaper_dots 100 "$PY" \
    "${STEP[@]}" "${DOTS_B2[@]}"
# The host's training input at the paper's record geometry (no per-group features, as
# configs/paper.py prepares them): can the device host's cores feed the step through grain, or is
# the device-resident set (paper.py's choice) needed? 2-core dev CPU: 1,207 objects/s in one
# process, 2,575 with 2 workers (experiments/results/bench_input_paper_cpu.json).
run input 70 "$PY" experiments/bench_input.py "${INPUT_ARGS[@]}" --cache_group_features=false \
    --out="$LOGS/input.json"
# The linear probe's CV fits on the host's cores (eval.svm_workers=0) against one at a time:
# paper.py's probe (7 C x 4 folds + the refit) on 2,000 synthetic 55-class features. 2-core dev
# CPU: 1.86x at 3,000 (experiments/results/bench_probe_paper_cpu.json); predicted on 16 cores:
# about 8x (two rounds of 16 fits and the refit, against 29 fits). The image has scikit-learn.
run probe 60 "$PY" experiments/bench_probe.py "${PROBE_ARGS[@]}" --out="$LOGS/probe.json"

# ------------------------------------------------------------------ summary
echo "runs done at $(elapsed)s"
"$PY" experiments/gpu_summary.py --logs="$LOGS" --out="$OUT" --peak_tflops=$PEAK \
    --batch=$B1 --wall_s="$(elapsed)" > "$LOGS/summary.log" 2>&1
cat "$LOGS/summary.log"
if tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs; then
  [ "${GPU_CHECK_KEEP_LOGS:-0}" = 1 ] || rm -rf "$LOGS"
fi
echo "total $(elapsed)s; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
