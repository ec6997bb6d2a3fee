// backend::cuda against backend::cpu and the golden reference: the primitives on fresh random
// inputs (float64 references, poisoned outputs), then the generic scale and clip searches run
// on both backends.
#include <doctest/doctest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "awq/cuda.cuh"
#include "support.hpp"

using namespace awq_test;
using awq::QuantSpec;
namespace bc = awq::backend;

namespace {

template <class T>
awq::MatrixView<const T> cview(const awq::cuda::DeviceBuffer<T>& b, long rows, long cols) {
  return awq::make_row_major<const T>(b.data(), rows, cols);
}
template <class T>
awq::MatrixView<const T> hview(const std::vector<T>& v, long rows, long cols) {
  return awq::make_row_major<const T>(v.data(), rows, cols);
}

// t × k activations with a few hot channels (as real inputs of a linear have).
std::vector<double> activations(long t, long k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> x(static_cast<std::size_t>(t * k));
  for (auto& v : x) v = n01(rng);
  for (long c = 3; c < k; c += 37)
    for (long tt = 0; tt < t; ++tt) x[static_cast<std::size_t>(tt * k + c)] *= 40.0;
  return x;
}

template <class T>
std::vector<T> to(const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = T(static_cast<float>(v[i]));
  return out;
}
template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(static_cast<float>(v[i]));
  return out;
}

}  // namespace

TEST_CASE_TEMPLATE("cuda linear equals a float64 reference (bias, strided rows, fp32 output)", T, float, __half, __nv_bfloat16) {
  const long t = 77, k = 192, n = 136, ldx = 200;
  const auto xd = activations(t, ldx, 5), wd = random_weights(n, k, Dist::student_t3, 6), bd = random_weights(1, n, Dist::normal, 7);
  const auto xh = to<T>(xd), wh = to<T>(wd), bh = to<T>(bd);
  const auto xr = as_double(xh), wr = as_double(wh), br = as_double(bh);
  awq::cuda::DeviceBuffer<T> x(xh), w(wh), b(bh);
  awq::cuda::DeviceBuffer<float> y(std::vector<float>(static_cast<std::size_t>(t * n), poison()));
  bc::cuda::linear(awq::MatrixView<const T>(x.data(), t, k, ldx, 1), cview(w, n, k), b.data(), awq::make_row_major(y.data(), t, n));
  const auto out = y.download();
  double worst = 0;
  for (long i = 0; i < t; ++i)
    for (long o = 0; o < n; ++o) {
      double ref = br[static_cast<std::size_t>(o)], mag = std::fabs(ref);
      for (long c = 0; c < k; ++c) {
        ref += xr[static_cast<std::size_t>(i * ldx + c)] * wr[static_cast<std::size_t>(o * k + c)];
        mag += std::fabs(xr[static_cast<std::size_t>(i * ldx + c)] * wr[static_cast<std::size_t>(o * k + c)]);
      }
      const double got = out[static_cast<std::size_t>(i * n + o)];
      REQUIRE(std::isfinite(got));
      worst = std::max(worst, std::fabs(got - ref) / mag);
    }
  CHECK(worst < 1e-5);  // fp32 accumulation of exactly representable products
}

TEST_CASE_TEMPLATE("cuda linear under Math::fp16 / bf16 equals a float64 product of the operands rounded to 16 bits", L, __half,
                   __nv_bfloat16) {
  using Math = bc::cuda::Math;
  const bc::cuda::MathScope scope(std::is_same_v<L, __half> ? Math::fp16 : Math::bf16);
  const long t = 77, k = 192, n = 136, ldx = 200;
  const auto xd = activations(t, ldx, 15), wd = random_weights(n, k, Dist::student_t3, 16), bd = random_weights(1, n, Dist::normal, 17);
  const auto xf = to<float>(xd), wf = to<float>(wd), bf = to<float>(bd);
  const auto xr = as_double(to<L>(as_double(xf))), wr = as_double(to<L>(as_double(wf)));  // what the GPU multiplies
  awq::cuda::DeviceBuffer<float> x(xf), w(wf), b(bf);
  for (const bool bias : {false, true}) {
    CAPTURE(bias);
    awq::cuda::DeviceBuffer<float> y(std::vector<float>(static_cast<std::size_t>(t * n), poison()));
    bc::cuda::linear(awq::MatrixView<const float>(x.data(), t, k, ldx, 1), cview(w, n, k), bias ? b.data() : nullptr,
                     awq::make_row_major(y.data(), t, n));
    const auto out = y.download();
    double worst = 0, rounding = 0;
    for (long i = 0; i < t; ++i)
      for (long o = 0; o < n; ++o) {
        double ref = bias ? static_cast<double>(bf[static_cast<std::size_t>(o)]) : 0.0, mag = std::fabs(ref), full = ref;
        for (long c = 0; c < k; ++c) {
          const std::size_t xi = static_cast<std::size_t>(i * ldx + c), wi = static_cast<std::size_t>(o * k + c);
          ref += xr[xi] * wr[wi];
          full += static_cast<double>(xf[xi]) * static_cast<double>(wf[wi]);
          mag += std::fabs(xr[xi] * wr[wi]);
        }
        const double got = out[static_cast<std::size_t>(i * n + o)];
        REQUIRE(std::isfinite(got));
        worst = std::max(worst, std::fabs(got - ref) / mag);
        rounding = std::max(rounding, std::fabs(got - full) / mag);
      }
    CHECK(worst < 1e-5);      // fp32 accumulation of the rounded operands' exact products
    CHECK(rounding > 1e-5);   // and the operands were rounded
    CHECK(rounding < (std::is_same_v<L, __half> ? 2e-3 : 1.6e-2));  // 2^-11 / 2^-8 per operand
  }
}

TEST_CASE_TEMPLATE("cuda linear reads a held operand's 16-bit copy: the same bits, never a stale copy", L, __half, __nv_bfloat16) {
  using Math = bc::cuda::Math;
  const bc::cuda::MathScope scope(std::is_same_v<L, __half> ? Math::fp16 : Math::bf16);
  const long t = 77, k = 192, n = 136, ldx = 200;
  const auto x1 = to<float>(activations(t, ldx, 25)), x2 = to<float>(activations(t, ldx, 26));
  const auto wf = to<float>(random_weights(n, k, Dist::student_t3, 27)), bf = to<float>(random_weights(1, n, Dist::normal, 28));
  awq::cuda::DeviceBuffer<float> x(x1), w(wf), b(bf);
  const awq::MatrixView<const float> xv(x.data(), t, k, ldx, 1);
  const auto product = [&](const awq::MatrixView<const float>& xs) {
    awq::cuda::DeviceBuffer<float> y(std::vector<float>(static_cast<std::size_t>(xs.rows() * n), poison()));
    bc::cuda::linear(xs, cview(w, n, k), b.data(), awq::make_row_major(y.data(), xs.rows(), n));
    return y.download();
  };
  const auto plain = product(xv), plain_head = product(xv.middle_rows(0, 40));
  {
    const auto held = bc::cuda::hold_operand(xv);
    CHECK(product(xv) == plain);                       // the held copy: bit for bit the per-call rounding
    CHECK(product(xv) == plain);                       // and again
    CHECK(product(xv.middle_rows(0, 40)) == plain_head);  // another view of the same memory is not the held one
  }
  x.upload(x2.data(), x2.size());  // x changes after the hold ends: the product must see it
  const auto changed = product(xv);
  awq::cuda::DeviceBuffer<float> fresh(x2);
  CHECK(changed == product(awq::MatrixView<const float>(fresh.data(), t, k, ldx, 1)));
  CHECK(changed != plain);
}

TEST_CASE("cuda scaled_pseudo_quantize, mse, channel_abs_mean, duo_weight_mean and gather_rows equal the CPU backend") {
  const long rows = 96, k = 256, t = 3000;
  std::uint64_t seed = 11;
  for (const QuantSpec spec : {QuantSpec{4, 128, true}, QuantSpec{3, 64, false}, QuantSpec{8, 32, true}}) {
    CAPTURE(spec.name());
    const auto w = cast_vec<float>(random_weights(rows, k, Dist::outliers, seed++));
    std::vector<float> s(static_cast<std::size_t>(k));
    std::mt19937 rng(static_cast<unsigned>(seed++));
    std::uniform_real_distribution<float> u(0.05f, 8.0f);
    for (auto& v : s) v = u(rng);
    std::vector<float> ref(w.size());
    bc::cpu::scaled_pseudo_quantize(spec, hview(w, rows, k), s.data(), awq::make_row_major(ref.data(), rows, k));
    awq::cuda::DeviceBuffer<float> dw(w), dout(std::vector<float>(w.size(), poison()));
    bc::cuda::scaled_pseudo_quantize(spec, cview(dw, rows, k), s.data(), awq::make_row_major(dout.data(), rows, k));
    CHECK(dout.download() == ref);  // bit for bit in fp32
    const auto dm = bc::cuda::duo_weight_mean<float>({cview(dw, rows, k), cview(dw, rows / 2, k)}, spec.group_for(k));
    const auto cm = bc::cpu::duo_weight_mean<float>({hview(w, rows, k), hview(w, rows / 2, k)}, spec.group_for(k));
    REQUIRE(dm.size() == cm.size());
    for (std::size_t c = 0; c < dm.size(); ++c) CHECK(rel(dm[c], cm[c]) < 1e-6);
  }
  const auto x = cast_vec<float>(activations(t, k, 99)), y = cast_vec<float>(activations(t, k, 98));
  awq::cuda::DeviceBuffer<float> dx(x), dy(y);
  double ref = 0;
  for (std::size_t i = 0; i < x.size(); ++i) ref += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
  ref /= static_cast<double>(x.size());
  const double got = bc::cuda::mse(cview(dx, t, k), cview(dy, t, k));
  CHECK(rel(got, ref) < 1e-12);
  CHECK(bc::cuda::mse(cview(dx, t, k), cview(dy, t, k)) == got);  // fixed order: bit-identical
  const auto dmean = bc::cuda::channel_abs_mean(cview(dx, t, k));
  const auto cmean = bc::cpu::channel_abs_mean(hview(x, t, k));
  for (long c = 0; c < k; ++c) CHECK(rel(dmean[static_cast<std::size_t>(c)], cmean[static_cast<std::size_t>(c)]) < 1e-6);
  const long step = 7, nt = (t + step - 1) / step;
  awq::cuda::DeviceBuffer<float> g(std::vector<float>(static_cast<std::size_t>(nt * k), poison()));
  bc::cuda::gather_rows(cview(dx, t, k), step, awq::make_row_major(g.data(), nt, k));
  std::vector<float> gr(static_cast<std::size_t>(nt * k));
  bc::cpu::gather_rows(hview(x, t, k), step, awq::make_row_major(gr.data(), nt, k));
  CHECK(g.download() == gr);
}

TEST_CASE("cuda check_finite names the first bad element; the searches reject NaN on the GPU") {
  const long rows = 40, k = 128;
  auto w = cast_vec<float>(random_weights(rows, k, Dist::normal, 3));
  w[static_cast<std::size_t>(17 * k + 9)] = std::nanf("");
  w[static_cast<std::size_t>(30 * k + 1)] = INFINITY;
  awq::cuda::DeviceBuffer<float> dw(w);
  CHECK_THROWS_WITH_AS(bc::cuda::check_finite("f", "weight", cview(dw, rows, k)),
                       doctest::Contains("f: non-finite weight value nan at row 17, column 9"), awq::Error);
  const auto x = cast_vec<float>(activations(64, k, 4));
  awq::cuda::DeviceBuffer<float> dx(x);
  std::vector<awq::Linear<float>> lin{{cview(dw, rows, k), nullptr}};
  awq::ScaleSearchOptions opt;
  opt.quant = QuantSpec{4, 64, true};
  CHECK_THROWS_WITH_AS(awq::search_scales<bc::cuda>(cview(dx, 64, k), lin, awq::LinearsBlock<float, bc::cuda>(lin), opt),
                       doctest::Contains("non-finite weight value nan at row 17, column 9"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::search_clip<bc::cuda>(cview(dw, rows, k), cview(dx, 64, k), awq::ClipSearchOptions{opt.quant}),
                       doctest::Contains("non-finite weight value nan at row 17, column 9"), awq::Error);
}

TEST_CASE("cuda scale search picks the golden llm-awq / AutoAWQ alpha and scales (fp32)") {
  check_golden_scale_search([](const Tensor& x, const Tensor& w, const awq::ScaleSearchOptions& opt) {
    awq::cuda::DeviceBuffer<float> dx(x.data), dw(w.data);
    std::vector<awq::Linear<float>> lin{{cview(dw, w.rows(), w.cols()), nullptr}};
    return awq::search_scales<bc::cuda>(cview(dx, x.rows(), x.cols()), lin, awq::LinearsBlock<float, bc::cuda>(lin), opt);
  });
}

TEST_CASE("cuda and cpu scale searches pick the same alpha; scales agree to 1e-5 (fp32, fixed seeds)") {
  const long t = 256, k = 256;
  std::uint64_t seed = 31;
  int same = 0, cases = 0;
  for (int bits : {3, 4})
    for (int g : {32, 64, 128})
      for (bool zp : {true, false})
        for (bool duo : {false, true}) {
          CAPTURE(bits);
          CAPTURE(g);
          CAPTURE(zp);
          CAPTURE(duo);
          const auto x = cast_vec<float>(activations(t, k, seed++));
          const std::vector<long> outs = seed % 2 ? std::vector<long>{96, 64, 64} : std::vector<long>{128};
          std::vector<std::vector<float>> ws, bs;
          std::vector<awq::cuda::DeviceBuffer<float>> dws, dbs;
          std::vector<awq::Linear<float>> hl, dl;
          for (std::size_t l = 0; l < outs.size(); ++l) {
            ws.push_back(cast_vec<float>(random_weights(outs[l], k, l == 0 ? Dist::outliers : Dist::student_t3, seed * 7 + l)));
            bs.push_back(cast_vec<float>(random_weights(1, outs[l], Dist::normal, seed * 11 + l)));
          }
          for (std::size_t l = 0; l < outs.size(); ++l) {
            dws.emplace_back(ws[l]);
            dbs.emplace_back(bs[l]);
          }
          for (std::size_t l = 0; l < outs.size(); ++l) {
            hl.push_back({hview(ws[l], outs[l], k), bs[l].data()});
            dl.push_back({cview(dws[l], outs[l], k), dbs[l].data()});
          }
          awq::cuda::DeviceBuffer<float> dx(x);
          awq::ScaleSearchOptions opt;
          opt.quant = QuantSpec{bits, g, zp};
          opt.duo_scaling = duo;
          const auto rc = awq::search_scales(hview(x, t, k), hl, awq::LinearsBlock<float>(hl), opt);
          const auto rg = awq::search_scales<bc::cuda>(cview(dx, t, k), dl, awq::LinearsBlock<float, bc::cuda>(dl), opt);
          ++cases;
          same += rc.best_index == rg.best_index;
          CHECK(rc.best_index == rg.best_index);
          double worst = 0;
          for (std::size_t c = 0; c < rc.scales.size(); ++c) worst = std::max(worst, rel(rg.scales[c], rc.scales[c]));
          CHECK(worst < 1e-5);
          for (std::size_t i = 0; i < rc.losses.size(); ++i) CHECK(rel(rg.losses[i], rc.losses[i]) < 1e-4);
        }
  MESSAGE("same alpha on " << same << " of " << cases << " cases");
}

namespace {

// CPU and CUDA clip choices: equal, or a near-tie by the CPU's own error table.
template <class Cfg>
void compare_clip(const std::vector<float>& w, long rows, long k, const std::vector<float>& x, long t, long* exact, long* ties) {
  awq::ClipSearchOptions opt;
  opt.quant = awq::spec_of<Cfg>();
  opt.n_sample_tokens = 256;
  awq::cuda::DeviceBuffer<float> dw(w), dx(x);
  const auto rc = awq::search_clip(hview(w, rows, k), hview(x, t, k), opt);
  const auto rg = awq::search_clip<bc::cuda>(cview(dw, rows, k), cview(dx, t, k), opt);
  REQUIRE(rg.max_val.size() == rc.max_val.size());
  // The CPU's error table on the same subsample, to judge disagreements.
  const long stride = std::max<long>(1, t / opt.n_sample_tokens), nt = (t + stride - 1) / stride;
  std::vector<float> xs(static_cast<std::size_t>(nt * k));
  bc::cpu::gather_rows(hview(x, t, k), stride, awq::make_row_major(xs.data(), nt, k));
  const long n = static_cast<long>(rc.max_val.size());
  std::vector<double> err(static_cast<std::size_t>(10 * n));
  std::vector<float> amax(static_cast<std::size_t>(n));
  bc::cpu::clip_errors(opt.quant, hview(xs, nt, k), hview(w, rows, k), 10, 20, 64, err.data(), amax.data(), [](long) {});
  for (long o = 0; o < n; ++o) {
    const int ic = rc.shrink_index[static_cast<std::size_t>(o)], ig = rg.shrink_index[static_cast<std::size_t>(o)];
    if (ic == ig) {
      *exact += 1;
      CHECK(rg.max_val[static_cast<std::size_t>(o)] == rc.max_val[static_cast<std::size_t>(o)]);
      continue;
    }
    CAPTURE(o);
    CHECK(rel(err[static_cast<std::size_t>(ig * n + o)], err[static_cast<std::size_t>(ic * n + o)]) < 1e-5);
    *ties += 1;
  }
}

}  // namespace

TEST_CASE("cuda and cpu clip searches choose the same bounds (near-ties by the CPU's error table only)") {
  long exact = 0, ties = 0;
  const long rows = 200, k = 512, t = 1000;
  const auto w = cast_vec<float>(random_weights(rows, k, Dist::outliers, 77));
  const auto x = cast_vec<float>(activations(t, k, 78));
  compare_clip<awq::QuantConfig<4, 128, true>>(w, rows, k, x, t, &exact, &ties);
  compare_clip<awq::QuantConfig<3, 64, true>>(w, rows, k, x, t, &exact, &ties);
  compare_clip<awq::QuantConfig<4, 32, false>>(w, rows, k, x, t, &exact, &ties);
  MESSAGE("clip: " << exact << " identical, " << ties << " near-tie flips");
  CHECK(ties * 1000 <= exact);
}

TEST_CASE("cuda clip search matches the golden llm-awq bounds within its own near-tie margin; small workspace chunks agree") {
  const std::string c = "clip_search_linear_256x512_t1024";
  const Tensor x = golden_tensor(c, "x"), w = golden_tensor(c, "w");
  const Tensor ref = golden_tensor(c, "max_val_b4_g128"), margin = golden_tensor(c, "clip_rel_margin_b4_g128");
  awq::cuda::DeviceBuffer<float> dx(x.data), dw(w.data);
  awq::ClipSearchOptions opt;
  opt.quant = QuantSpec{4, 128, true};
  const auto res = awq::search_clip<bc::cuda>(cview(dw, w.rows(), w.cols()), cview(dx, x.rows(), x.cols()), opt);
  long flips = 0;
  for (std::size_t i = 0; i < ref.data.size(); ++i)
    if (res.max_val[i] != ref.data[i]) {
      CAPTURE(i);
      CHECK(margin.data[i] < 1e-4);
      ++flips;
    }
  CHECK(flips <= 4);
  // A workspace of a few rows forces many chunks, the last one short: the same result.
  const auto saved = bc::cuda::clip_workspace_bytes();
  bc::cuda::clip_workspace_bytes() = 37 * 4 * 10 * 1024 * sizeof(float);
  const auto chunked = awq::search_clip<bc::cuda>(cview(dw, w.rows(), w.cols()), cview(dx, x.rows(), x.cols()), opt);
  bc::cuda::clip_workspace_bytes() = saved;
  CHECK(chunked.max_val == res.max_val);
  CHECK(chunked.shrink_index == res.shrink_index);
}

TEST_CASE("cuda searches on half and bfloat16 storage run in fp32 and land near the fp32 choice") {
  const long t = 512, k = 256, n = 192;
  const auto xd = activations(t, k, 501), wd = random_weights(n, k, Dist::outliers, 502);
  awq::ScaleSearchOptions opt;
  opt.quant = QuantSpec{4, 128, true};
  const auto xf = to<float>(xd), wf = to<float>(wd);
  std::vector<awq::Linear<float>> hl{{hview(wf, n, k), nullptr}};
  const auto ref = awq::search_scales(hview(xf, t, k), hl, awq::LinearsBlock<float>(hl), opt);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    awq::cuda::DeviceBuffer<T> dx(to<T>(xd)), dw(to<T>(wd));
    std::vector<awq::Linear<T>> dl{{cview(dw, n, k), nullptr}};
    const auto r = awq::search_scales<bc::cuda>(cview(dx, t, k), dl, awq::LinearsBlock<T, bc::cuda>(dl), opt);
    REQUIRE(r.losses.size() == ref.losses.size());
    for (std::size_t i = 0; i < r.losses.size(); ++i) CHECK(rel(r.losses[i], ref.losses[i]) < 0.05);
    const auto c = awq::search_clip<bc::cuda>(cview(dw, n, k), cview(dx, t, k), awq::ClipSearchOptions{opt.quant});
    CHECK(c.max_val.size() == static_cast<std::size_t>(n * 2));
    for (float v : c.max_val) CHECK(std::isfinite(v));
    return r.best_index;
  };
  const int ih = run(__half{}), ib = run(__nv_bfloat16{});
  MESSAGE("alpha index: fp32 CPU " << ref.best_index << ", fp16 GPU " << ih << ", bf16 GPU " << ib);
  CHECK(std::abs(ih - ref.best_index) <= 2);
  CHECK(std::abs(ib - ref.best_index) <= 3);
}

TEST_CASE("cuda search runs on a caller-supplied stream and is deterministic") {
  const long t = 300, k = 256, n = 128;
  const auto x = cast_vec<float>(activations(t, k, 41)), w = cast_vec<float>(random_weights(n, k, Dist::outliers, 42));
  awq::cuda::DeviceBuffer<float> dx(x), dw(w);
  cudaStream_t s = nullptr;
  awq::cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  std::vector<awq::Linear<float>> dl{{cview(dw, n, k), nullptr}};
  awq::ScaleSearchOptions opt;
  opt.quant = QuantSpec{4, 64, true};
  awq::ScaleSearchResult<float> a, b;
  awq::ClipSearchResult<float> ca, cb;
  {
    awq::cuda::StreamScope scope(s);
    CHECK(bc::cuda::stream() == s);
    a = awq::search_scales<bc::cuda>(cview(dx, t, k), dl, awq::LinearsBlock<float, bc::cuda>(dl), opt);
    ca = awq::search_clip<bc::cuda>(cview(dw, n, k), cview(dx, t, k), awq::ClipSearchOptions{opt.quant});
  }
  CHECK(bc::cuda::stream() == nullptr);
  b = awq::search_scales<bc::cuda>(cview(dx, t, k), dl, awq::LinearsBlock<float, bc::cuda>(dl), opt);
  cb = awq::search_clip<bc::cuda>(cview(dw, n, k), cview(dx, t, k), awq::ClipSearchOptions{opt.quant});
  CHECK(a.losses == b.losses);
  CHECK(a.scales == b.scales);
  CHECK(ca.max_val == cb.max_val);
  awq::cuda::check(cudaStreamDestroy(s), "cudaStreamDestroy");
}
