// Internal helpers of the CPU optimizer kernels (optimizer.cpp, quantize.cpp); not a public
// interface. Per SIMD level (kernels/cpu/simd.h): gradient loads that widen fp32/bf16/fp16 to fp32
// lanes, and the AdamW rule on one element or one register, written so that every level performs
// the same correctly rounded operations in the same order.
//
// Note [one rounding sequence]: GCC contracts a*b + c into an FMA whenever the target has FMA
// (-ffp-contract=fast is its C++ default), and the intrinsics _mm*_mul_ps/_mm*_add_ps are plain
// vector operators it contracts too. So the formulas never leave a product feeding an addition to
// the compiler: every multiply-add is an explicit fma (std::fma, _mm*_fmadd_ps), and the other
// operations (mul, div, sqrt, add of a quotient) are IEEE operations with one rounding each. The
// scalar, AVX2 and AVX-512 code therefore produce identical bits, the scalar tail of a vector loop
// matches its body, and which elements go through which path (thread split, block length) cannot
// change a result. std::fma needs no FMA unit to be exact (glibc falls back to software).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/half.h"

#if defined(__x86_64__) || defined(__i386__)
// GCC 12's AVX-512 intrinsics pass a self-initialised _mm512_undefined_*() as the merge source of
// their unmasked forms, which -W(maybe-)uninitialized reports once they are inlined (GCC bug
// 105593, fixed in GCC 13). The pragmas must precede the first inclusion of immintrin.h in the
// translation unit, so include this header before vec_math.h.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#define ZT_X86_SIMD 1
#define ZT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,popcnt")))
#define ZT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,popcnt")))
#else
#define ZT_X86_SIMD 0
#endif

namespace zt::kernels::cpu::detail {

// Elementwise kernels split the buffer into chunks of this many elements (a multiple of every
// vector width) that OpenMP shares out; each chunk is one vector loop plus at most the buffer's
// own scalar tail.
inline constexpr size_t kOptChunk = 16384;

// AdamW's per-call constants, derived once from the arguments.
struct AdamWConst {
  float b1, omb1, b2, omb2;  // beta1, 1 - beta1, beta2, 1 - beta2
  float bc2_sqrt, eps;       // sqrt(bias_corr2), eps
  float neg_step, decay;     // -(lr / bias_corr1), 1 - lr * weight_decay
  float grad_scale;
};

inline AdamWConst adamw_const(float lr, float beta1, float beta2, float eps, float weight_decay,
                              float bias_corr1, float bias_corr2, float grad_scale) {
  return {beta1,
          1.0f - beta1,
          beta2,
          1.0f - beta2,
          std::sqrt(bias_corr2),
          eps,
          -(lr / bias_corr1),
          1.0f - lr * weight_decay,
          grad_scale};
}

// One element of AdamW: g is the widened (unscaled) gradient. The reference order of operations
// for every level (Note [one rounding sequence]):
//   g = g * s;  m = fma(1-b1, g, b1*m);  v = fma(1-b2, g*g, b2*v)
//   d = sqrt(v) / sqrt(bc2) + eps;  p = fma(-step, m / d, p * decay)
inline void adamw_scalar(float& p, float& m, float& v, float g, const AdamWConst& c) {
  g = g * c.grad_scale;
  const float mj = std::fma(c.omb1, g, c.b1 * m);
  const float vj = std::fma(c.omb2, g * g, c.b2 * v);
  const float d = std::sqrt(vj) / c.bc2_sqrt + c.eps;
  p = std::fma(c.neg_step, mj / d, p * c.decay);
  m = mj;
  v = vj;
}

#if ZT_X86_SIMD

// ---- AVX2: 8 lanes ----

ZT_TARGET_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
ZT_TARGET_AVX2 inline __m256 load8(const bf16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
ZT_TARGET_AVX2 inline __m256 load8(const fp16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

struct AdamWConst8 {
  __m256 b1, omb1, b2, omb2, bc2_sqrt, eps, neg_step, decay, grad_scale;
};

ZT_TARGET_AVX2 inline AdamWConst8 broadcast8(const AdamWConst& c) {
  return {_mm256_set1_ps(c.b1),       _mm256_set1_ps(c.omb1),     _mm256_set1_ps(c.b2),
          _mm256_set1_ps(c.omb2),     _mm256_set1_ps(c.bc2_sqrt), _mm256_set1_ps(c.eps),
          _mm256_set1_ps(c.neg_step), _mm256_set1_ps(c.decay),    _mm256_set1_ps(c.grad_scale)};
}

ZT_TARGET_AVX2 inline void adamw8(__m256& p, __m256& m, __m256& v, __m256 g, const AdamWConst8& c) {
  g = _mm256_mul_ps(g, c.grad_scale);
  m = _mm256_fmadd_ps(c.omb1, g, _mm256_mul_ps(c.b1, m));
  v = _mm256_fmadd_ps(c.omb2, _mm256_mul_ps(g, g), _mm256_mul_ps(c.b2, v));
  const __m256 d = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), c.bc2_sqrt), c.eps);
  p = _mm256_fmadd_ps(c.neg_step, _mm256_div_ps(m, d), _mm256_mul_ps(p, c.decay));
}

// ---- AVX-512: 16 lanes ----

ZT_TARGET_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
ZT_TARGET_AVX512 inline __m512 load16(const bf16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
ZT_TARGET_AVX512 inline __m512 load16(const fp16* p) {
  return _mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xFFFF),
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

struct AdamWConst16 {
  __m512 b1, omb1, b2, omb2, bc2_sqrt, eps, neg_step, decay, grad_scale;
};

ZT_TARGET_AVX512 inline AdamWConst16 broadcast16(const AdamWConst& c) {
  return {_mm512_set1_ps(c.b1),       _mm512_set1_ps(c.omb1),     _mm512_set1_ps(c.b2),
          _mm512_set1_ps(c.omb2),     _mm512_set1_ps(c.bc2_sqrt), _mm512_set1_ps(c.eps),
          _mm512_set1_ps(c.neg_step), _mm512_set1_ps(c.decay),    _mm512_set1_ps(c.grad_scale)};
}

// maskz forms: GCC 12 warns (-Wmaybe-uninitialized) inside the unmasked _mm512_sqrt_ps.
ZT_TARGET_AVX512 inline __m512 sqrt16(__m512 x) {
  return _mm512_maskz_sqrt_ps(static_cast<__mmask16>(0xFFFF), x);
}

ZT_TARGET_AVX512 inline void adamw16(__m512& p, __m512& m, __m512& v, __m512 g,
                                     const AdamWConst16& c) {
  g = _mm512_mul_ps(g, c.grad_scale);
  m = _mm512_fmadd_ps(c.omb1, g, _mm512_mul_ps(c.b1, m));
  v = _mm512_fmadd_ps(c.omb2, _mm512_mul_ps(g, g), _mm512_mul_ps(c.b2, v));
  const __m512 d = _mm512_add_ps(_mm512_div_ps(sqrt16(v), c.bc2_sqrt), c.eps);
  p = _mm512_fmadd_ps(c.neg_step, _mm512_div_ps(m, d), _mm512_mul_ps(p, c.decay));
}

#endif  // ZT_X86_SIMD

}  // namespace zt::kernels::cpu::detail
