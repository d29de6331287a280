// Tests for causal self-attention (kernels/attention.h, kernels/cpu/attention.cpp) and its fp64
// reference (kernels/reference/attention.h):
//   - the reference backward against central finite differences of the reference forward (fp64);
//   - the CPU kernels (fp32, bf16, fp16 storage) against the reference, over odd shapes;
//   - causality, determinism across runs and thread counts, overwrite semantics, scratch bounds.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/half.h"
#include "kernels/reference/attention.h"

namespace {

namespace cpu = zt::kernels::cpu;
namespace ref = zt::kernels::ref;
using zt::bf16;
using zt::fp16;

// SplitMix64: reproducible on every platform (std distributions are implementation-defined).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  double uniform(double lo, double hi) {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * static_cast<double>(z >> 11) * 0x1p-53;
  }

 private:
  uint64_t s_;
};

struct Shape {
  int B, T, NH, HS;
  int C() const { return NH * HS; }
  size_t n_qkv() const { return static_cast<size_t>(B) * T * 3 * C(); }
  size_t n_out() const { return static_cast<size_t>(B) * T * C(); }
  size_t n_lse() const { return static_cast<size_t>(B) * NH * T; }
};

std::string to_string(const Shape& s) {
  std::ostringstream os;
  os << "B" << s.B << "_T" << s.T << "_NH" << s.NH << "_HS" << s.HS;
  return os.str();
}

// Pre-softmax scores q.k/sqrt(HS) have a standard deviation of about kInputRange^2 / 3, so the
// softmax is peaked enough that the running max changes between key tiles.
constexpr double kInputRange = 2.0;

std::vector<double> random_vector(size_t n, uint64_t seed, double range = kInputRange) {
  Rng rng(seed);
  std::vector<double> v(n);
  for (double& x : v) x = rng.uniform(-range, range);
  return v;
}

template <typename T>
std::vector<T> to_storage(const std::vector<double>& v) {
  std::vector<T> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = zt::from_f32<T>(static_cast<float>(v[i]));
  return r;
}

template <typename T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = zt::to_f32(v[i]);
  return r;
}

template <typename T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, float>) return "fp32";
  if constexpr (std::is_same_v<T, bf16>) return "bf16";
  return "fp16";
}

// One tolerance table for every test in this file: |got - want| <= atol + rtol * |want|.
// The reference runs in fp64 on the same (already rounded) inputs, so the budget covers fp32
// arithmetic, rounding of the outputs to storage precision, and, in the backward, the rounded
// `out` that enters D = rowsum(dout * out).
struct Tolerance {
  double atol, rtol;
};
struct DtypeTolerances {
  Tolerance out, lse, dqkv;
};
template <typename T>
constexpr DtypeTolerances kTol = {};
template <>
constexpr DtypeTolerances kTol<float> = {{3e-6, 3e-6}, {3e-6, 1e-6}, {4e-6, 4e-6}};
template <>  // outputs rounded to 8 significant bits: half an ulp is 2^-8 = 3.9e-3 relative
constexpr DtypeTolerances kTol<bf16> = {{1e-5, 4.5e-3}, {3e-6, 1e-6}, {2e-2, 8e-3}};
template <>  // 11 significant bits: 2^-11 = 4.9e-4
constexpr DtypeTolerances kTol<fp16> = {{1e-5, 6e-4}, {3e-6, 1e-6}, {2.5e-3, 2e-3}};

// Elementwise check with a report: the max abs and rel error and the first mismatches.
::testing::AssertionResult all_close(const char* what, const std::vector<double>& got,
                                     const std::vector<double>& want, Tolerance tol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << what << ": size " << got.size() << " vs " << want.size();
  }
  double max_abs = 0.0, max_rel = 0.0;
  size_t bad = 0;
  std::ostringstream first;
  first.precision(10);
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]);
    max_abs = std::max(max_abs, err);
    if (want[i] != 0.0) max_rel = std::max(max_rel, err / std::abs(want[i]));
    // Written so that NaN counts as a mismatch.
    if (!(err <= tol.atol + tol.rtol * std::abs(want[i]))) {
      if (bad < 8) first << "\n  [" << i << "] got " << got[i] << " want " << want[i];
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << got.size() << " mismatches (atol " << tol.atol
         << ", rtol " << tol.rtol << "), max abs err " << max_abs << ", max rel err " << max_rel
         << ", first:" << first.str();
}

// Runs the CPU kernels with correctly sized scratch.
template <typename T>
void run_fwd(std::vector<T>& out, std::vector<float>& lse, const std::vector<T>& qkv,
             const Shape& s) {
  std::vector<unsigned char> scratch(cpu::attention_fwd_scratch_bytes(s.B, s.T, s.C(), s.NH));
  out.resize(s.n_out());
  lse.resize(s.n_lse());
  cpu::attention_fwd(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C(), s.NH, scratch.data());
}

template <typename T>
void run_bwd(std::vector<T>& dqkv, const std::vector<T>& dout, const std::vector<T>& qkv,
             const std::vector<T>& out, const std::vector<float>& lse, const Shape& s) {
  std::vector<unsigned char> scratch(cpu::attention_bwd_scratch_bytes(s.B, s.T, s.C(), s.NH));
  dqkv.resize(s.n_qkv());
  cpu::attention_bwd(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.C(),
                     s.NH, scratch.data());
}

template <typename T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// Restores the OpenMP thread count when a test that changes it ends, also on failure.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(omp_get_max_threads()) {}
  ~ThreadCountGuard() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

// ---------------------------------------------------------------------------------------------
// The reference itself.

TEST(AttentionReference, SingleTokenAndEqualKeys) {
  // T = 1: the only key gets probability 1, so out = v and lse = q.k / sqrt(HS).
  const Shape s{1, 1, 2, 3};
  std::vector<double> qkv = random_vector(s.n_qkv(), 1);
  std::vector<double> out(s.n_out()), lse(s.n_lse());
  ref::attention_fwd(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C(), s.NH);
  const int C = s.C();
  for (int h = 0; h < s.NH; ++h) {
    double dot = 0.0;
    for (int d = 0; d < s.HS; ++d) {
      dot += qkv[h * s.HS + d] * qkv[C + h * s.HS + d];
      EXPECT_DOUBLE_EQ(out[h * s.HS + d], qkv[2 * C + h * s.HS + d]);
    }
    EXPECT_NEAR(lse[h], dot / std::sqrt(3.0), 1e-15);
  }

  // All keys equal: uniform weights, out_t = mean of v_0..v_t and lse_t = s + log(t + 1).
  const Shape e{1, 5, 1, 4};
  std::vector<double> qkv2 = random_vector(e.n_qkv(), 2);
  for (int t = 1; t < e.T; ++t) {
    for (int d = 0; d < e.HS; ++d) qkv2[t * 3 * e.C() + e.C() + d] = qkv2[e.C() + d];
  }
  std::vector<double> out2(e.n_out()), lse2(e.n_lse());
  ref::attention_fwd(out2.data(), lse2.data(), qkv2.data(), e.B, e.T, e.C(), e.NH);
  for (int t = 0; t < e.T; ++t) {
    double score = 0.0;
    for (int d = 0; d < e.HS; ++d) score += qkv2[t * 3 * e.C() + d] * qkv2[e.C() + d];
    EXPECT_NEAR(lse2[t], score / 2.0 + std::log(t + 1.0), 1e-13);
    for (int d = 0; d < e.HS; ++d) {
      double mean = 0.0;
      for (int j = 0; j <= t; ++j) mean += qkv2[j * 3 * e.C() + 2 * e.C() + d];
      EXPECT_NEAR(out2[t * e.C() + d], mean / (t + 1), 1e-14);
    }
  }
}

TEST(AttentionReference, BackwardMatchesFiniteDifferences) {
  // L(qkv) = sum(dout * out(qkv)); its gradient is exactly what attention_bwd returns.
  for (const Shape& s : {Shape{2, 5, 2, 3}, Shape{1, 7, 1, 1}, Shape{1, 4, 3, 2}}) {
    SCOPED_TRACE(to_string(s));
    std::vector<double> qkv = random_vector(s.n_qkv(), 11);
    const std::vector<double> dout = random_vector(s.n_out(), 12);
    std::vector<double> dqkv(s.n_qkv());
    ref::attention_bwd(dqkv.data(), dout.data(), qkv.data(), s.B, s.T, s.C(), s.NH);

    std::vector<double> out(s.n_out()), lse(s.n_lse());
    auto loss = [&]() {
      ref::attention_fwd(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C(), s.NH);
      double l = 0.0;
      for (size_t i = 0; i < out.size(); ++i) l += dout[i] * out[i];
      return l;
    };
    const double h = 1e-5;
    std::vector<double> numeric(s.n_qkv());
    for (size_t i = 0; i < qkv.size(); ++i) {
      const double x = qkv[i];
      qkv[i] = x + h;
      const double lp = loss();
      qkv[i] = x - h;
      const double lm = loss();
      qkv[i] = x;
      numeric[i] = (lp - lm) / (2 * h);
    }
    // Central differences: truncation O(h^2) ~ 1e-10, cancellation ~ 1e-16 / h ~ 1e-11.
    EXPECT_TRUE(all_close("dqkv vs finite differences", dqkv, numeric, {1e-8, 1e-7}));
  }
}

// ---------------------------------------------------------------------------------------------
// The CPU kernels against the reference, dtype x shape.

enum class Dtype { kFp32, kBf16, kFp16 };

std::string to_string(Dtype d) {
  switch (d) {
    case Dtype::kFp32:
      return "fp32";
    case Dtype::kBf16:
      return "bf16";
    case Dtype::kFp16:
      return "fp16";
  }
  return "?";
}

template <typename T>
void check_against_reference(const Shape& s, uint64_t seed) {
  SCOPED_TRACE(std::string(dtype_name<T>()) + " " + to_string(s));
  // Round the inputs to storage precision first and feed the reference the very same values.
  const std::vector<T> qkv = to_storage<T>(random_vector(s.n_qkv(), seed));
  const std::vector<T> dout = to_storage<T>(random_vector(s.n_out(), seed + 1, 1.0));
  const std::vector<double> qkv_d = to_double(qkv);
  const std::vector<double> dout_d = to_double(dout);

  std::vector<double> out_ref(s.n_out()), lse_ref(s.n_lse()), dqkv_ref(s.n_qkv());
  ref::attention_fwd(out_ref.data(), lse_ref.data(), qkv_d.data(), s.B, s.T, s.C(), s.NH);
  ref::attention_bwd(dqkv_ref.data(), dout_d.data(), qkv_d.data(), s.B, s.T, s.C(), s.NH);

  std::vector<T> out, dqkv;
  std::vector<float> lse;
  run_fwd(out, lse, qkv, s);
  run_bwd(dqkv, dout, qkv, out, lse, s);

  const DtypeTolerances& tol = kTol<T>;
  EXPECT_TRUE(all_close("out", to_double(out), out_ref, tol.out));
  EXPECT_TRUE(all_close("lse", to_double(lse), lse_ref, tol.lse));
  EXPECT_TRUE(all_close("dqkv", to_double(dqkv), dqkv_ref, tol.dqkv));
}

class AttentionVsReference : public ::testing::TestWithParam<std::tuple<Dtype, Shape>> {};

TEST_P(AttentionVsReference, ForwardAndBackward) {
  const auto [dtype, shape] = GetParam();
  const uint64_t seed = 1000 + shape.B * 7919 + shape.T * 104729 + shape.NH * 13 + shape.HS;
  switch (dtype) {
    case Dtype::kFp32:
      check_against_reference<float>(shape, seed);
      break;
    case Dtype::kBf16:
      check_against_reference<bf16>(shape, seed);
      break;
    case Dtype::kFp16:
      check_against_reference<fp16>(shape, seed);
      break;
  }
}

std::vector<Shape> all_shapes() {
  // T around the tile size (64) and beyond two tiles; HS 1 and odd; several (b, head) pairs.
  std::vector<Shape> shapes;
  for (int T : {1, 7, 33, 64, 65, 130}) {
    for (int NH : {1, 3}) {
      for (int HS : {1, 8, 17, 64}) {
        for (int B : {1, 2}) shapes.push_back({B, T, NH, HS});
      }
    }
  }
  return shapes;
}

INSTANTIATE_TEST_SUITE_P(DtypeXShape, AttentionVsReference,
                         ::testing::Combine(::testing::Values(Dtype::kFp32, Dtype::kBf16,
                                                              Dtype::kFp16),
                                            ::testing::ValuesIn(all_shapes())),
                         [](const ::testing::TestParamInfo<AttentionVsReference::ParamType>& info) {
                           return to_string(std::get<0>(info.param)) + "_" +
                                  to_string(std::get<1>(info.param));
                         });

// Long rows (several key tiles per query) and large scores (std ~ 11): the running max must keep
// every exp() in range, and the rescaling of earlier tiles must be exact enough.
TEST(AttentionKernel, LongSequenceAndLargeScores) {
  const Shape s{1, 300, 2, 64};
  const std::vector<float> qkv = to_storage<float>(random_vector(s.n_qkv(), 77, 6.0));
  const std::vector<float> dout = to_storage<float>(random_vector(s.n_out(), 78, 1.0));
  std::vector<double> out_ref(s.n_out()), lse_ref(s.n_lse()), dqkv_ref(s.n_qkv());
  ref::attention_fwd(out_ref.data(), lse_ref.data(), to_double(qkv).data(), s.B, s.T, s.C(), s.NH);
  ref::attention_bwd(dqkv_ref.data(), to_double(dout).data(), to_double(qkv).data(), s.B, s.T,
                     s.C(), s.NH);
  std::vector<float> out, lse, dqkv;
  run_fwd(out, lse, qkv, s);
  run_bwd(dqkv, dout, qkv, out, lse, s);
  // An fp32 score of ~100 carries an absolute error of ~1e-5, and exp() turns that into a relative
  // error of the probabilities: about an order of magnitude above kTol<float>.
  EXPECT_TRUE(all_close("out", to_double(out), out_ref, {1e-4, 1e-5}));
  EXPECT_TRUE(all_close("lse", to_double(lse), lse_ref, {1e-5, 1e-6}));
  EXPECT_TRUE(all_close("dqkv", to_double(dqkv), dqkv_ref, {1e-4, 1e-4}));
}

// ---------------------------------------------------------------------------------------------
// Properties of the CPU kernels.

template <typename T>
void check_causality() {
  SCOPED_TRACE(dtype_name<T>());
  const Shape s{2, 130, 3, 17};
  const int C = s.C();
  const std::vector<T> qkv = to_storage<T>(random_vector(s.n_qkv(), 5));
  std::vector<T> out;
  std::vector<float> lse;
  run_fwd(out, lse, qkv, s);

  // Change q, k and v of every token from t0 on (t0 inside a tile, at a tile boundary, and the
  // last token): outputs and lse before t0 must not change by a single bit.
  for (int t0 : {1, 40, 64, 129}) {
    SCOPED_TRACE("t0=" + std::to_string(t0));
    std::vector<T> changed = qkv;
    Rng rng(t0);
    for (int b = 0; b < s.B; ++b) {
      for (int t = t0; t < s.T; ++t) {
        for (int c = 0; c < 3 * C; ++c) {
          changed[(static_cast<size_t>(b) * s.T + t) * 3 * C + c] =
              zt::from_f32<T>(static_cast<float>(rng.uniform(-3.0, 3.0)));
        }
      }
    }
    std::vector<T> out2;
    std::vector<float> lse2;
    run_fwd(out2, lse2, changed, s);
    for (int b = 0; b < s.B; ++b) {
      const size_t row = static_cast<size_t>(b) * s.T * C;
      EXPECT_EQ(std::memcmp(&out[row], &out2[row], static_cast<size_t>(t0) * C * sizeof(T)), 0)
          << "b=" << b;
      for (int h = 0; h < s.NH; ++h) {
        const size_t l = (static_cast<size_t>(b) * s.NH + h) * s.T;
        EXPECT_EQ(std::memcmp(&lse[l], &lse2[l], t0 * sizeof(float)), 0) << "b=" << b;
      }
    }

    // Backward: with no gradient arriving at outputs t >= t0, nothing flows into tokens t >= t0.
    std::vector<T> dout = to_storage<T>(random_vector(s.n_out(), 6, 1.0));
    for (int b = 0; b < s.B; ++b) {
      for (size_t i = (static_cast<size_t>(b) * s.T + t0) * C;
           i < static_cast<size_t>(b + 1) * s.T * C; ++i) {
        dout[i] = zt::from_f32<T>(0.0f);
      }
    }
    std::vector<T> dqkv;
    run_bwd(dqkv, dout, qkv, out, lse, s);
    size_t nonzero = 0;
    for (int b = 0; b < s.B; ++b) {
      for (size_t i = (static_cast<size_t>(b) * s.T + t0) * 3 * C;
           i < static_cast<size_t>(b + 1) * s.T * 3 * C; ++i) {
        nonzero += zt::to_f32(dqkv[i]) != 0.0f;
      }
    }
    EXPECT_EQ(nonzero, 0u);
  }
}

TEST(AttentionKernel, Causal) {
  check_causality<float>();
  check_causality<bf16>();
  check_causality<fp16>();
}

template <typename T>
void check_determinism() {
  SCOPED_TRACE(dtype_name<T>());
  ThreadCountGuard guard;
  const Shape s{2, 130, 3, 64};
  const std::vector<T> qkv = to_storage<T>(random_vector(s.n_qkv(), 21));
  const std::vector<T> dout = to_storage<T>(random_vector(s.n_out(), 22, 1.0));
  std::vector<T> out0, dqkv0;
  std::vector<float> lse0;
  run_fwd(out0, lse0, qkv, s);
  run_bwd(dqkv0, dout, qkv, out0, lse0, s);
  // The same run again, then with other thread counts (more threads than tasks included): the
  // (b, head) and query-tile tasks must not depend on which thread runs them.
  for (int threads : {0, 1, 3, 8}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    if (threads > 0) omp_set_num_threads(threads);
    std::vector<T> out, dqkv;
    std::vector<float> lse;
    run_fwd(out, lse, qkv, s);
    run_bwd(dqkv, dout, qkv, out, lse, s);
    EXPECT_TRUE(bitwise_equal(out, out0));
    EXPECT_TRUE(bitwise_equal(lse, lse0));
    EXPECT_TRUE(bitwise_equal(dqkv, dqkv0));
  }
}

TEST(AttentionKernel, DeterministicAcrossRunsAndThreadCounts) {
  check_determinism<float>();
  check_determinism<bf16>();
  check_determinism<fp16>();
}

// Outputs are overwritten (=), not accumulated, and nothing is read from the scratch before it
// is written: prefilling outputs and scratch with NaN bit patterns changes no bit of the result.
// The scratch is also fenced with a canary to catch a size function that is too small.
template <typename T>
void check_overwrite_and_scratch() {
  SCOPED_TRACE(dtype_name<T>());
  const Shape s{2, 65, 3, 17};
  const std::vector<T> qkv = to_storage<T>(random_vector(s.n_qkv(), 31));
  const std::vector<T> dout = to_storage<T>(random_vector(s.n_out(), 32, 1.0));
  std::vector<T> out0, dqkv0;
  std::vector<float> lse0;
  run_fwd(out0, lse0, qkv, s);
  run_bwd(dqkv0, dout, qkv, out0, lse0, s);

  constexpr size_t kCanary = 256;
  const size_t fwd_bytes = cpu::attention_fwd_scratch_bytes(s.B, s.T, s.C(), s.NH);
  const size_t bwd_bytes = cpu::attention_bwd_scratch_bytes(s.B, s.T, s.C(), s.NH);
  std::vector<unsigned char> fwd_scratch(fwd_bytes + kCanary, 0xFF);
  std::vector<unsigned char> bwd_scratch(bwd_bytes + kCanary, 0xFF);
  std::vector<T> out(s.n_out()), dqkv(s.n_qkv());
  std::vector<float> lse(s.n_lse());
  std::memset(out.data(), 0xFF, out.size() * sizeof(T));
  std::memset(lse.data(), 0xFF, lse.size() * sizeof(float));
  std::memset(dqkv.data(), 0xFF, dqkv.size() * sizeof(T));

  cpu::attention_fwd(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C(), s.NH, fwd_scratch.data());
  cpu::attention_bwd(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.C(),
                     s.NH, bwd_scratch.data());
  EXPECT_TRUE(bitwise_equal(out, out0));
  EXPECT_TRUE(bitwise_equal(lse, lse0));
  EXPECT_TRUE(bitwise_equal(dqkv, dqkv0));
  for (size_t i = 0; i < kCanary; ++i) {
    ASSERT_EQ(fwd_scratch[fwd_bytes + i], 0xFF) << "forward wrote past its scratch at +" << i;
    ASSERT_EQ(bwd_scratch[bwd_bytes + i], 0xFF) << "backward wrote past its scratch at +" << i;
  }
}

TEST(AttentionKernel, OverwritesOutputsAndIgnoresScratchContents) {
  check_overwrite_and_scratch<float>();
  check_overwrite_and_scratch<bf16>();
  check_overwrite_and_scratch<fp16>();
}

TEST(AttentionKernel, ScratchGrowsWithThreadsOnly) {
  // Per-thread buffers: the forward needs no (T, B)-sized scratch, the backward one head of T.
  ThreadCountGuard guard;
  omp_set_num_threads(1);
  const size_t fwd1 = cpu::attention_fwd_scratch_bytes(1, 100, 384, 6);
  const size_t bwd1 = cpu::attention_bwd_scratch_bytes(1, 100, 384, 6);
  EXPECT_EQ(cpu::attention_fwd_scratch_bytes(8, 1000, 384, 6), fwd1);
  EXPECT_EQ(cpu::attention_bwd_scratch_bytes(8, 100, 384, 6), bwd1);
  EXPECT_GT(cpu::attention_bwd_scratch_bytes(1, 1000, 384, 6), bwd1);
  omp_set_num_threads(3);
  EXPECT_EQ(cpu::attention_fwd_scratch_bytes(1, 100, 384, 6), 3 * fwd1);
  EXPECT_EQ(cpu::attention_bwd_scratch_bytes(1, 100, 384, 6), 3 * bwd1);
}

}  // namespace
