// GPU pseudo-quantization against the CPU quantizer (which matches the reference bit for bit).
#include <doctest/doctest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <string>
#include <vector>

#include "awq/cuda.cuh"
#include "support.hpp"

using namespace awq_test;

TEST_CASE("cuda pseudo_quantize equals the CPU bit for bit in fp32, every config") {
  const long rows = 64, cols = 512;
  std::uint64_t seed = 900;
  for (int b = 2; b <= 8; ++b)
    for (int g : {32, 64, 128, 256, awq::kPerChannel})
      for (bool zp : {true, false}) {
        const awq::QuantSpec spec{b, g, zp};
        CAPTURE(spec.name());
        const auto w = cast_vec<float>(random_weights(rows, cols, Dist::outliers, seed++));
        const long ng = cols / spec.group_for(cols);
        std::vector<float> ref(w.size()), rs(static_cast<std::size_t>(rows * ng)), rz(rs.size());
        awq::pseudo_quantize(spec, awq::make_row_major(w.data(), rows, cols), awq::make_row_major(ref.data(), rows, cols),
                             {{}, awq::make_row_major(rs.data(), rows, ng), awq::make_row_major(rz.data(), rows, ng)});
        awq::cuda::DeviceBuffer<float> dw(w), dout(std::vector<float>(w.size(), poison())), ds(rs.size()), dz(rz.size());
        awq::cuda::pseudo_quantize(spec, awq::make_row_major<const float>(dw.data(), rows, cols),
                                   awq::make_row_major(dout.data(), rows, cols), nullptr, ds.data(), dz.data());
        const auto out = dout.download(), s = ds.download(), z = dz.download();
        long bad = 0;
        for (std::size_t i = 0; i < out.size(); ++i) bad += !(out[i] == ref[i]);
        for (std::size_t i = 0; i < s.size(); ++i) bad += !(s[i] == rs[i]) + !(z[i] == rz[i]);
        REQUIRE(bad == 0);
      }
}

TEST_CASE("cuda pseudo_quantize matches the golden llm-awq output") {
  const Tensor w = golden_tensor("pseudo_quantize_64x512", "w");
  const Tensor ref = golden_tensor("pseudo_quantize_64x512", "w_hat_b4_g128");
  awq::cuda::DeviceBuffer<float> dw(w.data), dout(std::vector<float>(w.data.size(), poison()));
  awq::cuda::pseudo_quantize<awq::QuantConfig<4, 128, true>, float>(
      awq::make_row_major<const float>(dw.data(), w.rows(), w.cols()), awq::make_row_major(dout.data(), w.rows(), w.cols()));
  CHECK(dout.download() == ref.data);
}

TEST_CASE("cuda pseudo_quantize: half and bfloat16 agree with the CPU on the same values") {
  const long rows = 32, cols = 256;
  const auto wd = random_weights(rows, cols, Dist::student_t3, 4242);
  std::vector<__half> wh(wd.size());
  std::vector<float> wf(wd.size());
  for (std::size_t i = 0; i < wd.size(); ++i) {
    wh[i] = __float2half_rn(static_cast<float>(wd[i]));
    wf[i] = __half2float(wh[i]);
  }
  std::vector<float> ref(wf.size());
  awq::pseudo_quantize(awq::QuantSpec{4, 64, true}, awq::make_row_major(wf.data(), rows, cols),
                       awq::make_row_major(ref.data(), rows, cols));
  awq::cuda::DeviceBuffer<__half> dw(wh), dout(wh.size());
  awq::cuda::pseudo_quantize(awq::QuantSpec{4, 64, true}, awq::make_row_major<const __half>(dw.data(), rows, cols),
                             awq::make_row_major(dout.data(), rows, cols));
  const auto out = dout.download();
  long bad = 0;
  for (std::size_t i = 0; i < out.size(); ++i) bad += !(__half2float(out[i]) == __half2float(__float2half_rn(ref[i])));
  CHECK(bad == 0);
}

TEST_CASE("cuda pseudo_quantize: non-finite weight raises awq::Error naming row and column") {
  std::vector<float> w(4 * 64, 0.5f);
  w[2 * 64 + 33] = std::nanf("");
  awq::cuda::DeviceBuffer<float> dw(w), dout(w.size());
  try {
    awq::cuda::pseudo_quantize(awq::QuantSpec{4, 32, true}, awq::make_row_major<const float>(dw.data(), 4, 64),
                               awq::make_row_major(dout.data(), 4, 64));
    FAIL("no error");
  } catch (const awq::Error& e) {
    CHECK(std::string(e.what()).find("row 2, column 33 (group 1)") != std::string::npos);
  }
}
