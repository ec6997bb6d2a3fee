// GPTQ's final quantization of one transformer block on the GPU (the improved mode's finalize,
// model::finalize_block_gptq on backend::cuda), stage by stage: the Gram products XᵀX of the
// block's four linear inputs, their factors U (awq::cuda::GptqFactor) and the feedback of its
// seven linears (awq::cuda::gptq_quantize), W4 g64 or g128, on random inputs with outlier
// channels. Shapes: SmolLM2-135M (hidden 576, MLP 1536, 64 × 512 tokens) and a 7B Llama (4096,
// 11008, 128 × 512 tokens). Gram under --math fp32 and fp16 (the tool's GPU default).
//
// The header-only code under test is whatever -I puts first, so the same file built against an
// older include/ tree is the same-run baseline (bench/gpu_gptq.sh).
//
//   bench_gptq_cuda [--shape smol|7b|both] [--reps 3]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <awq/backend/cuda.cuh>
#include <awq/gptq.cuh>

#include "hashed_normal.cuh"

namespace {

using awq::index_t;
namespace bc = awq::backend;

// N(0, 1) (hashed_normal.cuh), columns c % 97 == 0 scaled by 20: outlier channels.
__global__ void randn_kernel(float* out, index_t rows, index_t cols, unsigned long long seed) {
  const index_t n = rows * cols;
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float v = awq_bench::hashed_normal(seed, e);
    out[e] = (e % cols) % 97 == 0 ? 20.0f * v : v;
  }
}

awq::cuda::DeviceBuffer<float> randn(index_t rows, index_t cols, unsigned long long seed) {
  awq::cuda::DeviceBuffer<float> b(static_cast<std::size_t>(rows * cols));
  randn_kernel<<<1024, 256>>>(b.data(), rows, cols, seed);
  awq::cuda::check(cudaGetLastError(), "randn_kernel");
  return b;
}

struct Linear {
  const char* name;
  index_t out, in;
  int input;  // which of the block's four inputs
};

struct Shape {
  const char* name;
  index_t tokens, hidden, mlp;
  int group;
};

double seconds(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  awq::cuda::check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  return ms / 1e3;
}

void run(const Shape& sh, int reps) {
  const index_t h = sh.hidden, m = sh.mlp;
  const index_t widths[4] = {h, h, h, m};  // attention input, o_proj input, MLP input, down_proj input
  const Linear linears[7] = {{"q", h, h, 0}, {"k", h, h, 0}, {"v", h, h, 0}, {"o", h, h, 1},
                             {"gate", m, h, 2}, {"up", m, h, 2}, {"down", h, m, 3}};
  std::vector<awq::cuda::DeviceBuffer<float>> x;
  for (int i = 0; i < 4; ++i) x.push_back(randn(sh.tokens, widths[i], 11 + static_cast<unsigned long long>(i)));
  std::vector<awq::cuda::DeviceBuffer<float>> w0;
  for (int i = 0; i < 7; ++i) w0.push_back(randn(linears[i].out, linears[i].in, 31 + static_cast<unsigned long long>(i)));
  const awq::QuantSpec spec{4, sh.group, true};
  cudaEvent_t ev[4];
  for (auto& e : ev) awq::cuda::check(cudaEventCreate(&e), "cudaEventCreate");
  const cudaStream_t st = bc::cuda::stream();
  for (const auto math : {bc::cuda::Math::fp32, bc::cuda::Math::fp16}) {
    bc::cuda::set_math(math);
    const char* mname = math == bc::cuda::Math::fp32 ? "fp32" : "fp16";
    std::vector<double> t_gram, t_factor, t_quant;
    for (int rep = 0; rep <= reps; ++rep) {  // rep 0 warms up (handles, workspaces, the allocator)
      std::vector<awq::cuda::DeviceBuffer<float>> hs;
      std::vector<awq::cuda::GptqFactor> fs;
      awq::cuda::check(cudaEventRecord(ev[0], st), "cudaEventRecord");
      for (int i = 0; i < 4; ++i) {
        hs.emplace_back(static_cast<std::size_t>(widths[i] * widths[i]));
        bc::cuda::gram(awq::make_row_major<const float>(x[i].data(), sh.tokens, widths[i]),
                       awq::make_row_major(hs.back().data(), widths[i], widths[i]));
      }
      awq::cuda::check(cudaEventRecord(ev[1], st), "cudaEventRecord");
      for (int i = 0; i < 4; ++i) fs.emplace_back(awq::make_row_major<const float>(hs[i].data(), widths[i], widths[i]), 0.01);
      awq::cuda::check(cudaEventRecord(ev[2], st), "cudaEventRecord");
      std::uint64_t checksum = 0;
      for (const Linear& l : linears) {
        const auto& src = w0[static_cast<std::size_t>(&l - linears)];
        awq::cuda::DeviceBuffer<float> w(static_cast<std::size_t>(l.out * l.in));
        awq::cuda::check(cudaMemcpyAsync(w.data(), src.data(), w.size() * sizeof(float), cudaMemcpyDeviceToDevice, st), "cudaMemcpyAsync");
        const auto ng = static_cast<std::size_t>(l.out * (l.in / sh.group));
        awq::cuda::DeviceBuffer<std::uint8_t> codes(static_cast<std::size_t>(l.out * l.in)), zeros(ng);
        awq::cuda::DeviceBuffer<__half> scales(ng);
        awq::cuda::gptq_quantize(spec, awq::make_row_major(w.data(), l.out, l.in), fs[static_cast<std::size_t>(l.input)], {}, codes.data(),
                                 scales.data(), zeros.data());
        if (rep == reps)
          for (const std::uint8_t c : codes.download()) checksum = checksum * 31 + c;
      }
      awq::cuda::check(cudaEventRecord(ev[3], st), "cudaEventRecord");
      awq::cuda::check(cudaEventSynchronize(ev[3]), "cudaEventSynchronize");
      if (rep == 0) continue;
      t_gram.push_back(seconds(ev[0], ev[1]));
      t_factor.push_back(seconds(ev[1], ev[2]));
      t_quant.push_back(seconds(ev[2], ev[3]));
      if (rep == reps) std::printf("  %s %s: codes' checksum %016llx\n", sh.name, mname, static_cast<unsigned long long>(checksum));
    }
    const auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double g = median(t_gram), f = median(t_factor), q = median(t_quant);
    std::printf("%-8s gram %-4s  per block (median of %d): gram %8.2f ms  factor %8.2f ms  feedback %8.2f ms  total %8.2f ms\n", sh.name,
                mname, reps, g * 1e3, f * 1e3, q * 1e3, (g + f + q) * 1e3);
  }
  for (auto& e : ev) (void)cudaEventDestroy(e);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "both";
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--shape")) shape = argv[i + 1];
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: bench_gptq_cuda [--shape smol|7b|both] [--reps N]\n");
      return 2;
    }
  }
  if (reps < 1 || (shape != "smol" && shape != "7b" && shape != "both")) {
    std::fprintf(stderr, "bench_gptq_cuda: --shape is smol, 7b or both; --reps at least 1\n");
    return 2;
  }
  try {
    cudaDeviceProp p{};
    awq::cuda::check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
    std::printf("device: %s\n", p.name);
    if (shape != "7b") run({"smollm2", 64 * 512, 576, 1536, 64}, reps);
    if (shape != "smol") run({"llama7b", 128 * 512, 4096, 11008, 128}, reps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gptq_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
