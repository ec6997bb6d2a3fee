/// \file
/// \brief Launch plans of the tiled W4A16 kernels: which kernel serves (M, K, N), its tiles, its
///        K slices and the workspace they need — plain host functions of the sizes, the device's
///        resident slots (TiledSlots) and the tuning (TiledTuning). Host-only; unit-tested
///        without a GPU (tests/test_tiled_plan.cpp).
#pragma once

#include <algorithm>
#include <cstddef>

#include "awq/error.hpp"
#include "awq/kernels/cuda/gemm_plan.hpp"
#include "awq/kernels/cuda/tiled/tuning.hpp"
#include "awq/layout/tiled.hpp"
#include "awq/macros.hpp"

namespace awq {
namespace cuda {
namespace detail {

constexpr int kTiledThreads = 128;  // 4 warps, one 64-column strip each
constexpr int kTiledWarps = 4;
constexpr int kTiledBN = kTiledWarps * kTiledN;  // 256 columns per block
constexpr int kTiledBK = 64;                     // K per pipeline step
static_assert(kTiledBK == kTiledPadK, "a step covers one padding unit of K");

/// Blocks of each tiled kernel form resident at once on the device, and whether the Hopper kernel
/// runs there: what the plans need to know of the device (w4a16_tiled.cuh measures it).
struct TiledSlots {
  int sms = 0;               ///< multiprocessors
  int gemv = 0;              ///< the streaming GEMV
  int mma[3] = {};           ///< the mma pipeline with 1, 2 and 4 m16 tiles per block
  bool wgmma = false;        ///< the Hopper kernel is in this binary and runs on this device
  bool clusters = false;     ///< thread-block clusters run (the same image and device; asked only for TiledTuning::gemv_cluster)
  int wgmma_narrow[2] = {};  ///< the Hopper kernel, one warpgroup: 32 and 64 tokens
  int wgmma_wide[2] = {};    ///< the Hopper kernel, four warpgroups: 64 and 128 tokens

  int mma_for(int mt) const { return mt == 1 ? mma[0] : mt == 2 ? mma[1] : mma[2]; }
  int wgmma_for(int bm, int warpgroups) const {
    return warpgroups == 4 ? (bm == 64 ? wgmma_wide[0] : wgmma_wide[1]) : (bm == 32 ? wgmma_narrow[0] : wgmma_narrow[1]);
  }
};

/// K slices of the streaming GEMV (bm = 8 marks the plan): a slice is a whole number of batches.
/// Split-K only fills one wave of resident blocks (measured on an H100 at 8192 × 28672, M = 1:
/// one slice 43.9 µs, two 46.6, eight 47.5 — bench/RESULTS.md): long-running warps, no second wave.
template <class Tn>
GemmPlan tiled_gemv_plan([[maybe_unused]] int m, int k, int n, int slots) {
  GemmPlan p;
  p.bm = 8;
  p.tiles_n = (n + kTiledN - 1) / kTiledN;
  p.tiles_m = 1;
  const int kp = (k + kTiledPadK - 1) / kTiledPadK * kTiledPadK;
  p.steps = (kp / kTiledK + Tn::gemv_batch - 1) / Tn::gemv_batch;
  const int splits = static_cast<int>(std::max(1L, std::min<long>(slots / p.tiles_n, p.steps)));
  int slice = (p.steps + splits - 1) / splits;
  if (Tn::gemv_force_slice > 0) slice = std::min(Tn::gemv_force_slice, p.steps);
  p.steps_per_split = slice;
  p.splits = (p.steps + slice - 1) / slice;
  return p;
}

/// Batches at the head of each K slice of the streaming GEMV's plan `p` that a block asks L2 for
/// before it waits on the kernel before it (overlap_previous): all of them while the grid's total
/// stays within Tn::gemv_prefetch_bytes (ahead of a whole product larger than L2, the first lines
/// fetched are evicted before they are read, and the call reads them twice).
template <class Tn>
int tiled_gemv_prefetch(const GemmPlan& p) {
  const long blocks = static_cast<long>(p.tiles_n) * p.splits;
  const long batch_bytes = static_cast<long>(Tn::gemv_batch) * (kTiledK * kTiledN / 2);  // 4-bit codes
  return static_cast<int>(std::min<long>(p.steps_per_split, Tn::gemv_prefetch_bytes / (blocks * batch_bytes)));
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
/// under a cost model (strips · steps · Tn::wgmma_mix_narrow_pct % for narrow blocks, +
/// Tn::wgmma_mix_overhead), taken when 3 % better.
template <class Tn>
void wgmma_mix_plan(GemmPlan& p, int n, int slots) {
  if (p.splits != 1 || p.warpgroups != 4 || slots < 1) return;
  const int strips_n = (n + kTiledN - 1) / kTiledN;
  auto cost = [&](int w) { return (w == 4 ? 100L : static_cast<long>(Tn::wgmma_mix_narrow_pct)) * w * p.steps + 100L * Tn::wgmma_mix_overhead; };
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

/// Shared-memory stages and steps per barrier of the one- and four-warpgroup forms (TiledTuning).
template <int WGS, class Tn>
struct WgmmaPipe {
  static constexpr int stages = WGS == 4 ? Tn::wgmma_wide_stages : Tn::wgmma_stages;
  static constexpr int steps_per_barrier = WGS == 4 ? Tn::wgmma_wide_steps : 1;
};

/// A stage of the Hopper kernel's shared memory (x, the 4 strips' codes, scales, zeros) and the
/// block's total.
template <int NTOK, int WGS, class Tn>
struct WgmmaShape {
  static_assert(NTOK == 32 || NTOK == 64 || NTOK == 128, "32, 64 or 128 tokens per block");
  static constexpr int stages = WgmmaPipe<WGS, Tn>::stages;
  static_assert(stages >= 3, "two stages stay out of the refill");
  static constexpr int x_bytes = NTOK * 128;  // NTOK rows of 64 halves, 128-byte swizzle
  static constexpr int b_off = x_bytes, b_bytes = kTiledWarps * kTiledBK * kTiledN / 2;
  static constexpr int s_off = b_off + b_bytes, s_bytes = 2 * kTiledWarps * kTiledN * 2;
  static constexpr int z_off = s_off + s_bytes, z_bytes = 2 * kTiledWarps * 8 * 4;
  static constexpr int stage_bytes = (z_off + z_bytes + 1023) / 1024 * 1024;  // swizzle atoms stay 1024-aligned
  static constexpr std::size_t smem_bytes = static_cast<std::size_t>(stages) * stage_bytes + 1024;  // + alignment slack
};

/// Dynamic shared memory of the Hopper kernel that serves plan p (over the 48 KiB default: its
/// launch raises the kernel's limit, allow_dynamic_smem).
template <class Tn>
std::size_t wgmma_plan_smem_bytes(const GemmPlan& p) {
  if (p.warpgroups == 4) return p.bm == 64 ? WgmmaShape<64, 4, Tn>::smem_bytes : WgmmaShape<128, 4, Tn>::smem_bytes;
  return p.bm == 32 ? WgmmaShape<32, 1, Tn>::smem_bytes : WgmmaShape<64, 1, Tn>::smem_bytes;
}

/// Blocks of a Hopper-kernel plan.
inline long wgmma_plan_blocks(const GemmPlan& p) {
  return p.tail_w ? static_cast<long>(p.tiles_m) * (p.wide_c4 + p.tail_pieces) : static_cast<long>(p.tiles_n) * p.tiles_m * p.splits;
}

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
AWQ_HOST_DEVICE WgmmaBlock wgmma_block_of(const WgmmaGrid& gr, int b) {
  if (gr.tail_w == 0) {
    const int tile = b / gr.splits;
    return {tile, tile % gr.tiles_n * kTiledWarps, kTiledWarps, tile / gr.tiles_n, b % gr.splits};
  }
  if (b < gr.full) return {b, b % gr.c4 * kTiledWarps, kTiledWarps, b / gr.c4, 0};
  const int t = b - gr.full;
  return {b, gr.c4 * kTiledWarps + t % gr.tail_pieces * gr.tail_w, gr.tail_w, t / gr.tail_pieces, 0};
}

/// Plan of the Hopper kernel: 256 columns per block × 32 or 64 tokens (one warpgroup) or, above
/// M = Tn::wgmma_wide_min_m, 64 or 128 tokens (four warpgroups); `wgmma` marks it. Split-K as
/// tiled_grid_plan: only to fill a single partial wave. (Slicing more to balance several waves —
/// the last partial wave's tiles only, or every tile, e.g. 224 tiles on 132 SMs at M = 256,
/// 8192 × 28672 — was measured slower: 241.5 and 244.5 against 227.0 and 225.7 µs, bench/RESULTS.md.)
/// The partial wave is balanced by narrower blocks instead (wgmma_mix_plan; there 212 → 201 µs).
template <class Tn>
GemmPlan tiled_wgmma_plan(int m, int k, int n, const TiledSlots& s) {
  auto slots_of = [&](int bm, int warpgroups) { return s.wgmma_for(bm, warpgroups); };
  auto plan = [&](int bm, int warpgroups) {
    const int slots = slots_of(bm, warpgroups);
    GemmPlan p = tiled_grid_plan(bm, m, k, n, warpgroups == 1 && Tn::wgmma_narrow_per_sm > 0 ? std::min(slots, Tn::wgmma_narrow_per_sm * s.sms) : slots,
                                 Tn::wgmma_force_splits);
    p.wgmma = true;
    p.warpgroups = warpgroups;
    return p;
  };
  const GemmPlan narrow = plan(m <= 32 || Tn::wgmma_max_ntok == 32 ? 32 : 64, 1);
  // Up to M = 32 the one-warpgroup kernel, unless its plan would split K more than
  // Tn::wgmma_max_splits ways (few output tiles; it would leave the Hopper kernel for the mma
  // pipeline): then four warpgroups over 64 tokens, which need half the slices (Tn::wgmma_small_m_wide).
  if (m <= Tn::wgmma_wide_min_m && (narrow.splits <= Tn::wgmma_max_splits || !Tn::wgmma_small_m_wide)) return narrow;
  // Up to 64 tokens the one-warpgroup kernel (two blocks per SM) is the faster one when the output
  // tiles nearly fill a wave (8192 × 28672: 82.7 against 88.2 µs); with fewer tiles its deeper
  // split-K loses (4096 × 11008: 38.9 against 26.8 µs; bench/RESULTS.md).
  if (m > Tn::wgmma_wide_min_m && m <= 64 && narrow.splits <= Tn::wgmma_narrow_max_splits) return narrow;
  int wide_bm = m <= 64 || Tn::wgmma_wide_ntok == 64 ? 64 : 128;
  GemmPlan wide = plan(wide_bm, 4);
  // Few output tiles cut into short K slices (each block refills its pipeline, the last one of a
  // tile sums all partial tiles): 64-token blocks halve the slices and the partial bytes. Measured
  // at M = 128: 4096² (8 slices of 8 steps) 25.0 → 20.7 µs; with slices of 16–22 steps the
  // 128-token plan stays faster or even (bench/RESULTS.md).
  if (wide_bm == 128 && wide.splits > 1 && wide.steps_per_split < Tn::wgmma_short_slice) wide = plan(wide_bm = 64, 4);
  if (Tn::wgmma_mix) wgmma_mix_plan<Tn>(wide, n, slots_of(wide_bm, 4));
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

/// m16 tiles per block (1, 2 or 4). Taller blocks decode each weight for more rows, but a
/// product with few output tiles then leaves SMs idle or needs deep split-K: take the tallest
/// block whose tiles fill at least half a wave; failing that one m16 tile up to M = 64 (decoding
/// again per 16 rows is cheaper than idle SMs there) and two above (bench/RESULTS.md).
template <class Tn>
int tiled_mt(int m, int n, const TiledSlots& s) {
  if (m <= 16 || Tn::mma_max_tiles == 1) return 1;
  if (Tn::mma_force_tiles > 0) return Tn::mma_force_tiles;
  const int tiles_n = (n + kTiledBN - 1) / kTiledBN;
  for (int mt = Tn::mma_max_tiles; mt >= 2; mt /= 2) {
    if (mt > 2 && m <= 32) continue;
    const long tiles = static_cast<long>(tiles_n) * ((m + 16 * mt - 1) / (16 * mt));
    if (2 * tiles >= s.mma_for(mt)) return mt;
  }
  return m <= 64 ? 1 : 2;
}

/// Tiles and K slices of one product: split-K only fills one wave of resident blocks, with at
/// least two steps (128 of K) per slice.
template <class Tn>
GemmPlan tiled_plan(int m, int k, int n, const TiledSlots& s) {
  static_assert(tiled_tuning_valid<Tn>());
  if (m <= Tn::gemv_max_m) {
    GemmPlan p = tiled_gemv_plan<Tn>(m, k, n, s.gemv);
    p.cluster = Tn::gemv_cluster && s.clusters && p.splits >= 2 && p.splits <= kMaxClusterSlices;
    return p;
  }
  if (Tn::wgmma && s.wgmma) {
    const GemmPlan p = tiled_wgmma_plan<Tn>(m, k, n, s);
    if (p.splits <= Tn::wgmma_max_splits) return p;  // deeper split-K: the mma pipeline's smaller tiles
  }
  const int mt = tiled_mt<Tn>(m, n, s);
  return tiled_grid_plan(16 * mt, m, k, n, s.mma_for(mt));
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
