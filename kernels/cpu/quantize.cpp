// 8-bit block-wise quantisation and AdamW8bit (formulas in kernels/optimizer.h).
//   quantize_blocks:   x (n) fp32 -> codes (n) u8, absmax (blocks) fp32            (=)
//   dequantize_blocks: codes (n) u8, absmax (blocks) fp32 -> out (n) fp32          (=)
//   adamw8bit_update:  grad (n) T -> master (n) fp32, m/v codes (n) u8 and m/v absmax (blocks),
//                      all updated in place
//
// Note [dynamic code maps]: both maps are built from decades d = 0..6 of the form
// (10^-(d+1), 10^-d], each holding 2^F(d) values spaced linearly,
//     10^-d * (0.1 + 0.9 k / 2^F(d)),  k = 1 .. 2^F(d),
// so the top of every decade (1, 0.1, ..., 1e-6) is a code and, in relative terms, codes are denser
// toward the top of each decade (Dettmers' dynamic tree: the decade is the exponent, given by the
// number of leading zero bits of the code, and k the linear fraction in the bits that follow).
//   signed:   F(d) = 6 - d: 64 + 32 + ... + 1 = 127 magnitudes in [1e-6, 1], each with both signs,
//             plus 0 and +1e-7 = 256 codes. (A set symmetric about an exact 0 has an odd size, so
//             one value has no mirror: +1e-7, the lower edge of the 7th decade.)  code 0 = -1,
//             code 127 = 0, code 128 = 1e-7, code 255 = +1.
//   unsigned: F(d) = 7 - d: 128 + 64 + ... + 2 = 254 values in [5.5e-7, 1], plus 0 and 1e-7 = 256.
//             code 0 = 0, code 255 = 1.
// Entries are computed in fp64 as 10^-d (2^F + 9k) / (10 2^F), then rounded once to fp32, so 1 is
// exact (k = 2^F, d = 0). The largest gap relative to absmax is at the top of the first decade:
// 0.9 / 64 (signed) and 0.9 / 128 (unsigned).
//
// Note [nearest code]: quantize_value returns exactly the code nearest to x, ties to the lower
// code. mid[k] (k = 1..255) is the smallest float strictly above the exact midpoint of code[k-1]
// and code[k] (the midpoint of two floats is exact in fp64), so for a float x, x >= mid[k] exactly
// when x is nearer to code[k] (or beyond). The nearest code is thus #{k : x >= mid[k]}. The lookup
// reads a candidate from lut[] indexed by the top 16 bits of x (sign, exponent, 7 mantissa bits):
// the candidate is the nearest code of the smallest value sharing those bits. Such a bucket is at
// most 2^-8 wide for x in [0.5, 1) and at most 10^-d / 128 wide in decade d, narrower than every
// gap between neighbouring codes there (0.9 / 128 = 0.0070 at the top of the unsigned map, 0.9
// 10^-d / 2^F(d) >= 0.9 10^-d / 64 below), and neighbouring midpoints are at least one gap apart,
// so a bucket holds at most one midpoint and the answer is the candidate or the next code: code =
// lut[bits >> 16] + (x >= mid[lut + 1]). kernel_optimizer_test checks both ends of every bucket and
// both sides of every midpoint against an fp64 brute force. quantize_value and the scalar and AVX2
// block code use this lookup (AVX2 with gathers); the AVX-512 code counts the midpoints by a
// binary search instead (Note [gather-free AVX-512 lookups]). Both compute #{k : x >= mid[k]}, so
// every level gives the same codes.
//   Out of range: x is first clamped to [code[0], code[255]]: Inf and values beyond +-1 take the
//   end codes, negative values take code 0 in the unsigned map.
//   NaN maps to the code of 0 (signed 127, unsigned 0), deterministically and without trapping.
//
// Note [absmax]: a block's absmax is max |x| taken on the bit patterns (|x| as an unsigned integer
// orders like the float and puts NaN above Inf), so it is exact, independent of the order the
// maximum is taken in, and NaN when the block holds a NaN. A block holding NaN or Inf gets absmax
// NaN or Inf: every x / absmax is then 0 or NaN, all its codes are the code of 0, and it
// dequantises to NaN throughout (0 * Inf = NaN), so a non-finite moment is never silently dropped.
// An all-zero block gets absmax 0 and the code of 0 everywhere (no division).
// Idempotence: the element equal to +-absmax gets the exact code +-1, so quantising a dequantised
// block finds the same absmax; every other code c comes back as fl(fl(c a) / a), within 2 ulp of c
// and far from any midpoint, so the same code. (That needs c a to be a normal float: it holds for
// absmax >= 2^-126 / 1e-7, about 1.2e-31.)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "kernels/cpu/optimizer_simd.h"
#include "kernels/cpu/simd.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"
#include "kernels/optimizer.h"

namespace zt::kernels::cpu {
namespace {

using detail::AdamWConst;

// Fills code[], mid[] and lut[] (Note [dynamic code maps], Note [nearest code]).
void build_map(QuantMap& map, bool is_signed) {
  std::vector<float> codes;
  const int top_bits = is_signed ? 6 : 7;
  double decade = 1.0;  // 10^d, exact
  for (int d = 0; d <= 6; ++d, decade *= 10.0) {
    const int f = top_bits - d;
    const double steps = std::ldexp(1.0, f);
    for (int k = 1; k <= (1 << f); ++k) {
      const float value = static_cast<float>((steps + 9.0 * k) / (10.0 * steps * decade));
      codes.push_back(value);
      if (is_signed) codes.push_back(-value);
    }
  }
  codes.push_back(0.0f);
  codes.push_back(1e-7f);
  std::sort(codes.begin(), codes.end());
  // 256 distinct values by construction; kernel_optimizer_test checks it.
  std::copy_n(codes.begin(), 256, map.code);

  map.mid[0] = -std::numeric_limits<float>::infinity();
  map.mid[256] = std::numeric_limits<float>::infinity();
  for (int k = 1; k < 256; ++k) {
    const double exact = (static_cast<double>(map.code[k - 1]) + map.code[k]) / 2.0;
    float t = static_cast<float>(exact);
    if (static_cast<double>(t) <= exact)
      t = std::nextafter(t, std::numeric_limits<float>::infinity());
    map.mid[k] = t;
  }

  const uint8_t zero_code =
      static_cast<uint8_t>(std::find(map.code, map.code + 256, 0.0f) - map.code);
  for (uint32_t u = 0; u < 65536; ++u) {
    if (((u >> 7) & 0xFFu) == 0xFFu) {  // Inf/NaN bits: only NaN gets here after clamping
      map.lut[u] = zero_code;
      continue;
    }
    // The smallest value of the bucket: the largest magnitude when negative.
    const uint32_t bits = (u & 0x8000u) ? ((u << 16) | 0xFFFFu) : (u << 16);
    const float x = std::min(std::max(f32_from_bits(bits), map.code[0]), map.code[255]);
    map.lut[u] =
        static_cast<uint8_t>(std::upper_bound(map.mid + 1, map.mid + 256, x) - (map.mid + 1));
  }
}

inline uint8_t zero_code(const QuantMap& map) { return map.lut[0]; }  // bucket of +0

inline size_t clamp_first_block(size_t first_block) {
  return std::min(std::max<size_t>(first_block, 1), kQuantBlock);
}

// Block b of n elements whose first block is fb long: [i0, i0 + len).
inline void block_range(size_t b, size_t n, size_t fb, size_t& i0, size_t& len) {
  if (b == 0) {
    i0 = 0;
    len = std::min(fb, n);
  } else {
    i0 = fb + (b - 1) * kQuantBlock;
    len = std::min(kQuantBlock, n - i0);
  }
}

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;

// Thresholds of the AVX-512 binary search, level by level (Note [gather-free AVX-512 lookups]).
struct SearchTable {
  alignas(64) float level[8][128];  // level L: mid[(2j + 1) * (128 >> L)], j < 2^L; +Inf after
};

void build_search_table(const QuantMap& map, SearchTable& t) {
  for (int l = 0; l < 8; ++l) {
    const int step = 128 >> l;
    for (int j = 0; j < 128; ++j) {
      t.level[l][j] =
          j < (1 << l) ? map.mid[(2 * j + 1) * step] : std::numeric_limits<float>::infinity();
    }
  }
}

// ---- scalar ----

inline uint8_t quantize_scalar(const QuantMap& map, float x) {
  x = std::min(std::max(x, map.code[0]), map.code[255]);  // NaN stays NaN
  const uint32_t c = map.lut[f32_bits(x) >> 16];
  return static_cast<uint8_t>(c + (x >= map.mid[c + 1] ? 1u : 0u));
}

uint32_t absmax_bits_scalar(const float* x, size_t len) {
  uint32_t a = 0;
  for (size_t j = 0; j < len; ++j) a = std::max(a, f32_bits(x[j]) & kAbsMask);
  return a;
}

void quantize_block_scalar(const QuantMap& map, const float* x, size_t len, float absmax,
                           uint8_t* codes) {
  for (size_t j = 0; j < len; ++j) codes[j] = quantize_scalar(map, x[j] / absmax);
}

void dequantize_block_scalar(const QuantMap& map, const uint8_t* codes, size_t len, float absmax,
                             float* out) {
  for (size_t j = 0; j < len; ++j) out[j] = map.code[codes[j]] * absmax;
}

template <typename T>
void adamw8bit_block_scalar(float* p, uint8_t* mc, float* ma, uint8_t* vc, float* va, const T* g,
                            size_t len, const AdamWConst& c, const QuantMap& sm, const QuantMap& um,
                            float* mb, float* vb) {
  const float am = *ma, av = *va;
  for (size_t j = 0; j < len; ++j) {
    float mj = sm.code[mc[j]] * am, vj = um.code[vc[j]] * av;
    detail::adamw_scalar(p[j], mj, vj, to_f32(g[j]), c);
    mb[j] = mj;
    vb[j] = vj;
  }
}

#if ZT_X86_SIMD

// ---- AVX2 ----

ZT_TARGET_AVX2 inline __m256 dequant8(const QuantMap& map, const uint8_t* codes) {
  const __m256i idx =
      _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
  return _mm256_i32gather_ps(map.code, idx, 4);
}

// Codes of 8 values (Note [nearest code]); the lut byte is read as the aligned dword holding it,
// so no gather reads past the table.
ZT_TARGET_AVX2 inline uint64_t quantize8(const QuantMap& map, __m256 y) {
  y = _mm256_min_ps(_mm256_set1_ps(map.code[255]), _mm256_max_ps(_mm256_set1_ps(map.code[0]), y));
  const __m256i t = _mm256_srli_epi32(_mm256_castps_si256(y), 16);
  const __m256i word =
      _mm256_i32gather_epi32(reinterpret_cast<const int*>(map.lut), _mm256_srli_epi32(t, 2), 4);
  const __m256i shift = _mm256_slli_epi32(_mm256_and_si256(t, _mm256_set1_epi32(3)), 3);
  const __m256i one = _mm256_set1_epi32(1);
  __m256i c = _mm256_and_si256(_mm256_srlv_epi32(word, shift), _mm256_set1_epi32(0xFF));
  const __m256 mid = _mm256_i32gather_ps(map.mid, _mm256_add_epi32(c, one), 4);
  c = _mm256_sub_epi32(c, _mm256_castps_si256(_mm256_cmp_ps(y, mid, _CMP_GE_OQ)));  // +1 where >=
  const __m256i bytes = _mm256_shuffle_epi8(
      c, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                          -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
  const uint64_t lo = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm256_castsi256_si128(bytes)));
  const uint64_t hi = static_cast<uint32_t>(_mm_cvtsi128_si32(_mm256_extracti128_si256(bytes, 1)));
  return lo | (hi << 32);
}

ZT_TARGET_AVX2 inline uint32_t hmax_epu32(__m256i v) {
  alignas(32) uint32_t a[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(a), v);
  return *std::max_element(a, a + 8);
}

ZT_TARGET_AVX2 uint32_t absmax_bits_avx2(const float* x, size_t len) {
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(kAbsMask));
  __m256i a = _mm256_setzero_si256();
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    a = _mm256_max_epu32(
        a, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + j)), mask));
  }
  return std::max(hmax_epu32(a), absmax_bits_scalar(x + j, len - j));
}

ZT_TARGET_AVX2 void quantize_block_avx2(const QuantMap& map, const float* x, size_t len,
                                        float absmax, uint8_t* codes) {
  const __m256 a = _mm256_set1_ps(absmax);
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const uint64_t c = quantize8(map, _mm256_div_ps(_mm256_loadu_ps(x + j), a));
    std::memcpy(codes + j, &c, 8);
  }
  for (; j < len; ++j) codes[j] = quantize_scalar(map, x[j] / absmax);
}

ZT_TARGET_AVX2 void dequantize_block_avx2(const QuantMap& map, const uint8_t* codes, size_t len,
                                          float absmax, float* out) {
  const __m256 a = _mm256_set1_ps(absmax);
  size_t j = 0;
  for (; j + 8 <= len; j += 8)
    _mm256_storeu_ps(out + j, _mm256_mul_ps(dequant8(map, codes + j), a));
  for (; j < len; ++j) out[j] = map.code[codes[j]] * absmax;
}

template <typename T>
ZT_TARGET_AVX2 void adamw8bit_block_avx2(float* p, uint8_t* mc, float* ma, uint8_t* vc, float* va,
                                         const T* g, size_t len, const AdamWConst& c,
                                         const QuantMap& sm, const QuantMap& um, float* mb,
                                         float* vb) {
  const detail::AdamWConst8 cv = detail::broadcast8(c);
  const float am = *ma, av = *va;
  const __m256 amv = _mm256_set1_ps(am), avv = _mm256_set1_ps(av);
  size_t j = 0;
  for (; j + 8 <= len; j += 8) {
    __m256 pj = _mm256_loadu_ps(p + j);
    __m256 mj = _mm256_mul_ps(dequant8(sm, mc + j), amv);
    __m256 vj = _mm256_mul_ps(dequant8(um, vc + j), avv);
    detail::adamw8(pj, mj, vj, detail::load8(g + j), cv);
    _mm256_storeu_ps(p + j, pj);
    _mm256_storeu_ps(mb + j, mj);
    _mm256_storeu_ps(vb + j, vj);
  }
  for (; j < len; ++j) {
    float mj = sm.code[mc[j]] * am, vj = um.code[vc[j]] * av;
    detail::adamw_scalar(p[j], mj, vj, to_f32(g[j]), c);
    mb[j] = mj;
    vb[j] = vj;
  }
}

// ---- AVX-512 ----
//
// Note [gather-free AVX-512 lookups]: gathers are slow (on the AMD EPYC development VM, one thread:
// dequantise 0.66 ns per element with vgatherdps against 0.19 with permutes, quantise 1.64 with
// two gathers against 0.92 with the search below; Intel parts with the GDS microcode mitigation
// gather slower still), so AVX-512 looks codes up with register permutes instead. Dequantise: the
// 256 fp32 codes are 8 pairs of registers; vpermt2ps picks within each 32-entry pair by the low 5
// bits and three blends on bits 5-7 choose the pair. Quantise: a branch-free binary search for #{k
// : y >= mid[k]} (Note [nearest code]); its step of size 2^s compares y with mid[c + 2^s] for the
// code bits c found so far, so level L needs the 2^L thresholds mid[(2j + 1) 2^s] (SearchTable),
// looked up with one to four permutes.

struct CodeRegs16 {
  __m512 t[16];
};
struct SearchRegs16 {
  __m512 l0, l1, l2, l3, l4, l5[2], l6[4], l7[8];
};

ZT_TARGET_AVX512 inline CodeRegs16 load_code_regs(const QuantMap& map) {
  CodeRegs16 r;
  for (int i = 0; i < 16; ++i) r.t[i] = _mm512_loadu_ps(map.code + 16 * i);
  return r;
}

ZT_TARGET_AVX512 inline SearchRegs16 load_search_regs(const SearchTable& t) {
  SearchRegs16 r;
  r.l0 = _mm512_set1_ps(t.level[0][0]);
  r.l1 = _mm512_load_ps(t.level[1]);
  r.l2 = _mm512_load_ps(t.level[2]);
  r.l3 = _mm512_load_ps(t.level[3]);
  r.l4 = _mm512_load_ps(t.level[4]);
  for (int i = 0; i < 2; ++i) r.l5[i] = _mm512_load_ps(t.level[5] + 16 * i);
  for (int i = 0; i < 4; ++i) r.l6[i] = _mm512_load_ps(t.level[6] + 16 * i);
  for (int i = 0; i < 8; ++i) r.l7[i] = _mm512_load_ps(t.level[7] + 16 * i);
  return r;
}

// Entry idx (0..63) of the 64 values in t[0..3].
ZT_TARGET_AVX512 inline __m512 lookup64(const __m512* t, __m512i idx) {
  const __m512 lo = _mm512_permutex2var_ps(t[0], idx, t[1]);
  const __m512 hi = _mm512_permutex2var_ps(t[2], idx, t[3]);
  return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi);
}

// Entry idx (0..127) of the 128 values in t[0..7].
ZT_TARGET_AVX512 inline __m512 lookup128(const __m512* t, __m512i idx) {
  return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(64)), lookup64(t, idx),
                              lookup64(t + 4, idx));
}

ZT_TARGET_AVX512 inline __m512 dequant16(const CodeRegs16& r, const uint8_t* codes) {
  const __m512i idx =
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(128)),
                              lookup128(r.t, idx), lookup128(r.t + 8, idx));
}

// c += bit where y >= thr.
ZT_TARGET_AVX512 inline __m512i search_step(__m512i c, __m512 y, __m512 thr, int bit) {
  return _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(y, thr, _CMP_GE_OQ), c,
                               _mm512_set1_epi32(bit));
}

// Codes of 16 values (Note [nearest code]): clamp, binary search, NaN to the code of 0.
ZT_TARGET_AVX512 inline __m128i quantize16(const QuantMap& map, const SearchRegs16& r, __m512 y) {
  y = _mm512_min_ps(_mm512_set1_ps(map.code[255]), _mm512_max_ps(_mm512_set1_ps(map.code[0]), y));
  __m512i c =
      _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(y, r.l0, _CMP_GE_OQ), _mm512_set1_epi32(128));
  c = search_step(c, y, _mm512_permutexvar_ps(_mm512_srli_epi32(c, 7), r.l1), 64);
  c = search_step(c, y, _mm512_permutexvar_ps(_mm512_srli_epi32(c, 6), r.l2), 32);
  c = search_step(c, y, _mm512_permutexvar_ps(_mm512_srli_epi32(c, 5), r.l3), 16);
  c = search_step(c, y, _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), r.l4), 8);
  c = search_step(c, y, _mm512_permutex2var_ps(r.l5[0], _mm512_srli_epi32(c, 3), r.l5[1]), 4);
  c = search_step(c, y, lookup64(r.l6, _mm512_srli_epi32(c, 2)), 2);
  c = search_step(c, y, lookup128(r.l7, _mm512_srli_epi32(c, 1)), 1);
  c = _mm512_mask_mov_epi32(c, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q),
                            _mm512_set1_epi32(map.lut[0]));  // NaN: the code of 0
  return _mm512_cvtepi32_epi8(c);
}

ZT_TARGET_AVX512 uint32_t absmax_bits_avx512(const float* x, size_t len) {
  const __m512i mask = _mm512_set1_epi32(static_cast<int>(kAbsMask));
  __m512i a = _mm512_setzero_si512();
  size_t j = 0;
  for (; j + 16 <= len; j += 16)
    a = _mm512_max_epu32(a, _mm512_and_si512(_mm512_loadu_si512(x + j), mask));
  return std::max(_mm512_reduce_max_epu32(a), absmax_bits_scalar(x + j, len - j));
}

ZT_TARGET_AVX512 void quantize_block_avx512(const QuantMap& map, const SearchTable& table,
                                            const float* x, size_t len, float absmax,
                                            uint8_t* codes) {
  const SearchRegs16 r = load_search_regs(table);
  const __m512 a = _mm512_set1_ps(absmax);
  size_t j = 0;
  for (; j + 16 <= len; j += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + j),
                     quantize16(map, r, _mm512_div_ps(_mm512_loadu_ps(x + j), a)));
  }
  for (; j < len; ++j) codes[j] = quantize_scalar(map, x[j] / absmax);
}

ZT_TARGET_AVX512 void dequantize_block_avx512(const QuantMap& map, const uint8_t* codes, size_t len,
                                              float absmax, float* out) {
  const CodeRegs16 r = load_code_regs(map);
  const __m512 a = _mm512_set1_ps(absmax);
  size_t j = 0;
  for (; j + 16 <= len; j += 16)
    _mm512_storeu_ps(out + j, _mm512_mul_ps(dequant16(r, codes + j), a));
  for (; j < len; ++j) out[j] = map.code[codes[j]] * absmax;
}

// m and v arrive dequantised in mb/vb and leave updated there.
template <typename T>
ZT_TARGET_AVX512 void adamw_block_avx512(float* p, float* mb, float* vb, const T* g, size_t len,
                                         const AdamWConst& c) {
  const detail::AdamWConst16 cv = detail::broadcast16(c);
  size_t j = 0;
  for (; j + 16 <= len; j += 16) {
    __m512 pj = _mm512_loadu_ps(p + j), mj = _mm512_load_ps(mb + j), vj = _mm512_load_ps(vb + j);
    detail::adamw16(pj, mj, vj, detail::load16(g + j), cv);
    _mm512_storeu_ps(p + j, pj);
    _mm512_store_ps(mb + j, mj);
    _mm512_store_ps(vb + j, vj);
  }
  for (; j < len; ++j) detail::adamw_scalar(p[j], mb[j], vb[j], to_f32(g[j]), c);
}

#endif  // ZT_X86_SIMD

// ---- per-block dispatch ----

// absmax of x (Note [absmax]) and the codes of x against it; table: map's SearchTable, used at
// the AVX-512 level only.
void quantize_one_block(SimdLevel level, const QuantMap& map, const SearchTable& table,
                        const float* x, size_t len, uint8_t* codes, float* absmax) {
  uint32_t bits;
  switch (level) {
#if ZT_X86_SIMD
    case SimdLevel::kAvx512:
      bits = absmax_bits_avx512(x, len);
      break;
    case SimdLevel::kAvx2:
      bits = absmax_bits_avx2(x, len);
      break;
#endif
    default:
      bits = absmax_bits_scalar(x, len);
  }
  const float a = f32_from_bits(bits);
  *absmax = a;
  if (bits == 0) {
    std::memset(codes, zero_code(map), len);
    return;
  }
  switch (level) {
#if ZT_X86_SIMD
    case SimdLevel::kAvx512:
      quantize_block_avx512(map, table, x, len, a, codes);
      return;
    case SimdLevel::kAvx2:
      quantize_block_avx2(map, x, len, a, codes);
      return;
#endif
    default:
      quantize_block_scalar(map, x, len, a, codes);
  }
}

void dequantize_one_block(SimdLevel level, const QuantMap& map, const uint8_t* codes, size_t len,
                          float absmax, float* out) {
  switch (level) {
#if ZT_X86_SIMD
    case SimdLevel::kAvx512:
      dequantize_block_avx512(map, codes, len, absmax, out);
      return;
    case SimdLevel::kAvx2:
      dequantize_block_avx2(map, codes, len, absmax, out);
      return;
#endif
    default:
      dequantize_block_scalar(map, codes, len, absmax, out);
  }
}

// Calls body(b, i0, len) for every block, shared out by OpenMP.
template <typename Body>
void for_each_block(size_t n, size_t first_block, Body&& body) {
  const size_t fb = clamp_first_block(first_block);
  const int64_t blocks = static_cast<int64_t>(quant_block_count(n, fb));
#pragma omp parallel for schedule(static) if (n >= detail::kMinParallel)
  for (int64_t b = 0; b < blocks; ++b) {
    size_t i0, len;
    block_range(static_cast<size_t>(b), n, fb, i0, len);
    body(static_cast<size_t>(b), i0, len);
  }
}

}  // namespace

const QuantMap& signed_dynamic_map() {
  static const QuantMap* const map = [] {
    auto* m = new QuantMap;
    build_map(*m, true);
    return m;
  }();
  return *map;
}

const QuantMap& unsigned_dynamic_map() {
  static const QuantMap* const map = [] {
    auto* m = new QuantMap;
    build_map(*m, false);
    return m;
  }();
  return *map;
}

uint8_t quantize_value(const QuantMap& map, float x) { return quantize_scalar(map, x); }

size_t quant_block_count(size_t n, size_t first_block) {
  if (n == 0) return 0;
  const size_t fb = clamp_first_block(first_block);
  if (n <= fb) return 1;
  return 1 + (n - fb + kQuantBlock - 1) / kQuantBlock;
}

void quantize_blocks(const QuantMap& map, const float* x, size_t n, size_t first_block,
                     uint8_t* codes, float* absmax) {
  const SimdLevel level = simd_level();
  auto table = std::make_unique<SearchTable>();
  if (level == SimdLevel::kAvx512) build_search_table(map, *table);
  for_each_block(n, first_block, [&](size_t b, size_t i0, size_t len) {
    quantize_one_block(level, map, *table, x + i0, len, codes + i0, absmax + b);
  });
}

void dequantize_blocks(const QuantMap& map, const uint8_t* codes, const float* absmax, size_t n,
                       size_t first_block, float* out) {
  const SimdLevel level = simd_level();
  for_each_block(n, first_block, [&](size_t b, size_t i0, size_t len) {
    dequantize_one_block(level, map, codes + i0, len, absmax[b], out + i0);
  });
}

template <typename T>
void adamw8bit_update(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                      float* v_absmax, const T* grad, size_t n, size_t first_block, float lr,
                      float beta1, float beta2, float eps, float weight_decay, float bias_corr1,
                      float bias_corr2, float grad_scale) {
  const AdamWConst c =
      detail::adamw_const(lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale);
  const QuantMap& sm = signed_dynamic_map();
  const QuantMap& um = unsigned_dynamic_map();
  const SimdLevel level = simd_level();
  auto tables = std::make_unique<SearchTable[]>(2);
  if (level == SimdLevel::kAvx512) {
    build_search_table(sm, tables[0]);
    build_search_table(um, tables[1]);
  }
  // Per block: dequantise and update into L1-resident scratch, then requantise from it.
  for_each_block(n, first_block, [&](size_t b, size_t i0, size_t len) {
    alignas(64) float mb[kQuantBlock];
    alignas(64) float vb[kQuantBlock];
    float* p = master + i0;
    uint8_t* mc = m_codes + i0;
    uint8_t* vc = v_codes + i0;
    switch (level) {
#if ZT_X86_SIMD
      case SimdLevel::kAvx512:
        dequantize_block_avx512(sm, mc, len, m_absmax[b], mb);
        dequantize_block_avx512(um, vc, len, v_absmax[b], vb);
        adamw_block_avx512(p, mb, vb, grad + i0, len, c);
        break;
      case SimdLevel::kAvx2:
        adamw8bit_block_avx2(p, mc, m_absmax + b, vc, v_absmax + b, grad + i0, len, c, sm, um, mb,
                             vb);
        break;
#endif
      default:
        adamw8bit_block_scalar(p, mc, m_absmax + b, vc, v_absmax + b, grad + i0, len, c, sm, um, mb,
                               vb);
    }
    quantize_one_block(level, sm, tables[0], mb, len, mc, m_absmax + b);
    quantize_one_block(level, um, tables[1], vb, len, vc, v_absmax + b);
  });
}

#define ZT_INSTANTIATE_ADAMW8BIT(T)                                                               \
  template void adamw8bit_update<T>(float*, uint8_t*, float*, uint8_t*, float*, const T*, size_t, \
                                    size_t, float, float, float, float, float, float, float,      \
                                    float);
ZT_INSTANTIATE_ADAMW8BIT(float)
ZT_INSTANTIATE_ADAMW8BIT(bf16)
ZT_INSTANTIATE_ADAMW8BIT(fp16)
#undef ZT_INSTANTIATE_ADAMW8BIT

}  // namespace zt::kernels::cpu
