// Elementwise adds for the residual stream.
//   residual_fwd: out (n) = a + b        (=)  (out may alias a or b)
//   add_inplace:  dst (n) += src         (+=)
#pragma once

#include <cstddef>

namespace zt::kernels::cpu {

template <typename T>
void residual_fwd(T* out, const T* a, const T* b, size_t n);
template <typename T>
void add_inplace(T* dst, const T* src, size_t n);

}  // namespace zt::kernels::cpu
