#!/usr/bin/env bash
# Issue #26's decode changes on the lent GPU, one device call, from binaries built here (bench/gpu_env.sh's
# flags) and carried xz-compressed in $CARRY (default .carry-d):
#   tests.xz                  tests/cuda main + generate
#   bench_generate_gpu.xz     this tree's bench; bench_generate_gpu_base.xz: the same-run baseline's
# 1. the generation tests (logits against the CPU engine at every position with both attention
#    chunks; the W4 greedy continuation against the dequantized forward), then compute-sanitizer
#    memcheck and racecheck on the logits test;
# 2. decode, 7B shape at batch 1 / ctx 128 and 2048, batch 8 and 16 / ctx 128, SmolLM2 shape at
#    batch 1 / ctx 128: base, new (the engine's pick of the attention chunk: 64 keys at these
#    capacities), new with 256-key chunks; RUNS times, alternated (run-to-run noise).
# usage: [CARRY=dir] [RUNS=2] [TOKENS_7B=64] [SANITIZE=1] bash bench/gpu_decode.sh
set -euo pipefail
source bench/gpu_env.sh
carry=${CARRY:-.carry-d}
bin=$(mktemp -d)
gpu_info
for f in "$carry"/*.xz; do xz -dc "$f" >"$bin/$(basename "$f" .xz)" && chmod +x "$bin/$(basename "$f" .xz)"; done
"$bin/tests" -s 2>&1 | grep -E "GPU vs CPU|continuation|test cases|assertions|ERROR|FAILED|Status" | tee "$out/tests.log" || true
if [ "${SANITIZE:-1}" = 1 ]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 1 "$bin/tests" -tc="*logits at every position*" 2>&1 | tail -3 |
      sed "s/^/$tool: /" | tee -a "$out/tests.log" || true
  done
fi
t=${TOKENS_7B:-64}
for r in $(seq "${RUNS:-2}"); do
  for v in base new chunk256; do
    case $v in
      base) b=("$bin/bench_generate_gpu_base") ;;
      new) b=("$bin/bench_generate_gpu") ;;
      chunk256) b=("$bin/bench_generate_gpu" --attn-chunk 256) ;;
    esac
    echo "== run $r: $v"
    "${b[@]}" 7b "$t" 1:128 1:2048 8:128 16:128 | grep -E "^\| 7b|H100|H200" | tee -a "$out/decode_${v}_$r.log"
    "${b[@]}" smollm 128 1:128 | grep -E "^\| smollm" | tee -a "$out/decode_${v}_$r.log"
  done
done
