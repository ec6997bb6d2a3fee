// W4A16 vs cuBLAS fp16 in the same run: awq::cuda::w4a16_matmul on the AutoAWQ layout (the GEMV for
// M <= 8, tensor cores above) and on the tiled layout (awq/layout/tiled.hpp: the streaming GEMV up to M = 16, the Hopper wgmma kernel or the mma pipeline above). CUDA events, median of 7 repeats of 200 back-to-back
// calls, weight copies rotated (>= 256 MB of each kind) so L2 never holds the weights.
// Prints µs, GB/s of the bytes the kernel must move, % of the W4 byte floor at the copy
// bandwidth measured in the same run, and the speedup over fp16; last, the tiled layout with bf16
// activations (bf16_us), the tiled layout with overlap_previous (overlap_us: programmatic
// dependent launch, each call's blocks start as the previous call's blocks finish), and the AutoAWQ
// layout with bf16 activations (w4bf16_us), and cuBLAS and the tiled layout again with the 200
// calls replayed from a CUDA graph (fp16_graph_us, tiled_graph_us: bench/anchors.py's method).
// AWQ_BENCH_VARIANTS=name,name (bench/tiled_sweep.sh SWEEP) also times the tiled layout (fp16) under those tuning variants (below), one line each.
#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "awq/cuda.cuh"

namespace {

void cublas_check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw awq::Error(std::string("cuBLAS error in ") + what + ": " + std::to_string(static_cast<int>(s)));
}

// Median µs per call over 7 repeats of `run`, which enqueues `calls` calls on stream `s`.
template <class R>
double median_us(R&& run, int calls, cudaStream_t s = nullptr) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<double> reps;
  for (int r = 0; r < 7; ++r) {
    cudaEventRecord(a, s);
    run();
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    reps.push_back(1000.0 * ms / calls);
  }
  std::sort(reps.begin(), reps.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return reps[3];
}

// `calls` calls of body(i), launched back to back.
template <class F>
double time_us(F&& body, int calls) {
  return median_us([&] {
    for (int i = 0; i < calls; ++i) body(i);
  }, calls);
}

// The same calls (body(i, stream)) captured once in a CUDA graph on a stream of their own and the
// graph replayed: how bench/anchors.py times the Python-bound anchors (no launch gaps).
template <class F>
double time_graph_us(F&& body, int calls) {
  cudaStream_t s;
  awq::cuda::check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  cudaGraph_t g;
  cudaGraphExec_t ge;
  awq::cuda::check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  for (int i = 0; i < calls; ++i) body(i, s);
  awq::cuda::check(cudaStreamEndCapture(s, &g), "cudaStreamEndCapture");
  awq::cuda::check(cudaGraphInstantiate(&ge, g, 0), "cudaGraphInstantiate");
  cudaGraphLaunch(ge, s);  // warm
  const double us = median_us([&] { cudaGraphLaunch(ge, s); }, calls, s);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return us;
}

// Read-only probe: how fast this card streams the tiled codes with plain 16-byte loads
// (grid-stride, four loads in flight per thread) — the practical floor for the code bytes.
__global__ void read_probe(const uint4* __restrict__ p, std::size_t n16, unsigned* out) {
  unsigned acc = 0;
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n16; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n16; i += stride) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) out[0] = acc;  // never in practice; keeps the loads
}

// Tuning variants of the tiled kernels (awq::cuda::TiledTuning), each a set of kernels of its own.
struct NoWgmma : awq::cuda::TiledTuning {  // the mma pipeline on Hopper too
  static constexpr bool wgmma = false;
  static constexpr const char* name = "no_wgmma";
};
struct NoGemv : awq::cuda::TiledTuning {  // no streaming GEMV: M <= 16 on the tensor-core kernels
  static constexpr int gemv_max_m = 0;
  static constexpr const char* name = "no_gemv";
};
struct Fp16Decode : awq::cuda::TiledTuning {  // fp16 decode per weight in place of raw codes
  static constexpr bool mma_raw = false;
  static constexpr bool gemv_raw = false;
  static constexpr const char* name = "fp16_decode";
};
struct GemvBatch16 : awq::cuda::TiledTuning {  // 16 tiles in flight per GEMV lane
  static constexpr int gemv_batch = 16;
  static constexpr const char* name = "gemv_batch16";
};
struct NoMix : awq::cuda::TiledTuning {  // every four-warpgroup block 4 strips wide
  static constexpr bool wgmma_mix = false;
  static constexpr const char* name = "no_mix";
};
struct Wide64 : awq::cuda::TiledTuning {  // four warpgroups over 64 tokens above M = 64
  static constexpr int wgmma_wide_ntok = 64;
  static constexpr const char* name = "wide64";
};
struct WideSteps2 : awq::cuda::TiledTuning {  // four warpgroups: 5 stages, 2 steps per barrier
  static constexpr int wgmma_wide_stages = 5;
  static constexpr int wgmma_wide_steps = 2;
  static constexpr const char* name = "wide_steps2";
};
struct GemvSlice8 : awq::cuda::TiledTuning {  // GEMV K slices of 8 batches (1024 rows): fewer splits at small N
  static constexpr int gemv_force_slice = 8;
  static constexpr const char* name = "gemv_slice8";
};
struct GemvSlice16 : awq::cuda::TiledTuning {  // GEMV K slices of 16 batches (2048 rows)
  static constexpr int gemv_force_slice = 16;
  static constexpr const char* name = "gemv_slice16";
};
struct GemvWarps8 : awq::cuda::TiledTuning {  // GEMV blocks of 8 warps (half the blocks: fewer splits), 2 a SM: 128 registers
  static constexpr int gemv_warps = 8;
  static constexpr int gemv_min_blocks = 2;
  static constexpr const char* name = "gemv_warps8";
};
struct GemvWarps2 : awq::cuda::TiledTuning {  // GEMV blocks of 2 warps (twice the blocks), 8 a SM: 128 registers
  static constexpr int gemv_warps = 2;
  static constexpr int gemv_min_blocks = 8;
  static constexpr const char* name = "gemv_warps2";
};
struct GemvCluster : awq::cuda::TiledTuning {  // GEMV K slices added in a thread-block cluster (sm_90)
  static constexpr bool gemv_cluster = true;
  static constexpr const char* name = "gemv_cluster";
};
using Variants = std::tuple<NoWgmma, NoGemv, Fp16Decode, GemvBatch16, NoMix, Wide64, WideSteps2, GemvSlice8, GemvSlice16, GemvWarps8,
                            GemvWarps2, GemvCluster>;

}  // namespace

int main(int argc, char** argv) {
  // Optional arguments: the M values to run (default 1 4 8 16 64 256).
  std::vector<int> ms;
  for (int i = 1; i < argc; ++i) ms.push_back(std::atoi(argv[i]));
  if (ms.empty()) ms = {1, 4, 8, 16, 64, 256};
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s\n", prop.name);
  // Copy bandwidth (read + write bytes), 1 GiB buffers.
  const std::size_t cb = 1ull << 30;
  awq::cuda::DeviceBuffer<char> src(cb), dst(cb);
  cudaMemset(src.data(), 1, cb);
  const double copy_us = time_us([&](int) { cudaMemcpyAsync(dst.data(), src.data(), cb, cudaMemcpyDeviceToDevice); }, 10);
  const double copy_gbs = 2.0 * cb / (copy_us * 1e3);
  std::printf("device copy: %.0f GB/s (read + write)\n", copy_gbs);

  cublasHandle_t h;
  cublas_check(cublasCreate(&h), "create");
  awq::cuda::DeviceBuffer<unsigned char> blas_ws(32u << 20);  // cuBLAS under graph capture allocates nothing
  cublas_check(cublasSetWorkspace(h, blas_ws.data(), blas_ws.size()), "workspace");
  std::printf("%6s %6s %6s %10s %10s %10s %9s %9s %9s %8s %9s %10s %10s %10s %13s %14s\n", "M", "K", "N", "fp16_us", "w4_us", "tiled_us", "tiled_GB/s", "floor_us",
              "%floor", "speedup", "tiled_TF/s", "bf16_us", "overlap_us", "w4bf16_us", "fp16_graph_us", "tiled_graph_us");
  // AWQ_BENCH_BIG=1: only the largest shape (quick sweeps); AWQ_BENCH_SHAPE=KxN: only that one.
  const int shapes[4][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}, {8192, 28672}};
  const char* big_env = std::getenv("AWQ_BENCH_BIG");
  const bool big_only = big_env && big_env[0] == '1';
  const char* shape_env = std::getenv("AWQ_BENCH_SHAPE");  // "KxN": only that shape
  const char* probe_env = std::getenv("AWQ_BENCH_PROBE");
  const bool read_only = probe_env && probe_env[0] == '1';  // print the read probe's figure
  const char* variants_env = std::getenv("AWQ_BENCH_VARIANTS");
  const std::string variants = std::string(",") + (variants_env ? variants_env : "") + ",";
  for (int m : ms) {
    for (const auto& s : shapes) {
      if (big_only && s[0] != 8192) continue;
      if (shape_env && shape_env[0] && std::to_string(s[0]) + "x" + std::to_string(s[1]) != shape_env) continue;
      const int k = s[0], n = s[1], group = 128, ng = k / group;
      const std::size_t w16_bytes = static_cast<std::size_t>(k) * n * 2;
      const std::size_t w4_bytes = static_cast<std::size_t>(k) * n / 2 + static_cast<std::size_t>(ng) * n * 2 + static_cast<std::size_t>(ng) * n / 2;
      const int c16 = static_cast<int>(std::max<std::size_t>(2, (256ull << 20) / w16_bytes + 1));
      const int c4 = static_cast<int>(std::max<std::size_t>(2, (256ull << 20) / w4_bytes + 1));
      std::vector<awq::cuda::DeviceBuffer<__half>> w16;
      for (int i = 0; i < c16; ++i) {
        w16.emplace_back(static_cast<std::size_t>(k) * n);
        cudaMemset(w16.back().data(), 0x11, w16_bytes);
      }
      std::vector<awq::cuda::DeviceBuffer<std::int32_t>> qw, qz;
      std::vector<awq::cuda::DeviceBuffer<__half>> sc;
      for (int i = 0; i < c4; ++i) {
        qw.emplace_back(static_cast<std::size_t>(k) * n / 8);
        qz.emplace_back(static_cast<std::size_t>(ng) * n / 8);
        sc.emplace_back(static_cast<std::size_t>(ng) * n);
        cudaMemset(qw.back().data(), 0x37, static_cast<std::size_t>(k) * n / 2);
        cudaMemset(qz.back().data(), 0x88, static_cast<std::size_t>(ng) * n / 2);
        cudaMemset(sc.back().data(), 0x20, static_cast<std::size_t>(ng) * n * 2);
      }
      // Tiled copies (padded sizes; arbitrary codes: the timing does not depend on them).
      const int kp = (k + 63) / 64 * 64, np = (n + 63) / 64 * 64;
      std::vector<awq::cuda::DeviceBuffer<std::uint32_t>> tq, tz;
      std::vector<awq::cuda::DeviceBuffer<__half>> ts;
      for (int i = 0; i < c4; ++i) {
        tq.emplace_back(static_cast<std::size_t>(kp) * np / 8);
        tz.emplace_back(static_cast<std::size_t>(kp / group) * np / 8);
        ts.emplace_back(static_cast<std::size_t>(kp / group) * np);
        cudaMemset(tq.back().data(), 0x37, static_cast<std::size_t>(kp) * np / 2);
        cudaMemset(tz.back().data(), 0x88, static_cast<std::size_t>(kp / group) * np / 2);
        cudaMemset(ts.back().data(), 0x20, static_cast<std::size_t>(kp / group) * np * 2);
      }
      awq::cuda::DeviceBuffer<unsigned char> tws(awq::cuda::w4a16_tiled_workspace_bytes(m, k, n));
      if (tws.size()) cudaMemset(tws.data(), 0, tws.size());
      awq::cuda::DeviceBuffer<__half> x(static_cast<std::size_t>(m) * k), y(static_cast<std::size_t>(m) * n);
      awq::cuda::DeviceBuffer<unsigned char> ws(awq::cuda::w4a16_workspace_bytes(m, k, n));
      if (ws.size()) cudaMemset(ws.data(), 0, ws.size());
      cudaMemset(x.data(), 0x30, static_cast<std::size_t>(m) * k * 2);
      const float alpha = 1.0f, beta = 0.0f;
      auto fp16_call = [&](int i) {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, w16[static_cast<std::size_t>(i % c16)].data(), CUDA_R_16F, k, x.data(),
                     CUDA_R_16F, k, &beta, y.data(), CUDA_R_16F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      };
      const double t16 = time_us(fp16_call, 200);
      const double t16g = time_graph_us(
          [&](int i, cudaStream_t s) {
            cublasSetStream(h, s);
            fp16_call(i);
          },
          200);
      cublasSetStream(h, nullptr);
      // One call on copy i % c4 of either layout (W4A16Args or W4A16TiledArgs: the same fields),
      // fp16 or bf16 activations (the same buffers, reinterpreted: the timing does not depend on the values).
      auto args = [&](auto a, const auto& q, const auto& z, const auto& sc_, const auto& ws_, int i) {
        const auto j = static_cast<std::size_t>(i % c4);
        a.x = reinterpret_cast<decltype(a.x)>(x.data());
        a.qweight = q[j].data();
        a.qzeros = z[j].data();
        a.scales = sc_[j].data();
        a.y = reinterpret_cast<decltype(a.y)>(y.data());
        a.workspace = ws_.data();
        a.workspace_bytes = ws_.size();
        a.m = m;
        a.k = k;
        a.n = n;
        a.group = group;
        return a;
      };
      auto w4_call = [&](auto a, const auto& q, const auto& z, const auto& sc_, const auto& ws_, int i) {
        awq::cuda::w4a16_matmul(args(a, q, z, sc_, ws_, i));
      };
      const double t4 = time_us([&](int i) { w4_call(awq::cuda::W4A16Args{}, qw, qz, sc, ws, i); }, 200);
      const double tt = time_us([&](int i) { w4_call(awq::cuda::W4A16TiledArgs{}, tq, tz, ts, tws, i); }, 200);
      const double tb = time_us([&](int i) { w4_call(awq::cuda::W4A16TiledArgsBf16{}, tq, tz, ts, tws, i); }, 200);
      const double t4b = time_us([&](int i) { w4_call(awq::cuda::W4A16ArgsBf16{}, qw, qz, sc, ws, i); }, 200);
      const double ttg = time_graph_us(
          [&](int i, cudaStream_t s) { awq::cuda::w4a16_matmul(args(awq::cuda::W4A16TiledArgs{}, tq, tz, ts, tws, i), s); }, 200);
      awq::cuda::W4A16TiledArgs overlap{};
      overlap.overlap_previous = true;  // programmatic dependent launch
      const double to = time_us([&](int i) { w4_call(overlap, tq, tz, ts, tws, i); }, 200);
      std::vector<std::string> variant_lines;
      std::apply(
          [&](auto... v) {
            auto time_variant = [&](auto tag) {
              using Tn = decltype(tag);
              if (variants.find(std::string(",") + Tn::name + ",") == std::string::npos) return;
              awq::cuda::DeviceBuffer<unsigned char> vws(awq::cuda::w4a16_tiled_workspace_bytes<Tn>(m, k, n));
              if (vws.size()) cudaMemset(vws.data(), 0, vws.size());
              const double tv =
                  time_us([&](int i) { awq::cuda::w4a16_matmul(args(awq::cuda::W4A16TiledArgs{}, tq, tz, ts, vws, i), nullptr, tag); }, 200);
              char line[160];
              std::snprintf(line, sizeof line, "  variant %-12s M %d, %d x %d: tiled_us %.1f (%.2fx the default's time)", Tn::name, m, k, n, tv,
                            tv / tt);
              variant_lines.emplace_back(line);
            };
            (time_variant(v), ...);
          },
          Variants{});
      if (read_only) {  // timed only when asked for
        awq::cuda::DeviceBuffer<unsigned> probe_out(1);
        const std::size_t n16 = static_cast<std::size_t>(kp) * np / 32;
        const double tr = time_us([&](int i) { read_probe<<<prop.multiProcessorCount * 8, 256>>>(reinterpret_cast<const uint4*>(tq[static_cast<std::size_t>(i % c4)].data()), n16, probe_out.data()); }, 200);
        std::printf("read probe: codes %.1f MB in %.1f us = %.0f GB/s\n", n16 * 16 / 1e6, tr, n16 * 16 / (tr * 1e3));
      }
      awq::cuda::check(cudaDeviceSynchronize(), "bench");
      const double floor_us = static_cast<double>(w4_bytes) / (copy_gbs * 1e3);
      std::printf("%6d %6d %6d %10.1f %10.1f %10.1f %9.0f %9.1f %8.0f%% %7.2fx %9.0f %10.1f %10.1f %10.1f %13.1f %14.1f\n", m, k, n, t16, t4, tt,
                  w4_bytes / (tt * 1e3), floor_us, 100.0 * floor_us / tt, t16 / tt, 2.0 * m * k * static_cast<double>(n) / (tt * 1e6), tb, to, t4b,
                  t16g, ttg);
      for (const auto& l : variant_lines) std::printf("%s\n", l.c_str());
      std::fflush(stdout);
    }
  }
  cublasDestroy(h);
  return 0;
}
