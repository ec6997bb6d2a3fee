/// \file
/// \brief The tiled layout's mma pipeline (nvcc only; sm_80 and later): M > 16 where the Hopper
///        kernel does not serve. Launched through awq/kernels/cuda/w4a16_tiled.cuh.
///
/// The mma pipeline:
/// - A block of 4 warps computes a (16·MT) × 256 tile of y, one 64-column strip per warp, over K
///   in steps of 64. A pipeline of cp.async stages carries the x tile, the warps' packed weight
///   tiles (4 × 2 KB, contiguous in the tiled layout), and the scales and zeros of the step's
///   groups.
/// - A warp reads each 16 × 64 weight tile with one 16-byte shared load per lane: four words
///   that decode in registers into the B fragments of eight n8 sub-tiles. No shared-memory round
///   trip for the weights. Two decodes:
///   - one m16 tile (M ≤ 64 in 16-row blocks when tiles are few), "raw codes": one
///     LOP3 per two weights makes the fp16 pair 1024 + q (low nibbles) or 64 + q (high nibbles:
///     64.0 has its unit in mantissa bit 4, where they sit) and the mma runs on those codes;
///     one more mma per K tile against constant columns gives, per row, the offset part
///     Σ x·(1024 or 64) and Σ x; at the end of each group the zero point and the scale are
///     applied in fp32: acc += s·(Σ x·code − offset − z·Σ x). The weights are the exact
///     (q − z)·s (no fp16 rounding of them); the fp32 subtraction loses about 8 of 24 bits.
///   - taller blocks (2 or 4 m16 tiles share each decoded weight): LOP3, then HADD2 (HFMA2)
///     subtracts 1024 + z exactly and HMUL2 applies the scale: (q − z)·s rounded once to fp16,
///     the weight AutoAWQ's dequantize makes.
/// - x fragments come from shared memory through ldmatrix; rows past M are zeroed once per
///   block instead of being copied.
/// - Split-K when the output tiles would not fill one wave of resident blocks: fp32 partial
///   tiles in the workspace, added in slice order by the tile's last block (deterministic).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "awq/kernels/cuda/tiled/args.cuh"
#include "awq/kernels/cuda/tiled/plan.hpp"
#include "awq/kernels/cuda/tiled/ptx.cuh"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/kernels/cuda/w4a16_gemm.cuh"

namespace awq {
namespace cuda {
namespace detail {

constexpr int kTiledPadX = 8;  // halves of padding per x row (ldmatrix without conflicts)

template <int MT, class Tn>
struct TiledShape {
  static constexpr int bm = 16 * MT;                     // rows of y per block
  // Pipeline depth and the blocks per SM the registers must allow (measured, bench/RESULTS.md):
  // 3 stages and 4 blocks per SM for one m16 tile (5 blocks leave 96 registers: the raw-code
  // kernel spills, the fp16-decode one runs 8 % slower on an H100).
  static constexpr int stages = MT == 1 ? Tn::mma_stages_one_tile : Tn::mma_stages_tall;
  static constexpr int min_blocks = MT == 1 ? Tn::mma_min_blocks_one_tile : (MT == 2 ? 3 : 2);
  static constexpr int x_stride = kTiledBK + kTiledPadX;  // halves per x row
  static constexpr int x_bytes = bm * x_stride * 2;
  static constexpr int strip_bytes = kTiledBK * kTiledN / 2;                 // one warp's codes per step: 2 KB
  static constexpr int b_bytes = kTiledWarps * strip_bytes;                  // 8 KB
  static constexpr int s_bytes = 2 * kTiledWarps * kTiledN * 2;              // scales of two groups
  static constexpr int z_bytes = 2 * kTiledWarps * 8 * 4;                    // zeros of two groups
  static constexpr int b_off = x_bytes, s_off = b_off + b_bytes, z_off = s_off + s_bytes;
  static constexpr int stage_bytes = z_off + z_bytes;
  static constexpr std::size_t smem_bytes = static_cast<std::size_t>(stages) * stage_bytes;
  static_assert(x_bytes % 16 == 0 && stage_bytes % 16 == 0, "16-byte aligned parts");
};

/// The tiled kernel's epilogue, for every thread of the block (it may synchronize): the warp's
/// accumulators of strip `nt`, rows m0 + 16 i + lane/4 (+ 8), columns 64 nt + 8 j + 2·(lane % 4)
/// (+ 1), through store_or_split_k.
template <int MT, class T>
__device__ __forceinline__ void tiled_epilogue(const W4A16TiledArgsT<T>& a, const float (&acc)[MT][8][4], int nt, int m0, int split, int splits,
                                               int* tickets, float* partial) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int col0 = nt * kTiledN + 2 * (lane % 4);
  auto for_each_out = [&](auto&& f) {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int col = col0 + 8 * j;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = m0 + i * 16 + lane / 4 + 8 * h;
          if (row < a.m && col < a.n) f(row, col, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        }
      }
  };
  store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, split, splits, tickets, partial, a.swiglu_output);
}

template <int MT, class T, class Tn>
__global__ void __launch_bounds__(kTiledThreads, TiledShape<MT, Tn>::min_blocks) w4a16_tiled_kernel(W4A16TiledArgsT<T> a, int steps_per_split, int splits,
                                                                                             int* tickets, float* partial) {
  using Sh = TiledShape<MT, Tn>;
  using A = Act<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int kp = (a.k + kTiledPadK - 1) / kTiledPadK * kTiledPadK, np = (a.n + kTiledN - 1) / kTiledN * kTiledN;
  const int ntiles = np / kTiledN, ktiles = kp / kTiledK;
  const int nt0 = static_cast<int>(blockIdx.x) * kTiledWarps, m0 = static_cast<int>(blockIdx.y) * Sh::bm;
  const int steps = kp / kTiledBK, split = static_cast<int>(blockIdx.z);
  const int step0 = split * steps_per_split, nsteps = min(steps, step0 + steps_per_split) - step0;
  const int rows = min(Sh::bm, a.m - m0);  // rows of x this block reads
  const int gshift = __ffs(a.group) - 1;
  const int group_rows = a.group == 32 ? 2 : 1;  // groups a step touches (steps of 64 start on a group)
  auto stage = [&](int st) { return smem + st * Sh::stage_bytes; };

  // Rows of x past M: zero once in every stage, never copied.
  for (int st = 0; st < Sh::stages; ++st)
    for (int i = tid; i < (Sh::bm - rows) * (kTiledBK / 8); i += kTiledThreads)
      *reinterpret_cast<uint4*>(stage(st) + ((rows + i / 8) * Sh::x_stride + (i % 8) * 8) * 2) = make_uint4(0u, 0u, 0u, 0u);

  // What this thread copies each step, resolved once: up to MT chunks of x (16 bytes: 8 of the 64
  // halves of a row), one 16-byte chunk of each warp's weight strip, and possibly one chunk of
  // scales or zeros. Per step only the K offset moves.
  const T* x_src[MT];
  int x_dst[MT], x_col[MT];
  bool x_ok[MT];
#pragma unroll
  for (int u = 0; u < MT; ++u) {
    const int c = tid + u * kTiledThreads, r = c / 8;
    x_ok[u] = r < rows;
    x_col[u] = (c % 8) * 8;
    x_src[u] = a.x + static_cast<long>(m0 + (x_ok[u] ? r : 0)) * a.k + x_col[u];
    x_dst[u] = (r * Sh::x_stride + x_col[u]) * 2;
  }
  // Weights: per step, each warp's strip is 4 tiles (2 KB) of contiguous memory; this thread
  // copies 16 bytes of each.
  const unsigned char* q_src = reinterpret_cast<const unsigned char*>(a.qweight) + static_cast<long>(nt0) * ktiles * 512 + tid * 16;
  const long q_strip = static_cast<long>(ktiles) * 512;  // bytes between the strips of neighbouring warps
  const int strips = min(kTiledWarps, ntiles - nt0);
  const GroupParamCopy sz = group_param_copy(a, tid, nt0, ntiles, group_rows, Sh::s_off, Sh::z_off);

  auto load_stage = [&](int step, int st) {
    unsigned char* base = stage(st);
    const int k0 = step * kTiledBK;
#pragma unroll
    for (int u = 0; u < MT; ++u)
      if (x_ok[u]) {
        const bool in = k0 + x_col[u] < a.k;  // K is a multiple of 32: a chunk is all in or all out
        cp_async16(base + x_dst[u], in ? x_src[u] + k0 : a.x, in ? 16 : 0);
      }
    const unsigned char* q = q_src + static_cast<long>(step) * (kTiledBK / kTiledK) * 512;
#pragma unroll
    for (int u = 0; u < kTiledWarps; ++u)
      if (u < strips) cp_async16(base + Sh::b_off + u * Sh::strip_bytes + tid * 16, q + u * q_strip, 16);
    if (sz.src) cp_async16(base + sz.dst, sz.src + static_cast<long>(k0 >> gshift) * sz.row, 16);
  };

  float acc[MT][8][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < Sh::stages - 1; ++s) {
    if (s < nsteps) load_stage(step0 + s, s);
    cp_async_commit();
  }

  const bool active = nt0 + warp < ntiles;
  TiledConsts<T> cst;
  int cur_group = -1;
  // Raw-code kernel: per group, gacc = Σ x·code with code = P + q (P = 1024 or 128; fp16 high
  // nibbles 64 + q), and one more mma against constant columns gives, per row, the offset part
  // O = Σ x·(1024 or 64; bf16 128) (even columns) and Σx (odd columns); at the group's end
  // acc += s·(gacc − O − z·Σx) in fp32. Exact weights (q − z)·s, no fp16 rounding of them.
  constexpr bool raw = Tn::mma_raw && MT == 1;
  float gacc[raw ? MT : 1][8][4];
  float sx[raw ? MT : 1][4];
  auto clear_group = [&] {  // a new group starts
#pragma unroll
    for (int i = 0; i < (raw ? MT : 1); ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) gacc[i][j][e] = 0.0f;
#pragma unroll
      for (int e = 0; e < 4; ++e) sx[i][e] = 0.0f;
    }
  };
  clear_group();
  // x fragments of K tile kk of a stage, for the MT m16 tiles
  auto load_a = [&](unsigned(&af)[MT][4], const unsigned char* base, int kk) {
#pragma unroll
    for (int i = 0; i < MT; ++i) {
      const int r = i * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
      const int c = kk * kTiledK + 8 * (lane / 16);
      ldmatrix_x4(af[i], base + (r * Sh::x_stride + c) * 2);
    }
  };
  const std::uint32_t ones_b0 = (lane / 4) % 2 ? A::one : A::magic;     // column g: 1 (odd) or the low-nibble offset (even)
  const std::uint32_t ones_b1 = (lane / 4) % 2 ? A::one : A::magic_hi;  // … 1 (odd) or the high-nibble offset (even)
  for (int ls = 0; ls < nsteps; ++ls) {
    const int st = ls % Sh::stages;
    cp_async_wait<Sh::stages - 2>();  // this step's stage has landed (for this thread)
    __syncthreads();                  // … for every thread; the stage refilled below is free
    {
      const int next = ls + Sh::stages - 1;
      if (next < nsteps) load_stage(step0 + next, next % Sh::stages);
      cp_async_commit();
    }
    if (!active) continue;
    const unsigned char* base = stage(st);
    const int k0 = (step0 + ls) * kTiledBK;
#pragma unroll
    for (int kk = 0; kk < kTiledBK / kTiledK; ++kk) {
      const int g = (k0 + kk * kTiledK) >> gshift;
      if constexpr (raw) {
        const uint4 bw = *reinterpret_cast<const uint4*>(base + Sh::b_off + warp * Sh::strip_bytes + kk * 512 + lane * 16);
        unsigned af[MT][4];
        load_a(af, base, kk);
#pragma unroll
        for (int i = 0; i < MT; ++i) A::mma_16816(sx[i], af[i], ones_b0, ones_b1);
        const std::uint32_t words[4] = {bw.x, bw.y, bw.z, bw.w};
#pragma unroll
        for (int w = 0; w < 4; ++w) {
          std::uint32_t b[4];
          decode_word_raw<T>(words[w], b);
#pragma unroll
          for (int i = 0; i < MT; ++i) {
            A::mma_16816(gacc[i][2 * w], af[i], b[0], b[1]);
            A::mma_16816(gacc[i][2 * w + 1], af[i], b[2], b[3]);
          }
        }
        const int kn = k0 + (kk + 1) * kTiledK;
        if ((kn & (a.group - 1)) == 0 || (ls == nsteps - 1 && kk == kTiledBK / kTiledK - 1)) {  // the group's (or slice's) end
          const int slot = g - (k0 >> gshift), t = lane % 4;
          const unsigned char* sp = base + Sh::s_off + slot * 512 + warp * 128;
          const uint4 sv[2] = {*reinterpret_cast<const uint4*>(sp + (2 * t) * 16), *reinterpret_cast<const uint4*>(sp + (2 * t + 1) * 16)};
          std::uint32_t zw[2] = {0x88888888u, 0x88888888u};
          if (a.qzeros) {
            const unsigned char* zp = base + Sh::z_off + slot * 128 + warp * 32;
            zw[0] = *reinterpret_cast<const std::uint32_t*>(zp + (2 * t) * 4);
            zw[1] = *reinterpret_cast<const std::uint32_t*>(zp + (2 * t + 1) * 4);
          }
          const bool lower_only = rows <= 8;  // rows 8..15 of the m16 tile are padding
#pragma unroll
          for (int j = 0; j < 8; ++j) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const std::uint32_t sw = j / 2 == 0 ? sv[c].x : j / 2 == 1 ? sv[c].y : j / 2 == 2 ? sv[c].z : sv[c].w;
              const float sc = __half2float(__ushort_as_half(static_cast<unsigned short>(j % 2 ? sw >> 16 : sw & 0xFFFFu)));
              const float zf = static_cast<float>((zw[c] >> (4 * j)) & 0xFu);
#pragma unroll
              for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                  if (h == 1 && lower_only) continue;
                  acc[i][j][2 * h + c] = fmaf(sc, gacc[i][j][2 * h + c] - fmaf(zf, sx[i][2 * h + 1], sx[i][2 * h]), acc[i][j][2 * h + c]);
                }
            }
          }
          clear_group();
        }
        continue;
      }
      if (g != cur_group) {  // uniform across the warp
        const int slot = g - (k0 >> gshift);
        const uint4 sv = *reinterpret_cast<const uint4*>(base + Sh::s_off + slot * 512 + warp * 128 + (lane / 4) * 16);
        const std::uint32_t zw =
            a.qzeros ? *reinterpret_cast<const std::uint32_t*>(base + Sh::z_off + slot * 128 + warp * 32 + (lane / 4) * 4) : 0x88888888u;
        cst.load(sv, zw);
        cur_group = g;
      }
      const uint4 bw = *reinterpret_cast<const uint4*>(base + Sh::b_off + warp * Sh::strip_bytes + kk * 512 + lane * 16);
      unsigned af[MT][4];
      load_a(af, base, kk);
      std::uint32_t b[4];
#define AWQ_TILED_WORD(W, Q)                               \
  decode_word<W>(Q, cst, b);                               \
  _Pragma("unroll") for (int i = 0; i < MT; ++i) {         \
    A::mma_16816(acc[i][2 * (W)], af[i], b[0], b[1]);      \
    A::mma_16816(acc[i][2 * (W) + 1], af[i], b[2], b[3]);  \
  }
      AWQ_TILED_WORD(0, bw.x)
      AWQ_TILED_WORD(1, bw.y)
      AWQ_TILED_WORD(2, bw.z)
      AWQ_TILED_WORD(3, bw.w)
#undef AWQ_TILED_WORD
    }
  }
  cp_async_wait<0>();

  tiled_epilogue<MT>(a, acc, nt0 + warp, m0, split, splits, tickets, partial);
}

/// Blocks of the mma pipeline resident at once on the device.
template <int MT, class T, class Tn>
int tiled_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_tiled_kernel<MT, T, Tn>, kTiledThreads, TiledShape<MT, Tn>::smem_bytes, cache, "w4a16_tiled_kernel attributes");
}

/// One launch of a split-K tiled kernel over plan p's grid.
template <class Kernel, class T>
void launch_tiled_grid(Kernel* kernel, std::size_t smem, const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  const SplitKBuffers w = split_k_buffers(a.workspace, p);
  const dim3 grid(static_cast<unsigned>(p.tiles_n), static_cast<unsigned>(p.tiles_m), static_cast<unsigned>(p.splits));
  allow_dynamic_smem(kernel, smem, "w4a16_tiled_kernel attributes");
  kernel<<<grid, kTiledThreads, smem, stream>>>(a, p.steps_per_split, p.splits, w.tickets, w.partial);
}

template <int MT, class T, class Tn>
void launch_tiled(const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  launch_tiled_grid(w4a16_tiled_kernel<MT, T, Tn>, TiledShape<MT, Tn>::smem_bytes, a, p, stream);
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
