// The pre-driver GPU Llama layer and per-block flow with fp16 or fp32 storage (T), kept only for
// bench_search_cuda's fp16 measurements until awq::model gains fp16 block storage; the tool and
// the library use awq/model. Kernels are the library's (awq/model/arch/llama.cuh); cuBLAS
// products through awq::backend::cuda::linear (fp32 accumulation); norms, softmax and RoPE in
// fp32; block outputs and the residual stream fp32.
#pragma once

#include <awq/cuda.cuh>
#include <awq/model/arch/llama.cuh>

#include <cublas_v2.h>

#include <chrono>
#include <cmath>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "llama_block.hpp"

namespace awq_example {
namespace gpu {

namespace cu = awq::cuda;
using awq::index_t;
using awq::MatrixView;

template <class T>
using Buf = cu::DeviceBuffer<T>;

template <class T>
MatrixView<T> view(const Buf<T>& b, index_t rows, index_t cols) {
  return awq::make_row_major<T>(b.data(), rows, cols);
}
template <class T>
MatrixView<const T> cview(const Buf<T>& b, index_t rows, index_t cols) {
  return awq::make_row_major<const T>(b.data(), rows, cols);
}

inline unsigned blocks(index_t n, int threads) { return cu::detail::blocks_for(n, threads, 1 << 20); }

// ---- kernels: the library's (awq/model/arch/llama.cuh, awq/backend/cuda.cuh) ------------------

using awq::detail::llama_cuda::add_kernel;
using awq::detail::llama_cuda::causal_softmax;
using awq::detail::llama_cuda::rmsnorm_kernel;
using awq::detail::llama_cuda::rope_kernel;
using awq::detail::llama_cuda::swiglu_kernel;

template <class T>
void check_launch(const char* what) {
  cu::check(cudaGetLastError(), what);
}

// ---- host side --------------------------------------------------------------------------------

/// Column scaling of a device matrix by host scales: × s (mul) or ÷ s; rows instead of columns with by_col = false.
template <class T>
void scale(const MatrixView<T>& m, const std::vector<float>& s, bool by_col, bool divide) {
  Buf<float> ds(s);
  cu::detail::scale_kernel<T><<<cu::detail::blocks_for(m.rows(), 1, 8192), 256, 0, awq::backend::cuda::stream()>>>(m, ds.data(), by_col,
                                                                                                                 divide);
  check_launch<T>("scale_kernel");
  cu::check(cudaStreamSynchronize(awq::backend::cuda::stream()), "cudaStreamSynchronize");
}

/// apply_clip on the GPU: clamp w [rows, cols] per (row, group) to ± the host bounds [rows, groups].
template <class T>
void clamp_groups(const MatrixView<T>& w, const std::vector<float>& bound) {
  const index_t g = w.cols() / static_cast<index_t>(bound.size() / static_cast<std::size_t>(w.rows()));
  Buf<float> db(bound);
  cu::detail::clamp_groups_kernel<T><<<cu::detail::blocks_for(w.rows(), 1, 8192), 256, 0, awq::backend::cuda::stream()>>>(w, g, db.data());
  check_launch<T>("clamp_groups_kernel");
  cu::check(cudaStreamSynchronize(awq::backend::cuda::stream()), "cudaStreamSynchronize");
}

/// One Llama layer's weights on the device.
template <class T>
struct Layer {
  Buf<T> wq, wk, wv, wo, wg, wu, wd;  // [out, in]
  Buf<T> ln_in, ln_post;              // [hidden]
};

/// Causal GQA attention context [T, n_heads·D] (type T) from x and q, k, v weights.
template <class T>
struct Attention {
  const LlamaConfig* cfg;
  Batch batch;
  mutable Buf<T> q, k, v, ctx, P;
  mutable Buf<float> scores;
  mutable Buf<float> rope;  // rope_cos_sin's table: (cos, sin) per position and frequency

  void context(const MatrixView<const T>& x, const MatrixView<const T>& wq, const MatrixView<const T>& wk,
               const MatrixView<const T>& wv) const {
    const LlamaConfig& c = *cfg;
    const index_t tok = x.rows(), hd = c.n_heads * c.head_dim, hdkv = c.n_kv_heads * c.head_dim;
    const int L = batch.seq_len, D = c.head_dim, group = c.n_heads / c.n_kv_heads;
    auto need = [](auto& b, std::size_t n) {
      if (b.size() < n) b = std::remove_reference_t<decltype(b)>(n);
    };
    need(q, static_cast<std::size_t>(tok * hd));
    need(k, static_cast<std::size_t>(tok * hdkv));
    need(v, static_cast<std::size_t>(tok * hdkv));
    need(ctx, static_cast<std::size_t>(tok * hd));
    // Sequences go in chunks whose fp32 scores fit 2 GiB; per chunk one strided-batched GEMM per
    // head for the scores and one for the context (batched over the chunk's sequences) and one
    // softmax launch, instead of launches per sequence.
    const long long LL = static_cast<long long>(L) * L, per_seq = static_cast<long long>(c.n_heads) * LL;
    const int chunk = static_cast<int>(std::max<long long>(
        1, std::min<long long>(batch.n_seq, (2LL << 30) / (per_seq * static_cast<long long>(sizeof(float))))));
    need(scores, static_cast<std::size_t>(chunk * per_seq));
    need(P, static_cast<std::size_t>(chunk * per_seq));
    using B = awq::backend::cuda;
    B::linear<T, T>(x, wq, nullptr, view(q, tok, hd));
    B::linear<T, T>(x, wk, nullptr, view(k, tok, hdkv));
    B::linear<T, T>(x, wv, nullptr, view(v, tok, hdkv));
    cudaStream_t st = B::stream();
    if (rope.size() != static_cast<std::size_t>(L) * D) rope = Buf<float>(rope_cos_sin(L, D, c.rope_theta));
    const auto* cs = reinterpret_cast<const float2*>(rope.data());  // (cos, sin) pairs; cudaMalloc aligns
    rope_kernel<T><<<blocks(tok, 1), 256, 0, st>>>(q.data(), tok, c.n_heads, D, L, cs);
    rope_kernel<T><<<blocks(tok, 1), 256, 0, st>>>(k.data(), tok, c.n_kv_heads, D, L, cs);
    check_launch<T>("rope_kernel");
    const float scaling = static_cast<float>(std::pow(static_cast<double>(D), -0.5));
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = cu::this_thread_context().handle();
    const auto ty = cu::detail::cuda_type<T>::value;
    const long long sq = static_cast<long long>(L) * hd, skv = static_cast<long long>(L) * hdkv;
    for (int s0 = 0; s0 < batch.n_seq; s0 += chunk) {
      const int nb = std::min(chunk, batch.n_seq - s0);
      const T* Q = q.data() + s0 * sq;
      const T* K = k.data() + s0 * skv;
      const T* V = v.data() + s0 * skv;
      T* C = ctx.data() + s0 * sq;
      for (int hq = 0; hq < c.n_heads; ++hq) {  // head hq reads kv head hq / group; batched over sequences
        const int kvh = hq / group;
        cu::check(cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, L, L, D, &one, K + kvh * D, ty, static_cast<int>(hdkv),
                                             skv, Q + hq * D, ty, static_cast<int>(hd), sq, &zero, scores.data() + hq * LL,
                                             CUDA_R_32F, L, per_seq, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                  "cublasGemmStridedBatchedEx (scores)");
      }
      const index_t rows = static_cast<index_t>(nb) * c.n_heads * L;
      causal_softmax<T>(scores.data(), rows, L, scaling, P.data(), st);
      check_launch<T>("causal_softmax_kernel");
      for (int hq = 0; hq < c.n_heads; ++hq) {
        const int kvh = hq / group;
        cu::check(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, D, L, L, &one, V + kvh * D, ty, static_cast<int>(hdkv),
                                             skv, P.data() + hq * LL, ty, L, per_seq, &zero, C + hq * D, ty,
                                             static_cast<int>(hd), sq, nb, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                  "cublasGemmStridedBatchedEx (context)");
      }
    }
  }
};

/// Block "self_attn" for the q,k,v scale search: weights {q, k, v}, o_proj kept; output fp32.
template <class T>
struct AttentionBlock {
  Attention<T> attn;
  MatrixView<const T> wo;
  index_t output_cols() const { return wo.rows(); }
  void operator()(const MatrixView<const T>& x, const std::vector<MatrixView<const T>>& w, const MatrixView<float>& out) const {
    attn.context(x, w[0], w[1], w[2]);
    awq::backend::cuda::linear<T, float>(cview(attn.ctx, x.rows(), wo.cols()), wo, nullptr, out);
  }
};

/// Block "mlp" for the gate,up scale search: weights {gate, up}, down_proj kept; output fp32.
template <class T>
struct MlpBlock {
  MatrixView<const T> wd;
  mutable Buf<T> gate, up, act;
  index_t output_cols() const { return wd.rows(); }
  void operator()(const MatrixView<const T>& x, const std::vector<MatrixView<const T>>& w, const MatrixView<float>& out) const {
    const index_t tok = x.rows(), inter = w[0].rows(), n = tok * inter;
    if (gate.size() < static_cast<std::size_t>(n)) gate = Buf<T>(static_cast<std::size_t>(n)), up = Buf<T>(static_cast<std::size_t>(n)), act = Buf<T>(static_cast<std::size_t>(n));
    using B = awq::backend::cuda;
    B::linear<T, T>(x, w[0], nullptr, view(gate, tok, inter));
    B::linear<T, T>(x, w[1], nullptr, view(up, tok, inter));
    swiglu_kernel<T><<<blocks(n, 256), 256, 0, B::stream()>>>(gate.data(), up.data(), n, act.data());
    check_launch<T>("swiglu_kernel");
    B::linear<T, float>(cview(act, tok, inter), wd, nullptr, out);
  }
};

/// Inputs of every linear group, captured during the forward (type T), and the layer output.
template <class T>
struct Captured {
  Buf<T> x_attn, x_o, x_mlp, x_down;
  /// The attention (after o_proj) and MLP outputs [tokens, hidden]: the reference outputs of the
  /// qkv / o and gate_up / down searches, computed by the same calls the searches' blocks make.
  Buf<float> attn_out, mlp_out;
};

/// out = layer(hidden) (fp32 [tokens, hidden]); fills `cap` with the inputs of the four groups.
template <class T>
void layer_forward(const LlamaConfig& c, const Batch& b, const Layer<T>& l, const Buf<float>& hidden, Buf<float>& out,
                   Captured<T>& cap) {
  using B = awq::backend::cuda;
  const index_t tok = b.tokens(), H = c.hidden, I = c.intermediate, hd = c.n_heads * c.head_dim,
                hdkv = c.n_kv_heads * c.head_dim;
  cudaStream_t st = B::stream();
  cap.x_attn = Buf<T>(static_cast<std::size_t>(tok * H));
  cap.x_mlp = Buf<T>(static_cast<std::size_t>(tok * H));
  Buf<float> h(static_cast<std::size_t>(tok * H));
  cap.attn_out = Buf<float>(static_cast<std::size_t>(tok * H));
  cap.mlp_out = Buf<float>(static_cast<std::size_t>(tok * H));
  rmsnorm_kernel<T><<<static_cast<unsigned>(std::min<index_t>(tok, 65535)), 256, 0, st>>>(hidden.data(), tok, H, l.ln_in.data(), c.rms_eps, cap.x_attn.data());
  check_launch<T>("rmsnorm_kernel");
  Attention<T> attn{&c, b, {}, {}, {}, {}, {}, {}, {}};
  attn.context(cview(cap.x_attn, tok, H), cview(l.wq, hd, H), cview(l.wk, hdkv, H), cview(l.wv, hdkv, H));
  B::linear<T, float>(cview(attn.ctx, tok, hd), cview(l.wo, H, hd), nullptr, view(cap.attn_out, tok, H));
  add_kernel<><<<blocks(tok * H, 256), 256, 0, st>>>(hidden.data(), cap.attn_out.data(), tok * H, h.data());
  rmsnorm_kernel<T><<<static_cast<unsigned>(std::min<index_t>(tok, 65535)), 256, 0, st>>>(h.data(), tok, H, l.ln_post.data(), c.rms_eps, cap.x_mlp.data());
  check_launch<T>("rmsnorm_kernel");
  cap.x_o = std::move(attn.ctx);
  MlpBlock<T> mlp{cview(l.wd, H, I), {}, {}, {}};
  const MatrixView<const T> xm = cview(cap.x_mlp, tok, H);
  mlp(xm, {cview(l.wg, I, H), cview(l.wu, I, H)}, view(cap.mlp_out, tok, H));
  add_kernel<><<<blocks(tok * H, 256), 256, 0, st>>>(h.data(), cap.mlp_out.data(), tok * H, out.data());
  check_launch<T>("add_kernel");
  cap.x_down = std::move(mlp.act);
  cu::check(cudaStreamSynchronize(st), "cudaStreamSynchronize");
}

/// Which groups and linears to run, and the search options (as BlockAwqOptions).
struct GpuBlockResult {
  std::map<std::string, awq::ScaleSearchResult<float>> scales;
  std::map<std::string, awq::ClipSearchResult<float>> clips;
  std::map<std::string, double> seconds;  // per phase
};

/// The per-block AWQ flow on the GPU (as awq_block in llama_block.hpp): search the four groups,
/// fold, clip-search the scaled weights on the scaled inputs, clamp. Modifies `l` in place.
template <class T>
GpuBlockResult awq_block(const LlamaConfig& c, const Batch& b, Layer<T>& l, Captured<T>& cap, const BlockAwqOptions& opt) {
  using B = awq::backend::cuda;
  using Clock = std::chrono::steady_clock;
  const index_t tok = b.tokens(), H = c.hidden, I = c.intermediate, hd = c.n_heads * c.head_dim,
                hdkv = c.n_kv_heads * c.head_dim;
  const Batch sb{opt.search_seqs > 0 ? std::min(opt.search_seqs, b.n_seq) : b.n_seq, b.seq_len};
  awq::ScaleSearchOptions so;
  so.quant = opt.quant;
  so.duo_scaling = opt.duo_scaling;
  so.progress = opt.progress;
  GpuBlockResult res;
  auto timed = [&](const std::string& key, auto&& f) {
    const auto t0 = Clock::now();
    f();
    cu::check(cudaStreamSynchronize(B::stream()), "cudaStreamSynchronize");
    res.seconds[key] = std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // The capture forward's attention / MLP outputs are the reference outputs of the searches when
  // they run on all the tokens (then the same calls on the same shapes as the blocks make with the
  // original weights): one block evaluation saved per group.
  const bool have_ref = sb.n_seq == b.n_seq && cap.attn_out.size() >= static_cast<std::size_t>(tok * H) &&
                        cap.mlp_out.size() >= static_cast<std::size_t>(tok * H);
  auto search = [&](const std::string& key, const Buf<T>& x, index_t k, const std::vector<awq::Linear<T>>& lin,
                    const auto& block, const Buf<float>& ref) {
    const auto given = opt.given_scales.find(key);
    if (given != opt.given_scales.end()) {  // resuming, or replaying another run's choice
      res.scales[key].scales = given->second;
      return;
    }
    timed("scales " + key, [&] {
      so.name = "scales " + key;
      const auto xv = cview(x, tok, k);
      const MatrixView<const float> rv = have_ref ? cview(ref, tok, H).middle_rows(0, sb.tokens()) : MatrixView<const float>{};
      res.scales[key] = awq::search_scales<B>(xv.middle_rows(0, sb.tokens()), lin, block, so, B::channel_abs_mean(xv), rv);
    });
  };
  {
    std::vector<awq::Linear<T>> lin{{cview(l.wq, hd, H), nullptr}, {cview(l.wk, hdkv, H), nullptr}, {cview(l.wv, hdkv, H), nullptr}};
    search("qkv", cap.x_attn, H, lin, AttentionBlock<T>{Attention<T>{&c, sb, {}, {}, {}, {}, {}, {}, {}}, cview(l.wo, H, hd)},
           cap.attn_out);
  }
  const bool o_group = hdkv == hd;  // skipped for GQA, as the reference
  if (o_group) {
    std::vector<awq::Linear<T>> lin{{cview(l.wo, H, hd), nullptr}};
    search("o", cap.x_o, hd, lin, awq::LinearsBlock<T, B>(lin), cap.attn_out);
  }
  {
    std::vector<awq::Linear<T>> lin{{cview(l.wg, I, H), nullptr}, {cview(l.wu, I, H), nullptr}};
    search("gate_up", cap.x_mlp, H, lin, MlpBlock<T>{cview(l.wd, H, I), {}, {}, {}}, cap.mlp_out);
  }
  {
    std::vector<awq::Linear<T>> lin{{cview(l.wd, H, I), nullptr}};
    search("down", cap.x_down, I, lin, awq::LinearsBlock<T, B>(lin), cap.mlp_out);
  }
  timed("fold", [&] {
    const auto& s1 = res.scales["qkv"].scales;
    scale(view(l.ln_in, 1, H), s1, true, true);
    for (auto* w : {&l.wq, &l.wk, &l.wv}) scale(view(*w, static_cast<index_t>(w->size()) / H, H), s1, true, false);
    scale(view(cap.x_attn, tok, H), s1, true, true);
    if (o_group) {
      const auto& s2 = res.scales["o"].scales;
      scale(view(l.wv, hdkv, H), s2, false, true);
      scale(view(l.wo, H, hd), s2, true, false);
      scale(view(cap.x_o, tok, hd), s2, true, true);
    }
    const auto& s3 = res.scales["gate_up"].scales;
    scale(view(l.ln_post, 1, H), s3, true, true);
    for (auto* w : {&l.wg, &l.wu}) scale(view(*w, I, H), s3, true, false);
    scale(view(cap.x_mlp, tok, H), s3, true, true);
    const auto& s4 = res.scales["down"].scales;
    scale(view(l.wu, I, H), s4, false, true);
    scale(view(l.wd, H, I), s4, true, false);
    scale(view(cap.x_down, tok, I), s4, true, true);
  });
  if (opt.clip) {
    awq::ClipSearchOptions co;
    co.quant = opt.quant;
    co.progress = opt.progress;
    struct Target {
      const char* name;
      Buf<T>* w;
      index_t rows, cols;
      const Buf<T>* x;
    };
    const std::vector<Target> targets = {{"v", &l.wv, hdkv, H, &cap.x_attn}, {"o", &l.wo, H, hd, &cap.x_o},
                                         {"gate", &l.wg, I, H, &cap.x_mlp},   {"up", &l.wu, I, H, &cap.x_mlp},
                                         {"down", &l.wd, H, I, &cap.x_down}};
    timed("clip", [&] {
      for (const auto& t : targets) {
        co.name = std::string("clip ") + t.name;
        const auto given = opt.given_clips.find(t.name);
        res.clips[t.name] = given != opt.given_clips.end()
                                ? given_clip(given->second, t.rows)
                                : awq::search_clip<B>(cview(*t.w, t.rows, t.cols), cview(*t.x, tok, t.cols), co);
      }
      for (const auto& t : targets) clamp_groups(view(*t.w, t.rows, t.cols), res.clips[t.name].max_val);
    });
  }
  return res;
}

}  // namespace gpu
}  // namespace awq_example
