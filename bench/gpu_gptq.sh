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
#            include/, no model) — stage a without awq_llama_cuda and the model: one short call.
#            With gptq_tests.xz, bench_gptq.xz and bench_gptq_old.xz there (`bash bench/gpu_gptq.sh
#            build` makes them on this machine: nvcc and the same flags), no build on the device;
#            with .carry-me carried too (awq_llama_cuda.xz, tokenizer.json, handbook-calib.txt),
#            then the synthetic 7B per MODES, as gpu_fast.sh's stage s;
#   stage b: carry ["build-carry/b"] — the second half and the texts: the SmolLM2 job with
#            --backend cuda once per MODES (default "reference improved"), wall time and peak GPU
#            memory; then, unless SWEEP=0, bench/gpu_accuracy.sh's table for SWEEP_MODES (default
#            "improved@0.01 improved@0.03 improved@0.1 reference": GPTQ's damping, issue 24);
#   stage c: no carry: the synthetic 7B-shaped checkpoint, once per MODES (gpu_fast.sh's stage s,
#            from this machine's binary and a tokenizer exported in stage b).
set -euo pipefail
stage=${1:?stage: prepare, build, t, a, b or c}
source bench/gpu_env.sh
# gptq_binaries: the GPTQ tests and bench_gptq_cuda against include/ and against the baseline
# include/ (build-gpu/old), into build-gpu/, in parallel (the caller waits).
gptq_binaries() {
  nvcc "${flags[@]}" -O2 -DAWQ_GOLDEN_DIR='"tests/golden"' tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_gptq.cu \
    -lcublas -lcusolver -o build-gpu/gptq_tests 2>"$out/build_tests.log" &
  nvcc "${flags[@]}" bench/bench_gptq_cuda.cu -lcublas -lcusolver -o build-gpu/bench_gptq 2>"$out/build_bench.log" &
  nvcc "${flags[@]/-Iinclude/-Ibuild-gpu/old/include}" bench/bench_gptq_cuda.cu -lcublas -lcusolver -o build-gpu/bench_gptq_old \
    2>"$out/build_bench_old.log" &
}
case "$stage" in
prepare)
  [ -d .deps/include/eigen3 ] || { mkdir -p .deps/include && cp -r /usr/include/eigen3 /usr/include/nlohmann /usr/include/doctest .deps/include/; }
  bash bench/gpu_accuracy.sh prepare
  git archive "${BASE:-HEAD}" include | xz -9 > build-carry/a/old_include.tar.xz
  echo "baseline include/: $(git rev-parse --short "${BASE:-HEAD}")"
  mkdir -p build-carry/t && cp build-carry/a/deps.tar.xz build-carry/a/old_include.tar.xz build-carry/t/
  ;;
build)  # stage t's binaries and the tool, built here into build-carry/t and .carry-me
  mkdir -p build-gpu/old build-carry/t .carry-me && tar -C build-gpu/old -xJf build-carry/t/old_include.tar.xz
  gptq_binaries
  build_tool build-gpu
  wait
  for b in gptq_tests bench_gptq bench_gptq_old; do xz -T0 -6 -c build-gpu/$b > build-carry/t/$b.xz; done
  xz -T0 -6 -c build-gpu/awq_llama_cuda > .carry-me/awq_llama_cuda.xz
  ;;
a|t)
  gpu_info
  c=build-carry/$stage
  mkdir -p build-gpu/data build-gpu/old .deps && tar -C .deps -xJf $c/deps.tar.xz
  [ "$stage" = t ] || cp $c/gguf.part00 build-gpu/data/
  tar -C build-gpu/old -xJf $c/old_include.tar.xz
  t0=$(date +%s)
  if [ "$stage" = t ] && [ -f $c/gptq_tests.xz ]; then
    for b in gptq_tests bench_gptq bench_gptq_old; do xz -dc $c/$b.xz > build-gpu/$b && chmod +x build-gpu/$b; done
  else
    gptq_binaries
    [ "$stage" = t ] || build_tool build-gpu 2>"$out/build_llama_cuda.log" &
    wait
  fi
  echo "build: $(( $(date +%s) - t0 )) s"
  ls build-gpu
  timeout 200 build-gpu/gptq_tests > "$out/gptq_tests_full.log" 2>&1 || echo "gptq tests: exit $?"
  grep -E "MESSAGE|differ|vs |relative|error|test cases|assertions|FAILED|ERROR" "$out/gptq_tests_full.log" | tail -60
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/gptq_tests -tc="gptq on cuda*,*gram*" 2>&1 |
    tail -3 | tee "$out/memcheck.log" || true
  for b in ${BENCH_ORDER:-bench_gptq_old bench_gptq}; do
    echo "== $b"
    build-gpu/$b --shape "${BENCH_SHAPE:-both}" --reps 3 | tee -a "$out/bench_gptq.log" || echo "$b: exit $?"
  done
  [ "$stage" = t ] && [ -f .carry-me/awq_llama_cuda.xz ] && TESTS=0 MATHS=fp16 MODES="${MODES:-improved reference}" bash bench/gpu_fast.sh s
  true
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
