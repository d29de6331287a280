// Causal multi-head self-attention, flash-attention style: queries and keys are processed in tiles
// of kAttentionTile rows with an online softmax, so no more than one tile of the (T,T) score matrix
// exists at a time. Scores are scaled by 1/sqrt(HS), HS = C/NH (C must be a multiple of NH; any
// HS >= 1 and T >= 1 work). Storage float, bf16 or fp16; arithmetic and accumulation in fp32.
//   qkv (B,T,3C): for each token [q | k | v], each of C = NH*HS with head h at columns h*HS..
//   attention_fwd: out (B,T,C) (=), lse (B,NH,T) fp32 log-sum-exp of each query's scaled scores (=)
//   attention_bwd: dqkv (B,T,3C) (=) from dout (B,T,C), using qkv, out and lse of the forward
//                  (scores and probabilities are recomputed tile by tile; FlashAttention-2 order).
// Every element of out, lse and dqkv is written; nothing is accumulated into them.
//
// Scratch: the caller passes `scratch` of at least attention_{fwd,bwd}_scratch_bytes(...) bytes
// (any alignment; 64-byte alignment is best). Its contents on entry do not matter and are garbage
// on return. The size holds per-thread fp32 buffers for omp_get_max_threads() threads, so query the
// size under the same OpenMP thread setting as the call. The forward's size depends only on HS,
// the backward's on T and HS (one head's Q, dO and dQ per thread), never on B.
//
// Threads: OpenMP inside; forward tasks are (b, head, query tile), backward tasks (b, head). No
// heap allocation, no BLAS. Results are bitwise identical for any thread count and schedule.
// Synchronous: all outputs are complete on return.
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
