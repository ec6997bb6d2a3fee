#!/usr/bin/env bash
# The real-model job with --backend cuda against --backend cpu, on the lent GPU machine, in two
# back-to-back device calls (the model is larger than one call's carry; the machine keeps
# build-gpu/ while warm):
#   stage a: carry ["build-carry/a"] — unpack the header dependencies, stash the first half of the GGUF, build
#            awq_llama_cuda (nvcc) and awq_llama (g++), and unless TESTS=0 the CUDA tests, run under
#            compute-sanitizer memcheck and racecheck;
#   stage b: carry ["build-carry/b"] — the second half and the texts; check the model's md5, then
#            run both backends with the same arguments (ARGS) and print both tables.
# Prepare the carry folders here with: bash bench/gpu_main.sh prepare
set -euo pipefail
stage=${1:?stage: prepare, a or b}
source bench/gpu_env.sh
model_md5=a1231443440b107ff29f02bdb38c9d0a
case "$stage" in
prepare)
  rm -rf build-carry && mkdir -p build-carry/a build-carry/b
  split -n 2 -d data/SmolLM2-135M-Instruct.Q4_1.gguf build-carry/gguf.part
  mv build-carry/gguf.part00 build-carry/a/ && mv build-carry/gguf.part01 build-carry/b/
  tar -C .deps -cJf build-carry/a/deps.tar.xz include  # header dependencies, compressed to fit the carry
  cp data/handbook-calib.txt data/handbook-eval.txt build-carry/b/
  ;;
a)
  gpu_info
  mkdir -p build-gpu/data .deps && cp build-carry/a/gguf.part00 build-gpu/data/ && tar -C .deps -xJf build-carry/a/deps.tar.xz
  t0=$(date +%s)
  if [ "${TESTS:-1}" = 1 ]; then
  nvcc "${flags[@]}" -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_quantize.cu \
    tests/cuda/test_cuda_w4a16.cu tests/cuda/test_cuda_search.cu tests/cuda/test_cuda_model.cu -lcublas -lcusolver -o build-gpu/awq_cuda_tests 2>"$out/build_tests.log" &
  fi
  cxx=(-std=c++17 -O3 -DNDEBUG -Iinclude -Iexamples -I"$deps" -I"$deps/eigen3" -pthread)
  build_tool build-gpu 2>"$out/build_llama_cuda.log" &
  g++ "${cxx[@]}" examples/awq_llama.cpp examples/llama/job_cpu.cpp examples/llama/no_cuda.cpp -o build-gpu/awq_llama 2>"$out/build_llama.log" &
  wait
  echo "build: $(( $(date +%s) - t0 )) s"
  ls -la build-gpu
  [ "${TESTS:-1}" = 1 ] || exit 0
  build-gpu/awq_cuda_tests 2>&1 | tail -4 | tee "$out/cuda_tests.log"
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/awq_cuda_tests 2>&1 | tail -4 | tee "$out/memcheck.log"
  timeout 150 compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/awq_cuda_tests -tc="*mse*,*stream*,*w4a16*" 2>&1 | tail -4 | tee "$out/racecheck.log"
  ;;
b)
  cat build-gpu/data/gguf.part00 build-carry/b/gguf.part01 > build-gpu/data/model.gguf
  echo "$model_md5  build-gpu/data/model.gguf" | md5sum -c
  common=(--model build-gpu/data/model.gguf --calib-text build-carry/b/handbook-calib.txt
          --eval-text build-carry/b/handbook-eval.txt ${ARGS:-})
  t0=$(date +%s)
  timeout "${CUDA_LIMIT:-240}" build-gpu/awq_llama_cuda "${common[@]}" --backend cuda --report "$out/report_cuda.json" 2>&1 |
    grep --line-buffered -v "eta" | tee "$out/main_cuda.log" || true
  echo "cuda run: $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout "${CPU_LIMIT:-300}" build-gpu/awq_llama "${common[@]}" --backend cpu --report "$out/report_cpu.json" 2>&1 |
    grep --line-buffered -v "eta" | tee "$out/main_cpu.log" || true
  echo "cpu run: $(( $(date +%s) - t0 )) s"
  ;;
esac
