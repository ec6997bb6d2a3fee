/// \file
/// \brief What the CPU W4A16 kernels share whatever the weight layout: their options and the
///        conversion of x, y and bias to and from float.
#pragma once

#include <Eigen/Core>

#include <type_traits>
#include <vector>

#include "awq/kernels/cpu/features.hpp"
#include "awq/view.hpp"

namespace awq {

/// How the AVX2 path turns a masked nibble into a float at M = 1.
enum class M1Decode {
  automatic,  ///< `denormal` on AMD processors, `convert` elsewhere (and when max|x| >= 2^40)
  convert,    ///< integer → float conversion: AND, CVT, FMA per 8 weights
  denormal    ///< the masked bits used as a denormal float: AND, FMA per 8 weights (see below)
};

/// Options of awq::w4a16_gemm.
struct W4A16Options {
  CpuIsa isa = CpuIsa::automatic;        ///< which code path
  M1Decode m1_decode = M1Decode::automatic;  ///< AVX2, M = 1: how nibbles become floats
};

namespace detail {
namespace w4cpu {

template <class T>
constexpr bool is_w4a16_activation =
    std::is_same_v<T, float> || std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>;

/// float pointers to x, y and bias for the kernels: the caller's memory when it holds float,
/// else float copies (x and bias converted here, y converted back by write_back).
template <class TX, class TY>
struct FloatIo {
  std::vector<float> xbuf, ybuf, bbuf;
  const float* x = nullptr;
  index_t ldx = 0;
  float* y = nullptr;
  index_t ldy = 0;
  const float* bias = nullptr;

  FloatIo(const MatrixView<const TX>& xv, const MatrixView<TY>& yv, const TY* b) {
    const index_t M = xv.rows(), K = xv.cols(), N = yv.cols();
    if constexpr (std::is_same_v<TX, float>) {
      x = xv.data();
      ldx = xv.row_stride();
    } else {
      xbuf.resize(static_cast<std::size_t>(M * K));
      for (index_t m = 0; m < M; ++m)
        for (index_t k = 0; k < K; ++k) xbuf[static_cast<std::size_t>(m * K + k)] = static_cast<float>(xv(m, k));
      x = xbuf.data();
      ldx = K;
    }
    if constexpr (std::is_same_v<TY, float>) {
      y = yv.data();
      ldy = yv.row_stride();
    } else {
      ybuf.resize(static_cast<std::size_t>(M * N));
      y = ybuf.data();
      ldy = N;
    }
    if (b) {
      if constexpr (std::is_same_v<TY, float>) {
        bias = b;
      } else {
        bbuf.resize(static_cast<std::size_t>(N));
        for (index_t c = 0; c < N; ++c) bbuf[static_cast<std::size_t>(c)] = static_cast<float>(b[c]);
        bias = bbuf.data();
      }
    }
  }
  /// Converts the float result into y when y is stored narrower (no-op for float).
  void write_back(const MatrixView<TY>& yv) const {
    if constexpr (!std::is_same_v<TY, float>) {
      for (index_t m = 0; m < yv.rows(); ++m)
        for (index_t c = 0; c < yv.cols(); ++c) yv(m, c) = static_cast<TY>(ybuf[static_cast<std::size_t>(m * yv.cols() + c)]);
    }
  }
};

}  // namespace w4cpu
}  // namespace detail
}  // namespace awq
