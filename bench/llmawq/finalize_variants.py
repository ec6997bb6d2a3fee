# Our tool's per-block checkpoint finalized with different quantizer numerics, perplexity on the CPU
# (first NS sequences of each text). From the repository root, after prepare.sh and an acc_dump run:
#   DUMP=dir-of-acc_dump CKPT=dir-given-to---checkpoint NS=8 QB=3 [FP=1] [VARS=exact,final_now,...] \
#     python3 bench/llmawq/finalize_variants.py
import sys, os, copy
sys.path.insert(0, ".acc/b")
import torch, time
NS = int(os.environ.get("NS", "8")); QB = int(os.environ.get("QB", "3"))
sys.argv = ["acc.py", os.environ["DUMP"], os.environ["CKPT"], os.environ.get("OUTDIR", "/tmp/acc_out"), f"bits={QB}", "calib_seqs=1", f"eval_seqs={NS}"]
src = open(".acc/b/acc.py").read().replace("\nmain()\n", "\n")
exec(compile(src, "acc.py", "exec"))
torch.set_num_threads(2)
from awq.quantize.auto_clip import apply_clip
mx = 2 ** QB - 1

def q_exact(w):  # our library / CPU torch: scale = range / max_int
    return pseudo_quantize_tensor(w, n_bit=QB, **qcfg())

def parts(w, recip=False):
    g = w.reshape(-1, 64)
    hi, lo = g.amax(1, keepdim=True), g.amin(1, keepdim=True)
    rng = (hi - lo).clamp(min=1e-5)
    s = rng * torch.tensor(1.0 / mx, dtype=torch.float32) if recip else rng / mx
    z = (-torch.round(lo / s)).clamp(0, mx)
    return g, s, z

def q_recip(w):  # llm-awq on CUDA: tensor / python scalar is a * fl32(1/b)
    g, s, z = parts(w, True)
    return ((torch.clamp(torch.round(g / s) + z, 0, mx) - z) * s).reshape(w.shape)

def q_final_now(w):  # examples/llama/export.hpp finalize_linear: codes re-derived with the fp16 scale
    g, s, z = parts(w)
    s16 = s.half().float()
    return ((torch.clamp(torch.round(g / s16) + z, 0, mx) - z) * s16).reshape(w.shape)

def q_final_fix(w):  # codes of the search's quantizer, fp16 scale stored
    g, s, z = parts(w)
    s16 = s.half().float()
    return ((torch.clamp(torch.round(g / s) + z, 0, mx) - z) * s16).reshape(w.shape)

ours = ours_results(QB)
if os.environ.get("FP"):
    print("fp", {k: round(ppl(fresh(torch.float32), v), 4) for k, v in EVALS.items() if k != "lic"}, flush=True)
VARS = os.environ.get("VARS", "exact,final_now,final_fix,recip").split(",")
for name, qf in [("exact", q_exact), ("final_now", q_final_now), ("final_fix", q_final_fix), ("recip", q_recip)]:
    if name not in VARS:
        continue
    for tag, res in [("ours", ours), ("rtn", None)]:
        if (tag == "rtn" and name == "recip") or tag not in os.environ.get("WHICH", "ours,rtn").split(","):
            continue
        m = fresh(torch.float32)
        if res is not None:
            apply_awq(m, res)
        with torch.no_grad():
            for layer in m.model.layers:
                for n, mod in layer.named_modules():
                    if isinstance(mod, nn.Linear):
                        mod.weight.data = qf(mod.weight.data)
        t = time.time()
        print(tag, name, {k: round(ppl(m, v), 4) for k, v in EVALS.items() if k != "lic"}, "%.0fs" % (time.time() - t), flush=True)
