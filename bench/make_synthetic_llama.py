#!/usr/bin/env python3
"""Writes a synthetic 7B-shaped Llama checkpoint as a Hugging Face directory (fp16 safetensors
shards of at most 5 GB + index, config.json), for timing the whole job (issue #23). Random
weights (speed only): linears N(0, 0.02), embeddings N(0, 1), RMSNorm weights 1 with a few
outlier channels (x8..x40) so that activation-aware scaling has something to find.
Usage: make_synthetic_llama.py OUT_DIR TOKENIZER_JSON [--layers N]. Needs torch and safetensors
(the GPU machine has them); never a dependency of the library."""
import argparse, json, os, shutil, time
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("tokenizer")
p.add_argument("--layers", type=int, default=32)
a = p.parse_args()
H, I, NH, V = 4096, 11008, 32, 49152  # Llama-2-7B's block shape; the vocabulary of the tokenizer used
os.makedirs(a.out, exist_ok=True)
dev = "cuda" if torch.cuda.is_available() else "cpu"
g = torch.Generator(device=dev).manual_seed(0)

def normal(*shape, std=0.02):
    return (torch.randn(*shape, generator=g, device=dev) * std).half().cpu()

def norm_weight():
    w = torch.ones(H, device=dev)
    idx = torch.randperm(H, generator=g, device=dev)[:16]
    w[idx] = 8 + 32 * torch.rand(16, generator=g, device=dev)
    return w.half().cpu()

t0 = time.time()
tensors, shards, weight_map, size = {}, [], {}, 0
def flush():
    global tensors, size
    if tensors:
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(tensors, os.path.join(a.out, name), metadata={"format": "pt"})
        shards.append(name)
        for k in tensors: weight_map[k] = name
        tensors, size = {}, 0
def add(name, t):
    global size
    if size + t.numel() * 2 > 5_000_000_000: flush()
    tensors[name] = t.contiguous()
    size += t.numel() * 2

add("model.embed_tokens.weight", normal(V, H, std=1.0))
for l in range(a.layers):
    p_ = f"model.layers.{l}."
    add(p_ + "input_layernorm.weight", norm_weight())
    add(p_ + "post_attention_layernorm.weight", norm_weight())
    for n in ("q", "k", "v", "o"): add(p_ + f"self_attn.{n}_proj.weight", normal(H, H))
    add(p_ + "mlp.gate_proj.weight", normal(I, H))
    add(p_ + "mlp.up_proj.weight", normal(I, H))
    add(p_ + "mlp.down_proj.weight", normal(H, I))
add("model.norm.weight", torch.ones(H).half())
add("lm_head.weight", normal(V, H))
flush()
# Shards were named before their count was known: rename to the HF pattern.
final = {}
for i, s in enumerate(shards):
    f = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    os.rename(os.path.join(a.out, s), os.path.join(a.out, f))
    final[s] = f
total = sum(os.path.getsize(os.path.join(a.out, f)) for f in final.values())
json.dump({"metadata": {"total_size": total}, "weight_map": {k: final[v] for k, v in weight_map.items()}},
          open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
           "num_attention_heads": NH, "num_key_value_heads": NH, "num_hidden_layers": a.layers, "vocab_size": V,
           "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 4096, "tie_word_embeddings": False,
           "hidden_act": "silu", "torch_dtype": "float16"}, open(os.path.join(a.out, "config.json"), "w"), indent=2)
shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
print(f"synthetic checkpoint: {a.layers} layers, {len(final)} shards, {total / 1e9:.1f} GB, {time.time() - t0:.0f} s")
