#!/usr/bin/env bash
# Issue #26 on the lent GPU, one device call (repo root, .deps carried; bench/gpu_env.sh):
#   1. builds, unless BIN holds them already: the GPU engine's tests (tests/cuda/test_cuda_generate.cu),
#      bench_generate_gpu, and awq_llama_cuda + tiny_llama_gguf (nvcc, sm_90a);
#   2. runs the tests: the GPU engine's logits against the CPU engine's at every position, the W4
#      greedy continuation against the dequantized weights' for 32 tokens, the errors;
#   3. the tool end to end on a tiny GGUF: `generate --backend cuda` greedy text equals the CPU's;
#   4. decode tokens/s, W4A16 vs fp16 cuBLAS, with the weight-read floor: SmolLM2-135M's shape at
#      context 128 and 2048, and Llama-2-7B's at context 128 and 2048 (batch 1) and batch 8 and 16
#      (context 128), random weights (speed only); with programmatic dependent launch and without
#      (--no-overlap), and BASE_BIN's bench_generate_gpu (another build: the same-run baseline);
#   5. NCU=1: each kernel of the 7B W4 step alone (Nsight Compute, graph nodes one by one), the
#      median duration per kernel name;
#   6. compute-sanitizer memcheck on the logits test (the attention's several-chunk path).
# usage: [BIN=dir-of-prebuilt-binaries] [BASE_BIN=file] [TOOL=0] [BENCH=0] [NCU=1] bash bench/generate_gpu.sh
set -euo pipefail
source bench/gpu_env.sh
bin=${BIN:-build-gpu}
gpu_info
if [ ! -x "$bin/gen_tests" ]; then
  t0=$(date +%s)
  cxx=(-std=c++17 -O2 -DNDEBUG -Iinclude -Iexamples -Itests -I"$deps" -I"$deps/eigen3" -pthread)
  nvcc "${flags[@]}" -DNDEBUG tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_generate.cu -lcublas -lcusolver -o "$bin/gen_tests" &
  nvcc "${flags[@]}" -DNDEBUG bench/bench_generate_gpu.cu -lcublas -lcusolver -o "$bin/bench_generate_gpu" &
  build_tool "$bin" &
  g++ "${cxx[@]}" tests/cli/tiny_llama_gguf.cpp -o "$bin/tiny_llama_gguf" &
  wait
  echo "build: $(( $(date +%s) - t0 )) s"
fi
"$bin/gen_tests" -s 2>&1 | grep -E "MESSAGE|continuation|GPU vs CPU|test cases|assertions|Status|ERROR|FAILED" | tee "$out/gen_tests.log"

# The tool end to end on a tiny GGUF and its W4 export (the job on the CPU, a few seconds): greedy
# text on the GPU against the CPU's, fp16/fp32, W4 and the export dequantized; then a bad input.
# TOOL=0 skips this part.
if [ "${TOOL:-1}" = 1 ]; then
  tiny=$(mktemp -d)
  "$bin/tiny_llama_gguf" "$tiny/tiny.gguf" >/dev/null
  for i in $(seq 40); do echo "The quick brown fox jumps over the lazy dog, again and again ($i)."; done > "$tiny/text.txt"
  "$bin/awq_llama_cuda" --model "$tiny/tiny.gguf" --calib-text "$tiny/text.txt" --eval-tokens 0 --seq-len 16 --configs w4g64 \
    --calib-seqs 2 --export "$tiny/exp" >/dev/null 2>&1
  gen() { "$bin/awq_llama_cuda" generate --prompt "The quick brown fox" --max-new-tokens 24 "$@"; }
  for m in "$tiny/tiny.gguf" "$tiny/exp/w4-g64-asym" "$tiny/exp/w4-g64-asym --dequantize"; do
    for b in cpu cuda; do
      gen --model $m --backend $b >"$tiny/$b.txt" 2>"$tiny/$b.err" || true
      echo "tool --backend $b: $(tail -1 "$tiny/$b.err")"
    done
    cmp -s "$tiny/cpu.txt" "$tiny/cuda.txt" && echo "  greedy text: the GPU's equals the CPU's" ||
      echo "  greedy text differs: cpu '$(cat "$tiny/cpu.txt")' cuda '$(cat "$tiny/cuda.txt")'"
  done
  "$bin/awq_llama_cuda" generate --model "$tiny/tiny.gguf" --prompt "The quick brown fox" --max-new-tokens 60 --backend cuda 2>&1 | tail -1 || true
fi

if [ "${BENCH:-1}" = 1 ]; then
  bench() {  # bench BINARY TAG [--no-overlap]
    "$1" ${3:-} smollm "${SMOLLM_TOKENS:-128}" 1:128 1:2048 | tee "$out/smollm_$2.log"
    "$1" ${3:-} 7b "${TOKENS_7B:-64}" 1:128 1:2048 8:128 16:128 | tee "$out/7b_$2.log"
  }
  bench "$bin/bench_generate_gpu" overlap
  bench "$bin/bench_generate_gpu" plain --no-overlap
  [ -z "${BASE_BIN:-}" ] || bench "$BASE_BIN" base
fi
if [ "${NCU:-0}" = 1 ]; then
  # The W4 model's kernels come first: its prefill (128 tokens), the eager step, the captured step's nodes.
  timeout 300 ncu --graph-profiling node --metrics gpu__time_duration.sum --csv -c "${NCU_COUNT:-1400}" \
    "$bin/bench_generate_gpu" 7b 1 1:128 > "$out/ncu_7b.csv" 2>"$out/ncu_7b.err" || echo "ncu: exit $?"
  python3 - "$out/ncu_7b.csv" <<'PY' || true
import csv, re, statistics, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; k = head.index("Kernel Name"); v = head.index("Metric Value"); u = head.index("Metric Unit")
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
by = {}
for r in rows[1:]:
    name = re.sub(r"\(.*", "", r[k]).replace("awq::cuda::", "")[-70:] + " grid " + (r[head.index("Grid Size")] if "Grid Size" in head else "?")
    by.setdefault(name, []).append(float(r[v].replace(",", "")) * scale.get(r[u], 1.0))
for n, d in sorted(by.items(), key=lambda x: -sum(x[1])):
    print(f"{n:95s} count {len(d):5d} median {statistics.median(d):8.2f} us  total {sum(d):9.1f} us")
PY
fi
if [ "${MEMCHECK:-1}" = 1 ]; then
  timeout 240 compute-sanitizer --tool memcheck --error-exitcode 1 "$bin/gen_tests" -tc="*logits at every position*" 2>&1 | tail -4 |
    tee "$out/memcheck.log" || echo "memcheck: exit $?"
fi
