"""Tiny random-init transformers models and their own forward, as goldens for the architecture
policies (tests/golden/arch_<name>/). Run on a machine with torch and transformers:

    python3 tests/golden/gen_arch.py OUT_DIR

Each case: hf/ (save_pretrained, fp32 safetensors; qwen2_bias sharded with an index), and, from
transformers' forward in float64 on exactly the saved fp32 weights (eager attention, no cache):
  layer_in.f32 / layer_out.f32  [layers, batch*seq, hidden]  each decoder layer's input and output
  final.f32                     [batch*seq, hidden]          after the final norm
  logits.f32                    [batch*seq, vocab]
  meta.json                     input_ids, shapes, versions
Raw little-endian float32, row-major, token t of sequence b at row b*seq + t.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, OPTConfig, OPTForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

B, T, V = 2, 16, 128


def cases():
    common = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, max_position_embeddings=128)
    yield "llama3_gqa", LlamaForCausalLM, LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                                     rope_theta=500000.0, tie_word_embeddings=False), None
    yield "smollm_tied", LlamaForCausalLM, LlamaConfig(**dict(common, hidden_size=48), num_attention_heads=3, num_key_value_heads=1,
                                                      rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True), None
    yield "mistral", MistralForCausalLM, MistralConfig(**common, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                                       sliding_window=None, rms_norm_eps=1e-5, rope_theta=1e6,
                                                       tie_word_embeddings=False), None
    yield "qwen2_bias", Qwen2ForCausalLM, Qwen2Config(**common, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                                                      rope_theta=1e6, tie_word_embeddings=True), "40KB"
    yield "opt", OPTForCausalLM, OPTConfig(vocab_size=V, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
                                           max_position_embeddings=128, word_embed_proj_dim=64, do_layer_norm_before=True,
                                           activation_function="relu", enable_bias=True, layer_norm_elementwise_affine=True,
                                           tie_word_embeddings=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0), None


def randomize(model, gen):
    # Weights large enough that every op matters; norms and biases away from their 1 / 0 init.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)


def main(out_root):
    for name, cls, cfg, shard in cases():
        gen = torch.Generator().manual_seed(1234)
        cfg._attn_implementation = "eager"
        model = cls(cfg).eval()
        randomize(model, gen)
        out = os.path.join(out_root, "arch_" + name)
        os.makedirs(out, exist_ok=True)
        kw = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(os.path.join(out, "hf"), safe_serialization=True, **kw)
        model = model.double()
        ids = torch.randint(0, V, (B, T), generator=gen)
        layers = model.model.decoder.layers if hasattr(model.model, "decoder") else model.model.layers
        ins, outs = [], []

        def hook(mod, args, kwargs, res):
            x = args[0] if args else kwargs["hidden_states"]
            y = res[0] if isinstance(res, tuple) else res
            ins.append(x.reshape(B * T, -1).float().numpy())
            outs.append(y.reshape(B * T, -1).float().numpy())

        hs = [l.register_forward_hook(hook, with_kwargs=True) for l in layers]
        final = []
        norm = model.model.decoder.final_layer_norm if hasattr(model.model, "decoder") else model.model.norm
        hs.append(norm.register_forward_hook(lambda m, a, r: final.append(r.reshape(B * T, -1).float().numpy())))
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits.reshape(B * T, -1).float().numpy()
        for h in hs:
            h.remove()
        np.stack(ins).astype("<f4").tofile(os.path.join(out, "layer_in.f32"))
        np.stack(outs).astype("<f4").tofile(os.path.join(out, "layer_out.f32"))
        final[0].astype("<f4").tofile(os.path.join(out, "final.f32"))
        logits.astype("<f4").tofile(os.path.join(out, "logits.f32"))
        meta = {
            "architecture": cls.__name__, "batch": B, "seq_len": T, "layers": len(layers),
            "hidden": int(ins[0].shape[1]), "vocab": V, "input_ids": ids.tolist(),
            "reference": "transformers forward in float64 on the saved fp32 weights, eager attention, use_cache=False",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "files": {"layer_in.f32": [len(layers), B * T, int(ins[0].shape[1])],
                      "layer_out.f32": [len(layers), B * T, int(outs[0].shape[1])],
                      "final.f32": [B * T, int(final[0].shape[1])], "logits.f32": [B * T, V]},
        }
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(name, "ok", sorted(os.listdir(os.path.join(out, "hf"))))


if __name__ == "__main__":
    main(sys.argv[1])
