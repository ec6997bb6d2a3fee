// Quantizer against the reference implementations' own outputs (golden data) and against an
// independent float64 implementation of the DESIGN.md formulas.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "awq/awq.hpp"
#include "support.hpp"

using awq::index_t;
using awq::QuantSpec;
using namespace awq_test;

namespace {

// ---- the plain float64 reference (no shared code with the library) ----------------------------
struct RefResult {
  std::vector<double> w_hat, scales, zeros;
  std::vector<int> codes;  // unsigned stored codes (symmetric: q + 2^(b-1))
};

RefResult ref_quantize(const std::vector<double>& w, long rows, long cols, int bits, int group, bool zp,
                       const std::vector<double>* clip = nullptr) {
  const long g = group < 0 ? cols : group;
  const long ng = cols / g;
  RefResult out;
  out.w_hat.resize(w.size());
  out.codes.resize(w.size());
  out.scales.resize(static_cast<std::size_t>(rows * ng));
  out.zeros.resize(static_cast<std::size_t>(rows * ng));
  for (long r = 0; r < rows; ++r) {
    for (long j = 0; j < ng; ++j) {
      std::vector<double> x(static_cast<std::size_t>(g));
      for (long i = 0; i < g; ++i) {
        double v = w[static_cast<std::size_t>(r * cols + j * g + i)];
        if (clip) {
          const double c = (*clip)[static_cast<std::size_t>(r * ng + j)];
          if (v < -c) v = -c;
          if (v > c) v = c;
        }
        x[static_cast<std::size_t>(i)] = v;
      }
      double lo = x[0], hi = x[0];
      for (double v : x) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      double scale, zero;
      int qmin, qmax;
      if (zp) {
        qmin = 0;
        qmax = (1 << bits) - 1;
        double range = hi - lo;
        if (range < static_cast<double>(1e-5f)) range = static_cast<double>(1e-5f);
        scale = range / qmax;
        zero = -std::nearbyint(lo / scale);
        if (zero < qmin) zero = qmin;
        if (zero > qmax) zero = qmax;
      } else {
        qmin = -(1 << (bits - 1));
        qmax = (1 << (bits - 1)) - 1;
        double amax = std::fabs(lo) > std::fabs(hi) ? std::fabs(lo) : std::fabs(hi);
        if (amax < static_cast<double>(1e-5f)) amax = static_cast<double>(1e-5f);
        scale = amax / qmax;
        zero = 0;
      }
      out.scales[static_cast<std::size_t>(r * ng + j)] = scale;
      out.zeros[static_cast<std::size_t>(r * ng + j)] = zero;
      for (long i = 0; i < g; ++i) {
        double q = std::nearbyint(x[static_cast<std::size_t>(i)] / scale) + zero;
        if (q < qmin) q = qmin;
        if (q > qmax) q = qmax;
        const std::size_t idx = static_cast<std::size_t>(r * cols + j * g + i);
        out.w_hat[idx] = (q - zero) * scale;
        out.codes[idx] = static_cast<int>(q) + (zp ? 0 : (1 << (bits - 1)));
      }
    }
  }
  return out;
}

std::vector<QuantSpec> all_specs() {
  std::vector<QuantSpec> specs;
  for (int b = 2; b <= 8; ++b)
    for (int g : {32, 64, 128, 256, awq::kPerChannel})
      for (bool zp : {true, false}) specs.push_back(QuantSpec{b, g, zp});
  return specs;
}

template <class T>
awq::MatrixView<T> rm(std::vector<T>& v, long rows, long cols) {
  return awq::make_row_major(v.data(), rows, cols);
}
template <class T>
awq::MatrixView<const T> rm(const std::vector<T>& v, long rows, long cols) {
  return awq::make_row_major(v.data(), rows, cols);
}

}  // namespace

TEST_CASE("pseudo_quantize matches llm-awq bit for bit (asymmetric, bits 3/4 x group 32/64/128)") {
  const std::string c = "pseudo_quantize_64x512";
  const Tensor w = golden_tensor(c, "w");
  const auto meta = golden_meta(c);
  int checked = 0;
  for (const auto& cfg : meta.at("results").at("configs")) {
    const QuantSpec spec{cfg.at("bits").get<int>(), cfg.at("group_size").get<int>(), true};
    CAPTURE(spec.name());
    const Tensor w_hat = golden_tensor(c, cfg.at("w_hat").get<std::string>());
    const Tensor scales = golden_tensor(c, cfg.at("scales").get<std::string>());
    const Tensor zeros = golden_tensor(c, cfg.at("zeros").get<std::string>());
    const long ng = w.cols() / spec.group_size;
    std::vector<float> out(w.data.size(), poison()), s(static_cast<std::size_t>(w.rows() * ng), poison()),
        z(s.size(), poison());
    awq::pseudo_quantize(spec, rm(w.data, w.rows(), w.cols()), rm(out, w.rows(), w.cols()),
                         {{}, rm(s, w.rows(), ng), rm(z, w.rows(), ng)});
    long bad = 0;
    for (std::size_t i = 0; i < out.size(); ++i) bad += !(out[i] == w_hat.data[i]);
    CHECK(bad == 0);
    for (std::size_t i = 0; i < s.size(); ++i) {
      bad += !(s[i] == scales.data[i]);
      bad += !(z[i] == zeros.data[i]);
    }
    CHECK(bad == 0);
    ++checked;
  }
  CHECK(checked == 6);
}

TEST_CASE("pseudo_quantize matches AutoAWQ bit for bit (symmetric, 4-bit g128)") {
  const std::string c = "pseudo_quantize_sym_64x512";
  const Tensor w = golden_tensor(c, "w");
  const Tensor w_hat = golden_tensor(c, "w_hat_b4_g128");
  const Tensor scales = golden_tensor(c, "scales_b4_g128");
  const long ng = w.cols() / 128;
  std::vector<float> out(w.data.size(), poison()), s(static_cast<std::size_t>(w.rows() * ng), poison());
  awq::pseudo_quantize(QuantSpec{4, 128, false}, rm(w.data, w.rows(), w.cols()), rm(out, w.rows(), w.cols()),
                       {{}, rm(s, w.rows(), ng), {}});
  long bad = 0;
  for (std::size_t i = 0; i < out.size(); ++i) bad += !(out[i] == w_hat.data[i]);
  for (std::size_t i = 0; i < s.size(); ++i) bad += !(s[i] == scales.data[i]);
  CHECK(bad == 0);
}

TEST_CASE("double instantiation equals the float64 reference exactly, every config and distribution") {
  const long rows = 12, cols = 512;
  std::uint64_t seed = 100;
  for (const QuantSpec& spec : all_specs()) {
    for (Dist d : {Dist::normal, Dist::student_t3, Dist::outliers}) {
      CAPTURE(spec.name());
      CAPTURE(seed);
      const auto w = random_weights(rows, cols, d, seed++);
      const RefResult ref = ref_quantize(w, rows, cols, spec.bits, spec.group_size, spec.zero_point);
      const long ng = cols / spec.group_for(cols);
      std::vector<double> out(w.size(), std::nan("")), s(static_cast<std::size_t>(rows * ng), std::nan("")),
          z(s.size(), std::nan(""));
      awq::pseudo_quantize(spec, rm(w, rows, cols), rm(out, rows, cols), {{}, rm(s, rows, ng), rm(z, rows, ng)});
      std::vector<std::uint8_t> codes(w.size(), 0xEE);
      std::vector<double> s2(s.size()), z2(s.size()), deq(w.size(), std::nan(""));
      awq::quantize(spec, rm(w, rows, cols), rm(codes, rows, cols), {{}, rm(s2, rows, ng), rm(z2, rows, ng)});
      awq::dequantize<double>(spec.bits, rm(codes, rows, cols), rm(s2, rows, ng), rm(z2, rows, ng), rm(deq, rows, cols));
      long bad = 0;
      for (std::size_t i = 0; i < w.size(); ++i) {
        bad += !(out[i] == ref.w_hat[i]);
        bad += !(deq[i] == ref.w_hat[i]);
        bad += codes[i] != ref.codes[i];
      }
      for (std::size_t i = 0; i < s.size(); ++i) bad += !(s[i] == ref.scales[i]) + !(z[i] == ref.zeros[i]);
      REQUIRE(bad == 0);
    }
  }
}

TEST_CASE("float instantiation against the float64 reference: error within half a step, codes agree off ties") {
  const long rows = 16, cols = 512;
  std::uint64_t seed = 5000;
  for (const QuantSpec& spec : all_specs()) {
    for (Dist d : {Dist::normal, Dist::student_t3, Dist::outliers}) {
      CAPTURE(spec.name());
      CAPTURE(seed);
      const auto wd = random_weights(rows, cols, d, seed++);
      const auto wf = cast_vec<float>(wd);
      const auto w = cast_vec<double>(std::vector<double>(wf.begin(), wf.end()));
      const RefResult ref = ref_quantize(w, rows, cols, spec.bits, spec.group_size, spec.zero_point);
      const long g = spec.group_for(cols), ng = cols / g;
      std::vector<float> out(w.size(), poison()), s(static_cast<std::size_t>(rows * ng), poison()),
          z(s.size(), poison());
      awq::pseudo_quantize(spec, rm(wf, rows, cols), rm(out, rows, cols), {{}, rm(s, rows, ng), rm(z, rows, ng)});
      long code_mismatch = 0;
      for (long r = 0; r < rows; ++r) {
        for (long j = 0; j < ng; ++j) {
          const std::size_t gi = static_cast<std::size_t>(r * ng + j);
          REQUIRE(std::fabs(s[gi] - ref.scales[gi]) <= 1e-6 * ref.scales[gi]);
          bool zero_tie = false;
          if (z[gi] != ref.zeros[gi]) {
            // The zero point itself sat on a rounding tie: -min/scale is a half-integer.
            double lo = w[static_cast<std::size_t>(r * cols + j * g)];
            for (long i = 0; i < g; ++i) lo = std::min(lo, w[static_cast<std::size_t>(r * cols + j * g + i)]);
            const double t = -lo / ref.scales[gi];
            REQUIRE(std::fabs(std::fabs(t - std::floor(t)) - 0.5) < 1e-4);
            REQUIRE(std::fabs(z[gi] - ref.zeros[gi]) == 1.0);
            zero_tie = true;
            ++code_mismatch;
          }
          const double qmin = spec.zero_point ? 0 : -(1 << (spec.bits - 1));
          const double qmax = spec.zero_point ? (1 << spec.bits) - 1 : (1 << (spec.bits - 1)) - 1;
          for (long i = 0; i < g; ++i) {
            const std::size_t k = static_cast<std::size_t>(r * cols + j * g + i);
            const double scale = ref.scales[gi], zero = ref.zeros[gi];
            const double lo = (qmin - zero) * scale, hi = (qmax - zero) * scale;
            if (w[k] >= lo && w[k] <= hi) REQUIRE(std::fabs(out[k] - w[k]) <= 0.5 * scale * (1 + 1e-5));
            if (!zero_tie && std::fabs(out[k] - ref.w_hat[k]) > 1e-3 * scale) {  // a code apart
              // Only where w/scale sits on a rounding tie in one precision and not the other.
              const double t = w[k] / scale;
              CHECK(std::fabs(std::fabs(t - std::floor(t)) - 0.5) < 1e-4);
              ++code_mismatch;
            }
          }
        }
      }
      CHECK(code_mismatch <= 2);
    }
  }
}

TEST_CASE("hand-computed groups") {
  SUBCASE("2-bit asymmetric, round half to even") {
    // min -1, max 2: scale = 3/3 = 1, zero = -round(-1) = 1.
    std::vector<float> w(32, 0.0f);
    w[0] = -1.0f;
    w[1] = 2.0f;
    w[2] = 0.5f;   // 0.5 -> 0 (even) -> code 1 -> 0
    w[3] = 1.5f;   // 1.5 -> 2 (even) -> code 3 -> 2
    w[4] = -0.5f;  // -0.5 -> -0 -> code 1 -> 0
    std::vector<float> out(32, poison());
    std::vector<float> s(1), z(1);
    awq::pseudo_quantize<awq::QuantConfig<2, 32, true>>(rm(w, 1, 32), rm(out, 1, 32), {{}, rm(s, 1, 1), rm(z, 1, 1)});
    CHECK(s[0] == 1.0f);
    CHECK(z[0] == 1.0f);
    CHECK(out[0] == -1.0f);
    CHECK(out[1] == 2.0f);
    CHECK(out[2] == 0.0f);
    CHECK(out[3] == 2.0f);
    CHECK(out[4] == 0.0f);
    CHECK(out[5] == 0.0f);
  }
  SUBCASE("4-bit symmetric") {
    std::vector<float> w(32, 0.25f);
    w[0] = -7.0f;  // max |w| = 7 -> scale 1
    w[1] = 3.5f;   // -> 4
    w[2] = 2.5f;   // -> 2
    std::vector<float> out(32, poison());
    std::vector<std::uint8_t> codes(32, 0xEE);
    std::vector<float> s(1), z(1);
    awq::pseudo_quantize<awq::QuantConfig<4, 32, false>>(rm(w, 1, 32), rm(out, 1, 32));
    awq::quantize<awq::QuantConfig<4, 32, false>>(rm(w, 1, 32), rm(codes, 1, 32), {{}, rm(s, 1, 1), rm(z, 1, 1)});
    CHECK(s[0] == 1.0f);
    CHECK(z[0] == 8.0f);
    CHECK(codes[0] == 1);
    CHECK(codes[1] == 12);
    CHECK(codes[2] == 10);
    CHECK(codes[3] == 8);
    CHECK(out[0] == -7.0f);
    CHECK(out[1] == 4.0f);
    CHECK(out[2] == 2.0f);
    CHECK(out[3] == 0.0f);
  }
  SUBCASE("constant group hits the 1e-5 floor") {
    std::vector<float> w(64, 0.01f), out(64, poison()), s(1), z(1);
    awq::pseudo_quantize<awq::QuantConfig<4, 64, true>>(rm(w, 1, 64), rm(out, 1, 64), {{}, rm(s, 1, 1), rm(z, 1, 1)});
    CHECK(s[0] == 1e-5f / 15.0f);
    CHECK(z[0] == 0.0f);  // -round(0.01 / scale) is far below 0: clamped
    CHECK(out[0] == 15.0f * (1e-5f / 15.0f));
  }
  SUBCASE("clip bound clamps before the range is taken") {
    std::vector<float> w(32, 0.0f);
    w[0] = -4.0f;
    w[1] = 3.0f;
    std::vector<float> clip{1.5f}, s(1), z(1), out(32, poison());
    awq::pseudo_quantize<awq::QuantConfig<2, 32, true>>(rm(w, 1, 32), rm(out, 1, 32),
                                                        {rm(clip, 1, 1), rm(s, 1, 1), rm(z, 1, 1)});
    CHECK(s[0] == 1.0f);  // (1.5 - (-1.5)) / 3
    CHECK(z[0] == 2.0f);      // -round(-1.5) = 2 (half to even)
    CHECK(out[0] == -2.0f);   // round(-1.5) = -2, + 2 = code 0 -> (0 - 2) * 1
    CHECK(out[1] == 1.0f);    // round(1.5) = 2, + 2 = 4, clamped to 3 -> 1
    CHECK(out[2] == 0.0f);
  }
}

TEST_CASE("per-channel groups equal one group of the full row") {
  const long rows = 8, cols = 256;
  const auto w = cast_vec<float>(random_weights(rows, cols, Dist::outliers, 77));
  std::vector<float> a(w.size(), poison()), b(w.size(), poison());
  awq::pseudo_quantize<awq::QuantConfig<4, awq::kPerChannel, true>>(rm(w, rows, cols), rm(a, rows, cols));
  awq::pseudo_quantize<awq::QuantConfig<4, 256, true>>(rm(w, rows, cols), rm(b, rows, cols));
  CHECK(a == b);
}

TEST_CASE("half and bfloat16 inputs compute in float") {
  const long rows = 8, cols = 128;
  const auto wd = random_weights(rows, cols, Dist::student_t3, 91);
  const auto wh = cast_vec<Eigen::half>(wd);
  const auto wb = cast_vec<Eigen::bfloat16>(wd);
  std::vector<float> wh_f(wh.size()), wb_f(wb.size());
  for (std::size_t i = 0; i < wh.size(); ++i) {
    wh_f[i] = static_cast<float>(wh[i]);
    wb_f[i] = static_cast<float>(wb[i]);
  }
  std::vector<Eigen::half> oh(wh.size());
  std::vector<Eigen::bfloat16> ob(wb.size());
  std::vector<float> rh(wh.size()), rb(wb.size());
  const QuantSpec spec{4, 64, true};
  awq::pseudo_quantize(spec, rm(wh, rows, cols), rm(oh, rows, cols));
  awq::pseudo_quantize(spec, rm(wb, rows, cols), rm(ob, rows, cols));
  awq::pseudo_quantize(spec, rm(wh_f, rows, cols), rm(rh, rows, cols));
  awq::pseudo_quantize(spec, rm(wb_f, rows, cols), rm(rb, rows, cols));
  for (std::size_t i = 0; i < oh.size(); ++i) {
    REQUIRE(static_cast<float>(oh[i]) == static_cast<float>(Eigen::half(rh[i])));
    REQUIRE(static_cast<float>(ob[i]) == static_cast<float>(Eigen::bfloat16(rb[i])));
  }
}

TEST_CASE("dispatch hands the spec's config and dispatch_format its code format, and both reject what is not built in") {
  for (const QuantSpec& spec : all_specs()) {
    CAPTURE(spec.name());
    int calls = 0;
    awq::dispatch(spec, [&](auto cfg) {
      using Cfg = decltype(cfg);
      static_assert(std::is_base_of_v<awq::format_of<Cfg>, Cfg>, "a QuantConfig is its CodeFormat");
      CHECK(awq::spec_of<Cfg>() == spec);
      ++calls;
    });
    awq::dispatch_format(spec, [&](auto fmt) {
      using Fmt = decltype(fmt);
      CHECK(Fmt::bits == spec.bits);
      CHECK(Fmt::zero_point == spec.zero_point);
      CHECK(Fmt::max_code == (1 << spec.bits) - 1);
      ++calls;
    });
    CHECK(calls == 2);
  }
  const auto never = [](auto) { FAIL("called for a spec outside the built-in set"); };
  CHECK_THROWS_WITH_AS(awq::dispatch_format(QuantSpec{9, 128, true}, never), doctest::Contains("bits 9 is out of range"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::dispatch_format(QuantSpec{4, 100, true}, never), doctest::Contains("group_size 100"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::dispatch(QuantSpec{1, 128, false}, never), doctest::Contains("bits 1 is out of range"), awq::Error);
}
