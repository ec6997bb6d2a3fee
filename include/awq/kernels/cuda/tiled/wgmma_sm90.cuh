/// \file
/// \brief The tiled layout's Hopper kernel (nvcc; its body for sm_90a only): M > 16 on compute
///        capability 9.0. Launched through awq/kernels/cuda/w4a16_tiled.cuh.
///
/// Hopper (sm_90a) kernel for M > 16: warpgroup MMA with the weights as the register operand.
/// The same observation as the GEMV (gemv.cuh): in the tiled layout lane (g, t)'s word w of a 16 × 64
/// tile is one m16 × k16 A fragment (rows = output columns 16 w + g, 16 w + 8 + g). wgmma's
/// m64nNk16 takes A from registers in exactly that fragment layout, one m16 block per warp of the
/// warpgroup, so the block's 4 warps (one 64-column strip each, as in the mma pipeline) decode
/// their words to x's type (fp16 or bf16) and issue 4 wgmma per K tile: wgmma j multiplies the rows {strip w,
/// columns 16 j .. 16 j + 15 : w = 0..3} by x. The four-warpgroup form (WGS = 4, M > 32) gives each
/// strip a warpgroup instead: its warp w decodes only word w, and one wgmma m64nNk16 per K tile covers
/// the strip's 64 columns in order (see the kernel). x is the B operand (N = 32 to 128 tokens), read by the
/// tensor cores straight from shared memory (K-major, 128-byte swizzle, written swizzled by
/// cp.async): no ldmatrix, no x registers, and the MMA runs asynchronously while the warps decode
/// the next K tile (two A buffers, two wgmma groups in flight). Decode: the decode path of the
/// mma pipeline ((q − z)·s rounded once, AutoAWQ's weight; bf16: the scale rounded to bf16
/// first). The mma pipeline's tiles and split-K plan over a one-dimensional grid (WgmmaGrid);
/// its own epilogue: the accumulators (rows = columns of y, columns = tokens) pair up across lanes
/// g, g ^ 1 with one shuffle to give neighbouring columns of y; under split-K each slice stores its
/// accumulators as they lie (a compact fp32 tile per slice) and the last block reads the slices back
/// into them before that same store (below).
/// The body is compiled only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL: a build with sm_90a code, e.g.
/// CMAKE_CUDA_ARCHITECTURES 90a or -arch=sm_90a, needs no other definition); other targets get an
/// empty body. Whether the device code picked for the current device holds it is asked of that
/// device code itself (tiled_wgmma_available), so a fat binary (sm_80 + sm_90a) takes it on Hopper.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/kernels/cuda/tiled/args.cuh"
#include "awq/kernels/cuda/tiled/plan.hpp"
#include "awq/kernels/cuda/tiled/ptx.cuh"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/kernels/cuda/w4a16_gemm.cuh"

namespace awq {
namespace cuda {
namespace detail {

/// blockIdx.x read so that the compiler cannot keep it (and what is derived from it) in a register
/// across the main loop: the epilogue derives its tile again instead of holding it live.
__device__ __forceinline__ WgmmaBlock wgmma_block(const WgmmaGrid& gr) {
  int b;
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(b));
  return wgmma_block_of(gr, b);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/// Pins the accumulators in their registers at this point of the program: no instruction that
/// defines them is moved across it (into a wgmma pipeline stage, which would serialize the wgmma).
template <int J, int N>
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[J][N]) {
#pragma unroll
  for (int j = 0; j < J; ++j)
#pragma unroll
    for (int e = 0; e < N; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
}
/// Makes this thread's completed shared-memory writes (cp.async, stores) visible to wgmma.
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/// Shared-memory matrix descriptor of a K-major operand with 128-byte swizzle: rows of 128 bytes,
/// 8-row atoms 1024 bytes apart (stride byte offset), leading byte offset unused (1).
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128(unsigned smem_addr) {
  return static_cast<std::uint64_t>((smem_addr & 0x3FFFFu) >> 4) | (static_cast<std::uint64_t>(1) << 16) |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) | (static_cast<std::uint64_t>(1) << 62);
}

// One wgmma.mma_async m64nNk16 (TY = "f16" or "bf16" in, fp32 accumulate, D += A·B): A (64 × 16)
// from registers, B (16 × N, K-major, 128-byte swizzle) in shared memory through `desc`.
#define AWQ_WGMMA_N32_RS(TY)                                                                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"                                                                                  \
               "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " "                                                                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "                                                       \
               "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"                                                                                   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),       \
                 "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])                                                   \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1))
#define AWQ_WGMMA_N64_RS(TY)                                                                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                                                  \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                                                                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, "      \
               "%26, %27, %28, %29, %30, %31}, "                                                                                                \
               "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"                                                                                   \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]),       \
                 "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),           \
                 "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),           \
                 "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                                                                             \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1))

#define AWQ_WGMMA_N128_RS(TY)                                                                                                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                                                           \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                                                                           \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                                              \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                                                     \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                                                     \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "                                                    \
               "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"                                                                                          \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),                                      \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),                                \
                 "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),                              \
                 "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),                              \
                 "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),                              \
                 "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),                              \
                 "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),                              \
                 "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                               \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1))

/// One wgmma m64nNk16 (N = NTOK) with A of type T from registers and B from swizzled shared memory.
template <int NTOK, class T>
__device__ __forceinline__ void wgmma_rs(float (&d)[NTOK / 2], const std::uint32_t (&a)[4], std::uint64_t desc) {
  constexpr bool fp16 = std::is_same_v<T, __half>;
  if constexpr (NTOK == 32) {
    if constexpr (fp16)
      AWQ_WGMMA_N32_RS("f16");
    else
      AWQ_WGMMA_N32_RS("bf16");
  } else if constexpr (NTOK == 64) {
    if constexpr (fp16)
      AWQ_WGMMA_N64_RS("f16");
    else
      AWQ_WGMMA_N64_RS("bf16");
  } else {
    if constexpr (fp16)
      AWQ_WGMMA_N128_RS("f16");
    else
      AWQ_WGMMA_N128_RS("bf16");
  }
}
#undef AWQ_WGMMA_N32_RS
#undef AWQ_WGMMA_N64_RS
#undef AWQ_WGMMA_N128_RS

/// One pipeline step of the Hopper kernels for one warp: the four K tiles of 16 in the stage at
/// `base` (K offset k0) — decode of the warp's weight words (the group's constants loaded when the
/// group changes), wgmma into acc, at most two groups in flight (a group: one K tile; for four
/// warpgroups TiledTuning::wgmma_kk_group = 2 of them, bench/RESULTS.md).
template <int NTOK, int WGS, class T, class Tn>
__device__ __forceinline__ void wgmma_step(float (&acc)[kTiledWarps / WGS][NTOK / 2], TiledConsts<T>& cst, int& cur_group, const unsigned char* base, int k0, int gshift, bool zeros) {
  using Sh = WgmmaShape<NTOK, WGS, Tn>;
  constexpr int J = kTiledWarps / WGS;
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32, g = lane / 4;
  // The strip this warp's wgmma rows belong to and its first fragment (word) in each lane's 16 bytes.
  const int strip = WGS == 1 ? warp : warp / 4, frag0 = WGS == 1 ? 0 : warp % 4;
  const unsigned x_addr = smem_u32(base);
  // WGS = 1: the lane's 16 bytes (4 words); WGS = 4: its word frag0 (in .x).
  auto weight_words = [&](int kk) {
    const unsigned char* w = base + Sh::b_off + strip * (Sh::b_bytes / kTiledWarps) + kk * 512 + lane * 16;
    if constexpr (WGS == 1)
      return *reinterpret_cast<const uint4*>(w);
    else
      return uint4{*reinterpret_cast<const std::uint32_t*>(w + 4 * frag0), 0u, 0u, 0u};
  };
  constexpr bool preload = Tn::wgmma_preload && NTOK >= 64;
  uint4 bw_next = preload ? weight_words(0) : uint4{};
  constexpr int KG = WGS == 4 ? Tn::wgmma_kk_group : 1;  // K tiles per wgmma group
  static_assert(KG == 1 || KG == 2 || KG == 4, "1, 2 or 4 K tiles per wgmma group");
  // A group's K tiles are all decoded before its first wgmma is issued (a decode between two wgmma
  // of one group would make ptxas serialize them); 2·KG A buffers, so the group in flight keeps its own.
  std::uint32_t af[2 * KG][J][4];
#pragma unroll
  for (int kk = 0; kk < kTiledBK / kTiledK; ++kk) {
    const int grp = (k0 + kk * kTiledK) >> gshift;
    if (grp != cur_group) {  // uniform across the block
      const int slot = grp - (k0 >> gshift);
      const unsigned char* sp = base + Sh::s_off + slot * 512 + strip * 128 + g * 16;
      std::uint32_t zw = zeros ? *reinterpret_cast<const std::uint32_t*>(base + Sh::z_off + slot * 128 + strip * 32 + g * 4) : 0x88888888u;
      if constexpr (WGS == 1) {
        cst.load(*reinterpret_cast<const uint4*>(sp), zw);
      } else {  // columns 8 j + g for j = 2 frag0, 2 frag0 + 1, as entries 0 and 1 (the rest unused)
        zw >>= 8 * frag0;
        cst.load(uint4{*reinterpret_cast<const std::uint32_t*>(sp + 4 * frag0), 0u, 0u, 0u}, zw);
      }
      cur_group = grp;
    }
    const uint4 bw = preload ? bw_next : weight_words(kk);
    std::uint32_t(&A)[J][4] = af[kk % (2 * KG)];
    std::uint32_t b[4];
    // decode_word gives the B fragments of columns 16 w + g (b0, b1) and 16 w + 8 + g (b2, b3):
    // as A rows g and g + 8 that is {a0a1, a4a5} and {a2a3, a6a7}.
#define AWQ_TWG_WORD(W, Q)   \
  decode_word<W>(Q, cst, b); \
  A[W][0] = b[0];            \
  A[W][1] = b[2];            \
  A[W][2] = b[1];            \
  A[W][3] = b[3];
    AWQ_TWG_WORD(0, bw.x)
    if constexpr (J == 4) {
      AWQ_TWG_WORD(1, bw.y)
      AWQ_TWG_WORD(2, bw.z)
      AWQ_TWG_WORD(3, bw.w)
    }
#undef AWQ_TWG_WORD
    if (kk % KG == KG - 1) {  // the group's K tiles are decoded: issue their wgmma
      wgmma_fence();
#pragma unroll
      for (int q = kk + 1 - KG; q <= kk; ++q) {
        const std::uint64_t desc = wgmma_desc_sw128(x_addr + q * kTiledK * 2);
#pragma unroll
        for (int j = 0; j < J; ++j) wgmma_rs<NTOK, T>(acc[j], af[q % (2 * KG)][j], desc);
      }
      wgmma_commit();
    }
    // The next K tile's words are read before the wait: the shared-memory load's latency runs
    // under it (TiledTuning::wgmma_preload; 64 tokens or more: at 32 the extra registers cost the third block per SM).
    if (preload && kk + 1 < kTiledBK / kTiledK) bw_next = weight_words(kk + 1);
    if (kk % KG == KG - 1) wgmma_wait<1>();  // the group before this one is done: its A buffers are free
  }
}

/// The Hopper kernels' epilogue (every thread of the block; it may return early: a K slice that
/// is not its tile's last). acc[j][4 i + 2 h + c]: column 64 (nt0 + strip) + 16 (frag0 + j) + 8 h + g
/// of y, token m0 + 8 i + 2 t + c.
template <int NTOK, int WGS, class T>
__device__ __forceinline__ void wgmma_epilogue(float (&acc)[kTiledWarps / WGS][NTOK / 2], const W4A16TiledArgsT<T>& a, const WgmmaGrid& gr,
                                               int* tickets, float* partial) {
  constexpr int kThreads = kTiledThreads * WGS, J = kTiledWarps / WGS;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
  const int strip = WGS == 1 ? warp : warp / 4, frag0 = WGS == 1 ? 0 : warp % 4;
  const WgmmaBlock eb = wgmma_block(gr);  // derived again, not held through the main loop
  const int nt0 = eb.nt0, m0 = eb.tm * NTOK, n_end = min(a.n, (nt0 + eb.ns) * kTiledN);
  // Lanes g and g ^ 1 swap one value so that each holds two neighbouring columns of one token:
  // even g → columns (c0, c0 + 1) of token 2 t, odd g → of token 2 t + 1.
  const bool odd = g % 2;
  const int col_base = (nt0 + strip) * kTiledN + 16 * frag0 + (g & ~1);
  auto for_each_out = [&](auto&& f) {
#pragma unroll
    for (int j = 0; j < J; ++j)
#pragma unroll
      for (int i = 0; i < NTOK / 8; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float v = acc[j][4 * i + 2 * h], w = acc[j][4 * i + 2 * h + 1];
          const float recv = __shfl_xor_sync(0xFFFFFFFFu, odd ? v : w, 4);
          const int col = col_base + 16 * j + 8 * h, row = m0 + 8 * i + 2 * t + (odd ? 1 : 0);
          if (row < a.m && col < n_end) f(row, col, odd ? recv : v, odd ? w : recv);
        }
  };
  if (gr.splits > 1) {
    // Split-K: each slice's fp32 partial tile as the accumulators lie in registers — float4 v of
    // thread tid at (v · threads + tid) · 16 bytes, so each store or load instruction of a warp
    // covers 512 contiguous bytes; no shuffles, no bounds (padded rows and columns hold zeros) —
    // then the tile's last block (same threads, same layout) reads the slices back into the
    // accumulators in slice order (0 + p0 + p1 + …: the same bits whichever block is last) and
    // stores y as an unsplit tile does.
    constexpr int V = J * NTOK / 8;  // float4 per thread
    constexpr long kTile = static_cast<long>(NTOK) * kTiledBN;
    static_assert(V * 4 * kThreads == kTile, "a thread's accumulators are its share of the tile");
    float4* const pt = reinterpret_cast<float4*>(partial + static_cast<long>(eb.tile) * gr.splits * kTile) + tid;
    auto acc4 = [&](int v) -> float* { return &acc[v / (NTOK / 8)][4 * (v % (NTOK / 8))]; };
    float4* const own = pt + eb.split * (kTile / 4);
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const float* q = acc4(v);
      __stcg(own + v * kThreads, make_float4(q[0], q[1], q[2], q[3]));
    }
    if (!split_k_arrive_last(tickets + eb.tile, gr.splits)) return;
#pragma unroll
    for (int j = 0; j < J; ++j)
#pragma unroll
      for (int e = 0; e < NTOK / 2; ++e) acc[j][e] = 0.0f;
#pragma unroll 1
    for (int sp = 0; sp < gr.splits; ++sp)
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const float4 p = __ldcg(pt + sp * (kTile / 4) + v * kThreads);
        float* q = acc4(v);
        q[0] += p.x;
        q[1] += p.y;
        q[2] += p.z;
        q[3] += p.w;
      }
    if (threadIdx.x == 0) tickets[eb.tile] = 0;  // for the next call (this tile's other blocks have arrived)
  }
  store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, 0, 1, nullptr, nullptr, a.swiglu_output);
}

/// WGS = 1: one warpgroup, warp w owns strip nt0 + w and issues 4 wgmma per K tile (one per word
/// of its lanes). WGS = 4: four warpgroups, warpgroup v owns strip nt0 + v; its warp w decodes word
/// w of every lane's 16 bytes (rows 16 w .. 16 w + 15 of the strip: the warpgroup's m64 block is
/// the strip's 64 columns in order) and the warpgroup issues one wgmma per K tile — a quarter of the
/// decode and wgmma issue per warp, four times the warps per SM, x shared by all 256 columns.
/// Stages filled by cp.async, one block barrier per P steps. (A TMA and mbarrier pipeline without
/// block barriers was measured slower: bench/RESULTS.md, tenth session.)
///
/// Grid: WgmmaGrid. Under split-K a tile's fp32 partial tiles lie compact in `partial` (NTOK × 256
/// floats each, slot t·splits + slice, in the threads' register order); its last block adds them in
/// slice order.
template <int NTOK, int WGS, class T, class Tn>
__global__ void __launch_bounds__(kTiledThreads* WGS, WGS == 1 ? Tn::wgmma_min_blocks : 1)
    w4a16_tiled_wgmma_kernel(W4A16TiledArgsT<T> a, WgmmaGrid gr, int* tickets, float* partial) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(WGS == 1 || WGS == 4, "one or four warpgroups");
  constexpr int kThreads = kTiledThreads * WGS, J = kTiledWarps / WGS;  // J: wgmma (fragments) per K tile per warp
  using Sh = WgmmaShape<NTOK, WGS, Tn>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
  const int tid = static_cast<int>(threadIdx.x);
  const int kp = (a.k + kTiledPadK - 1) / kTiledPadK * kTiledPadK, np = (a.n + kTiledN - 1) / kTiledN * kTiledN;
  const int ntiles = np / kTiledN, ktiles = kp / kTiledK;
  const int steps = kp / kTiledBK;
  const WgmmaBlock blk = wgmma_block(gr);
  const int nt0 = blk.nt0, m0 = blk.tm * NTOK;
  const int step0 = blk.split * gr.steps_per_split, nsteps = min(steps, step0 + gr.steps_per_split) - step0;
  const int rows = min(NTOK, a.m - m0);
  const int gshift = __ffs(a.group) - 1;
  const int group_rows = a.group == 32 ? 2 : 1;
  auto stage = [&](int st) { return smem + st * Sh::stage_bytes; };
  // P steps per barrier; D steps loaded ahead: the stages refilled after a barrier belong to steps
  // ≤ ls0 − 2 (the wgmma of step ls0 − 1 may still run).
  constexpr int P = WgmmaPipe<WGS, Tn>::steps_per_barrier;
  constexpr int D = Sh::stages - 1 - P;
  static_assert(P >= 1 && P <= 4, "one to four steps per barrier");
  static_assert(D >= P, "P steps per barrier need 2 P + 1 stages or more");

  // What this thread copies each step, resolved once (per step only the K offset moves):
  // x: NTOK / 16 chunks of 16 bytes; chunk c of row r lands at chunk c ^ (r % 8) (the 128-byte
  // swizzle). Rows past M are zero-filled (source size 0), so no branch and no clearing pass.
  constexpr int XU = NTOK * 8 / kThreads;
  static_assert(XU >= 1 && NTOK * 8 % kThreads == 0, "whole x chunks per thread");
  const T* x_src[XU];
  unsigned x_dst[XU];
  int x_size[XU], x_col[XU];
  const unsigned smem0 = smem_u32(smem);
#pragma unroll
  for (int u = 0; u < XU; ++u) {
    const int c = tid + u * kThreads, r = c / 8, ch = c % 8;
    x_size[u] = r < rows ? 16 : 0;
    x_col[u] = ch * 8;
    x_src[u] = a.x + static_cast<long>(m0 + (r < rows ? r : 0)) * a.k + x_col[u];
    x_dst[u] = smem0 + r * 128 + ((ch ^ (r % 8)) * 16);
  }
  // Weights: the 4 strips' 2 KB of codes per step in 16-byte chunks, chunk c = tid + u·threads of
  // strip c / 128; strips past N are zero-filled (their wgmma multiply zeros); so are those past
  // the block's ns (a tail block: their warpgroups issue no wgmma).
  constexpr int QU = kTiledWarps / WGS;
  const int strips = min(blk.ns, ntiles - nt0);
  const bool active = WGS == 1 || tid / kTiledThreads < strips;
  const unsigned char* q_src[QU];
  unsigned q_dst[QU];
  int q_size[QU];
#pragma unroll
  for (int u = 0; u < QU; ++u) {
    const int c = tid + u * kThreads, sp = c / kTiledThreads;
    q_size[u] = sp < strips ? 16 : 0;
    q_src[u] = reinterpret_cast<const unsigned char*>(a.qweight) + static_cast<long>(sp < strips ? nt0 + sp : nt0) * ktiles * 512 + (c % kTiledThreads) * 16;
    q_dst[u] = smem0 + Sh::b_off + sp * (Sh::b_bytes / kTiledWarps) + (c % kTiledThreads) * 16;
  }
  const GroupParamCopy sz = group_param_copy(a, tid, nt0, ntiles, group_rows, Sh::s_off, Sh::z_off);
  const unsigned sz_dst = smem0 + sz.dst;
  auto load_stage = [&](int step, int st) {
    const unsigned so = static_cast<unsigned>(st * Sh::stage_bytes);
    const int k0 = step * kTiledBK;
    if (k0 + kTiledBK <= a.k) {
#pragma unroll
      for (int u = 0; u < XU; ++u) cp_async16(x_dst[u] + so, x_src[u] + k0, x_size[u]);
    } else {  // the last step of a K that is not a multiple of 64: chunks past K are zero (K % 32 == 0)
#pragma unroll
      for (int u = 0; u < XU; ++u) {
        const bool in = k0 + x_col[u] < a.k;
        cp_async16(x_dst[u] + so, in ? x_src[u] + k0 : a.x, in ? x_size[u] : 0);
      }
    }
    const long qo = static_cast<long>(step) * (kTiledBK / kTiledK) * 512;
#pragma unroll
    for (int u = 0; u < QU; ++u) cp_async16(q_dst[u] + so, q_src[u] + qo, q_size[u]);
    if (sz.src) cp_async16(sz_dst + so, sz.src + static_cast<long>(k0 >> gshift) * sz.row, 16);
  };

  float acc[J][NTOK / 2];
#pragma unroll
  for (int j = 0; j < J; ++j)
#pragma unroll
    for (int e = 0; e < NTOK / 2; ++e) acc[j][e] = 0.0f;
  wgmma_fence_operand(acc);

#pragma unroll
  for (int s = 0; s < D; ++s) {
    if (s < nsteps) load_stage(step0 + s, s);
    cp_async_commit();
  }

  TiledConsts<T> cst;
  int cur_group = -1;
  // The main loop; `compute` false: a warpgroup past a tail block's strips, which copies and meets
  // the barriers but issues no wgmma, in its own copy of the loop; `aligned` false: the barrier of a
  // block whose warpgroups run different copies of the loop. (Measured, bench/RESULTS.md: a branch
  // around each step's wgmma instead slowed every block; a non-aligned barrier in full blocks too cost
  // them ~3 %, so full blocks keep the one loop and __syncthreads.)
  auto main_loop = [&](auto compute, auto aligned) {
    constexpr bool kCompute = decltype(compute)::value;
    for (int ls0 = 0; ls0 < nsteps; ls0 += P) {
      cp_async_wait<D - P>();      // the stages of steps ls0 .. ls0 + P − 1 have landed (for this thread) …
      fence_proxy_async_shared();  // … and are visible to the tensor cores' reads
      if constexpr (!decltype(aligned)::value)
        asm volatile("barrier.sync 0;\n" ::: "memory");  // two copies of the loop meet here: not .aligned
      else
        __syncthreads();  // … for every thread; the wgmma of step ls0 − 2 are done (≤ 1 group pending)
#pragma unroll
      for (int q = 0; q < P; ++q) {
        const int next = ls0 + D + q;
        if (next < nsteps) load_stage(step0 + next, next % Sh::stages);
        cp_async_commit();
      }
      if constexpr (kCompute) {
#pragma unroll
        for (int q = 0; q < P; ++q) {
          const int ls = ls0 + q;
          if (P > 1 && ls >= nsteps) break;
          wgmma_step<NTOK, WGS, T, Tn>(acc, cst, cur_group, stage(ls % Sh::stages), (step0 + ls) * kTiledBK, gshift, a.qzeros != nullptr);
        }
      }
    }
  };
  if constexpr (WGS == 4) {
    if (blk.ns == kTiledWarps)
      main_loop(std::true_type{}, std::true_type{});
    else if (active)
      main_loop(std::true_type{}, std::false_type{});
    else
      main_loop(std::false_type{}, std::false_type{});
  } else {
    main_loop(std::true_type{}, std::true_type{});
  }
  wgmma_wait<0>();
  wgmma_fence_operand(acc);
  cp_async_wait<0>();
  wgmma_epilogue<NTOK, WGS, T>(acc, a, gr, tickets, partial);
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: tiled_wgmma_available() is false wherever this image runs, so nothing launches it
#endif
}

/// Blocks of the Hopper kernel resident at once on the device.
template <int NTOK, int WGS, class T, class Tn>
int tiled_wgmma_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_tiled_wgmma_kernel<NTOK, WGS, T, Tn>, kTiledThreads * WGS, WgmmaShape<NTOK, WGS, Tn>::smem_bytes, cache,
                        "w4a16_tiled_wgmma_kernel attributes");
}

/// Writes 1 where the device code running it was compiled for sm_90a (it then holds the Hopper
/// kernel's body: one translation unit, one image per device), else 0.
template <int = 0>
__global__ void tiled_wgmma_probe_kernel(int* compiled) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *compiled = 1;
#else
  *compiled = 0;
#endif
}

/// Whether the Hopper kernel serves the current device: a device of compute capability 9.0 whose
/// device code (the image the runtime picked for it from this binary) was compiled for sm_90a.
/// Asked once per device of that image with a one-thread probe (a synchronizing launch on the
/// legacy stream: make the first call, or a w4a16_tiled_workspace_bytes, outside stream capture).
inline bool tiled_wgmma_available() {
  static std::atomic<int> cache[64] = {};  // 0 unknown, 1 no, 2 yes
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 0 && dev < 64 && cache[dev].load(std::memory_order_acquire) != 0) return cache[dev].load(std::memory_order_acquire) == 2;
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
  bool yes = false;
  if (major == 9 && minor == 0) {
    DeviceBuffer<int> flag(std::vector<int>{0});
    tiled_wgmma_probe_kernel<><<<1, 1>>>(flag.data());
    // No image for this device at all: not the Hopper kernel (the product's own launch says why).
    if (cudaGetLastError() == cudaSuccess) yes = flag.download()[0] == 1;
  }
  if (dev >= 0 && dev < 64) cache[dev].store(yes ? 2 : 1, std::memory_order_release);
  return yes;
}

template <int NTOK, int WGS, class T, class Tn>
void launch_tiled_wgmma(const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  auto* kernel = w4a16_tiled_wgmma_kernel<NTOK, WGS, T, Tn>;
  const WgmmaGrid gr = wgmma_grid(p);
  const SplitKBuffers w = split_k_buffers(a.workspace, p);  // tickets, then the compact partial tiles
  constexpr std::size_t smem = WgmmaShape<NTOK, WGS, Tn>::smem_bytes;
  allow_dynamic_smem(kernel, smem, "w4a16_tiled_wgmma_kernel attributes");  // the copy launched here
  kernel<<<static_cast<unsigned>(wgmma_plan_blocks(p)), kTiledThreads * WGS, smem, stream>>>(a, gr, w.tickets, w.partial);
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
