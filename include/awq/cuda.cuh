/// \file
/// \brief Opt-in umbrella for the GPU side of awq (nvcc only): everything in awq/awq.hpp plus
///        the CUDA runtime helpers, the backend::cuda policy, GPTQ on the device and the kernels
///        (cuBLAS and cuSOLVER: link awq::cuda).
#pragma once

#include "awq/awq.hpp"
#include "awq/backend/cuda.cuh"
#include "awq/backend/cuda_runtime.cuh"
#include "awq/gptq.cuh"
#include "awq/kernels/cuda/pseudo_quantize.cuh"
#include "awq/kernels/cuda/w4a16_gemm.cuh"
#include "awq/kernels/cuda/w4a16_gemv.cuh"
#include "awq/kernels/cuda/w4a16_linear.cuh"
#include "awq/kernels/cuda/w4a16_tiled.cuh"
