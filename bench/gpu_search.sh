#!/usr/bin/env bash
# One device call for #5: build the CUDA tests and the search bench with nvcc (sm_90), run the
# tests, compute-sanitizer memcheck + racecheck on them (SANITIZE=1), then the 7B-shaped search
# bench (BENCH_ARGS, default the full 32 layers x 128 x 512 tokens).
# usage (device machine, repo root, .deps carried): SANITIZE=1 bash bench/gpu_search.sh
# SKIP_BUILD=1 reuses build-gpu/ from an earlier call on a warm machine; SKIP_TESTS=1 runs only the bench.
set -euo pipefail
source bench/gpu_env.sh
gpu_info
lscpu | grep -E "Model name|^CPU\\(s\\)" || true
t0=$(date +%s)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
nvcc "${flags[@]}" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_quantize.cu \
  tests/cuda/test_cuda_w4a16.cu tests/cuda/test_cuda_search.cu tests/cuda/test_cuda_model.cu -lcublas -lcusolver -o build-gpu/awq_cuda_tests 2>"$out/build_tests.log" &
nvcc "${flags[@]}" bench/bench_search_cuda.cu -lcublas -lcusolver -o build-gpu/bench_search_cuda 2>"$out/build_bench.log" &
wait
fi
echo "build: $(( $(date +%s) - t0 )) s"
[ "${SKIP_TESTS:-0}" = 1 ] || build-gpu/awq_cuda_tests 2>&1 | tail -25 | tee "$out/cuda_tests.log"
if [ "${SANITIZE:-0}" = 1 ]; then
  compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/awq_cuda_tests 2>&1 | tail -4 | tee "$out/memcheck.log"
  # racecheck one test case per process, four at a time (the whole binary in one process is too
  # slow); names become doctest patterns with '?' for every character other than [A-Za-z0-9 ].
  build-gpu/awq_cuda_tests --list-test-cases --no-version 2>/dev/null | grep -v "^\[doctest\]" |
    grep -v "^=*$" | sed 's/[^A-Za-z0-9 ]/?/g' >"$out/cases.txt" || true
  : >"$out/racecheck.log"
  race_one() {
    local r
    r=$(timeout "${RACE_LIMIT:-400}" compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/awq_cuda_tests \
        -tc="$1" 2>&1 | grep -E "RACECHECK SUMMARY|test cases|ERROR" | tr '\n' ' ')
    echo "$1 :: ${r:-no summary (timeout?)}"
  }
  export -f race_one
  tr '\n' '\0' <"$out/cases.txt" | xargs -0 -P 4 -n 1 bash -c 'race_one "$1"' _ >>"$out/racecheck.log"
  echo "racecheck: $(grep -c "RACECHECK SUMMARY: 0 hazards" "$out/racecheck.log") of $(wc -l <"$out/cases.txt") cases show 0 hazards"
  grep -v "RACECHECK SUMMARY: 0 hazards" "$out/racecheck.log" | head -20 || true
fi
build-gpu/bench_search_cuda ${BENCH_ARGS:-} 2>&1 | tee "$out/bench_search.log"
