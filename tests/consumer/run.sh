#!/usr/bin/env bash
# Usage: run.sh SOURCE_DIR BUILD_DIR WORK_DIR
# Installs awq from BUILD_DIR, then configures, builds and runs the consumer project three ways.
# The find_package build runs with a PATH that holds no CUDA compiler and CUDACXX unset.
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
test -f "$work/prefix/share/cmake/awq/awqConfig.cmake"
test -f "$work/prefix/share/cmake/awq/awqConfigVersion.cmake"
test -f "$work/prefix/include/awq/awq.hpp"
for mode in find_package add_subdirectory fetchcontent; do
  echo "== consumer via $mode"
  env -u CUDACXX -u CUDA_PATH PATH=/usr/bin:/bin bash -c '! command -v nvcc >/dev/null' 
  env -u CUDACXX -u CUDA_PATH PATH=/usr/bin:/bin \
    cmake -S "$src/tests/consumer" -B "$work/$mode" -DAWQ_CONSUMER_MODE=$mode \
      -DCMAKE_PREFIX_PATH="$work/prefix" -DAWQ_SOURCE_DIR="$src" -DAWQ_ENABLE_CUDA=OFF >"$work/$mode.log"
  env -u CUDACXX PATH=/usr/bin:/bin cmake --build "$work/$mode" -j 2 >>"$work/$mode.log"
  "$work/$mode/consumer"
done
# A CUDA consumer of the installed package (tests/consumer/cuda): a fat binary for sm_80 + sm_90a
# with no awq-specific definition must hold the Hopper kernel's warpgroup MMA in its sm_90a image.
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [ ! -x "$nvcc" ]; then
  echo "== CUDA consumer skipped: no nvcc on PATH or in /usr/local/cuda/bin"
  exit 0
fi
echo "== CUDA consumer via find_package (sm_80 + sm_90a)"
cmake -S "$src/tests/consumer/cuda" -B "$work/cuda" -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_PREFIX_PATH="$work/prefix" >"$work/cuda.log"
cmake --build "$work/cuda" -j 2 >>"$work/cuda.log"
"$work/cuda/consumer_cuda"
cuobjdump=$(command -v cuobjdump || echo "$(dirname "$nvcc")/cuobjdump")
if [ ! -x "$cuobjdump" ] || ! "$cuobjdump" -sass -arch sm_90a "$work/cuda/consumer_cuda" >"$work/cuda_sm90a.sass" 2>"$work/cuda_sass.log"; then
  echo "== CUDA consumer built; SASS check skipped: no working cuobjdump (with nvdisasm) beside nvcc or on PATH"
  exit 0
fi
"$cuobjdump" -sass -arch sm_80 "$work/cuda/consumer_cuda" >"$work/cuda_sm80.sass"
hgmma=$(grep -cE '\b(HGMMA|WGMMA)\b' "$work/cuda_sm90a.sass" || true)
echo "sm_90a image: $hgmma warpgroup MMA instructions (the Hopper W4A16 kernel)"
if [ "$hgmma" -eq 0 ]; then
  echo "error: the sm_90a image of the CUDA consumer has no warpgroup MMA: the Hopper kernel was not compiled in"
  exit 1
fi
if grep -qE '\b(HGMMA|WGMMA)\b' "$work/cuda_sm80.sass"; then
  echo "error: the sm_80 image of the CUDA consumer holds warpgroup MMA"
  exit 1
fi
