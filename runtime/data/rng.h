// DataRng: the small pseudo-random stream behind data shuffling and the corpus generator.
//
// Note [portable randomness]
// The order in which sequences are visited is part of a run's math: a job resumed on another
// machine, or on a different number of workers, must see the same sequences at the same step.
// std::shuffle, std::uniform_int_distribution and friends are implementation-defined (libstdc++ and
// libc++ give different results for the same engine), so everything here is spelled out: a
// SplitMix64 stream (Steele, Lea, Flood 2014; passes BigCrush) and Lemire's multiply-shift bounded
// draw with rejection, which is exactly unbiased. Same seed, same numbers, on every platform.
#pragma once

#include <cstdint>

#include "runtime/core/check.h"

namespace zt::data {

// SplitMix64's output function: a bijective 64-bit mixer. Used to derive independent stream seeds
// from (seed, epoch) pairs.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class DataRng {
 public:
  explicit DataRng(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ull;
    return mix64(state_);
  }

  // Uniform in [0, bound), bound > 0.
  uint64_t below(uint64_t bound) {
    ZT_CHECK(bound > 0, "DataRng::below needs a positive bound");
    uint64_t high = 0;
    uint64_t low = mul_wide(next(), bound, &high);
    if (low < bound) {
      // Rejects the few low words that would make some results one draw more likely.
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) low = mul_wide(next(), bound, &high);
    }
    return high;
  }

  // Uniform in [lo, hi], lo <= hi.
  int64_t range(int64_t lo, int64_t hi) {
    ZT_CHECK(lo <= hi, "DataRng::range({}, {})", lo, hi);
    return lo + static_cast<int64_t>(below(static_cast<uint64_t>(hi - lo) + 1));
  }

  // True with probability num/den.
  bool chance(uint64_t num, uint64_t den) { return below(den) < num; }

  // The full 128-bit product a*b: returns the low word and stores the high one (portable C++;
  // __int128 is a compiler extension).
  static uint64_t mul_wide(uint64_t a, uint64_t b, uint64_t* high) {
    const uint64_t a_lo = a & 0xFFFFFFFFu;
    const uint64_t a_hi = a >> 32;
    const uint64_t b_lo = b & 0xFFFFFFFFu;
    const uint64_t b_hi = b >> 32;
    const uint64_t lo_lo = a_lo * b_lo;
    const uint64_t hi_lo = a_hi * b_lo;
    const uint64_t lo_hi = a_lo * b_hi;
    // Cannot overflow: at most (2^32-1)^2 + 2 * (2^32-1) = 2^64 - 1.
    const uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFu) + lo_hi;
    *high = a_hi * b_hi + (hi_lo >> 32) + (cross >> 32);
    return (cross << 32) | (lo_lo & 0xFFFFFFFFu);
  }

 private:
  uint64_t state_;
};

}  // namespace zt::data
