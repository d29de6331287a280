// Reference (oracle) optimizer and gradient-statistics kernels in fp64.
//   adamw_update: PyTorch's AdamW (decoupled weight decay), the formula of kernels/optimizer.h:
//     g = grad * grad_scale; master *= (1 - lr * weight_decay)
//     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//     master -= (lr / bias_corr1) * m / (sqrt(v) / sqrt(bias_corr2) + eps)
//   sgd_update: torch.optim.SGD (L2 weight decay added to the gradient, momentum, dampening,
//     Nesterov; the buffer is g itself on the first step)
//   lion_update: Lion, sign(0) = 0
//   quantize: the nearest of 256 sorted code values to x (clamped into the map's range), ties to
//     the lower code, by brute force; NaN takes the code of 0
//   adamw8bit_update: AdamW in fp64 on moments stored as codes of the given maps times a per-block
//     absmax (simulated block-wise quantisation: dequantise, update, absmax = max |x|, requantise
//     with quantize; an all-zero block keeps absmax 0 and the code of 0)
//   sum_squares: sum of x^2;  count_nonfinite: number of NaN/Inf elements
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

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

inline void sgd_update(double* master, double* momentum_buf, const double* grad, size_t n,
                       double lr, double momentum, double dampening, double weight_decay,
                       bool nesterov, bool first_step, double grad_scale) {
  for (size_t i = 0; i < n; ++i) {
    double g = grad[i] * grad_scale + weight_decay * master[i];
    if (momentum != 0.0) {
      momentum_buf[i] = first_step ? g : momentum * momentum_buf[i] + (1.0 - dampening) * g;
      g = nesterov ? g + momentum * momentum_buf[i] : momentum_buf[i];
    }
    master[i] -= lr * g;
  }
}

inline void lion_update(double* master, double* m, const double* grad, size_t n, double lr,
                        double beta1, double beta2, double weight_decay, double grad_scale) {
  for (size_t i = 0; i < n; ++i) {
    const double g = grad[i] * grad_scale;
    const double c = beta1 * m[i] + (1.0 - beta1) * g;
    const double sign = c > 0.0 ? 1.0 : (c < 0.0 ? -1.0 : 0.0);
    master[i] = master[i] * (1.0 - lr * weight_decay) - lr * sign;
    m[i] = beta2 * m[i] + (1.0 - beta2) * g;
  }
}

// The index of the code (code[256], ascending) nearest to x, ties to the lower index. For x and
// codes in fp32 range the differences are exact in fp64 wherever a tie is possible, so ties are
// judged exactly.
inline uint8_t quantize(const float* code, double x) {
  if (std::isnan(x)) x = 0.0;
  x = std::min(std::max(x, static_cast<double>(code[0])), static_cast<double>(code[255]));
  int best = 0;
  double best_dist = std::fabs(x - code[0]);
  for (int k = 1; k < 256; ++k) {
    const double d = std::fabs(x - code[k]);
    if (d < best_dist) {
      best = k;
      best_dist = d;
    }
  }
  return static_cast<uint8_t>(best);
}

// Blocks as in kernels/optimizer.h: the first first_block long (1..256), the others 256.
inline size_t quant_block_count(size_t n, size_t first_block) {
  if (n == 0) return 0;
  if (n <= first_block) return 1;
  return 1 + (n - first_block + 255) / 256;
}

// x (len) -> codes, absmax.
inline void quantize_block(const float* code, const double* x, size_t len, uint8_t* codes,
                           double* absmax) {
  double a = 0.0;
  for (size_t j = 0; j < len; ++j) a = std::max(a, std::fabs(x[j]));
  *absmax = a;
  for (size_t j = 0; j < len; ++j) codes[j] = quantize(code, a == 0.0 ? 0.0 : x[j] / a);
}

// signed_code / unsigned_code: the 256 values of the maps for m and v. m_updated / v_updated (n,
// optional) receive the updated moments before they are requantised.
inline void adamw8bit_update(double* master, uint8_t* m_codes, double* m_absmax, uint8_t* v_codes,
                             double* v_absmax, const double* grad, size_t n, size_t first_block,
                             double lr, double beta1, double beta2, double eps, double weight_decay,
                             double bias_corr1, double bias_corr2, double grad_scale,
                             const float* signed_code, const float* unsigned_code,
                             double* m_updated = nullptr, double* v_updated = nullptr) {
  const size_t blocks = quant_block_count(n, first_block);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t i0 = b == 0 ? 0 : first_block + (b - 1) * 256;
    const size_t len = std::min(b == 0 ? first_block : size_t{256}, n - i0);
    std::vector<double> m(len), v(len);
    for (size_t j = 0; j < len; ++j) {
      m[j] = signed_code[m_codes[i0 + j]] * m_absmax[b];
      v[j] = unsigned_code[v_codes[i0 + j]] * v_absmax[b];
    }
    adamw_update(master + i0, m.data(), v.data(), grad + i0, len, lr, beta1, beta2, eps,
                 weight_decay, bias_corr1, bias_corr2, grad_scale);
    if (m_updated) std::copy(m.begin(), m.end(), m_updated + i0);
    if (v_updated) std::copy(v.begin(), v.end(), v_updated + i0);
    quantize_block(signed_code, m.data(), len, m_codes + i0, m_absmax + b);
    quantize_block(unsigned_code, v.data(), len, v_codes + i0, v_absmax + b);
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
