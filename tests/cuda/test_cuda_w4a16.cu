// W4A16 GEMV against a float64 reference of the dequantized weights, on fresh random inputs,
// with poisoned outputs, tails and every M of the GEMV path; then a stress loop.
#include <doctest/doctest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <type_traits>
#include <vector>

#include "awq/cuda.cuh"
#include "plan_checks.hpp"
#include "w4a16_second_tu.hpp"

namespace {

struct Case {
  int m, k, n, group;
};

enum class Layout { awq, tiled, tiled_symmetric, linear };  // linear: awq::cuda::W4A16Linear from the AutoAWQ tensors

// The activation types, on the host: float ↔ T, T's bits, half an ulp (relative).
template <class T>
struct Host {
  static constexpr bool fp16 = std::is_same_v<T, __half>;
  static T from(float v) { return awq::cuda::detail::Act<T>::from_float(v); }
  static float to(T v) { return awq::cuda::detail::Act<T>::to_float(v); }
  static unsigned bits(T v) {
    unsigned short u;
    std::memcpy(&u, &v, 2);
    return u;
  }
  static constexpr double ulp = fp16 ? 1.0 / 2048 : 1.0 / 256;
};

// A case's random 4-bit codes q [N, K] and zero points z [N, K/G] (8 when symmetric), and both
// packed into the AutoAWQ layout: qweight [K, N/8], qzeros [K/G, N/8].
struct RandomCodes {
  std::vector<std::uint8_t> q, z;
  std::vector<std::int32_t> qw, qz;
};
RandomCodes random_codes(const Case& c, std::mt19937_64& rng, bool symmetric) {
  std::uniform_int_distribution<int> code(0, 15);
  const int ng = c.k / c.group;
  RandomCodes r{std::vector<std::uint8_t>(static_cast<std::size_t>(c.n) * c.k), std::vector<std::uint8_t>(static_cast<std::size_t>(c.n) * ng),
                std::vector<std::int32_t>(static_cast<std::size_t>(c.k) * c.n / 8), std::vector<std::int32_t>(static_cast<std::size_t>(ng) * c.n / 8)};
  for (auto& v : r.q) v = static_cast<std::uint8_t>(code(rng));
  for (auto& v : r.z) v = static_cast<std::uint8_t>(symmetric ? 8 : code(rng));
  awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(r.q.data(), c.n, c.k), awq::make_row_major(r.qw.data(), c.k, c.n / 8));
  awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(r.z.data(), c.n, ng), awq::make_row_major(r.qz.data(), ng, c.n / 8));
  return r;
}

// Worst |y − ref| / tolerance over the outputs (≤ 1 passes); 1e9 for an unwritten (poisoned)
// output, 2e9 when two runs differ in any bit. T: the activation type.
// `tiled_run`, when given, runs the tiled product instead of w4a16_matmul (a plan of the test's
// choosing); `y_out`, when given, receives the output.
template <class T = __half>
double run_case(const Case& c, std::uint64_t seed, bool with_bias, Layout layout = Layout::awq,
                const std::function<void(const awq::cuda::W4A16TiledArgsT<T>&)>& tiled_run = {}, std::vector<T>* y_out = nullptr) {
  using H = Host<T>;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int ng = c.k / c.group;
  const RandomCodes codes = random_codes(c, rng, layout == Layout::tiled_symmetric);
  const auto& q = codes.q;
  const auto& z = codes.z;
  const auto& qw = codes.qw;
  const auto& qz = codes.qz;
  std::vector<__half> s_t(static_cast<std::size_t>(ng) * c.n);
  std::vector<T> x(static_cast<std::size_t>(c.m) * c.k), bias(static_cast<std::size_t>(c.n));
  std::vector<float> s(static_cast<std::size_t>(c.n) * ng);
  for (int r = 0; r < c.n; ++r)
    for (int g = 0; g < ng; ++g) {
      const __half h = __float2half_rn(0.01f + 0.02f * std::fabs(nd(rng)));
      s_t[static_cast<std::size_t>(g) * c.n + r] = h;
      s[static_cast<std::size_t>(r) * ng + g] = __half2float(h);
    }
  for (auto& v : x) v = H::from(nd(rng));
  for (auto& v : bias) v = H::from(nd(rng));
  // float64 reference
  // ref: the weights a kernel multiplies — exact (q − z)·s for the GEMV; for M > 8 and the tiled
  // layout the weight a dequantize to T makes ((q − z)·s rounded once; bf16: the scale rounded to
  // bf16 first), except the raw-code kernels (TiledTuning::mma_raw, gemv_raw), which apply zero and
  // scale per group in fp32: exact weights. `ref_alt` holds the other of the two; a tiled output
  // may match either.
  std::vector<double> ref(static_cast<std::size_t>(c.m) * c.n, 0.0), ref_alt(ref.size(), 0.0);
  double scale_ref = 0;
  const bool rounded = c.m > 8 || layout != Layout::awq;
  // The weights once: w exact, wt rounded to T ((q − z)·s_T has at most 4 + 11 significant bits:
  // exact in float, then rounded once to T); x as double.
  std::vector<double> w(static_cast<std::size_t>(c.n) * c.k), wt(w.size()), xd(x.size());
  for (int r = 0; r < c.n; ++r)
    for (int kk = 0; kk < c.k; ++kk) {
      const int g = kk / c.group;
      const int qz_diff = q[static_cast<std::size_t>(r) * c.k + kk] - z[static_cast<std::size_t>(r) * ng + g];
      const float sc = s[static_cast<std::size_t>(r) * ng + g];
      const std::size_t i = static_cast<std::size_t>(r) * c.k + kk;
      w[i] = qz_diff * static_cast<double>(sc);
      wt[i] = static_cast<double>(H::to(H::from(static_cast<float>(qz_diff * static_cast<double>(H::to(H::from(sc)))))));
    }
  for (std::size_t i = 0; i < x.size(); ++i) xd[i] = static_cast<double>(H::to(x[i]));
  const std::vector<double>& w_main = rounded ? wt : w;
  const std::vector<double>& w_alt = rounded ? w : wt;
  for (int mm = 0; mm < c.m; ++mm)
    for (int r = 0; r < c.n; ++r) {
      double acc = with_bias ? static_cast<double>(H::to(bias[static_cast<std::size_t>(r)])) : 0.0, acc_alt = acc, mag = 0;
      const double* xr = xd.data() + static_cast<std::size_t>(mm) * c.k;
      const double* wm = w_main.data() + static_cast<std::size_t>(r) * c.k;
      const double* wa = w_alt.data() + static_cast<std::size_t>(r) * c.k;
      const double* we = w.data() + static_cast<std::size_t>(r) * c.k;
      for (int kk = 0; kk < c.k; ++kk) {
        acc += xr[kk] * wm[kk];
        acc_alt += xr[kk] * wa[kk];
        mag += std::fabs(xr[kk] * we[kk]);
      }
      ref[static_cast<std::size_t>(mm) * c.n + r] = acc;
      ref_alt[static_cast<std::size_t>(mm) * c.n + r] = layout == Layout::awq ? acc : acc_alt;
      scale_ref = std::max(scale_ref, mag);
    }
  awq::cuda::DeviceBuffer<T> dx(x), db(bias), dy(std::vector<T>(static_cast<std::size_t>(c.m) * c.n, H::from(std::nanf(""))));
  awq::cuda::DeviceBuffer<__half> ds(s_t);
  awq::cuda::DeviceBuffer<std::int32_t> dq(qw), dz(qz);
  awq::cuda::DeviceBuffer<unsigned char> ws(layout == Layout::awq ? awq::cuda::w4a16_workspace_bytes(c.m, c.k, c.n)
                                                                  : awq::cuda::w4a16_tiled_workspace_bytes(c.m, c.k, c.n));
  if (ws.size()) awq::cuda::check(cudaMemset(ws.data(), 0, ws.size()), "cudaMemset");
  awq::cuda::TiledW4A16Device tiled;
  if (layout == Layout::tiled || layout == Layout::tiled_symmetric)
    tiled = awq::cuda::TiledW4A16Device(awq::tile_w4a16(
        awq::make_row_major<const std::int32_t>(qw.data(), c.k, c.n / 8),
        layout == Layout::tiled ? awq::make_row_major<const std::int32_t>(qz.data(), ng, c.n / 8) : awq::MatrixView<const std::int32_t>(),
        awq::make_row_major<const __half>(s_t.data(), ng, c.n), c.group));
  const auto ta = tiled.args(dx.data(), dy.data(), c.m, ws.data(), ws.size(), with_bias ? db.data() : nullptr);
  awq::cuda::W4A16ArgsT<T> a;
  a.x = dx.data();
  a.qweight = dq.data();
  a.qzeros = dz.data();
  a.scales = ds.data();
  a.bias = with_bias ? db.data() : nullptr;
  a.y = dy.data();
  a.workspace = ws.data();
  a.workspace_bytes = ws.size();
  a.m = c.m;
  a.k = c.k;
  a.n = c.n;
  a.group = c.group;
  std::vector<Eigen::half> s_e(s_t.size());  // the scales as a checkpoint reader hands them out
  std::memcpy(s_e.data(), s_t.data(), s_t.size() * sizeof(__half));
  std::optional<awq::cuda::W4A16Linear> linear;
  if (layout == Layout::linear)
    linear.emplace(awq::AwqGemmWeights{awq::make_row_major<const std::int32_t>(qw.data(), c.k, c.n / 8),
                                       awq::make_row_major<const std::int32_t>(qz.data(), ng, c.n / 8),
                                       awq::make_row_major<const Eigen::half>(s_e.data(), ng, c.n)});
  auto run = [&] {
    if (layout == Layout::awq)
      awq::cuda::w4a16_matmul(a);
    else if (linear)
      (*linear)(dx.data(), dy.data(), c.m, with_bias ? db.data() : nullptr);
    else if (tiled_run)
      tiled_run(ta);
    else
      awq::cuda::w4a16_matmul(ta);
  };
  run();
  awq::cuda::check(cudaDeviceSynchronize(), "sync");
  const auto y = dy.download();
  run();  // again: the same bits (fixed-order sums)
  awq::cuda::check(cudaDeviceSynchronize(), "sync");
  const auto y2 = dy.download();
  if (y_out) *y_out = y;
  for (std::size_t i = 0; i < y.size(); ++i)
    if (H::bits(y[i]) != H::bits(y2[i])) return 2e9;  // not deterministic
  double worst = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double v = static_cast<double>(H::to(y[i]));
    if (!std::isfinite(v)) return 1e9;  // poison survived: an output was not written
    // output rounding to T (twice its half ulp) plus fp32 accumulation over K terms
    const double tol = std::fabs(ref[i]) * 2 * H::ulp + scale_ref * 1e-5 + 1e-3;
    const double tol_alt = std::fabs(ref_alt[i]) * 2 * H::ulp + scale_ref * 1e-5 + 1e-3;
    worst = std::max(worst, std::min(std::fabs(v - ref[i]) / tol, std::fabs(v - ref_alt[i]) / tol_alt));
  }
  return worst;  // <= 1 passes
}

// Whether the Hopper kernel can run here; says why not when it cannot.
bool hopper_kernel_runs() {
  if (awq::cuda::detail::tiled_wgmma_available()) return true;
  MESSAGE("no compute capability 9.0 device or no sm_90a code in this build: the Hopper kernel is not run");
  return false;
}

}  // namespace

TEST_CASE("w4a16 GEMV equals the float64 reference (M 1..8, groups 32/64/128, tails, bias)") {
  std::uint64_t seed = 1;
  for (const Case c : {Case{1, 4096, 4096, 128}, Case{1, 128, 8, 128}, Case{2, 96, 264, 32}, Case{3, 640, 1032, 64},
                       Case{4, 4096, 1024, 128}, Case{5, 256, 4104, 32}, Case{8, 1024, 2048, 64}, Case{7, 8192, 512, 128},
                       Case{1, 256, 96, 64}, Case{2, 512, 2080, 32}, Case{1, 8192, 28672, 128}}) {
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group);
    CHECK(run_case(c, seed, seed % 2 == 0) <= 1.0);
    ++seed;
  }
}

TEST_CASE("w4a16 tensor-core path equals the float64 reference (M 9..256, groups 32/64/128, tails in M, K and N, bias)") {
  std::uint64_t seed = 100;
  for (const Case c : {Case{9, 256, 256, 128}, Case{16, 4096, 4096, 128}, Case{17, 96, 264, 32}, Case{33, 640, 1032, 64},
                       Case{64, 1024, 2048, 64}, Case{100, 512, 4104, 32}, Case{128, 2048, 1056, 128}, Case{40, 160, 1056, 32},
                       Case{256, 512, 1032, 128}, Case{200, 4096, 136, 64}, Case{12, 8192, 1024, 128}, Case{16, 4096, 256, 128}}) {
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group);
    CHECK(run_case(c, seed, seed % 2 == 0) <= 1.0);
    ++seed;
  }
}

TEST_CASE("w4a16 with bf16 activations equals the float64 reference (AutoAWQ layout: GEMV and tensor-core path)") {
  std::uint64_t seed = 700;
  for (const Case c : {Case{1, 4096, 4096, 128}, Case{1, 128, 8, 128}, Case{3, 640, 1032, 64}, Case{8, 1024, 2048, 64}, Case{5, 256, 4104, 32},
                       Case{9, 256, 256, 128}, Case{17, 96, 264, 32}, Case{64, 1024, 2048, 64}, Case{100, 512, 4104, 32},
                       Case{256, 512, 1032, 128}, Case{200, 4096, 136, 64}}) {
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group);
    CHECK(run_case<__nv_bfloat16>(c, seed, seed % 2 == 0) <= 1.0);
    ++seed;
  }
}

TEST_CASE("w4a16 stress: the same shapes many times with fresh inputs (GEMV and tensor-core paths)") {
  for (int rep = 0; rep < 20; ++rep) CHECK(run_case(Case{1 + rep % 8, 2048, 2048, 128}, 1000 + static_cast<std::uint64_t>(rep), rep % 2) <= 1.0);
  for (int rep = 0; rep < 12; ++rep) {
    const int m = std::array<int, 4>{16, 64, 130, 256}[static_cast<std::size_t>(rep % 4)];
    CHECK(run_case(Case{m, 1024, 1536, 128}, 2000 + static_cast<std::uint64_t>(rep), rep % 2) <= 1.0);
  }
}

TEST_CASE("w4a16 GEMV: bad shapes raise awq::Error") {
  awq::cuda::W4A16Args a;
  a.m = 9;
  a.k = 128;
  a.n = 64;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_gemv(a), doctest::Contains("null"), awq::Error);
  a.m = 0;
  CHECK_THROWS_WITH_AS(a.can_implement(), doctest::Contains("M 0 is not positive"), awq::Error);
  a.m = 1;
  a.k = 100;
  CHECK_THROWS_WITH_AS(a.can_implement(), doctest::Contains("group 128 does not divide K 100"), awq::Error);
  // The tensor-core path needs 16-byte aligned x, scales and y (checked before any launch).
  alignas(16) static unsigned char fake[64];
  a.m = 16;
  a.k = 128;
  a.x = reinterpret_cast<const __half*>(fake + 2);
  a.qweight = reinterpret_cast<const std::int32_t*>(fake);
  a.qzeros = reinterpret_cast<const std::int32_t*>(fake);
  a.scales = reinterpret_cast<const __half*>(fake);
  a.y = reinterpret_cast<__half*>(fake);
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("16-byte aligned"), awq::Error);
}

TEST_CASE("w4a16: a workspace smaller than the sizes need raises awq::Error (GEMV, and split-K on tensor cores)") {
  for (const int m : {2, 16}) {
    const int k = 4096, n = 256;  // for M 16: two column tiles, so K is split
    awq::cuda::DeviceBuffer<__half> x(static_cast<std::size_t>(m) * k), s(static_cast<std::size_t>(k / 128) * n),
        y(static_cast<std::size_t>(m) * n);
    awq::cuda::DeviceBuffer<std::int32_t> q(static_cast<std::size_t>(k) * n / 8), z(static_cast<std::size_t>(k / 128) * n / 8);
    const std::size_t need = awq::cuda::w4a16_workspace_bytes(m, k, n);
    REQUIRE(need > 0);
    awq::cuda::DeviceBuffer<unsigned char> ws(need);
    awq::cuda::W4A16Args a;
    a.x = x.data();
    a.qweight = q.data();
    a.qzeros = z.data();
    a.scales = s.data();
    a.y = y.data();
    a.workspace = ws.data();
    a.workspace_bytes = need - 1;
    a.m = m;
    a.k = k;
    a.n = n;
    CAPTURE(m);
    CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("workspace_bytes"), awq::Error);
  }
}

TEST_CASE("w4a16 tiled layout equals the float64 reference (M 1..256, groups 32/64/128, tails, bias, zero point on and off)") {
  std::uint64_t seed = 300;
  for (const Case c : {Case{1, 4096, 4096, 128}, Case{1, 128, 8, 128}, Case{2, 96, 264, 32}, Case{3, 640, 1032, 64}, Case{8, 1024, 2048, 64},
                       Case{1, 8192, 28672, 128}, Case{16, 4096, 4096, 128}, Case{17, 96, 264, 32}, Case{33, 640, 1032, 64},
                       Case{64, 1024, 2048, 64}, Case{100, 512, 4104, 32}, Case{256, 512, 1032, 128}, Case{200, 4096, 136, 64},
                       Case{5, 11008, 4096, 128}, Case{48, 160, 1056, 32}, Case{1, 32, 200, 32}, Case{6, 96, 200, 32},
                       Case{7, 4160, 520, 64}, Case{4, 11008, 4096, 128}, Case{8, 2048, 72, 128}, Case{2, 8192, 136, 64},
                       Case{9, 96, 264, 32}, Case{12, 640, 1032, 64}, Case{15, 4224, 520, 128}, Case{16, 8192, 2048, 128},
                       Case{50, 256, 28672, 64},    // 112 column tiles: the one-warpgroup Hopper kernel at M ≤ 64
                       Case{256, 256, 11008, 64},   // 86 unsplit tiles: 3-strip blocks on a 132-SM H100 (wgmma_mix_plan)
                       Case{24, 4096, 4096, 128}}) {  // M ≤ 32, few tiles: four warpgroups over 64 tokens (rows past M zero)
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group);
    CHECK(run_case(c, seed, seed % 2 == 0, Layout::tiled) <= 1.0);
    ++seed;
    CHECK(run_case(c, seed, seed % 2 == 0, Layout::tiled_symmetric) <= 1.0);
    ++seed;
  }
}

TEST_CASE("w4a16 tiled layout with bf16 activations equals the float64 reference (M 1..256, groups 32/64/128, tails, bias, zero point on and off)") {
  // Each kernel: streaming GEMV with raw codes (M ≤ 8) and bf16 decode (9..16); Hopper kernel or
  // mma pipeline above (few output tiles: the mma pipeline, raw codes for one m16 tile).
  std::uint64_t seed = 500;
  for (const Case c : {Case{1, 4096, 4096, 128}, Case{1, 128, 8, 128}, Case{3, 640, 1032, 64}, Case{8, 1024, 2048, 64}, Case{1, 8192, 28672, 128},
                       Case{12, 640, 1032, 64}, Case{16, 4096, 4096, 128}, Case{17, 96, 264, 32}, Case{33, 640, 1032, 64},
                       Case{64, 1024, 2048, 64}, Case{100, 512, 4104, 32}, Case{256, 512, 1032, 128}, Case{200, 4096, 136, 64},
                       Case{48, 160, 1056, 32}, Case{40, 2048, 8192, 128}, Case{128, 4096, 4096, 128}, Case{50, 256, 28672, 64},
                       Case{30, 2048, 4096, 64}}) {
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group);
    CHECK(run_case<__nv_bfloat16>(c, seed, seed % 2 == 0, Layout::tiled) <= 1.0);
    ++seed;
    CHECK(run_case<__nv_bfloat16>(c, seed, seed % 2 == 0, Layout::tiled_symmetric) <= 1.0);
    ++seed;
  }
}

TEST_CASE("W4A16Linear: AutoAWQ tensors taken once, any M, fp16 and bf16, against the float64 reference") {
  std::uint64_t seed = 2700;
  for (const Case c : {Case{1, 512, 264, 128}, Case{5, 256, 1032, 64}, Case{16, 384, 520, 32}, Case{64, 1024, 776, 128}, Case{200, 640, 2056, 64}}) {
    CAPTURE(c.m);
    CAPTURE(c.k);
    CAPTURE(c.n);
    CHECK(run_case<__half>(c, seed, seed % 2 == 0, Layout::linear) <= 1.0);
    ++seed;
    CHECK(run_case<__nv_bfloat16>(c, seed, seed % 2 == 0, Layout::linear) <= 1.0);
    ++seed;
  }
}

// W4A16Linear::swiglu on random AutoAWQ weights whose output features are (gate, up) pairs: each
// output against silu(gate)·up of the plain product's two outputs (tested against float64 above),
// in float64 on the host; poisoned outputs, the same bits twice. Worst |g − ref| / tolerance.
template <class T, class Tuning = awq::cuda::TiledTuning>
double swiglu_case(const Case& c, std::uint64_t seed, bool with_bias) {
  using H = Host<T>;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int ng = c.k / c.group;
  const RandomCodes codes = random_codes(c, rng, false);
  const auto& qw = codes.qw;
  const auto& qz = codes.qz;
  std::vector<Eigen::half> sc(static_cast<std::size_t>(ng) * c.n);
  for (auto& v : sc) v = Eigen::half(0.01f + 0.02f * std::fabs(nd(rng)));
  std::vector<T> x(static_cast<std::size_t>(c.m) * c.k), bias(static_cast<std::size_t>(c.n));
  for (auto& v : x) v = H::from(nd(rng));
  for (auto& v : bias) v = H::from(nd(rng));
  awq::cuda::W4A16LinearT<Tuning> lin({awq::make_row_major<const std::int32_t>(qw.data(), c.k, c.n / 8),
                              awq::make_row_major<const std::int32_t>(qz.data(), ng, c.n / 8),
                              awq::make_row_major<const Eigen::half>(sc.data(), ng, c.n)});
  const std::size_t half = static_cast<std::size_t>(c.m) * c.n / 2;
  awq::cuda::DeviceBuffer<T> dx(x), db(bias), dy(2 * half), dg(std::vector<T>(half, H::from(std::nanf(""))));
  const T* b = with_bias ? db.data() : nullptr;
  lin(dx.data(), dy.data(), c.m, b);
  lin.swiglu(dx.data(), dg.data(), c.m, b);
  awq::cuda::check(cudaDeviceSynchronize(), "sync");
  const auto y = dy.download(), g = dg.download();
  lin.swiglu(dx.data(), dg.data(), c.m, b);
  awq::cuda::check(cudaDeviceSynchronize(), "sync");
  const auto g2 = dg.download();
  double worst = 0;
  for (std::size_t i = 0; i < half; ++i) {
    if (H::bits(g[i]) != H::bits(g2[i])) return 2e9;  // not deterministic
    const double v = static_cast<double>(H::to(g[i]));
    if (!std::isfinite(v)) return 1e9;  // poison survived
    const double gate = H::to(y[2 * i]), up = H::to(y[2 * i + 1]);
    const double ref = gate / (1.0 + std::exp(-gate)) * up;
    // the output rounding to T (twice its half ulp) and __expf's few float ulps
    worst = std::max(worst, std::fabs(v - ref) / (std::fabs(ref) * 2 * H::ulp + 1e-6));
  }
  return worst;
}

// TiledTuning with the mma pipeline on Hopper too (above M = 16 the Hopper kernel serves otherwise).
struct NoWgmma : awq::cuda::TiledTuning {
  static constexpr bool wgmma = false;
};

TEST_CASE("W4A16Linear::swiglu: silu(gate)·up of (gate, up) output pairs, every kernel (M 1..256), split-K, bias or none, fp16 and bf16") {
  std::uint64_t seed = 2900;
  int i = 0;
  for (const Case c : {Case{1, 2048, 264, 128}, Case{5, 1024, 520, 64}, Case{16, 512, 1032, 32}, Case{40, 1024, 776, 128},
                       Case{200, 640, 2056, 64}, Case{256, 4096, 4096, 128}}) {
    CAPTURE(c.m);
    CAPTURE(c.k);
    CAPTURE(c.n);
    const bool bias = i++ % 2 == 0;
    CHECK(swiglu_case<__half>(c, seed++, bias) <= 1.0);
    CHECK(swiglu_case<__nv_bfloat16>(c, seed++, !bias) <= 1.0);
    if (c.m > 16) {  // the mma pipeline's epilogue as well (on Hopper the plans above pick wgmma)
      CHECK(swiglu_case<__half, NoWgmma>(c, seed++, !bias) <= 1.0);
      CHECK(swiglu_case<__nv_bfloat16, NoWgmma>(c, seed++, bias) <= 1.0);
    }
  }
}

// The streaming GEMV with its K slices meeting in a thread-block cluster (sm_90).
struct GemvCluster : awq::cuda::TiledTuning {
  static constexpr bool gemv_cluster = true;
};

TEST_CASE("tiled GEMV, K slices added in a cluster's shared memory (sm_90): the float64 reference and the workspace path's bits") {
  if (!hopper_kernel_runs()) return;
  using awq::cuda::detail::tiled_device_plan;
  std::uint64_t seed = 3500;
  int clustered = 0;
  for (const Case c : {Case{1, 4096, 4096, 128}, Case{5, 4096, 1024, 64}, Case{16, 2048, 4096, 32}, Case{1, 11008, 4096, 128},
                       Case{9, 640, 1032, 64}, Case{3, 96, 264, 32}, Case{12, 8192, 512, 128}}) {
    const auto plan = tiled_device_plan<__half, GemvCluster>(c.m, c.k, c.n);
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group, ", ", plan.splits, " K slices");
    clustered += plan.cluster ? 1 : 0;
    const bool overlap = seed % 4 < 2;  // programmatic dependent launch with clusters too
    auto in_cluster = [overlap](auto ta) {
      ta.overlap_previous = overlap;
      awq::cuda::w4a16_matmul(ta, nullptr, GemvCluster{});
    };
    std::vector<__half> y_cluster, y_plain;
    CHECK(run_case<__half>(c, seed, seed % 2 == 0, Layout::tiled, in_cluster, &y_cluster) <= 1.0);
    CHECK(run_case<__half>(c, seed, seed % 2 == 0, Layout::tiled, {}, &y_plain) <= 1.0);
    CHECK(std::memcmp(y_cluster.data(), y_plain.data(), y_plain.size() * sizeof(__half)) == 0);  // slices added in the same order
    ++seed;
    CHECK(run_case<__nv_bfloat16>(c, seed, seed % 2 == 0, Layout::tiled_symmetric, in_cluster) <= 1.0);
    ++seed;
    CHECK(swiglu_case<__half, GemvCluster>(c, seed, seed % 2 == 0) <= 1.0);
    ++seed;
  }
  CHECK(clustered >= 3);  // 4 of these shapes on a 132-SM card; the rest split K too often or not at all
}

TEST_CASE("w4a16 tiled stress: the same shapes many times with fresh inputs (fp16 and bf16)") {
  for (int rep = 0; rep < 28; ++rep) {
    const int m = std::array<int, 7>{1, 4, 8, 16, 40, 64, 256}[static_cast<std::size_t>(rep % 7)];
    CHECK(run_case(Case{m, 2048, 1536, 128}, 4000 + static_cast<std::uint64_t>(rep), rep % 2, Layout::tiled) <= 1.0);
  }
  for (int rep = 0; rep < 14; ++rep) {
    const int m = std::array<int, 7>{1, 4, 8, 16, 40, 64, 256}[static_cast<std::size_t>(rep % 7)];
    CHECK(run_case<__nv_bfloat16>(Case{m, 2048, 1536, 128}, 5000 + static_cast<std::uint64_t>(rep), rep % 2, Layout::tiled) <= 1.0);
  }
}

TEST_CASE("w4a16 tiled Hopper plans that end on narrower blocks equal the float64 reference (fp16 and bf16)") {
  // Plans made for small slot counts, so that the 2- and 3-strip tail blocks (their other
  // warpgroups idle) run on any Hopper device: tails in M, N, K; 64- and 128-token blocks.
  using namespace awq::cuda::detail;
  if (!hopper_kernel_runs()) return;
  std::uint64_t seed = 900;
  int runs = 0, widths = 0;
  for (const Case c : {Case{256, 512, 1032, 128}, Case{200, 640, 2056, 64}, Case{60, 1024, 1544, 32}, Case{130, 4160, 776, 64}}) {
    for (int slots : {4, 7, 9, 12, 17, 26}) {
      const int bm = c.m <= 64 ? 64 : 128;
      GemmPlan p = tiled_grid_plan(bm, c.m, c.k, c.n, slots);
      p.wgmma = true;
      p.warpgroups = 4;
      wgmma_mix_plan<awq::cuda::TiledTuning>(p, c.n, slots);
      if (p.tail_w == 0) continue;
      INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group, ", slots ", slots, ": ", p.wide_c4, " 4-strip and ", p.tail_pieces, " ",
           p.tail_w, "-strip blocks per token block");
      widths |= 1 << p.tail_w;
      auto launch = [&](const auto& ta) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(ta.x)>>;
        if (bm == 64)
          launch_tiled_wgmma<64, 4, T, awq::cuda::TiledTuning>(ta, p, nullptr);
        else
          launch_tiled_wgmma<128, 4, T, awq::cuda::TiledTuning>(ta, p, nullptr);
        awq::cuda::check(cudaGetLastError(), "launch_tiled_wgmma");
      };
      CHECK(run_case<__half>(c, seed, seed % 2 == 0, Layout::tiled, launch) <= 1.0);
      ++seed;
      CHECK(run_case<__nv_bfloat16>(c, seed, seed % 2 == 0, Layout::tiled_symmetric, launch) <= 1.0);
      ++seed;
      ++runs;
    }
  }
  CHECK(runs >= 8);
  CHECK(widths == ((1 << 2) | (1 << 3)));  // both tail widths ran
}

namespace {

// The Hopper kernel's form in plan p: 0..3 for 32 and 64 tokens with one warpgroup, 64 and 128
// with four (w4a16_second_tu.hpp); −1 for the other kernels.
int wgmma_form(const awq::cuda::detail::GemmPlan& p) {
  if (!p.wgmma) return -1;
  return p.warpgroups == 1 ? (p.bm == 32 ? 0 : 1) : (p.bm == 64 ? 2 : 3);
}

// Shapes on which the Hopper kernel's launch failed (cudaErrorInvalidValue: fp16 at K 64, M 19 in
// the tool; bf16 M 64 and 200), and one per form on a 132-SM Hopper device (tests/test_tiled_plan.cpp).
const Case kWgmmaCases[] = {Case{19, 64, 192, 64},    Case{19, 64, 64, 64},      Case{19, 64, 256, 32},    Case{19, 128, 64, 64},
                            Case{40, 128, 16384, 64}, Case{64, 1024, 776, 128}, Case{200, 640, 2056, 64}, Case{200, 128, 2056, 64}};

}  // namespace

TEST_CASE("w4a16 tiled Hopper kernel, fp16 and bf16, every form: the shapes whose launch failed equal the float64 reference") {
  using namespace awq::cuda::detail;
  const bool hopper = tiled_wgmma_available();
  if (!hopper) MESSAGE("no compute capability 9.0 device or no sm_90a code in this build: the mma pipeline runs these shapes");
  std::uint64_t seed = 3100;
  int forms[2] = {0, 0};  // bit f: form f ran (fp16, bf16)
  auto run = [&](auto type, const Case& c) {
    using T = decltype(type);
    const GemmPlan p = tiled_device_plan<T, awq::cuda::TiledTuning>(c.m, c.k, c.n);
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group, (std::is_same_v<T, __half> ? ", fp16" : ", bf16"), ": form ", wgmma_form(p),
         ", ", p.splits, " K slices");
    CHECK(p.wgmma == hopper);
    if (p.wgmma) forms[std::is_same_v<T, __half> ? 0 : 1] |= 1 << wgmma_form(p);
    CHECK(run_case<T>(c, seed, seed % 2 == 0, Layout::tiled) <= 1.0);
    ++seed;
    CHECK(run_case<T>(c, seed, seed % 2 == 0, Layout::tiled_symmetric) <= 1.0);
    ++seed;
    CHECK(run_case<T>(c, seed, seed % 2 == 0, Layout::linear) <= 1.0);
    ++seed;
  };
  for (const Case& c : kWgmmaCases) {
    run(__half{}, c);
    run(__nv_bfloat16{}, c);
  }
  if (hopper) {
    CHECK(forms[0] == 0xF);  // all four forms ran, for each activation type
    CHECK(forms[1] == 0xF);
  }
}

TEST_CASE("w4a16 tiled Hopper kernel from a second translation unit: each copy of a kernel launches (fp16 and bf16)") {
  using namespace awq::cuda::detail;
  if (!hopper_kernel_runs()) return;
  // The products alternate between this translation unit and test_cuda_w4a16_tu.cu, bf16 there first.
  std::uint64_t seed = 3300;
  auto second = [](const auto& ta) { awq_test::second_tu_matmul(ta); };
  for (const Case& c : kWgmmaCases) {
    INFO("M ", c.m, ", K ", c.k, ", N ", c.n, ", group ", c.group);
    CHECK(run_case<__nv_bfloat16>(c, seed++, true, Layout::tiled, second) <= 1.0);
    CHECK(run_case<__nv_bfloat16>(c, seed++, false, Layout::tiled) <= 1.0);
    CHECK(run_case<__half>(c, seed++, true, Layout::tiled) <= 1.0);
    CHECK(run_case<__half>(c, seed++, false, Layout::tiled_symmetric, second) <= 1.0);
  }
  // The two copies of each instantiation: distinct kernels to the runtime under nvcc's static
  // template stubs (the default since CUDA 12.8), each allowed its shared memory by the helper the
  // launches use, keyed by the kernel's address.
  int distinct = 0;
  for (int form = 0; form < 4; ++form)
    for (const bool bf16 : {false, true}) {
      const auto mine = bf16 ? awq_test::wgmma_kernel_of_this_tu<__nv_bfloat16>(form) : awq_test::wgmma_kernel_of_this_tu<__half>(form);
      const auto other = awq_test::second_tu_wgmma_kernel(form, bf16);
      CAPTURE(form);
      CAPTURE(bf16);
      REQUIRE(mine.smem == other.smem);
      distinct += mine.kernel != other.kernel;
      for (const void* k : {mine.kernel, other.kernel}) {
        allow_dynamic_smem(k, mine.smem, "test");
        cudaFuncAttributes fa{};
        awq::cuda::check(cudaFuncGetAttributes(&fa, k), "cudaFuncGetAttributes");
        CHECK(static_cast<std::size_t>(fa.maxDynamicSharedSizeBytes) >= mine.smem);
      }
    }
  MESSAGE(distinct, " of 8 Hopper-kernel instantiations are distinct kernels in the two translation units");
}

// A named namespace, not an anonymous one: nvcc's host stub of a kernel in an anonymous namespace
// is ambiguous when the test sources are compiled as one unity translation unit.
namespace overlap_test {

// Spins for `spin` clock cycles, then copies src to dst: a kernel that writes x late.
__global__ void slow_copy(const __half* src, __half* dst, int n, long long spin) {
  const long long t0 = clock64();
  while (clock64() - t0 < spin) {
  }
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += static_cast<int>(gridDim.x * blockDim.x)) dst[i] = src[i];
}

}  // namespace overlap_test

TEST_CASE("w4a16 tiled overlap_previous: the product reads the x that the kernel just before it wrote") {
  const int k = 4096, n = 4096, group = 128, ng = k / group;
  std::mt19937_64 rng(77);
  std::vector<std::int32_t> qw(static_cast<std::size_t>(k) * n / 8), qz(static_cast<std::size_t>(ng) * n / 8);
  for (auto& v : qw) v = static_cast<std::int32_t>(rng());
  for (auto& v : qz) v = static_cast<std::int32_t>(rng());
  std::vector<__half> s(static_cast<std::size_t>(ng) * n);
  std::uniform_real_distribution<float> ud(0.01f, 0.03f);
  for (auto& v : s) v = __float2half_rn(ud(rng));
  const awq::cuda::TiledW4A16Device w(awq::tile_w4a16(awq::make_row_major<const std::int32_t>(qw.data(), k, n / 8),
                                                      awq::make_row_major<const std::int32_t>(qz.data(), ng, n / 8),
                                                      awq::make_row_major<const __half>(s.data(), ng, n), group));
  // 4096 × 4096: the streaming GEMV (M ≤ 16) runs overlapped; above, the flag is ignored (M = 64, 100).
  for (const int m : {1, 5, 16, 64, 100}) {
    CAPTURE(m);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<__half> xa(static_cast<std::size_t>(m) * k), xb(xa.size());
    for (auto& v : xa) v = __float2half_rn(nd(rng));
    for (auto& v : xb) v = __float2half_rn(nd(rng));
    awq::cuda::DeviceBuffer<__half> dxa(xa), dxb(xb), x(xa.size()), y(static_cast<std::size_t>(m) * n);
    awq::cuda::DeviceBuffer<unsigned char> ws(awq::cuda::w4a16_tiled_workspace_bytes(m, k, n));
    if (ws.size()) awq::cuda::check(cudaMemset(ws.data(), 0, ws.size()), "cudaMemset");
    // Expected outputs: the ordinary launch (the same kernel: the same bits).
    auto plain = [&](const awq::cuda::DeviceBuffer<__half>& xs) {
      awq::cuda::w4a16_matmul(w.args(xs.data(), y.data(), m, ws.data(), ws.size()));
      awq::cuda::check(cudaDeviceSynchronize(), "sync");
      return y.download();
    };
    const auto ya = plain(dxa), yb = plain(dxb);
    int differ = 0;
    for (std::size_t i = 0; i < ya.size(); ++i) differ += __half_as_ushort(ya[i]) != __half_as_ushort(yb[i]);
    REQUIRE(differ > 0);  // the two x give distinguishable outputs
    auto a = w.args(static_cast<const __half*>(x.data()), y.data(), m, ws.data(), ws.size());
    a.overlap_previous = true;
    const int elems = static_cast<int>(xa.size());
    int mismatches = 0;
    for (int rep = 0; rep < 12; ++rep) {
      const bool use_b = rep % 2 == 1;
      overlap_test::slow_copy<<<64, 256>>>((use_b ? dxb : dxa).data(), x.data(), elems, 200000);  // ≈ 0.1 ms, then x
      awq::cuda::w4a16_matmul(a);
      awq::cuda::check(cudaDeviceSynchronize(), "sync");
      const auto got = y.download();
      const auto& want = use_b ? yb : ya;
      for (std::size_t i = 0; i < got.size(); ++i) mismatches += __half_as_ushort(got[i]) != __half_as_ushort(want[i]);
    }
    CHECK(mismatches == 0);
    // Back-to-back overlapped calls (each one's weights in flight while the previous ends), then one
    // check: the workspace's tickets and partial sums are handed on correctly.
    overlap_test::slow_copy<<<64, 256>>>(dxb.data(), x.data(), elems, 1000);
    for (int rep = 0; rep < 20; ++rep) awq::cuda::w4a16_matmul(a);
    awq::cuda::check(cudaDeviceSynchronize(), "sync");
    const auto last = y.download();
    int last_mismatches = 0;
    for (std::size_t i = 0; i < last.size(); ++i) last_mismatches += __half_as_ushort(last[i]) != __half_as_ushort(yb[i]);
    CHECK(last_mismatches == 0);
  }
}

TEST_CASE("w4a16 tiled: bad arguments raise awq::Error naming them") {
  alignas(16) static unsigned char fake[64];
  awq::cuda::W4A16TiledArgs a;
  a.m = 1;
  a.k = 128;
  a.n = 64;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("null"), awq::Error);
  a.x = reinterpret_cast<const __half*>(fake);
  a.qweight = reinterpret_cast<const std::uint32_t*>(fake);
  a.scales = reinterpret_cast<const __half*>(fake);
  a.y = reinterpret_cast<__half*>(fake);
  a.group = 48;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("group 48 is not 32, 64 or 128"), awq::Error);
  a.group = 128;
  a.n = 60;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("N 60 is not a multiple of 8"), awq::Error);
  a.n = 64;
  a.m = 0;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("M 0 is not positive"), awq::Error);
  a.m = 1;
  a.x = reinterpret_cast<const __half*>(fake + 8);
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("16-byte aligned"), awq::Error);
  // A split-K plan (one column tile, long K) with a workspace one byte short.
  const int k = 8192, n = 256;
  awq::cuda::DeviceBuffer<__half> x(static_cast<std::size_t>(k)), y(static_cast<std::size_t>(n)), s(static_cast<std::size_t>(k / 128) * n);
  awq::cuda::DeviceBuffer<std::uint32_t> q(static_cast<std::size_t>(k) * n / 8);
  const std::size_t need = awq::cuda::w4a16_tiled_workspace_bytes(1, k, n);
  REQUIRE(need > 0);
  awq::cuda::DeviceBuffer<unsigned char> ws(need);
  a.x = x.data();
  a.qweight = q.data();
  a.scales = s.data();
  a.y = y.data();
  a.k = k;
  a.n = n;
  a.workspace = ws.data();
  a.workspace_bytes = need - 1;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(a), doctest::Contains("workspace_bytes"), awq::Error);
  // bf16 activations: the same checks.
  awq::cuda::W4A16TiledArgsBf16 b;
  b.m = 1;
  b.k = 128;
  b.n = 64;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(b), doctest::Contains("null"), awq::Error);
  b.x = reinterpret_cast<const __nv_bfloat16*>(fake + 8);
  b.qweight = reinterpret_cast<const std::uint32_t*>(fake);
  b.scales = reinterpret_cast<const __half*>(fake);
  b.y = reinterpret_cast<__nv_bfloat16*>(fake);
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(b), doctest::Contains("16-byte aligned"), awq::Error);
  b.x = reinterpret_cast<const __nv_bfloat16*>(fake);
  b.k = 100;
  CHECK_THROWS_WITH_AS(awq::cuda::w4a16_matmul(b), doctest::Contains("does not divide K 100"), awq::Error);
}

// Runs without a device too (test_cuda_main runs the "host-only" cases then). The tiled kernels'
// plans are tested in awq_tests (tests/test_tiled_plan.cpp); this is the AutoAWQ-layout GEMM's.
TEST_CASE("host-only: AutoAWQ-layout GEMM plans cover every output tile and K step once, no empty slice") {
  using namespace awq::cuda::detail;
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> mdist(1, 600), kdist(1, 400), ndist(1, 4000), sdist(1, 1200);
  for (int rep = 0; rep < 400; ++rep) {
    const int m = mdist(rng), k = 32 * kdist(rng), n = 8 * ndist(rng), slots = sdist(rng);
    CAPTURE(m);
    CAPTURE(k);
    CAPTURE(n);
    CAPTURE(slots);
    const GemmPlan a = gemm_plan(m, k, n, slots);
    CHECK(a.tiles_m * a.bm >= m);
    CHECK(a.tiles_n * kGemmBN >= n);
    CHECK(a.steps * kGemmBK >= k);
    awq_test::check_slices(a);
  }
}
