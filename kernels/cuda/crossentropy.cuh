// CUDA twin of kernels/crossentropy.h (conventions: launch.cuh): fused softmax + cross-entropy,
// forward and backward in one kernel, one block per row, online max/sum over V in fp32.
//   losses (N) fp32 (=) = logsumexp(logits[n]) - logits[n, targets[n]]
//   dlogits (N,V) (=) = (softmax(logits[n]) - onehot(targets[n])) * dloss; may alias logits;
//   dlogits null: forward only. targets int32 in device memory, in [0, V).
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

cudaError_t softmax_crossentropy(int dtype, float* losses, void* dlogits, const void* logits,
                                 const int32_t* targets, int N, int V, float dloss,
                                 cudaStream_t stream);

}  // namespace zt::kernels::cuda
