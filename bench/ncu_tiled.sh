#!/usr/bin/env bash
# Nsight Compute on the tiled W4A16 kernel: the first launch of the 8192 x 28672 shape at the given
# M values (default 1): throughput, occupancy and the warp stall reasons per issued instruction.
# usage (device machine, repo root, .deps carried): bash bench/ncu_tiled.sh [M...]
set -euo pipefail
source bench/gpu_env.sh
nvcc "${flags[@]}" bench/bench_w4a16.cu -lcublas -lcusolver -o build-gpu/bench_w4a16 2>"$out/build.log" || { tail -20 "$out/build.log"; exit 1; }
for m in "${@:-1}"; do
  ncu -k regex:w4a16_tiled_kernel --launch-skip 4200 -c 1 --section SpeedOfLight --section Occupancy --section SchedulerStats \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" build-gpu/bench_w4a16 "$m" > "$out/ncu_$m.txt" 2>&1 || true
  echo "== M = $m"
  grep -E "Duration|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Issued Warp|stalled" "$out/ncu_$m.txt" | sort -k3 -rn | head -30
done
