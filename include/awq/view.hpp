/// \file
/// \brief Non-owning views (pointer + extents + strides) over memory the caller owns.
///
/// A view never allocates and never copies. Strides are in elements and may be any value,
/// so row-major, column-major, transposed and sub-block views are all the same type.
/// Adaptors from Eigen objects live in awq/eigen.hpp.
#pragma once

#include <type_traits>

#include "awq/config.hpp"
#include "awq/error.hpp"
#include "awq/macros.hpp"

namespace awq {

/// \brief A rows × cols matrix at `data` with element (r, c) at `data[r*row_stride + c*col_stride]`.
/// \tparam T element type; `const T` for a read-only view. A `MatrixView<T>` converts to
///           `MatrixView<const T>`.
/// \sa make_row_major, make_col_major, as_view
template <class T>
class MatrixView {
 public:
  using element_type = T;                      ///< possibly const element
  using value_type = std::remove_cv_t<T>;      ///< element without const

  /// An empty view.
  MatrixView() = default;

  /// \pre `data` is non-null unless rows * cols == 0; rows, cols >= 0.
  MatrixView(T* data, index_t rows, index_t cols, index_t row_stride, index_t col_stride)
      : data_(data), rows_(rows), cols_(cols), rs_(row_stride), cs_(col_stride) {
    detail::require(rows >= 0 && cols >= 0, "awq::MatrixView: negative extent rows=", rows, ", cols=", cols);
    detail::require(data != nullptr || rows * cols == 0, "awq::MatrixView: data is null but rows=", rows,
                    ", cols=", cols);
  }

  /// Mutable → const conversion.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  MatrixView(const MatrixView<U>& o)  // NOLINT(google-explicit-constructor): as std::span
      : data_(o.data()), rows_(o.rows()), cols_(o.cols()), rs_(o.row_stride()), cs_(o.col_stride()) {}

  AWQ_HOST_DEVICE T* data() const noexcept { return data_; }            ///< first element
  AWQ_HOST_DEVICE index_t rows() const noexcept { return rows_; }       ///< number of rows
  AWQ_HOST_DEVICE index_t cols() const noexcept { return cols_; }       ///< number of columns
  AWQ_HOST_DEVICE index_t row_stride() const noexcept { return rs_; }   ///< elements between rows
  AWQ_HOST_DEVICE index_t col_stride() const noexcept { return cs_; }   ///< elements between columns
  AWQ_HOST_DEVICE index_t size() const noexcept { return rows_ * cols_; }  ///< rows × cols
  AWQ_HOST_DEVICE bool empty() const noexcept { return size() == 0; }   ///< no element?

  /// Element (r, c); unchecked.
  AWQ_HOST_DEVICE T& operator()(index_t r, index_t c) const noexcept { return data_[r * rs_ + c * cs_]; }
  /// Pointer to the start of row r; unchecked.
  AWQ_HOST_DEVICE T* row_ptr(index_t r) const noexcept { return data_ + r * rs_; }
  /// Are the elements of a row adjacent in memory?
  AWQ_HOST_DEVICE bool row_contiguous() const noexcept { return cs_ == 1 || cols_ <= 1; }

  /// The transposed view (no copy).
  MatrixView transpose() const noexcept { return MatrixView(data_, cols_, rows_, cs_, rs_, Unchecked{}); }
  /// The nr × nc block starting at (r0, c0); throws awq::Error when it does not fit.
  MatrixView block(index_t r0, index_t c0, index_t nr, index_t nc) const {
    detail::require(r0 >= 0 && c0 >= 0 && nr >= 0 && nc >= 0 && r0 + nr <= rows_ && c0 + nc <= cols_,
                    "awq::MatrixView::block: (", r0, ", ", c0, ") + ", nr, "x", nc, " exceeds ", rows_, "x", cols_);
    return MatrixView(nr * nc == 0 ? data_ : data_ + r0 * rs_ + c0 * cs_, nr, nc, rs_, cs_, Unchecked{});
  }
  /// Rows [r0, r0 + n).
  MatrixView middle_rows(index_t r0, index_t n) const { return block(r0, 0, n, cols_); }
  /// Columns [c0, c0 + n).
  MatrixView middle_cols(index_t c0, index_t n) const { return block(0, c0, rows_, n); }

 private:
  struct Unchecked {};
  MatrixView(T* d, index_t r, index_t c, index_t rs, index_t cs, Unchecked) noexcept
      : data_(d), rows_(r), cols_(c), rs_(rs), cs_(cs) {}

  T* data_ = nullptr;
  index_t rows_ = 0;
  index_t cols_ = 0;
  index_t rs_ = 0;
  index_t cs_ = 1;
};

/// \brief A length-n vector at `data` with element i at `data[i*stride]`.
/// \tparam T element type; `const T` for a read-only view.
template <class T>
class VectorView {
 public:
  using element_type = T;                  ///< possibly const element
  using value_type = std::remove_cv_t<T>;  ///< element without const

  /// An empty view.
  VectorView() = default;
  /// \pre `data` is non-null unless size == 0; size >= 0.
  VectorView(T* data, index_t size, index_t stride = 1) : data_(data), n_(size), stride_(stride) {
    detail::require(size >= 0, "awq::VectorView: negative size ", size);
    detail::require(data != nullptr || size == 0, "awq::VectorView: data is null but size=", size);
  }
  /// Mutable → const conversion.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  VectorView(const VectorView<U>& o)  // NOLINT(google-explicit-constructor)
      : data_(o.data()), n_(o.size()), stride_(o.stride()) {}

  AWQ_HOST_DEVICE T* data() const noexcept { return data_; }          ///< first element
  AWQ_HOST_DEVICE index_t size() const noexcept { return n_; }        ///< number of elements
  AWQ_HOST_DEVICE index_t stride() const noexcept { return stride_; } ///< elements between neighbours
  AWQ_HOST_DEVICE bool empty() const noexcept { return n_ == 0; }     ///< no element?
  /// Element i; unchecked.
  AWQ_HOST_DEVICE T& operator[](index_t i) const noexcept { return data_[i * stride_]; }

 private:
  T* data_ = nullptr;
  index_t n_ = 0;
  index_t stride_ = 1;
};

/// Row-major view of `rows × cols` elements with leading dimension `ld` (default: cols).
template <class T>
MatrixView<T> make_row_major(T* data, index_t rows, index_t cols, index_t ld = -1) {
  if (ld < 0) ld = cols;
  detail::require(ld >= cols, "awq::make_row_major: leading dimension ", ld, " is smaller than cols ", cols);
  return MatrixView<T>(data, rows, cols, ld, 1);
}

/// Column-major view of `rows × cols` elements with leading dimension `ld` (default: rows).
template <class T>
MatrixView<T> make_col_major(T* data, index_t rows, index_t cols, index_t ld = -1) {
  if (ld < 0) ld = rows;
  detail::require(ld >= rows, "awq::make_col_major: leading dimension ", ld, " is smaller than rows ", rows);
  return MatrixView<T>(data, rows, cols, 1, ld);
}

/// Contiguous vector view.
template <class T>
VectorView<T> make_vector(T* data, index_t size) {
  return VectorView<T>(data, size, 1);
}

namespace detail {

/// Throws unless `v` is rows × cols; `what` names the argument.
template <class T>
void require_shape(const MatrixView<T>& v, index_t rows, index_t cols, const char* fn, const char* what) {
  require(v.rows() == rows && v.cols() == cols, fn, ": ", what, " is ", v.rows(), "x", v.cols(),
          " but must be ", rows, "x", cols);
}

/// Throws unless `v` has n elements; `what` names the argument.
template <class T>
void require_size(const VectorView<T>& v, index_t n, const char* fn, const char* what) {
  require(v.size() == n, fn, ": ", what, " has ", v.size(), " elements but must have ", n);
}

}  // namespace detail
}  // namespace awq
