/// \file
/// \brief Writing a file so that a failure never loses or half-writes it: the contents go to
///        `path.tmp`, are flushed and fsync'ed, then renamed over `path` (and the directory is
///        fsync'ed). A full disk, a file-size limit or an exception from the writer leaves the
///        previous `path` untouched and removes the temporary file.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "awq/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
/// 1 where fsync(2) is available (POSIX): written files and their directory are synced.
#define AWQ_HAVE_FSYNC 1
#else
/// 0: fsync(2) is not available; files are flushed and renamed but not synced.
#define AWQ_HAVE_FSYNC 0
#endif

namespace awq {
namespace io {

/// \brief Sink handed to the writer callback of write_atomically.
class FileSink {
 public:
  /// Wraps an open file; `path` is named in error messages.
  explicit FileSink(std::FILE* f, const std::string& path) : f_(f), path_(path) {}
  /// Appends n bytes; throws awq::Error (with the system's reason) when they cannot be written.
  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    errno = 0;
    if (std::fwrite(data, 1, n, f_) != n) {
      const int e = errno;
      throw Error(awq::detail::concat("awq::io::write_atomically: writing ", path_, " failed after ", written_, " bytes: ",
                                      e ? std::strerror(e) : "short write", " (disk full or file size limit?)"));
    }
    written_ += n;
  }
  /// Appends a string.
  void write(const std::string& s) { write(s.data(), s.size()); }
  /// Bytes written so far.
  std::size_t written() const noexcept { return written_; }

 private:
  std::FILE* f_;
  const std::string& path_;
  std::size_t written_ = 0;
};

namespace detail {
inline void fsync_path(const std::string& path, bool directory) {
#if AWQ_HAVE_FSYNC
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
#else
  (void)path;
  (void)directory;
#endif
}

inline std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace detail

/// \brief Calls `fill(FileSink&)` to write `path.tmp`, then flushes, syncs and renames it to `path`.
///
/// \throws awq::Error naming the path when the file cannot be created, written, synced or
///         renamed; any exception from `fill` is rethrown. In every failure case `path.tmp` is
///         removed and `path` keeps its previous contents.
template <class Fill>
void write_atomically(const std::string& path, Fill&& fill) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) {
    const int e = errno;
    throw Error(awq::detail::concat("awq::io::write_atomically: cannot create ", tmp, ": ", std::strerror(e)));
  }
  auto fail = [&]() {
    std::fclose(f);
    std::remove(tmp.c_str());
  };
  try {
    FileSink sink(f, tmp);
    std::forward<Fill>(fill)(sink);
  } catch (...) {
    fail();
    throw;
  }
  bool ok = std::fflush(f) == 0;
  int e = ok ? 0 : errno;
#if AWQ_HAVE_FSYNC
  if (ok && ::fsync(::fileno(f)) != 0) {
    ok = false;
    e = errno;
  }
#endif
  if (!ok) {
    fail();
    throw Error(awq::detail::concat("awq::io::write_atomically: flushing ", tmp, " failed: ", std::strerror(e),
                                    " (disk full or file size limit?); ", path, " is unchanged"));
  }
  if (std::fclose(f) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    throw Error(awq::detail::concat("awq::io::write_atomically: closing ", tmp, " failed: ", std::strerror(e), "; ", path,
                                    " is unchanged"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    throw Error(awq::detail::concat("awq::io::write_atomically: cannot rename ", tmp, " to ", path, ": ", std::strerror(e)));
  }
  detail::fsync_path(detail::parent_dir(path), true);
}

}  // namespace io
}  // namespace awq
