// LayerNorm over the last dimension, eps given (GPT-2: 1e-5), biased variance.
//   layernorm_fwd: out (N,C) = (inp - mean) * rstd * weight + bias;  mean, rstd (N) fp32   (=)
//                  mean/rstd may be null (forward only)
//   layernorm_bwd: dinp (N,C) +=;  dweight (C) +=;  dbias (C) +=
// dweight/dbias are reduced over N in fp32 with a fixed chunking (deterministic).
#pragma once

#include <cstddef>

namespace zt::kernels::cpu {

template <typename T>
void layernorm_fwd(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
                   int N, int C, float eps);

// scratch: layernorm_bwd_scratch_bytes(N, C) bytes.
size_t layernorm_bwd_scratch_bytes(int N, int C);
template <typename T>
void layernorm_bwd(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                   const float* mean, const float* rstd, int N, int C, void* scratch);

}  // namespace zt::kernels::cpu
