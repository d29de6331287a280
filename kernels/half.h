// 16-bit floating-point storage types shared by every kernel: bf16 (8-bit exponent, 7-bit mantissa)
// and fp16 (IEEE binary16). Storage only: arithmetic is done in fp32 after `to_f32`.
// Conversions from fp32 round to nearest, ties to even; NaN stays NaN (quiet, sign kept), overflow
// goes to +-Inf, fp16 denormals are produced and read exactly. Bit layouts match CUDA's
// __nv_bfloat16 and __half, so buffers move between backends unchanged.
#pragma once

#include <cstdint>
#include <cstring>

namespace zt {

struct bf16 {
  uint16_t bits;
};
struct fp16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2 && sizeof(fp16) == 2);

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return f32_from_bits(static_cast<uint32_t>(x.bits) << 16); }

inline float to_f32(fp16 x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return f32_from_bits(sign | 0x7F800000u | (mant << 13));  // Inf / NaN
  if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return f32_from_bits(sign);  // +-0
  // Denormal: normalise the mantissa.
  int e = -1;
  do {
    mant <<= 1;
    ++e;
  } while ((mant & 0x400u) == 0);
  return f32_from_bits(sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3FFu) << 13));
}

inline bf16 to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7FFFu + lsb;  // round to nearest even; carries into the exponent (to Inf) correctly
  return bf16{static_cast<uint16_t>(u >> 16)};
}

inline fp16 to_fp16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return fp16{static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu))};
  if (a >= 0x477FF000u) return fp16{static_cast<uint16_t>(sign | 0x7C00u)};  // rounds to >= 65520: Inf
  if (a >= 0x38800000u) {  // normal fp16 range (>= 2^-14)
    const uint32_t lsb = (a >> 13) & 1u;
    const uint32_t r = a + 0xFFFu + lsb - (112u << 23);
    return fp16{static_cast<uint16_t>(sign | (r >> 13))};
  }
  if (a < 0x33000000u) return fp16{sign};  // below half the smallest denormal (2^-25): zero
  // Denormal: shift the full mantissa right and round to nearest even.
  const uint32_t exp = a >> 23;
  const uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - exp;  // 14..24 (value = mant * 2^(exp-150), unit 2^-24)
  const uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  const uint32_t rounded = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
  return fp16{static_cast<uint16_t>(sign | rounded)};
}

// Generic store: from_f32<T>(x) converts an fp32 value into storage type T.
template <typename T>
inline T from_f32(float x);
template <>
inline float from_f32<float>(float x) {
  return x;
}
template <>
inline bf16 from_f32<bf16>(float x) {
  return to_bf16(x);
}
template <>
inline fp16 from_f32<fp16>(float x) {
  return to_fp16(x);
}

}  // namespace zt
