// Optimizer and gradient-statistics kernels over flat buffers.
//   adamw_update: PyTorch's AdamW (decoupled weight decay) on fp32 master weights.
//     g = grad[i] * grad_scale (grad_scale folds loss-scale unscaling and clipping)
//     master *= (1 - lr*weight_decay); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
//     master -= (lr / bias_corr1) * m / (sqrt(v) / sqrt(bias_corr2) + eps)       (+=)
//   sum_squares: sum of x^2 in fp64, fixed chunking (deterministic)
//   count_nonfinite: number of NaN/Inf elements
#pragma once

#include <cstddef>

namespace zt::kernels::cpu {

template <typename T>
void adamw_update(float* master, float* m, float* v, const T* grad, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2,
                  float grad_scale);

template <typename T>
double sum_squares(const T* x, size_t n);

template <typename T>
size_t count_nonfinite(const T* x, size_t n);

}  // namespace zt::kernels::cpu
