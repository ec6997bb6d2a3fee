// The activation-aware search on the CPU backend: against the reference's own outputs (golden
// data), against an independent plain float64 implementation of the DESIGN.md pseudo-code,
// and its properties (folding preserves the block output; the chosen loss never exceeds RTN's).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "awq/awq.hpp"
#include "support.hpp"

using awq::index_t;
using awq::QuantSpec;
using namespace awq_test;

namespace {

template <class S>
awq::MatrixView<const S> cview(const std::vector<S>& v, long r, long c) {
  return awq::make_row_major(v.data(), r, c);
}


// ---- plain float64 implementation of DESIGN.md, sharing no code with the library -------------
double q_group_value(double v, double lo, double hi, int bits, bool zp) {
  if (zp) {
    const double qmax = (1 << bits) - 1;
    double range = hi - lo;
    if (range < static_cast<double>(1e-5f)) range = static_cast<double>(1e-5f);
    const double scale = range / qmax;
    double zero = -std::nearbyint(lo / scale);
    zero = std::min(std::max(zero, 0.0), qmax);
    const double q = std::min(std::max(std::nearbyint(v / scale) + zero, 0.0), qmax);
    return (q - zero) * scale;
  }
  const double qmax = (1 << (bits - 1)) - 1, qmin = -(1 << (bits - 1));
  double amax = std::max(std::fabs(lo), std::fabs(hi));
  if (amax < static_cast<double>(1e-5f)) amax = static_cast<double>(1e-5f);
  const double scale = amax / qmax;
  return std::min(std::max(std::nearbyint(v / scale), qmin), qmax) * scale;
}

// W (rows x k) -> Q(W) with groups of g along k, optional clamp bound per (row, group).
std::vector<double> q_matrix(const std::vector<double>& w, long rows, long k, long g, int bits, bool zp,
                             const std::vector<double>* clip = nullptr) {
  std::vector<double> out(w.size());
  for (long r = 0; r < rows; ++r)
    for (long j = 0; j < k / g; ++j) {
      const double c = clip ? (*clip)[static_cast<std::size_t>(r * (k / g) + j)] : 0;
      auto val = [&](long i) {
        double v = w[static_cast<std::size_t>(r * k + j * g + i)];
        if (clip) v = std::min(std::max(v, -c), c);
        return v;
      };
      double lo = val(0), hi = val(0);
      for (long i = 0; i < g; ++i) lo = std::min(lo, val(i)), hi = std::max(hi, val(i));
      for (long i = 0; i < g; ++i) out[static_cast<std::size_t>(r * k + j * g + i)] = q_group_value(val(i), lo, hi, bits, zp);
    }
  return out;
}

// y = x W^T for several stacked linears (the "concatenated linears" block), naive loops.
std::vector<double> naive_block(const std::vector<double>& x, long t, long k, const std::vector<std::vector<double>>& ws,
                                const std::vector<long>& outs) {
  long n = 0;
  for (long o : outs) n += o;
  std::vector<double> y(static_cast<std::size_t>(t * n), 0.0);
  for (long tt = 0; tt < t; ++tt) {
    long off = 0;
    for (std::size_t l = 0; l < ws.size(); ++l) {
      for (long o = 0; o < outs[l]; ++o) {
        double acc = 0;
        for (long c = 0; c < k; ++c) acc += x[static_cast<std::size_t>(tt * k + c)] * ws[l][static_cast<std::size_t>(o * k + c)];
        y[static_cast<std::size_t>(tt * n + off + o)] = acc;
      }
      off += outs[l];
    }
  }
  return y;
}

struct NaiveScaleResult {
  int best;
  std::vector<double> scales, losses;
};

// alphas: the points to try (empty: the reference's grid i / 20, i < 20).
NaiveScaleResult naive_scale_search(const std::vector<double>& x, long t, long k, const std::vector<std::vector<double>>& ws,
                                    const std::vector<long>& outs, int bits, long g, bool zp, bool duo,
                                    std::vector<double> alphas = {}) {
  if (alphas.empty())
    for (int i = 0; i < 20; ++i) alphas.push_back(i / 20.0);
  std::vector<double> x_mean(static_cast<std::size_t>(k), 0.0), w_mean(static_cast<std::size_t>(k), 0.0);
  for (long tt = 0; tt < t; ++tt)
    for (long c = 0; c < k; ++c) x_mean[static_cast<std::size_t>(c)] += std::fabs(x[static_cast<std::size_t>(tt * k + c)]) / t;
  long total_rows = 0;
  for (std::size_t l = 0; l < ws.size(); ++l) {
    for (long r = 0; r < outs[l]; ++r)
      for (long j = 0; j < k / g; ++j) {
        double m = 0;
        for (long i = 0; i < g; ++i) m = std::max(m, std::fabs(ws[l][static_cast<std::size_t>(r * k + j * g + i)]));
        for (long i = 0; i < g; ++i)
          w_mean[static_cast<std::size_t>(j * g + i)] += std::fabs(ws[l][static_cast<std::size_t>(r * k + j * g + i)]) / (m + 1e-6);
      }
    total_rows += outs[l];
  }
  for (auto& v : w_mean) v /= static_cast<double>(total_rows);
  const auto org = naive_block(x, t, k, ws, outs);
  NaiveScaleResult res{-1, {}, {}};
  double best = 1e300;
  for (int i = 0; i < static_cast<int>(alphas.size()); ++i) {
    const double a = alphas[static_cast<std::size_t>(i)];
    std::vector<double> s(static_cast<std::size_t>(k));
    for (long c = 0; c < k; ++c) {
      double v = std::pow(x_mean[static_cast<std::size_t>(c)], a);
      if (duo) v = v / (std::pow(w_mean[static_cast<std::size_t>(c)], 1 - a) + 1e-4);
      s[static_cast<std::size_t>(c)] = std::max(v, 1e-4);
    }
    const double norm = std::sqrt(*std::max_element(s.begin(), s.end()) * *std::min_element(s.begin(), s.end()));
    for (auto& v : s) v /= norm;
    std::vector<std::vector<double>> wq;
    for (std::size_t l = 0; l < ws.size(); ++l) {
      std::vector<double> sw(ws[l].size());
      for (long r = 0; r < outs[l]; ++r)
        for (long c = 0; c < k; ++c) sw[static_cast<std::size_t>(r * k + c)] = ws[l][static_cast<std::size_t>(r * k + c)] * s[static_cast<std::size_t>(c)];
      auto q = q_matrix(sw, outs[l], k, g, bits, zp);
      for (long r = 0; r < outs[l]; ++r)
        for (long c = 0; c < k; ++c) q[static_cast<std::size_t>(r * k + c)] /= s[static_cast<std::size_t>(c)];
      wq.push_back(q);
    }
    const auto out = naive_block(x, t, k, wq, outs);
    double loss = 0;
    for (std::size_t e = 0; e < out.size(); ++e) loss += (out[e] - org[e]) * (out[e] - org[e]);
    loss /= static_cast<double>(out.size());
    res.losses.push_back(loss);
    if (loss < best) best = loss, res.best = i, res.scales = s;
  }
  return res;
}

std::vector<double> naive_clip(const std::vector<double>& w, long rows, long k, const std::vector<double>& x, long t, long g,
                               int bits, bool zp) {
  const long ng = k / g;
  std::vector<double> best_val(static_cast<std::size_t>(rows * ng));
  const long stride = std::max(1L, t / 512);
  for (long r = 0; r < rows; ++r)
    for (long j = 0; j < ng; ++j) {
      double omax = 0;
      for (long i = 0; i < g; ++i) omax = std::max(omax, std::fabs(w[static_cast<std::size_t>(r * k + j * g + i)]));
      double best = 1e300;
      for (int s = 0; s < 10; ++s) {
        const double mv = omax * (1 - s / 20.0);
        std::vector<double> grp(static_cast<std::size_t>(g));
        for (long i = 0; i < g; ++i) grp[static_cast<std::size_t>(i)] = std::min(std::max(w[static_cast<std::size_t>(r * k + j * g + i)], -mv), mv);
        const auto q = q_matrix(grp, 1, g, g, bits, zp);
        double err = 0;
        long n = 0;
        for (long tt = 0; tt < t; tt += stride, ++n) {
          double a = 0, b = 0;
          for (long i = 0; i < g; ++i) {
            const double xv = x[static_cast<std::size_t>(tt * k + j * g + i)];
            a += xv * q[static_cast<std::size_t>(i)];
            b += xv * w[static_cast<std::size_t>(r * k + j * g + i)];
          }
          err += (a - b) * (a - b);
        }
        err /= static_cast<double>(n);
        if (err < best) best = err, best_val[static_cast<std::size_t>(r * ng + j)] = mv;
      }
    }
  return best_val;
}

std::vector<double> activations(long t, long k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  std::vector<double> x(static_cast<std::size_t>(t * k));
  for (auto& v : x) v = n(rng);
  for (long c : {3L, 17L, k / 2 + 1}) // salient channels
    for (long tt = 0; tt < t; ++tt) x[static_cast<std::size_t>(tt * k + c)] *= 40.0;
  return x;
}

}  // namespace

TEST_CASE("scale search reproduces llm-awq and AutoAWQ duo scaling on the golden single linear") {
  check_golden_scale_search([](const Tensor& x, const Tensor& w, const awq::ScaleSearchOptions& opt) {
    std::vector<awq::Linear<float>> lin{{cview(w.data, w.rows(), w.cols()), nullptr}};
    return awq::search_scales(cview(x.data, x.rows(), x.cols()), lin, awq::LinearsBlock<float>(lin), opt);
  });
}

TEST_CASE("clip search reproduces llm-awq on the golden linear (near-ties accepted only where the margin says so)") {
  const std::string c = "clip_search_linear_256x512_t1024";
  const Tensor x = golden_tensor(c, "x"), w = golden_tensor(c, "w");
  for (const auto& bg : {std::pair<int, int>{4, 128}, {3, 64}}) {
    const int bits = bg.first, group = bg.second;  // plain locals: CAPTURE's lambda takes them (clang 14)
    CAPTURE(bits);
    const std::string tag = "_b" + std::to_string(bits) + "_g" + std::to_string(group);
    const Tensor ref = golden_tensor(c, "max_val" + tag), margin = golden_tensor(c, "clip_rel_margin" + tag);
    awq::ClipSearchOptions opt;
    opt.quant = QuantSpec{bits, group, true};
    const auto res = awq::search_clip(cview(w.data, w.rows(), w.cols()), cview(x.data, x.rows(), x.cols()), opt);
    REQUIRE(res.max_val.size() == ref.data.size());
    long exact = 0, tie_flips = 0;
    const long ng = w.cols() / group;
    for (std::size_t i = 0; i < ref.data.size(); ++i) {
      if (res.max_val[i] == ref.data[i]) {
        ++exact;
        continue;
      }
      CAPTURE(i);
      REQUIRE(margin.data[i] < 1e-4);  // a flip only where the reference's own margin is float noise
      // and then to another point of the same grid
      const long r = static_cast<long>(i) / ng, j = static_cast<long>(i) % ng;
      float omax = 0;
      for (long k = 0; k < group; ++k) omax = std::max(omax, std::fabs(w.data[static_cast<std::size_t>(r * w.cols() + j * group + k)]));
      bool on_grid = false;
      for (int s = 0; s < 10; ++s) on_grid = on_grid || res.max_val[i] == omax * static_cast<float>(1.0 - s / 20.0);
      CHECK(on_grid);
      ++tie_flips;
    }
    MESSAGE("clip " << tag << ": " << exact << " exact, " << tie_flips << " near-tie flips");
    CHECK(tie_flips <= 4);
  }
}

TEST_CASE("scale search equals the plain float64 pseudo-code (duo on/off, zero point on/off, bits 3/4, groups 32/64/128)") {
  const long t = 96, k = 128;
  std::uint64_t seed = 31;
  for (int bits : {3, 4})
    for (long g : {32L, 64L, 128L})
      for (bool zp : {true, false})
        for (bool duo : {false, true}) {
          CAPTURE(bits);
          CAPTURE(g);
          CAPTURE(zp);
          CAPTURE(duo);
          const auto x = activations(t, k, seed++);
          const bool concat = (seed % 2) == 0;
          std::vector<long> outs = concat ? std::vector<long>{48, 32} : std::vector<long>{64};
          std::vector<std::vector<double>> ws;
          for (std::size_t l = 0; l < outs.size(); ++l)
            ws.push_back(random_weights(outs[l], k, l == 0 ? Dist::outliers : Dist::student_t3, seed * 7 + l));
          const auto ref = naive_scale_search(x, t, k, ws, outs, bits, g, zp, duo);
          std::vector<awq::Linear<double>> lin;
          for (std::size_t l = 0; l < outs.size(); ++l) lin.push_back({cview(ws[l], outs[l], k), nullptr});
          awq::ScaleSearchOptions opt;
          opt.quant = QuantSpec{bits, static_cast<int>(g), zp};
          opt.duo_scaling = duo;
          const auto res = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<double>(lin), opt);
          CHECK(res.best_index == ref.best);
          double worst = 0;
          for (long c = 0; c < k; ++c) worst = std::max(worst, rel(res.scales[static_cast<std::size_t>(c)], ref.scales[static_cast<std::size_t>(c)]));
          CHECK(worst < 1e-6);
          for (int i = 0; i < 20; ++i) CHECK(rel(res.losses[static_cast<std::size_t>(i)], ref.losses[static_cast<std::size_t>(i)]) < 1e-6);
          // Property: the chosen loss never exceeds plain RTN (alpha = 0).
          CHECK(res.losses[static_cast<std::size_t>(res.best_index)] <= res.losses[0]);
        }
}

TEST_CASE("scale search refinement: the reference's grid unchanged, then local points equal to the float64 pseudo-code") {
  const long t = 96, k = 128;
  std::uint64_t seed = 71;
  for (int bits : {3, 4})
    for (bool duo : {false, true}) {
      CAPTURE(bits);
      CAPTURE(duo);
      const auto x = activations(t, k, seed++);
      const std::vector<long> outs{48, 32};
      const std::vector<std::vector<double>> ws{random_weights(48, k, Dist::outliers, seed * 7), random_weights(32, k, Dist::student_t3, seed * 7 + 1)};
      std::vector<awq::Linear<double>> lin;
      for (std::size_t l = 0; l < outs.size(); ++l) lin.push_back({cview(ws[l], outs[l], k), nullptr});
      awq::ScaleSearchOptions opt;
      opt.quant = QuantSpec{bits, 64, true};
      opt.duo_scaling = duo;
      const auto grid = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<double>(lin), opt);
      opt.refine_steps = 3;
      long events = 0;
      opt.progress = [&](const awq::Progress& p) { events += p.done <= p.total; };
      const auto fine = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<double>(lin), opt);
      REQUIRE(fine.losses.size() == 26);
      CHECK(events == 26);
      CHECK(std::equal(grid.losses.begin(), grid.losses.end(), fine.losses.begin()));  // bit for bit
      CHECK(std::equal(grid.alphas.begin(), grid.alphas.end(), fine.alphas.begin()));
      // Each local step is centred on the best point so far, half the previous step away.
      double centre = grid.best_alpha, h = 0.025;
      for (std::size_t i = 20; i < 26; i += 2, h /= 2) {
        CHECK(fine.alphas[i] == doctest::Approx(std::max(0.0, centre - h)).epsilon(1e-12));
        CHECK(fine.alphas[i + 1] == doctest::Approx(centre + h).epsilon(1e-12));
        const auto lo = std::min_element(fine.losses.begin(), fine.losses.begin() + static_cast<long>(i) + 2);
        centre = fine.alphas[static_cast<std::size_t>(lo - fine.losses.begin())];
      }
      const double best = *std::min_element(fine.losses.begin(), fine.losses.end());
      CHECK(fine.losses[static_cast<std::size_t>(fine.best_index)] == best);
      CHECK(best <= grid.losses[static_cast<std::size_t>(grid.best_index)]);
      CHECK(fine.best_alpha == fine.alphas[static_cast<std::size_t>(fine.best_index)]);
      const auto ref = naive_scale_search(x, t, k, ws, outs, bits, 64, true, duo, fine.alphas);
      for (std::size_t i = 0; i < fine.losses.size(); ++i) CHECK(rel(fine.losses[i], ref.losses[i]) < 1e-6);
      double worst = 0;
      for (long c = 0; c < k; ++c)
        worst = std::max(worst, rel(fine.scales[static_cast<std::size_t>(c)], ref.scales[static_cast<std::size_t>(c)]));
      CHECK(worst < 1e-6);
    }
  awq::ScaleSearchOptions bad;
  bad.refine_steps = -1;
  const auto x = activations(8, 128, 1);
  const auto w = random_weights(16, 128, Dist::normal, 2);
  std::vector<awq::Linear<double>> lin{{cview(w, 16, 128), nullptr}};
  CHECK_THROWS_WITH_AS(awq::search_scales(cview(x, 8, 128), lin, awq::LinearsBlock<double>(lin), bad),
                       doctest::Contains("refine_steps -1 out of range"), awq::Error);
}

TEST_CASE("clip search equals the plain float64 pseudo-code") {
  const long rows = 48, k = 128;
  std::uint64_t seed = 71;
  for (int bits : {3, 4})
    for (long g : {32L, 64L, 128L})
      for (bool zp : {true, false}) {
        CAPTURE(bits);
        CAPTURE(g);
        CAPTURE(zp);
        const long t = 600;  // stride 1, all tokens
        const auto x = activations(t, k, seed++);
        const auto w = random_weights(rows, k, Dist::outliers, seed * 13);
        const auto ref = naive_clip(w, rows, k, x, t, g, bits, zp);
        awq::ClipSearchOptions opt;
        opt.quant = QuantSpec{bits, static_cast<int>(g), zp};
        opt.row_batch = 20;  // uneven batches
        const auto res = awq::search_clip(cview(w, rows, k), cview(x, t, k), opt);
        long differ = 0;
        for (std::size_t i = 0; i < ref.size(); ++i) differ += rel(res.max_val[i], ref[i]) > 1e-12;
        CHECK(differ == 0);
      }
}

TEST_CASE("clip choice: the first strict minimum, NaN and infinity never win, overflowing products are an error") {
  const double inf = HUGE_VAL, nan = std::nan("");
  const std::vector<double> e{3.0, 1.0, 1.0, nan, 0.5, 0.5, inf};
  CHECK(awq::detail::first_strict_min(e.data(), 1, 7) == 4);  // ties keep the smaller shrink
  CHECK(awq::detail::first_strict_min(e.data(), 1, 3) == 1);
  CHECK(awq::detail::first_strict_min(e.data() + 3, 1, 1) == -1);  // only NaN
  CHECK(awq::detail::first_strict_min(e.data() + 6, 1, 1) == -1);  // only +inf
  CHECK(awq::detail::first_strict_min(e.data(), 2, 4) == 2);       // 3, 1, 0.5, inf with stride 2
  // Finite inputs whose products overflow float: every candidate's error is inf or NaN.
  const long rows = 4, k = 64, t = 8;
  std::vector<float> w(static_cast<std::size_t>(rows * k)), x(static_cast<std::size_t>(t * k));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = (i % 3 == 0 ? -1.0f : 1.0f) * 1e30f * (1.0f + static_cast<float>(i % 7));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = 1e30f * (1.0f + static_cast<float>(i % 5));
  CHECK_THROWS_WITH_AS(awq::search_clip(cview(w, rows, k), cview(x, t, k), awq::ClipSearchOptions{QuantSpec{4, 64, true}}),
                       doctest::Contains("no finite clip error for row 0, group 0"), awq::Error);
}

TEST_CASE("folding scales leaves the full-precision block output unchanged") {
  const long t = 64, k = 128, n = 96, m = 80;
  const auto x = activations(t, k, 5);
  const auto w1 = random_weights(n, k, Dist::student_t3, 6);   // e.g. v_proj  [n, k]
  const auto w2 = random_weights(m, n, Dist::outliers, 7);     // e.g. o_proj  [m, n]
  std::vector<double> gamma(static_cast<std::size_t>(k)), beta(static_cast<std::size_t>(k)), b1(static_cast<std::size_t>(n));
  std::mt19937_64 rng(8);
  std::normal_distribution<double> nd(0, 1);
  for (auto& v : gamma) v = 1 + 0.1 * nd(rng);
  for (auto& v : beta) v = 0.1 * nd(rng);
  for (auto& v : b1) v = 0.1 * nd(rng);
  // block: LayerNorm-affine(x) = x * gamma + beta (normalisation itself is scale-free), then w1 (+b1), then w2.
  auto forward = [&](const std::vector<double>& g_, const std::vector<double>& be, const std::vector<double>& a,
                     const std::vector<double>& bb, const std::vector<double>& c) {
    std::vector<double> h(static_cast<std::size_t>(t * k)), y;
    for (long i = 0; i < t; ++i)
      for (long j = 0; j < k; ++j) h[static_cast<std::size_t>(i * k + j)] = x[static_cast<std::size_t>(i * k + j)] * g_[static_cast<std::size_t>(j)] + be[static_cast<std::size_t>(j)];
    auto h1 = naive_block(h, t, k, {a}, {n});
    for (long i = 0; i < t; ++i)
      for (long j = 0; j < n; ++j) h1[static_cast<std::size_t>(i * n + j)] += bb[static_cast<std::size_t>(j)];
    return naive_block(h1, t, n, {c}, {m});
  };
  const auto y0 = forward(gamma, beta, w1, b1, w2);
  std::vector<double> s1(static_cast<std::size_t>(k)), s2(static_cast<std::size_t>(n));
  for (auto& v : s1) v = std::exp(nd(rng));
  for (auto& v : s2) v = std::exp(nd(rng));
  auto g2 = gamma, be2 = beta, a2 = w1, bb2 = b1, c2 = w2;
  awq::fold_into_norm(awq::make_vector(g2.data(), k), awq::make_vector(be2.data(), k), awq::make_vector<const double>(s1.data(), k));
  awq::scale_linear_inputs(awq::make_row_major(a2.data(), n, k), awq::make_vector<const double>(s1.data(), k));
  awq::fold_into_linear_output(awq::make_row_major(a2.data(), n, k), awq::make_vector(bb2.data(), n),
                               awq::make_vector<const double>(s2.data(), n));
  awq::scale_linear_inputs(awq::make_row_major(c2.data(), m, n), awq::make_vector<const double>(s2.data(), n));
  const auto y1 = forward(g2, be2, a2, bb2, c2);
  double num = 0, den = 0;
  for (std::size_t i = 0; i < y0.size(); ++i) num += (y1[i] - y0[i]) * (y1[i] - y0[i]), den += y0[i] * y0[i];
  CHECK(std::sqrt(num / den) < 1e-5);
  // Cached inputs divided by s reproduce the folded block's input.
  auto xs = x;
  awq::scale_activations(awq::make_row_major(xs.data(), t, k), awq::make_vector<const double>(s1.data(), k));
  CHECK(std::fabs(xs[5] * s1[5] - x[5]) < 1e-12);
}

TEST_CASE("ActStats: streaming, merge and element types") {
  const long t = 300, k = 64;
  const auto x = activations(t, k, 9);
  const auto xf = cast_vec<float>(x);
  awq::ActStats all(k), a(k), b(k);
  all.update(cview(xf, t, k));
  a.update(cview(xf, 100, k));
  b.update(awq::make_row_major(xf.data() + 100 * k, 200, k));
  a.merge(b);
  CHECK(a.tokens() == 300);
  const auto m1 = all.mean(), m2 = a.mean();
  for (long c = 0; c < k; ++c) {
    double ref = 0;
    for (long i = 0; i < t; ++i) ref += std::fabs(static_cast<double>(xf[static_cast<std::size_t>(i * k + c)]));
    ref /= t;
    CHECK(rel(m1[static_cast<std::size_t>(c)], ref) < 1e-6);
    CHECK(rel(m2[static_cast<std::size_t>(c)], ref) < 1e-6);
  }
  // double activations are summed as given, not through float: a mean of 1 + 1e-12 stays above 1
  awq::ActStats d(k);
  d.update(cview(x, t, k));
  for (long c = 0; c < k; ++c) {
    double ref = 0;
    for (long i = 0; i < t; ++i) ref += std::fabs(x[static_cast<std::size_t>(i * k + c)]);
    CHECK(rel(d.mean<double>()[static_cast<std::size_t>(c)], ref / t) < 1e-13);
  }
  const std::vector<double> near_one(static_cast<std::size_t>(k), 1.0 + 1e-12);
  awq::ActStats one(k);
  one.update(cview(near_one, 1, k));
  CHECK(one.mean<double>()[0] - 1.0 == doctest::Approx(1e-12).epsilon(1e-3));
  const auto xh = cast_vec<Eigen::bfloat16>(x);
  awq::ActStats h(k);
  h.update(cview(xh, t, k));
  CHECK(rel(h.mean()[3], m1[3]) < 1e-2);
}

namespace {

// A block that checks the search's promise: whatever the caller's layout, it sees row-major views.
struct RowMajorOnlyBlock {
  awq::LinearsBlock<double> inner;
  index_t output_cols() const { return inner.output_cols(); }
  void operator()(const awq::MatrixView<const double>& x, const std::vector<awq::MatrixView<const double>>& ws,
                  const awq::MatrixView<double>& out) const {
    REQUIRE(x.col_stride() == 1);
    for (const auto& w : ws) REQUIRE(w.col_stride() == 1);
    inner(x, ws, out);
  }
};

// The same matrix [rows, cols] in three layouts: column-major, and every other element of a
// buffer twice as wide and tall (neither rows nor columns contiguous).
struct Layouts {
  Eigen::MatrixXd col;
  std::vector<double> sparse;
  Layouts(const std::vector<double>& v, long rows, long cols)
      : col(Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(v.data(), rows, cols)),
        sparse(static_cast<std::size_t>(4 * rows * cols), std::nan("")) {
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) sparse[static_cast<std::size_t>(2 * r * 2 * cols + 2 * c)] = v[static_cast<std::size_t>(r * cols + c)];
  }
  awq::MatrixView<const double> column_major() const { return awq::as_view(col); }
  awq::MatrixView<const double> strided() const {
    return awq::MatrixView<const double>(sparse.data(), col.rows(), col.cols(), 4 * col.cols(), 2);
  }
};

}  // namespace

TEST_CASE("the searches and ActStats take any layout: column-major and strided views give row-major's results") {
  const long t = 96, k = 128;
  const auto x = activations(t, k, 77);
  const std::vector<long> outs{48, 32};
  const std::vector<std::vector<double>> ws{random_weights(48, k, Dist::outliers, 78), random_weights(32, k, Dist::student_t3, 79)};
  awq::ScaleSearchOptions opt;
  opt.quant = QuantSpec{4, 64, true};
  const auto ref = naive_scale_search(x, t, k, ws, outs, 4, 64, true, false);

  const Layouts lx(x, t, k), l0(ws[0], 48, k), l1(ws[1], 32, k);
  const std::vector<awq::Linear<double>> rows{{cview(ws[0], 48, k)}, {cview(ws[1], 32, k)}};
  const std::vector<awq::Linear<double>> cols{{l0.column_major()}, {l1.column_major()}};
  const std::vector<awq::Linear<double>> strided{{l0.strided()}, {l1.strided()}};
  const auto r_row = awq::search_scales(cview(x, t, k), rows, RowMajorOnlyBlock{awq::LinearsBlock<double>(rows)}, opt);
  const auto r_col = awq::search_scales(lx.column_major(), cols, RowMajorOnlyBlock{awq::LinearsBlock<double>(cols)}, opt);
  const auto r_str = awq::search_scales(lx.strided(), strided, RowMajorOnlyBlock{awq::LinearsBlock<double>(strided)}, opt);
  CHECK(r_row.best_index == ref.best);
  for (int i = 0; i < 20; ++i) CHECK(rel(r_row.losses[static_cast<std::size_t>(i)], ref.losses[static_cast<std::size_t>(i)]) < 1e-6);
  for (const auto* r : {&r_col, &r_str}) {
    CHECK(r->scales == r_row.scales);
    CHECK(r->losses == r_row.losses);
  }

  // The clip search and ActStats, on the column-major and strided forms of the same data.
  awq::ClipSearchOptions copt;
  copt.quant = QuantSpec{4, 64, true};
  const auto clip_ref = naive_clip(ws[0], 48, k, x, t, 64, 4, true);
  const auto c_row = awq::search_clip(cview(ws[0], 48, k), cview(x, t, k), copt);
  const auto c_col = awq::search_clip(l0.column_major(), lx.column_major(), copt);
  const auto c_str = awq::search_clip(l0.strided(), lx.strided(), copt);
  for (std::size_t i = 0; i < clip_ref.size(); ++i) CHECK(rel(c_row.max_val[i], clip_ref[i]) < 1e-12);
  CHECK(c_col.max_val == c_row.max_val);
  CHECK(c_str.max_val == c_row.max_val);
  awq::ActStats s_row(k), s_col(k), s_str(k);
  s_row.update(cview(x, t, k));
  s_col.update(lx.column_major());
  s_str.update(lx.strided());
  CHECK(s_col.mean<double>() == s_row.mean<double>());
  CHECK(s_str.mean<double>() == s_row.mean<double>());

  // The API tour's types: float Eigen matrices, column-major by default, given as mutable views.
  const Eigen::MatrixXf xf = lx.col.cast<float>(), wf = l0.col.cast<float>();
  Eigen::MatrixXf x_sample = xf, wq = wf;
  std::vector<awq::Linear<float>> lin{{awq::as_view(wq)}};
  const std::vector<float> xr = cast_vec<float>(x), wr = cast_vec<float>(ws[0]);
  const std::vector<awq::Linear<float>> lin_rows{{cview(wr, 48, k)}};
  const auto f_col = awq::search_scales(awq::as_view(x_sample), lin, awq::LinearsBlock<float>(lin), opt);
  const auto f_row = awq::search_scales(cview(xr, t, k), lin_rows, awq::LinearsBlock<float>(lin_rows), opt);
  CHECK(f_col.scales == f_row.scales);
  CHECK(f_col.losses == f_row.losses);
}

TEST_CASE("search is deterministic and its options are validated") {
  const long t = 64, k = 128;
  const auto x = cast_vec<float>(activations(t, k, 12));
  const auto w = cast_vec<float>(random_weights(64, k, Dist::outliers, 13));
  std::vector<awq::Linear<float>> lin{{cview(w, 64, k), nullptr}};
  awq::ScaleSearchOptions opt;
  opt.quant = QuantSpec{4, 64, true};
  opt.include_alpha_one = true;
  long events = 0;
  opt.progress = [&](const awq::Progress& p) { events += p.done <= p.total; };
  const auto r1 = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<float>(lin), opt);
  const auto r2 = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<float>(lin), opt);
  CHECK(r1.losses.size() == 21);
  CHECK(r1.alphas.back() == 1.0);
  CHECK(events == 42);
  CHECK(r1.scales == r2.scales);
  CHECK(r1.losses == r2.losses);
  // A caller-supplied reference output (what a capture forward computed) gives the same result
  // with one block evaluation fewer; a reference of the wrong shape is refused.
  std::vector<float> ref(static_cast<std::size_t>(t * 64), std::nanf(""));
  const awq::LinearsBlock<float> block(lin);
  block(cview(x, t, k), {cview(w, 64, k)}, awq::make_row_major(ref.data(), t, 64));
  const auto r3 = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<float>(lin), opt, {}, cview(ref, t, 64));
  CHECK(r3.scales == r1.scales);
  CHECK(r3.losses == r1.losses);
  CHECK_THROWS_WITH_AS(awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<float>(lin), opt, {}, cview(ref, t - 1, 64)),
                       doctest::Contains("reference"), awq::Error);
  // Another target: the output one grid point's candidate gives. That point's loss is exactly 0,
  // so it is chosen, and every other point is judged against it.
  for (const int pick : {3, 14}) {
    CAPTURE(pick);
    std::vector<float> sc, wq(w.size(), std::nanf("")), target(static_cast<std::size_t>(t * 64), std::nanf(""));
    awq::scales_for_alpha<float>(r1.alphas[static_cast<std::size_t>(pick)], awq::backend::cpu::channel_abs_mean(cview(x, t, k)), nullptr, sc);
    awq::backend::cpu::scaled_pseudo_quantize(opt.quant, cview(w, 64, k), sc.data(), awq::make_row_major(wq.data(), 64, k));
    block(cview(x, t, k), {cview(wq, 64, k)}, awq::make_row_major(target.data(), t, 64));
    const auto r4 = awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<float>(lin), opt, {}, cview(target, t, 64));
    CHECK(r4.best_index == pick);
    CHECK(r4.losses[static_cast<std::size_t>(pick)] == 0.0);
    CHECK(r4.scales == sc);
    for (std::size_t i = 0; i < r4.losses.size(); ++i)
      if (static_cast<int>(i) != pick) CHECK(r4.losses[i] > 0.0);
  }
  const auto c1 = awq::search_clip(cview(w, 64, k), cview(x, t, k), awq::ClipSearchOptions{QuantSpec{4, 64, true}});
  const auto c2 = awq::search_clip(cview(w, 64, k), cview(x, t, k), awq::ClipSearchOptions{QuantSpec{4, 64, true}});
  CHECK(c1.max_val == c2.max_val);

  auto bad = x;
  bad[7 * k + 5] = std::nanf("");
  CHECK_THROWS_WITH_AS(awq::search_scales(cview(bad, t, k), lin, awq::LinearsBlock<float>(lin), opt),
                       doctest::Contains("non-finite activation value nan at row 7, column 5"), awq::Error);
  opt.quant = QuantSpec{4, 256, true};
  CHECK_THROWS_WITH_AS(awq::search_scales(cview(x, t, k), lin, awq::LinearsBlock<float>(lin), opt),
                       doctest::Contains("group_size 256 does not divide in_features 128"), awq::Error);
  std::vector<float> s(10, 1.0f);
  auto w2 = w;
  CHECK_THROWS_WITH_AS(awq::scale_linear_inputs(awq::make_row_major(w2.data(), 64, k), awq::make_vector<const float>(s.data(), 10)),
                       doctest::Contains("scales has 10 elements but in_features has 128"), awq::Error);
  s.assign(128, 1.0f);
  s[4] = -1.0f;
  CHECK_THROWS_WITH_AS(awq::scale_linear_inputs(awq::make_row_major(w2.data(), 64, k), awq::make_vector<const float>(s.data(), 128)),
                       doctest::Contains("scale -1 at channel 4"), awq::Error);
}

TEST_CASE("progress tracker keeps its own copy of a temporary callback") {
  long sum = 0;
  awq::detail::ProgressTracker t([&](const awq::Progress& p) { sum += p.done; }, "phase", 3);  // a temporary std::function
  t.step(1);
  t.step(2);
  CHECK(sum == 3);
}

namespace {
// What a TerminalProgress in the given mode writes for the events.
std::string progress_output(bool terminal, long every, const std::vector<awq::Progress>& events) {
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  const awq::ProgressCallback cb = awq::TerminalProgress(every, terminal, f);  // copies share the reporter's state
  for (const auto& e : events) cb(e);
  std::rewind(f);
  std::string out;
  for (int c = std::fgetc(f); c != EOF; c = std::fgetc(f)) out.push_back(static_cast<char>(c));
  std::fclose(f);
  return out;
}
long count(const std::string& s, char c) { return static_cast<long>(std::count(s.begin(), s.end(), c)); }
}  // namespace

TEST_CASE("terminal progress: a line per phase start and end in a log, a bar with an ETA on a terminal") {
  std::vector<awq::Progress> ev;
  ev.push_back({"eval", 0, 20, 0.0});
  for (long d = 1; d <= 20; ++d) ev.push_back({"eval", d, 20, 0.5 * static_cast<double>(d)});
  for (long d = 1; d <= 3; ++d) ev.push_back({"scales qkv", d, 3, 0.01 * static_cast<double>(d)});
  for (long d = 1; d <= 3; ++d) ev.push_back({"scales qkv", d, 3, 0.01 * static_cast<double>(d)});  // the same phase again

  const std::string log = progress_output(false, 0, ev);
  CHECK(log ==
        "eval: started, 20 to do\n"
        "eval: done, 20/20 in 10.0s\n"
        "scales qkv: 1/3 after 0.0s, eta 0.0s\n"
        "scales qkv: done, 3/3 in 0.0s\n"
        "scales qkv: 1/3 after 0.0s, eta 0.0s\n"
        "scales qkv: done, 3/3 in 0.0s\n");
  const std::string every5 = progress_output(false, 5, ev);
  CHECK(count(every5, '\n') == 2 + 3 + 4);  // eval: start, 5, 10, 15, end
  CHECK(every5.find("eval: 10/20 after 5.0s, eta 5.0s\n") != std::string::npos);

  // A bar is redrawn at most every 0.1 s of a phase, always at its start and end, and ends its line.
  const std::string bar = progress_output(true, 0, ev);
  CHECK(count(bar, '\n') == 3);
  CHECK(count(bar, '\r') == 21 + 2 + 2);
  CHECK(bar.find("] 10/20 5.0s eta 5.0s") != std::string::npos);
  CHECK(bar.find("[##############################] 20/20 10.0s eta 0.0s\n") != std::string::npos);

  // Nested phases (searches inside a pass over blocks): only the outer one keeps its lines.
  const std::vector<awq::Progress> nested = {{"blocks", 0, 2, 0.0},  {"scales", 1, 3, 0.1}, {"scales", 3, 3, 0.3},
                                             {"blocks", 1, 2, 0.4},  {"scales", 1, 3, 0.1}, {"scales", 2, 3, 0.2},
                                             {"scales", 3, 3, 0.25}, {"blocks", 2, 2, 0.8}};
  CHECK(progress_output(false, 0, nested) ==
        "blocks: started, 2 to do\n"
        "scales: done, 3/3 in 0.3s\n"
        "scales: done, 3/3 in 0.2s\n"
        "blocks: done, 2/2 in 0.8s\n");
  const std::string nested_bar = progress_output(true, 0, nested);
  CHECK(count(nested_bar, '\n') == 1);
  CHECK(nested_bar.substr(nested_bar.size() - 9) == "eta 0.0s\n");
  CHECK(nested_bar.find("scales                                   [##########                    ] 1/3") != std::string::npos);

  CHECK(awq::TerminalProgress::duration(42.3) == "42.3s");
  CHECK(awq::TerminalProgress::duration(187) == "3m07s");
  CHECK(awq::TerminalProgress::duration(7530) == "2h05m");
}
