// The CPU backend's packed float product (awq/backend/cpu_gemm.hpp) and linear() over it. Also
// built into the ThreadSanitizer binary (awq_thread_tests, scripts/test.sh).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/backend/cpu_gemm.hpp"

using awq::index_t;
namespace gemm = awq::detail::gemm;

namespace {
std::vector<float> gemm_randn(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct GemmCase {
  index_t t, n, k, xs, ys;  // rows, outputs, inputs, x's and y's row strides
};

// y = x·wᵀ through one PackedWeight on `path`, panels [0, all), y poisoned first.
std::vector<float> packed_product(const GemmCase& c, const std::vector<float>& x, const std::vector<float>& w, gemm::Path path) {
  std::vector<float> y(static_cast<std::size_t>(c.t * c.ys), std::numeric_limits<float>::quiet_NaN());
  gemm::PackedWeight pw(c.n, c.k, path);
  pw.pack(awq::make_row_major<const float>(w.data(), c.n, c.k), 0, pw.panels());
  pw.multiply(awq::MatrixView<const float>(x.data(), c.t, c.k, c.xs, 1), awq::MatrixView<float>(y.data(), c.t, c.n, c.ys, 1), 0,
              pw.panels());
  return y;
}

std::vector<gemm::Path> paths_here() {
  std::vector<gemm::Path> p;
  if (awq::cpu_has_avx2()) p.push_back(gemm::Path::avx2);
  if (awq::cpu_has_avx512f()) p.push_back(gemm::Path::avx512);
  return p;
}

const GemmCase kCases[] = {{1, 1, 1, 1, 1},     {11, 31, 7, 9, 40},    {12, 32, 64, 64, 32},   {13, 33, 100, 101, 35},
                           {250, 100, 576, 580, 100}, {37, 70, 769, 769, 71}, {30, 17, 1600, 1603, 20}};
}  // namespace

TEST_CASE("packed float product: every path within float rounding of a float64 reference, tails and strides") {
  const auto paths = paths_here();
  if (paths.empty()) {
    MESSAGE("skipped: no AVX2 or AVX-512 micro-kernel on this processor or build (linear() uses Eigen here)");
    CHECK_FALSE(gemm::PackedWeight::available());
    return;
  }
  for (const GemmCase& c : kCases)
    for (gemm::Path path : paths) {
      CAPTURE(c.t);
      CAPTURE(c.n);
      CAPTURE(c.k);
      CAPTURE(static_cast<int>(path));
      const auto x = gemm_randn(static_cast<std::size_t>(c.t * c.xs), 1 + c.k), w = gemm_randn(static_cast<std::size_t>(c.n * c.k), 2 + c.n);
      const auto y = packed_product(c, x, w, path);
      double worst = 0;
      for (index_t i = 0; i < c.t; ++i)
        for (index_t j = 0; j < c.n; ++j) {
          double ref = 0, mag = 0;
          for (index_t q = 0; q < c.k; ++q) {
            const double p = static_cast<double>(x[static_cast<std::size_t>(i * c.xs + q)]) * w[static_cast<std::size_t>(j * c.k + q)];
            ref += p;
            mag += std::fabs(p);
          }
          const double err = std::fabs(y[static_cast<std::size_t>(i * c.ys + j)] - ref);  // NaN (a missed element) fails below
          const double bound = 1.01 * static_cast<double>(c.k) * std::ldexp(1.0, -24) * mag + 1e-30;
          if (!(err <= bound)) {
            FAIL_CHECK("element (", i, ", ", j, "): ", y[static_cast<std::size_t>(i * c.ys + j)], " against ", ref, ", bound ", bound);
            break;
          }
          worst = std::max(worst, err / bound);
        }
      CHECK(worst <= 1.0);
      for (index_t i = 0; i < c.t; ++i)  // the padding between y's rows is never written
        for (index_t j = c.n; j < c.ys; ++j) CHECK(std::isnan(y[static_cast<std::size_t>(i * c.ys + j)]));
    }
}

TEST_CASE("packed float product: each element is one FMA chain per K block, so every path gives the same bits") {
  const auto paths = paths_here();
  if (paths.empty()) {
    MESSAGE("skipped: no AVX2 or AVX-512 micro-kernel on this processor or build");
    return;
  }
  for (const GemmCase& c : kCases) {
    CAPTURE(c.k);
    const auto x = gemm_randn(static_cast<std::size_t>(c.t * c.xs), 3 + c.k), w = gemm_randn(static_cast<std::size_t>(c.n * c.k), 4 + c.n);
    // The documented order: K in ceil(k / 768) equal blocks, each an fmaf chain from zero, added in order.
    const index_t blocks = (c.k + gemm::kMaxKc - 1) / gemm::kMaxKc, kc = (c.k + blocks - 1) / blocks;
    std::vector<float> model(static_cast<std::size_t>(c.t * c.n));
    for (index_t i = 0; i < c.t; ++i)
      for (index_t j = 0; j < c.n; ++j) {
        float out = 0;
        for (index_t k0 = 0; k0 < c.k; k0 += kc) {
          float acc = 0;
          for (index_t q = k0; q < std::min(c.k, k0 + kc); ++q)
            acc = std::fma(x[static_cast<std::size_t>(i * c.xs + q)], w[static_cast<std::size_t>(j * c.k + q)], acc);
          out = k0 == 0 ? acc : out + acc;
        }
        model[static_cast<std::size_t>(i * c.n + j)] = out;
      }
    for (gemm::Path path : paths) {
      const auto y = packed_product(c, x, w, path);
      index_t differ = 0;
      for (index_t i = 0; i < c.t; ++i)
        for (index_t j = 0; j < c.n; ++j) differ += y[static_cast<std::size_t>(i * c.ys + j)] != model[static_cast<std::size_t>(i * c.n + j)];
      CHECK_MESSAGE(differ == 0, "path ", static_cast<int>(path), ": ", differ, " elements differ from the FMA-chain model");
    }
  }
}

TEST_CASE("packed float product: a range of panels writes only its columns") {
  if (!gemm::PackedWeight::available()) {
    MESSAGE("skipped: no SIMD micro-kernel on this processor or build");
    return;
  }
  const index_t t = 20, n = 100, k = 48;
  const auto x = gemm_randn(static_cast<std::size_t>(t * k), 5), w = gemm_randn(static_cast<std::size_t>(n * k), 6);
  gemm::PackedWeight pw(n, k);
  pw.pack(awq::make_row_major<const float>(w.data(), n, k), 0, pw.panels());
  std::vector<float> full(static_cast<std::size_t>(t * n));
  pw.multiply(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(full.data(), t, n), 0, pw.panels());
  const index_t nr = pw.panel_width(), p0 = 1, p1 = pw.panels(), cols = n - p0 * nr;  // the last panel is partial
  std::vector<float> part(static_cast<std::size_t>(t * cols), std::numeric_limits<float>::quiet_NaN());
  pw.multiply(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(part.data(), t, cols), p0, p1);
  for (index_t i = 0; i < t; ++i)
    for (index_t j = 0; j < cols; ++j) REQUIRE(part[static_cast<std::size_t>(i * cols + j)] == full[static_cast<std::size_t>(i * n + p0 * nr + j)]);
}

TEST_CASE("packed float product: bad shapes and panel ranges are errors naming the value") {
  if (!gemm::PackedWeight::available()) {
    MESSAGE("skipped: no SIMD micro-kernel on this processor or build");
    return;
  }
  CHECK_THROWS_WITH_AS(gemm::PackedWeight(0, 8), doctest::Contains("empty weight 0x8"), awq::Error);
  gemm::PackedWeight pw(40, 8);
  std::vector<float> w(40 * 8, 1.0f), x(3 * 9, 1.0f), y(3 * 40);
  CHECK_THROWS_WITH_AS(pw.pack(awq::make_row_major<const float>(w.data(), 40, 7), 0, 1), doctest::Contains("w"), awq::Error);
  CHECK_THROWS_WITH_AS(pw.pack(awq::make_row_major<const float>(w.data(), 40, 8), 0, pw.panels() + 1), doctest::Contains("outside"),
                       awq::Error);
  pw.pack(awq::make_row_major<const float>(w.data(), 40, 8), 0, pw.panels());
  CHECK_THROWS_WITH_AS(pw.multiply(awq::make_row_major<const float>(x.data(), 3, 9), awq::make_row_major(y.data(), 3, 40), 0, pw.panels()),
                       doctest::Contains("x has 9 columns"), awq::Error);
  CHECK_THROWS_WITH_AS(pw.multiply(awq::make_row_major<const float>(x.data(), 3, 8), awq::make_row_major(y.data(), 3, 39), 0, pw.panels()),
                       doctest::Contains("y"), awq::Error);
  CHECK_THROWS_WITH_AS(pw.multiply(awq::make_row_major<const float>(x.data(), 3, 8), awq::make_row_major(y.data(), 3, 40), 1, 1),
                       doctest::Contains("outside"), awq::Error);
}

TEST_CASE("linear: the packed path's bits do not depend on the thread count, bias added, few rows through Eigen") {
  const int saved = awq::backend::cpu::threads();
  const index_t n = 70, k = 800;
  const auto w = gemm_randn(static_cast<std::size_t>(n * k), 7), bias = gemm_randn(static_cast<std::size_t>(n), 8);
  for (index_t t : {5, 63, 64, 301}) {
    CAPTURE(t);
    const auto x = gemm_randn(static_cast<std::size_t>(t * k), 9 + t);
    std::vector<std::vector<float>> ys;
    for (int threads : {1, 2, 3}) {
      awq::backend::cpu::threads() = threads;
      std::vector<float> y(static_cast<std::size_t>(t * n), std::numeric_limits<float>::quiet_NaN());
      awq::backend::cpu::linear(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major<const float>(w.data(), n, k),
                                bias.data(), awq::make_row_major(y.data(), t, n));
      ys.push_back(y);
    }
    awq::backend::cpu::threads() = saved;
    if (t >= 64 && awq::detail::gemm::PackedWeight::available()) {  // the packed path (Eigen's blocking may follow the row count)
      CHECK(ys[0] == ys[1]);
      CHECK(ys[0] == ys[2]);
    }
    double worst = 0;
    for (index_t i = 0; i < t; ++i)
      for (index_t j = 0; j < n; ++j) {
        double ref = bias[static_cast<std::size_t>(j)], mag = std::fabs(ref);
        for (index_t q = 0; q < k; ++q) {
          const double p = static_cast<double>(x[static_cast<std::size_t>(i * k + q)]) * w[static_cast<std::size_t>(j * k + q)];
          ref += p;
          mag += std::fabs(p);
        }
        const double r = std::fabs(ys[0][static_cast<std::size_t>(i * n + j)] - ref) / (1.01 * (k + 1) * std::ldexp(1.0, -24) * mag);
        if (!(r <= worst)) worst = r;  // a NaN (an element not written) sticks
      }
    CHECK(worst <= 1.0);
  }
}

namespace {
struct GramCase {
  index_t t, k, xs, os;  // tokens, features, x's and out's row strides
};
const GramCase kGramCases[] = {{1, 1, 1, 1}, {5, 13, 13, 14}, {100, 75, 80, 75}, {800, 33, 33, 40}, {1700, 200, 203, 201}, {1600, 1, 1, 1}};

// out = xᵀx through gemm::gram on `path` over the backend's threads, out poisoned first.
std::vector<float> packed_gram(const GramCase& c, const std::vector<float>& x, gemm::Path path) {
  std::vector<float> out(static_cast<std::size_t>(c.k * c.os), std::numeric_limits<float>::quiet_NaN());
  gemm::gram(awq::MatrixView<const float>(x.data(), c.t, c.k, c.xs, 1), awq::MatrixView<float>(out.data(), c.k, c.k, c.os, 1),
             [](index_t n, auto&& f) { awq::backend::cpu::parallel_for(n, f); }, path);
  return out;
}
}  // namespace

TEST_CASE("packed gram: the FMA-chain model's bits on every path, within float rounding of float64, symmetric, padding untouched") {
  const auto paths = paths_here();
  if (paths.empty()) {
    MESSAGE("skipped: no AVX2 or AVX-512 micro-kernel on this processor or build (gram() uses Eigen here)");
    return;
  }
  for (const GramCase& c : kGramCases) {
    CAPTURE(c.t);
    CAPTURE(c.k);
    const auto x = gemm_randn(static_cast<std::size_t>(c.t * c.xs), 20 + c.k);
    const index_t blocks = (c.t + gemm::kMaxKc - 1) / gemm::kMaxKc, kc = (c.t + blocks - 1) / blocks;
    const auto at = [&](index_t q, index_t i) { return x[static_cast<std::size_t>(q * c.xs + i)]; };
    for (gemm::Path path : paths) {
      CAPTURE(static_cast<int>(path));
      const auto out = packed_gram(c, x, path);
      const auto o = [&](index_t i, index_t j) { return out[static_cast<std::size_t>(i * c.os + j)]; };
      index_t differ = 0, asym = 0, over = 0;
      for (index_t i = 0; i < c.k; ++i)
        for (index_t j = 0; j <= i; ++j) {
          float model = 0;  // ceil(t / 768) equal token blocks, each an fmaf chain from zero, added in order
          double ref = 0, mag = 0;
          for (index_t q0 = 0; q0 < c.t; q0 += kc) {
            float acc = 0;
            for (index_t q = q0; q < std::min(c.t, q0 + kc); ++q) acc = std::fma(at(q, i), at(q, j), acc);
            model = q0 == 0 ? acc : model + acc;
          }
          for (index_t q = 0; q < c.t; ++q) {
            ref += static_cast<double>(at(q, i)) * at(q, j);
            mag += std::fabs(static_cast<double>(at(q, i)) * at(q, j));
          }
          differ += o(i, j) != model;  // a NaN (an element not written) differs
          asym += o(j, i) != o(i, j);
          over += !(std::fabs(o(i, j) - ref) <= 1.01 * static_cast<double>(c.t) * std::ldexp(1.0, -24) * mag + 1e-30);
        }
      CHECK_MESSAGE(differ == 0, differ, " elements differ from the FMA-chain model");
      CHECK(asym == 0);
      CHECK(over == 0);
      for (index_t i = 0; i < c.k; ++i)
        for (index_t j = c.k; j < c.os; ++j) CHECK(std::isnan(o(i, j)));
    }
  }
}

TEST_CASE("gram: the packed path's bits do not depend on the thread count, bad shapes are errors naming the value") {
  if (!gemm::PackedWeight::available()) {
    MESSAGE("skipped: no SIMD micro-kernel on this processor or build");
    return;
  }
  const int saved = awq::backend::cpu::threads();
  const index_t t = 900, k = 130;
  const auto x = gemm_randn(static_cast<std::size_t>(t * k), 31);
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2, 3}) {
    awq::backend::cpu::threads() = threads;
    std::vector<float> out(static_cast<std::size_t>(k * k), std::numeric_limits<float>::quiet_NaN());
    awq::backend::cpu::gram(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(out.data(), k, k));
    outs.push_back(out);
  }
  awq::backend::cpu::threads() = saved;
  CHECK(outs[0] == outs[1]);
  CHECK(outs[0] == outs[2]);
  std::vector<float> out(static_cast<std::size_t>(k * k));
  const auto pfor = [](index_t n, auto&& f) { f(index_t{0}, n); };
  CHECK_THROWS_WITH_AS(gemm::gram(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(out.data(), k, k - 1), pfor),
                       doctest::Contains("out"), awq::Error);
  CHECK_THROWS_WITH_AS(gemm::gram(awq::MatrixView<const float>(x.data(), t / 2, k / 2, 2 * k, 2), awq::make_row_major(out.data(), k / 2, k / 2), pfor),
                       doctest::Contains("unit column strides (2, 2, 1)"), awq::Error);
  CHECK_THROWS_WITH_AS(gemm::gram(awq::make_row_major<const float>(x.data(), 0, k), awq::make_row_major(out.data(), k, k), pfor),
                       doctest::Contains("an operand is empty (0x130, 0x130)"), awq::Error);
  CHECK_THROWS_WITH_AS(gemm::cross(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major<const float>(x.data(), t - 1, k),
                                   awq::make_row_major(out.data(), k, k), pfor),
                       doctest::Contains("the operands hold 900 and 899 rows"), awq::Error);
}

TEST_CASE("packed cross product aᵀb: the FMA-chain model's bits on every path, within float rounding of float64, padding untouched") {
  const auto paths = paths_here();
  if (paths.empty()) {
    MESSAGE("skipped: no AVX2 or AVX-512 micro-kernel on this processor or build (cross_gram() uses Eigen here)");
    return;
  }
  struct Case {
    index_t t, m, n, as, bs, os;  // tokens, a's and b's features, row strides of a, b and out
  };
  for (const Case c : {Case{1, 1, 1, 1, 1, 1}, Case{5, 13, 7, 13, 9, 8}, Case{800, 33, 70, 40, 70, 71}, Case{1700, 200, 31, 203, 31, 33}}) {
    CAPTURE(c.t);
    CAPTURE(c.m);
    CAPTURE(c.n);
    const auto a = gemm_randn(static_cast<std::size_t>(c.t * c.as), 40 + c.m), b = gemm_randn(static_cast<std::size_t>(c.t * c.bs), 50 + c.n);
    const index_t blocks = (c.t + gemm::kMaxKc - 1) / gemm::kMaxKc, kc = (c.t + blocks - 1) / blocks;
    for (gemm::Path path : paths) {
      CAPTURE(static_cast<int>(path));
      std::vector<float> out(static_cast<std::size_t>(c.m * c.os), std::numeric_limits<float>::quiet_NaN());
      gemm::cross(awq::MatrixView<const float>(a.data(), c.t, c.m, c.as, 1), awq::MatrixView<const float>(b.data(), c.t, c.n, c.bs, 1),
                  awq::MatrixView<float>(out.data(), c.m, c.n, c.os, 1), [](index_t n, auto&& f) { awq::backend::cpu::parallel_for(n, f); },
                  path);
      index_t differ = 0, over = 0;
      for (index_t i = 0; i < c.m; ++i)
        for (index_t j = 0; j < c.n; ++j) {
          const auto ai = [&](index_t q) { return a[static_cast<std::size_t>(q * c.as + i)]; };
          const auto bj = [&](index_t q) { return b[static_cast<std::size_t>(q * c.bs + j)]; };
          float model = 0;
          double ref = 0, mag = 0;
          for (index_t q0 = 0; q0 < c.t; q0 += kc) {
            float acc = 0;
            for (index_t q = q0; q < std::min(c.t, q0 + kc); ++q) acc = std::fma(ai(q), bj(q), acc);
            model = q0 == 0 ? acc : model + acc;
          }
          for (index_t q = 0; q < c.t; ++q) {
            ref += static_cast<double>(ai(q)) * bj(q);
            mag += std::fabs(static_cast<double>(ai(q)) * bj(q));
          }
          const float o = out[static_cast<std::size_t>(i * c.os + j)];
          differ += o != model;  // a NaN (an element not written) differs
          over += !(std::fabs(o - ref) <= 1.01 * static_cast<double>(c.t) * std::ldexp(1.0, -24) * mag + 1e-30);
        }
      CHECK_MESSAGE(differ == 0, differ, " elements differ from the FMA-chain model");
      CHECK(over == 0);
      for (index_t i = 0; i < c.m; ++i)
        for (index_t j = c.n; j < c.os; ++j) CHECK(std::isnan(out[static_cast<std::size_t>(i * c.os + j)]));
    }
  }
}
