// Bad inputs: each raises awq::Error (a std::runtime_error) whose message names the argument
// and the value.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "awq/awq.hpp"
#include "awq/search.hpp"

namespace {

struct BadCase {
  const char* name;
  std::function<void()> run;
  const char* fragment;
};

std::vector<float> ones(long n) { return std::vector<float>(static_cast<std::size_t>(n), 1.0f); }

}  // namespace

TEST_CASE("bad inputs raise awq::Error with a message naming the argument and value") {
  auto w = ones(4 * 128);
  auto out = ones(4 * 128);
  auto W = awq::make_row_major<const float>(w.data(), 4, 128);
  auto O = awq::make_row_major(out.data(), 4, 128);
  std::vector<std::uint8_t> codes(4 * 128, 1);
  auto C = awq::make_row_major(codes.data(), 4, 128);
  auto s = ones(4), z = ones(4);
  // dequantize of one 4-bit group of 32 codes whose zero is `zero` (the type of the computation deduced)
  const auto dequantize_with_zero = [](float zero) {
    std::vector<std::uint8_t> c(32, 2);
    std::vector<float> o(32), sc{1.0f}, zc{zero};
    awq::dequantize(4, awq::make_row_major<const std::uint8_t>(c.data(), 1, 32), awq::make_row_major<const float>(sc.data(), 1, 1),
                    awq::make_row_major<const float>(zc.data(), 1, 1), awq::make_row_major(o.data(), 1, 32));
  };
  // search_scales over the linear W on fresh-looking x with group `group` and the given mean |x|
  const auto search = [&](int group, std::vector<float> x_mean) {
    std::vector<float> x(8 * 128);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
    awq::ScaleSearchOptions so;
    so.quant = awq::QuantSpec{4, group, true};
    const std::vector<awq::Linear<float>> lin = {{W, nullptr}};
    (void)awq::search_scales(awq::make_row_major<const float>(x.data(), 8, 128), lin, awq::LinearsBlock<float>(lin), so, std::move(x_mean));
  };

  const std::vector<BadCase> cases = {
      {"group size not supported", [&] { awq::pseudo_quantize(awq::QuantSpec{4, 48, true}, W, O); }, "group_size 48"},
      {"bits above 8", [&] { awq::pseudo_quantize(awq::QuantSpec{9, 128, true}, W, O); }, "bits 9"},
      {"bits below 2", [&] { awq::QuantSpec{1, 128, true}.validate(); }, "bits 1"},
      {"group does not divide in_features",
       [&] { awq::pseudo_quantize(awq::QuantSpec{4, 256, true}, W, O); }, "group_size 256 does not divide in_features 128"},
      {"group_for with a bad dimension", [&] { (void)awq::QuantSpec{4, 64, true}.group_for(100); }, "in_features 100"},
      {"output shape mismatch",
       [&] { awq::pseudo_quantize(awq::QuantSpec{4, 64, true}, W, O.middle_cols(0, 64)); }, "out is 4x64 but must be 4x128"},
      {"NaN weight",
       [&] {
         auto bad = w;
         bad[2 * 128 + 70] = std::nanf("");
         awq::pseudo_quantize(awq::QuantSpec{4, 64, true}, awq::make_row_major<const float>(bad.data(), 4, 128), O);
       },
       "non-finite weight nan at row 2, column 70 (group 1)"},
      {"Inf weight",
       [&] {
         auto bad = w;
         bad[5] = std::numeric_limits<float>::infinity();
         awq::pseudo_quantize(awq::QuantSpec{3, 32, false}, awq::make_row_major<const float>(bad.data(), 4, 128), O);
       },
       "non-finite weight inf at row 0, column 5"},
      {"null data with non-zero size", [&] { awq::MatrixView<float> v(nullptr, 3, 4, 4, 1); }, "data is null but rows=3, cols=4"},
      {"negative extent", [&] { awq::MatrixView<float> v(out.data(), -1, 4, 4, 1); }, "negative extent rows=-1"},
      {"null vector", [&] { awq::VectorView<float> v(nullptr, 5); }, "data is null but size=5"},
      {"block out of range", [&] { (void)O.block(2, 100, 3, 10); }, "exceeds 4x128"},
      {"leading dimension too small", [&] { (void)awq::make_row_major(out.data(), 4, 128, 100); }, "leading dimension 100"},
      {"quantize without scales", [&] { awq::quantize(awq::QuantSpec{4, 128, true}, W, C, {}); }, "scales and zeros outputs are required"},
      {"scales shape mismatch",
       [&] {
         awq::quantize(awq::QuantSpec{4, 64, true}, W, C,
                       {{}, awq::make_row_major(s.data(), 4, 1), awq::make_row_major(z.data(), 4, 1)});
       },
       "scales is 4x1 but must be 4x2"},
      {"clip shape mismatch",
       [&] {
         awq::pseudo_quantize(awq::QuantSpec{4, 128, true}, W, O, {awq::make_row_major<const float>(s.data(), 2, 2), {}, {}});
       },
       "clip is 2x2 but must be 4x1"},
      {"negative clip bound",
       [&] {
         std::vector<float> c{1.0f, -2.0f, 1.0f, 1.0f};
         awq::pseudo_quantize(awq::QuantSpec{4, 128, true}, W, O, {awq::make_row_major<const float>(c.data(), 4, 1), {}, {}});
       },
       "clip bound at row 1, group 0 is -2"},
      {"pack: out_features not a multiple of 8",
       [&] {
         std::vector<std::int32_t> q(128);
         awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(codes.data(), 4, 128), awq::make_row_major(q.data(), 128, 1));
       },
       "out_features 4 is not a multiple of 8"},
      {"pack: code above 15",
       [&] {
         std::vector<std::uint8_t> c(8, 3);
         c[5] = 16;
         std::vector<std::int32_t> q(1);
         awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(c.data(), 8, 1), awq::make_row_major(q.data(), 1, 1));
       },
       "code 16 at (5, 0) does not fit in 4 bits"},
      {"pack: destination shape",
       [&] {
         std::vector<std::uint8_t> c(16, 3);
         std::vector<std::int32_t> q(4);
         awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(c.data(), 8, 2), awq::make_row_major(q.data(), 1, 4));
       },
       "dst is 1x4 but must be 2x1"},
      {"plain pack: bits out of range",
       [&] { awq::pack_plain(9, awq::make_row_major<const std::uint8_t>(codes.data(), 4, 128), C); }, "bits 9"},
      {"plain pack: code too wide",
       [&] {
         std::vector<std::uint8_t> c(10, 7), p(4);
         c[3] = 8;
         awq::pack_plain(3, awq::make_row_major<const std::uint8_t>(c.data(), 1, 10), awq::make_row_major(p.data(), 1, 4));
       },
       "code 8 at (0, 3) does not fit in 3 bits"},
      {"plain unpack: source shape",
       [&] {
         std::vector<std::uint8_t> p(3), c(10);
         awq::unpack_plain(3, awq::make_row_major<const std::uint8_t>(p.data(), 1, 3), awq::make_row_major(c.data(), 1, 10));
       },
       "src is 1x3 but must be 1x4"},
      {"dequantize: code too wide",
       [&] {
         std::vector<std::uint8_t> c(32, 2);
         c[9] = 9;
         std::vector<float> o(32), sc{1.0f}, zc{0.0f};
         awq::dequantize<float>(3, awq::make_row_major<const std::uint8_t>(c.data(), 1, 32),
                                awq::make_row_major<const float>(sc.data(), 1, 1),
                                awq::make_row_major<const float>(zc.data(), 1, 1), awq::make_row_major(o.data(), 1, 32));
       },
       "code 9 at row 0, column 9 does not fit in 3 bits"},
      {"dequantize: groups do not divide",
       [&] {
         std::vector<float> o(4 * 128), sc(12), zc(12);
         awq::dequantize<float>(4, awq::make_row_major<const std::uint8_t>(codes.data(), 4, 128),
                                awq::make_row_major<const float>(sc.data(), 4, 3),
                                awq::make_row_major<const float>(zc.data(), 4, 3), awq::make_row_major(o.data(), 4, 128));
       },
       "scales has 3 groups"},
      {"dequantize: zero not a stored code", [&] { dequantize_with_zero(8.5f); }, "zero 8.5 at row 0, group 0 is not a 4-bit code"},
      {"dequantize: zero above the codes", [&] { dequantize_with_zero(300.0f); }, "zero 300 at row 0, group 0 is not a 4-bit code"},
      {"apply_clip: negative bound",
       [&] {
         auto v = w;
         std::vector<float> c{1.0f, 1.0f, -0.01f, 1.0f};
         awq::apply_clip(awq::make_row_major(v.data(), 4, 128), awq::make_row_major<const float>(c.data(), 4, 1));
       },
       "awq::apply_clip: clip bound at row 2, group 0 is -0.01"},
      {"apply_clip: NaN bound",
       [&] {
         auto v = w;
         std::vector<float> c(8, 1.0f);
         c[3] = std::nanf("");
         awq::apply_clip(awq::make_row_major(v.data(), 4, 128), awq::make_row_major<const float>(c.data(), 4, 2));
       },
       "awq::apply_clip: clip bound at row 1, group 1 is nan"},
      {"search_scales: group does not divide, named", [&] { search(256, {}); },
       "awq::search_scales: group_size 256 does not divide in_features 128"},
      {"search_scales: negative mean |x|",
       [&] {
         std::vector<float> m(128, 0.5f);
         m[17] = -0.25f;
         search(128, m);
       },
       "awq::search_scales: x_mean[17] is -0.25"},
      {"search_scales: NaN mean |x|",
       [&] {
         std::vector<float> m(128, 0.5f);
         m[101] = std::nanf("");
         search(128, m);
       },
       "awq::search_scales: x_mean[101] is nan"},
  };
  CHECK(cases.size() >= 15);
  for (const auto& c : cases) {
    CAPTURE(c.name);
    bool threw = false;
    try {
      c.run();
    } catch (const awq::Error& e) {
      threw = true;
      const std::string msg = e.what();
      CAPTURE(msg);
      CHECK(msg.find(c.fragment) != std::string::npos);
      const std::runtime_error& base = e;  // awq::Error is a std::runtime_error
      CHECK(std::string(base.what()) == msg);
    }
    CHECK(threw);
  }
}
