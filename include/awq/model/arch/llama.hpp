/// \file
/// \brief `awq::model::Llama`: the architecture policy (awq/model/arch.hpp) of the Llama family as
///        it appears in real checkpoints — Llama 2/3 (GQA, untied lm_head), Mistral, Qwen2 (q/k/v
///        biases), SmolLM (tied embeddings) — and its block forward on the CPU.
///
/// Hugging Face conventions: rotate_half RoPE, GQA by repeating KV heads, RMSNorm in fp32,
/// SwiGLU MLP, weights [out, in]. The forward is written once over `LlamaKernels<Backend>` (norm,
/// attention core, SwiGLU, residual add) and `Backend::linear`; the CPU kernels are here, the GPU
/// ones in awq/model/arch/llama.cuh. Scale groups as llm-awq's run_awq: q,k,v after the input norm
/// (loss: self_attn), o after v (only when v and o shapes agree, i.e. no GQA), gate,up after the
/// post-attention norm (loss: mlp), down after up; every linear but q and k is clip-searched.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/model/arch.hpp"
#include "awq/model/block.hpp"
#include "awq/model/config.hpp"
#include "awq/search/scale.hpp"

namespace awq::model {

/// \brief RoPE's (cos, sin) per position p < seq_len and frequency i < d/2, interleaved:
///        [(p·d/2 + i)·2] = cos, [+1] = sin, with f = p · θ^(−2i/d) in float. Both backends rotate
///        with this table.
inline std::vector<float> rope_cos_sin(int seq_len, int d, float theta) {
  const int half = d / 2;
  std::vector<float> t(static_cast<std::size_t>(seq_len) * half * 2);
  for (int i = 0; i < half; ++i) {
    const float inv = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(d));
    for (int p = 0; p < seq_len; ++p) {
      const float f = static_cast<float>(p) * inv;
      const std::size_t o = (static_cast<std::size_t>(p) * half + static_cast<std::size_t>(i)) * 2;
      t[o] = std::cos(f);
      t[o + 1] = std::sin(f);
    }
  }
  return t;
}

/// \brief The Llama block's non-linear operations on one backend. The primary template is
///        declared only: include awq/model/arch/llama.cuh for backend::cuda.
template <class Backend>
struct LlamaKernels;

/// \brief CPU kernels (Eigen, the backend's thread pool for the products).
template <>
struct LlamaKernels<backend::cpu> {
  /// out = w ⊙ x / sqrt(mean(x²) + eps), per row.
  static void rmsnorm(const MatrixView<const float>& x, const float* w, float eps, const MatrixView<float>& out) {
    for (index_t t = 0; t < x.rows(); ++t) {
      float ss = 0.0f;
      {
        const Eigen::Map<const Eigen::RowVectorXf> row(&x(t, 0), x.cols());
        ss = row.squaredNorm();
      }
      const float var = ss / static_cast<float>(x.cols());
      const float inv = 1.0f / std::sqrt(var + eps);
      for (index_t c = 0; c < x.cols(); ++c) out(t, c) = w[c] * (x(t, c) * inv);
    }
  }

  /// Rotates q or k [T, heads·d] in place (rotate_half) at positions t mod seq_len.
  static void rope(const MatrixView<float>& m, int heads, int d, int seq_len, float theta) {
    const int half = d / 2;
    const std::vector<float> cs = rope_cos_sin(seq_len, d, theta);
    for (index_t t = 0; t < m.rows(); ++t) {
      const float* row = cs.data() + static_cast<std::size_t>(t % seq_len) * half * 2;
      for (int h = 0; h < heads; ++h) {
        float* v = &m(t, h * d);
        for (int i = 0; i < half; ++i) {
          const float c = row[2 * i], s = row[2 * i + 1];
          const float x1 = v[i], x2 = v[i + half];
          v[i] = x1 * c + (-x2) * s;
          v[i + half] = x2 * c + x1 * s;
        }
      }
    }
  }

  /// ctx [T, n_heads·d] = causal softmax(q·kᵀ/√d)·v per sequence and head, q and k rotated here.
  static void attention(const ModelConfig& cfg, const Batch& b, const MatrixView<float>& q, const MatrixView<float>& k,
                        const MatrixView<const float>& v, const MatrixView<float>& ctx) {
    rope(q, cfg.n_heads, cfg.head_dim, b.seq_len, cfg.rope_theta);
    rope(k, cfg.n_kv_heads, cfg.head_dim, b.seq_len, cfg.rope_theta);
    causal_attention(cfg, b, q, k, v, ctx, static_cast<float>(std::pow(static_cast<double>(cfg.head_dim), -0.5)));
  }

  /// ctx [T, n_heads·d] = causal softmax(scaling · q·kᵀ)·v per sequence and head (GQA: head h
  /// reads KV head h / (n_heads / n_kv_heads)); no position encoding.
  static void causal_attention(const ModelConfig& cfg, const Batch& b, const MatrixView<const float>& q,
                               const MatrixView<const float>& k, const MatrixView<const float>& v,
                               const MatrixView<float>& ctx, float scaling) {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const int d = cfg.head_dim, group = cfg.n_heads / cfg.n_kv_heads, L = b.seq_len;
    const auto Qm = backend::cpu::map(q);
    const auto Km = backend::cpu::map(k);
    const auto Vm = backend::cpu::map(v);
    auto Cm = backend::cpu::map(ctx);
    Mat scores(L, L);
    for (int s = 0; s < b.n_seq; ++s) {
      for (int h = 0; h < cfg.n_heads; ++h) {
        const int kh = h / group;
        const auto Q = Qm.block(s * L, h * d, L, d);
        const auto K = Km.block(s * L, kh * d, L, d);
        const auto V = Vm.block(s * L, kh * d, L, d);
        scores.noalias() = Q * K.transpose();
        for (int i = 0; i < L; ++i) {
          float mx = -std::numeric_limits<float>::infinity();
          for (int j = 0; j <= i; ++j) {
            scores(i, j) *= scaling;
            mx = std::max(mx, scores(i, j));
          }
          float sum = 0.0f;
          for (int j = 0; j <= i; ++j) sum += (scores(i, j) = std::exp(scores(i, j) - mx));
          for (int j = 0; j <= i; ++j) scores(i, j) /= sum;
          for (int j = i + 1; j < L; ++j) scores(i, j) = 0.0f;
        }
        Cm.block(s * L, h * d, L, d).noalias() = scores * V;
      }
    }
  }

  /// out = silu(gate) ⊙ up.
  static void swiglu(const MatrixView<const float>& gate, const MatrixView<const float>& up, const MatrixView<float>& out) {
    for (index_t r = 0; r < gate.rows(); ++r)
      for (index_t c = 0; c < gate.cols(); ++c) {
        const float g = gate(r, c);
        out(r, c) = (g / (1.0f + std::exp(-g))) * up(r, c);
      }
  }

  /// out = a + b.
  static void add(const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out) {
    for (index_t r = 0; r < a.rows(); ++r)
      for (index_t c = 0; c < a.cols(); ++c) out(r, c) = a(r, c) + b(r, c);
  }
};

/// \brief The Llama-family architecture policy (see awq/model/arch.hpp for the concept).
struct Llama {
  static constexpr const char* name = "llama";  ///< policy name
  static constexpr int n_inputs = 4;            ///< captured inputs: qkv, o, gate/up, down

  /// Throws awq::Error unless `c` is a supported Llama-family model.
  static void check(const ModelConfig& c) {
    detail::require(c.architecture == "llama" || c.architecture == "mistral" || c.architecture == "qwen2",
                    "awq::model::Llama: architecture '", c.architecture,
                    "' is not supported (supported: llama, mistral, qwen2; SmolLM and Llama 2/3 are llama)");
    detail::require(c.n_heads % c.n_kv_heads == 0 && c.head_dim % 2 == 0, "awq::model::Llama: heads ", c.n_heads, "/",
                    c.n_kv_heads, " and head_dim ", c.head_dim, " do not form a GQA layout");
  }

  /// Hugging Face name prefix of block `layer`.
  static std::string block_prefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }
  static constexpr const char* embed_name = "model.embed_tokens.weight";  ///< token embedding [vocab, hidden]
  static constexpr const char* final_norm_name = "model.norm.weight";     ///< final RMSNorm [hidden]
  /// The output projection [vocab, hidden]: the embedding when tied.
  static std::string lm_head_name(const ModelConfig& c) { return c.tied_embeddings ? embed_name : "lm_head.weight"; }

  /// The tensors of one block (relative names, HF shapes).
  static std::vector<TensorSpec> block_tensors(const ModelConfig& c) {
    using V = std::vector<std::int64_t>;
    const std::int64_t H = c.hidden, I = c.intermediate, q = static_cast<std::int64_t>(c.n_heads) * c.head_dim,
                       kv = static_cast<std::int64_t>(c.n_kv_heads) * c.head_dim;
    std::vector<TensorSpec> t = {{"input_layernorm.weight", V{H}},    {"post_attention_layernorm.weight", V{H}},
                                 {"self_attn.q_proj.weight", V{q, H}}, {"self_attn.k_proj.weight", V{kv, H}},
                                 {"self_attn.v_proj.weight", V{kv, H}}, {"self_attn.o_proj.weight", V{H, q}},
                                 {"mlp.gate_proj.weight", V{I, H}},    {"mlp.up_proj.weight", V{I, H}},
                                 {"mlp.down_proj.weight", V{H, I}}};
    if (c.qkv_bias) {
      t.push_back({"self_attn.q_proj.bias", V{q}});
      t.push_back({"self_attn.k_proj.bias", V{kv}});
      t.push_back({"self_attn.v_proj.bias", V{kv}});
    }
    if (c.o_bias) t.push_back({"self_attn.o_proj.bias", V{H}});
    if (c.mlp_bias) {
      t.push_back({"mlp.gate_proj.bias", V{I}});
      t.push_back({"mlp.up_proj.bias", V{I}});
      t.push_back({"mlp.down_proj.bias", V{H}});
    }
    return t;
  }

  /// The quantized linears, in export order.
  static std::vector<std::string> linears(const ModelConfig&) {
    return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  }

  /// The scale groups in llm-awq's order; "o" only when v_proj and o_proj have the same shape.
  static std::vector<LinearGroup> groups(const ModelConfig& c) {
    using P = LinearGroup::Prev;
    std::vector<LinearGroup> g;
    g.push_back({"qkv", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, P::norm, "input_layernorm", 0, "self_attn"});
    if (c.n_kv_heads == c.n_heads && c.n_heads * c.head_dim == c.hidden)
      g.push_back({"o", {"self_attn.o_proj"}, P::linear, "self_attn.v_proj", 1, ""});
    g.push_back({"gate_up", {"mlp.gate_proj", "mlp.up_proj"}, P::norm, "post_attention_layernorm", 2, "mlp"});
    g.push_back({"down", {"mlp.down_proj"}, P::linear, "mlp.up_proj", 3, ""});
    return g;
  }

  /// Every linear but q and k (the reference never clips them).
  static std::vector<ClipTarget> clip_targets(const ModelConfig&) {
    return {{"v", "self_attn.v_proj", 0}, {"o", "self_attn.o_proj", 1}, {"gate", "mlp.gate_proj", 2},
            {"up", "mlp.up_proj", 2},     {"down", "mlp.down_proj", 3}};
  }

  /// Columns of captured input `slot`.
  static index_t input_cols(const ModelConfig& c, int slot) {
    return slot == 1 ? static_cast<index_t>(c.n_heads) * c.head_dim : slot == 3 ? c.intermediate : c.hidden;
  }

  /// Causal GQA attention context [T, n_heads·d] from x and the q, k, v weights (biases from the
  /// block); with `ops`, the block's linear ops (Block::set_linear) where it holds them.
  template <class Backend>
  static void attention_context(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                                const MatrixView<const float>& wq, const MatrixView<const float>& wk,
                                const MatrixView<const float>& wv, const MatrixView<float>& ctx, bool ops = false) {
    using Buf = typename Backend::template buffer<float>;
    const index_t T = x.rows(), kv = static_cast<index_t>(c.n_kv_heads) * c.head_dim;
    Buf q(static_cast<std::size_t>(T * wq.rows())), k(static_cast<std::size_t>(T * kv)), v(static_cast<std::size_t>(T * kv));
    const auto qv = make_row_major(q.data(), T, wq.rows()), kvw = make_row_major(k.data(), T, kv),
               vv = make_row_major(v.data(), T, kv);
    linear_forward(blk, "self_attn.q_proj", ops, x, wq, qv);
    linear_forward(blk, "self_attn.k_proj", ops, x, wk, kvw);
    linear_forward(blk, "self_attn.v_proj", ops, x, wv, vv);
    LlamaKernels<Backend>::attention(c, b, qv, kvw, MatrixView<const float>(vv), ctx);
  }

  /// The search module of the "qkv" group: self_attn with o_proj kept.
  template <class Backend>
  struct AttentionModule {
    const ModelConfig* cfg;     ///< model
    Batch batch;                ///< the searched tokens' layout
    const Block<Backend>* blk;  ///< biases and o_proj
    index_t output_cols() const { return cfg->hidden; }  ///< hidden
    /// out = o_proj(attention(x; q, k, v = w)).
    void operator()(const MatrixView<const float>& x, const std::vector<MatrixView<const float>>& w,
                    const MatrixView<float>& out) const {
      typename Backend::template buffer<float> ctx(static_cast<std::size_t>(x.rows() * w[0].rows()));
      const auto cv = make_row_major(ctx.data(), x.rows(), w[0].rows());
      attention_context(*cfg, batch, *blk, x, w[0], w[1], w[2], cv);
      Backend::linear(MatrixView<const float>(cv), linear_weight(*blk, "self_attn.o_proj"), linear_bias(*blk, "self_attn.o_proj"), out);
    }
  };

  /// The search module of the "gate_up" group: the MLP with down_proj kept.
  template <class Backend>
  struct MlpModule {
    const ModelConfig* cfg;     ///< model
    const Block<Backend>* blk;  ///< biases and down_proj
    index_t output_cols() const { return cfg->hidden; }  ///< hidden
    /// out = down(silu(gate(x)) ⊙ up(x)) with gate, up = w.
    void operator()(const MatrixView<const float>& x, const std::vector<MatrixView<const float>>& w,
                    const MatrixView<float>& out) const {
      typename Backend::template buffer<float> act(static_cast<std::size_t>(x.rows() * w[0].rows()));
      const auto av = make_row_major(act.data(), x.rows(), w[0].rows());
      mlp_act(*blk, x, w[0], w[1], av);
      Backend::linear(MatrixView<const float>(av), linear_weight(*blk, "mlp.down_proj"), linear_bias(*blk, "mlp.down_proj"), out);
    }
  };

  /// Calls f with the search module of group g.
  template <class Backend, class F>
  static void with_module(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const LinearGroup& g, F&& f) {
    if (g.module == "self_attn") {
      f(AttentionModule<Backend>{&c, b, &blk});
    } else if (g.module == "mlp") {
      f(MlpModule<Backend>{&c, &blk});
    } else {
      f(LinearsBlock<float, Backend>(group_linears(blk, g)));
    }
  }

  /// out = block(x); with cap, the four group inputs (normed x, attention context, normed h, MLP act).
  template <class Backend>
  static void forward(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                      const MatrixView<float>& out, std::vector<Tensor<Backend>>* cap) {
    using K = LlamaKernels<Backend>;
    using Buf = typename Backend::template buffer<float>;
    const index_t T = x.rows(), H = c.hidden;
    std::vector<Tensor<Backend>> local;
    std::vector<Tensor<Backend>>& in = input_buffers<Llama>(c, T, cap, local);
    const auto xn = in[0].matrix(), ctx = in[1].matrix(), hn = in[2].matrix(), act = in[3].matrix();
    K::rmsnorm(x, blk.at("input_layernorm.weight").data.data(), c.norm_eps, xn);
    attention_context(c, b, blk, xn, linear_weight(blk, "self_attn.q_proj"), linear_weight(blk, "self_attn.k_proj"),
                      linear_weight(blk, "self_attn.v_proj"), ctx, true);
    Buf tmp(static_cast<std::size_t>(T * H)), h(static_cast<std::size_t>(T * H));
    const auto tv = make_row_major(tmp.data(), T, H), hv = make_row_major(h.data(), T, H);
    linear_forward(blk, "self_attn.o_proj", true, MatrixView<const float>(ctx), linear_weight(blk, "self_attn.o_proj"), tv);
    K::add(x, tv, hv);
    K::rmsnorm(hv, blk.at("post_attention_layernorm.weight").data.data(), c.norm_eps, hn);
    mlp_act(blk, hn, linear_weight(blk, "mlp.gate_proj"), linear_weight(blk, "mlp.up_proj"), act, true);
    linear_forward(blk, "mlp.down_proj", true, MatrixView<const float>(act), linear_weight(blk, "mlp.down_proj"), tv);
    K::add(hv, tv, out);
  }

  /// out = the final RMSNorm of x.
  template <class Backend>
  static void final_norm(const ModelConfig& c, const float* w, const MatrixView<const float>& x, const MatrixView<float>& out) {
    LlamaKernels<Backend>::rmsnorm(x, w, c.norm_eps, out);
  }

 private:
  template <class Backend>
  static void mlp_act(const Block<Backend>& blk, const MatrixView<const float>& x, const MatrixView<const float>& wg,
                      const MatrixView<const float>& wu, const MatrixView<float>& act, bool ops = false) {
    typename Backend::template buffer<float> g(static_cast<std::size_t>(x.rows() * wg.rows())),
        u(static_cast<std::size_t>(x.rows() * wu.rows()));
    const auto gv = make_row_major(g.data(), x.rows(), wg.rows()), uv = make_row_major(u.data(), x.rows(), wu.rows());
    linear_forward(blk, "mlp.gate_proj", ops, x, wg, gv);
    linear_forward(blk, "mlp.up_proj", ops, x, wu, uv);
    LlamaKernels<Backend>::swiglu(gv, uv, act);
  }
};

}  // namespace awq::model
