#!/usr/bin/env bash
# One device call: build the CUDA tests and the W4A16 bench with nvcc, run the tests (pseudo-quantize
# and W4A16 GEMV), compute-sanitizer memcheck + racecheck on them, then the bench table.
# usage (device machine, repo root, .deps carried): bash bench/gpu_w4a16.sh
set -euo pipefail
deps=${AWQ_DEPS:-.deps/include}
out=${OUT:-/tmp}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
flags=(-std=c++17 -O3 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr -Iinclude -Itests -I"$deps" -I"$deps/eigen3")
nvcc "${flags[@]}" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_quantize.cu \
  tests/cuda/test_cuda_w4a16.cu -o /tmp/awq_cuda_tests 2>/tmp/build_tests.log &
nvcc "${flags[@]}" bench/bench_w4a16.cu -lcublas -o /tmp/bench_w4a16 2>/tmp/build_bench.log &
wait
/tmp/awq_cuda_tests 2>&1 | tee "$out/cuda_tests.log"
compute-sanitizer --tool memcheck --error-exitcode 1 /tmp/awq_cuda_tests -tc="*w4a16*" 2>&1 | tail -3 | tee "$out/memcheck.log"
compute-sanitizer --tool racecheck --error-exitcode 1 /tmp/awq_cuda_tests -tc="*w4a16*" 2>&1 | tail -3 | tee "$out/racecheck.log"
/tmp/bench_w4a16 2>&1 | tee "$out/bench_w4a16.log"
