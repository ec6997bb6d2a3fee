#!/usr/bin/env bash
# Issue 24's variant table on the lent GPU machine: every search mode (awq_llama --mode) at full
# settings (64 x 512 calibration, --search-seqs 64, 32768 evaluation tokens, W4 and W3 g64) on the
# handbook eval split and on held-out texts (the Vim user manual; Debian's license texts), in two
# back-to-back device calls (the model is larger than one call's carry; the machine keeps build-gpu/
# while warm):
#   stage a: carry ["build-carry/a"] — as bench/gpu_main.sh's stage a with TESTS=0 (unpack the
#            header dependencies, stash the first half of the GGUF, build awq_llama_cuda);
#   stage b: carry ["build-carry/b"] — the second half and the texts; check the model's md5, then
#            run the modes side by side on the GPU (one process each; the 135M model leaves the card
#            mostly idle), each first on the eval split saving per-block checkpoints, then on the
#            held-out text resuming from them (no second search), and print the table.
# Prepare the carry folders here with: bash bench/gpu_accuracy.sh prepare
# Environment: MODES (default "reference sequential refine improved"; MODE@D runs MODE with
# --gptq-damp D, e.g. "improved@0.01 improved@0.03 improved@0.1"), EVAL_LIMIT and VIM_LIMIT
# (seconds per run on the eval split and on each held-out text, 420 and 150). A run cut by its
# limit leaves its finished blocks in build-gpu/ck_<mode>: calling stage b again (e.g.
# MODES="refine improved") resumes from them while the machine is warm. Reports and logs are named
# with '@' and '+' as '_' (the device tool does not bring back names with those characters).
set -euo pipefail
stage=${1:?stage: prepare, a or b}
source bench/gpu_env.sh
model_md5=a1231443440b107ff29f02bdb38c9d0a
case "$stage" in
prepare)  # gpu_main.sh's carry, and the held-out text
  bash bench/gpu_main.sh prepare
  cat /usr/share/vim/vim90/doc/usr_0[1-9].txt /usr/share/vim/vim90/doc/usr_1*.txt > build-carry/b/heldout-vim.txt
  (cd /usr/share/common-licenses && cat GPL-3 GPL-2 LGPL-2.1 LGPL-3 Apache-2.0 MPL-2.0 MPL-1.1 GFDL-1.3 Artistic CC0-1.0) \
    > build-carry/b/heldout-licenses.txt
  ;;
a)  # gpu_main.sh's build (awq_llama_cuda, and awq_llama beside it), without its tests, or the
    # binary built here with the same flags and carried compressed (build-carry/a/awq_llama_cuda.xz)
  if [ -f build-carry/a/awq_llama_cuda.xz ]; then
    mkdir -p build-gpu/data && cp build-carry/a/gguf.part00 build-gpu/data/
    xz -dc build-carry/a/awq_llama_cuda.xz > build-gpu/awq_llama_cuda && chmod +x build-gpu/awq_llama_cuda
  else
    TESTS=0 bash bench/gpu_main.sh a
  fi
  ;;
b)
  cat build-gpu/data/gguf.part00 build-carry/b/gguf.part01 > build-gpu/data/model.gguf
  echo "$model_md5  build-gpu/data/model.gguf" | md5sum -c
  gpu_info
  modes=(${MODES:-reference sequential refine improved})
  common=(--model build-gpu/data/model.gguf --calib-text build-carry/b/handbook-calib.txt --configs w4g64,w3g64
          --calib-seqs 64 --search-seqs 64 --eval-tokens 32768 --backend cuda --threads 4)
  one() {  # mode: the eval split (searching), then the held-out text (resumed)
    local m=$1 ck=build-gpu/ck_$1 damp=()
    [[ "$m" == *@* ]] && damp=(--gptq-damp "${m#*@}")
    for text in eval vim licenses; do
      local f=build-carry/b/handbook-eval.txt limit=${EVAL_LIMIT:-420}
      [ "$text" = eval ] || f=build-carry/b/heldout-$text.txt limit=${VIM_LIMIT:-150}
      [ -f "$f" ] || continue
      timeout "$limit" build-gpu/awq_llama_cuda "${common[@]}" --eval-text "$f" --mode "${m%@*}" "${damp[@]}" --checkpoint "$ck" \
        --report "$out/${m//[@+]/_}_$text.json" > "$out/${m//[@+]/_}_$text.log" 2>&1 || echo "$m $text: exit $?"
    done
  }
  t0=$(date +%s)
  for m in "${modes[@]}"; do one "$m" & done
  wait
  echo "all modes: $(( $(date +%s) - t0 )) s (run side by side: times are under contention)"
  # search_s: the eval run's pass less the resumed held-out run's (same streams, no search).
  python3 - "$out" "${modes[@]}" <<'PY'
import json, sys, os
out, modes = sys.argv[1], sys.argv[2:]
def load(m, t):
    p = os.path.join(out, f"{m.replace('@', '_').replace('+', '_')}_{t}.json")
    return json.load(open(p)) if os.path.exists(p) else None
print(f"{'mode':<11} {'config':<14} {'text':<8} {'ppl_fp':>8} {'ppl_rtn':>8} {'ppl_awq':>8} {'recovered':>9} {'pass_s':>7} {'search_s':>8}")
for m in modes:
    e, v, l = load(m, "eval"), load(m, "vim"), load(m, "licenses")
    for t, r in (("eval", e), ("vim", v), ("licenses", l)):
        if r is None:
            if t != "licenses": print(f"{m:<11} (no {t} report)")
            continue
        for i, c in enumerate(r["configs"]):
            rec = c["gap_recovered"]
            srch = e["configs"][i]["pass_s"] - v["configs"][i]["pass_s"] if e and v else float("nan")
            print(f"{m:<11} {c['config']:<14} {t:<8} {c['ppl_fp']:8.4f} {c['ppl_rtn']:8.4f} {c['ppl_awq']:8.4f} "
                  f"{100 * rec if rec is not None else float('nan'):8.1f}% {c['pass_s']:7.1f} {srch if t == 'eval' else float('nan'):8.1f}")
PY
  ;;
esac
