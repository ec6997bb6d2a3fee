/// \file
/// \brief Writing a file so that a failure never loses or half-writes it: the contents go to a
///        hidden sibling, `.NAME.awq-tmp`, are flushed and fsync'ed, then renamed over the target
///        (and the directory is fsync'ed). A full disk, a file-size limit or an exception from the
///        writer leaves the previous file untouched and removes the temporary one. The target is
///        `path` or, when `path` is a symbolic link, the file it points to (the link stays); a
///        target that exists and is not a regular file (a device, a directory, a pipe) is refused
///        before anything is written, so that a rename never replaces it.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "awq/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/stat.h>
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

// Creates (or truncates) the temporary file; never follows a link planted at its name. A file
// replacing an existing one gets that one's permissions.
inline std::FILE* open_temp(const std::string& tmp, const std::string& target) {
#if AWQ_HAVE_FSYNC
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) (void)::fchmod(fd, st.st_mode & 07777);
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) ::close(fd);
  return f;
#else
  (void)target;
  return std::fopen(tmp.c_str(), "wb");
#endif
}
}  // namespace detail

/// The file write_atomically(path) replaces: `path`, or the file a symbolic link at `path`
/// points to (resolved to its real location, so that the link stays a link).
inline std::string atomic_target(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_symlink(path, ec)) return path;
  const auto real = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : real.string();
}

/// The temporary file write_atomically(path) writes before the rename: `.NAME.awq-tmp` beside
/// the target (hidden, and a name no one else uses, so that no user file is overwritten).
inline std::string atomic_temp(const std::string& path) {
  const std::filesystem::path t(atomic_target(path));
  return (t.parent_path() / ("." + t.filename().string() + ".awq-tmp")).string();
}

/// \brief What write_atomically(path) checks before it writes, for callers that check their
///        outputs before long work: the target, when it exists, is a regular file, and the
///        temporary name is free or a regular file (a stale one from a killed run).
/// \throws awq::Error naming the path otherwise.
inline void check_atomic_target(const std::string& path) {
  namespace fs = std::filesystem;
  constexpr const char* fn = "awq::io::write_atomically: ";
  std::error_code ec;
  const std::string target = atomic_target(path), tmp = atomic_temp(path);
  const auto st = fs::status(target, ec);
  awq::detail::require(!fs::exists(st) || fs::is_regular_file(st), fn, path,
                       " exists and is not a regular file (a directory, device or pipe is never replaced; give a file name)");
  const auto tt = fs::symlink_status(tmp, ec);
  awq::detail::require(!fs::exists(tt) || fs::is_regular_file(tt), fn, "the temporary name ", tmp,
                       " is taken by something other than a file; remove it");
}

/// \brief Calls `fill(FileSink&)` to write the temporary file atomic_temp(path), then flushes,
///        syncs and renames it to atomic_target(path).
///
/// \throws awq::Error naming the path when the target is not a regular file
///         (check_atomic_target), or the file cannot be created, written, synced or renamed; any
///         exception from `fill` is rethrown. In every failure case the temporary file is
///         removed and the target keeps its previous contents.
template <class Fill>
void write_atomically(const std::string& path, Fill&& fill) {
  check_atomic_target(path);
  const std::string target = atomic_target(path), tmp = atomic_temp(path);
  std::FILE* f = detail::open_temp(tmp, target);
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
                                    " (disk full or file size limit?); ", target, " is unchanged"));
  }
  if (std::fclose(f) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    throw Error(awq::detail::concat("awq::io::write_atomically: closing ", tmp, " failed: ", std::strerror(e), "; ", target,
                                    " is unchanged"));
  }
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    e = errno;
    std::remove(tmp.c_str());
    throw Error(awq::detail::concat("awq::io::write_atomically: cannot rename ", tmp, " to ", target, ": ", std::strerror(e)));
  }
  const auto dir = std::filesystem::path(target).parent_path();
  detail::fsync_path(dir.empty() ? "." : dir.string(), true);
}

}  // namespace io
}  // namespace awq
