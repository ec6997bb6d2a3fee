/// \file
/// \brief awq::io::ShardedSafetensorsWriter: a model export streamed tensor by tensor into
///        Hugging Face shards (`model-0000i-of-0000N.safetensors` and
///        `model.safetensors.index.json`, or one `model.safetensors`), holding no tensor data in
///        memory beyond the call that adds it (needs nlohmann-json).
///
/// Shards are cut as transformers' save_pretrained cuts them: a tensor that would take the open
/// shard past `max_shard_bytes` starts the next one (a tensor larger than the limit gets a shard
/// of its own). A tensor's bytes go to the open shard's data file (`.model-shard-0000i.data`) as
/// it is added; since a safetensors header precedes the data and is known only when the shard is
/// full, the shard is then written atomically under a temporary name
/// (`.model-shard-0000i.safetensors`) as header + the data file copied in 1 MiB pieces, and the
/// data file removed. With a header reserve (the constructor's `header_reserve`), the data file
/// starts with that many bytes left for the header: a shard whose header fits is completed in
/// place (header written over the reserve, padded with spaces as the format allows, synced and
/// renamed), which saves copying every shard once; a header that does not fit falls back to the
/// copy. The shard count N is known only at finish(), which removes the old export's
/// index, renames the shards to their final names, writes the index atomically, then removes the
/// old export's shards. A crash before finish() completes leaves no index naming a mixture of
/// shards: io::HfCheckpoint refuses the directory until a finish() succeeds.
///
/// Within a shard the data lie in the order the tensors were added and the header lists them in
/// that order, so equal additions give equal bytes.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
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

/// \brief Writes a Hugging Face safetensors export shard by shard, streaming each tensor to disk.
class ShardedSafetensorsWriter {
 public:
  /// Writes into the existing directory `dir`, shards of at most `max_shard_bytes` of tensor data
  /// (transformers' default is 5 GB), each with `header_reserve` bytes (rounded up to 8) kept for
  /// its header (0: none, every shard is copied behind its header); throws awq::Error when `dir`
  /// is not a directory or the limit is 0.
  ShardedSafetensorsWriter(std::string dir, std::uint64_t max_shard_bytes, std::uint64_t header_reserve = 0)
      : dir_(std::move(dir)), max_(max_shard_bytes), reserve_((header_reserve + 7) / 8 * 8) {
    awq::detail::require(std::filesystem::is_directory(dir_), "awq::io::ShardedSafetensorsWriter: ", dir_, " is not a directory");
    awq::detail::require(max_ > 0, "awq::io::ShardedSafetensorsWriter: max_shard_bytes is 0");
  }
  ShardedSafetensorsWriter(const ShardedSafetensorsWriter&) = delete;
  ShardedSafetensorsWriter& operator=(const ShardedSafetensorsWriter&) = delete;
  /// Removes the temporary files of an export that was not finished.
  ~ShardedSafetensorsWriter() {
    if (finished_) return;
    close_data();
    std::error_code ec;
    std::filesystem::remove(data_path_, ec);
    for (std::size_t i = 0; i < written_; ++i) std::filesystem::remove(temp_path(i), ec);
  }

  /// Adds a tensor of `n` bytes at `data` (as stored, little-endian), appending them to the open
  /// shard; writes the open shard first when this tensor would take it past the limit. Throws
  /// awq::Error when the byte count does not match dtype × shape, the name repeats, finish() was
  /// called, or a file cannot be written (naming it and the system's reason).
  void add_bytes(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, const void* data, std::size_t n) {
    awq::detail::require(!finished_, "awq::io::ShardedSafetensorsWriter: tensor '", name, "' added after finish()");
    awq::detail::require(shard_of_.count(name) == 0, "awq::io::ShardedSafetensorsWriter: tensor '", name, "' added twice");
    detail::check_tensor_bytes("awq::io::ShardedSafetensorsWriter", name, dtype, shape, n);
    if (!open_.empty() && open_bytes_ + n > max_) flush();
    if (!data_) {
      awq::detail::require(written_ < kMaxShards, "awq::io::ShardedSafetensorsWriter: tensor '", name, "' would start shard ", written_ + 1,
                           ", more than the ", kMaxShards, " that shard names can count: use a max_shard_bytes above ", max_);
      open_data();
    }
    FileSink(data_.get(), data_path_).write(data, n);
    open_.push_back({name, dtype, std::move(shape), open_bytes_, open_bytes_ + n});
    shard_of_[name] = written_;
    open_bytes_ += n;
    total_ += n;
  }
  /// Adds a tensor from its bytes.
  void add(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, const std::vector<std::uint8_t>& bytes) {
    add_bytes(name, dtype, std::move(shape), bytes.data(), bytes.size());
  }
  /// Adds a typed tensor from a vector of T (its bytes as stored).
  template <class T>
  void add_typed(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, const std::vector<T>& v) {
    add_bytes(name, dtype, std::move(shape), v.data(), v.size() * sizeof(T));
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

  /// Shards at most: the five digits of `model-0000i-of-0000N`.
  static constexpr std::size_t kMaxShards = 99999;

  /// Tensor bytes added so far (the index's `metadata.total_size`).
  std::uint64_t total_bytes() const noexcept { return total_; }
  /// Shards written in full so far (the open one not counted).
  std::size_t shards_written() const noexcept { return written_; }

  /// `model-0000i-of-0000N.safetensors` for shard `i` (from 0) of `count`.
  static std::string shard_name(std::size_t i, std::size_t count) {
    char b[64];
    std::snprintf(b, sizeof b, "model-%05zu-of-%05zu.safetensors", i + 1, count);
    return b;
  }

 private:
  struct Entry {
    std::string name, dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin, end;  // in the shard's data section
  };
  struct Close {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };

  std::string temp_path(std::size_t i) const {
    char b[64];
    std::snprintf(b, sizeof b, ".model-shard-%05zu.safetensors", i + 1);
    return (std::filesystem::path(dir_) / b).string();
  }

  void open_data() {
    char b[64];
    std::snprintf(b, sizeof b, ".model-shard-%05zu.data", written_ + 1);
    data_path_ = (std::filesystem::path(dir_) / b).string();
    data_.reset(std::fopen(data_path_.c_str(), "w+b"));
    awq::detail::require(data_ != nullptr, "awq::io::ShardedSafetensorsWriter: cannot create ", data_path_, ": ", std::strerror(errno));
    if (reserve_ > 0) FileSink(data_.get(), data_path_).write(std::string(reserve_, ' '));
  }

  void close_data() { data_.reset(); }

  // Writes the open shard (header, then its data file) to its temporary name and removes the data file.
  void flush() {
    if (open_.empty()) return;
    nlohmann::ordered_json h;
    h["__metadata__"] = {{"format", "pt"}};
    for (const auto& e : open_) h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {e.begin, e.end}}};
    std::string header = h.dump();
    while ((header.size() + 8) % 8) header.push_back(' ');  // align the data section to 8 bytes
    std::FILE* in = data_.get();
    const bool flushed = std::fflush(in) == 0;
    awq::detail::require(flushed, "awq::io::ShardedSafetensorsWriter: writing ", data_path_, " failed: ", std::strerror(errno),
                         " (disk full or file size limit?)");
    if (header.size() + 8 <= reserve_) {
      complete_in_place(header);
      return;
    }
    std::fseek(in, static_cast<long>(reserve_), SEEK_SET);
    write_atomically(temp_path(written_), [&](FileSink& out) {
      const std::uint64_t n = header.size();
      out.write(&n, 8);
      out.write(header);
      std::vector<char> buf(std::size_t{1} << 20);
      std::uint64_t copied = 0;
      for (std::size_t got; (got = std::fread(buf.data(), 1, buf.size(), in)) > 0; copied += got) out.write(buf.data(), got);
      awq::detail::require(!std::ferror(in) && copied == open_bytes_, "awq::io::ShardedSafetensorsWriter: reading ", data_path_,
                           " back gave ", copied, " of ", open_bytes_, " bytes");
    });
    close_data();
    std::error_code ec;
    std::filesystem::remove(data_path_, ec);
    next_shard();
  }
  // Writes `header` (padded with spaces) over the data file's reserve, syncs it and renames it
  // to the shard's temporary name, as write_atomically would have left it.
  void complete_in_place(std::string header) {
    header.resize(reserve_ - 8, ' ');
    const std::uint64_t n = header.size();
    std::FILE* f = data_.get();
    const auto fail = [&](const std::string& what) {
      throw Error(awq::detail::concat("awq::io::ShardedSafetensorsWriter: ", what, " failed: ", std::strerror(errno),
                                      " (disk full or file size limit?)"));
    };
    if (std::fseek(f, 0, SEEK_SET) != 0) fail("seeking in " + data_path_);
    FileSink out(f, data_path_);
    out.write(&n, 8);
    out.write(header);
    if (std::fflush(f) != 0) fail("flushing " + data_path_);
#if AWQ_HAVE_FSYNC
    if (::fsync(::fileno(f)) != 0) fail("syncing " + data_path_);
#endif
    close_data();
    const std::string to = temp_path(written_);
    if (std::rename(data_path_.c_str(), to.c_str()) != 0) fail("renaming " + data_path_ + " to " + to);
    detail::fsync_path(dir_, true);
    next_shard();
  }
  void next_shard() {
    ++written_;
    open_.clear();
    open_bytes_ = 0;
  }

  std::string dir_;
  std::uint64_t max_, reserve_;
  std::unique_ptr<std::FILE, Close> data_;  // the open shard's data file
  std::string data_path_;
  std::vector<Entry> open_;                      // the open shard's tensors, in order
  std::uint64_t open_bytes_ = 0, total_ = 0;
  std::size_t written_ = 0;                      // shards written
  std::map<std::string, std::size_t> shard_of_;  // tensor -> shard index
  bool finished_ = false;
};

}  // namespace io
}  // namespace awq
