// Decode tokens/s of the GPU engine (examples/llama/engine_cuda.cuh), W4A16 against fp16 cuBLAS in
// the same run, on random-weight Llamas of a real model's shape (speed only): SmolLM2-135M's and
// Llama-2-7B's. For each batch and context: the prompt prefilled, two steps to capture the graph,
// then N timed steps (host wall time of each step: the graph, its token and logits copies); the
// weight-read floor of a step is what it reads (the linears as stored, the fp16 output projection,
// the keys and values so far) over the device-to-device copy rate measured here (bytes read and
// written per second). "graph-only": as many steps again replayed back to back with one
// synchronization, the GPU's time per step without the host's round trip. --no-overlap launches
// every kernel plainly (no programmatic dependent launch): the same-run baseline of the overlap.
// --attn-chunk N: the attention's keys per block (LlamaEngineCuda's attn_chunk; default: its pick);
// --no-fused-swiglu: the MLP's activation as a kernel of its own (CudaContext::fuse_swiglu off);
// --gemv-cluster: the W4 GEMVs' K slices meet in thread-block clusters (TiledTuning::gemv_cluster).
//   bench_generate_gpu [--no-overlap] [--attn-chunk N] [--no-fused-swiglu] [--gemv-cluster] SHAPE TOKENS BATCH:CONTEXT...
//   (SHAPE: smollm or 7b)
#include "llama/engine_cuda.cuh"
#include "llama/random_llama.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace awq_example;

namespace {

struct GemvCluster : awq::cuda::TiledTuning {
  static constexpr bool gemv_cluster = true;
};

struct Point {
  int batch, ctx;
};

struct Result {
  double tok_s = 0, step_ms = 0, floor_ms = 0, graph_ms = 0;  // graph_ms: back-to-back replays, no host round trip
};

double copy_rate() {
  const std::size_t bytes = std::size_t{2} << 30;
  awq::cuda::DeviceBuffer<unsigned char> a(bytes), b(bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < 3; ++i) cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e0);
  const int reps = 10;
  for (int i = 0; i < reps; ++i) cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice);
  cudaEventRecord(e1);
  awq::cuda::check(cudaEventSynchronize(e1), "copy rate");
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 2.0 * static_cast<double>(bytes) * reps / (ms * 1e-3);
}

std::vector<int> ids(std::size_t n, int vocab, std::uint64_t seed) {
  std::vector<int> v(n);
  for (auto& x : v) x = static_cast<int>(awq_example::detail::splitmix(seed) % static_cast<std::uint64_t>(vocab));
  return v;
}

template <class L>
std::vector<Result> measure(CudaLlama<L>& m, const std::vector<Point>& points, int tokens, double rate, bool overlap, int chunk, bool fuse) {
  using Clock = std::chrono::steady_clock;
  std::vector<Result> out;
  for (const Point& p : points) {
    LlamaEngineCuda<L> e(m, p.ctx + 2 * tokens + 2, p.batch, chunk);
    e.ctx.overlap = overlap;
    e.ctx.fuse_swiglu = fuse;
    e.prefill(ids(static_cast<std::size_t>(p.ctx), m.cfg.vocab, 1));
    const std::vector<int> next = ids(static_cast<std::size_t>(p.batch), m.cfg.vocab, 2);
    e.step(next);  // eager
    e.step(next);  // captured
    const double bytes0 = static_cast<double>(e.step_bytes());
    const auto t0 = Clock::now();
    for (int t = 0; t < tokens; ++t) e.step(next);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double bytes = 0.5 * (bytes0 + static_cast<double>(e.step_bytes()));
    Result r;
    r.step_ms = 1e3 * s / tokens;
    r.tok_s = static_cast<double>(p.batch) * tokens / s;
    r.floor_ms = 1e3 * bytes / rate;
    const auto t1 = Clock::now();
    e.replay(tokens);
    r.graph_ms = 1e3 * std::chrono::duration<double>(Clock::now() - t1).count() / tokens;
    out.push_back(r);
  }
  return out;
}

awq::model::ModelConfig shape(const std::string& s) {
  awq::model::ModelConfig c;
  c.architecture = "llama";
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  if (s == "smollm") {  // SmolLM2-135M
    c.hidden = 576, c.intermediate = 1536, c.n_heads = 9, c.n_kv_heads = 3, c.head_dim = 64, c.layers = 30, c.vocab = 49152;
    c.tied_embeddings = true;
  } else if (s == "7b") {  // Llama-2-7B
    c.hidden = 4096, c.intermediate = 11008, c.n_heads = 32, c.n_kv_heads = 32, c.head_dim = 128, c.layers = 32, c.vocab = 32000;
  } else {
    throw awq::Error("bench_generate_gpu: shape '" + s + "' (accepted: smollm, 7b)");
  }
  return c;
}

}  // namespace

int main(int argc, char** argv) try {
  bool overlap = true, fuse = true, cluster = false;
  int chunk = 0;
  for (; argc > 1 && std::string(argv[1]).rfind("--", 0) == 0; --argc, ++argv) {
    const std::string o = argv[1];
    if (o == "--no-overlap") {
      overlap = false;
    } else if (o == "--no-fused-swiglu") {
      fuse = false;
    } else if (o == "--gemv-cluster") {
      cluster = true;
    } else if (o == "--attn-chunk" && argc > 2) {
      char* end = nullptr;
      chunk = static_cast<int>(std::strtol(argv[2], &end, 10));
      awq::detail::require(end != argv[2] && *end == '\0' && chunk > 0, "bench_generate_gpu: --attn-chunk '", argv[2], "' is not a positive number");
      --argc, ++argv;
    } else {
      argc = 0;  // the usage below
      break;
    }
  }
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: bench_generate_gpu [--no-overlap] [--attn-chunk N] [--no-fused-swiglu] [--gemv-cluster] smollm|7b TOKENS "
                 "BATCH:CONTEXT...\n");
    return 2;
  }
  if (awq::cuda::device_count() == 0) {
    std::printf("bench_generate_gpu: no CUDA device, skipped\n");
    return 0;
  }
  const std::string name = argv[1];
  const RandomLlama src{shape(name), 1};
  const int tokens = std::atoi(argv[2]), group = name == "smollm" ? 64 : 128;
  std::vector<Point> points;
  for (int i = 3; i < argc; ++i) {
    Point p{};
    awq::detail::require(std::sscanf(argv[i], "%d:%d", &p.batch, &p.ctx) == 2 && p.batch > 0 && p.ctx > 0, "bench_generate_gpu: '",
                         argv[i], "' is not BATCH:CONTEXT");
    points.push_back(p);
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const double rate = copy_rate();
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::printf("%s, %s-shaped random Llama (hidden %d, MLP %d, %d heads / %d kv, %d layers, vocab %d), W4 group %d; "
              "device-to-device copy %.0f GB/s (read + write); programmatic dependent launch %s; attention chunk %s; swiglu %s%s\n",
              prop.name, name.c_str(), src.cfg.hidden, src.cfg.intermediate, src.cfg.n_heads, src.cfg.n_kv_heads, src.cfg.layers,
              src.cfg.vocab, group, rate / 1e9, overlap ? "on" : "off", chunk ? std::to_string(chunk).c_str() : "the engine's pick",
              fuse ? "in gate/up's epilogue where it can" : "a kernel of its own", cluster ? "; GEMV K slices in clusters" : "");
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Result> w4, fp;
  std::size_t w4_bytes = 0, fp_bytes = 0;
  auto run_w4 = [&](auto* linear) {  // the W4 linear's type, as a null pointer
    CudaLlama<std::remove_pointer_t<decltype(linear)>> m(load_random_awq<HostAwqLinear>(src, group, threads), threads);
    w4_bytes = m.weight_bytes();
    std::printf("W4 model built in %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    w4 = measure(m, points, tokens, rate, overlap, chunk, fuse);
  };
  cluster ? run_w4(static_cast<W4CudaLinearT<GemvCluster>*>(nullptr)) : run_w4(static_cast<W4CudaLinear*>(nullptr));
  const auto t1 = std::chrono::steady_clock::now();
  {
    CudaLlama<CublasLinear> m(load_fp_weights<HostFp16Linear>(src, threads), threads);
    fp_bytes = m.weight_bytes();
    std::printf("fp16 model built in %.1f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count());
    fp = measure(m, points, tokens, rate, overlap, chunk, fuse);
  }
  std::printf("weights read per step (linears + fp16 lm_head): W4 %.1f MB, fp16 %.1f MB; %d timed steps each\n", w4_bytes / 1e6,
              fp_bytes / 1e6, tokens);
  std::printf("| shape | batch | context | W4 tokens/s | fp16 tokens/s | W4/fp16 | W4 ms/step | W4 graph-only ms | W4 floor ms | W4 / floor "
              "| fp16 ms/step | fp16 graph-only ms | fp16 floor ms | fp16 / floor |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (std::size_t i = 0; i < points.size(); ++i)
    std::printf("| %s | %d | %d | %.1f | %.1f | %.2fx | %.3f | %.3f | %.3f | %.2f | %.3f | %.3f | %.3f | %.2f |\n", name.c_str(), points[i].batch,
                points[i].ctx, w4[i].tok_s, fp[i].tok_s, w4[i].tok_s / fp[i].tok_s, w4[i].step_ms, w4[i].graph_ms, w4[i].floor_ms,
                w4[i].step_ms / w4[i].floor_ms, fp[i].step_ms, fp[i].graph_ms, fp[i].floor_ms, fp[i].step_ms / fp[i].floor_ms);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_generate_gpu: %s\n", e.what());
  return 1;
}
