/// \file
/// \brief safetensors reader and atomic writer (needs nlohmann-json, Debian nlohmann-json3-dev).
///
/// Format: an 8-byte little-endian header length N, N bytes of JSON
/// `{"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
/// then the data. The reader checks the header length, every offset and every shape against
/// the file before use; the writer writes to `path.tmp`, flushes and renames, so a failure never
/// leaves a half-written file under the final name.
#pragma once

#include <cstdint>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "awq/error.hpp"
#include "awq/io/atomic_file.hpp"

namespace awq {
namespace io {

/// \brief One tensor of a safetensors file.
struct SafetensorsTensor {
  std::string dtype;                  ///< "F32", "F16", "BF16", "I32", "U8", ...
  std::vector<std::int64_t> shape;    ///< extents, outermost first
  std::vector<std::uint8_t> data;     ///< raw little-endian bytes
};

namespace detail {
inline std::int64_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL") return 1;
  return 0;
}
}  // namespace detail

/// \brief Collects tensors and metadata, then writes them atomically.
class SafetensorsWriter {
 public:
  /// Adds a tensor; throws when the byte count does not match dtype × shape or the name repeats.
  void add(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes) {
    const std::int64_t es = detail::dtype_size(dtype);
    awq::detail::require(es > 0, "awq::io::SafetensorsWriter: tensor '", name, "' has unknown dtype '", dtype, "'");
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    awq::detail::require(static_cast<std::int64_t>(bytes.size()) == n * es, "awq::io::SafetensorsWriter: tensor '", name, "' has ",
                         bytes.size(), " bytes but dtype ", dtype, " and its shape need ", n * es);
    awq::detail::require(tensors_.count(name) == 0, "awq::io::SafetensorsWriter: tensor '", name, "' added twice");
    tensors_[name] = SafetensorsTensor{dtype, std::move(shape), std::move(bytes)};
  }
  /// Adds a typed tensor from a vector of T (bytes copied as stored).
  template <class T>
  void add_typed(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, const std::vector<T>& v) {
    std::vector<std::uint8_t> b(v.size() * sizeof(T));
    if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
    add(name, dtype, std::move(shape), std::move(b));
  }
  /// A `__metadata__` string entry.
  void metadata(const std::string& key, const std::string& value) { meta_[key] = value; }

  /// Writes the file: tensors in name order (so equal inputs give equal bytes), atomically
  /// (io::write_atomically: `path.tmp`, fsync, rename; a failure leaves `path` as it was).
  void write(const std::string& path) const {
    nlohmann::ordered_json h;
    if (!meta_.empty()) h["__metadata__"] = meta_;
    std::uint64_t off = 0;
    for (const auto& [name, t] : tensors_) {
      h[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.data.size()}}};
      off += t.data.size();
    }
    std::string header = h.dump();
    while ((header.size() + 8) % 8) header.push_back(' ');  // align the data section to 8 bytes
    write_atomically(path, [&](FileSink& out) {
      const std::uint64_t n = header.size();
      out.write(&n, 8);
      out.write(header);
      for (const auto& [name, t] : tensors_) out.write(t.data.data(), t.data.size());
    });
  }

 private:
  std::map<std::string, SafetensorsTensor> tensors_;
  std::map<std::string, std::string> meta_;
};

/// \brief A safetensors file read into memory and validated.
class SafetensorsFile {
 public:
  /// Header size limit checked before allocation.
  static constexpr std::uint64_t kMaxHeader = 100u << 20;

  /// Tensor count limit checked while parsing.
  static constexpr std::size_t kMaxTensors = 1u << 20;

  /// Reads and validates `path`; throws awq::Error for a truncated or malformed file.
  static SafetensorsFile open(const std::string& path) {
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    awq::detail::require(static_cast<bool>(f), "awq::io::SafetensorsFile: cannot open ", path);
    const auto size = static_cast<std::uint64_t>(f.tellg());
    f.seekg(0);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    f.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
    awq::detail::require(static_cast<bool>(f), "awq::io::SafetensorsFile: read error on ", path);
    return from_bytes(std::move(bytes), path);
  }

  /// Validates a file already in memory (`name` is used in messages).
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, const std::string& name = "<memory>") {
    const std::string& path = name;
    const std::uint64_t size = bytes.size();
    awq::detail::require(size >= 8, "awq::io::SafetensorsFile: ", path, " is truncated: ", size, " bytes, no header length");
    std::uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    awq::detail::require(n <= kMaxHeader && n <= size - 8, "awq::io::SafetensorsFile: ", path, ": header length ", n,
                         " exceeds the file (", size, " bytes) or 100 MiB");
    nlohmann::json h;
    try {
      h = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    } catch (const std::exception& e) {
      throw Error(awq::detail::concat("awq::io::SafetensorsFile: ", path, ": malformed JSON header: ", e.what()));
    }
    awq::detail::require(h.is_object(), "awq::io::SafetensorsFile: ", path, ": header is not a JSON object");
    awq::detail::require(h.size() <= kMaxTensors, "awq::io::SafetensorsFile: ", path, ": ", h.size(), " tensors exceed the limit ",
                         kMaxTensors);
    SafetensorsFile s;
    s.path_ = path;
    const std::uint64_t data_size = size - 8 - n;
    for (auto it = h.begin(); it != h.end(); ++it) {
      if (it.key() == "__metadata__") {
        awq::detail::require(it->is_object(), "awq::io::SafetensorsFile: ", path, ": __metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) s.meta_[m.key()] = m->get<std::string>();
        continue;
      }
      const auto& v = it.value();
      const auto bad = [&](const std::string& why) {
        return Error(awq::detail::concat("awq::io::SafetensorsFile: ", path, ": tensor '", it.key(), "' ", why));
      };
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") || !v["dtype"].is_string() ||
          !v["shape"].is_array() || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
        throw bad("has a malformed entry");
      Entry e;
      e.dtype = v["dtype"].get<std::string>();
      const std::int64_t es = detail::dtype_size(e.dtype);
      if (es == 0) throw bad("has unknown dtype '" + e.dtype + "'");
      if (v["shape"].size() > 8) throw bad(awq::detail::concat("has ", v["shape"].size(), " dimensions (at most 8)"));
      std::int64_t count = 1;
      for (const auto& d : v["shape"]) {
        if (!d.is_number_unsigned() || d.get<std::uint64_t>() > (1ull << 40)) throw bad("has a bad shape");
        const auto extent = d.get<std::int64_t>();
        if (extent != 0 && count > (1ll << 40) / extent) throw bad("is too large");  // checked before multiplying
        e.shape.push_back(extent);
        count *= extent;
      }
      if (!v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned()) throw bad("has bad data_offsets");
      e.begin = v["data_offsets"][0].get<std::uint64_t>();
      e.end = v["data_offsets"][1].get<std::uint64_t>();
      if (e.begin > e.end || e.end > data_size)
        throw bad(awq::detail::concat("needs bytes [", e.begin, ", ", e.end, ") of a data section of ", data_size, " (truncated?)"));
      if (e.end - e.begin != static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(es))
        throw bad("byte range does not match dtype and shape");
      s.entries_[it.key()] = e;
    }
    bytes.erase(bytes.begin(), bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
    s.data_ = std::move(bytes);
    return s;
  }

  /// True when the file has a tensor called `name`.
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& [k, v] : entries_) n.push_back(k);
    return n;
  }
  /// The `__metadata__` entries.
  const std::map<std::string, std::string>& metadata() const { return meta_; }
  /// A tensor by name; throws awq::Error naming it when unknown.
  SafetensorsTensor tensor(const std::string& name) const {
    const auto it = entries_.find(name);
    awq::detail::require(it != entries_.end(), "awq::io::SafetensorsFile: ", path_, " has no tensor '", name, "'");
    const Entry& e = it->second;
    return SafetensorsTensor{e.dtype, e.shape,
                             std::vector<std::uint8_t>(data_.begin() + static_cast<std::ptrdiff_t>(e.begin),
                                                       data_.begin() + static_cast<std::ptrdiff_t>(e.end))};
  }

 private:
  struct Entry {
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;
  };
  std::string path_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> meta_;
  std::vector<std::uint8_t> data_;
};

}  // namespace io
}  // namespace awq
