#!/usr/bin/env python3
"""Writes a synthetic 7B-shaped Llama checkpoint as a Hugging Face directory (fp16 safetensors
shards of at most 5 GB + index, config.json), for timing the whole job (issue #23). Random
weights (speed only): linears N(0, 0.02), embeddings N(0, 1), RMSNorm weights 1 with a few
outlier channels (x8..x40) so that activation-aware scaling has something to find.
With --awq AWQ_DIR it also writes a random 4-bit checkpoint of the same shape in the AutoAWQ GEMM
layout (int32 qweight [K, N/8] and qzeros [K/G, N/8], fp16 scales [K/G, N], a quantization_config),
drawn directly, so that `awq_llama generate` can run a 4-bit 7B without a quantization run;
--awq-only skips the fp16 one.
Usage: make_synthetic_llama.py OUT_DIR TOKENIZER_JSON [--layers N] [--awq AWQ_DIR [--group G] [--awq-only]].
Needs torch and safetensors (the GPU machine has them); never a dependency of the library."""
import argparse, json, os, shutil, time
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("tokenizer")
p.add_argument("--layers", type=int, default=32)
p.add_argument("--awq", help="also write a random AutoAWQ GEMM 4-bit checkpoint here")
p.add_argument("--group", type=int, default=128)
p.add_argument("--awq-only", action="store_true")
a = p.parse_args()
H, I, NH, V = 4096, 11008, 32, 49152  # Llama-2-7B's block shape; the vocabulary of the tokenizer used
dev = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator(device=dev).manual_seed(0)

def normal(*shape, std=0.02):
    return (torch.randn(*shape, generator=g, device=dev) * std).half().cpu()

def norm_weight():
    w = torch.ones(H, device=dev)
    idx = torch.randperm(H, generator=g, device=dev)[:16]
    w[idx] = 8 + 32 * torch.rand(16, generator=g, device=dev)
    return w.half().cpu()


def awq_linear(name, n, k):
    """Random AutoAWQ GEMM tensors of an [n, k] linear: codes and zeros uniform in 0..15, scales
    such that (q - z) * s has standard deviation about 0.02, as the fp16 linears."""
    G = a.group
    words = lambda r, c: torch.randint(-2**31, 2**31, (r, c), generator=g, device=dev, dtype=torch.int64).to(torch.int32).cpu()
    scales = (0.02 / 6.52) * (0.5 + torch.rand(k // G, n, generator=g, device=dev))
    return {name + ".qweight": words(k, n // 8), name + ".qzeros": words(k // G, n // 8), name + ".scales": scales.half().cpu()}

def write(out, quantized):
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    tensors, shards, weight_map, size = {}, [], {}, 0
    def flush():
        nonlocal tensors, size
        if tensors:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(tensors, os.path.join(out, name), metadata={"format": "pt"})
            shards.append(name)
            for k in tensors: weight_map[k] = name
            tensors, size = {}, 0
    def add(name, t):
        nonlocal size
        b = t.numel() * t.element_size()
        if size + b > 5_000_000_000: flush()
        tensors[name] = t.contiguous()
        size += b
    def linear(name, n, k):
        if quantized:
            for key, t in awq_linear(name, n, k).items(): add(key, t)
        else:
            add(name + ".weight", normal(n, k))
    add("model.embed_tokens.weight", normal(V, H, std=1.0))
    for l in range(a.layers):
        p_ = f"model.layers.{l}."
        add(p_ + "input_layernorm.weight", norm_weight())
        add(p_ + "post_attention_layernorm.weight", norm_weight())
        for n in ("q", "k", "v", "o"): linear(p_ + f"self_attn.{n}_proj", H, H)
        linear(p_ + "mlp.gate_proj", I, H)
        linear(p_ + "mlp.up_proj", I, H)
        linear(p_ + "mlp.down_proj", H, I)
    add("model.norm.weight", torch.ones(H).half())
    add("lm_head.weight", normal(V, H))
    flush()
    # Shards were named before their count was known: rename to the HF pattern.
    final = {}
    for i, s in enumerate(shards):
        f = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        os.rename(os.path.join(out, s), os.path.join(out, f))
        final[s] = f
    total = sum(os.path.getsize(os.path.join(out, f)) for f in final.values())
    json.dump({"metadata": {"total_size": total}, "weight_map": {k: final[v] for k, v in weight_map.items()}},
              open(os.path.join(out, "model.safetensors.index.json"), "w"), indent=2)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
              "num_attention_heads": NH, "num_key_value_heads": NH, "num_hidden_layers": a.layers, "vocab_size": V,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096, "tie_word_embeddings": False,
              "hidden_act": "silu", "torch_dtype": "float16"}
    if quantized:
        config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": a.group, "zero_point": True,
                                         "version": "gemm", "modules_to_not_convert": None}
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    shutil.copy(a.tokenizer, os.path.join(out, "tokenizer.json"))
    kind = f"AWQ 4-bit group {a.group}" if quantized else "fp16"
    print(f"synthetic {kind} checkpoint: {a.layers} layers, {len(final)} shards, {total / 1e9:.1f} GB, {time.time() - t0:.0f} s")

if not a.awq_only: write(a.out, False)
if a.awq: write(a.awq, True)
