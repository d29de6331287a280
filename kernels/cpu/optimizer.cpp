// Optimizer and gradient-statistics kernels over flat buffers (formulas in kernels/optimizer.h).
//   adamw_update:    grad (n) T -> master, m, v (n) fp32 updated in place
//   sgd_update:      grad (n) T -> master, momentum_buf (n) fp32 updated in place
//   lion_update:     grad (n) T -> master, m (n) fp32 updated in place
//   sum_squares:     x (n) -> sum of x^2, fp64
//   count_nonfinite: x (n) -> number of NaN/Inf elements
// (adamw8bit_update and the quantisation maps are in quantize.cpp.)
//
// Every kernel is one fused pass over memory: OpenMP shares fixed chunks of kOptChunk elements,
// each chunk runs the vector loop of the SIMD level chosen at run time (simd.h), and the buffer's
// last < 16 elements go through the scalar code, which rounds identically (Note [one rounding
// sequence] in optimizer_simd.h). Elementwise results therefore depend neither on the thread count
// nor on the SIMD level; sum_squares fixes its summation order (Note [deterministic sum_squares]).
#include "kernels/optimizer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cpu/optimizer_simd.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {

// ---- SIMD level ----

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "scalar";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kAvx512:
      return "avx512";
  }
  return "?";
}

SimdLevel detected_simd_level() {
  static const SimdLevel detected = [] {
#if ZT_X86_SIMD
    // Also checks that the OS saves the AVX/AVX-512 registers (XCR0), not only CPUID.
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
        __builtin_cpu_supports("popcnt")) {
      return SimdLevel::kAvx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("popcnt")) {
      return SimdLevel::kAvx2;
    }
#endif
    return SimdLevel::kScalar;
  }();
  return detected;
}

bool simd_level_supported(SimdLevel level) {
  return static_cast<int>(level) <= static_cast<int>(detected_simd_level());
}

namespace {
std::atomic<int>& level_slot() {
  static std::atomic<int> slot{static_cast<int>(detected_simd_level())};
  return slot;
}
}  // namespace

SimdLevel simd_level() {
  return static_cast<SimdLevel>(level_slot().load(std::memory_order_relaxed));
}

bool set_simd_level_for_testing(SimdLevel level) {
  if (!simd_level_supported(level)) return false;
  level_slot().store(static_cast<int>(level), std::memory_order_relaxed);
  return true;
}

namespace {

using detail::AdamWConst;
using detail::kOptChunk;

// Calls body(i0, len) on every kOptChunk-element chunk of [0, n), shared out by OpenMP.
template <typename Body>
inline void for_each_chunk(size_t n, Body&& body) {
  const int64_t chunks = static_cast<int64_t>((n + kOptChunk - 1) / kOptChunk);
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallel)
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i0 = static_cast<size_t>(k) * kOptChunk;
    body(i0, std::min(kOptChunk, n - i0));
  }
}

// ---- SGD and Lion: constants and scalar elements (the rounding sequence every level follows) ----

struct SgdConst {
  float neg_lr, momentum, one_minus_dampening, weight_decay, grad_scale;
  bool use_momentum, nesterov, first_step;
};

//   g = fma(wd, p, g * s);  buf = first ? g : fma(1 - dampening, g, momentum * buf)
//   g = nesterov ? fma(momentum, buf, g) : buf;  p = fma(-lr, g, p)
inline void sgd_scalar(float& p, float* buf, float g, const SgdConst& c) {
  g = std::fma(c.weight_decay, p, g * c.grad_scale);
  if (c.use_momentum) {
    const float b = c.first_step ? g : std::fma(c.one_minus_dampening, g, c.momentum * *buf);
    *buf = b;
    g = c.nesterov ? std::fma(c.momentum, b, g) : b;
  }
  p = std::fma(c.neg_lr, g, p);
}

struct LionConst {
  float b1, omb1, b2, omb2, neg_lr, decay, grad_scale;
};

// sign(c): +-1, 0 for +-0, and NaN for NaN (a NaN gradient poisons the weight visibly instead of
// being skipped).
inline float lion_sign(float c) {
  if (c > 0.0f) return 1.0f;
  if (c < 0.0f) return -1.0f;
  return c == 0.0f ? 0.0f : c;
}

//   g = g * s;  c = fma(1-b1, g, b1*m);  p = fma(-lr, sign(c), p * decay);  m = fma(1-b2, g, b2*m)
inline void lion_scalar(float& p, float& m, float g, const LionConst& c) {
  g = g * c.grad_scale;
  const float u = std::fma(c.omb1, g, c.b1 * m);
  p = std::fma(c.neg_lr, lion_sign(u), p * c.decay);
  m = std::fma(c.omb2, g, c.b2 * m);
}

// ---- scalar level ----

template <typename T>
void adamw_range_scalar(float* p, float* m, float* v, const T* g, size_t len, const AdamWConst& c) {
  for (size_t j = 0; j < len; ++j) detail::adamw_scalar(p[j], m[j], v[j], to_f32(g[j]), c);
}

template <typename T>
void sgd_range_scalar(float* p, float* buf, const T* g, size_t len, const SgdConst& c) {
  for (size_t j = 0; j < len; ++j) sgd_scalar(p[j], buf ? buf + j : nullptr, to_f32(g[j]), c);
}

template <typename T>
void lion_range_scalar(float* p, float* m, const T* g, size_t len, const LionConst& c) {
  for (size_t j = 0; j < len; ++j) lion_scalar(p[j], m[j], to_f32(g[j]), c);
}

#if ZT_X86_SIMD

// ---- AVX2 ----

template <typename T>
ZT_TARGET_AVX2 void adamw_range_avx2(float* p, float* m, float* v, const T* g, size_t len,
                                     const AdamWConst& c) {
  const detail::AdamWConst8 cv = detail::broadcast8(c);
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    __m256 pj = _mm256_loadu_ps(p + j), mj = _mm256_loadu_ps(m + j), vj = _mm256_loadu_ps(v + j);
    detail::adamw8(pj, mj, vj, detail::load8(g + j), cv);
    _mm256_storeu_ps(p + j, pj);
    _mm256_storeu_ps(m + j, mj);
    _mm256_storeu_ps(v + j, vj);
  }
  for (; j < len; ++j) detail::adamw_scalar(p[j], m[j], v[j], to_f32(g[j]), c);
}

template <typename T>
ZT_TARGET_AVX2 void sgd_range_avx2(float* p, float* buf, const T* g, size_t len,
                                   const SgdConst& c) {
  const __m256 neg_lr = _mm256_set1_ps(c.neg_lr), mom = _mm256_set1_ps(c.momentum);
  const __m256 omd = _mm256_set1_ps(c.one_minus_dampening), wd = _mm256_set1_ps(c.weight_decay);
  const __m256 gs = _mm256_set1_ps(c.grad_scale);
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const __m256 pj = _mm256_loadu_ps(p + j);
    __m256 gj = _mm256_fmadd_ps(wd, pj, _mm256_mul_ps(detail::load8(g + j), gs));
    if (c.use_momentum) {
      const __m256 b = c.first_step
                           ? gj
                           : _mm256_fmadd_ps(omd, gj, _mm256_mul_ps(mom, _mm256_loadu_ps(buf + j)));
      _mm256_storeu_ps(buf + j, b);
      gj = c.nesterov ? _mm256_fmadd_ps(mom, b, gj) : b;
    }
    _mm256_storeu_ps(p + j, _mm256_fmadd_ps(neg_lr, gj, pj));
  }
  for (; j < len; ++j) sgd_scalar(p[j], buf ? buf + j : nullptr, to_f32(g[j]), c);
}

template <typename T>
ZT_TARGET_AVX2 void lion_range_avx2(float* p, float* m, const T* g, size_t len,
                                    const LionConst& c) {
  const __m256 b1 = _mm256_set1_ps(c.b1), omb1 = _mm256_set1_ps(c.omb1);
  const __m256 b2 = _mm256_set1_ps(c.b2), omb2 = _mm256_set1_ps(c.omb2);
  const __m256 neg_lr = _mm256_set1_ps(c.neg_lr), decay = _mm256_set1_ps(c.decay);
  const __m256 gs = _mm256_set1_ps(c.grad_scale);
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const __m256 minus_one = _mm256_set1_ps(-1.0f);
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const __m256 gj = _mm256_mul_ps(detail::load8(g + j), gs);
    const __m256 mj = _mm256_loadu_ps(m + j);
    const __m256 u = _mm256_fmadd_ps(omb1, gj, _mm256_mul_ps(b1, mj));
    __m256 s = _mm256_or_ps(_mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_GT_OQ), one),
                            _mm256_and_ps(_mm256_cmp_ps(u, zero, _CMP_LT_OQ), minus_one));
    s = _mm256_blendv_ps(s, u, _mm256_cmp_ps(u, u, _CMP_UNORD_Q));
    _mm256_storeu_ps(p + j,
                     _mm256_fmadd_ps(neg_lr, s, _mm256_mul_ps(_mm256_loadu_ps(p + j), decay)));
    _mm256_storeu_ps(m + j, _mm256_fmadd_ps(omb2, gj, _mm256_mul_ps(b2, mj)));
  }
  for (; j < len; ++j) lion_scalar(p[j], m[j], to_f32(g[j]), c);
}

// ---- AVX-512 ----

template <typename T>
ZT_TARGET_AVX512 void adamw_range_avx512(float* p, float* m, float* v, const T* g, size_t len,
                                         const AdamWConst& c) {
  const detail::AdamWConst16 cv = detail::broadcast16(c);
  size_t j = 0;
  for (; j + 16 <= len; j += 16) {
    __m512 pj = _mm512_loadu_ps(p + j), mj = _mm512_loadu_ps(m + j), vj = _mm512_loadu_ps(v + j);
    detail::adamw16(pj, mj, vj, detail::load16(g + j), cv);
    _mm512_storeu_ps(p + j, pj);
    _mm512_storeu_ps(m + j, mj);
    _mm512_storeu_ps(v + j, vj);
  }
  for (; j < len; ++j) detail::adamw_scalar(p[j], m[j], v[j], to_f32(g[j]), c);
}

template <typename T>
ZT_TARGET_AVX512 void sgd_range_avx512(float* p, float* buf, const T* g, size_t len,
                                       const SgdConst& c) {
  const __m512 neg_lr = _mm512_set1_ps(c.neg_lr), mom = _mm512_set1_ps(c.momentum);
  const __m512 omd = _mm512_set1_ps(c.one_minus_dampening), wd = _mm512_set1_ps(c.weight_decay);
  const __m512 gs = _mm512_set1_ps(c.grad_scale);
  size_t j = 0;
  for (; j + 16 <= len; j += 16) {
    const __m512 pj = _mm512_loadu_ps(p + j);
    __m512 gj = _mm512_fmadd_ps(wd, pj, _mm512_mul_ps(detail::load16(g + j), gs));
    if (c.use_momentum) {
      const __m512 b = c.first_step
                           ? gj
                           : _mm512_fmadd_ps(omd, gj, _mm512_mul_ps(mom, _mm512_loadu_ps(buf + j)));
      _mm512_storeu_ps(buf + j, b);
      gj = c.nesterov ? _mm512_fmadd_ps(mom, b, gj) : b;
    }
    _mm512_storeu_ps(p + j, _mm512_fmadd_ps(neg_lr, gj, pj));
  }
  for (; j < len; ++j) sgd_scalar(p[j], buf ? buf + j : nullptr, to_f32(g[j]), c);
}

template <typename T>
ZT_TARGET_AVX512 void lion_range_avx512(float* p, float* m, const T* g, size_t len,
                                        const LionConst& c) {
  const __m512 b1 = _mm512_set1_ps(c.b1), omb1 = _mm512_set1_ps(c.omb1);
  const __m512 b2 = _mm512_set1_ps(c.b2), omb2 = _mm512_set1_ps(c.omb2);
  const __m512 neg_lr = _mm512_set1_ps(c.neg_lr), decay = _mm512_set1_ps(c.decay);
  const __m512 gs = _mm512_set1_ps(c.grad_scale);
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  const __m512 minus_one = _mm512_set1_ps(-1.0f);
  size_t j = 0;
  for (; j + 16 <= len; j += 16) {
    const __m512 gj = _mm512_mul_ps(detail::load16(g + j), gs);
    const __m512 mj = _mm512_loadu_ps(m + j);
    const __m512 u = _mm512_fmadd_ps(omb1, gj, _mm512_mul_ps(b1, mj));
    __m512 s = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(u, zero, _CMP_GT_OQ), one);
    s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(u, zero, _CMP_LT_OQ), minus_one);
    s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(u, u, _CMP_UNORD_Q), u);
    _mm512_storeu_ps(p + j,
                     _mm512_fmadd_ps(neg_lr, s, _mm512_mul_ps(_mm512_loadu_ps(p + j), decay)));
    _mm512_storeu_ps(m + j, _mm512_fmadd_ps(omb2, gj, _mm512_mul_ps(b2, mj)));
  }
  for (; j < len; ++j) lion_scalar(p[j], m[j], to_f32(g[j]), c);
}

#endif  // ZT_X86_SIMD

// ---- sum_squares ----
//
// Note [deterministic sum_squares]: the buffer is cut into at most kMaxChunks chunks whose size
// depends only on n; each chunk's fp64 sum lands in its own slot and the slots are added in order.
// Within a chunk, element i0 + 16 k + j is added to lane j (k ascending), and the 16 lanes are
// folded as lane[j] += lane[j + w] for w = 8, 4, 2, 1. Squares of fp32 values are exact in fp64, so
// fma(x, x, s) and s + x * x agree, and every SIMD level gives the same bits.
constexpr size_t kMaxChunks = 256;
constexpr size_t kMinChunk = size_t{1} << 15;
constexpr size_t kLanes = 16;

inline double fold_lanes(double* lane) {
  for (size_t w = kLanes / 2; w >= 1; w /= 2) {
    for (size_t j = 0; j < w; ++j) lane[j] += lane[j + w];
  }
  return lane[0];
}

template <typename T>
double sum_squares_scalar(const T* x, size_t len) {
  double lane[kLanes] = {};
  for (size_t i = 0; i < len; ++i) {
    const double xi = to_f32(x[i]);
    lane[i % kLanes] += xi * xi;
  }
  return fold_lanes(lane);
}

#if ZT_X86_SIMD

template <typename T>
ZT_TARGET_AVX2 double sum_squares_avx2(const T* x, size_t len) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;  // lanes 0-3, 4-7, 8-11, 12-15
  size_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    const __m256 lo = detail::load8(x + i), hi = detail::load8(x + i + 8);
    const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(lo));
    const __m256d d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(lo, 1));
    const __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(hi));
    const __m256d d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(hi, 1));
    a0 = _mm256_fmadd_pd(d0, d0, a0);
    a1 = _mm256_fmadd_pd(d1, d1, a1);
    a2 = _mm256_fmadd_pd(d2, d2, a2);
    a3 = _mm256_fmadd_pd(d3, d3, a3);
  }
  alignas(32) double lane[kLanes];
  _mm256_store_pd(lane, a0);
  _mm256_store_pd(lane + 4, a1);
  _mm256_store_pd(lane + 8, a2);
  _mm256_store_pd(lane + 12, a3);
  for (size_t j = 0; i < len; ++i, ++j) {
    const double xi = to_f32(x[i]);
    lane[j] += xi * xi;
  }
  return fold_lanes(lane);
}

template <typename T>
ZT_TARGET_AVX512 double sum_squares_avx512(const T* x, size_t len) {
  __m512d a0 = _mm512_setzero_pd(), a1 = a0;  // lanes 0-7, 8-15
  size_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    const __m512 f = detail::load16(x + i);
    const __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
    const __m512d d1 =
        _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
    a0 = _mm512_fmadd_pd(d0, d0, a0);
    a1 = _mm512_fmadd_pd(d1, d1, a1);
  }
  alignas(64) double lane[kLanes];
  _mm512_store_pd(lane, a0);
  _mm512_store_pd(lane + 8, a1);
  for (size_t j = 0; i < len; ++i, ++j) {
    const double xi = to_f32(x[i]);
    lane[j] += xi * xi;
  }
  return fold_lanes(lane);
}

#endif  // ZT_X86_SIMD

// ---- count_nonfinite ----

template <typename T>
inline uint32_t exponent_mask_bits(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return f32_bits(x) & 0x7F800000u;
  } else {
    return x.bits & (std::is_same_v<T, bf16> ? 0x7F80u : 0x7C00u);
  }
}

template <typename T>
constexpr uint32_t all_ones_exponent() {
  if constexpr (std::is_same_v<T, float>) {
    return 0x7F800000u;
  } else {
    return std::is_same_v<T, bf16> ? 0x7F80u : 0x7C00u;
  }
}

template <typename T>
size_t count_nonfinite_scalar(const T* x, size_t len) {
  size_t count = 0;
  for (size_t i = 0; i < len; ++i) {
    count += exponent_mask_bits(x[i]) == all_ones_exponent<T>() ? 1 : 0;
  }
  return count;
}

#if ZT_X86_SIMD

template <typename T>
ZT_TARGET_AVX2 size_t count_nonfinite_avx2(const T* x, size_t len) {
  const __m256i mask = std::is_same_v<T, float>
                           ? _mm256_set1_epi32(static_cast<int>(all_ones_exponent<T>()))
                           : _mm256_set1_epi16(static_cast<int16_t>(all_ones_exponent<T>()));
  constexpr size_t kPer = 32 / sizeof(T);
  size_t count = 0, i = 0;
  for (; i + kPer <= len; i += kPer) {
    const __m256i b =
        _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), mask);
    if constexpr (std::is_same_v<T, float>) {
      count += static_cast<size_t>(__builtin_popcount(static_cast<unsigned>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b, mask))))));
    } else {
      // Two mask bits per 16-bit element.
      count += static_cast<size_t>(__builtin_popcount(
                   static_cast<unsigned>(_mm256_movemask_epi8(_mm256_cmpeq_epi16(b, mask))))) /
               2;
    }
  }
  return count + count_nonfinite_scalar(x + i, len - i);
}

template <typename T>
ZT_TARGET_AVX512 size_t count_nonfinite_avx512(const T* x, size_t len) {
  constexpr size_t kPer = 64 / sizeof(T);
  size_t count = 0, i = 0;
  for (; i + kPer <= len; i += kPer) {
    const __m512i b = _mm512_loadu_si512(x + i);
    if constexpr (std::is_same_v<T, float>) {
      const __m512i mask = _mm512_set1_epi32(static_cast<int>(all_ones_exponent<T>()));
      count += static_cast<size_t>(__builtin_popcount(
          static_cast<unsigned>(_mm512_cmpeq_epi32_mask(_mm512_and_si512(b, mask), mask))));
    } else {
      const __m512i mask = _mm512_set1_epi16(static_cast<int16_t>(all_ones_exponent<T>()));
      count += static_cast<size_t>(__builtin_popcount(
          static_cast<unsigned>(_mm512_cmpeq_epi16_mask(_mm512_and_si512(b, mask), mask))));
    }
  }
  return count + count_nonfinite_scalar(x + i, len - i);
}

#endif  // ZT_X86_SIMD

}  // namespace

template <typename T>
void adamw_update(float* master, float* m, float* v, const T* grad, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2,
                  float grad_scale) {
  const AdamWConst c =
      detail::adamw_const(lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale);
  const SimdLevel level = simd_level();
  for_each_chunk(n, [&](size_t i0, size_t len) {
    switch (level) {
#if ZT_X86_SIMD
      case SimdLevel::kAvx512:
        adamw_range_avx512(master + i0, m + i0, v + i0, grad + i0, len, c);
        return;
      case SimdLevel::kAvx2:
        adamw_range_avx2(master + i0, m + i0, v + i0, grad + i0, len, c);
        return;
#endif
      default:
        adamw_range_scalar(master + i0, m + i0, v + i0, grad + i0, len, c);
    }
  });
}

template <typename T>
void sgd_update(float* master, float* momentum_buf, const T* grad, size_t n, float lr,
                float momentum, float dampening, float weight_decay, bool nesterov, bool first_step,
                float grad_scale) {
  const bool use_momentum = momentum != 0.0f;
  const SgdConst c{-lr,        momentum,     1.0f - dampening, weight_decay,
                   grad_scale, use_momentum, nesterov,         first_step};
  float* buf = use_momentum ? momentum_buf : nullptr;
  const SimdLevel level = simd_level();
  for_each_chunk(n, [&](size_t i0, size_t len) {
    float* b = buf ? buf + i0 : nullptr;
    switch (level) {
#if ZT_X86_SIMD
      case SimdLevel::kAvx512:
        sgd_range_avx512(master + i0, b, grad + i0, len, c);
        return;
      case SimdLevel::kAvx2:
        sgd_range_avx2(master + i0, b, grad + i0, len, c);
        return;
#endif
      default:
        sgd_range_scalar(master + i0, b, grad + i0, len, c);
    }
  });
}

template <typename T>
void lion_update(float* master, float* m, const T* grad, size_t n, float lr, float beta1,
                 float beta2, float weight_decay, float grad_scale) {
  const LionConst c{beta1,     1.0f - beta1, beta2, 1.0f - beta2, -lr, 1.0f - lr * weight_decay,
                    grad_scale};
  const SimdLevel level = simd_level();
  for_each_chunk(n, [&](size_t i0, size_t len) {
    switch (level) {
#if ZT_X86_SIMD
      case SimdLevel::kAvx512:
        lion_range_avx512(master + i0, m + i0, grad + i0, len, c);
        return;
      case SimdLevel::kAvx2:
        lion_range_avx2(master + i0, m + i0, grad + i0, len, c);
        return;
#endif
      default:
        lion_range_scalar(master + i0, m + i0, grad + i0, len, c);
    }
  });
}

template <typename T>
double sum_squares(const T* x, size_t n) {
  if (n == 0) return 0.0;
  const size_t chunk = std::max(kMinChunk, (n + kMaxChunks - 1) / kMaxChunks);
  const int64_t chunks = static_cast<int64_t>((n + chunk - 1) / chunk);
  const SimdLevel level = simd_level();
  double partial[kMaxChunks];
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i0 = static_cast<size_t>(k) * chunk;
    const size_t len = std::min(n, i0 + chunk) - i0;
    switch (level) {
#if ZT_X86_SIMD
      case SimdLevel::kAvx512:
        partial[k] = sum_squares_avx512(x + i0, len);
        break;
      case SimdLevel::kAvx2:
        partial[k] = sum_squares_avx2(x + i0, len);
        break;
#endif
      default:
        partial[k] = sum_squares_scalar(x + i0, len);
    }
  }
  double total = 0.0;
  for (int64_t k = 0; k < chunks; ++k) total += partial[k];
  return total;
}

template <typename T>
size_t count_nonfinite(const T* x, size_t n) {
  const int64_t chunks = static_cast<int64_t>((n + kOptChunk - 1) / kOptChunk);
  const SimdLevel level = simd_level();
  size_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count) if (n >= detail::kMinParallel)
  for (int64_t k = 0; k < chunks; ++k) {
    const size_t i0 = static_cast<size_t>(k) * kOptChunk;
    const size_t len = std::min(kOptChunk, n - i0);
    switch (level) {
#if ZT_X86_SIMD
      case SimdLevel::kAvx512:
        count += count_nonfinite_avx512(x + i0, len);
        break;
      case SimdLevel::kAvx2:
        count += count_nonfinite_avx2(x + i0, len);
        break;
#endif
      default:
        count += count_nonfinite_scalar(x + i0, len);
    }
  }
  return count;
}

#define ZT_INSTANTIATE_OPTIMIZER(T)                                                               \
  template void adamw_update<T>(float*, float*, float*, const T*, size_t, float, float, float,    \
                                float, float, float, float, float);                               \
  template void sgd_update<T>(float*, float*, const T*, size_t, float, float, float, float, bool, \
                              bool, float);                                                       \
  template void lion_update<T>(float*, float*, const T*, size_t, float, float, float, float,      \
                               float);                                                            \
  template double sum_squares<T>(const T*, size_t);                                               \
  template size_t count_nonfinite<T>(const T*, size_t);
ZT_INSTANTIATE_OPTIMIZER(float)
ZT_INSTANTIATE_OPTIMIZER(bf16)
ZT_INSTANTIATE_OPTIMIZER(fp16)
#undef ZT_INSTANTIATE_OPTIMIZER

}  // namespace zt::kernels::cpu
