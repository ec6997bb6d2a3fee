#!/usr/bin/env bash
# One device call for #6: build the CUDA tests (all of them, into build-gpu/ where gpu_search.sh
# SKIP_BUILD=1 finds them), the W4A16 bench and the search bench with nvcc (sm_90), run the tests,
# compute-sanitizer memcheck + racecheck on the W4A16 tests, then the W4A16 bench table.
# usage (device machine, repo root, .deps carried): bash bench/gpu_w4a16.sh
# W4A16_ONLY=1 builds only the W4A16 tests; WITH_SEARCH=0 skips the search bench; SANITIZE=0 skips compute-sanitizer.
set -euo pipefail
source bench/gpu_env.sh
gpu_info
t0=$(date +%s)
if [ "${W4A16_ONLY:-0}" = 1 ]; then tests=(tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_w4a16.cu); else
  tests=(tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_quantize.cu tests/cuda/test_cuda_w4a16.cu tests/cuda/test_cuda_search.cu); fi
nvcc "${flags[@]}" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" "${tests[@]}" -lcublas -lcusolver -o build-gpu/awq_cuda_tests 2>"$out/build_tests.log" &
nvcc "${flags[@]}" bench/bench_w4a16.cu -lcublas -lcusolver -o build-gpu/bench_w4a16 2>"$out/build_bench_w4a16.log" &
[ "${WITH_SEARCH:-1}" = 1 ] && nvcc "${flags[@]}" bench/bench_search_cuda.cu -lcublas -lcusolver -o build-gpu/bench_search_cuda 2>"$out/build_bench.log" &
wait
echo "build: $(( $(date +%s) - t0 )) s"
build-gpu/awq_cuda_tests 2>&1 | tail -30 | tee "$out/cuda_tests.log"
if [ "${SANITIZE:-1}" = 1 ]; then
  compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/awq_cuda_tests -tc="*w4a16*" 2>&1 | tail -3 | tee "$out/memcheck.log"
  compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/awq_cuda_tests -tc="*w4a16*" 2>&1 | tail -3 | tee "$out/racecheck.log"
fi
build-gpu/bench_w4a16 2>&1 | tee "$out/bench_w4a16.log"
