// The smallest useful embedding: quantize a weight an engine already holds in an Eigen matrix,
// pack it in the AutoAWQ GEMM layout and check the round trip. Used in the API docs.
#include <awq/awq.hpp>

#include <Eigen/Core>
#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  const int out = 256, in = 512, group = 128;
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(out, in) * 0.05f;  // the engine's weight [out, in]

  // Codes, scales and zeros for W4 g128 with zero point.
  Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> codes(out, in);
  Eigen::MatrixXf scales(out, in / group), zeros(out, in / group);
  awq::quantize(awq::QuantSpec{4, group, true}, awq::as_view(w), awq::as_view(codes),
                {{}, awq::as_view(scales), awq::as_view(zeros)});

  // AutoAWQ GEMM layout: qweight [in, out/8] int32.
  std::vector<std::int32_t> qweight(static_cast<std::size_t>(in) * out / 8);
  awq::pack_awq_gemm(awq::as_view(codes), awq::make_row_major(qweight.data(), in, out / 8));

  // Unpack and dequantize; compare with the original.
  Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> back(out, in);
  awq::unpack_awq_gemm(awq::make_row_major<const std::int32_t>(qweight.data(), in, out / 8), awq::as_view(back));
  Eigen::MatrixXf w_hat(out, in);
  awq::dequantize<float>(4, awq::as_view(back), awq::as_view(scales), awq::as_view(zeros), awq::as_view(w_hat));
  const float err = (w - w_hat).cwiseAbs().maxCoeff();
  std::printf("W4 g128: max |w - w_hat| = %.4g, max scale / 2 = %.4g\n", static_cast<double>(err),
              static_cast<double>(scales.maxCoeff() / 2));
  return (back == codes && err <= scales.maxCoeff() * 0.5001f) ? 0 : 1;
}
