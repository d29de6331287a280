// Helpers of the emulator tests (tests/emu/*_emu_test.cpp): storage-type dispatch, "device"
// buffers at chosen misalignments with guard bytes, deterministic random data, comparisons that
// report the worst element, and the emulator scope every test runs in.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/half.h"
#include "tests/emu/cuda_emu.h"

namespace zt::emu_test {

// Storage dtype codes of kernels/cuda/launch.cuh.
constexpr int kF32 = 0, kBF16 = 1, kF16 = 2;
inline constexpr int kAllDtypes[] = {kF32, kBF16, kF16};

inline size_t elem_size(int dt) { return dt == kF32 ? 4 : 2; }
inline const char* dt_name(int dt) { return dt == kF32 ? "f32" : dt == kBF16 ? "bf16" : "f16"; }

// Calls f(T{}) with the CPU twins' storage type of dt (float, zt::bf16, zt::fp16).
template <class F>
void with_type(int dt, F&& f) {
  if (dt == kF32) {
    f(float{});
  } else if (dt == kBF16) {
    f(bf16{});
  } else {
    f(fp16{});
  }
}

inline float to_float(int dt, const void* p) {
  if (dt == kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return dt == kBF16 ? to_f32(bf16{h}) : to_f32(fp16{h});
}
inline void from_float(int dt, void* p, float v) {
  if (dt == kF32) {
    std::memcpy(p, &v, 4);
    return;
  }
  const uint16_t h = dt == kBF16 ? to_bf16(v).bits : to_fp16(v).bits;
  std::memcpy(p, &h, 2);
}
// v rounded to the storage type dt.
inline float round_to(int dt, float v) {
  unsigned char b[4];
  from_float(dt, b, v);
  return to_float(dt, b);
}

// Deterministic pseudo-random numbers (splitmix64).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(next() >> 11) * 0x1p-53;
  }
  int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }

 private:
  uint64_t s_;
};

// n elements of dtype dt ("device" memory: the emulator runs on host pointers) starting `offset`
// elements after a 256-byte boundary (offset 1: not 16-byte aligned, like a tensor slice), with
// guard bytes on both sides. The contents start as 0xFF bytes (NaN), so an element a kernel should
// have written but did not shows up.
class Buf {
 public:
  Buf(int dt, size_t n, size_t offset = 0)
      : dt_(dt),
        n_(n),
        esz_(elem_size(dt)),
        storage_(kPad + offset * esz_ + n * esz_ + kPad + 256) {
    const uintptr_t raw = reinterpret_cast<uintptr_t>(storage_.data());
    base_ = (256 - raw % 256) % 256;
    begin_ = base_ + kPad + offset * esz_;
    std::memset(storage_.data(), kGuardByte, storage_.size());
    std::memset(storage_.data() + begin_, 0xFF, n_ * esz_);
  }
  void* data() { return storage_.data() + begin_; }
  const void* data() const { return storage_.data() + begin_; }
  template <class T>
  T* as() {
    return static_cast<T*>(data());
  }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * esz_; }
  int dtype() const { return dt_; }
  float get(size_t i) const { return to_float(dt_, storage_.data() + begin_ + i * esz_); }
  void set(size_t i, float v) { from_float(dt_, storage_.data() + begin_ + i * esz_, v); }
  std::vector<float> values() const {
    std::vector<float> v(n_);
    for (size_t i = 0; i < n_; ++i) v[i] = get(i);
    return v;
  }
  // Uniform values in [lo, hi), rounded to the storage type.
  void fill_uniform(Rng& rng, double lo, double hi) {
    for (size_t i = 0; i < n_; ++i) set(i, static_cast<float>(rng.uniform(lo, hi)));
  }
  void copy_from(const Buf& o) { std::memcpy(data(), o.data(), bytes()); }
  // Whether every byte around the elements is still the guard pattern.
  bool guards_intact() const {
    for (size_t i = base_; i < begin_; ++i) {
      if (storage_[i] != kGuardByte) return false;
    }
    for (size_t i = begin_ + n_ * esz_; i < storage_.size(); ++i) {
      if (storage_[i] != kGuardByte) return false;
    }
    return true;
  }

 private:
  static constexpr size_t kPad = 256;
  static constexpr unsigned char kGuardByte = 0xA7;
  int dt_;
  size_t n_, esz_;
  std::vector<unsigned char> storage_;
  size_t base_ = 0, begin_ = 0;
};

// Workspace of `bytes` bytes, 256-byte aligned, filled with 0xFF (NaN) garbage.
class Workspace {
 public:
  explicit Workspace(size_t bytes) : storage_(bytes + 256, 0xFF) {
    const uintptr_t raw = reinterpret_cast<uintptr_t>(storage_.data());
    begin_ = (256 - raw % 256) % 256;
  }
  void* data() { return storage_.data() + begin_; }

 private:
  std::vector<unsigned char> storage_;
  size_t begin_ = 0;
};

struct Tol {
  double rtol, atol;
};

// Every element within |got - want| <= atol + rtol |want| (NaN only where want is NaN).
inline ::testing::AssertionResult close(const std::string& what, const std::vector<float>& got,
                                        const std::vector<float>& want, Tol tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " vs " << want.size();
  }
  size_t bad = 0, worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(w) && std::isnan(g)) continue;
    const double allowed = tol.atol + tol.rtol * std::fabs(w);
    const double err = std::fabs(g - w);
    if (!(err <= allowed)) {
      ++bad;
      const double excess = std::isnan(err) ? INFINITY : err - allowed;
      if (excess > worst_excess) {
        worst_excess = excess;
        worst = i;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  char msg[256];
  std::snprintf(msg, sizeof msg,
                ": %zu of %zu elements out of tolerance (rtol %g, atol %g); worst at %zu: got %.9g "
                "want %.9g",
                bad, got.size(), tol.rtol, tol.atol, worst, static_cast<double>(got[worst]),
                static_cast<double>(want[worst]));
  return ::testing::AssertionFailure() << what << msg;
}

// max |got - want| / max(floor, max |want|) <= tol: errors relative to the scale of the whole
// tensor (floor: the scale below which a tensor counts as zero, e.g. gradients that cancel).
inline ::testing::AssertionResult close_scaled(const std::string& what,
                                               const std::vector<double>& got,
                                               const std::vector<double>& want, double tol,
                                               double floor = 1.0) {
  double mx = floor, err = 0.0;
  size_t worst = 0;
  for (double w : want) mx = std::max(mx, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(got[i] - want[i]);
    if (!(e <= err)) {
      err = std::isnan(e) ? INFINITY : e;
      worst = i;
    }
  }
  const double rel = err / mx;
  if (rel <= tol) return ::testing::AssertionSuccess();
  char msg[200];
  std::snprintf(msg, sizeof msg, ": scaled error %.3g > %.3g; worst at %zu: got %.9g want %.9g",
                rel, tol, worst, want.empty() ? 0.0 : got[worst], want.empty() ? 0.0 : want[worst]);
  return ::testing::AssertionFailure() << what << msg;
}

// The same bytes (reports the first differing element of elem bytes).
inline ::testing::AssertionResult same_bits(const std::string& what, const void* a, const void* b,
                                            size_t bytes, size_t elem = 4) {
  const auto* pa = static_cast<const unsigned char*>(a);
  const auto* pb = static_cast<const unsigned char*>(b);
  for (size_t i = 0; i < bytes; ++i) {
    if (pa[i] != pb[i]) {
      return ::testing::AssertionFailure()
             << what << ": bits differ first at element " << i / elem << " (byte " << i << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

inline std::vector<double> widen(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Every test starts and ends with the emulator's defaults.
class EmuTest : public ::testing::Test {
 protected:
  void SetUp() override { zt_emu::reset(); }
  void TearDown() override { zt_emu::reset(); }
};
template <class P>
class EmuTestWithParam : public ::testing::TestWithParam<P> {
 protected:
  void SetUp() override { zt_emu::reset(); }
  void TearDown() override { zt_emu::reset(); }
};

// Schedules that differ from the default in every knob the emulator has (thread and block order,
// cp.async timing): a kernel whose result depends on them has a race or a missing wait.
inline void use_adversarial_schedule(uint64_t seed) {
  zt_emu::Options& o = zt_emu::options();
  o.thread_order = seed % 2 == 0 ? zt_emu::Order::kReverse : zt_emu::Order::kRandom;
  o.block_order = zt_emu::Order::kRandom;
  o.seed = seed;
  o.late_async_copies = true;
}

}  // namespace zt::emu_test
