#!/usr/bin/env bash
# Nsight Compute on the tiled streaming GEMV, from a bench_w4a16 binary carried xz-compressed: the
# first launch at M = 1 of the first shape (4096 x 4096) of each tuning named, the whole report
# (speed of light, memory workload, occupancy, scheduler and warp-state statistics, source counters).
#   BIN=path/bench_w4a16.xz   TUNINGS="TiledTuning GemvWarps8" (C++ names of the tunings; a variant
#   runs under AWQ_BENCH_VARIANTS=its bench name, given in VARIANTS, e.g. gemv_warps8)
# usage (device machine, repo root): BIN=... [TUNINGS=...] [VARIANTS=...] bash bench/ncu_gemv.sh
set -euo pipefail
out=${OUT:-/tmp}
bin=$(mktemp -d)/bench_w4a16
xz -dc "${BIN:?BIN=path/bench_w4a16.xz}" >"$bin" && chmod +x "$bin"
for tn in ${TUNINGS:-TiledTuning}; do
  AWQ_BENCH_VARIANTS=${VARIANTS:-} ncu --kernel-name-base demangled -k "regex:tiled_gemv_kernel<.*${tn}" -c 1 --set full \
    --import-source no "$bin" 1 >"$out/ncu_gemv_$tn.txt" 2>&1 || true
  echo "== $tn"
  grep -E "tiled_gemv_kernel|Duration|DRAM Throughput|Memory Throughput|L2 Hit|Achieved Occupancy|Registers Per|Waves Per SM|Stall|stall|Block Limit" \
    "$out/ncu_gemv_$tn.txt" | head -60
done
