// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//   gelu_fwd: out (n) = gelu(inp)               (=)
//   gelu_bwd: dinp (n) = dout * gelu'(inp)      (=)   (dinp may alias dout)
#pragma once

#include <cstddef>

namespace zt::kernels::cpu {

template <typename T>
void gelu_fwd(T* out, const T* inp, size_t n);
template <typename T>
void gelu_bwd(T* dinp, const T* inp, const T* dout, size_t n);

}  // namespace zt::kernels::cpu
