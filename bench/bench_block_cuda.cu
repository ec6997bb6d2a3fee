// The model driver's per-block search on the GPU as the tool runs it: awq::model::Llama on
// backend::cuda, fp32 storage, products under --math (the tool's cuda default: fp16), over a
// 7B-shaped block (hidden 4096, MLP 11008, 32 heads; random weights, RMSNorm weights with outlier
// channels) and 128 × 512 calibration tokens. Per layer: the capture forward, then search_block
// (the four scale searches, fold, the five clip searches, clamp), each phase's wall time from its
// progress events (every phase ends on a host synchronisation: the loss or the chosen bounds come
// back). The next layer's input is this layer's output.
//
// Built against two trees (include/ of a commit via -I first), it gives a same-run baseline of a
// change to the search's modules or kernels (bench/gpu_fast.sh, stage "blk").
//   bench_block_cuda [--layers 2] [--seqs 128] [--seq-len 512] [--math fp16|bf16|tf32|fp32]
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <awq/model/arch/llama.cuh>
#include <awq/model/pipeline.hpp>

#include "hashed_normal.cuh"

namespace {

using awq::index_t;
using B = awq::backend::cuda;
using Clock = std::chrono::steady_clock;

void randn(float* out, index_t n, unsigned long long seed, float std) { awq_bench::fill_normal(out, n, seed, std, B::stream()); }

awq::model::ModelConfig config_7b() {
  awq::model::ModelConfig c;
  c.architecture = "llama";
  c.hidden = 4096, c.intermediate = 11008, c.n_heads = 32, c.n_kv_heads = 32, c.head_dim = 128;
  c.layers = 32, c.vocab = 32000, c.norm_eps = 1e-5f;
  return c;
}

// A block: linears N(0, 0.02), norms 1 with every 512th channel at 8 (salient input channels).
awq::model::Block<B> random_block(const awq::model::ModelConfig& c, unsigned long long seed) {
  awq::model::Block<B> blk;
  for (const auto& t : awq::model::Llama::block_tensors(c)) {
    std::size_t n = 1;
    for (auto d : t.shape) n *= static_cast<std::size_t>(d);
    if (t.shape.size() == 1) {
      std::vector<float> w(n, 1.0f);
      for (std::size_t i = 37; i < n; i += 512) w[i] = 8.0f;
      blk.put(t.name, t.shape, w);
    } else {
      blk.put(t.name, t.shape, std::vector<float>(n));
      randn(blk.at(t.name).data.data(), static_cast<index_t>(n), seed++, 0.02f);
    }
  }
  return blk;
}

}  // namespace

int main(int argc, char** argv) try {
  int layers = 2, seqs = 128, seq_len = 512;
  std::string math = "fp16";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--layers") layers = std::stoi(v);
    else if (a == "--seqs") seqs = std::stoi(v);
    else if (a == "--seq-len") seq_len = std::stoi(v);
    else if (a == "--math") math = v;
    else throw awq::Error("bench_block_cuda: unknown option " + a);
  }
  if (awq::cuda::device_count() == 0) {
    std::printf("bench_block_cuda skipped: no CUDA device\n");
    return 0;
  }
  const std::map<std::string, B::Math> maths = {{"fp32", B::Math::fp32}, {"tf32", B::Math::tf32}, {"fp16", B::Math::fp16}, {"bf16", B::Math::bf16}};
  if (!maths.count(math)) throw awq::Error("bench_block_cuda: --math " + math + " (fp32, tf32, fp16 or bf16)");
  B::set_math(maths.at(math));
  const auto c = config_7b();
  const awq::model::Batch b{seqs, seq_len};
  const index_t T = b.tokens();
  awq::cuda::DeviceBuffer<float> h(static_cast<std::size_t>(T * c.hidden)), next(h.size());
  randn(h.data(), T * c.hidden, 1, 1.0f);

  std::map<std::string, double> phase;  // the last elapsed time of each phase of the current layer
  awq::model::BlockOptions opt;
  opt.quant = awq::QuantSpec{4, 128, true};
  opt.progress = [&](const awq::Progress& p) { phase[p.phase] = p.elapsed_s; };
  std::printf("# search_block<cuda, Llama>, --math %s (the modules keep its activation type); hidden %d, MLP %d, %d heads; %d x %d tokens, w4g128\n",
              math.c_str(), c.hidden, c.intermediate, c.n_heads, seqs, seq_len);
  std::map<std::string, double> sums;
  double total = 0;
  for (int l = 0; l < layers; ++l) {
    auto blk = random_block(c, 1000ULL * static_cast<unsigned long long>(l + 1));
    awq::cuda::check(cudaStreamSynchronize(B::stream()), "sync");
    phase.clear();
    const auto t0 = Clock::now();
    std::vector<awq::model::Tensor<B>> in;
    awq::model::Llama::forward<B>(c, b, blk, awq::make_row_major<const float>(h.data(), T, c.hidden),
                                  awq::make_row_major(next.data(), T, c.hidden), &in);
    awq::cuda::check(cudaStreamSynchronize(B::stream()), "sync");
    const double fwd = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto res = awq::model::search_block<B, awq::model::Llama>(c, b, blk, in, opt);
    awq::cuda::check(cudaStreamSynchronize(B::stream()), "sync");
    const double all = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("layer %d: %.3f s (capture forward %.3f)", l, all, fwd);
    for (const auto& [k, v] : phase) std::printf("; %s %.3f", k.c_str(), v), sums[k] += v;
    std::printf("; alpha");
    for (const auto& [g, r] : res.scales) std::printf(" %s %.2f", g.c_str(), r.best_alpha);
    std::printf("\n");
    sums["capture forward"] += fwd;
    total += all;
    std::swap(h, next);
  }
  std::printf("per layer: %.3f s", total / layers);
  for (const auto& [k, v] : sums) std::printf("; %s %.3f", k.c_str(), v / layers);
  std::printf("\n");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_block_cuda: %s\n", e.what());
  return 1;
}
