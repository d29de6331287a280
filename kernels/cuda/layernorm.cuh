// CUDA twin of kernels/layernorm.h (conventions: launch.cuh).
//   layernorm_fwd: out (N,C) = (inp - mean) * rstd * weight + bias; mean, rstd (N) fp32 (=);
//                  mean/rstd may be null (forward only). Biased variance, eps given.
//   layernorm_bwd: dinp (N,C) +=; dweight (C) +=; dbias (C) +=
// dweight/dbias: per-block fp32 partial sums over fixed row ranges in the workspace, then one
// fixed-order reduction per column (deterministic).
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

cudaError_t layernorm_fwd(int dtype, void* out, float* mean, float* rstd, const void* inp,
                          const void* weight, const void* bias, int N, int C, float eps,
                          cudaStream_t stream);

size_t layernorm_bwd_workspace_bytes(int N, int C);
cudaError_t layernorm_bwd(int dtype, void* dinp, void* dweight, void* dbias, const void* dout,
                          const void* inp, const void* weight, const float* mean, const float* rstd,
                          int N, int C, void* workspace, cudaStream_t stream);

}  // namespace zt::kernels::cuda
