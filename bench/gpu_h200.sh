#!/usr/bin/env bash
# The figures issues 23 and 26 set their targets by, taken only when the lent card is an H200 (an
# H100 ends the call at once: its figures are in bench/RESULTS.md). One call, carry [".carry-h"]
# holding awq_llama_cuda.xz, tokenizer.json, handbook-calib.txt.xz, bench_generate_gpu.xz and
# tests.xz (bench/build_carry.sh):
#   1. the synthetic 7B-shaped job twice (gpu_fast.sh s: w4g128, 128 × 512 calibration, export,
#      --math fp16), wall time per phase, peak host RSS and GPU memory;
#   2. decode, W4 against fp16 tokens/s (gpu_decode.sh: the tests first, then the 7B shape at
#      batch 1 / ctx 128 and 2048, batch 8 and 16, the SmolLM2 shape), twice;
#   3. with bench_w4a16.xz in the carry: issue 25's kernel table (M = 1 to 256, cuBLAS fp16 and
#      the copy rate in the same run), twice.
# CARRY=dir takes the binaries from another carry folder; JOB=0 leaves out step 1 (then the carry
# needs only tests.xz and bench_generate_gpu.xz, e.g. .carry-g). ANCHORS=1 takes step 3 through
# bench/anchors.sh run instead (carry .carry-anchors too, with bench_w4a16.xz in it): our table, then
# llm-awq's GEMM and GEMV built beside it (Marlin stops with an illegal instruction on sm_90 with this
# toolkit: bench/RESULTS.md), then our table again for the run-to-run noise.
# usage: [CARRY=.carry-h] [JOB=1] [ANCHORS=0] bash bench/gpu_h200.sh
set -euo pipefail
source bench/gpu_env.sh
if ! nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  echo "not an H200 ($(nvidia-smi --query-gpu=name --format=csv,noheader)): nothing run"
  exit 0
fi
carry=${CARRY:-.carry-h}
if [ "${JOB:-1}" = 1 ]; then
  for run in 1 2; do
    echo "== synthetic 7B job, run $run"
    CARRY=$carry TESTS=0 MATHS=fp16 SYNTH_LIMIT=200 bash bench/gpu_fast.sh s
  done
fi
# gpu_decode.sh runs bench_w4a16 at M = 1, 4, 16 when carried; the table below takes it instead.
dec=$(mktemp -d)
cp "$carry"/tests.xz "$carry"/bench_generate_gpu.xz "$dec"/
CARRY=$dec VARIANTS=new RUNS=2 SANITIZE=0 bash bench/gpu_decode.sh
if [ "${ANCHORS:-0}" = 1 ]; then
  ANCHORS=awq bash bench/anchors.sh run
  echo "== kernel table, after the anchors"
  xz -dc .carry-anchors/bench_w4a16.xz >"$dec/bench_w4a16" && chmod +x "$dec/bench_w4a16"
  "$dec/bench_w4a16" 1 16 32 64 128 256 | tee "$out/w4a16_table_2.log"
elif [ -f "$carry/bench_w4a16.xz" ]; then
  xz -dc "$carry/bench_w4a16.xz" >"$dec/bench_w4a16" && chmod +x "$dec/bench_w4a16"
  for run in 1 2; do
    echo "== kernel table, run $run"
    "$dec/bench_w4a16" 1 16 32 64 128 256 | tee "$out/w4a16_table_$run.log"
  done
fi
