/// \file
/// \brief The Llama architecture policy's kernels on the GPU (nvcc only): `LlamaKernels<backend::cuda>`,
///        so that awq::model::Llama's forward and search modules — and with them the model driver —
///        run on backend::cuda. RMSNorm, rotate_half RoPE, causal softmax and SwiGLU as small
///        kernels in fp32; the attention products as cuBLAS strided-batched GEMMs (fp32 accumulation,
///        GQA by addressing the shared KV head). Every view must be contiguous device memory.
///        Also brings the driver's other GPU parts: Finalize<cuda> and HeadEval<cuda>.
#pragma once

#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "awq/backend/cuda.cuh"
#include "awq/model/arch/llama.hpp"
#include "awq/model/finalize.cuh"
#include "awq/model/head.cuh"

namespace awq::detail::llama_cuda {

namespace cu = ::awq::cuda;

inline unsigned grid_for(index_t n, int threads) { return cu::detail::blocks_for(n, threads, 1 << 20); }

template <class T>
__global__ void rmsnorm_kernel(const float* x, index_t rows, index_t cols, const T* w, float eps, T* out) {
  __shared__ float sh[256];
  for (index_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float acc = 0.0f;
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x) acc += x[r * cols + c] * x[r * cols + c];
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = 128; s > 0; s /= 2) {
      if (static_cast<int>(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
      __syncthreads();
    }
    const float inv = 1.0f / sqrtf(sh[0] / static_cast<float>(cols) + eps);
    for (index_t c = threadIdx.x; c < cols; c += blockDim.x)
      out[r * cols + c] = cu::detail::from_float<T>(cu::detail::to_float(w[c]) * (x[r * cols + c] * inv));
    __syncthreads();
  }
}

// RoPE from a [seq_len][d/2] table of (cos, sin): a block per token, threads over heads × d/2.
template <class T>
__global__ void rope_kernel(T* m, index_t tokens, int heads, int d, int seq_len, const float2* cs) {
  const int half = d / 2;
  for (index_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const float2* row = cs + (t % seq_len) * half;
    for (int j = threadIdx.x; j < heads * half; j += blockDim.x) {
      const int h = j / half, i = j % half;
      const float c = row[i].x, s = row[i].y;
      T* v = m + (t * heads + h) * d;
      const float x1 = cu::detail::to_float(v[i]), x2 = cu::detail::to_float(v[i + half]);
      v[i] = cu::detail::from_float<T>(x1 * c + (-x2) * s);
      v[i + half] = cu::detail::from_float<T>(x2 * c + x1 * s);
    }
  }
}

// One warp per score row: scale, causal mask, softmax in fp32; P in T (zeros above the diagonal).
// NPER > 0: the row (L <= 32·NPER) is read once into registers; NPER = 0: any L, three passes.
template <class T, int NPER>
__global__ void causal_softmax_kernel(const float* scores, index_t rows, int L, float scaling, T* P) {
  const int lane = threadIdx.x % 32;
  const index_t warps = static_cast<index_t>(gridDim.x) * blockDim.x / 32;
  for (index_t row = (static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows; row += warps) {
    const int i = static_cast<int>(row % L);
    const float* s = scores + row * L;
    T* out = P + row * L;
    if constexpr (NPER > 0) {
      float v[NPER];
      float mx = -INFINITY;
#pragma unroll
      for (int u = 0; u < NPER; ++u) {
        const int j = lane + 32 * u;
        v[u] = j <= i ? s[j] * scaling : -INFINITY;
        mx = fmaxf(mx, v[u]);
      }
      for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      float sum = 0.0f;
#pragma unroll
      for (int u = 0; u < NPER; ++u) {
        v[u] = lane + 32 * u <= i ? expf(v[u] - mx) : 0.0f;
        sum += v[u];
      }
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
#pragma unroll
      for (int u = 0; u < NPER; ++u)
        if (lane + 32 * u < L) out[lane + 32 * u] = cu::detail::from_float<T>(v[u] / sum);
    } else {
      float mx = -INFINITY;
      for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, s[j] * scaling);
      for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      float sum = 0.0f;
      for (int j = lane; j <= i; j += 32) sum += expf(s[j] * scaling - mx);
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      for (int j = lane; j < L; j += 32) out[j] = cu::detail::from_float<T>(j <= i ? expf(s[j] * scaling - mx) / sum : 0.0f);
    }
  }
}

template <class T>
void causal_softmax(const float* scores, index_t rows, int L, float scaling, T* P, cudaStream_t st) {
  const unsigned grid = grid_for(rows * 32, 256);
  if (L <= 128)
    causal_softmax_kernel<T, 4><<<grid, 256, 0, st>>>(scores, rows, L, scaling, P);
  else if (L <= 256)
    causal_softmax_kernel<T, 8><<<grid, 256, 0, st>>>(scores, rows, L, scaling, P);
  else if (L <= 512)
    causal_softmax_kernel<T, 16><<<grid, 256, 0, st>>>(scores, rows, L, scaling, P);
  else if (L <= 1024)
    causal_softmax_kernel<T, 32><<<grid, 256, 0, st>>>(scores, rows, L, scaling, P);
  else
    causal_softmax_kernel<T, 0><<<grid, 256, 0, st>>>(scores, rows, L, scaling, P);
  cu::check(cudaGetLastError(), "causal_softmax_kernel launch");
}

template <class T>
__global__ void swiglu_kernel(const T* gate, const T* up, index_t n, T* out) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const float g = cu::detail::to_float(gate[e]);
    out[e] = cu::detail::from_float<T>((g / (1.0f + expf(-g))) * cu::detail::to_float(up[e]));
  }
}

template <int = 0>  // a template: header kernels need one definition per program
__global__ void add_kernel(const float* a, const float* b, index_t n, float* out) {
  for (index_t e = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += static_cast<index_t>(gridDim.x) * blockDim.x)
    out[e] = a[e] + b[e];
}

template <class T>
void require_contiguous(const char* what, const MatrixView<T>& v) {
  require(v.col_stride() == 1 && v.row_stride() == v.cols(), "awq::model::LlamaKernels<cuda>: ", what,
                         " must be contiguous (row_stride ", v.row_stride(), ", cols ", v.cols(), ")");
}

}  // namespace awq::detail::llama_cuda

namespace awq::model {

/// \brief GPU kernels of the Llama block (fp32 storage), the same operations as the CPU ones.
template <>
struct LlamaKernels<backend::cuda> {
  /// out = w ⊙ x / sqrt(mean(x²) + eps), per row; w is device memory.
  static void rmsnorm(const MatrixView<const float>& x, const float* w, float eps, const MatrixView<float>& out) {
    namespace k = detail::llama_cuda;
    k::require_contiguous("x", x);
    k::require_contiguous("out", out);
    if (x.rows() == 0) return;
    k::rmsnorm_kernel<float><<<static_cast<unsigned>(std::min<index_t>(x.rows(), 65535)), 256, 0, backend::cuda::stream()>>>(
        x.data(), x.rows(), x.cols(), w, eps, out.data());
    ::awq::cuda::check(cudaGetLastError(), "rmsnorm_kernel launch");
  }

  /// \brief What an attention call needs besides its operands: the RoPE table, the scores and
  ///        probabilities of a chunk of sequences, and q, k, v in 16 bits under Math::fp16 / bf16.
  ///        A caller that attends repeatedly (a search module, once per grid point) keeps one, so
  ///        that no call allocates or frees device memory.
  struct Workspace {
    ::awq::cuda::DeviceBuffer<float> rope;           ///< rope_cos_sin(rope_len, rope_dim, rope_theta)
    int rope_len = 0;                                ///< the table's positions
    int rope_dim = 0;                                ///< the table's head dimension
    float rope_theta = 0.0f;                         ///< the table's base
    ::awq::cuda::DeviceBuffer<float> scores;         ///< a chunk's fp32 scores
    ::awq::cuda::DeviceBuffer<unsigned short> lowp;  ///< q, k, v and P in 16 bits (Math::fp16, bf16)
    ::awq::cuda::DeviceBuffer<float> P;              ///< a chunk's fp32 probabilities (Math::fp32, tf32)
    cudaStream_t stream = nullptr;                   ///< where the last call ran
  };

  /// ctx [T, n_heads·d] = causal softmax(q·kᵀ/√d)·v per sequence and head, q and k rotated here;
  /// ws: kept scratch (see Workspace), or null for scratch of this call's own. A is float, or the
  /// 16-bit type of the math in effect (backend::cuda::with_activation): operands and context
  /// stored so.
  template <class A>
  static void attention(const ModelConfig& c, const Batch& b, const MatrixView<A>& q, const MatrixView<A>& k,
                        const MatrixView<const A>& v, const MatrixView<A>& ctx, Workspace* ws = nullptr) {
    namespace kk = detail::llama_cuda;
    namespace cu = ::awq::cuda;
    kk::require_contiguous("q", q);
    kk::require_contiguous("k", k);
    kk::require_contiguous("v", v);
    kk::require_contiguous("ctx", ctx);
    const index_t tok = q.rows();
    const int L = b.seq_len, D = c.head_dim;
    with_workspace(ws, [&](Workspace& w) {
      if (w.rope_len != L || w.rope_dim != D || w.rope_theta != c.rope_theta) {
        w.rope = cu::DeviceBuffer<float>(rope_cos_sin(L, D, c.rope_theta));
        w.rope_len = L, w.rope_dim = D, w.rope_theta = c.rope_theta;
      }
      const auto* cs = reinterpret_cast<const float2*>(w.rope.data());  // (cos, sin) pairs; cudaMalloc aligns
      kk::rope_kernel<A><<<kk::grid_for(tok, 1), 256, 0, w.stream>>>(q.data(), tok, c.n_heads, D, L, cs);
      kk::rope_kernel<A><<<kk::grid_for(tok, 1), 256, 0, w.stream>>>(k.data(), tok, c.n_kv_heads, D, L, cs);
      cu::check(cudaGetLastError(), "rope_kernel launch");
      math_products<A>(c, b, q, k, v, ctx, static_cast<float>(std::pow(static_cast<double>(D), -0.5)), w);
    });
  }

  /// ctx [T, n_heads·d] = causal softmax(scaling · q·kᵀ)·v per sequence and head (GQA: head h
  /// reads KV head h / (n_heads / n_kv_heads)); no position encoding. Under Math::fp16 / bf16 q,
  /// k, v and the probabilities are rounded to 16 bits and multiplied at the 16-bit tensor rate,
  /// as the reference's fp16 model computes them (cuBLAS's down-converting compute types run at
  /// the TF32 rate only); the scores, the softmax and the context stay fp32.
  static void causal_attention(const ModelConfig& c, const Batch& b, const MatrixView<const float>& q,
                               const MatrixView<const float>& k, const MatrixView<const float>& v,
                               const MatrixView<float>& ctx, float scaling, Workspace* ws = nullptr) {
    namespace kk = detail::llama_cuda;
    kk::require_contiguous("q", q);
    kk::require_contiguous("k", k);
    kk::require_contiguous("v", v);
    kk::require_contiguous("ctx", ctx);
    with_workspace(ws, [&](Workspace& w) { math_products<float>(c, b, q, k, v, ctx, scaling, w); });
  }

 private:
  // f(w) with w the caller's workspace, or one of this call's own (synchronized before it dies). A
  // workspace last used on another stream may still be read there.
  template <class F>
  static void with_workspace(Workspace* ws, F&& f) {
    Workspace own;
    Workspace& w = ws ? *ws : own;
    const cudaStream_t st = backend::cuda::stream();
    if (w.stream != st && w.stream != nullptr) ::awq::cuda::check(cudaStreamSynchronize(w.stream), "cudaStreamSynchronize");
    w.stream = st;
    f(w);
    if (!ws) ::awq::cuda::check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
  }

  // The products under the thread's math, of operands and context stored as A.
  template <class A>
  static void math_products(const ModelConfig& c, const Batch& b, const MatrixView<const A>& q, const MatrixView<const A>& k,
                            const MatrixView<const A>& v, const MatrixView<A>& ctx, float scaling, Workspace& w) {
    if constexpr (std::is_same_v<A, float>) {
      switch (backend::cuda::math()) {
        case backend::cuda::Math::fp16: products<__half>(c, b, q, k, v, ctx, scaling, w); break;
        case backend::cuda::Math::bf16: products<__nv_bfloat16>(c, b, q, k, v, ctx, scaling, w); break;
        default: products<float>(c, b, q, k, v, ctx, scaling, w);
      }
    } else {
      backend::cuda::require_activation<A>("awq::model::LlamaKernels<cuda>::attention", "q");
      products<A>(c, b, q, k, v, ctx, scaling, w);
    }
  }

  // The products with operands of type L (float: as stored, under the math's compute type), from
  // q, k, v stored as A (float, rounded here, or L) into ctx of A.
  template <class L, class A>
  static void products(const ModelConfig& c, const Batch& b, const MatrixView<const A>& q, const MatrixView<const A>& k,
                       const MatrixView<const A>& v, const MatrixView<A>& ctx, float scaling, Workspace& w) {
    static_assert(std::is_same_v<A, float> || std::is_same_v<A, L>, "operands are stored as fp32 or as L");
    namespace kk = detail::llama_cuda;
    namespace cu = ::awq::cuda;
    constexpr bool lowp = !std::is_same_v<L, float>;
    const index_t hd = static_cast<index_t>(c.n_heads) * c.head_dim, hdkv = static_cast<index_t>(c.n_kv_heads) * c.head_dim;
    const int L_ = b.seq_len, D = c.head_dim, group = c.n_heads / c.n_kv_heads;
    cudaStream_t st = w.stream;
    // Sequences go in chunks whose fp32 scores fit 1 GiB: per chunk one strided-batched GEMM per
    // head for the scores and one for the context, batched over the chunk's sequences.
    const long long LL = static_cast<long long>(L_) * L_, per_seq = static_cast<long long>(c.n_heads) * LL;
    const int chunk = static_cast<int>(std::max<long long>(1, std::min<long long>(b.n_seq, (1LL << 30) / (per_seq * 4))));
    const auto n_scores = static_cast<index_t>(chunk * per_seq);
    const L *Q = nullptr, *K = nullptr, *V = nullptr;
    L* P = nullptr;
    grown(w.scores, n_scores);
    if constexpr (lowp && std::is_same_v<A, L>) {
      Q = q.data(), K = k.data(), V = v.data(), P = reinterpret_cast<L*>(grown(w.lowp, n_scores));
    } else if constexpr (lowp) {
      L* base = reinterpret_cast<L*>(grown(w.lowp, q.size() + k.size() + v.size() + n_scores));
      L* out = base;
      for (const MatrixView<const float>* m : {&q, &k, &v}) {
        cu::detail::round_rows<L>(*m, out, st);
        out += m->size();
      }
      Q = base, K = base + q.size(), V = K + k.size(), P = out;
    } else {
      Q = q.data(), K = k.data(), V = v.data(), P = grown(w.P, n_scores);
    }
    const auto ty = cu::detail::cuda_type<L>::value;
    const auto compute = lowp ? CUBLAS_COMPUTE_32F : backend::cuda::compute_type<float>();
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = cu::this_thread_context().handle();
    const long long sq = static_cast<long long>(L_) * hd, skv = static_cast<long long>(L_) * hdkv;
    for (int s0 = 0; s0 < b.n_seq; s0 += chunk) {
      const int nb = std::min(chunk, b.n_seq - s0);
      const L* Qc = Q + s0 * sq;
      const L* Kc = K + s0 * skv;
      const L* Vc = V + s0 * skv;
      A* C = ctx.data() + s0 * sq;
      for (int hq = 0; hq < c.n_heads; ++hq) {  // head hq reads kv head hq / group; batched over sequences
        const int kvh = hq / group;
        cu::check(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, L_, L_, D, &one, Kc + kvh * D, ty, static_cast<int>(hdkv), skv,
                                             Qc + hq * D, ty, static_cast<int>(hd), sq, &zero, w.scores.data() + hq * LL, CUDA_R_32F, L_,
                                             per_seq, nb, compute, CUBLAS_GEMM_DEFAULT),
                  "cublasGemmStridedBatchedEx (scores)");
      }
      kk::causal_softmax<L>(w.scores.data(), static_cast<index_t>(nb) * c.n_heads * L_, L_, scaling, P, st);
      for (int hq = 0; hq < c.n_heads; ++hq) {
        const int kvh = hq / group;
        cu::check(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, D, L_, L_, &one, Vc + kvh * D, ty, static_cast<int>(hdkv), skv,
                                             P + hq * LL, ty, L_, per_seq, &zero, C + hq * D, cu::detail::cuda_type<A>::value, static_cast<int>(hd),
                                             sq, nb, compute, CUBLAS_GEMM_DEFAULT),
                  "cublasGemmStridedBatchedEx (context)");
      }
    }
  }

 public:
  /// out = silu(gate) ⊙ up, in fp32 from values stored as T (float, __half or __nv_bfloat16).
  template <class T>
  static void swiglu(const MatrixView<const T>& gate, const MatrixView<const T>& up, const MatrixView<T>& out) {
    namespace k = detail::llama_cuda;
    k::require_contiguous("gate", gate);
    k::require_contiguous("up", up);
    k::require_contiguous("out", out);
    k::swiglu_kernel<T><<<k::grid_for(gate.size(), 256), 256, 0, backend::cuda::stream()>>>(gate.data(), up.data(), gate.size(), out.data());
    ::awq::cuda::check(cudaGetLastError(), "swiglu_kernel launch");
  }

  /// out = a + b.
  static void add(const MatrixView<const float>& a, const MatrixView<const float>& b, const MatrixView<float>& out) {
    namespace k = detail::llama_cuda;
    k::require_contiguous("a", a);
    k::require_contiguous("b", b);
    k::require_contiguous("out", out);
    k::add_kernel<><<<k::grid_for(a.size(), 256), 256, 0, backend::cuda::stream()>>>(a.data(), b.data(), a.size(), out.data());
    ::awq::cuda::check(cudaGetLastError(), "add_kernel launch");
  }
};

}  // namespace awq::model
