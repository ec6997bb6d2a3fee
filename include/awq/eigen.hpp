/// \file
/// \brief Zero-copy adaptors from Eigen dense objects (Matrix, Map, Ref, blocks) to awq views.
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "awq/view.hpp"

namespace awq {

/// \brief A MatrixView over the memory of any Eigen dense expression with direct access
///        (Matrix, Array, Map, Ref, Block of those). No copy is made.
///
/// The element type is const when the Eigen object is read-only (a const object, or a
/// `Map<const ...>`). Strides follow Eigen's inner/outer strides and storage order.
template <class E, class D = std::decay_t<E>,
          class = std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<D>, D>>>
auto as_view(E&& m) {
  static_assert(static_cast<bool>(Eigen::internal::traits<D>::Flags & Eigen::DirectAccessBit),
                "awq::as_view: the Eigen expression has no direct memory access; evaluate it first");
  using Ptr = decltype(m.data());
  using T = std::remove_pointer_t<Ptr>;
  const index_t inner = m.innerStride();
  const index_t outer = m.outerStride();
  if constexpr (static_cast<bool>(D::IsRowMajor)) {
    return MatrixView<T>(m.data(), m.rows(), m.cols(), outer, inner);
  } else {
    return MatrixView<T>(m.data(), m.rows(), m.cols(), inner, outer);
  }
}

/// \brief A VectorView over an Eigen vector with direct access (no copy).
template <class E, class D = std::decay_t<E>,
          class = std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<D>, D>>>
auto as_vector_view(E&& v) {
  static_assert(D::IsVectorAtCompileTime, "awq::as_vector_view: the Eigen object is not a vector");
  using T = std::remove_pointer_t<decltype(v.data())>;
  return VectorView<T>(v.data(), v.size(), v.innerStride());
}

/// \brief An Eigen::Map over a view with a row-contiguous or column-contiguous layout (no copy).
template <class T>
auto as_eigen(const MatrixView<T>& v) {
  using S = std::remove_cv_t<T>;
  using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MapT = Eigen::Map<std::conditional_t<std::is_const_v<T>, const Mat, Mat>, 0,
                          Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  return MapT(v.data(), v.rows(), v.cols(), Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(v.row_stride(), v.col_stride()));
}

}  // namespace awq
