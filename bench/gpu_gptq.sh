#!/usr/bin/env bash
# GPTQ's finalize on the GPU (issues 23 and 24) on the lent machine, in back-to-back device calls
# (the model is larger than one call's carry; the machine keeps build-gpu/ while warm). Prepare the
# carries here with `bash bench/gpu_gptq.sh prepare`, then:
#   stage a: carry ["build-carry/a"] — unpack the header dependencies, stash the GGUF's first half;
#            build (nvcc, sm_90a, in parallel) awq_llama_cuda, the CUDA tests of GPTQ, and
#            bench_gptq_cuda twice: against include/ and against the include/ of the commit
#            `prepare` ran at (the same-run baseline). Run the tests, memcheck on them, and both
#            benches (BENCH_SHAPE: smol, 7b or both);
#   stage t: carry ["build-carry/t"] (`prepare` makes it: the dependencies and the baseline
#            include/, no model) — stage a without awq_llama_cuda and the model: one short call;
#   stage b: carry ["build-carry/b"] — the second half and the texts: the SmolLM2 job with
#            --backend cuda once per MODES (default "reference improved"), wall time and peak GPU
#            memory; then, unless SWEEP=0, bench/gpu_accuracy.sh's table for SWEEP_MODES (default
#            "improved@0.01 improved@0.03 improved@0.1 reference": GPTQ's damping, issue 24);
#   stage c: no carry: the synthetic 7B-shaped checkpoint, once per MODES (gpu_fast.sh's stage s,
#            from this machine's binary and a tokenizer exported in stage b).
set -euo pipefail
stage=${1:?stage: prepare, a, b or c}
source bench/gpu_env.sh
case "$stage" in
prepare)
  [ -d .deps/include/eigen3 ] || { mkdir -p .deps/include && cp -r /usr/include/eigen3 /usr/include/nlohmann /usr/include/doctest .deps/include/; }
  bash bench/gpu_accuracy.sh prepare
  git archive "${BASE:-HEAD}" include | xz -9 > build-carry/a/old_include.tar.xz
  echo "baseline include/: $(git rev-parse --short "${BASE:-HEAD}")"
  mkdir -p build-carry/t && cp build-carry/a/deps.tar.xz build-carry/a/old_include.tar.xz build-carry/t/
  ;;
a|t)
  gpu_info
  c=build-carry/$stage
  mkdir -p build-gpu/data build-gpu/old .deps && tar -C .deps -xJf $c/deps.tar.xz
  [ "$stage" = t ] || cp $c/gguf.part00 build-gpu/data/
  tar -C build-gpu/old -xJf $c/old_include.tar.xz
  t0=$(date +%s)
  nvcc "${flags[@]}" -O2 -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_gptq.cu \
    -lcublas -lcusolver -o build-gpu/gptq_tests 2>"$out/build_tests.log" &
  [ "$stage" = t ] || build_tool build-gpu 2>"$out/build_llama_cuda.log" &
  nvcc "${flags[@]}" bench/bench_gptq_cuda.cu -lcublas -lcusolver -o build-gpu/bench_gptq 2>"$out/build_bench.log" &
  nvcc "${flags[@]/-Iinclude/-Ibuild-gpu/old/include}" bench/bench_gptq_cuda.cu -lcublas -lcusolver -o build-gpu/bench_gptq_old \
    2>"$out/build_bench_old.log" &
  wait
  echo "build: $(( $(date +%s) - t0 )) s"
  ls build-gpu
  timeout 200 build-gpu/gptq_tests 2>&1 | grep -E "MESSAGE|differ|vs |relative|error|test cases|assertions|FAILED|ERROR" | tail -60 | tee "$out/gptq_tests.log"
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/gptq_tests -tc="gptq on cuda*,*gram*" 2>&1 | tail -3 | tee "$out/memcheck.log"
  for b in ${BENCH_ORDER:-bench_gptq_old bench_gptq}; do
    echo "== $b"
    build-gpu/$b --shape "${BENCH_SHAPE:-both}" --reps 3 | tee -a "$out/bench_gptq.log"
  done
  ;;
b)
  cat build-gpu/data/gguf.part00 build-carry/b/gguf.part01 > build-gpu/data/model.gguf
  echo "a1231443440b107ff29f02bdb38c9d0a  build-gpu/data/model.gguf" | md5sum -c
  gpu_info
  c=build-carry/b
  job=(build-gpu/awq_llama_cuda --model build-gpu/data/model.gguf --calib-text $c/handbook-calib.txt --eval-text $c/handbook-eval.txt)
  for mode in ${MODES:-reference improved}; do
    t0=$(date +%s%N)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/smi_$mode.log" &
    smi=$!
    "${job[@]}" --backend cuda --mode "$mode" --report "$out/smollm_cuda_$mode.json" 2>&1 | grep -v "eta" | grep -v "^$" | tail -8 |
      tee "$out/smollm_cuda_$mode.log"
    kill $smi; wait $smi 2>/dev/null || true
    echo "SmolLM2 job, --mode $mode, wall: $(( ($(date +%s%N) - t0) / 1000000 )) ms, peak GPU memory $(sort -n "$out/smi_$mode.log" | tail -1) MiB"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); [print(x['config'], 'phase_s', x.get('phase_s')) for x in r['configs']]" \
      "$out/smollm_cuda_$mode.json" || true
  done
  # SmolLM2's tokenizer and the calibration text for stage c's synthetic checkpoint (a one-block export)
  cp $c/handbook-calib.txt build-gpu/
  rm -rf build-gpu/tok && "${job[@]:0:5}" --eval-tokens 0 --backend cuda --layers 1 --configs w4g64 --calib-seqs 1 --export build-gpu/tok >/dev/null 2>&1
  [ "${SWEEP:-1}" = 0 ] || MODES="${SWEEP_MODES:-improved@0.01 improved@0.03 improved@0.1 reference}" bash bench/gpu_accuracy.sh b
  ;;
c)
  mkdir -p .carry-me
  xz -T0 -1 -c build-gpu/awq_llama_cuda > .carry-me/awq_llama_cuda.xz
  cp build-gpu/tok/w4-g64-asym/tokenizer.json build-gpu/handbook-calib.txt .carry-me/
  TESTS=0 MATHS=fp16 MODES="${MODES:-improved reference}" bash bench/gpu_fast.sh s
  ;;
esac
