#!/usr/bin/env bash
# The tool's GPU paths on real and tiny models (issues 22 and 26), one device call after
# `bash bench/gpu_accuracy.sh a` (which stashes the GGUF's first half and awq_llama_cuda in
# build-gpu/), carry ["build-carry/b"]:
#   - generate --backend cuda on SmolLM2's GGUF (fp16 cuBLAS): "The capital of France is" → Paris;
#   - a W4 g64 export, then its greedy continuation through the W4A16 kernels against the same
#     checkpoint's dequantized weights (--dequantize), 32 tokens, on the GPU;
#   - the tiny OPT directory of the CLI tests quantized, evaluated and exported on the GPU with
#     --math fp32 (its figures compare with the CPU tool's on the same arguments; see the log).
set -uo pipefail
source bench/gpu_env.sh
tool=build-gpu/awq_llama_cuda
[ -f build-gpu/data/model.gguf ] || cat build-gpu/data/gguf.part00 build-carry/b/gguf.part01 > build-gpu/data/model.gguf
echo "a1231443440b107ff29f02bdb38c9d0a  build-gpu/data/model.gguf" | md5sum -c || exit 1
m=build-gpu/data/model.gguf
echo "== generate, GGUF, fp16 cuBLAS"
$tool generate --model $m --prompt "The capital of France is" --max-new-tokens 8 --backend cuda; echo
echo "== W4 export, then W4A16 kernels vs dequantized weights, 32 greedy tokens"
rm -rf build-gpu/w4exp
$tool --model $m --calib-text build-carry/b/handbook-calib.txt --eval-tokens 0 --configs w4g64 --backend cuda \
  --export build-gpu/w4exp 2>&1 | grep -v eta | tail -2
p="Here is a short story about a robot who learns to paint:"
a=$($tool generate --model build-gpu/w4exp/w4-g64-asym --prompt "$p" --max-new-tokens 32 --backend cuda)
b=$($tool generate --model build-gpu/w4exp/w4-g64-asym --prompt "$p" --max-new-tokens 32 --backend cuda --dequantize)
printf 'W4:          %s\ndequantized: %s\n' "$a" "$b"
[ "$a" = "$b" ] && echo "W4 greedy continuation equals the dequantized one" || echo "W4 and dequantized continuations DIFFER"
echo "== the tiny OPT directory on the GPU"
rm -rf build-gpu/opt && mkdir -p build-gpu/opt
cp tests/golden/arch_opt/hf/config.json tests/golden/arch_opt/hf/model.safetensors tests/cli/tiny_opt_tokenizer/* build-gpu/opt/
for i in $(seq 40); do echo "The quick brown fox jumps over the lazy dog, again and again ($i)."; done > build-gpu/text.txt
$tool --model build-gpu/opt --calib-text build-gpu/text.txt --eval-text build-gpu/text.txt --calib-seqs 2 --seq-len 16 \
  --eval-tokens 64 --configs w4g32 --backend cuda --math fp32 --export build-gpu/optexp 2>&1 | grep -v eta | tail -4
