/// \file
/// \brief `HeadEval<backend::cuda>` (nvcc only): perplexity on the GPU — the architecture's final
///        norm on the device, the output projection through cuBLAS in fp32 a chunk of rows at a
///        time, and each row's negative log-likelihood with a double-precision log-sum-exp, as
///        Head::perplexity computes it on the host. Include the architecture's .cuh (its GPU
///        kernels) too.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "awq/backend/cuda.cuh"
#include "awq/model/head.hpp"

namespace awq::detail::head_cuda {

// One block per row of logits [rows, V]: nll = −(L[target] − max) + log Σ exp(L − max), in double;
// 0 for the last position of a sequence (it predicts nothing).
template <int = 0>  // a template: header kernels need one definition per program
__global__ void nll_kernel(const float* logits, index_t rows, index_t V, const int* tokens, index_t t0, int seq_len, double* nll) {
  __shared__ double sh[256];
  __shared__ float shm[256];
  for (index_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const index_t t = t0 + i;
    if (t % seq_len == seq_len - 1) {
      if (threadIdx.x == 0) nll[t] = 0.0;
      continue;
    }
    const float* L = logits + i * V;
    float mx = -INFINITY;
    for (index_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, L[v]);
    shm[threadIdx.x] = mx;
    __syncthreads();
    for (int s = 128; s > 0; s /= 2) {
      if (static_cast<int>(threadIdx.x) < s) shm[threadIdx.x] = fmaxf(shm[threadIdx.x], shm[threadIdx.x + s]);
      __syncthreads();
    }
    mx = shm[0];
    double sum = 0.0;
    for (index_t v = threadIdx.x; v < V; v += blockDim.x) sum += exp(static_cast<double>(L[v] - mx));
    sh[threadIdx.x] = sum;
    __syncthreads();
    for (int s = 128; s > 0; s /= 2) {
      if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) nll[t] = -(static_cast<double>(L[tokens[t + 1]] - mx) - log(sh[0]));
    __syncthreads();
  }
}

}  // namespace awq::detail::head_cuda

namespace awq::model {

/// \brief On the GPU: the same result as Head::perplexity up to the order of the sums.
template <>
struct HeadEval<backend::cuda> {
  /// Perplexity of `tokens` from the last block's output `hidden` (host, [tokens, hidden]).
  template <class Arch>
  static PerplexityResult perplexity(const Head<Arch>& head, const std::vector<float>& hidden, const std::vector<int>& tokens,
                                     int seq_len) {
    namespace cu = ::awq::cuda;
    using B = backend::cuda;
    const ModelConfig& c = head.cfg;
    const index_t H = c.hidden, T = static_cast<index_t>(tokens.size()), V = c.vocab;
    detail::require(seq_len > 1 && T % seq_len == 0 && static_cast<index_t>(hidden.size()) == T * H,
                    "awq::model::HeadEval<cuda>::perplexity: ", tokens.size(), " tokens, ", hidden.size(), " hidden values, seq_len ",
                    seq_len);
    for (std::size_t t = 0; t < tokens.size(); ++t)
      detail::require(tokens[t] >= 0 && tokens[t] < c.vocab, "awq::model::HeadEval<cuda>::perplexity: token id ", tokens[t], " at ", t,
                      " is outside the vocabulary of ", c.vocab);
    const cu::DeviceBuffer<float> norm(head.norm), norm_bias(head.norm_bias), W(head.lm_head), x(hidden);
    const cu::DeviceBuffer<int> tok(tokens);
    cu::DeviceBuffer<float> xn(hidden.size());
    const auto xv = make_row_major<const float>(x.data(), T, H);
    const auto xnv = make_row_major(xn.data(), T, H);
    if constexpr (detail::has_norm_bias<Arch>::value)
      Arch::template final_norm<B>(c, norm.data(), norm_bias.data(), xv, xnv);
    else
      Arch::template final_norm<B>(c, norm.data(), xv, xnv);
    // Logits a chunk of rows at a time, at most 512 MiB of them.
    const index_t chunk = std::max<index_t>(1, std::min<index_t>(T, (index_t{1} << 27) / V));
    cu::DeviceBuffer<float> logits(static_cast<std::size_t>(chunk * V));
    cu::DeviceBuffer<double> nll(static_cast<std::size_t>(T));
    const auto Wv = make_row_major<const float>(W.data(), V, H);
    for (index_t t0 = 0; t0 < T; t0 += chunk) {
      const index_t nt = std::min(chunk, T - t0);
      B::linear<float>(make_row_major<const float>(xn.data() + t0 * H, nt, H), Wv, nullptr, make_row_major(logits.data(), nt, V));
      detail::head_cuda::nll_kernel<><<<static_cast<unsigned>(std::min<index_t>(nt, 65535)), 256, 0, B::stream()>>>(
          logits.data(), nt, V, tok.data(), t0, seq_len, nll.data());
      cu::check(cudaGetLastError(), "nll_kernel launch");
    }
    std::vector<double> h(static_cast<std::size_t>(T));
    B::download(nll.data(), h.size(), h.data());
    return PerplexityResult::of_rows(h, seq_len);
  }
};

}  // namespace awq::model
