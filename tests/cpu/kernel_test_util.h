// Shared helpers of the CPU kernel tests: dtype dispatch, random data in the storage types, the one
// per-dtype tolerance table, comparisons that report the max abs/rel error and the first
// mismatches, bitwise comparison, OpenMP thread-count scoping, guarded scratch and fp64 central
// finite differences.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/half.h"

namespace zt::kernels::testing {

enum class Dtype { kF32, kBF16, kF16 };

inline const char* dtype_name(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return "f32";
    case Dtype::kBF16:
      return "bf16";
    case Dtype::kF16:
      return "f16";
  }
  return "?";
}

// gtest prints parameters with PrintTo (found by ADL) in failure messages.
inline void PrintTo(Dtype d, std::ostream* os) { *os << dtype_name(d); }

inline const std::vector<Dtype>& all_dtypes() {
  static const std::vector<Dtype> kAll = {Dtype::kF32, Dtype::kBF16, Dtype::kF16};
  return kAll;
}

template <typename T>
constexpr Dtype dtype_of() {
  if constexpr (std::is_same_v<T, float>) {
    return Dtype::kF32;
  } else if constexpr (std::is_same_v<T, bf16>) {
    return Dtype::kBF16;
  } else {
    static_assert(std::is_same_v<T, fp16>);
    return Dtype::kF16;
  }
}

// Calls f.template operator()<T>() with the storage type named by d.
template <typename F>
void dispatch(Dtype d, F&& f) {
  switch (d) {
    case Dtype::kF32:
      f.template operator()<float>();
      return;
    case Dtype::kBF16:
      f.template operator()<bf16>();
      return;
    case Dtype::kF16:
      f.template operator()<fp16>();
      return;
  }
}

// The one tolerance table, indexed by the storage dtype of the compared output (fp32 statistics
// such as mean, rstd and losses use the f32 row whatever the kernel's T). Inputs of 16-bit tests
// are the rounded values themselves, so the only error allowed is fp32 arithmetic plus one final
// rounding: half an ulp is at most 2^-8 relative for bf16 and 2^-11 for fp16.
// An element passes when |got - want| <= atol * scale + rtol * |want|; scale is 1 unless the output
// is a long sum, where the test passes the magnitude of the sum (rounding grows with it).
struct Tolerance {
  double atol;
  double rtol;
};

inline Tolerance tolerance(Dtype d) {
  switch (d) {
    case Dtype::kF32:
      return {1e-6, 1e-5};
    case Dtype::kBF16:
      return {1e-6, 4.0e-3};
    case Dtype::kF16:
      return {1e-6, 5.0e-4};
  }
  return {0.0, 0.0};
}

template <typename T>
Tolerance tolerance_for() {
  return tolerance(dtype_of<T>());
}

// Widens any storage value, or passes a double through.
template <typename T>
double as_double(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return static_cast<double>(to_f32(x));
  }
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  double uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(gen_);
  }
  int32_t integer(int32_t lo, int32_t hi_exclusive) {
    return std::uniform_int_distribution<int32_t>(lo, hi_exclusive - 1)(gen_);
  }

 private:
  std::mt19937_64 gen_;
};

template <typename T>
std::vector<T> random_vec(Rng& rng, size_t n, double lo, double hi) {
  std::vector<T> v(n);
  for (auto& x : v) x = from_f32<T>(static_cast<float>(rng.uniform(lo, hi)));
  return v;
}

inline std::vector<int32_t> random_ints(Rng& rng, size_t n, int32_t lo, int32_t hi_exclusive) {
  std::vector<int32_t> v(n);
  for (auto& x : v) x = rng.integer(lo, hi_exclusive);
  return v;
}

template <typename T>
std::vector<double> to_double(const T* p, size_t n) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = as_double(p[i]);
  return v;
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  return to_double(v.data(), v.size());
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Index i printed as [row, col] when row_len > 0.
inline std::string index_str(size_t i, size_t row_len) {
  std::ostringstream os;
  if (row_len > 0) {
    os << "[" << i / row_len << ", " << i % row_len << "]";
  } else {
    os << "[" << i << "]";
  }
  return os.str();
}

// Compares got (storage T or double) to want elementwise; on failure reports the max abs and rel
// errors with their positions and the first few mismatches.
template <typename T>
::testing::AssertionResult all_close(const std::string& what, const T* got, const double* want,
                                     size_t n, Tolerance tol, double scale = 1.0,
                                     size_t row_len = 0) {
  size_t mismatches = 0;
  double max_abs_err = 0.0;
  double max_rel_err = 0.0;
  size_t max_abs_at = 0;
  size_t max_rel_at = 0;
  std::ostringstream first;
  for (size_t i = 0; i < n; ++i) {
    const double g = as_double(got[i]);
    const double w = want[i];
    const double err = std::fabs(g - w);
    const double rel = err / std::max(std::fabs(w), 1e-30);
    if (err > max_abs_err || std::isnan(err)) {
      max_abs_err = std::isnan(err) ? INFINITY : err;
      max_abs_at = i;
    }
    if (rel > max_rel_err || std::isnan(rel)) {
      max_rel_err = std::isnan(rel) ? INFINITY : rel;
      max_rel_at = i;
    }
    const bool ok = err <= tol.atol * scale + tol.rtol * std::fabs(w);  // false for NaN
    if (!ok && mismatches++ < 5) {
      first << "\n    " << what << index_str(i, row_len) << ": got " << g << ", want " << w
            << " (abs err " << err << ")";
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << mismatches << " of " << n
         << " elements outside |got - want| <= " << tol.atol << " * " << scale << " + " << tol.rtol
         << " * |want|; max abs err " << max_abs_err << " at " << index_str(max_abs_at, row_len)
         << ", max rel err " << max_rel_err << " at " << index_str(max_rel_at, row_len)
         << "; first mismatches:" << first.str();
}

template <typename T>
::testing::AssertionResult all_close(const std::string& what, const std::vector<T>& got,
                                     const std::vector<double>& want, Tolerance tol,
                                     double scale = 1.0, size_t row_len = 0) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " vs " << want.size();
  }
  return all_close(what, got.data(), want.data(), got.size(), tol, scale, row_len);
}

// Bit-for-bit equality (NaNs with equal bits compare equal).
template <typename T>
::testing::AssertionResult bitwise_equal(const std::string& what, const std::vector<T>& a,
                                         const std::vector<T>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << what << ": size " << a.size() << " vs " << b.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << what << ": first bitwise difference at [" << i
                                           << "]: " << as_double(a[i]) << " vs " << as_double(b[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

// Sets the OpenMP team size for the scope, restoring the previous one after.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : previous_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ScopedOmpThreads() { omp_set_num_threads(previous_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int previous_;
};

// Thread counts the determinism tests compare: one, the machine's, and an odd oversubscription.
inline std::vector<int> determinism_thread_counts() { return {1, 2, 3}; }

// Kernel scratch of exactly `bytes`, followed by guard bytes the kernel must not touch.
class GuardedScratch {
 public:
  explicit GuardedScratch(size_t bytes) : bytes_(bytes), storage_(bytes / 4 + kGuardWords + 1) {
    auto* raw = reinterpret_cast<unsigned char*>(storage_.data());
    std::memset(raw, 0xA5, storage_.size() * sizeof(uint32_t));
  }
  void* get() { return bytes_ == 0 ? nullptr : storage_.data(); }
  bool guard_intact() const {
    const auto* raw = reinterpret_cast<const unsigned char*>(storage_.data());
    for (size_t i = bytes_; i < storage_.size() * sizeof(uint32_t); ++i) {
      if (raw[i] != 0xA5) return false;
    }
    return true;
  }

 private:
  static constexpr size_t kGuardWords = 16;
  size_t bytes_;
  std::vector<uint32_t> storage_;
};

// sum_i a[i] * b[i]: the scalar loss L = <out, w> whose gradient wrt out is w.
inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// dL/dx by central differences in fp64; x is perturbed in place and restored.
inline std::vector<double> numeric_grad(const std::function<double()>& loss, std::vector<double>& x,
                                        double h = 1e-5) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    g[i] = (up - down) / (2.0 * h);
  }
  return g;
}

// Tolerance of analytic fp64 gradients against central differences (h = 1e-5: truncation error
// ~h^2, rounding ~1e-16 |L| / h, both far below these bounds).
inline Tolerance finite_difference_tolerance() { return {1e-8, 1e-6}; }

}  // namespace zt::kernels::testing
