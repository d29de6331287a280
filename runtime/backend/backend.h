// Backend: where tensors live and ops run (ggml-style: device -> buffer -> stream). Worker code
// sees only Backend&, its Ops and Tensor views; the CPU backend implements it today and the CUDA
// backend slots in behind the same interface.
//
// Stream contract: every op and copy issued through a backend runs in issue order on the backend's
// compute stream. On the CPU backend that stream is synchronous — an op has finished when its call
// returns — so code written for stream order (prefetch, overlap, offload) is correct on both.
//
// Ownership: a Buffer owns its allocation and charges its bytes to one MemCategory of the backend's
// MemoryTracker for its whole lifetime; Tensors are views into Buffers and own nothing.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "runtime/backend/ops.h"
#include "runtime/backend/optimizer_ops.h"
#include "runtime/core/status.h"
#include "runtime/memory/memory_tracker.h"
#include "runtime/tensor/tensor.h"

namespace zt {

enum class DeviceKind { kCpu, kCuda };

class Backend;

class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  MemCategory category() const { return category_; }
  bool empty() const { return data_ == nullptr; }
  // A view of the first shape.numel() elements, as dtype.
  Tensor as(DType dtype, Shape shape) const;
  void reset();  // frees now

 private:
  friend class Backend;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  MemCategory category_ = MemCategory::kWorkspace;
  Backend* owner_ = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;
  // Whether the host may dereference this backend's memory (CPU: yes; CUDA: no). Host code that
  // reads or writes backend memory must go through copy() when this is false.
  virtual bool host_accessible() const = 0;

  // Allocates `bytes` (aligned to 64), zero-filled, charged to `category`. Out of memory is an
  // error naming the size, the category and the current breakdown.
  Result<Buffer> allocate(size_t bytes, MemCategory category);

  // Copies between host memory and this backend's memory, or within this backend's memory
  // (either side may be device memory). Stream-ordered: it runs after everything issued before it.
  // When dst is host memory it returns after the data has landed (the host may read dst at once);
  // when src is host memory the caller may reuse or free src on return. Device-to-device copies
  // may still be in flight on return (later ops and copies are ordered after them).
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  // Waits until everything issued so far has finished.
  virtual void synchronize() = 0;

  virtual Ops& ops() = 0;
  // The optimizer update kernels over this backend's memory (runtime/backend/optimizer_ops.h).
  virtual OptimizerOps& optimizer_ops() = 0;
  // A backend for host memory that pairs with this one (offloaded optimizer state, staging): the
  // CPU backend returns a CPU backend; the CUDA backend one with pinned memory. The default is
  // make_cpu_backend(). The returned backend has its own MemoryTracker.
  virtual std::unique_ptr<Backend> make_host_backend();

  MemoryTracker& memory() { return memory_; }
  const MemoryTracker& memory() const { return memory_; }

 protected:
  virtual void* raw_alloc(size_t bytes) = 0;  // nullptr when out of memory
  virtual void raw_free(void* p, size_t bytes) = 0;

 private:
  friend class Buffer;
  MemoryTracker memory_;
};

// The CPU backend: OpenBLAS GEMMs and OpenMP kernels (kernels/cpu). Its oracle is
// kernels/reference: plain fp64 loops that tests check the fast kernels against.
std::unique_ptr<Backend> make_cpu_backend();

}  // namespace zt
