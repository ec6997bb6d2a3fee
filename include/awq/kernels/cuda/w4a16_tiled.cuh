/// \file
/// \brief W4A16 matrix product on tensor cores over the tiled layout (awq/kernels/w4a16_tiled.hpp):
///        y = x · dequant(W)ᵀ (+ bias) for any M ≥ 1, x and y in fp16 or bf16 (w4a16_act.cuh),
///        fp32 accumulation.
///
/// Three kernels (one launch each; deterministic), chosen by M and the device:
/// - M ≤ 16: a streaming GEMV (w4a16_tiled_gemv_kernel, below; sm_80 and later) — the weights are
///   the mma's A operand, each lane's 16-byte word one A fragment, loaded straight from global
///   memory into registers eight tiles at a time; x (≤ 16 tokens) is the B operand. Near the
///   memory floor.
/// - M > 16 on Hopper (a build with sm_90a code and AWQ_CUDA_SM90A=1, a CC 9.0 device):
///   w4a16_tiled_wgmma_kernel — warpgroup MMA with the decoded weights as the register operand and
///   x read by the tensor cores from swizzled shared memory: one warpgroup per block (32 or 64
///   tokens) or, above M = 32 (and at M ≤ 32 when one warpgroup would need too many K slices),
///   four (64 or 128 tokens, one 64-column strip each); unless the
///   output tiles are so few that K would be split more than AWQ_TWG_MAX_SPLITS ways. An unsplit
///   four-warpgroup grid that would end on a partial wave ends instead on blocks of 3 or 2 strips
///   (wgmma_mix_plan; their other warpgroups copy but issue no wgmma).
/// - Otherwise (or every M with -DAWQ_TGEMV_MAX_M=0, for comparisons): the mma pipeline below.
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

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

#include "awq/backend/cuda_runtime.cuh"
#include "awq/error.hpp"
#include "awq/kernels/cuda/w4a16_act.cuh"
#include "awq/kernels/cuda/w4a16_gemm.cuh"
#include "awq/kernels/w4a16_tiled.hpp"

namespace awq {
namespace cuda {

/// \brief Device pointers and sizes of one W4A16 product over tiled weights
///        (the arrays of awq::TiledW4A16, uploaded; TiledW4A16Device does that), with
///        activations x, bias and y of type T: __half (W4A16TiledArgs) or __nv_bfloat16
///        (W4A16TiledArgsBf16). The scales are fp16 either way (the layout's).
template <class T>
struct W4A16TiledArgsT {
  static_assert(is_w4a16_act_v<T>, "W4A16TiledArgsT: activations are __half or __nv_bfloat16");
  using element_type = T;                   ///< the activation type
  const T* x = nullptr;                     ///< [M, K] row-major, 16-byte aligned
  const std::uint32_t* qweight = nullptr;   ///< tiled codes, 16-byte aligned
  const std::uint32_t* qzeros = nullptr;    ///< tiled zeros, 16-byte aligned; null: symmetric (zero 8)
  const __half* scales = nullptr;           ///< tiled scales (fp16), 16-byte aligned
  const T* bias = nullptr;                  ///< [N] or null
  T* y = nullptr;                           ///< [M, N] row-major, 4-byte aligned
  void* workspace = nullptr;                ///< w4a16_tiled_workspace_bytes(m, k, n) bytes, zero-filled once
  std::size_t workspace_bytes = 0;          ///< size of `workspace` (checked)
  int m = 1;                                ///< tokens (rows of x and y)
  int k = 0;                                ///< input features (TiledW4A16::k)
  int n = 0;                                ///< output features (TiledW4A16::n)
  int group = 128;                          ///< group size (TiledW4A16::group)
  /// true: for M ≤ 16 the call is launched with programmatic dependent launch (sm_90): its blocks
  /// may start while the kernel before it in the stream ends, and wait for that kernel's completion
  /// before they read or write global memory (≈ 1 µs a call on an H100; bench/RESULTS.md). Safe
  /// with any kernel before it; pointless before sm_90. Ignored above M = 16 (measured there: from
  /// 2 % faster to 16 % slower — the next grid's waiting blocks take SM slots out of turn).
  bool overlap_previous = false;

  /// Throws awq::Error naming the argument that cannot be run.
  void can_implement() const {
    constexpr const char* fn = "awq::cuda::w4a16_matmul (tiled)";
    using awq::detail::require;
    require(m >= 1, fn, ": M ", m, " is not positive");
    require(group == 32 || group == 64 || group == 128, fn, ": group ", group, " is not 32, 64 or 128");
    require(k > 0 && k % group == 0, fn, ": group ", group, " does not divide K ", k);
    require(n > 0 && n % 8 == 0, fn, ": N ", n, " is not a multiple of 8");
    require(x && qweight && scales && y, fn, ": a required pointer is null");
    auto aligned = [](const void* p, std::uintptr_t b) { return reinterpret_cast<std::uintptr_t>(p) % b == 0; };
    require(aligned(x, 16) && aligned(qweight, 16) && aligned(scales, 16) && aligned(qzeros, 16), fn,
            ": x, qweight, scales and qzeros must be 16-byte aligned");
    require(aligned(y, 4) && aligned(bias, 2), fn, ": y must be 4-byte aligned");
  }
};
/// fp16 activations.
using W4A16TiledArgs = W4A16TiledArgsT<__half>;
/// bf16 activations.
using W4A16TiledArgsBf16 = W4A16TiledArgsT<__nv_bfloat16>;

namespace detail {

constexpr int kTiledThreads = 128;  // 4 warps, one 64-column strip each
constexpr int kTiledWarps = 4;
constexpr int kTiledBN = kTiledWarps * kTiledN;  // 256 columns per block
constexpr int kTiledBK = 64;                     // K per pipeline step
constexpr int kTiledPadX = 8;                    // halves of padding per x row (ldmatrix without conflicts)
static_assert(kTiledBK == kTiledPadK, "a step covers one padding unit of K");

#ifndef AWQ_TILED_RAW
#define AWQ_TILED_RAW 1  // 1: the raw-code kernel for one m16 tile (zero point and scale per group in fp32); 0: fp16 decode
#endif
#ifndef AWQ_TILED_NO_COMPUTE
#define AWQ_TILED_NO_COMPUTE 0  // benchmark probe only: move the bytes, skip decode and mma (wrong results)
#endif
constexpr bool kTiledRaw = AWQ_TILED_RAW != 0;
constexpr bool kTiledNoCompute = AWQ_TILED_NO_COMPUTE != 0;

#ifndef AWQ_TILED_MIN_BLOCKS1
#define AWQ_TILED_MIN_BLOCKS1 4  // tuning knob for benchmarks: blocks per SM of the one-m16-tile kernel
#endif

template <int MT>
struct TiledShape {
  static constexpr int bm = 16 * MT;                     // rows of y per block
  // Pipeline depth and the blocks per SM the registers must allow (measured, bench/RESULTS.md):
  // 3 stages and 4 blocks per SM for one m16 tile (5 blocks leave 96 registers: the raw-code
  // kernel spills, the fp16-decode one runs 8 % slower on an H100).
#ifdef AWQ_TILED_STAGES
  static constexpr int stages = AWQ_TILED_STAGES;  // tuning knob for benchmarks
#else
  static constexpr int stages = MT == 1 ? 3 : 4;
#endif
  static constexpr int min_blocks = MT == 1 ? AWQ_TILED_MIN_BLOCKS1 : (MT == 2 ? 3 : 2);
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

__device__ __forceinline__ std::uint32_t h2_bits(__half2 h) { return *reinterpret_cast<const std::uint32_t*>(&h); }
__device__ __forceinline__ __half2 bits_h2(std::uint32_t u) { return *reinterpret_cast<const __half2*>(&u); }

/// A group's decoding constants for the 8 columns {64 nt + 8 j + g} of a lane: the scale as a
/// pair of T, −(P + z) (P = Act<T>'s magic: 1024 or 128) and, for fp16, −(64 + z) for nibbles
/// decoded as 1024 + 16 q.
template <class T>
struct TiledConsts {
  static constexpr bool fp16 = std::is_same_v<T, __half>;
  std::uint32_t s2[8], lo[8], hi[fp16 ? 8 : 1];

  __device__ __forceinline__ void load(uint4 sv, std::uint32_t zw) {
    const std::uint32_t sw[4] = {sv.x, sv.y, sv.z, sv.w};
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s2[j] = Act<T>::scale_pair(__byte_perm(sw[j / 2], 0u, (j % 2) ? 0x3232u : 0x1010u));
      const std::uint32_t z = (zw >> (4 * j)) & 0xFu;
      lo[j] = (Act<T>::neg_magic | z) * 0x10001u;  // −(P + z), exact
      if constexpr (fp16) {
        const __half2 sixteenth = __float2half2_rn(0.0625f);
        hi[j] = h2_bits(__hmul2(bits_h2((0xE400u | (z << 4)) * 0x10001u), sixteenth));  // −(64 + z), exact
      }
    }
  }
};

/// (a & mask) | magic in one LOP3 (the compiler splits it in two: both constants are immediates).
template <std::uint32_t Mask, std::uint32_t Magic = 0x64006400u>
__device__ __forceinline__ std::uint32_t lop3_and_or(std::uint32_t a) {
  std::uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "n"(Mask), "r"(Magic));
  return r;
}

/// Raw codes of the nibbles in bits 0..3 and 16..19 of q: the pair (P + q) of type T.
template <class T>
__device__ __forceinline__ std::uint32_t raw_lo(std::uint32_t q) {
  return lop3_and_or<0x000F000Fu, Act<T>::magic>(q);
}
/// Raw codes of the nibbles in bits 4..7 and 20..23 of q: fp16 64 + q in place (64.0 has its unit
/// in mantissa bit 4, where the nibble sits), bf16 128 + q after a shift. Act<T>::magic_hi is the offset.
template <class T>
__device__ __forceinline__ std::uint32_t raw_hi(std::uint32_t q) {
  if constexpr (std::is_same_v<T, __half>)
    return lop3_and_or<0x00F000F0u, Act<T>::magic_hi>(q);
  else
    return lop3_and_or<0x000F000Fu, Act<T>::magic>(q >> 4);
}

/// One word → the B fragments of sub-tiles 2w and 2w + 1 as raw codes: P + q for the low
/// nibble of each byte (K rows 2t, 2t + 1 of the fragment), raw_hi for the high nibble (rows
/// 2t + 8, 2t + 9). Zero point and scale are applied per group in fp32 (raw-code kernel, see the
/// kernel's comment).
template <class T>
__device__ __forceinline__ void decode_word_raw(std::uint32_t q, std::uint32_t (&b)[4]) {
  const std::uint32_t q8 = q >> 8;
  b[0] = raw_lo<T>(q);
  b[1] = raw_hi<T>(q);
  b[2] = raw_lo<T>(q8);
  b[3] = raw_hi<T>(q8);
}

/// One word of a lane's fragment load → the B fragments {b0, b1} of sub-tiles 2w and 2w + 1:
/// ((P + q) − (P + z))·s, rounded once to T (fp16; bf16: the scale rounded to bf16 first).
template <int W, class T>
__device__ __forceinline__ void decode_word(std::uint32_t q, const TiledConsts<T>& c, std::uint32_t (&b)[4]) {
  using A = Act<T>;
  const std::uint32_t q8 = q >> 8;
  constexpr int j0 = 2 * W, j1 = 2 * W + 1;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 sixteenth = __float2half2_rn(0.0625f);
    const std::uint32_t p0 = lop3_and_or<0x000F000Fu>(q), p1 = lop3_and_or<0x00F000F0u>(q);
    const std::uint32_t p2 = lop3_and_or<0x000F000Fu>(q8), p3 = lop3_and_or<0x00F000F0u>(q8);
    b[0] = h2_bits(__hmul2(__hadd2(bits_h2(p0), bits_h2(c.lo[j0])), bits_h2(c.s2[j0])));
    b[1] = h2_bits(__hmul2(__hfma2(bits_h2(p1), sixteenth, bits_h2(c.hi[j0])), bits_h2(c.s2[j0])));
    b[2] = h2_bits(__hmul2(__hadd2(bits_h2(p2), bits_h2(c.lo[j1])), bits_h2(c.s2[j1])));
    b[3] = h2_bits(__hmul2(__hfma2(bits_h2(p3), sixteenth, bits_h2(c.hi[j1])), bits_h2(c.s2[j1])));
  } else {
    b[0] = A::mul2(A::add2(raw_lo<T>(q), c.lo[j0]), c.s2[j0]);
    b[1] = A::mul2(A::add2(raw_hi<T>(q), c.lo[j0]), c.s2[j0]);
    b[2] = A::mul2(A::add2(raw_lo<T>(q8), c.lo[j1]), c.s2[j1]);
    b[3] = A::mul2(A::add2(raw_hi<T>(q8), c.lo[j1]), c.s2[j1]);
  }
}

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
  store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, split, splits, tickets, partial);
}

/// A thread's 16-byte share of one step's group parameters for a block's four strips: threads
/// 0 .. 32·group_rows − 1 copy scales (group row j = tid / 32: 4 strips × 128 bytes at s_off + 512 j),
/// threads 64 .. 64 + 8·group_rows − 1 zeros (4 strips × 32 bytes at z_off + 128 j); strips past N
/// are skipped. src: null when the thread copies nothing; dst: offset in the stage; row: bytes
/// between group rows in global memory.
struct GroupParamCopy {
  const unsigned char* src = nullptr;
  int dst = 0;
  long row = 0;
};
template <class T>
__host__ __device__ inline GroupParamCopy group_param_copy(const W4A16TiledArgsT<T>& a, int tid, int nt0, int ntiles, int group_rows, int s_off,
                                                         int z_off) {
  GroupParamCopy c;
  if (tid < group_rows * 32) {
    const int j = tid / 32, cc = tid % 32;
    if (nt0 + cc / 8 < ntiles) {
      c.src = reinterpret_cast<const unsigned char*>(a.scales) + (static_cast<long>(j) * ntiles + nt0) * 128 + cc * 16;
      c.dst = s_off + j * 512 + cc * 16;
      c.row = static_cast<long>(ntiles) * 128;
    }
  } else if (a.qzeros && tid >= 64 && tid < 64 + group_rows * 8) {
    const int j = (tid - 64) / 8, cc = (tid - 64) % 8;
    if (nt0 + cc / 2 < ntiles) {
      c.src = reinterpret_cast<const unsigned char*>(a.qzeros) + (static_cast<long>(j) * ntiles + nt0) * 32 + cc * 16;
      c.dst = z_off + j * 128 + cc * 16;
      c.row = static_cast<long>(ntiles) * 32;
    }
  }
  return c;
}

template <int MT, class T>
__global__ void __launch_bounds__(kTiledThreads, TiledShape<MT>::min_blocks) w4a16_tiled_kernel(W4A16TiledArgsT<T> a, int steps_per_split, int splits,
                                                                                             int* tickets, float* partial) {
  using Sh = TiledShape<MT>;
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
  constexpr bool raw = kTiledRaw && MT == 1;
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
    if (!active || kTiledNoCompute) continue;
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

// ---------------------------------------------------------------------------------------------
// Streaming GEMV for M ≤ 8 over the same layout. In the tiled layout lane (g, t)'s word w of a
// 16 × 64 tile holds columns 16 w + g and 16 w + 8 + g at K rows 2t, 2t + 1, 2t + 8, 2t + 9: with
// the weights as the *A* operand of m16n8k16 (rows = 16 output columns, K = 16) that word is
// exactly one A fragment — nibble pairs (0, 4), (2, 6), (1, 5), (3, 7) are a0a1, a2a3, a4a5, a6a7.
// x is the B operand (K × 8 tokens, read through L1), so one mma serves up to 8 tokens and 4 mma
// cover a tile (the m16-x mma pipeline above needs 8 per tile and wastes 15 of 16 rows at M = 1).
// The weights never touch shared memory: every lane streams its 16-byte words straight into
// registers, kTGemvBatch tiles (one 128-row batch, 8 loads) in flight per lane, the pattern of a
// plain read kernel. Each weight is decoded to fp16 as ((1024 + q) − (1024 + z))·s: shift, LOP3,
// HADD2 (exact), HMUL2 — the weight AutoAWQ's dequantize makes, rounded once. (The 64 + q magic
// for high nibbles saves the shifts but needs a second constant per column: registers, here.)
// A block of kTGemvWarps warps takes one 64-column strip and one K slice; its warps take the
// slice's batches in turn, add their results in shared memory in a fixed order, and the slices
// meet through store_or_split_k (deterministic).
// ---------------------------------------------------------------------------------------------
#ifndef AWQ_TGEMV_MAX_M
#define AWQ_TGEMV_MAX_M 16  // M up to this (0..16) runs the streaming GEMV; the mma pipeline above (bench comparisons)
#endif
#ifndef AWQ_TGEMV_RAW
#define AWQ_TGEMV_RAW 1  // 1: raw codes, zero point and scale per group in fp32 (exact weights); 0: fp16 decode per weight
#endif
#ifndef AWQ_TGEMV_SLICE
#define AWQ_TGEMV_SLICE 0  // tuning knob for benchmarks: > 0 forces this many 128-row batches per K slice
#endif
#ifndef AWQ_TGEMV_MIN_BLOCKS
#define AWQ_TGEMV_MIN_BLOCKS 4  // blocks per SM the registers must allow (≤ 128 registers a thread)
#endif
static_assert(AWQ_TGEMV_MAX_M >= 0 && AWQ_TGEMV_MAX_M <= 16, "AWQ_TGEMV_MAX_M: the streaming GEMV holds at most 16 tokens");
constexpr bool kTGemvRaw = AWQ_TGEMV_RAW != 0;
#ifndef AWQ_TGEMV_WARPS
#define AWQ_TGEMV_WARPS 4  // tuning knob for benchmarks: warps per block
#endif
#ifndef AWQ_TGEMV_BATCH
#define AWQ_TGEMV_BATCH 8  // tuning knob for benchmarks: tiles a lane loads at once (8 or 16)
#endif
constexpr int kTGemvWarps = AWQ_TGEMV_WARPS;
constexpr int kTGemvThreads = 32 * kTGemvWarps;
constexpr int kTGemvBatch = AWQ_TGEMV_BATCH;            // tiles a lane loads at once
constexpr int kTGemvRows = kTGemvBatch * kTiledK;       // rows of K per batch
static_assert(kTGemvRows % 128 == 0, "a batch holds whole groups");

/// G: group size; NT: blocks of 8 tokens (M ≤ 8 NT). NT = 1 runs raw codes (AWQ_TGEMV_RAW), NT = 2
/// decodes each weight once to fp16 for both token blocks (raw codes would double the group
/// accumulators: registers).
template <int G, int NT, class T>
__global__ void __launch_bounds__(kTGemvThreads, AWQ_TGEMV_MIN_BLOCKS)
    w4a16_tiled_gemv_kernel(W4A16TiledArgsT<T> a, int slice_batches, int splits, int* tickets, float* partial) {
  using A = Act<T>;
  static_assert(G == 32 || G == 64 || G == 128, "group 32, 64 or 128");
  static_assert(NT == 1 || NT == 2, "up to 16 tokens");
  constexpr int NG = kTGemvRows / G;  // groups per batch
  constexpr int TPG = G / kTiledK;    // tiles per group
  constexpr bool raw = kTGemvRaw && NT == 1;
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
  // the workspace. (Measured: holding the first weight batch in registers across the wait slowed
  // the loop below, 42.8 → 44.0 µs at M = 1 and 54 → 66 µs at M = 16 on 8192 × 28672; an L2
  // prefetch of it slowed calls without overlap, 7.9 → 8.8 µs at 4096², M = 1.)
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
  store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, split, splits, tickets, partial);
}

/// kernel<<<grid, block, smem, stream>>>(args…), with programmatic dependent launch when `overlap`
/// (for kernels that call grid_dependency_wait() before they touch global memory: the GEMV above).
template <class... Params, class... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream, bool overlap, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1] = {};
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = overlap ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), "W4A16 tiled kernel launch");
}

/// Resident blocks of the GEMV; one figure for every instantiation (the same launch bounds cap
/// their registers), so the plan — and the workspace it sizes — depends on (M, K, N) only.
template <class T>
int tgemv_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_tiled_gemv_kernel<128, 1, T>, kTGemvThreads, 0, cache, "w4a16_tiled_gemv_kernel attributes");
}

/// K slices of the streaming GEMV (bm = 8 marks the plan): a slice is a whole number of batches.
/// Split-K only fills one wave of resident blocks (measured on an H100 at 8192 × 28672, M = 1:
/// one slice 43.9 µs, two 46.6, eight 47.5 — bench/RESULTS.md): long-running warps, no second wave.
inline GemmPlan tiled_gemv_plan(int m, int k, int n, int slots) {
  GemmPlan p;
  p.bm = 8;
  p.tiles_n = (n + kTiledN - 1) / kTiledN;
  p.tiles_m = 1;
  const int kp = (k + kTiledPadK - 1) / kTiledPadK * kTiledPadK;
  p.steps = (kp / kTiledK + kTGemvBatch - 1) / kTGemvBatch;
  const int splits = static_cast<int>(std::max(1L, std::min<long>(slots / p.tiles_n, p.steps)));
  int slice = (p.steps + splits - 1) / splits;
  if (AWQ_TGEMV_SLICE > 0) slice = std::min(AWQ_TGEMV_SLICE, p.steps);
  p.steps_per_split = slice;
  p.splits = (p.steps + slice - 1) / slice;
  return p;
}

template <class T>
void launch_tiled_gemv(const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  const SplitKBuffers w = split_k_buffers(a.workspace, p);
  const dim3 grid(static_cast<unsigned>(p.tiles_n), 1u, static_cast<unsigned>(p.splits));
  auto run = [&](auto kernel) {
    launch_overlapped(kernel, grid, kTGemvThreads, 0, stream, a.overlap_previous, a, p.steps_per_split, p.splits, w.tickets, w.partial);
  };
  const bool two = a.m > 8;
  switch (a.group) {
    case 32: two ? run(w4a16_tiled_gemv_kernel<32, 2, T>) : run(w4a16_tiled_gemv_kernel<32, 1, T>); break;
    case 64: two ? run(w4a16_tiled_gemv_kernel<64, 2, T>) : run(w4a16_tiled_gemv_kernel<64, 1, T>); break;
    default: two ? run(w4a16_tiled_gemv_kernel<128, 2, T>) : run(w4a16_tiled_gemv_kernel<128, 1, T>); break;
  }
}

// ---------------------------------------------------------------------------------------------
// Hopper (sm_90a) kernel for M > 16: warpgroup MMA with the weights as the register operand.
// The same observation as the GEMV above: in the tiled layout lane (g, t)'s word w of a 16 × 64
// tile is one m16 × k16 A fragment (rows = output columns 16 w + g, 16 w + 8 + g). wgmma's
// m64nNk16 takes A from registers in exactly that fragment layout, one m16 block per warp of the
// warpgroup, so the block's 4 warps (one 64-column strip each, as in the mma pipeline) decode
// their words to x's type (fp16 or bf16) and issue 4 wgmma per K tile: wgmma j multiplies the rows {strip w,
// columns 16 j .. 16 j + 15 : w = 0..3} by x. The four-warpgroup form (WGS = 4, M > 32) gives each
// strip a warpgroup instead: its warp w decodes only word w, and one wgmma m64nNk16 per K tile covers
// the strip's 64 columns in order (see the kernel). x is the B operand (N = 32 to 128 tokens), read by the
// tensor cores straight from shared memory (K-major, 128-byte swizzle, written swizzled by
// cp.async): no ldmatrix, no x registers, and the MMA runs asynchronously while the warps decode
// the next K tile (two A buffers, two wgmma groups in flight). Decode: the decode path of the
// mma pipeline ((q − z)·s rounded once, AutoAWQ's weight; bf16: the scale rounded to bf16
// first). The mma pipeline's tiles and split-K plan over a one-dimensional grid (WgmmaGrid);
// its own epilogue: the accumulators (rows = columns of y, columns = tokens) pair up across lanes
// g, g ^ 1 with one shuffle to give neighbouring columns of y; under split-K each slice stores its
// accumulators as they lie (a compact fp32 tile per slice) and the last block reads the slices back
// into them before that same store (below).
// Compiled only for sm_90a (define AWQ_CUDA_SM90A=1 when the build has sm_90a code; CMake does);
// taken on devices of compute capability 9.0.
// ---------------------------------------------------------------------------------------------
#ifndef AWQ_CUDA_SM90A
#define AWQ_CUDA_SM90A 0  // 1: this build holds sm_90a device code; the Hopper kernel serves M > 16 on CC 9.0
#endif
#ifndef AWQ_TILED_WGMMA
#define AWQ_TILED_WGMMA 1  // tuning knob for benchmarks: 0 keeps the mma pipeline on Hopper too
#endif
#ifndef AWQ_TWG_STAGES
#define AWQ_TWG_STAGES 4  // tuning knob for benchmarks: shared-memory stages of the one-warpgroup form (2 are not refilled in flight)
#endif
#ifndef AWQ_TWG_MAX_NTOK
#define AWQ_TWG_MAX_NTOK 64  // tuning knob for benchmarks: tokens per one-warpgroup block above M = 32 (32 or 64)
#endif
#ifndef AWQ_TWG_MAX_SPLITS
#define AWQ_TWG_MAX_SPLITS 9  // above this many K slices (few output tiles) the mma pipeline serves instead (measured)
#endif
#ifndef AWQ_TWG_PRELOAD
#define AWQ_TWG_PRELOAD 1  // tuning knob for benchmarks: 0 reads a K tile's weight words after the previous wgmma wait
#endif
#ifndef AWQ_TWG_WIDE_STAGES
#define AWQ_TWG_WIDE_STAGES 7  // tuning knob for benchmarks: shared-memory stages of the four-warpgroup form (>= 2 P + 1)
#endif
#ifndef AWQ_TWG_WIDE_STEPS
#define AWQ_TWG_WIDE_STEPS 3  // tuning knob for benchmarks: K steps per barrier of the four-warpgroup form (P, 1..4)
#endif
#ifndef AWQ_TWG_KK_GROUP
#define AWQ_TWG_KK_GROUP 2  // K tiles per wgmma group of the four-warpgroup form (1, 2; 4 runs out of registers): 2 measured faster
#endif
#ifndef AWQ_TWG_NARROW_MAX_SPLITS
#define AWQ_TWG_NARROW_MAX_SPLITS 2  // M ≤ 64: the one-warpgroup kernel serves when its plan splits K at most this many ways (measured)
#endif
#ifndef AWQ_TWG_MIN_BLOCKS
#define AWQ_TWG_MIN_BLOCKS 2  // tuning knob for benchmarks: blocks per SM the registers must allow
#endif

#ifndef AWQ_TWG_WIDE_MIN_M
#define AWQ_TWG_WIDE_MIN_M 32  // above this M the four-warpgroup kernel (one strip per warpgroup, 64 or 128 tokens) serves (measured)
#endif

/// The Hopper kernel's one-dimensional grid. Without tail (tail_w = 0): block b is K slice
/// b % splits of tile b / splits (the slices of a tile adjacent); tile t is column block
/// t % tiles_n (4 strips), token block t / tiles_n. With a tail (four warpgroups, splits = 1):
/// blocks b < full = token blocks · c4 take 4 strips, strip 4 (b % c4) of token block b / c4; the
/// rest, b' = b − full, take tail_w strips from strip 4 c4 + tail_w (b' % tail_pieces) of token
/// block b' / tail_pieces (fewer where the strips end) — GemmPlan::tail_w.
struct WgmmaGrid {
  int tiles_n = 0, splits = 1, steps_per_split = 0;
  int full = 0, c4 = 0, tail_w = 0, tail_pieces = 0;
};
/// A block's tile (under split-K: its index), first strip nt0 and strips ns (of 64 columns; the
/// columns may end before them), token block tm and K slice.
struct WgmmaBlock {
  int tile, nt0, ns, tm, split;
};
/// The block b of grid gr (host and device: the plan tests check the cover).
__host__ __device__ inline WgmmaBlock wgmma_block_of(const WgmmaGrid& gr, int b) {
  if (gr.tail_w == 0) {
    const int tile = b / gr.splits;
    return {tile, tile % gr.tiles_n * kTiledWarps, kTiledWarps, tile / gr.tiles_n, b % gr.splits};
  }
  if (b < gr.full) return {b, b % gr.c4 * kTiledWarps, kTiledWarps, b / gr.c4, 0};
  const int t = b - gr.full;
  return {b, gr.c4 * kTiledWarps + t % gr.tail_pieces * gr.tail_w, gr.tail_w, t / gr.tail_pieces, 0};
}
/// blockIdx.x read so that the compiler cannot keep it (and what is derived from it) in a register
/// across the main loop: the epilogue derives its tile again instead of holding it live.
__device__ __forceinline__ WgmmaBlock wgmma_block(const WgmmaGrid& gr) {
  int b;
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(b));
  return wgmma_block_of(gr, b);
}

/// Shared-memory stages and steps per barrier of the one- and four-warpgroup forms (measured,
/// bench/RESULTS.md): four warpgroups take 7 stages and three steps per barrier.
template <int WGS>
struct WgmmaPipe {
  static constexpr int stages = WGS == 4 ? AWQ_TWG_WIDE_STAGES : AWQ_TWG_STAGES;
  static constexpr int steps_per_barrier = WGS == 4 ? AWQ_TWG_WIDE_STEPS : 1;
};

template <int NTOK, int WGS>
struct WgmmaShape {
  static_assert(NTOK == 32 || NTOK == 64 || NTOK == 128, "32, 64 or 128 tokens per block");
  static constexpr int stages = WgmmaPipe<WGS>::stages;
  static_assert(stages >= 3, "two stages stay out of the refill");
  static constexpr int x_bytes = NTOK * 128;  // NTOK rows of 64 halves, 128-byte swizzle
  static constexpr int b_off = x_bytes, b_bytes = kTiledWarps * kTiledBK * kTiledN / 2;
  static constexpr int s_off = b_off + b_bytes, s_bytes = 2 * kTiledWarps * kTiledN * 2;
  static constexpr int z_off = s_off + s_bytes, z_bytes = 2 * kTiledWarps * 8 * 4;
  static constexpr int stage_bytes = (z_off + z_bytes + 1023) / 1024 * 1024;  // swizzle atoms stay 1024-aligned
  static constexpr std::size_t smem_bytes = static_cast<std::size_t>(stages) * stage_bytes + 1024;  // + alignment slack
};

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
/// warpgroups AWQ_TWG_KK_GROUP = 2 of them, bench/RESULTS.md).
template <int NTOK, int WGS, class T>
__device__ __forceinline__ void wgmma_step(float (&acc)[kTiledWarps / WGS][NTOK / 2], TiledConsts<T>& cst, int& cur_group, const unsigned char* base, int k0, int gshift, bool zeros) {
  using Sh = WgmmaShape<NTOK, WGS>;
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
  constexpr bool preload = AWQ_TWG_PRELOAD && NTOK >= 64;
  uint4 bw_next = preload ? weight_words(0) : uint4{};
  constexpr int KG = WGS == 4 ? AWQ_TWG_KK_GROUP : 1;  // K tiles per wgmma group
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
    // under it (AWQ_TWG_PRELOAD; 64 tokens or more: at 32 the extra registers cost the third block per SM).
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
  store_or_split_k(for_each_out, a.y, a.bias, a.m, a.n, 0, 1, nullptr, nullptr);
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
template <int NTOK, int WGS, class T>
__global__ void __launch_bounds__(kTiledThreads* WGS, WGS == 1 ? AWQ_TWG_MIN_BLOCKS : 1)
    w4a16_tiled_wgmma_kernel(W4A16TiledArgsT<T> a, WgmmaGrid gr, int* tickets, float* partial) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(WGS == 1 || WGS == 4, "one or four warpgroups");
  constexpr int kThreads = kTiledThreads * WGS, J = kTiledWarps / WGS;  // J: wgmma (fragments) per K tile per warp
  using Sh = WgmmaShape<NTOK, WGS>;
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
  constexpr int P = WgmmaPipe<WGS>::steps_per_barrier;
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
          wgmma_step<NTOK, WGS, T>(acc, cst, cur_group, stage(ls % Sh::stages), (step0 + ls) * kTiledBK, gshift, a.qzeros != nullptr);
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
  __trap();  // built without sm_90a code: the host side only launches this with AWQ_CUDA_SM90A on CC 9.0
#endif
}

/// Blocks of the Hopper kernel resident at once on the device.
template <int NTOK, int WGS, class T>
int tiled_wgmma_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_tiled_wgmma_kernel<NTOK, WGS, T>, kTiledThreads * WGS, WgmmaShape<NTOK, WGS>::smem_bytes, cache,
                        "w4a16_tiled_wgmma_kernel attributes");
}

/// Whether the Hopper kernel serves this device: the build holds sm_90a code and the current
/// device is compute capability 9.0 (cached per device).
inline bool tiled_wgmma_available() {
  if (!AWQ_CUDA_SM90A) return false;
  static std::atomic<int> cache[64] = {};  // 0 unknown, 1 no, 2 yes
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 0 && dev < 64 && cache[dev].load(std::memory_order_acquire) != 0) return cache[dev].load(std::memory_order_acquire) == 2;
  int major = 0, minor = 0;
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
  const bool yes = major == 9 && minor == 0;
  if (dev >= 0 && dev < 64) cache[dev].store(yes ? 2 : 1, std::memory_order_release);
  return yes;
}

/// Grid of the tiled kernels with 256-column blocks (4 strips) of `bm` rows, steps of 64 of K:
/// split-K only fills one wave of `slots` resident blocks, with at least two steps (128 of K) per
/// slice; `force_splits` > 0 overrides the slice count (benchmark knobs).
inline GemmPlan tiled_grid_plan(int bm, int m, int k, int n, int slots, int force_splits = 0) {
  GemmPlan p;
  p.bm = bm;
  const int ntiles = (n + kTiledN - 1) / kTiledN;
  p.tiles_n = (ntiles + kTiledWarps - 1) / kTiledWarps;
  p.tiles_m = (m + p.bm - 1) / p.bm;
  p.steps = (k + kTiledPadK - 1) / kTiledPadK;
  const long tiles = static_cast<long>(p.tiles_n) * p.tiles_m;
  const long want = std::max(1L, slots / tiles);
  const int max_splits = std::max(1, p.steps / 2);
  int splits = static_cast<int>(std::max(1L, std::min<long>(want, max_splits)));
  if (force_splits > 0) splits = std::min(force_splits, p.steps);
  p.steps_per_split = (p.steps + splits - 1) / splits;
  p.splits = (p.steps + p.steps_per_split - 1) / p.steps_per_split;
  return p;
}

/// One launch of a split-K tiled kernel over plan p's grid.
template <class Kernel, class T>
void launch_tiled_grid(Kernel* kernel, std::size_t smem, const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  const SplitKBuffers w = split_k_buffers(a.workspace, p);
  const dim3 grid(static_cast<unsigned>(p.tiles_n), static_cast<unsigned>(p.tiles_m), static_cast<unsigned>(p.splits));
  kernel<<<grid, kTiledThreads, smem, stream>>>(a, p.steps_per_split, p.splits, w.tickets, w.partial);
}

#ifndef AWQ_TWG_MIX
#define AWQ_TWG_MIX 1  // tuning knob for benchmarks: 0 keeps every four-warpgroup block 4 strips wide (no wgmma_mix_plan)
#endif
#ifndef AWQ_TWG_MIX_OVH
#define AWQ_TWG_MIX_OVH 8  // wgmma_mix_plan's cost model: a block's fill and epilogue, in strip-steps
#endif
#ifndef AWQ_TWG_MIX_NARROW_PCT
#define AWQ_TWG_MIX_NARROW_PCT 110  // wgmma_mix_plan's cost model: a strip-step of a block of 2 or 3 strips, % of one of 4
#endif

/// Deals `count` blocks of cost `cost`, in order, each to the slot that is free first; `free`
/// holds the slots as (free time, slots) groups in time order, `groups` of them. Two batches of
/// equal-cost blocks leave at most two consecutive multiples of each cost past each start: ≤ 5.
inline void deal_blocks(long (&free)[8][2], int& groups, long count, long cost) {
  while (count > 0) {
    const long t = free[0][0], a = std::min(free[0][1], count);
    count -= a;
    if ((free[0][1] -= a) == 0) {
      for (int i = 1; i < groups; ++i) free[i - 1][0] = free[i][0], free[i - 1][1] = free[i][1];
      --groups;
    }
    int i = 0;  // (t + cost, a) into time order, merged with an equal time
    while (i < groups && free[i][0] < t + cost) ++i;
    if (i < groups && free[i][0] == t + cost) {
      free[i][1] += a;
      continue;
    }
    awq::detail::require(groups < 8, "awq::cuda::detail::deal_blocks: more than 8 slot groups");
    for (int j = groups; j > i; --j) free[j][0] = free[j - 1][0], free[j][1] = free[j - 1][1];
    free[i][0] = t + cost;
    free[i][1] = a;
    ++groups;
  }
}

/// An unsplit four-warpgroup plan whose blocks run in more than one wave, or leave SMs idle in
/// one (e.g. 224 blocks on 132 SMs at M = 256 on 8192 × 28672: two waves for 1.7 of work), may end
/// on narrower blocks: per token block c4 blocks of 4 strips, then the rest of its strips in blocks
/// of w = 3 or 2 (warpgroups past them idle), all 4-strip blocks first, narrow blocks for at most
/// two waves. Chosen by the finish time of the blocks dealt in order to `slots` resident slots
/// under a cost model (strips · steps · AWQ_TWG_MIX_NARROW_PCT % for narrow blocks, +
/// AWQ_TWG_MIX_OVH), taken when 3 % better.
inline void wgmma_mix_plan(GemmPlan& p, int n, int slots) {
  if (p.splits != 1 || p.warpgroups != 4 || slots < 1) return;
  const int strips_n = (n + kTiledN - 1) / kTiledN;
  auto cost = [&](int w) { return (w == 4 ? 100L : static_cast<long>(AWQ_TWG_MIX_NARROW_PCT)) * w * p.steps + 100L * AWQ_TWG_MIX_OVH; };
  auto finish = [&](long full, long tail, int w) {
    // The 4-strip blocks first: full / slots whole rounds, the remainder one round more.
    const long q = full / slots, r = full % slots, a = cost(4);
    long free[8][2] = {{q * a, slots - r}, {(q + 1) * a, r}};
    int groups = r == 0 ? 1 : 2;
    deal_blocks(free, groups, tail, cost(w));
    return free[groups - 1][0];
  };
  const long base = finish(static_cast<long>(p.tiles_m) * p.tiles_n, 0, 4);
  long best = base;
  int best_c4 = 0, best_w = 0, best_pieces = 0;
  // Narrow blocks only for the last two waves' worth (so the search stays short for big grids).
  for (int w = 3; w >= 2; --w)
    for (int c4 = 0; 4 * c4 < strips_n; ++c4) {
      const int pieces = (strips_n - 4 * c4 + w - 1) / w;
      if (static_cast<long>(p.tiles_m) * pieces > 2L * slots) continue;
      const long f = finish(static_cast<long>(p.tiles_m) * c4, static_cast<long>(p.tiles_m) * pieces, w);
      if (f < best) best = f, best_c4 = c4, best_w = w, best_pieces = pieces;
    }
  if (best_w == 0 || 100 * best > 97 * base) return;
  p.wide_c4 = best_c4;
  p.tail_w = best_w;
  p.tail_pieces = best_pieces;
}

/// Blocks of a Hopper-kernel plan.
inline long wgmma_plan_blocks(const GemmPlan& p) {
  return p.tail_w ? static_cast<long>(p.tiles_m) * (p.wide_c4 + p.tail_pieces) : static_cast<long>(p.tiles_n) * p.tiles_m * p.splits;
}

#ifndef AWQ_TWG_NARROW_PER_SM
#define AWQ_TWG_NARROW_PER_SM 2  // the one-warpgroup plan counts at most this many blocks per SM (0: as many as fit), measured:
                                 // a third 32-token block fits, but the deeper split-K it invites costs more (bench/RESULTS.md)
#endif
#ifndef AWQ_TWG_WIDE_NTOK
#define AWQ_TWG_WIDE_NTOK 128  // tuning knob for benchmarks: 64 keeps the four-warpgroup kernel at 64 tokens per block above M = 64
#endif
#ifndef AWQ_TWG_SHORT_SLICE
#define AWQ_TWG_SHORT_SLICE 12  // K slices of the 128-token plan shorter than this many steps: the 64-token plan serves (measured)
#endif
#ifndef AWQ_TWG_SMALL_M_WIDE
#define AWQ_TWG_SMALL_M_WIDE 1  // tuning knob for benchmarks: 0 leaves M ≤ 32 with few output tiles to the mma pipeline
#endif
#ifndef AWQ_TWG_FORCE_SPLITS
#define AWQ_TWG_FORCE_SPLITS 0  // tuning knob for benchmarks: > 0 forces this many K slices on the Hopper kernel
#endif

/// Plan of the Hopper kernel: 256 columns per block × 32 or 64 tokens (one warpgroup) or, above
/// M = AWQ_TWG_WIDE_MIN_M, 64 or 128 tokens (four warpgroups); `wgmma` marks it. Split-K as
/// tiled_grid_plan: only to fill a single partial wave. (Slicing more to balance several waves —
/// the last partial wave's tiles only, or every tile, e.g. 224 tiles on 132 SMs at M = 256,
/// 8192 × 28672 — was measured slower: 241.5 and 244.5 against 227.0 and 225.7 µs, bench/RESULTS.md.)
/// The partial wave is balanced by narrower blocks instead (wgmma_mix_plan; there 212 → 201 µs).
template <class T>
GemmPlan tiled_wgmma_plan(int m, int k, int n) {
  auto slots_of = [](int bm, int warpgroups) {
    return warpgroups == 4 ? (bm == 64 ? tiled_wgmma_slots<64, 4, T>() : tiled_wgmma_slots<128, 4, T>())
                           : (bm == 32 ? tiled_wgmma_slots<32, 1, T>() : tiled_wgmma_slots<64, 1, T>());
  };
  auto plan = [&](int bm, int warpgroups) {
    const int slots = slots_of(bm, warpgroups);
    GemmPlan p = tiled_grid_plan(bm, m, k, n, warpgroups == 1 && AWQ_TWG_NARROW_PER_SM > 0 ? std::min(slots, AWQ_TWG_NARROW_PER_SM * device_sms()) : slots,
                                 AWQ_TWG_FORCE_SPLITS);
    p.wgmma = true;
    p.warpgroups = warpgroups;
    return p;
  };
  const GemmPlan narrow = plan(m <= 32 || AWQ_TWG_MAX_NTOK == 32 ? 32 : 64, 1);
  // Up to M = 32 the one-warpgroup kernel, unless its plan would split K more than
  // AWQ_TWG_MAX_SPLITS ways (few output tiles; it would leave the Hopper kernel for the mma
  // pipeline): then four warpgroups over 64 tokens, which need half the slices (AWQ_TWG_SMALL_M_WIDE).
  if (m <= AWQ_TWG_WIDE_MIN_M && (narrow.splits <= AWQ_TWG_MAX_SPLITS || !AWQ_TWG_SMALL_M_WIDE)) return narrow;
  // Up to 64 tokens the one-warpgroup kernel (two blocks per SM) is the faster one when the output
  // tiles nearly fill a wave (8192 × 28672: 82.7 against 88.2 µs); with fewer tiles its deeper
  // split-K loses (4096 × 11008: 38.9 against 26.8 µs; bench/RESULTS.md).
  if (m > AWQ_TWG_WIDE_MIN_M && m <= 64 && narrow.splits <= AWQ_TWG_NARROW_MAX_SPLITS) return narrow;
  int wide_bm = m <= 64 || AWQ_TWG_WIDE_NTOK == 64 ? 64 : 128;
  GemmPlan wide = plan(wide_bm, 4);
  // Few output tiles cut into short K slices (each block refills its pipeline, the last one of a
  // tile sums all partial tiles): 64-token blocks halve the slices and the partial bytes. Measured
  // at M = 128: 4096² (8 slices of 8 steps) 25.0 → 20.7 µs; with slices of 16–22 steps the
  // 128-token plan stays faster or even (bench/RESULTS.md).
  if (wide_bm == 128 && wide.splits > 1 && wide.steps_per_split < AWQ_TWG_SHORT_SLICE) wide = plan(wide_bm = 64, 4);
  if (AWQ_TWG_MIX) wgmma_mix_plan(wide, n, slots_of(wide_bm, 4));
  return wide;
}

/// Workspace of a tiled plan: the Hopper kernel's compact partial tiles, else the grid kernels'.
inline std::size_t tiled_plan_workspace_bytes(const GemmPlan& p, int m, int n) {
  if (!p.wgmma) return gemm_workspace_bytes(p, m, n);
  if (p.splits == 1) return 0;
  const std::size_t tiles = static_cast<std::size_t>(p.tiles_n) * p.tiles_m;
  return split_k_ticket_bytes(tiles) + sizeof(float) * tiles * p.splits * p.bm * kTiledBN;
}

/// The kernel's view of plan p.
inline WgmmaGrid wgmma_grid(const GemmPlan& p) {
  WgmmaGrid gr;
  gr.tiles_n = p.tiles_n;
  gr.splits = p.splits;
  gr.steps_per_split = p.steps_per_split;
  gr.full = p.tiles_m * p.wide_c4;
  gr.c4 = p.wide_c4;
  gr.tail_w = p.tail_w;
  gr.tail_pieces = p.tail_pieces;
  return gr;
}

template <int NTOK, int WGS, class T>
void launch_tiled_wgmma(const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  auto* kernel = w4a16_tiled_wgmma_kernel<NTOK, WGS, T>;
  const WgmmaGrid gr = wgmma_grid(p);
  const SplitKBuffers w = split_k_buffers(a.workspace, p);  // tickets, then the compact partial tiles
  tiled_wgmma_slots<NTOK, WGS, T>();  // sets the kernel's shared-memory limit (once per device)
  const long blocks = wgmma_plan_blocks(p);
  kernel<<<static_cast<unsigned>(blocks), kTiledThreads * WGS, WgmmaShape<NTOK, WGS>::smem_bytes, stream>>>(a, gr, w.tickets, w.partial);
}

template <int MT, class T>
int tiled_slots() {
  static std::atomic<int> cache[64] = {};
  return resident_slots(w4a16_tiled_kernel<MT, T>, kTiledThreads, TiledShape<MT>::smem_bytes, cache, "w4a16_tiled_kernel attributes");
}

template <class T>
int tiled_slots_for(int mt) {
  return mt == 1 ? tiled_slots<1, T>() : mt == 2 ? tiled_slots<2, T>() : tiled_slots<4, T>();
}

#ifndef AWQ_TILED_MAX_MT
#define AWQ_TILED_MAX_MT 4  // tuning knob for benchmarks: the largest m16 tiles per block (1, 2 or 4)
#endif

/// m16 tiles per block (1, 2 or 4). Taller blocks decode each weight for more rows, but a
/// product with few output tiles then leaves SMs idle or needs deep split-K: take the tallest
/// block whose tiles fill at least half a wave; failing that one m16 tile up to M = 64 (decoding
/// again per 16 rows is cheaper than idle SMs there) and two above (bench/RESULTS.md).
template <class T>
int tiled_mt(int m, int n) {
  if (m <= 16 || AWQ_TILED_MAX_MT == 1) return 1;
#ifdef AWQ_TILED_FORCE_MT
  return AWQ_TILED_FORCE_MT;  // tuning knob for benchmarks: this block height above M = 16
#endif
  const int tiles_n = (n + kTiledBN - 1) / kTiledBN;
  for (int mt = AWQ_TILED_MAX_MT; mt >= 2; mt /= 2) {
    if (mt > 2 && m <= 32) continue;
    const long tiles = static_cast<long>(tiles_n) * ((m + 16 * mt - 1) / (16 * mt));
    if (2 * tiles >= tiled_slots_for<T>(mt)) return mt;
  }
  return m <= 64 ? 1 : 2;
}

/// Tiles and K slices of one product: split-K only fills one wave of resident blocks, with at
/// least two steps (128 of K) per slice.
template <class T>
GemmPlan tiled_plan(int m, int k, int n) {
  if (m <= AWQ_TGEMV_MAX_M) return tiled_gemv_plan(m, k, n, tgemv_slots<T>());
  if (AWQ_TILED_WGMMA && tiled_wgmma_available()) {
    const GemmPlan p = tiled_wgmma_plan<T>(m, k, n);
    if (p.splits <= AWQ_TWG_MAX_SPLITS) return p;  // deeper split-K: the mma pipeline's smaller tiles
  }
  const int mt = tiled_mt<T>(m, n);
  return tiled_grid_plan(16 * mt, m, k, n, tiled_slots_for<T>(mt));
}

template <int MT, class T>
void launch_tiled(const W4A16TiledArgsT<T>& a, const GemmPlan& p, cudaStream_t stream) {
  launch_tiled_grid(w4a16_tiled_kernel<MT, T>, TiledShape<MT>::smem_bytes, a, p, stream);
}

}  // namespace detail

/// \brief Workspace bytes the tiled product needs for these sizes on the current device, with
///        fp16 or bf16 activations (the larger of the two); 0 when none. Allocate once, zero-fill
///        once (cudaMemset), reuse (not by concurrent calls).
inline std::size_t w4a16_tiled_workspace_bytes(int m, int k, int n) {
  return std::max(detail::tiled_plan_workspace_bytes(detail::tiled_plan<__half>(m, k, n), m, n),
                  detail::tiled_plan_workspace_bytes(detail::tiled_plan<__nv_bfloat16>(m, k, n), m, n));
}

/// \brief y = x · dequant(W)ᵀ (+ bias) over tiled weights, any M ≥ 1, on `stream` (sm_80 or
///        later), x, bias and y in fp16 (W4A16TiledArgs) or bf16 (W4A16TiledArgsBf16).
///        awq::Error for arguments it cannot run, naming them.
template <class T>
void w4a16_matmul(const W4A16TiledArgsT<T>& a, cudaStream_t stream = nullptr) {
  a.can_implement();
  const auto p = detail::tiled_plan<T>(a.m, a.k, a.n);
  const std::size_t need = detail::tiled_plan_workspace_bytes(p, a.m, a.n);
  awq::detail::require(need == 0 || (a.workspace && a.workspace_bytes >= need), "awq::cuda::w4a16_matmul (tiled): workspace_bytes ",
                       a.workspace_bytes, " is less than the ", need, " that M ", a.m, ", K ", a.k, ", N ", a.n,
                       " need (w4a16_tiled_workspace_bytes)");
  if (p.wgmma) {
    if (p.warpgroups == 4)
      p.bm == 64 ? detail::launch_tiled_wgmma<64, 4>(a, p, stream) : detail::launch_tiled_wgmma<128, 4>(a, p, stream);
    else
      p.bm == 32 ? detail::launch_tiled_wgmma<32, 1>(a, p, stream) : detail::launch_tiled_wgmma<64, 1>(a, p, stream);
    check(cudaGetLastError(), "w4a16_tiled_wgmma_kernel launch");
    return;
  }
  switch (p.bm / 16) {
    case 0: detail::launch_tiled_gemv(a, p, stream); break;
    case 1: detail::launch_tiled<1>(a, p, stream); break;
    case 2: detail::launch_tiled<2>(a, p, stream); break;
    default: detail::launch_tiled<4>(a, p, stream); break;
  }
  check(cudaGetLastError(), "w4a16_tiled_kernel launch");
}

/// \brief Tiled W4A16 weights on the device (owning), made from host TiledW4A16.
struct TiledW4A16Device {
  DeviceBuffer<std::uint32_t> qweight;  ///< tiled codes (TiledW4A16::qweight)
  DeviceBuffer<std::uint32_t> qzeros;   ///< tiled zeros; empty: symmetric
  DeviceBuffer<__half> scales;          ///< tiled scales (fp16)
  int k = 0;                            ///< input features
  int n = 0;                            ///< output features
  int group = 128;                      ///< group size

  TiledW4A16Device() = default;
  /// Uploads the host layout `t`.
  explicit TiledW4A16Device(const TiledW4A16& t) : qweight(t.qweight), qzeros(t.qzeros), scales(t.scales.size()), k(t.k), n(t.n), group(t.group) {
    scales.upload(reinterpret_cast<const __half*>(t.scales.data()), t.scales.size());
  }
  /// Arguments for y [m, n] = x [m, k] · dequant(W)ᵀ with these weights; T (fp16 or bf16) from x.
  template <class T>
  W4A16TiledArgsT<T> args(const T* x, T* y, int m, void* workspace, std::size_t workspace_bytes,
                          const typename detail::Act<T>::element* bias = nullptr) const {
    W4A16TiledArgsT<T> a;
    a.x = x;
    a.qweight = qweight.data();
    a.qzeros = qzeros.size() ? qzeros.data() : nullptr;
    a.scales = scales.data();
    a.bias = bias;
    a.y = y;
    a.workspace = workspace;
    a.workspace_bytes = workspace_bytes;
    a.m = m;
    a.k = k;
    a.n = n;
    a.group = group;
    return a;
  }
};

}  // namespace cuda
}  // namespace awq
