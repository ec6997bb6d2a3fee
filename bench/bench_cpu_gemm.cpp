// The CPU backend's float product y = x·wᵀ (awq::backend::cpu::linear) on the job's shapes:
// Eigen's product as the library used it before, the packed micro-kernels
// (awq/backend/cpu_gemm.hpp: packing w included), and linear() as the search and the model
// driver call it, on 1 and 2 threads. Counter: GFLOP/s (2·T·N·K a product).
//
//   build/bench/bench_cpu_gemm --benchmark_repetitions=3 (bench/RESULTS.md for recorded runs)
//
// Build it with -march=native to give Eigen the host's widest vectors (the tool's build); the
// micro-kernels pick theirs at run time either way.
#include <benchmark/benchmark.h>

#include <Eigen/Core>

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

}  // namespace

BENCHMARK_MAIN();
