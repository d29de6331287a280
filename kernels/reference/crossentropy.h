// Reference (oracle) fused softmax + cross-entropy in fp64.
//   logits (N,V), targets (N) -> losses (N) (=) = logsumexp(logits[n]) - logits[n, target]
//                                dlogits (N,V) (=) = (softmax(logits[n]) - onehot) * dloss;
//                                dlogits may alias logits, or be null (forward only)
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace zt::kernels::ref {

inline void softmax_crossentropy_fwd_bwd(double* losses, double* dlogits, const double* logits,
                                         const int32_t* targets, int N, int V, double dloss) {
  for (int n = 0; n < N; ++n) {
    const double* x = logits + static_cast<size_t>(n) * V;
    double mx = x[0];
    for (int i = 1; i < V; ++i) mx = x[i] > mx ? x[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < V; ++i) sum += std::exp(x[i] - mx);
    const double lse = mx + std::log(sum);
    const int tgt = targets[n];
    losses[n] = lse - x[tgt];
    if (dlogits == nullptr) continue;
    double* d = dlogits + static_cast<size_t>(n) * V;
    for (int i = 0; i < V; ++i) {
      const double p = std::exp(x[i] - lse);  // reads x[i] before d[i] is written (aliasing)
      d[i] = (p - (i == tgt ? 1.0 : 0.0)) * dloss;
    }
  }
}

}  // namespace zt::kernels::ref
