// Reference (oracle) LayerNorm over the last dimension, biased variance: plain loops in fp64.
//   layernorm_fwd: inp (N,C), weight/bias (C) -> out (N,C) (=), mean/rstd (N) (=)
//   layernorm_bwd: dout (N,C) -> dinp (N,C) +=, dweight (C) +=, dbias (C) +=
#pragma once

#include <cmath>
#include <cstddef>

namespace zt::kernels::ref {

inline void layernorm_fwd(double* out, double* mean, double* rstd, const double* inp,
                          const double* weight, const double* bias, int N, int C, double eps) {
  for (int n = 0; n < N; ++n) {
    const double* x = inp + static_cast<size_t>(n) * C;
    double m = 0.0;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    double var = 0.0;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= C;
    const double s = 1.0 / std::sqrt(var + eps);
    for (int c = 0; c < C; ++c) {
      out[static_cast<size_t>(n) * C + c] = (x[c] - m) * s * weight[c] + bias[c];
    }
    mean[n] = m;
    rstd[n] = s;
  }
}

// With xhat = (x - mean) * rstd and g = dout * weight:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dweight = sum_n dout * xhat,
//   dbias = sum_n dout.
inline void layernorm_bwd(double* dinp, double* dweight, double* dbias, const double* dout,
                          const double* inp, const double* weight, const double* mean,
                          const double* rstd, int N, int C) {
  for (int n = 0; n < N; ++n) {
    const size_t row = static_cast<size_t>(n) * C;
    double mean_g = 0.0;
    double mean_g_xhat = 0.0;
    for (int c = 0; c < C; ++c) {
      const double xhat = (inp[row + c] - mean[n]) * rstd[n];
      const double g = dout[row + c] * weight[c];
      mean_g += g;
      mean_g_xhat += g * xhat;
    }
    mean_g /= C;
    mean_g_xhat /= C;
    for (int c = 0; c < C; ++c) {
      const double xhat = (inp[row + c] - mean[n]) * rstd[n];
      const double g = dout[row + c] * weight[c];
      dinp[row + c] += rstd[n] * (g - mean_g - xhat * mean_g_xhat);
      dweight[c] += dout[row + c] * xhat;
      dbias[c] += dout[row + c];
    }
  }
}

}  // namespace zt::kernels::ref
