#include "runtime/backend/cuda/pinned_host_backend.h"

#include <cstring>

#include <cuda_runtime.h>

namespace zt {
namespace {

class PinnedHostBackend final : public Backend {
 public:
  explicit PinnedHostBackend(int device) : device_(device), cpu_(make_cpu_backend()) {}

  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "pinned host memory"; }
  bool host_accessible() const override { return true; }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void fill_zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void synchronize() override {}
  Ops& ops() override { return cpu_->ops(); }
  OptimizerOps& optimizer_ops() override { return cpu_->optimizer_ops(); }
  std::unique_ptr<Backend> make_host_backend() override {
    return std::make_unique<PinnedHostBackend>(device_);
  }

 protected:
  void* raw_alloc(size_t bytes) override {
    cudaSetDevice(device_);
    void* p = nullptr;
    // Portable: usable from any device context; the worker has one device, but the flag is free.
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return p;
  }
  void raw_free(void* p, size_t) override { cudaFreeHost(p); }

 private:
  int device_;
  std::unique_ptr<Backend> cpu_;  // ops only; its own scratch is ordinary host memory
};

}  // namespace

std::unique_ptr<Backend> make_pinned_host_backend(int device) {
  return std::make_unique<PinnedHostBackend>(device);
}

}  // namespace zt
