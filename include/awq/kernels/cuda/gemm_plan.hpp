/// \file
/// \brief The split-K plan of the W4A16 tensor-core kernels (AutoAWQ-layout GEMM and the tiled
///        kernels) and the workspace it needs. Host-only.
#pragma once

#include <cstddef>

namespace awq {
namespace cuda {
namespace detail {

/// How the tensor-core path splits the work: BM rows per block, `splits` slices of K of
/// `steps_per_split` steps of 64 (split-K when the output tiles alone would not fill the GPU).
struct GemmPlan {
  int bm = 16, tiles_n = 0, tiles_m = 0, steps = 0, splits = 1, steps_per_split = 0;
  bool wgmma = false;  ///< the tiled layout's Hopper kernel (bm tokens per block)
  int warpgroups = 1;  ///< the Hopper kernel's warpgroups per block (1 or 4)
  /// Four warpgroups, no split-K, mixed block widths (0 = every block 4 strips of 64 columns):
  /// per token block, wide_c4 blocks of 4 strips, then tail_pieces blocks of tail_w strips (the
  /// last one narrower where the strips run out); the 4-strip blocks of every token block first.
  int wide_c4 = 0, tail_w = 0, tail_pieces = 0;
  /// The streaming GEMV's K slices of a strip meet in a thread-block cluster's shared memory
  /// (TiledTuning::gemv_cluster; 2 to kMaxClusterSlices slices): no workspace.
  bool cluster = false;
};

/// The most K slices one cluster holds (the portable cluster size).
constexpr int kMaxClusterSlices = 8;

/// Bytes of the split-K tickets (one int per output tile) at the head of a workspace, padded so
/// that the fp32 partial sums after them stay aligned. Shared by the GEMV and the tensor-core GEMM.
inline std::size_t split_k_ticket_bytes(std::size_t tiles) { return (tiles * 4 + 255) / 256 * 256; }
/// Workspace: tickets [tiles] int (padded to 256 bytes), then fp32 partial tiles [splits][M][N];
/// none when there is one slice.
inline std::size_t gemm_workspace_bytes(const GemmPlan& p, int m, int n) {
  if (p.splits == 1 || p.cluster) return 0;
  const std::size_t tickets = split_k_ticket_bytes(static_cast<std::size_t>(p.tiles_n) * p.tiles_m);
  return tickets + sizeof(float) * static_cast<std::size_t>(p.splits) * m * n;
}

}  // namespace detail
}  // namespace cuda
}  // namespace awq
