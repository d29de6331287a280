// StateStore: argument checks shared by both kinds, and the memory kind.
#include "runtime/offload/state_store.h"

#include <algorithm>
#include <utility>

namespace zt {

Result<int64_t> StateStore::checked_chunk(const std::vector<StoreArray>& arrays, int64_t n,
                                          int64_t chunk) {
  if (arrays.empty() || arrays.size() > 32) {
    return make_error(
        StatusCode::kInvalidArgument,
        "state store: {} arrays given; it holds 1 to 32 (the stream masks are 32 bits)",
        arrays.size());
  }
  for (const StoreArray& a : arrays) {
    if (a.elem_bytes == 0 || a.elem_bytes > 64) {
      return make_error(StatusCode::kInvalidArgument,
                        "state store: array '{}' has element size {} bytes; expected 1 to 64",
                        a.name, a.elem_bytes);
    }
  }
  if (n < 0 || chunk < 1) {
    return make_error(StatusCode::kInvalidArgument,
                      "state store: size {} and chunk {} elements; expected size >= 0, chunk >= 1",
                      n, chunk);
  }
  // Bounded so that the byte offsets of the nvme file (every array's region together) stay far
  // from overflowing int64.
  constexpr int64_t kMaxElements = int64_t{1} << 48;
  if (n > kMaxElements || chunk > kMaxElements) {
    return make_error(StatusCode::kInvalidArgument,
                      "state store: size {} or chunk {} elements exceeds the limit of {}", n, chunk,
                      kMaxElements);
  }
  const auto round_up = [](int64_t x) { return (x + kChunkAlign - 1) / kChunkAlign * kChunkAlign; };
  return std::min(round_up(chunk), round_up(std::max<int64_t>(n, 1)));
}

Status StateStore::check_masks(uint32_t read, uint32_t write) const {
  const uint32_t all =
      arrays_.size() >= 32 ? ~uint32_t{0} : (uint32_t{1} << arrays_.size()) - uint32_t{1};
  if (((read | write) & ~all) != 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "state store: stream masks read={:#x} write={:#x} name arrays beyond the {} "
                      "it holds",
                      read, write, arrays_.size());
  }
  return Status::ok();
}

Status StateStore::check_range(const char* op, int a, int64_t begin, int64_t count) const {
  if (a < 0 || static_cast<size_t>(a) >= arrays_.size()) {
    return make_error(StatusCode::kInvalidArgument, "state store {}: no array {} (it holds {})", op,
                      a, arrays_.size());
  }
  if (begin < 0 || count < 0 || begin > n_ || count > n_ - begin) {
    return make_error(StatusCode::kInvalidArgument,
                      "state store {}: elements [{}, {}+{}) of '{}' are outside [0, {})", op, begin,
                      begin, count, arrays_[static_cast<size_t>(a)].name, n_);
  }
  return Status::ok();
}

namespace {

// The memory kind: one Buffer per array, in the backend's memory. Chunks are views into them, so
// stream() moves no bytes and the masks only document what fn touches.
class MemoryStateStore final : public StateStore {
 public:
  MemoryStateStore(Backend& backend, std::vector<StoreArray> arrays, int64_t n, int64_t chunk,
                   std::vector<Buffer> buffers)
      : StateStore(std::move(arrays), n, chunk), backend_(backend), buffers_(std::move(buffers)) {}

  bool resident() const override { return true; }

  Status stream(uint32_t read, uint32_t write, const ChunkFn& fn) override {
    ZT_RETURN_IF_ERROR(check_masks(read, write));
    std::vector<void*> ptrs(arrays_.size());
    for (int64_t begin = 0; begin < n_; begin += chunk_) {
      const int64_t count = std::min(chunk_, n_ - begin);
      for (size_t a = 0; a < arrays_.size(); ++a) {
        ptrs[a] = static_cast<char*>(buffers_[a].data()) +
                  static_cast<size_t>(begin) * arrays_[a].elem_bytes;
      }
      ZT_RETURN_IF_ERROR(fn(begin, count, ptrs.data()));
    }
    return Status::ok();
  }

  Status read(int a, int64_t begin, int64_t count, void* out) override {
    ZT_RETURN_IF_ERROR(check_range("read", a, begin, count));
    if (count == 0) return Status::ok();
    const size_t eb = arrays_[static_cast<size_t>(a)].elem_bytes;
    backend_.copy(out, static_cast<const char*>(data(a)) + static_cast<size_t>(begin) * eb,
                  static_cast<size_t>(count) * eb);
    backend_.synchronize();
    return Status::ok();
  }

  Status write(int a, int64_t begin, int64_t count, const void* in) override {
    ZT_RETURN_IF_ERROR(check_range("write", a, begin, count));
    if (count == 0) return Status::ok();
    const size_t eb = arrays_[static_cast<size_t>(a)].elem_bytes;
    backend_.copy(static_cast<char*>(data(a)) + static_cast<size_t>(begin) * eb, in,
                  static_cast<size_t>(count) * eb);
    backend_.synchronize();
    return Status::ok();
  }

  void* data(int a) override { return buffers_.at(static_cast<size_t>(a)).data(); }

  int64_t resident_bytes() const override {
    int64_t total = 0;
    for (const Buffer& b : buffers_) total += static_cast<int64_t>(b.bytes());
    return total;
  }
  int64_t disk_bytes() const override { return 0; }
  std::string location() const override { return "memory"; }

 private:
  Backend& backend_;
  std::vector<Buffer> buffers_;
};

}  // namespace

Result<std::unique_ptr<StateStore>> StateStore::in_memory(Backend& backend,
                                                          std::vector<StoreArray> arrays, int64_t n,
                                                          int64_t chunk, MemCategory category) {
  ZT_ASSIGN_OR_RETURN(const int64_t store_chunk, checked_chunk(arrays, n, chunk));
  std::vector<Buffer> buffers;
  buffers.reserve(arrays.size());
  for (const StoreArray& a : arrays) {
    const size_t bytes = static_cast<size_t>(n) * a.elem_bytes;
    Result<Buffer> buffer = backend.allocate(bytes, a.category.value_or(category));
    if (!buffer.is_ok()) {
      return buffer.status().with_context(fmt::format("state array '{}' ({} elements)", a.name, n));
    }
    buffers.push_back(std::move(buffer).value());
  }
  return std::unique_ptr<StateStore>(
      new MemoryStateStore(backend, std::move(arrays), n, store_chunk, std::move(buffers)));
}

}  // namespace zt
