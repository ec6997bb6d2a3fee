// CPU W4A16 kernels against Eigen fp32 on the same shape, 1 and 2 threads, M = 1 and 16: the
// checkpoint-layout kernel (AVX2, portable) and the blocked-layout kernel (AVX-512 VNNI, AVX2).
//
// Shape: W [N = 11008, K = 4096] (a 7B MLP up/gate projection), group 128, zero point. Weights
// rotate over enough copies (≥ 96 MB for W4, one 180 MB matrix for fp32) that no cache holds
// them. Counters: GB/s of weight bytes moved (packed weights + fp16 scales + packed zeros for
// W4, the fp32 matrix for Eigen) — compare with BM_read_floor, the same bytes read by a plain
// loop in the same binary (the byte floor).
//
//   build/bench/bench_w4a16_cpu --benchmark_min_time=1 (see bench/RESULTS.md for recorded runs)
#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <vector>

#include "awq/awq.hpp"
#include "awq/eigen.hpp"
#include "awq/kernels/cpu/w4a16.hpp"
#include "awq/kernels/cpu/w4a16_blocked.hpp"

namespace {

constexpr awq::index_t kN = 11008, kK = 4096, kG = 128;

struct PackedCopy {
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<Eigen::half> scales;
  awq::AwqGemmWeights view() const {
    return {awq::make_row_major(qweight.data(), kK, kN / 8), awq::make_row_major(qzeros.data(), kK / kG, kN / 8),
            awq::make_row_major(scales.data(), kK / kG, kN)};
  }
  static double bytes() { return kK * kN / 2.0 + (kK / kG) * kN * 2.0 + (kK / kG) * kN / 2.0; }
};

const std::vector<PackedCopy>& packed_copies() {
  static const std::vector<PackedCopy> copies = [] {
    std::mt19937_64 rng(1);
    PackedCopy c;
    c.qweight.resize(static_cast<std::size_t>(kK * kN / 8));
    c.qzeros.resize(static_cast<std::size_t>(kK / kG * kN / 8));
    c.scales.resize(static_cast<std::size_t>(kK / kG * kN));
    for (auto& v : c.qweight) v = static_cast<std::int32_t>(rng());
    for (auto& v : c.qzeros) v = static_cast<std::int32_t>(rng());
    std::uniform_real_distribution<float> d(0.001f, 0.02f);
    for (auto& v : c.scales) v = Eigen::half(d(rng));
    return std::vector<PackedCopy>(4, c);  // 4 × 23.2 MB
  }();
  return copies;
}

Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> random_x(awq::index_t m) {
  return Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Random(m, kK);
}

// Eigen fp32: y = W x for M = 1 (matrix-vector, single-threaded in Eigen), Y = X Wᵀ otherwise.
void BM_eigen_fp32(benchmark::State& state) {
  const auto m = static_cast<awq::index_t>(state.range(0));
  static const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> W =
      Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>::Random(kN, kK);
  Eigen::setNbThreads(static_cast<int>(state.range(1)));
  const auto X = random_x(m);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Y(m, kN);
  for (auto _ : state) {
    if (m == 1)
      Y.row(0).transpose().noalias() = W * X.row(0).transpose();
    else
      Y.noalias() = X * W.transpose();
    benchmark::DoNotOptimize(Y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * kN * kK * 4.0 / 1e9,
                                              benchmark::Counter::kIsRate);
}

// Times w4a16_gemm over rotating weight copies of either layout (M = state.range(0), threads =
// state.range(1)); GB/s counts the checkpoint bytes, the same for both layouts.
template <class Copies, class View>
void time_w4a16(benchmark::State& state, const Copies& copies, View view, const awq::W4A16Options& opt) {
  const auto m = static_cast<awq::index_t>(state.range(0));
  awq::backend::cpu::threads() = static_cast<int>(state.range(1));
  const auto X = random_x(m);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Y(m, kN);
  std::size_t i = 0;
  for (auto _ : state) {
    awq::w4a16_gemm(awq::as_view(X), view(copies[i++ % copies.size()]), awq::as_view(Y), static_cast<const float*>(nullptr), opt);
    benchmark::DoNotOptimize(Y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * PackedCopy::bytes() / 1e9,
                                              benchmark::Counter::kIsRate);
  awq::backend::cpu::threads() = 0;
}

void BM_w4a16(benchmark::State& state, awq::CpuIsa isa, awq::M1Decode decode) {
  time_w4a16(state, packed_copies(), [](const PackedCopy& c) { return c.view(); }, awq::W4A16Options{isa, decode});
}

// The same weights in the blocked CPU layout (awq::block_w4a16): the same bytes, re-ordered.
const std::vector<awq::BlockedW4A16>& blocked_copies() {
  static const std::vector<awq::BlockedW4A16> copies = [] {
    std::vector<awq::BlockedW4A16> v;
    for (const auto& c : packed_copies()) v.push_back(awq::block_w4a16(c.view()));
    return v;
  }();
  return copies;
}

void BM_w4a16_blocked(benchmark::State& state, awq::CpuIsa isa) {
  if ((isa == awq::CpuIsa::avx512vnni && !awq::cpu_has_avx512vnni()) || (isa == awq::CpuIsa::avx2 && !awq::cpu_has_avx2())) {
    state.SkipWithError("this processor lacks the instruction set");
    return;
  }
  time_w4a16(state, blocked_copies(), [](const awq::BlockedW4A16& b) -> const awq::BlockedW4A16& { return b; }, awq::W4A16Options{isa});
}

// The byte floor measured in the same binary: read the same rotating W4 copies (codes, scales,
// zeros) with 8-byte loads, four independent XOR chains per thread, a software prefetch 4 KB ahead, split over the threads as the
// kernel splits its columns. Its GB/s is what DRAM gives this access; the kernel's GB/s over it is
// its % of the floor.
void BM_read_floor(benchmark::State& state) {
  awq::backend::cpu::threads() = static_cast<int>(state.range(1));
  const auto& copies = packed_copies();
  std::size_t i = 0;
  std::uint64_t sink = 0;
  auto read = [](const void* data, std::size_t bytes, awq::index_t b0, awq::index_t b1, awq::index_t parts) {
    const auto* p = static_cast<const std::uint64_t*>(data);
    const std::size_t n = bytes / 8, lo = n * static_cast<std::size_t>(b0) / static_cast<std::size_t>(parts),
                      hi = n * static_cast<std::size_t>(b1) / static_cast<std::size_t>(parts);
    std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    std::size_t j = lo;
    for (; j + 8 <= hi; j += 8) {
      __builtin_prefetch(p + j + 512);  // 4 KB ahead, as the blocked kernel (one core reads ~1.5x more with it)
      a0 ^= p[j] ^ p[j + 4], a1 ^= p[j + 1] ^ p[j + 5], a2 ^= p[j + 2] ^ p[j + 6], a3 ^= p[j + 3] ^ p[j + 7];
    }
    for (; j < hi; ++j) a0 ^= p[j];
    return a0 ^ a1 ^ a2 ^ a3;
  };
  constexpr awq::index_t kParts = 256;
  std::vector<std::uint64_t> part(kParts);
  for (auto _ : state) {
    const auto& c = copies[i++ % copies.size()];
    awq::backend::cpu::parallel_for(kParts, [&](awq::index_t b0, awq::index_t b1) {
      part[static_cast<std::size_t>(b0)] = read(c.qweight.data(), c.qweight.size() * 4, b0, b1, kParts) ^
                                          read(c.scales.data(), c.scales.size() * 2, b0, b1, kParts) ^
                                          read(c.qzeros.data(), c.qzeros.size() * 4, b0, b1, kParts);
    });
    for (auto v : part) sink ^= v;
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * PackedCopy::bytes() / 1e9,
                                              benchmark::Counter::kIsRate);
  awq::backend::cpu::threads() = 0;
}

void args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (int m : {1, 16})
    for (int t : {1, 2}) b->Args({m, t});
}

void m1_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (int t : {1, 2}) b->Args({1, t});
}

BENCHMARK(BM_read_floor)->Apply(m1_args);
BENCHMARK(BM_eigen_fp32)->Apply(args);
BENCHMARK_CAPTURE(BM_w4a16, avx2, awq::CpuIsa::automatic, awq::M1Decode::automatic)->Apply(args);
BENCHMARK_CAPTURE(BM_w4a16, avx2_convert, awq::CpuIsa::automatic, awq::M1Decode::convert)->Apply(m1_args);
BENCHMARK_CAPTURE(BM_w4a16, avx2_denormal, awq::CpuIsa::automatic, awq::M1Decode::denormal)->Apply(m1_args);
BENCHMARK_CAPTURE(BM_w4a16_blocked, avx512vnni, awq::CpuIsa::avx512vnni)->Apply(args);
BENCHMARK_CAPTURE(BM_w4a16_blocked, avx2, awq::CpuIsa::avx2)->Apply(args);
BENCHMARK_CAPTURE(BM_w4a16, portable, awq::CpuIsa::portable, awq::M1Decode::automatic)->Apply(args);

}  // namespace

BENCHMARK_MAIN();
