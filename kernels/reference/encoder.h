// Reference (oracle) token + position embedding: plain loops in fp64.
//   encoder_fwd: tokens (B,T), wte (V,C), wpe (maxT,C) -> out (B,T,C) = wte[tok] + wpe[t]   (=)
//   encoder_bwd: dout (B,T,C) -> dwte (V,C) +=, dwpe rows 0..T-1 of (maxT,C) +=
#pragma once

#include <cstddef>
#include <cstdint>

namespace zt::kernels::ref {

inline void encoder_fwd(double* out, const int32_t* tokens, const double* wte, const double* wpe,
                        int B, int T, int C) {
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const size_t row = static_cast<size_t>(b) * T + t;
      const size_t tok = static_cast<size_t>(tokens[row]);
      for (int c = 0; c < C; ++c)
        out[row * C + c] = wte[tok * C + c] + wpe[static_cast<size_t>(t) * C + c];
    }
  }
}

inline void encoder_bwd(double* dwte, double* dwpe, const double* dout, const int32_t* tokens,
                        int B, int T, int C) {
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const size_t row = static_cast<size_t>(b) * T + t;
      const size_t tok = static_cast<size_t>(tokens[row]);
      for (int c = 0; c < C; ++c) {
        dwte[tok * C + c] += dout[row * C + c];
        dwpe[static_cast<size_t>(t) * C + c] += dout[row * C + c];
      }
    }
  }
}

}  // namespace zt::kernels::ref
