#include "runtime/backend/cuda/cuda_backend.h"

#include <fmt/format.h>

#include "runtime/backend/cuda/cuda_check.h"
#include "runtime/backend/cuda/cuda_ops.h"
#include "runtime/backend/cuda/pinned_host_backend.h"

namespace zt {

bool is_host_pointer(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return true;  // unknown to CUDA: ordinary pageable host memory
  }
  return attr.type == cudaMemoryTypeHost || attr.type == cudaMemoryTypeUnregistered;
}

Result<std::unique_ptr<CudaBackend>> CudaBackend::create(const CudaBackendOptions& options) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return make_error(StatusCode::kUnsupported,
                      "backend: cuda needs a CUDA device, but none is usable: {} ({})",
                      cudaGetErrorName(err), cudaGetErrorString(err));
  }
  if (options.device < 0 || options.device >= count)
    return make_error(StatusCode::kInvalidArgument,
                      "CUDA device {} does not exist: this machine shows {} device(s)",
                      options.device, count);
  ZT_RETURN_IF_ERROR(cuda::cuda_status("cudaSetDevice", cudaSetDevice(options.device)));
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = options.device;
  cudaDeviceProp prop{};
  ZT_RETURN_IF_ERROR(
      cuda::cuda_status("cudaGetDeviceProperties", cudaGetDeviceProperties(&prop, options.device)));
  b->name_ = fmt::format("cuda:{} ({})", options.device, prop.name);
  ZT_RETURN_IF_ERROR(cuda::cuda_status(
      "cudaStreamCreate", cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking)));
  b->allocator_ = std::make_unique<cuda::CachingAllocator>(options.device);
  ZT_RETURN_IF_ERROR(cuda::cuda_status(
      "cudaHostAlloc", cudaHostAlloc(&b->pinned_scalars_, 256, cudaHostAllocDefault)));
  try {
    ZT_ASSIGN_OR_RETURN(Buffer lt_ws,
                        b->allocate(options.cublaslt_workspace_bytes, MemCategory::kWorkspace));
    b->ops_ = std::make_unique<CudaOps>(*b, std::move(lt_ws));
    b->optimizer_ops_ = std::make_unique<CudaOptimizerOps>(*b);
    b->synchronize();
  } catch (const StatusError& e) {
    return e.status();
  }
  return b;
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  optimizer_ops_.reset();
  ops_.reset();
  workspace_.reset();
  if (pinned_scalars_) cudaFreeHost(pinned_scalars_);
  allocator_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  ZT_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
  // A host destination must hold the data on return, and a host source may be reused at once
  // (pinned sources are read by DMA after the call returns): wait for either.
  if (is_host_pointer(dst) || is_host_pointer(src)) ZT_CUDA(cudaStreamSynchronize(stream_));
}

void CudaBackend::fill_zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  ZT_CUDA(cudaMemsetAsync(dst, 0, bytes, stream_));
}

void CudaBackend::synchronize() { ZT_CUDA(cudaStreamSynchronize(stream_)); }

Ops& CudaBackend::ops() { return *ops_; }
OptimizerOps& CudaBackend::optimizer_ops() { return *optimizer_ops_; }

std::unique_ptr<Backend> CudaBackend::make_host_backend() {
  return make_pinned_host_backend(device_);
}

void* CudaBackend::workspace(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (workspace_.bytes() < bytes) {
    workspace_.reset();
    // Grow by half again so a sequence of slightly larger requests does not reallocate each time.
    auto r = allocate(bytes + bytes / 2, MemCategory::kWorkspace);
    if (!r.is_ok()) throw StatusError(r.status());
    workspace_ = std::move(r).value();
  }
  return workspace_.data();
}

void* CudaBackend::raw_alloc(size_t bytes) { return allocator_->allocate(bytes, stream_); }
void CudaBackend::raw_free(void* p, size_t) { allocator_->free(p); }

}  // namespace zt
