// Optimizer and gradient-statistics kernels over flat buffers.
//   adamw_update:    grad (n) T -> master, m, v (n) fp32 updated in place (PyTorch AdamW)
//   sum_squares:     x (n) -> sum of x^2, fp64
//   count_nonfinite: x (n) -> number of NaN/Inf elements
#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {
namespace {

// AdamW works on blocks small enough to stay in L1 between its passes (see below).
constexpr size_t kAdamBlock = 512;

// Note [deterministic sum_squares]: the buffer is cut into at most kMaxChunks chunks whose size
// depends only on n; each chunk's fp64 sum lands in its own slot and the slots are added in order.
constexpr size_t kMaxChunks = 256;
constexpr size_t kMinChunk = size_t{1} << 15;

template <typename T>
inline uint32_t exponent_mask_bits(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return f32_bits(x) & 0x7F800000u;
  } else {
    return x.bits & (std::is_same_v<T, bf16> ? 0x7F80u : 0x7C00u);
  }
}

template <typename T>
constexpr uint32_t all_ones_exponent() {
  if constexpr (std::is_same_v<T, float>) {
    return 0x7F800000u;
  } else {
    return std::is_same_v<T, bf16> ? 0x7F80u : 0x7C00u;
  }
}

}  // namespace

template <typename T>
void adamw_update(float* master, float* m, float* v, const T* grad, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2,
                  float grad_scale) {
  const float decay = 1.0f - lr * weight_decay;
  const float step_size = lr / bias_corr1;
  const float bias_corr2_sqrt = std::sqrt(bias_corr2);
  const float one_minus_beta1 = 1.0f - beta1;
  const float one_minus_beta2 = 1.0f - beta2;
  const int64_t blocks = static_cast<int64_t>((n + kAdamBlock - 1) / kAdamBlock);
  // Three passes per block so the middle one can use the vector sqrt (Note [vectorisable libm]).
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallel)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const size_t i0 = static_cast<size_t>(blk) * kAdamBlock;
    const size_t len = std::min(kAdamBlock, n - i0);
    float* p = master + i0;
    float* mb = m + i0;
    float* vb = v + i0;
    const T* gb = grad + i0;
    float denom[kAdamBlock];
#pragma omp simd
    for (size_t j = 0; j < len; ++j) {
      const float g = to_f32(gb[j]) * grad_scale;
      mb[j] = beta1 * mb[j] + one_minus_beta1 * g;
      const float vj = beta2 * vb[j] + one_minus_beta2 * (g * g);
      vb[j] = vj;
      denom[j] = vj;
    }
    detail::sqrt_inplace(denom, len);
#pragma omp simd
    for (size_t j = 0; j < len; ++j) {
      const float d = denom[j] / bias_corr2_sqrt + eps;
      p[j] = p[j] * decay - step_size * (mb[j] / d);
    }
  }
}

template <typename T>
double sum_squares(const T* x, size_t n) {
  if (n == 0) return 0.0;
  const size_t chunk = std::max(kMinChunk, (n + kMaxChunks - 1) / kMaxChunks);
  const int64_t chunks = static_cast<int64_t>((n + chunk - 1) / chunk);
  double partial[kMaxChunks];
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i0 = static_cast<size_t>(k) * chunk;
    const size_t i1 = std::min(n, i0 + chunk);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (size_t i = i0; i < i1; ++i) {
      const double xi = to_f32(x[i]);
      s += xi * xi;
    }
    partial[k] = s;
  }
  double total = 0.0;
  for (int64_t k = 0; k < chunks; ++k) total += partial[k];
  return total;
}

template <typename T>
size_t count_nonfinite(const T* x, size_t n) {
  size_t count = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : count) if (n >= detail::kMinParallel)
  for (size_t i = 0; i < n; ++i)
    count += exponent_mask_bits(x[i]) == all_ones_exponent<T>() ? 1 : 0;
  return count;
}

#define ZT_INSTANTIATE_OPTIMIZER(T)                                                            \
  template void adamw_update<T>(float*, float*, float*, const T*, size_t, float, float, float, \
                                float, float, float, float, float);                            \
  template double sum_squares<T>(const T*, size_t);                                            \
  template size_t count_nonfinite<T>(const T*, size_t);
ZT_INSTANTIATE_OPTIMIZER(float)
ZT_INSTANTIATE_OPTIMIZER(bf16)
ZT_INSTANTIATE_OPTIMIZER(fp16)
#undef ZT_INSTANTIATE_OPTIMIZER

}  // namespace zt::kernels::cpu
