// CPU W4A16 kernel: both code paths against a float64 reference of the dequantized weights, on
// fresh random inputs, with poisoned outputs, tails, strided rows, narrow storage and bad inputs.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "awq/awq.hpp"
#include "awq/eigen.hpp"
#include "awq/kernels/cpu/w4a16.hpp"
#include "awq/kernels/cpu/w4a16_blocked.hpp"
#include "awq/kernels/cpu/w4a16_linear.hpp"

using awq::index_t;

namespace {

/// A random 4-bit linear layer [N, K] in the AutoAWQ GEMM layout, with its float64 dequantized
/// weights as the reference.
struct Layer {
  index_t k, n, g;
  bool zp;
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<Eigen::half> scales;  // [K/G, N]
  std::vector<double> w;            // [N, K] dequantized, float64

  awq::AwqGemmWeights view() const {
    return {awq::make_row_major(qweight.data(), k, n / 8),
            zp ? awq::make_row_major(qzeros.data(), k / g, n / 8) : awq::MatrixView<const std::int32_t>{},
            awq::make_row_major(scales.data(), k / g, n)};
  }
};

Layer make_layer(index_t k, index_t n, index_t g, bool zp, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> code(0, 15);
  std::uniform_real_distribution<float> sd(0.002f, 0.03f);
  Layer L{k, n, g, zp, {}, {}, {}, {}};
  const index_t groups = k / g;
  std::vector<std::uint8_t> q(static_cast<std::size_t>(n * k)), z(static_cast<std::size_t>(n * groups));
  for (auto& v : q) v = static_cast<std::uint8_t>(code(rng));
  for (auto& v : z) v = static_cast<std::uint8_t>(zp ? code(rng) : 8);
  L.scales.resize(static_cast<std::size_t>(groups * n));
  for (auto& s : L.scales) s = Eigen::half(sd(rng));
  L.qweight.assign(static_cast<std::size_t>(k * n / 8), 0);
  awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(q.data(), n, k), awq::make_row_major(L.qweight.data(), k, n / 8));
  if (zp) {
    L.qzeros.assign(static_cast<std::size_t>(groups * n / 8), 0);
    awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(z.data(), n, groups),
                       awq::make_row_major(L.qzeros.data(), groups, n / 8));
  }
  L.w.resize(static_cast<std::size_t>(n * k));
  for (index_t r = 0; r < n; ++r)
    for (index_t c = 0; c < k; ++c) {
      const index_t gi = c / g;
      const double s = static_cast<double>(static_cast<float>(L.scales[static_cast<std::size_t>(gi * n + r)]));
      L.w[static_cast<std::size_t>(r * k + c)] =
          (static_cast<double>(q[static_cast<std::size_t>(r * k + c)]) - z[static_cast<std::size_t>(r * groups + gi)]) * s;
    }
  return L;
}

template <class T>
std::vector<T> random_x(index_t count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<T> x(static_cast<std::size_t>(count));
  for (auto& v : x) v = static_cast<T>(d(rng) + (d(rng) > 2.0f ? 8.0f : 0.0f));  // a few outliers
  return x;
}

template <class T>
double to_d(T v) {
  return static_cast<double>(static_cast<float>(v));
}

// Runs the kernel and checks every output against the float64 reference:
// |y - ref| <= tol · (Σ|x||w| + |bias|) + storage rounding of y.
template <class TX, class TY>
void check_case(const Layer& L, index_t m, index_t ldx, bool with_bias, awq::CpuIsa isa, std::uint64_t seed,
                awq::M1Decode decode = awq::M1Decode::automatic, float x_scale = 1.0f,
                const awq::BlockedW4A16* blocked = nullptr) {
  CAPTURE(L.k);
  CAPTURE(L.n);
  CAPTURE(L.g);
  CAPTURE(L.zp);
  CAPTURE(m);
  CAPTURE(ldx);
  CAPTURE(with_bias);
  CAPTURE(static_cast<int>(isa));
  CAPTURE(static_cast<int>(decode));
  CAPTURE(x_scale);
  CAPTURE(blocked != nullptr);
  auto x = random_x<TX>(m * ldx, seed);
  for (auto& v : x) v = static_cast<TX>(static_cast<float>(v) * x_scale);
  const auto bias = random_x<TY>(L.n, seed + 1);
  std::vector<TY> y(static_cast<std::size_t>(m * L.n), TY(std::numeric_limits<float>::quiet_NaN()));
  const awq::MatrixView<const TX> xv(x.data(), m, L.k, ldx, 1);
  if (blocked)
    awq::w4a16_gemm(xv, *blocked, awq::make_row_major(y.data(), m, L.n), with_bias ? bias.data() : nullptr,
                    awq::W4A16Options{isa, decode});
  else
    awq::w4a16_gemm(xv, L.view(), awq::make_row_major(y.data(), m, L.n), with_bias ? bias.data() : nullptr,
                    awq::W4A16Options{isa, decode});
  // The VNNI path (and AVX2 at M = 1, on its digits) rounds x to 23-bit fixed point per group:
  // |Δx| <= max|x over the group| · 2^-22.
  awq::CpuIsa used = isa;  // the path the blocked kernel takes
  if (used == awq::CpuIsa::automatic)
    used = awq::cpu_has_avx512vnni() ? awq::CpuIsa::avx512vnni : (awq::cpu_has_avx2() ? awq::CpuIsa::avx2 : awq::CpuIsa::portable);
  const bool fixed_point = blocked && (used == awq::CpuIsa::avx512vnni || (used == awq::CpuIsa::avx2 && m == 1));
  const double out_rel = std::is_same_v<TY, float> ? 0.0 : (std::is_same_v<TY, Eigen::half> ? 1.0 / 1024 : 1.0 / 128);
  int bad = 0;
  for (index_t r = 0; r < m; ++r)
    for (index_t c = 0; c < L.n; ++c) {
      double ref = with_bias ? to_d(bias[static_cast<std::size_t>(c)]) : 0.0;
      double mag = std::abs(ref), fixed = 0.0;
      for (index_t g0 = 0; g0 < L.k; g0 += L.g) {
        double amax = 0.0, wsum = 0.0;
        for (index_t kk = g0; kk < g0 + L.g; ++kk) {
          const double xv = to_d(x[static_cast<std::size_t>(r * ldx + kk)]);
          const double wv = L.w[static_cast<std::size_t>(c * L.k + kk)];
          ref += xv * wv;
          mag += std::abs(xv * wv);
          amax = std::max(amax, std::abs(xv));
          wsum += std::abs(wv);
        }
        fixed += amax * wsum;
      }
      const double got = to_d(y[static_cast<std::size_t>(r * L.n + c)]);
      const double bound = 2e-6 * mag + (fixed_point ? std::ldexp(fixed, -22) : 0.0) + out_rel * std::abs(ref) + 1e-300;
      if (!(std::abs(got - ref) <= bound)) {  // NaN poison fails here
        if (++bad <= 3) {
          CAPTURE(r);
          CAPTURE(c);
          CAPTURE(got);
          CAPTURE(ref);
          CAPTURE(bound);
          CHECK(std::abs(got - ref) <= bound);
        }
      }
    }
  CHECK(bad == 0);
}

std::vector<awq::CpuIsa> isas() {
  std::vector<awq::CpuIsa> v{awq::CpuIsa::portable};
  if (awq::cpu_has_avx2()) v.push_back(awq::CpuIsa::avx2);
  return v;
}

/// Runs f and checks that it throws awq::Error whose message contains `what`.
template <class F>
void expect(F&& f, const char* what) {
  CAPTURE(what);
  try {
    f();
    FAIL("no awq::Error");
  } catch (const awq::Error& e) {
    CHECK(std::string(e.what()).find(what) != std::string::npos);
  }
}

struct ThreadsGuard {
  int saved = awq::backend::cpu::threads();
  ~ThreadsGuard() { awq::backend::cpu::threads() = saved; }
};

}  // namespace

TEST_CASE("W4A16 CPU: float64 reference over shapes, tails, M, zero point and both code paths") {
  INFO("AVX2 path available: " << awq::cpu_has_avx2());
  struct Shape {
    index_t k, n, g;
  };
  // N = 104 and 520 leave packed words outside whole 64-column blocks; N = 8 has no block at all;
  // G = K is per channel.
  const Shape shapes[] = {{128, 64, 32}, {256, 104, 64}, {384, 520, 128}, {512, 8, 128}, {96, 128, 96}, {512, 192, 256}};
  std::uint64_t seed = 100;
  for (const auto& s : shapes)
    for (bool zp : {true, false}) {
      const Layer L = make_layer(s.k, s.n, s.g, zp, ++seed);
      for (awq::CpuIsa isa : isas())
        for (index_t m : {1, 2, 3, 5, 16}) check_case<float, float>(L, m, s.k, m % 2 == 1, isa, ++seed);
    }
}

TEST_CASE("W4A16 CPU: fp16 and bf16 storage, strided x rows, thread counts") {
  ThreadsGuard guard;
  const Layer L = make_layer(256, 200, 64, true, 7);
  for (awq::CpuIsa isa : isas()) {
    check_case<Eigen::half, Eigen::half>(L, 1, 256, true, isa, 11);
    check_case<Eigen::half, float>(L, 4, 256, false, isa, 12);
    check_case<Eigen::bfloat16, Eigen::bfloat16>(L, 3, 256, true, isa, 13);
    check_case<float, float>(L, 6, 300, true, isa, 14);  // row stride 300 > K
    for (int t : {1, 2, 3, 7}) {
      awq::backend::cpu::threads() = t;
      check_case<float, float>(L, 1, 256, false, isa, 20 + static_cast<std::uint64_t>(t));
      check_case<float, float>(L, 9, 256, true, isa, 30 + static_cast<std::uint64_t>(t));
    }
  }
}

TEST_CASE("W4A16 CPU: both code paths agree, runs are deterministic, Eigen maps work") {
  const Layer L = make_layer(512, 256, 128, true, 42);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> X(2, 512);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> d;
  for (index_t i = 0; i < X.size(); ++i) X.data()[i] = d(rng);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Y1(2, 256), Y2(2, 256), Y3(2, 256);
  const auto x = awq::as_view(std::as_const(X));
  awq::w4a16_gemm<awq::QuantConfig<4, 128, true>>(x, L.view(), awq::as_view(Y1));
  awq::w4a16_gemm<awq::QuantConfig<4, 128, true>>(x, L.view(), awq::as_view(Y2));
  CHECK((Y1.array() == Y2.array()).all());  // bit-identical run to run
  awq::w4a16_gemm(x, L.view(), awq::as_view(Y3), static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::portable});
  CHECK((Y1 - Y3).cwiseAbs().maxCoeff() <= 1e-4f * Y3.cwiseAbs().maxCoeff());
}

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Outputs of y = x · Wᵀ farther from the float64 reference than fp32 sums allow (2e-6 of Σ|x w|)
// plus, where `fixed_point`, x rounded to 23-bit fixed point per group (VNNI, AVX2 digits at M = 1).
int count_off_reference(const Layer& L, const RowMajorF& X, const RowMajorF& Y, bool fixed_point) {
  int bad = 0;
  for (index_t r = 0; r < X.rows(); ++r)
    for (index_t c = 0; c < L.n; ++c) {
      double ref = 0.0, mag = 0.0, fixed = 0.0;  // fixed: Σ over groups of max|x| · Σ|w|
      for (index_t g0 = 0; g0 < L.k; g0 += L.g) {
        double amax = 0.0, wsum = 0.0;
        for (index_t k = g0; k < g0 + L.g; ++k) {
          const double wv = L.w[static_cast<std::size_t>(c * L.k + k)], p = static_cast<double>(X(r, k)) * wv;
          ref += p;
          mag += std::abs(p);
          amax = std::max(amax, std::abs(static_cast<double>(X(r, k))));
          wsum += std::abs(wv);
        }
        fixed += amax * wsum;
      }
      if (!(std::abs(Y(r, c) - ref) <= 2e-6 * mag + (fixed_point ? std::ldexp(fixed, -22) : 0.0) + 1e-300)) ++bad;  // NaN poison fails
    }
  return bad;
}

RowMajorF random_matrix(index_t rows, index_t cols, std::uint64_t seed) {
  RowMajorF X(rows, cols);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  for (index_t i = 0; i < X.size(); ++i) X.data()[i] = d(rng);
  return X;
}

TEST_CASE("W4A16 CPU: the natural call w4a16_gemm(as_view(x), W, as_view(y)) with a non-const Eigen x, both layouts") {
  const Layer L = make_layer(256, 96, 64, true, 43);
  const awq::BlockedW4A16 b = awq::block_w4a16(L.view());
  RowMajorF X = random_matrix(3, 256, 4), Y(3, 96), Yb(3, 96), Yc(3, 96);
  Y.setConstant(std::numeric_limits<float>::quiet_NaN());
  Yb.setConstant(std::numeric_limits<float>::quiet_NaN());
  awq::w4a16_gemm(awq::as_view(X), L.view(), awq::as_view(Y));  // X not const: a MatrixView<float>
  awq::w4a16_gemm(awq::as_view(X), b, awq::as_view(Yb));
  awq::w4a16_gemm<awq::QuantConfig<4, 64, true>>(awq::as_view(X), L.view(), awq::as_view(Yc));
  CHECK((Y.array() == Yc.array()).all());
  awq::w4a16_gemm(awq::as_view(std::as_const(X)), L.view(), awq::as_view(Yc));
  CHECK((Y.array() == Yc.array()).all());  // the same call as through a read-only view
  CHECK(count_off_reference(L, X, Y, false) == 0);
  CHECK(count_off_reference(L, X, Yb, true) == 0);
}

TEST_CASE("W4A16LinearCpu: a checkpoint's tensors taken once, any M, against the float64 reference") {
  for (const bool zp : {true, false}) {
    const Layer L = make_layer(384, 160, 128, zp, zp ? 44 : 45);
    const awq::W4A16LinearCpu lin(L.view());
    CHECK(lin.in_features() == 384);
    CHECK(lin.out_features() == 160);
    CHECK(lin.group() == 128);
    for (const index_t m : {1, 2, 7, 33}) {
      CAPTURE(zp);
      CAPTURE(m);
      const RowMajorF X = random_matrix(m, 384, static_cast<std::uint64_t>(100 + m));
      RowMajorF Y(m, 160);
      Y.setConstant(std::numeric_limits<float>::quiet_NaN());
      lin(awq::as_view(X), awq::as_view(Y));
      CHECK(count_off_reference(L, X, Y, true) == 0);
    }
  }
  const Layer L = make_layer(128, 64, 32, true, 46);
  const awq::W4A16LinearCpu lin(L.view());
  RowMajorF X(2, 100), Y(2, 64);
  X.setOnes();
  CHECK_THROWS_AS(lin(awq::as_view(X), awq::as_view(Y)), awq::Error);  // K mismatch, named
}

TEST_CASE("W4A16 CPU: bad arguments are named") {
  const Layer L = make_layer(128, 64, 32, true, 5);
  std::vector<float> x(2 * 128, 1.0f), y(2 * 64, 0.0f);
  auto X = awq::make_row_major<const float>(x.data(), 2, 128);
  auto Y = awq::make_row_major(y.data(), 2, 64);
  expect([&] { awq::w4a16_gemm(awq::make_row_major<const float>(x.data(), 2, 127), L.view(), Y); }, "x has 127 columns");
  expect([&] { awq::w4a16_gemm(X, L.view(), awq::make_row_major(y.data(), 2, 63)); }, "y");
  auto w = L.view();
  w.scales = awq::make_row_major(L.scales.data(), 3, 64);  // 128 % 3 != 0
  expect([&] { awq::w4a16_gemm(X, w, Y); }, "does not divide K = 128");
  w = L.view();
  w.scales = awq::make_row_major(L.scales.data(), 8, 64);  // group 16
  expect([&] { awq::w4a16_gemm(X, w, Y); }, "group size 16");
  w = L.view();
  w.qzeros = awq::make_row_major(L.qzeros.data(), 4, 4);
  expect([&] { awq::w4a16_gemm(X, w, Y); }, "qzeros");
  expect([&] { awq::w4a16_gemm(awq::MatrixView<const float>(x.data(), 2, 128, 1, 2), L.view(), Y); }, "contiguous rows");
  expect([&] { awq::w4a16_gemm<awq::QuantConfig<4, 64, true>>(X, L.view(), Y); }, "group size 32 but the config");
  expect([&] { awq::w4a16_gemm<awq::QuantConfig<4, 32, false>>(X, L.view(), Y); }, "takes no qzeros");
  if (!awq::cpu_has_avx2())
    expect([&] { awq::w4a16_gemm(X, L.view(), Y, static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::avx2}); },
           "isa avx2");
}

#if AWQ_W4A16_HAVE_AVX2
TEST_CASE("W4A16 CPU, M = 1: the convert and denormal decodes against the reference, at any activation scale, with DAZ set") {
  if (!awq::cpu_has_avx2()) {
    MESSAGE("skipped: no AVX2 on this processor (both decodes are AVX2 paths)");
    return;
  }
  std::uint64_t seed = 500;
  for (const auto& shape : {std::tuple<index_t, index_t, index_t, bool>{256, 512, 128, true}, {512, 192, 32, false},
                            {128, 1024, 64, true}, {384, 256, 384, true}}) {
    const index_t k = std::get<0>(shape), n = std::get<1>(shape), g = std::get<2>(shape);
    const bool zp = std::get<3>(shape);
    const Layer L = make_layer(k, n, g, zp, ++seed);
    for (const awq::M1Decode d : {awq::M1Decode::convert, awq::M1Decode::denormal, awq::M1Decode::automatic})
      // Activations from denormal-small to 2^45 (the denormal decode hands those to the convert path).
      for (const float scale : {1.0f, 1e-30f, 1e-20f, 7e5f, 1e13f}) {
        ++seed;
        check_case<float, float>(L, 1, k, seed % 2 == 0, awq::CpuIsa::avx2, seed, d, scale);
      }
  }
  // With denormals-are-zero set in the calling thread (as a -ffast-math program does), the
  // denormal decode would read every nibble as 0 there: that thread must fall back to converting.
  const Layer L = make_layer(256, 4096, 128, true, 900);
  ThreadsGuard guard;
  awq::backend::cpu::threads() = 1;  // everything on the calling thread
  const unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u);  // DAZ and FTZ
  check_case<float, float>(L, 1, 256, true, awq::CpuIsa::avx2, 901, awq::M1Decode::denormal);
  _mm_setcsr(saved);
}
#endif  // AWQ_W4A16_HAVE_AVX2

namespace {
std::vector<awq::CpuIsa> blocked_isas() {
  std::vector<awq::CpuIsa> v{awq::CpuIsa::portable};
  if (awq::cpu_has_avx2()) v.push_back(awq::CpuIsa::avx2);
  if (awq::cpu_has_avx512vnni()) v.push_back(awq::CpuIsa::avx512vnni);
  return v;
}
}  // namespace

TEST_CASE("W4A16 CPU, blocked layout: the converter keeps every code, zero and scale") {
  for (const auto& shape : {std::tuple<index_t, index_t, index_t, bool>{128, 64, 32, true}, {100, 104, 100, true},
                            {256, 8, 64, false}, {512, 520, 128, true}}) {
    const index_t k = std::get<0>(shape), n = std::get<1>(shape), g = std::get<2>(shape);
    const bool zp = std::get<3>(shape);
    CAPTURE(k);
    CAPTURE(n);
    const Layer L = make_layer(k, n, g, zp, static_cast<std::uint64_t>(k + n));
    const awq::BlockedW4A16 b = awq::block_w4a16(L.view());
    CHECK(b.kp % awq::kBlockedK == 0);
    CHECK(b.np % awq::kBlockedN == 0);
    std::vector<std::uint8_t> q(static_cast<std::size_t>(n * k)), z(static_cast<std::size_t>(n * (k / g)));
    awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(L.qweight.data(), k, n / 8), awq::make_row_major(q.data(), n, k));
    if (zp)
      awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(L.qzeros.data(), k / g, n / 8),
                           awq::make_row_major(z.data(), n, k / g));
    int bad = 0;
    for (index_t c = 0; c < b.np; ++c)
      for (index_t kk = 0; kk < b.kp; ++kk) {
        const int want = (c < n && kk < k) ? q[static_cast<std::size_t>(c * k + kk)] : 0;
        bad += b.code(kk, c) != want;
      }
    for (index_t gi = 0; gi < k / g; ++gi)
      for (index_t c = 0; c < n; ++c) {
        std::uint16_t bits;
        std::memcpy(&bits, &L.scales[static_cast<std::size_t>(gi * n + c)], 2);
        bad += b.scale_bits(gi, c) != bits;
        bad += b.zero(gi, c) != (zp ? z[static_cast<std::size_t>(c * (k / g) + gi)] : 8);
      }
    CHECK(bad == 0);
  }
}

TEST_CASE("W4A16 CPU, blocked layout: float64 reference over shapes, tails, M and every code path") {
  INFO("AVX2: " << awq::cpu_has_avx2() << ", AVX-512 VNNI: " << awq::cpu_has_avx512vnni());
  if (!awq::cpu_has_avx512vnni()) MESSAGE("the AVX-512 VNNI path is not run: this processor lacks AVX-512 VNNI");
  struct Shape {
    index_t k, n, g;
  };
  // N = 104, 520, 8: partial 16-column blocks; K = 100 per channel: K padded to 104; G = 32 has
  // 4 chunks (even), per-channel K = 120 has 15 (odd: the single-chunk tail of the VNNI loop).
  const Shape shapes[] = {{128, 64, 32}, {256, 104, 64}, {384, 520, 128}, {512, 8, 128}, {100, 48, 100},
                          {120, 32, 120}, {512, 192, 256}};
  std::uint64_t seed = 2000;
  for (const auto& s : shapes)
    for (bool zp : {true, false}) {
      const Layer L = make_layer(s.k, s.n, s.g, zp, ++seed);
      const awq::BlockedW4A16 b = awq::block_w4a16(L.view());
      for (awq::CpuIsa isa : blocked_isas())
        for (index_t m : {1, 2, 3, 5, 16})
          check_case<float, float>(L, m, s.k + (m == 3 ? 5 : 0), m % 2 == 1, isa, ++seed, awq::M1Decode::automatic, 1.0f, &b);
    }
  // Narrow storage, threads, and activations from tiny to huge (the fixed point follows each group).
  ThreadsGuard guard;
  const Layer L = make_layer(256, 200, 64, true, 77);
  const awq::BlockedW4A16 b = awq::block_w4a16(L.view());
  for (awq::CpuIsa isa : blocked_isas()) {
    check_case<Eigen::half, Eigen::half>(L, 1, 256, true, isa, 11, awq::M1Decode::automatic, 1.0f, &b);
    check_case<Eigen::bfloat16, float>(L, 4, 256, false, isa, 12, awq::M1Decode::automatic, 1.0f, &b);
    for (float scale : {1e-30f, 1e-20f, 7e5f, 1e30f})
      check_case<float, float>(L, 2, 256, true, isa, 13, awq::M1Decode::automatic, scale, &b);
    for (int t : {1, 2, 3, 7}) {
      awq::backend::cpu::threads() = t;
      check_case<float, float>(L, 1, 256, false, isa, 20 + static_cast<std::uint64_t>(t), awq::M1Decode::automatic, 1.0f, &b);
    }
  }
  // 2^22 weights: four parts of kBlockedMinWeightsPerPart at M = 1, so the thread counts split the
  // 129 blocks (the layer above is one part).
  const Layer big = make_layer(2048, 2064, 128, true, 78);
  const awq::BlockedW4A16 bb = awq::block_w4a16(big.view());
  for (awq::CpuIsa isa : blocked_isas())
    for (int t : {1, 2, 3, 7}) {
      awq::backend::cpu::threads() = t;
      check_case<float, float>(big, 1, 2048, true, isa, 30 + static_cast<std::uint64_t>(t), awq::M1Decode::automatic, 1.0f, &bb);
      check_case<float, float>(big, 2, 2048, false, isa, 40 + static_cast<std::uint64_t>(t), awq::M1Decode::automatic, 1.0f, &bb);
    }
}

TEST_CASE("W4A16 CPU, blocked layout: the digits of x are their definition, ties and tails included") {
  if (!awq::cpu_has_avx2()) {
    MESSAGE("skipped: the digits serve the AVX2 and AVX-512 VNNI paths, and this processor has neither");
    return;
  }
  // Per row and group: e with max|x| in [2^(e-1), 2^e), X = x · 2^(22-e) rounded half away from
  // zero, X = 65536 d2 + 256 d1 + d0 with signed digits; t = 2^(e-22), xs = t · Σ X (NaN for a
  // group with NaN or Inf), written here in float64 and plain loops.
  const auto check = [](const std::vector<float>& x, index_t M, index_t k, index_t g) {
    CAPTURE(k);
    CAPTURE(g);
    const Layer L = make_layer(k, 16, g, true, 5);
    const awq::BlockedW4A16 b = awq::block_w4a16(L.view());
    const auto d = awq::detail::w4blk::make_digits(x.data(), k, M, b);
    const index_t kc = b.chunks(), groups = k / g;
    REQUIRE(d.words.size() == static_cast<std::size_t>(M * kc * 6));
    std::vector<std::int8_t> want(static_cast<std::size_t>(M * kc * 24), 0);
    long bad_bytes = 0, bad_groups = 0;
    for (index_t m = 0; m < M; ++m)
      for (index_t j = 0; j < groups; ++j) {
        const float* xr = x.data() + m * k + j * g;
        double amax = 0;
        bool finite = true;
        for (index_t i = 0; i < g; ++i) {
          finite = finite && std::isfinite(xr[i]);
          if (finite) amax = std::max(amax, std::fabs(static_cast<double>(xr[i])));
        }
        const std::size_t gi = static_cast<std::size_t>(m * groups + j);
        if (!finite) {
          bad_groups += !std::isnan(d.xs[gi]);
          continue;
        }
        int e = 0;
        std::frexp(amax, &e);
        double sum = 0;
        for (index_t i = 0; i < g; ++i) {
          const double v = std::ldexp(static_cast<double>(xr[i]), 22 - e);
          const double X = std::trunc(v + std::copysign(0.5, v));
          sum += X;
          const double d0 = X - 256 * std::floor((X + 128) / 256);  // in [-128, 128)
          const double x1 = (X - d0) / 256, d1 = x1 - 256 * std::floor((x1 + 128) / 256), d2 = (x1 - d1) / 256;
          const index_t kk = j * g + i;
          std::int8_t* c = want.data() + (m * kc + kk / 8) * 24 + kk % 8;
          c[0] = static_cast<std::int8_t>(d0), c[8] = static_cast<std::int8_t>(d1), c[16] = static_cast<std::int8_t>(d2);
        }
        const float t = std::ldexp(1.0f, e - 22);  // 0 below float's range (subnormal groups)
        bad_groups += d.t[gi] != t || d.xs[gi] != static_cast<float>(sum * static_cast<double>(t));
      }
    const auto* got = reinterpret_cast<const std::int8_t*>(d.words.data());
    for (std::size_t i = 0; i < want.size(); ++i) bad_bytes += got[i] != want[i];
    CHECK(bad_bytes == 0);
    CHECK(bad_groups == 0);
  };
  std::mt19937_64 rng(4242);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 9), n22(-(1 << 21), (1 << 21) - 1);
  for (const auto& [k, g] : {std::pair<index_t, index_t>{256, 32}, {512, 128}, {256, 256}, {100, 100}, {120, 120}})
    for (const index_t M : {1, 3}) {
      std::vector<float> x(static_cast<std::size_t>(M * k));
      for (std::size_t i = 0; i < x.size(); ++i) {
        const index_t grp = static_cast<index_t>(i % static_cast<std::size_t>(k)) / g;
        const float scale = grp % 3 == 0 ? 1.0f : grp % 3 == 1 ? 1e-41f : 3e37f;  // subnormal and huge groups
        switch (pick(rng)) {
          case 0: x[i] = 0.0f; break;
          case 1: x[i] = -0.0f; break;
          case 2: case 3:  // in the unscaled groups, ties when max|x| is in [1, 2)
            x[i] = scale == 1.0f ? (static_cast<float>(n22(rng)) + 0.5f) * std::ldexp(1.0f, -21) : nd(rng) * scale;
            break;
          default: x[i] = nd(rng) * scale; break;
        }
      }
      for (index_t m = 0; m < M; ++m) x[static_cast<std::size_t>(m * k)] = 1.5f;  // the first group's max in [1, 2)
      check(x, M, k, g);
      x[static_cast<std::size_t>(k - 1)] = std::numeric_limits<float>::quiet_NaN();  // the last group of row 0
      if (M > 1) x[static_cast<std::size_t>(k + 1)] = -std::numeric_limits<float>::infinity();
      check(x, M, k, g);
    }
}

TEST_CASE("W4A16 CPU, blocked layout: deterministic, paths agree, NaN and Inf reach their row, bad arguments") {
  const Layer L = make_layer(512, 256, 128, true, 43);
  const awq::BlockedW4A16 b = awq::block_w4a16(L.view());
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> X(3, 512);
  std::mt19937_64 rng(4);
  std::normal_distribution<float> d;
  for (index_t i = 0; i < X.size(); ++i) X.data()[i] = d(rng);
  const auto x = awq::as_view(std::as_const(X));
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Y1(3, 256), Y2(3, 256), Yp(3, 256);
  awq::w4a16_gemm(x, b, awq::as_view(Y1));
  awq::w4a16_gemm(x, b, awq::as_view(Y2));
  CHECK((Y1.array() == Y2.array()).all());  // bit-identical run to run
  awq::w4a16_gemm(x, b, awq::as_view(Yp), static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::portable});
  CHECK((Y1 - Yp).cwiseAbs().maxCoeff() <= 1e-4f * Yp.cwiseAbs().maxCoeff());

  // AVX2 at M = 1 runs the VNNI path's digits and integer sums: the same bits.
  if (awq::cpu_has_avx2() && awq::cpu_has_avx512vnni())
    for (index_t r = 0; r < 3; ++r) {
      Eigen::Matrix<float, 1, Eigen::Dynamic, Eigen::RowMajor> ya(256), yv(256);
      const auto xr = awq::make_row_major<const float>(X.data() + r * 512, 1, 512);
      awq::w4a16_gemm(xr, b, awq::make_row_major(ya.data(), 1, 256), static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::avx2});
      awq::w4a16_gemm(xr, b, awq::make_row_major(yv.data(), 1, 256), static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::avx512vnni});
      CHECK((ya.array() == yv.array()).all());
    }
  // VNNI and portable: a row's result does not depend on the rows beside it (integer digit sums
  // are exact however rows are paired), bit for bit.
  for (awq::CpuIsa isa : blocked_isas()) {
    if (isa == awq::CpuIsa::avx2) continue;  // M = 1 and M > 1 take different AVX2 loops
    CAPTURE(static_cast<int>(isa));
    awq::w4a16_gemm(x, b, awq::as_view(Y1), static_cast<const float*>(nullptr), awq::W4A16Options{isa});
    for (index_t r = 0; r < 3; ++r) {
      Eigen::Matrix<float, 1, Eigen::Dynamic, Eigen::RowMajor> y1(256);
      awq::w4a16_gemm(awq::make_row_major<const float>(X.data() + r * 512, 1, 512), b, awq::make_row_major(y1.data(), 1, 256),
                      static_cast<const float*>(nullptr), awq::W4A16Options{isa});
      CHECK((y1.array() == Y1.row(r).array()).all());
    }
  }

  X(1, 300) = std::numeric_limits<float>::quiet_NaN();
  X(2, 7) = std::numeric_limits<float>::infinity();
  for (awq::CpuIsa isa : blocked_isas()) {
    CAPTURE(static_cast<int>(isa));
    Y1.setConstant(0.0f);
    awq::w4a16_gemm(x, b, awq::as_view(Y1), static_cast<const float*>(nullptr), awq::W4A16Options{isa});
    CHECK(Y1.row(0).allFinite());
    for (index_t c = 0; c < 256; ++c) {
      CHECK(std::isnan(Y1(1, c)));
      CHECK(!std::isfinite(Y1(2, c)));
    }
  }

  std::vector<float> xs(2 * 512, 1.0f), ys(2 * 256, 0.0f);
  auto Xs = awq::make_row_major<const float>(xs.data(), 2, 512);
  auto Ys = awq::make_row_major(ys.data(), 2, 256);
  expect([&] { awq::w4a16_gemm(awq::make_row_major<const float>(xs.data(), 2, 511), b, Ys); }, "x has 511 columns");
  expect([&] { awq::w4a16_gemm(Xs, b, awq::make_row_major(ys.data(), 2, 255)); }, "y");
  expect([&] { awq::w4a16_gemm(Xs, awq::BlockedW4A16{}, Ys); }, "empty or inconsistent");
  awq::BlockedW4A16 broken = b;
  broken.qzeros.pop_back();
  expect([&] { awq::w4a16_gemm(Xs, broken, Ys); }, "empty or inconsistent");
  broken = b;
  broken.group = 96;  // does not divide K = 512
  expect([&] { awq::w4a16_gemm(Xs, broken, Ys); }, "group 96");
  expect([&] { awq::w4a16_gemm(Xs, L.view(), Ys, static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::avx512vnni}); },
         "blocked layout only");
  if (!awq::cpu_has_avx512vnni())
    expect([&] { awq::w4a16_gemm(Xs, b, Ys, static_cast<const float*>(nullptr), awq::W4A16Options{awq::CpuIsa::avx512vnni}); },
           "isa avx512vnni");
  auto w = L.view();
  w.scales = awq::make_row_major(L.scales.data(), 32, 256);  // group 16
  expect([&] { awq::block_w4a16(w); }, "group size 16");
  w = L.view();
  w.qzeros = awq::make_row_major(L.qzeros.data(), 4, 16);
  expect([&] { awq::block_w4a16(w); }, "qzeros");
  std::vector<Eigen::half> bad_scales(L.scales);
  bad_scales[37] = Eigen::half(std::numeric_limits<float>::infinity());
  w = L.view();
  w.scales = awq::make_row_major<const Eigen::half>(bad_scales.data(), 4, 256);
  expect([&] { awq::block_w4a16(w); }, "scale (0, 37) is not finite");
}
