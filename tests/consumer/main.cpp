// Quantizes an Eigen matrix through the installed headers and checks the error bound.
#include <awq/awq.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdio>

#ifdef __CUDACC__
#error "awq/awq.hpp must not need a CUDA compiler"
#endif

int main() {
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(64, 256) * 0.02f;
  Eigen::MatrixXf w_hat(64, 256);
  Eigen::MatrixXf scales(64, 2);
  awq::pseudo_quantize(awq::QuantSpec{4, 128, true}, awq::as_view(w), awq::as_view(w_hat),
                       {{}, awq::as_view(scales), {}});
  const float max_err = (w - w_hat).cwiseAbs().maxCoeff();
  const float bound = 0.5f * scales.maxCoeff() * 1.0001f;
  std::printf("consumer: max |w - w_hat| = %.3g (bound %.3g)\n", static_cast<double>(max_err), static_cast<double>(bound));
  return max_err <= bound ? 0 : 1;
}
