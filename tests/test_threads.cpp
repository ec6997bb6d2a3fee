// The CPU backend's thread pool and the multi-threaded paths on it. Also built as its own binary
// under ThreadSanitizer (awq_thread_tests, scripts/test.sh).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <future>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "awq/awq.hpp"
#include "awq/model/arch/llama.hpp"
#include "awq/model/hf_source.hpp"
#include "awq/model/pipeline.hpp"
#include "support.hpp"

using awq::index_t;

namespace {
struct ThreadsGuard {
  int saved = awq::backend::cpu::threads();
  ~ThreadsGuard() { awq::backend::cpu::threads() = saved; }
};

std::vector<float> randn(index_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}
}  // namespace

TEST_CASE("parallel_for covers every index exactly once, for any thread count and size") {
  ThreadsGuard guard;
  for (int t : {1, 2, 3, 8})
    for (index_t n : {1, 2, 7, 64, 1000}) {
      awq::backend::cpu::threads() = t;
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      for (auto& h : hits) h = 0;
      for (int rep = 0; rep < 20; ++rep)
        awq::backend::cpu::parallel_for(n, [&](index_t a, index_t b) {
          for (index_t i = a; i < b; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
        });
      for (auto& h : hits) CHECK(h.load() == 20);
    }
}

TEST_CASE("parallel_for: nested calls run, exceptions propagate, concurrent callers are served") {
  ThreadsGuard guard;
  awq::backend::cpu::threads() = 4;
  std::atomic<long> sum{0};
  awq::backend::cpu::parallel_for(8, [&](index_t a, index_t b) {
    for (index_t i = a; i < b; ++i)
      awq::backend::cpu::parallel_for(10, [&](index_t c, index_t d) { sum.fetch_add(d - c); });
  });
  CHECK(sum.load() == 80);

  CHECK_THROWS_WITH_AS(awq::backend::cpu::parallel_for(16,
                                                       [&](index_t a, index_t) {
                                                         if (a > 0) throw std::runtime_error("part failed");
                                                       }),
                       "part failed", std::runtime_error);
  // The pool still works after an exception.
  std::atomic<long> after{0};
  awq::backend::cpu::parallel_for(100, [&](index_t a, index_t b) { after.fetch_add(b - a); });
  CHECK(after.load() == 100);

  // Several application threads at once: one gets the pool, the others start their own threads.
  std::vector<std::thread> callers;
  std::vector<long> totals(4, 0);
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&, c] {
      for (int rep = 0; rep < 50; ++rep) {
        std::atomic<long> s{0};
        awq::backend::cpu::parallel_for(64, [&](index_t a, index_t b) { s.fetch_add(b - a); });
        totals[static_cast<std::size_t>(c)] += s.load();
      }
    });
  for (auto& t : callers) t.join();
  for (long v : totals) CHECK(v == 64 * 50);
}

TEST_CASE("multi-threaded backend primitives equal their single-threaded results bit for bit") {
  ThreadsGuard guard;
  const index_t t = 96, k = 128, n = 80;
  const auto x = randn(t * k, 1), w = randn(n * k, 2), b = randn(n, 3);
  std::vector<float> s(static_cast<std::size_t>(k));
  for (index_t i = 0; i < k; ++i) s[static_cast<std::size_t>(i)] = 0.5f + 0.01f * static_cast<float>(i);
  auto run = [&](int threads) {
    awq::backend::cpu::threads() = threads;
    std::vector<float> y(static_cast<std::size_t>(t * n)), q(static_cast<std::size_t>(n * k));
    awq::backend::cpu::linear(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major<const float>(w.data(), n, k),
                              b.data(), awq::make_row_major(y.data(), t, n));
    awq::backend::cpu::scaled_pseudo_quantize(awq::QuantSpec{4, 64, true}, awq::make_row_major<const float>(w.data(), n, k),
                                              s.data(), awq::make_row_major(q.data(), n, k));
    const double e = awq::backend::cpu::mse(awq::make_row_major<const float>(w.data(), n, k), awq::make_row_major<const float>(q.data(), n, k));
    return std::make_tuple(y, q, e);
  };
  const auto one = run(1);
  for (int threads : {2, 3, 5}) {
    const auto many = run(threads);
    CHECK(std::get<0>(many) == std::get<0>(one));
    CHECK(std::get<1>(many) == std::get<1>(one));
    CHECK(std::abs(std::get<2>(many) - std::get<2>(one)) <= 1e-12 * std::get<2>(one));
  }
}

TEST_CASE("the scale search gives the same scales on 1 and 4 threads") {
  ThreadsGuard guard;
  const index_t t = 64, k = 128, n = 64;
  auto x = randn(t * k, 4);
  for (index_t r = 0; r < t; ++r) x[static_cast<std::size_t>(r * k + 5)] *= 20.0f;  // an outlier channel
  const auto w = randn(n * k, 5);
  std::vector<awq::Linear<float>> lin{{awq::make_row_major<const float>(w.data(), n, k), nullptr}};
  awq::ScaleSearchOptions opt;
  opt.quant = awq::QuantSpec{4, 64, true};
  awq::backend::cpu::threads() = 1;
  const auto r1 = awq::search_scales(awq::make_row_major<const float>(x.data(), t, k), lin, awq::LinearsBlock<float>(lin), opt);
  awq::backend::cpu::threads() = 4;
  const auto r4 = awq::search_scales(awq::make_row_major<const float>(x.data(), t, k), lin, awq::LinearsBlock<float>(lin), opt);
  CHECK(r1.best_index == r4.best_index);
  CHECK(r1.scales == r4.scales);
}

TEST_CASE("set_threads bounds the parts parallel_for runs, and refuses counts outside 0 .. hardware threads") {
  ThreadsGuard guard;
  const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int t = 1; t <= hw; ++t) {
    awq::backend::cpu::set_threads(t);
    CHECK(awq::backend::cpu::thread_count() == t);
    std::atomic<int> parts{0};
    awq::backend::cpu::parallel_for(1000, [&](index_t, index_t) { parts.fetch_add(1); });
    CHECK(parts.load() == t);
  }
  awq::backend::cpu::set_threads(0);
  CHECK(awq::backend::cpu::thread_count() == hw);
  CHECK_THROWS_WITH_AS(awq::backend::cpu::set_threads(-1),
                       doctest::Contains("awq::backend::cpu::set_threads: -1 threads (accepted: 0 = all, or 1 to"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::backend::cpu::set_threads(hw + 1), doctest::Contains((std::to_string(hw + 1) + " threads").c_str()), awq::Error);
  CHECK(awq::backend::cpu::threads() == 0);  // a refused count changes nothing
}

TEST_CASE("the pipeline reading and sinking on threads of their own gives the serial run's results, in order") {
  // A sharded Qwen2 checkpoint (q/k/v biases): the reading thread maps shards as it goes.
  const auto src = awq::model::HfSource::open(awq_test::golden_dir("arch_qwen2_bias") + "/hf");
  const awq::model::Batch calib{2, 16}, eval{2, 8};
  const auto h = awq_test::random_weights(calib.tokens(), src.config().hidden, awq_test::Dist::outliers, 21, 1.0);
  const auto e = awq_test::random_weights(eval.tokens(), src.config().hidden, awq_test::Dist::normal, 22, 1.0);
  struct Run {
    std::vector<int> order;
    std::vector<std::vector<std::uint8_t>> codes;
    std::vector<std::vector<float>> tensors, streams;
  };
  const auto run = [&](bool overlap, int throw_at) {
    Run r;
    std::vector<awq::model::Stream> s = {{awq::model::StreamKind::fp, eval, std::vector<float>(e.begin(), e.end())},
                                         {awq::model::StreamKind::awq, eval, std::vector<float>(e.begin(), e.end())}};
    awq::model::PipelineOptions opt;
    opt.block.quant = awq::QuantSpec{4, 32, true};
    opt.overlap_io = overlap;
    awq::model::quantize_model<awq::backend::cpu, awq::model::Llama>(
        src, calib, std::vector<float>(h.begin(), h.end()), s, opt, [&](const awq::model::QuantizedBlock& b) {
          r.order.push_back(b.index);
          for (const auto& [n, q] : b.linears) r.codes.push_back(q.codes);
          for (const auto& [n, v] : b.tensors) r.tensors.push_back(v);
          if (b.index == throw_at) throw std::runtime_error("sink failed at block " + std::to_string(b.index));
        });
    for (const auto& x : s) r.streams.push_back(x.hidden);
    return r;
  };
  const Run serial = run(false, -1), overlapped = run(true, -1);
  const int n = src.config().layers;
  REQUIRE(n >= 2);
  CHECK(overlapped.order.size() == static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) CHECK(overlapped.order[static_cast<std::size_t>(i)] == i);
  CHECK(overlapped.codes == serial.codes);
  CHECK(overlapped.tensors == serial.tensors);
  CHECK(overlapped.streams == serial.streams);
  // A sink's exception reaches the caller, from the sinking thread as from the calling one.
  for (const bool overlap : {false, true}) CHECK_THROWS_WITH(run(overlap, 0), "sink failed at block 0");
}

TEST_CASE("SerialWorker: tasks run in order on one thread, results and exceptions reach their futures") {
  for (const bool async : {false, true}) {
    CAPTURE(async);
    std::vector<int> ran;
    std::vector<std::thread::id> on;
    std::future<int> last;
    {
      awq::detail::SerialWorker w(async);
      std::vector<std::future<int>> f;
      for (int i = 0; i < 6; ++i)
        f.push_back(w.submit([&ran, &on, i] {
          ran.push_back(i);
          on.push_back(std::this_thread::get_id());
          return 10 * i;
        }));
      auto bad = w.submit([]() -> int { throw std::runtime_error("task 6 failed"); });
      for (int i = 0; i < 6; ++i) CHECK(f[static_cast<std::size_t>(i)].get() == 10 * i);
      CHECK_THROWS_WITH(bad.get(), "task 6 failed");
      last = w.submit([&ran] {
        ran.push_back(7);
        return 7;
      });
      if (!async) CHECK(last.get() == 7);  // deferred: it runs when waited on
    }  // an async worker's destructor finishes what was submitted
    if (async) CHECK(last.get() == 7);
    CHECK(ran == std::vector<int>{0, 1, 2, 3, 4, 5, 7});
    for (const auto& id : on) CHECK(id == (async ? on.front() : std::this_thread::get_id()));
    if (async) CHECK(on.front() != std::this_thread::get_id());
  }
}
