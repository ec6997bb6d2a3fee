// Packed layouts: known vectors for the AutoAWQ order, random round trips for every layout.
#include <doctest/doctest.h>

#include <Eigen/Core>
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
