#!/usr/bin/env bash
# Issue #25's anchors beside our kernels in one device call (bench/anchors.py says how they are built
# and timed; bench/bench_w4a16.cu times ours and cuBLAS the same way).
#   here:       bash bench/anchors.sh prepare MARLIN_GIT LLMAWQ_GIT
#               (git directories of IST-DASLab/marlin at 2f6d7c1 and mit-han-lab/llm-awq at d6e797a,
#               e.g. the `fetch` tool's mirrors): their sources and bench_w4a16 (gpu_env.sh's flags)
#               into .carry-anchors (gitignored)
#   the device: bash bench/anchors.sh run [M ...]     (carry .carry-anchors; logs in $OUT)
set -euo pipefail
dir=.carry-anchors
case ${1:-} in
  prepare)
    rm -rf "$dir" && mkdir -p "$dir/marlin" "$dir/llm-awq"
    git --git-dir="$2" archive 2f6d7c1 marlin/marlin_cuda.cpp marlin/marlin_cuda_kernel.cu | tar -x -C "$dir/marlin" --strip-components=1
    git --git-dir="$3" archive d6e797a awq/kernels/csrc/quantization_new | tar -x -C "$dir/llm-awq" --strip-components=4
    export PATH=/usr/local/cuda/bin:$PATH
    source bench/gpu_env.sh
    nvcc "${flags[@]}" -DNDEBUG bench/bench_w4a16.cu -lcublas -o build-gpu/bench_w4a16
    xz -T2 -c build-gpu/bench_w4a16 >"$dir/bench_w4a16.xz"
    ls -R "$dir" ;;
  run)
    shift
    source bench/gpu_env.sh
    gpu_info
    xz -dc "$dir/bench_w4a16.xz" >/tmp/bench_w4a16 && chmod +x /tmp/bench_w4a16
    ms=${*:-1 16 32 64 128 256}
    # shellcheck disable=SC2086
    /tmp/bench_w4a16 $ms | tee "$out/ours.log"
    export PYTHONUNBUFFERED=1
    # ANCHORS: which (default both). MARLIN_ARCH: TORCH_CUDA_ARCH_LIST for Marlin alone.
    for anchor in ${ANCHORS:-awq marlin}; do
      src=$dir/llm-awq arch=9.0
      [ "$anchor" = marlin ] && src=$dir/marlin arch=${MARLIN_ARCH:-9.0}
      if TORCH_CUDA_ARCH_LIST=$arch python3 bench/anchors.py "$anchor" "$src" $ms >"$out/$anchor.log" 2>&1; then
        cat "$out/$anchor.log"
      else  # where it stopped: compute-sanitizer on the first M
        tail -3 "$out/$anchor.log"
        echo "$anchor failed: compute-sanitizer on M = ${ms%% *} ($anchor-sanitizer.log)"
        TORCH_CUDA_ARCH_LIST=$arch timeout 200 compute-sanitizer --print-limit 5 python3 bench/anchors.py "$anchor" "$src" "${ms%% *}" \
          >"$out/$anchor-sanitizer.log" 2>&1 || true
        grep -m 4 -A 2 -E "^========= [A-Z]" "$out/$anchor-sanitizer.log" || true
      fi
    done ;;
  *) echo "usage: bash bench/anchors.sh prepare MARLIN_GIT LLMAWQ_GIT | run [M ...]"; exit 2 ;;
esac
