/// \file
/// \brief `awq::backend::cpu`: the CPU policy on Eigen. Provides the primitives the generic
///        search asks a backend for: linear (x·Wᵀ + b), scaled pseudo-quantization, mean squared
///        error, and a parallel loop over a small thread pool of all cores.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cmath>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "awq/backend/cpu_gemm.hpp"
#include "awq/backend/type_tag.hpp"
#include "awq/config.hpp"
#include "awq/detail/first_min.hpp"
#include "awq/error.hpp"
#include "awq/quantizer.hpp"
#include "awq/stats.hpp"
#include "awq/view.hpp"

namespace awq {
namespace detail {

/// \brief A persistent pool of worker threads that runs one indexed job at a time.
///
/// `try_run(parts, body)` runs body(0 .. parts-1) on the workers and the calling thread and
/// returns once every part has finished; it returns false without running anything when the pool
/// is already busy with another caller's job. `body` must not throw (parallel_for wraps it).
class ThreadPool {
 public:
  /// The process-wide pool, started on first use with hardware_concurrency() - 1 workers.
  static ThreadPool& instance() {
    static ThreadPool pool(std::max(1u, std::thread::hardware_concurrency()) - 1u);
    return pool;
  }

  /// True on a pool worker, or inside a part run by the caller: nested loops run serially.
  static bool in_worker() noexcept { return worker_flag(); }

  /// Marks the current thread as running a part for its lifetime (restores the previous state).
  class WorkerScope {
   public:
    WorkerScope() noexcept : previous_(worker_flag()) { worker_flag() = true; }
    ~WorkerScope() { worker_flag() = previous_; }
    WorkerScope(const WorkerScope&) = delete;
    WorkerScope& operator=(const WorkerScope&) = delete;

   private:
    bool previous_;
  };

  template <class Body>
  bool try_run(index_t parts, Body& body) {
    std::unique_lock<std::mutex> job(job_mutex_, std::try_to_lock);
    if (!job.owns_lock()) return false;
    const Call call{&body, [](void* b, index_t p) { (*static_cast<Body*>(b))(p); }};
    {
      std::lock_guard<std::mutex> lock(m_);
      call_ = call;
      parts_ = parts;
      next_.store(0);
      remaining_.store(parts);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    {
      WorkerScope scope;
      drain(call, parts);
    }
    // Back-to-back calls (a decode step is many small products) should not pay a sleep and a
    // wake-up each: spin briefly before blocking.
    for (int i = 0; i < kSpin && !finished(); ++i) relax();
    std::unique_lock<std::mutex> lock(m_);
    done_.wait(lock, [&] { return finished(); });
    call_ = Call{};  // under the lock with no worker active: nobody can pick up this call again
    return true;
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_.store(true);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  static constexpr int kSpin = 1 << 14;  // about 0.1 to 1 ms of pause instructions

  struct Call {
    void* body = nullptr;
    void (*invoke)(void*, index_t) = nullptr;
  };

  explicit ThreadPool(unsigned workers) {
    workers_.reserve(workers);
    for (unsigned i = 0; i < workers; ++i) workers_.emplace_back([this] { work(); });
  }

  static bool& worker_flag() noexcept {
    thread_local bool flag = false;
    return flag;
  }

  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    std::this_thread::yield();
#endif
  }

  bool finished() const noexcept { return remaining_.load() == 0 && active_.load() == 0; }

  // Runs parts until none is left.
  void drain(const Call& call, index_t parts) {
    for (index_t p = next_.fetch_add(1); p < parts; p = next_.fetch_add(1)) {
      call.invoke(call.body, p);
      remaining_.fetch_sub(1);
    }
  }

  void work() {
    worker_flag() = true;
    std::uint64_t seen = 0;
    for (;;) {
      for (int i = 0; i < kSpin && generation_.load() == seen && !stop_.load(); ++i) relax();
      Call call;
      index_t parts = 0;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
        if (stop_.load()) return;
        seen = generation_.load();
        call = call_;
        parts = parts_;
        active_.fetch_add(1);  // under the lock: the caller cannot retire this call meanwhile
      }
      if (call.body) drain(call, parts);
      active_.fetch_sub(1);
      { std::lock_guard<std::mutex> lock(m_); }  // pairs with the caller's predicate check
      done_.notify_all();
    }
  }

  std::mutex job_mutex_;  // one job at a time
  std::mutex m_;          // guards call_ and parts_, and orders the wake-ups
  std::condition_variable wake_, done_;
  Call call_{};
  index_t parts_ = 0;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::atomic<index_t> next_{0}, remaining_{0};
  std::atomic<int> active_{0};
  std::vector<std::thread> workers_;
};

}  // namespace detail

namespace backend {

/// \brief CPU backend policy (Eigen matrix products, std::thread parallelism).
///
/// Scalars S are float (the default) or double. Every matrix argument is a row-major view
/// whose rows are contiguous (col_stride 1); row strides may be larger than cols.
struct cpu {
  static constexpr const char* name = "cpu";  ///< backend name for reports

  /// Threads used by parallel work; 0 (the default) means all hardware threads. Prefer
  /// set_threads, which validates.
  static int& threads() noexcept {
    static int n = 0;
    return n;
  }
  /// \brief Sets the threads parallel work uses: 1 to the hardware threads, or 0 for all of them.
  ///        Call it before starting parallel work, not while another thread runs some.
  /// \throws awq::Error naming the value and the accepted range.
  static void set_threads(int n) {
    const unsigned hw = std::thread::hardware_concurrency();
    const int max = hw ? static_cast<int>(hw) : 1;
    detail::require(n >= 0 && n <= max, "awq::backend::cpu::set_threads: ", n, " threads (accepted: 0 = all, or 1 to ", max,
                    ", the hardware threads)");
    threads() = n;
  }
  /// The thread count actually used.
  static int thread_count() noexcept {
    const int t = threads();
    if (t > 0) return t;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw ? static_cast<int>(hw) : 1;
  }

  /// Calls f(begin, end) over a partition of [0, n) on up to thread_count() threads. An
  /// exception from any part is rethrown (the first one) after all parts finish.
  ///
  /// The parts run on a persistent pool of hardware_concurrency() - 1 worker threads plus the
  /// caller (no thread is started per call). A call made from inside a part runs serially on
  /// that thread; a call made while another thread is using the pool starts its own threads.
  template <class F>
  static void parallel_for(index_t n, F&& f, index_t min_chunk = 1) {
    if (n <= 0) return;
    const index_t parts = std::max<index_t>(1, std::min<index_t>(thread_count(), n / std::max<index_t>(1, min_chunk)));
    if (parts == 1 || detail::ThreadPool::in_worker()) {
      f(index_t{0}, n);
      return;
    }
    std::exception_ptr err;
    std::mutex m;
    auto run = [&](index_t p) {
      try {
        f(n * p / parts, n * (p + 1) / parts);
      } catch (...) {
        std::lock_guard<std::mutex> lock(m);
        if (!err) err = std::current_exception();
      }
    };
    if (!detail::ThreadPool::instance().try_run(parts, run)) {
      std::vector<std::thread> pool;
      pool.reserve(static_cast<std::size_t>(parts - 1));
      for (index_t p = 1; p < parts; ++p) pool.emplace_back([&run, p] {
        detail::ThreadPool::WorkerScope scope;
        run(p);
      });
      {
        detail::ThreadPool::WorkerScope scope;
        run(0);
      }
      for (auto& t : pool) t.join();
    }
    if (err) std::rethrow_exception(err);
  }

  /// y [T, N] = x [T, K] · w [N, K]ᵀ (+ bias [N] when non-null), rows split over threads.
  template <class S>
  static void linear(const MatrixView<const S>& x, const MatrixView<const S>& w, const S* bias, const MatrixView<S>& y) {
    constexpr const char* fn = "awq::backend::cpu::linear";
    detail::require(x.cols() == w.cols(), fn, ": x has ", x.cols(), " columns but w has ", w.cols());
    detail::require_shape(y, x.rows(), w.rows(), fn, "y");
    require_rows(fn, x, "x");
    require_rows(fn, w, "w");
    require_rows(fn, y, "y");
    const auto add_bias = [&](index_t t0, index_t t1, index_t n0, index_t n1) {
      if (!bias) return;
      for (index_t t = t0; t < t1; ++t)
        for (index_t n = n0; n < n1; ++n) y(t, n) += bias[n];
    };
    if constexpr (std::is_same_v<S, float>) {
      // Enough rows to pay for packing w: the packed micro-kernels (awq/backend/cpu_gemm.hpp), w
      // in column slices of at most kPackedFloats so that the packed copy stays small.
      if (x.rows() >= kPackedMinRows && detail::gemm::PackedWeight::available()) {
        const index_t k = w.cols(), slice = std::max<index_t>(32, kPackedFloats / k / 32 * 32);
        for (index_t n0 = 0; n0 < w.rows(); n0 += slice) {
          const index_t nc = std::min(slice, w.rows() - n0);
          detail::gemm::PackedWeight pw(nc, k);
          const MatrixView<const float> ws = w.middle_rows(n0, nc);
          parallel_for(pw.panels(), [&](index_t p0, index_t p1) { pw.pack(ws, p0, p1); });
          parallel_for(
              x.rows(),
              [&](index_t t0, index_t t1) {
                pw.multiply(x.middle_rows(t0, t1 - t0), y.block(t0, n0, t1 - t0, nc), 0, pw.panels());
                add_bias(t0, t1, n0, n0 + nc);
              },
              kPackedMinRows);
        }
        return;
      }
    }
    const auto W = map(w);
    parallel_for(
        x.rows(),
        [&](index_t t0, index_t t1) {
          map(y.middle_rows(t0, t1 - t0)).noalias() = map(x.middle_rows(t0, t1 - t0)) * W.transpose();
          add_bias(t0, t1, 0, y.cols());
        },
        16);
  }

  /// out [K, K] = xᵀ · x for x [T, K] (a linear's input: GPTQ's Hessian, awq/gptq.hpp). In float
  /// from 64 rows, the packed micro-kernels (awq/backend/cpu_gemm.hpp); otherwise Eigen: columns
  /// in tiles of 64, each tile's lower part, then mirrored. Either way a fixed order, whatever the
  /// thread count. (Eigen: tile i and tile n − 1 − i go to one thread together, so that every
  /// part holds as many rows.)
  template <class S>
  static void gram(const MatrixView<const S>& x, const MatrixView<S>& out) {
    constexpr const char* fn = "awq::backend::cpu::gram";
    const index_t k = x.cols();
    detail::require_shape(out, k, k, fn, "out");
    require_rows(fn, x, "x");
    require_rows(fn, out, "out");
    if constexpr (std::is_same_v<S, float>) {
      if (x.rows() >= kPackedMinRows && k > 0 && x.col_stride() == 1 && out.col_stride() == 1 && detail::gemm::PackedWeight::available()) {
        detail::gemm::gram(x, out, [](index_t n, auto&& f) { parallel_for(n, f); });
        return;
      }
    }
    constexpr index_t tile = 64;
    const auto X = map(x);
    auto O = map(out);
    const index_t n = (k + tile - 1) / tile;
    const auto lower_tile = [&](index_t t) {
      const index_t c0 = t * tile, nc = std::min(tile, k - c0);
      O.block(c0, c0, k - c0, nc).noalias() = X.rightCols(k - c0).transpose() * X.middleCols(c0, nc);
    };
    parallel_for((n + 1) / 2, [&](index_t p0, index_t p1) {
      for (index_t p = p0; p < p1; ++p) {
        lower_tile(p);
        if (n - 1 - p != p) lower_tile(n - 1 - p);
      }
    });
    for (index_t i = 0; i < k; ++i)
      for (index_t j = i + 1; j < k; ++j) O(i, j) = O(j, i);
  }

  /// out [M, N] = aᵀ · b for a [T, M] and b [T, N] (two linear inputs over the same tokens: the
  /// cross term of GPTQ's target, awq/model/pipeline.hpp). In float from 64 rows the packed
  /// micro-kernels, otherwise Eigen by column tiles of 64: a fixed order, whatever the thread count.
  template <class S>
  static void cross_gram(const MatrixView<const S>& a, const MatrixView<const S>& b, const MatrixView<S>& out) {
    constexpr const char* fn = "awq::backend::cpu::cross_gram";
    detail::require(a.rows() == b.rows(), fn, ": a has ", a.rows(), " rows but b has ", b.rows());
    detail::require_shape(out, a.cols(), b.cols(), fn, "out");
    require_rows(fn, a, "a");
    require_rows(fn, b, "b");
    require_rows(fn, out, "out");
    if constexpr (std::is_same_v<S, float>) {
      if (a.rows() >= kPackedMinRows && a.cols() > 0 && b.cols() > 0 && detail::gemm::PackedWeight::available()) {
        detail::gemm::cross(a, b, out, [](index_t n, auto&& f) { parallel_for(n, f); });
        return;
      }
    }
    constexpr index_t tile = 64;
    const auto A = map(a), B = map(b);
    auto O = map(out);
    parallel_for((b.cols() + tile - 1) / tile, [&](index_t t0, index_t t1) {
      for (index_t t = t0; t < t1; ++t) {
        const index_t c0 = t * tile, nc = std::min(tile, b.cols() - c0);
        O.middleCols(c0, nc).noalias() = A.transpose() * B.middleCols(c0, nc);
      }
    });
  }

  /// out [N, K] = Q(w · diag(s)) · diag(s)⁻¹: the weight the scale search evaluates, computed
  /// as the reference does (multiply, pseudo-quantize, divide), rows split over threads.
  template <class S>
  static void scaled_pseudo_quantize(const QuantSpec& spec, const MatrixView<const S>& w, const S* s,
                                     const MatrixView<S>& out) {
    constexpr const char* fn = "awq::backend::cpu::scaled_pseudo_quantize";
    detail::require_shape(out, w.rows(), w.cols(), fn, "out");
    const index_t g = detail::checked_group(fn, spec, w);
    dispatch_format(spec, [&](auto fmt) {
      using Fmt = decltype(fmt);
      parallel_for(
          w.rows(),
          [&](index_t r0, index_t r1) {
            for (index_t r = r0; r < r1; ++r) {
              // w·s is formed twice (range, then values) rather than stored: no allocation.
              for (index_t j0 = 0; j0 < w.cols(); j0 += g) {
                S lo = w(r, j0) * s[j0], hi = lo;
                for (index_t k = j0; k < j0 + g; ++k) {
                  const S v = w(r, k) * s[k];
                  lo = v < lo ? v : lo;
                  hi = hi < v ? v : hi;
                }
                const GroupParams<S> p = group_params<Fmt>(lo, hi);
                for (index_t k = j0; k < j0 + g; ++k) out(r, k) = fake_quantize_value<Fmt>(w(r, k) * s[k], p) / s[k];
              }
            }
          },
          4);
    });
  }

  /// mean((a - b)^2) accumulated in double.
  template <class S>
  static double mse(const MatrixView<const S>& a, const MatrixView<const S>& b) {
    detail::require_shape(b, a.rows(), a.cols(), "awq::backend::cpu::mse", "b");
    if (a.size() == 0) return 0.0;
    std::vector<double> part(static_cast<std::size_t>(a.rows()), 0.0);
    parallel_for(
        a.rows(),
        [&](index_t r0, index_t r1) {
          for (index_t r = r0; r < r1; ++r) {
            double acc = 0.0;
            for (index_t c = 0; c < a.cols(); ++c) {
              const double d = static_cast<double>(a(r, c)) - static_cast<double>(b(r, c));
              acc += d * d;
            }
            part[static_cast<std::size_t>(r)] = acc;
          }
        },
        64);
    double total = 0.0;
    for (double v : part) total += v;
    return total / static_cast<double>(a.size());
  }

  /// Owning scratch array of n elements (the search's workspace lives where the backend computes).
  template <class T>
  using buffer = std::vector<T>;

  /// Calls f(type_tag<float>{}): search modules keep their intermediate activations in fp32 here
  /// (see backend::cuda::with_activation).
  template <class F>
  static void with_activation(F&& f) {
    f(type_tag<float>{});
  }

  /// An operand a caller multiplies many times (see backend::cuda::hold_operand): the CPU's
  /// products read it as stored, so holding it does nothing.
  struct HeldOperand {};
  /// \copydoc HeldOperand
  template <class S>
  static HeldOperand hold_operand(const MatrixView<const S>&) {
    return {};
  }

  /// A buffer holding a copy of n host values (the model driver's upload of a block's weights).
  template <class T>
  static buffer<T> upload(const T* host, std::size_t n) {
    return buffer<T>(host, host + n);
  }

  /// Copies n values from the backend's memory to the host.
  template <class T>
  static void download(const T* src, std::size_t n, T* host) {
    std::copy(src, src + n, host);
  }

  /// Waits for the backend's queued work (the host computes synchronously: nothing to wait for).
  static void synchronize() {}

  /// m(r, c) · s[c] (or / s[c] with `divide`), in place: folding scales into a linear's input
  /// columns, a norm's weight (a 1 × n view) or cached activations. s is on the host.
  template <class S>
  static void scale_cols(const MatrixView<S>& m, const std::vector<acc_t<S>>& s, bool divide) {
    detail::require(static_cast<index_t>(s.size()) == m.cols(), "awq::backend::cpu::scale_cols: ", s.size(),
                    " scales for ", m.cols(), " columns");
    using A = acc_t<S>;
    parallel_for(m.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = 0; c < m.cols(); ++c)
          m(r, c) = static_cast<S>(divide ? static_cast<A>(m(r, c)) / s[static_cast<std::size_t>(c)]
                                          : static_cast<A>(m(r, c)) * s[static_cast<std::size_t>(c)]);
    }, 64);
  }

  /// m(r, c) · s[r] (or / s[r]), in place: folding scales into a previous linear's output rows
  /// (its bias as an n × 1 view).
  template <class S>
  static void scale_rows(const MatrixView<S>& m, const std::vector<acc_t<S>>& s, bool divide) {
    detail::require(static_cast<index_t>(s.size()) == m.rows(), "awq::backend::cpu::scale_rows: ", s.size(),
                    " scales for ", m.rows(), " rows");
    using A = acc_t<S>;
    parallel_for(m.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const A f = s[static_cast<std::size_t>(r)];
        for (index_t c = 0; c < m.cols(); ++c) m(r, c) = static_cast<S>(divide ? static_cast<A>(m(r, c)) / f : static_cast<A>(m(r, c)) * f);
      }
    }, 64);
  }

  /// out = a − b, elementwise (out may be a or b).
  template <class S>
  static void subtract(const MatrixView<const S>& a, const MatrixView<const S>& b, const MatrixView<S>& out) {
    detail::require(a.rows() == b.rows() && a.cols() == b.cols(), "awq::backend::cpu::subtract: a is ", a.rows(), "x", a.cols(),
                    " but b is ", b.rows(), "x", b.cols());
    detail::require_shape(out, a.rows(), a.cols(), "awq::backend::cpu::subtract", "out");
    parallel_for(a.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = 0; c < a.cols(); ++c) out(r, c) = a(r, c) - b(r, c);
    }, 64);
  }

  /// w(r, c) = clamp(w(r, c), −b, b), b = bound(r, c / group) with bound [rows, groups] on the host.
  template <class S>
  static void clamp_groups(const MatrixView<S>& w, const MatrixView<const acc_t<S>>& bound) {
    detail::require(bound.cols() > 0 && bound.rows() == w.rows() && w.cols() % bound.cols() == 0,
                    "awq::backend::cpu::clamp_groups: bounds [", bound.rows(), ", ", bound.cols(), "] do not fit w [", w.rows(),
                    ", ", w.cols(), "]");
    const index_t g = w.cols() / bound.cols();
    parallel_for(w.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = 0; c < w.cols(); ++c) {
          const S b = static_cast<S>(bound(r, c / g));
          w(r, c) = detail::clamp(w(r, c), static_cast<S>(-b), b);
        }
    }, 64);
  }

  /// Throws awq::Error naming `what`, the value, its row (× `row_step`: the source row of a
  /// subsample) and column when m holds a NaN or an infinity.
  template <class S>
  static void check_finite(const char* fn, const char* what, const MatrixView<const S>& m, index_t row_step = 1) {
    for (index_t r = 0; r < m.rows(); ++r)
      for (index_t c = 0; c < m.cols(); ++c)
        if (!std::isfinite(static_cast<double>(m(r, c))))
          throw Error(detail::concat(fn, ": non-finite ", what, " value ", static_cast<double>(m(r, c)), " at row ",
                                     r * row_step, ", column ", c));
  }

  /// Mean |x| per input channel over the rows of x, accumulated in double (ActStats).
  template <class S>
  static std::vector<acc_t<S>> channel_abs_mean(const MatrixView<const S>& x) {
    ActStats st(x.cols());
    st.update(x);
    return st.mean<acc_t<S>>();
  }

  /// AutoAWQ's w_mean over the stacked rows of `weights` (all [·, k]): per input channel, the
  /// mean of |w| / (max |w| of its group in that row + 1e-6), computed in S, summed in double.
  template <class S>
  static std::vector<acc_t<S>> duo_weight_mean(const std::vector<MatrixView<const S>>& weights, index_t g) {
    const index_t k = weights.front().cols();
    std::vector<double> acc(static_cast<std::size_t>(k), 0.0);
    index_t rows = 0;
    for (const auto& w : weights) {
      for (index_t r = 0; r < w.rows(); ++r) {
        for (index_t j0 = 0; j0 < k; j0 += g) {
          S amax = 0;
          for (index_t c = j0; c < j0 + g; ++c) amax = std::max(amax, static_cast<S>(std::fabs(w(r, c))));
          const S den = amax + static_cast<S>(1e-6);
          for (index_t c = j0; c < j0 + g; ++c)
            acc[static_cast<std::size_t>(c)] += static_cast<double>(std::fabs(w(r, c)) / den);
        }
      }
      rows += w.rows();
    }
    std::vector<acc_t<S>> out(acc.size());
    for (std::size_t c = 0; c < acc.size(); ++c) out[c] = static_cast<acc_t<S>>(acc[c] / static_cast<double>(rows));
    return out;
  }

  /// out [n, k] = rows 0, step, 2·step, … of x (n = out.rows()).
  template <class S>
  static void gather_rows(const MatrixView<const S>& x, index_t step, const MatrixView<S>& out) {
    detail::require(out.cols() == x.cols() && (out.rows() - 1) * step < x.rows(), "awq::backend::cpu::gather_rows: ",
                    out.rows(), " rows of step ", step, " do not fit x with ", x.rows(), " rows");
    for (index_t t = 0; t < out.rows(); ++t)
      for (index_t c = 0; c < x.cols(); ++c) out(t, c) = x(t * step, c);
  }

  /// The clip search's error table. For every output row r, group j and shrink i < n_shrink:
  /// err[(i·rows + r)·groups + j] = mean over the tokens of xs of (xs_g · (Q(W_c) − W)_gᵀ)², where
  /// W_c clamps the group to ±max|w_g|·(1 − i/n_grid); absmax[r·groups + j] = max|w_g|.
  /// Work is split over (group, row batch) tasks on the thread pool; `done(n)` is called with the
  /// number of (row, group) pairs finished so far. Q is the quantizer `spec` names.
  template <class S, class Done>
  static void clip_errors(const QuantSpec& spec, const MatrixView<const S>& xs, const MatrixView<const S>& w, int n_shrink,
                          int n_grid, index_t row_batch, double* err, S* absmax, Done&& done) {
    const index_t g = detail::checked_group("awq::backend::cpu::clip_errors", spec, w);
    dispatch_format(spec, [&](auto fmt) { clip_errors_of<decltype(fmt)>(g, xs, w, n_shrink, n_grid, row_batch, err, absmax, done); });
  }

  /// The clip search's choice: best[r·groups + j] = the first strict minimum over the shrinks of
  /// clip_errors' table (detail::first_strict_min; −1 when no error is finite), absmax as there.
  template <class S, class Done>
  static void clip_choose(const QuantSpec& spec, const MatrixView<const S>& xs, const MatrixView<const S>& w, int n_shrink,
                          int n_grid, index_t row_batch, int* best, S* absmax, Done&& done) {
    const index_t g = detail::checked_group("awq::backend::cpu::clip_choose", spec, w);
    const index_t n = w.rows() * (w.cols() / g);
    std::vector<double> err(static_cast<std::size_t>(n_shrink * n));
    clip_errors(spec, xs, w, n_shrink, n_grid, row_batch, err.data(), absmax, std::forward<Done>(done));
    for (index_t o = 0; o < n; ++o) best[o] = detail::first_strict_min(err.data() + o, n, n_shrink);
  }

 private:
  // clip_errors for a CodeFormat and group length g (checked).
  template <class Fmt, class S, class Done>
  static void clip_errors_of(index_t g, const MatrixView<const S>& xs, const MatrixView<const S>& w, int n_shrink, int n_grid,
                             index_t row_batch, double* err, S* absmax, Done& done) {
    const index_t k = w.cols(), nt = xs.rows();
    const index_t ng = k / g, rows = w.rows();
    const index_t n_batches = (rows + row_batch - 1) / row_batch;
    std::atomic<long> finished{0};
    std::mutex done_mutex;
    parallel_for(ng * n_batches, [&](index_t a, index_t b) {
      std::vector<S> wg, wq, org, cur;
      std::vector<double> e;
      for (index_t task = a; task < b; ++task) {
        const index_t j = task % ng, r0 = (task / ng) * row_batch;
        const index_t nr = std::min(row_batch, rows - r0);
        wg.resize(static_cast<std::size_t>(nr * g));
        wq.resize(wg.size());
        for (index_t r = 0; r < nr; ++r) {
          S m = 0;
          for (index_t i = 0; i < g; ++i) {
            const S v = w(r0 + r, j * g + i);
            wg[static_cast<std::size_t>(r * g + i)] = v;
            m = std::max(m, static_cast<S>(std::fabs(v)));
          }
          absmax[(r0 + r) * ng + j] = m;
        }
        const auto X = map(MatrixView<const S>(xs.data() + j * g, nt, g, xs.row_stride(), 1));
        const auto Wg = map(make_row_major<const S>(wg.data(), nr, g));
        org.resize(static_cast<std::size_t>(nt * nr));
        cur.resize(org.size());
        auto O = map(make_row_major(org.data(), nt, nr));
        auto C = map(make_row_major(cur.data(), nt, nr));
        O.noalias() = X * Wg.transpose();
        e.resize(static_cast<std::size_t>(nr));
        for (int i_s = 0; i_s < n_shrink; ++i_s) {
          const S f = static_cast<S>(1.0 - static_cast<double>(i_s) / n_grid);
          for (index_t r = 0; r < nr; ++r) {
            const S c = absmax[(r0 + r) * ng + j] * f;
            const S* src = wg.data() + r * g;
            S lo = detail::clamp(src[0], -c, c), hi = lo;
            for (index_t i = 1; i < g; ++i) {
              const S v = detail::clamp(src[i], -c, c);
              lo = v < lo ? v : lo;
              hi = hi < v ? v : hi;
            }
            const GroupParams<S> p = group_params<Fmt>(lo, hi);
            for (index_t i = 0; i < g; ++i)
              wq[static_cast<std::size_t>(r * g + i)] = fake_quantize_value<Fmt>(detail::clamp(src[i], -c, c), p);
          }
          C.noalias() = X * map(make_row_major<const S>(wq.data(), nr, g)).transpose();
          std::fill(e.begin(), e.end(), 0.0);
          for (index_t t = 0; t < nt; ++t)
            for (index_t r = 0; r < nr; ++r) {
              const double d = static_cast<double>(C(t, r)) - static_cast<double>(O(t, r));
              e[static_cast<std::size_t>(r)] += d * d;
            }
          for (index_t r = 0; r < nr; ++r)
            err[(static_cast<index_t>(i_s) * rows + r0 + r) * ng + j] = e[static_cast<std::size_t>(r)] / static_cast<double>(nt);
        }
        const long d = finished += static_cast<long>(nr);
        std::lock_guard<std::mutex> lock(done_mutex);
        done(d);
      }
    });
  }

 public:
  /// An Eigen map over a row-contiguous view (no copy).
  template <class T>
  static auto map(const MatrixView<T>& v) {
    using S = std::remove_cv_t<T>;
    using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using M = std::conditional_t<std::is_const_v<T>, const Mat, Mat>;
    return Eigen::Map<M, 0, Eigen::OuterStride<>>(v.data(), v.rows(), v.cols(),
                                                  Eigen::OuterStride<>(std::max<index_t>(v.row_stride(), v.cols())));
  }

 private:
  static constexpr index_t kPackedMinRows = 64;      // fewer rows: Eigen (its product is a GEMV then)
  static constexpr index_t kPackedFloats = 4 << 20;  // the packed slice of w: at most 16 MB

  template <class T>
  static void require_rows(const char* fn, const MatrixView<T>& v, const char* what) {
    detail::require(v.row_contiguous() && v.row_stride() >= v.cols(), fn, ": ", what,
                    " must be row-major with contiguous rows (col_stride ", v.col_stride(), ", row_stride ",
                    v.row_stride(), ")");
  }
};

}  // namespace backend
}  // namespace awq
