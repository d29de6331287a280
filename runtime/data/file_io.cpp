#include "runtime/data/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace zt::data {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Closes the descriptor and removes the temporary file unless released: the error paths of
// write_file_atomic need no cleanup code of their own.
class TempFile {
 public:
  TempFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }
  void release() { path_.clear(); }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

Result<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return make_error(err == ENOENT ? StatusCode::kNotFound : StatusCode::kIoError,
                      "cannot open '{}': {}", path, errno_text(err));
  }
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    return make_error(StatusCode::kIoError, "cannot read '{}': it is a directory", path);
  }
  if (st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return make_error(StatusCode::kIoError, "cannot read '{}': {}", path, errno_text(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

Status write_file_atomic(const std::string& path, const void* data, size_t size) {
  return write_file_atomic(path, {ByteSpan{data, size}});
}

Status write_file_atomic(const std::string& path, std::initializer_list<ByteSpan> parts) {
  // Same directory as the target, so that rename() is atomic (one file system).
  const std::string tmp_path = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    return make_error(StatusCode::kIoError,
                      "cannot write '{}': creating '{}' failed: {}; check that the directory "
                      "exists and is writable",
                      path, tmp_path, errno_text(err));
  }
  TempFile tmp(fd, tmp_path);
  for (const ByteSpan& part : parts) {
    const char* p = static_cast<const char*>(part.data);
    size_t left = part.size;
    while (left > 0) {
      const ssize_t n = ::write(tmp.fd(), p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        return make_error(StatusCode::kIoError, "cannot write '{}': {}", path, errno_text(err));
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
  if (::fsync(tmp.fd()) != 0) {
    const int err = errno;
    return make_error(StatusCode::kIoError, "cannot write '{}': fsync failed: {}", path,
                      errno_text(err));
  }
  if (tmp.close() != 0) {
    const int err = errno;
    return make_error(StatusCode::kIoError, "cannot write '{}': close failed: {}", path,
                      errno_text(err));
  }
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    return make_error(StatusCode::kIoError, "cannot write '{}': renaming '{}' failed: {}", path,
                      tmp_path, errno_text(err));
  }
  tmp.release();
  return Status::ok();
}

}  // namespace zt::data
