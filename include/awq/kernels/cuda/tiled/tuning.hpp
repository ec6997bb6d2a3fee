/// \file
/// \brief The tiled W4A16 kernels' tuning as a type: block shapes, pipeline depths and the
///        planning thresholds, with the defaults measured on an H100/H200 (bench/RESULTS.md).
///        Host-only; a variant derives from TiledTuning and redefines what it changes:
/// \code
///   struct DeepPipe : awq::cuda::TiledTuning { static constexpr int wgmma_wide_stages = 9; };
///   awq::cuda::w4a16_matmul(args, stream, DeepPipe{});
/// \endcode
/// Every kernel is a template of its tuning, so translation units that use different tunings
/// instantiate different kernels (no one-definition-rule conflict).
#pragma once

namespace awq {
namespace cuda {

/// \brief Measured defaults of the tiled W4A16 kernels (awq/kernels/cuda/w4a16_tiled.cuh).
struct TiledTuning {
  // The streaming GEMV (M <= gemv_max_m).
  static constexpr int gemv_max_m = 16;        ///< M up to this (0..16) runs the GEMV
  static constexpr bool gemv_raw = true;       ///< raw codes, zero point and scale per group in fp32 (exact weights); false: fp16 decode
  static constexpr int gemv_warps = 4;         ///< warps per block
  static constexpr int gemv_batch = 8;         ///< 16 × 64 tiles a lane loads at once (8 or 16)
  static constexpr int gemv_min_blocks = 4;    ///< blocks per SM the registers must allow (<= 128 registers a thread)
  static constexpr int gemv_force_slice = 0;   ///< > 0: batches per K slice, overriding the plan
  /// With overlap_previous, the grid's blocks ask L2 for up to this many bytes of their weights
  /// before they wait on the kernel before them (sm_90; 0: none): a decode step's weight reads then
  /// run under its small kernels. Bounded so that what is fetched ahead is still in L2 when read.
  static constexpr long gemv_prefetch_bytes = 16L << 20;
  /// true: where the Hopper kernel runs (sm_90a on compute capability 9.0), a strip's 2 to 8 K
  /// slices form a thread-block cluster and add their sums in the first slice's block through
  /// distributed shared memory, in slice order (the workspace path's bits), with no workspace round
  /// trip, fence or ticket. Off until measured (bench/RESULTS.md).
  static constexpr bool gemv_cluster = false;

  // The mma pipeline (M > gemv_max_m without the Hopper kernel): 16·MT rows per block.
  static constexpr bool mma_raw = true;             ///< one m16 tile: raw codes (fp32 zero point and scale per group); false: fp16 decode
  static constexpr int mma_stages_one_tile = 3;     ///< cp.async stages, one m16 tile per block
  static constexpr int mma_stages_tall = 4;         ///< cp.async stages, 2 or 4 m16 tiles per block
  static constexpr int mma_min_blocks_one_tile = 4; ///< blocks per SM the registers must allow, one m16 tile (5 spill)
  static constexpr int mma_max_tiles = 4;           ///< the tallest block in m16 tiles (1, 2 or 4)
  static constexpr int mma_force_tiles = 0;         ///< > 0: this block height (1, 2 or 4) above M = 16

  // The Hopper kernel (sm_90a): one warpgroup (32 or 64 tokens) or four (64 or 128 tokens).
  static constexpr bool wgmma = true;                ///< false keeps the mma pipeline on Hopper too
  static constexpr int wgmma_stages = 4;             ///< shared-memory stages, one warpgroup (2 are not refilled in flight)
  static constexpr int wgmma_wide_stages = 7;        ///< shared-memory stages, four warpgroups (>= 2 P + 1)
  static constexpr int wgmma_wide_steps = 3;         ///< K steps per barrier, four warpgroups (P: 1..4)
  static constexpr int wgmma_kk_group = 2;           ///< K tiles per wgmma group, four warpgroups (1 or 2; 4 runs out of registers)
  static constexpr bool wgmma_preload = true;        ///< read the next K tile's words before the wgmma wait (64 tokens or more)
  static constexpr int wgmma_min_blocks = 2;         ///< blocks per SM the registers must allow, one warpgroup
  static constexpr int wgmma_max_ntok = 64;          ///< tokens per one-warpgroup block above M = 32 (32 or 64)
  static constexpr int wgmma_wide_ntok = 128;        ///< tokens per four-warpgroup block above M = 64 (64 or 128)
  static constexpr int wgmma_wide_min_m = 32;        ///< above this M the four-warpgroup form serves
  static constexpr int wgmma_max_splits = 9;         ///< deeper split-K: the mma pipeline serves instead
  static constexpr int wgmma_narrow_max_splits = 2;  ///< M <= 64: one warpgroup serves when its plan splits K at most this many ways
  static constexpr int wgmma_narrow_per_sm = 2;      ///< one-warpgroup plans count at most this many blocks per SM (0: as many as fit)
  static constexpr int wgmma_short_slice = 12;       ///< 128-token K slices shorter than this many steps: 64-token blocks serve
  static constexpr bool wgmma_small_m_wide = true;   ///< M <= 32 with few output tiles: four warpgroups (false: the mma pipeline)
  static constexpr int wgmma_force_splits = 0;       ///< > 0: this many K slices, overriding the plan
  static constexpr bool wgmma_mix = true;            ///< end an unsplit four-warpgroup grid on narrower blocks (wgmma_mix_plan)
  static constexpr int wgmma_mix_overhead = 8;       ///< wgmma_mix_plan's cost model: a block's fill and epilogue, in strip-steps
  static constexpr int wgmma_mix_narrow_pct = 110;   ///< wgmma_mix_plan's cost model: a strip-step of a 2- or 3-strip block, % of one of 4
};

namespace detail {
/// The checks every tuning must pass (instantiated by the kernels and the plans).
template <class Tn>
constexpr bool tiled_tuning_valid() {
  static_assert(Tn::gemv_max_m >= 0 && Tn::gemv_max_m <= 16, "TiledTuning::gemv_max_m: the streaming GEMV holds at most 16 tokens");
  static_assert(Tn::gemv_batch * 16 % 128 == 0, "TiledTuning::gemv_batch: a batch must hold whole groups (8 or 16 tiles)");
  static_assert(Tn::gemv_warps >= 1 && Tn::gemv_warps <= 8, "TiledTuning::gemv_warps: 1 to 8 warps");
  static_assert(Tn::gemv_prefetch_bytes >= 0, "TiledTuning::gemv_prefetch_bytes: not negative");
  static_assert(Tn::mma_max_tiles == 1 || Tn::mma_max_tiles == 2 || Tn::mma_max_tiles == 4, "TiledTuning::mma_max_tiles: 1, 2 or 4");
  static_assert(Tn::mma_force_tiles == 0 || Tn::mma_force_tiles == 1 || Tn::mma_force_tiles == 2 || Tn::mma_force_tiles == 4,
                "TiledTuning::mma_force_tiles: 0 (plan), 1, 2 or 4");
  static_assert(Tn::mma_stages_one_tile >= 2 && Tn::mma_stages_tall >= 2, "TiledTuning: the mma pipeline needs 2 stages or more");
  static_assert(Tn::wgmma_stages >= 3, "TiledTuning::wgmma_stages: two stages stay out of the refill");
  static_assert(Tn::wgmma_wide_steps >= 1 && Tn::wgmma_wide_steps <= 4, "TiledTuning::wgmma_wide_steps: one to four steps per barrier");
  static_assert(Tn::wgmma_wide_stages >= 2 * Tn::wgmma_wide_steps + 1, "TiledTuning::wgmma_wide_stages: P steps per barrier need 2 P + 1 stages or more");
  static_assert(Tn::wgmma_kk_group == 1 || Tn::wgmma_kk_group == 2 || Tn::wgmma_kk_group == 4, "TiledTuning::wgmma_kk_group: 1, 2 or 4");
  static_assert(Tn::wgmma_max_ntok == 32 || Tn::wgmma_max_ntok == 64, "TiledTuning::wgmma_max_ntok: 32 or 64");
  static_assert(Tn::wgmma_wide_ntok == 64 || Tn::wgmma_wide_ntok == 128, "TiledTuning::wgmma_wide_ntok: 64 or 128");
  return true;
}
}  // namespace detail

}  // namespace cuda
}  // namespace awq
