/// \file
/// \brief The activation-aware scale search (AWQ paper Eq. 4–5), written once and generic over
///        the backend policy.
///
/// For a group of linears that share one input X (q,k,v after the input norm; gate,up after
/// the post-attention norm; a single o_proj or down_proj), and the block whose output is
/// judged, it tries per-input-channel scales s = mean|x|^α (optionally divided by
/// mean-normalised |w|^(1-α), AutoAWQ's "duo scaling") over a grid of α and keeps the one
/// whose pseudo-quantized weights Q(W·diag(s))·diag(s)⁻¹ give the smallest block-output MSE.
/// Reference semantics: the 1e-4 floors, the sqrt(max·min) normalisation, non-finite scales
/// set to 1, the first strict minimum wins; the loss is accumulated in double.
///
/// Beyond the reference (off by default): `refine_steps` local steps after the grid try α ± h
/// around the best point, h = 1/(2·n_grid) halved each step, keeping strict improvements; the
/// grid's coarse steps (0.05) leave up to half a step of α unexplored where the loss is smooth.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/progress.hpp"
#include "awq/quantizer.hpp"
#include "awq/stats.hpp"
#include "awq/view.hpp"

namespace awq {

/// \brief One linear layer of a scale group: weight [out, in] and optional bias [out].
template <class S>
struct Linear {
  MatrixView<const S> weight;  ///< [out_features, in_features], any layout
  const S* bias = nullptr;     ///< out_features values, or null
};

/// \brief Options of search_scales; the defaults are the reference's.
struct ScaleSearchOptions {
  QuantSpec quant{};               ///< quantizer the candidates are judged with
  int n_grid = 20;                 ///< α = i / n_grid for i in [0, n_grid)
  bool include_alpha_one = false;  ///< also try α = 1 (the reference stops at (n_grid-1)/n_grid)
  bool duo_scaling = false;        ///< AutoAWQ's s = x^α / (w^(1-α) + 1e-4); llm-awq: off
  int refine_steps = 0;            ///< local α steps after the grid (0: the reference); 2 block evaluations each
  ProgressCallback progress{};     ///< called after each grid point
  std::string name = "scale search";  ///< phase name in progress events
};

/// \brief What the scale search chose, and the whole loss curve.
template <class S>
struct ScaleSearchResult {
  int best_index = -1;          ///< index into alphas / losses
  double best_alpha = 0.0;      ///< alphas[best_index]
  std::vector<S> scales;        ///< per input channel, to fold (awq/search/fold.hpp)
  std::vector<double> alphas;   ///< the grid, then the refinement's points
  std::vector<double> losses;   ///< block-output MSE per point
};

/// \brief The built-in block "single linear" / "concatenated linears": y = [x·W₀ᵀ+b₀ | x·W₁ᵀ+b₁ | …].
///
/// A block is any callable `void(const MatrixView<const S>& x, const std::vector<MatrixView<const S>>& weights,
/// const MatrixView<acc_t<S>>& out)` with a member `index_t output_cols() const`; `out` is
/// [x.rows(), output_cols()], in the memory of the backend the search runs on (host for
/// backend::cpu, device for backend::cuda). search_scales hands the block row-major views with
/// contiguous rows only, whatever the caller's layout. An engine plugs in its own attention or MLP
/// the same way (examples/custom_block.cpp).
template <class S, class Backend = backend::cpu>
struct LinearsBlock {
  std::vector<const S*> biases;   ///< one per linear (null for none)
  std::vector<index_t> outs;      ///< out_features per linear

  /// Built from the linears of a scale group.
  explicit LinearsBlock(const std::vector<Linear<S>>& linears) {
    for (const auto& l : linears) {
      biases.push_back(l.bias);
      outs.push_back(l.weight.rows());
    }
  }
  /// Sum of out_features.
  index_t output_cols() const {
    index_t n = 0;
    for (index_t o : outs) n += o;
    return n;
  }
  /// Evaluates the block.
  void operator()(const MatrixView<const S>& x, const std::vector<MatrixView<const S>>& weights,
                  const MatrixView<acc_t<S>>& out) const {
    index_t off = 0;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      Backend::linear(x, weights[i], biases[i], out.middle_cols(off, outs[i]));
      off += outs[i];
    }
  }
};

/// \brief Candidate scales for one α, exactly as the reference forms them (in S precision).
template <class S>
void scales_for_alpha(double alpha, const std::vector<S>& x_mean, const std::vector<S>* w_mean, std::vector<S>& s) {
  s.resize(x_mean.size());
  const S a = static_cast<S>(alpha), b = static_cast<S>(1.0 - alpha);
  bool nan = false;
  S mx = -std::numeric_limits<S>::infinity(), mn = std::numeric_limits<S>::infinity();
  for (std::size_t c = 0; c < s.size(); ++c) {
    S v = std::pow(x_mean[c], a);
    if (w_mean) v = v / (std::pow((*w_mean)[c], b) + static_cast<S>(1e-4));
    v = v < static_cast<S>(1e-4) ? static_cast<S>(1e-4) : v;  // clamp(min=1e-4); NaN stays NaN
    nan = nan || std::isnan(v);
    mx = v > mx ? v : mx;
    mn = v < mn ? v : mn;
    s[c] = v;
  }
  const S norm = nan ? std::numeric_limits<S>::quiet_NaN() : std::sqrt(mx * mn);
  for (auto& v : s) {
    v = v / norm;
    if (!std::isfinite(v)) v = 1;  // the reference's guard against overflow
  }
}

namespace detail {

/// `v` itself when its rows are contiguous, else a row-major copy of it in `store` (the backend's
/// memory): blocks and the backend's products then see one layout, whatever the caller's.
template <class Backend, class S>
MatrixView<const S> row_major_or_copy(const MatrixView<const S>& v, typename Backend::template buffer<S>& store) {
  if (v.row_contiguous() && v.row_stride() >= v.cols()) return v;
  store = typename Backend::template buffer<S>(static_cast<std::size_t>(v.size()));
  const auto copy = make_row_major(store.data(), v.rows(), v.cols());
  Backend::gather_rows(v, 1, copy);
  return copy;
}

}  // namespace detail

/// \brief Search the per-input-channel scales for a group of linears sharing input x.
/// \tparam Backend a backend policy (backend::cpu, or backend::cuda from awq/backend/cuda.cuh);
///         every view lives in that backend's memory, the result on the host.
/// \param x       calibration inputs [tokens, in] (a sample), any layout
/// \param linears the linears fed by x, each [out_i, in], any layout
/// \param block   the module whose output is judged (see LinearsBlock for the interface)
/// \param opt     grid, quantizer, duo scaling, progress callback
/// \param x_mean  mean |x| per input channel when already known (from ActStats over more data
///                than the sample), each finite and ≥ 0; empty: computed from x
/// \param reference what the candidates' outputs are compared with, [tokens, block.output_cols()]
///                in the backend's memory; an empty view: the block's output with the original
///                weights, computed here (the reference's loss). A caller that already has that
///                output passes it to save one block evaluation; a caller may also pass another
///                target (e.g. the output the full-precision model gives where x is a quantized
///                model's activation).
/// \pre every weight has in columns; quant.group_size divides in; x and weights are finite.
///
/// Scales and losses are computed in `acc_t<S>` (float for half and bfloat16 storage). A view whose
/// rows are not contiguous (a column-major Eigen matrix, a transposed view) is copied once into a
/// row-major buffer, so the block sees row-major views only; the results do not depend on the layout.
/// backend::cuda needs row-major device views.
template <class Backend = backend::cpu, class S, class Block>
ScaleSearchResult<acc_t<S>> search_scales(const MatrixView<const S>& x, const std::vector<Linear<S>>& linears,
                                          const Block& block, const ScaleSearchOptions& opt,
                                          std::vector<acc_t<S>> x_mean = {},
                                          MatrixView<const acc_t<S>> reference = {}) {
  using F = acc_t<S>;
  constexpr const char* fn = "awq::search_scales";
  detail::require(!linears.empty(), fn, ": no linear given");
  detail::require(opt.n_grid >= 1, fn, ": n_grid ", opt.n_grid, " must be at least 1");
  detail::require(opt.refine_steps >= 0 && opt.refine_steps <= 16, fn, ": refine_steps ", opt.refine_steps, " out of range (0 to 16)");
  const index_t k = x.cols();
  const index_t g = opt.quant.group_for(k, fn);
  std::vector<typename Backend::template buffer<S>> copies(linears.size() + 1);
  std::vector<MatrixView<const S>> orig_w;
  for (std::size_t i = 0; i < linears.size(); ++i) {
    detail::require(linears[i].weight.cols() == k, fn, ": linear ", i, " has ", linears[i].weight.cols(),
                    " input features but x has ", k);
    Backend::check_finite(fn, "weight", linears[i].weight);
    orig_w.push_back(detail::row_major_or_copy<Backend>(linears[i].weight, copies[i]));
  }
  detail::require(x.rows() > 0, fn, ": x has no token");
  const MatrixView<const S> xr = detail::row_major_or_copy<Backend>(x, copies.back());
  Backend::check_finite(fn, "activation", xr);
  [[maybe_unused]] const auto held = Backend::hold_operand(xr);  // every grid point multiplies xr: one conversion for them all
  if (x_mean.empty()) x_mean = Backend::channel_abs_mean(xr);
  detail::require(static_cast<index_t>(x_mean.size()) == k, fn, ": x_mean has ", x_mean.size(), " channels, expected ", k);
  for (index_t c = 0; c < k; ++c)  // pow of a negative or NaN mean is NaN: the search would fall back to scales of 1 unnoticed
    detail::require(std::isfinite(x_mean[static_cast<std::size_t>(c)]) && x_mean[static_cast<std::size_t>(c)] >= 0, fn, ": x_mean[", c,
                    "] is ", x_mean[static_cast<std::size_t>(c)], "; a mean |x| is finite and not negative");
  std::vector<F> w_mean;
  if (opt.duo_scaling) w_mean = Backend::duo_weight_mean(orig_w, g);

  // Workspace in the backend's memory, allocated once for the whole grid.
  const index_t n_out = block.output_cols();
  const auto out_size = static_cast<std::size_t>(xr.rows() * n_out);
  const bool have_ref = reference.data() != nullptr;
  if (have_ref) detail::require_shape(reference, xr.rows(), n_out, fn, "reference");
  typename Backend::template buffer<F> org(have_ref ? 0 : out_size), cur(out_size);
  std::vector<typename Backend::template buffer<S>> wq;
  std::vector<MatrixView<const S>> q_w;
  for (std::size_t i = 0; i < linears.size(); ++i) {
    wq.emplace_back(static_cast<std::size_t>(linears[i].weight.size()));
    q_w.push_back(make_row_major<const S>(wq.back().data(), linears[i].weight.rows(), k));
  }
  if (!have_ref) {
    block(xr, orig_w, make_row_major(org.data(), xr.rows(), n_out));
    reference = make_row_major<const F>(org.data(), xr.rows(), n_out);
  }

  ScaleSearchResult<F> res;
  for (int i = 0; i < opt.n_grid; ++i) res.alphas.push_back(static_cast<double>(i) / opt.n_grid);
  if (opt.include_alpha_one) res.alphas.push_back(1.0);
  const std::size_t n_grid_points = res.alphas.size();
  detail::ProgressTracker tracker(opt.progress, opt.name, static_cast<long>(n_grid_points) + 2L * opt.refine_steps);
  const auto run_block = [&](const std::vector<F>& s) {
    for (std::size_t i = 0; i < linears.size(); ++i) {
      Backend::scaled_pseudo_quantize(opt.quant, orig_w[i], s.data(),
                                      make_row_major(wq[i].data(), linears[i].weight.rows(), k));
    }
    block(xr, q_w, make_row_major(cur.data(), xr.rows(), n_out));
  };
  double best = std::numeric_limits<double>::infinity();
  const auto record = [&](double loss, const std::vector<F>& s) {
    res.losses.push_back(loss);
    if (loss < best) {
      best = loss;
      res.best_index = static_cast<int>(res.losses.size() - 1);
      res.scales = s;
    }
    tracker.step(static_cast<long>(res.losses.size()));
  };
  std::vector<F> s, s_next;
  scales_for_alpha(res.alphas[0], x_mean, opt.duo_scaling ? &w_mean : nullptr, s);
  for (std::size_t ai = 0; ai < n_grid_points; ++ai) {
    run_block(s);
    // The next grid point's scales, while an asynchronous backend still runs this one's block.
    if (ai + 1 < n_grid_points) scales_for_alpha(res.alphas[ai + 1], x_mean, opt.duo_scaling ? &w_mean : nullptr, s_next);
    record(Backend::mse(reference, make_row_major<const F>(cur.data(), xr.rows(), n_out)), s);
    std::swap(s, s_next);
  }
  detail::require(res.best_index >= 0, fn, ": no finite loss on the grid (block output is not finite)");
  double h = 0.5 / opt.n_grid;
  for (int step = 0; step < opt.refine_steps; ++step, h /= 2) {
    const double centre = res.alphas[static_cast<std::size_t>(res.best_index)];
    for (const double a : {centre - h, centre + h}) {
      const double alpha = std::min(1.0, std::max(0.0, a));
      scales_for_alpha(alpha, x_mean, opt.duo_scaling ? &w_mean : nullptr, s);
      run_block(s);
      res.alphas.push_back(alpha);
      record(Backend::mse(reference, make_row_major<const F>(cur.data(), xr.rows(), n_out)), s);
    }
  }
  res.best_alpha = res.alphas[static_cast<std::size_t>(res.best_index)];
  return res;
}

/// Overload for a mutable x view (the search never writes to it).
template <class Backend = backend::cpu, class S, class Block, class = std::enable_if_t<!std::is_const_v<S>>>
ScaleSearchResult<acc_t<S>> search_scales(const MatrixView<S>& x, const std::vector<Linear<S>>& linears,
                                          const Block& block, const ScaleSearchOptions& opt,
                                          std::vector<acc_t<S>> x_mean = {},
                                          MatrixView<const acc_t<S>> reference = {}) {
  return search_scales<Backend, S>(MatrixView<const S>(x), linears, block, opt, std::move(x_mean), reference);
}

}  // namespace awq
