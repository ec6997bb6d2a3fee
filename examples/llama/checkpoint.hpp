// Per-block checkpoints of an AWQ run, so that an interrupted run (killed, out of memory, a
// failed node) resumes at the first unfinished block instead of starting over.
//
// After each block the example writes <dir>/block_<i>.safetensors: the chosen scales of every
// group ("scales.qkv", "scales.o", "scales.gate_up", "scales.down") and the clip bounds of every
// clipped linear ("clip.v", … as [rows, groups]), F32, with the run's identity in the metadata.
// Files are written atomically (temporary name, fsync, rename): a kill leaves either the whole
// file or none. On resume a block's file replaces its searches: the scales are folded and the
// bounds applied exactly as after a search, so the resumed model equals the uninterrupted one
// bit for bit. A file from another run (model, config or calibration differ) or with missing
// or misshapen entries is an awq::Error, never silently used.
#pragma once

#include <awq/io/safetensors.hpp>

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "llama_block.hpp"

namespace awq_example {

class BlockCheckpoint {
 public:
  /// `dir` must exist (created by the caller); `run_id` names everything the results depend on.
  BlockCheckpoint(std::string dir, std::string run_id) : dir_(std::move(dir)), run_id_(std::move(run_id)) {}

  std::string path(int block) const { return dir_ + "/block_" + std::to_string(block) + ".safetensors"; }

  bool has(int block) const {
    struct stat st {};
    return ::stat(path(block).c_str(), &st) == 0;
  }

  /// Writes block `block`'s results (atomically).
  void save(int block, const BlockAwqResult& r) const {
    awq::io::SafetensorsWriter w;
    w.metadata("awq_block_checkpoint", "1");
    w.metadata("run", run_id_);
    w.metadata("block", std::to_string(block));
    for (const auto& [name, s] : r.scales)
      w.add_typed("scales." + name, "F32", {static_cast<std::int64_t>(s.scales.size())}, s.scales);
    for (const auto& [name, c] : r.clips)
      w.add_typed("clip." + name, "F32", {static_cast<std::int64_t>(c.rows), static_cast<std::int64_t>(c.groups)}, c.max_val);
    w.write(path(block));
  }

  /// Reads block `block`'s results into `opt.given_scales` / `opt.given_clips`, checking that the
  /// file belongs to this run and holds every group and linear of `layer` with the right shape.
  void load_into(int block, const LlamaLayer& layer, BlockAwqOptions& opt) const {
    const std::string p = path(block);
    const auto f = awq::io::SafetensorsFile::open(p);
    auto meta = [&](const std::string& k) {
      const auto it = f.metadata().find(k);
      return it == f.metadata().end() ? std::string() : it->second;
    };
    awq::detail::require(meta("awq_block_checkpoint") == "1", "checkpoint ", p, ": not an awq block checkpoint");
    awq::detail::require(meta("run") == run_id_, "checkpoint ", p, " belongs to another run ('", meta("run"),
                         "'; this run is '", run_id_, "'): remove it or use another --checkpoint directory");
    awq::detail::require(meta("block") == std::to_string(block), "checkpoint ", p, " holds block ", meta("block"));
    opt.given_scales.clear();
    opt.given_clips.clear();
    auto floats = [&](const std::string& name, std::size_t n) {
      awq::detail::require(f.contains(name), "checkpoint ", p, ": tensor '", name, "' is missing");
      const auto t = f.tensor(name);
      awq::detail::require(t.dtype == "F32" && t.data.size() == n * sizeof(float), "checkpoint ", p, ": tensor '", name,
                           "' is ", t.dtype, " of ", t.data.size(), " bytes, expected F32 of ", n * sizeof(float));
      std::vector<float> v(n);
      std::memcpy(v.data(), t.data.data(), t.data.size());
      for (std::size_t i = 0; i < n; ++i)
        awq::detail::require(std::isfinite(v[i]) && v[i] >= 0, "checkpoint ", p, ": tensor '", name, "' holds ", v[i],
                             " at ", i);
      return v;
    };
    const bool o_group = layer.wv.rows() == layer.wo.rows() && layer.wv.cols() == layer.wo.cols();
    opt.given_scales["qkv"] = floats("scales.qkv", static_cast<std::size_t>(layer.wq.cols()));
    if (o_group) opt.given_scales["o"] = floats("scales.o", static_cast<std::size_t>(layer.wo.cols()));
    opt.given_scales["gate_up"] = floats("scales.gate_up", static_cast<std::size_t>(layer.wg.cols()));
    opt.given_scales["down"] = floats("scales.down", static_cast<std::size_t>(layer.wd.cols()));
    if (opt.clip) {
      const std::vector<std::pair<std::string, const Mat*>> lin = {
          {"v", &layer.wv}, {"o", &layer.wo}, {"gate", &layer.wg}, {"up", &layer.wu}, {"down", &layer.wd}};
      const auto g = [&](const Mat* w) { return static_cast<std::size_t>(opt.quant.group_for(w->cols())); };
      for (const auto& [name, w] : lin)
        opt.given_clips[name] = floats("clip." + name, static_cast<std::size_t>(w->rows()) * (static_cast<std::size_t>(w->cols()) / g(w)));
    }
  }

 private:
  std::string dir_, run_id_;
};

/// The per-block flow over a stack: block i is searched on the FP output of block i-1 (as the
/// reference does), by `block_fn` (awq_block, or the GPU one); with a checkpoint, blocks that have
/// a file are replayed from it instead and new ones are saved as they finish. `after_block(i, l)`
/// runs after each block (packing, progress). Returns the number of blocks resumed.
template <class BlockFn, class After>
int awq_layers(const LlamaConfig& cfg, const Batch& b, std::vector<LlamaLayer>& layers, Mat h, const BlockAwqOptions& base,
               const BlockCheckpoint* ck, BlockFn&& block_fn, After&& after_block) {
  int resumed = 0;
  for (std::size_t li = 0; li < layers.size(); ++li) {
    auto& l = layers[li];
    Mat next = layer_forward(cfg, b, l, h);
    BlockAwqOptions opt = base;
    const bool replay = ck && ck->has(static_cast<int>(li));
    if (replay) {
      ck->load_into(static_cast<int>(li), l, opt);
      ++resumed;
    }
    const BlockAwqResult r = block_fn(cfg, b, l, h, opt);
    if (ck && !replay) ck->save(static_cast<int>(li), r);
    after_block(li, l);
    h = std::move(next);
  }
  return resumed;
}

}  // namespace awq_example
