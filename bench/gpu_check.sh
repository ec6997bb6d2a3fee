#!/usr/bin/env bash
# GPU check, one device call: build every CUDA test source with nvcc (each file alone, in
# parallel, sm_90a: the Hopper kernel is in the binary), run the whole CUDA suite, then
# compute-sanitizer memcheck on the pipeline's GPU path, the quantizer, clip and GPTQ kernels and
# the W4A16 kernels, and racecheck on the W4A16 kernels. Header-only dependencies come from .deps/include (a copy of the Debian
# packages' headers, carried).
# usage (on the device machine, repo root, carry [".deps"]): bash bench/gpu_check.sh
set -uo pipefail
source bench/gpu_env.sh
gpu_info
nvcc --version | tail -2
bin=build-gpu/awq_cuda_tests
t0=$(date +%s)
pids=()
for f in tests/cuda/test_cuda_*.cu; do
  [ "$f" = tests/cuda/test_cuda_unity.cu ] && continue  # the files one by one: 16 cores here
  nvcc "${flags[@]}" -O2 -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" -c "$f" -o "build-gpu/$(basename "$f" .cu).o" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
nvcc "${flags[@]}" build-gpu/test_cuda_*.o -lcublas -lcusolver -o "$bin"
echo "build: $(( $(date +%s) - t0 )) s"
"$bin" 2>&1 | tail -4 | tee "$out/cuda_tests.log"
"$bin" -tc='*model*' 2>&1 | tail -3
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 1 "$bin" -tc='*model*,W4A16Linear*,*tiled layout equals*' 2>&1 | tail -4 | tee "$out/memcheck.log"
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 "$bin" -tc='*pseudo_quantize*,*clip search*,gptq on cuda*' 2>&1 | tail -4 | tee "$out/memcheck_quant.log"
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 1 "$bin" -tc='*narrower blocks*,*tiled layout equals*' 2>&1 | tail -4 | tee "$out/racecheck.log"
