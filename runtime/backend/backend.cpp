#include "runtime/backend/backend.h"

#include <fmt/format.h>

namespace zt {

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    data_ = o.data_;
    bytes_ = o.bytes_;
    category_ = o.category_;
    owner_ = o.owner_;
    o.data_ = nullptr;
    o.bytes_ = 0;
    o.owner_ = nullptr;
  }
  return *this;
}

Tensor Buffer::as(DType dtype, Shape shape) const {
  ZT_CHECK(static_cast<size_t>(shape.numel()) * dtype_size(dtype) <= bytes_,
           "view {} {} exceeds buffer of {} bytes", dtype_name(dtype), shape.to_string(), bytes_);
  return Tensor(data_, dtype, shape);
}

void Buffer::reset() {
  if (data_ && owner_) {
    owner_->raw_free(data_, bytes_);
    owner_->memory_.release(category_, bytes_);
  }
  data_ = nullptr;
  bytes_ = 0;
  owner_ = nullptr;
}

std::unique_ptr<Backend> Backend::make_host_backend() { return make_cpu_backend(); }

Result<Buffer> Backend::allocate(size_t bytes, MemCategory category) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  Buffer b;
  if (rounded == 0) return b;
  void* p = raw_alloc(rounded);
  if (!p) {
    std::string breakdown;
    const MemorySnapshot s = memory_.snapshot();
    for (size_t i = 0; i < kNumMemCategories; ++i)
      breakdown += fmt::format(" {}={:.1f}MiB", mem_category_name(static_cast<MemCategory>(i)),
                               s.current[i] / 1048576.0);
    return make_error(StatusCode::kOutOfMemory,
                      "{}: cannot allocate {:.1f} MiB for {}; in use:{}. Reduce the micro-batch, "
                      "enable activation checkpointing, or raise the ZeRO stage",
                      name(), rounded / 1048576.0, mem_category_name(category), breakdown);
  }
  fill_zero(p, rounded);
  memory_.charge(category, rounded);
  b.data_ = p;
  b.bytes_ = rounded;
  b.category_ = category;
  b.owner_ = this;
  return b;
}

}  // namespace zt
