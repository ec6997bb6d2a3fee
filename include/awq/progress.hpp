/// \file
/// \brief Progress reporting for long work (calibration, search, export): a callback type and
///        a terminal reporter with a bar and an ETA (a line per phase start and end when stderr
///        is not a terminal).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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

/// \brief Prints progress: on a terminal one status line, redrawn at most ten times a second per
///        phase, with a bar, the elapsed time and an ETA; otherwise (a log, a pipe) a line when a
///        phase starts and one when it ends, with the elapsed time.
///
/// A phase starts with the first event of a new name, or of the same name after it ended or with
/// fewer units done. A phase that starts while another is running is nested (a search inside a
/// block): on a terminal its line is overwritten when it ends, in a log it gets only its end line.
/// Copies share their state (the ProgressCallback conversion copies), and events may come from
/// several threads.
class TerminalProgress {
 public:
  /// \param every plain-line mode also prints a line every `every` units (0: only start and end).
  explicit TerminalProgress(long every = 0) : TerminalProgress(every, is_terminal(stderr), stderr) {}
  /// Writes to `out` in the given mode (bar when `terminal`), e.g. to test or to log to a file.
  TerminalProgress(long every, bool terminal, std::FILE* out) : state_(std::make_shared<State>()) {
    state_->every = every < 0 ? 0 : every;
    state_->tty = terminal;
    state_->out = out;
  }
  /// Reports one event.
  void operator()(const Progress& p) const {
    State& st = *state_;
    std::lock_guard<std::mutex> lock(st.m);
    auto it = st.open.find(p.phase);
    const bool starts = it == st.open.end() || p.done < it->second.done;
    if (starts) {
      const bool nested = st.open.size() > (it == st.open.end() ? 0u : 1u);
      it = st.open.insert_or_assign(p.phase, Phase{0, -1.0, nested}).first;
    }
    Phase& ph = it->second;
    const bool ends = p.done >= p.total;
    ph.done = p.done;
    if (st.tty) {
      if (starts || ends || p.elapsed_s - ph.last_draw >= 0.1) {
        ph.last_draw = p.elapsed_s;
        const int width = 30;
        const int filled = p.total > 0 ? static_cast<int>(width * std::min(p.done, p.total) / p.total) : 0;
        std::fprintf(st.out, "\r\033[K%-40.40s [%.*s%*s] %ld/%ld %s eta %s", p.phase.c_str(), filled,
                     "##############################", width - filled, "", p.done, p.total, duration(p.elapsed_s).c_str(),
                     duration(p.eta_s()).c_str());
        if (ends && !ph.nested) std::fputc('\n', st.out);
      }
    } else if (ends) {
      std::fprintf(st.out, "%s: done, %ld/%ld in %s\n", p.phase.c_str(), p.done, p.total, duration(p.elapsed_s).c_str());
    } else if (starts && !ph.nested) {
      if (p.done == 0) std::fprintf(st.out, "%s: started, %ld to do\n", p.phase.c_str(), p.total);
      else
        std::fprintf(st.out, "%s: %ld/%ld after %s, eta %s\n", p.phase.c_str(), p.done, p.total, duration(p.elapsed_s).c_str(),
                     duration(p.eta_s()).c_str());
    } else if (st.every > 0 && p.done % st.every == 0) {
      std::fprintf(st.out, "%s: %ld/%ld after %s, eta %s\n", p.phase.c_str(), p.done, p.total, duration(p.elapsed_s).c_str(),
                   duration(p.eta_s()).c_str());
    }
    if (ends) st.open.erase(it);
    std::fflush(st.out);
  }
  /// As a ProgressCallback.
  operator ProgressCallback() const {  // NOLINT(google-explicit-constructor)
    return [self = *this](const Progress& p) { self(p); };
  }

  /// Seconds as "4.2s", "3m07s" or "2h05m".
  static std::string duration(double s) {
    char b[32];
    if (!(s >= 0)) s = 0;
    if (s < 60) std::snprintf(b, sizeof b, "%.1fs", s);
    else if (s < 3600) std::snprintf(b, sizeof b, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
    else std::snprintf(b, sizeof b, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s) % 3600 / 60);
    return b;
  }

 private:
  struct Phase {
    long done = 0;
    double last_draw = -1;  // elapsed_s of the last redraw
    bool nested = false;    // started while another phase was running
  };
  struct State {
    std::mutex m;
    long every = 0;
    bool tty = false;
    std::FILE* out = nullptr;
    std::map<std::string, Phase> open;  // phases started and not ended
  };
  static bool is_terminal(std::FILE* f) {
#if defined(__unix__) || defined(__APPLE__)
    return isatty(fileno(f)) != 0;
#else
    (void)f;
    return false;
#endif
  }
  std::shared_ptr<State> state_;
};

namespace detail {

/// Times one phase and forwards events to an optional callback.
class ProgressTracker {
 public:
  ProgressTracker(ProgressCallback cb, std::string phase, long total)
      : cb_(std::move(cb)), phase_(std::move(phase)), total_(total), t0_(std::chrono::steady_clock::now()) {}
  /// Announces the phase (an event with done = 0) before its first unit finishes.
  void start() const { step(0); }
  /// Reports `done` units finished.
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
