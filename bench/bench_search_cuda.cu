// The whole per-block AWQ search on the GPU (backend::cuda) over a 7B-shaped Llama stack:
// hidden 4096, MLP 11008, 32 heads, 32 layers, random fp16 weights, RMSNorm weights with a
// handful of outlier channels (so the activations have salient input channels), 128 × 512
// calibration tokens. Per layer: forward with capture, scale search of the four groups, fold,
// clip search of v/o/gate/up/down, clamp; the next layer's input is this layer's output.
//
// Then, on the first layer and the first --cpu-seqs sequences: the CPU backend's time for the same
// work (its scale-search part scales linearly with the tokens, the clip part does not: both are
// printed, with the extrapolation to 128 sequences marked as such) and the α each backend picks —
// CPU fp32, GPU fp32 and GPU fp16 on the same weights and tokens.
//
//   bench_search_cuda [--layers 32] [--seqs 128] [--seq-len 512] [--cpu-seqs 2] [--cpu-layers 1]
#include <cuda_fp16.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <awq/model/arch/llama.hpp>
#include <awq/model/pipeline.hpp>

#include "hashed_normal.cuh"
#include "llama_ref/llama_cuda.cuh"

namespace {

namespace gpu = awq_example::gpu;
using awq::index_t;
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <class T>
gpu::Buf<T> randn(index_t n, unsigned long long seed, float std) {
  gpu::Buf<T> b(static_cast<std::size_t>(n));
  awq_bench::fill_normal<T>(b.data(), n, seed, std);
  return b;
}

// RMSNorm weights: 1, with every 512th channel at 8 (the outlier input channels).
template <class T>
gpu::Buf<T> norm_weights(index_t h) {
  std::vector<T> w(static_cast<std::size_t>(h), awq::cuda::detail::host_from_float<T>(1.0f));
  for (index_t c = 37; c < h; c += 512) w[static_cast<std::size_t>(c)] = awq::cuda::detail::host_from_float<T>(8.0f);
  return gpu::Buf<T>(w);
}

template <class T>
gpu::Layer<T> make_layer(const awq_example::LlamaConfig& c, int layer) {
  const index_t H = c.hidden, I = c.intermediate, hd = c.n_heads * c.head_dim, hdkv = c.n_kv_heads * c.head_dim;
  const unsigned long long s = 1000ULL * static_cast<unsigned long long>(layer + 1);
  const float sh = 1.0f / std::sqrt(static_cast<float>(H)), si = 1.0f / std::sqrt(static_cast<float>(I));
  return gpu::Layer<T>{randn<T>(hd * H, s + 1, sh), randn<T>(hdkv * H, s + 2, sh), randn<T>(hdkv * H, s + 3, sh),
                       randn<T>(H * hd, s + 4, sh), randn<T>(I * H, s + 5, sh),     randn<T>(I * H, s + 6, sh),
                       randn<T>(H * I, s + 7, si),  norm_weights<T>(H),              norm_weights<T>(H)};
}

template <class T>
std::vector<float> to_host_float(const gpu::Buf<T>& b, std::size_t n) {
  std::vector<T> h(n);
  awq::cuda::check(cudaMemcpy(h.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<float> f(n);
  for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<float>(awq::cuda::detail::host_value(h[i]));
  return f;
}

template <class T>
gpu::Layer<float> to_float_layer(const gpu::Layer<T>& l) {
  auto f = [](const gpu::Buf<T>& b) { return gpu::Buf<float>(to_host_float(b, b.size())); };
  return gpu::Layer<float>{f(l.wq), f(l.wk), f(l.wv), f(l.wo), f(l.wg), f(l.wu), f(l.wd), f(l.ln_in), f(l.ln_post)};
}

const char* kGroups[] = {"qkv", "o", "gate_up", "down"};

}  // namespace

int main(int argc, char** argv) {
  int layers = 32, seqs = 128, seq_len = 512, cpu_seqs = 2, cpu_layers = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (a == "--layers") layers = v;
    else if (a == "--seqs") seqs = v;
    else if (a == "--seq-len") seq_len = v;
    else if (a == "--cpu-seqs") cpu_seqs = v;
    else if (a == "--cpu-layers") cpu_layers = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (awq::cuda::device_count() == 0) {
    std::printf("bench_search_cuda skipped: no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  awq::cuda::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  awq_example::LlamaConfig cfg;
  cfg.hidden = 4096;
  cfg.intermediate = 11008;
  cfg.n_heads = cfg.n_kv_heads = 32;
  cfg.head_dim = 128;
  cfg.rms_eps = 1e-6f;
  const awq_example::Batch batch{seqs, seq_len};
  const index_t tok = batch.tokens(), H = cfg.hidden;
  awq_example::BlockAwqOptions opt;  // W4 g128, zero point, llm-awq defaults
  std::printf("# AWQ search, backend::cuda, %s; %d layers, hidden %d, MLP %d, %d heads; %d x %d tokens; fp16 weights; %s\n",
              prop.name, layers, cfg.hidden, cfg.intermediate, cfg.n_heads, seqs, seq_len, opt.quant.name().c_str());

  using half = __half;
  gpu::Buf<float> hidden = randn<float>(tok * H, 7, 1.0f), next(static_cast<std::size_t>(tok * H));
  std::printf("| layer | forward s | qkv s | o s | gate_up s | down s | fold s | clip s | layer s | alpha qkv/o/gate_up/down |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
  double total = 0, total_search = 0;
  std::map<std::string, double> sums;
  gpu::Layer<float> first_layer_f32;
  std::vector<float> first_hidden;
  for (int li = 0; li < layers; ++li) {
    gpu::Layer<half> l = make_layer<half>(cfg, li);
    if (li == 0) {
      first_layer_f32 = to_float_layer(l);
      first_hidden = to_host_float(hidden, static_cast<std::size_t>(std::min(cpu_seqs, seqs)) * seq_len * H);
    }
    awq::cuda::check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    const auto t0 = Clock::now();
    gpu::Captured<half> cap;
    gpu::layer_forward(cfg, batch, l, hidden, next, cap);
    const double t_fwd = since(t0);
    const auto r = gpu::awq_block(cfg, batch, l, cap, opt);
    const double t_layer = since(t0);
    total += t_layer;
    total_search += t_layer - t_fwd;
    std::printf("| %d | %.3f |", li, t_fwd);
    for (const char* g : kGroups) {
      const auto it = r.seconds.find(std::string("scales ") + g);
      std::printf(" %.3f |", it == r.seconds.end() ? 0.0 : it->second);
    }
    std::printf(" %.3f | %.3f | %.3f |", r.seconds.at("fold"), r.seconds.at("clip"), t_layer);
    for (const char* g : kGroups) std::printf(" %.2f", r.scales.count(g) ? r.scales.at(g).best_alpha : -1.0);
    std::printf(" |\n");
    std::fflush(stdout);
    for (const auto& [k, v] : r.seconds) sums[k] += v;
    std::swap(hidden, next);
  }
  std::printf("\nGPU total: %.2f s for %d layers (%.3f s/layer; search without the capture forward %.3f s/layer)\n", total,
              layers, total / layers, total_search / layers);
  for (const auto& [k, v] : sums) std::printf("  %-16s %.3f s/layer\n", k.c_str(), v / layers);

  // ---- CPU backend on the first layer, first cpu_seqs sequences; α agreement there -------------
  if (cpu_layers > 0 && cpu_seqs > 0) {
    const awq_example::Batch sb{std::min(cpu_seqs, seqs), seq_len};
    const index_t st = sb.tokens();
    // The CPU side through the library's Llama policy and per-block flow, on the same fp32 weights.
    const index_t I = cfg.intermediate;
    awq::model::ModelConfig mc;
    mc.architecture = "llama";
    mc.hidden = cfg.hidden, mc.intermediate = cfg.intermediate, mc.n_heads = cfg.n_heads, mc.n_kv_heads = cfg.n_kv_heads;
    mc.head_dim = cfg.head_dim, mc.norm_eps = cfg.rms_eps, mc.rope_theta = cfg.rope_theta, mc.layers = 1, mc.vocab = 1;
    std::map<std::string, std::vector<float>> cl = {
        {"self_attn.q_proj.weight", to_host_float(first_layer_f32.wq, H * H)}, {"self_attn.k_proj.weight", to_host_float(first_layer_f32.wk, H * H)},
        {"self_attn.v_proj.weight", to_host_float(first_layer_f32.wv, H * H)}, {"self_attn.o_proj.weight", to_host_float(first_layer_f32.wo, H * H)},
        {"mlp.gate_proj.weight", to_host_float(first_layer_f32.wg, I * H)},    {"mlp.up_proj.weight", to_host_float(first_layer_f32.wu, I * H)},
        {"mlp.down_proj.weight", to_host_float(first_layer_f32.wd, H * I)},    {"input_layernorm.weight", to_host_float(first_layer_f32.ln_in, H)},
        {"post_attention_layernorm.weight", to_host_float(first_layer_f32.ln_post, H)}};
    awq::model::Block<awq::backend::cpu> cpu_layer;
    for (const auto& t : awq::model::Llama::block_tensors(mc)) cpu_layer.put(t.name, t.shape, cl.at(t.name));
    std::vector<float> cpu_out(first_hidden.size());
    std::map<std::string, double> phase_s;
    awq::model::BlockOptions copt;
    copt.quant = opt.quant;
    copt.progress = [&](const awq::Progress& p) { phase_s[p.phase] = p.elapsed_s; };
    const auto t0 = Clock::now();
    std::vector<awq::model::Tensor<awq::backend::cpu>> cap;
    const awq::model::Batch mb{sb.n_seq, sb.seq_len};
    awq::model::Llama::forward<awq::backend::cpu>(mc, mb, cpu_layer, awq::make_row_major<const float>(first_hidden.data(), st, H),
                                                  awq::make_row_major(cpu_out.data(), st, H), &cap);
    const auto cres = awq::model::search_block<awq::backend::cpu, awq::model::Llama>(mc, mb, cpu_layer, cap, copt);
    const double t_cpu = since(t0);
    double t_scale = 0, t_clip = 0;
    for (const auto& [k, v] : phase_s) (k.rfind("clip", 0) == 0 ? t_clip : t_scale) += v;
    const double factor = static_cast<double>(seqs) / sb.n_seq;
    std::printf("\nCPU backend (%d threads), layer 0 on %d x %d tokens: %.2f s (scale searches %.2f s, clip %.2f s, "
                "forward+fold %.2f s)\n",
                awq::backend::cpu::thread_count(), sb.n_seq, seq_len, t_cpu, t_scale, t_clip, t_cpu - t_scale - t_clip);
    std::printf("CPU extrapolated to %d x %d tokens (scale-search and forward time x %.0f, clip unchanged): %.0f s/layer\n",
                seqs, seq_len, factor, (t_cpu - t_clip) * factor + t_clip);

    // The same layer and tokens on the GPU, fp32 and fp16.
    double forward_rel = -1;
    auto gpu_alphas = [&](auto tag) {
      using T = decltype(tag);
      gpu::Layer<T> gl;
      auto up = [&](const char* name) {
        const std::vector<float>& m = cl.at(name);
        std::vector<T> h(m.size());
        for (std::size_t i = 0; i < h.size(); ++i) h[i] = awq::cuda::detail::host_from_float<T>(m[i]);
        return gpu::Buf<T>(h);
      };
      gl = gpu::Layer<T>{up("self_attn.q_proj.weight"), up("self_attn.k_proj.weight"), up("self_attn.v_proj.weight"),
                         up("self_attn.o_proj.weight"), up("mlp.gate_proj.weight"),    up("mlp.up_proj.weight"),
                         up("mlp.down_proj.weight"),    up("input_layernorm.weight"),  up("post_attention_layernorm.weight")};
      gpu::Buf<float> hb(first_hidden), out(first_hidden.size());
      gpu::Captured<T> cap;
      gpu::layer_forward(cfg, sb, gl, hb, out, cap);
      if constexpr (std::is_same_v<T, float>) {  // the GPU forward against the CPU's, same weights and tokens
        const auto& ref = cpu_out;  // the CPU forward on the original weights, before the search
        const auto got = to_host_float(out, ref.size());
        double num = 0, den = 0;
        for (std::size_t i = 0; i < got.size(); ++i) {
          const double d = static_cast<double>(got[i]) - ref[i];
          num += d * d;
          den += static_cast<double>(ref[i]) * ref[i];
        }
        forward_rel = std::sqrt(num / den);
      }
      const auto t1 = Clock::now();
      const auto r = gpu::awq_block(cfg, sb, gl, cap, opt);
      const double t = since(t1);
      return std::make_pair(r, t);
    };
    const auto [r32, t32] = gpu_alphas(float{});
    const auto [r16, t16] = gpu_alphas(half{});
    const auto& g32 = r32.scales;
    const auto& g16 = r16.scales;
    std::printf("GPU on the same %d x %d tokens: fp32 %.3f s, fp16 %.3f s\n", sb.n_seq, seq_len, t32, t16);
    std::printf("GPU fp32 layer forward vs the CPU's: relative error (Frobenius) %.2e%s\n", forward_rel,
                forward_rel < 1e-4 ? "" : "  ** above 1e-4 **");
    long clip_same = 0, clip_n = 0;
    for (const auto& [name, c] : cres.clips) {
      const auto& gc = r32.clips.at(name);
      for (std::size_t i = 0; i < c.shrink_index.size(); ++i) clip_same += c.shrink_index[i] == gc.shrink_index[i];
      clip_n += static_cast<long>(c.shrink_index.size());
    }
    std::printf("clip bounds CPU vs GPU fp32 (after each side's own fold): %ld of %ld (row, group) identical\n", clip_same,
                clip_n);
    std::printf("\n| group | CPU fp32 alpha | GPU fp32 alpha | GPU fp16 alpha | max rel. scale diff CPU vs GPU fp32 |\n|---|---|---|---|---|\n");
    int same32 = 0, same16 = 0, n = 0;
    for (const char* g : kGroups) {
      if (!cres.scales.count(g)) continue;
      const auto& a = cres.scales.at(g);
      const auto& b = g32.at(g);
      const auto& c = g16.at(g);
      double worst = 0;
      for (std::size_t i = 0; i < a.scales.size(); ++i)
        worst = std::max(worst, std::fabs(static_cast<double>(b.scales[i]) - a.scales[i]) / std::fabs(static_cast<double>(a.scales[i])));
      std::printf("| %s | %.2f | %.2f | %.2f | %.2e |\n", g, a.best_alpha, b.best_alpha, c.best_alpha, worst);
      ++n;
      same32 += a.best_index == b.best_index;
      same16 += a.best_index == c.best_index;
    }
    std::printf("same alpha as the CPU: GPU fp32 %d/%d groups, GPU fp16 %d/%d groups\n", same32, n, same16, n);
  }
  return 0;
}
