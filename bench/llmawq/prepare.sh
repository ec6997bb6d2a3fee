#!/usr/bin/env bash
# Prepares .acc/ (ignored; add /.acc/ to .git/info/exclude) for the llm-awq comparison on the GPU
# machine, in two back-to-back device calls (the GGUF is larger than one call's carry):
#   carry [".acc/a"]: bash .acc/a/run_a.sh   (stash the first GGUF half, build awq_llama_cuda, acc_dump)
#   carry [".acc/b"]: bash .acc/b/run_b.sh   (our tool with --checkpoint beside llm-awq's run_awq; $OUT)
# LLM_AWQ: a checkout of github.com/mit-han-lab/llm-awq (d6e797a was used). Its awq/quantize and
# awq/utils/module.py are copied as they are, except one line that records each group's loss curve;
# qmodule.py is stubbed (it imports the CUDA extension) and the pile loader is replaced by our tokens.
set -euo pipefail
: "${LLM_AWQ:?set LLM_AWQ to an llm-awq checkout}"
here=$(dirname "$0")
rm -rf .acc && mkdir -p .acc/a .acc/b/awq/quantize .acc/b/awq/utils
split -n 2 -d data/SmolLM2-135M-Instruct.Q4_1.gguf .acc/gguf.part
mv .acc/gguf.part00 .acc/a/ && mv .acc/gguf.part01 .acc/b/
tar -C /usr/include -cJf .acc/a/deps.tar.xz eigen3 nlohmann
cp "$here/acc_dump.cpp" .acc/a/ && cp "$here/gpu_a.sh" .acc/a/run_a.sh
cp "$here/acc.py" .acc/b/ && cp "$here/gpu_b.sh" .acc/b/run_b.sh
cp data/handbook-calib.txt data/handbook-eval.txt .acc/b/
cat /usr/share/vim/vim90/doc/usr_0[1-9].txt /usr/share/vim/vim90/doc/usr_1*.txt > .acc/b/heldout-vim.txt
cat /usr/share/common-licenses/{GPL-3,GFDL-1.3,Apache-2.0,MPL-2.0,LGPL-2.1,Artistic,CC0-1.0} > .acc/b/heldout-licenses.txt
touch .acc/b/awq/__init__.py .acc/b/awq/quantize/__init__.py .acc/b/awq/utils/__init__.py
for f in auto_scale auto_clip pre_quant quantizer; do cp "$LLM_AWQ/awq/quantize/$f.py" .acc/b/awq/quantize/; done
cp "$LLM_AWQ/awq/utils/module.py" .acc/b/awq/utils/
sed -i 's/^        # print(best_ratio)$/        REC.append((best_ratio, list(history)))/' .acc/b/awq/quantize/auto_scale.py
sed -i 's/^__all__ = \["auto_scale_block", "apply_scale"\]$/&\nREC = []/' .acc/b/awq/quantize/auto_scale.py
grep -q "REC.append" .acc/b/awq/quantize/auto_scale.py
cat > .acc/b/awq/quantize/qmodule.py <<'PY'
import torch.nn as nn


class ScaledActivation(nn.Module):
    def __init__(self, module, scales):
        super().__init__()
        self.act = module
        self.scales = nn.Parameter(scales.data)

    def forward(self, x):
        return self.act(x) / self.scales.view(1, 1, -1).to(x.device)
PY
cat > .acc/b/awq/utils/calib_data.py <<'PY'
SAMPLES = None  # set by acc.py: our tokenizer's calibration blocks [n, 512]


def get_calib_dataset(data=None, tokenizer=None, n_samples=512, block_size=512):
    return [SAMPLES[i : i + 1] for i in range(SAMPLES.shape[0])]
PY
du -sh .acc/a .acc/b
