/// \file
/// \brief awq::io::HfCheckpoint: a Hugging Face model directory (`config.json`, and
///        `model.safetensors` or sharded `model-0000x-of-0000y.safetensors` with
///        `model.safetensors.index.json`) read one tensor at a time (needs nlohmann-json).
///
/// open() reads config.json, the index and every shard's header — nothing else — and checks
/// them against each other, so a broken checkpoint fails before any long work. A shard's file is
/// opened when one of its tensors is first read; each read maps only that tensor's pages and
/// unmaps them before returning, so resident memory and address space stay at O(one tensor)
/// whatever the model's size (a model larger than RAM, or than `ulimit -v`, streams). A shard's
/// size is checked again before every map, so a file truncated after open() is an awq::Error
/// rather than a SIGBUS; only a truncation in the microseconds between that check and the copy
/// out of the map still faults (files must not be rewritten in place while a job reads them).
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "awq/backend/cpu.hpp"
#include "awq/error.hpp"
#include "awq/io/gguf.hpp"
#include "awq/io/json_error.hpp"
#include "awq/io/safetensors.hpp"
#include "awq/io/safetensors_header.hpp"

namespace awq {
namespace io {

/// \brief What a checkpoint says about one tensor.
struct HfTensorInfo {
  std::string dtype;                ///< safetensors dtype: "F32", "F16", "BF16", ...
  std::vector<std::int64_t> shape;  ///< extents, outermost first
  std::string file;                 ///< the path of the safetensors file that holds it
};

/// \brief A Hugging Face model directory, validated at open, its tensors read lazily.
///
/// Reads are safe from several threads at once (a shard is opened under a lock).
class HfCheckpoint {
 public:
  /// Name of the single-file checkpoint.
  static constexpr const char* kSingle = "model.safetensors";
  /// Name of the shard index.
  static constexpr const char* kIndex = "model.safetensors.index.json";

  /// Opens the model directory `dir` and validates config.json, the index and the shards' headers.
  ///
  /// \throws awq::Error naming the directory, file and tensor when: `dir` is not a directory or
  ///         has no config.json; a JSON file is malformed; there is neither model.safetensors nor
  ///         an index, or both; the index names a shard that does not exist (or a path outside
  ///         `dir`), a tensor its shard does not hold, or a shard holds a tensor the index does not
  ///         map to it (including one held by two shards); a header is malformed or a file is
  ///         shorter than its header needs.
  static HfCheckpoint open(const std::string& dir) {
    namespace fs = std::filesystem;
    const std::string who = "awq::io::HfCheckpoint: ";
    awq::detail::require(fs::is_directory(dir), who, dir, " is not a directory");
    HfCheckpoint c;
    c.dir_ = dir;
    const fs::path root(dir);
    const fs::path cfg = root / "config.json";
    awq::detail::require(fs::is_regular_file(cfg), who, dir, " has no config.json (not a Hugging Face model directory)");
    c.config_ = read_json(cfg.string());
    awq::detail::require(c.config_.is_object(), who, cfg.string(), " is not a JSON object");

    const fs::path single = root / kSingle, index = root / kIndex;
    const bool has_single = fs::exists(single), has_index = fs::exists(index);
    awq::detail::require(!(has_single && has_index), who, dir, " has both ", kSingle, " and ", kIndex,
                         "; which one is current is ambiguous (remove the stale one)");
    if (has_single) {
      c.add_shard(kSingle, single.string());
    } else {
      if (!has_index) {
        std::string shard;
        for (const auto& e : fs::directory_iterator(root))
          if (detail::is_shard_name(e.path().filename().string())) shard = e.path().filename().string();
        awq::detail::require(shard.empty(), who, dir, " has shard ", shard, " but no ", kIndex);
        throw Error(awq::detail::concat(who, dir, " has neither ", kSingle, " nor ", kIndex, " (no safetensors weights)"));
      }
      const auto j = read_json(index.string());
      awq::detail::require(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), who, index.string(),
                           " has no weight_map object");
      std::map<std::string, std::string> file_of;
      std::map<std::string, std::set<std::string>> by_file;
      for (const auto& [name, file] : j["weight_map"].items()) {
        awq::detail::require(file.is_string(), who, index.string(), ": tensor '", name, "' maps to ", file.dump(), ", not a file name");
        const auto f = file.get<std::string>();
        awq::detail::require(!f.empty() && f.find('/') == std::string::npos && f.find('\\') == std::string::npos && f != "." &&
                                 f != "..",
                             who, index.string(), ": tensor '", name, "' maps to '", f, "', not a file name in ", dir);
        file_of[name] = f;
        by_file[f].insert(name);
      }
      for (const auto& [f, names] : by_file) {
        const fs::path p = root / f;
        awq::detail::require(fs::is_regular_file(p), who, index.string(), ": shard ", p.string(), " (of tensor '", *names.begin(),
                             "') does not exist");
        c.add_shard(f, p.string());
      }
      c.check_against_index(file_of);
    }
    return c;
  }

  /// config.json as read.
  const nlohmann::json& config() const noexcept { return config_; }
  /// The model directory.
  const std::string& dir() const noexcept { return dir_; }

  /// Every tensor's name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    n.reserve(where_.size());
    for (const auto& [k, v] : where_) n.push_back(k);
    return n;
  }
  /// Whether the checkpoint holds `name`.
  bool contains(const std::string& name) const { return where_.count(name) != 0; }

  /// dtype, shape and file of `name`; throws awq::Error naming it when absent.
  HfTensorInfo info(const std::string& name) const {
    const auto [s, e] = find(name);
    return HfTensorInfo{e->dtype, e->shape, shards_[s].path};
  }
  /// The path of the safetensors file that holds `name`.
  const std::string& file_of(const std::string& name) const { return shards_[find(name).first].path; }

  /// The tensor `name` as fp32 (F32 copied, F16 and BF16 converted exactly).
  ///
  /// \throws awq::Error naming the file and tensor when it is absent, its shape is not
  ///         `expected_shape`, its dtype is not F32/F16/BF16, or the file was truncated since open.
  std::vector<float> load_f32(const std::string& name, std::vector<std::int64_t> expected_shape) const {
    const auto [s, e] = find(name);
    const std::string& path = shards_[s].path;
    awq::detail::require(e->shape == expected_shape, "awq::io::HfCheckpoint::load_f32: ", path, ": tensor '", name, "' has shape ",
                         detail::shape_string(e->shape), ", expected ", detail::shape_string(expected_shape));
    awq::detail::require(e->dtype == "F32" || e->dtype == "F16" || e->dtype == "BF16", "awq::io::HfCheckpoint::load_f32: ", path,
                         ": tensor '", name, "' is ", e->dtype, "; only F32, F16 and BF16 convert to fp32");
    const SafetensorsEntry& entry = *e;  // a plain name for the lambda (clang cannot capture bindings)
    const std::size_t n = static_cast<std::size_t>((entry.end - e->begin) / static_cast<std::uint64_t>(io::detail::dtype_size(e->dtype)));
    std::vector<float> out(n);
    file(s)->with_bytes(name, entry, [&](const std::uint8_t* b) {
      if (entry.dtype == "F32") {
        if (n) std::memcpy(out.data(), b, n * 4);
        return;
      }
      const bool bf16 = entry.dtype == "BF16";
      // On every core: a 7B block's linears are 200M values, a second of one thread's time.
      backend::cpu::parallel_for(
          static_cast<index_t>(n),
          [&](index_t lo, index_t hi) {
            for (auto i = static_cast<std::size_t>(lo); i < static_cast<std::size_t>(hi); ++i) {
              const std::uint16_t h = static_cast<std::uint16_t>(b[2 * i] | (b[2 * i + 1] << 8));
              if (bf16) {
                const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
                std::memcpy(&out[i], &bits, 4);
              } else {
                out[i] = io::detail::half_to_float(h);
              }
            }
          },
          index_t{1} << 16);
    });
    return out;
  }

  /// The tensor `name` as stored (any dtype), for copying it through unchanged.
  SafetensorsTensor tensor(const std::string& name) const {
    const auto [s, e] = find(name);
    SafetensorsTensor t{e->dtype, e->shape, std::vector<std::uint8_t>(static_cast<std::size_t>(e->end - e->begin))};
    file(s)->with_bytes(name, *e, [&](const std::uint8_t* b) {
      if (!t.data.empty()) std::memcpy(t.data.data(), b, t.data.size());
    });
    return t;
  }

  /// How many shard files are open now (each opened at its first read; none after open()).
  std::size_t open_files() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    std::size_t k = 0;
    for (const auto& f : state_->files) k += f != nullptr;
    return k;
  }
  /// Closes every open shard file (the next read opens its shard again). Never needed for memory
  /// — no tensor stays mapped after its read — only to give descriptors back.
  void release() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    for (auto& f : state_->files) f.reset();
  }

 private:
  struct Shard {
    std::string file;  // its name in the directory
    std::string path;
    SafetensorsHeader header;
  };
  struct State {
    std::mutex mutex;
    std::vector<std::shared_ptr<const SafetensorsMappedFile>> files;
  };

  HfCheckpoint() : state_(std::make_unique<State>()) {}

  static nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    awq::detail::require(static_cast<bool>(f), "awq::io::HfCheckpoint: cannot read ", path);
    try {
      return nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {  // nlohmann's id ("[json.exception...]") means nothing to a user
      throw Error(awq::detail::concat("awq::io::HfCheckpoint: ", path, " is not valid JSON: ", json_error_text(e)));
    }
  }

  // Reads the header of the safetensors file `file` (at `path`) and registers its tensors.
  void add_shard(const std::string& file, const std::string& path) {
    Shard sh{file, path, detail::read_safetensors_header(path)};
    for (const auto& [name, e] : sh.header.tensors) {
      const auto seen = where_.find(name);
      awq::detail::require(seen == where_.end(), "awq::io::HfCheckpoint: tensor '", name, "' is in two shards: ",
                           seen == where_.end() ? "" : shards_[seen->second].path, " and ", path);
      where_.emplace(name, shards_.size());
    }
    shards_.push_back(std::move(sh));
    state_->files.emplace_back();
  }

  // Every tensor the index maps is in the shard it names, and every shard's tensor is mapped to it.
  void check_against_index(const std::map<std::string, std::string>& file_of) const {
    const std::string index = awq::detail::concat(dir_, "/", kIndex);
    for (const auto& [name, s] : where_) {
      const auto m = file_of.find(name);
      awq::detail::require(m != file_of.end(), "awq::io::HfCheckpoint: ", shards_[s].path, " holds tensor '", name, "', which ", index,
                           " does not list (the shards disagree with the index)");
      awq::detail::require(m->second == shards_[s].file, "awq::io::HfCheckpoint: ", index, " maps tensor '", name, "' to ", m->second,
                           " but it is in ", shards_[s].path, " (the shards disagree with the index)");
    }
    for (const auto& [name, f] : file_of)
      awq::detail::require(where_.count(name) != 0, "awq::io::HfCheckpoint: ", index, " maps tensor '", name, "' to ", dir_, "/", f,
                           ", which does not hold it");
  }

  std::pair<std::size_t, const SafetensorsEntry*> find(const std::string& name) const {
    const auto it = where_.find(name);
    awq::detail::require(it != where_.end(), "awq::io::HfCheckpoint: ", dir_, " has no tensor '", name, "'");
    return {it->second, &shards_[it->second].header.tensors.at(name)};
  }

  // Shard `s`'s open file, opened (and its size checked again) at its first read.
  std::shared_ptr<const SafetensorsMappedFile> file(std::size_t s) const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    auto& f = state_->files[s];
    if (!f) f = std::make_shared<const SafetensorsMappedFile>(shards_[s].path, shards_[s].header);
    return f;
  }

  std::string dir_;
  nlohmann::json config_;
  std::vector<Shard> shards_;
  std::map<std::string, std::size_t> where_;  // tensor -> shard
  std::unique_ptr<State> state_;
};

}  // namespace io
}  // namespace awq
