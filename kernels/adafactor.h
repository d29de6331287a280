// Adafactor's per-element loops (Shazeer & Stern 2018; the Hugging Face implementation's rule),
// over a contiguous piece of one parameter viewed as (rows, cols) with cols its last dimension;
// `first` is the piece's first element in the parameter, so element i of the piece is at row
// (first + i) / cols, column (first + i) % cols. g = grad * grad_scale throughout.
//   sq_sums:        row_sums[r] += g^2 + eps1, col_sums[c] += g^2 + eps1      (+=, fp64)
//   factored_sq:    sum of (g * rfac[r] * cfac[c])^2                           (returned, fp64)
//   unfactored_v:   v = beta2t v + (1 - beta2t)(g^2 + eps1), returns sum of (g / sqrt(v))^2
//   apply:          u = g * (rfac[r] cfac[c]  or  1 / sqrt(v)) * scale   (scale = lr / clip)
//                   m = beta1 m + (1 - beta1) u; u = m                    (when m is given)
//                   master = (master + master * (-wd * lr)) - u
// The sums run in a fixed order (deterministic); apply is multi-threaded.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zt::kernels::cpu {

template <typename T>
void adafactor_sq_sums(const T* grad, size_t n, int64_t first, int64_t cols, float grad_scale,
                       float eps1, double* row_sums, double* col_sums);

template <typename T>
double adafactor_factored_sq(const T* grad, size_t n, int64_t first, int64_t cols, float grad_scale,
                             const float* rfac, const float* cfac);

template <typename T>
double adafactor_unfactored_v(const T* grad, float* v, size_t n, float grad_scale, float beta2t,
                              float eps1);

// rfac/cfac null: unfactored (v given).
template <typename T>
void adafactor_apply(float* master, float* m, const T* grad, size_t n, int64_t first, int64_t cols,
                     const float* rfac, const float* cfac, const float* v, float grad_scale,
                     float scale, float lr, float beta1, float weight_decay);

}  // namespace zt::kernels::cpu
