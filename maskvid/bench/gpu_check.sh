#!/bin/bash
# One prepared device call: the pretraining-size train step (MFU), its profile (where the step
# time goes) and the sampler on one GPU.
# Usage (device machine, repo root): bash maskvid/bench/gpu_check.sh [CONFIG_FOR_SMOKE]
# Writes logs to $OUT (or /tmp/gpu_check). ml_collections travels as a wheel in .whl/.
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
CFG=${1:-configs/pretrain.py}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1 && ! $PY -c 'import ml_collections' 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
$PY -c 'import jax, flax, optax; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, jax.devices())' 2>&1 | tee -a "$OUT/gpu.txt"
B=${BATCH:-8}
# 1) the ~400M pretraining model, data parallel on this one device, bf16 + cuDNN attention
timeout ${T1:-240} $PY -m maskvid.bench.layouts --config=$CFG --config.train.batch_size=$B \
    --layouts=dp --remat=dots,none --steps=${STEPS:-10} --warmup=2 2>&1 | grep -Ev "^[IW][0-9]{4} " | tee "$OUT/layouts.log"
# 2) where the step time goes: a jax.profiler trace of the same step, read into a table
timeout ${T3:-180} $PY -m maskvid.bench.profile --config=$CFG --config.train.batch_size=$B \
    --steps=${PSTEPS:-5} --warmup=2 --trace_dir="$OUT/trace" 2>&1 | grep -Ev "^[IW][0-9]{4} " | tee "$OUT/profile.log"
# 3) the sampler against the forward pass, same model
timeout ${T2:-150} $PY -m maskvid.bench.sampler --config=$CFG --batch=${SB:-4} --steps=25 \
    --solvers=euler,heun --repeats=3 2>&1 | grep -Ev "^[IW][0-9]{4} " | tee "$OUT/sampler.log"
echo done
