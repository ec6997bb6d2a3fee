/// \file
/// \brief `awq::model::Opt`: the architecture policy (awq/model/arch.hpp) of Meta's OPT (pre-LayerNorm,
///        biases everywhere, ReLU MLP, learned positions) and its block forward on the CPU.
///
/// Hugging Face's OPTDecoderLayer with do_layer_norm_before: x + out_proj(attn(LN₁(x))), then
/// h + fc2(relu(fc1(LN₂(h)))); multi-head causal attention without position encoding (positions
/// are learned, added to the token embedding with an offset of 2: awq::model::embed). The forward is
/// written once over `OptKernels<Backend>` (LayerNorm, ReLU) and the attention core and residual
/// add of `LlamaKernels<Backend>`; the GPU kernels are in awq/model/arch/opt.cuh. Scale groups as
/// AutoAWQ's OptAWQForCausalLM: q,k,v after self_attn_layer_norm (loss: self_attn), out_proj after
/// v_proj, fc1 after final_layer_norm, fc2 after fc1 (exact: ReLU is positively homogeneous, so
/// relu(z / s) · s = relu(z) for s > 0); every linear but q and k is clip-searched.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/model/arch.hpp"
#include "awq/model/arch/llama.hpp"
#include "awq/model/block.hpp"
#include "awq/model/config.hpp"
#include "awq/search/scale.hpp"

namespace awq::model {

/// \brief The OPT block's own non-linear operations on one backend (the attention core and the
///        residual add are LlamaKernels'). Include awq/model/arch/opt.cuh for backend::cuda.
template <class Backend>
struct OptKernels;

/// \brief CPU kernels (rows in parallel on the backend's thread pool).
template <>
struct OptKernels<backend::cpu> {
  /// out = (x − mean) / sqrt(var + eps) ⊙ w + b per row (biased variance, as torch's LayerNorm).
  static void layernorm(const MatrixView<const float>& x, const float* w, const float* b, float eps, const MatrixView<float>& out) {
    const index_t n = x.cols();
    backend::cpu::parallel_for(x.rows(), [&](index_t r0, index_t r1) {
      for (index_t t = r0; t < r1; ++t) {
        const Eigen::Map<const Eigen::RowVectorXf> row(&x(t, 0), n);
        const float mean = row.sum() / static_cast<float>(n);
        const float var = (row.array() - mean).square().sum() / static_cast<float>(n);
        const float inv = 1.0f / std::sqrt(var + eps);
        for (index_t c = 0; c < n; ++c) out(t, c) = (x(t, c) - mean) * inv * w[c] + b[c];
      }
    });
  }

  /// m = max(m, 0) in place.
  static void relu(const MatrixView<float>& m) {
    for (index_t r = 0; r < m.rows(); ++r)
      for (index_t c = 0; c < m.cols(); ++c) m(r, c) = std::max(m(r, c), 0.0f);
  }
};

/// \brief The OPT architecture policy (see awq/model/arch.hpp for the concept).
struct Opt {
  static constexpr const char* name = "opt";  ///< policy name
  static constexpr int n_inputs = 4;          ///< captured inputs: qkv, out_proj, fc1, fc2

  /// Throws awq::Error unless `c` is a pre-LayerNorm OPT without an embedding projection.
  static void check(const ModelConfig& c) {
    detail::require(c.architecture == "opt", "awq::model::Opt: architecture '", c.architecture, "' is not supported (supported: opt)");
    detail::require(c.norm_before, "awq::model::Opt: do_layer_norm_before is false (post-LayerNorm OPT, e.g. opt-350m) is not supported");
    detail::require(c.embed_proj_dim == 0 || c.embed_proj_dim == c.hidden, "awq::model::Opt: word_embed_proj_dim ", c.embed_proj_dim,
                    " differs from hidden_size ", c.hidden, " (project_in/project_out) and is not supported");
    detail::require(c.activation.empty() || c.activation == "relu", "awq::model::Opt: activation_function '", c.activation,
                    "' is not supported (supported: relu)");
    detail::require(c.n_kv_heads == c.n_heads && c.head_dim * c.n_heads == c.hidden, "awq::model::Opt: ", c.n_heads, " heads of ",
                    c.head_dim, " (", c.n_kv_heads, " key/value heads) do not tile hidden_size ", c.hidden);
    detail::require(c.max_positions > 0, "awq::model::Opt: max_position_embeddings is ", c.max_positions, ", expected > 0");
  }

  /// Hugging Face name prefix of block `layer`.
  static std::string block_prefix(int layer) { return "model.decoder.layers." + std::to_string(layer) + "."; }
  static constexpr const char* embed_name = "model.decoder.embed_tokens.weight";               ///< [vocab, hidden]
  static constexpr const char* position_embed_name = "model.decoder.embed_positions.weight";   ///< [max_positions + 2, hidden]
  static constexpr int position_offset = 2;                                                      ///< row of position 0
  static constexpr const char* final_norm_name = "model.decoder.final_layer_norm.weight";       ///< [hidden]
  static constexpr const char* final_norm_bias_name = "model.decoder.final_layer_norm.bias";    ///< [hidden]
  /// The output projection [vocab, hidden]: the embedding when tied.
  static std::string lm_head_name(const ModelConfig& c) { return c.tied_embeddings ? embed_name : "lm_head.weight"; }

  /// The tensors of one block (relative names, HF shapes); biases unless enable_bias is false.
  static std::vector<TensorSpec> block_tensors(const ModelConfig& c) {
    using V = std::vector<std::int64_t>;
    const std::int64_t H = c.hidden, F = c.intermediate;
    std::vector<TensorSpec> t = {{"self_attn_layer_norm.weight", V{H}}, {"self_attn_layer_norm.bias", V{H}},
                                 {"final_layer_norm.weight", V{H}},     {"final_layer_norm.bias", V{H}}};
    const auto add = [&](const std::string& n, std::int64_t out, std::int64_t in, bool has_bias) {
      t.push_back({n + ".weight", V{out, in}});
      if (has_bias) t.push_back({n + ".bias", V{out}});
    };
    add("self_attn.q_proj", H, H, c.qkv_bias);
    add("self_attn.k_proj", H, H, c.qkv_bias);
    add("self_attn.v_proj", H, H, c.qkv_bias);
    add("self_attn.out_proj", H, H, c.o_bias);
    add("fc1", F, H, c.mlp_bias);
    add("fc2", H, F, c.mlp_bias);
    return t;
  }

  /// The quantized linears, in export order.
  static std::vector<std::string> linears(const ModelConfig&) {
    return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"};
  }

  /// The scale groups in AutoAWQ's order.
  static std::vector<LinearGroup> groups(const ModelConfig&) {
    using P = LinearGroup::Prev;
    return {{"qkv", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, P::norm, "self_attn_layer_norm", 0, "self_attn"},
            {"out", {"self_attn.out_proj"}, P::linear, "self_attn.v_proj", 1, ""},
            {"fc1", {"fc1"}, P::norm, "final_layer_norm", 2, ""},
            {"fc2", {"fc2"}, P::linear, "fc1", 3, ""}};
  }

  /// Every linear but q and k.
  static std::vector<ClipTarget> clip_targets(const ModelConfig&) {
    return {{"v", "self_attn.v_proj", 0}, {"out", "self_attn.out_proj", 1}, {"fc1", "fc1", 2}, {"fc2", "fc2", 3}};
  }

  /// Columns of captured input `slot`.
  static index_t input_cols(const ModelConfig& c, int slot) { return slot == 3 ? c.intermediate : c.hidden; }

  /// Causal multi-head attention context [T, hidden] from x and the q, k, v weights (biases from
  /// the block), q, k, v in `scratch`; with `ops`, the block's linear ops (Block::set_linear) where
  /// it holds them.
  template <class Backend>
  static void attention_context(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                                const MatrixView<const float>& wq, const MatrixView<const float>& wk,
                                const MatrixView<const float>& wv, const MatrixView<float>& ctx,
                                Llama::AttentionScratch<Backend>& scratch, bool ops = false) {
    const index_t T = x.rows(), H = c.hidden;
    const auto qv = make_row_major(grown(scratch.q, T * H), T, H), kv = make_row_major(grown(scratch.k, T * H), T, H),
               vv = make_row_major(grown(scratch.v, T * H), T, H);
    linear_forward(blk, "self_attn.q_proj", ops, x, wq, qv);
    linear_forward(blk, "self_attn.k_proj", ops, x, wk, kv);
    linear_forward(blk, "self_attn.v_proj", ops, x, wv, vv);
    LlamaKernels<Backend>::causal_attention(c, b, qv, kv, vv, ctx, static_cast<float>(std::pow(static_cast<double>(c.head_dim), -0.5)),
                                            &scratch.kernels);
  }

  /// The search module of the "qkv" group: self_attn with out_proj kept.
  template <class Backend>
  struct AttentionModule {
    const ModelConfig* cfg;     ///< model
    Batch batch;                ///< the searched tokens' layout
    const Block<Backend>* blk;  ///< biases and out_proj
    mutable Llama::AttentionScratch<Backend> scratch{};      ///< kept across the grid's calls
    mutable typename Backend::template buffer<float> ctx{};  ///< the attention context, kept as well
    index_t output_cols() const { return cfg->hidden; }  ///< hidden
    /// out = out_proj(attention(x; q, k, v = w)).
    void operator()(const MatrixView<const float>& x, const std::vector<MatrixView<const float>>& w,
                    const MatrixView<float>& out) const {
      const auto cv = make_row_major(grown(ctx, x.rows() * cfg->hidden), x.rows(), static_cast<index_t>(cfg->hidden));
      attention_context(*cfg, batch, *blk, x, w[0], w[1], w[2], cv, scratch);
      Backend::linear(MatrixView<const float>(cv), linear_weight(*blk, "self_attn.out_proj"), linear_bias(*blk, "self_attn.out_proj"), out);
    }
  };

  /// Calls f with the search module of group g: self_attn for "qkv", the group's own linears otherwise.
  template <class Backend, class F>
  static void with_module(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const LinearGroup& g, F&& f) {
    if (g.module == "self_attn") {
      f(AttentionModule<Backend>{&c, b, &blk});
    } else {
      f(LinearsBlock<float, Backend>(group_linears(blk, g)));
    }
  }

  /// out = block(x); with cap, the four group inputs (LN₁ x, attention context, LN₂ h, relu(fc1)).
  template <class Backend>
  static void forward(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                      const MatrixView<float>& out, std::vector<Tensor<Backend>>* cap) {
    run(c, b, blk, x, &out, cap);
  }

  /// The four group inputs alone: forward without fc2 and its residual add.
  template <class Backend>
  static void capture(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                      std::vector<Tensor<Backend>>& cap) {
    run(c, b, blk, x, nullptr, &cap);
  }

  /// out = the final LayerNorm of x (weight w, bias b).
  template <class Backend>
  static void final_norm(const ModelConfig& c, const float* w, const float* b, const MatrixView<const float>& x,
                         const MatrixView<float>& out) {
    OptKernels<Backend>::layernorm(x, w, b, c.norm_eps, out);
  }

 private:
  // forward; with no `out`, the capture alone (the last product skipped).
  template <class Backend>
  static void run(const ModelConfig& c, const Batch& b, const Block<Backend>& blk, const MatrixView<const float>& x,
                  const MatrixView<float>* out, std::vector<Tensor<Backend>>* cap) {
    using K = OptKernels<Backend>;
    using Buf = typename Backend::template buffer<float>;
    const index_t T = x.rows(), H = c.hidden;
    std::vector<Tensor<Backend>> local;
    std::vector<Tensor<Backend>>& in = input_buffers<Opt>(c, T, cap, local);
    const auto xn = in[0].matrix(), ctx = in[1].matrix(), hn = in[2].matrix(), act = in[3].matrix();
    const auto vec = [&](const char* n) { return blk.at(n).data.data(); };
    K::layernorm(x, vec("self_attn_layer_norm.weight"), vec("self_attn_layer_norm.bias"), c.norm_eps, xn);
    {
      Llama::AttentionScratch<Backend> scratch;
      attention_context(c, b, blk, xn, linear_weight(blk, "self_attn.q_proj"), linear_weight(blk, "self_attn.k_proj"),
                        linear_weight(blk, "self_attn.v_proj"), ctx, scratch, true);
    }
    Buf tmp(static_cast<std::size_t>(T * H)), h(static_cast<std::size_t>(T * H));
    const auto tv = make_row_major(tmp.data(), T, H), hv = make_row_major(h.data(), T, H);
    linear_forward(blk, "self_attn.out_proj", true, MatrixView<const float>(ctx), linear_weight(blk, "self_attn.out_proj"), tv);
    LlamaKernels<Backend>::add(x, tv, hv);
    K::layernorm(hv, vec("final_layer_norm.weight"), vec("final_layer_norm.bias"), c.norm_eps, hn);
    linear_forward(blk, "fc1", true, MatrixView<const float>(hn), linear_weight(blk, "fc1"), act);
    K::relu(act);
    if (!out) return;
    linear_forward(blk, "fc2", true, MatrixView<const float>(act), linear_weight(blk, "fc2"), tv);
    LlamaKernels<Backend>::add(hv, tv, *out);
  }
};

}  // namespace awq::model
