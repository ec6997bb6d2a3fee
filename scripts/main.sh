#!/usr/bin/env bash
# The main job: set-up (packages, model, text), build, then quantize SmolLM2-135M-Instruct with
# RTN and AWQ (W4 g64 and W3 g64 by default) and print the perplexity table. Extra arguments go
# to awq_llama (see README), e.g. --configs w4g32 --duo --report out.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_data.sh
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DAWQ_ENABLE_CUDA=OFF -DAWQ_BUILD_TESTS=OFF -DAWQ_BUILD_BENCH=OFF >/dev/null
cmake --build build-main -j "$(nproc)" --target awq_llama >/dev/null
./build-main/examples/awq_llama --model data/SmolLM2-135M-Instruct.Q4_1.gguf \
  --calib-text data/handbook-calib.txt --eval-text data/handbook-eval.txt --report data/report.json "$@"
