#!/usr/bin/env bash
# Fuzz the file readers with libFuzzer (clang): the safetensors reader, the GGUF reader and the
# AutoAWQ checkpoint importer, each for SECONDS (default 60), all three at once.
#   bash scripts/fuzz.sh          # the short run CI does
#   bash scripts/fuzz.sh 3600     # a long run; findings land in build-fuzz/findings/
# Seeds are made from the real model (data/, fetched by scripts/fetch_data.sh) on each run; the
# corpora grow in build-fuzz/corpus/ and are reused by later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (scripts/setup.sh installs it)"; exit 1; }
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAWQ_BUILD_FUZZ=ON -DAWQ_ENABLE_CUDA=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target fuzz_seeds fuzz_safetensors fuzz_gguf fuzz_awq_checkpoint
real=$(ls data/*.gguf 2>/dev/null | head -1 || true)
./build-fuzz/tests/fuzz/fuzz_seeds build-fuzz/seeds ${real:+"$real"}
mkdir -p build-fuzz/findings
targets=(safetensors gguf awq_checkpoint)
pids=()
for t in "${targets[@]}"; do
  mkdir -p build-fuzz/corpus/$t
  ./build-fuzz/tests/fuzz/fuzz_$t build-fuzz/corpus/$t build-fuzz/seeds/$t -max_total_time="$secs" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=131072 -artifact_prefix=build-fuzz/findings/$t- -print_final_stats=1 \
      >build-fuzz/fuzz_$t.log 2>&1 &
  pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  if wait "${pids[$i]}"; then
    echo "fuzz_$t: $(grep -E 'stat::number_of_executed_units' build-fuzz/fuzz_$t.log | awk '{print $2}') runs in ${secs} s, no finding"
  else
    echo "fuzz_$t: FINDING (see build-fuzz/fuzz_$t.log and build-fuzz/findings/)"; tail -40 build-fuzz/fuzz_$t.log; status=1
  fi
done
exit $status
