// GELU, tanh approximation: gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
//   gelu_fwd: inp (n) -> out (n) =
//   gelu_bwd: inp (n), dout (n) -> dinp (n) = dout * gelu'(inp); dinp may alias dout
//
// Note [GELU through the logistic]: 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)) =: s exactly, and
// 1 - tanh(u)^2 = 4 s (1 - s) with 1 - s = exp(-2u) s. Written this way the kernel needs one exp
// (vectorised, see kernels/cpu/vec_math.h) and never forms 1 + tanh(u) for u << 0, where the
// tanh form loses every significant bit to cancellation.
#include "kernels/gelu.h"

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

}  // namespace

template <typename T>
void gelu_fwd(T* out, const T* inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= detail::kMinParallel)
  for (size_t i = 0; i < n; ++i) {
    const float x = to_f32(inp[i]);
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    out[i] = detail::store<T>(x / (1.0f + detail::exp_approx(-2.0f * u)));
  }
}

template <typename T>
void gelu_bwd(T* dinp, const T* inp, const T* dout, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= detail::kMinParallel)
  for (size_t i = 0; i < n; ++i) {
    const float x = to_f32(inp[i]);
    const float x2 = x * x;
    const float u = kSqrt2OverPi * (x + kCubic * x2 * x);
    const float e = detail::exp_approx(-2.0f * u);
    const float s = 1.0f / (1.0f + e);
    const float du_dx = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x2);
    // d/dx [x s(u)] = s + x * 0.5 (1 - tanh^2) du/dx = s + 2 x s (1 - s) du/dx
    const float grad = s + 2.0f * x * s * (e * s) * du_dx;
    dinp[i] = detail::store<T>(to_f32(dout[i]) * grad);
  }
}

#define ZT_INSTANTIATE_GELU(T)                     \
  template void gelu_fwd<T>(T*, const T*, size_t); \
  template void gelu_bwd<T>(T*, const T*, const T*, size_t);
ZT_INSTANTIATE_GELU(float)
ZT_INSTANTIATE_GELU(bf16)
ZT_INSTANTIATE_GELU(fp16)
#undef ZT_INSTANTIATE_GELU

}  // namespace zt::kernels::cpu
