/// \file
/// \brief W4A16 matrix product on the GPU for any M: y = x · dequant(W)ᵀ (+ bias) on tensor cores
///        for M > 8 (the GEMV of w4a16_gemv.cuh below that), reading the AutoAWQ "GEMM" layout
///        directly: qweight [K, N/8] int32, qzeros [K/G, N/8] int32, scales [K/G, N] fp16;
///        x, bias and y in fp16 or bf16 (W4A16Args, W4A16ArgsBf16; w4a16_act.cuh).
///
/// Design of the tensor-core path (sm_80 and later; one launch, deterministic):
/// - A block computes a BM × 128 tile of y (BM = 16, 32, 64 or 128 by M) with 8 warps, over K in
///   steps of 64. A pipeline of 3–4 cp.async stages brings the x tile [BM, 64] and the packed
///   weight tile [64, 128/8] into shared memory while earlier steps compute.
/// - Per step the packed tile is dequantized once into a [64, 128] tile of x's type (double-buffered):
///   one 32-bit word → 8 columns of one k row, decoded with the 0x6400 magic (the fp16 1024 + q;
///   bf16: 0x4300, 128 + q), (q − z) exact, times the group's scale: the fp16 weight AutoAWQ's
///   dequantize gives (bf16: the scale rounded to bf16 first), stored with one 16-byte store.
/// - The scales and packed zeros of a step's groups travel in the same pipeline stage, so the
///   dequantization reads only shared memory.
/// - When the output tiles alone would not fill the GPU, K is split into slices (split-K): each
///   slice stores an fp32 tile and the tile's last block adds them in slice order (a ticket).
/// - Warps run mma.sync m16n8k16 (fp16 or bf16 in, fp32 accumulate) on fragments read with ldmatrix
///   (.trans for the weights). The sum over K runs in a fixed order: the same bits every run.
/// - Tails: rows of x past M and columns of K past the end are zero-filled by cp.async; columns
///   past N are skipped. K must be a multiple of the group (32, 64 or 128), N of 8.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/error.hpp"
#include "awq/kernels/cuda/gemm_plan.hpp"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/kernels/cuda/w4a16_gemv.cuh"

namespace awq {
namespace cuda {
namespace detail {

constexpr int kGemmBN = 128;      // output columns per block
constexpr int kGemmBK = 64;       // K per pipeline step
constexpr int kGemmThreads = 256;  // 8 warps
constexpr int kGemmPadX = 8;      // halves of padding per x row (ldmatrix without bank conflicts)
constexpr int kGemmPadB = 8;      // halves of padding per dequantized weight row

template <int BM>
struct GemmShape {
  // cp.async stages: deep for small BM (memory-bound: bytes in flight), shallow for large BM
  // (shared memory for two blocks per SM).
  static constexpr int stages = BM >= 128 ? 3 : (BM >= 64 ? 4 : 5);
  static constexpr int min_blocks = BM <= 16 ? 3 : 2;  // blocks per SM the registers must allow
  static constexpr int warps_m = BM >= 128 ? 4 : (BM >= 32 ? 2 : 1);
  static constexpr int warps_n = 8 / warps_m;
  static constexpr int wm = BM / warps_m;          // rows per warp
  static constexpr int wn = kGemmBN / warps_n;     // columns per warp
  static constexpr int mt = wm / 16;               // m16 tiles per warp
  static constexpr int nt = wn / 8;                // n8 tiles per warp
  static constexpr int x_stride = kGemmBK + kGemmPadX;   // halves per x row in shared memory
  static constexpr int b_stride = kGemmBN + kGemmPadB;   // halves per weight row in shared memory
  static constexpr int x_halves = BM * x_stride;
  static constexpr int q_words = kGemmBK * kGemmBN / 8;  // packed words per stage
  static constexpr int b_halves = kGemmBK * b_stride;
  static constexpr int s_halves = 2 * kGemmBN;      // scales of the (at most two) groups of a step
  static constexpr int z_words = 2 * kGemmBN / 8;   // their packed zeros
  static constexpr std::size_t stage_bytes = sizeof(__half) * (x_halves + s_halves) + sizeof(std::uint32_t) * (q_words + z_words);
  static constexpr std::size_t smem_bytes = stages * stage_bytes + 2 * sizeof(__half) * b_halves;
  static_assert(wm % 16 == 0 && wn % 16 == 0, "warp tile");
};

__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

// 16-byte (or 4-byte) global → shared copy, to a shared-memory address or pointer; `bytes` < size
// zero-fills the rest (0: all zeros).
__device__ __forceinline__ void cp_async16(unsigned dst_smem, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst_smem), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) { cp_async16(smem_u32(dst), src, bytes); }
__device__ __forceinline__ void cp_async4(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/// Programmatic dependent launch (sm_90 and later; no-ops before, and when the grid was launched
/// without the attribute): wait until the grid before this one in the stream has completed and its
/// memory is visible …
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
/// … and let the grid after this one start its blocks as this one's finish (it waits for this
/// grid's completion itself before it reads what this grid writes).
__device__ __forceinline__ void grid_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/// Asks L2 for `bytes` (a multiple of 16) at p (16-byte aligned) without waiting (sm_90 and later;
/// a no-op before).
__device__ __forceinline__ void prefetch_l2_bulk(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// The 8 weights of one packed word (AutoAWQ order: nibble i holds column {0,2,4,6,1,3,5,7}[i]),
// as (q − z)·s in T (fp16: rounded once; bf16: the fp16 scale rounded to bf16, then the product),
// in column order, packed in a uint4.
template <class T>
__device__ __forceinline__ uint4 dequant_word(std::uint32_t q, std::uint32_t z, uint4 s) {
  using A = Act<T>;
  const std::uint32_t sc[4] = {s.x, s.y, s.z, s.w};
  uint4 out;
  std::uint32_t* o = reinterpret_cast<std::uint32_t*>(&out);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // Nibbles j and j + 4 (bits 4j and 16 + 4j) are columns 2j and 2j + 1.
    const std::uint32_t qv = ((q >> (4 * j)) & 0x000F000Fu) | A::magic;         // P + q (P = 1024 or 128)
    const std::uint32_t nz = ((z >> (4 * j)) & 0x000F000Fu) | (A::neg_magic * 0x10001u);  // −(P + z)
    o[j] = A::mul2(A::add2(qv, nz), A::scale_pair(sc[j]));  // (q − z) exact, times s
  }
  return out;
}

inline int gemm_bm(int m) { return m <= 16 ? 16 : m <= 32 ? 32 : m <= 64 ? 64 : 128; }

/// `slots`: blocks resident at once on the device. Split-K only fills one wave of them: with as
/// many tiles as slots or more, no split (a second, partial wave would cost a whole step time).
inline GemmPlan gemm_plan(int m, int k, int n, int slots) {
  GemmPlan p;
  p.bm = gemm_bm(m);
  p.tiles_n = (n + kGemmBN - 1) / kGemmBN;
  p.tiles_m = (m + p.bm - 1) / p.bm;
  p.steps = (k + kGemmBK - 1) / kGemmBK;
  const long tiles = static_cast<long>(p.tiles_n) * p.tiles_m;
  const long want = std::max(1L, slots / tiles);     // slices that still fit one wave
  const int max_splits = std::max(1, p.steps / 4);   // at least 4 steps (256 of K) per slice
  int splits = static_cast<int>(std::max(1L, std::min<long>(want, max_splits)));
  p.steps_per_split = (p.steps + splits - 1) / splits;
  p.splits = (p.steps + p.steps_per_split - 1) / p.steps_per_split;  // no empty slice
  return p;
}

/// The tickets and partial sums inside a workspace of that layout; both null with one slice.
struct SplitKBuffers {
  int* tickets = nullptr;
  float* partial = nullptr;
};
inline SplitKBuffers split_k_buffers(void* workspace, const GemmPlan& p) {
  if (p.splits == 1 || p.cluster) return {};
  auto* base = static_cast<unsigned char*>(workspace);
  return {reinterpret_cast<int*>(base), reinterpret_cast<float*>(base + split_k_ticket_bytes(static_cast<std::size_t>(p.tiles_n) * p.tiles_m))};
}

/// silu(gate)·up in fp32: the activation of a gated MLP as store_or_split_k's swiglu applies it;
/// an activation kernel that calls it computes the same bits from the same (rounded) inputs.
__device__ __forceinline__ float silu_mul(float gate, float up) { return gate / (1.0f + __expf(-gate)) * up; }

/// Output columns col, col + 1 of `row` with sums v0, v1 into y [M, N] (+ bias) in y's type, or with
/// `swiglu` silu(gate)·up of the pair into y [M, N/2] (store_or_split_k).
template <class T>
__device__ __forceinline__ void store_out(T* y, const T* bias, int n, bool swiglu, int row, int col, float v0, float v1) {
  using A = Act<T>;
  if (bias) v0 += A::to_float(bias[col]), v1 += A::to_float(bias[col + 1]);
  if (swiglu) {
    const float gate = A::to_float(A::from_float(v0)), up = A::to_float(A::from_float(v1));
    y[static_cast<long>(row) * (n / 2) + col / 2] = A::from_float(silu_mul(gate, up));
  } else {
    *reinterpret_cast<std::uint32_t*>(y + static_cast<long>(row) * n + col) = A::pack(v0, v1);
  }
}

/// Epilogue of the tensor-core kernels, for every thread of the block (it may synchronize):
/// `for_each_out(f)` calls f(row, col, v0, v1) for each pair of this thread's accumulators inside
/// [M, N] (columns col, col + 1). Writes y (+ bias) in y's type (fp16 or bf16); under split-K stores the fp32 partial
/// sums, and the tile's last block (a ticket) adds the slices in slice order — the same bits
/// whichever block comes last — writes y and resets the ticket for the next call. With `swiglu`
/// the pair is (gate, up) of one feature, y is [M, N/2] and gets silu(gate)·up, each of the two
/// rounded to T first (the values an activation kernel after the product would read).
template <class ForEachOut, class T>
__device__ __forceinline__ void store_or_split_k(ForEachOut&& for_each_out, T* y, const T* bias, int m, int n, int split, int splits,
                                                 int* tickets, float* partial, bool swiglu = false) {
  auto store = [&](int row, int col, float v0, float v1) { store_out(y, bias, n, swiglu, row, col, v0, v1); };
  if (splits == 1) {
    for_each_out(store);
    return;
  }
  const long mn = static_cast<long>(m) * n;
  for_each_out([&](int row, int col, float v0, float v1) {
    __stcg(reinterpret_cast<float2*>(partial + split * mn + static_cast<long>(row) * n + col), make_float2(v0, v1));
  });
  const int tile = static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x);
  if (!split_k_arrive_last(tickets + tile, splits)) return;
  for_each_out([&](int row, int col, float, float) {
    float v0 = 0.0f, v1 = 0.0f;
    for (int sp = 0; sp < splits; ++sp) {
      const float2 p = __ldcg(reinterpret_cast<const float2*>(partial + sp * mn + static_cast<long>(row) * n + col));
      v0 += p.x;
      v1 += p.y;
    }
    store(row, col, v0, v1);
  });
  if (threadIdx.x == 0) tickets[tile] = 0;
}

template <int BM, class T>
__global__ void __launch_bounds__(kGemmThreads, GemmShape<BM>::min_blocks) w4a16_gemm_kernel(W4A16ArgsT<T> a, int steps_per_split, int splits,
                                                                                             int* tickets, float* partial) {
  using Sh = GemmShape<BM>;
  extern __shared__ __align__(16) unsigned char smem[];
  // Per stage: x [BM][x_stride] of T, scales [2][BN] fp16, packed weights [BK][BN/8] and zeros
  // [2][BN/8] words; then the dequantized weights [2][BK][b_stride] of T.
  auto x_of = [&](int st) { return reinterpret_cast<T*>(smem + st * Sh::stage_bytes); };
  auto s_of = [&](int st) { return reinterpret_cast<__half*>(x_of(st) + Sh::x_halves); };
  auto q_of = [&](int st) { return reinterpret_cast<std::uint32_t*>(s_of(st) + Sh::s_halves); };
  auto z_of = [&](int st) { return q_of(st) + Sh::q_words; };
  T* bs = reinterpret_cast<T*>(smem + Sh::stages * Sh::stage_bytes);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int warp_m = warp / Sh::warps_n, warp_n = warp % Sh::warps_n;
  const int m0 = static_cast<int>(blockIdx.y) * BM, n0 = static_cast<int>(blockIdx.x) * kGemmBN;
  const int words = a.n / 8, w0 = n0 / 8;
  const int steps = (a.k + kGemmBK - 1) / kGemmBK;
  const int split = static_cast<int>(blockIdx.z);
  const int step0 = split * steps_per_split, nsteps = min(steps, step0 + steps_per_split) - step0;
  // Rows of packed words allow 16-byte copies when they are multiples of 4 words, 16-byte aligned.
  const bool q16 = words % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.qweight) % 16 == 0;
  const bool z16 = words % 4 == 0 && reinterpret_cast<std::uintptr_t>(a.qzeros) % 16 == 0;
  const int groups = a.k / a.group;

  auto load_stage = [&](int step, int st) {
    const int k0 = step * kGemmBK;
    T* xd = x_of(st);
    for (int c = tid; c < BM * 8; c += kGemmThreads) {  // x: BM rows × 8 chunks of 16 bytes
      const int r = c / 8, col = (c % 8) * 8;
      const int gr = m0 + r, gk = k0 + col;
      const bool ok = gr < a.m && gk < a.k;
      cp_async16(xd + r * Sh::x_stride + col, a.x + (ok ? static_cast<long>(gr) * a.k + gk : 0), ok ? 16 : 0);
    }
    std::uint32_t* qd = q_of(st);
    if (q16) {
      for (int c = tid; c < kGemmBK * 4; c += kGemmThreads) {  // 64 rows × 4 chunks of 4 words
        const int r = c / 4, wc = (c % 4) * 4;
        const int gk = k0 + r, gw = w0 + wc;
        const bool ok = gk < a.k && gw < words;
        cp_async16(qd + r * (kGemmBN / 8) + wc, a.qweight + (ok ? static_cast<long>(gk) * words + gw : 0), ok ? 16 : 0);
      }
    } else {
      for (int c = tid; c < kGemmBK * 16; c += kGemmThreads) {
        const int r = c / 16, wc = c % 16;
        const int gk = k0 + r, gw = w0 + wc;
        const bool ok = gk < a.k && gw < words;
        cp_async4(qd + r * (kGemmBN / 8) + wc, a.qweight + (ok ? static_cast<long>(gk) * words + gw : 0), ok ? 4 : 0);
      }
    }
    // Scales and zeros of the step's groups (two rows: the group of k0 and the next one).
    const int g0 = k0 / a.group;
    __half* sd = s_of(st);
    for (int c = tid; c < 2 * 16; c += kGemmThreads) {  // 2 rows × 16 chunks of 8 halves
      const int j = c / 16, col = (c % 16) * 8;
      const int g = g0 + j, gn = n0 + col;  // g0 + 1 may be past the last group: zero-filled, unused
      const bool ok = g < groups && gn < a.n;
      cp_async16(sd + j * kGemmBN + col, a.scales + (ok ? static_cast<long>(g) * a.n + gn : 0), ok ? 16 : 0);
    }
    std::uint32_t* zd = z_of(st);
    if (z16) {
      for (int c = tid; c < 2 * 4; c += kGemmThreads) {
        const int j = c / 4, wc = (c % 4) * 4;
        const int g = g0 + j, gw = w0 + wc;
        const bool ok = g < groups && gw < words;
        cp_async16(zd + j * (kGemmBN / 8) + wc, a.qzeros + (ok ? static_cast<long>(g) * words + gw : 0), ok ? 16 : 0);
      }
    } else {
      for (int c = tid; c < 2 * 16; c += kGemmThreads) {
        const int j = c / 16, wc = c % 16;
        const int g = g0 + j, gw = w0 + wc;
        const bool ok = g < groups && gw < words;
        cp_async4(zd + j * (kGemmBN / 8) + wc, a.qzeros + (ok ? static_cast<long>(g) * words + gw : 0), ok ? 4 : 0);
      }
    }
  };

  // Dequantize stage st (step `step`) into weight buffer `buf`: 1024 words, 4 per thread, all in
  // the thread's word column wc (so its scales and zeros are read once per step).
  const int gshift = __ffs(a.group) - 1;  // the group is a power of two
  auto dequant_stage = [&](int step, int st, int buf) {
    const int k0 = step * kGemmBK, g0 = k0 >> gshift;
    const std::uint32_t* qd = q_of(st);
    const __half* sd = s_of(st);
    const std::uint32_t* zd = z_of(st);
    T* bd = bs + buf * Sh::b_halves;
    const int wc = tid % 16, r0 = tid / 16;
    const uint4 s0 = *reinterpret_cast<const uint4*>(sd + wc * 8), s1 = *reinterpret_cast<const uint4*>(sd + kGemmBN + wc * 8);
    const std::uint32_t z0 = zd[wc], z1 = zd[kGemmBN / 8 + wc];
#pragma unroll
    for (int u = 0; u < kGemmBK * 16 / kGemmThreads; ++u) {
      const int r = r0 + u * (kGemmThreads / 16);
      const bool second = ((k0 + r) >> gshift) != g0;  // only with group 32; rows past K: any finite weight
      *reinterpret_cast<uint4*>(bd + r * Sh::b_stride + wc * 8) =
          dequant_word<T>(qd[r * (kGemmBN / 8) + wc], second ? z1 : z0, second ? s1 : s0);
    }
  };

  float acc[Sh::mt][Sh::nt][4];
#pragma unroll
  for (int i = 0; i < Sh::mt; ++i)
#pragma unroll
    for (int j = 0; j < Sh::nt; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < Sh::stages - 1; ++s) {
    if (s < nsteps) load_stage(step0 + s, s);
    cp_async_commit();
  }

  for (int ls = 0; ls < nsteps; ++ls) {
    const int st = ls % Sh::stages, buf = ls % 2;
    cp_async_wait<Sh::stages - 2>();  // this step's stage has landed (for this thread)
    __syncthreads();                  // … for every thread; and the stage refilled next is free
    {
      const int next = ls + Sh::stages - 1;
      if (next < nsteps) load_stage(step0 + next, next % Sh::stages);
      cp_async_commit();
    }
    dequant_stage(step0 + ls, st, buf);
    __syncthreads();  // the weight tile is complete
    const T* xd = x_of(st);
    const T* bd = bs + buf * Sh::b_halves;
#pragma unroll
    for (int kk = 0; kk < kGemmBK; kk += 16) {
      unsigned af[Sh::mt][4];
#pragma unroll
      for (int i = 0; i < Sh::mt; ++i) {
        const int r = warp_m * Sh::wm + i * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
        const int c = kk + 8 * (lane / 16);
        ldmatrix_x4(af[i], xd + r * Sh::x_stride + c);
      }
#pragma unroll
      for (int j = 0; j < Sh::nt; j += 2) {  // two n8 tiles per ldmatrix.x4.trans
        unsigned bf[4];
        const int r = kk + (lane % 8) + 8 * ((lane / 8) % 2);
        const int c = warp_n * Sh::wn + j * 8 + 8 * (lane / 16);
        ldmatrix_x4_trans(bf, bd + r * Sh::b_stride + c);
#pragma unroll
        for (int i = 0; i < Sh::mt; ++i) {
          Act<T>::mma_16816(acc[i][j], af[i], bf[0], bf[1]);
          Act<T>::mma_16816(acc[i][j + 1], af[i], bf[2], bf[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  // Accumulator (i, j): rows lane/4 and lane/4 + 8, columns 2·(lane % 4) + {0, 1}.
  auto for_each_out = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < Sh::mt; ++i)
#pragma unroll
      for (int j = 0; j < Sh::nt; ++j) {
        const int col = n0 + warp_n * Sh::wn + j * 8 + 2 * (lane % 4);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = m0 + warp_m * Sh::wm + i * 16 + lane / 4 + 8 * h;
          if (row < a.m && col < a.n) f(row, col, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        }
      }
  };
  store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, split, splits, tickets, partial);
}

/// The blocks of `kernel` resident at once on the device (SMs × blocks per SM), cached per device
/// in `cache` (one figure for every translation unit's copy of the kernel); the occupancy is asked
/// with the kernel allowed `smem` bytes (allow_dynamic_smem).
template <class Kernel>
int resident_slots(Kernel* kernel, int threads, std::size_t smem, std::atomic<int> (&cache)[64], const char* name) {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 0 && dev < 64) {
    const int s = cache[dev].load(std::memory_order_acquire);
    if (s > 0) return s;
  }
  allow_dynamic_smem(kernel, smem, name);
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem), name);
  const int s = std::max(1, per_sm) * device_sms();
  if (dev >= 0 && dev < 64) cache[dev].store(s, std::memory_order_release);  // a race stores the same value
  return s;
}

template <int BM, class T>
int gemm_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_gemm_kernel<BM, T>, kGemmThreads, GemmShape<BM>::smem_bytes, cache, "w4a16_gemm_kernel attributes");
}

template <class T>
int gemm_slots_for(int m) {
  switch (gemm_bm(m)) {
    case 16: return gemm_slots<16, T>();
    case 32: return gemm_slots<32, T>();
    case 64: return gemm_slots<64, T>();
    default: return gemm_slots<128, T>();
  }
}

template <int BM, class T>
void launch_gemm(const W4A16ArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  constexpr std::size_t smem = GemmShape<BM>::smem_bytes;
  const SplitKBuffers w = split_k_buffers(a.workspace, p);
  const dim3 grid(static_cast<unsigned>(p.tiles_n), static_cast<unsigned>(p.tiles_m), static_cast<unsigned>(p.splits));
  allow_dynamic_smem(w4a16_gemm_kernel<BM, T>, smem, "w4a16_gemm_kernel attributes");
  w4a16_gemm_kernel<BM, T><<<grid, kGemmThreads, smem, stream>>>(a, p.steps_per_split, p.splits, w.tickets, w.partial);
}

}  // namespace detail

/// \brief y = x · dequant(W)ᵀ (+ bias) for any M ≥ 1 on `stream`: the split-K GEMV for M ≤ 8,
///        the tensor-core kernel above that (x, y and scales 16-byte aligned; sm_80 or later).
///        a.workspace: at least w4a16_workspace_bytes(m, k, n) bytes (checked), zero-filled once
///        before first use and left zero-filled; calls sharing one must not run concurrently.
///        awq::Error for shapes it cannot run.
template <class T>
void w4a16_matmul(const W4A16ArgsT<T>& a, cudaStream_t stream = nullptr) {
  if (a.m <= 8) return w4a16_gemv(a, stream);
  a.can_implement();
  constexpr const char* fn = "awq::cuda::w4a16_matmul";
  auto aligned16 = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  awq::detail::require(aligned16(a.x) && aligned16(a.scales) && aligned16(a.y), fn,
                       ": x, scales and y must be 16-byte aligned for M > 8");
  const auto p = detail::gemm_plan(a.m, a.k, a.n, detail::gemm_slots_for<T>(a.m));
  const std::size_t need = detail::gemm_workspace_bytes(p, a.m, a.n);
  awq::detail::require(need == 0 || (a.workspace && a.workspace_bytes >= need), fn, ": workspace_bytes ", a.workspace_bytes,
                       " is less than the ", need, " that M ", a.m, ", K ", a.k, ", N ", a.n, " need (w4a16_workspace_bytes)");
  switch (p.bm) {
    case 16: detail::launch_gemm<16, T>(a, p, stream); break;
    case 32: detail::launch_gemm<32, T>(a, p, stream); break;
    case 64: detail::launch_gemm<64, T>(a, p, stream); break;
    default: detail::launch_gemm<128, T>(a, p, stream); break;
  }
  check(cudaGetLastError(), "w4a16_gemm_kernel launch");
}

/// \brief Workspace bytes w4a16_matmul (and w4a16_gemv) needs for these sizes on the current
///        device, with fp16 or bf16 activations (the larger of the two); 0 when none. Allocate it
///        once, zero-fill it once (cudaMemset) and reuse it.
inline std::size_t w4a16_workspace_bytes(int m, int k, int n) {
  if (m <= 8) return detail::gemv_workspace_bytes(detail::gemv_plan(m, k, n, detail::device_sms()), m, n);
  return std::max(detail::gemm_workspace_bytes(detail::gemm_plan(m, k, n, detail::gemm_slots_for<__half>(m)), m, n),
                  detail::gemm_workspace_bytes(detail::gemm_plan(m, k, n, detail::gemm_slots_for<__nv_bfloat16>(m)), m, n));
}

}  // namespace cuda
}  // namespace awq
