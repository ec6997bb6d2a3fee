/// \file
/// \brief The model's ends on the host: the token embedding (`embed`), the final norm with the
///        output projection (`Head`) for perplexity over the last block's output, and the list of
///        the tensors outside the blocks (`model_tensors`).
///
/// Both read names from the architecture policy: `Arch::embed_name`, `Arch::final_norm_name`,
/// `Arch::lm_head_name(c)` and `Arch::final_norm<Backend>(c, w, x, out)`; optionally
/// `Arch::position_embed_name` and `Arch::position_offset` (learned absolute positions, added to
/// the token embedding: OPT) and `Arch::final_norm_bias_name` (a norm with a bias, then applied as
/// `Arch::final_norm<Backend>(c, w, bias, x, out)`).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/progress.hpp"
#include "awq/model/block.hpp"
#include "awq/model/config.hpp"

namespace awq::detail {
// Optional members of an architecture policy that the model's ends use.
template <class Arch, class = void>
struct has_positions : std::false_type {};
template <class Arch>
struct has_positions<Arch, std::void_t<decltype(Arch::position_embed_name), decltype(Arch::position_offset)>> : std::true_type {};
template <class Arch, class = void>
struct has_norm_bias : std::false_type {};
template <class Arch>
struct has_norm_bias<Arch, std::void_t<decltype(Arch::final_norm_bias_name)>> : std::true_type {};
}  // namespace awq::detail

namespace awq::model {

/// The embeddings [tokens, hidden] of `tokens`, from the source's embedding table; `tokens` are
/// sequences of `seq_len` (0: one sequence), whose positions restart at 0 in each sequence when
/// the architecture has learned positions.
template <class Arch, class Source>
std::vector<float> embed(const Source& src, const std::vector<int>& tokens, int seq_len = 0) {
  const ModelConfig& c = src.config();
  const std::vector<float> e = src.load(Arch::embed_name, {c.vocab, c.hidden});
  std::vector<float> h(tokens.size() * static_cast<std::size_t>(c.hidden));
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    detail::require(tokens[t] >= 0 && tokens[t] < c.vocab, "awq::model::embed: token id ", tokens[t], " at ", t,
                         " is outside the vocabulary of ", c.vocab);
    std::copy_n(e.begin() + static_cast<std::ptrdiff_t>(tokens[t]) * c.hidden, c.hidden,
                h.begin() + static_cast<std::ptrdiff_t>(t) * c.hidden);
  }
  if constexpr (detail::has_positions<Arch>::value) {
    const std::size_t L = seq_len > 0 ? static_cast<std::size_t>(seq_len) : tokens.size();
    detail::require(seq_len >= 0 && tokens.size() % std::max<std::size_t>(L, 1) == 0, "awq::model::embed: ", tokens.size(),
                         " tokens are not sequences of seq_len ", seq_len);
    detail::require(c.max_positions > 0 && L <= static_cast<std::size_t>(c.max_positions), "awq::model::embed: sequences of ",
                         L, " tokens exceed the ", c.max_positions, " learned positions (max_position_embeddings) of ", Arch::name);
    const std::int64_t rows = static_cast<std::int64_t>(c.max_positions) + Arch::position_offset;
    const std::vector<float> p = src.load(Arch::position_embed_name, {rows, c.hidden});
    for (std::size_t t = 0; t < tokens.size(); ++t) {
      const float* row = p.data() + (t % L + static_cast<std::size_t>(Arch::position_offset)) * static_cast<std::size_t>(c.hidden);
      float* o = h.data() + t * static_cast<std::size_t>(c.hidden);
      for (int i = 0; i < c.hidden; ++i) o[i] += row[i];
    }
  }
  return h;
}

/// The tensors of a checkpoint outside its blocks, in the order an export writes them: the token
/// embedding, the learned positions (when `Arch` has them), the final norm and its bias (when it
/// has one), and the output projection unless it is tied to the embedding.
template <class Arch>
std::vector<TensorSpec> model_tensors(const ModelConfig& c) {
  using V = std::vector<std::int64_t>;
  std::vector<TensorSpec> t = {{Arch::embed_name, V{c.vocab, c.hidden}}};
  if constexpr (detail::has_positions<Arch>::value)
    t.push_back({Arch::position_embed_name, V{static_cast<std::int64_t>(c.max_positions) + Arch::position_offset, c.hidden}});
  t.push_back({Arch::final_norm_name, V{c.hidden}});
  if constexpr (detail::has_norm_bias<Arch>::value) t.push_back({Arch::final_norm_bias_name, V{c.hidden}});
  if (!c.tied_embeddings) t.push_back({Arch::lm_head_name(c), V{c.vocab, c.hidden}});
  return t;
}

/// \brief Mean negative log-likelihood of the next tokens and its exp.
struct PerplexityResult {
  double nll = 0;      ///< mean over predicted tokens
  double ppl = 0;      ///< exp(nll)
  long predicted = 0;  ///< tokens predicted

  /// From each token's negative log-likelihood (0 at the last position of a sequence, which
  /// predicts nothing), summed in order.
  static PerplexityResult of_rows(const std::vector<double>& nll_rows, int seq_len) {
    PerplexityResult r;
    for (double v : nll_rows) r.nll += v;
    r.predicted = static_cast<long>(nll_rows.size() / static_cast<std::size_t>(seq_len)) * (seq_len - 1);
    r.nll /= static_cast<double>(r.predicted);
    r.ppl = std::exp(r.nll);
    return r;
  }
};

/// \brief The final norm and output projection of a model (on the host, fp32).
template <class Arch>
struct Head {
  ModelConfig cfg;              ///< model
  std::vector<float> norm;      ///< final norm weight [hidden]
  std::vector<float> lm_head;   ///< [vocab, hidden] (the embedding when tied)
  std::vector<float> norm_bias; ///< final norm bias [hidden], empty when the norm has none

  /// Loads them from a source.
  template <class Source>
  static Head load(const Source& src) {
    const ModelConfig& c = src.config();
    Head h{c, src.load(Arch::final_norm_name, {c.hidden}), src.load(Arch::lm_head_name(c), {c.vocab, c.hidden}), {}};
    if constexpr (detail::has_norm_bias<Arch>::value) h.norm_bias = src.load(Arch::final_norm_bias_name, {c.hidden});
    return h;
  }

  /// out = the final norm of x [tokens, hidden].
  void final_norm(const MatrixView<const float>& x, const MatrixView<float>& out) const {
    if constexpr (detail::has_norm_bias<Arch>::value)
      Arch::template final_norm<backend::cpu>(cfg, norm.data(), norm_bias.data(), x, out);
    else
      Arch::template final_norm<backend::cpu>(cfg, norm.data(), x, out);
  }

  /// Perplexity of `tokens` (n_seq · seq_len of them, as the batch of `hidden`, the last block's
  /// output [tokens, hidden]); the last position of each sequence predicts nothing. `progress`
  /// gets an event (phase `phase`, units: tokens) after each chunk of rows.
  ///
  /// Each thread takes a block of rows and walks the vocabulary in tiles: a tile of logits is
  /// one product, folded into a running log-sum-exp per row (exp in float, vectorised; sums and
  /// rescaling in double), so the logits never exist for more than one tile.
  PerplexityResult perplexity(const std::vector<float>& hidden, const std::vector<int>& tokens, int seq_len,
                              const ProgressCallback& progress = {}, const std::string& phase = "perplexity") const {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const index_t H = cfg.hidden, T = static_cast<index_t>(tokens.size()), V = cfg.vocab;
    detail::require(seq_len > 1 && T % seq_len == 0 && static_cast<index_t>(hidden.size()) == T * H,
                    "awq::model::Head::perplexity: ", tokens.size(), " tokens, ", hidden.size(), " hidden values, seq_len ",
                    seq_len);
    std::vector<float> hn(hidden.size());
    final_norm(make_row_major(hidden.data(), T, H), make_row_major(hn.data(), T, H));
    const auto X = backend::cpu::map(make_row_major<const float>(hn.data(), T, H));
    const auto W = backend::cpu::map(make_row_major(lm_head.data(), V, H));
    std::vector<double> nll_row(static_cast<std::size_t>(T), 0.0);
    // The head's weight packed once for the micro-kernels where they run, unless the copy would be
    // large (Eigen's product then, which packs tile by tile).
    std::unique_ptr<detail::gemm::PackedWeight> packed;
    if (detail::gemm::PackedWeight::available() && V * H <= kMaxPackedFloats) {
      packed = std::make_unique<detail::gemm::PackedWeight>(V, H);
      const auto w = make_row_major<const float>(lm_head.data(), V, H);
      backend::cpu::parallel_for(packed->panels(), [&](index_t p0, index_t p1) { packed->pack(w, p0, p1); });
    }
    const index_t chunk = kRows * backend::cpu::thread_count();
    detail::ProgressTracker tracker(progress, phase, static_cast<long>(T));
    tracker.start();
    for (index_t c0 = 0; c0 < T; c0 += chunk) {
      backend::cpu::parallel_for(std::min(chunk, T - c0), [&](index_t a, index_t e) {
        Mat logits;
        std::vector<double> mx, sum, target;
        for (index_t r0 = c0 + a; r0 < c0 + e; r0 += kRows) {
          const index_t nr = std::min(kRows, c0 + e - r0);
          mx.assign(static_cast<std::size_t>(nr), -std::numeric_limits<double>::infinity());
          sum.assign(mx.size(), 0.0);
          target.assign(mx.size(), 0.0);
          for (index_t v0 = 0; v0 < V; v0 += kVocabTile) {
            const index_t nv = std::min(kVocabTile, V - v0);
            logits.resize(nr, nv);
            if (packed) {
              const index_t pw = packed->panel_width();
              packed->multiply(make_row_major<const float>(hn.data() + r0 * H, nr, H), make_row_major(logits.data(), nr, nv), v0 / pw,
                               (v0 + nv + pw - 1) / pw);
            } else {
              logits.noalias() = X.middleRows(r0, nr) * W.middleRows(v0, nv).transpose();
            }
            for (index_t i = 0; i < nr; ++i) {
              const index_t t = r0 + i;
              if (t % seq_len == seq_len - 1) continue;
              const auto row = logits.row(i).array();
              const float m = row.maxCoeff();
              double s = 0;
              for (index_t j = 0; j < nv; j += kSumBlock) s += static_cast<double>((row.segment(j, std::min(kSumBlock, nv - j)) - m).exp().sum());
              const auto u = static_cast<std::size_t>(i);
              const double m_new = std::max(mx[u], static_cast<double>(m));
              sum[u] = sum[u] * std::exp(mx[u] - m_new) + s * std::exp(static_cast<double>(m) - m_new);
              mx[u] = m_new;
              const index_t next = tokens[static_cast<std::size_t>(t + 1)];
              if (next >= v0 && next < v0 + nv) target[u] = static_cast<double>(logits(i, next - v0));
            }
          }
          for (index_t i = 0; i < nr; ++i) {
            const auto u = static_cast<std::size_t>(i);
            if ((r0 + i) % seq_len != seq_len - 1) nll_row[static_cast<std::size_t>(r0 + i)] = -(target[u] - mx[u] - std::log(sum[u]));
          }
        }
      }, kRows);
      tracker.step(static_cast<long>(std::min(T, c0 + chunk)));
    }
    return PerplexityResult::of_rows(nll_row, seq_len);
  }

 private:
  static constexpr index_t kRows = 512;        // rows per product: the head's weight is read once per block of rows
  static constexpr index_t kVocabTile = 2048;  // logits per row kept at once (a tile is kRows × this; whole panels)
  static constexpr index_t kSumBlock = 256;    // exp terms summed in float before the double sum
  static constexpr index_t kMaxPackedFloats = 64 << 20;  // a packed copy of the head up to 256 MB
  static_assert(kVocabTile % 32 == 0, "a vocabulary tile is whole panels of the packed head");
};

/// \brief Head::perplexity where a backend computes it: `HeadEval<Backend>::perplexity(head,
///        hidden, tokens, seq_len, progress, phase)`, same arguments and result. Declared only:
///        backend::cpu is below, backend::cuda in awq/model/head.cuh.
template <class Backend>
struct HeadEval;

/// \brief On the host: Head::perplexity itself.
template <>
struct HeadEval<backend::cpu> {
  /// head.perplexity(hidden, tokens, seq_len, progress, phase).
  template <class Arch>
  static PerplexityResult perplexity(const Head<Arch>& head, const std::vector<float>& hidden, const std::vector<int>& tokens,
                                     int seq_len, const ProgressCallback& progress = {}, const std::string& phase = "perplexity") {
    return head.perplexity(hidden, tokens, seq_len, progress, phase);
  }
};

}  // namespace awq::model
