#!/usr/bin/env bash
# Batch-1 decode tokens/s on the CPU: the same AWQ export run through the W4A16 kernel and as
# dequantized fp32 weights (awq_llama generate --dequantize), alternating, ROUNDS times each; the
# median decode rate of each and the median of the per-round ratios (a round's two runs see
# about the same load from other processes) (issue #26's CPU target: W4 >= 3x fp32).
# usage: bench/generate_cpu.sh AWQ_LLAMA AWQ_DIR [ROUNDS=3] [TOKENS=64] [THREADS=0]
#   e.g. build/examples/awq_llama --model data/SmolLM2-135M-Instruct.Q4_1.gguf --calib-text data/handbook-calib.txt \
#          --eval-text data/handbook-eval.txt --configs w4g64 --export out/export
#        bench/generate_cpu.sh build/examples/awq_llama out/export/w4-g64-asym
set -euo pipefail
tool=$1 model=$2 rounds=${3:-3} tokens=${4:-64} threads=${5:-0}
prompt="The capital of France is"
declare -A rates
for r in $(seq "$rounds"); do
  for kind in w4 fp32; do
    flag=()
    [ "$kind" = fp32 ] && flag=(--dequantize)
    line=$("$tool" generate --model "$model" --prompt "$prompt" --max-new-tokens "$tokens" --threads "$threads" "${flag[@]}" 2>&1 >/dev/null | tail -1)
    rate=$(sed -n 's/.*decode [0-9]* tokens in [0-9.]*s (\([0-9.]*\) tokens\/s).*/\1/p' <<< "$line")
    [ -n "$rate" ] || { echo "no rate in: $line" >&2; exit 1; }
    echo "round $r $kind: $line"
    rates[$kind]+="$rate "
    if [ "$kind" = w4 ]; then w4_rate=$rate; else rates[ratio]+="$(awk -v a="$w4_rate" -v b="$rate" 'BEGIN {printf "%.3f", a / b}') "; fi
  done
done
median() { tr ' ' '\n' <<< "$1" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
w4=$(median "${rates[w4]}") fp=$(median "${rates[fp32]}")
echo "median decode tokens/s: W4 $w4, fp32 $fp; median of the rounds' W4/fp32: $(median "${rates[ratio]}")x ($(nproc) cores, $tokens new tokens, threads $threads)"
