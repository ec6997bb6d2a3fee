// Quantize one synthetic LLM-like layer with every bit width and group size and print the
// error table: relative Frobenius error of W, relative error of X·Wᵀ on heavy-tailed
// activations, and time per config.
//
// usage: quantize_layer [--out N] [--in N] [--tokens N] [--seed N]
#include <awq/awq.hpp>

#include <Eigen/Core>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

long arg_long(int argc, char** argv, const char* name, long def) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == name) return std::strtol(argv[i + 1], nullptr, 10);
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const long out = arg_long(argc, argv, "--out", 1024);
  const long in = arg_long(argc, argv, "--in", 1024);
  const long tokens = arg_long(argc, argv, "--tokens", 256);
  const auto seed = static_cast<unsigned>(arg_long(argc, argv, "--seed", 1));

  std::mt19937 rng(seed);
  std::student_t_distribution<float> t3(3.0f);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  Eigen::MatrixXf w(out, in), x(tokens, in);
  for (long r = 0; r < out; ++r)
    for (long c = 0; c < in; ++c) w(r, c) = 0.02f * t3(rng);
  for (long t = 0; t < tokens; ++t)
    for (long c = 0; c < in; ++c) x(t, c) = n01(rng) * (c % 97 == 0 ? 30.0f : 1.0f);  // a few salient channels
  const Eigen::MatrixXf y = x * w.transpose();

  std::printf("layer %ld x %ld, %ld tokens, Student-t(3) weights, 1%% activation channels x30\n", out, in, tokens);
  std::printf("%-14s %12s %12s %10s\n", "config", "rel_err(W)", "rel_err(XW)", "ms");
  Eigen::MatrixXf w_hat(out, in);
  for (int bits : {8, 6, 5, 4, 3, 2}) {
    for (int group : {32, 64, 128, awq::kPerChannel}) {
      const awq::QuantSpec spec{bits, group, true};
      const auto t0 = std::chrono::steady_clock::now();
      awq::pseudo_quantize(spec, awq::as_view(w), awq::as_view(w_hat));
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      const double ew = (w - w_hat).norm() / w.norm();
      const double ey = (y - x * w_hat.transpose()).norm() / y.norm();
      std::printf("%-14s %12.5f %12.5f %10.2f\n", spec.name().c_str(), ew, ey, ms);
    }
  }
  return 0;
}
