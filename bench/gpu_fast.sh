#!/usr/bin/env bash
# The fast job (issue #23) on the lent GPU machine, in back-to-back device calls (the model is larger
# than one call's carry; the machine keeps build-gpu/ while warm). Prepare the carries here with
# `bash bench/gpu_main.sh prepare`, then:
#   stage a: carry ["build-carry/a"] — headers unpacked, awq_llama_cuda and the model CUDA tests built
#            (nvcc, sm_90a) in parallel; the tests run, then under compute-sanitizer memcheck;
#   stage b: carry ["build-carry/b"] — the README job on SmolLM2 with --backend cuda (both configs,
#            64 × 512 calibration, loss on all 64, 32,768 evaluation tokens), wall time, peak host RSS
#            (the tool's report) and peak GPU memory (nvidia-smi sampled every 100 ms), then the
#            synthetic 7B-shaped checkpoint (SYNTH=0 skips it);
#   stage s: one call, no model to carry: the synthetic 7B alone (and the CUDA tests) from binaries
#            built here — see the stage's comment. MATHS="fp16 tf32" runs the job once per --math,
#            MODES="reference improved" once per --mode (default: the tool's defaults); TESTS=0 skips
#            the tests (a second run of the stage on a warm machine); TOOL_XZ names another binary;
#   stage blk: carry [".carry-blk"] holding bench_block_cuda and bench_block_cuda_base (the same bench
#            built against another tree's include/, e.g. `git archive HEAD include`), either may be
#            .xz, and optionally model_tests(.xz) (tests/cuda's main, model and search files) and
#            bench_search_cuda: the per-block search of the tool's GPU path, base and new alternated
#            twice (BLK_ARGS), the fp16-storage floor (bench_search_cuda), then the tests (BLK_TC: a doctest filter) and memcheck on BLK_MEMCHECK_TC;
#   stage m: right after stage s (the machine still warm), carry [".carry-m"] holding the GGUF's
#            last pieces and the texts (earlier calls kept theirs in build-gpu/data/): the SmolLM2
#            job with --backend cuda once per MODES, then the α of the first 4 blocks on cuda
#            (--math fp32) and on the CPU backend, same options, compared group by group; with
#            gguf_to_hf.xz there, the GGUF against the same weights as an HF directory on cuda.
set -euo pipefail
stage=${1:?stage: a or b}
source bench/gpu_env.sh
gpu_peak() {  # runs "$@", printing the peak GPU memory used while it ran
  local log; log=$(mktemp)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$log" &
  local smi=$! rc=0
  "$@" || rc=$?
  kill $smi; wait $smi 2>/dev/null || true
  echo "peak GPU memory: $(sort -n "$log" | tail -1) MiB (baseline $(head -1 "$log") MiB)"
  return $rc
}
# synth TOKENIZER_JSON CALIB_TEXT: writes the synthetic 7B-shaped checkpoint (once per machine) and
# runs the job on it: w4g128, 128 x 512 calibration, export, no evaluation; MATHS (default "tf32")
# lists the --math modes to run, one job each.
synth() {
  local t0
  t0=$(date +%s%N)
  [ -d build-gpu/synth7b ] || python3 bench/make_synthetic_llama.py build-gpu/synth7b "$1" --layers "${SYNTH_LAYERS:-32}"
  echo "synthetic checkpoint written in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  for m in ${MATHS:-tf32}; do
  for mode in ${MODES:-default}; do
    rm -rf build-gpu/synth_out && mkdir -p build-gpu/synth_out
    t0=$(date +%s%N)
    local tag=${m}_$mode modearg=""
    [ "$mode" = default ] || modearg="--mode $mode"
    # Under script(1) the tool sees a terminal and draws its progress bar: a timed-out run still shows how far it got.
    local cmd="build-gpu/awq_llama_cuda --model build-gpu/synth7b --calib-text $2 --eval-tokens 0 --backend cuda --math $m $modearg \
      --configs w4g128 --calib-seqs 128 --export build-gpu/synth_out --report $out/synth7b_$tag.json ${SYNTH_ARGS:-}"
    gpu_peak timeout "${SYNTH_LIMIT:-200}" script -qfec "$cmd" /dev/null 2>&1 | tr '\r' '\n' | grep -v '^$' > "$out/synth7b_$tag.log" || true
    grep -v "eta\|search\|clip\|%" "$out/synth7b_$tag.log" | tail -12; tail -2 "$out/synth7b_$tag.log"
    echo "synthetic 7B job, --math $m, --mode $mode, wall: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('peak RSS', r.get('peak_rss_mb'), 'MB; phases', r['configs'][0].get('phase_s'))" "$out/synth7b_$tag.json" || true
    du -sh build-gpu/synth_out/*
  done
  done
}
# keep_parts DIR: DIR's pieces of the SmolLM2 GGUF (gguf.part00, part01, ..., or of its xz stream,
# gguf.xz.part00, ...; one call's carry holds less than the model) copied to build-gpu/data/, where
# the warm machine keeps them for a later call.
keep_parts() { mkdir -p build-gpu/data; for f in "$1"/gguf.part?? "$1"/gguf.xz.part??; do [ -f "$f" ] && cp "$f" build-gpu/data/; done; true; }
# unpack DIR: the .xz files of a carry, decompressed beside them.
unpack() { for f in "$1"/*.txt.xz "$1"/*.json.xz; do [ -f "$f" ] && xz -dkf "$f"; done; true; }
# cuda_tests DIR: with DIR/awq_cuda_tests.xz, the CUDA tests (TESTS_TC: a doctest filter), then
# memcheck on the model cases (MEMCHECK=0 skips it).
cuda_tests() {
  [ -f "$1/awq_cuda_tests.xz" ] || return 0
  xz -dc "$1/awq_cuda_tests.xz" > build-gpu/awq_cuda_tests && chmod +x build-gpu/awq_cuda_tests
  timeout 200 build-gpu/awq_cuda_tests ${TESTS_TC:+-tc="$TESTS_TC"} > "$out/cuda_tests.log" 2>&1 || echo "CUDA tests: exit $?"
  grep -v "^$" "$out/cuda_tests.log" | tail -4
  [ "${MEMCHECK:-1}" = 0 ] || timeout 150 compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/awq_cuda_tests \
    -tc="${MEMCHECK_TC:-*model on cuda*,*Math*}" 2>&1 | tail -3 | tee "$out/memcheck.log" || true
}
# alphas A.json B.json: the α both reports chose, block by block and group by group, and where they differ.
alphas() {
  python3 - "$1" "$2" <<'PY'
import json, sys
ca, cb = (json.load(open(f))["configs"] for f in sys.argv[1:3])
for ra, rb in zip(ca, cb):
    a, b = ra["alphas"], rb["alphas"]
    diff = [(i, g, x[g], y.get(g)) for i, (x, y) in enumerate(zip(a, b)) for g in x if x[g] != y.get(g)]
    print(f"{ra['config']}: alpha of {sum(len(x) for x in a)} groups in {len(a)} blocks; {len(diff)} differ", *diff[:20], sep="\n  ")
PY
}
case "$stage" in
s)  # the synthetic 7B alone, from binaries built here: carry [$CARRY, default ".carry-me"] holding awq_llama_cuda.xz,
    # tokenizer.json (SmolLM2's) and handbook-calib.txt (either may be .xz); with awq_cuda_tests.xz
    # there, the CUDA tests first (TESTS_TC: a doctest filter), then memcheck on the model cases
  c=${CARRY:-.carry-me}
  mkdir -p build-gpu
  gpu_info
  unpack $c
  xz -dc "${TOOL_XZ:-$c/awq_llama_cuda.xz}" > build-gpu/awq_llama_cuda && chmod +x build-gpu/awq_llama_cuda
  [ "${TESTS:-1}" = 0 ] || cuda_tests $c
  keep_parts $c
  [ "${SYNTH:-1}" = 0 ] || synth $c/tokenizer.json $c/handbook-calib.txt
  ;;
blk)
  c=.carry-blk
  gpu_info
  for f in "$c"/*.xz; do [ -f "$f" ] && xz -dkf "$f"; done
  chmod +x "$c"/bench_block_cuda* "$c"/model_tests 2>/dev/null || true
  for b in bench_block_cuda_base bench_block_cuda bench_block_cuda_base bench_block_cuda; do
    echo "== $b"; "$c/$b" ${BLK_ARGS:---layers 3} | tee -a "$out/blk.log"
  done
  # The floor: the same search over fp16 storage (bench/llama_ref), when carried.
  [ ! -x "$c/bench_search_cuda" ] || "$c/bench_search_cuda" ${BLK_ARGS:---layers 3} --cpu-layers 0 | tail -8 | tee "$out/floor.log"
  if [ -x "$c/model_tests" ]; then
    timeout 300 "$c/model_tests" ${BLK_TC:+-tc="$BLK_TC"} > "$out/model_tests.log" 2>&1 || echo "model tests: exit $?"
    grep -E "attention, math|module, math|ERROR|FAILED|test cases|assertions|Status" "$out/model_tests.log" | head -30
    [ -z "${BLK_MEMCHECK_TC:-}" ] || timeout 200 compute-sanitizer --tool memcheck --error-exitcode 1 "$c/model_tests" \
      -tc="$BLK_MEMCHECK_TC" 2>&1 | tail -3 | tee "$out/memcheck.log" || true
  fi
  keep_parts $c
  ;;
m)  # SmolLM2 after stage s: carry [".carry-m"] holding the GGUF's last pieces, handbook-calib.txt and
    # handbook-eval.txt (either may be .xz), optionally awq_cuda_tests.xz (run last); ALPHAS=0 skips the α comparison
  c=.carry-m
  unpack $c
  keep_parts $c
  if [ -f build-gpu/data/gguf.xz.part00 ]; then cat build-gpu/data/gguf.xz.part?? | xz -dc > build-gpu/data/model.gguf
  else cat build-gpu/data/gguf.part?? > build-gpu/data/model.gguf; fi
  echo "a1231443440b107ff29f02bdb38c9d0a  build-gpu/data/model.gguf" | md5sum -c
  job=(build-gpu/awq_llama_cuda --model build-gpu/data/model.gguf --calib-text $c/handbook-calib.txt --eval-text $c/handbook-eval.txt)
  # BASE_XZ (a carried awq_llama_cuda.xz of another build): its job too, right after, as the same-run baseline.
  tools=(build-gpu/awq_llama_cuda)
  if [ -n "${BASE_XZ:-}" ]; then
    xz -dc "$BASE_XZ" > build-gpu/awq_llama_cuda_base && chmod +x build-gpu/awq_llama_cuda_base
    tools+=(build-gpu/awq_llama_cuda_base)
  fi
  for tool in "${tools[@]}"; do
  for mode in ${MODES:-default}; do
    modearg=()
    [ "$mode" = default ] || modearg=(--mode "$mode")
    tag=$mode${tool#build-gpu/awq_llama_cuda}
    t0=$(date +%s%N)
    gpu_peak "$tool" "${job[@]:1}" --backend cuda "${modearg[@]}" --report "$out/smollm_cuda_$tag.json" 2>&1 |
      grep --line-buffered -v "eta" | grep -v "^$" | tail -8 | tee "$out/smollm_cuda_$tag.log"
    echo "SmolLM2 job, $tool, --mode $mode, wall: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  done
  done
  # α of the first 4 blocks: cuda at fp32 products against the CPU backend, the same options (no
  # evaluation text: the tool refuses one with --eval-tokens 0).
  if [ "${ALPHAS:-1}" = 1 ]; then
    quick=("${job[@]:0:5}" --layers 4 --configs w4g64,w3g64 --search-seqs 4 --eval-tokens 0 --mode reference)
    "${quick[@]}" --backend cuda --math fp32 --report "$out/alpha_cuda.json" >/dev/null 2>&1
    t0=$(date +%s%N)
    "${quick[@]}" --backend cpu --report "$out/alpha_cpu.json" >/dev/null 2>&1
    echo "cpu, 4 blocks, 2 configs: $(( ($(date +%s%N) - t0) / 1000000 )) ms on $(nproc) cores"
    alphas "$out/alpha_cuda.json" "$out/alpha_cpu.json"
  fi
  # The same weights as a Hugging Face fp32 directory (bench/gguf_to_hf, carried as gguf_to_hf.xz):
  # the tool on cuda gives the GGUF's α and perplexities (issue 22).
  if [ -f $c/gguf_to_hf.xz ]; then
    xz -dc $c/gguf_to_hf.xz > build-gpu/gguf_to_hf && chmod +x build-gpu/gguf_to_hf
    rm -rf build-gpu/smol_hf && build-gpu/gguf_to_hf build-gpu/data/model.gguf build-gpu/smol_hf
    same=(--calib-text $c/handbook-calib.txt --eval-text $c/handbook-eval.txt --backend cuda --configs w4g64,w3g64)
    build-gpu/awq_llama_cuda --model build-gpu/data/model.gguf "${same[@]}" --report "$out/gguf_cuda.json" >/dev/null 2>&1
    build-gpu/awq_llama_cuda --model build-gpu/smol_hf "${same[@]}" --report "$out/hf_cuda.json" >/dev/null 2>&1
    alphas "$out/gguf_cuda.json" "$out/hf_cuda.json"
    python3 - "$out/gguf_cuda.json" "$out/hf_cuda.json" <<'PY'
import json, sys
a, b = (json.load(open(f))["configs"] for f in sys.argv[1:3])
for x, y in zip(a, b):
    for k in ("ppl_fp", "ppl_rtn", "ppl_awq"):
        print(f"{x['config']} {k}: GGUF {x[k]:.6f} HF {y[k]:.6f} relative difference {abs(x[k] - y[k]) / x[k]:.2e}")
PY
  fi
  cuda_tests $c
  ;;
a)
  gpu_info
  mkdir -p build-gpu/data .deps && cp build-carry/a/gguf.part00 build-gpu/data/ && tar -C .deps -xJf build-carry/a/deps.tar.xz
  t0=$(date +%s)
  [ "${TESTS:-1}" = 0 ] || nvcc "${flags[@]}" -O2 -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" tests/cuda/test_cuda_main.cu \
    tests/cuda/test_cuda_model.cu -lcublas -lcusolver -o build-gpu/model_tests 2>"$out/build_tests.log" &
  build_tool build-gpu 2>"$out/build_llama_cuda.log" &
  wait
  echo "build: $(( $(date +%s) - t0 )) s"
  cp build-gpu/awq_llama_cuda "$out/"  # comes back: carried in build-carry/b, a later stage b needs no build
  [ "${TESTS:-1}" = 0 ] && exit 0
  build-gpu/model_tests 2>&1 | tail -25 | tee "$out/model_tests.log"
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/model_tests -tc="${MEMCHECK_TC:-*Finalize*,*HeadEval*,*W4A16*}" 2>&1 |
    tail -3 | tee "$out/memcheck.log"
  ;;
b)
  [ -x build-gpu/awq_llama_cuda ] || install -m 755 build-carry/b/awq_llama_cuda build-gpu/awq_llama_cuda
  [ -f build-gpu/data/gguf.part00 ] || cp build-carry/a/gguf.part00 build-gpu/data/ 2>/dev/null || true
  cat build-gpu/data/gguf.part00 build-carry/b/gguf.part01 > build-gpu/data/model.gguf
  echo "a1231443440b107ff29f02bdb38c9d0a  build-gpu/data/model.gguf" | md5sum -c
  t0=$(date +%s%N)
  gpu_peak build-gpu/awq_llama_cuda --model build-gpu/data/model.gguf --calib-text build-carry/b/handbook-calib.txt \
    --eval-text build-carry/b/handbook-eval.txt --backend cuda --report "$out/smollm_cuda.json" ${ARGS:-} 2>&1 |
    grep --line-buffered -v "eta" | tee "$out/smollm_cuda.log"
  echo "SmolLM2 job wall: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  if [ "${DEQUANTIZED:-1}" = 1 ]; then  # the same job evaluated on dequantized fp32 weights instead of the W4A16 kernels
    build-gpu/awq_llama_cuda --model build-gpu/data/model.gguf --calib-text build-carry/b/handbook-calib.txt \
      --eval-text build-carry/b/handbook-eval.txt --backend cuda --eval-dequantized ${ARGS:-} 2>&1 | grep -A3 "^config" | tee "$out/smollm_cuda_dequantized.log"
  fi
  # The synthetic 7B-shaped checkpoint (its tokenizer: SmolLM2's, from a one-block export).
  if [ "${SYNTH:-1}" = 1 ]; then
    rm -rf build-gpu/tok && build-gpu/awq_llama_cuda --model build-gpu/data/model.gguf --calib-text build-carry/b/handbook-calib.txt \
      --eval-tokens 0 --backend cuda --layers 1 --configs w4g64 --calib-seqs 1 --export build-gpu/tok >/dev/null 2>&1
    synth build-gpu/tok/w4-g64-asym/tokenizer.json build-carry/b/handbook-calib.txt
  fi
  ;;
esac
