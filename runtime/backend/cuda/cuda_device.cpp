#include "runtime/backend/cuda/cuda_device.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <fmt/format.h>

namespace zt::cuda {

Result<std::vector<DeviceInfo>> list_devices() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess)
    return make_error(StatusCode::kUnsupported, "no usable CUDA device: {} ({})",
                      cudaGetErrorString(err), cudaGetErrorName(err));
  if (count == 0) return make_error(StatusCode::kUnsupported, "no CUDA device visible");
  std::vector<DeviceInfo> out;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess)
      return make_error(StatusCode::kInternal, "cudaGetDeviceProperties({}) failed", i);
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.sm_major = prop.major;
    d.sm_minor = prop.minor;
    d.total_memory = prop.totalGlobalMem;
    if (cudaSetDevice(i) == cudaSuccess) {
      size_t free_b = 0, total_b = 0;
      if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) d.free_memory = free_b;
    }
    out.push_back(d);
  }
  return out;
}

std::string library_versions() {
  int rt = 0, nccl = 0;
  cudaRuntimeGetVersion(&rt);
  ncclGetVersion(&nccl);
  return fmt::format("CUDA runtime {}, cuBLASLt {}, NCCL {}", rt, cublasLtGetVersion(), nccl);
}

}  // namespace zt::cuda
