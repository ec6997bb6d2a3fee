/// \file
/// \brief The weight-clipping search: per (output row, group), the shrink of max |w| that
///        minimises the error of that group's partial output on a token subsample.
///
/// Reference semantics (llm-awq auto_clip_layer): tokens subsampled with stride
/// max(1, tokens / n_sample_tokens); for shrink i in [0, max_shrink·n_grid):
/// max_val = max|w_g| · (1 − i/n_grid), W_c = clamp(W, −max_val, max_val),
/// err = mean over tokens of (X_g·Q(W_c)_g − X_g·W_g)²; the first strict minimum wins.
/// The backend splits the work (on the CPU: (group, row batch) tasks) so memory stays bounded.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/progress.hpp"
#include "awq/quantizer.hpp"
#include "awq/view.hpp"

namespace awq {

/// \brief Options of search_clip; the defaults are the reference's.
struct ClipSearchOptions {
  QuantSpec quant{};               ///< quantizer the candidates are judged with
  int n_grid = 20;                 ///< shrink step 1 / n_grid
  double max_shrink = 0.5;         ///< tries max_shrink · n_grid shrinks, from 0
  index_t n_sample_tokens = 512;   ///< token subsample target (stride = tokens / this, at least 1)
  index_t row_batch = 256;         ///< output rows per task (bounds memory: tokens × row_batch)
  ProgressCallback progress{};     ///< called as tasks finish
  std::string name = "clip search";  ///< phase name in progress events
};

/// \brief Clip bounds [out, n_groups] chosen by search_clip, and the index of each choice.
template <class S>
struct ClipSearchResult {
  index_t rows = 0;                ///< out_features
  index_t groups = 0;              ///< in_features / group
  std::vector<S> max_val;          ///< [rows, groups] row-major: the bound c, clamp to [−c, c]
  std::vector<int> shrink_index;   ///< [rows, groups]: the chosen i (bound = max|w| · (1 − i/n_grid))
  /// The bounds as a view, ready for QuantArgs::clip or apply_clip.
  MatrixView<const S> view() const { return make_row_major(max_val.data(), rows, groups); }
};

/// \brief Search clip bounds for one linear: w [out, in], x its inputs [tokens, in].
/// \tparam Backend a backend policy (backend::cpu, or backend::cuda from awq/backend/cuda.cuh);
///         w and x live in that backend's memory, the result on the host.
///
/// The backend computes the error of every (shrink, row, group) and chooses per (row, group) the
/// first strict minimum over the shrinks (`Backend::clip_choose`, one rule for every backend:
/// detail::first_strict_min); the bounds are made here.
template <class Backend = backend::cpu, class S>
ClipSearchResult<acc_t<S>> search_clip(const MatrixView<const S>& w, const MatrixView<const S>& x,
                                       const ClipSearchOptions& opt) {
  using F = acc_t<S>;
  constexpr const char* fn = "awq::search_clip";
  const index_t k = w.cols();
  detail::require(x.cols() == k, fn, ": x has ", x.cols(), " columns but w has ", k);
  detail::require(x.rows() > 0, fn, ": x has no token");
  detail::require(opt.n_grid >= 1 && opt.max_shrink >= 0 && opt.max_shrink < 1, fn, ": n_grid ", opt.n_grid,
                  " / max_shrink ", opt.max_shrink, " out of range");
  detail::require(opt.n_sample_tokens >= 1 && opt.row_batch >= 1, fn, ": n_sample_tokens and row_batch must be positive");
  const index_t g = opt.quant.group_for(k, fn);
  const index_t ng = k / g, rows = w.rows();
  const int n_shrink = static_cast<int>(opt.max_shrink * opt.n_grid);
  detail::require(n_shrink >= 1, fn, ": max_shrink * n_grid < 1 tries nothing");
  Backend::check_finite(fn, "weight", w);

  // Token subsample into one contiguous buffer.
  const index_t stride = std::max<index_t>(1, x.rows() / opt.n_sample_tokens);
  const index_t nt = (x.rows() + stride - 1) / stride;
  typename Backend::template buffer<S> xs(static_cast<std::size_t>(nt * k));
  const auto xs_view = make_row_major(xs.data(), nt, k);
  Backend::gather_rows(x, stride, xs_view);
  Backend::check_finite(fn, "activation", MatrixView<const S>(xs_view), stride);

  std::vector<int> best(static_cast<std::size_t>(rows * ng));
  std::vector<F> absmax(static_cast<std::size_t>(rows * ng));
  detail::ProgressTracker tracker(opt.progress, opt.name, static_cast<long>(rows * ng));
  Backend::clip_choose(opt.quant, MatrixView<const S>(xs_view), w, n_shrink, opt.n_grid, opt.row_batch, best.data(), absmax.data(),
                       [&](long done) { tracker.step(done); });

  ClipSearchResult<F> res;
  res.rows = rows;
  res.groups = ng;
  res.max_val.resize(best.size());
  res.shrink_index = std::move(best);
  for (std::size_t o = 0; o < res.max_val.size(); ++o) {
    const int i_s = res.shrink_index[o];
    detail::require(i_s >= 0, fn, ": no finite clip error for row ", static_cast<index_t>(o) / ng, ", group ",
                    static_cast<index_t>(o) % ng, " (the products overflow)");
    res.max_val[o] = absmax[o] * static_cast<F>(1.0 - static_cast<double>(i_s) / opt.n_grid);
  }
  return res;
}

/// Overload for mutable views (the search never writes to them).
template <class Backend = backend::cpu, class S, class = std::enable_if_t<!std::is_const_v<S>>>
ClipSearchResult<acc_t<S>> search_clip(const MatrixView<S>& w, const MatrixView<S>& x, const ClipSearchOptions& opt) {
  return search_clip<Backend, S>(MatrixView<const S>(w), MatrixView<const S>(x), opt);
}

/// \brief Clamp w [out, in] in place to [−c, c] per (row, group), c from `clip` [out, n_groups].
template <class S, class C>
void apply_clip(const MatrixView<S>& w, const MatrixView<C>& clip) {
  constexpr const char* fn = "awq::apply_clip";
  detail::require(clip.cols() > 0 && w.cols() % clip.cols() == 0, fn, ": clip has ", clip.cols(),
                  " groups, which does not divide in_features ", w.cols());
  detail::require_shape(clip, w.rows(), clip.cols(), fn, "clip");
  const index_t g = w.cols() / clip.cols();
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t j = 0; j < clip.cols(); ++j) {
      const C c = clip(r, j);  // a negative bound would flip weights' signs, a NaN one skip the clamp
      detail::require(std::isfinite(static_cast<double>(c)) && c >= C(0), fn, ": clip bound at row ", r, ", group ", j, " is ", c);
    }
  for (index_t r = 0; r < w.rows(); ++r)
    for (index_t c = 0; c < w.cols(); ++c) {
      const S b = static_cast<S>(clip(r, c / g));
      w(r, c) = detail::clamp(w(r, c), static_cast<S>(-b), b);
    }
}

}  // namespace awq
