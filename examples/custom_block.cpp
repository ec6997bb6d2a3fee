// Your own block in the scale search: the search judges candidate scales by the output of any
// callable you give it, here a single-head causal attention fed by q, k and v projections (what
// llm-awq does for q/k/v: the loss is the attention output, not the three linears' outputs).
//
// A block is a callable (x, weights, out) with output_cols(): x [tokens, in] and the weights
// [out_i, in] in the order of the linears given to search_scales (row-major, contiguous rows,
// whatever layout the caller's views have), out [tokens, output_cols()] to fill.
//
// Prints the loss curve's ends and the chosen α, then checks that folding the scales leaves the
// full-precision block output unchanged and that the search beats plain RTN (α = 0).
#include <awq/awq.hpp>

#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// softmax(q·kᵀ / √d, causal) · v, with q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ.
struct CausalAttention {
  awq::index_t head_dim;

  awq::index_t output_cols() const { return head_dim; }

  void operator()(const awq::MatrixView<const float>& x, const std::vector<awq::MatrixView<const float>>& w,
                  const awq::MatrixView<float>& out) const {
    const awq::index_t t = x.rows();
    RowMajor q(t, head_dim), k(t, head_dim), v(t, head_dim);
    // backend::cpu::linear is the search's own product (all cores); any code of yours works here.
    awq::backend::cpu::linear<float>(x, w[0], nullptr, awq::as_view(q));
    awq::backend::cpu::linear<float>(x, w[1], nullptr, awq::as_view(k));
    awq::backend::cpu::linear<float>(x, w[2], nullptr, awq::as_view(v));
    RowMajor p = (q * k.transpose()) / std::sqrt(static_cast<float>(head_dim));
    for (awq::index_t i = 0; i < t; ++i) {
      const float m = p.row(i).head(i + 1).maxCoeff();
      p.row(i).head(i + 1) = (p.row(i).head(i + 1).array() - m).exp().matrix();
      p.row(i).tail(t - i - 1).setZero();
      p.row(i) /= p.row(i).sum();
    }
    awq::as_eigen(out) = p * v;
  }
};

/// The block on the engine's column-major matrices, outside the search: blocks take row-major views.
RowMajor evaluate(const CausalAttention& attn, const Eigen::MatrixXf& x, const Eigen::MatrixXf& wq,
                  const Eigen::MatrixXf& wk, const Eigen::MatrixXf& wv) {
  const RowMajor xr = x, q = wq, k = wk, v = wv;
  RowMajor out(x.rows(), attn.output_cols());
  attn(awq::as_view(xr), {awq::as_view(q), awq::as_view(k), awq::as_view(v)}, awq::as_view(out));
  return out;
}

}  // namespace

int main() {
  const awq::index_t tokens = 128, in = 256, d = 64;
  std::mt19937 rng(7);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  // Column-major Eigen matrices, as an engine may hold them: the search takes any layout.
  Eigen::MatrixXf x(tokens, in), wq(d, in), wk(d, in), wv(d, in);
  for (awq::index_t c = 0; c < in; ++c)
    for (awq::index_t r = 0; r < tokens; ++r) x(r, c) = n01(rng) * (c % 31 == 0 ? 20.0f : 1.0f);  // salient channels
  for (Eigen::MatrixXf* w : {&wq, &wk, &wv})
    for (awq::index_t i = 0; i < w->size(); ++i) w->data()[i] = 0.05f * n01(rng);

  const CausalAttention attn{d};
  std::vector<awq::Linear<float>> lin{{awq::as_view(wq)}, {awq::as_view(wk)}, {awq::as_view(wv)}};
  awq::ScaleSearchOptions opt;
  opt.quant = {3, 64, true};
  const auto r = awq::search_scales(awq::as_view(x), lin, attn, opt);
  std::printf("custom block: W3 g64 over q/k/v, judged on the attention output\n");
  std::printf("  loss at alpha 0 (RTN) %.4g, best %.4g at alpha %.2f\n", r.losses.front(),
              r.losses[static_cast<std::size_t>(r.best_index)], r.best_alpha);

  // Folding: W·diag(s) and x·diag(s)⁻¹ compute the same attention in full precision.
  const RowMajor before = evaluate(attn, x, wq, wk, wv);
  const auto s = awq::make_vector<const float>(r.scales.data(), in);
  for (Eigen::MatrixXf* w : {&wq, &wk, &wv}) awq::scale_linear_inputs(awq::as_view(*w), s);
  awq::scale_activations(awq::as_view(x), s);
  const RowMajor after = evaluate(attn, x, wq, wk, wv);
  const double fold_err = (after - before).norm() / before.norm();
  std::printf("  folding the scales changes the fp32 output by %.2g (relative)\n", fold_err);
  return fold_err < 1e-5 && r.losses[static_cast<std::size_t>(r.best_index)] < r.losses.front() ? 0 : 1;
}
