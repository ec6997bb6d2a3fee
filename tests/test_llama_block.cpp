// The example engine's Llama layer and per-block AWQ flow against llm-awq's run_awq on the same
// layer (golden data): the block output, every group's chosen index, scales and clip bounds.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "llama/llama_block.hpp"
#include "support.hpp"

using namespace awq_test;
using awq_example::Mat;

namespace {

Mat to_mat(const Tensor& t) {
  Mat m(t.rows(), t.cols());
  std::copy(t.data.begin(), t.data.end(), m.data());
  return m;
}

// The example engine's group name for one of run_awq's scale groups.
std::string group_key(const nlohmann::json& g) {
  const auto layers = g.at("layers").dump();
  if (layers.find("q_proj") != std::string::npos) return "qkv";
  if (layers.find("o_proj") != std::string::npos) return "o";
  if (layers.find("gate_proj") != std::string::npos) return "gate_up";
  return "down";
}

void check_case(const std::string& c) {
  const auto meta = golden_meta(c);
  const auto& p = meta.at("params");
  awq_example::LlamaConfig cfg;
  cfg.hidden = p.at("hidden_size");
  cfg.intermediate = p.at("intermediate_size");
  cfg.n_heads = p.at("num_attention_heads");
  cfg.n_kv_heads = p.at("num_key_value_heads");
  cfg.head_dim = p.at("head_dim");
  cfg.rms_eps = p.at("rms_norm_eps");
  cfg.rope_theta = p.at("rope_theta");
  const awq_example::Batch b{p.at("n_sequences").get<int>(), p.at("seq_len").get<int>()};
  awq_example::LlamaLayer l;
  l.wq = to_mat(golden_tensor(c, "self_attn.q_proj.weight"));
  l.wk = to_mat(golden_tensor(c, "self_attn.k_proj.weight"));
  l.wv = to_mat(golden_tensor(c, "self_attn.v_proj.weight"));
  l.wo = to_mat(golden_tensor(c, "self_attn.o_proj.weight"));
  l.wg = to_mat(golden_tensor(c, "mlp.gate_proj.weight"));
  l.wu = to_mat(golden_tensor(c, "mlp.up_proj.weight"));
  l.wd = to_mat(golden_tensor(c, "mlp.down_proj.weight"));
  const Tensor lin = golden_tensor(c, "input_layernorm.weight"), lpost = golden_tensor(c, "post_attention_layernorm.weight");
  l.ln_in = Eigen::Map<const Eigen::VectorXf>(lin.data.data(), cfg.hidden);
  l.ln_post = Eigen::Map<const Eigen::VectorXf>(lpost.data.data(), cfg.hidden);
  Tensor hin = golden_tensor(c, "hidden_in");
  Mat hidden(b.tokens(), cfg.hidden);
  std::copy(hin.data.begin(), hin.data.end(), hidden.data());

  // The block forward matches transformers' LlamaDecoderLayer.
  const awq_example::LlamaLayer original = l;
  const Mat out = awq_example::layer_forward(cfg, b, l, hidden);
  const Tensor ref = golden_tensor(c, "out_ref");
  double max_abs = 0;
  for (Eigen::Index i = 0; i < out.size(); ++i) max_abs = std::max(max_abs, std::fabs(double(out.data()[i]) - ref.data[static_cast<std::size_t>(i)]));
  MESSAGE(c << ": max |out - out_ref| = " << max_abs);
  CHECK(max_abs < 1e-4);

  // The AWQ flow reproduces run_awq's choices.
  awq_example::BlockAwqOptions opt;
  opt.quant = awq::QuantSpec{p.at("w_bit").get<int>(), p.at("q_config").at("q_group_size").get<int>(), true};
  const auto res = awq_example::awq_block(cfg, b, l, hidden, opt);
  const auto& groups = meta.at("results").at("scale_groups");
  CHECK(groups.size() == res.scales.size());
  for (const auto& g : groups) {
    const std::string key = group_key(g);
    CAPTURE(key);
    REQUIRE(res.scales.count(key) == 1);
    const auto& r = res.scales.at(key);
    const double margin = g.at("rel_margin_second_vs_best").get<double>();
    if (margin > 1e-4) CHECK(r.best_index == g.at("best_ratio_index").get<int>());
    const Tensor losses = golden_tensor(c, g.at("losses").get<std::string>());
    double worst_loss = 0;
    for (std::size_t i = 0; i < 20; ++i) worst_loss = std::max(worst_loss, std::fabs(r.losses[i] - losses.data[i]) / losses.data[i]);
    CHECK(worst_loss < 1e-4);
    if (r.best_index == g.at("best_ratio_index").get<int>()) {
      const Tensor s = golden_tensor(c, g.at("scales").get<std::string>());
      double worst = 0;
      for (std::size_t i = 0; i < s.data.size(); ++i) worst = std::max(worst, std::fabs(double(r.scales[i]) - s.data[i]) / s.data[i]);
      CHECK(worst < 1e-5);
    }
  }
  // Clip bounds. The clip error of a few (row, group) entries is dominated by float32
  // cancellation (activations up to ~240 after the boosted norms), so perturbing the scales by
  // their ~1e-6 float noise moves those choices. Hence two checks:
  //  (a) with the reference's own scales folded in, the bounds match exactly, flips allowed only
  //      where the reference's margin is below 1e-4;
  //  (b) with our own scales, at least 99% of the bounds match.
  awq_example::LlamaLayer l2 = original;
  awq_example::BlockAwqOptions given = opt;
  for (const auto& g : groups) {
    given.given_scales[group_key(g)] = golden_tensor(c, g.at("scales").get<std::string>()).data;
  }
  const auto replay = awq_example::awq_block(cfg, b, l2, hidden, given);
  const std::vector<std::pair<std::string, std::string>> clips = {
      {"v", "self_attn_v_proj"}, {"o", "self_attn_o_proj"}, {"gate", "mlp_gate_proj"}, {"up", "mlp_up_proj"}, {"down", "mlp_down_proj"}};
  for (const auto& clip : clips) {
    const std::string& ours = clip.first;
    const std::string& theirs = clip.second;
    CAPTURE(theirs);
    const Tensor ref_clip = golden_tensor(c, "clip_" + theirs), margin = golden_tensor(c, "clip_rel_margin_" + theirs);
    long replay_flips = 0, own_flips = 0;
    for (std::size_t i = 0; i < ref_clip.data.size(); ++i) {
      // Bounds inherit the scales' float noise: compared to 1e-5; grid points are 5% apart.
      const auto same = [&](float v) { return std::fabs(v - ref_clip.data[i]) <= 1e-5f * std::fabs(ref_clip.data[i]); };
      if (!same(replay.clips.at(ours).max_val[i])) {
        CAPTURE(i);
        CHECK(margin.data[i] < 1e-4);
        ++replay_flips;
      }
      own_flips += !same(res.clips.at(ours).max_val[i]);
    }
    MESSAGE(c << " clip " << theirs << ": " << replay_flips << " near-tie flips with the reference's scales, "
              << own_flips << " of " << ref_clip.data.size() << " differ with our own scales");
    CHECK(own_flips * 100 <= static_cast<long>(ref_clip.data.size()));
  }
}

}  // namespace

TEST_CASE("Llama block (MHA): forward and per-block AWQ match llm-awq run_awq") { check_case("llama_block_mha_h256"); }
TEST_CASE("Llama block (GQA): forward and per-block AWQ match llm-awq run_awq") { check_case("llama_block_gqa_h256"); }

// ---- per-block checkpoints: an interrupted run resumes and ends bit-identical -----------------

#include <filesystem>
#include <unistd.h>

#include "llama/checkpoint.hpp"

namespace {

struct TinyStack {
  awq_example::LlamaConfig cfg;
  awq_example::Batch batch{2, 16};
  std::vector<awq_example::LlamaLayer> layers;
  Mat h;
};

TinyStack tiny_stack() {
  TinyStack s;
  s.cfg.hidden = 64;
  s.cfg.intermediate = 96;
  s.cfg.n_heads = 4;
  s.cfg.n_kv_heads = 2;
  s.cfg.head_dim = 16;
  std::uint64_t seed = 900;
  auto mat = [&](long r, long c, double std) {
    const auto v = random_weights(r, c, Dist::outliers, seed++, std);
    Mat m(r, c);
    for (long i = 0; i < r * c; ++i) m.data()[i] = static_cast<float>(v[static_cast<std::size_t>(i)]);
    return m;
  };
  for (int i = 0; i < 3; ++i) {
    awq_example::LlamaLayer l;
    l.wq = mat(64, 64, 0.1), l.wk = mat(32, 64, 0.1), l.wv = mat(32, 64, 0.1), l.wo = mat(64, 64, 0.1);
    l.wg = mat(96, 64, 0.1), l.wu = mat(96, 64, 0.1), l.wd = mat(64, 96, 0.1);
    l.ln_in = awq_example::Vec::Ones(64) + mat(1, 64, 0.3).row(0).transpose().cwiseAbs();
    l.ln_post = awq_example::Vec::Ones(64);
    s.layers.push_back(l);
  }
  s.h = mat(s.batch.tokens(), 64, 1.0);
  return s;
}

bool same_weights(const std::vector<awq_example::LlamaLayer>& a, const std::vector<awq_example::LlamaLayer>& b) {
  bool same = a.size() == b.size();
  for (std::size_t i = 0; same && i < a.size(); ++i)
    same = a[i].wq == b[i].wq && a[i].wk == b[i].wk && a[i].wv == b[i].wv && a[i].wo == b[i].wo && a[i].wg == b[i].wg &&
           a[i].wu == b[i].wu && a[i].wd == b[i].wd && a[i].ln_in == b[i].ln_in && a[i].ln_post == b[i].ln_post;
  return same;
}

}  // namespace

TEST_CASE("per-block checkpoints: a run stopped after block 1 resumes from its files and ends bit-identical") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("awq_resume_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  awq_example::BlockAwqOptions opt;
  opt.quant = awq::QuantSpec{4, 32, true};
  const auto search = [](const auto& c, const auto& b, auto& l, const auto& h, const auto& o) {
    return awq_example::awq_block(c, b, l, h, o);
  };
  int searched = 0;
  const auto counting = [&](const auto& c, const auto& b, auto& l, const auto& h, const auto& o) {
    searched += o.given_scales.empty();
    return awq_example::awq_block(c, b, l, h, o);
  };

  TinyStack ref = tiny_stack();
  CHECK(awq_example::awq_layers(ref.cfg, ref.batch, ref.layers, ref.h, opt, nullptr, search, [](std::size_t, auto&) {}) == 0);
  const TinyStack original = tiny_stack();
  CHECK_FALSE(same_weights(ref.layers, original.layers));  // the flow did change the weights

  const awq_example::BlockCheckpoint ck(dir.string(), "tiny w4-g32");
  TinyStack run = tiny_stack();
  CHECK_THROWS_WITH(awq_example::awq_layers(run.cfg, run.batch, run.layers, run.h, opt, &ck, search,
                                            [](std::size_t li, auto&) {
                                              if (li == 1) throw std::runtime_error("killed after block 1");
                                            }),
                    "killed after block 1");
  CHECK(ck.has(0));
  CHECK(ck.has(1));
  CHECK_FALSE(ck.has(2));

  TinyStack resumed = tiny_stack();
  CHECK(awq_example::awq_layers(resumed.cfg, resumed.batch, resumed.layers, resumed.h, opt, &ck, counting,
                                [](std::size_t, auto&) {}) == 2);
  CHECK(searched == 1);  // only block 2 was searched
  CHECK(same_weights(resumed.layers, ref.layers));
  CHECK(ck.has(2));

  // A file of another run, a truncated file and a missing tensor are errors, never used silently.
  TinyStack other = tiny_stack();
  const awq_example::BlockCheckpoint foreign(dir.string(), "tiny w3-g32");
  CHECK_THROWS_WITH_AS(awq_example::awq_layers(other.cfg, other.batch, other.layers, other.h, opt, &foreign, search,
                                               [](std::size_t, auto&) {}),
                       doctest::Contains("belongs to another run ('tiny w4-g32'; this run is 'tiny w3-g32')"), awq::Error);
  fs::resize_file(ck.path(1), fs::file_size(ck.path(1)) - 7);
  TinyStack cut = tiny_stack();
  CHECK_THROWS_AS(awq_example::awq_layers(cut.cfg, cut.batch, cut.layers, cut.h, opt, &ck, search, [](std::size_t, auto&) {}),
                  awq::Error);
  awq::io::SafetensorsWriter w;
  w.metadata("awq_block_checkpoint", "1");
  w.metadata("run", "tiny w4-g32");
  w.metadata("block", "0");
  w.add_typed<float>("scales.qkv", "F32", {64}, std::vector<float>(64, 1.0f));
  w.write(ck.path(0));
  TinyStack partial = tiny_stack();
  CHECK_THROWS_WITH_AS(awq_example::awq_layers(partial.cfg, partial.batch, partial.layers, partial.h, opt, &ck, search,
                                               [](std::size_t, auto&) {}),
                       doctest::Contains("tensor 'scales.gate_up' is missing"), awq::Error);
  fs::remove_all(dir);
}
