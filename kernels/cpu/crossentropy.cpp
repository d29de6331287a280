// Fused softmax + cross-entropy, one row of the logits at a time.
//   logits (N,V), targets (N) -> losses (N) fp32 (=) = logsumexp(logits[n]) - logits[n, target]
//                                dlogits (N,V) (=) = (softmax(logits[n]) - onehot) * dloss
// dlogits may alias logits (every element is read before it is written, row by row); dlogits null
// computes the losses only.
#include "kernels/crossentropy.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {

template <typename T>
void softmax_crossentropy_fwd_bwd(float* losses, T* dlogits, const T* logits,
                                  const int32_t* targets, int N, int V, float dloss) {
  const bool parallel = static_cast<size_t>(N) * V >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int n = 0; n < N; ++n) {
    const T* x = logits + static_cast<int64_t>(n) * V;
    T* d = dlogits != nullptr ? dlogits + static_cast<int64_t>(n) * V : nullptr;
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; ++i) mx = std::max(mx, to_f32(x[i]));
    const int tgt = targets[n];
    const float x_tgt = to_f32(x[tgt]);

    // fp32 storage can hold the exponentials in dlogits between the two passes, saving one exp
    // per element; 16-bit storage would round them, so it recomputes them instead.
    constexpr bool kStageInOutput = std::is_same_v<T, float>;
    float sum = 0.0f;
    if (kStageInOutput && d != nullptr) {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) {
        const float e = detail::exp_approx(to_f32(x[i]) - mx);
        d[i] = detail::store<T>(e);
        sum += e;
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int i = 0; i < V; ++i) sum += detail::exp_approx(to_f32(x[i]) - mx);
    }
    losses[n] = (mx - x_tgt) + std::log(sum);
    if (d == nullptr) continue;

    const float inv_sum = 1.0f / sum;
    const float scale = dloss * inv_sum;
    if constexpr (kStageInOutput) {
#pragma omp simd
      for (int i = 0; i < V; ++i) d[i] = d[i] * scale;
    } else {
#pragma omp simd
      for (int i = 0; i < V; ++i) {
        d[i] = detail::store<T>(detail::exp_approx(to_f32(x[i]) - mx) * scale);
      }
    }
    // The target's (p - 1) is formed in fp32 before the single rounding.
    d[tgt] = detail::store<T>((detail::exp_approx(x_tgt - mx) * inv_sum - 1.0f) * dloss);
  }
}

#define ZT_INSTANTIATE_CROSSENTROPY(T)                                                          \
  template void softmax_crossentropy_fwd_bwd<T>(float*, T*, const T*, const int32_t*, int, int, \
                                                float);
ZT_INSTANTIATE_CROSSENTROPY(float)
ZT_INSTANTIATE_CROSSENTROPY(bf16)
ZT_INSTANTIATE_CROSSENTROPY(fp16)
#undef ZT_INSTANTIATE_CROSSENTROPY

}  // namespace zt::kernels::cpu
