// Packed layouts: known vectors for the AutoAWQ order, random round trips for every layout.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "awq/awq.hpp"

using awq::index_t;

namespace {
std::vector<std::uint8_t> random_codes(long n, int bits, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> d(0, (1 << bits) - 1);
  std::vector<std::uint8_t> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<std::uint8_t>(d(rng));
  return v;
}
}  // namespace

TEST_CASE("AutoAWQ GEMM packing: known vector") {
  // One input channel (K = 1), 8 output rows with codes 0..7: nibble i holds row order[i].
  std::vector<std::uint8_t> codes{0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<std::int32_t> packed(1, -1);
  awq::pack_awq_gemm(awq::make_row_major(codes.data(), 8, 1), awq::make_row_major(packed.data(), 1, 1));
  // nibbles (low to high): 0,2,4,6,1,3,5,7
  CHECK(static_cast<std::uint32_t>(packed[0]) == 0x75316420u);

  std::vector<std::uint8_t> hi{15, 14, 13, 12, 11, 10, 9, 8};
  awq::pack_awq_gemm(awq::make_row_major(hi.data(), 8, 1), awq::make_row_major(packed.data(), 1, 1));
  CHECK(static_cast<std::uint32_t>(packed[0]) == 0x8ACE9BDFu);
  CHECK(packed[0] < 0);  // the sign bit is used: int32 storage, as AutoAWQ
}

TEST_CASE("AutoAWQ GEMM packing: random round trips with the qweight and qzeros shapes") {
  for (long out : {8L, 64L, 200L}) {
    for (long k : {1L, 32L, 96L}) {
      CAPTURE(out);
      CAPTURE(k);
      const auto codes = random_codes(out * k, 4, static_cast<std::uint64_t>(out * 1000 + k));
      std::vector<std::int32_t> packed(static_cast<std::size_t>(k * out / 8), 0x5A5A5A5A);
      awq::pack_awq_gemm(awq::make_row_major(codes.data(), out, k), awq::make_row_major(packed.data(), k, out / 8));
      // Independent check of one word against the documented formula.
      const std::uint32_t w0 = static_cast<std::uint32_t>(packed[0]);
      const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
      for (int i = 0; i < 8; ++i) CHECK(((w0 >> (4 * i)) & 0xF) == codes[static_cast<std::size_t>(order[i] * k)]);
      std::vector<std::uint8_t> back(codes.size(), 0xEE);
      awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(packed.data(), k, out / 8),
                           awq::make_row_major(back.data(), out, k));
      CHECK(back == codes);
    }
  }
}

TEST_CASE("plain bit-stream layout round trips for every width") {
  for (int bits = 2; bits <= 8; ++bits) {
    for (long cols : {1L, 7L, 32L, 129L}) {
      CAPTURE(bits);
      CAPTURE(cols);
      const long rows = 5;
      const auto codes = random_codes(rows * cols, bits, static_cast<std::uint64_t>(bits * 7919 + cols));
      const index_t rb = awq::plain_row_bytes(cols, bits);
      CHECK(rb == (cols * bits + 7) / 8);
      std::vector<std::uint8_t> packed(static_cast<std::size_t>(rows * rb), 0xEE);
      awq::pack_plain(bits, awq::make_row_major(codes.data(), rows, cols), awq::make_row_major(packed.data(), rows, rb));
      // Independent bit-level read of every code.
      for (long r = 0; r < rows; ++r)
        for (long j = 0; j < cols; ++j) {
          unsigned v = 0;
          for (int b = 0; b < bits; ++b) {
            const long bit = j * bits + b;
            v |= ((packed[static_cast<std::size_t>(r * rb + bit / 8)] >> (bit % 8)) & 1u) << b;
          }
          REQUIRE(v == codes[static_cast<std::size_t>(r * cols + j)]);
        }
      // Padding bits of each row are zero.
      const long used = cols * bits;
      if (used % 8) {
        for (long r = 0; r < rows; ++r) CHECK((packed[static_cast<std::size_t>(r * rb + rb - 1)] >> (used % 8)) == 0);
      }
      std::vector<std::uint8_t> back(codes.size(), 0xEE);
      awq::unpack_plain(bits, awq::make_row_major<const std::uint8_t>(packed.data(), rows, rb),
                        awq::make_row_major(back.data(), rows, cols));
      CHECK(back == codes);
    }
  }
}

TEST_CASE("quantize -> pack -> unpack -> dequantize reproduces pseudo_quantize") {
  const long out = 64, in = 256;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> n(0.0f, 0.02f);
  std::vector<float> w(static_cast<std::size_t>(out * in));
  for (auto& x : w) x = n(rng);
  const long ng = in / 128;
  std::vector<std::uint8_t> codes(w.size());
  std::vector<float> s(static_cast<std::size_t>(out * ng)), z(s.size());
  using Cfg = awq::QuantConfig<4, 128, true>;
  auto W = awq::make_row_major<const float>(w.data(), out, in);
  awq::quantize<Cfg>(W, awq::make_row_major(codes.data(), out, in),
                     {{}, awq::make_row_major(s.data(), out, ng), awq::make_row_major(z.data(), out, ng)});
  std::vector<std::int32_t> qweight(static_cast<std::size_t>(in * out / 8)), qzeros(static_cast<std::size_t>(ng * out / 8));
  std::vector<std::uint8_t> zc(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) zc[i] = static_cast<std::uint8_t>(z[i]);
  awq::pack_awq_gemm(awq::make_row_major(codes.data(), out, in), awq::make_row_major(qweight.data(), in, out / 8));
  awq::pack_awq_gemm(awq::make_row_major(zc.data(), out, ng), awq::make_row_major(qzeros.data(), ng, out / 8));
  std::vector<Eigen::half> sh(s.size());
  awq::transpose_scales(awq::make_row_major(s.data(), out, ng), awq::make_row_major(sh.data(), ng, out));
  CHECK(static_cast<float>(sh[1]) == static_cast<float>(Eigen::half(s[static_cast<std::size_t>(1 * ng + 0)])));

  std::vector<std::uint8_t> codes2(codes.size()), zc2(zc.size());
  awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(qweight.data(), in, out / 8),
                       awq::make_row_major(codes2.data(), out, in));
  awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(qzeros.data(), ng, out / 8),
                       awq::make_row_major(zc2.data(), out, ng));
  CHECK(codes2 == codes);
  CHECK(zc2 == zc);
  std::vector<float> deq(w.size(), std::nanf("")), ref(w.size(), std::nanf(""));
  awq::dequantize<float>(4, awq::make_row_major(codes2.data(), out, in), awq::make_row_major(s.data(), out, ng),
                         awq::make_row_major(zc2.data(), out, ng), awq::make_row_major(deq.data(), out, in));
  awq::pseudo_quantize<Cfg>(W, awq::make_row_major(ref.data(), out, in));
  CHECK(deq == ref);
}

namespace {
// AutoAWQ tensors of random codes, zeros and fp16 scale bits for a [K, N] weight.
struct AwqTensors {
  int k, n, group;
  std::vector<std::uint8_t> q, z;  // codes [N, K], zeros [N, K/G]
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<std::uint16_t> scales;  // [K/G, N]
};
AwqTensors random_awq(int k, int n, int group, std::uint64_t seed) {
  AwqTensors t{k, n, group, random_codes(static_cast<long>(n) * k, 4, seed), random_codes(static_cast<long>(n) * (k / group), 4, seed + 1), {}, {}, {}};
  const int ng = k / group;
  t.qweight.assign(static_cast<std::size_t>(k) * n / 8, 0);
  t.qzeros.assign(static_cast<std::size_t>(ng) * n / 8, 0);
  awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(t.q.data(), n, k), awq::make_row_major(t.qweight.data(), k, n / 8));
  awq::pack_awq_gemm(awq::make_row_major<const std::uint8_t>(t.z.data(), n, ng), awq::make_row_major(t.qzeros.data(), ng, n / 8));
  std::mt19937_64 rng(seed + 2);
  std::uniform_int_distribution<int> mant(0, 1023), expo(5, 14);
  for (int i = 0; i < ng * n; ++i) t.scales.push_back(static_cast<std::uint16_t>((expo(rng) << 10) | mant(rng)));  // finite, positive
  return t;
}
awq::TiledW4A16 tile(const AwqTensors& t, bool with_zeros = true) {
  const int ng = t.k / t.group;
  return awq::tile_w4a16(awq::make_row_major<const std::int32_t>(t.qweight.data(), t.k, t.n / 8),
                         with_zeros ? awq::make_row_major<const std::int32_t>(t.qzeros.data(), ng, t.n / 8)
                                    : awq::make_row_major<const std::int32_t>(nullptr, 0, t.n / 8),
                         awq::make_row_major<const std::uint16_t>(t.scales.data(), ng, t.n), t.group);
}
}  // namespace

TEST_CASE("tiled W4A16 layout: every nibble sits where the mma fragment mapping says") {
  // The documented rule, written out independently of the converter: tiles [Np/64][Kp/16], lane l = 4 g + t, word w,
  // nibble e of tile (nt, kt) holds column 64 nt + 8 (2w + (e % 4) / 2) + g, row 16 kt + 2t + 8 (e % 2) + e / 4.
  const auto src = random_awq(128, 192, 64, 11);  // Kp = 128, Np = 192: 3 × 8 tiles
  const auto t = tile(src);
  REQUIRE(t.kp == 128);
  REQUIRE(t.np == 192);
  REQUIRE(t.qweight.size() == static_cast<std::size_t>(128 * 192 / 8));
  long checked = 0;
  for (int nt = 0; nt < 3; ++nt)
    for (int kt = 0; kt < 8; ++kt)
      for (int lane = 0; lane < 32; ++lane)
        for (int w = 0; w < 4; ++w) {
          const std::uint32_t word = t.qweight[((static_cast<std::size_t>(nt) * 8 + kt) * 32 + lane) * 4 + w];
          for (int e = 0; e < 8; ++e) {
            const int g = lane / 4, tt = lane % 4;
            const int col = 64 * nt + 8 * (2 * w + (e % 4) / 2) + g, row = 16 * kt + 2 * tt + 8 * (e % 2) + e / 4;
            CHECK(((word >> (4 * e)) & 0xFu) == src.q[static_cast<std::size_t>(col) * 128 + row]);
            ++checked;
          }
        }
  CHECK(checked == 128 * 192);
  // Scales [g][nt][8 g][8 j] and zeros (nibble j of word [g][nt][g]), read raw.
  for (int grp = 0; grp < 2; ++grp)
    for (int col = 0; col < 192; ++col) {
      const int nt = col / 64, j = (col % 64) / 8, g = col % 8;
      CHECK(t.scales[((static_cast<std::size_t>(grp) * 3 + nt) * 8 + g) * 8 + j] == src.scales[static_cast<std::size_t>(grp) * 192 + col]);
      CHECK(((t.qzeros[(static_cast<std::size_t>(grp) * 3 + nt) * 8 + g] >> (4 * j)) & 0xFu) == src.z[static_cast<std::size_t>(col) * 2 + grp]);
    }
}

TEST_CASE("tiled W4A16 layout: random round trips with padding in K and N, with and without zeros") {
  std::uint64_t seed = 100;
  for (const auto& shape : {std::array<int, 3>{96, 200, 32}, std::array<int, 3>{4096, 264, 128}, std::array<int, 3>{192, 8, 64},
                            std::array<int, 3>{64, 64, 64}, std::array<int, 3>{32, 1032, 32}}) {
    const int k = shape[0], n = shape[1], group = shape[2];  // plain locals: CAPTURE's lambdas take them in C++17/20 alike
    CAPTURE(k);
    CAPTURE(n);
    CAPTURE(group);
    const auto src = random_awq(k, n, group, seed += 10);
    const auto t = tile(src);
    CHECK(t.kp % 64 == 0);
    CHECK(t.np % 64 == 0);
    CHECK(t.kp - k < 64);
    CHECK(t.np - n < 64);
    bool codes_ok = true, pad_ok = true, scales_ok = true;
    for (int kk = 0; kk < t.kp; ++kk)
      for (int c = 0; c < t.np; ++c) {
        if (kk < k && c < n)
          codes_ok &= t.code(kk, c) == src.q[static_cast<std::size_t>(c) * k + kk];
        else
          pad_ok &= t.code(kk, c) == 0;
      }
    for (int g = 0; g < t.groups(); ++g)
      for (int c = 0; c < t.np; ++c) {
        if (g < k / group && c < n)
          scales_ok &= t.scale_bits(g, c) == src.scales[static_cast<std::size_t>(g) * n + c] &&
                       t.zero(g, c) == src.z[static_cast<std::size_t>(c) * (k / group) + g];
        else
          pad_ok &= t.scale_bits(g, c) == 0 && t.zero(g, c) == 0;  // padded weights are exactly 0
      }
    CHECK(codes_ok);
    CHECK(pad_ok);
    CHECK(scales_ok);
    const auto sym = tile(src, false);
    CHECK(sym.qzeros.empty());
    CHECK(sym.zero(0, 0) == 8);
    CHECK(sym.qweight == t.qweight);
  }
}

TEST_CASE("tiled W4A16 layout: bad input names the argument") {
  const auto src = random_awq(128, 64, 64, 7);
  auto qw = awq::make_row_major<const std::int32_t>(src.qweight.data(), 128, 8);
  auto qz = awq::make_row_major<const std::int32_t>(src.qzeros.data(), 2, 8);
  auto sc = awq::make_row_major<const std::uint16_t>(src.scales.data(), 2, 64);
  CHECK_THROWS_WITH_AS(awq::tile_w4a16(qw, qz, sc, 48), "awq::tile_w4a16: group 48 is not 32, 64 or 128", awq::Error);
  CHECK_THROWS_WITH_AS(awq::tile_w4a16(awq::make_row_major<const std::int32_t>(src.qweight.data(), 96, 8), qz, sc, 64),
                       doctest::Contains("does not divide K 96"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::tile_w4a16(qw, qz, awq::make_row_major<const std::uint16_t>(src.scales.data(), 1, 64), 64),
                       doctest::Contains("scales"), awq::Error);
  CHECK_THROWS_WITH_AS(awq::tile_w4a16(qw, awq::make_row_major<const std::int32_t>(src.qzeros.data(), 2, 4), sc, 64),
                       doctest::Contains("qzeros"), awq::Error);
  auto bad = src.scales;
  bad[70] = 0x7E00;  // NaN
  CHECK_THROWS_WITH_AS(awq::tile_w4a16(qw, qz, awq::make_row_major<const std::uint16_t>(bad.data(), 2, 64), 64),
                       "awq::tile_w4a16: scale (1, 6) is not finite", awq::Error);
}
