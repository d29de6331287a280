// Causal multi-head self-attention, flash-attention style: queries and keys are processed in tiles
// of kAttentionTile rows with an online softmax, so no more than one tile of the (T,T) score matrix
// exists at a time. Scores are scaled by 1/sqrt(HS), HS = C/NH.
//   qkv (B,T,3C): for each token [q | k | v], each of C = NH*HS with head h at columns h*HS..
//   attention_fwd: out (B,T,C) (=), lse (B,NH,T) fp32 log-sum-exp of each query's scaled scores (=)
//   attention_bwd: dqkv (B,T,3C) (=) from dout (B,T,C), using qkv, out and lse of the forward
//                  (scores and probabilities are recomputed tile by tile).
#pragma once

#include <cstddef>

namespace zt::kernels::cpu {

constexpr int kAttentionTile = 64;

size_t attention_fwd_scratch_bytes(int B, int T, int C, int NH);
template <typename T>
void attention_fwd(T* out, float* lse, const T* qkv, int B, int T_, int C, int NH, void* scratch);

size_t attention_bwd_scratch_bytes(int B, int T, int C, int NH);
template <typename T>
void attention_bwd(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B,
                   int T_, int C, int NH, void* scratch);

}  // namespace zt::kernels::cpu
