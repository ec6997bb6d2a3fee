/// \file
/// \brief Umbrella header for the CPU side of awq. Never includes CUDA headers;
///        the GPU side is the opt-in awq/cuda.cuh.
#pragma once

#include "awq/config.hpp"
#include "awq/eigen.hpp"
#include "awq/gptq.hpp"
#include "awq/error.hpp"
#include "awq/layout/awq_gemm.hpp"
#include "awq/layout/blocked.hpp"
#include "awq/layout/tiled.hpp"
#include "awq/pack.hpp"
#include "awq/quantizer.hpp"
#include "awq/search.hpp"
#include "awq/view.hpp"
