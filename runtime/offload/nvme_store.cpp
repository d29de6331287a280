// The nvme kind of StateStore: one file per rank, streamed through a few aligned host buffers with
// io_uring.
//
// Note [nvme state file layout]: array a owns one contiguous region of the file, of
// num_chunks * chunk * elem_bytes bytes (the last chunk padded to a whole one), the regions back to
// back in array order. chunk is a multiple of 4096 elements, so every region and every chunk of
// every array starts on a 4096-byte boundary and is a whole number of 4096-byte sectors: each
// chunk's I/O is one full-size, aligned request, which O_DIRECT needs. The padding past n is never
// handed out (its bytes are whatever the last write of that chunk left in the buffer).
//
// Note [nvme stream pipeline]: buffer b holds one chunk of every array (array a at a fixed,
// 4096-aligned offset); chunk k uses buffer k % buffer_count. While fn runs on chunk i out of its
// buffer, the writes of chunk i-1 drain from theirs and the reads of chunks i+1 .. i+buffer_count-2
// fill the rest, so the read-ahead depth is buffer_count - 2 (1 at the minimum of 3). A buffer is
// refilled only after its previous chunk's writes have completed. On any failure (an I/O error, a
// short transfer, fn's error or exception) nothing new is issued and every request still in the
// kernel is waited for before stream() returns: the kernel never writes into a buffer we have
// handed back, and the next stream() starts with an idle ring.
//
// Random access (read()/write()) goes through the same descriptor as the stream, so an O_DIRECT
// file is never mixed with the page cache: the byte range is widened to whole 4096-byte sectors
// and moved through the stream buffers (idle outside stream()), with a read-modify-write of the
// partly covered first and last sectors.
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "runtime/core/check.h"
#include "runtime/offload/state_store.h"
#include "runtime/profile/step_profile.h"

namespace zt {
namespace {

constexpr int64_t kSector = 4096;  // O_DIRECT alignment of offsets, lengths and memory
constexpr int kMaxBufferCount = 1024;
constexpr int64_t kMaxRequest = int64_t{1} << 30;  // bytes, a multiple of kSector

std::string errno_text(int err) { return std::strerror(err); }

std::string gib(int64_t bytes) { return fmt::format("{:.2f} GiB", bytes / 1073741824.0); }

class NvmeStateStore final : public StateStore {
 public:
  NvmeStateStore(std::vector<StoreArray> arrays, int64_t n, int64_t chunk, std::string path, int fd,
                 int buffer_count, MemoryTracker& tracker, MemCategory category)
      : StateStore(std::move(arrays), n, chunk),
        path_(std::move(path)),
        fd_(fd),
        buffer_count_(buffer_count),
        tracker_(tracker),
        category_(category) {
    int64_t region = 0;
    for (const StoreArray& a : arrays_) {
      const int64_t bytes = chunk_ * static_cast<int64_t>(a.elem_bytes);
      chunk_bytes_.push_back(bytes);
      buffer_offset_.push_back(buffer_bytes_);
      region_offset_.push_back(region);
      buffer_bytes_ += bytes;
      region += num_chunks() * bytes;
    }
    file_bytes_ = region;
  }

  ~NvmeStateStore() override {
    if (ring_ready_) {
      drain();
      io_uring_queue_exit(&ring_);
    }
    if (buffers_) {
      std::free(buffers_);
      tracker_.release(category_, static_cast<size_t>(buffers_total()));
    }
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }

  // Sizes the file, switches to O_DIRECT where possible, allocates the buffers and the ring.
  Status init() {
    if (file_bytes_ > 0) {
      const int err = ::posix_fallocate(fd_, 0, file_bytes_);
      if (err == ENOSPC || err == EFBIG) {
        return make_error(StatusCode::kIoError,
                          "no space for the optimizer state file '{}': it needs {} bytes ({}) and "
                          "the file system has less{}; free space or point "
                          "zero_optimization.offload_optimizer.nvme_path at a bigger device",
                          path_, file_bytes_, gib(file_bytes_),
                          err == EFBIG ? " (or caps the file size)" : "");
      }
      if (err != 0) {
        return make_error(StatusCode::kIoError, "cannot allocate {} bytes for '{}': {}",
                          file_bytes_, path_, errno_text(err));
      }
    }
    const int flags = ::fcntl(fd_, F_GETFL);
    direct_ = flags >= 0 && ::fcntl(fd_, F_SETFL, flags | O_DIRECT) == 0;
    // EINVAL: the file system has no direct I/O (older tmpfs); buffered I/O is as correct, only
    // not bounded away from the page cache, and location() says so.
    if (const int fcntl_err = errno; !direct_ && fcntl_err != EINVAL) {
      return make_error(StatusCode::kIoError, "cannot set O_DIRECT on '{}': {}", path_,
                        errno_text(fcntl_err));
    }

    void* p = nullptr;
    const int err = ::posix_memalign(&p, kSector, static_cast<size_t>(buffers_total()));
    if (err != 0) {
      return make_error(StatusCode::kOutOfMemory,
                        "cannot allocate {} I/O buffers of {} bytes for '{}': {}; lower "
                        "offload_optimizer.buffer_count",
                        buffer_count_, buffer_bytes_, path_, errno_text(err));
    }
    buffers_ = static_cast<char*>(p);
    tracker_.charge(category_, static_cast<size_t>(buffers_total()));

    // At most one request per (buffer, array) is ever in the kernel, so a ring of that many
    // entries never fills and its completion queue (twice the size) never overflows.
    const size_t slots = static_cast<size_t>(buffer_count_) * arrays_.size();
    unsigned entries = 8;
    while (entries < slots) entries *= 2;
    const int rc = io_uring_queue_init(entries, &ring_, 0);
    if (rc < 0) {
      return make_error(StatusCode::kUnsupported,
                        "cannot set up io_uring for '{}': {}; io_uring may be disabled "
                        "(sysctl kernel.io_uring_disabled, a container's seccomp profile): allow "
                        "it or offload the optimizer to cpu instead of nvme",
                        path_, errno_text(-rc));
    }
    ring_ready_ = true;
    requests_.resize(slots);
    pending_.assign(static_cast<size_t>(buffer_count_), 0);
    return Status::ok();
  }

  bool resident() const override { return false; }

  Status stream(uint32_t read, uint32_t write, const ChunkFn& fn) override {
    ZT_RETURN_IF_ERROR(check_masks(read, write));
    error_ = Status::ok();
    const int64_t chunks = num_chunks();
    const int64_t depth = buffer_count_ - 2;
    std::vector<void*> ptrs(arrays_.size());
    int64_t next_read = 0;
    for (int64_t i = 0; i < chunks && error_.is_ok(); ++i) {
      while (next_read < chunks && next_read <= i + depth && error_.is_ok()) {
        if (!wait_buffer(buffer_of(next_read))) break;
        queue_chunk(next_read, read, /*is_write=*/false);
        ++next_read;
      }
      submit();
      const int b = buffer_of(i);
      if (!wait_buffer(b)) break;
      for (size_t a = 0; a < arrays_.size(); ++a) ptrs[a] = buffer_ptr(b, a);
      Status st;
      try {
        st = fn(i * chunk_, std::min(chunk_, n_ - i * chunk_), ptrs.data());
      } catch (...) {
        drain();
        throw;
      }
      if (!st.is_ok()) {
        set_error(std::move(st), i);
        break;
      }
      queue_chunk(i, write, /*is_write=*/true);
      submit();
    }
    drain();
    Status result = std::move(error_);
    error_ = Status::ok();
    return result;
  }

  Status read(int a, int64_t begin, int64_t count, void* out) override {
    ZT_RETURN_IF_ERROR(check_range("read", a, begin, count));
    return random_access(/*is_write=*/false, static_cast<size_t>(a), begin, count,
                         static_cast<char*>(out));
  }

  Status write(int a, int64_t begin, int64_t count, const void* in) override {
    ZT_RETURN_IF_ERROR(check_range("write", a, begin, count));
    // random_access only reads from `user` when writing.
    return random_access(/*is_write=*/true, static_cast<size_t>(a), begin, count,
                         const_cast<char*>(static_cast<const char*>(in)));
  }

  void* data(int) override { return nullptr; }
  int64_t resident_bytes() const override { return buffers_total(); }
  int64_t disk_bytes() const override { return file_bytes_; }
  std::string location() const override {
    return direct_ ? path_ : path_ + " (buffered: O_DIRECT unsupported)";
  }

 private:
  // One read or write of one chunk of one array; at most one per (buffer, array) at a time.
  struct Request {
    int buffer = 0;
    size_t array = 0;
    bool is_write = false;
    int64_t chunk = 0;
    int64_t offset = 0;  // file offset of the whole request
    char* ptr = nullptr;
    int64_t bytes = 0;
    int64_t done = 0;
  };

  int64_t buffers_total() const { return buffer_count_ * buffer_bytes_; }
  int buffer_of(int64_t chunk) const { return static_cast<int>(chunk % buffer_count_); }
  char* buffer_ptr(int b, size_t a) const {
    return buffers_ + b * buffer_bytes_ + buffer_offset_[a];
  }

  // Completions arrive in any order: of several failures, the one of the earliest chunk is
  // reported, as a sequential pass would have met it first.
  void set_error(Status st, int64_t chunk) {
    if (error_.is_ok() || chunk < error_chunk_) {
      error_ = std::move(st);
      error_chunk_ = chunk;
    }
  }

  void queue_chunk(int64_t chunk, uint32_t mask, bool is_write) {
    const int b = buffer_of(chunk);
    for (size_t a = 0; a < arrays_.size(); ++a) {
      if ((mask >> a & 1u) == 0) continue;
      Request& r = requests_[static_cast<size_t>(b) * arrays_.size() + a];
      r = Request{b,
                  a,
                  is_write,
                  chunk,
                  region_offset_[a] + chunk * chunk_bytes_[a],
                  buffer_ptr(b, a),
                  chunk_bytes_[a],
                  0};
      ++pending_[static_cast<size_t>(b)];
      queue(r);
    }
  }

  // Queues the rest of r (its first part or what a short transfer left).
  void queue(Request& r) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    ZT_CHECK(sqe != nullptr, "io_uring submission queue full with {} requests in flight",
             in_flight_);
    // io_uring lengths are 32-bit: a longer chunk goes in 1 GiB pieces, resumed like a short
    // transfer.
    const auto len = static_cast<unsigned>(std::min<int64_t>(r.bytes - r.done, kMaxRequest));
    if (r.is_write) {
      io_uring_prep_write(sqe, fd_, r.ptr + r.done, len, static_cast<uint64_t>(r.offset + r.done));
    } else {
      io_uring_prep_read(sqe, fd_, r.ptr + r.done, len, static_cast<uint64_t>(r.offset + r.done));
    }
    io_uring_sqe_set_data(sqe, &r);
    ++in_flight_;
  }

  void submit() {
    while (io_uring_sq_ready(&ring_) > 0) {
      const int rc = io_uring_submit(&ring_);
      if (rc >= 0 || rc == -EINTR || rc == -EAGAIN) continue;
      ZT_CHECK(false, "io_uring_submit on '{}' failed: {}", path_, errno_text(-rc));
    }
  }

  // Submits what is queued, waits for at least one completion and handles all that are there.
  void reap() {
    for (;;) {
      const int rc = io_uring_submit_and_wait(&ring_, 1);
      if (rc >= 0) break;
      ZT_CHECK(rc == -EINTR || rc == -EAGAIN || rc == -EBUSY, "waiting for I/O on '{}' failed: {}",
               path_, errno_text(-rc));
    }
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
      Request& r = *static_cast<Request*>(io_uring_cqe_get_data(cqe));
      const int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
      complete(r, res);
    }
  }

  void complete(Request& r, int res) {
    const bool retry = res == -EINTR || res == -EAGAIN;
    if (res > 0) r.done += res;
    if (res >= 0 && r.done == r.bytes) {
      --pending_[static_cast<size_t>(r.buffer)];
      return;
    }
    // A short transfer is resumed, unless nothing moved (end of file) or, under O_DIRECT, the
    // rest would start off a sector boundary (only a truncated file gives that).
    const bool resumable = retry || (res > 0 && (!direct_ || r.done % kSector == 0));
    if (resumable && error_.is_ok()) {
      queue(r);
      return;
    }
    --pending_[static_cast<size_t>(r.buffer)];
    if (res < 0 && !retry) {
      set_error(io_error(r.is_write, r.offset, r.bytes, -res, r.array, r.chunk), r.chunk);
    } else if (res >= 0) {
      set_error(make_error(StatusCode::kIoError,
                           "short {} of '{}' at offset {}: got {} of {} bytes (array '{}', chunk "
                           "{}); the file was truncated or replaced behind zerotrain's back",
                           r.is_write ? "write" : "read", path_, r.offset, r.done, r.bytes,
                           arrays_[r.array].name, r.chunk),
                r.chunk);
    }
  }

  Status io_error(bool is_write, int64_t offset, int64_t bytes, int err, size_t array,
                  int64_t chunk) const {
    if (err == ENOSPC) {
      return make_error(StatusCode::kIoError,
                        "no space left on device writing '{}' at offset {} ({} bytes, array '{}', "
                        "chunk {}); free space on the device of "
                        "zero_optimization.offload_optimizer.nvme_path",
                        path_, offset, bytes, arrays_[array].name, chunk);
    }
    return make_error(StatusCode::kIoError,
                      "cannot {} '{}' at offset {} ({} bytes, array '{}', chunk {}): {}",
                      is_write ? "write" : "read", path_, offset, bytes, arrays_[array].name, chunk,
                      errno_text(err));
  }

  // Waits until buffer b has no request in flight; false once streaming has failed. The time the
  // step waits for the file is offload_io (Note [step profile]); the update of a chunk whose reads
  // are already done is not.
  bool wait_buffer(int b) {
    if (pending_[static_cast<size_t>(b)] > 0 && error_.is_ok()) {
      ScopedStepPhase io(StepPhase::kOffloadIo);
      while (pending_[static_cast<size_t>(b)] > 0 && error_.is_ok()) reap();
    }
    return error_.is_ok();
  }

  // Waits for every request in the kernel; after an error, their results are dropped.
  void drain() {
    if (in_flight_ == 0) return;
    ScopedStepPhase io(StepPhase::kOffloadIo);
    while (in_flight_ > 0) reap();
  }

  // Synchronous transfer of [offset, offset + bytes) of the file, whole sectors, into or out of
  // the stream buffers.
  Status transfer(bool is_write, int64_t offset, int64_t bytes, char* buf, size_t array) {
    ScopedStepPhase io(StepPhase::kOffloadIo);
    int64_t done = 0;
    while (done < bytes) {
      const auto len = static_cast<size_t>(bytes - done);
      const ssize_t got = is_write ? ::pwrite(fd_, buf + done, len, offset + done)
                                   : ::pread(fd_, buf + done, len, offset + done);
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return io_error(is_write, offset, bytes, errno, array,
                        (offset - region_offset_[array]) / chunk_bytes_[array]);
      }
      done += got;
      if (done < bytes && (got == 0 || (direct_ && done % kSector != 0))) {
        return make_error(StatusCode::kIoError,
                          "short {} of '{}' at offset {}: got {} of {} bytes (array '{}'); the "
                          "file was truncated or replaced behind zerotrain's back",
                          is_write ? "write" : "read", path_, offset, done, bytes,
                          arrays_[array].name);
      }
    }
    return Status::ok();
  }

  Status random_access(bool is_write, size_t a, int64_t begin, int64_t count, char* user) {
    if (count == 0) return Status::ok();
    const auto eb = static_cast<int64_t>(arrays_[a].elem_bytes);
    const int64_t lo = region_offset_[a] + begin * eb;
    const int64_t hi = lo + count * eb;
    const int64_t span = buffers_total();  // a whole number of sectors
    char* bounce = buffers_;
    for (int64_t p = lo / kSector * kSector; p < hi; p += span) {
      const int64_t end = std::min(p + span, (hi + kSector - 1) / kSector * kSector);
      const int64_t ulo = std::max(lo, p);
      const int64_t uhi = std::min(hi, end);
      if (!is_write) {
        ZT_RETURN_IF_ERROR(transfer(false, p, end - p, bounce, a));
        std::memcpy(user + (ulo - lo), bounce + (ulo - p), static_cast<size_t>(uhi - ulo));
        continue;
      }
      if (ulo > p) ZT_RETURN_IF_ERROR(transfer(false, p, kSector, bounce, a));
      const int64_t last = end - kSector;
      if (uhi < end && (last != p || ulo == p)) {
        ZT_RETURN_IF_ERROR(transfer(false, last, kSector, bounce + (last - p), a));
      }
      std::memcpy(bounce + (ulo - p), user + (ulo - lo), static_cast<size_t>(uhi - ulo));
      ZT_RETURN_IF_ERROR(transfer(true, p, end - p, bounce, a));
    }
    return Status::ok();
  }

  std::string path_;
  int fd_ = -1;
  bool direct_ = false;
  int buffer_count_;
  MemoryTracker& tracker_;
  MemCategory category_;

  std::vector<int64_t> chunk_bytes_;    // per array: one chunk
  std::vector<int64_t> buffer_offset_;  // per array: where its chunk sits in a buffer
  std::vector<int64_t> region_offset_;  // per array: where its region starts in the file
  int64_t buffer_bytes_ = 0;            // one buffer: one chunk of every array
  int64_t file_bytes_ = 0;
  char* buffers_ = nullptr;  // buffer_count_ buffers, back to back

  io_uring ring_{};
  bool ring_ready_ = false;
  std::vector<Request> requests_;  // [buffer * arrays + array]
  std::vector<int> pending_;       // per buffer: requests not yet complete
  int in_flight_ = 0;              // requests queued or in the kernel
  Status error_;                   // the failure of the current stream(), if any
  int64_t error_chunk_ = 0;        // the chunk it belongs to
};

}  // namespace

Result<std::unique_ptr<StateStore>> StateStore::on_nvme(const std::string& dir, int rank,
                                                        std::vector<StoreArray> arrays, int64_t n,
                                                        int64_t chunk, int buffer_count,
                                                        MemoryTracker& tracker,
                                                        MemCategory category,
                                                        std::string_view what) {
  ZT_ASSIGN_OR_RETURN(const int64_t store_chunk, checked_chunk(arrays, n, chunk));
  if (buffer_count < 3 || buffer_count > kMaxBufferCount) {
    return make_error(StatusCode::kInvalidArgument,
                      "offload_optimizer.buffer_count is {}; the nvme state store needs 3 to {} "
                      "(one chunk being updated, one being read ahead, one being written back)",
                      buffer_count, kMaxBufferCount);
  }
  if (dir.empty()) {
    return make_error(StatusCode::kInvalidArgument,
                      "the nvme_path of zero_optimization.offload_{} is empty; set it to a "
                      "directory on a fast local disk",
                      what == "states" ? "optimizer" : "param");
  }
  std::string path = dir;
  if (path.back() != '/') path += '/';
  path += fmt::format("zerotrain-{}-rank{}-{}.bin", what, rank, ::getpid());

  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    switch (err) {
      case ENOENT:
        return make_error(StatusCode::kNotFound,
                          "cannot create the optimizer state file '{}': directory '{}' does not "
                          "exist; create it or point zero_optimization.offload_optimizer.nvme_path "
                          "at an existing directory",
                          path, dir);
      case ENOTDIR:
        return make_error(StatusCode::kInvalidArgument,
                          "cannot create the optimizer state file '{}': '{}' is not a directory; "
                          "point zero_optimization.offload_optimizer.nvme_path at a directory",
                          path, dir);
      case EACCES:
      case EPERM:
      case EROFS:
        return make_error(StatusCode::kIoError,
                          "cannot create the optimizer state file '{}': directory '{}' is not "
                          "writable ({})",
                          path, dir, errno_text(err));
      case EEXIST:
        return make_error(StatusCode::kIoError,
                          "cannot create the optimizer state file '{}': it already exists (left "
                          "by a crashed run, or another job shares nvme_path); remove it",
                          path);
      default:
        return make_error(StatusCode::kIoError, "cannot create the optimizer state file '{}': {}",
                          path, errno_text(err));
    }
  }
  // From here the store owns the file: any failure below closes and removes it.
  auto store = std::make_unique<NvmeStateStore>(std::move(arrays), n, store_chunk, std::move(path),
                                                fd, buffer_count, tracker, category);
  ZT_RETURN_IF_ERROR(store->init());
  return std::unique_ptr<StateStore>(std::move(store));
}

}  // namespace zt
