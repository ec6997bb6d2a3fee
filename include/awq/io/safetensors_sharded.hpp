/// \file
/// \brief awq::io::ShardedSafetensorsWriter: a model export written tensor by tensor into
///        Hugging Face shards (`model-0000i-of-0000N.safetensors` and
///        `model.safetensors.index.json`, or one `model.safetensors`), holding at most one
///        shard's bytes in memory (needs nlohmann-json).
///
/// Shards are cut as transformers' save_pretrained cuts them: a tensor that would take the open
/// shard past `max_shard_bytes` starts the next one (a tensor larger than the limit gets a shard
/// of its own). Each full shard is written at once, atomically, under a temporary name
/// (`.model-shard-0000i.safetensors`), since the shard count N is known only at finish(); finish()
/// removes the old export's index, renames the shards to their final names, writes the index
/// atomically, then removes the old export's shards. A crash before finish() completes leaves
/// no index naming a mixture of shards: io::HfCheckpoint refuses the directory until a finish()
/// succeeds.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "awq/error.hpp"
#include "awq/io/atomic_file.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/io/safetensors_header.hpp"

namespace awq {
namespace io {

/// \brief Writes a Hugging Face safetensors export shard by shard.
class ShardedSafetensorsWriter {
 public:
  /// Writes into the existing directory `dir`, shards of at most `max_shard_bytes` of tensor data
  /// (transformers' default is 5 GB); throws awq::Error when `dir` is not a directory or the limit is 0.
  ShardedSafetensorsWriter(std::string dir, std::uint64_t max_shard_bytes) : dir_(std::move(dir)), max_(max_shard_bytes) {
    awq::detail::require(std::filesystem::is_directory(dir_), "awq::io::ShardedSafetensorsWriter: ", dir_, " is not a directory");
    awq::detail::require(max_ > 0, "awq::io::ShardedSafetensorsWriter: max_shard_bytes is 0");
  }
  ShardedSafetensorsWriter(const ShardedSafetensorsWriter&) = delete;
  ShardedSafetensorsWriter& operator=(const ShardedSafetensorsWriter&) = delete;
  /// Removes the temporary shards of an export that was not finished.
  ~ShardedSafetensorsWriter() {
    if (finished_) return;
    std::error_code ec;
    for (std::size_t i = 0; i < written_; ++i) std::filesystem::remove(temp_path(i), ec);
  }

  /// Adds a tensor (bytes as stored, little-endian); writes the open shard first when this tensor
  /// would take it past the limit. Throws awq::Error when the byte count does not match dtype ×
  /// shape, the name repeats, or finish() was called.
  void add(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes) {
    awq::detail::require(!finished_, "awq::io::ShardedSafetensorsWriter: tensor '", name, "' added after finish()");
    awq::detail::require(shard_of_.count(name) == 0, "awq::io::ShardedSafetensorsWriter: tensor '", name, "' added twice");
    const std::uint64_t n = bytes.size();
    if (open_count_ > 0 && open_bytes_ + n > max_) flush();
    open_.add(name, dtype, std::move(shape), std::move(bytes));  // checks dtype and byte count
    shard_of_[name] = written_;
    ++open_count_;
    open_bytes_ += n;
    total_ += n;
  }
  /// Adds a typed tensor from a vector of T (bytes copied as stored).
  template <class T>
  void add_typed(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, const std::vector<T>& v) {
    std::vector<std::uint8_t> b(v.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    add(name, dtype, std::move(shape), std::move(b));
  }

  /// Writes the last shard and puts the export in place; returns the files written (shards,
  /// then the index when there is more than one shard). Throws awq::Error when nothing was added.
  std::vector<std::string> finish() {
    namespace fs = std::filesystem;
    awq::detail::require(!finished_, "awq::io::ShardedSafetensorsWriter: finish() called twice");
    awq::detail::require(!shard_of_.empty(), "awq::io::ShardedSafetensorsWriter: no tensor was added to ", dir_);
    flush();
    const std::size_t count = written_;
    const fs::path root(dir_);
    std::error_code ec;
    fs::remove(root / "model.safetensors.index.json", ec);
    if (count > 1) fs::remove(root / "model.safetensors", ec);
    std::vector<std::string> files;
    std::set<std::string> names;
    for (std::size_t i = 0; i < count; ++i) {
      const std::string name = count == 1 ? "model.safetensors" : shard_name(i, count);
      names.insert(name);
      files.push_back((root / name).string());
      fs::rename(temp_path(i), files.back(), ec);
      awq::detail::require(!ec, "awq::io::ShardedSafetensorsWriter: cannot rename ", temp_path(i), " to ", files.back(), ": ",
                           ec.message());
    }
    if (count > 1) {
      nlohmann::ordered_json index;
      index["metadata"] = {{"total_size", total_}};
      nlohmann::ordered_json map = nlohmann::ordered_json::object();
      for (const auto& [name, shard] : shard_of_) map[name] = shard_name(shard, count);
      index["weight_map"] = std::move(map);
      const std::string path = (root / "model.safetensors.index.json").string();
      write_atomically(path, [&](FileSink& out) { out.write(index.dump(2) + "\n"); });
      files.push_back(path);
    }
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string f = e.path().filename().string();
      if (detail::is_shard_name(f) && names.count(f) == 0) fs::remove(e.path(), ec);
    }
    finished_ = true;
    return files;
  }

  /// Tensor bytes added so far (the index's `metadata.total_size`).
  std::uint64_t total_bytes() const noexcept { return total_; }

  /// `model-0000i-of-0000N.safetensors` for shard `i` (from 0) of `count`.
  static std::string shard_name(std::size_t i, std::size_t count) {
    char b[64];
    std::snprintf(b, sizeof b, "model-%05zu-of-%05zu.safetensors", i + 1, count);
    return b;
  }

 private:
  std::string temp_path(std::size_t i) const {
    char b[64];
    std::snprintf(b, sizeof b, ".model-shard-%05zu.safetensors", i + 1);
    return (std::filesystem::path(dir_) / b).string();
  }

  void flush() {
    if (open_count_ == 0) return;
    open_.metadata("format", "pt");
    open_.write(temp_path(written_));
    ++written_;
    open_ = SafetensorsWriter();
    open_bytes_ = 0;
    open_count_ = 0;
  }

  std::string dir_;
  std::uint64_t max_;
  SafetensorsWriter open_;
  std::uint64_t open_bytes_ = 0, total_ = 0;
  std::size_t open_count_ = 0;                   // tensors in the open shard
  std::size_t written_ = 0;                      // shards written
  std::map<std::string, std::size_t> shard_of_;  // tensor -> shard index
  bool finished_ = false;
};

}  // namespace io
}  // namespace awq
