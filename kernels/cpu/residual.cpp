// Elementwise adds of the residual stream.
//   residual_fwd: a (n), b (n) -> out (n) = a + b; out may alias a or b
//   add_inplace:  src (n) -> dst (n) += src
#include "kernels/residual.h"

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {

template <typename T>
void residual_fwd(T* out, const T* a, const T* b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= detail::kMinParallel)
  for (size_t i = 0; i < n; ++i) out[i] = detail::store<T>(to_f32(a[i]) + to_f32(b[i]));
}

template <typename T>
void add_inplace(T* dst, const T* src, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= detail::kMinParallel)
  for (size_t i = 0; i < n; ++i) dst[i] = detail::store<T>(to_f32(dst[i]) + to_f32(src[i]));
}

#define ZT_INSTANTIATE_RESIDUAL(T)                               \
  template void residual_fwd<T>(T*, const T*, const T*, size_t); \
  template void add_inplace<T>(T*, const T*, size_t);
ZT_INSTANTIATE_RESIDUAL(float)
ZT_INSTANTIATE_RESIDUAL(bf16)
ZT_INSTANTIATE_RESIDUAL(fp16)
#undef ZT_INSTANTIATE_RESIDUAL

}  // namespace zt::kernels::cpu
