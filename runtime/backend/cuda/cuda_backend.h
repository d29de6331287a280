// The CUDA backend: one device per worker, a compute stream every op and copy is issued on in
// order, device memory from a caching allocator (charged to the same MemoryTracker categories as
// the CPU backend), GEMMs through cuBLASLt and the kernels of kernels/cuda. Its memory is not
// host-accessible: host code reaches it only through copy() (which returns once a host
// destination holds the data). Offloaded optimizer state and staging use the paired host backend
// (make_host_backend()), whose memory is pinned so host<->device copies run at full bus speed.
#pragma once

#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"
#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/caching_allocator.h"
#include "runtime/backend/cuda/cuda_check.h"

namespace zt {

class CudaOps;
class CudaOptimizerOps;

struct CudaBackendOptions {
  int device = 0;
  size_t cublaslt_workspace_bytes = size_t{32} << 20;
};

class CudaBackend final : public Backend {
 public:
  // Selects the device, creates the stream and library handles. No device, no driver or a bad
  // index is an error that says so.
  static Result<std::unique_ptr<CudaBackend>> create(const CudaBackendOptions& options);
  ~CudaBackend() override;

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return name_; }
  bool host_accessible() const override { return false; }
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void synchronize() override;
  Ops& ops() override;
  OptimizerOps& optimizer_ops() override;
  std::unique_ptr<Backend> make_host_backend() override;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cuda::CachingAllocator& allocator() { return *allocator_; }
  // Kernel scratch of at least `bytes`, valid for ops issued until the next call (stream order
  // makes reuse safe: the next op's kernels run after this one's).
  void* workspace(size_t bytes);
  // Scratch of `scratch_bytes` for a reduction kernel, followed by a slot for its result T.
  template <typename T>
  std::pair<void*, T*> workspace_and_result(size_t scratch_bytes) {
    const size_t scratch = kernels::cuda::align_workspace(scratch_bytes);
    char* ws = static_cast<char*>(workspace(scratch + sizeof(T)));
    return {ws, reinterpret_cast<T*>(ws + scratch)};
  }
  // A value the stream computed into device memory, read back through pinned memory (waits for
  // the stream).
  template <typename T>
  T read_back(const T* device_value) {
    static_assert(sizeof(T) <= 256);
    ZT_CUDA(
        cudaMemcpyAsync(pinned_scalars_, device_value, sizeof(T), cudaMemcpyDeviceToHost, stream_));
    synchronize();
    T v;
    std::memcpy(&v, pinned_scalars_, sizeof(T));
    return v;
  }

 protected:
  void* raw_alloc(size_t bytes) override;
  void raw_free(void* p, size_t bytes) override;

 private:
  CudaBackend() = default;

  int device_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::CachingAllocator> allocator_;
  std::unique_ptr<CudaOps> ops_;
  std::unique_ptr<CudaOptimizerOps> optimizer_ops_;
  Buffer workspace_;
  void* pinned_scalars_ = nullptr;  // 256 bytes for read_back
};

// Whether `p` is host memory the CPU can read (pageable or pinned) rather than device memory.
bool is_host_pointer(const void* p);

}  // namespace zt
