/// \file
/// \brief awq::detail::SerialWorker: one thread that runs the tasks given to it in order, for
///        the model driver's overlapped reads and sinks.
///
/// One long-lived thread per role, not a thread per task: with glibc, each new thread may get a
/// malloc arena of its own, and the blocks a reader allocates and the caller frees stay cached in
/// the arena that served them, so RSS would grow with every arena a fresh thread visits. One
/// thread keeps its allocations in one arena, reused from block to block.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

namespace awq::detail {

/// \brief Runs submitted tasks one at a time, in submission order: on a thread of its own when
///        constructed `async`, otherwise on the caller's thread when the task's future is waited on.
class SerialWorker {
 public:
  explicit SerialWorker(bool async) {
    if (async) thread_ = std::thread([this] { run(); });
  }
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;
  /// Finishes the tasks already submitted, then stops the thread.
  ~SerialWorker() {
    if (!thread_.joinable()) return;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  /// Queues `f`; its result or exception arrives through the future.
  template <class F>
  std::future<std::invoke_result_t<F&>> submit(F f) {
    using R = std::invoke_result_t<F&>;
    if (!thread_.joinable()) return std::async(std::launch::deferred, std::move(f));
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(f));
    std::future<R> result = task->get_future();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      queue_.emplace_back([task] { (*task)(); });
    }
    wake_.notify_one();
    return result;
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> next;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing is left
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      next();  // a packaged_task: its exception goes to its future
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: started after the members it uses
};

}  // namespace awq::detail
