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
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

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
    release_done();
    auto promise = std::make_shared<std::promise<R>>();
    std::future<R> result = promise->get_future();
    Task task;
    task.run = [f = std::move(f), p = promise.get()]() mutable {
      try {
        if constexpr (std::is_void_v<R>) {
          f();
          p->set_value();
        } else {
          p->set_value(f());
        }
      } catch (...) {
        p->set_exception(std::current_exception());
      }
    };
    task.promise = std::move(promise);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
    }
    wake_.notify_one();
    return result;
  }

 private:
  /// The callable runs and is destroyed on the worker (its captures are the worker's to free);
  /// the promise, and with it any exception the future carries, is released on the owner's
  /// thread. The last reference to an exception is then dropped by the thread that read it,
  /// after the worker's last touch of it: libstdc++ counts those references where ThreadSanitizer
  /// cannot see, so a release on the worker would be reported as a race with the reader.
  struct Task {
    std::function<void()> run;
    std::shared_ptr<void> promise;
  };

  void run() {
    for (;;) {
      Task next;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing is left
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      next.run();
      next.run = nullptr;
      const std::lock_guard<std::mutex> lock(mutex_);
      done_.push_back(std::move(next.promise));
    }
  }

  void release_done() {
    std::vector<std::shared_ptr<void>> done;
    const std::lock_guard<std::mutex> lock(mutex_);
    done.swap(done_);
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> queue_;
  std::vector<std::shared_ptr<void>> done_;  // fulfilled promises, released by the owner
  bool stop_ = false;
  std::thread thread_;  // last: started after the members it uses
};

}  // namespace awq::detail
