// Quantize one synthetic LLM-like layer with every bit width and group size and print the
// error table: relative Frobenius error of W, relative error of X·Wᵀ on heavy-tailed
// activations, and time per config. Then what AWQ does to the salient input channels (1 % of
// them, activations x30): the scale search on this layer, and the error of those channels' share
// of the output, x_S·W_Sᵀ, after RTN and after AWQ. Fails (exit 1) when AWQ is not better there.
//
// usage: quantize_layer [--out N] [--in N] [--tokens N] [--seed N]
#include <awq/awq.hpp>

#include <Eigen/Core>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

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

  // AWQ: scales s = mean|x|^α per input channel, α searched on this layer's output; the weight
  // stored is Q(W·diag(s))·diag(s)⁻¹ (in an engine s folds into the previous norm or linear).
  Eigen::VectorXf salient = Eigen::VectorXf::Zero(in);
  for (long c = 0; c < in; c += 97) salient(c) = 1.0f;
  const Eigen::MatrixXf x_s = x * salient.asDiagonal();  // only the salient channels
  const Eigen::MatrixXf y_s = x_s * w.transpose();
  std::printf("\nAWQ on the salient channels' share of the output, x_S.W_S^T (rel. error):\n");
  std::printf("%-14s %7s %12s %12s %12s %12s %8s\n", "config", "alpha", "RTN salient", "AWQ salient", "RTN XW", "AWQ XW",
              "ms");
  bool better = true;
  Eigen::MatrixXf w_rtn(out, in), w_awq(out, in);
  for (int bits : {4, 3}) {
    const awq::QuantSpec spec{bits, 128, true};
    if (in % 128 != 0) break;
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<awq::Linear<float>> lin{{awq::as_view(std::as_const(w))}};
    awq::ScaleSearchOptions so;
    so.quant = spec;
    const auto r = awq::search_scales(awq::as_view(std::as_const(x)), lin, awq::LinearsBlock<float>(lin), so);
    const Eigen::VectorXf s = Eigen::Map<const Eigen::VectorXf>(r.scales.data(), in);
    const Eigen::MatrixXf w_scaled = w * s.asDiagonal();
    awq::pseudo_quantize(spec, awq::as_view(w_scaled), awq::as_view(w_awq));
    w_awq = w_awq * s.cwiseInverse().asDiagonal();
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    awq::pseudo_quantize(spec, awq::as_view(w), awq::as_view(w_rtn));
    const double rtn_s = (y_s - x_s * w_rtn.transpose()).norm() / y_s.norm();
    const double awq_s = (y_s - x_s * w_awq.transpose()).norm() / y_s.norm();
    const double rtn_y = (y - x * w_rtn.transpose()).norm() / y.norm();
    const double awq_y = (y - x * w_awq.transpose()).norm() / y.norm();
    std::printf("%-14s %7.2f %12.5f %12.5f %12.5f %12.5f %8.1f\n", spec.name().c_str(), r.best_alpha, rtn_s, awq_s, rtn_y,
                awq_y, ms);
    better = better && awq_s < rtn_s && awq_y <= rtn_y;
  }
  return better ? 0 : 1;
}
