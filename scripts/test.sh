#!/usr/bin/env bash
# The whole test suite: set-up, a warnings-as-errors build (CUDA targets too when nvcc is
# found), ctest, the suite again under AddressSanitizer + UndefinedBehaviorSanitizer as C++20,
# the multi-threaded paths under ThreadSanitizer, and a short libFuzzer run of the file readers
# (AWQ_FUZZ_SECONDS each, default 15; scripts/fuzz.sh runs longer ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_data.sh
export PATH="$PATH:/usr/local/cuda/bin"
jobs=$(nproc)
stage() { echo "== $1 (at ${SECONDS} s)"; }

stage "build"
# Line tables only (-g1) and no host debug info through nvcc: full debug info of the Eigen-heavy
# test and tool sources costs minutes of CI time and nothing here reads it. CI has no GPU to run
# the CUDA code, so it compiles every CUDA source to sm_90a PTX (the lent GPUs' architecture; the
# Hopper W4A16 kernel and every other kernel) and stops there, with the device front end (cicc)
# and the sources' host code at -O0: cicc's optimiser took 106 s and ptxas 57 of the largest test
# source's 183 s. Machine code for the library's kernels is still made here, by the packaging
# test's CUDA consumer (sm_80 and sm_90a, its SASS checked); the GPU scripts in bench/ build with
# full optimisation. A plain configure builds sm_80, sm_90a and sm_90 PTX.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
      -DCMAKE_CUDA_FLAGS_RELWITHDEBINFO="-O0 -DNDEBUG -Xcicc -O0" -DCMAKE_CUDA_ARCHITECTURES=90a-virtual \
      -DAWQ_TOOLS_CUDA_ARCHITECTURES=90a-virtual >/dev/null
cmake --build build -j "$jobs"
stage "tests"
(cd build && ctest -j "$jobs" --output-on-failure)

stage "AddressSanitizer + UndefinedBehaviorSanitizer"
# clang here (the main build is gcc): a second compiler over the same sources, and about 80 s
# less compile and test time on 2 cores than gcc for this configuration.
CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" -DAWQ_SANITIZE=address,undefined -DAWQ_TEST_CXX_STANDARD=20 \
      -DAWQ_ENABLE_CUDA=OFF -DAWQ_BUILD_BENCH=OFF -DAWQ_MODEL_TESTS=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target awq_tests embed_minimal
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest -j "$jobs" --output-on-failure -LE "packaging|docs|examples|readme")

stage "ThreadSanitizer"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" -DAWQ_SANITIZE=thread \
      -DAWQ_ENABLE_CUDA=OFF -DAWQ_BUILD_BENCH=OFF -DAWQ_BUILD_EXAMPLES=OFF -DAWQ_MODEL_TESTS=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target awq_thread_tests
(cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest -j "$jobs" --output-on-failure -R "^tsan\.")

stage "fuzz"
bash scripts/fuzz.sh "${AWQ_FUZZ_SECONDS:-15}"
stage "done"
