#!/usr/bin/env bash
# Issue #26's decode changes on the lent GPU, one device call, from binaries built here (bench/gpu_env.sh's
# flags) and carried xz-compressed in $CARRY (default .carry-d):
#   tests.xz                      tests/cuda main + generate + w4a16 + w4a16_tu
#   bench_generate_gpu.xz         this tree's bench
#   bench_generate_gpu_base.xz    the same-run baseline's; bench_generate_gpu_mid.xz (optional) another
#   bench_w4a16.xz                (optional) this tree's kernel bench; bench_w4a16_base.xz (optional) the baseline's
# 1. the tests (logits against the CPU engine at every position with both attention chunks and the
#    swiglu fused and not; the W4 greedy continuation against the dequantized forward;
#    W4A16Linear::swiglu on every kernel; the GEMV's cluster-added K slices), then compute-sanitizer
#    memcheck on the logits, swiglu and cluster tests (TOOLS="memcheck racecheck" adds racecheck);
#    a failed test ends the run;
# 2. with bench_w4a16: the products at M = 1, 4, 16 with the BENCH_VARIANTS tunings (default
#    gemv_cluster) beside the defaults; with bench_w4a16_base too: the two alternated RUNS times;
# 3. decode, 7B shape at batch 1 / ctx 128 and 2048, batch 8 and 16 / ctx 128, SmolLM2 shape at
#    batch 1 / ctx 128: VARIANTS (default: base mid new unfused — new with --no-fused-swiglu;
#    also chunk64, chunk256, cluster: new with --gemv-cluster), RUNS times, alternated (run-to-run noise).
# usage: [CARRY=dir] [RUNS=2] [VARIANTS=...] [TOKENS_7B=64] [SANITIZE=1] bash bench/gpu_decode.sh
set -euo pipefail
source bench/gpu_env.sh
carry=${CARRY:-.carry-d}
bin=$(mktemp -d)
gpu_info
for f in "$carry"/*.xz; do xz -dc "$f" >"$bin/$(basename "$f" .xz)" && chmod +x "$bin/$(basename "$f" .xz)"; done
"$bin/tests" -s 2>&1 | grep -E "GPU vs CPU|continuation|test cases|assertions|ERROR|FAILED|Status" | tee "$out/tests.log" || true
grep -q "Status: SUCCESS" "$out/tests.log" || { echo "tests failed: no timings"; exit 1; }
if [ "${SANITIZE:-1}" = 1 ]; then
  for tool in ${TOOLS:-memcheck}; do
    compute-sanitizer --tool $tool --error-exitcode 1 "$bin/tests" -tc="*logits at every position*,*swiglu*,*cluster*" >"$out/$tool.log" 2>&1 &&
      echo "$tool: clean" || echo "$tool: FAILED (see $tool.log)"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Status" "$out/$tool.log" | sed "s/^/$tool: /" | tee -a "$out/tests.log"
  done
fi
if [ -x "$bin/bench_w4a16_base" ]; then  # this tree's kernels against the baseline's, alternated
  for r in $(seq "${RUNS:-2}"); do
    for b in bench_w4a16_base bench_w4a16; do
      echo "== run $r: $b"
      AWQ_BENCH_VARIANTS=${BENCH_VARIANTS:-} "$bin/$b" 1 4 16 | tee "$out/${b}_$r.log"
    done
  done
elif [ -x "$bin/bench_w4a16" ]; then
  AWQ_BENCH_VARIANTS=${BENCH_VARIANTS:-gemv_cluster} "$bin/bench_w4a16" 1 4 16 | tee "$out/w4a16.log"
fi
t=${TOKENS_7B:-64}
for r in $(seq "${RUNS:-2}"); do
  for v in ${VARIANTS:-base mid new unfused}; do
    case $v in
      base | mid) b=("$bin/bench_generate_gpu_$v") ;;
      new) b=("$bin/bench_generate_gpu") ;;
      unfused) b=("$bin/bench_generate_gpu" --no-fused-swiglu) ;;
      chunk64 | chunk256) b=("$bin/bench_generate_gpu" --attn-chunk "${v#chunk}") ;;
      cluster) b=("$bin/bench_generate_gpu" --gemv-cluster) ;;
      *) echo "unknown variant '$v' (base mid new unfused chunk64 chunk256 cluster)"; exit 2 ;;
    esac
    echo "== run $r: $v"
    "${b[@]}" 7b "$t" 1:128 1:2048 8:128 16:128 | grep -E "^\| 7b|H100|H200" | tee -a "$out/decode_${v}_$r.log"
    "${b[@]}" smollm 128 1:128 | grep -E "^\| smollm" | tee -a "$out/decode_${v}_$r.log"
  done
done
