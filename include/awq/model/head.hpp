/// \file
/// \brief The model's ends on the host: the token embedding (`embed`), and the final norm with
///        the output projection (`Head`) for perplexity over the last block's output.
///
/// Both read names from the architecture policy: `Arch::embed_name`, `Arch::final_norm_name`,
/// `Arch::lm_head_name(c)` and `Arch::final_norm<Backend>(c, w, x, out)`; optionally
/// `Arch::position_embed_name` and `Arch::position_offset` (learned absolute positions, added to
/// the token embedding: OPT) and `Arch::final_norm_bias_name` (a norm with a bias, then applied as
/// `Arch::final_norm<Backend>(c, w, bias, x, out)`).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "awq/backend/cpu.hpp"
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
  /// output [tokens, hidden]); the last position of each sequence predicts nothing.
  PerplexityResult perplexity(const std::vector<float>& hidden, const std::vector<int>& tokens, int seq_len) const {
    const index_t H = cfg.hidden, T = static_cast<index_t>(tokens.size());
    detail::require(seq_len > 1 && T % seq_len == 0 && static_cast<index_t>(hidden.size()) == T * H,
                    "awq::model::Head::perplexity: ", tokens.size(), " tokens, ", hidden.size(), " hidden values, seq_len ",
                    seq_len);
    std::vector<float> hn(hidden.size());
    final_norm(make_row_major(hidden.data(), T, H), make_row_major(hn.data(), T, H));
    const index_t chunk = 256;
    std::vector<double> nll_row(static_cast<std::size_t>(T), 0.0);
    std::vector<float> logits;
    const auto W = make_row_major(lm_head.data(), static_cast<index_t>(cfg.vocab), H);
    for (index_t t0 = 0; t0 < T; t0 += chunk) {
      const index_t nt = std::min(chunk, T - t0);
      logits.resize(static_cast<std::size_t>(nt * cfg.vocab));
      const auto L = make_row_major(logits.data(), nt, static_cast<index_t>(cfg.vocab));
      backend::cpu::linear<float>(make_row_major<const float>(hn.data() + t0 * H, nt, H), W, nullptr, L);
      backend::cpu::parallel_for(nt, [&](index_t a, index_t e) {
        for (index_t i = a; i < e; ++i) {
          const index_t t = t0 + i;
          if ((t % seq_len) == seq_len - 1) continue;
          float mx = L(i, 0);
          for (index_t v = 1; v < L.cols(); ++v) mx = std::max(mx, L(i, v));
          double sum = 0;
          for (index_t v = 0; v < L.cols(); ++v) sum += std::exp(static_cast<double>(L(i, v) - mx));
          nll_row[static_cast<std::size_t>(t)] =
              -(static_cast<double>(L(i, tokens[static_cast<std::size_t>(t + 1)]) - mx) - std::log(sum));
        }
      });
    }
    return PerplexityResult::of_rows(nll_row, seq_len);
  }
};

/// \brief Head::perplexity where a backend computes it: `HeadEval<Backend>::perplexity(head,
///        hidden, tokens, seq_len)`, same arguments and result. Declared only: backend::cpu is
///        below, backend::cuda in awq/model/head.cuh.
template <class Backend>
struct HeadEval;

/// \brief On the host: Head::perplexity itself.
template <>
struct HeadEval<backend::cpu> {
  /// head.perplexity(hidden, tokens, seq_len).
  template <class Arch>
  static PerplexityResult perplexity(const Head<Arch>& head, const std::vector<float>& hidden, const std::vector<int>& tokens,
                                     int seq_len) {
    return head.perplexity(hidden, tokens, seq_len);
  }
};

}  // namespace awq::model
