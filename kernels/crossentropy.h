// Fused softmax + cross-entropy, forward and backward in one pass over the logits.
//   logits (N,V), targets (N) in [0,V)
//   losses (N) fp32 (=) = logsumexp(logits[n]) - logits[n, targets[n]]
//   dlogits (N,V) (=) = (softmax(logits[n]) - onehot(targets[n])) * dloss; may alias logits;
//   dlogits null: forward only.
#pragma once

#include <cstdint>

namespace zt::kernels::cpu {

template <typename T>
void softmax_crossentropy_fwd_bwd(float* losses, T* dlogits, const T* logits,
                                  const int32_t* targets, int N, int V, float dloss);

}  // namespace zt::kernels::cpu
