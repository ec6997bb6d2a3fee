// The GPU decode engine (examples/llama/engine_cuda.cuh) on a tiny random Llama (GQA, two blocks,
// head_dim 32): its logits at every position against the CPU engine's, prompt at once and one
// token at a time through the captured step (over several of the attention's 64-key chunks), batched
// sequences against single ones, the W4 engine's greedy continuation against the dequantized
// weights' fp16 one for 32 tokens, and the errors for what it cannot run.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "llama/engine_cuda.cuh"
#include "llama/random_llama.hpp"

using namespace awq_example;

namespace {

// head_dim 32: 4 heads over 2 kv heads; 64 and 128: 2 over 1.
RandomLlama tiny(std::uint64_t seed = 7, int head_dim = 32) {
  awq::model::ModelConfig c;
  c.architecture = "llama";
  c.hidden = 128;
  c.intermediate = 256;
  c.n_heads = head_dim == 32 ? 4 : 2;
  c.n_kv_heads = c.n_heads / 2;
  c.head_dim = head_dim;
  c.layers = 2;
  c.vocab = 384;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  return RandomLlama{c, seed};
}

std::vector<int> random_ids(int n, int vocab, std::uint64_t seed) {
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) ids.push_back(static_cast<int>(awq_example::detail::splitmix(seed) % static_cast<std::uint64_t>(vocab)));
  return ids;
}

// max |a − b| / max |b| over logits rows a (row ra) and b (row rb), rows of v.
double row_err(const std::vector<float>& a, std::size_t ra, const std::vector<float>& b, std::size_t rb, std::size_t v) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < v; ++i) {
    num = std::max(num, std::fabs(static_cast<double>(a[ra * v + i]) - b[rb * v + i]));
    den = std::max(den, std::fabs(static_cast<double>(b[rb * v + i])));
  }
  return num / den;
}

// The GPU engine's logits against the CPU engine's on `cpu_w` / `gpu`: every position of a
// 300-token sequence prefilled at once, then a prefill of 270 and 29 single steps (the first eager,
// the second captured, the rest replays) with the attention in blocks of 64 keys and of 256, then
// three sequences decoded together.
template <class CpuLinear, class GpuLinear>
double compare(const LlamaWeights<CpuLinear>& cpu_w, CudaLlama<GpuLinear>& gpu, const std::string& what) {
  const std::size_t V = static_cast<std::size_t>(cpu_w.cfg.vocab);
  const std::vector<int> seq = random_ids(300, cpu_w.cfg.vocab, 3);
  LlamaEngine<CpuLinear> ce(cpu_w, 300);
  const std::vector<float> ref = ce.forward(seq, true);

  LlamaEngineCuda<GpuLinear> whole(gpu, 300);
  const std::vector<float> all = whole.forward(seq, true);
  REQUIRE(all.size() == ref.size());
  double worst_all = 0;
  for (std::size_t t = 0; t < seq.size(); ++t) worst_all = std::max(worst_all, row_err(all, t, ref, t, V));

  // The same steps on an engine whose kernels are launched plainly (no programmatic dependent
  // launch) and whose MLP activation is a kernel of its own (W4: not the gate/up product's
  // epilogue): neither changes a bit of what the step computes.
  LlamaEngineCuda<GpuLinear> steps(gpu, 300, 1, kernels::kAttnChunkSmall), plain(gpu, 300, 1, kernels::kAttnChunkSmall);
  LlamaEngineCuda<GpuLinear> wide(gpu, 300, 1, kernels::kAttnChunkLarge);
  plain.ctx.overlap = false;
  plain.ctx.fuse_swiglu = false;
  // The two chunk sizes differ only in the order of the softmax's sums (fp32), so their logits
  // stay far closer to each other than to the CPU engine's: a dropped or doubled key would not.
  const std::vector<int> head(seq.begin(), seq.begin() + 270);
  std::vector<float> l = steps.forward(head), lw = wide.forward(head);
  bool same = l == plain.forward(head);
  double worst_step = std::max(row_err(l, 0, ref, 269, V), row_err(lw, 0, ref, 269, V)), chunks = row_err(lw, 0, l, 0, V);
  for (std::size_t t = 270; t < seq.size() - 1; ++t) {
    l = steps.forward({seq[t]});
    lw = wide.forward({seq[t]});
    same = same && l == plain.forward({seq[t]});
    worst_step = std::max({worst_step, row_err(l, 0, ref, t, V), row_err(lw, 0, ref, t, V)});
    chunks = std::max(chunks, row_err(lw, 0, l, 0, V));
  }
  CHECK(steps.position() == 299);
  CHECK(same);
  MESSAGE(what << ", 256-key against 64-key attention blocks, max |Δ| / max |logit|: " << chunks);
  CHECK(chunks < 1e-3);

  // Three sequences: the same prompt, then each its own tokens; each against a batch-1 CPU engine,
  // with either attention block size.
  const std::vector<int> prompt(seq.begin(), seq.begin() + 20);
  LlamaEngineCuda<GpuLinear> batch(gpu, 40, 3, kernels::kAttnChunkLarge), batch64(gpu, 40, 3, kernels::kAttnChunkSmall);
  std::vector<std::vector<float>> lb = {batch.prefill(prompt), batch64.prefill(prompt)};
  std::vector<LlamaEngine<CpuLinear>> cpus;
  cpus.reserve(3);
  double worst_batch = 0;
  for (int s = 0; s < 3; ++s) {
    cpus.emplace_back(cpu_w, 40);
    const std::vector<float> want = cpus.back().forward(prompt);
    for (const auto& b : lb) worst_batch = std::max(worst_batch, row_err(b, static_cast<std::size_t>(s), want, 0, V));
  }
  for (int t = 0; t < 12; ++t) {
    std::vector<int> next;
    for (int s = 0; s < 3; ++s) next.push_back(seq[static_cast<std::size_t>(40 + 50 * s + t)]);
    for (auto* e : {&batch, &batch64}) {
      const awq::MatrixView<const float> v = e->step(next);
      REQUIRE((v.rows() == 3 && v.cols() == static_cast<awq::index_t>(V)));
      lb[e == &batch ? 0 : 1].assign(v.data(), v.data() + 3 * V);
    }
    for (std::size_t s = 0; s < 3; ++s) {
      const std::vector<float> w = cpus[s].forward({next[s]});
      for (const auto& b : lb) worst_batch = std::max(worst_batch, row_err(b, s, w, 0, V));
    }
  }
  MESSAGE(what << ", GPU vs CPU engine, max |Δ| / max |logit| per position: prompt " << worst_all << ", steps " << worst_step
               << ", batch of 3 " << worst_batch);
  return std::max({worst_all, worst_step, worst_batch});
}

}  // namespace

TEST_SUITE("generation on the GPU") {
  // fp16 activations (and fp16 weights in the cuBLAS engine) against fp32 throughout: each
  // rounding is 2^-11 relative, a few hundred of them per logit over two blocks and the head.
  constexpr double kFp16Bound = 1e-2;

  TEST_CASE("logits at every position equal the CPU engine's: fp16 cuBLAS vs fp32, W4 GPU vs its dequantized weights in fp32") {
    const RandomLlama src = tiny();
    const auto cpu_fp = load_fp_weights(src);
    CudaLlama<CublasLinear> gpu_fp(load_fp_weights<HostFp16Linear>(src));
    CHECK(compare(cpu_fp, gpu_fp, "fp16 cuBLAS") < kFp16Bound);

    // The CPU reference of the W4 engine: the same codes dequantized, (q − z)·s in fp32.
    const auto cpu_w4 = load_random_awq<FpLinear>(src, 32);
    CudaLlama<W4CudaLinear> gpu_w4(load_random_awq<HostAwqLinear>(src, 32), 2);
    CHECK(compare(cpu_w4, gpu_w4, "W4A16 vs dequantized fp32") < kFp16Bound);

    for (int d : {64, 128}) {  // the attention kernel's other head sizes
      const RandomLlama wide = tiny(9, d);
      CudaLlama<CublasLinear> g(load_fp_weights<HostFp16Linear>(wide));
      CHECK(compare(load_fp_weights(wide), g, "fp16 cuBLAS, head_dim " + std::to_string(d)) < kFp16Bound);
    }
  }

  TEST_CASE("W4 engine: the greedy continuation equals the dequantized-weight GPU forward for 32 tokens") {
    const RandomLlama src = tiny(11);
    CudaLlama<W4CudaLinear> w4(load_random_awq<HostAwqLinear>(src, 32, 2));
    CudaLlama<CublasLinear> fp(load_random_awq<HostFp16Linear>(src, 32), 1);
    const std::vector<int> prompt = random_ids(8, src.cfg.vocab, 5);
    LlamaEngineCuda<W4CudaLinear> e4(w4, 40);
    LlamaEngineCuda<CublasLinear> ef(fp, 40);
    Sampler p4(SamplingOptions{}), pf(SamplingOptions{});
    const std::vector<int> got = generate(e4, prompt, 32, p4, -1, [](int) {}).tokens;
    const std::vector<int> want = generate(ef, prompt, 32, pf, -1, [](int) {}).tokens;
    REQUIRE(want.size() == 32);
    CHECK(got == want);
    const std::set<int> distinct(want.begin(), want.end());
    MESSAGE("continuation: " << distinct.size() << " distinct tokens of 32");
    CHECK(distinct.size() >= 4);  // a continuation worth comparing, not one token repeated
  }

  TEST_CASE("bad input: a clear awq::Error") {
    const RandomLlama src = tiny();
    CudaLlama<CublasLinear> m(load_fp_weights<HostFp16Linear>(src));
    LlamaEngineCuda<CublasLinear> e(m, 8);
    CHECK_THROWS_WITH_AS(e.forward(random_ids(9, src.cfg.vocab, 1)), doctest::Contains("9 tokens at position 0 exceed the cache of 8"),
                         awq::Error);
    CHECK_THROWS_WITH_AS(e.forward({src.cfg.vocab}), doctest::Contains("token id 384 is outside the vocabulary of 384"), awq::Error);
    CHECK_THROWS_WITH_AS(e.forward({-1}), doctest::Contains("token id -1"), awq::Error);
    CHECK_THROWS_WITH_AS(e.step({1, 2}), doctest::Contains("2 tokens for 1 sequences"), awq::Error);
    Sampler pick(SamplingOptions{});
    CHECK_THROWS_WITH_AS(generate(e, {}, 4, pick, -1, [](int) {}), doctest::Contains("the prompt has no tokens"), awq::Error);
    CHECK_THROWS_WITH_AS(generate(e, {1, 2, 3, 4, 5}, 5, pick, -1, [](int) {}), doctest::Contains("do not fit the cache of 8"), awq::Error);
    e.forward(random_ids(8, src.cfg.vocab, 2));
    CHECK_THROWS_WITH_AS(e.forward({1}), doctest::Contains("1 tokens at position 8 exceed the cache of 8"), awq::Error);
    CHECK_THROWS_WITH_AS(LlamaEngineCuda<CublasLinear>(m, 0), doctest::Contains("capacity 0"), awq::Error);
    CHECK_THROWS_WITH_AS(LlamaEngineCuda<CublasLinear>(m, 8, 0), doctest::Contains("batch 0"), awq::Error);
    CHECK_THROWS_WITH_AS(LlamaEngineCuda<CublasLinear>(m, 8, 1, 100), doctest::Contains("attention chunk 100"), awq::Error);
    LlamaEngineCuda<CublasLinear> b2(m, 8, 2);
    CHECK_THROWS_WITH_AS(b2.forward({1}), doctest::Contains("decodes 2 sequences"), awq::Error);

    RandomLlama odd = tiny();
    odd.cfg.head_dim = 48;
    odd.cfg.n_heads = 2;
    odd.cfg.n_kv_heads = 2;
    CHECK_THROWS_WITH_AS(CudaLlama<CublasLinear>(load_fp_weights<HostFp16Linear>(odd)), doctest::Contains("head_dim 48 (accepted: 32, 64, 128)"),
                         awq::Error);
  }
}
