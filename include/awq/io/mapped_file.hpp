/// \file
/// \brief Read-only bytes of a file mapped with mmap (or of a buffer held in memory), shared by
///        the safetensors and GGUF readers, with a size check that turns a file truncated under
///        the mapping into an awq::Error instead of a SIGBUS.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "awq/error.hpp"
#include "awq/io/have_mmap.hpp"

namespace awq {
namespace io {

/// \brief Bytes the caller reads but does not own (a view into a mapping or buffer).
struct ByteSpan {
  const std::uint8_t* data = nullptr;  ///< first byte
  std::size_t size = 0;                ///< number of bytes
};

/// \brief A whole file mapped read-only and private (MAP_PRIVATE, PROT_READ), or a buffer it
///        holds; readers keep it in a shared_ptr so that their copies and views share one mapping.
///
/// Pages are read from the file on first touch, so a reader that hands out views costs no
/// memory until they are read, and the kernel can drop the pages again under pressure.
///
/// Truncation: reading a mapped page past the file's current end raises SIGBUS. check_size()
/// compares the file's size now with the size mapped and throws awq::Error when it shrank; the
/// readers call it before every view or copy they hand out. A truncation *after* that check, while
/// the caller reads the view, is a race no mapping can close (only a copy could).
class MappedFile {
 public:
  /// Maps `path` (a regular file); `who` prefixes the messages (e.g. "awq::io::GgufFile").
  /// Throws awq::Error when the file cannot be opened, is not a regular file or cannot be mapped.
  static std::shared_ptr<const MappedFile> map(const std::string& path, const char* who) {
    std::shared_ptr<MappedFile> m(new MappedFile);
#if AWQ_HAVE_MMAP
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    m->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (m->fd_ < 0) fail(who, "cannot open ", path, ": ", std::strerror(errno));
    struct stat st {};
    if (::fstat(m->fd_, &st) != 0) fail(who, "cannot stat ", path, ": ", std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail(who, path, " is a directory, not a file");
    if (!S_ISREG(st.st_mode)) fail(who, path, " is not a regular file");
    m->size_ = static_cast<std::uint64_t>(st.st_size);
    if (m->size_ > 0) {
      void* p = ::mmap(nullptr, static_cast<std::size_t>(m->size_), PROT_READ, MAP_PRIVATE, m->fd_, 0);
      if (p == MAP_FAILED) fail(who, "cannot map the ", m->size_, " bytes of ", path, ": ", std::strerror(errno));
      m->map_ = p;
      m->data_ = static_cast<const std::uint8_t*>(p);
    }
#else
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) fail(who, "cannot open ", path);
    m->owned_.resize(static_cast<std::size_t>(f.tellg()));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(m->owned_.data()), static_cast<std::streamsize>(m->owned_.size()));
    if (!f) fail(who, "read error on ", path);
    m->data_ = m->owned_.data();
    m->size_ = m->owned_.size();
#endif
    return m;
  }

  /// Holds `bytes` (nothing is mapped; check_size() never throws).
  static std::shared_ptr<const MappedFile> hold(std::vector<std::uint8_t> bytes) {
    std::shared_ptr<MappedFile> m(new MappedFile);
    m->owned_ = std::move(bytes);
    m->data_ = m->owned_.data();
    m->size_ = m->owned_.size();
    return m;
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
#if AWQ_HAVE_MMAP
    if (map_) ::munmap(map_, static_cast<std::size_t>(size_));
    if (fd_ >= 0) ::close(fd_);
#endif
  }

  const std::uint8_t* data() const noexcept { return data_; }  ///< first byte (null when empty)
  std::uint64_t size() const noexcept { return size_; }        ///< bytes mapped or held

  /// Throws awq::Error when the mapped file is now shorter than when it was mapped.
  void check_size(const std::string& path, const char* who) const {
#if AWQ_HAVE_MMAP
    if (fd_ < 0) return;
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail(who, "cannot stat ", path, ": ", std::strerror(errno));
    if (static_cast<std::uint64_t>(st.st_size) < size_)
      fail(who, path, " shrank from ", size_, " to ", st.st_size, " bytes while mapped (truncated by another process?)");
#else
    (void)path;
    (void)who;
#endif
  }

 private:
  MappedFile() = default;
  template <class... Args>
  [[noreturn]] static void fail(const char* who, Args&&... args) {
    throw Error(awq::detail::concat(who, ": ", std::forward<Args>(args)...));
  }

  std::vector<std::uint8_t> owned_;
  const std::uint8_t* data_ = nullptr;
  std::uint64_t size_ = 0;
  void* map_ = nullptr;
  int fd_ = -1;
};

}  // namespace io
}  // namespace awq
