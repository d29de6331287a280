// CUDA twin of kernels/encoder.h (conventions: launch.cuh).
//   encoder_fwd: out (B,T,C) = wte[tokens[b,t], :] + wpe[t, :]                         (=)
//   encoder_bwd: dwte (V,C) += scatter of dout by token; dwpe rows 0..T-1 += sum_b dout (+=)
// tokens are int32 in device memory, in [0, V) (the caller validated the data). The backward is
// deterministic: the positions of each token are grouped first (a stable LSD radix sort by token,
// i.e. counting sorts over 8-bit digits, in the workspace: each token's positions in ascending
// order), then each (token, channel) sums its positions in fp32 in position order, in fixed
// windows of 32 entries of the sorted list whose partials are added in window order (so a frequent
// token is spread over many blocks), and adds to the gradient once. dwpe sums over b in order.
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

cudaError_t encoder_fwd(int dtype, void* out, const int32_t* tokens, const void* wte,
                        const void* wpe, int B, int T, int C, cudaStream_t stream);

size_t encoder_bwd_workspace_bytes(int B, int T, int C, int V);
cudaError_t encoder_bwd(int dtype, void* dwte, void* dwpe, const void* dout, const int32_t* tokens,
                        int B, int T, int C, int V, void* workspace, cudaStream_t stream);

}  // namespace zt::kernels::cuda
