#!/usr/bin/env bash
# Tuning sweep for the tiled W4A16 kernel (one device call): builds the W4A16 tests and the bench,
# runs the tests (SANITIZE=1: compute-sanitizer memcheck and racecheck on the tiled cases too), the
# bench at the default settings, then the bench built with each variant of SWEEP ("name=-DX=1 -DY=2;...").
# usage (device machine, repo root, .deps carried): bash bench/tiled_sweep.sh
set -euo pipefail
deps=.deps/include
out=${OUT:-/tmp}
flags=(-std=c++17 -O3 -gencode arch=compute_90,code=sm_90 --expt-relaxed-constexpr -Iinclude -Itests -Iexamples -I"$deps" -I"$deps/eigen3")
mkdir -p build-gpu
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
nvcc "${flags[@]}" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_w4a16.cu -lcublas -o build-gpu/awq_cuda_tests 2>"$out/build_tests.log" &
nvcc "${flags[@]}" bench/bench_w4a16.cu -lcublas -o build-gpu/bench_w4a16 2>"$out/build_bench.log" &
IFS=';' read -ra variants <<< "${SWEEP:-}"
for v in "${variants[@]}"; do name=${v%%=*}; defs=${v#*=}; nvcc "${flags[@]}" $defs bench/bench_w4a16.cu -lcublas -o "build-gpu/bench_$name" 2>/dev/null & done
wait
# Every step writes its own log under $OUT as it goes, so a call that runs out of time still
# returns what it measured (a piped `| tail` returns nothing then).
build-gpu/awq_cuda_tests > "$out/tests.log" 2>&1 || true
tail -4 "$out/tests.log"
if [ "${SANITIZE:-0}" = 1 ]; then
  timeout "${SAN_LIMIT:-120}" compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/awq_cuda_tests -tc="*tiled*" > "$out/memcheck.log" 2>&1 || echo "memcheck rc=$?"
  tail -3 "$out/memcheck.log"
  timeout "${SAN_LIMIT:-120}" compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/awq_cuda_tests -tc="*tiled: bad*" > "$out/racecheck.log" 2>&1 || echo "racecheck rc=$?"
  tail -3 "$out/racecheck.log"
fi
build-gpu/bench_w4a16 ${BENCH_M:-1 4 8 16 64 256} | tee "$out/bench.log"
for v in "${variants[@]}"; do name=${v%%=*}; echo "variant $name: ${v#*=}"; "build-gpu/bench_$name" ${SWEEP_M:-1 16 64} | tail -n +4; done
