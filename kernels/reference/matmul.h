// Reference (oracle) linear layer, weight in nn.Linear layout: plain loops in fp64.
//   matmul_fwd: inp (N,C), weight (OC,C), bias (OC) -> out (N,OC) (=); bias may be null
//   matmul_bwd: dout (N,OC) -> dinp (N,C) (=, may be null), dweight (OC,C) (+=),
//               dbias (OC) (+=, may be null)
#pragma once

#include <cstddef>

namespace zt::kernels::ref {

inline void matmul_fwd(double* out, const double* inp, const double* weight, const double* bias,
                       int N, int C, int OC) {
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < OC; ++o) {
      double acc = bias != nullptr ? bias[o] : 0.0;
      for (int c = 0; c < C; ++c) {
        acc += inp[static_cast<size_t>(n) * C + c] * weight[static_cast<size_t>(o) * C + c];
      }
      out[static_cast<size_t>(n) * OC + o] = acc;
    }
  }
}

inline void matmul_bwd(double* dinp, double* dweight, double* dbias, const double* dout,
                       const double* inp, const double* weight, int N, int C, int OC) {
  for (int n = 0; n < N && dinp != nullptr; ++n) {
    for (int c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int o = 0; o < OC; ++o) {
        acc += dout[static_cast<size_t>(n) * OC + o] * weight[static_cast<size_t>(o) * C + c];
      }
      dinp[static_cast<size_t>(n) * C + c] = acc;
    }
  }
  for (int o = 0; o < OC; ++o) {
    for (int c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int n = 0; n < N; ++n) {
        acc += dout[static_cast<size_t>(n) * OC + o] * inp[static_cast<size_t>(n) * C + c];
      }
      dweight[static_cast<size_t>(o) * C + c] += acc;
    }
    if (dbias != nullptr) {
      double acc = 0.0;
      for (int n = 0; n < N; ++n) acc += dout[static_cast<size_t>(n) * OC + o];
      dbias[o] += acc;
    }
  }
}

}  // namespace zt::kernels::ref
