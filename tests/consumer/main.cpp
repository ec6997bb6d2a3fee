// Quantizes an Eigen matrix through the installed headers and checks the error bound; with the
// json part, round-trips a safetensors header (awq/io/safetensors.hpp needs nlohmann_json).
#include <awq/awq.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#ifdef AWQ_CONSUMER_JSON
#include <awq/io/safetensors.hpp>
#endif

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
  if (!(max_err <= bound)) return 1;
#ifdef AWQ_CONSUMER_JSON
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::vector<std::uint8_t> bytes(8 + header.size() + 8, 0);
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  const auto f = awq::io::SafetensorsFile::from_bytes(bytes);
  std::printf("consumer: safetensors header read, tensor w present: %d\n", static_cast<int>(f.contains("w")));
  if (!f.contains("w")) return 1;
#endif
  return 0;
}
