// Quantizer throughput per config on a 4096 x 4096 weight, with a plain copy as the baseline.
#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include "awq/awq.hpp"

namespace {

void BM_copy_baseline(benchmark::State& state) {
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(4096, 4096), o(4096, 4096);
  for (auto _ : state) {
    o = w;
    benchmark::DoNotOptimize(o.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * w.size() * 4);
}
BENCHMARK(BM_copy_baseline);

template <class Cfg>
void BM_pseudo_quantize(benchmark::State& state) {
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(4096, 4096), o(4096, 4096);
  for (auto _ : state) {
    awq::pseudo_quantize<Cfg>(awq::as_view(w), awq::as_view(o));
    benchmark::DoNotOptimize(o.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * w.size() * 4);
}
BENCHMARK_TEMPLATE(BM_pseudo_quantize, awq::QuantConfig<4, 128, true>);
BENCHMARK_TEMPLATE(BM_pseudo_quantize, awq::QuantConfig<3, 64, true>);
BENCHMARK_TEMPLATE(BM_pseudo_quantize, awq::QuantConfig<4, 128, false>);

}  // namespace

BENCHMARK_MAIN();
