// A Llama-family decode engine on the library's public API: every block's weights held once, a
// KV cache, the prompt prefilled in one pass and then one token at a time. The step is written
// once over a linear-layer policy: `FpLinear` (fp32, Eigen) or `W4Linear` (llama/w4_linear.hpp:
// awq::W4A16LinearCpu on AutoAWQ GEMM weights, repacked once at load); the GPU engine
// (llama/engine_cuda.cuh) has its own. The output projection is HeadLinear<L>'s: fp32 for FpLinear,
// fp16 for W4Linear (llama/f16_linear.hpp), as an AWQ checkpoint stores it. Norms, SwiGLU
// and the residual add are awq::model::LlamaKernels', the RoPE table awq::model::rope_cos_sin.
//
// A linear policy L is constructible as L(weights [N, K] fp32, N, K, bias) and
// L(awq::AwqGemmWeights, bias) — or only one of them, which then limits where it can load from —
// and provides in_features(), out_features() and operator()(x [M, K], y [M, N]).
#pragma once

#include <awq/awq.hpp>
#include <awq/model/arch/llama.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace awq_example {

/// The weight [n, k] of a 4-bit AutoAWQ GEMM linear, dequantized: (q − z) · scale.
inline std::vector<float> dequantize_awq_gemm(const awq::AwqGemmWeights& q) {
  const awq::index_t n = q.n(), k = q.k(), g = q.scales.rows();
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * k)), zeros(static_cast<std::size_t>(n * g));
  std::vector<float> scales(zeros.size()), w(codes.size());
  awq::unpack_awq_gemm(q.qweight, awq::make_row_major(codes.data(), n, k));
  awq::unpack_awq_gemm(q.qzeros, awq::make_row_major(zeros.data(), n, g));
  awq::transpose_scales(q.scales, awq::make_row_major(scales.data(), n, g));
  awq::dequantize<float>(4, awq::make_row_major<const std::uint8_t>(codes.data(), n, k), awq::make_row_major(scales.data(), n, g),
                         awq::make_row_major(zeros.data(), n, g), awq::make_row_major(w.data(), n, k));
  return w;
}

/// y [M, N] = x [M, K] · Wᵀ (+ bias) in fp32 with W [N, K]. The output columns are split over the
/// cores: a decode step is one row, which awq::backend::cpu::linear would run on one thread. A
/// part holds at least 512 KB of weights, as the W4A16 and fp16 kernels' least parts.
class FpLinear {
 public:
  FpLinear(std::vector<float> w, awq::index_t out, awq::index_t in, std::vector<float> bias = {})
      : FpLinear(std::make_shared<const std::vector<float>>(std::move(w)), out, in, std::move(bias)) {}

  /// Shares `w` (a tied output projection reads the embedding table).
  FpLinear(std::shared_ptr<const std::vector<float>> w, awq::index_t out, awq::index_t in, std::vector<float> bias = {})
      : w_(std::move(w)), bias_(std::move(bias)), n_(out), k_(in) {
    awq::detail::require(static_cast<awq::index_t>(w_->size()) == out * in, "FpLinear: ", w_->size(), " weights for ", out, " x ", in);
    awq::detail::require(bias_.empty() || static_cast<awq::index_t>(bias_.size()) == out, "FpLinear: bias of ", bias_.size(),
                         " for ", out, " outputs");
  }

  /// The dequantized weights (q − z)·s of an AutoAWQ GEMM linear: the fp32 forward of a checkpoint.
  FpLinear(const awq::AwqGemmWeights& q, std::vector<float> bias = {}) : FpLinear(dequantize_awq_gemm(q), q.n(), q.k(), std::move(bias)) {}

  awq::index_t in_features() const { return k_; }   ///< K
  awq::index_t out_features() const { return n_; }  ///< N
  const std::vector<float>& weights() const { return *w_; }  ///< W [N, K]

  void operator()(const awq::MatrixView<const float>& x, const awq::MatrixView<float>& y) const {
    awq::detail::require(x.cols() == k_ && y.rows() == x.rows() && y.cols() == n_, "FpLinear: x ", x.rows(), "x", x.cols(), ", y ",
                         y.rows(), "x", y.cols(), " for weights ", n_, "x", k_);
    const auto X = awq::backend::cpu::map(x);
    auto Y = awq::backend::cpu::map(y);
    const auto W = awq::backend::cpu::map(awq::make_row_major<const float>(w_->data(), n_, k_));
    awq::backend::cpu::parallel_for(
        n_,
        [&](awq::index_t n0, awq::index_t n1) {
          Y.middleCols(n0, n1 - n0).noalias() = X * W.middleRows(n0, n1 - n0).transpose();
          if (!bias_.empty())
            for (awq::index_t t = 0; t < Y.rows(); ++t)
              for (awq::index_t n = n0; n < n1; ++n) Y(t, n) += bias_[static_cast<std::size_t>(n)];
        },
        std::max<awq::index_t>(1, (awq::index_t{1} << 17) / k_));
  }

 private:
  std::shared_ptr<const std::vector<float>> w_;
  std::vector<float> bias_;
  awq::index_t n_, k_;
};

/// One decoder block's weights.
template <class Linear>
struct LlamaLayer {
  std::vector<float> attn_norm, mlp_norm;     ///< input_layernorm, post_attention_layernorm [hidden]
  Linear q, k, v, o, gate, up, down;          ///< the seven projections
};

/// The output projection's linear for blocks of `Linear`: FpLinear (fp32) unless a policy names
/// another — W4Linear's is F16Linear (llama/w4_linear.hpp), fp16 as its checkpoint stores it.
/// Constructible as Head(std::shared_ptr<const std::vector<float>> weights [N, K], N, K).
template <class Linear>
struct HeadLinear {
  using type = FpLinear;  ///< the output projection's linear
};

/// A whole model's weights for the engine: the embedding, the blocks, the final norm and the
/// output projection (HeadLinear<Linear>; the embedding's values when tied).
template <class Linear>
struct LlamaWeights {
  awq::model::ModelConfig cfg;                    ///< hyper-parameters
  std::shared_ptr<const std::vector<float>> embed;  ///< [vocab, hidden]
  std::vector<LlamaLayer<Linear>> layers;         ///< blocks
  std::vector<float> norm;                        ///< final RMSNorm [hidden]
  std::unique_ptr<typename HeadLinear<Linear>::type> lm_head;  ///< [vocab, hidden]
};

/// \brief {make(0), …, make(n − 1)}, built `threads` at a time (1: in order on this thread); the
///        first exception, by index, is rethrown once all are done.
template <class Make>
auto build_in_parallel(int n, int threads, Make&& make) -> std::vector<decltype(make(0))> {
  using T = decltype(make(0));
  std::vector<T> out;
  if (threads <= 1) {
    for (int i = 0; i < n; ++i) out.push_back(make(i));
    return out;
  }
  std::vector<std::unique_ptr<T>> built(static_cast<std::size_t>(n));
  std::vector<std::exception_ptr> errors(built.size());
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < std::min(threads, n); ++t)
    pool.emplace_back([&] {
      for (int i; (i = next++) < n;) try {
          built[static_cast<std::size_t>(i)] = std::make_unique<T>(make(i));
        } catch (...) {
          errors[static_cast<std::size_t>(i)] = std::current_exception();
        }
    });
  for (auto& t : pool) t.join();
  for (std::size_t i = 0; i < built.size(); ++i) {
    if (errors[i]) std::rethrow_exception(errors[i]);
    out.push_back(std::move(*built[i]));
  }
  return out;
}

/// \brief The weights of `src` (an awq::model weight source: GgufSource, HfSource, …) for the
///        engine. `make(name, shape, bias)` builds each linear from its tensors in HF naming
///        ("model.layers.0.self_attn.q_proj"); biases are read here when the config has them.
///        With `threads` > 1 the blocks are built that many at a time (`src.load` and `make`
///        must then be safe to call from several threads).
template <class Linear, class Source, class Make>
LlamaWeights<Linear> load_weights(const Source& src, Make&& make, int threads = 1) {
  using awq::model::Llama;
  const awq::model::ModelConfig& c = src.config();
  Llama::check(c);
  LlamaWeights<Linear> w;
  w.cfg = c;
  w.embed = std::make_shared<const std::vector<float>>(src.load(Llama::embed_name, {c.vocab, c.hidden}));
  w.norm = src.load(Llama::final_norm_name, {c.hidden});
  w.lm_head = std::make_unique<typename HeadLinear<Linear>::type>(c.tied_embeddings ? w.embed
                                                           : std::make_shared<const std::vector<float>>(src.load("lm_head.weight", {c.vocab, c.hidden})),
                                         c.vocab, c.hidden);
  std::vector<awq::model::TensorSpec> specs = Llama::block_tensors(c);
  const auto shape_of = [&](const std::string& n) {
    for (const auto& s : specs)
      if (s.name == n) return s.shape;
    return std::vector<std::int64_t>{};
  };
  const auto layer = [&](int l) {
    const std::string p = Llama::block_prefix(l);
    const auto lin = [&](const char* name) {
      const std::string n(name);
      const auto bs = shape_of(n + ".bias");
      return make(p + n, shape_of(n + ".weight"), bs.empty() ? std::vector<float>{} : src.load(p + n + ".bias", bs));
    };
    return LlamaLayer<Linear>{src.load(p + "input_layernorm.weight", {c.hidden}), src.load(p + "post_attention_layernorm.weight", {c.hidden}),
                              lin("self_attn.q_proj"), lin("self_attn.k_proj"), lin("self_attn.v_proj"), lin("self_attn.o_proj"),
                              lin("mlp.gate_proj"), lin("mlp.up_proj"), lin("mlp.down_proj")};
  };
  w.layers = build_in_parallel(c.layers, threads, layer);
  return w;
}

/// The weights of a full-precision source (GGUF, HF directory), every linear a Linear(fp32 weights,
/// out, in, bias): FpLinear, or a GPU engine's; `threads` as load_weights'.
template <class Linear = FpLinear, class Source>
LlamaWeights<Linear> load_fp_weights(const Source& src, int threads = 1) {
  return load_weights<Linear>(
      src,
      [&](const std::string& name, const std::vector<std::int64_t>& shape, std::vector<float> bias) {
        return Linear(src.load(name + ".weight", shape), shape[0], shape[1], std::move(bias));
      },
      threads);
}

/// \brief A decode engine over `LlamaWeights<Linear>`: a KV cache of `capacity` positions,
///        `forward` appends tokens (the prompt at once, then one at a time) and returns logits.
template <class Linear>
class LlamaEngine {
 public:
  /// \pre `w` outlives the engine.
  LlamaEngine(const LlamaWeights<Linear>& w, int capacity)
      : w_(&w), cap_(capacity), kvd_(static_cast<awq::index_t>(w.cfg.n_kv_heads) * w.cfg.head_dim),
        rope_(awq::model::rope_cos_sin(capacity, w.cfg.head_dim, w.cfg.rope_theta)) {
    awq::detail::require(capacity > 0, "LlamaEngine: capacity ", capacity, " must be positive");
    const std::size_t per = static_cast<std::size_t>(capacity) * static_cast<std::size_t>(kvd_);
    k_.assign(w.layers.size(), std::vector<float>(per));
    v_.assign(w.layers.size(), std::vector<float>(per));
  }

  int position() const { return pos_; }  ///< tokens in the cache
  int capacity() const { return cap_; }  ///< positions the cache holds
  void reset() { pos_ = 0; }             ///< forgets the cache

  /// Appends `tokens` at the cache's end and returns the logits [vocab] of the last one, or with
  /// `all` those of every appended token [tokens, vocab].
  std::vector<float> forward(const std::vector<int>& tokens, bool all = false) {
    using awq::index_t;
    using K = awq::model::LlamaKernels<awq::backend::cpu>;
    const auto& c = w_->cfg;
    const index_t T = static_cast<index_t>(tokens.size()), H = c.hidden, qd = static_cast<index_t>(c.n_heads) * c.head_dim;
    awq::detail::require(T > 0 && pos_ + T <= cap_, "LlamaEngine::forward: ", T, " tokens at position ", pos_, " exceed the cache of ",
                         cap_, " positions");
    std::vector<float> x(static_cast<std::size_t>(T * H)), h(x.size()), xn(x.size()), q(static_cast<std::size_t>(T * qd)),
        ctx(q.size()), g(static_cast<std::size_t>(T * c.intermediate)), u(g.size());
    for (index_t t = 0; t < T; ++t) {
      const int id = tokens[static_cast<std::size_t>(t)];
      awq::detail::require(id >= 0 && id < c.vocab, "LlamaEngine::forward: token id ", id, " is outside the vocabulary of ", c.vocab);
      std::copy_n(w_->embed->begin() + static_cast<std::ptrdiff_t>(id) * H, H, x.begin() + t * H);
    }
    const auto M = [T](std::vector<float>& b, index_t cols) { return awq::make_row_major(b.data(), T, cols); };
    const auto C = [T](const std::vector<float>& b, index_t cols) { return awq::make_row_major<const float>(b.data(), T, cols); };
    for (std::size_t l = 0; l < w_->layers.size(); ++l) {
      const LlamaLayer<Linear>& L = w_->layers[l];
      const auto kc = awq::make_row_major(k_[l].data() + pos_ * kvd_, T, kvd_), vc = awq::make_row_major(v_[l].data() + pos_ * kvd_, T, kvd_);
      K::rmsnorm(C(x, H), L.attn_norm.data(), c.norm_eps, M(xn, H));
      L.q(C(xn, H), M(q, qd));
      L.k(C(xn, H), kc);
      L.v(C(xn, H), vc);
      rotate(q.data(), T, c.n_heads, qd);
      rotate(kc.data(), T, c.n_kv_heads, kvd_);
      attend(l, q, T, ctx);
      L.o(C(ctx, qd), M(xn, H));
      K::add(C(x, H), C(xn, H), M(h, H));
      K::rmsnorm(C(h, H), L.mlp_norm.data(), c.norm_eps, M(xn, H));
      L.gate(C(xn, H), M(g, c.intermediate));
      L.up(C(xn, H), M(u, c.intermediate));
      K::swiglu(C(g, c.intermediate), C(u, c.intermediate), M(g, c.intermediate));
      L.down(C(g, c.intermediate), M(xn, H));
      K::add(C(h, H), C(xn, H), M(x, H));
    }
    pos_ += static_cast<int>(T);
    const index_t rows = all ? T : 1;
    const auto last = awq::make_row_major<const float>(x.data() + (T - rows) * H, rows, H);
    K::rmsnorm(last, w_->norm.data(), c.norm_eps, awq::make_row_major(xn.data(), rows, H));
    std::vector<float> logits(static_cast<std::size_t>(rows * c.vocab));
    (*w_->lm_head)(awq::make_row_major<const float>(xn.data(), rows, H), awq::make_row_major(logits.data(), rows, c.vocab));
    return logits;
  }

 private:
  // rotate_half RoPE of T rows [T, heads·d] at positions pos_, pos_+1, … (the table is per position).
  void rotate(float* m, awq::index_t T, int heads, awq::index_t stride) const {
    const int d = w_->cfg.head_dim, half = d / 2;
    for (awq::index_t t = 0; t < T; ++t) {
      const float* cs = rope_.data() + static_cast<std::size_t>(pos_ + t) * static_cast<std::size_t>(d);
      for (int hh = 0; hh < heads; ++hh) {
        float* v = m + t * stride + hh * d;
        for (int i = 0; i < half; ++i) {
          const float co = cs[2 * i], si = cs[2 * i + 1], x1 = v[i], x2 = v[i + half];
          v[i] = x1 * co + (-x2) * si;
          v[i + half] = x2 * co + x1 * si;
        }
      }
    }
  }

  // ctx [T, n_heads·d]: causal softmax(q·kᵀ/√d)·v over the cache, heads split over the cores
  // once a part has 2^16 multiply-adds or more: a decode step over a short context is a few
  // microseconds of work, less than handing half of it to another thread costs.
  void attend(std::size_t l, const std::vector<float>& q, awq::index_t T, std::vector<float>& ctx) const {
    using Strided = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>>;
    const auto& c = w_->cfg;
    const int d = c.head_dim, group = c.n_heads / c.n_kv_heads;
    const awq::index_t qd = static_cast<awq::index_t>(c.n_heads) * d;
    const float scaling = static_cast<float>(std::pow(static_cast<double>(d), -0.5));
    const awq::index_t per_head = 2 * T * (pos_ + T) * d;  // q·kᵀ and the weighted sum of v, every row
    const awq::index_t min_heads = std::max<awq::index_t>(1, (awq::index_t{1} << 16) / per_head);
    awq::backend::cpu::parallel_for(c.n_heads, [&](awq::index_t h0, awq::index_t h1) {
      Eigen::VectorXf s;
      for (awq::index_t hh = h0; hh < h1; ++hh) {
        const awq::index_t kh = hh / group;
        for (awq::index_t t = 0; t < T; ++t) {
          const awq::index_t len = pos_ + t + 1;
          const Strided Kc(k_[l].data() + kh * d, len, d, Eigen::OuterStride<>(kvd_));
          const Strided Vc(v_[l].data() + kh * d, len, d, Eigen::OuterStride<>(kvd_));
          const Eigen::Map<const Eigen::VectorXf> qv(q.data() + t * qd + hh * d, d);
          s.noalias() = Kc * qv;
          s *= scaling;
          const float mx = s.maxCoeff();
          float sum = 0.0f;
          for (awq::index_t j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - mx));
          s /= sum;
          Eigen::Map<Eigen::VectorXf>(ctx.data() + t * qd + hh * d, d).noalias() = Vc.transpose() * s;
        }
      }
    }, min_heads);
  }

  const LlamaWeights<Linear>* w_;
  int cap_, pos_ = 0;
  awq::index_t kvd_;
  std::vector<float> rope_;
  std::vector<std::vector<float>> k_, v_;  // per layer [capacity, n_kv_heads·d], rotated keys
};

/// \brief How the next token is chosen: greedy (temperature 0) or sampled from softmax(logits / T)
///        restricted to the smallest set of most likely tokens whose probability reaches top_p.
struct SamplingOptions {
  float temperature = 0.0f;  ///< 0: greedy
  float top_p = 1.0f;        ///< nucleus, (0, 1]
  std::uint64_t seed = 0;    ///< the same seed gives the same tokens
};

/// \brief Picks tokens from logits; deterministic for a seed (its own 64-bit generator and a
///        53-bit uniform, not std::uniform_real_distribution, whose output is the library's choice).
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& o) : o_(o), rng_(o.seed) {
    awq::detail::require(o.temperature >= 0.0f && std::isfinite(o.temperature), "Sampler: temperature ", o.temperature,
                         " (accepted: 0 = greedy, or > 0)");
    awq::detail::require(o.top_p > 0.0f && o.top_p <= 1.0f, "Sampler: top_p ", o.top_p, " (accepted: 0 < top_p <= 1)");
  }

  int operator()(const std::vector<float>& logits) {
    const std::size_t n = logits.size();
    const auto best = static_cast<std::size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (o_.temperature == 0.0f) return static_cast<int>(best);
    std::vector<double> p(n);
    for (std::size_t i = 0; i < n; ++i) p[i] = std::exp((static_cast<double>(logits[i]) - logits[best]) / o_.temperature);
    std::vector<int> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)]; });
    const double total = std::accumulate(p.begin(), p.end(), 0.0);
    double kept = 0;
    std::size_t m = 0;
    while (m < n && (m == 0 || kept < o_.top_p * total)) kept += p[static_cast<std::size_t>(order[m++])];
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * kept;
    double acc = 0;
    for (std::size_t i = 0; i + 1 < m; ++i)
      if ((acc += p[static_cast<std::size_t>(order[i])]) > u) return order[i];
    return order[m - 1];
  }

 private:
  SamplingOptions o_;
  std::mt19937_64 rng_;
};

/// \brief What a generation produced and how fast.
struct Generation {
  std::vector<int> tokens;  ///< the new tokens (EOS not included)
  bool stopped_at_eos = false;
  double prefill_s = 0;     ///< the prompt's forward
  double decode_s = 0;      ///< every later forward
  int decode_steps = 0;     ///< forwards of one token
};

/// Throws awq::Error unless every value of `logits` (a step's, computed at `position`) is finite.
inline void check_finite_logits(const std::vector<float>& logits, int position) {
  for (std::size_t i = 0; i < logits.size(); ++i)
    if (!std::isfinite(logits[i]))
      throw awq::Error(awq::detail::concat("the model's logits at position ", position, " are not finite (",
                                           std::isnan(logits[i]) ? "NaN" : logits[i] > 0 ? "+Inf" : "-Inf", " for token ", i,
                                           "; NaN or Inf in its weights?)"));
}

/// \brief Prefills `prompt`, then picks up to `max_new` tokens one at a time, stopping at `eos`
///        (−1: none); `on_token(id)` is called with each new token as it is chosen. Engine:
///        LlamaEngine or a GPU engine with the same forward/position/capacity.
template <class Engine, class OnToken>
Generation generate(Engine& e, const std::vector<int>& prompt, int max_new, Sampler& pick, int eos, OnToken&& on_token) {
  using Clock = std::chrono::steady_clock;
  awq::detail::require(!prompt.empty(), "generate: the prompt has no tokens");
  awq::detail::require(max_new >= 1 && e.position() + static_cast<long>(prompt.size()) + max_new - 1 <= e.capacity(), "generate: ",
                       prompt.size(), " prompt tokens and ", max_new, " new ones do not fit the cache of ", e.capacity());
  Generation g;
  auto t0 = Clock::now();
  std::vector<float> logits = e.forward(prompt);
  g.prefill_s = std::chrono::duration<double>(Clock::now() - t0).count();
  for (;;) {
    // NaN or Inf in the weights reach the logits: argmax would pick token 0 every step and print
    // garbage with success. One pass over the vocabulary on the host (the GPU engine's logits are
    // copied back already) against a step's whole forward.
    check_finite_logits(logits, e.position() - 1);
    const int id = pick(logits);
    if (id == eos) {
      g.stopped_at_eos = true;
      break;
    }
    g.tokens.push_back(id);
    on_token(id);
    if (static_cast<int>(g.tokens.size()) == max_new) break;
    t0 = Clock::now();
    logits = e.forward({id});
    g.decode_s += std::chrono::duration<double>(Clock::now() - t0).count();
    ++g.decode_steps;
  }
  return g;
}

}  // namespace awq_example
