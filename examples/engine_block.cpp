// An engine plugging its own block into awq's model driver: its own layer struct and storage
// (the weight source), its own forward (the architecture policy), the library's search, fold,
// clip, quantization and per-block loop. The block: h + W_down · relu(W_up · rmsnorm(h)).
#include <awq/model/pipeline.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using Cpu = awq::backend::cpu;
using awq::index_t;
using awq::MatrixView;
namespace am = awq::model;

// ---- the engine's own model ---------------------------------------------------------------
struct EngineLayer {
  std::vector<float> norm, up, down;  // [H], [F, H], [H, F]
};

struct EngineModel {
  am::ModelConfig cfg;
  std::vector<EngineLayer> layers;

  // The weight source: one tensor at a time, by name ("layers.3.up.weight"), shape-checked.
  const am::ModelConfig& config() const { return cfg; }
  bool contains(const std::string& name) const { return name.rfind("layers.", 0) == 0; }
  std::vector<float> load(const std::string& name, const std::vector<std::int64_t>& shape) const {
    const std::size_t dot = name.find('.', 7);
    const EngineLayer& l = layers.at(std::stoul(name.substr(7, dot - 7)));
    const std::string t = name.substr(dot + 1);
    const std::vector<float>& v = t == "norm.weight" ? l.norm : t == "up.weight" ? l.up : l.down;
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    awq::detail::require(v.size() == n, "engine: ", name, " has ", v.size(), " values, expected ", n);
    return v;
  }
};

// ---- the architecture policy: the block's groups and its forward ---------------------------
struct EngineArch {
  static constexpr const char* name = "engine-mlp";
  static constexpr int n_inputs = 2;  // the up input (normed h) and the down input (relu(up))
  static void check(const am::ModelConfig&) {}
  static std::string block_prefix(int layer) { return "layers." + std::to_string(layer) + "."; }
  static std::vector<am::TensorSpec> block_tensors(const am::ModelConfig& c) {
    return {{"norm.weight", {c.hidden}}, {"up.weight", {c.intermediate, c.hidden}}, {"down.weight", {c.hidden, c.intermediate}}};
  }
  static std::vector<std::string> linears(const am::ModelConfig&) { return {"up", "down"}; }
  static std::vector<am::LinearGroup> groups(const am::ModelConfig&) {
    using P = am::LinearGroup::Prev;
    return {{"up", {"up"}, P::norm, "norm", 0, "mlp"}, {"down", {"down"}, P::linear, "up", 1, ""}};
  }
  static std::vector<am::ClipTarget> clip_targets(const am::ModelConfig&) { return {{"up", "up", 0}, {"down", "down", 1}}; }
  static index_t input_cols(const am::ModelConfig& c, int slot) { return slot == 0 ? c.hidden : c.intermediate; }

  static void relu_up(const MatrixView<const float>& x, const MatrixView<const float>& w, const MatrixView<float>& a) {
    Cpu::linear<float>(x, w, nullptr, a);
    for (index_t r = 0; r < a.rows(); ++r)
      for (index_t c = 0; c < a.cols(); ++c) a(r, c) = std::max(a(r, c), 0.0f);
  }
  struct Mlp {  // the loss module of the "up" group: relu(x · upᵀ) · downᵀ
    const am::Block<Cpu>* blk;
    index_t output_cols() const { return blk->at("down.weight").rows; }
    void operator()(const MatrixView<const float>& x, const std::vector<MatrixView<const float>>& w, const MatrixView<float>& out) const {
      std::vector<float> a(static_cast<std::size_t>(x.rows() * w[0].rows()));
      const auto av = awq::make_row_major(a.data(), x.rows(), w[0].rows());
      relu_up(x, w[0], av);
      Cpu::linear<float>(MatrixView<const float>(av), blk->at("down.weight").matrix(), nullptr, out);
    }
  };
  template <class Backend, class F>
  static void with_module(const am::ModelConfig&, const am::Batch&, const am::Block<Backend>& blk, const am::LinearGroup& g, F&& f) {
    if (g.module == "mlp") return f(Mlp{&blk});
    f(awq::LinearsBlock<float, Backend>({{blk.at("down.weight").matrix(), nullptr}}));
  }
  template <class Backend>
  static void forward(const am::ModelConfig& c, const am::Batch&, const am::Block<Backend>& blk, const MatrixView<const float>& x,
                      const MatrixView<float>& out, std::vector<am::Tensor<Backend>>* cap) {
    std::vector<am::Tensor<Backend>> local(2);
    auto& in = cap ? *cap : local;
    in.resize(2);
    for (int s = 0; s < 2; ++s) in[s] = {std::vector<float>(static_cast<std::size_t>(x.rows() * input_cols(c, s))), x.rows(), input_cols(c, s)};
    const auto xn = in[0].matrix(), a = in[1].matrix();
    const float* g = blk.at("norm.weight").data.data();
    for (index_t t = 0; t < x.rows(); ++t) {
      float ss = 0;
      for (index_t i = 0; i < x.cols(); ++i) ss += x(t, i) * x(t, i);
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(x.cols()) + c.norm_eps);
      for (index_t i = 0; i < x.cols(); ++i) xn(t, i) = g[i] * x(t, i) * inv;
    }
    relu_up(MatrixView<const float>(xn), blk.at("up.weight").matrix(), a);
    Cpu::linear<float>(MatrixView<const float>(a), blk.at("down.weight").matrix(), nullptr, out);
    for (index_t t = 0; t < x.rows(); ++t)
      for (index_t i = 0; i < x.cols(); ++i) out(t, i) += x(t, i);
  }
};

int main() {
  EngineModel m;
  m.cfg.hidden = 128, m.cfg.intermediate = 256, m.cfg.layers = 3, m.cfg.norm_eps = 1e-6f;
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  auto rnd = [&](std::size_t k, float s) { std::vector<float> v(k); for (auto& x : v) x = s * n(rng); return v; };
  for (int l = 0; l < m.cfg.layers; ++l) {
    EngineLayer e{rnd(128, 0.2f), rnd(256 * 128, 0.09f), rnd(128 * 256, 0.06f)};
    for (auto& g : e.norm) g += 1.0f;
    e.norm[5] = 12.0f;  // a salient channel
    m.layers.push_back(e);
  }
  const am::Batch calib{4, 64}, eval{2, 64};
  std::vector<am::Stream> streams = {{am::StreamKind::fp, eval, rnd(128 * 128, 1.0f)}};
  streams.push_back({am::StreamKind::rtn, eval, streams[0].hidden});
  streams.push_back({am::StreamKind::awq, eval, streams[0].hidden});
  am::PipelineOptions opt;
  opt.block.quant = awq::QuantSpec{3, 64, true};
  am::quantize_model<Cpu, EngineArch>(m, calib, rnd(256 * 128, 1.0f), streams, opt, [](const am::QuantizedBlock& b) {
    std::printf("block %d: alpha up %.2f, down %.2f\n", b.index, b.result.scales.at("up").best_alpha, b.result.scales.at("down").best_alpha);
  });
  auto err = [&](const std::vector<float>& y) {
    double e = 0, r = 0;
    for (std::size_t i = 0; i < y.size(); ++i) e += std::pow(y[i] - streams[0].hidden[i], 2), r += std::pow(streams[0].hidden[i], 2);
    return e / r;
  };
  const double rtn = err(streams[1].hidden), aw = err(streams[2].hidden);
  std::printf("relative output error after 3 blocks, W3 g64: RTN %.3e, AWQ %.3e\n", rtn, aw);
  return aw < rtn ? 0 : 1;
}
