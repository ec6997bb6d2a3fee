#!/usr/bin/env bash
# GPU check, one device call: build the CUDA tests with nvcc, run them, then run them under
# compute-sanitizer memcheck and racecheck. Header-only dependencies come from .deps/include
# (a copy of the Debian packages' headers, carried to the device machine).
# usage (on the device machine, repo root): bash bench/gpu_check.sh
set -euo pipefail
source bench/gpu_env.sh
gpu_info
nvcc --version | tail -2
bin=/tmp/awq_cuda_tests
time nvcc -std=c++17 -O2 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr \
  -Iinclude -Itests -I"$deps" -I"$deps/eigen3" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" \
  tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_quantize.cu -o "$bin"
"$bin" 2>&1 | tee "$out/cuda_tests.log"
compute-sanitizer --tool memcheck --error-exitcode 1 "$bin" 2>&1 | tail -5 | tee "$out/memcheck.log"
compute-sanitizer --tool racecheck --error-exitcode 1 "$bin" 2>&1 | tail -5 | tee "$out/racecheck.log"
