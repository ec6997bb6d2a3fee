// The tiled W4A16 kernels' launch plans (awq/kernels/cuda/tiled/plan.hpp): host functions of the
// sizes, the device's resident slots and the tuning, tested here without a GPU or nvcc.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <random>
#include <vector>

#include "awq/kernels/cuda/tiled/plan.hpp"
#include "plan_checks.hpp"

namespace {

using awq::cuda::TiledTuning;
using namespace awq::cuda::detail;
using awq_test::check_slices;

// An H100-like device: 132 SMs, the slot counts the kernels' launch bounds allow there.
TiledSlots hopper(bool wgmma) {
  TiledSlots s;
  s.sms = 132;
  s.gemv = 4 * 132;
  s.mma[0] = 4 * 132;
  s.mma[1] = 3 * 132;
  s.mma[2] = 2 * 132;
  s.wgmma = wgmma;
  s.wgmma_narrow[0] = 3 * 132;
  s.wgmma_narrow[1] = 2 * 132;
  s.wgmma_wide[0] = 132;
  s.wgmma_wide[1] = 132;
  return s;
}

struct NoGemv : TiledTuning {
  static constexpr int gemv_max_m = 0;
};
struct NoWgmma : TiledTuning {
  static constexpr bool wgmma = false;
};
struct TwoSlices : TiledTuning {
  static constexpr int wgmma_force_splits = 2;
  static constexpr int mma_force_tiles = 2;
};
struct Cluster : TiledTuning {
  static constexpr bool gemv_cluster = true;
};

}  // namespace

TEST_CASE("tiled plans cover every output tile and K step once, no empty slice, one wave of split-K") {
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> mdist(1, 600), kdist(1, 400), ndist(1, 4000), sdist(1, 1200);
  int plans = 0;
  for (int rep = 0; rep < 400; ++rep) {
    const int m = rep % 5 == 0 ? 1 + rep % 17 : mdist(rng), k = 32 * kdist(rng), n = 8 * ndist(rng), slots = sdist(rng);
    CAPTURE(m);
    CAPTURE(k);
    CAPTURE(n);
    CAPTURE(slots);
    for (int bm : {16, 32, 64, 128}) {  // the mma pipeline (16 · MT rows) and the Hopper kernel (32 / 64 / 128 tokens)
      for (int force : {0, 3}) {
        const GemmPlan p = tiled_grid_plan(bm, m, k, n, slots, force);
        CHECK(p.bm == bm);
        CHECK(p.tiles_n * kTiledBN >= n);
        CHECK((p.tiles_n - 1) * kTiledBN < n);
        CHECK(p.tiles_m * bm >= m);
        CHECK((p.tiles_m - 1) * bm < m);
        CHECK(p.steps * kTiledBK >= k);
        CHECK((p.steps - 1) * kTiledBK < k);
        check_slices(p);
        if (force == 0) {
          const long tiles = static_cast<long>(p.tiles_n) * p.tiles_m;
          CHECK(tiles * p.splits <= std::max<long>(tiles, slots));         // split-K fills one wave, no more
          CHECK((p.splits == 1 || p.steps_per_split >= 2));                // at least 128 of K per slice
          CHECK((gemm_workspace_bytes(p, m, n) == 0) == (p.splits == 1));  // a workspace only for split-K
          GemmPlan w = p;                                                  // the Hopper kernel's compact partial tiles
          w.wgmma = true;
          CHECK(tiled_plan_workspace_bytes(w, m, n) == (p.splits == 1 ? 0 : split_k_ticket_bytes(static_cast<std::size_t>(p.tiles_n) * p.tiles_m) +
                                                                                 sizeof(float) * p.tiles_n * p.tiles_m * p.splits * bm * kTiledBN));
        } else {
          const int f = std::min(3, p.steps);  // 3 slices asked: ceil(steps / 3) steps each, no empty one
          CHECK(p.steps_per_split == (p.steps + f - 1) / f);
          CHECK(p.splits <= 3);
        }
        ++plans;
      }
    }
    if (m <= 16) {
      const GemmPlan g = tiled_gemv_plan<TiledTuning>(m, k, n, slots);  // the streaming GEMV: slices of 128-row batches
      CHECK(g.tiles_n * awq::kTiledN >= n);
      CHECK(g.steps * TiledTuning::gemv_batch * awq::kTiledK >= k);
      check_slices(g);
      ++plans;
    }
  }
  CHECK(plans > 2000);
}

TEST_CASE("tiled Hopper plans with narrower tail blocks cover every strip of every token block once") {
  std::mt19937 rng(78);
  std::uniform_int_distribution<int> mdist(65, 3000), kdist(1, 400), ndist(1, 8000), sdist(1, 400);
  int mixed = 0;
  for (int rep = 0; rep < 600; ++rep) {
    const int m = mdist(rng), k = 32 * kdist(rng), n = 8 * ndist(rng), slots = sdist(rng);
    CAPTURE(m);
    CAPTURE(k);
    CAPTURE(n);
    CAPTURE(slots);
    for (int bm : {64, 128}) {
      GemmPlan p = tiled_grid_plan(bm, m, k, n, slots);
      p.wgmma = true;
      p.warpgroups = 4;
      const GemmPlan before = p;
      wgmma_mix_plan<TiledTuning>(p, n, slots);
      const int strips_n = (n + awq::kTiledN - 1) / awq::kTiledN;
      if (p.tail_w == 0) {
        CHECK(wgmma_plan_blocks(p) == wgmma_plan_blocks(before));
        continue;
      }
      ++mixed;
      CHECK(before.splits == 1);  // only an unsplit plan ends on narrower blocks
      CHECK(p.splits == 1);
      CHECK((p.tail_w == 2 || p.tail_w == 3));
      CHECK(tiled_plan_workspace_bytes(p, m, n) == 0);
      const WgmmaGrid gr = wgmma_grid(p);
      std::vector<int> hits(static_cast<std::size_t>(p.tiles_m) * strips_n, 0);
      const long blocks = wgmma_plan_blocks(p);
      for (long b = 0; b < blocks; ++b) {
        const WgmmaBlock wb = wgmma_block_of(gr, static_cast<int>(b));
        REQUIRE(wb.tm >= 0);
        REQUIRE(wb.tm < p.tiles_m);
        REQUIRE(wb.nt0 >= 0);
        REQUIRE(wb.nt0 < strips_n);  // no block without a column
        CHECK(wb.split == 0);
        CHECK(wb.ns == (b < gr.full ? kTiledWarps : p.tail_w));
        if (b > 0) CHECK(wgmma_block_of(gr, static_cast<int>(b - 1)).ns >= wb.ns);  // the 4-strip blocks first
        for (int s = wb.nt0; s < std::min(strips_n, wb.nt0 + wb.ns); ++s) ++hits[static_cast<std::size_t>(wb.tm) * strips_n + s];
      }
      CHECK(std::count(hits.begin(), hits.end(), 1) == static_cast<long>(hits.size()));
    }
  }
  CHECK(mixed > 50);
}

TEST_CASE("tiled_plan picks the kernel from M, the device and the tuning") {
  const TiledSlots h100 = hopper(true), a100 = hopper(false);
  for (int m : {1, 8, 9, 16}) {  // the streaming GEMV (bm 8), on any device
    CHECK(tiled_plan<TiledTuning>(m, 4096, 11008, h100).bm == 8);
    CHECK(tiled_plan<TiledTuning>(m, 4096, 11008, a100).bm == 8);
    CHECK(tiled_plan<NoGemv>(m, 4096, 11008, h100).bm != 8);
  }
  for (int m : {17, 32, 64, 128, 256}) {
    CAPTURE(m);
    const GemmPlan hp = tiled_plan<TiledTuning>(m, 8192, 28672, h100);
    CHECK(hp.wgmma);  // the Hopper kernel where the device runs it ...
    CHECK(hp.splits <= TiledTuning::wgmma_max_splits);
    CHECK(hp.warpgroups == (m <= TiledTuning::wgmma_wide_min_m ? 1 : hp.warpgroups));
    CHECK(!tiled_plan<TiledTuning>(m, 8192, 28672, a100).wgmma);  // ... the mma pipeline elsewhere
    CHECK(!tiled_plan<NoWgmma>(m, 8192, 28672, h100).wgmma);      // ... or where the tuning says so
    const GemmPlan mp = tiled_plan<TiledTuning>(m, 8192, 28672, a100);
    CHECK((mp.bm == 16 || mp.bm == 32 || mp.bm == 64));
    check_slices(hp);
    check_slices(mp);
  }
  // M = 256 on 8192 x 28672: four warpgroups over 128 tokens, the partial wave balanced by
  // narrower blocks (wgmma_mix_plan: 224 blocks on 132 SMs).
  const GemmPlan big = tiled_plan<TiledTuning>(256, 8192, 28672, h100);
  CHECK(big.warpgroups == 4);
  CHECK(big.bm == 128);
  CHECK(big.splits == 1);
  CHECK(big.tail_w != 0);
  // Forced settings of a tuning variant.
  const GemmPlan two = tiled_plan<TwoSlices>(64, 4096, 4096, h100);
  CHECK(two.wgmma);
  CHECK(two.splits == 2);
  CHECK(tiled_mt<TwoSlices>(100, 4096, a100) == 2);
  CHECK(tiled_mt<TiledTuning>(16, 4096, a100) == 1);
}

struct NoPrefetch : TiledTuning {
  static constexpr long gemv_prefetch_bytes = 0;
};

TEST_CASE("the streaming GEMV's L2 prefetch takes whole slices of small products and stays within its budget on large ones") {
  const TiledSlots h100 = hopper(true);
  const long batch_bytes = TiledTuning::gemv_batch * 16 * 64 / 2;
  for (const auto& kn : std::vector<std::array<int, 2>>{{4096, 4096}, {4096, 12288}, {4096, 22016}, {11008, 4096}, {8192, 28672}, {576, 1536}}) {
    for (int m : {1, 16}) {
      CAPTURE(kn[0]);
      CAPTURE(kn[1]);
      CAPTURE(m);
      const GemmPlan p = tiled_gemv_plan<TiledTuning>(m, kn[0], kn[1], h100.gemv);
      const int pf = tiled_gemv_prefetch<TiledTuning>(p);
      const long blocks = static_cast<long>(p.tiles_n) * p.splits;
      CHECK(pf >= 0);
      CHECK(pf <= p.steps_per_split);
      CHECK(blocks * pf * batch_bytes <= TiledTuning::gemv_prefetch_bytes);
      // All of each slice where the product's codes take at most half the budget; else all or as
      // many batches as fit.
      if (static_cast<long>(kn[0]) * kn[1] / 2 <= TiledTuning::gemv_prefetch_bytes / 2) CHECK(pf == p.steps_per_split);
      else CHECK((pf == p.steps_per_split || blocks * (pf + 1) * batch_bytes > TiledTuning::gemv_prefetch_bytes));
      CHECK(tiled_gemv_prefetch<NoPrefetch>(p) == 0);
    }
  }
  // A 7B decode step's products: o_proj (4096 x 4096, 8 MB of codes) whole, gate_up (4096 x 22016,
  // 45 MB) a third.
  const GemmPlan o = tiled_gemv_plan<TiledTuning>(1, 4096, 4096, h100.gemv), gu = tiled_gemv_plan<TiledTuning>(1, 4096, 22016, h100.gemv);
  CHECK(tiled_gemv_prefetch<TiledTuning>(o) == o.steps_per_split);
  CHECK(tiled_gemv_prefetch<TiledTuning>(gu) * 3 <= gu.steps_per_split + 2);
  CHECK(tiled_gemv_prefetch<TiledTuning>(gu) * 3 >= gu.steps_per_split - 3);
}

TEST_CASE("tiled plans of the shapes whose Hopper launch failed are valid launches of the Hopper kernel") {
  // The launch failed with cudaErrorInvalidValue at fp16 K 64, M 19 (the tool's tiny model) and for
  // bf16 at M 64 and 200; the cause was the shared-memory limit set on another translation unit's
  // copy of the kernel (allow_dynamic_smem), not the plans. Here: the plans are launchable.
  const TiledSlots h200 = hopper(true);
  struct Shape {
    int m, k, n, form;  // form: 32 or 64 tokens with one warpgroup (0, 1), 64 or 128 with four (2, 3)
  };
  for (const Shape s : {Shape{19, 64, 192, 0}, Shape{19, 64, 64, 0}, Shape{19, 64, 256, 0}, Shape{19, 128, 64, 0}, Shape{40, 128, 16384, 1},
                        Shape{64, 1024, 776, 2}, Shape{200, 640, 2056, 2}, Shape{200, 128, 2056, 3}}) {
    CAPTURE(s.m);
    CAPTURE(s.k);
    CAPTURE(s.n);
    const GemmPlan p = tiled_plan<TiledTuning>(s.m, s.k, s.n, h200);
    REQUIRE(p.wgmma);
    CHECK(p.warpgroups == (s.form < 2 ? 1 : 4));
    CHECK(p.bm == std::array<int, 4>{32, 64, 64, 128}[static_cast<std::size_t>(s.form)]);
    check_slices(p);
    const long blocks = wgmma_plan_blocks(p);
    CHECK(blocks >= 1);
    CHECK(blocks <= 65535L * 65535);
    // Over the 48 KiB every kernel may take (the launch must raise the kernel's limit), within the
    // 227 KiB a Hopper block may opt in to.
    const std::size_t smem = wgmma_plan_smem_bytes<TiledTuning>(p);
    CHECK(smem > 48 * 1024);
    CHECK(smem <= 227 * 1024);
  }
}

TEST_CASE("tiled plans at small K and any M give launchable grids") {
  const TiledSlots h200 = hopper(true), a100 = hopper(false);
  int plans = 0;
  for (int m = 17; m <= 300; m += 7)
    for (const int k : {32, 64, 96, 128, 160, 192})
      for (const int n : {8, 64, 192, 200, 256, 264, 1032, 16384})
        for (const TiledSlots* s : {&h200, &a100}) {
          CAPTURE(m);
          CAPTURE(k);
          CAPTURE(n);
          const GemmPlan p = tiled_plan<TiledTuning>(m, k, n, *s);
          check_slices(p);
          CHECK(p.steps == (k + kTiledBK - 1) / kTiledBK);
          CHECK(p.tiles_m * p.bm >= m);
          CHECK(p.tiles_n * kTiledBN >= n);
          if (p.wgmma) {
            CHECK(wgmma_plan_blocks(p) >= 1);
            CHECK(wgmma_plan_smem_bytes<TiledTuning>(p) <= 227 * 1024);
          }
          ++plans;
        }
  CHECK(plans == 41 * 6 * 8 * 2);
}

TEST_CASE("the streaming GEMV's K slices meet in a cluster only where the tuning asks, clusters run and 2 to 8 slices suffice") {
  TiledSlots h100 = hopper(true);
  h100.clusters = true;
  TiledSlots no_clusters = hopper(true);
  for (const auto& kn : std::vector<std::array<int, 2>>{{4096, 4096}, {4096, 12288}, {11008, 4096}, {4096, 22016}, {8192, 28672}, {576, 1536}}) {
    for (int m : {1, 5, 16}) {
      CAPTURE(kn[0]);
      CAPTURE(kn[1]);
      CAPTURE(m);
      const GemmPlan plain = tiled_plan<TiledTuning>(m, kn[0], kn[1], h100);
      const GemmPlan c = tiled_plan<Cluster>(m, kn[0], kn[1], h100);
      CHECK_FALSE(plain.cluster);
      CHECK_FALSE(tiled_plan<Cluster>(m, kn[0], kn[1], no_clusters).cluster);
      // The same grid either way; only where the slices meet changes.
      CHECK(c.tiles_n == plain.tiles_n);
      CHECK(c.splits == plain.splits);
      CHECK(c.steps_per_split == plain.steps_per_split);
      CHECK(c.cluster == (plain.splits >= 2 && plain.splits <= kMaxClusterSlices));
      if (c.cluster) CHECK(tiled_plan_workspace_bytes(c, m, kn[1]) == 0);
      else CHECK(tiled_plan_workspace_bytes(c, m, kn[1]) == tiled_plan_workspace_bytes(plain, m, kn[1]));
    }
  }
  // A 7B step's o projection splits K eight ways on an H100: one cluster of 8 per strip.
  const GemmPlan o = tiled_plan<Cluster>(1, 4096, 4096, h100);
  CHECK(o.splits == 8);
  CHECK(o.cluster);
  // Above the GEMV's M the tensor-core plans never cluster.
  CHECK_FALSE(tiled_plan<Cluster>(17, 4096, 4096, h100).cluster);
}
