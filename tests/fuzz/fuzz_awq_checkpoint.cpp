// libFuzzer target: the AutoAWQ-GEMM checkpoint importer on arbitrary bytes. Every linear that
// validates is dequantized and run through the CPU W4A16 kernel (both code paths) on a small
// input; every input must either work or throw awq::Error.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "awq/io/awq_checkpoint.hpp"
#include "awq/kernels/cpu/w4a16.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto ck = awq::io::AwqCheckpoint::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz");
    for (const auto& name : ck.linears()) {
      const auto L = ck.linear(name);
      if (L.k * L.n > (1 << 18)) continue;
      std::vector<float> w(static_cast<std::size_t>(L.k * L.n));
      L.dequantize(awq::make_row_major(w.data(), L.n, L.k));
      const awq::index_t m = 3;
      std::vector<float> x(static_cast<std::size_t>(m * L.k), 0.5f), y(static_cast<std::size_t>(m * L.n));
      for (auto isa : {awq::CpuIsa::portable, awq::CpuIsa::automatic})
        awq::w4a16_gemm(awq::make_row_major<const float>(x.data(), m, L.k), L.view(), awq::make_row_major(y.data(), m, L.n),
                        static_cast<const float*>(nullptr), awq::W4A16Options{isa});
    }
  } catch (const awq::Error&) {
  }
  return 0;
}
