# Call B: join the GGUF, dump weights/tokens, run our tool (W3 then W4, cuda search, per-block
# checkpoint) beside llm-awq's run_awq harness on the GPU.
# (bench/llmawq/gpu_b.sh, copied to .acc/b/run_b.sh by bench/llmawq/prepare.sh)
set -u
cat build-acc/gguf.part00 .acc/b/gguf.part01 > build-acc/model.gguf
echo "a1231443440b107ff29f02bdb38c9d0a  build-acc/model.gguf" | md5sum -c || exit 1
mkdir -p build-acc/dump && build-acc/acc_dump build-acc/model.gguf build-acc/dump calib=.acc/b/handbook-calib.txt \
  eval=.acc/b/handbook-eval.txt vim=.acc/b/heldout-vim.txt lic=.acc/b/heldout-licenses.txt
rm -rf build-acc/ck
t0=$(date +%s)
( timeout ${OURS_LIMIT:-280} build-acc/awq_llama_cuda --model build-acc/model.gguf --calib-text .acc/b/handbook-calib.txt \
  --eval-text .acc/b/handbook-eval.txt --configs w3g64,w4g64 --calib-seqs 64 --search-seqs 64 --eval-tokens 512 \
  --backend cuda --checkpoint build-acc/ck --report $OUT/ours_report.json 2>&1 | tr '\r' '\n' | grep -v eta > $OUT/ours.log;
  echo "ours done $(( $(date +%s) - t0 )) s" >> $OUT/ours.log ) &
PYTHONUNBUFFERED=1 python3 .acc/b/acc.py build-acc/dump build-acc/ck $OUT bits=3,4 budget=${BUDGET:-230} 2>&1 | grep -v -i warn | tail -40
wait
cat $OUT/ours.log | tail -12
cd build-acc && tar czf $OUT/ck.tgz ck
