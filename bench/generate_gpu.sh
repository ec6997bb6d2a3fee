#!/usr/bin/env bash
# Issue #26 on the lent GPU, one device call (repo root, .deps carried; bench/gpu_env.sh):
#   1. builds, unless BIN holds them already: the GPU engine's tests (tests/cuda/test_cuda_generate.cu),
#      bench_generate_gpu, and awq_llama_cuda + tiny_llama_gguf (nvcc, sm_90a);
#   2. runs the tests: the GPU engine's logits against the CPU engine's at every position, the W4
#      greedy continuation against the dequantized weights' for 32 tokens, the errors;
#   3. the tool end to end on a tiny GGUF: `generate --backend cuda` greedy text equals the CPU's;
#   4. decode tokens/s, W4A16 vs fp16 cuBLAS, with the weight-read floor: SmolLM2-135M's shape at
#      context 128 and 2048, and Llama-2-7B's at context 128 and 2048 (batch 1) and batch 8 and 16
#      (context 128), random weights (speed only).
# usage: [BIN=dir-of-prebuilt-binaries] [TOOL=0] [BENCH=0] bash bench/generate_gpu.sh
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

[ "${BENCH:-1}" = 1 ] || exit 0
"$bin/bench_generate_gpu" smollm "${SMOLLM_TOKENS:-128}" 1:128 1:2048 | tee "$out/smollm.log"
"$bin/bench_generate_gpu" 7b "${TOKENS_7B:-64}" 1:128 1:2048 8:128 16:128 | tee "$out/7b.log"
