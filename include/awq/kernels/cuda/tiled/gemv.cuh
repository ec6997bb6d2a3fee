/// \file
/// \brief The tiled layout's streaming GEMV (nvcc only; sm_80 and later): M ≤ 16, near the
///        memory floor. Launched through awq/kernels/cuda/w4a16_tiled.cuh.
///
/// Streaming GEMV for M ≤ 16 over the tiled layout. In the tiled layout lane (g, t)'s word w of a
/// 16 × 64 tile holds columns 16 w + g and 16 w + 8 + g at K rows 2t, 2t + 1, 2t + 8, 2t + 9: with
/// the weights as the *A* operand of m16n8k16 (rows = 16 output columns, K = 16) that word is
/// exactly one A fragment — nibble pairs (0, 4), (2, 6), (1, 5), (3, 7) are a0a1, a2a3, a4a5, a6a7.
/// x is the B operand (K × 8 tokens, read through L1), so one mma serves up to 8 tokens and 4 mma
/// cover a tile (the m16-x mma pipeline (mma.cuh) needs 8 per tile and wastes 15 of 16 rows at M = 1).
/// The weights never touch shared memory: every lane streams its 16-byte words straight into
/// registers, TiledTuning::gemv_batch tiles (one 128-row batch, 8 loads) in flight per lane, the pattern of a
/// plain read kernel. Each weight is decoded to fp16 as ((1024 + q) − (1024 + z))·s: shift, LOP3,
/// HADD2 (exact), HMUL2 — the weight AutoAWQ's dequantize makes, rounded once. (The 64 + q magic
/// for high nibbles saves the shifts but needs a second constant per column: registers, here.)
/// A block of TiledTuning::gemv_warps warps takes one 64-column strip and one K slice; its warps take the
/// slice's batches in turn, add their results in shared memory in a fixed order, and the slices
/// meet through store_or_split_k (deterministic) or, with TiledTuning::gemv_cluster on Hopper, in
/// the shared memory of the strip's thread-block cluster (the same sums, no workspace).
#pragma once

#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/kernels/cuda/tiled/args.cuh"
#include "awq/kernels/cuda/tiled/plan.hpp"
#include "awq/kernels/cuda/tiled/ptx.cuh"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/kernels/cuda/w4a16_gemm.cuh"

namespace awq {
namespace cuda {
namespace detail {

/// G: group size; NT: blocks of 8 tokens (M ≤ 8 NT). NT = 1 runs raw codes (TiledTuning::gemv_raw), NT = 2
/// decodes each weight once to fp16 for both token blocks (raw codes would double the group
/// accumulators: registers). Swiglu: a.swiglu_output as a template parameter, so that the plain
/// product's code carries no trace of it (a run-time flag slowed every GEMV; bench/RESULTS.md).
/// Cluster: launched in clusters of the `splits` slices of a strip (GemmPlan::cluster).
template <int G, int NT, class T, class Tn, bool Swiglu = false, bool Cluster = false>
__global__ void __launch_bounds__(32 * Tn::gemv_warps, Tn::gemv_min_blocks)
    w4a16_tiled_gemv_kernel(W4A16TiledArgsT<T> a, int slice_batches, int splits, int prefetch_batches, int* tickets, float* partial) {
  using A = Act<T>;
  constexpr int kTGemvWarps = Tn::gemv_warps, kTGemvThreads = 32 * kTGemvWarps;
  constexpr int kTGemvBatch = Tn::gemv_batch;           // tiles a lane loads at once
  constexpr int kTGemvRows = kTGemvBatch * kTiledK;     // rows of K per batch
  static_assert(G == 32 || G == 64 || G == 128, "group 32, 64 or 128");
  static_assert(NT == 1 || NT == 2, "up to 16 tokens");
  constexpr int NG = kTGemvRows / G;  // groups per batch
  constexpr int TPG = G / kTiledK;    // tiles per group
  constexpr bool raw = Tn::gemv_raw && NT == 1;
  __shared__ float red[kTGemvWarps * 8 * NT * kTiledN];  // the warps' results [warps][8 NT tokens][64 columns]
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
  const int kp = (a.k + kTiledPadK - 1) / kTiledPadK * kTiledPadK, np = (a.n + kTiledN - 1) / kTiledN * kTiledN;
  const int ntiles = np / kTiledN, ktiles = kp / kTiledK, groups = kp / G;
  const int nbatches = (ktiles + kTGemvBatch - 1) / kTGemvBatch;
  const int nt = static_cast<int>(blockIdx.x), split = static_cast<int>(blockIdx.z);
  const int bt0 = split * slice_batches, bt1 = min(nbatches, bt0 + slice_batches);

  float acc[NT][4][4] = {};
  const uint4* qb = reinterpret_cast<const uint4*>(a.qweight) + static_cast<long>(nt) * ktiles * 32 + lane;
  // B column g of token block u is token 8 u + g; columns past M stay zero.
  bool has_token[NT];
  const T* xg[NT];
#pragma unroll
  for (int u = 0; u < NT; ++u) {
    has_token[u] = 8 * u + g < a.m;
    xg[u] = a.x + (has_token[u] ? static_cast<long>(8 * u + g) * a.k : 0L) + 2 * t;
  }
  // The B fragments of x for K tile kt: K rows 2t, 2t + 1 and 2t + 8, 2t + 9 of token 8 u + g, read
  // through L1 (x is small and every block of a K range reads it); zero past M and past K (K is a
  // multiple of 32: a tile is all in or all out). Measured against a block-wide x slice in shared
  // memory: as fast at M = 1, faster at M = 4 and 8 (no cap on the slice length: no extra K slices).
  auto x_frag = [&](int kt, std::uint32_t (&b0)[NT], std::uint32_t (&b1)[NT]) {
    const int kr = kt * kTiledK;
#pragma unroll
    for (int u = 0; u < NT; ++u) {
      const bool in = has_token[u] && kr < a.k;
      b0[u] = in ? __ldg(reinterpret_cast<const unsigned*>(xg[u] + kr)) : 0u;
      b1[u] = in ? __ldg(reinterpret_cast<const unsigned*>(xg[u] + kr + 8)) : 0u;
    }
  };
  // Raw codes: A rows 0 and 1 of the constant operand are the code offsets (fp16 1024 × 8, 64 × 8;
  // bf16 128 × 16) and ones, so one more mma per tile gives per token the offset part
  // O = Σ x·offset and Σ x.
  const std::uint32_t lo_c = g == 0 ? A::magic : g == 1 ? A::one : 0u, hi_c = g == 0 ? A::magic_hi : g == 1 ? A::one : 0u;
  const unsigned ones_a[4] = {lo_c, 0u, hi_c, 0u};
  // Programmatic dependent launch (W4A16TiledArgsT::overlap_previous): this grid's blocks may start
  // while the kernel before it ends; they wait for it here, before any read of x or write of y or
  // the workspace. The weights are no kernel's output: when overlapped, a block first asks L2 for
  // the first `prefetch_batches` batches of its slice (tiled_gemv_prefetch: a batch per thread,
  // contiguous in the layout) and their group parameters, which then stream in while the kernel
  // before it still runs. Holding the first batch in registers across the wait slowed the loop,
  // and without overlap a prefetch only adds work (bench/RESULTS.md).
  const int pf1 = min(bt1, bt0 + prefetch_batches);
  for (int b = bt0 + tid; b < pf1; b += kTGemvThreads) {
    const int t0 = b * kTGemvBatch, t1 = min(ktiles, t0 + kTGemvBatch);
    prefetch_l2_bulk(qb - lane + static_cast<long>(t0) * 32, static_cast<unsigned>(t1 - t0) * 32u * 16u);
  }
  for (int grp = bt0 * kTGemvRows / G + tid; grp < min(groups, pf1 * kTGemvRows / G); grp += kTGemvThreads) {
    const long gi = (static_cast<long>(grp) * ntiles + nt) * 8;
    prefetch_l2_bulk(reinterpret_cast<const uint4*>(a.scales) + gi, 8u * 16u);
    if (a.qzeros) prefetch_l2_bulk(a.qzeros + gi, 8u * 4u);
  }
  grid_dependency_wait();
  grid_launch_dependents();
  for (int bt = bt0 + warp; bt < bt1; bt += kTGemvWarps) {
    const int kt0 = bt * kTGemvBatch;
    uint4 q[kTGemvBatch];
#pragma unroll
    for (int d = 0; d < kTGemvBatch; ++d) q[d] = kt0 + d < ktiles ? __ldcs(qb + static_cast<long>(kt0 + d) * 32) : make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
    for (int j = 0; j < NG; ++j) {
      // The group's scales of columns 8 c + g (fp16 pairs c, c + 1 per word) and zeros (nibble c).
      const int grp = kt0 * kTiledK / G + j;
      const bool ok = grp < groups;
      const long gi = (static_cast<long>(grp) * ntiles + nt) * 8 + g;
      const uint4 sv = ok ? __ldg(reinterpret_cast<const uint4*>(a.scales) + gi) : make_uint4(0u, 0u, 0u, 0u);
      const std::uint32_t zw = ok && a.qzeros ? __ldg(a.qzeros + gi) : 0x88888888u;
      const std::uint32_t sw[4] = {sv.x, sv.y, sv.z, sv.w};
      if constexpr (raw) {
        float gacc[4][4] = {}, sx[4] = {};
#pragma unroll
        for (int dd = 0; dd < TPG; ++dd) {
          const int d = j * TPG + dd;
          std::uint32_t b0[NT], b1[NT];
          x_frag(kt0 + d, b0, b1);
          A::mma_16816(sx, ones_a, b0[0], b1[0]);
          const std::uint32_t words[4] = {q[d].x, q[d].y, q[d].z, q[d].w};
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            // Nibble pairs (0, 4), (2, 6) → P + q (K columns 2t, 2t + 1); (1, 5), (3, 7) → raw_hi
            // (columns 2t + 8, 2t + 9): a0a1, a2a3, a4a5, a6a7 of the A fragment.
            const std::uint32_t qw = words[w], q8 = qw >> 8;
            const unsigned af[4] = {raw_lo<T>(qw), raw_lo<T>(q8), raw_hi<T>(qw), raw_hi<T>(q8)};
            A::mma_16816(gacc[w], af, b0[0], b1[0]);
          }
        }
        // Group end: offsets O (row 0 of sx, lanes 0..3) and Σx (row 1, lanes 4..7) of tokens 2t, 2t + 1.
        const float o0 = __shfl_sync(0xFFFFFFFFu, sx[0], t), o1 = __shfl_sync(0xFFFFFFFFu, sx[1], t);
        const float x0 = __shfl_sync(0xFFFFFFFFu, sx[0], 4 + t), x1 = __shfl_sync(0xFFFFFFFFu, sx[1], 4 + t);
#pragma unroll
        for (int c = 0; c < 8; ++c) {  // column 8 c + g = row g (c even) or g + 8 (c odd) of m16 block c / 2
          const float sc = __half2float(__ushort_as_half(static_cast<unsigned short>(c % 2 ? sw[c / 2] >> 16 : sw[c / 2] & 0xFFFFu)));
          const float zf = static_cast<float>((zw >> (4 * c)) & 0xFu);
          const int w = c / 2, h = c % 2;
          acc[0][w][2 * h] = fmaf(sc, gacc[w][2 * h] - fmaf(zf, x0, o0), acc[0][w][2 * h]);
          acc[0][w][2 * h + 1] = fmaf(sc, gacc[w][2 * h + 1] - fmaf(zf, x1, o1), acc[0][w][2 * h + 1]);
        }
      } else {
        TiledConsts<T> cst;  // scale pairs and −(P + z) of columns 8 c + g, once per group
        cst.load(sv, zw);
#pragma unroll
        for (int dd = 0; dd < TPG; ++dd) {
          const int d = j * TPG + dd;
          std::uint32_t b0[NT], b1[NT];
          x_frag(kt0 + d, b0, b1);
          const std::uint32_t words[4] = {q[d].x, q[d].y, q[d].z, q[d].w};
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            // Nibble pairs (0, 4), (2, 6), (1, 5), (3, 7) → P + q → (q − z)·s: a0a1, a2a3, a4a5, a6a7.
            const std::uint32_t qw = words[w];
            const std::uint32_t s0 = cst.s2[2 * w], s1 = cst.s2[2 * w + 1], z0 = cst.lo[2 * w], z1 = cst.lo[2 * w + 1];
            unsigned af[4];
            af[0] = A::mul2(A::add2(raw_lo<T>(qw), z0), s0);
            af[1] = A::mul2(A::add2(raw_lo<T>(qw >> 8), z1), s1);
            af[2] = A::mul2(A::add2(raw_lo<T>(qw >> 4), z0), s0);
            af[3] = A::mul2(A::add2(raw_lo<T>(qw >> 12), z1), s1);
#pragma unroll
            for (int u = 0; u < NT; ++u) A::mma_16816(acc[u][w], af, b0[u], b1[u]);
          }
        }
      }
    }
  }

  // acc[u][w]: rows g / g + 8 of the m16 block = columns 16 w + g / 16 w + 8 + g; columns 2t, 2t + 1
  // = tokens 8 u + 2t, 8 u + 2t + 1.
  constexpr int TK = 8 * NT;
#pragma unroll
  for (int u = 0; u < NT; ++u)
#pragma unroll
    for (int w = 0; w < 4; ++w)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int c = 0; c < 2; ++c) red[(warp * TK + 8 * u + 2 * t + c) * kTiledN + 16 * w + 8 * h + g] = acc[u][w][2 * h + c];
  __syncthreads();
  auto for_each_out = [&](auto&& f) {
    for (int i = tid; i < a.m * (kTiledN / 2); i += kTGemvThreads) {
      const int tok = i / (kTiledN / 2), c = 2 * (i % (kTiledN / 2)), col = nt * kTiledN + c;
      if (col >= a.n) continue;
      float v0 = 0.0f, v1 = 0.0f;
#pragma unroll
      for (int w = 0; w < kTGemvWarps; ++w) {  // fixed order: the same bits every run
        v0 += red[(w * TK + tok) * kTiledN + c];
        v1 += red[(w * TK + tok) * kTiledN + c + 1];
      }
      f(tok, col, v0, v1);
    }
  };
  if constexpr (Cluster) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Each slice's sums in its own shared memory; the cluster's rank 0 (slice 0: the cluster is
    // 1 × 1 × splits) adds them in slice order — store_or_split_k's bits — and stores.
    __shared__ float sums[8 * NT * kTiledN];  // [tokens][64 columns]
    const auto at = [&](int tok, int col) { return tok * kTiledN + col - nt * kTiledN; };
    for_each_out([&](int tok, int col, float v0, float v1) {
      sums[at(tok, col)] = v0;
      sums[at(tok, col) + 1] = v1;
    });
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    cluster.sync();
    if (cluster.block_rank() == 0)
      for_each_out([&](int tok, int col, float, float) {
        const int i = at(tok, col);
        float v0 = 0.0f, v1 = 0.0f;
        for (int sp = 0; sp < splits; ++sp) {
          const float* s = cluster.map_shared_rank(sums, sp);
          v0 += s[i];
          v1 += s[i + 1];
        }
        store_out(a.y, a.bias, a.n, Swiglu, tok, col, v0, v1);
      });
    cluster.sync();  // every block's shared memory lives until rank 0 has read it
#else
    __trap();  // no clusters below sm_90: the plan never asks for this kernel there
#endif
  } else {
    store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, split, splits, tickets, partial, Swiglu);
  }
}

/// Resident blocks of the GEMV; one figure for every instantiation (the same launch bounds cap
/// their registers), so the plan — and the workspace it sizes — depends on (M, K, N) only.
template <class T, class Tn>
int tgemv_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_tiled_gemv_kernel<128, 1, T, Tn>, 32 * Tn::gemv_warps, 0, cache, "w4a16_tiled_gemv_kernel attributes");
}

template <class T, class Tn>
void launch_tiled_gemv(const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  const SplitKBuffers w = split_k_buffers(a.workspace, p);
  const dim3 grid(static_cast<unsigned>(p.tiles_n), 1u, static_cast<unsigned>(p.splits));
  auto run = [&](auto kernel) {
    launch_clustered(kernel, grid, 32 * Tn::gemv_warps, 0, stream, a.overlap_previous, p.cluster ? static_cast<unsigned>(p.splits) : 1u,
                     "W4A16 tiled kernel launch", a, p.steps_per_split, p.splits, a.overlap_previous ? tiled_gemv_prefetch<Tn>(p) : 0, w.tickets,
                     w.partial);
  };
  auto by_group = [&](auto swiglu, auto cluster) {
    constexpr bool S = decltype(swiglu)::value, C = decltype(cluster)::value;
    const bool two = a.m > 8;
    switch (a.group) {
      case 32: two ? run(w4a16_tiled_gemv_kernel<32, 2, T, Tn, S, C>) : run(w4a16_tiled_gemv_kernel<32, 1, T, Tn, S, C>); break;
      case 64: two ? run(w4a16_tiled_gemv_kernel<64, 2, T, Tn, S, C>) : run(w4a16_tiled_gemv_kernel<64, 1, T, Tn, S, C>); break;
      default: two ? run(w4a16_tiled_gemv_kernel<128, 2, T, Tn, S, C>) : run(w4a16_tiled_gemv_kernel<128, 1, T, Tn, S, C>); break;
    }
  };
  // The cluster kernels exist only in a tuning that asks for them.
  auto by_cluster = [&](auto swiglu) {
    if constexpr (Tn::gemv_cluster)
      if (p.cluster) return by_group(swiglu, std::true_type{});
    by_group(swiglu, std::false_type{});
  };
  a.swiglu_output ? by_cluster(std::true_type{}) : by_cluster(std::false_type{});
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
