/// \file
/// \brief GGUF (version 2 and 3) reader over a read-only mapping of the file: header, metadata,
///        tensor infos, alignment, zero-copy views of the tensors' bytes, and dequantization to
///        float of F32, F16, BF16, Q4_0, Q4_1 and Q8_0 tensors.
///
/// Every length, count and offset is checked against the file size and against fixed limits
/// before anything is allocated, so a truncated or hostile file raises awq::Error naming the
/// field and the position instead of reading out of bounds or allocating gigabytes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "awq/error.hpp"
#include "awq/io/mapped_file.hpp"

namespace awq {
namespace io {

/// ggml tensor types this reader dequantizes (every ggml type with a known layout is read and
/// validated; gguf_type_name names them all).
enum class GgmlType : std::uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };

/// \brief One metadata value. Scalars fill `i` (integers, bools), `f` (floats) or `s`;
///        arrays fill `strs`, `ints` or `floats`.
struct GgufValue {
  std::uint32_t type = 0;          ///< GGUF value type (0..12)
  std::uint32_t array_type = 0;    ///< element type when type == 9 (array)
  std::int64_t i = 0;              ///< integer or bool value
  double f = 0;                    ///< float value
  std::string s;                   ///< string value
  std::vector<std::string> strs;   ///< string array
  std::vector<std::int64_t> ints;  ///< integer / bool array
  std::vector<double> floats;      ///< float array
  /// Elements of an array (0 for a scalar).
  std::size_t length() const { return strs.size() + ints.size() + floats.size(); }
};

/// \brief Where a tensor is and what it holds. dims[0] is the fastest-varying (ggml ne0).
struct GgufTensorInfo {
  std::string name;                 ///< tensor name
  std::vector<std::uint64_t> dims;  ///< extents, innermost first
  std::uint32_t type = 0;           ///< ggml type id
  std::uint64_t offset = 0;         ///< offset inside the data section
  std::uint64_t n_elements = 0;     ///< product of dims
  std::uint64_t n_bytes = 0;        ///< bytes in the file
};

/// The name of ggml type `type` as ggml spells it ("F32", "Q4_1", "Q8_0", "BF16", ...), by
/// number, including types GGUF files no longer carry; "unknown(N)" for any other number.
inline std::string gguf_type_name(std::uint32_t type);

/// The name of GGUF metadata value type `type` as ggml spells it: "u8", "i8", "u16", "i16",
/// "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"; "unknown(N)" otherwise.
inline std::string gguf_value_type_name(std::uint32_t type) {
  static const char* const names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
  return type < 13 ? names[type] : "unknown(" + std::to_string(type) + ")";
}

namespace detail {

/// A ggml type: its name and storage, `block` elements in `bytes` bytes (0 and 0 for types
/// removed from GGUF or newer than this table, whose layout is not known here).
struct GgmlTypeInfo {
  const char* name;
  std::uint64_t block;
  std::uint64_t bytes;
};

/// The ggml type table (ggml.h enum ggml_type; block sizes from ggml-common.h), by number.
inline const GgmlTypeInfo* ggml_type_info(std::uint32_t t) {
  static constexpr GgmlTypeInfo table[] = {
      {"F32", 1, 4},         {"F16", 1, 2},         {"Q4_0", 32, 18},      {"Q4_1", 32, 20},      {"Q4_2", 0, 0},
      {"Q4_3", 0, 0},        {"Q5_0", 32, 22},      {"Q5_1", 32, 24},      {"Q8_0", 32, 34},      {"Q8_1", 32, 36},
      {"Q2_K", 256, 84},     {"Q3_K", 256, 110},    {"Q4_K", 256, 144},    {"Q5_K", 256, 176},    {"Q6_K", 256, 210},
      {"Q8_K", 256, 292},    {"IQ2_XXS", 256, 66},  {"IQ2_XS", 256, 74},   {"IQ3_XXS", 256, 98},  {"IQ1_S", 256, 50},
      {"IQ4_NL", 32, 18},    {"IQ3_S", 256, 110},   {"IQ2_S", 256, 82},    {"IQ4_XS", 256, 136},  {"I8", 1, 1},
      {"I16", 1, 2},         {"I32", 1, 4},         {"I64", 1, 8},         {"F64", 1, 8},         {"IQ1_M", 256, 56},
      {"BF16", 1, 2},        {"Q4_0_4_4", 0, 0},    {"Q4_0_4_8", 0, 0},    {"Q4_0_8_8", 0, 0},    {"TQ1_0", 256, 54},
      {"TQ2_0", 256, 66},    {"IQ4_NL_4_4", 0, 0},  {"IQ4_NL_4_8", 0, 0},  {"IQ4_NL_8_8", 0, 0},  {"MXFP4", 32, 17},
      {"NVFP4", 0, 0},       {"Q1_0", 0, 0},
  };
  return t < sizeof(table) / sizeof(table[0]) ? &table[t] : nullptr;
}

inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Bounds-checked little-endian cursor over the file bytes; every error names the file.
class Cursor {
 public:
  Cursor(const std::uint8_t* data, std::uint64_t size, const std::string& path) : b_(data), size_(size), path_(path) {}
  std::uint64_t pos() const { return pos_; }
  std::uint64_t left() const { return size_ - pos_; }
  [[noreturn]] void fail(const std::string& what) const { throw Error(awq::detail::concat("awq::io::GgufFile: ", path_, ": ", what)); }
  void need(std::uint64_t n, const char* what) const {
    if (n > left())
      throw Error(awq::detail::concat("awq::io::GgufFile: ", path_, " is truncated: ", what, " needs ", n, " bytes at offset ", pos_,
                                      ", ", left(), " left"));
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  /// A GGUF string (u64 length, bytes) of at most `max` bytes (and never over 1 MiB); the
  /// length is checked against the limits and the bytes left before anything is allocated.
  std::string str(const char* what, std::uint64_t max) {
    const auto n = read<std::uint64_t>(what);
    if (n > (1u << 20)) fail(awq::detail::concat(what, " length ", n, " at offset ", pos_ - 8, " exceeds 1 MiB"));
    if (n > max) fail(awq::detail::concat(what, " length ", n, " at offset ", pos_ - 8, " exceeds ", max, " bytes"));
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_ + pos_), static_cast<std::size_t>(n));
    pos_ += n;
    return s;
  }

 private:
  const std::uint8_t* b_;
  std::uint64_t size_;
  const std::string& path_;
  std::uint64_t pos_ = 0;
};

/// Smallest encoding of one value of GGUF type `t` (a string is at least its 8-byte length),
/// 0 for a type that is not a scalar.
inline std::uint64_t gguf_min_value_bytes(std::uint32_t t) {
  switch (t) {
    case 0: case 1: case 7: return 1;
    case 2: case 3: return 2;
    case 4: case 5: case 6: return 4;
    case 8: case 10: case 11: case 12: return 8;
    default: return 0;
  }
}

inline std::uint64_t align_up(std::uint64_t x, std::uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace detail

inline std::string gguf_type_name(std::uint32_t type) {
  const detail::GgmlTypeInfo* t = detail::ggml_type_info(type);
  return t ? t->name : "unknown(" + std::to_string(type) + ")";
}

/// \brief A GGUF file, mapped read-only and validated, with its metadata and tensor directory.
class GgufFile {
 public:
  /// Maps `path` read-only (MappedFile) and validates it; throws awq::Error for anything
  /// malformed or truncated, or when the file cannot be opened or mapped.
  static GgufFile open(const std::string& path) {
    GgufFile g;
    g.path_ = path;
    g.file_ = MappedFile::map(path, "awq::io::GgufFile");
    g.parse(g.file_->data(), g.file_->size());
    return g;
  }
  /// Parses bytes already in memory (`name` is used in messages).
  static GgufFile from_bytes(std::vector<std::uint8_t> bytes, const std::string& name = "<memory>") {
    GgufFile g;
    g.path_ = name;
    g.file_ = MappedFile::hold(std::move(bytes));
    g.parse(g.file_->data(), g.file_->size());
    return g;
  }

  const std::string& path() const { return path_; }                           ///< the file (or name)
  std::uint32_t version() const { return version_; }                          ///< 2 or 3
  std::uint64_t alignment() const { return alignment_; }                      ///< data alignment
  const std::map<std::string, GgufValue>& metadata() const { return meta_; }  ///< all key/values
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }     ///< tensor directory

  /// The metadata value under `key`; throws awq::Error naming the key when absent.
  const GgufValue& value(const std::string& key) const {
    const auto it = meta_.find(key);
    awq::detail::require(it != meta_.end(), "awq::io::GgufFile: ", path_, " has no metadata key '", key, "'");
    return it->second;
  }
  /// Integer metadata (any integer or bool type); throws awq::Error for another type.
  std::int64_t get_int(const std::string& key) const { return typed(key, "an integer", [](std::uint32_t t) { return t <= 5 || t == 7 || t == 10 || t == 11; }).i; }
  /// Float metadata (f32, f64, or an integer type converted); throws awq::Error for another type.
  double get_float(const std::string& key) const { return typed(key, "a number", [](std::uint32_t t) { return t <= 7 || t >= 10; }).f; }
  /// String metadata; throws awq::Error for another type.
  const std::string& get_string(const std::string& key) const { return typed(key, "a string", [](std::uint32_t t) { return t == 8; }).s; }
  /// Is `key` present?
  bool has(const std::string& key) const { return meta_.count(key) != 0; }

  /// The tensor called `name`; throws awq::Error naming it when unknown.
  const GgufTensorInfo& tensor(const std::string& name) const {
    const auto it = index_.find(name);
    awq::detail::require(it != index_.end(), "awq::io::GgufFile: ", path_, " has no tensor '", name, "'");
    return tensors_[it->second];
  }

  /// The stored bytes of tensor `name` (t.n_bytes of them), without a copy: a view into the
  /// mapping, valid while this object or a copy of it lives. Throws awq::Error when the tensor is
  /// unknown or the file shrank since it was mapped (MappedFile::check_size).
  ByteSpan bytes(const std::string& name) const {
    const GgufTensorInfo& t = tensor(name);
    file_->check_size(path_, "awq::io::GgufFile");
    return ByteSpan{file_->data() + data_start_ + t.offset, static_cast<std::size_t>(t.n_bytes)};
  }

  /// Dequantizes tensor `name` to float, in file order (dims[0] fastest).
  std::vector<float> dequantize(const std::string& name) const {
    const GgufTensorInfo& t = tensor(name);
    const std::uint8_t* p = bytes(name).data;
    std::vector<float> out(static_cast<std::size_t>(t.n_elements));
    auto f16 = [](const std::uint8_t* q) {
      std::uint16_t h;
      std::memcpy(&h, q, 2);
      return detail::half_to_float(h);
    };
    switch (t.type) {
      case 0:
        std::memcpy(out.data(), p, out.size() * 4);
        break;
      case 1:
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = f16(p + 2 * i);
        break;
      case 30:
        for (std::size_t i = 0; i < out.size(); ++i) {
          const std::uint32_t bits = static_cast<std::uint32_t>(p[2 * i] | (p[2 * i + 1] << 8)) << 16;
          std::memcpy(&out[i], &bits, 4);
        }
        break;
      case 2:  // Q4_0: x = d * (q - 8); low nibbles are elements 0..15, high nibbles 16..31
      case 3:  // Q4_1: x = d * q + m
        for (std::size_t b = 0; b < out.size() / 32; ++b) {
          const std::uint8_t* blk = p + b * (t.type == 2 ? 18 : 20);
          const float d = f16(blk), m = t.type == 3 ? f16(blk + 2) : 0.0f;
          const std::uint8_t* qs = blk + (t.type == 2 ? 2 : 4);
          for (int j = 0; j < 16; ++j) {
            const int lo = qs[j] & 0xF, hi = qs[j] >> 4;
            out[b * 32 + j] = t.type == 2 ? d * static_cast<float>(lo - 8) : d * static_cast<float>(lo) + m;
            out[b * 32 + j + 16] = t.type == 2 ? d * static_cast<float>(hi - 8) : d * static_cast<float>(hi) + m;
          }
        }
        break;
      case 8:  // Q8_0: x = d * q
        for (std::size_t b = 0; b < out.size() / 32; ++b) {
          const std::uint8_t* blk = p + b * 34;
          const float d = f16(blk);
          for (int j = 0; j < 32; ++j) out[b * 32 + j] = d * static_cast<float>(static_cast<std::int8_t>(blk[2 + j]));
        }
        break;
      default:
        throw Error(awq::detail::concat("awq::io::GgufFile: ", path_, ": tensor '", name, "' has ggml type ", gguf_type_name(t.type),
                                        ", which this reader does not dequantize (F32, F16, BF16, Q4_0, Q4_1, Q8_0)"));
    }
    return out;
  }

  /// Limits checked before allocation (on top of "fits in the bytes left").
  static constexpr std::uint64_t kMaxTensors = 1u << 16;   ///< tensors in a file
  static constexpr std::uint64_t kMaxKeys = 1u << 16;      ///< metadata keys
  static constexpr std::uint64_t kMaxArray = 1u << 24;     ///< elements in one metadata array
  /// Elements in all metadata arrays together (real files hold a few million; this bounds the
  /// memory a file of many arrays of one-byte or empty-string elements can make the reader take).
  static constexpr std::uint64_t kMaxArrayTotal = 1u << 25;
  static constexpr std::uint64_t kMaxKeyBytes = 65535;     ///< a metadata key (the format's limit)
  static constexpr std::uint64_t kMaxNameBytes = 64;       ///< a tensor name (the format's limit)
  static constexpr std::uint32_t kMaxDims = 4;             ///< dimensions of a tensor (GGML_MAX_DIMS)

 private:
  template <class Accepts>
  const GgufValue& typed(const std::string& key, const char* wanted, Accepts accepts) const {
    const GgufValue& v = value(key);
    awq::detail::require(accepts(v.type), "awq::io::GgufFile: ", path_, ": metadata '", key, "' has value type ", gguf_value_type_name(v.type),
                         ", not ", wanted);
    return v;
  }

  // Smallest tensor info: name length, n_dims, one extent, type, offset.
  static constexpr std::uint64_t kMinTensorInfo = 8 + 4 + 8 + 4 + 8;
  // Smallest key/value: key length, value type, a one-byte value.
  static constexpr std::uint64_t kMinKeyValue = 8 + 4 + 1;

  // The format, clause by clause (ggml docs/gguf.md): magic, version, counts, key/values,
  // tensor infos, padding to general.alignment, then the tensors' data, each at an aligned
  // offset. Every count is checked against the bytes left before anything is reserved.
  void parse(const std::uint8_t* data, std::uint64_t size) {
    detail::Cursor c(data, size, path_);
    const auto magic = c.read<std::uint32_t>("magic");
    if (magic != 0x46554747u) c.fail(awq::detail::concat("is not a GGUF file (magic 0x", std::hex, magic, std::dec, ", expected 'GGUF')"));
    version_ = c.read<std::uint32_t>("version");
    const std::uint32_t swapped = (version_ >> 24) | ((version_ >> 8) & 0xFF00u) | ((version_ << 8) & 0xFF0000u) | (version_ << 24);
    if (swapped == 2 || swapped == 3) c.fail(awq::detail::concat("is a big-endian GGUF (version ", swapped, "); only little-endian files are read"));
    if (version_ == 1) c.fail("GGUF version 1 (32-bit counts) is not supported; versions 2 and 3 are");
    if (version_ != 2 && version_ != 3) c.fail(awq::detail::concat("unsupported GGUF version ", version_, " (versions 2 and 3 are read)"));
    const auto n_tensors = c.read<std::uint64_t>("tensor count");
    const auto n_kv = c.read<std::uint64_t>("metadata count");
    if (n_kv > kMaxKeys || n_kv > c.left() / kMinKeyValue)
      c.fail(awq::detail::concat("metadata count ", n_kv, " cannot fit in the ", c.left(), " bytes left (limit ", kMaxKeys, ")"));
    if (n_tensors > kMaxTensors || n_tensors > c.left() / kMinTensorInfo)
      c.fail(awq::detail::concat("tensor count ", n_tensors, " cannot fit in the ", c.left(), " bytes left (limit ", kMaxTensors, ")"));
    std::uint64_t array_total = 0;
    for (std::uint64_t k = 0; k < n_kv; ++k) {
      const std::uint64_t at = c.pos();
      std::string key = c.str("metadata key", kMaxKeyBytes);
      if (key.empty()) c.fail(awq::detail::concat("metadata key ", k, " at offset ", at, " is empty"));
      for (const char ch : key)
        if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7E)
          c.fail(awq::detail::concat("metadata key at offset ", at, " has byte 0x", std::hex, +static_cast<unsigned char>(ch), std::dec,
                                     ", keys are printable ASCII"));
      if (meta_.count(key)) c.fail(awq::detail::concat("metadata key '", key, "' repeats (again at offset ", at, ")"));
      GgufValue v;
      v.type = c.read<std::uint32_t>("metadata type");
      read_value(c, v, key, array_total);
      meta_.emplace(std::move(key), std::move(v));
    }
    alignment_ = 32;
    if (has("general.alignment")) {
      const GgufValue& a = value("general.alignment");
      if (a.type != 4) c.fail(awq::detail::concat("general.alignment has value type ", gguf_value_type_name(a.type), ", the format requires u32"));
      alignment_ = static_cast<std::uint64_t>(a.i);
      if (alignment_ == 0 || (alignment_ & (alignment_ - 1)) != 0)
        c.fail(awq::detail::concat("general.alignment ", alignment_, " is not a power of two"));
    }
    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) tensors_.push_back(read_tensor_info(c));
    data_start_ = detail::align_up(c.pos(), alignment_);
    if (tensors_.empty() && data_start_ > size) data_start_ = size;  // no data: the padding may be absent
    if (data_start_ > size)
      c.fail(awq::detail::concat("is truncated before its data section (at offset ", data_start_, ", file of ", size, " bytes)"));
    check_layout(c, size - data_start_);
  }

  GgufTensorInfo read_tensor_info(detail::Cursor& c) {
    GgufTensorInfo t;
    const std::uint64_t at = c.pos();
    t.name = c.str("tensor name", kMaxNameBytes);
    if (!index_.emplace(t.name, tensors_.size()).second)
      c.fail(awq::detail::concat("tensor '", t.name, "' repeats (again at offset ", at, ")"));
    const auto nd = c.read<std::uint32_t>("tensor n_dims");
    const auto bad = [&](auto&&... why) { c.fail(awq::detail::concat("tensor '", t.name, "' ", why...)); };
    if (nd < 1 || nd > kMaxDims) bad("has ", nd, " dimensions (1 to ", kMaxDims, ")");
    t.n_elements = 1;
    for (std::uint32_t d = 0; d < nd; ++d) {
      const auto e = c.read<std::uint64_t>("tensor dim");
      if (e == 0) bad("has extent 0 in dim ", d);
      if (e > static_cast<std::uint64_t>(INT64_MAX)) bad("has a negative extent ", static_cast<std::int64_t>(e), " in dim ", d);
      if (t.n_elements > static_cast<std::uint64_t>(INT64_MAX) / e) bad("has more than 2^63 elements (extent ", e, " in dim ", d, ")");
      t.dims.push_back(e);
      t.n_elements *= e;
    }
    t.type = c.read<std::uint32_t>("tensor type");
    t.offset = c.read<std::uint64_t>("tensor offset");
    const detail::GgmlTypeInfo* tr = detail::ggml_type_info(t.type);
    if (!tr) bad("has unknown ggml type ", t.type);
    if (tr->block == 0) bad("has ggml type ", tr->name, " (", t.type, "), whose layout this reader does not know (removed from GGUF, or newer)");
    if (t.dims[0] % tr->block) bad("row of ", t.dims[0], " is not a multiple of its block size ", tr->block, " (", tr->name, ")");
    if (t.n_elements / tr->block > UINT64_MAX / tr->bytes) bad("byte size overflows");
    t.n_bytes = t.n_elements / tr->block * tr->bytes;
    if (t.offset % alignment_) bad("offset ", t.offset, " is not aligned to ", alignment_);
    return t;
  }

  // Every tensor inside the data section, and the tensors in offset order tile it: each starts
  // where the previous one ends, rounded up to the alignment (no overlap, no hole), and the
  // section ends with the last tensor and its padding.
  void check_layout(const detail::Cursor& c, std::uint64_t data_size) const {
    for (const auto& t : tensors_)
      if (t.offset > data_size || t.n_bytes > data_size - t.offset)
        throw Error(awq::detail::concat("awq::io::GgufFile: ", path_, " is truncated: tensor '", t.name, "' needs bytes [", t.offset, ", ",
                                        t.offset + t.n_bytes, ") of a data section of ", data_size));
    std::vector<const GgufTensorInfo*> order;
    order.reserve(tensors_.size());
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
    std::uint64_t end = 0;
    const GgufTensorInfo* prev = nullptr;
    for (const auto* t : order) {
      if (t->offset < end)
        c.fail(awq::detail::concat("tensor '", t->name, "' at data offset ", t->offset, " overlaps tensor '", prev->name, "' (bytes [",
                                   prev->offset, ", ", end, "))"));
      if (t->offset > detail::align_up(end, alignment_))
        c.fail(awq::detail::concat("the data section has a hole of ", t->offset - end, " bytes before tensor '", t->name, "' at data offset ",
                                   t->offset));
      end = t->offset + t->n_bytes;
      prev = t;
    }
    if (data_size > detail::align_up(end, alignment_))
      c.fail(awq::detail::concat("has ", data_size - end, " bytes after the last tensor's data (which ends at data offset ", end,
                                 "), that no tensor describes"));
  }

  void read_value(detail::Cursor& c, GgufValue& v, const std::string& key, std::uint64_t& array_total) {
    const auto bad = [&](auto&&... why) { c.fail(awq::detail::concat("metadata '", key, "' ", why...)); };
    auto scalar = [&](std::uint32_t type, std::int64_t& i, double& f, std::string& s) {
      switch (type) {
        case 0: i = c.read<std::uint8_t>("u8"); break;
        case 1: i = c.read<std::int8_t>("i8"); break;
        case 2: i = c.read<std::uint16_t>("u16"); break;
        case 3: i = c.read<std::int16_t>("i16"); break;
        case 4: i = c.read<std::uint32_t>("u32"); break;
        case 5: i = c.read<std::int32_t>("i32"); break;
        case 6: f = c.read<float>("f32"); break;
        case 7:
          i = c.read<std::uint8_t>("bool");
          if (i > 1) bad("has bool value ", i, " at offset ", c.pos() - 1, " (0 or 1)");
          break;
        case 8: s = c.str("string value", 1u << 20); break;
        case 10: i = static_cast<std::int64_t>(c.read<std::uint64_t>("u64")); break;
        case 11: i = c.read<std::int64_t>("i64"); break;
        case 12: f = c.read<double>("f64"); break;
        default: bad("has unknown value type ", type, " at offset ", c.pos() - 4);
      }
    };
    if (v.type != 9) {
      scalar(v.type, v.i, v.f, v.s);
      if (v.type == 6 || v.type == 12)  // an out-of-range or NaN float has no integer value (0)
        v.i = std::isfinite(v.f) && std::abs(v.f) < 9.2e18 ? static_cast<std::int64_t>(v.f) : 0;
      else v.f = static_cast<double>(v.i);
      return;
    }
    v.array_type = c.read<std::uint32_t>("array type");
    const auto n = c.read<std::uint64_t>("array length");
    if (v.array_type == 9) bad("is a nested array, which this reader does not support");
    const std::uint64_t min_bytes = detail::gguf_min_value_bytes(v.array_type);
    if (min_bytes == 0) bad("is an array of unknown value type ", v.array_type, " at offset ", c.pos() - 12);
    if (n > kMaxArray || n > c.left() / min_bytes)
      bad("array length ", n, " cannot fit in the ", c.left(), " bytes left (limit ", kMaxArray, ")");
    array_total += n;
    if (array_total > kMaxArrayTotal) bad("array length ", n, " brings the file's array elements over ", kMaxArrayTotal);
    if (v.array_type == 8) v.strs.reserve(static_cast<std::size_t>(n));
    else if (v.array_type == 6 || v.array_type == 12) v.floats.reserve(static_cast<std::size_t>(n));
    else v.ints.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t e = 0; e < n; ++e) {
      std::int64_t i = 0;
      double f = 0;
      std::string s;
      scalar(v.array_type, i, f, s);
      if (v.array_type == 8) v.strs.push_back(std::move(s));
      else if (v.array_type == 6 || v.array_type == 12) v.floats.push_back(f);
      else v.ints.push_back(i);
    }
  }

  std::string path_;
  std::shared_ptr<const MappedFile> file_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_start_ = 0;
  std::map<std::string, GgufValue> meta_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;  // tensor name -> position in tensors_
};

}  // namespace io
}  // namespace awq
