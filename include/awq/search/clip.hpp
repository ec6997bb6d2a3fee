/// \file
/// \brief The weight-clipping search: per (output row, group), the shrink of max |w| that
///        minimises the error of that group's partial output on a token subsample.
///
/// Reference semantics (llm-awq auto_clip_layer): tokens subsampled with stride
/// max(1, tokens / n_sample_tokens); for shrink i in [0, max_shrink·n_grid):
/// max_val = max|w_g| · (1 − i/n_grid), W_c = clamp(W, −max_val, max_val),
/// err = mean over tokens of (X_g·Q(W_c)_g − X_g·W_g)²; the first strict minimum wins.
/// Work is split over (group, row batch) tasks so memory stays bounded.
#pragma once

#include <algorithm>
#include <atomic>
#include <mutex>
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
template <class Backend = backend::cpu, class S>
ClipSearchResult<S> search_clip(const MatrixView<const S>& w, const MatrixView<const S>& x, const ClipSearchOptions& opt) {
  constexpr const char* fn = "awq::search_clip";
  const index_t k = w.cols();
  detail::require(x.cols() == k, fn, ": x has ", x.cols(), " columns but w has ", k);
  detail::require(x.rows() > 0, fn, ": x has no token");
  detail::require(opt.n_grid >= 1 && opt.max_shrink >= 0 && opt.max_shrink < 1, fn, ": n_grid ", opt.n_grid,
                  " / max_shrink ", opt.max_shrink, " out of range");
  detail::require(opt.n_sample_tokens >= 1 && opt.row_batch >= 1, fn, ": n_sample_tokens and row_batch must be positive");
  const index_t g = opt.quant.group_for(k);
  const index_t ng = k / g;
  const int n_shrink = static_cast<int>(opt.max_shrink * opt.n_grid);
  detail::require(n_shrink >= 1, fn, ": max_shrink * n_grid < 1 tries nothing");

  // Token subsample into one contiguous buffer (finite check on the way).
  const index_t stride = std::max<index_t>(1, x.rows() / opt.n_sample_tokens);
  const index_t nt = (x.rows() + stride - 1) / stride;
  std::vector<S> xs(static_cast<std::size_t>(nt * k));
  for (index_t t = 0; t < nt; ++t)
    for (index_t c = 0; c < k; ++c) {
      const S v = x(t * stride, c);
      if (!std::isfinite(static_cast<double>(v)))
        throw Error(detail::concat(fn, ": non-finite activation ", static_cast<double>(v), " at token ", t * stride,
                                   ", channel ", c));
      xs[static_cast<std::size_t>(t * k + c)] = v;
    }

  ClipSearchResult<S> res;
  res.rows = w.rows();
  res.groups = ng;
  res.max_val.assign(static_cast<std::size_t>(w.rows() * ng), S(0));
  res.shrink_index.assign(res.max_val.size(), 0);
  const index_t n_batches = (w.rows() + opt.row_batch - 1) / opt.row_batch;
  const index_t n_tasks = ng * n_batches;
  detail::ProgressTracker tracker(opt.progress, opt.name, static_cast<long>(n_tasks));
  std::atomic<long> done{0};
  std::mutex progress_mutex;

  dispatch(opt.quant, [&](auto cfg) {
    using Cfg = decltype(cfg);
    // (group, row batch) tasks are spread over the threads; each task's products run on one.
    backend::cpu::parallel_for(n_tasks, [&](index_t a, index_t b) {
      std::vector<S> wg, wq, org, cur, omax;
      std::vector<double> err, best;
      for (index_t task = a; task < b; ++task) {
        const index_t j = task % ng, r0 = (task / ng) * opt.row_batch;
        const index_t nr = std::min(opt.row_batch, w.rows() - r0);
        wg.resize(static_cast<std::size_t>(nr * g));
        wq.resize(wg.size());
        omax.resize(static_cast<std::size_t>(nr));
        for (index_t r = 0; r < nr; ++r) {
          S m = 0;
          for (index_t i = 0; i < g; ++i) {
            const S v = w(r0 + r, j * g + i);
            if (!std::isfinite(static_cast<double>(v)))
              throw Error(detail::concat(fn, ": non-finite weight ", static_cast<double>(v), " at row ", r0 + r,
                                         ", column ", j * g + i));
            wg[static_cast<std::size_t>(r * g + i)] = v;
            m = std::max(m, static_cast<S>(std::fabs(v)));
          }
          omax[static_cast<std::size_t>(r)] = m;
        }
        const auto X = backend::cpu::map(MatrixView<const S>(xs.data() + j * g, nt, g, k, 1));
        const auto Wg = backend::cpu::map(make_row_major<const S>(wg.data(), nr, g));
        org.resize(static_cast<std::size_t>(nt * nr));
        cur.resize(org.size());
        auto O = backend::cpu::map(make_row_major(org.data(), nt, nr));
        auto C = backend::cpu::map(make_row_major(cur.data(), nt, nr));
        O.noalias() = X * Wg.transpose();
        best.assign(static_cast<std::size_t>(nr), std::numeric_limits<double>::infinity());
        err.resize(static_cast<std::size_t>(nr));
        for (int i_s = 0; i_s < n_shrink; ++i_s) {
          const S f = static_cast<S>(1.0 - static_cast<double>(i_s) / opt.n_grid);
          for (index_t r = 0; r < nr; ++r) {
            const S c = omax[static_cast<std::size_t>(r)] * f;
            const S* src = wg.data() + r * g;
            S lo = detail::clamp(src[0], -c, c), hi = lo;
            for (index_t i = 1; i < g; ++i) {
              const S v = detail::clamp(src[i], -c, c);
              lo = v < lo ? v : lo;
              hi = hi < v ? v : hi;
            }
            const GroupParams<S> p = group_params<Cfg>(lo, hi);
            for (index_t i = 0; i < g; ++i)
              wq[static_cast<std::size_t>(r * g + i)] = fake_quantize_value<Cfg>(detail::clamp(src[i], -c, c), p);
          }
          C.noalias() = X * backend::cpu::map(make_row_major<const S>(wq.data(), nr, g)).transpose();
          std::fill(err.begin(), err.end(), 0.0);
          for (index_t t = 0; t < nt; ++t)
            for (index_t r = 0; r < nr; ++r) {
              const double d = static_cast<double>(C(t, r)) - static_cast<double>(O(t, r));
              err[static_cast<std::size_t>(r)] += d * d;
            }
          for (index_t r = 0; r < nr; ++r) {
            const double e = err[static_cast<std::size_t>(r)] / static_cast<double>(nt);
            if (e < best[static_cast<std::size_t>(r)]) {
              best[static_cast<std::size_t>(r)] = e;
              const std::size_t o = static_cast<std::size_t>((r0 + r) * ng + j);
              res.max_val[o] = omax[static_cast<std::size_t>(r)] * f;
              res.shrink_index[o] = i_s;
            }
          }
        }
        if (opt.progress) {
          const long d = ++done;
          std::lock_guard<std::mutex> lock(progress_mutex);
          tracker.step(d);
        }
      }
    });
  });
  return res;
}

/// Overload for mutable views (the search never writes to them).
template <class Backend = backend::cpu, class S, class = std::enable_if_t<!std::is_const_v<S>>>
ClipSearchResult<S> search_clip(const MatrixView<S>& w, const MatrixView<S>& x, const ClipSearchOptions& opt) {
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
    for (index_t c = 0; c < w.cols(); ++c) {
      const S b = static_cast<S>(clip(r, c / g));
      w(r, c) = detail::clamp(w(r, c), static_cast<S>(-b), b);
    }
}

}  // namespace awq
