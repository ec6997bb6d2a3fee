# Harness: llm-awq's own run_awq / auto_scale / auto_clip (copied verbatim into ./awq, only a
# loss-history record added) against our tool's per-block checkpoint, on identical weights (our
# GGUF loader's fp32 dump) and identical token ids (our tokenizer's).
#   python3 acc.py DUMP_DIR CKPT_DIR OUT_DIR [bits=3,4] [layers=N] [calib_seqs=64] [budget=S]
import copy
import functools
import json
import math
import os
import sys
import time

T0 = time.time()
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

import awq.quantize.auto_scale as auto_scale
import awq.quantize.pre_quant as pre_quant
import awq.utils.calib_data as calib_data
from awq.quantize.auto_clip import auto_clip_block
from awq.quantize.auto_scale import apply_scale
from awq.quantize.pre_quant import apply_awq, run_awq
from awq.quantize.quantizer import pseudo_quantize_tensor

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if DEV == "cpu":  # local dry run: llm-awq calls .cuda() everywhere
    nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    pre_quant.move_embed = lambda model, device: None

DUMP, CKPT, OUT = sys.argv[1:4]
OPT = dict(a.split("=") for a in sys.argv[4:])
BITS = [int(b) for b in OPT.get("bits", "3").split(",")]
NL = int(OPT.get("layers", "-1"))
NCAL = int(OPT.get("calib_seqs", "64"))
BUDGET = float(OPT.get("budget", "1e9"))
NEVAL = int(OPT.get("eval_seqs", "64"))
os.makedirs(OUT, exist_ok=True)
LOGF = open(os.path.join(OUT, "acc_log.txt"), "a")
RES = {}


def log(*a):
    s = f"[{time.time() - T0:7.1f}s] " + " ".join(str(x) for x in a)
    print(s, flush=True)
    LOGF.write(s + "\n")
    LOGF.flush()


def save():
    with open(os.path.join(OUT, "acc_results.json"), "w") as f:
        json.dump(RES, f, indent=1)


def left():
    return BUDGET - (time.time() - T0)


# ---- model and tokens ------------------------------------------------------------------------
C = {}
for line in open(os.path.join(DUMP, "config.txt")):
    k, v = line.split()
    C[k] = float(v)
L = int(C["layers"]) if NL < 0 else NL
raw = np.fromfile(os.path.join(DUMP, "weights.bin"), dtype=np.float32)
SD = {}
for line in open(os.path.join(DUMP, "index.txt")):
    name, r, c, off = line.split()
    r, c, off = int(r), int(c), int(off) // 4
    if name.startswith("model.layers.") and int(name.split(".")[2]) >= L:
        continue
    t = torch.from_numpy(raw[off : off + r * c].copy())
    SD[name] = t.view(r, c) if r > 1 else t
del raw
cfg = LlamaConfig(
    vocab_size=int(C["vocab"]), hidden_size=int(C["hidden"]), intermediate_size=int(C["intermediate"]),
    num_hidden_layers=L, num_attention_heads=int(C["heads"]), num_key_value_heads=int(C["kv_heads"]),
    head_dim=int(C["head_dim"]), rms_norm_eps=C["rms_eps"], rope_theta=C["rope_theta"],
    max_position_embeddings=8192, tie_word_embeddings=True, use_cache=False, hidden_act="silu",
)
cfg.rope_parameters = {"rope_type": "default", "rope_theta": C["rope_theta"]}
BASE = LlamaForCausalLM(cfg)
missing, unexpected = BASE.load_state_dict(SD, strict=False)
assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
BASE.lm_head.weight = BASE.model.embed_tokens.weight
BASE.eval()
inv = BASE.model.rotary_emb.inv_freq.float()
ref = 1.0 / (C["rope_theta"] ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
assert torch.allclose(inv, ref, rtol=1e-6), "rope"
log(f"model: {L} layers, attn {BASE.config._attn_implementation}, device {DEV}")


def toks(name, n=None):
    t = torch.from_numpy(np.fromfile(os.path.join(DUMP, f"tokens_{name}.bin"), dtype=np.int32).astype(np.int64))
    ns = t.numel() // 512 if n is None else min(n, t.numel() // 512)
    return t[: ns * 512].view(ns, 512)


CAL = toks("calib", NCAL)
EVALS = {"eval": toks("eval", NEVAL), "vim": toks("vim", NEVAL), "lic": toks("lic", NEVAL)}
log("tokens:", {k: tuple(v.shape) for k, v in [("calib", CAL)] + list(EVALS.items())})


def fresh(dtype):
    m = copy.deepcopy(BASE).to(dtype)
    m.lm_head.weight = m.model.embed_tokens.weight
    return m


@torch.no_grad()
def ppl(model, t, bs=16):
    model.to(DEV)
    nll, cnt = 0.0, 0
    for b in range(0, t.shape[0], bs):
        x = t[b : b + bs].to(DEV)
        lg = model(x).logits.float()
        lp = torch.log_softmax(lg[:, :-1], dim=-1)
        nll += -lp.gather(-1, x[:, 1:, None]).sum().item()
        cnt += x.shape[0] * (x.shape[1] - 1)
    model.cpu()
    return math.exp(nll / cnt)


def qcfg():
    return {"zero_point": True, "q_group_size": 64}


@torch.no_grad()
def quantize_all(model, bits):
    for layer in model.model.layers:
        for n, m in layer.named_modules():
            if isinstance(m, nn.Linear):
                m.weight.data = pseudo_quantize_tensor(m.weight.data.to(DEV), n_bit=bits, **qcfg()).cpu()


def evaluate(tag, results, bits, dtypes=(torch.float16, torch.float32)):
    out = {}
    for dt in dtypes:
        m = fresh(dt)
        if results is not None:
            apply_awq(m, results)
            m.cpu()
        quantize_all(m, bits)
        for k, t in EVALS.items():
            out[f"{k}_{str(dt)[6:]}"] = ppl(m, t)
        del m
    RES.setdefault("ppl", {})[tag] = out
    log("ppl", tag, {k: round(v, 4) for k, v in out.items()})
    save()
    return out


# ---- run llm-awq's run_awq (layer forward wrapped to return a tuple, as transformers 4 did) --
_orig_fwd = LlamaDecoderLayer.forward


def _tuple_fwd(self, *a, **k):
    o = _orig_fwd(self, *a, **k)
    return o if isinstance(o, tuple) else (o,)


GIVEN = {}  # layer index -> relative scales_list to use instead of auto_scale_block


def run_theirs(dtype, bits, given_scales=None):
    model = fresh(dtype)
    calib_data.SAMPLES = CAL
    auto_scale.REC.clear()
    counter = {"i": 0}
    orig_asb = pre_quant.auto_scale_block
    if given_scales is not None:
        def asb(module, module_kwargs, w_bit, q_config, input_feat):
            i = counter["i"]
            counter["i"] += 1
            return [(p, ls, s.clone()) for p, ls, s in given_scales[i]]
        pre_quant.auto_scale_block = asb
    LlamaDecoderLayer.forward = _tuple_fwd
    try:
        t = time.time()
        res = run_awq(model, None, w_bit=bits, q_config=qcfg(), n_samples=CAL.shape[0], seqlen=512)
        dt = time.time() - t
    finally:
        LlamaDecoderLayer.forward = _orig_fwd
        pre_quant.auto_scale_block = orig_asb
    rec = list(auto_scale.REC)
    del model
    return res, rec, dt


def rel(results, i):
    """Layer i's entries of an awq_results dict, names relative to the layer."""
    p = f"model.layers.{i}."
    sc = [(a[len(p):], tuple(n[len(p):] for n in b), s) for a, b, s in results["scale"] if a.startswith(p)]
    cl = [(n[len(p):], v) for n, v in results["clip"] if n.startswith(p)]
    return sc, cl


def ours_results(bits):
    from safetensors.numpy import load_file
    d = os.path.join(CKPT, f"w{bits}-g64-asym")
    res = {"scale": [], "clip": []}
    for i in range(L):
        f = load_file(os.path.join(d, f"block_{i}.safetensors"))
        p = f"model.layers.{i}."
        res["scale"].append((p + "input_layernorm", tuple(p + "self_attn." + n for n in ("q_proj", "k_proj", "v_proj")),
                             torch.from_numpy(f["scales.qkv"])))
        assert "scales.o" not in f
        res["scale"].append((p + "post_attention_layernorm", (p + "mlp.gate_proj", p + "mlp.up_proj"),
                             torch.from_numpy(f["scales.gate_up"])))
        res["scale"].append((p + "mlp.up_proj", (p + "mlp.down_proj",), torch.from_numpy(f["scales.down"])))
        for k, n in [("v", "self_attn.v_proj"), ("o", "self_attn.o_proj"), ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                     ("down", "mlp.down_proj")]:
            res["clip"].append((p + n, torch.from_numpy(f["clip." + k]).unsqueeze(-1)))
    return res


# ---- FP block inputs/outputs and group inputs (fp32) ------------------------------------------
@torch.no_grad()
def fp_trace(t):
    """Per layer: (input hidden, output hidden, kwargs) on token blocks t, fp32 on DEV."""
    m = BASE.to(DEV)
    cap = {}

    class Catch(nn.Module):
        def __init__(self, mod):
            super().__init__()
            self.mod = mod

        def forward(self, x, **kw):
            cap["x"], cap["kw"] = x, kw
            raise ValueError

    m.model.layers[0] = Catch(m.model.layers[0])
    try:
        m(t.to(DEV))
    except ValueError:
        pass
    m.model.layers[0] = m.model.layers[0].mod
    kw = {k: v for k, v in cap["kw"].items() if k != "use_cache"}
    h, trace = cap["x"], []
    for layer in m.model.layers:
        o = layer(h, **kw)
        o = o[0] if isinstance(o, tuple) else o
        trace.append((h, o))
        h = o
    BASE.cpu()
    return trace, kw


@torch.no_grad()
def group_means(trace, kw):
    """mean |x| of the qkv, gate_up and down inputs per layer (fp32, all tokens)."""
    out = []
    m = BASE.to(DEV)
    for i, layer in enumerate(m.model.layers):
        feats = {}
        hs = [layer.self_attn.q_proj.register_forward_hook(lambda mod, x, y: feats.__setitem__("qkv", x[0])),
              layer.mlp.gate_proj.register_forward_hook(lambda mod, x, y: feats.__setitem__("gate_up", x[0])),
              layer.mlp.down_proj.register_forward_hook(lambda mod, x, y: feats.__setitem__("down", x[0]))]
        layer(trace[i][0], **kw)
        for hd in hs:
            hd.remove()
        out.append({k: v.abs().reshape(-1, v.shape[-1]).mean(0) for k, v in feats.items()})
    BASE.cpu()
    return out


def infer_alpha(x_mean, s):
    best = (1e9, -1)
    s = s.float().to(x_mean.device)
    for r in range(20):
        c = x_mean.pow(r / 20).clamp(min=1e-4)
        c = c / (c.max() * c.min()).sqrt()
        d = (c.log() - s.log()).abs().max().item()
        best = min(best, (d, r / 20))
    return best[1], best[0]


@torch.no_grad()
def block_errors(results, bits, trace, kw):
    """Per layer: MSE of the block output with the scaled, clipped, quantized layer vs FP (fp32)."""
    errs = []
    for i in range(L):
        layer = copy.deepcopy(BASE.model.layers[i]).to(DEV)
        if results is not None:
            sc, cl = rel(results, i)
            apply_scale(layer, sc)
            from awq.quantize.auto_clip import apply_clip
            apply_clip(layer, cl)
            layer.to(DEV)
        for n, mod in layer.named_modules():
            if isinstance(mod, nn.Linear):
                mod.weight.data = pseudo_quantize_tensor(mod.weight.data, n_bit=bits, **qcfg())
        x, ref_out = trace[i]
        o = layer(x, **kw)
        o = o[0] if isinstance(o, tuple) else o
        errs.append((o - ref_out).float().pow(2).mean().item())
        del layer
    return errs


def clip_shrinks(results, scales_res, i):
    """Shrink index per (row, group) of each clipped linear of layer i, on its scaled weights."""
    sc, cl = rel(scales_res, i)
    layer = copy.deepcopy(BASE.model.layers[i])
    apply_scale(layer, sc)
    out = {}
    for n, v in rel(results, i)[1]:
        w = dict(layer.named_modules())[n].weight.data.float().cpu()
        amax = w.reshape(w.shape[0], v.shape[1], -1).abs().amax(-1)
        out[n] = torch.round(20 * (1 - v.float().squeeze(-1).cpu() / amax)).int()
    return out


# ---- the comparison ---------------------------------------------------------------------------
def main():
    RES["meta"] = {"layers": L, "calib": list(CAL.shape), "evals": {k: list(v.shape) for k, v in EVALS.items()},
                   "torch": torch.__version__, "dev": torch.cuda.get_device_name() if DEV == "cuda" else "cpu"}
    # Same model as our tool: FP perplexity of the first eval sequence (the tool evaluates 512 tokens).
    m = fresh(torch.float32)
    RES["fp_first_seq_ppl"] = ppl(m, EVALS["eval"][:1])
    log("FP ppl, first eval sequence (fp32):", RES["fp_first_seq_ppl"])
    fp = {f"{k}_{str(dt)[6:]}": ppl(fresh(dt), t) for dt in (torch.float16, torch.float32) for k, t in EVALS.items()}
    RES.setdefault("ppl", {})["fp"] = fp
    log("ppl fp", fp)
    trace, kw = fp_trace(CAL)
    etrace, ekw = fp_trace(EVALS["eval"][: min(16, EVALS["eval"].shape[0])])
    means = group_means(trace, kw)
    log("FP traces done")
    for bits in BITS:
        if bits != BITS[0] and left() < 150:
            log(f"skip w{bits}: {left():.0f}s left")
            break
        evaluate(f"rtn_w{bits}", None, bits)
        variants = {}
        res16, rec16, dt16 = run_theirs(torch.float16, bits)
        log(f"run_awq fp16 w{bits}: {dt16:.1f}s")
        variants["theirs16"] = res16
        RES[f"theirs16_w{bits}_alpha"] = [[r for r, _ in rec16[3 * i: 3 * i + 3]] for i in range(L)]
        RES[f"theirs16_w{bits}_hist"] = [h for _, h in rec16]
        evaluate(f"theirs16_w{bits}", res16, bits)
        evaluate(f"theirs16_w{bits}_noclip", {"scale": res16["scale"], "clip": []}, bits, (torch.float16,))
        res32, rec32, dt32 = run_theirs(torch.float32, bits)
        log(f"run_awq fp32 w{bits}: {dt32:.1f}s")
        variants["theirs32"] = res32
        RES[f"theirs32_w{bits}_alpha"] = [[r for r, _ in rec32[3 * i: 3 * i + 3]] for i in range(L)]
        RES[f"theirs32_w{bits}_hist"] = [h for _, h in rec32]
        evaluate(f"theirs32_w{bits}", res32, bits)
        # ours: wait for the tool's checkpoint
        last = os.path.join(CKPT, f"w{bits}-g64-asym", f"block_{L - 1}.safetensors")
        while not os.path.exists(last) and left() > 30:
            time.sleep(2)
        if not os.path.exists(last):
            log(f"no checkpoint for w{bits}; stop")
            break
        ours = ours_results(bits)
        variants["ours"] = ours
        evaluate(f"ours_w{bits}", ours, bits)
        evaluate(f"ours_w{bits}_noclip", {"scale": ours["scale"], "clip": []}, bits, (torch.float16,))
        # alpha per layer/group: theirs from the record, ours inferred from its scales
        al = []
        for i in range(L):
            row = {}
            for g, (_, _, s) in zip(("qkv", "gate_up", "down"), rel(ours, i)[0]):
                a, d = infer_alpha(means[i][g], s)
                row[g] = (a, d)
            for g, (_, _, s) in zip(("qkv", "gate_up", "down"), rel(res16, i)[0]):
                row[g + "_theirs16_inferred"] = infer_alpha(means[i][g], s)
            al.append(row)
        RES[f"ours_w{bits}_alpha"] = al
        save()
        # block output errors (fp32) for each variant, on calibration and eval tokens
        for name, r in list(variants.items()) + [("rtn", None)]:
            RES[f"blockerr_w{bits}_{name}"] = block_errors(r, bits, trace, kw)
            RES[f"blockerr_eval_w{bits}_{name}"] = block_errors(r, bits, etrace, ekw)
        log("block errors done")
        # clip shrink comparison per layer and linear
        cmp = []
        for i in range(L):
            so = clip_shrinks(ours, ours, i)
            st = clip_shrinks(res16, res16, i)
            cmp.append({n: {"ours_mean": so[n].float().mean().item(), "theirs_mean": st[n].float().mean().item(),
                            "same": (so[n] == st[n]).float().mean().item()} for n in so})
        RES[f"clipcmp_w{bits}"] = cmp
        save()
        # hybrids: our scales, llm-awq's clip search on them (fp32, then fp16)
        for dt, tag in ((torch.float32, "oursS_theirC32"), (torch.float16, "oursS_theirC16")):
            if left() < 60:
                break
            res_h, _, _ = run_theirs(dt, bits, given_scales=[rel(ours, i)[0] for i in range(L)])
            evaluate(f"{tag}_w{bits}", res_h, bits)
            RES[f"blockerr_w{bits}_{tag}"] = block_errors(res_h, bits, trace, kw)
            RES[f"blockerr_eval_w{bits}_{tag}"] = block_errors(res_h, bits, etrace, ekw)
            cmp = []
            for i in range(L):
                so = clip_shrinks(ours, ours, i)
                sh = clip_shrinks(res_h, ours, i)
                cmp.append({n: {"ours_mean": so[n].float().mean().item(), "theirs_mean": sh[n].float().mean().item(),
                                "same": (so[n] == sh[n]).float().mean().item(),
                                "ours_more": (so[n] > sh[n]).float().mean().item()} for n in so})
            RES[f"clipcmp_{tag}_w{bits}"] = cmp
            save()
        log(f"w{bits} done")
    log("all done")
    save()


main()
