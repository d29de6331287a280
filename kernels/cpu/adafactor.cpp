// Adafactor's per-element loops (kernels/adafactor.h).
#include "kernels/adafactor.h"

#include <cmath>

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {

template <typename T>
void adafactor_sq_sums(const T* grad, size_t n, int64_t first, int64_t cols, float grad_scale,
                       float eps1, double* row_sums, double* col_sums) {
  int64_t r = first / cols, c = first % cols;
  for (size_t i = 0; i < n; ++i) {
    const float g = to_f32(grad[i]) * grad_scale;
    const double s = static_cast<double>(g * g + eps1);
    row_sums[r] += s;
    col_sums[c] += s;
    if (++c == cols) {
      c = 0;
      ++r;
    }
  }
}

template <typename T>
double adafactor_factored_sq(const T* grad, size_t n, int64_t first, int64_t cols, float grad_scale,
                             const float* rfac, const float* cfac) {
  int64_t r = first / cols, c = first % cols;
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const float u = to_f32(grad[i]) * grad_scale * (rfac[r] * cfac[c]);
    sum += static_cast<double>(u) * u;
    if (++c == cols) {
      c = 0;
      ++r;
    }
  }
  return sum;
}

template <typename T>
double adafactor_unfactored_v(const T* grad, float* v, size_t n, float grad_scale, float beta2t,
                              float eps1) {
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const float g = to_f32(grad[i]) * grad_scale;
    v[i] = beta2t * v[i] + (1.0f - beta2t) * (g * g + eps1);
    const float u = g / std::sqrt(v[i]);
    sum += static_cast<double>(u) * u;
  }
  return sum;
}

template <typename T>
void adafactor_apply(float* master, float* m, const T* grad, size_t n, int64_t first, int64_t cols,
                     const float* rfac, const float* cfac, const float* v, float grad_scale,
                     float scale, float lr, float beta1, float weight_decay) {
  const float decay = -weight_decay * lr;
  const int64_t nn = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallel)
  for (int64_t i = 0; i < nn; ++i) {
    const float g = to_f32(grad[i]) * grad_scale;
    float u;
    if (rfac) {
      const int64_t e = first + i;
      u = g * (rfac[e / cols] * cfac[e % cols]);
    } else {
      u = g / std::sqrt(v[i]);
    }
    u *= scale;
    if (m) {
      m[i] = beta1 * m[i] + (1.0f - beta1) * u;
      u = m[i];
    }
    master[i] = (master[i] + master[i] * decay) - u;
  }
}

#define ZT_INSTANTIATE_ADAFACTOR(T)                                                               \
  template void adafactor_sq_sums<T>(const T*, size_t, int64_t, int64_t, float, float, double*,   \
                                     double*);                                                    \
  template double adafactor_factored_sq<T>(const T*, size_t, int64_t, int64_t, float,             \
                                           const float*, const float*);                           \
  template double adafactor_unfactored_v<T>(const T*, float*, size_t, float, float, float);       \
  template void adafactor_apply<T>(float*, float*, const T*, size_t, int64_t, int64_t,            \
                                   const float*, const float*, const float*, float, float, float, \
                                   float, float);
ZT_INSTANTIATE_ADAFACTOR(float)
ZT_INSTANTIATE_ADAFACTOR(bf16)
ZT_INSTANTIATE_ADAFACTOR(fp16)
#undef ZT_INSTANTIATE_ADAFACTOR

}  // namespace zt::kernels::cpu
