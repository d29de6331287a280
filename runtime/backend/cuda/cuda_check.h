// Error handling for CUDA, cuBLAS(Lt) calls inside the CUDA backend. Ops return void (their
// shapes are checked as bugs), so a failing CUDA call throws a StatusError naming the call, the
// error and where; the trainer turns it into the step's error and the worker reports it to the
// coordinator. Asynchronous kernel faults surface at the next synchronising call with the same
// message shape.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "runtime/core/status.h"

namespace zt::cuda {

[[noreturn]] void throw_cuda_error(const char* call, cudaError_t err, const char* file, int line);
[[noreturn]] void throw_cublas_error(const char* call, cublasStatus_t st, const char* file,
                                     int line);
// As a Status, for code paths that return one.
Status cuda_status(const char* call, cudaError_t err);

}  // namespace zt::cuda

#define ZT_CUDA(expr)                                                        \
  do {                                                                       \
    const cudaError_t zt_cuda_err_ = (expr);                                 \
    if (zt_cuda_err_ != cudaSuccess) [[unlikely]]                            \
      ::zt::cuda::throw_cuda_error(#expr, zt_cuda_err_, __FILE__, __LINE__); \
  } while (0)

#define ZT_CUBLAS(expr)                                                         \
  do {                                                                          \
    const cublasStatus_t zt_cublas_st_ = (expr);                                \
    if (zt_cublas_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                    \
      ::zt::cuda::throw_cublas_error(#expr, zt_cublas_st_, __FILE__, __LINE__); \
  } while (0)

// A kernel launcher's result (kernels/cuda return cudaGetLastError after launching): a failed
// launch (bad configuration, or a sticky fault from an earlier kernel) throws naming the op.
#define ZT_CUDA_LAUNCH(op, expr)                                          \
  do {                                                                    \
    const cudaError_t zt_cuda_err_ = (expr);                              \
    if (zt_cuda_err_ != cudaSuccess) [[unlikely]]                         \
      ::zt::cuda::throw_cuda_error(op, zt_cuda_err_, __FILE__, __LINE__); \
  } while (0)
