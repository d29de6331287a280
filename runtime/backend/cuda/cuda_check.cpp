#include "runtime/backend/cuda/cuda_check.h"

#include <cublas_v2.h>

#include <fmt/format.h>

namespace zt::cuda {

void throw_cuda_error(const char* call, cudaError_t err, const char* file, int line) {
  throw StatusError(make_error(StatusCode::kInternal, "CUDA error {} ({}) in {} at {}:{}",
                               cudaGetErrorName(err), cudaGetErrorString(err), call, file, line));
}

void throw_cublas_error(const char* call, cublasStatus_t st, const char* file, int line) {
  throw StatusError(make_error(StatusCode::kInternal, "cuBLAS error {} ({}) in {} at {}:{}",
                               cublasGetStatusName(st), cublasGetStatusString(st), call, file,
                               line));
}

Status cuda_status(const char* call, cudaError_t err) {
  if (err == cudaSuccess) return Status::ok();
  return make_error(StatusCode::kInternal, "CUDA error {} ({}) in {}", cudaGetErrorName(err),
                    cudaGetErrorString(err), call);
}

}  // namespace zt::cuda
