// The CPU backend's float product y = x·wᵀ (awq::backend::cpu::linear) on the job's shapes:
// Eigen's product as the library used it before, the packed micro-kernels
// (awq/backend/cpu_gemm.hpp: packing w included), and linear() as the search and the model
// driver call it, on 1 and 2 threads. Counter: GFLOP/s (2·T·N·K a product). Also GPTQ's
// Hessian xᵀx (gram(): T·K² for its lower half): Eigen's column tiles, as the library computed
// it before, against gram() on the packed micro-kernels.
//
//   build/bench/bench_cpu_gemm --benchmark_repetitions=3 (bench/RESULTS.md for recorded runs)
//
// Build it with -march=native to give Eigen the host's widest vectors (the tool's build); the
// micro-kernels pick theirs at run time either way.
#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <algorithm>
#include <random>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/backend/cpu_gemm.hpp"

namespace {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Operands {
  Mat x, w, y;
  Operands(awq::index_t t, awq::index_t n, awq::index_t k) : x(Mat::Random(t, k)), w(Mat::Random(n, k)), y(t, n) {}
};

void report(benchmark::State& state, awq::index_t t, awq::index_t n, awq::index_t k) {
  state.counters["GFLOP/s"] = benchmark::Counter(2e-9 * static_cast<double>(t * n * k), benchmark::Counter::kIsIterationInvariantRate);
}

// Args: T, N, K (and threads for linear).
void BM_eigen(benchmark::State& state) {
  const awq::index_t t = state.range(0), n = state.range(1), k = state.range(2);
  Operands o(t, n, k);
  Eigen::setNbThreads(1);
  for (auto _ : state) {
    o.y.noalias() = o.x * o.w.transpose();
    benchmark::DoNotOptimize(o.y.data());
  }
  report(state, t, n, k);
}

void BM_packed(benchmark::State& state) {
  const awq::index_t t = state.range(0), n = state.range(1), k = state.range(2);
  if (!awq::detail::gemm::PackedWeight::available()) return state.SkipWithError("no SIMD micro-kernel on this processor or build");
  Operands o(t, n, k);
  for (auto _ : state) {
    awq::detail::gemm::PackedWeight pw(n, k);
    pw.pack(awq::make_row_major<const float>(o.w.data(), n, k), 0, pw.panels());
    pw.multiply(awq::make_row_major<const float>(o.x.data(), t, k), awq::make_row_major(o.y.data(), t, n), 0, pw.panels());
    benchmark::DoNotOptimize(o.y.data());
  }
  report(state, t, n, k);
}

void BM_linear(benchmark::State& state) {
  const awq::index_t t = state.range(0), n = state.range(1), k = state.range(2);
  Operands o(t, n, k);
  const int saved = awq::backend::cpu::threads();
  awq::backend::cpu::threads() = static_cast<int>(state.range(3));
  for (auto _ : state) {
    awq::backend::cpu::linear(awq::make_row_major<const float>(o.x.data(), t, k), awq::make_row_major<const float>(o.w.data(), n, k),
                              static_cast<const float*>(nullptr), awq::make_row_major(o.y.data(), t, n));
    benchmark::DoNotOptimize(o.y.data());
  }
  awq::backend::cpu::threads() = saved;
  report(state, t, n, k);
}

// Args: T, K, threads. Eigen's tiled lower half, mirrored: gram() before the packed kernels.
void BM_gram_eigen(benchmark::State& state) {
  const awq::index_t t = state.range(0), k = state.range(1);
  const Mat x = Mat::Random(t, k);
  Mat out(k, k);
  const int saved = awq::backend::cpu::threads();
  awq::backend::cpu::threads() = static_cast<int>(state.range(2));
  Eigen::setNbThreads(1);
  constexpr awq::index_t tile = 64;
  const awq::index_t n = (k + tile - 1) / tile;
  for (auto _ : state) {
    const auto lower_tile = [&](awq::index_t i) {
      const awq::index_t c0 = i * tile, nc = std::min(tile, k - c0);
      out.block(c0, c0, k - c0, nc).noalias() = x.rightCols(k - c0).transpose() * x.middleCols(c0, nc);
    };
    awq::backend::cpu::parallel_for((n + 1) / 2, [&](awq::index_t p0, awq::index_t p1) {
      for (awq::index_t p = p0; p < p1; ++p) {
        lower_tile(p);
        if (n - 1 - p != p) lower_tile(n - 1 - p);
      }
    });
    for (awq::index_t i = 0; i < k; ++i)
      for (awq::index_t j = i + 1; j < k; ++j) out(i, j) = out(j, i);
    benchmark::DoNotOptimize(out.data());
  }
  awq::backend::cpu::threads() = saved;
  state.counters["GFLOP/s"] = benchmark::Counter(1e-9 * static_cast<double>(t * k * k), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gram(benchmark::State& state) {
  const awq::index_t t = state.range(0), k = state.range(1);
  const Mat x = Mat::Random(t, k);
  Mat out(k, k);
  const int saved = awq::backend::cpu::threads();
  awq::backend::cpu::threads() = static_cast<int>(state.range(2));
  for (auto _ : state) {
    awq::backend::cpu::gram(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(out.data(), k, k));
    benchmark::DoNotOptimize(out.data());
  }
  awq::backend::cpu::threads() = saved;
  state.counters["GFLOP/s"] = benchmark::Counter(1e-9 * static_cast<double>(t * k * k), benchmark::Counter::kIsIterationInvariantRate);
}

// The job's Hessians: SmolLM2's 576- and 1536-wide inputs over its 32,768 calibration tokens.
void gram_shapes(benchmark::internal::Benchmark* b) {
  for (long threads : {1, 2})
    for (long k : {576, 1536}) b->Args({32768, k, threads});
  b->ArgNames({"T", "K", "threads"})->Unit(benchmark::kMillisecond);
}

// SmolLM2-135M's linears on a 4096-token chunk (q/o; gate, up; down; k, v), a head tile, a 7B linear.
void shapes(benchmark::internal::Benchmark* b) {
  for (const auto& s : std::vector<std::vector<long>>{{4096, 576, 576}, {4096, 1536, 576}, {4096, 576, 1536}, {4096, 192, 576},
                                                      {512, 2048, 576}, {1024, 4096, 4096}})
    b->Args(s);
  b->ArgNames({"T", "N", "K"})->Unit(benchmark::kMillisecond);
}
void threaded_shapes(benchmark::internal::Benchmark* b) {
  for (long threads : {1, 2})
    for (const auto& s : std::vector<std::vector<long>>{{4096, 576, 576}, {4096, 1536, 576}, {4096, 576, 1536}, {4096, 192, 576},
                                                        {1024, 4096, 4096}})
      b->Args({s[0], s[1], s[2], threads});
  b->ArgNames({"T", "N", "K", "threads"})->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_eigen)->Apply(shapes);
BENCHMARK(BM_packed)->Apply(shapes);
BENCHMARK(BM_linear)->Apply(threaded_shapes);
BENCHMARK(BM_gram_eigen)->Apply(gram_shapes);
BENCHMARK(BM_gram)->Apply(gram_shapes);

}  // namespace

BENCHMARK_MAIN();
