// Load an AutoAWQ checkpoint (the "GEMM" layout AutoAWQ, vLLM and transformers use) and run its
// linears with the CPU W4A16 kernels, checked against the dequantized weights in float64.
//
// usage: awq_checkpoint [MODEL.safetensors]
// Without a file it first writes a small one (two W4 g128 linears, as AutoAWQ lays them out) to
// the temporary directory, so the example runs anywhere. Needs nlohmann_json (awq's json part).
#include <awq/awq.hpp>
#include <awq/io/awq_checkpoint.hpp>
#include <awq/kernels/cpu/w4a16_blocked.hpp>

#include <Eigen/Core>
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>

#include "demo_checkpoint.hpp"

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : demo::write_checkpoint("awq_checkpoint_example.safetensors");
  const auto ckpt = awq::io::AwqCheckpoint::open(path);  // validates the container
  std::printf("%s: %zu quantized linears\n", path.c_str(), ckpt.linears().size());
  const awq::index_t m = 4;  // tokens
  std::mt19937 rng(5);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  double worst = 0;
  for (const std::string& name : ckpt.linears()) {
    const awq::io::AwqGemmLinear lin = ckpt.linear(name);  // validates shapes, group size, scales
    RowMajor x(m, lin.k), y(m, lin.n), y_blocked(m, lin.n), w(lin.n, lin.k);
    for (awq::index_t i = 0; i < x.size(); ++i) x.data()[i] = n01(rng);
    const RowMajor& cx = x;
    awq::w4a16_gemm(awq::as_view(cx), lin.view(), awq::as_view(y));  // the checkpoint's layout, as read
    // The blocked layout (faster on AVX-512 VNNI and AVX2 at small M), converted once per linear.
    const auto blocked = awq::block_w4a16(lin.view());
    awq::w4a16_gemm(awq::as_view(cx), blocked, awq::as_view(y_blocked));

    // Reference: the dequantized weights, the product in float64.
    lin.dequantize(awq::as_view(w));
    const Eigen::MatrixXd ref = x.cast<double>() * w.cast<double>().transpose();
    const double e1 = (y.cast<double>() - ref).norm() / ref.norm();
    const double e2 = (y_blocked.cast<double>() - ref).norm() / ref.norm();
    std::printf("  %-32s K %5ld  N %5ld  group %3ld   rel. error vs float64: %.2g (checkpoint layout), %.2g (blocked)\n",
                name.c_str(), static_cast<long>(lin.k), static_cast<long>(lin.n), static_cast<long>(lin.group), e1, e2);
    worst = std::max({worst, e1, e2});
  }
  return worst < 1e-5 ? 0 : 1;
}
