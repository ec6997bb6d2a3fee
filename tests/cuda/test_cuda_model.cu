// The model driver on backend::cuda against backend::cpu: the Llama and OPT policies' GPU forwards
// on the transformers goldens (q/k/v biases, GQA, tied embeddings; LayerNorm with bias, ReLU), then
// the whole per-block flow over small Qwen2 and OPT checkpoints: the same α choices, the same clip
// bounds up to near-ties, and the evaluation streams within float tolerance.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "awq/model/arch/llama.cuh"
#include "awq/model/arch/opt.cuh"
#include "awq/model/hf_source.hpp"
#include "awq/model/pipeline.hpp"
#include "driver_case.hpp"
#include "support.hpp"

using awq::model::Llama;
using awq::model::Opt;
namespace bc = awq::backend;

namespace {

double rel_err(const std::vector<float>& a, const std::vector<float>& b) { return awq_test::max_rel_err(a.data(), b.data(), a.size()); }

template <class Arch>
void check_forward(const std::string& name) {
  CAPTURE(name);
  const std::string dir = awq_test::golden_dir(std::string("arch_") + name);
  std::ifstream mf(dir + "/meta.json");
  const auto meta = nlohmann::json::parse(mf);
  const auto src = awq::model::HfSource::open(dir + "/hf");
  const auto& c = src.config();
  const int B = meta.at("batch"), T = meta.at("seq_len"), L = meta.at("layers");
  const std::size_t n = static_cast<std::size_t>(B * T * c.hidden);
  const auto lin = awq_test::read_f32(dir + "/layer_in.f32", n * L), lout = awq_test::read_f32(dir + "/layer_out.f32", n * L);
  for (int l = 0; l < L; ++l) {
    const auto blk = awq::model::load_block<bc::cuda, Arch>(src, c, l);
    const awq::cuda::DeviceBuffer<float> x(std::vector<float>(lin.begin() + l * n, lin.begin() + (l + 1) * n));
    awq::cuda::DeviceBuffer<float> y(n);
    Arch::template forward<bc::cuda>(c, {B, T}, blk, awq::make_row_major<const float>(x.data(), B * T, c.hidden),
                                   awq::make_row_major(y.data(), B * T, c.hidden), nullptr);
    const double e = rel_err(y.download(), std::vector<float>(lout.begin() + l * n, lout.begin() + (l + 1) * n));
    MESSAGE(name << " layer " << l << " on the GPU: " << e);
    CHECK(e < 1e-5);
  }
}

template <class Arch>
void check_driver(const std::string& name) {
  CAPTURE(name);
  const auto src = awq::model::HfSource::open(awq_test::golden_dir("arch_" + name) + "/hf");
  const auto& c = src.config();
  const awq::model::Batch calib{4, 16}, eval{2, 16};
  const auto h = awq_test::random_weights(calib.tokens(), c.hidden, awq_test::Dist::outliers, 11, 1.0);
  const auto e = awq_test::random_weights(eval.tokens(), c.hidden, awq_test::Dist::normal, 12, 1.0);
  const std::vector<float> hf(h.begin(), h.end()), ef(e.begin(), e.end());
  struct Run {
    std::vector<awq::model::Stream> streams;
    std::vector<awq::model::QuantizedBlock> blocks;
  };
  const auto run = [&](auto backend) {
    using B = decltype(backend);
    Run r;
    r.streams = {{awq::model::StreamKind::fp, eval, ef}, {awq::model::StreamKind::rtn, eval, ef}, {awq::model::StreamKind::awq, eval, ef}};
    awq::model::PipelineOptions opt;
    opt.block.quant = awq::QuantSpec{4, 32, true};
    awq::model::quantize_model<B, Arch>(src, calib, hf, r.streams, opt, [&](const awq::model::QuantizedBlock& b) { r.blocks.push_back(b); });
    return r;
  };
  const Run cpu = run(bc::cpu{}), gpu = run(bc::cuda{});
  REQUIRE(cpu.blocks.size() == gpu.blocks.size());
  for (std::size_t i = 0; i < cpu.blocks.size(); ++i) {
    for (const auto& kv : cpu.blocks[i].result.scales) {
      const std::string& g = kv.first;
      const auto& s = kv.second;
      CAPTURE(i);
      CAPTURE(g);
      const auto& sg = gpu.blocks[i].result.scales.at(g);
      // The same α unless the CPU's best and second-best losses are within float noise.
      auto sorted = s.losses;
      std::sort(sorted.begin(), sorted.end());
      if ((sorted[1] - sorted[0]) / sorted[0] > 1e-4) CHECK(sg.best_index == s.best_index);
    }
    for (const auto& [t, cl] : cpu.blocks[i].result.clips) {
      long diff = 0;
      for (std::size_t k = 0; k < cl.max_val.size(); ++k)
        diff += std::fabs(cl.max_val[k] - gpu.blocks[i].result.clips.at(t).max_val[k]) > 1e-5f * std::fabs(cl.max_val[k]);
      CHECK(diff * 100 <= static_cast<long>(cl.max_val.size()));
    }
  }
  // FP: float noise only. RTN and AWQ: clamped weights sit on rounding ties (±c at c / scale =
  // (2^b − 1) / 2), so bounds equal to 1e-5 can still flip a code; in a 64-wide, 2-block model a
  // few flipped codes move the output by parts in a thousand.
  for (std::size_t k = 0; k < 3; ++k) {
    const double e = rel_err(gpu.streams[k].hidden, cpu.streams[k].hidden);
    MESSAGE("stream " << k << " GPU vs CPU relative error " << e);
    CHECK(e < (k == 0 ? 1e-5 : 1e-2));
  }
  // Perplexity of each stream evaluated where it was computed: the GPU job's figures are the CPU's.
  const auto head = awq::model::Head<Arch>::load(src);
  std::vector<int> tokens(static_cast<std::size_t>(eval.tokens()));
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 104729 + 5) % static_cast<std::size_t>(c.vocab));
  for (std::size_t k = 0; k < 3; ++k) {
    const double pc = awq::model::HeadEval<bc::cpu>::perplexity(head, cpu.streams[k].hidden, tokens, eval.seq_len).ppl;
    const double pg = awq::model::HeadEval<bc::cuda>::perplexity(head, gpu.streams[k].hidden, tokens, eval.seq_len).ppl;
    MESSAGE("stream " << k << " perplexity CPU " << pc << ", GPU " << pg);
    CHECK(std::fabs(pg - pc) <= 1e-3 * pc);
  }
}

TEST_CASE("model on cuda: Finalize<cuda> gives finalize_linear's codes, zeros, fp16 scales and weights") {
  const awq::index_t rows = 96, cols = 512;
  for (const awq::QuantSpec spec : {awq::QuantSpec{4, 64, true}, awq::QuantSpec{3, 128, true}, awq::QuantSpec{4, 32, false},
                                    awq::QuantSpec{8, 64, true}, awq::QuantSpec{2, 256, true}}) {
    CAPTURE(spec.name());
    const auto w64 = awq_test::random_weights(rows, cols, awq_test::Dist::outliers, 21, 0.05);
    std::vector<float> host(w64.begin(), w64.end());
    awq::cuda::DeviceBuffer<float> dev(host);
    const auto qc = awq::model::Finalize<bc::cpu>::run(awq::make_row_major(host.data(), rows, cols), spec);
    const auto qg = awq::model::Finalize<bc::cuda>::run(awq::make_row_major(dev.data(), rows, cols), spec);
    CHECK(qg.out == qc.out);
    CHECK(qg.in == qc.in);
    CHECK(qg.groups == qc.groups);
    CHECK(qg.codes == qc.codes);
    CHECK(qg.zeros == qc.zeros);
    REQUIRE(qg.scales.size() == qc.scales.size());
    long scale_diff = 0;
    for (std::size_t i = 0; i < qc.scales.size(); ++i) scale_diff += static_cast<float>(qg.scales[i]) != static_cast<float>(qc.scales[i]);
    CHECK(scale_diff == 0);
    const std::vector<float> wg = dev.download();
    CHECK(std::memcmp(wg.data(), host.data(), host.size() * sizeof(float)) == 0);  // the same dequantized weight, bit for bit
  }
  std::vector<float> bad(static_cast<std::size_t>(rows * cols), 0.5f);
  bad[static_cast<std::size_t>(7 * cols + 130)] = NAN;
  awq::cuda::DeviceBuffer<float> dev(bad);
  CHECK_THROWS_WITH_AS(awq::model::Finalize<bc::cuda>::run(awq::make_row_major(dev.data(), rows, cols), awq::QuantSpec{4, 64, true}),
                       doctest::Contains("non-finite weight at row 7, column 130 (group 2)"), awq::Error);
}

TEST_CASE("model on cuda: HeadEval<cuda> gives the host's perplexity") {
  const auto src = awq::model::HfSource::open(awq_test::golden_dir("arch_smollm_tied") + "/hf");
  const auto head = awq::model::Head<Llama>::load(src);
  const auto& c = src.config();
  const int seq_len = 24, n_seq = 5;
  const auto h = awq_test::random_weights(n_seq * seq_len, c.hidden, awq_test::Dist::outliers, 31, 1.0);
  const std::vector<float> hidden(h.begin(), h.end());
  std::vector<int> tokens(static_cast<std::size_t>(n_seq * seq_len));
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 7919 + 13) % static_cast<std::size_t>(c.vocab));
  const auto cpu = awq::model::HeadEval<bc::cpu>::perplexity(head, hidden, tokens, seq_len);
  const auto gpu = awq::model::HeadEval<bc::cuda>::perplexity(head, hidden, tokens, seq_len);
  MESSAGE("perplexity CPU " << cpu.ppl << ", GPU " << gpu.ppl);
  CHECK(gpu.predicted == cpu.predicted);
  CHECK(std::fabs(gpu.nll - cpu.nll) <= 1e-5 * std::fabs(cpu.nll));  // fp32 logits in two GEMM orders
  tokens[9] = c.vocab;
  CHECK_THROWS_WITH_AS(awq::model::HeadEval<bc::cuda>::perplexity(head, hidden, tokens, seq_len),
                       doctest::Contains(("token id " + std::to_string(c.vocab) + " at 9 is outside the vocabulary").c_str()), awq::Error);
}

TEST_CASE("model on cuda: the W4A16 kernels carry the quantized streams as the dequantized weights do") {
  const awq_test::DriverCase dc(awq_test::golden_dir("arch_qwen2_bias") + "/hf", {4, 16}, {3, 16}, 41);  // q/k/v biases
  const auto run = [&](bool kernels) {
    awq::model::PipelineOptions opt;
    opt.kernel_eval = kernels;
    return dc.run<bc::cuda, Llama>({awq::model::StreamKind::rtn, awq::model::StreamKind::awq}, opt);
  };
  const auto deq = run(false), ker = run(true);
  const auto head = awq::model::Head<Llama>::load(dc.src);
  for (std::size_t k = 0; k < deq.size(); ++k) {
    // The kernels see fp16 activations (relative rounding 2^-11) with fp32 accumulation.
    const double err = rel_err(ker[k].hidden, deq[k].hidden);
    const double pd = awq::model::HeadEval<bc::cuda>::perplexity(head, deq[k].hidden, dc.tokens, dc.eval.seq_len).nll;
    const double pk = awq::model::HeadEval<bc::cuda>::perplexity(head, ker[k].hidden, dc.tokens, dc.eval.seq_len).nll;
    MESSAGE("stream " << k << ": kernels vs dequantized, hidden " << err << ", nll " << pk << " vs " << pd);
    CHECK(err > 0);  // the kernels did run
    CHECK(err < 1e-2);
    CHECK(std::fabs(pk - pd) <= 1e-3 * std::fabs(pd));
  }
}

void check_math() {
  using Math = bc::cuda::Math;
  const bc::cuda::MathScope scope(bc::cuda::math());  // restores the math on exit
  const awq_test::DriverCase dc(awq_test::golden_dir("arch_qwen2_bias") + "/hf", {4, 16}, {3, 16}, 51);
  const auto run = [&](Math m) {
    bc::cuda::set_math(m);
    return dc.run<bc::cuda, Llama>({awq::model::StreamKind::fp, awq::model::StreamKind::awq});
  };
  const auto f32 = run(Math::fp32);
  const auto head = awq::model::Head<Llama>::load(dc.src);
  for (const Math m : {Math::tf32, Math::fp16, Math::bf16}) {
    const auto low = run(m);
    const double fp_err = rel_err(low[0].hidden, f32[0].hidden);
    const double n32 = awq::model::HeadEval<bc::cuda>::perplexity(head, f32[1].hidden, dc.tokens, dc.eval.seq_len).nll;
    const double nlo = awq::model::HeadEval<bc::cuda>::perplexity(head, low[1].hidden, dc.tokens, dc.eval.seq_len).nll;
    MESSAGE("math " << static_cast<int>(m) << ": FP stream " << fp_err << ", AWQ nll " << nlo << " vs fp32 " << n32);
    CHECK(fp_err > 0);  // the products did round
    CHECK(fp_err < (m == Math::bf16 ? 5e-2 : 1e-2));
    CHECK(std::fabs(nlo - n32) <= 1e-2 * std::fabs(n32));
  }
}

// ctx = causal softmax(scaling · q kᵀ) v per sequence and head (GQA), in float64.
std::vector<double> attention_f64(const awq::model::ModelConfig& c, const awq::model::Batch& b, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v, double scaling) {
  const int D = c.head_dim, L = b.seq_len, hd = c.n_heads * D, hkv = c.n_kv_heads * D, group = c.n_heads / c.n_kv_heads;
  std::vector<double> ctx(static_cast<std::size_t>(b.tokens() * hd));
  for (int s = 0; s < b.n_seq; ++s)
    for (int h = 0; h < c.n_heads; ++h)
      for (int i = 0; i < L; ++i) {
        std::vector<double> p(static_cast<std::size_t>(i + 1));
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d)
            dot += static_cast<double>(q[static_cast<std::size_t>((s * L + i) * hd + h * D + d)]) *
                   k[static_cast<std::size_t>((s * L + j) * hkv + (h / group) * D + d)];
          p[static_cast<std::size_t>(j)] = dot * scaling;
          mx = std::max(mx, dot * scaling);
        }
        for (auto& e : p) sum += (e = std::exp(e - mx));
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int j = 0; j <= i; ++j) acc += p[static_cast<std::size_t>(j)] * v[static_cast<std::size_t>((s * L + j) * hkv + (h / group) * D + d)];
          ctx[static_cast<std::size_t>((s * L + i) * hd + h * D + d)] = acc / sum;
        }
      }
  return ctx;
}

}  // namespace

TEST_CASE("model on cuda: the attention under each math against float64; a kept workspace gives a fresh one's bits") {
  using Math = bc::cuda::Math;
  using K = awq::model::LlamaKernels<bc::cuda>;
  const bc::cuda::MathScope scope(bc::cuda::math());  // restores the math on exit
  awq::model::ModelConfig c;
  c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 16, c.hidden = 64;
  const awq::model::Batch b{3, 40};
  const auto rnd = [](long n, std::uint64_t seed) {
    const auto w = awq_test::random_weights(1, n, awq_test::Dist::normal, seed, 1.0);
    return std::vector<float>(w.begin(), w.end());
  };
  const long T = b.tokens(), nq = T * c.n_heads * c.head_dim, nkv = T * c.n_kv_heads * c.head_dim;
  const auto q = rnd(nq, 61), k = rnd(nkv, 62), v = rnd(nkv, 63);
  const double scaling = 0.25;
  const auto ref = attention_f64(c, b, q, k, v, scaling);
  double mag = 0;
  for (double e : ref) mag = std::max(mag, std::fabs(e));
  const awq::cuda::DeviceBuffer<float> qd(q), kd(k), vd(v);
  const auto run = [&](K::Workspace* ws, awq::model::Batch bb) {
    awq::cuda::DeviceBuffer<float> ctx(std::vector<float>(static_cast<std::size_t>(nq), awq_test::poison()));
    K::causal_attention(c, bb, awq::make_row_major<const float>(qd.data(), bb.tokens(), c.n_heads * c.head_dim),
                        awq::make_row_major<const float>(kd.data(), bb.tokens(), c.n_kv_heads * c.head_dim),
                        awq::make_row_major<const float>(vd.data(), bb.tokens(), c.n_kv_heads * c.head_dim),
                        awq::make_row_major(ctx.data(), bb.tokens(), c.n_heads * c.head_dim), static_cast<float>(scaling), ws);
    auto out = ctx.download();
    out.resize(static_cast<std::size_t>(bb.tokens() * c.n_heads * c.head_dim));
    return out;
  };
  for (const Math m : {Math::fp32, Math::fp16, Math::bf16}) {
    CAPTURE(static_cast<int>(m));
    bc::cuda::set_math(m);
    const auto got = run(nullptr, b);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      REQUIRE(std::isfinite(got[i]));
      worst = std::max(worst, std::fabs(got[i] - ref[i]) / mag);
    }
    MESSAGE("attention, math " << static_cast<int>(m) << ": max error / max |ctx| " << worst);
    CHECK(worst < (m == Math::fp32 ? 1e-5 : m == Math::fp16 ? 4e-3 : 3e-2));  // 16 bits: q, k, v and P rounded
    if (m != Math::fp32) CHECK(worst > 1e-5);
    // One workspace over calls of other shapes, math and stream: each call as with scratch of its own.
    K::Workspace ws;
    CHECK(run(&ws, {1, 40}) == run(nullptr, {1, 40}));
    CHECK(run(&ws, b) == got);
    cudaStream_t other = nullptr;
    REQUIRE(cudaStreamCreate(&other) == cudaSuccess);
    {
      const awq::cuda::StreamScope scope(other);
      CHECK(run(&ws, b) == got);
    }
    CHECK(run(&ws, b) == got);
    REQUIRE(cudaStreamSynchronize(other) == cudaSuccess);
    REQUIRE(cudaStreamDestroy(other) == cudaSuccess);
  }
}

TEST_CASE("model on cuda: the Llama search modules keep 16-bit activations under fp16 and bf16, within their rounding") {
  using Math = bc::cuda::Math;
  const bc::cuda::MathScope scope(bc::cuda::math());  // restores the math on exit
  const auto src = awq::model::HfSource::open(awq_test::golden_dir("arch_qwen2_bias") + "/hf");  // GQA, q/k/v biases
  const auto& c = src.config();
  const awq::model::Batch b{3, 24};
  const long T = b.tokens();
  // A normed block input: N(0, 0.02) with four outlier channels ×20, as activations have them. Larger
  // inputs take the MLP's product beyond fp16's range (the reference's fp16 model overflows there
  // too): Dist::outliers may scale one entry ×50 twice, and 1,856 gives silu(gate)·up ≈ 1.4e5.
  auto xh = awq_test::random_weights(T, c.hidden, awq_test::Dist::normal, 71, 0.02);
  for (long t = 0; t < T; ++t)
    for (long ch : {3L, 17L, 40L, 61L}) xh[static_cast<std::size_t>(t * c.hidden + ch)] *= 20.0;
  const std::vector<float> x(xh.begin(), xh.end());
  const auto cblk = awq::model::load_block<bc::cpu, Llama>(src, c, 0);
  const auto gblk = awq::model::load_block<bc::cuda, Llama>(src, c, 0);
  const awq::cuda::DeviceBuffer<float> xd(x);
  // The group's module on `blk` at input x (host or device memory); out [T, hidden] in the same memory.
  const auto run = [&](const auto& blk, const awq::model::LinearGroup& g, const float* xp, float* out) {
    std::vector<awq::MatrixView<const float>> w;
    for (const auto& n : g.linears) w.push_back(awq::model::linear_weight(blk, n));
    Llama::with_module(c, b, blk, g, [&](const auto& m) {
      m(awq::make_row_major<const float>(xp, T, c.hidden), w, awq::make_row_major(out, T, c.hidden));
    });
  };
  int modules = 0;
  for (const auto& g : Llama::groups(c)) {
    if (g.module.empty()) continue;
    CAPTURE(g.name);
    ++modules;
    std::vector<float> ref(static_cast<std::size_t>(T * c.hidden));
    run(cblk, g, x.data(), ref.data());
    double mag = 0;
    for (float e : ref) mag = std::max(mag, static_cast<double>(std::fabs(e)));
    REQUIRE(mag > 0);
    for (const Math m : {Math::fp32, Math::fp16, Math::bf16}) {
      CAPTURE(static_cast<int>(m));
      bc::cuda::set_math(m);
      awq::cuda::DeviceBuffer<float> out(std::vector<float>(ref.size(), awq_test::poison()));
      run(gblk, g, xd.data(), out.data());
      const auto got = out.download();
      double worst = 0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        REQUIRE(std::isfinite(got[i]));
        worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - ref[i]) / mag);
      }
      MESSAGE(g.name << " module, math " << static_cast<int>(m) << ": max error / max |out| " << worst);
      // fp16: a 2^-11 rounding of the input, the weights and each stored intermediate; bf16: 2^-8.
      CHECK(worst < (m == Math::fp32 ? 1e-5 : m == Math::fp16 ? 5e-3 : 4e-2));
      if (m != Math::fp32) CHECK(worst > 1e-5);
    }
  }
  CHECK(modules == 2);
  // A 16-bit x needs its math, and a 16-bit y a matching math.
  bc::cuda::set_math(Math::fp16);
  awq::cuda::DeviceBuffer<__half> xh16(static_cast<std::size_t>(T * c.hidden));
  awq::cuda::DeviceBuffer<__nv_bfloat16> ybf(static_cast<std::size_t>(T * c.hidden));
  const auto wo = awq::model::linear_weight(gblk, "self_attn.o_proj");
  CHECK_THROWS_WITH_AS(bc::cuda::linear(awq::make_row_major<const float>(xd.data(), T, c.hidden), wo, static_cast<const float*>(nullptr),
                                        awq::make_row_major(ybf.data(), T, c.hidden)),
                       doctest::Contains("y is bf16 but the product's operands are fp16"), awq::Error);
  bc::cuda::set_math(Math::bf16);
  awq::cuda::DeviceBuffer<float> y(static_cast<std::size_t>(T * c.hidden));
  CHECK_THROWS_WITH_AS(bc::cuda::linear(awq::make_row_major<const __half>(xh16.data(), T, c.hidden), wo, static_cast<const float*>(nullptr),
                                        awq::make_row_major(y.data(), T, c.hidden)),
                       doctest::Contains("x is fp16 but the math is not"), awq::Error);
  bc::cuda::set_math(Math::fp32);
  CHECK_THROWS_WITH_AS(bc::cuda::linear(awq::make_row_major<const float>(xd.data(), T, c.hidden), wo, static_cast<const float*>(nullptr),
                                        awq::make_row_major(ybf.data(), T, c.hidden)),
                       doctest::Contains("y is bf16 but the product's operands are fp32"), awq::Error);
}

TEST_CASE("model on cuda: the Llama forward matches transformers on every arch golden") {
  for (const std::string name : {"llama3_gqa", "smollm_tied", "mistral", "qwen2_bias"}) check_forward<Llama>(name);
}

TEST_CASE("model on cuda: the OPT forward (LayerNorm with bias, ReLU) matches transformers") { check_forward<Opt>("opt"); }

TEST_CASE("model on cuda: the driver makes the CPU backend's choices on a Qwen2 checkpoint") { check_driver<Llama>("qwen2_bias"); }

TEST_CASE("model on cuda: the driver makes the CPU backend's choices on an OPT checkpoint") { check_driver<Opt>("opt"); }

TEST_CASE("model on cuda: TF32, fp16 and bf16 products give the fp32 run's streams within their rounding") { check_math(); }
