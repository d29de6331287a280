// fp64 reference (the oracle) for kernels/attention.h: causal multi-head self-attention computed
// the plain way, one query at a time with a full softmax over its keys. Slow on purpose; used only
// by tests and the CPU backend's reference mode. Scores are scaled by 1/sqrt(HS), HS = C/NH.
//   qkv (B,T,3C): for each token [q | k | v], each of C = NH*HS with head h at columns h*HS..
//   attention_fwd: out (B,T,C) (=), lse (B,NH,T) log-sum-exp of each query's scaled scores (=)
//   attention_bwd: dqkv (B,T,3C) (=) from dout (B,T,C) and qkv; the softmax is recomputed.
// Single-threaded, no scratch; allocates small per-query buffers (std::vector).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace zt::kernels::ref {

inline void attention_fwd(double* out, double* lse, const double* qkv, int B, int T, int C,
                          int NH) {
  const int HS = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  std::vector<double> p(T);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const double* q = qkv + (static_cast<size_t>(b) * T + t) * C3 + h * HS;
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const double* k = qkv + (static_cast<size_t>(b) * T + j) * C3 + C + h * HS;
          double s = 0.0;
          for (int d = 0; d < HS; ++d) s += q[d] * k[d];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        double* o = out + (static_cast<size_t>(b) * T + t) * C + h * HS;
        for (int d = 0; d < HS; ++d) o[d] = 0.0;
        for (int j = 0; j <= t; ++j) {
          const double* v = qkv + (static_cast<size_t>(b) * T + j) * C3 + 2 * C + h * HS;
          const double w = p[j] / sum;
          for (int d = 0; d < HS; ++d) o[d] += w * v[d];
        }
        lse[(static_cast<size_t>(b) * NH + h) * T + t] = mx + std::log(sum);
      }
    }
  }
}

// Gradients of sum(dout * out) with out = attention_fwd(qkv): for each query t with probabilities
// p_j (j <= t), dp_j = dout_t . v_j, ds_j = p_j (dp_j - sum_k p_k dp_k), then
// dq_t = scale sum_j ds_j k_j, dk_j += scale ds_j q_t, dv_j += p_j dout_t.
inline void attention_bwd(double* dqkv, const double* dout, const double* qkv, int B, int T, int C,
                          int NH) {
  const int HS = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  std::fill(dqkv, dqkv + static_cast<size_t>(B) * T * C3, 0.0);
  std::vector<double> p(T), dp(T);
  for (int b = 0; b < B; ++b) {
    const double* base = qkv + static_cast<size_t>(b) * T * C3;
    double* dbase = dqkv + static_cast<size_t>(b) * T * C3;
    for (int h = 0; h < NH; ++h) {
      for (int t = 0; t < T; ++t) {
        const double* q = base + t * C3 + h * HS;
        const double* go = dout + (static_cast<size_t>(b) * T + t) * C + h * HS;
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const double* k = base + j * C3 + C + h * HS;
          double s = 0.0;
          for (int d = 0; d < HS; ++d) s += q[d] * k[d];
          p[j] = s * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        double pdp = 0.0;
        for (int j = 0; j <= t; ++j) {
          p[j] /= sum;
          const double* v = base + j * C3 + 2 * C + h * HS;
          double s = 0.0;
          for (int d = 0; d < HS; ++d) s += go[d] * v[d];
          dp[j] = s;
          pdp += p[j] * s;
        }
        double* dq = dbase + t * C3 + h * HS;
        for (int j = 0; j <= t; ++j) {
          const double ds = p[j] * (dp[j] - pdp) * scale;
          const double* k = base + j * C3 + C + h * HS;
          double* dk = dbase + j * C3 + C + h * HS;
          double* dv = dbase + j * C3 + 2 * C + h * HS;
          for (int d = 0; d < HS; ++d) {
            dq[d] += ds * k[d];
            dk[d] += ds * q[d];
            dv[d] += p[j] * go[d];
          }
        }
      }
    }
  }
}

}  // namespace zt::kernels::ref
