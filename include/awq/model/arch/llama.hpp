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

/// \brief CPU kernels: Eigen products and vectorised element-wise work, every kernel split over
///        the backend's thread pool (rows, or (sequence, head) pairs for the attention).
template <>
struct LlamaKernels<backend::cpu> {
  /// Query rows per attention block: the causal product skips the key blocks past the diagonal.
  static constexpr int kAttentionBlock = 64;
  /// Kept scratch of repeated attention calls: the CPU's is per call (GPU: see llama.cuh).
  struct Workspace {};

  /// out = w ⊙ x / sqrt(mean(x²) + eps), per row.
  static void rmsnorm(const MatrixView<const float>& x, const float* w, float eps, const MatrixView<float>& out) {
    const Eigen::Map<const Eigen::ArrayXf> wa(w, x.cols());
    backend::cpu::parallel_for(x.rows(), [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        const Eigen::Map<const Eigen::ArrayXf> row(&x(t, 0), x.cols());
        const float var = row.matrix().squaredNorm() / static_cast<float>(x.cols());
        const float inv = 1.0f / std::sqrt(var + eps);
        Eigen::Map<Eigen::ArrayXf>(&out(t, 0), x.cols()) = wa * (row * inv);
      }
    }, 64);
  }

  /// Rotates q or k [T, heads·d] in place (rotate_half) at positions t mod seq_len.
  static void rope(const MatrixView<float>& m, int heads, int d, int seq_len, float theta) {
    const int half = d / 2;
    const std::vector<float> cs = rope_cos_sin(seq_len, d, theta);
    backend::cpu::parallel_for(m.rows(), [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
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
    }, 64);
  }

  /// ctx [T, n_heads·d] = causal softmax(q·kᵀ/√d)·v per sequence and head, q and k rotated here.
  /// (sequence, head) pairs run in parallel; each is a loop over blocks of query rows that
  /// multiplies only the keys up to the block's last row (about half the products of L × L).
  static void attention(const ModelConfig& cfg, const Batch& b, const MatrixView<float>& q, const MatrixView<float>& k,
                        const MatrixView<const float>& v, const MatrixView<float>& ctx, Workspace* = nullptr) {
    rope(q, cfg.n_heads, cfg.head_dim, b.seq_len, cfg.rope_theta);
    rope(k, cfg.n_kv_heads, cfg.head_dim, b.seq_len, cfg.rope_theta);
    causal_attention(cfg, b, q, k, v, ctx, static_cast<float>(std::pow(static_cast<double>(cfg.head_dim), -0.5)));
  }

  /// ctx [T, n_heads·d] = causal softmax(scaling · q·kᵀ)·v per sequence and head (GQA: head h
  /// reads KV head h / (n_heads / n_kv_heads)); no position encoding.
  static void causal_attention(const ModelConfig& cfg, const Batch& b, const MatrixView<const float>& q,
                               const MatrixView<const float>& k, const MatrixView<const float>& v,
                               const MatrixView<float>& ctx, float scaling, Workspace* = nullptr) {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const int d = cfg.head_dim, group = cfg.n_heads / cfg.n_kv_heads, L = b.seq_len;
    const auto Qm = backend::cpu::map(q);
    const auto Km = backend::cpu::map(k);
    const auto Vm = backend::cpu::map(v);
    auto Cm = backend::cpu::map(ctx);
    const index_t pairs = static_cast<index_t>(b.n_seq) * cfg.n_heads;
    backend::cpu::parallel_for(pairs, [&](index_t p0, index_t p1) {
      Mat scores(std::min(L, kAttentionBlock), L);
      for (index_t p = p0; p < p1; ++p) {
        const int s = static_cast<int>(p / cfg.n_heads), h = static_cast<int>(p % cfg.n_heads), kh = h / group;
        for (int i0 = 0; i0 < L; i0 += kAttentionBlock) {
          const int nb = std::min(kAttentionBlock, L - i0), nk = i0 + nb;  // keys 0 .. nk-1 are visible to the block
          auto S = scores.topLeftCorner(nb, nk);
          S.noalias() = Qm.block(s * L + i0, h * d, nb, d) * Km.block(s * L, kh * d, nk, d).transpose();
          for (int i = 0; i < nb; ++i) {
            const int n = i0 + i + 1;
            auto row = S.row(i).head(n).array();
            row *= scaling;
            const float mx = row.maxCoeff();
            row = (row - mx).exp();
            row /= row.sum();
            S.row(i).tail(nk - n).setZero();
          }
          Cm.block(s * L + i0, h * d, nb, d).noalias() = S * Vm.block(s * L, kh * d, nk, d);
        }
      }
    });
  }

  /// out = silu(gate) ⊙ up.
  static void swiglu(const MatrixView<const float>& gate, const MatrixView<const float>& up, const MatrixView<float>& out) {
    backend::cpu::parallel_for(gate.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const Eigen::Map<const Eigen::ArrayXf> g(&gate(r, 0), gate.cols()), u(&up(r, 0), gate.cols());
        Eigen::Map<Eigen::ArrayXf>(&out(r, 0), gate.cols()) = (g / (1.0f + (-g).exp())) * u;
      }
    }, 16);
  }

  /// out = a + b.
  static void add(const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out) {
    backend::cpu::parallel_for(a.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        Eigen::Map<Eigen::ArrayXf>(&out(r, 0), a.cols()) =
            Eigen::Map<const Eigen::ArrayXf>(&a(r, 0), a.cols()) + Eigen::Map<const Eigen::ArrayXf>(&b(r, 0), a.cols());
    }, 64);
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
    // The MLP is SwiGLU: another hidden_act (gelu, relu, …) would run as silu without a word.
    detail::require(c.activation.empty() || c.activation == "silu", "awq::model::Llama: hidden_act '", c.activation,
                    "' is not supported (accepted: silu)");
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

  /// The projections q, k, v of an attention call, kept by a search module between its calls.
  template <class Backend>
  struct AttentionScratch {
    typename Backend::template buffer<float> q;  ///< [T, heads·d] (fp32, or 16-bit values: Backend::with_activation)
    typename Backend::template buffer<float> k;  ///< [T, kv heads·d]
    typename Backend::template buffer<float> v;  ///< [T, kv heads·d]
    typename LlamaKernels<Backend>::Workspace kernels;  ///< the attention kernels' own
  };

  /// Causal GQA attention context [T, n_heads·d] from x and the q, k, v weights (biases from the
  /// block), q, k, v stored as A in `scratch`; with `ops`, the block's linear ops
  /// (Block::set_linear) where it holds them.
  template <class Backend, class A>
  static void attention_context(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                                const MatrixView<const float>& wq, const MatrixView<const float>& wk,
                                const MatrixView<const float>& wv, const MatrixView<A>& ctx, AttentionScratch<Backend>& scratch,
                                bool ops = false) {
    const index_t T = x.rows(), kv = static_cast<index_t>(c.n_kv_heads) * c.head_dim;
    const auto qv = make_row_major(grown_as<A>(scratch.q, T * wq.rows()), T, wq.rows());
    const auto kvw = make_row_major(grown_as<A>(scratch.k, T * kv), T, kv), vv = make_row_major(grown_as<A>(scratch.v, T * kv), T, kv);
    linear_forward(blk, "self_attn.q_proj", ops, x, wq, qv);
    linear_forward(blk, "self_attn.k_proj", ops, x, wk, kvw);
    linear_forward(blk, "self_attn.v_proj", ops, x, wv, vv);
    LlamaKernels<Backend>::attention(c, b, qv, kvw, MatrixView<const A>(vv), ctx, &scratch.kernels);
  }

  /// The search module of the "qkv" group: self_attn with o_proj kept. Its intermediates are stored
  /// in the backend's activation type (Backend::with_activation).
  template <class Backend>
  struct AttentionModule {
    const ModelConfig* cfg;     ///< model
    Batch batch;                ///< the searched tokens' layout
    const Block<Backend>* blk;  ///< biases and o_proj
    mutable AttentionScratch<Backend> scratch{};             ///< kept across the grid's calls
    mutable typename Backend::template buffer<float> ctx{};  ///< the attention context, kept as well
    index_t output_cols() const { return cfg->hidden; }  ///< hidden
    /// out = o_proj(attention(x; q, k, v = w)).
    void operator()(const MatrixView<const float>& x, const std::vector<MatrixView<const float>>& w,
                    const MatrixView<float>& out) const {
      Backend::with_activation([&](auto tag) {
        using A = typename decltype(tag)::type;
        const auto cv = make_row_major(grown_as<A>(ctx, x.rows() * w[0].rows()), x.rows(), w[0].rows());
        attention_context(*cfg, batch, *blk, x, w[0], w[1], w[2], cv, scratch);
        Backend::linear(MatrixView<const A>(cv), linear_weight(*blk, "self_attn.o_proj"), linear_bias(*blk, "self_attn.o_proj"), out);
      });
    }
  };

  /// The gate and up projections of an MLP call, kept by a search module between its calls.
  template <class Backend>
  struct MlpScratch {
    typename Backend::template buffer<float> gate;  ///< [T, intermediate] (fp32, or 16-bit values: Backend::with_activation)
    typename Backend::template buffer<float> up;    ///< [T, intermediate]
  };

  /// The search module of the "gate_up" group: the MLP with down_proj kept. Its intermediates are
  /// stored in the backend's activation type (Backend::with_activation).
  template <class Backend>
  struct MlpModule {
    const ModelConfig* cfg;     ///< model
    const Block<Backend>* blk;  ///< biases and down_proj
    mutable MlpScratch<Backend> scratch{};                   ///< kept across the grid's calls
    mutable typename Backend::template buffer<float> act{};  ///< silu(gate) ⊙ up, kept as well
    index_t output_cols() const { return cfg->hidden; }  ///< hidden
    /// out = down(silu(gate(x)) ⊙ up(x)) with gate, up = w.
    void operator()(const MatrixView<const float>& x, const std::vector<MatrixView<const float>>& w,
                    const MatrixView<float>& out) const {
      Backend::with_activation([&](auto tag) {
        using A = typename decltype(tag)::type;
        const auto av = make_row_major(grown_as<A>(act, x.rows() * w[0].rows()), x.rows(), w[0].rows());
        mlp_act(*blk, x, w[0], w[1], av, scratch);
        Backend::linear(MatrixView<const A>(av), linear_weight(*blk, "mlp.down_proj"), linear_bias(*blk, "mlp.down_proj"), out);
      });
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
    run(c, b, blk, x, &out, cap);
  }

  /// The four group inputs alone: forward without the down projection and its residual add.
  template <class Backend>
  static void capture(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                      std::vector<Tensor<Backend>>& cap) {
    run(c, b, blk, x, nullptr, &cap);
  }

  /// out = the final RMSNorm of x.
  template <class Backend>
  static void final_norm(const ModelConfig& c, const float* w, const MatrixView<const float>& x, const MatrixView<float>& out) {
    LlamaKernels<Backend>::rmsnorm(x, w, c.norm_eps, out);
  }

 private:
  // forward; with no `out`, the capture alone (the last product skipped).
  template <class Backend>
  static void run(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                  const MatrixView<float>* out, std::vector<Tensor<Backend>>* cap) {
    using K = LlamaKernels<Backend>;
    using Buf = typename Backend::template buffer<float>;
    const index_t T = x.rows(), H = c.hidden;
    std::vector<Tensor<Backend>> local;
    std::vector<Tensor<Backend>>& in = input_buffers<Llama>(c, T, cap, local);
    const auto xn = in[0].matrix(), ctx = in[1].matrix(), hn = in[2].matrix(), act = in[3].matrix();
    K::rmsnorm(x, blk.at("input_layernorm.weight").data.data(), c.norm_eps, xn);
    {
      AttentionScratch<Backend> scratch;
      attention_context(c, b, blk, xn, linear_weight(blk, "self_attn.q_proj"), linear_weight(blk, "self_attn.k_proj"),
                        linear_weight(blk, "self_attn.v_proj"), ctx, scratch, true);
    }
    Buf tmp(static_cast<std::size_t>(T * H)), h(static_cast<std::size_t>(T * H));
    const auto tv = make_row_major(tmp.data(), T, H), hv = make_row_major(h.data(), T, H);
    linear_forward(blk, "self_attn.o_proj", true, MatrixView<const float>(ctx), linear_weight(blk, "self_attn.o_proj"), tv);
    K::add(x, tv, hv);
    K::rmsnorm(hv, blk.at("post_attention_layernorm.weight").data.data(), c.norm_eps, hn);
    {
      MlpScratch<Backend> scratch;
      mlp_act(blk, hn, linear_weight(blk, "mlp.gate_proj"), linear_weight(blk, "mlp.up_proj"), act, scratch, true);
    }
    if (!out) return;
    linear_forward(blk, "mlp.down_proj", true, MatrixView<const float>(act), linear_weight(blk, "mlp.down_proj"), tv);
    K::add(hv, tv, *out);
  }

  template <class Backend, class A>
  static void mlp_act(const Block<Backend>& blk, const MatrixView<const float>& x, const MatrixView<const float>& wg,
                      const MatrixView<const float>& wu, const MatrixView<A>& act, MlpScratch<Backend>& scratch, bool ops = false) {
    const auto gv = make_row_major(grown_as<A>(scratch.gate, x.rows() * wg.rows()), x.rows(), wg.rows()),
               uv = make_row_major(grown_as<A>(scratch.up, x.rows() * wu.rows()), x.rows(), wu.rows());
    linear_forward(blk, "mlp.gate_proj", ops, x, wg, gv);
    linear_forward(blk, "mlp.up_proj", ops, x, wu, uv);
    LlamaKernels<Backend>::swiglu(MatrixView<const A>(gv), MatrixView<const A>(uv), act);
  }
};

}  // namespace awq::model
