#!/usr/bin/env bash
# The whole test suite: set-up, a warnings-as-errors build (CUDA targets too when nvcc is
# found), ctest, then the suite again under AddressSanitizer + UndefinedBehaviorSanitizer as C++20.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_data.sh
export PATH="$PATH:/usr/local/cuda/bin"
jobs=$(nproc)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest -j "$jobs" --output-on-failure)

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DAWQ_SANITIZE=address,undefined -DAWQ_TEST_CXX_STANDARD=20 \
      -DAWQ_ENABLE_CUDA=OFF -DAWQ_BUILD_BENCH=OFF -DAWQ_MODEL_TESTS=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target awq_tests embed_minimal
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest -j "$jobs" --output-on-failure -LE "packaging|docs")
