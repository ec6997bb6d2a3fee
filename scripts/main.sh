#!/usr/bin/env bash
# The main job: set-up (packages, model, text), build, then quantize SmolLM2-135M-Instruct with
# RTN and AWQ (W4 g64 and W3 g64 by default) and print the perplexity table. Extra arguments go
# to awq_llama (see README), e.g. --configs w4g32 --duo --report out.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_data.sh
# `--backend cuda` runs the search on the GPU: that binary (awq_llama_cuda) needs nvcc and a device.
tool=awq_llama cuda=OFF
for arg in "$@"; do [ "$arg" = cuda ] && [ "${prev:-}" = --backend ] && tool=awq_llama_cuda cuda=ON; prev=$arg; done
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DAWQ_ENABLE_CUDA=$cuda -DAWQ_BUILD_TESTS=OFF -DAWQ_BUILD_BENCH=OFF >/dev/null
cmake --build build-main -j "$(nproc)" --target $tool >/dev/null
./build-main/examples/$tool --model data/SmolLM2-135M-Instruct.Q4_1.gguf \
  --calib-text data/handbook-calib.txt --eval-text data/handbook-eval.txt --report data/report.json "$@"
