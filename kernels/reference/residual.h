// Reference (oracle) residual adds in fp64.
//   residual_fwd: a (n), b (n) -> out (n) = a + b; out may alias a or b
//   add_inplace:  src (n) -> dst (n) += src
#pragma once

#include <cstddef>

namespace zt::kernels::ref {

inline void residual_fwd(double* out, const double* a, const double* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

inline void add_inplace(double* dst, const double* src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

}  // namespace zt::kernels::ref
