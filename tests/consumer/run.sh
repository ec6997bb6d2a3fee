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
