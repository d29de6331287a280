// CUDA twin of kernels/attention.h (conventions: launch.cuh): causal multi-head self-attention as
// fused flash-attention kernels (FlashAttention-2 order). Queries and keys are processed in tiles
// with an online softmax in fp32; no (T,T) matrix exists in memory.
//   qkv (B,T,3C): per token [q | k | v], each C = NH*HS, head h at columns h*HS.. ; scale
//   1/sqrt(HS).
//   attention_fwd: out (B,T,C) (=), lse (B,NH,T) fp32 log-sum-exp of each query's scaled scores
//   attention_bwd: dqkv (B,T,3C) (=) from dout, qkv, out, lse (scores recomputed per tile)
// 16-bit dtypes with HS a multiple of 16 (up to 128) run on tensor cores (WMMA, fp32 accumulate);
// any other HS or fp32 storage runs a CUDA-core kernel of the same algorithm. Every element of
// out, lse and dqkv is written. The backward is deterministic (dK/dV accumulated per key tile by
// one block; dQ through a fixed-order reduction over key tiles in the workspace, or recomputed).
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

size_t attention_fwd_workspace_bytes(int B, int T, int C, int NH);
cudaError_t attention_fwd(int dtype, void* out, float* lse, const void* qkv, int B, int T, int C,
                          int NH, void* workspace, cudaStream_t stream);

size_t attention_bwd_workspace_bytes(int B, int T, int C, int NH);
cudaError_t attention_bwd(int dtype, void* dqkv, const void* dout, const void* qkv, const void* out,
                          const float* lse, int B, int T, int C, int NH, void* workspace,
                          cudaStream_t stream);

}  // namespace zt::kernels::cuda
