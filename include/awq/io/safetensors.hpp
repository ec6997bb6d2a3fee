/// \file
/// \brief safetensors reader (over a read-only mapping, with zero-copy views) and atomic writer
///        (needs nlohmann-json, Debian nlohmann-json3-dev).
///
/// Format: an 8-byte little-endian header length N, N bytes of JSON
/// `{"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
/// then the data. The reader checks the header length, every offset and every shape against
/// the file before use; the writer writes to a temporary sibling, flushes and renames, so a failure never
/// leaves a half-written file under the final name.
#pragma once

#include <cstdint>
#include <cstring>
#include <cstdio>
#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "awq/error.hpp"
#include "awq/io/atomic_file.hpp"
#include "awq/io/json_error.hpp"
#include "awq/io/mapped_file.hpp"

namespace awq {
namespace io {

/// \brief One tensor of a safetensors file.
struct SafetensorsTensor {
  std::string dtype;                  ///< "F32", "F16", "BF16", "I32", "U8", ...
  std::vector<std::int64_t> shape;    ///< extents, outermost first
  std::vector<std::uint8_t> data;     ///< raw little-endian bytes
};

/// \brief One tensor of a mapped safetensors file, its bytes a view into the mapping.
struct SafetensorsView {
  std::string dtype;                ///< as in SafetensorsTensor
  std::vector<std::int64_t> shape;  ///< extents, outermost first
  ByteSpan bytes;                   ///< raw little-endian bytes, in the mapping
};

namespace detail {
/// Bits per element of a safetensors dtype (the format's list), 0 when unknown.
inline std::uint64_t dtype_bits(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64" || d == "C64") return 64;
  if (d == "F32" || d == "I32" || d == "U32") return 32;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 16;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2" || d == "F8_E8M0") return 8;
  if (d == "F6_E2M3" || d == "F6_E3M2") return 6;
  if (d == "F4") return 4;
  return 0;
}
/// Bytes per element of a whole-byte dtype, 0 when unknown or sub-byte.
inline std::int64_t dtype_size(const std::string& d) {
  const std::uint64_t bits = dtype_bits(d);
  return bits % 8 ? 0 : static_cast<std::int64_t>(bits / 8);
}
/// Throws awq::Error (prefixed by `who`) unless `dtype` is a whole-byte dtype and `n` bytes hold
/// exactly `shape` of it.
inline void check_tensor_bytes(const char* who, const std::string& name, const std::string& dtype, const std::vector<std::int64_t>& shape,
                               std::size_t n) {
  const std::int64_t es = dtype_size(dtype);
  awq::detail::require(es > 0, who, ": tensor '", name, "' has unknown dtype '", dtype, "'");
  std::int64_t count = 1;
  for (auto d : shape) count *= d;
  awq::detail::require(static_cast<std::int64_t>(n) == count * es, who, ": tensor '", name, "' has ", n, " bytes but dtype ", dtype,
                       " and its shape need ", count * es);
}
}  // namespace detail

/// \brief Collects tensors and metadata, then writes them atomically.
class SafetensorsWriter {
 public:
  /// Adds a tensor; throws when the byte count does not match dtype × shape or the name repeats.
  void add(const std::string& name, const std::string& dtype, std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes) {
    detail::check_tensor_bytes("awq::io::SafetensorsWriter", name, dtype, shape, bytes.size());
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
  /// (io::write_atomically: a hidden temporary sibling, fsync, rename; a failure leaves `path` as it was).
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

namespace detail {

/// One tensor entry of a safetensors header as parsed, before validation.
struct StEntry {
  std::string name, dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::uint64_t> offsets;
  bool has_dtype = false, has_shape = false, has_offsets = false;
};

/// SAX reader of a safetensors header: builds the entries directly (no JSON tree, so memory is
/// proportional to what the header holds, and nesting deeper than the format's is refused at
/// once), and refuses repeated names and fields, unknown fields and values of the wrong kind.
class StHeaderSax : public nlohmann::json_sax<nlohmann::json> {
 public:
  StHeaderSax(const std::string& path, std::size_t max_tensors) : path_(path), max_tensors_(max_tensors) {}
  std::vector<StEntry> entries;
  std::map<std::string, std::string> meta;

  bool null() override { return value("null"); }
  bool boolean(bool) override { return value("a boolean"); }
  bool number_integer(number_integer_t v) override { return value(awq::detail::concat("the negative number ", v)); }
  bool number_unsigned(number_unsigned_t v) override {
    if (at_ == At::Shape) {
      if (v > static_cast<std::uint64_t>(INT64_MAX)) fail(awq::detail::concat("tensor '", cur().name, "' has extent ", v, " beyond 2^63"));
      cur().shape.push_back(static_cast<std::int64_t>(v));
      return true;
    }
    if (at_ == At::Offsets) {
      if (cur().offsets.size() == 2) fail(awq::detail::concat("tensor '", cur().name, "' has more than 2 data_offsets"));
      cur().offsets.push_back(v);
      return true;
    }
    return value(awq::detail::concat("the number ", v));
  }
  bool number_float(number_float_t, const string_t& text) override { return value("the non-integer number " + text); }
  bool string(string_t& v) override {
    if (at_ == At::Meta) {
      meta[key_] = v;
      return true;
    }
    if (at_ == At::Tensor && key_ == "dtype") {
      cur().dtype = v;
      return true;
    }
    return value("a string");
  }
  bool binary(binary_t&) override { return value("binary data"); }
  bool start_object(std::size_t) override {
    if (at_ == At::Start) at_ = At::Top;
    else if (at_ == At::Top) at_ = key_ == "__metadata__" ? At::Meta : At::Tensor;
    else value("an object");
    return true;
  }
  bool key(string_t& k) override {
    key_ = k;
    if (at_ == At::Top) {
      if (k == "__metadata__") {
        if (seen_meta_) fail("__metadata__ repeats");
        seen_meta_ = true;
        return true;
      }
      if (!names_.insert(k).second) fail(awq::detail::concat("tensor '", k, "' repeats"));
      if (entries.size() == max_tensors_) fail(awq::detail::concat("more than ", max_tensors_, " tensors"));
      entries.emplace_back();
      entries.back().name = k;
    } else if (at_ == At::Meta) {
      if (meta.count(k)) fail(awq::detail::concat("__metadata__ key '", k, "' repeats"));
    } else {
      bool* seen = k == "dtype" ? &cur().has_dtype : k == "shape" ? &cur().has_shape : k == "data_offsets" ? &cur().has_offsets : nullptr;
      if (!seen) fail(awq::detail::concat("tensor '", cur().name, "' has an unknown field '", k, "' (dtype, shape, data_offsets)"));
      if (*seen) fail(awq::detail::concat("tensor '", cur().name, "' has field '", k, "' twice"));
      *seen = true;
    }
    return true;
  }
  bool end_object() override {
    if (at_ == At::Tensor) {
      const StEntry& e = cur();
      if (!e.has_dtype || !e.has_shape || !e.has_offsets)
        fail(awq::detail::concat("tensor '", e.name, "' lacks ", !e.has_dtype ? "dtype" : !e.has_shape ? "shape" : "data_offsets"));
      at_ = At::Top;
    } else if (at_ == At::Meta) {
      at_ = At::Top;
    } else {
      at_ = At::Done;
    }
    return true;
  }
  bool start_array(std::size_t) override {
    if (at_ == At::Tensor && key_ == "shape") at_ = At::Shape;
    else if (at_ == At::Tensor && key_ == "data_offsets") at_ = At::Offsets;
    else value("an array");
    return true;
  }
  bool end_array() override {
    if (at_ == At::Offsets && cur().offsets.size() != 2)
      fail(awq::detail::concat("tensor '", cur().name, "' has ", cur().offsets.size(), " data_offsets, not 2"));
    at_ = At::Tensor;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override {
    fail(awq::detail::concat("malformed JSON header (not valid JSON): ", json_error_text(ex)));  // without nlohmann's id
  }

 private:
  enum class At { Start, Top, Tensor, Meta, Shape, Offsets, Done };
  [[noreturn]] void fail(const std::string& why) const { throw Error(awq::detail::concat("awq::io::SafetensorsFile: ", path_, ": ", why)); }
  StEntry& cur() { return entries.back(); }
  // A value where the format has none of its kind.
  [[noreturn]] bool value(const std::string& what) {
    switch (at_) {
      case At::Start: fail("header is not a JSON object");
      case At::Top: fail(awq::detail::concat(key_ == "__metadata__" ? "__metadata__" : "tensor '" + key_ + "'", " is ", what, ", not an object"));
      case At::Meta: fail(awq::detail::concat("__metadata__ '", key_, "' is ", what, "; the format allows only string values"));
      case At::Tensor: fail(awq::detail::concat("tensor '", cur().name, "' has ", what, " as its ", key_));
      case At::Shape: fail(awq::detail::concat("tensor '", cur().name, "' has ", what, " in its shape"));
      case At::Offsets: fail(awq::detail::concat("tensor '", cur().name, "' has ", what, " in its data_offsets"));
      default: fail(awq::detail::concat("header has ", what, " after its end"));
    }
  }

  const std::string& path_;
  std::size_t max_tensors_;
  At at_ = At::Start;
  std::string key_;
  bool seen_meta_ = false;
  std::set<std::string> names_;
};

}  // namespace detail

/// \brief A safetensors file, validated against every rule of the format before use.
///
/// The rules (huggingface/safetensors, "Format"): an 8-byte little-endian header length N, at
/// most 100 MiB and inside the file; N bytes of UTF-8 JSON beginning with '{'; an object of
/// tensors `{"dtype", "shape", "data_offsets": [begin, end]}` with unique names and a
/// `__metadata__` object of strings; byte ranges of exactly dtype × shape bytes that, sorted,
/// start at 0, follow each other without gap or overlap and end with the file (no holes, so no
/// polyglot files).
class SafetensorsFile {
 public:
  /// Header size limit checked before allocation.
  static constexpr std::uint64_t kMaxHeader = 100u << 20;

  /// Tensor count limit checked while parsing.
  static constexpr std::size_t kMaxTensors = 1u << 20;

  /// Maps `path` read-only (MappedFile) and validates it; throws awq::Error for a truncated or
  /// malformed file, or when it cannot be opened or mapped.
  static SafetensorsFile open(const std::string& path) {
    SafetensorsFile s;
    s.path_ = path;
    s.file_ = MappedFile::map(path, "awq::io::SafetensorsFile");
    s.data_offset_ = s.parse(s.file_->data(), s.file_->size());
    return s;
  }

  /// Validates a file already in memory (`name` is used in messages).
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, const std::string& name = "<memory>") {
    SafetensorsFile s;
    s.path_ = name;
    s.file_ = MappedFile::hold(std::move(bytes));
    s.data_offset_ = s.parse(s.file_->data(), s.file_->size());
    return s;
  }

  /// The file (or the name given to from_bytes).
  const std::string& path() const { return path_; }

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
  /// A tensor by name, its bytes copied; throws awq::Error naming it when unknown.
  SafetensorsTensor tensor(const std::string& name) const {
    const SafetensorsView v = view(name);
    return SafetensorsTensor{v.dtype, v.shape, std::vector<std::uint8_t>(v.bytes.data, v.bytes.data + v.bytes.size)};
  }

  /// A tensor by name without a copy of its bytes: a view into the mapping, valid while this
  /// object or a copy of it lives. Throws awq::Error when the name is unknown or the file shrank
  /// since it was mapped (MappedFile::check_size).
  SafetensorsView view(const std::string& name) const {
    const Entry& e = entry(name);
    file_->check_size(path_, "awq::io::SafetensorsFile");
    return SafetensorsView{e.dtype, e.shape, ByteSpan{file_->data() + data_offset_ + e.begin, static_cast<std::size_t>(e.end - e.begin)}};
  }

 private:
  struct Entry {
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;
  };

  const Entry& entry(const std::string& name) const {
    const auto it = entries_.find(name);
    awq::detail::require(it != entries_.end(), "awq::io::SafetensorsFile: ", path_, " has no tensor '", name, "'");
    return it->second;
  }

  // Validates the whole file and fills entries_ and meta_; returns where the data starts.
  std::uint64_t parse(const std::uint8_t* bytes, std::uint64_t size) {
    const auto fail = [&](auto&&... why) { throw Error(awq::detail::concat("awq::io::SafetensorsFile: ", path_, ": ", why...)); };
    if (size < 8) fail("is truncated: ", size, " bytes, no header length");
    std::uint64_t n = 0;
    std::memcpy(&n, bytes, 8);
    if (n > kMaxHeader || n > size - 8) fail("header length ", n, " exceeds the file (", size, " bytes) or 100 MiB");
    if (n == 0 || bytes[8] != '{')
      fail("header is not a JSON object (", n == 0 ? "it is empty" : awq::detail::concat("it begins with byte 0x", std::hex, +bytes[8]),
           "; the format requires '{')");
    // JSON has no NUL outside strings and none unescaped inside; the parser would stop at one
    // and ignore what follows, so a NUL anywhere would hide bytes from the check.
    if (const void* nul = std::memchr(bytes + 8, 0, static_cast<std::size_t>(n)))
      fail("header has a NUL byte at offset ", static_cast<const std::uint8_t*>(nul) - bytes);
    detail::StHeaderSax sax(path_, kMaxTensors);
    nlohmann::json::sax_parse(bytes + 8, bytes + 8 + n, &sax);
    meta_ = std::move(sax.meta);
    const std::uint64_t data_size = size - 8 - n;
    std::vector<std::map<std::string, Entry>::const_iterator> order;  // to check the tiling
    order.reserve(sax.entries.size());
    for (auto& st : sax.entries) {
      const auto bad = [&](auto&&... why) { fail("tensor '", st.name, "' ", why...); };
      const std::uint64_t bits = detail::dtype_bits(st.dtype);
      if (bits == 0) bad("has unknown dtype '", st.dtype, "'");
      std::uint64_t count = 1;
      for (const auto d : st.shape) {  // overflow is refused even where a later extent is 0, as the reference does
        const auto e = static_cast<std::uint64_t>(d);
        if (e != 0 && count > (std::uint64_t{1} << 56) / e) bad("is too large: its shape has more than 2^56 elements");
        count *= e;
      }
      if (count * bits % 8) bad("has ", count, " elements of ", st.dtype, ", not a whole number of bytes");
      const std::uint64_t need = count / 8 * bits + count % 8 * bits / 8;
      const std::uint64_t begin = st.offsets[0], end = st.offsets[1];
      if (begin > end) bad("has data_offsets [", begin, ", ", end, ") that end before they begin");
      if (end - begin != need)
        bad("byte range does not match its dtype and shape: [", begin, ", ", end, ") holds ", end - begin, " bytes, ", st.dtype, " x ",
            count, " needs ", need);
      if (end > data_size) bad("needs bytes [", begin, ", ", end, ") of a data section of ", data_size, " (truncated?)");
      order.push_back(entries_.emplace(std::move(st.name), Entry{std::move(st.dtype), std::move(st.shape), begin, end}).first);
    }
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return a->second.begin != b->second.begin ? a->second.begin < b->second.begin : a->second.end < b->second.end;
    });
    std::uint64_t covered = 0;
    const std::string* prev = nullptr;
    for (const auto& it : order) {
      const Entry& e = it->second;
      if (e.begin < covered) fail("tensor '", it->first, "' at bytes [", e.begin, ", ", e.end, ") overlaps tensor '", *prev, "'");
      if (e.begin > covered) fail("the data section has a hole at bytes [", covered, ", ", e.begin, ") before tensor '", it->first, "'");
      covered = e.end;
      prev = &it->first;
    }
    if (covered != data_size) fail("the data section has ", data_size - covered, " bytes after the last tensor that no tensor describes");
    return 8 + n;
  }

  std::string path_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> meta_;
  std::shared_ptr<const MappedFile> file_;
  std::uint64_t data_offset_ = 0;
};

}  // namespace io
}  // namespace awq
