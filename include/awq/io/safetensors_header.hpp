/// \file
/// \brief A safetensors file's header read on its own, without the data section, and a tensor's
///        bytes read through a memory map of just their pages (needs nlohmann-json).
///
/// The lazy readers (io::HfCheckpoint) read every shard's header at open, check every tensor's
/// byte range against the file's size, and touch the data only when a tensor is asked for.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "awq/error.hpp"
#include "awq/io/have_mmap.hpp"
#include "awq/io/json_error.hpp"
#include "awq/io/safetensors.hpp"

namespace awq {
namespace io {

/// \brief Where one tensor lives in a safetensors file.
struct SafetensorsEntry {
  std::string dtype;                ///< "F32", "F16", "BF16", ...
  std::vector<std::int64_t> shape;  ///< extents, outermost first
  std::uint64_t begin = 0;          ///< first byte, from the start of the file
  std::uint64_t end = 0;            ///< one past the last byte, from the start of the file
};

/// \brief A safetensors header: its tensors (absolute byte ranges) and `__metadata__`.
struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;  ///< by name (sorted)
  std::map<std::string, std::string> metadata;      ///< the string entries of `__metadata__`
  std::uint64_t file_size = 0;                      ///< the size the ranges were checked against
  std::uint64_t data_end = 0;                       ///< the largest `end`: the file must be this long
};

namespace detail {

inline std::string shape_string(const std::vector<std::int64_t>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

/// Whether `f` is a transformers shard name, `model-00001-of-00002.safetensors`.
inline bool is_shard_name(const std::string& f) {
  const auto digits = [&](std::size_t at) { return f.find_first_not_of("0123456789", at) == at + 5; };
  return f.size() == 32 && f.compare(0, 6, "model-") == 0 && digits(6) && f.compare(11, 4, "-of-") == 0 && digits(15) &&
         f.compare(20, 12, ".safetensors") == 0;
}

/// Parses the JSON header `text` of `path` (a file of `file_size` bytes whose data section starts
/// at `data_start`) and checks every entry: dtype, shape, byte count, range inside the file, no overlap.
inline SafetensorsHeader parse_safetensors_header(const std::string& text, const std::string& path, std::uint64_t data_start,
                                                  std::uint64_t file_size) {
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // without nlohmann's "[json.exception...]" id
    throw Error(awq::detail::concat("awq::io::safetensors: ", path, ": malformed JSON header (not valid JSON): ", json_error_text(e)));
  }
  awq::detail::require(h.is_object(), "awq::io::safetensors: ", path, ": header is not a JSON object");
  awq::detail::require(h.size() <= SafetensorsFile::kMaxTensors, "awq::io::safetensors: ", path, ": ", h.size(),
                       " tensors exceed the limit ", SafetensorsFile::kMaxTensors);
  SafetensorsHeader out;
  out.file_size = file_size;
  out.data_end = data_start;
  std::map<std::uint64_t, std::pair<std::uint64_t, std::string>> by_begin;  // for the overlap check
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      awq::detail::require(it->is_object(), "awq::io::safetensors: ", path, ": __metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m)
        if (m->is_string()) out.metadata[m.key()] = m->get<std::string>();
      continue;
    }
    const auto& v = it.value();
    const auto bad = [&](const std::string& why) {
      return Error(awq::detail::concat("awq::io::safetensors: ", path, ": tensor '", it.key(), "' ", why));
    };
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") || !v["dtype"].is_string() ||
        !v["shape"].is_array() || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      throw bad("has a malformed entry");
    SafetensorsEntry e;
    e.dtype = v["dtype"].get<std::string>();
    const std::int64_t es = io::detail::dtype_size(e.dtype);
    if (es == 0) throw bad("has unknown dtype '" + e.dtype + "'");
    if (v["shape"].size() > 8) throw bad(awq::detail::concat("has ", v["shape"].size(), " dimensions (at most 8)"));
    std::uint64_t count = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > (1ull << 40)) throw bad("has a bad shape");
      const auto extent = d.get<std::uint64_t>();
      if (extent != 0 && count > (1ull << 40) / extent) throw bad("is too large");  // checked before multiplying
      e.shape.push_back(static_cast<std::int64_t>(extent));
      count *= extent;
    }
    if (!v["data_offsets"][0].is_number_unsigned() || !v["data_offsets"][1].is_number_unsigned()) throw bad("has bad data_offsets");
    const auto b = v["data_offsets"][0].get<std::uint64_t>(), en = v["data_offsets"][1].get<std::uint64_t>();
    if (b > en || en > file_size - data_start)
      throw bad(awq::detail::concat("needs bytes [", b, ", ", en, ") of a data section of ", file_size - data_start,
                                    " bytes (truncated?)"));
    if (en - b != count * static_cast<std::uint64_t>(es))
      throw bad(awq::detail::concat("has ", en - b, " bytes but dtype ", e.dtype, " and shape ", shape_string(e.shape), " need ",
                                    count * static_cast<std::uint64_t>(es)));
    e.begin = data_start + b;
    e.end = data_start + en;
    if (e.end > out.data_end) out.data_end = e.end;
    if (e.end > e.begin) by_begin.emplace(e.begin, std::make_pair(e.end, it.key()));
    out.tensors.emplace(it.key(), std::move(e));
  }
  const std::pair<std::uint64_t, std::string>* prev = nullptr;
  for (const auto& [b, end_name] : by_begin) {
    awq::detail::require(prev == nullptr || b >= prev->first, "awq::io::safetensors: ", path, ": tensors '", prev ? prev->second : "",
                         "' and '", end_name.second, "' overlap");
    prev = &end_name;
  }
  return out;
}

/// Reads and checks the header of the safetensors file `path` (only its first 8 + N bytes).
inline SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  awq::detail::require(static_cast<bool>(f), "awq::io::safetensors: cannot open ", path);
  const auto size = static_cast<std::uint64_t>(f.tellg());
  awq::detail::require(size >= 8, "awq::io::safetensors: ", path, " is truncated: ", size, " bytes, no header length");
  f.seekg(0);
  std::uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  awq::detail::require(n <= SafetensorsFile::kMaxHeader && n <= size - 8, "awq::io::safetensors: ", path, ": header length ", n,
                       " exceeds the file (", size, " bytes) or 100 MiB");
  std::string text(static_cast<std::size_t>(n), '\0');
  f.read(text.data(), static_cast<std::streamsize>(n));
  awq::detail::require(static_cast<bool>(f), "awq::io::safetensors: read error on ", path);
  return parse_safetensors_header(text, path, 8 + n, size);
}

}  // namespace detail

/// \brief A safetensors file opened for reading one tensor at a time; the file stays open (one
///        descriptor), its data is never held beyond the call that reads it.
///
/// Before each read the file is stat'ed again: a file truncated (or replaced) since its header
/// was read is an awq::Error, not a SIGBUS. The window left is a truncation between that check
/// and the copy out of the map (microseconds); a file must not be rewritten in place while read.
class SafetensorsMappedFile {
 public:
  /// Opens `path`, whose header `h` was read before (its size is checked at each read).
  SafetensorsMappedFile(std::string path, const SafetensorsHeader& h) : path_(std::move(path)), need_(h.data_end) {
#if AWQ_HAVE_MMAP
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    awq::detail::require(fd_ >= 0, "awq::io::safetensors: cannot open ", path_, ": ", std::strerror(errno));
#endif
  }
  SafetensorsMappedFile(const SafetensorsMappedFile&) = delete;
  SafetensorsMappedFile& operator=(const SafetensorsMappedFile&) = delete;
  ~SafetensorsMappedFile() {
#if AWQ_HAVE_MMAP
    ::close(fd_);
#endif
  }

  /// Calls `use(const std::uint8_t* bytes)` with the bytes of `e` mapped (read, on platforms
  /// without mmap), then unmaps them; `name` is the tensor's, for messages.
  template <class Use>
  void with_bytes(const std::string& name, const SafetensorsEntry& e, Use&& use) const {
    check_size(name);
    const std::uint64_t n = e.end - e.begin;
    if (n == 0) {
      const std::uint8_t none = 0;
      use(&none);
      return;
    }
#if AWQ_HAVE_MMAP
    static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t start = e.begin / page * page, len = e.end - start;
    void* p = ::mmap(nullptr, static_cast<std::size_t>(len), PROT_READ, MAP_PRIVATE, fd_, static_cast<off_t>(start));
    awq::detail::require(p != MAP_FAILED, "awq::io::safetensors: ", path_, ": cannot map tensor '", name, "' (", len,
                         " bytes): ", std::strerror(errno));
    (void)::madvise(p, static_cast<std::size_t>(len), MADV_SEQUENTIAL);
    struct Unmap {
      void* p;
      std::size_t len;
      ~Unmap() { ::munmap(p, len); }
    } unmap{p, static_cast<std::size_t>(len)};
    use(static_cast<const std::uint8_t*>(p) + (e.begin - start));
#else
    std::ifstream f(path_, std::ios::binary);
    f.seekg(static_cast<std::streamoff>(e.begin));
    std::vector<std::uint8_t> buf(static_cast<std::size_t>(n));
    f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n));
    awq::detail::require(static_cast<bool>(f), "awq::io::safetensors: ", path_, ": read error on tensor '", name, "' (truncated?)");
    use(static_cast<const std::uint8_t*>(buf.data()));
#endif
  }

 private:
  // The file must still be the one opened and at least as long as its header says.
  void check_size(const std::string& name) const {
    std::uint64_t size = 0;
#if AWQ_HAVE_MMAP
    struct stat st {};
    awq::detail::require(::fstat(fd_, &st) == 0, "awq::io::safetensors: cannot stat ", path_, ": ", std::strerror(errno));
    size = static_cast<std::uint64_t>(st.st_size);
#else
    std::ifstream f(path_, std::ios::binary | std::ios::ate);
    size = f ? static_cast<std::uint64_t>(f.tellg()) : 0;
#endif
    awq::detail::require(size >= need_, "awq::io::safetensors: ", path_, " is truncated: ", size, " bytes, its header needs ", need_,
                         " (reading tensor '", name, "')");
  }

  std::string path_;
  std::uint64_t need_;
#if AWQ_HAVE_MMAP
  int fd_ = -1;
#endif
};

}  // namespace io
}  // namespace awq
