// The example engine's Llama decoder layer (fp32, Eigen) and the per-block AWQ flow on it,
// written against awq's public API only: capture the inputs of every linear group, search
// the four scale groups on the original weights, fold them all, clip-search the scaled
// weights on the scaled inputs, clamp. Hugging Face conventions: rotate_half RoPE, GQA by
// repeating KV heads, RMSNorm in fp32, SwiGLU MLP, weights [out, in].
#pragma once

#include <awq/awq.hpp>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace awq_example {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXf;

struct LlamaConfig {
  int hidden = 0, intermediate = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float rms_eps = 1e-6f;
  float rope_theta = 10000.0f;
};

struct LlamaLayer {
  Mat wq, wk, wv, wo, wg, wu, wd;  // [out, in]
  Vec ln_in, ln_post;              // RMSNorm weights [hidden]
};

/// The batch layout: n_seq sequences of seq_len tokens, rows of every activation matrix.
struct Batch {
  int n_seq = 1, seq_len = 0;
  int tokens() const { return n_seq * seq_len; }
};

inline awq::MatrixView<const float> cv(const Mat& m) { return awq::as_view(m); }

inline Mat rmsnorm(const Mat& x, const Vec& w, float eps) {
  Mat out(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const float var = x.row(t).squaredNorm() / static_cast<float>(x.cols());
    const float inv = 1.0f / std::sqrt(var + eps);
    for (Eigen::Index c = 0; c < x.cols(); ++c) out(t, c) = w(c) * (x(t, c) * inv);
  }
  return out;
}

inline Mat linear(const awq::MatrixView<const float>& x, const awq::MatrixView<const float>& w) {
  Mat y(x.rows(), w.rows());
  awq::backend::cpu::linear<float>(x, w, nullptr, awq::as_view(y));
  return y;
}

/// Rotates q or k [T, heads*D] in place with HF's rotate_half RoPE at positions 0..seq_len-1.
/// RoPE's (cos, sin) per position p < seq_len and frequency i < d/2, interleaved:
/// [(p·d/2 + i)·2] = cos, [+1] = sin, with f = p · θ^(−2i/d) in float. The CPU and GPU engines
/// both rotate with this table.
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

inline void apply_rope(Mat& m, int heads, const LlamaConfig& cfg, const Batch& b) {
  const int d = cfg.head_dim, half = d / 2;
  const std::vector<float> cs = rope_cos_sin(b.seq_len, d, cfg.rope_theta);
  for (int t = 0; t < b.tokens(); ++t) {
    const float* row = cs.data() + static_cast<std::size_t>(t % b.seq_len) * half * 2;
    for (int h = 0; h < heads; ++h) {
      float* v = m.data() + static_cast<Eigen::Index>(t) * m.cols() + h * d;
      for (int i = 0; i < half; ++i) {
        const float c = row[2 * i], s = row[2 * i + 1];
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c + (-x2) * s;
        v[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

/// Causal GQA attention context [T, n_heads*D] from the normed input and q, k, v weights.
inline Mat attention_context(const LlamaConfig& cfg, const Batch& b, const awq::MatrixView<const float>& xn,
                             const awq::MatrixView<const float>& wq, const awq::MatrixView<const float>& wk,
                             const awq::MatrixView<const float>& wv) {
  Mat q = linear(xn, wq), k = linear(xn, wk), v = linear(xn, wv);
  apply_rope(q, cfg.n_heads, cfg, b);
  apply_rope(k, cfg.n_kv_heads, cfg, b);
  const int d = cfg.head_dim, group = cfg.n_heads / cfg.n_kv_heads, L = b.seq_len;
  const float scaling = static_cast<float>(std::pow(static_cast<double>(d), -0.5));
  Mat ctx(b.tokens(), cfg.n_heads * d);
  Mat scores(L, L);
  for (int s = 0; s < b.n_seq; ++s) {
    for (int h = 0; h < cfg.n_heads; ++h) {
      const int kh = h / group;
      const auto Q = q.block(s * L, h * d, L, d);
      const auto K = k.block(s * L, kh * d, L, d);
      const auto V = v.block(s * L, kh * d, L, d);
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
      ctx.block(s * L, h * d, L, d).noalias() = scores * V;
    }
  }
  return ctx;
}

inline Mat swiglu(const Mat& gate, const Mat& up) {
  Mat a(gate.rows(), gate.cols());
  for (Eigen::Index i = 0; i < gate.size(); ++i) {
    const float g = gate.data()[i];
    a.data()[i] = (g / (1.0f + std::exp(-g))) * up.data()[i];
  }
  return a;
}

/// Inputs of every linear group, captured during the forward.
struct Captured {
  Mat x_attn;  // input of q, k, v (after input_layernorm)
  Mat x_o;     // input of o_proj (attention context)
  Mat x_mlp;   // input of gate, up (after post_attention_layernorm)
  Mat x_down;  // input of down_proj
};

inline Mat layer_forward(const LlamaConfig& cfg, const Batch& b, const LlamaLayer& l, const Mat& hidden,
                         Captured* cap = nullptr) {
  Mat xn = rmsnorm(hidden, l.ln_in, cfg.rms_eps);
  Mat ctx = attention_context(cfg, b, cv(xn), cv(l.wq), cv(l.wk), cv(l.wv));
  Mat h = hidden + linear(cv(ctx), cv(l.wo));
  Mat hn = rmsnorm(h, l.ln_post, cfg.rms_eps);
  Mat act = swiglu(linear(cv(hn), cv(l.wg)), linear(cv(hn), cv(l.wu)));
  Mat out = h + linear(cv(act), cv(l.wd));
  if (cap) *cap = Captured{std::move(xn), std::move(ctx), std::move(hn), std::move(act)};
  return out;
}

/// Block "self_attn" for the q,k,v scale search: weights {q, k, v}, o_proj kept as is.
struct AttentionBlock {
  const LlamaConfig* cfg;
  Batch batch;
  awq::MatrixView<const float> wo;
  awq::index_t output_cols() const { return wo.rows(); }
  void operator()(const awq::MatrixView<const float>& x, const std::vector<awq::MatrixView<const float>>& w,
                  const awq::MatrixView<float>& out) const {
    const Mat ctx = attention_context(*cfg, batch, x, w[0], w[1], w[2]);
    awq::backend::cpu::linear<float>(cv(ctx), wo, nullptr, out);
  }
};

/// Block "mlp" for the gate,up scale search: weights {gate, up}, down_proj kept as is.
struct MlpBlock {
  awq::MatrixView<const float> wd;
  awq::index_t output_cols() const { return wd.rows(); }
  void operator()(const awq::MatrixView<const float>& x, const std::vector<awq::MatrixView<const float>>& w,
                  const awq::MatrixView<float>& out) const {
    const Mat act = swiglu(linear(x, w[0]), linear(x, w[1]));
    awq::backend::cpu::linear<float>(cv(act), wd, nullptr, out);
  }
};

struct BlockAwqOptions {
  awq::QuantSpec quant{4, 128, true};
  bool duo_scaling = false;
  bool clip = true;
  /// Sequences whose block-output loss the scale search evaluates (0: all). mean|x| and the clip
  /// search still use every calibration token, so calibration size and search cost decouple.
  int search_seqs = 0;
  awq::ProgressCallback progress{};
  /// Scales to use instead of searching, by group ("qkv", "o", "gate_up", "down"): resuming
  /// from a checkpoint, or replaying another implementation's choice.
  std::map<std::string, std::vector<float>> given_scales{};
  /// Clip bounds [rows × groups] to apply instead of searching, by linear ("v", "o", "gate", "up", "down").
  std::map<std::string, std::vector<float>> given_clips{};
};

/// A clip result from given bounds (a checkpoint's), for w [rows, ·].
inline awq::ClipSearchResult<float> given_clip(const std::vector<float>& bounds, awq::index_t rows) {
  awq::detail::require(rows > 0 && bounds.size() % static_cast<std::size_t>(rows) == 0, "given clip bounds: ", bounds.size(),
                       " values for ", rows, " rows");
  awq::ClipSearchResult<float> c;
  c.rows = rows;
  c.groups = static_cast<awq::index_t>(bounds.size()) / rows;
  c.max_val = bounds;
  c.shrink_index.assign(bounds.size(), -1);  // not searched
  return c;
}

struct BlockAwqResult {
  std::map<std::string, awq::ScaleSearchResult<float>> scales;  // by group: "qkv", "o", "gate_up", "down"
  std::map<std::string, awq::ClipSearchResult<float>> clips;    // by linear: "v", "o", "gate", "up", "down"
};

inline awq::VectorView<const float> sv(const std::vector<float>& s) {
  return awq::make_vector<const float>(s.data(), static_cast<awq::index_t>(s.size()));
}

/// The whole per-block AWQ flow, as llm-awq's run_awq does it, modifying `l` in place
/// (scaled, folded and clamped; not yet quantized).
inline BlockAwqResult awq_block(const LlamaConfig& cfg, const Batch& b, LlamaLayer& l, const Mat& hidden,
                                const BlockAwqOptions& opt) {
  Captured cap;
  layer_forward(cfg, b, l, hidden, &cap);
  awq::ScaleSearchOptions so;
  so.quant = opt.quant;
  so.duo_scaling = opt.duo_scaling;
  so.progress = opt.progress;
  BlockAwqResult res;

  // 1. Every group searched on the original weights (or taken as given).
  const Batch sb{opt.search_seqs > 0 ? std::min(opt.search_seqs, b.n_seq) : b.n_seq, b.seq_len};
  auto search = [&](const std::string& key, const Mat& x, const std::vector<awq::Linear<float>>& lin, const auto& block) {
    so.name = "scales " + key;
    const auto it = opt.given_scales.find(key);
    if (it == opt.given_scales.end()) {
      awq::ActStats st(x.cols());
      st.update(cv(x));
      res.scales[key] = awq::search_scales(cv(x).middle_rows(0, sb.tokens()), lin, block, so, st.mean());
    } else {
      awq::ScaleSearchResult<float> given;
      given.scales = it->second;
      res.scales[key] = given;
    }
  };
  {
    std::vector<awq::Linear<float>> lin{{cv(l.wq), nullptr}, {cv(l.wk), nullptr}, {cv(l.wv), nullptr}};
    search("qkv", cap.x_attn, lin, AttentionBlock{&cfg, sb, cv(l.wo)});
  }
  if (l.wv.rows() == l.wo.rows() && l.wv.cols() == l.wo.cols()) {  // skipped for GQA, as the reference
    std::vector<awq::Linear<float>> lin{{cv(l.wo), nullptr}};
    search("o", cap.x_o, lin, awq::LinearsBlock<float>(lin));
  }
  {
    std::vector<awq::Linear<float>> lin{{cv(l.wg), nullptr}, {cv(l.wu), nullptr}};
    search("gate_up", cap.x_mlp, lin, MlpBlock{cv(l.wd)});
  }
  {
    std::vector<awq::Linear<float>> lin{{cv(l.wd), nullptr}};
    search("down", cap.x_down, lin, awq::LinearsBlock<float>(lin));
  }

  // 2. Fold every group: previous op ÷ s, consumers' input columns × s, cached inputs ÷ s.
  const awq::VectorView<float> none;
  {
    const auto s = sv(res.scales["qkv"].scales);
    awq::fold_into_norm(awq::as_vector_view(l.ln_in), none, s);
    for (Mat* w : {&l.wq, &l.wk, &l.wv}) awq::scale_linear_inputs(awq::as_view(*w), s);
    awq::scale_activations(awq::as_view(cap.x_attn), s);
  }
  if (res.scales.count("o")) {
    const auto s = sv(res.scales["o"].scales);
    awq::fold_into_linear_output(awq::as_view(l.wv), none, s);
    awq::scale_linear_inputs(awq::as_view(l.wo), s);
    awq::scale_activations(awq::as_view(cap.x_o), s);
  }
  {
    const auto s = sv(res.scales["gate_up"].scales);
    awq::fold_into_norm(awq::as_vector_view(l.ln_post), none, s);
    for (Mat* w : {&l.wg, &l.wu}) awq::scale_linear_inputs(awq::as_view(*w), s);
    awq::scale_activations(awq::as_view(cap.x_mlp), s);
  }
  {
    const auto s = sv(res.scales["down"].scales);
    awq::fold_into_linear_output(awq::as_view(l.wu), none, s);
    awq::scale_linear_inputs(awq::as_view(l.wd), s);
    awq::scale_activations(awq::as_view(cap.x_down), s);
  }

  // 3. Clip search on the scaled weights and inputs (q and k are never clipped), then clamp.
  if (opt.clip) {
    awq::ClipSearchOptions co;
    co.quant = opt.quant;
    co.progress = opt.progress;
    const std::vector<std::tuple<std::string, Mat*, const Mat*>> targets = {
        {"v", &l.wv, &cap.x_attn}, {"o", &l.wo, &cap.x_o}, {"gate", &l.wg, &cap.x_mlp},
        {"up", &l.wu, &cap.x_mlp}, {"down", &l.wd, &cap.x_down}};
    for (const auto& [name, w, x] : targets) {
      co.name = "clip " + name;
      const auto given = opt.given_clips.find(name);
      res.clips[name] = given != opt.given_clips.end() ? given_clip(given->second, w->rows())
                                                       : awq::search_clip(cv(*w), cv(*x), co);
    }
    for (const auto& [name, w, x] : targets) awq::apply_clip(awq::as_view(*w), res.clips[name].view());
  }
  return res;
}

}  // namespace awq_example
