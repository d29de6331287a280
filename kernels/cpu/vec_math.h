// Internal helpers of the CPU kernels (not a public interface): a vectorisable expf, an IEEE sqrt
// over spans, and fp32 <-> storage conversion of spans.
//   widen:  dst (n) fp32 = src (n) T        (=)
//   narrow: dst (n) T    = src (n) fp32     (=), rounded once, to nearest even
//
// Note [vectorisable libm]: the build has neither -ffast-math nor -fno-math-errno, so GCC
// vectorises no loop that calls expf, tanhf or sqrtf. exp_approx is branch-free arithmetic the
// vectoriser handles; sqrt_inplace uses the AVX sqrt instructions (exactly rounded like sqrtf).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__AVX__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "kernels/half.h"

namespace zt::kernels::cpu::detail {

// Loops over fewer elements than this stay on the calling thread: waking the OpenMP team costs
// more than it saves.
inline constexpr size_t kMinParallel = size_t{1} << 15;

// exp(x) in fp32 to within 2 ulp (Cephes expf). Inputs are clamped to [-87.3, 88.3] so 2^n stays a
// normal float: exp(-inf) gives ~1e-38 instead of 0, which no caller can tell apart after a sum
// or a multiply by an O(1) factor. NaN stays NaN.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  // Adding 1.5 * 2^23 rounds x / ln2 to the nearest integer and leaves it in the low mantissa bits.
  constexpr float kMagic = 12582912.0f;
  const float t = x * 1.44269504088896341f + kMagic;
  const float n = t - kMagic;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kMagic);
  // ln2 split in two so n * ln2_hi is exact (Cody-Waite reduction), r in [-ln2/2, ln2/2].
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3333519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * std::bit_cast<float>((ni + 127) << 23);
}

// x[i] = sqrt(x[i]), correctly rounded (the same bits as std::sqrt).
inline void sqrt_inplace(float* x, size_t n) {
  size_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    // maskz form: GCC 12 warns (-Wmaybe-uninitialized) inside the unmasked _mm512_sqrt_ps.
    _mm512_storeu_ps(x + i,
                     _mm512_maskz_sqrt_ps(static_cast<__mmask16>(0xFFFF), _mm512_loadu_ps(x + i)));
  }
#elif defined(__AVX__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_sqrt_ps(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) x[i] = std::sqrt(x[i]);
}

// bf16 rounding without the early return of to_bf16, so loops storing bf16 vectorise. Same bits
// as to_bf16 for every input.
inline uint16_t bf16_bits_rne(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

// Storage store used inside kernels: fp32 -> T, rounded once.
template <typename T>
inline T store(float x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16{bf16_bits_rne(x)};
  } else {
    return from_f32<T>(x);
  }
}

// Serial span conversions (callers parallelise over chunks). fp16 uses the F16C instructions when
// present: they round to nearest even and handle denormals, Inf and NaN as half.h does.
template <typename T>
inline void widen_serial(float* dst, const T* src, size_t n) {
  size_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, fp16>) {
    for (; i + 8 <= n; i += 8) {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
  }
#endif
  for (; i < n; ++i) dst[i] = to_f32(src[i]);
}

template <typename T>
inline void narrow_serial(T* dst, const float* src, size_t n) {
  size_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, fp16>) {
    for (; i + 8 <= n; i += 8) {
      const __m128i h =
          _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
    }
  }
#endif
  for (; i < n; ++i) dst[i] = store<T>(src[i]);
}

// Parallel span conversions in fixed 4096-element chunks.
template <typename T>
inline void widen(float* dst, const T* src, size_t n) {
  constexpr size_t kChunk = 4096;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i0 = static_cast<size_t>(k) * kChunk;
    widen_serial(dst + i0, src + i0, std::min(kChunk, n - i0));
  }
}

template <typename T>
inline void narrow(T* dst, const float* src, size_t n) {
  constexpr size_t kChunk = 4096;
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(static) if (n >= kMinParallel)
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i0 = static_cast<size_t>(k) * kChunk;
    narrow_serial(dst + i0, src + i0, std::min(kChunk, n - i0));
  }
}

}  // namespace zt::kernels::cpu::detail
