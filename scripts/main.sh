#!/usr/bin/env bash
# The main job: set-up, build, then quantize a layer with every config and print the error table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DAWQ_ENABLE_CUDA=OFF >/dev/null
cmake --build build-main -j "$(nproc)" --target quantize_layer >/dev/null
./build-main/examples/quantize_layer "$@"
