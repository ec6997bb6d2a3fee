#!/usr/bin/env bash
# awq_llama's command line end to end: every bad input exits 2 with one "awq_llama: ..." line that
# names the flag and the value, before any long work; --help and inspect exit 0. A tiny GGUF
# (tiny_llama_gguf) stands in for the model, and the tiny OPT of tests/golden/arch_opt/hf with a
# hand-written GPT-2 style tokenizer (tiny_opt_tokenizer/) for an OPT directory, so the whole
# script runs in a few seconds.
#   run_cli_tests.sh AWQ_LLAMA TINY_LLAMA_GGUF WORKDIR          check every case
#   run_cli_tests.sh AWQ_LLAMA TINY_LLAMA_GGUF WORKDIR --table  print "case | exit | message" rows
set -u
tool=$1 writer=$2 work=$3 mode=${4:-check}
here=$(cd "$(dirname "$0")" && pwd)
# A configuration that builds only some targets (the sanitizer pass) skips this test (ctest code 77).
for exe in "$tool" "$writer"; do
  [ -x "$exe" ] || { echo "$exe is not built: skipped"; exit 77; }
done
rm -rf "$work" && mkdir -p "$work" || exit 1
cd "$work" || exit 1

"$writer" tiny.gguf || { echo "cannot write tiny.gguf"; exit 1; }
for i in $(seq 40); do echo "The quick brown fox jumps over the lazy dog, again and again ($i)."; done > text.txt
cp text.txt eval.txt  # the same words in another file: an --eval-text equal to --calib-text is warned about
printf 'short text\n' > short.txt
printf 'na\xefve caf\xe9\n' > latin1.txt
printf 'not a model\n' > notes.txt
: > empty.bin
mkdir -p outdir hf
printf '{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64}\n' > hf/config.json
header='{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
{ printf "\\x$(printf %02x ${#header})\\0\\0\\0\\0\\0\\0\\0"; printf '%s' "$header"; printf '\0\0\x80\x3f'; } > hf/model.safetensors

mkdir -p opt notok gpt2
cp "$here/../golden/arch_opt/hf/config.json" "$here/../golden/arch_opt/hf/model.safetensors" "$here"/tiny_opt_tokenizer/* opt/
cp "$here/../golden/arch_opt/hf/config.json" "$here/../golden/arch_opt/hf/model.safetensors" notok/
printf '{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": 64}\n' > gpt2/config.json
cp hf/model.safetensors gpt2/

req=(--model tiny.gguf --calib-text text.txt --eval-text eval.txt)
S=(--seq-len 16 --eval-tokens 64)  # fits the tiny model and texts
fails=0 n=0
# check NAME EXPECTED_EXIT EXPECTED_TEXT ARGS...: the exit code, and the text in the output.
check() {
  local name=$1 want_rc=$2 want=$3
  shift 3
  local out rc
  out=$(timeout 120 "$tool" "$@" 2>&1)
  rc=$?
  n=$((n + 1))
  if [ "$mode" = --table ]; then
    local line
    line=$(printf '%s\n' "$out" | grep '^awq_llama: ' | tail -1)  # the error, else the first line
    [ -n "$line" ] || line=$(printf '%s\n' "$out" | grep -m1 -v '^$')
    [ "$rc" -gt 128 ] && line="(killed by signal $((rc - 128))) $line"
    line=$(cut -c1-150 <<< "$line")
    printf '| %s | %s | %s |\n' "$name" "$rc" "${line//|/\\|}"
    return
  fi
  if [ "$rc" != "$want_rc" ] || ! grep -qF -- "$want" <<< "$out"; then
    fails=$((fails + 1))
    printf 'FAIL %s: exit %s (want %s), output:\n%s\n(want it to contain: %s)\n' "$name" "$rc" "$want_rc" "$out" "$want"
  elif [ "$want_rc" = 2 ] && [ -z "${late:-}" ] && [ "$(printf '%s\n' "$out" | grep -c .)" != 1 ] ||
       { [ "$want_rc" = 2 ] && ! printf '%s\n' "$out" | tail -1 | grep -q '^awq_llama: '; }; then
    fails=$((fails + 1))
    printf 'FAIL %s: an error must be one line "awq_llama: ...", got:\n%s\n' "$name" "$out"
  elif grep -q -e 'awq::' -e '^awq_llama: awq: ' -e 'json\.exception' -e 'BpeTokenizer: ' <<< "$out"; then
    fails=$((fails + 1))
    printf 'FAIL %s: a message names the library'"'"'s internals:\n%s\n' "$name" "$out"
  fi
}
# check_late ...: as check, for an error found during the run (after its progress lines): the
# error is the last line.
check_late() { late=1 check "$@"; }
# check_output_lost NAME ARGS...: with stdout on /dev/full, the output cannot be written: exit 2 and
# the last line on stderr says so (not a silent exit 0).
check_output_lost() {
  local name=$1 out rc
  shift
  [ -c /dev/full ] || return 0  # no /dev/full here: nothing to test with
  out=$(timeout 120 "$tool" "$@" 2>&1 > /dev/full)
  rc=$?
  n=$((n + 1))
  if [ "$mode" = --table ]; then
    printf '| %s > /dev/full | %s | %s |\n' "$name" "$rc" "$(printf '%s\n' "$out" | tail -1 | cut -c1-150)"
  elif [ "$rc" != 2 ] || [ "$(printf '%s\n' "$out" | tail -1)" != "awq_llama: writing the output failed: No space left on device" ]; then
    fails=$((fails + 1))
    printf 'FAIL %s > /dev/full: exit %s (want 2), output:\n%s\n(want it to end with: awq_llama: writing the output failed: No space left on device)\n' \
      "$name" "$rc" "$out"
  fi
}

check "--help" 0 "--threads N" --help
check "-h" 0 "usage:" -h
check "help" 0 "example:" help
check "no arguments" 2 "--model is required" 
check "unknown option" 2 "unknown option --frobnicate (see awq_llama --help)" "${req[@]}" "${S[@]}" --frobnicate
check "unknown command" 2 "unknown command 'quantise'" quantise --model tiny.gguf
check "--eval-tokens abc" 2 "--eval-tokens: 'abc' is not a whole number" "${req[@]}" --eval-tokens abc
check "--eval-tokens -5" 2 "--eval-tokens: -5 is out of range" "${req[@]}" --eval-tokens -5
check "--eval-tokens 99999999999" 2 "--eval-tokens: 99999999999 is out of range" "${req[@]}" --eval-tokens 99999999999
check "--eval-tokens 12x" 2 "--eval-tokens: '12x' is not a whole number" "${req[@]}" --eval-tokens 12x
check "--eval-tokens 8 < --seq-len 16" 2 "--eval-tokens 8 is less than --seq-len 16" "${req[@]}" --seq-len 16 --eval-tokens 8
check "--seq-len 0" 2 "--seq-len: 0 is out of range" "${req[@]}" --seq-len 0
check "--seq-len 1" 2 "--seq-len: 1 is out of range" "${req[@]}" --seq-len 1
check "--seq-len 128 > context 64" 2 "--seq-len 128: the model's context length is 64" "${req[@]}" --seq-len 128 --eval-tokens 256
check "--calib-seqs 0" 2 "--calib-seqs: 0 is out of range (accepted: an integer >= 1)" "${req[@]}" "${S[@]}" --calib-seqs 0
check "--calib-seqs 1000 > text" 2 "--calib-seqs 1000: --calib-text text.txt has" "${req[@]}" "${S[@]}" --calib-seqs 1000
check "--calib-seqs 64 (default) > text" 2 "--calib-seqs 64: --calib-text text.txt has 2671 tokens, 41 sequences of --seq-len 64" "${req[@]}" --seq-len 64 --eval-tokens 64
check "--search-seqs -1" 2 "--search-seqs: -1 is out of range" "${req[@]}" "${S[@]}" --search-seqs -1
check "--search-seqs 5 > --calib-seqs 4" 2 "--search-seqs 5 is more than --calib-seqs 4" "${req[@]}" "${S[@]}" --calib-seqs 4 --search-seqs 5
check "--layers 0" 2 "--layers: 0 is out of range" "${req[@]}" "${S[@]}" --layers 0
check "--layers 3 > 2 blocks" 2 "--layers 3: the model has 2 blocks" "${req[@]}" "${S[@]}" --layers 3
check "--configs w9g64" 2 "--configs w9g64: 9 bits is out of range (accepted: 2 to 8)" "${req[@]}" "${S[@]}" --configs w9g64
check "--configs w4g100" 2 "group 100 is not supported (accepted: 32, 64, 128, 256)" "${req[@]}" "${S[@]}" --configs w4g100
check "--configs w4g64,w4g64" 2 "--configs: 'w4g64' repeats 'w4g64'" "${req[@]}" "${S[@]}" --configs w4g64,w4g64
check "--configs 4bit" 2 "--configs: cannot parse '4bit'" "${req[@]}" "${S[@]}" --configs 4bit
check "--backend tpu" 2 "--backend: 'tpu' is not a backend (accepted: cpu, cuda)" "${req[@]}" "${S[@]}" --backend tpu
check "--tf32 on the cpu backend" 2 "--tf32 applies to --backend cuda only (the backend is cpu)" "${req[@]}" "${S[@]}" --tf32
check "--eval-dequantized on the cpu backend" 2 "--eval-dequantized applies to --backend cuda only" "${req[@]}" "${S[@]}" --eval-dequantized
check "--tf32=1" 2 "--tf32 takes no value (got '1')" "${req[@]}" "${S[@]}" --tf32=1
check "--math fp8" 2 "--math: 'fp8' is not a math mode (accepted: fp32, tf32, fp16, bf16)" "${req[@]}" "${S[@]}" --math fp8
check "--math fp16 on the cpu backend" 2 "--math fp16 applies to --backend cuda only (the backend is cpu)" "${req[@]}" "${S[@]}" --math fp16
check "--eval-tokens 0 with --eval-text" 2 "--eval-text eval.txt is given with --eval-tokens 0 (no evaluation)" "${req[@]}" --seq-len 16 --eval-tokens 0
check "--mode fast" 2 "--mode: 'fast' is not a search mode (accepted: reference, improved (sequential+gptq-regroup-within+fp-target), sequential, refine, gptq, gptq-regroup, gptq-regroup-within, fp-target" "${req[@]}" "${S[@]}" --mode fast
check "--mode fp-target" 2 "--mode: 'fp-target' asks for fp-target without sequential calibration and a gptq rounding (e.g. sequential+gptq+fp-target)" "${req[@]}" "${S[@]}" --mode fp-target
check "--mode improved+gptq" 2 "--mode: 'improved+gptq' joins two roundings" "${req[@]}" "${S[@]}" --mode improved+gptq
check "--gptq-damp -1" 2 "--gptq-damp: -1 is out of range (accepted: a number with 0 < D <= 100)" "${req[@]}" "${S[@]}" --gptq-damp -1
check "--threads -1" 2 "--threads: -1 is out of range" "${req[@]}" "${S[@]}" --threads -1
check "--threads 100000" 2 "--threads: 100000 is out of range (accepted: 0 (all) or 1 to" "${req[@]}" "${S[@]}" --threads 100000
check "--threads abc" 2 "--threads: 'abc' is not a whole number" "${req[@]}" "${S[@]}" --threads abc
check "--seq-len given twice" 2 "--seq-len is given twice" "${req[@]}" "${S[@]}" --seq-len 8
check "--help=1" 2 "--help takes no value (got '1')" "${req[@]}" --help=1
check "--help=1 alone" 2 "--help takes no value (got '1')" --help=1
check "--prompt without generate" 2 "unknown option --prompt (an option of the generate command" --prompt Hi --model tiny.gguf
check "--gptq-damp with --mode reference" 2 "--gptq-damp 0.5 has no effect with --mode reference, which has no gptq rounding" \
  "${req[@]}" "${S[@]}" --mode reference --gptq-damp 0.5
check "--gptq-damp with --mode sequential" 2 "--gptq-damp 0.5 has no effect with --mode sequential" "${req[@]}" "${S[@]}" --gptq-damp 0.5 --mode sequential
check "--configs w4g64,w4g128 on hidden 64" 2 "--configs w4g128: group 128 does not divide the model's input width 64 (accepted here: 32, 64)" \
  "${req[@]}" "${S[@]}" --configs w4g64,w4g128
check "--shard-size with 20 digits" 2 "--shard-size: 99999999999999999999GB is out of range (accepted: a whole number of bytes with an optional unit B, KB, MB, GB, TB" \
  "${req[@]}" "${S[@]}" --export exp/x --shard-size 99999999999999999999GB
check "--model missing" 2 "--model absent.gguf: no such file" --model absent.gguf --calib-text text.txt --eval-text eval.txt
check "--model not GGUF" 2 "--model notes.txt: not a GGUF file or a Hugging Face model directory (not GGUF" --model notes.txt --calib-text text.txt --eval-text eval.txt
check "--calib-text missing" 2 "--calib-text absent.txt: no such file" --model tiny.gguf --calib-text absent.txt --eval-text eval.txt
check "--eval-text Latin-1" 2 "--eval-text latin1.txt: not valid UTF-8 at byte offset 2" --model tiny.gguf --calib-text text.txt --eval-text latin1.txt
check "--eval-text shorter than --seq-len" 2 "--eval-text short.txt: 11 tokens, fewer than one sequence of --seq-len 16" \
  --model tiny.gguf --calib-text text.txt --eval-text short.txt --seq-len 16 --eval-tokens 64
check "--report in a missing directory" 2 "--report nodir/r.json: directory 'nodir' does not exist" "${req[@]}" "${S[@]}" --report nodir/r.json
check "--report is a directory" 2 "--report outdir: is a directory" "${req[@]}" "${S[@]}" --report outdir
check "--export under a file" 2 "--export text.txt/x: '" "${req[@]}" "${S[@]}" --export text.txt/x
check "--checkpoint under a file" 2 "--checkpoint text.txt/x: '" "${req[@]}" "${S[@]}" --checkpoint text.txt/x
# An output over an input (the same file through a symbolic or hard link too) is refused before any work.
mkdir -p texts && cp text.txt texts/calib.txt && ln -sf eval.txt evallink.txt && ln -f text.txt hardlink.txt
sum_before=$(cat tiny.gguf text.txt eval.txt opt/config.json | cksum)
check "--report is the --model file" 2 "--report tiny.gguf is the same file as --model tiny.gguf" "${req[@]}" "${S[@]}" --report tiny.gguf
check "--report is --calib-text through a hard link" 2 "--report hardlink.txt is the same file as --calib-text text.txt" "${req[@]}" "${S[@]}" --report hardlink.txt
check "--report is --eval-text through a symbolic link" 2 "--report evallink.txt is the same file as --eval-text eval.txt" "${req[@]}" "${S[@]}" --report evallink.txt
check "--report is --eval-text spelled otherwise" 2 "--report ./outdir/../eval.txt is the same file as --eval-text eval.txt" "${req[@]}" "${S[@]}" --report ./outdir/../eval.txt
check "--report is a file of the --model directory" 2 "--report opt/config.json is the same file as opt/config.json of --model opt" \
  --model opt --calib-text text.txt --eval-text eval.txt "${S[@]}" --report opt/config.json
check "--export holds --model" 2 "--export . holds --model tiny.gguf" "${req[@]}" "${S[@]}" --export .
check "--export is the --model directory" 2 "--export opt/ holds --model opt" --model opt --calib-text text.txt --eval-text eval.txt "${S[@]}" --export opt/
check "--checkpoint holds --calib-text" 2 "--checkpoint texts holds --calib-text texts/calib.txt" \
  --model tiny.gguf --calib-text texts/calib.txt --eval-text eval.txt "${S[@]}" --checkpoint texts
check "--checkpoint above the inputs" 2 "--checkpoint $work holds --model tiny.gguf" "${req[@]}" "${S[@]}" --checkpoint "$work"
[ "$mode" != --table ] && [ "$(cat tiny.gguf text.txt eval.txt opt/config.json | cksum)" != "$sum_before" ] && { fails=$((fails + 1)); echo "FAIL: an input was changed"; }
check "--export and --checkpoint the same directory" 2 "--export outdir/same and --checkpoint outdir/same/ are the same directory" \
  "${req[@]}" "${S[@]}" --export outdir/same --checkpoint outdir/same/
check "--checkpoint inside --export" 2 "--checkpoint outdir/e/ck is inside --export outdir/e" "${req[@]}" "${S[@]}" --export outdir/e --checkpoint outdir/e/ck
check "--export inside --checkpoint" 2 "--export outdir/ck/e is inside --checkpoint outdir/ck" "${req[@]}" "${S[@]}" --export outdir/ck/e --checkpoint outdir/ck
check "inspect without a file" 2 "inspect: a file is required" inspect
check "inspect an empty path" 2 "inspect: an empty path (accepted: FILE.gguf|FILE.safetensors|HF_DIR)" inspect ''
check "inspect missing" 2 "inspect: absent.gguf: no such file or directory" inspect absent.gguf
check "inspect a text file" 2 "notes.txt is neither a GGUF nor a safetensors file: not GGUF (the first bytes are 'not '" inspect notes.txt
check "inspect an empty file" 2 "empty.bin is neither a GGUF nor a safetensors file: 0 bytes are too few" inspect empty.bin
check "inspect GGUF" 0 "blk.0.ffn_down.weight            F32      128x6" inspect tiny.gguf
check "inspect safetensors" 0 "safetensors, 1 tensors" inspect hf/model.safetensors
check "inspect HF directory" 0 '["LlamaForCausalLM"]' inspect hf
# Messages of the library's readers, without its C++ names or nlohmann's ids (check refuses those).
head -c 200 tiny.gguf > trunc.gguf
mkdir -p badjson && printf '{"model_type": "llama",\n' > badjson/config.json && cp hf/model.safetensors badjson/
check "inspect a truncated GGUF" 2 "awq_llama: trunc.gguf: " inspect trunc.gguf
check "a truncated GGUF as --model" 2 "awq_llama: trunc.gguf: " --model trunc.gguf --calib-text text.txt --eval-text eval.txt "${S[@]}"
check "inspect a directory with a broken config.json" 2 "inspect: badjson/config.json is not valid JSON (at line 2" inspect badjson
check "generate on a directory with a broken config.json" 2 "awq_llama: badjson/config.json is not valid JSON" generate --model badjson --prompt hi
check "a whole run on the tiny model" 0 "w4-g64" "${req[@]}" "${S[@]}" --configs w4g64 --calib-seqs 2 --threads 1 --report outdir/r.json
check "a run without evaluation" 0 "w4-g64-asym: quantized (no evaluation)" --model tiny.gguf --calib-text text.txt --seq-len 16 \
  --eval-tokens 0 --configs w4g64 --calib-seqs 2 --threads 1

# generate: on the GGUF (fp32), on an export (W4 through the CPU kernel; 3-bit is refused).
long=$(printf 'x%.0s' $(seq 70))
G=(generate --model tiny.gguf)
check "generate --help" 0 "options of generate" generate --help
check "generate without --prompt" 2 "generate: --prompt is required" "${G[@]}"
check "generate empty prompt" 2 "--prompt: the prompt is empty" "${G[@]}" --prompt ""
check "generate non-UTF-8 prompt" 2 "--prompt: not valid UTF-8 at byte offset 3" "${G[@]}" --prompt $'caf\xe9'
check "generate prompt longer than the context" 2 "--prompt: 70 tokens, longer than the model's context of 64 tokens" "${G[@]}" --prompt "$long"
check "generate prompt + new tokens > context" 2 "--max-new-tokens 60: with the prompt's 10 tokens it exceeds the model's context of 64" \
  "${G[@]}" --prompt "0123456789" --max-new-tokens 60
check "generate --max-new-tokens 0" 2 "--max-new-tokens: 0 is out of range" "${G[@]}" --prompt hi --max-new-tokens 0
check "generate --temperature -1" 2 "--temperature: -1 is out of range" "${G[@]}" --prompt hi --temperature -1
check "generate --top-p 0" 2 "--top-p: 0 is out of range (accepted: a number with 0 < P <= 1)" "${G[@]}" --prompt hi --top-p 0
check "generate --top-p abc" 2 "--top-p: 'abc' is not a number" "${G[@]}" --prompt hi --top-p abc
check "generate --seed -3" 2 "--seed: -3 is out of range" "${G[@]}" --prompt hi --seed -3
check "generate --seed 2^63" 2 "--seed: 9223372036854775808 is out of range (accepted: an integer from 0 to 9223372036854775807)" \
  "${G[@]}" --prompt hi --temperature 1 --seed 9223372036854775808
check "generate --temperature 1e-320" 2 "--temperature: 1e-320 is out of range (accepted: 0 = greedy, or a number up to 100; nonzero values from 1.17549e-38)" \
  "${G[@]}" --prompt hi --temperature 1e-320
check "generate --temperature 1e999" 2 "--temperature: 1e999 is out of range" "${G[@]}" --prompt hi --temperature 1e999
check "generate --temperature 0x1p3" 2 "--temperature: '0x1p3' is not a number" "${G[@]}" --prompt hi --temperature 0x1p3
check "generate --top-p 1e-50" 2 "--top-p: 1e-50 is out of range (accepted: a number with 0 < P <= 1; nonzero values from 1.17549e-38)" \
  "${G[@]}" --prompt hi --temperature 1 --top-p 1e-50
check "generate --seed at temperature 0" 2 "--seed 7 has no effect at --temperature 0 (greedy decoding" "${G[@]}" --prompt hi --seed 7
check "generate --top-p at --temperature 0" 2 "--top-p 0.1 has no effect at --temperature 0" "${G[@]}" --prompt hi --top-p 0.1 --temperature 0
check "generate a quantize option" 2 "unknown option --calib-text of generate (an option of the quantize command" "${G[@]}" --prompt hi --calib-text text.txt
check "generate --dequantize on a GGUF" 2 "--dequantize: tiny.gguf is not an AWQ checkpoint" "${G[@]}" --prompt hi --dequantize
check "generate missing model" 2 "--model absent.gguf: no such file" generate --model absent.gguf --prompt hi
check "generate --backend tpu" 2 "--backend: 'tpu' is not a backend (accepted: cpu, cuda)" "${G[@]}" --prompt hi --backend tpu
check "generate --backend cuda without CUDA" 2 "--backend cuda: this awq_llama was built without CUDA (use awq_llama_cuda)" \
  "${G[@]}" --prompt hi --backend cuda
check "generate greedy on the GGUF" 0 "decode 7 tokens" "${G[@]}" --prompt "The quick" --max-new-tokens 8 --threads 1
# Output that cannot be written is an error, not a silent success.
check_output_lost "generate" "${G[@]}" --prompt "The quick" --max-new-tokens 8 --threads 1
check_output_lost "inspect" inspect tiny.gguf
check_output_lost "--help" --help
check_output_lost "a whole run" "${req[@]}" "${S[@]}" --configs w4g64 --calib-seqs 2 --threads 1
if [ "$mode" != --table ]; then
  n=$((n + 1))
  out=$(timeout 120 "$tool" "${G[@]}" --prompt "The quick" --max-new-tokens 2 --threads 1 2>&1 >&-)
  rc=$?
  [ "$rc" = 2 ] && [ "$out" = "awq_llama: writing the output failed: stdout is closed" ] ||
    { fails=$((fails + 1)); printf 'FAIL generate with stdout closed: exit %s (want 2), output:\n%s\n' "$rc" "$out"; }
fi
check "export w4g64 and w3g64" 0 "exported exp/w3-g64-asym" "${req[@]}" "${S[@]}" --configs w4g64,w3g64 --calib-seqs 2 --threads 1 --export exp
check "generate W4 on the export" 0 "W4A16 (AWQ, CPU kernel)" generate --model exp/w4-g64-asym --prompt "The quick" --max-new-tokens 8
check "quantize an AWQ export" 2 "--model exp/w4-g64-asym is already AWQ-quantized (its config has a quantization_config); give the full-precision model" \
  --model exp/w4-g64-asym --calib-text text.txt --eval-text eval.txt "${S[@]}"
check "generate dequantized on the export" 0 "fp32 (AWQ dequantized)" generate --model exp/w4-g64-asym --prompt "The quick" --max-new-tokens 8 --dequantize
check "generate a 3-bit export" 2 'quantization_config has version "awq_cpp_plain"; this engine runs AutoAWQ GEMM checkpoints: quant_method "awq", version "gemm", bits 4' \
  generate --model exp/w3-g64-asym --prompt hi
check "--shard-size abc" 2 "--shard-size: 'abc' is not a size (accepted: a whole number of bytes" "${req[@]}" "${S[@]}" --export exp/x --shard-size abc
check "--shard-size 5GBs" 2 "--shard-size: '5GBs' is not a size" "${req[@]}" "${S[@]}" --export exp/x --shard-size 5GBs
check "--shard-size 500" 2 "--shard-size: 500 is out of range (accepted:" "${req[@]}" "${S[@]}" --export exp/x --shard-size 500
check "--shard-size 2TiB" 2 "--shard-size: 2TiB is out of range" "${req[@]}" "${S[@]}" --export exp/x --shard-size 2TiB
check "--shard-size without --export" 2 "--shard-size is given without --export" "${req[@]}" "${S[@]}" --shard-size 8KB
# Exports in 8 KB shards: one without a checkpoint, one with; then a run interrupted after block 0
# (block 1's checkpoint lost, the killed run's temporary directory left) resumed.
run=("${req[@]}" "${S[@]}" --configs w4g64 --calib-seqs 2 --threads 1 --shard-size 8KB)
check "a sharded export" 0 "exported exp/plain/w4-g64-asym: " "${run[@]}" --export exp/plain
check "a sharded export with --checkpoint" 0 "exported exp/ck/w4-g64-asym: " "${run[@]}" --export exp/ck --checkpoint ck
[ "$mode" != --table ] && { diff -r exp/plain exp/ck > /dev/null || { fails=$((fails + 1)); echo "FAIL: --checkpoint changed the export's bytes"; }; }
rm -f ck/w4-g64-asym/block_1.safetensors
mkdir -p exp/ck/.w4-g64-asym.awq-tmp && echo "left by a killed run" > exp/ck/.w4-g64-asym.awq-tmp/model-00001-of-00002.safetensors
check "an interrupted export resumed" 0 "w4-g64-asym: 1 of 2 blocks resumed from ck" "${run[@]}" --export exp/ck --checkpoint ck
# The calibration text rewritten in place: its blocks are not the checkpoint's (refused, never resumed).
cp text.txt calib2.txt
check "a checkpoint made on other calibration tokens" 0 "exported exp/ck2/w4-g64-asym" "${run[@]/text.txt/calib2.txt}" --export exp/ck2 --checkpoint ck2
sed -i 's/fox/cat/' calib2.txt
check_late "a checkpoint of a rewritten --calib-text" 2 "belongs to another run" "${run[@]/text.txt/calib2.txt}" --export exp/ck2 --checkpoint ck2
check "--layers with --export: a warning" 0 "warning: --layers 1: exp/one/w4-g64-asym gets a truncated model, 1 of 2 blocks" \
  "${run[@]}" --layers 1 --export exp/one
# Outputs that a rename must not replace, refused before any work.
mkfifo pipe.json 2>/dev/null && check "--report a pipe" 2 "--report pipe.json: pipe.json exists and is not a regular file" "${req[@]}" "${S[@]}" --report pipe.json
mkdir -p outdir/.r.json.awq-tmp
check "--report whose temporary name is a directory" 2 "--report outdir/r.json: the temporary name outdir/.r.json.awq-tmp is taken" \
  "${req[@]}" "${S[@]}" --report outdir/r.json
check_late "--gptq-damp too small for the Hessian" 2 "--gptq-damp 1e-300: the Hessian of the input of 'self_attn.q_proj'" \
  "${req[@]}" "${S[@]}" --configs w4g64 --calib-seqs 1 --threads 1 --gptq-damp 1e-300
# An OPT directory (model_type opt): quantized, evaluated and exported; what it cannot take refused.
O=(--model opt --calib-text text.txt --eval-text eval.txt --calib-seqs 2 --threads 1)
check "an OPT directory: quantize, evaluate, export" 0 "exported exp/opt/w4-g32-asym" "${O[@]}" "${S[@]}" --configs w4g32 --export exp/opt
check "an OPT directory: --seq-len beyond its 128 positions" 2 "--seq-len 200: the model's context length is 128" "${O[@]}" --configs w4g32 \
  --seq-len 200 --eval-tokens 400
check "an OPT directory: group 64 does not divide ffn_dim 96" 2 \
  "--configs w4g64: group 64 does not divide the model's input width 96 (accepted here: 32)" "${O[@]}" "${S[@]}" --configs w4g32,w4g64
check "an OPT directory without a tokenizer" 2 "notok has no tokenizer (accepted: tokenizer.json, or vocab.json with merges.txt)" \
  --model notok --calib-text text.txt --eval-text eval.txt "${S[@]}" --configs w4g32
check "generate on an OPT directory" 2 "architecture 'opt' is not supported (supported: llama, mistral, qwen2" generate --model opt --prompt hi
check "an unsupported model_type" 2 "--model gpt2: model_type 'gpt2' is not supported (supported: llama, mistral, qwen2, opt)" \
  --model gpt2 --calib-text text.txt --eval-text eval.txt "${S[@]}"
check "a whole run in the improved mode" 0 "improved search" "${req[@]}" "${S[@]}" --configs w4g64 --calib-seqs 2 --threads 1 --mode improved
check "--eval-text the same file as --calib-text: a warning" 0 \
  "awq_llama: warning: --eval-text ./text.txt is the same file as --calib-text text.txt: the perplexity is measured on the calibration text" \
  --model tiny.gguf --calib-text text.txt --eval-text ./text.txt "${S[@]}" --configs w4g64 --calib-seqs 2 --threads 1

if [ "$mode" != --table ]; then
  [ -s outdir/r.json ] || { fails=$((fails + 1)); echo "FAIL: the whole run wrote no report"; }
  # Sampling is deterministic for a seed; W4 and its dequantized weights agree greedily on the tiny export.
  sample() { "$tool" generate --model exp/w4-g64-asym --prompt "The quick" --max-new-tokens 16 --temperature 0.8 --top-p 0.9 --seed "$1" 2>/dev/null; }
  n=$((n + 1)); [ "$(sample 5)" = "$(sample 5)" ] || { fails=$((fails + 1)); echo "FAIL: two runs with --seed 5 differ"; }
  greedy() { "$tool" generate --model exp/w4-g64-asym --prompt "The quick" --max-new-tokens 16 "$@" 2>/dev/null; }
  n=$((n + 1)); [ "$(greedy)" = "$(greedy --dequantize)" ] || { fails=$((fails + 1)); echo "FAIL: W4 and dequantized greedy text differ"; }
  if ls -A . outdir | grep -q awq_llama_probe; then fails=$((fails + 1)); echo "FAIL: a probe file was left behind"; fi
  x=exp/plain/w4-g64-asym
  shards=$(ls "$x" | grep -c '^model-[0-9]\{5\}-of-[0-9]\{5\}\.safetensors$')
  for f in config.json model.safetensors.index.json tokenizer.json tokenizer_config.json; do
    [ -s "$x/$f" ] || { fails=$((fails + 1)); echo "FAIL: the sharded export has no $f"; }
  done
  [ "$shards" -ge 3 ] || { fails=$((fails + 1)); echo "FAIL: an 8 KB --shard-size gave $shards shards"; }
  if [ "$(ls -A exp/plain exp/ck | grep -c -e tmp -e '^\.')" != 0 ]; then fails=$((fails + 1)); echo "FAIL: a temporary was left behind"; fi
  diff -r exp/plain exp/ck > /dev/null || { fails=$((fails + 1)); echo "FAIL: the resumed export differs from the uninterrupted one"; }
  o=exp/opt/w4-g32-asym
  for f in config.json model.safetensors vocab.json merges.txt tokenizer_config.json; do
    [ -s "$o/$f" ] || { fails=$((fails + 1)); echo "FAIL: the OPT export has no $f"; }
  done
  n=$((n + 1)); "$tool" inspect "$o/model.safetensors" 2>&1 | grep -q 'model.decoder.layers.1.fc2.qweight' || { fails=$((fails + 1)); echo "FAIL: the OPT export has no fc2.qweight"; }
  echo "$((n - fails)) of $n CLI cases pass"
fi
[ "$fails" = 0 ]
