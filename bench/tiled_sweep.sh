#!/usr/bin/env bash
# Tiled W4A16 kernel on the device, one call: builds the W4A16 CUDA tests and the bench, runs the
# tests, the bench at the default tuning, then the bench with the tuning variants named below.
# Every step writes its own log under $OUT as it goes, so a call that runs out of time still
# returns what it measured (a piped `| tail` returns nothing then).
#   SWEEP="name,name"              tuning variants of bench_w4a16.cu (its Variants: no_wgmma, no_gemv, fp16_decode,
#                                  gemv_batch16, no_mix, wide64, wide_steps2; add one there as a TiledTuning subtype), timed
#                                  beside the default at SWEEP_M (default 1 16 64); 8192 x 28672 only unless SWEEP_BIG=0
#   ALL_TESTS=1                    the test binaries hold every CUDA test (quantize, search too)
#   TEST_TC="*tiled*"              run only these test cases (doctest -tc filter; default all)
#   SANITIZE=1                     compute-sanitizer memcheck (cases SAN_TC, default "*tiled*") and
#                                  racecheck (cases RACE_TC, default "*tiled stress*") on each test
#                                  binary, SAN_LIMIT seconds each (default 120)
#   NCU="bin:kernel-regex:M[:KxN];..."  Nsight Compute (memory, occupancy, stall sections) on one launch
#                                  of that kernel at 8192 x 28672 (or KxN) in build-gpu/<bin> (a bench binary)
#   BUILD=0 / TESTS=0 / BENCH=0    skip a step (BUILD=0 reuses build-gpu/ of a warm machine)
# usage (device machine, repo root, .deps carried): bash bench/tiled_sweep.sh
set -uo pipefail
source bench/gpu_env.sh
gpu_info
tests=(awq_cuda_tests)
test_sources=(tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_w4a16.cu)
[ "${ALL_TESTS:-0}" = 1 ] && test_sources+=(tests/cuda/test_cuda_quantize.cu tests/cuda/test_cuda_search.cu)
if [ "${BUILD:-1}" = 1 ]; then
  t0=$SECONDS
  nvcc "${flags[@]}" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" "${test_sources[@]}" -lcublas -lcusolver \
    -o build-gpu/awq_cuda_tests > "$out/build_awq_cuda_tests.log" 2>&1 || echo "build awq_cuda_tests FAILED" &
  nvcc "${flags[@]}" bench/bench_w4a16.cu -lcublas -lcusolver -o build-gpu/bench_w4a16 > "$out/build_bench.log" 2>&1 || echo "build bench FAILED" &
  wait
  echo "build: $((SECONDS - t0)) s"
fi
if [ "${TESTS:-1}" = 1 ]; then
  for t in "${tests[@]}"; do
    "build-gpu/$t" -tc="${TEST_TC:-*}" > "$out/tests_$t.log" 2>&1
    echo "$t: rc=$? $(tail -3 "$out/tests_$t.log" | grep -E 'test cases|assertions' | tr '\n' ' ')"
  done
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  for t in "${tests[@]}"; do
    timeout "${SAN_LIMIT:-120}" compute-sanitizer --tool memcheck --error-exitcode 1 "build-gpu/$t" -tc="${SAN_TC:-*tiled*}" > "$out/memcheck_$t.log" 2>&1
    echo "memcheck $t: rc=$? $(grep -E 'ERROR SUMMARY|test cases' "$out/memcheck_$t.log" | tr '\n' ' ')"
    timeout "${SAN_LIMIT:-120}" compute-sanitizer --tool racecheck --error-exitcode 1 "build-gpu/$t" -tc="${RACE_TC:-*tiled stress*}" > "$out/racecheck_$t.log" 2>&1
    echo "racecheck $t: rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY|test cases' "$out/racecheck_$t.log" | tr '\n' ' ')"
  done
fi
echo "$(date +%T) tests/sanitizers done"
if [ "${BENCH:-1}" = 1 ]; then
  build-gpu/bench_w4a16 ${BENCH_M:-1 4 8 16 64 256} > "$out/bench.log" 2>&1; cat "$out/bench.log"
  if [ -n "${SWEEP:-}" ]; then
    AWQ_BENCH_VARIANTS=$SWEEP AWQ_BENCH_BIG=${SWEEP_BIG:-1} build-gpu/bench_w4a16 ${SWEEP_M:-1 16 64} > "$out/bench_variants.log" 2>&1
    tail -n +4 "$out/bench_variants.log"
  fi
fi
IFS=';' read -ra ncus <<< "${NCU:-}"
for v in "${ncus[@]}"; do
  IFS=':' read -r bin kre mval shape <<< "$v"
  AWQ_BENCH_BIG=$([ -n "${shape:-}" ] && echo 0 || echo 1) AWQ_BENCH_SHAPE=${shape:-} ncu -k "regex:$kre" --launch-skip 20 -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
    --section SchedulerStats --section WarpStateStats --section LaunchStats \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,dram__bytes_read.sum.per_second,lts__t_sector_hit_rate.pct" \
    "build-gpu/$bin" "${mval:-1}" > "$out/ncu_${bin}_${kre//[^a-z0-9]/_}_${mval:-1}${shape:+_$shape}.txt" 2>&1
  echo "== ncu $bin $kre M=${mval:-1} ${shape:-8192x28672}"
  grep -E "Duration|DRAM Throughput|Memory Throughput|dram__bytes_read|L2 Hit|lts__t_sector_hit|Mem Busy|Max Bandwidth|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Issued Warp|No Eligible|Active Warps Per" "$out/ncu_${bin}_${kre//[^a-z0-9]/_}_${mval:-1}${shape:+_$shape}.txt" | head -24
  grep -E "stalled_" "$out/ncu_${bin}_${kre//[^a-z0-9]/_}_${mval:-1}${shape:+_$shape}.txt" | sort -k3 -rn | head -6
done
