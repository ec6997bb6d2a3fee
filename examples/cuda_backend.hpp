// What cuda_backend.cu (nvcc) offers cuda_backend_main.cpp (the host compiler): plain types only.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <vector>

/// A W4 linear in the AutoAWQ GEMM layout, in host memory (views of an awq::io::AwqGemmLinear).
struct W4Linear {
  int k = 0, n = 0, group = 0;            // W is [n, k], groups of `group` along k
  const std::int32_t* qweight = nullptr;  // [k, n/8]
  const std::int32_t* qzeros = nullptr;   // [k/group, n/8]
  const Eigen::half* scales = nullptr;    // [k/group, n]
};

/// Is there a CUDA device?
bool cuda_device_present();

/// Scale and clip searches on the GPU against the CPU backend; the worst relative scale difference.
double search_on_gpu();

/// y [m, n] = x [m, k] · dequant(W)ᵀ on the GPU, x and y in fp16 (x given in float, rounded);
/// `tiled`: through the tiled layout (awq::tile_w4a16) instead of the checkpoint's.
std::vector<float> w4a16_on_gpu(const W4Linear& lin, const std::vector<float>& x, int m, bool tiled);
