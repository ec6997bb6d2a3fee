// Views: strided, transposed and Eigen-adapted views give the results of contiguous copies.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <vector>

#include "awq/awq.hpp"
#include "support.hpp"

using namespace awq_test;

TEST_CASE("views: element addressing for row-major, column-major and arbitrary strides") {
  std::vector<int> a(24);
  for (int i = 0; i < 24; ++i) a[static_cast<std::size_t>(i)] = i;
  auto r = awq::make_row_major(a.data(), 4, 6);
  auto c = awq::make_col_major(a.data(), 6, 4);
  CHECK(r(2, 3) == 15);
  CHECK(c(3, 2) == 15);
  CHECK(r.transpose()(3, 2) == 15);
  auto b = r.block(1, 2, 2, 3);
  CHECK(b(0, 0) == 8);
  CHECK(b(1, 2) == 16);
  awq::MatrixView<int> odd(a.data(), 3, 4, 7, 2);  // every other element of rows 7 apart
  CHECK(odd(2, 3) == 20);
  awq::MatrixView<const int> cv = r;  // mutable -> const
  CHECK(cv(3, 5) == 23);
  CHECK(r.middle_cols(4, 2)(0, 1) == 5);
}

TEST_CASE("pseudo-quantize through strided, transposed and sub-block views equals contiguous") {
  const long rows = 16, cols = 256;
  const auto w = cast_vec<float>(random_weights(rows, cols, Dist::outliers, 11));
  std::vector<float> ref(w.size(), poison());
  const awq::QuantSpec spec{3, 64, true};
  awq::pseudo_quantize(spec, awq::make_row_major(w.data(), rows, cols), awq::make_row_major(ref.data(), rows, cols));

  SUBCASE("column-major storage") {
    std::vector<float> cm(w.size()), out(w.size(), poison());
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) cm[static_cast<std::size_t>(c * rows + r)] = w[static_cast<std::size_t>(r * cols + c)];
    auto in = awq::make_col_major<const float>(cm.data(), rows, cols);
    auto o = awq::make_col_major(out.data(), rows, cols);
    awq::pseudo_quantize(spec, in, o);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) REQUIRE(o(r, c) == ref[static_cast<std::size_t>(r * cols + c)]);
  }
  SUBCASE("transposed view of an [in, out] matrix") {
    std::vector<float> t(w.size()), out(w.size(), poison());
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) t[static_cast<std::size_t>(c * rows + r)] = w[static_cast<std::size_t>(r * cols + c)];
    auto in = awq::make_row_major<const float>(t.data(), cols, rows).transpose();
    awq::pseudo_quantize(spec, in, awq::make_row_major(out.data(), rows, cols));
    CHECK(out == ref);
  }
  SUBCASE("sub-block of a padded matrix, in place") {
    const long ld = cols + 40;
    std::vector<float> big(static_cast<std::size_t>((rows + 3) * ld), -7.0f);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) big[static_cast<std::size_t>((r + 2) * ld + c + 5)] = w[static_cast<std::size_t>(r * cols + c)];
    auto v = awq::make_row_major(big.data(), rows + 3, ld).block(2, 5, rows, cols);
    awq::pseudo_quantize(spec, v, v);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) REQUIRE(v(r, c) == ref[static_cast<std::size_t>(r * cols + c)]);
    CHECK(big[0] == -7.0f);                       // padding untouched
    CHECK(big[static_cast<std::size_t>(2 * ld + 4)] == -7.0f);
    CHECK(big[static_cast<std::size_t>(2 * ld + 5 + cols)] == -7.0f);
  }
  SUBCASE("Eigen Matrix, Map, Ref and blocks, without copies") {
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> m(rows, cols);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) m(r, c) = w[static_cast<std::size_t>(r * cols + c)];
    Eigen::MatrixXf cm = m;  // column-major copy
    Eigen::MatrixXf out(rows, cols);
    out.setConstant(poison());
    auto vin = awq::as_view(m);
    CHECK(vin.data() == m.data());
    awq::pseudo_quantize(spec, awq::as_view(cm), awq::as_view(out));
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) REQUIRE(out(r, c) == ref[static_cast<std::size_t>(r * cols + c)]);

    Eigen::Map<const Eigen::MatrixXf> map(cm.data(), rows, cols);
    auto mv = awq::as_view(map);
    static_assert(std::is_same_v<decltype(mv), awq::MatrixView<const float>>);
    Eigen::Ref<Eigen::MatrixXf> ref_in(out);
    awq::pseudo_quantize(spec, mv, awq::as_view(ref_in));
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) REQUIRE(out(r, c) == ref[static_cast<std::size_t>(r * cols + c)]);

    Eigen::MatrixXf big = Eigen::MatrixXf::Constant(rows + 4, cols + 4, 3.0f);
    big.block(1, 2, rows, cols) = cm;
    auto bv = awq::as_view(big.block(1, 2, rows, cols));
    CHECK(bv.col_stride() == rows + 4);
    awq::pseudo_quantize(spec, bv, bv);
    CHECK(big(0, 0) == 3.0f);
    for (long r = 0; r < rows; ++r)
      for (long c = 0; c < cols; ++c) REQUIRE(big(r + 1, c + 2) == ref[static_cast<std::size_t>(r * cols + c)]);
    auto back = awq::as_eigen(awq::make_row_major(ref.data(), rows, cols));
    CHECK(back(3, 7) == ref[static_cast<std::size_t>(3 * cols + 7)]);
  }
}
