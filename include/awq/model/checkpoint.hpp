/// \file
/// \brief Per-block checkpoints of a model run (`awq::model::BlockCheckpoint`), so that an
///        interrupted run resumes at the first unfinished block instead of starting over.
///
/// After each block the driver writes DIR/block_I.safetensors: the chosen scales of every
/// group ("scales.<group>") and the clip bounds of every clipped linear ("clip.<name>",
/// [rows, groups]), F32, with the run's identity in the metadata, atomically. On resume a
/// block's file replaces its searches: the scales are folded and the bounds applied exactly as
/// after a search, so the resumed model equals the uninterrupted one bit for bit. A file from
/// another run or with missing or misshapen entries is an awq::Error, never silently used.
#pragma once

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "awq/io/safetensors.hpp"
#include "awq/search/clip.hpp"
#include "awq/search/scale.hpp"

namespace awq::model {

/// \brief What the searches of one block chose.
struct BlockResult {
  std::map<std::string, ScaleSearchResult<float>> scales;  ///< by group name
  std::map<std::string, ClipSearchResult<float>> clips;    ///< by clip target name
};

/// \brief Scales and clip bounds to use instead of searching (a checkpoint's, or a replay).
struct GivenResults {
  std::map<std::string, std::vector<float>> scales;  ///< by group name
  std::map<std::string, std::vector<float>> clips;   ///< by clip target name, [rows, groups]
};

/// \brief The per-block checkpoint files of one run.
class BlockCheckpoint {
 public:
  /// `dir` must be an existing directory (checked here, not after the first block's search);
  /// `run_id` names everything the results depend on.
  BlockCheckpoint(std::string dir, std::string run_id) : dir_(std::move(dir)), run_id_(std::move(run_id)) {
    struct stat st {};
    detail::require(::stat(dir_.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "awq::model::BlockCheckpoint: '", dir_,
                    "' is not an existing directory");
  }

  /// The file of block `block`.
  std::string path(int block) const { return dir_ + "/block_" + std::to_string(block) + ".safetensors"; }

  /// Whether block `block` has a file.
  bool has(int block) const {
    struct stat st {};
    return ::stat(path(block).c_str(), &st) == 0;
  }

  /// Writes block `block`'s results (atomically).
  void save(int block, const BlockResult& r) const {
    io::SafetensorsWriter w;
    w.metadata("awq_block_checkpoint", "1");
    w.metadata("run", run_id_);
    w.metadata("block", std::to_string(block));
    for (const auto& [name, s] : r.scales)
      w.add_typed("scales." + name, "F32", {static_cast<std::int64_t>(s.scales.size())}, s.scales);
    for (const auto& [name, c] : r.clips)
      w.add_typed("clip." + name, "F32", {static_cast<std::int64_t>(c.rows), static_cast<std::int64_t>(c.groups)}, c.max_val);
    w.write(path(block));
  }

  /// Reads block `block`'s results, checking that the file belongs to this run and holds every
  /// expected entry with its size: `scales` (group → channels) and `clips` (target → rows·groups).
  GivenResults load(int block, const std::vector<std::pair<std::string, std::size_t>>& scales,
                    const std::vector<std::pair<std::string, std::size_t>>& clips) const {
    const std::string p = path(block);
    const auto f = io::SafetensorsFile::open(p);
    auto meta = [&](const std::string& k) {
      const auto it = f.metadata().find(k);
      return it == f.metadata().end() ? std::string() : it->second;
    };
    detail::require(meta("awq_block_checkpoint") == "1", "checkpoint ", p, ": not an awq block checkpoint");
    detail::require(meta("run") == run_id_, "checkpoint ", p, " belongs to another run ('", meta("run"), "'; this run is '",
                    run_id_, "'): remove it or use another --checkpoint directory");
    detail::require(meta("block") == std::to_string(block), "checkpoint ", p, " holds block ", meta("block"));
    auto floats = [&](const std::string& name, std::size_t n) {
      detail::require(f.contains(name), "checkpoint ", p, ": tensor '", name, "' is missing");
      const auto t = f.tensor(name);
      detail::require(t.dtype == "F32" && t.data.size() == n * sizeof(float), "checkpoint ", p, ": tensor '", name, "' is ",
                      t.dtype, " of ", t.data.size(), " bytes, expected F32 of ", n * sizeof(float));
      std::vector<float> v(n);
      std::memcpy(v.data(), t.data.data(), t.data.size());
      for (std::size_t i = 0; i < n; ++i)
        detail::require(std::isfinite(v[i]) && v[i] >= 0, "checkpoint ", p, ": tensor '", name, "' holds ", v[i], " at ", i);
      return v;
    };
    GivenResults g;
    for (const auto& [name, n] : scales) g.scales[name] = floats("scales." + name, n);
    for (const auto& [name, n] : clips) g.clips[name] = floats("clip." + name, n);
    return g;
  }

 private:
  std::string dir_, run_id_;
};

}  // namespace awq::model
