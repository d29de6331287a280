#include "kernels/cuda/convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace zt::kernels::cuda {
namespace {

__device__ __forceinline__ float load(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* p, size_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load(const __half* p, size_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(float* p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, size_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}
__device__ __forceinline__ void store(__half* p, size_t i, float v) { p[i] = __float2half_rn(v); }

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    store(dst, i, load(src, i));
}

template <typename S>
cudaError_t launch_to(const S* src, int dst_dtype, void* dst, size_t n, cudaStream_t stream) {
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((n + threads - 1) / threads, 65535));
  if (n == 0) return cudaSuccess;
  switch (dst_dtype) {
    case 0:
      convert_kernel<<<blocks, threads, 0, stream>>>(src, static_cast<float*>(dst), n);
      break;
    case 1:
      convert_kernel<<<blocks, threads, 0, stream>>>(src, static_cast<__nv_bfloat16*>(dst), n);
      break;
    case 2:
      convert_kernel<<<blocks, threads, 0, stream>>>(src, static_cast<__half*>(dst), n);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_convert(const void* src, int src_dtype, void* dst, int dst_dtype, size_t n,
                           cudaStream_t stream) {
  switch (src_dtype) {
    case 0:
      return launch_to(static_cast<const float*>(src), dst_dtype, dst, n, stream);
    case 1:
      return launch_to(static_cast<const __nv_bfloat16*>(src), dst_dtype, dst, n, stream);
    case 2:
      return launch_to(static_cast<const __half*>(src), dst_dtype, dst, n, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace zt::kernels::cuda
