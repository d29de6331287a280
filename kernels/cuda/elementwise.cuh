// CUDA twins of kernels/gelu.h and kernels/residual.h (conventions: launch.cuh).
//   gelu_fwd:     out (n) = gelu(inp)               (=)
//   gelu_bwd:     dinp (n) = dout * gelu'(inp)      (=)  (dinp may alias dout)
//   residual_fwd: out (n) = a + b                   (=)  (out may alias a or b)
//   add_inplace:  dst (n) += src                    (+=)
// 16-byte vectorised loads and stores where the pointers allow it, scalar otherwise.
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

cudaError_t gelu_fwd(int dtype, void* out, const void* inp, size_t n, cudaStream_t stream);
cudaError_t gelu_bwd(int dtype, void* dinp, const void* inp, const void* dout, size_t n,
                     cudaStream_t stream);
cudaError_t residual_fwd(int dtype, void* out, const void* a, const void* b, size_t n,
                         cudaStream_t stream);
cudaError_t add_inplace(int dtype, void* dst, const void* src, size_t n, cudaStream_t stream);

}  // namespace zt::kernels::cuda
