// Reference (oracle) GELU, tanh approximation, exactly the textbook formula in fp64:
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   gelu_fwd: inp (n) -> out (n) =
//   gelu_bwd: inp (n), dout (n) -> dinp (n) = dout * gelu'(inp); dinp may alias dout
#pragma once

#include <cmath>
#include <cstddef>

namespace zt::kernels::ref {

inline constexpr double kGeluSqrt2OverPi = 0.79788456080286535588;  // sqrt(2/pi)
inline constexpr double kGeluCubic = 0.044715;

inline void gelu_fwd(double* out, const double* inp, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double x = inp[i];
    const double u = kGeluSqrt2OverPi * (x + kGeluCubic * x * x * x);
    out[i] = 0.5 * x * (1.0 + std::tanh(u));
  }
}

inline void gelu_bwd(double* dinp, const double* inp, const double* dout, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double x = inp[i];
    const double u = kGeluSqrt2OverPi * (x + kGeluCubic * x * x * x);
    const double th = std::tanh(u);
    const double du_dx = kGeluSqrt2OverPi * (1.0 + 3.0 * kGeluCubic * x * x);
    dinp[i] = dout[i] * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du_dx);
  }
}

}  // namespace zt::kernels::ref
