#!/usr/bin/env bash
# The CUDA suite built here (bash bench/build_carry.sh DIR cuda_tests) on the lent GPU, one call:
# the whole suite, then the cases of SHOW_TC (a doctest filter) with their messages, then
# compute-sanitizer memcheck on MEMCHECK_TC.
# usage (device, carry [DIR]): CARRY=DIR [SHOW_TC=...] [MEMCHECK_TC=...] bash bench/gpu_tests.sh
set -uo pipefail
source bench/gpu_env.sh
gpu_info
bin=$(mktemp -d)/cuda_tests
xz -dc "${CARRY:?CARRY: the carry folder holding cuda_tests.xz}/cuda_tests.xz" >"$bin" && chmod +x "$bin"
timeout 300 "$bin" >"$out/cuda_tests.log" 2>&1 || echo "CUDA tests: exit $?"
grep -E "ERROR|FAILED" "$out/cuda_tests.log" | head -20
grep -v "^$" "$out/cuda_tests.log" | tail -3
if [ -n "${SHOW_TC:-}" ]; then
  timeout 200 "$bin" -s -tc="$SHOW_TC" 2>&1 | grep -E "MESSAGE|GPU vs|retarget|cross_gram|ERROR|test cases|Status" -A1 | grep -v "^--$" | tee "$out/show.log"
fi
if [ -n "${MEMCHECK_TC:-}" ]; then
  timeout 250 compute-sanitizer --tool memcheck --error-exitcode 1 "$bin" -tc="$MEMCHECK_TC" 2>&1 | tail -3 | tee "$out/memcheck.log"
fi
