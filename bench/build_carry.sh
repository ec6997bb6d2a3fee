#!/usr/bin/env bash
# Builds here (no GPU needed; nvcc, bench/gpu_env.sh's flags, sm_90a) the binaries the device scripts
# carry xz-compressed, into DIR (a gitignored .carry-* folder):
#   tests               tests/cuda main + generate + w4a16 + w4a16_tu (gpu_decode.sh)
#   cuda_tests          the whole CUDA suite from CMake's sources (main + the unity TU + w4a16_tu)
#   model_tests         tests/cuda main + model + search (gpu_fast.sh blk)
#   bench_generate_gpu  bench_w4a16  bench_block_cuda  bench_search_cuda   the benches of those names
#   tool                awq_llama_cuda (gpu_fast.sh s, as awq_llama_cuda.xz)
# BASE=<commit> also builds bench_generate_gpu_base (and bench_block_cuda_base, bench_w4a16_base) from that commit's
# include/ and examples/, the same-run baseline. The header dependencies come from .deps/include
# (copied from the Debian packages when missing). Builds run two at a time (this machine has 2 cores).
# usage: [BASE=commit] bash bench/build_carry.sh DIR WHAT...
set -euo pipefail
dir=${1:?usage: build_carry.sh DIR WHAT...}; shift
export PATH=/usr/local/cuda/bin:$PATH
[ -d .deps/include/eigen3 ] || { mkdir -p .deps/include && cp -r /usr/include/eigen3 /usr/include/nlohmann /usr/include/doctest .deps/include/; }
source bench/gpu_env.sh
mkdir -p "$dir"
tmp=$(mktemp -d)
libs=(-L/usr/local/cuda/lib64 -lcublas -lcusolver -lcudart)
# cu SRC... -o NAME [ROOT]: one nvcc build of a .cu program, compressed into DIR/NAME.xz
cu() {
  local name=$1 root=$2; shift 2
  (cd "$root" && nvcc "${flags[@]}" -DNDEBUG -DAWQ_GOLDEN_DIR="\"$PWD/tests/golden\"" -Ibench "$@" "${libs[@]}" -o "$tmp/$name") &&
    xz -T0 -c "$tmp/$name" >"$dir/$name.xz" && echo "built $name"
}
base_root=""
if [ -n "${BASE:-}" ]; then
  base_root=$tmp/base && mkdir -p "$base_root"
  git archive "$BASE" include examples bench tests | tar -C "$base_root" -x
  ln -s "$PWD/.deps" "$base_root/.deps"
fi
running=0
# launch CMD...: runs in the background, at most two at once
launch() {
  [ $running -lt 2 ] || { wait -n; running=$((running - 1)); }
  "$@" & running=$((running + 1))
}
for what in "$@"; do
  case $what in
    tests) launch cu tests . tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_generate.cu tests/cuda/test_cuda_w4a16.cu tests/cuda/test_cuda_w4a16_tu.cu ;;
    cuda_tests) launch cu cuda_tests . tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_unity.cu tests/cuda/test_cuda_w4a16_tu.cu ;;
    model_tests) launch cu model_tests . tests/cuda/test_cuda_main.cu tests/cuda/test_cuda_model.cu tests/cuda/test_cuda_search.cu ;;
    bench_generate_gpu | bench_w4a16 | bench_block_cuda | bench_search_cuda)
      launch cu "$what" . "bench/$what.cu"
      case $what in bench_generate_gpu | bench_block_cuda | bench_w4a16) [ -z "$base_root" ] || launch cu "${what}_base" "$base_root" "bench/$what.cu" ;; esac ;;
    tool) launch bash -c "source bench/gpu_env.sh && build_tool $tmp && xz -T0 -c $tmp/awq_llama_cuda >$dir/awq_llama_cuda.xz && echo built tool" ;;
    *) echo "unknown: $what (tests cuda_tests model_tests bench_generate_gpu bench_w4a16 bench_block_cuda bench_search_cuda tool)"; exit 2 ;;
  esac
done
wait
ls -la "$dir"
