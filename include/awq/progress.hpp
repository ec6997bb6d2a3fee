/// \file
/// \brief Progress reporting for long work (calibration, search, export): a callback type and
///        a terminal reporter with a bar and an ETA (plain lines when stderr is not a terminal).
#pragma once

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace awq {

/// \brief One progress event.
struct Progress {
  std::string phase;     ///< what is running, e.g. "scale search layers.3.mlp"
  long done = 0;         ///< units finished
  long total = 0;        ///< units in all
  double elapsed_s = 0;  ///< seconds since the phase started
  /// Seconds left, extrapolated from the rate so far (0 when unknown).
  double eta_s() const { return done > 0 && total > done ? elapsed_s * static_cast<double>(total - done) / static_cast<double>(done) : 0.0; }
};

/// Callback type engines can supply to get progress events instead of the terminal bar.
using ProgressCallback = std::function<void(const Progress&)>;

/// \brief Prints progress to stderr: a redrawn bar with ETA on a terminal, one line per
///        `every` units otherwise.
class TerminalProgress {
 public:
  /// \param every plain-line mode prints every `every` units (and the last).
  explicit TerminalProgress(long every = 1) : every_(every < 1 ? 1 : every) {
#if defined(__unix__) || defined(__APPLE__)
    tty_ = isatty(fileno(stderr)) != 0;
#endif
  }
  /// Reports one event.
  void operator()(const Progress& p) const {
    if (tty_) {
      const int width = 30;
      const int filled = p.total > 0 ? static_cast<int>(width * p.done / p.total) : 0;
      std::fprintf(stderr, "\r%-40.40s [%.*s%*s] %ld/%ld %6.1fs eta %6.1fs", p.phase.c_str(), filled,
                   "##############################", width - filled, "", p.done, p.total, p.elapsed_s, p.eta_s());
      if (p.done >= p.total) std::fputc('\n', stderr);
    } else if (p.done % every_ == 0 || p.done >= p.total) {
      std::fprintf(stderr, "%s: %ld/%ld, %.1fs elapsed, eta %.1fs\n", p.phase.c_str(), p.done, p.total, p.elapsed_s,
                   p.eta_s());
    }
    std::fflush(stderr);
  }
  /// As a ProgressCallback.
  operator ProgressCallback() const {  // NOLINT(google-explicit-constructor)
    return [self = *this](const Progress& p) { self(p); };
  }

 private:
  long every_;
  bool tty_ = false;
};

namespace detail {

/// Times one phase and forwards events to an optional callback.
class ProgressTracker {
 public:
  ProgressTracker(ProgressCallback cb, std::string phase, long total)
      : cb_(std::move(cb)), phase_(std::move(phase)), total_(total), t0_(std::chrono::steady_clock::now()) {}
  void step(long done) const {
    if (!cb_) return;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    cb_(Progress{phase_, done, total_, el});
  }

 private:
  ProgressCallback cb_;  // a copy: callers may pass a temporary (e.g. a TerminalProgress)
  std::string phase_;
  long total_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace detail
}  // namespace awq
