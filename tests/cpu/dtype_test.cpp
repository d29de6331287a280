// Checks the 16-bit float conversions of kernels/half.h and zt::convert / parse_dtype / dtype_name
// against references written here from the IEEE definitions, independent of half.h's bit tricks:
//   - decoding: sign * mantissa * 2^exponent built with ldexp from the bit fields;
//   - rounding: a sorted table of every finite positive 16-bit value (decoded as above) plus an
//     overflow sentinel 2^(emax+1); a value rounds to the nearer neighbour, ties to the one with
//     the even bit pattern. The midpoints are exact in double. With the sentinel at the Inf bit
//     pattern, this also gives IEEE overflow: |x| >= max + ulp/2 rounds to Inf (max has an odd
//     mantissa).
//   - for fp16 also GCC's _Float16 (hardware vcvtps2ph or libgcc's __truncsfhf2), where available.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kernels/half.h"
#include "runtime/core/dtype.h"

namespace zt {
namespace {

// ------------------------------------------------------------------------------------------------
// Independent reference

struct Format {
  const char* name;
  int exp_bits;
  int mant_bits;
  int bias;
  uint16_t inf_bits() const { return static_cast<uint16_t>(((1u << exp_bits) - 1u) << mant_bits); }
  uint16_t quiet_bit() const { return static_cast<uint16_t>(1u << (mant_bits - 1)); }
};
constexpr Format kBf16Format{"bf16", 8, 7, 127};
constexpr Format kFp16Format{"fp16", 5, 10, 15};

template <typename T>
const Format& format_of();
template <>
const Format& format_of<bf16>() {
  return kBf16Format;
}
template <>
const Format& format_of<fp16>() {
  return kFp16Format;
}

bool is_nan_bits(const Format& f, uint16_t h) {
  return (h & f.inf_bits()) == f.inf_bits() && (h & ((1u << f.mant_bits) - 1u)) != 0;
}

// Value of a 16-bit pattern, from the IEEE definition.
double ref_decode(const Format& f, uint16_t h) {
  const int e = (h >> f.mant_bits) & ((1 << f.exp_bits) - 1);
  const int m = h & ((1 << f.mant_bits) - 1);
  double mag;
  if (e == (1 << f.exp_bits) - 1) {
    mag = m == 0 ? INFINITY : NAN;
  } else if (e == 0) {
    mag = std::ldexp(m, 1 - f.bias - f.mant_bits);  // subnormal: 0.m * 2^(1-bias)
  } else {
    mag = std::ldexp(m + (1 << f.mant_bits), e - f.bias - f.mant_bits);  // 1.m * 2^(e-bias)
  }
  return std::copysign(mag, (h & 0x8000u) ? -1.0 : 1.0);
}

// The fp32 bit pattern a 16-bit NaN widens to: widening is exact, so the payload moves up
// unchanged.
uint32_t ref_widened_nan_bits(const Format& f, uint16_t h) {
  const uint32_t m = h & ((1u << f.mant_bits) - 1u);
  return (static_cast<uint32_t>(h & 0x8000u) << 16) | 0x7F800000u | (m << (23 - f.mant_bits));
}

class RefRounder {
 public:
  explicit RefRounder(const Format& f) : f_(f) {
    const uint16_t inf = f.inf_bits();
    values_.resize(inf + 2u);
    for (uint32_t h = 0; h < inf; ++h) values_[h] = ref_decode(f, static_cast<uint16_t>(h));
    values_[inf] = std::ldexp(1.0, (1 << f.exp_bits) - 1 - f.bias);  // next binade after max
    values_[inf + 1u] = INFINITY;
    for (uint32_t h = 1; h <= inf; ++h) EXPECT_LT(values_[h - 1], values_[h]) << f.name << " " << h;
  }

  double value(uint16_t positive_bits) const { return values_[positive_bits]; }

  // Round-to-nearest-even of a non-NaN fp32 value.
  uint16_t round(float x) const {
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(static_cast<double>(x));
    const auto it = std::upper_bound(values_.begin(), values_.end(), a);
    return sign | round_from(static_cast<uint32_t>(it - values_.begin()) - 1u, a);
  }

  // Round given the largest table index `lo` with values_[lo] <= a (a = |x|, finite or Inf).
  uint16_t round_from(uint32_t lo, double a) const {
    const uint16_t inf = f_.inf_bits();
    if (lo >= inf) return inf;
    if (values_[lo] == a) return static_cast<uint16_t>(lo);
    const double mid = (values_[lo] + values_[lo + 1]) / 2;  // exact: both have <= 11 bits
    if (a < mid) return static_cast<uint16_t>(lo);
    if (a > mid) return static_cast<uint16_t>(lo + 1);
    return static_cast<uint16_t>((lo & 1u) ? lo + 1 : lo);
  }

  const std::vector<double>& values() const { return values_; }

 private:
  const Format& f_;
  std::vector<double> values_;  // [0, inf) finite values, [inf] overflow sentinel, [inf+1] +Inf
};

const RefRounder& ref_rounder(const Format& f) {
  static const RefRounder bf(kBf16Format);
  static const RefRounder fp(kFp16Format);
  return &f == &kBf16Format ? bf : fp;
}

#if defined(__FLT16_MAX__)
constexpr bool kHaveFloat16 = true;
uint16_t gcc_fp16_bits(float x) {
  const _Float16 h = static_cast<_Float16>(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
#else
constexpr bool kHaveFloat16 = false;
uint16_t gcc_fp16_bits(float) { return 0; }
#endif

template <typename T>
uint16_t bits_of(float x) {
  return from_f32<T>(x).bits;
}

float f32(uint32_t bits) { return f32_from_bits(bits); }

std::string hex(uint32_t v, int width) { return fmt::format("0x{:0{}x}", v, width); }

// Checks one fp32 -> 16-bit conversion against the reference (and _Float16 for fp16).
// Returns false and records a failure on mismatch so callers can stop after a few.
template <typename T>
bool check_round(float x, const char* what = "") {
  const Format& f = format_of<T>();
  const uint16_t got = bits_of<T>(x);
  if (std::isnan(x)) {
    const bool ok = is_nan_bits(f, got) && (got & 0x8000u) == (std::signbit(x) ? 0x8000u : 0u) &&
                    (got & f.quiet_bit()) != 0;
    EXPECT_TRUE(ok) << f.name << " " << what << ": NaN " << hex(f32_bits(x), 8) << " -> "
                    << hex(got, 4) << " (want a quiet NaN with the same sign)";
    return ok;
  }
  const uint16_t want = ref_rounder(f).round(x);
  bool ok = got == want;
  EXPECT_EQ(hex(got, 4), hex(want, 4))
      << f.name << " " << what << ": x = " << fmt::format("{:.9g}", x) << " ("
      << hex(f32_bits(x), 8) << ")";
  if constexpr (std::is_same_v<T, fp16>) {
    if (kHaveFloat16) {
      const uint16_t gcc = gcc_fp16_bits(x);
      EXPECT_EQ(hex(got, 4), hex(gcc, 4))
          << "fp16 vs _Float16 " << what << ": x = " << fmt::format("{:.9g}", x) << " ("
          << hex(f32_bits(x), 8) << ")";
      ok = ok && got == gcc;
    }
  }
  return ok;
}

template <typename T>
class HalfTest : public ::testing::Test {};
using HalfTypes = ::testing::Types<bf16, fp16>;
class HalfNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, bf16> ? "bf16" : "fp16";
  }
};
TYPED_TEST_SUITE(HalfTest, HalfTypes, HalfNames);

// ------------------------------------------------------------------------------------------------
// Decoding and round trips over all 65536 patterns

TYPED_TEST(HalfTest, ToF32MatchesIndependentDecoderForAllPatterns) {
  const Format& f = format_of<TypeParam>();
  int failures = 0;
  for (uint32_t h = 0; h <= 0xFFFF && failures < 10; ++h) {
    const float got = to_f32(TypeParam{static_cast<uint16_t>(h)});
    const double want = ref_decode(f, static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      const uint32_t want_bits = ref_widened_nan_bits(f, static_cast<uint16_t>(h));
      if (f32_bits(got) != want_bits) {
        ++failures;
        ADD_FAILURE() << f.name << " NaN " << hex(h, 4) << " widened to " << hex(f32_bits(got), 8)
                      << ", want " << hex(want_bits, 8);
      }
    } else if (static_cast<double>(got) != want || std::signbit(got) != std::signbit(want)) {
      ++failures;
      ADD_FAILURE() << f.name << " " << hex(h, 4) << " decoded to " << fmt::format("{:.17g}", got)
                    << ", want " << fmt::format("{:.17g}", want);
    }
  }
  EXPECT_EQ(failures, 0);
}

TYPED_TEST(HalfTest, RoundTripIsIdentityForAllNonNaNPatterns) {
  const Format& f = format_of<TypeParam>();
  int failures = 0;
  for (uint32_t h = 0; h <= 0xFFFF && failures < 10; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const uint16_t rt = from_f32<TypeParam>(to_f32(TypeParam{bits})).bits;
    if (is_nan_bits(f, bits)) {
      // NaN stays NaN, quiet, with its sign; the payload is not part of the contract.
      if (!is_nan_bits(f, rt) || (rt & 0x8000u) != (bits & 0x8000u) || !(rt & f.quiet_bit())) {
        ++failures;
        ADD_FAILURE() << f.name << " NaN " << hex(h, 4) << " round-tripped to " << hex(rt, 4);
      }
    } else if (rt != bits) {
      ++failures;
      ADD_FAILURE() << f.name << " " << hex(h, 4) << " round-tripped to " << hex(rt, 4);
    }
  }
  EXPECT_EQ(failures, 0);
}

// ------------------------------------------------------------------------------------------------
// Rounding fp32 -> 16 bits

// Every midpoint between consecutive values (max..Inf included) is exactly an fp32 value: it must
// round to the even neighbour, and the fp32 values just above / below it to the upper / lower one.
TYPED_TEST(HalfTest, MidpointsTieToEvenAndNeighboursRoundAway) {
  const Format& f = format_of<TypeParam>();
  const RefRounder& ref = ref_rounder(f);
  int failures = 0;
  for (uint32_t h = 0; h < f.inf_bits() && failures < 10; ++h) {
    const double mid =
        (ref.value(static_cast<uint16_t>(h)) + ref.value(static_cast<uint16_t>(h + 1))) / 2;
    const auto mid_f = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(mid_f), mid) << f.name << " midpoint above " << hex(h, 4);
    const uint16_t even = (h & 1u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    const float above = std::nextafter(mid_f, INFINITY);
    const float below = std::nextafter(mid_f, 0.0f);
    for (const float sign : {1.0f, -1.0f}) {
      const uint16_t s = sign < 0 ? 0x8000 : 0;
      const uint16_t got_mid = bits_of<TypeParam>(sign * mid_f);
      const uint16_t got_above = bits_of<TypeParam>(sign * above);
      const uint16_t got_below = bits_of<TypeParam>(sign * below);
      if (got_mid != (s | even) || got_above != (s | (h + 1)) || got_below != (s | h)) {
        ++failures;
        ADD_FAILURE() << f.name << " between " << hex(s | h, 4) << " and " << hex(s | (h + 1), 4)
                      << ": midpoint -> " << hex(got_mid, 4) << " (want " << hex(s | even, 4)
                      << "), above -> " << hex(got_above, 4) << ", below -> " << hex(got_below, 4);
      }
      // The references must agree with each other too.
      failures += !check_round<TypeParam>(sign * mid_f, "midpoint");
      failures += !check_round<TypeParam>(sign * above, "above midpoint");
      failures += !check_round<TypeParam>(sign * below, "below midpoint");
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(HalfFp16, SpecialValues) {
  struct Case {
    float x;
    uint16_t want;
    const char* what;
  };
  const float ulp = std::ldexp(1.0f, -24);  // smallest fp16 denormal
  const Case cases[] = {
      {0.0f, 0x0000, "+0"},
      {-0.0f, 0x8000, "-0"},
      {1.0f, 0x3C00, "1"},
      {1.0f + std::ldexp(1.0f, -11), 0x3C00, "1 + half ulp ties to even (down)"},
      {1.0f + 3 * std::ldexp(1.0f, -11), 0x3C02, "1 + 1.5 ulp ties to even (up)"},
      {2049.0f, 0x6800, "2049 ties to 2048"},
      {2051.0f, 0x6802, "2051 ties to 2052"},
      {65504.0f, 0x7BFF, "max"},
      {65519.99f, 0x7BFF, "65519.99 rounds down to max"},
      {std::nextafter(65520.0f, 0.0f), 0x7BFF, "just below 65520"},
      {65520.0f, 0x7C00, "65520 ties to Inf"},
      {-65520.0f, 0xFC00, "-65520 ties to -Inf"},
      {65536.0f, 0x7C00, "65536 overflows"},
      {1e10f, 0x7C00, "1e10 overflows"},
      {FLT_MAX, 0x7C00, "FLT_MAX overflows"},
      {-FLT_MAX, 0xFC00, "-FLT_MAX overflows"},
      {INFINITY, 0x7C00, "+Inf"},
      {-INFINITY, 0xFC00, "-Inf"},
      {std::ldexp(1.0f, -14), 0x0400, "smallest normal"},
      {1023.5f * ulp, 0x0400, "largest denormal + half ulp ties up to smallest normal"},
      {1023.25f * ulp, 0x03FF, "rounds to largest denormal"},
      {1023.0f * ulp, 0x03FF, "largest denormal"},
      {ulp, 0x0001, "smallest denormal"},
      {-ulp, 0x8001, "-smallest denormal"},
      {0.5f * ulp, 0x0000, "half the smallest denormal ties to 0"},
      {-0.5f * ulp, 0x8000, "-half the smallest denormal ties to -0"},
      {std::nextafter(0.5f * ulp, 1.0f), 0x0001, "just above half the smallest denormal"},
      {std::nextafter(0.5f * ulp, 0.0f), 0x0000, "just below half the smallest denormal"},
      {1.5f * ulp, 0x0002, "1.5 denormal ulps ties to 2"},
      {2.5f * ulp, 0x0002, "2.5 denormal ulps ties to 2"},
      {0.75f * ulp, 0x0001, "0.75 denormal ulps"},
      {std::ldexp(1.0f, -149), 0x0000, "smallest fp32 denormal"},
      {-std::ldexp(1.0f, -149), 0x8000, "-smallest fp32 denormal"},
      {std::ldexp(1.0f, -126), 0x0000, "smallest fp32 normal"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(hex(to_fp16(c.x).bits, 4), hex(c.want, 4)) << c.what;
    check_round<fp16>(c.x, c.what);
  }
}

TEST(HalfBf16, SpecialValues) {
  struct Case {
    float x;
    uint16_t want;
    const char* what;
  };
  const float max_bf16 = f32(0x7F7F0000u);
  const float max_mid = static_cast<float>(std::ldexp(1.0, 128) - std::ldexp(1.0, 119));
  const Case cases[] = {
      {0.0f, 0x0000, "+0"},
      {-0.0f, 0x8000, "-0"},
      {1.0f, 0x3F80, "1"},
      {1.0f + std::ldexp(1.0f, -8), 0x3F80, "1 + half ulp ties to even (down)"},
      {1.0f + 3 * std::ldexp(1.0f, -8), 0x3F82, "1 + 1.5 ulp ties to even (up)"},
      {max_bf16, 0x7F7F, "max"},
      {max_mid, 0x7F80, "max + half ulp ties to Inf"},
      {std::nextafter(max_mid, 0.0f), 0x7F7F, "just below max + half ulp"},
      {FLT_MAX, 0x7F80, "FLT_MAX overflows"},
      {-FLT_MAX, 0xFF80, "-FLT_MAX overflows"},
      {INFINITY, 0x7F80, "+Inf"},
      {-INFINITY, 0xFF80, "-Inf"},
      {std::ldexp(1.0f, -126), 0x0080, "smallest normal"},
      {std::ldexp(1.0f, -133), 0x0001, "smallest denormal"},
      {std::ldexp(1.0f, -134), 0x0000, "half the smallest denormal ties to 0"},
      {-std::ldexp(1.0f, -134), 0x8000, "-half the smallest denormal ties to -0"},
      {3 * std::ldexp(1.0f, -134), 0x0002, "1.5 denormal ulps ties to 2"},
      {std::ldexp(1.0f, -149), 0x0000, "smallest fp32 denormal"},
      {f32(0x007FFFFFu), 0x0080, "largest fp32 denormal rounds up to smallest normal"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(hex(to_bf16(c.x).bits, 4), hex(c.want, 4)) << c.what;
    check_round<bf16>(c.x, c.what);
  }
}

// NaNs whose payload lies only in bits the narrowing drops are the trap: a plain truncation makes
// them Inf. Every NaN must stay a quiet NaN with its sign.
TYPED_TEST(HalfTest, NaNPayloadsStayNaN) {
  std::vector<uint32_t> payloads = {1,        2,        0xFF,     0x1FFF,   0x2000,
                                    0xFFFF,   0x10000,  0x155555, 0x2AAAAA, 0x3FFFFF,
                                    0x400000, 0x400001, 0x7FE000, 0x7FFFFF};
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000; ++i) payloads.push_back(1u + rng() % 0x7FFFFFu);
  for (const uint32_t sign : {0u, 0x80000000u}) {
    for (const uint32_t p : payloads) {
      const uint32_t bits = sign | 0x7F800000u | p;
      if (!check_round<TypeParam>(f32(bits), "NaN payload")) return;
    }
  }
}

// A few million random fp32 values: uniform bit patterns (every exponent, denormals, Inf, NaN) and
// uniform over the exponents where the 16-bit format has its normals, denormals and overflow.
TYPED_TEST(HalfTest, RandomValuesMatchReference) {
  const Format& f = format_of<TypeParam>();
  std::mt19937_64 rng(20240520);
  int failures = 0;
  for (int i = 0; i < 2'000'000 && failures < 10; ++i) {
    const auto bits = static_cast<uint32_t>(rng());
    failures += !check_round<TypeParam>(f32(bits), "random bits");
  }
  // Biased fp32 exponents from below half the smallest 16-bit denormal to beyond overflow.
  const int lo_exp = std::max(1, 127 + 1 - f.bias - f.mant_bits - 3);
  const int hi_exp = std::min(254, 127 + (1 << f.exp_bits) - f.bias + 1);
  for (int i = 0; i < 2'000'000 && failures < 10; ++i) {
    const uint64_t r = rng();
    const auto exp = static_cast<uint32_t>(lo_exp + static_cast<int>(r % (hi_exp - lo_exp + 1)));
    const uint32_t bits = static_cast<uint32_t>((r >> 32) & 0x807FFFFFu) | (exp << 23);
    failures += !check_round<TypeParam>(f32(bits), "random in range");
  }
  EXPECT_EQ(failures, 0);
}

// Every one of the 2^32 fp32 values. Positive values are walked in bit order, which is value order,
// alongside the reference table, so each costs a few compares; the negative twin is checked too.
TYPED_TEST(HalfTest, AllFp32ValuesMatchReference) {
  const Format& f = format_of<TypeParam>();
  const RefRounder& ref = ref_rounder(f);
  const std::vector<double>& values = ref.values();
  constexpr uint32_t kChunks = 256;
  constexpr uint32_t kEnd = 0x7F800000u;  // +Inf; NaNs are covered by NaNPayloadsStayNaN
  uint64_t mismatches = 0;
  uint32_t first_bad = 0xFFFFFFFFu;
#pragma omp parallel for schedule(dynamic) reduction(+ : mismatches) reduction(min : first_bad)
  for (uint32_t c = 0; c < kChunks; ++c) {
    const uint32_t begin = static_cast<uint32_t>(uint64_t{kEnd} * c / kChunks);
    const uint32_t end =
        static_cast<uint32_t>(uint64_t{kEnd} * (c + 1) / kChunks) + (c + 1 == kChunks);
    uint32_t lo = static_cast<uint32_t>(
        std::upper_bound(values.begin(), values.end(), static_cast<double>(f32(begin))) -
        values.begin() - 1);
    for (uint32_t u = begin; u < end; ++u) {
      const float x = f32(u);
      const double a = x;
      while (values[lo + 1] <= a) ++lo;
      const uint16_t want = ref.round_from(lo, a);
      const uint16_t got_pos = bits_of<TypeParam>(x);
      const uint16_t got_neg = bits_of<TypeParam>(-x);
      if (got_pos != want || got_neg != (want | 0x8000u)) {
        ++mismatches;
        first_bad = std::min(first_bad, u);
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << f.name << ": first mismatch at fp32 " << hex(first_bad, 8);
  if (mismatches != 0) check_round<TypeParam>(f32(first_bad), "first exhaustive mismatch");
}

// ------------------------------------------------------------------------------------------------
// zt::convert, parse_dtype, dtype_name

constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

const Format* format_of(DType t) {
  switch (t) {
    case DType::kBF16:
      return &kBf16Format;
    case DType::kF16:
      return &kFp16Format;
    case DType::kF32:
      break;
  }
  return nullptr;
}

// Source data for each dtype, as raw bytes, plus each element's exact value.
struct Source {
  std::vector<unsigned char> bytes;
  std::vector<float> values;  // every 16-bit value is exact in fp32
};

Source make_source(DType t) {
  Source s;
  if (const Format* f = format_of(t)) {
    // All 65536 patterns, twice, so n > 2^16 and convert's parallel path runs too.
    for (int rep = 0; rep < 2; ++rep) {
      for (uint32_t h = 0; h <= 0xFFFF; ++h) {
        const auto b = static_cast<uint16_t>(h);
        s.bytes.push_back(static_cast<unsigned char>(b & 0xFF));
        s.bytes.push_back(static_cast<unsigned char>(b >> 8));
        s.values.push_back(static_cast<float>(ref_decode(*f, b)));
      }
    }
    return s;
  }
  std::mt19937 rng(99);
  for (int i = 0; i < 200'000; ++i) s.values.push_back(f32(rng()));
  for (const float v : {0.0f, -0.0f, 65520.0f, 65504.0f, INFINITY, -INFINITY, FLT_MAX,
                        std::ldexp(1.0f, -25), std::ldexp(1.0f, -149)}) {
    s.values.push_back(v);
  }
  s.bytes.resize(s.values.size() * 4);
  std::memcpy(s.bytes.data(), s.values.data(), s.bytes.size());
  return s;
}

TEST(Convert, AllDTypePairsMatchReference) {
  for (const DType src : kAllDTypes) {
    const Source s = make_source(src);
    const size_t n = s.values.size();
    for (const DType dst : kAllDTypes) {
      SCOPED_TRACE(fmt::format("{} -> {}", dtype_name(src), dtype_name(dst)));
      std::vector<unsigned char> out(n * dtype_size(dst));
      convert(s.bytes.data(), src, out.data(), dst, n);
      int failures = 0;
      for (size_t i = 0; i < n && failures < 10; ++i) {
        const float v = s.values[i];
        if (dst == DType::kF32) {
          float got;
          std::memcpy(&got, &out[i * 4], 4);
          const bool ok = std::isnan(v) ? std::isnan(got) && std::signbit(got) == std::signbit(v)
                                        : f32_bits(got) == f32_bits(v);
          if (!ok) {
            ++failures;
            ADD_FAILURE() << "element " << i << ": " << v << " -> " << got;
          }
          continue;
        }
        const Format& f = *format_of(dst);
        uint16_t got;
        std::memcpy(&got, &out[i * 2], 2);
        const bool ok = std::isnan(v)
                            ? is_nan_bits(f, got) && bool(got & 0x8000u) == std::signbit(v)
                            : got == ref_rounder(f).round(v);
        if (!ok) {
          ++failures;
          ADD_FAILURE() << "element " << i << ": " << fmt::format("{:.9g}", v) << " -> "
                        << hex(got, 4);
        }
      }
    }
  }
}

// Value after storing `v` in dtype `t`, by the reference.
float ref_store(float v, DType t) {
  const Format* f = format_of(t);
  if (f == nullptr) return v;
  return static_cast<float>(ref_decode(*f, ref_rounder(*f).round(v)));
}

TEST(Convert, OddSizesWriteExactlyNElements) {
  for (const DType src : kAllDTypes) {
    for (const DType dst : kAllDTypes) {
      for (const size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{33}, size_t{4097}}) {
        SCOPED_TRACE(fmt::format("{} -> {}, n = {}", dtype_name(src), dtype_name(dst), n));
        std::vector<float> vals(n);
        for (size_t i = 0; i < n; ++i) vals[i] = static_cast<float>(i) * 1.37f - 3.25f;
        std::vector<unsigned char> in(n * dtype_size(src) + 1);
        convert(vals.data(), DType::kF32, in.data(), src, n);
        std::vector<unsigned char> out(n * dtype_size(dst) + 8, 0xAB);
        convert(in.data(), src, out.data(), dst, n);
        for (size_t i = n * dtype_size(dst); i < out.size(); ++i) {
          ASSERT_EQ(out[i], 0xAB) << "wrote past the end";
        }
        std::vector<float> back(n);
        convert(out.data(), dst, back.data(), DType::kF32, n);
        for (size_t i = 0; i < n; ++i) {
          ASSERT_EQ(back[i], ref_store(ref_store(vals[i], src), dst)) << "i = " << i;
        }
      }
    }
  }
}

TEST(DTypeNames, NamesAndSizes) {
  EXPECT_STREQ(dtype_name(DType::kF32), "fp32");
  EXPECT_STREQ(dtype_name(DType::kBF16), "bf16");
  EXPECT_STREQ(dtype_name(DType::kF16), "fp16");
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  for (const DType t : kAllDTypes) {
    const Result<DType> r = parse_dtype(dtype_name(t));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(*r, t);
  }
  const std::pair<const char*, DType> aliases[] = {
      {"float32", DType::kF32}, {"F32", DType::kF32},     {"bfloat16", DType::kBF16},
      {"BF16", DType::kBF16},   {"float16", DType::kF16}, {"F16", DType::kF16},
  };
  for (const auto& [name, t] : aliases) {
    const Result<DType> r = parse_dtype(name);
    ASSERT_TRUE(r.is_ok()) << name << ": " << r.status().to_string();
    EXPECT_EQ(*r, t) << name;
  }
  for (const char* bad : {"", "fp8", "int64", "FP32 ", "f32x"}) {
    const Result<DType> r = parse_dtype(bad);
    ASSERT_FALSE(r.is_ok()) << "'" << bad << "' parsed";
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(fmt::format("'{}'", bad)), std::string::npos)
        << r.status().message();
  }
  static_assert(dtype_of<float>() == DType::kF32);
  static_assert(dtype_of<bf16>() == DType::kBF16);
  static_assert(dtype_of<fp16>() == DType::kF16);
  for (const DType t : kAllDTypes) {
    const size_t size = dispatch_dtype(t, []<typename T>() { return sizeof(T); });
    EXPECT_EQ(size, dtype_size(t)) << dtype_name(t);
  }
}

}  // namespace
}  // namespace zt
