// GPTQ's error feedback (awq/gptq.hpp): the Gram product against float64, the factor and the lazy
// feedback against a plain float64 column-by-column implementation, the layer output error against
// RTN's on fresh inputs with planted outlier channels, thread-count independence, bad input.
#include <doctest/doctest.h>

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "awq/backend/cpu.hpp"
#include "awq/gptq.hpp"
#include "awq/model/finalize.hpp"
#include "support.hpp"

namespace {

using Cpu = awq::backend::cpu;
using awq::index_t;
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Calibration-like inputs [t, k]: correlated channels (16 shared factors plus N(0, 0.3²) noise,
// as a layer's activations are, and as GPTQ needs: on independent channels its feedback only fits
// the sample's chance correlations), channels 3, 17 and 40 scaled by 25 (the outlier channels AWQ
// is about), and `dead` channels that are always zero. The mixing depends on `mix` alone, so two
// seeds draw two samples of one distribution.
std::vector<float> planted_inputs(index_t t, index_t k, std::uint64_t seed, const std::vector<index_t>& dead = {},
                                  std::uint64_t mix = 5) {
  constexpr index_t r = 16;
  const auto z = awq_test::random_weights(t, r, awq_test::Dist::normal, seed, 1.0);
  const auto a = awq_test::random_weights(r, k, awq_test::Dist::normal, mix, 1.0);
  const auto e = awq_test::random_weights(t, k, awq_test::Dist::normal, seed + 1000, 0.3);
  std::vector<float> x(static_cast<std::size_t>(t * k));
  for (index_t i = 0; i < t; ++i)
    for (index_t c = 0; c < k; ++c) {
      double v = e[static_cast<std::size_t>(i * k + c)];
      for (index_t j = 0; j < r; ++j) v += z[static_cast<std::size_t>(i * r + j)] * a[static_cast<std::size_t>(j * k + c)] / 4.0;
      x[static_cast<std::size_t>(i * k + c)] = static_cast<float>(v);
    }
  for (index_t i = 0; i < t; ++i) {
    for (index_t c : {3, 17, 40}) x[static_cast<std::size_t>(i * k + c)] *= 25.0f;
    for (index_t c : dead) x[static_cast<std::size_t>(i * k + c)] = 0.0f;
  }
  return x;
}

std::vector<float> gram_of(const std::vector<float>& x, index_t t, index_t k) {
  std::vector<float> h(static_cast<std::size_t>(k * k), std::numeric_limits<float>::quiet_NaN());
  Cpu::gram(awq::make_row_major<const float>(x.data(), t, k), awq::make_row_major(h.data(), k, k));
  return h;
}

// ||X Wᵀ − X Ŵᵀ||² / ||X Wᵀ||² in float64.
double output_error(const std::vector<float>& x, index_t t, const std::vector<float>& w, const std::vector<float>& wq, index_t n,
                    index_t k) {
  double num = 0, den = 0;
  for (index_t r = 0; r < t; ++r)
    for (index_t o = 0; o < n; ++o) {
      double y = 0, yq = 0;
      for (index_t i = 0; i < k; ++i) {
        const double xi = x[static_cast<std::size_t>(r * k + i)];
        y += xi * w[static_cast<std::size_t>(o * k + i)];
        yq += xi * wq[static_cast<std::size_t>(o * k + i)];
      }
      num += (y - yq) * (y - yq);
      den += y * y;
    }
  return num / den;
}

// GPTQ as its paper writes it, in float64: H⁻¹ by inversion, then its upper Cholesky factor, then
// every column's error applied to all later columns at once (no lazy blocks).
struct PlainGptq {
  MatD u;
  std::vector<std::uint8_t> codes, zeros;
  std::vector<float> scales, deq;
};

PlainGptq plain_gptq(const awq::QuantSpec& spec, const std::vector<float>& w0, index_t n, index_t k, const std::vector<float>& h,
                     double damp, awq::GptqOptions::Groups groups) {
  using G = awq::GptqOptions::Groups;
  PlainGptq p;
  Eigen::MatrixXd H(k, k);
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) H(i, j) = 0.5 * (double(h[static_cast<std::size_t>(i * k + j)]) + h[static_cast<std::size_t>(j * k + i)]);
  for (index_t i = 0; i < k; ++i)
    if (H(i, i) == 0) H(i, i) = 1;
  H.diagonal().array() += damp * H.diagonal().mean();
  const Eigen::MatrixXd hinv = H.llt().solve(Eigen::MatrixXd::Identity(k, k));
  p.u = hinv.llt().matrixU();
  const index_t g = spec.group_for(k), ng = k / g;
  const double maxq = (1 << spec.bits) - 1;
  p.codes.resize(static_cast<std::size_t>(n * k));
  p.deq.resize(p.codes.size());
  p.zeros.resize(static_cast<std::size_t>(n * ng));
  p.scales.resize(p.zeros.size());
  for (index_t r = 0; r < n; ++r) {
    std::vector<double> w(w0.begin() + r * k, w0.begin() + (r + 1) * k);
    float s = 0, z = 0;
    for (index_t i = 0; i < k; ++i) {
      if (i % g == 0) {
        float lo = std::numeric_limits<float>::max(), hi = -lo, lo0 = lo, hi0 = hi;
        for (index_t c = i; c < i + g; ++c) {
          const float v0 = w0[static_cast<std::size_t>(r * k + c)];
          const float v = groups == G::fixed ? v0 : static_cast<float>(w[static_cast<std::size_t>(c)]);
          lo = std::min(lo, v);
          hi = std::max(hi, v);
          lo0 = std::min(lo0, v0);
          hi0 = std::max(hi0, v0);
        }
        if (groups == G::updated_within) {  // [lo, hi] ∩ [lo0, hi0], or [lo0, hi0] where they do not meet
          const float a = std::max(lo, lo0), b = std::min(hi, hi0);
          lo = a <= b ? a : lo0;
          hi = a <= b ? b : hi0;
        }
        // The asymmetric quantizer's group parameters (awq/quantizer.hpp), scale rounded to fp16.
        const float sc = std::max(hi - lo, 1e-5f) / static_cast<float>(maxq);
        z = std::min(std::max(-std::nearbyint(lo / sc), 0.0f), static_cast<float>(maxq));
        s = static_cast<float>(Eigen::half(sc));
        p.scales[static_cast<std::size_t>(r * ng + i / g)] = s;
        p.zeros[static_cast<std::size_t>(r * ng + i / g)] = static_cast<std::uint8_t>(z);
      }
      const double q = std::min(std::max(std::nearbyint(w[static_cast<std::size_t>(i)] / s) + z, 0.0), maxq);
      const float deq = (static_cast<float>(q) - z) * s;
      p.codes[static_cast<std::size_t>(r * k + i)] = static_cast<std::uint8_t>(q);
      p.deq[static_cast<std::size_t>(r * k + i)] = deq;
      const double e = (w[static_cast<std::size_t>(i)] - deq) / p.u(i, i);
      for (index_t j = i + 1; j < k; ++j) w[static_cast<std::size_t>(j)] -= e * p.u(i, j);
    }
  }
  return p;
}

struct Quantized {
  std::vector<float> deq;
  std::vector<std::uint8_t> codes, zeros;
  std::vector<Eigen::half> scales;
};

Quantized run_gptq(const awq::QuantSpec& spec, const std::vector<float>& w0, index_t n, index_t k, const awq::GptqFactor& f,
                   const awq::GptqOptions& opt) {
  const index_t ng = k / spec.group_for(k);
  // Poisoned: every output must be written.
  Quantized q{w0, std::vector<std::uint8_t>(static_cast<std::size_t>(n * k), 0xFF),
              std::vector<std::uint8_t>(static_cast<std::size_t>(n * ng), 0xFF),
              std::vector<Eigen::half>(static_cast<std::size_t>(n * ng), Eigen::half(std::numeric_limits<float>::quiet_NaN()))};
  awq::gptq_quantize(spec, awq::make_row_major(q.deq.data(), n, k), f, opt, awq::make_row_major(q.codes.data(), n, k),
                     awq::make_row_major(q.scales.data(), n, ng), awq::make_row_major(q.zeros.data(), n, ng));
  return q;
}

}  // namespace

TEST_CASE("gptq: backend::cpu::gram is xᵀx within float accumulation error") {
  const index_t t = 300;
  for (const index_t k : {150, 256, 330}) {  // odd and even tile counts, k not a multiple of the 64-column tile
    CAPTURE(k);
    const auto x = planted_inputs(t, k, 7);
    const auto h = gram_of(x, t, k);
    const double worst = awq_test::gram_worst_relative(x, t, k, h.data());
    for (index_t i = 0; i < k; ++i)
      for (index_t j = 0; j < i; ++j) CHECK(h[static_cast<std::size_t>(i * k + j)] == h[static_cast<std::size_t>(j * k + i)]);
    MESSAGE("gram: worst error relative to |x_i||x_j| " << worst);
    CHECK(worst < 1e-5);
  }
}

TEST_CASE("gptq: the lazy feedback is the plain float64 one, its output error is at most RTN's on fresh inputs") {
  const index_t n = 40, k = 256, t = 1024;
  const auto xc = planted_inputs(t, k, 11, {100}), xf = planted_inputs(t, k, 12, {100});
  const auto h = gram_of(xc, t, k);
  const awq::GptqFactor f(awq::make_row_major<const float>(h.data(), k, k));
  using G = awq::GptqOptions::Groups;
  std::map<G, std::string> name = {{G::fixed, "fixed"}, {G::updated, "updated"}, {G::updated_within, "updated within"}};
  for (const G groups : {G::fixed, G::updated, G::updated_within})
    for (const int bits : {3, 4})
      for (const index_t group : {32, 64}) {
        CAPTURE(name[groups]);
        CAPTURE(bits);
        CAPTURE(group);
        const awq::QuantSpec spec{bits, static_cast<int>(group), true};
        const auto wd = awq_test::random_weights(n, k, awq_test::Dist::outliers, 100 + bits, 1.0);
        const std::vector<float> w(wd.begin(), wd.end());
        awq::GptqOptions opt;
        opt.groups = groups;
        opt.block = 48;  // not a multiple of the group: static groups span blocks, recomputed ones round it up
        const Quantized q = run_gptq(spec, w, n, k, f, opt);
        const PlainGptq p = plain_gptq(spec, w, n, k, h, opt.damp, groups);
        // The factor: GPTQ's own (inverse, then Cholesky) to rounding.
        CHECK((f.upper() - p.u).cwiseAbs().maxCoeff() <= 1e-9 * p.u.cwiseAbs().maxCoeff());
        // The codes: the same (a code could differ only where a value lies within ~1e-13 of a rounding tie).
        long code_diff = 0, range_bad = 0;
        for (std::size_t i = 0; i < q.codes.size(); ++i) {
          code_diff += q.codes[i] != p.codes[i];
          range_bad += q.codes[i] > (1 << bits) - 1;
        }
        CHECK(code_diff == 0);
        CHECK(range_bad == 0);
        for (std::size_t i = 0; i < q.scales.size(); ++i) {
          CHECK(static_cast<float>(q.scales[i]) == p.scales[i]);
          CHECK(q.zeros[i] == p.zeros[i]);
        }
        const double e_gptq = output_error(xf, t, w, q.deq, n, k), e_plain = output_error(xf, t, w, p.deq, n, k);
        CHECK(std::fabs(e_gptq - e_plain) <= 1e-12 * e_plain);
        // RTN: finalize_linear on the same weights.
        std::vector<float> rtn = w;
        const auto qr = awq::model::finalize_linear(awq::make_row_major(rtn.data(), n, k), spec);
        if (groups == G::fixed) {
          // Only codes move: the exported scales and zeros are RTN's.
          for (std::size_t i = 0; i < q.scales.size(); ++i) {
            CHECK(static_cast<float>(q.scales[i]) == static_cast<float>(qr.scales[i]));
            CHECK(q.zeros[i] == qr.zeros[i]);
          }
        }
        if (groups == G::updated_within) {
          // Never a coarser grid than RTN's (the range of the weights as given), finer in some groups.
          long finer = 0;
          for (std::size_t i = 0; i < q.scales.size(); ++i) {
            CHECK(static_cast<float>(q.scales[i]) <= static_cast<float>(qr.scales[i]));
            finer += static_cast<float>(q.scales[i]) < static_cast<float>(qr.scales[i]);
          }
          CHECK(finer > 0);
        }
        const double e_rtn = output_error(xf, t, w, rtn, n, k), c_gptq = output_error(xc, t, w, q.deq, n, k),
                     c_rtn = output_error(xc, t, w, rtn, n, k);
        MESSAGE("W" << bits << " g" << group << " " << name[groups] << ": output error / RTN's, calibration "
                    << c_gptq / c_rtn << ", fresh inputs " << e_gptq / e_rtn);
        CHECK(c_gptq <= c_rtn);
        CHECK(e_gptq <= e_rtn);
      }
}

TEST_CASE("gptq: a dead input channel rounds to nearest and passes no error on, results do not follow the thread count") {
  const index_t n = 33, k = 320, t = 512;  // n not a multiple of the 16-row chunk; k: 5 tiles and panels
  const auto x = planted_inputs(t, k, 21, {0, 77});
  const auto h = gram_of(x, t, k);
  const awq::GptqFactor f(awq::make_row_major<const float>(h.data(), k, k));
  for (index_t j = 1; j < k; ++j) CHECK(f.upper()(0, j) == 0.0);
  for (index_t j = 78; j < k; ++j) CHECK(f.upper()(77, j) == 0.0);
  const auto wd = awq_test::random_weights(n, k, awq_test::Dist::normal, 22, 1.0);
  const std::vector<float> w(wd.begin(), wd.end());
  const awq::QuantSpec spec{4, 64, true};
  const int threads = Cpu::thread_count();
  Cpu::set_threads(1);
  const Quantized one = run_gptq(spec, w, n, k, f, {});
  const auto h_one = gram_of(x, t, k);  // the Hessian and the factor too (tiles and panels over the threads)
  const awq::GptqFactor f_one(awq::make_row_major<const float>(h_one.data(), k, k));
  Cpu::set_threads(threads);
  const Quantized many = run_gptq(spec, w, n, k, f, {});
  CHECK(one.codes == many.codes);
  CHECK(one.deq == many.deq);
  CHECK(h_one == h);
  CHECK(f_one.upper() == f.upper());
  // Column 0 has nothing before it: its codes are those of rounding with the fp16 scale.
  for (index_t r = 0; r < n; ++r) {
    const float s = static_cast<float>(one.scales[static_cast<std::size_t>(r * (k / 64))]), z = one.zeros[static_cast<std::size_t>(r * (k / 64))];
    CHECK(one.codes[static_cast<std::size_t>(r * k)] == std::min(std::max(std::nearbyint(w[static_cast<std::size_t>(r * k)] / s) + z, 0.0f), 15.0f));
  }
}

TEST_CASE("gptq: bad input is an awq::Error naming the argument") {
  const index_t k = 64;
  const auto x = planted_inputs(128, k, 31);
  auto h = gram_of(x, 128, k);
  const auto hv = awq::make_row_major<const float>(h.data(), k, k);
  CHECK_THROWS_WITH_AS(awq::GptqFactor(awq::make_row_major<const float>(h.data(), k, k - 1)), doctest::Contains("must be square"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::GptqFactor(hv, -0.1), doctest::Contains("damp -0.1"), awq::Error);
  std::vector<float> indefinite = {1, 2, 2, 1};
  CHECK_THROWS_WITH_AS(awq::GptqFactor(awq::make_row_major<const float>(indefinite.data(), 2, 2), 0.0),
                       doctest::Contains("(damp 0, lambda = 0) is not positive definite; a larger damp makes it so"), awq::NotPositiveDefinite);
  std::vector<float> negative = {-1, 0, 0, 1};
  CHECK_THROWS_WITH_AS(awq::GptqFactor(awq::make_row_major<const float>(negative.data(), 2, 2)), doctest::Contains("is negative"),
                       awq::Error);
  h[5] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(awq::GptqFactor{hv}, doctest::Contains("non-finite Hessian value inf at (0, 5)"), awq::Error);
  const auto h_good = gram_of(x, 128, k);
  const awq::GptqFactor f(awq::make_row_major<const float>(h_good.data(), k, k));

  const index_t n = 8;
  std::vector<float> w(static_cast<std::size_t>(n * k), 0.5f);
  std::vector<std::uint8_t> codes(w.size()), zeros(static_cast<std::size_t>(n * 2));
  std::vector<Eigen::half> scales(zeros.size());
  const auto call = [&](index_t wk, index_t cn, index_t gn, awq::GptqOptions opt = {}, awq::QuantSpec s = {4, 32, true}) {
    awq::gptq_quantize(s, awq::make_row_major(w.data(), n, wk), f, opt, awq::make_row_major(codes.data(), cn, wk),
                       awq::make_row_major(scales.data(), n, gn), awq::make_row_major(zeros.data(), n, gn));
  };
  CHECK_NOTHROW(call(k, n, 2));
  CHECK_THROWS_WITH_AS(call(32, n, 1), doctest::Contains("the factor is for 64 columns but the weight has 32"), awq::Error);
  CHECK_THROWS_WITH_AS(call(k, n - 1, 2), doctest::Contains("codes is 7x64 but must be 8x64"), awq::Error);
  CHECK_THROWS_WITH_AS(call(k, n, 1), doctest::Contains("scales is 8x1 but must be 8x2"), awq::Error);
  CHECK_THROWS_WITH_AS(call(k, n, 2, {}, {4, 128, true}), doctest::Contains("group_size 128 does not divide in_features 64"), awq::Error);
  awq::GptqOptions zero_block;
  zero_block.block = 0;
  CHECK_THROWS_WITH_AS(call(k, n, 2, zero_block), doctest::Contains("block 0"), awq::Error);
  w[9] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(call(k, n, 2), doctest::Contains("non-finite weight nan at row 0, column 9 (group 0)"), awq::Error);
}

TEST_CASE("gptq: retarget_linear is the ridge least-squares target from the quantized stream's input, blended by beta") {
  // X̃ (the quantized model's input) and X = X̃ + a correlated error, as the two streams differ.
  const index_t t = 700, k = 48, n = 20;
  const auto xq = planted_inputs(t, k, 61, {9});
  const auto noise = awq_test::random_weights(t, k, awq_test::Dist::normal, 62, 0.05);
  std::vector<float> xf(xq.size());
  for (std::size_t i = 0; i < xq.size(); ++i) xf[i] = xq[i] * 0.97f + static_cast<float>(noise[i]);
  const auto w0 = awq_test::cast_vec<float>(awq_test::random_weights(n, k, awq_test::Dist::normal, 63, 0.1));
  const double damp = 0.05;
  const auto h = gram_of(xq, t, k);
  const awq::GptqFactor f(awq::make_row_major<const float>(h.data(), k, k), damp);
  std::vector<float> d(xq.size()), e(static_cast<std::size_t>(k * k), std::numeric_limits<float>::quiet_NaN());
  Cpu::subtract(awq::make_row_major<const float>(xf.data(), t, k), awq::make_row_major<const float>(xq.data(), t, k),
                awq::make_row_major(d.data(), t, k));
  Cpu::cross_gram(awq::make_row_major<const float>(xq.data(), t, k), awq::make_row_major<const float>(d.data(), t, k),
                  awq::make_row_major(e.data(), k, k));
  // float64: W*ᵀ = H_d⁻¹ (X̃ᵀX Wᵀ + (H_d − H) Wᵀ), H_d = H + λI with H's dead channel set to 1 and
  // λ = damp · mean(diag H) as GPTQ's factor has them: the minimiser of ‖X Wᵀ − X̃ W*ᵀ‖² +
  // λ‖W* − W‖² + ‖W*_dead − W_dead‖² (a dead channel's weights stay as they are).
  MatD hq(k, k), cx(k, k), wd(n, k);
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      double a = 0, b = 0;
      for (index_t r = 0; r < t; ++r) {
        a += static_cast<double>(xq[static_cast<std::size_t>(r * k + i)]) * xq[static_cast<std::size_t>(r * k + j)];
        b += static_cast<double>(xq[static_cast<std::size_t>(r * k + i)]) * xf[static_cast<std::size_t>(r * k + j)];
      }
      hq(i, j) = a;
      cx(i, j) = b;
    }
  for (index_t o = 0; o < n; ++o)
    for (index_t i = 0; i < k; ++i) wd(o, i) = w0[static_cast<std::size_t>(o * k + i)];
  CHECK(hq(9, 9) == 0);
  const MatD raw = hq;
  hq(9, 9) = 1;
  const double lambda = damp * hq.diagonal().mean();
  hq.diagonal().array() += lambda;
  const MatD full = hq.llt().solve(cx * wd.transpose() + (hq - raw) * wd.transpose()).transpose();
  for (index_t o = 0; o < n; ++o) CHECK(full(o, 9) == doctest::Approx(wd(o, 9)).epsilon(1e-12));
  // Float products through (H + λI)⁻¹ lose up to its condition number times float's rounding;
  // trace / λ bounds that number (every eigenvalue is at least λ, the largest at most the trace).
  const double cond = hq.trace() / lambda;
  for (const double beta : {1.0, 0.25}) {
    CAPTURE(beta);
    auto w = w0;
    awq::model::retarget_linear(awq::make_row_major(w.data(), n, k), f.upper(), awq::make_row_major<const float>(e.data(), k, k), beta);
    double num = 0, den = 0, moved = 0;
    for (index_t o = 0; o < n; ++o)
      for (index_t i = 0; i < k; ++i) {
        const double ref = (1 - beta) * wd(o, i) + beta * full(o, i), got = w[static_cast<std::size_t>(o * k + i)];
        num += (got - ref) * (got - ref);
        den += ref * ref;
        moved += (ref - wd(o, i)) * (ref - wd(o, i));
      }
    MESSAGE("beta " << beta << ": |W* - W| / |W| " << std::sqrt(moved / den) << ", error against float64 / the move "
                    << std::sqrt(num / moved) << ", bound on cond(H + lambda I) " << cond);
    CHECK(std::sqrt(moved / den) > 2e-3);                           // the target did move
    CHECK(std::sqrt(num / moved) < cond * std::ldexp(1.0, -24));    // float products against float64
  }
  // beta = 0 leaves w as it is; out-of-range beta and mismatched shapes are errors naming the value.
  auto w = w0;
  awq::model::retarget_linear(awq::make_row_major(w.data(), n, k), f.upper(), awq::make_row_major<const float>(e.data(), k, k), 0.0);
  CHECK(w == w0);
  CHECK_THROWS_WITH_AS(
      awq::model::retarget_linear(awq::make_row_major(w.data(), n, k), f.upper(), awq::make_row_major<const float>(e.data(), k, k), 1.5),
      doctest::Contains("beta 1.5 is out of range"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::model::retarget_linear(awq::make_row_major(w.data(), n, k - 1), f.upper(),
                                                   awq::make_row_major<const float>(e.data(), k, k), 0.5),
                       doctest::Contains("the factor is 48x48 for a weight of 47 columns"), awq::Error);
  CHECK_THROWS_WITH_AS(Cpu::cross_gram(awq::make_row_major<const float>(xq.data(), t, k), awq::make_row_major<const float>(d.data(), t - 1, k),
                                       awq::make_row_major(e.data(), k, k)),
                       doctest::Contains("a has 700 rows but b has 699"), awq::Error);
}

TEST_CASE("gptq: backend::cpu::cross_gram on Eigen (fewer than 64 rows) against float64, and subtract") {
  const index_t t = 40, m = 70, n = 9;
  const auto a = awq_test::cast_vec<float>(awq_test::random_weights(t, m, awq_test::Dist::normal, 71, 1.0));
  const auto b = awq_test::cast_vec<float>(awq_test::random_weights(t, n, awq_test::Dist::student_t3, 72, 1.0));
  std::vector<float> out(static_cast<std::size_t>(m * n), std::numeric_limits<float>::quiet_NaN()), diff(static_cast<std::size_t>(t * n));
  Cpu::cross_gram(awq::make_row_major<const float>(a.data(), t, m), awq::make_row_major<const float>(b.data(), t, n),
                  awq::make_row_major(out.data(), m, n));
  double worst = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double ref = 0, mag = 0;
      for (index_t q = 0; q < t; ++q) {
        const double p = static_cast<double>(a[static_cast<std::size_t>(q * m + i)]) * b[static_cast<std::size_t>(q * n + j)];
        ref += p;
        mag += std::fabs(p);
      }
      const double r = std::fabs(out[static_cast<std::size_t>(i * n + j)] - ref) / (1.01 * t * std::ldexp(1.0, -24) * mag);
      if (!(r <= worst)) worst = r;  // a NaN sticks
    }
  CHECK(worst <= 1.0);
  Cpu::subtract(awq::make_row_major<const float>(a.data(), t, n), awq::make_row_major<const float>(b.data(), t, n), awq::make_row_major(diff.data(), t, n));
  for (index_t i = 0; i < t * n; ++i) CHECK(diff[static_cast<std::size_t>(i)] == a[static_cast<std::size_t>(i)] - b[static_cast<std::size_t>(i)]);
}
