// awq::f16_weight_gemm (fp16 weights, fp32 activations): every code path against a float64
// reference on fresh random inputs, with poisoned outputs, tails in K and N, M = 1 and small M,
// 1 and 2 threads (bit-identical), and the errors for bad arguments.
#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "awq/awq.hpp"
#include "awq/kernels/cpu/f16_weight_gemm.hpp"
#include "support.hpp"

using awq::index_t;
using Cpu = awq::backend::cpu;

namespace {

/// A random problem: x [M, K], W [N, K] as fp32 and rounded to fp16, bias [N].
struct Problem {
  index_t m, n, k;
  std::vector<float> x, w32, bias;
  std::vector<Eigen::half> w16;
};

Problem make_problem(index_t m, index_t n, index_t k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Problem p{m, n, k, {}, {}, {}, {}};
  for (index_t i = 0; i < m * k; ++i) p.x.push_back(nd(rng));
  for (index_t i = 0; i < n * k; ++i) p.w32.push_back(0.05f * nd(rng));
  for (index_t i = 0; i < n; ++i) p.bias.push_back(nd(rng));
  for (float v : p.w32) p.w16.push_back(Eigen::half(v));
  return p;
}

/// y with NaN everywhere, then the kernel on `isa`.
std::vector<float> run(const Problem& p, bool bias, awq::CpuIsa isa) {
  std::vector<float> y(static_cast<std::size_t>(p.m * p.n), awq_test::poison());
  awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), p.m, p.k), awq::make_row_major<const Eigen::half>(p.w16.data(), p.n, p.k),
                       awq::make_row_major(y.data(), p.m, p.n), bias ? p.bias.data() : nullptr, isa);
  return y;
}

/// The worst |y − ref| / (Σ_k |x w| + |bias|) over y, ref in float64 over the weights `fp16`
/// (rounded, what the kernel multiplies) or not (the fp32 weights before rounding); NaN stays NaN.
double worst_err(const Problem& p, const std::vector<float>& y, bool bias, bool fp16) {
  double worst = 0;
  for (index_t m = 0; m < p.m; ++m)
    for (index_t n = 0; n < p.n; ++n) {
      double ref = bias ? p.bias[static_cast<std::size_t>(n)] : 0.0, mag = std::fabs(ref);
      for (index_t k = 0; k < p.k; ++k) {
        const std::size_t i = static_cast<std::size_t>(n * p.k + k);
        const double w = fp16 ? static_cast<double>(static_cast<float>(p.w16[i])) : p.w32[i];
        const double xv = p.x[static_cast<std::size_t>(m * p.k + k)];
        ref += xv * w;
        mag += std::fabs(xv * w);
      }
      const double e = std::fabs(y[static_cast<std::size_t>(m * p.n + n)] - ref) / mag;
      if (!(e <= worst)) worst = e;  // NaN propagates
    }
  return worst;
}

std::vector<awq::CpuIsa> isas() {
  std::vector<awq::CpuIsa> v = {awq::CpuIsa::automatic, awq::CpuIsa::portable};
  if (awq::cpu_has_avx2()) v.push_back(awq::CpuIsa::avx2);
  return v;
}

/// Restores the thread count on scope exit.
struct ThreadsScope {
  int saved = Cpu::threads();
  ~ThreadsScope() { Cpu::set_threads(saved); }
};

}  // namespace

TEST_CASE("f16_weight_gemm: float64 reference over M, tails in K and N, bias, every code path, 1 and 2 threads") {
  const ThreadsScope keep;
  // K below one vector, one 8-chunk plus a tail, 16-steps with an 8-chunk, SmolLM2's hidden; N not a multiple
  // of 4; the last two split over two threads (at least 2^18 weights a part).
  const index_t shapes[][3] = {{1, 1, 1}, {1, 7, 13}, {1, 5, 24}, {2, 9, 33}, {1, 130, 64}, {3, 67, 100}, {1, 1027, 576}, {5, 66, 257}, {2, 301, 2061}};
  std::uint64_t seed = 1;
  for (const auto& s : shapes) {
    const Problem p = make_problem(s[0], s[1], s[2], seed++);
    // fp32 sums of K products: a few K · 2^-24 of Σ|x w| in the worst case.
    const double bound = 4.0 * static_cast<double>(p.k + 2) * 0x1p-24;
    for (const bool bias : {false, true})
      for (const awq::CpuIsa isa : isas()) {
        CAPTURE(p.m);
        CAPTURE(p.n);
        CAPTURE(p.k);
        CAPTURE(bias);
        CAPTURE(static_cast<int>(isa));
        std::vector<float> by_threads[2];
        for (const int t : {1, 2}) {
          Cpu::set_threads(std::min(t, Cpu::thread_count() > 1 ? 2 : 1));
          std::vector<float>& y = by_threads[t - 1];
          y = run(p, bias, isa);
          CHECK(worst_err(p, y, bias, true) < bound);
          // Against the weights before fp16 rounding: a relative rounding of 2^-11 per weight.
          CHECK(worst_err(p, y, bias, false) < 0x1p-11 + bound);
        }
        CHECK(by_threads[0] == by_threads[1]);  // a row's sum does not depend on the thread count
      }
  }
}

TEST_CASE("f16_weight_gemm: the AVX2 path agrees with the portable one, a row's result does not depend on M") {
  const Problem p = make_problem(4, 203, 584, 77);
  const std::vector<float> port = run(p, true, awq::CpuIsa::portable), aut = run(p, true, awq::CpuIsa::automatic);
  CHECK(awq_test::max_rel_err(aut.data(), port.data(), aut.size()) < 1e-5);
  // Row 2 alone (M = 1, x at an offset) equals row 2 of the M = 4 product, bit for bit.
  std::vector<float> y1(static_cast<std::size_t>(p.n), awq_test::poison());
  awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data() + 2 * p.k, 1, p.k),
                       awq::make_row_major<const Eigen::half>(p.w16.data(), p.n, p.k), awq::make_row_major(y1.data(), 1, p.n), p.bias.data());
  CHECK(y1 == std::vector<float>(aut.begin() + 2 * p.n, aut.begin() + 3 * p.n));
}

TEST_CASE("f16_weight_gemm: strided rows of x and y, and empty products") {
  const Problem p = make_problem(3, 21, 40, 5);
  std::vector<float> xs(static_cast<std::size_t>(3 * 50), awq_test::poison()), ys(static_cast<std::size_t>(3 * 30), -7.0f);
  for (index_t m = 0; m < 3; ++m)
    for (index_t k = 0; k < 40; ++k) xs[static_cast<std::size_t>(m * 50 + k)] = p.x[static_cast<std::size_t>(m * 40 + k)];
  awq::f16_weight_gemm(awq::MatrixView<const float>(xs.data(), 3, 40, 50, 1), awq::make_row_major<const Eigen::half>(p.w16.data(), 21, 40),
                       awq::MatrixView<float>(ys.data(), 3, 21, 30, 1));
  const std::vector<float> y = run(p, false, awq::CpuIsa::automatic);
  for (index_t m = 0; m < 3; ++m)
    for (index_t n = 0; n < 30; ++n) {
      const float got = ys[static_cast<std::size_t>(m * 30 + n)];
      CHECK(got == (n < 21 ? y[static_cast<std::size_t>(m * 21 + n)] : -7.0f));  // the padding is left alone
    }
  std::vector<float> none;
  CHECK_NOTHROW(awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), 0, 40),
                                     awq::make_row_major<const Eigen::half>(p.w16.data(), 21, 40), awq::make_row_major(none.data(), 0, 21)));
  // K = 0: y is the bias.
  std::vector<float> yb(21, awq_test::poison());
  awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), 1, 0), awq::make_row_major<const Eigen::half>(p.w16.data(), 21, 0),
                       awq::make_row_major(yb.data(), 1, 21), p.bias.data());
  CHECK(yb == std::vector<float>(p.bias.begin(), p.bias.begin() + 21));
}

TEST_CASE("f16_weight_gemm: bad arguments are named") {
  const Problem p = make_problem(2, 8, 16, 9);
  std::vector<float> y(16);
  const auto W = awq::make_row_major<const Eigen::half>(p.w16.data(), 8, 16);
  CHECK_THROWS_WITH_AS(awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), 2, 15), awq::make_row_major<const Eigen::half>(p.w16.data(), 8, 16),
                                            awq::make_row_major(y.data(), 2, 8)),
                       doctest::Contains("awq::f16_weight_gemm: x has 15 columns but W is 8 x 16"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), 2, 16), W, awq::make_row_major(y.data(), 2, 7)),
                       doctest::Contains("awq::f16_weight_gemm"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::f16_weight_gemm(awq::MatrixView<const float>(p.x.data(), 2, 16, 1, 2), W, awq::make_row_major(y.data(), 2, 8)),
                       doctest::Contains("x must have contiguous rows (col_stride 2)"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), 2, 16), W, awq::make_row_major(y.data(), 2, 8), nullptr,
                                            awq::CpuIsa::avx512vnni),
                       doctest::Contains("has no AVX-512 path (accepted: automatic, avx2, portable)"), awq::Error);
  if (!awq::cpu_has_avx2())
    CHECK_THROWS_WITH_AS(awq::f16_weight_gemm(awq::make_row_major<const float>(p.x.data(), 2, 16), W, awq::make_row_major(y.data(), 2, 8), nullptr,
                                              awq::CpuIsa::avx2),
                         doctest::Contains("lacks AVX2/FMA/F16C"), awq::Error);
}
