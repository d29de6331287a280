// Reference (oracle) optimizer and gradient-statistics kernels in fp64.
//   adamw_update: PyTorch's AdamW (decoupled weight decay), the formula of kernels/optimizer.h:
//     g = grad * grad_scale; master *= (1 - lr * weight_decay)
//     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//     master -= (lr / bias_corr1) * m / (sqrt(v) / sqrt(bias_corr2) + eps)
//   sum_squares: sum of x^2;  count_nonfinite: number of NaN/Inf elements
#pragma once

#include <cmath>
#include <cstddef>

namespace zt::kernels::ref {

inline void adamw_update(double* master, double* m, double* v, const double* grad, size_t n,
                         double lr, double beta1, double beta2, double eps, double weight_decay,
                         double bias_corr1, double bias_corr2, double grad_scale) {
  for (size_t i = 0; i < n; ++i) {
    const double g = grad[i] * grad_scale;
    master[i] *= 1.0 - lr * weight_decay;
    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
    master[i] -= (lr / bias_corr1) * m[i] / (std::sqrt(v[i]) / std::sqrt(bias_corr2) + eps);
  }
}

inline double sum_squares(const double* x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

inline size_t count_nonfinite(const double* x, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) count += std::isfinite(x[i]) ? 0 : 1;
  return count;
}

}  // namespace zt::kernels::ref
