/// \file
/// \brief Portability macros: host/device qualifiers that collapse to `inline` without nvcc.
#pragma once

/// Marks functions callable from host and device code; plain `inline` without nvcc.
#if defined(__CUDACC__) || defined(__HIPCC__)
#define AWQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AWQ_HOST_DEVICE inline
#endif
