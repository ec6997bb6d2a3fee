// The CUDA backend: the scale and clip searches on the GPU (backend::cuda: device views, cuBLAS
// products in fp32) checked against the CPU backend, then an AutoAWQ checkpoint's linears through
// the GPU W4A16 kernels, in the checkpoint's layout and in the tiled layout, checked against the
// dequantized weights in float64. Without a CUDA device it says so and exits 0.
//
// usage: cuda_backend [MODEL.safetensors]
// Build: this file with the host compiler, cuda_backend.cu with nvcc; link awq::cuda (CUDA::cudart,
// CUDA::cublas) and nlohmann_json.
#include <awq/awq.hpp>
#include <awq/io/awq_checkpoint.hpp>

#include <Eigen/Core>
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuda_backend.hpp"
#include "demo_checkpoint.hpp"

int main(int argc, char** argv) {
  if (!cuda_device_present()) {
    std::printf("cuda_backend: no CUDA device, skipped\n");
    return 0;
  }
  try {
    const double scales = search_on_gpu();
    std::printf("scale search: scales within %.2g of the CPU's (relative)\n", scales);

    const std::string path = argc > 1 ? argv[1] : demo::write_checkpoint("cuda_backend_example.safetensors");
    const auto ckpt = awq::io::AwqCheckpoint::open(path);
    const int m = 16;
    std::mt19937 rng(5);
    std::normal_distribution<float> n01(0.0f, 1.0f);
    double worst = 0;
    for (const std::string& name : ckpt.linears()) {
      const awq::io::AwqGemmLinear lin = ckpt.linear(name);
      const W4Linear w4{static_cast<int>(lin.k), static_cast<int>(lin.n), static_cast<int>(lin.group), lin.qweight.data(),
                        lin.qzeros.data(), lin.scales.data()};
      std::vector<float> x(static_cast<std::size_t>(m * lin.k));
      for (auto& v : x) v = static_cast<float>(Eigen::half(n01(rng)));  // fp16 values, as the kernel reads them
      Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> w(lin.n, lin.k);
      lin.dequantize(awq::as_view(w));
      const Eigen::MatrixXd ref =
          Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(x.data(), m, lin.k).cast<double>() *
          w.cast<double>().transpose();
      for (bool tiled : {false, true}) {
        const std::vector<float> y = w4a16_on_gpu(w4, x, m, tiled);
        const Eigen::MatrixXd yd =
            Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(y.data(), m, lin.n).cast<double>();
        const double e = (yd - ref).norm() / ref.norm();
        std::printf("  %-30s %-17s rel. error vs float64 %.2g (fp16 output)\n", name.c_str(),
                    tiled ? "tiled layout" : "checkpoint layout", e);
        worst = std::max(worst, e);
      }
    }
    return scales < 1e-4 && worst < 5e-3 ? 0 : 1;
  } catch (const awq::Error& e) {
    std::fprintf(stderr, "cuda_backend: %s\n", e.what());
    return 1;
  }
}
