// Optimizer kernels: AdamW, SGD and Lion against fp64 loops of their formulas over several steps,
// sum_squares and count_nonfinite against fp64 references, and determinism across thread counts;
// at every SIMD level the CPU has (kernels/cpu/simd.h), which must all give the same bits.
// 8-bit: the code maps' construction, quantize_value against an fp64 brute force (every lookup
// bucket's ends and both sides of every midpoint), block quantisation and the first_block
// convention, requantisation idempotence, non-finite blocks, and AdamW8bit against an fp64
// AdamW with simulated quantisation (lockstep and free-running) and against unquantised AdamW
// within the error bound the maps imply.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/optimizer.h"
#include "kernels/reference/optimizer.h"
#include "tests/cpu/kernel_test_util.h"

namespace zt::kernels::testing {
namespace {

struct AdamWHyper {
  float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float grad_scale = 0.5f;  // e.g. unscaling a loss scale of 2 with no clipping
};

TEST(AdamWReference, FirstStepIsSignDescentPlusDecay) {
  // With zero moments, step 1 of Adam moves every weight by lr * g / (|g| + eps') after the
  // decoupled decay: an identity independent of the formula's code.
  const AdamWHyper h;
  const std::vector<double> grad = {2.0, -0.5, 1e-3};
  std::vector<double> master = {1.0, -1.0, 0.25}, m(3, 0.0), v(3, 0.0);
  const std::vector<double> start = master;
  ref::adamw_update(master.data(), m.data(), v.data(), grad.data(), 3, h.lr, h.beta1, h.beta2,
                    h.eps, h.weight_decay, 1.0 - h.beta1, 1.0 - h.beta2, 1.0);
  for (size_t i = 0; i < 3; ++i) {
    const double decayed = start[i] * (1.0 - double{h.lr} * h.weight_decay);
    const double g = grad[i];
    EXPECT_NEAR(master[i], decayed - h.lr * g / (std::fabs(g) + h.eps), 1e-12) << "i=" << i;
  }
}

using OptimizerParam = std::tuple<Dtype, size_t>;

class OptimizerTest : public ::testing::TestWithParam<OptimizerParam> {};

std::string optimizer_param_name(const ::testing::TestParamInfo<OptimizerParam>& info) {
  return std::string(dtype_name(std::get<0>(info.param))) + "_n" +
         std::to_string(std::get<1>(info.param));
}

template <typename T>
void check_adamw_steps(size_t n) {
  constexpr int kSteps = 5;
  const AdamWHyper h;
  Rng rng(60);
  std::vector<float> master = random_vec<float>(rng, n, -1, 1);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  std::vector<double> master64 = to_double(master), m64(n, 0.0), v64(n, 0.0);
  for (int step = 1; step <= kSteps; ++step) {
    // Gradients change sign and size from step to step; some are exactly zero.
    auto grad = random_vec<T>(rng, n, -2.0 / step, 2.0 / step);
    for (size_t i = 0; i < n; i += 11) grad[i] = from_f32<T>(0.0f);
    const float bc1 = 1.0f - std::pow(h.beta1, static_cast<float>(step));
    const float bc2 = 1.0f - std::pow(h.beta2, static_cast<float>(step));
    cpu::adamw_update(master.data(), m.data(), v.data(), grad.data(), n, h.lr, h.beta1, h.beta2,
                      h.eps, h.weight_decay, bc1, bc2, h.grad_scale);
    ref::adamw_update(master64.data(), m64.data(), v64.data(), to_double(grad).data(), n, h.lr,
                      h.beta1, h.beta2, h.eps, h.weight_decay, bc1, bc2, h.grad_scale);
  }
  // master, m, v are fp32 whatever the gradient's storage type.
  const Tolerance tol = tolerance(Dtype::kF32);
  EXPECT_TRUE(all_close("master", master, master64, tol));
  EXPECT_TRUE(all_close("m", m, m64, tol));
  EXPECT_TRUE(all_close("v", v, v64, tol));
}

template <typename T>
void check_sum_squares(size_t n) {
  Rng rng(61);
  const auto x = random_vec<T>(rng, n, -3, 3);
  const auto x64 = to_double(x);
  const double want = ref::sum_squares(x64.data(), n);
  std::vector<double> got;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    got.push_back(cpu::sum_squares(x.data(), n));
    got.push_back(cpu::sum_squares(x.data(), n));
  }
  // Squares of floats are exact in fp64; only the summation order differs.
  EXPECT_NEAR(got[0], want, 1e-12 * want);
  for (size_t r = 1; r < got.size(); ++r) {
    EXPECT_TRUE(bitwise_equal("sum_squares run " + std::to_string(r), std::vector<double>{got[0]},
                              std::vector<double>{got[r]}));
  }
}

template <typename T>
void check_count_nonfinite(size_t n) {
  Rng rng(62);
  auto x = random_vec<T>(rng, n, -1e3, 1e3);
  const float specials[] = {
      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
      std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN()};
  for (size_t i = 0, k = 0; i < n; i += 5, ++k) x[i] = from_f32<T>(specials[k % 4]);
  // The largest finite value and a denormal are finite.
  if (n > 1) x[1] = from_f32<T>(dtype_of<T>() == Dtype::kF16 ? 65504.0f : 3.0e38f);
  if (n > 2) x[2] = from_f32<T>(1e-40f);
  const auto x64 = to_double(x);
  const size_t want = ref::count_nonfinite(x64.data(), n);
  ASSERT_GT(want, 0u);
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    EXPECT_EQ(cpu::count_nonfinite(x.data(), n), want) << threads << " threads";
  }
}

template <typename T>
void check_adamw_deterministic(size_t n) {
  const AdamWHyper h;
  Rng rng(63);
  const auto master0 = random_vec<float>(rng, n, -1, 1);
  const auto m0 = random_vec<float>(rng, n, -0.1, 0.1);
  const auto v0 = random_vec<float>(rng, n, 0, 0.01);
  const auto grad = random_vec<T>(rng, n, -1, 1);
  std::vector<std::vector<float>> runs;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    auto master = master0, m = m0, v = v0;
    cpu::adamw_update(master.data(), m.data(), v.data(), grad.data(), n, h.lr, h.beta1, h.beta2,
                      h.eps, h.weight_decay, 0.5f, 0.3f, h.grad_scale);
    master.insert(master.end(), m.begin(), m.end());
    master.insert(master.end(), v.begin(), v.end());
    runs.push_back(std::move(master));
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_TRUE(bitwise_equal("master|m|v run " + std::to_string(r), runs[0], runs[r]));
  }
}

TEST_P(OptimizerTest, AdamWMatchesFp64FormulaOverSteps) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_adamw_steps<T>(n); });
}

TEST_P(OptimizerTest, AdamWBitwiseDeterministicAcrossThreadCounts) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_adamw_deterministic<T>(n); });
}

TEST_P(OptimizerTest, SumSquaresMatchesReferenceAndIsDeterministic) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_sum_squares<T>(n); });
}

TEST_P(OptimizerTest, CountNonfiniteMatchesReference) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_count_nonfinite<T>(n); });
}

// 4097 is a partial AdamW block; 3000017 spans many sum_squares chunks with a partial last one.
INSTANTIATE_TEST_SUITE_P(Kernels, OptimizerTest,
                         ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                                            ::testing::Values(size_t{1}, size_t{7}, size_t{33},
                                                              size_t{4097}, size_t{3000017})),
                         optimizer_param_name);

// ---------------------------------------------------------------------------------------------
// SIMD levels
// ---------------------------------------------------------------------------------------------

using cpu::SimdLevel;

const std::vector<SimdLevel>& all_levels() {
  static const std::vector<SimdLevel> kAll = {SimdLevel::kScalar, SimdLevel::kAvx2,
                                              SimdLevel::kAvx512};
  return kAll;
}

const char* level_requirement(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "nothing";
    case SimdLevel::kAvx2:
      return "AVX2, FMA and F16C";
    case SimdLevel::kAvx512:
      return "AVX-512 F, BW, DQ and VL";
  }
  return "?";
}

// Runs the kernels at `level` for the scope (the caller skips levels the CPU lacks).
class ScopedSimdLevel {
 public:
  explicit ScopedSimdLevel(SimdLevel level) : previous_(cpu::simd_level()) {
    ok_ = cpu::set_simd_level_for_testing(level);
  }
  ~ScopedSimdLevel() { cpu::set_simd_level_for_testing(previous_); }
  ScopedSimdLevel(const ScopedSimdLevel&) = delete;
  ScopedSimdLevel& operator=(const ScopedSimdLevel&) = delete;
  bool ok() const { return ok_; }

 private:
  SimdLevel previous_;
  bool ok_ = false;
};

#define ZT_USE_SIMD_LEVEL_OR_SKIP(level)                                                       \
  if (!cpu::simd_level_supported(level)) {                                                     \
    GTEST_SKIP() << "this CPU lacks " << cpu::simd_level_name(level) << " (needs "             \
                 << level_requirement(level)                                                   \
                 << "); detected level: " << cpu::simd_level_name(cpu::detected_simd_level()); \
  }                                                                                            \
  ScopedSimdLevel scoped_level(level);                                                         \
  ASSERT_TRUE(scoped_level.ok())

TEST(SimdLevel, DetectionAndForcing) {
  EXPECT_TRUE(cpu::simd_level_supported(SimdLevel::kScalar));
  EXPECT_EQ(cpu::simd_level(), cpu::detected_simd_level());
  for (SimdLevel level : all_levels()) {
    const bool supported = static_cast<int>(level) <= static_cast<int>(cpu::detected_simd_level());
    EXPECT_EQ(cpu::simd_level_supported(level), supported) << cpu::simd_level_name(level);
    {
      ScopedSimdLevel scope(level);
      EXPECT_EQ(scope.ok(), supported);
      EXPECT_EQ(cpu::simd_level(), supported ? level : cpu::detected_simd_level());
    }
    EXPECT_EQ(cpu::simd_level(), cpu::detected_simd_level());
  }
  std::printf("detected SIMD level: %s\n", cpu::simd_level_name(cpu::detected_simd_level()));
}

// ---------------------------------------------------------------------------------------------
// SGD and Lion: hand-computed branches (independent of the references)
// ---------------------------------------------------------------------------------------------

TEST(SgdKernel, BranchesMatchHandComputedValues) {
  // g = 0.5 * 2 (grad_scale) + 0.1 * 1 (L2) = 1.1 on p = 1; lr 0.1, momentum 0.9.
  const float grad[1] = {0.5f};
  {  // no momentum: the buffer is never touched (null)
    float p = 1.0f;
    cpu::sgd_update(&p, nullptr, grad, 1, 0.1f, 0.0f, 0.0f, 0.1f, false, true, 2.0f);
    EXPECT_NEAR(p, 1.0 - 0.1 * 1.1, 1e-7);
  }
  {  // first step: buf = g whatever it held, then plain momentum uses buf
    float p = 1.0f, buf = 123.0f;
    cpu::sgd_update(&p, &buf, grad, 1, 0.1f, 0.9f, 0.5f, 0.1f, false, true, 2.0f);
    EXPECT_NEAR(buf, 1.1, 1e-7);
    EXPECT_NEAR(p, 1.0 - 0.1 * 1.1, 1e-7);
  }
  {  // first step with Nesterov: g + momentum * buf = 1.1 + 0.99
    float p = 1.0f, buf = -7.0f;
    cpu::sgd_update(&p, &buf, grad, 1, 0.1f, 0.9f, 0.0f, 0.1f, true, true, 2.0f);
    EXPECT_NEAR(buf, 1.1, 1e-7);
    EXPECT_NEAR(p, 1.0 - 0.1 * 2.09, 1e-7);
  }
  {  // later step with dampening 0.5: buf = 0.9 * 2 + 0.5 * 1.1 = 2.35
    float p = 1.0f, buf = 2.0f;
    cpu::sgd_update(&p, &buf, grad, 1, 0.1f, 0.9f, 0.5f, 0.1f, false, false, 2.0f);
    EXPECT_NEAR(buf, 2.35, 1e-6);
    EXPECT_NEAR(p, 1.0 - 0.1 * 2.35, 1e-6);
  }
  {  // later step, Nesterov, no dampening: buf = 1.8 + 1.1 = 2.9; g = 1.1 + 0.9 * 2.9 = 3.71
    float p = 1.0f, buf = 2.0f;
    cpu::sgd_update(&p, &buf, grad, 1, 0.1f, 0.9f, 0.0f, 0.1f, true, false, 2.0f);
    EXPECT_NEAR(buf, 2.9, 1e-6);
    EXPECT_NEAR(p, 1.0 - 0.1 * 3.71, 1e-6);
  }
}

TEST(LionKernel, SignOfZeroIsZeroAndNanPropagates) {
  // beta1 = 0.5, m = -g: c = 0.5 m + 0.5 g = 0 exactly, so the weight only decays.
  const float lr = 0.01f, wd = 0.5f;
  std::vector<float> grad = {0.25f, -3.0f, 0.0f, 1.0f, std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> m = {-0.25f, 3.0f, 0.0f, 0.0f, 0.0f};
  std::vector<float> p = {2.0f, -2.0f, 1.5f, 1.0f, 1.0f};
  cpu::lion_update(p.data(), m.data(), grad.data(), grad.size(), lr, 0.5f, 0.75f, wd, 1.0f);
  const float decay = 1.0f - lr * wd;
  EXPECT_EQ(p[0], 2.0f * decay);
  EXPECT_EQ(p[1], -2.0f * decay);
  EXPECT_EQ(p[2], 1.5f * decay);
  EXPECT_NEAR(p[3], 1.0 * decay - lr, 1e-7);  // c = 0.5 > 0
  EXPECT_TRUE(std::isnan(p[4]));              // a NaN gradient is not silently skipped
  EXPECT_NEAR(m[0], 0.75 * -0.25 + 0.25 * 0.25, 1e-7);
  EXPECT_EQ(m[2], 0.0f);
}

// ---------------------------------------------------------------------------------------------
// AdamW, SGD, Lion against fp64 at every SIMD level
// ---------------------------------------------------------------------------------------------

using LevelParam = std::tuple<Dtype, size_t, SimdLevel>;

class OptimizerLevelTest : public ::testing::TestWithParam<LevelParam> {};

std::string level_param_name(const ::testing::TestParamInfo<LevelParam>& info) {
  return std::string(dtype_name(std::get<0>(info.param))) + "_n" +
         std::to_string(std::get<1>(info.param)) + "_" +
         cpu::simd_level_name(std::get<2>(info.param));
}

struct SgdCase {
  const char* name;
  float momentum, dampening, weight_decay;
  bool nesterov;
};
const SgdCase kSgdCases[] = {{"plain", 0.0f, 0.0f, 0.01f, false},
                             {"momentum_dampening", 0.9f, 0.1f, 0.01f, false},
                             {"nesterov", 0.9f, 0.0f, 0.05f, true},
                             {"momentum_no_decay", 0.8f, 0.0f, 0.0f, false}};

template <typename T>
void check_sgd_steps(size_t n, const SgdCase& sc) {
  constexpr int kSteps = 5;
  const float lr = 0.05f, grad_scale = 0.5f;
  Rng rng(64);
  std::vector<float> master = random_vec<float>(rng, n, -1, 1);
  // Garbage in the buffer: the first step must overwrite it, not decay it.
  std::vector<float> buf = random_vec<float>(rng, n, -100, 100);
  std::vector<double> master64 = to_double(master), buf64 = to_double(buf);
  const bool use_buf = sc.momentum != 0.0f;
  for (int step = 1; step <= kSteps; ++step) {
    auto grad = random_vec<T>(rng, n, -2.0, 2.0);
    for (size_t i = 0; i < n; i += 13) grad[i] = from_f32<T>(0.0f);
    cpu::sgd_update(master.data(), use_buf ? buf.data() : nullptr, grad.data(), n, lr, sc.momentum,
                    sc.dampening, sc.weight_decay, sc.nesterov, step == 1, grad_scale);
    ref::sgd_update(master64.data(), buf64.data(), to_double(grad).data(), n, lr, sc.momentum,
                    sc.dampening, sc.weight_decay, sc.nesterov, step == 1, grad_scale);
  }
  const Tolerance tol = tolerance(Dtype::kF32);
  EXPECT_TRUE(all_close(std::string(sc.name) + " master", master, master64, tol));
  if (use_buf) {
    EXPECT_TRUE(all_close(std::string(sc.name) + " buf", buf, buf64, tol));
  }
}

// Lockstep: each step the fp64 reference starts from the kernel's state, so an element whose c is
// within fp32 rounding of 0 (where the signs may legitimately differ) costs one comparison, not a
// diverged trajectory; such elements are counted and bounded.
template <typename T>
void check_lion_steps(size_t n) {
  constexpr int kSteps = 5;
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.99f, wd = 0.1f, grad_scale = 0.75f;
  Rng rng(65);
  std::vector<float> master = random_vec<float>(rng, n, -1, 1);
  std::vector<float> m(n, 0.0f);
  size_t near_zero = 0;
  for (int step = 1; step <= kSteps; ++step) {
    auto grad = random_vec<T>(rng, n, -1.0, 1.0);
    for (size_t i = 0; i < n; i += 7) grad[i] = from_f32<T>(0.0f);  // with m = 0: c = 0 exactly
    const auto grad64 = to_double(grad);
    std::vector<double> master64 = to_double(master), m64 = to_double(m);
    std::vector<bool> excused(n, false);
    for (size_t i = 0; i < n; ++i) {
      const double a = beta1 * m64[i], b = (1.0 - beta1) * grad64[i] * grad_scale;
      if (a + b != 0.0 && std::fabs(a + b) <= 1e-6 * (std::fabs(a) + std::fabs(b))) {
        excused[i] = true;
        ++near_zero;
      }
    }
    cpu::lion_update(master.data(), m.data(), grad.data(), n, lr, beta1, beta2, wd, grad_scale);
    ref::lion_update(master64.data(), m64.data(), grad64.data(), n, lr, beta1, beta2, wd,
                     grad_scale);
    for (size_t i = 0; i < n; ++i) {
      if (excused[i]) master64[i] = master[i];
    }
    const Tolerance tol = tolerance(Dtype::kF32);
    ASSERT_TRUE(all_close("master step " + std::to_string(step), master, master64, tol));
    ASSERT_TRUE(all_close("m step " + std::to_string(step), m, m64, tol));
  }
  EXPECT_LE(near_zero, n * kSteps / 1000) << "elements with c within rounding of 0";
}

TEST_P(OptimizerLevelTest, AdamWMatchesFp64OverSteps) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  dispatch(dtype, [&]<typename T>() { check_adamw_steps<T>(n); });
}

TEST_P(OptimizerLevelTest, SgdMatchesFp64OverSteps) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  for (const SgdCase& sc : kSgdCases) {
    dispatch(dtype, [&]<typename T>() { check_sgd_steps<T>(n, sc); });
  }
}

TEST_P(OptimizerLevelTest, LionMatchesFp64OverSteps) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  dispatch(dtype, [&]<typename T>() { check_lion_steps<T>(n); });
}

TEST_P(OptimizerLevelTest, SumSquaresAndCountNonfinite) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  dispatch(dtype, [&]<typename T>() {
    check_sum_squares<T>(n);
    check_count_nonfinite<T>(n);
  });
}

// ---------------------------------------------------------------------------------------------
// 8-bit maps and quantize_value
// ---------------------------------------------------------------------------------------------

// Largest gap between neighbouring codes by construction (Note [dynamic code maps]): the top
// decade, 0.9 / 64 (signed) and 0.9 / 128 (unsigned).
constexpr double kSignedMaxGap = 0.9 / 64;
constexpr double kUnsignedMaxGap = 0.9 / 128;

uint8_t zero_code_of(const cpu::QuantMap& map) {
  return static_cast<uint8_t>(std::find(map.code, map.code + 256, 0.0f) - map.code);
}

void check_map_structure(const cpu::QuantMap& map, bool is_signed) {
  for (int k = 1; k < 256; ++k) ASSERT_LT(map.code[k - 1], map.code[k]) << "k=" << k;
  EXPECT_EQ(map.code[255], 1.0f);
  EXPECT_EQ(map.code[zero_code_of(map)], 0.0f);
  EXPECT_EQ(zero_code_of(map), is_signed ? 127 : 0);
  EXPECT_EQ(map.code[zero_code_of(map) + 1], 1e-7f);  // the extra lowest value
  if (is_signed) {
    EXPECT_EQ(map.code[0], -1.0f);
    for (int k = 0; k <= 126; ++k) EXPECT_EQ(map.code[k], -map.code[255 - k]) << "k=" << k;
  }
  // Decade d = (10^-(d+1), 10^-d] holds 2^F values spaced linearly by 0.9 10^-d / 2^F.
  const int top_bits = is_signed ? 6 : 7;
  double max_gap = 0.0;
  for (int k = 1; k < 256; ++k) max_gap = std::max(max_gap, double{map.code[k]} - map.code[k - 1]);
  EXPECT_NEAR(max_gap, is_signed ? kSignedMaxGap : kUnsignedMaxGap, 1e-7);
  for (int d = 0; d <= 6; ++d) {
    const double hi = std::pow(10.0, -d) * (1 + 1e-6), lo = std::pow(10.0, -d - 1) * (1 + 1e-6);
    std::vector<double> in;
    for (float c : map.code) {
      if (c > lo && c <= hi) in.push_back(c);
    }
    const size_t want = size_t{1} << (top_bits - d);
    ASSERT_EQ(in.size(), want) << "decade " << d;
    const double step = 0.9 * std::pow(10.0, -d) / static_cast<double>(want);
    for (size_t j = 1; j < in.size(); ++j) {
      EXPECT_NEAR(in[j] - in[j - 1], step, 1e-6 * std::pow(10.0, -d)) << "decade " << d;
    }
  }
}

TEST(QuantMap, SignedConstruction) { check_map_structure(cpu::signed_dynamic_map(), true); }
TEST(QuantMap, UnsignedConstruction) { check_map_structure(cpu::unsigned_dynamic_map(), false); }

float next_up(float x) { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
float next_down(float x) { return std::nextafter(x, -std::numeric_limits<float>::infinity()); }

// quantize_value against the fp64 brute force on: both ends of every top-16-bit lookup bucket (so,
// with at most one midpoint per bucket, which the ends also show, every float agrees), both sides
// of every exact midpoint and the midpoints themselves when representable (ties go to the lower
// code), every code and its neighbours, specials, and random values.
void check_quantize_value(const cpu::QuantMap& map) {
  std::vector<float> xs;
  for (uint32_t u = 0; u < 65536; ++u) {
    xs.push_back(f32_from_bits(u << 16));
    xs.push_back(f32_from_bits((u << 16) | 0xFFFFu));
  }
  size_t exact_midpoints = 0;
  for (int k = 1; k < 256; ++k) {
    const double mid = (double{map.code[k - 1]} + map.code[k]) / 2.0;
    const float f = static_cast<float>(mid);
    if (static_cast<double>(f) == mid) ++exact_midpoints;
    for (float x : {next_down(next_down(f)), next_down(f), f, next_up(f), next_up(next_up(f))}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float c : map.code) {
    for (float x : {next_down(c), c, next_up(c)}) xs.push_back(x);
  }
  const float inf = std::numeric_limits<float>::infinity();
  const float denorm_min = std::numeric_limits<float>::denorm_min();
  const float specials[] = {
      0.0f,    -0.0f,     inf,        -inf,         denorm_min,     -denorm_min,     1e-40f,
      -1e-40f, 1.17e-38f, -1.17e-38f, next_up(1.f), next_down(1.f), -next_down(1.f), -next_up(1.f),
      2.0f,    -2.0f,     5e-8f,      -5e-8f,       1e-7f,          3.4e38f,         -3.4e38f};
  xs.insert(xs.end(), std::begin(specials), std::end(specials));
  Rng rng(66);
  for (int i = 0; i < 200000; ++i) {
    xs.push_back(static_cast<float>(rng.uniform(-1.2, 1.2)));
    const double mag = std::pow(10.0, rng.uniform(-12.0, 0.0));
    xs.push_back(static_cast<float>(rng.uniform(0, 1) < 0.5 ? mag : -mag));
  }
  size_t mismatches = 0;
  std::string first;
  for (float x : xs) {
    const uint8_t want = ref::quantize(map.code, x);
    const uint8_t got = cpu::quantize_value(map, x);
    if (got != want && mismatches++ < 5) {
      char line[200];
      std::snprintf(line, sizeof line, "\n  x = %.9g (bits %08x): got %d (%.9g), want %d (%.9g)", x,
                    f32_bits(x), got, map.code[got], want, map.code[want]);
      first += line;
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << xs.size() << " values; first:" << first;
  EXPECT_GT(exact_midpoints, 0u) << "no representable midpoint: the tie rule went untested";
  // NaN: documented to take the code of 0.
  for (float nan :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
        f32_from_bits(0x7F800001u), f32_from_bits(0xFFFFFFFFu)}) {
    EXPECT_EQ(cpu::quantize_value(map, nan), zero_code_of(map));
  }
}

TEST(QuantMap, SignedQuantizeValueIsExactNearest) {
  check_quantize_value(cpu::signed_dynamic_map());
}
TEST(QuantMap, UnsignedQuantizeValueIsExactNearest) {
  check_quantize_value(cpu::unsigned_dynamic_map());
}

TEST(QuantBlocks, BlockCountAndFirstBlockConvention) {
  EXPECT_EQ(cpu::quant_block_count(0, 256), 0u);
  EXPECT_EQ(cpu::quant_block_count(1, 256), 1u);
  EXPECT_EQ(cpu::quant_block_count(256, 256), 1u);
  EXPECT_EQ(cpu::quant_block_count(257, 256), 2u);
  EXPECT_EQ(cpu::quant_block_count(1, 1), 1u);
  EXPECT_EQ(cpu::quant_block_count(2, 1), 2u);
  EXPECT_EQ(cpu::quant_block_count(257, 1), 2u);
  EXPECT_EQ(cpu::quant_block_count(258, 1), 3u);
  EXPECT_EQ(cpu::quant_block_count(100, 200), 1u);
  EXPECT_EQ(cpu::quant_block_count(1000, 100), 5u);  // 100 + 256 * 3 + 132
  // Blocks [0, 1), [1, 257), [257, 258): each absmax is its own block's max |x|.
  const size_t n = 258;
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = 0.001f * static_cast<float>(i % 97) - 0.05f;
  x[0] = -3.0f;
  x[100] = 2.0f;
  x[257] = 0.5f;
  for (SimdLevel level : all_levels()) {
    if (!cpu::simd_level_supported(level)) continue;
    ScopedSimdLevel scope(level);
    std::vector<uint8_t> codes(n);
    std::vector<float> absmax(3, -1.0f);
    cpu::quantize_blocks(cpu::signed_dynamic_map(), x.data(), n, 1, codes.data(), absmax.data());
    EXPECT_EQ(absmax[0], 3.0f) << cpu::simd_level_name(level);
    EXPECT_EQ(absmax[1], 2.0f) << cpu::simd_level_name(level);
    EXPECT_EQ(absmax[2], 0.5f) << cpu::simd_level_name(level);
    EXPECT_EQ(codes[0], 0);      // -1
    EXPECT_EQ(codes[100], 255);  // +1
    EXPECT_EQ(codes[257], 255);
  }
}

TEST(QuantBlocks, ZeroAndNonFiniteBlocks) {
  const auto& sm = cpu::signed_dynamic_map();
  const auto& um = cpu::unsigned_dynamic_map();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (SimdLevel level : all_levels()) {
    if (!cpu::simd_level_supported(level)) continue;
    ScopedSimdLevel scope(level);
    const size_t n = 3 * 256;
    std::vector<float> x(n);
    Rng rng(67);
    for (auto& e : x) e = static_cast<float>(rng.uniform(-1, 1));
    std::fill(x.begin(), x.begin() + 256, 0.0f);  // block 0: all zero
    x[256 + 17] = nan;                            // block 1: a NaN
    x[512 + 3] = -inf;                            // block 2: an Inf
    for (const cpu::QuantMap* map : {&sm, &um}) {
      std::vector<uint8_t> codes(n);
      std::vector<float> absmax(3), out(n);
      cpu::quantize_blocks(*map, x.data(), n, 256, codes.data(), absmax.data());
      EXPECT_EQ(f32_bits(absmax[0]), 0u);
      EXPECT_TRUE(std::isnan(absmax[1]));
      EXPECT_EQ(absmax[2], inf);
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(codes[i], zero_code_of(*map)) << "i=" << i << " " << cpu::simd_level_name(level);
      }
      cpu::dequantize_blocks(*map, codes.data(), absmax.data(), n, 256, out.data());
      for (size_t i = 0; i < 256; ++i) ASSERT_EQ(f32_bits(out[i]), 0u) << "i=" << i;
      for (size_t i = 256; i < n; ++i) ASSERT_TRUE(std::isnan(out[i])) << "i=" << i;
    }
  }
  // AdamW8bit from an all-zero state with zero gradients: stays exactly zero (no 0/0).
  const size_t n = 300;
  std::vector<float> master(n, 0.5f);
  std::vector<uint8_t> mc(n, zero_code_of(sm)), vc(n, zero_code_of(um));
  std::vector<float> ma(2, 0.0f), va(2, 0.0f), grad(n, 0.0f);
  cpu::adamw8bit_update(master.data(), mc.data(), ma.data(), vc.data(), va.data(), grad.data(), n,
                        256, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 0.1f, 0.05f, 1.0f);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(master[i], 0.5f);
    ASSERT_EQ(mc[i], zero_code_of(sm));
    ASSERT_EQ(vc[i], zero_code_of(um));
  }
  EXPECT_EQ(ma[0], 0.0f);
  EXPECT_EQ(va[1], 0.0f);
}

// ---------------------------------------------------------------------------------------------
// 8-bit blocks and AdamW8bit at every SIMD level
// ---------------------------------------------------------------------------------------------

// first_block values the 8-bit tests run with (the large size only the first, for time).
std::vector<size_t> first_blocks_for(size_t n) {
  if (n > 10000) return {256};
  return {256, 1, 77};
}

// Random x with per-block scales from 1e-30 to 1e30 (or 1 when !wide) and some exact zeros.
std::vector<float> random_blocks(Rng& rng, size_t n, bool is_signed, bool wide) {
  std::vector<float> x(n);
  double scale = 1.0;
  for (size_t i = 0; i < n; ++i) {
    if (i % 256 == 0 && wide) scale = std::pow(10.0, rng.uniform(-30, 30));
    double u = rng.uniform(is_signed ? -1.0 : 0.0, 1.0);
    if (i % 5 == 0) u = u * u * u * u;  // small values: the low decades
    x[i] = static_cast<float>(u * scale);
    if (i % 19 == 0) x[i] = 0.0f;
  }
  return x;
}

// Kernel codes against the fp64 reference's: equal, or neighbours with the reference's value (in
// map units, x / absmax) within kStraddle of their midpoint, where fp32 and fp64 rounding may put
// it on different sides. Counts the straddles.
constexpr double kStraddle = 1e-5;

::testing::AssertionResult codes_agree(const std::string& what, const uint8_t* got,
                                       const uint8_t* want, const double* units, size_t n,
                                       const float* code, size_t* straddles) {
  size_t bad = 0;
  std::string first;
  for (size_t i = 0; i < n; ++i) {
    if (got[i] == want[i]) continue;
    const int lo = std::min(got[i], want[i]), hi = std::max(got[i], want[i]);
    const double mid = (double{code[lo]} + code[hi]) / 2.0;
    if (hi - lo == 1 && std::fabs(units[i] - mid) <= kStraddle) {
      ++*straddles;
      continue;
    }
    if (bad++ < 5) {
      char line[200];
      std::snprintf(line, sizeof line, "\n  [%zu]: got %d (%.9g), want %d (%.9g); x/absmax %.12g",
                    i, got[i], code[got[i]], want[i], code[want[i]], units[i]);
      first += line;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << n
         << " codes differ beyond a midpoint straddle; first:" << first;
}

std::vector<size_t> block_starts(size_t n, size_t fb) {
  std::vector<size_t> starts;
  for (size_t b = 0; b < ref::quant_block_count(n, fb); ++b) {
    starts.push_back(b == 0 ? 0 : fb + (b - 1) * 256);
  }
  return starts;
}

// x / absmax per element (0 where absmax is 0).
std::vector<double> in_units(const std::vector<double>& x, const std::vector<double>& absmax,
                             size_t fb) {
  std::vector<double> u(x.size());
  const auto starts = block_starts(x.size(), fb);
  for (size_t b = 0; b < starts.size(); ++b) {
    const size_t end = b + 1 < starts.size() ? starts[b + 1] : x.size();
    for (size_t i = starts[b]; i < end; ++i) u[i] = absmax[b] == 0.0 ? 0.0 : x[i] / absmax[b];
  }
  return u;
}

void check_quantize_blocks(size_t n, size_t fb) {
  const auto& sm = cpu::signed_dynamic_map();
  const auto& um = cpu::unsigned_dynamic_map();
  Rng rng(68);
  for (const cpu::QuantMap* map : {&sm, &um}) {
    const bool is_signed = map == &sm;
    const auto x = random_blocks(rng, n, is_signed, true);
    const size_t blocks = cpu::quant_block_count(n, fb);
    ASSERT_EQ(blocks, ref::quant_block_count(n, fb));
    std::vector<uint8_t> codes(n), want_codes(n);
    std::vector<float> absmax(blocks), out(n);
    cpu::quantize_blocks(*map, x.data(), n, fb, codes.data(), absmax.data());
    // Reference, block by block.
    const auto x64 = to_double(x);
    std::vector<double> absmax64(blocks);
    const auto starts = block_starts(n, fb);
    for (size_t b = 0; b < blocks; ++b) {
      const size_t end = b + 1 < blocks ? starts[b + 1] : n;
      ref::quantize_block(map->code, x64.data() + starts[b], end - starts[b],
                          want_codes.data() + starts[b], &absmax64[b]);
    }
    // max |x| of floats is exact either way.
    for (size_t b = 0; b < blocks; ++b) ASSERT_EQ(double{absmax[b]}, absmax64[b]) << "block " << b;
    size_t straddles = 0;
    EXPECT_TRUE(codes_agree(is_signed ? "signed codes" : "unsigned codes", codes.data(),
                            want_codes.data(), in_units(x64, absmax64, fb).data(), n, map->code,
                            &straddles));
    EXPECT_LE(straddles, n / 1000 + 1);
    // Dequantised: exactly fl(code * absmax), and within half the local gap of x.
    cpu::dequantize_blocks(*map, codes.data(), absmax.data(), n, fb, out.data());
    for (size_t b = 0; b < blocks; ++b) {
      const size_t end = b + 1 < blocks ? starts[b + 1] : n;
      for (size_t i = starts[b]; i < end; ++i) {
        ASSERT_EQ(out[i], static_cast<float>(double{map->code[codes[i]]} * absmax[b])) << i;
        const int c = codes[i];
        const double gap = std::max(c > 0 ? map->code[c] - double{map->code[c - 1]} : 0.0,
                                    c < 255 ? map->code[c + 1] - double{map->code[c]} : 0.0);
        ASSERT_LE(std::fabs(double{out[i]} - x[i]), (gap / 2 + 1e-6) * absmax[b] + 1e-44)
            << "i=" << i << " x=" << x[i] << " absmax=" << absmax[b];
      }
    }
  }
}

// quantize(dequantize(codes, absmax)) gives back the same codes and absmax bit for bit.
void check_requantize_idempotent(size_t n, size_t fb) {
  Rng rng(69);
  for (const cpu::QuantMap* map : {&cpu::signed_dynamic_map(), &cpu::unsigned_dynamic_map()}) {
    const auto x = random_blocks(rng, n, map == &cpu::signed_dynamic_map(), true);
    const size_t blocks = cpu::quant_block_count(n, fb);
    std::vector<uint8_t> c1(n), c2(n);
    std::vector<float> a1(blocks), a2(blocks), d1(n), d2(n);
    cpu::quantize_blocks(*map, x.data(), n, fb, c1.data(), a1.data());
    cpu::dequantize_blocks(*map, c1.data(), a1.data(), n, fb, d1.data());
    cpu::quantize_blocks(*map, d1.data(), n, fb, c2.data(), a2.data());
    cpu::dequantize_blocks(*map, c2.data(), a2.data(), n, fb, d2.data());
    EXPECT_TRUE(bitwise_equal("absmax", a1, a2));
    EXPECT_EQ(std::memcmp(c1.data(), c2.data(), n), 0) << "codes changed on requantisation";
    EXPECT_TRUE(bitwise_equal("dequantised", d1, d2));
  }
}

struct Adam8State {
  std::vector<float> master;
  std::vector<uint8_t> mc, vc;
  std::vector<float> ma, va;
};

const AdamWHyper kAdam8Hyper{};

// Starts from fp32 moments quantised (nonzero, so the first step already requantises real values).
Adam8State initial_adam8_state(Rng& rng, size_t n, size_t fb) {
  Adam8State s;
  s.master = random_vec<float>(rng, n, -1, 1);
  const auto m0 = random_vec<float>(rng, n, -0.05, 0.05);
  const auto v0 = random_vec<float>(rng, n, 0, 0.003);
  const size_t blocks = cpu::quant_block_count(n, fb);
  s.mc.resize(n);
  s.vc.resize(n);
  s.ma.resize(blocks);
  s.va.resize(blocks);
  cpu::quantize_blocks(cpu::signed_dynamic_map(), m0.data(), n, fb, s.mc.data(), s.ma.data());
  cpu::quantize_blocks(cpu::unsigned_dynamic_map(), v0.data(), n, fb, s.vc.data(), s.va.data());
  return s;
}

template <typename T>
void adam8_step(Adam8State& s, const std::vector<T>& grad, size_t fb, int step) {
  const AdamWHyper& h = kAdam8Hyper;
  const float bc1 = 1.0f - std::pow(h.beta1, static_cast<float>(step));
  const float bc2 = 1.0f - std::pow(h.beta2, static_cast<float>(step));
  cpu::adamw8bit_update(s.master.data(), s.mc.data(), s.ma.data(), s.vc.data(), s.va.data(),
                        grad.data(), s.master.size(), fb, h.lr, h.beta1, h.beta2, h.eps,
                        h.weight_decay, bc1, bc2, h.grad_scale);
}

// The fp64 reference's step on state (master64, codes, absmax64); m/v_updated get the unquantised
// moments.
void ref_adam8_step(std::vector<double>& master64, std::vector<uint8_t>& mc,
                    std::vector<double>& ma64, std::vector<uint8_t>& vc, std::vector<double>& va64,
                    const std::vector<double>& grad64, size_t fb, int step,
                    std::vector<double>* m_updated, std::vector<double>* v_updated) {
  const AdamWHyper& h = kAdam8Hyper;
  const float bc1 = 1.0f - std::pow(h.beta1, static_cast<float>(step));
  const float bc2 = 1.0f - std::pow(h.beta2, static_cast<float>(step));
  ref::adamw8bit_update(master64.data(), mc.data(), ma64.data(), vc.data(), va64.data(),
                        grad64.data(), master64.size(), fb, h.lr, h.beta1, h.beta2, h.eps,
                        h.weight_decay, bc1, bc2, h.grad_scale, cpu::signed_dynamic_map().code,
                        cpu::unsigned_dynamic_map().code, m_updated ? m_updated->data() : nullptr,
                        v_updated ? v_updated->data() : nullptr);
}

template <typename T>
std::vector<T> adam8_grad(Rng& rng, size_t n, int step) {
  auto grad = random_vec<T>(rng, n, -2.0 / step, 2.0 / step);
  for (size_t i = 0; i < n; i += 11) grad[i] = from_f32<T>(0.0f);
  return grad;
}

// Lockstep: every step, the reference starts from the kernel's state. master must agree to fp32
// rounding, absmax to fp32 rounding of the moments, and every code exactly or by a straddle.
template <typename T>
void check_adam8_lockstep(size_t n, size_t fb) {
  constexpr int kSteps = 6;
  Rng rng(70);
  Adam8State s = initial_adam8_state(rng, n, fb);
  size_t straddles = 0;
  for (int step = 1; step <= kSteps; ++step) {
    const auto grad = adam8_grad<T>(rng, n, step);
    std::vector<double> master64 = to_double(s.master), ma64 = to_double(s.ma),
                        va64 = to_double(s.va), m_upd(n), v_upd(n);
    std::vector<uint8_t> mc = s.mc, vc = s.vc;
    ref_adam8_step(master64, mc, ma64, vc, va64, to_double(grad), fb, step, &m_upd, &v_upd);
    adam8_step(s, grad, fb, step);
    const std::string at = " step " + std::to_string(step) + " fb " + std::to_string(fb);
    ASSERT_TRUE(all_close("master" + at, s.master, master64, tolerance(Dtype::kF32)));
    ASSERT_TRUE(all_close("m absmax" + at, s.ma, ma64, Tolerance{1e-30, 2e-6}));
    ASSERT_TRUE(all_close("v absmax" + at, s.va, va64, Tolerance{1e-30, 2e-6}));
    ASSERT_TRUE(codes_agree("m codes" + at, s.mc.data(), mc.data(),
                            in_units(m_upd, ma64, fb).data(), n, cpu::signed_dynamic_map().code,
                            &straddles));
    ASSERT_TRUE(codes_agree("v codes" + at, s.vc.data(), vc.data(),
                            in_units(v_upd, va64, fb).data(), n, cpu::unsigned_dynamic_map().code,
                            &straddles));
  }
  EXPECT_LE(straddles, 2 * n * kSteps / 1000 + 1);
}

// Free-running: kernel and reference each keep their own state for the steps. Straddles then
// make a few trajectories differ: bound the share of differing codes and of master weights
// outside fp32 rounding, and the size of any master difference.
template <typename T>
void check_adam8_free_running(size_t n, size_t fb) {
  constexpr int kSteps = 6;
  Rng rng(71);
  Adam8State s = initial_adam8_state(rng, n, fb);
  std::vector<double> master64 = to_double(s.master), ma64 = to_double(s.ma),
                      va64 = to_double(s.va);
  std::vector<uint8_t> mc = s.mc, vc = s.vc;
  for (int step = 1; step <= kSteps; ++step) {
    const auto grad = adam8_grad<T>(rng, n, step);
    ref_adam8_step(master64, mc, ma64, vc, va64, to_double(grad), fb, step, nullptr, nullptr);
    adam8_step(s, grad, fb, step);
  }
  size_t code_diff = 0, master_diff = 0;
  double max_master_diff = 0.0;
  const Tolerance tol = tolerance(Dtype::kF32);
  for (size_t i = 0; i < n; ++i) {
    code_diff += (s.mc[i] != mc[i]) + (s.vc[i] != vc[i]);
    const double d = std::fabs(s.master[i] - master64[i]);
    master_diff += d > tol.atol + tol.rtol * std::fabs(master64[i]);
    max_master_diff = std::max(max_master_diff, d);
  }
  const double allowed = 1e-3 * static_cast<double>(n) + 1;
  EXPECT_LE(static_cast<double>(code_diff), 2 * allowed) << "codes differing after " << kSteps;
  EXPECT_LE(static_cast<double>(master_diff), allowed) << "master weights beyond fp32 rounding";
  // One Adam step moves a weight by at most ~lr / sqrt(1 - beta2)-ish; a diverged moment changes it
  // by far less. A wrong rule (no decay, wrong eps, bias correction) shows up in every element.
  EXPECT_LE(max_master_diff, kSteps * kAdam8Hyper.lr);
}

// Against unquantised AdamW in fp64: the dequantised moments stay within the bound the maps give.
// Each requantisation moves a value by at most half the largest gap times the block's absmax A_t,
// and the error of step t decays by beta^(T-t) after: |m8_T - m_T| <= sum_t b1^(T-t) (h A_t + r_t),
// r_t the fp32 rounding (1e-6 of the magnitudes involved).
template <typename T>
void check_adam8_error_bound(size_t n, size_t fb) {
  constexpr int kSteps = 8;
  const AdamWHyper& h = kAdam8Hyper;
  const auto& sm = cpu::signed_dynamic_map();
  const auto& um = cpu::unsigned_dynamic_map();
  Rng rng(72);
  Adam8State s;
  s.master = random_vec<float>(rng, n, -1, 1);
  const size_t blocks = cpu::quant_block_count(n, fb);
  s.mc.assign(n, zero_code_of(sm));
  s.vc.assign(n, zero_code_of(um));
  s.ma.assign(blocks, 0.0f);
  s.va.assign(blocks, 0.0f);
  std::vector<double> master64 = to_double(s.master), m64(n, 0.0), v64(n, 0.0);
  std::vector<double> bound_m(blocks, 0.0), bound_v(blocks, 0.0);
  std::vector<float> prev_ma = s.ma, prev_va = s.va, mq(n), vq(n);
  const auto starts = block_starts(n, fb);
  for (int step = 1; step <= kSteps; ++step) {
    const auto grad = adam8_grad<T>(rng, n, step);
    const auto grad64 = to_double(grad);
    const float bc1 = 1.0f - std::pow(h.beta1, static_cast<float>(step));
    const float bc2 = 1.0f - std::pow(h.beta2, static_cast<float>(step));
    ref::adamw_update(master64.data(), m64.data(), v64.data(), grad64.data(), n, h.lr, h.beta1,
                      h.beta2, h.eps, h.weight_decay, bc1, bc2, h.grad_scale);
    adam8_step(s, grad, fb, step);
    for (size_t b = 0; b < blocks; ++b) {
      const size_t end = b + 1 < blocks ? starts[b + 1] : n;
      double g_max = 0.0;
      for (size_t i = starts[b]; i < end; ++i) {
        g_max = std::max(g_max, std::fabs(grad64[i] * h.grad_scale));
      }
      bound_m[b] = h.beta1 * bound_m[b] + kSignedMaxGap / 2 * s.ma[b] +
                   1e-6 * (s.ma[b] + prev_ma[b] + (1 - h.beta1) * g_max);
      bound_v[b] = h.beta2 * bound_v[b] + kUnsignedMaxGap / 2 * s.va[b] +
                   1e-6 * (s.va[b] + prev_va[b] + (1 - h.beta2) * g_max * g_max);
    }
    prev_ma = s.ma;
    prev_va = s.va;
    cpu::dequantize_blocks(sm, s.mc.data(), s.ma.data(), n, fb, mq.data());
    cpu::dequantize_blocks(um, s.vc.data(), s.va.data(), n, fb, vq.data());
    for (size_t b = 0; b < blocks; ++b) {
      const size_t end = b + 1 < blocks ? starts[b + 1] : n;
      for (size_t i = starts[b]; i < end; ++i) {
        ASSERT_LE(std::fabs(mq[i] - m64[i]), bound_m[b])
            << "m[" << i << "] step " << step << ": 8-bit " << mq[i] << " vs " << m64[i];
        ASSERT_LE(std::fabs(vq[i] - v64[i]), bound_v[b])
            << "v[" << i << "] step " << step << ": 8-bit " << vq[i] << " vs " << v64[i];
      }
    }
  }
}

using QuantParam = std::tuple<size_t, SimdLevel>;

class QuantLevelTest : public ::testing::TestWithParam<QuantParam> {};

std::string quant_param_name(const ::testing::TestParamInfo<QuantParam>& info) {
  std::string name = "n";  // (not "n" + ...: GCC 12 -Wrestrict false positive)
  name += std::to_string(std::get<0>(info.param));
  name += "_";
  name += cpu::simd_level_name(std::get<1>(info.param));
  return name;
}

TEST_P(QuantLevelTest, QuantizeBlocksMatchReference) {
  const auto& [n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  for (size_t fb : first_blocks_for(n)) check_quantize_blocks(n, fb);
}

TEST_P(QuantLevelTest, RequantisingDequantisedBlocksIsIdempotent) {
  const auto& [n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  for (size_t fb : first_blocks_for(n)) check_requantize_idempotent(n, fb);
}

INSTANTIATE_TEST_SUITE_P(Kernels, QuantLevelTest,
                         ::testing::Combine(::testing::Values(size_t{1}, size_t{15}, size_t{17},
                                                              size_t{255}, size_t{257},
                                                              size_t{4097}, size_t{100003}),
                                            ::testing::ValuesIn(all_levels())),
                         quant_param_name);

TEST_P(OptimizerLevelTest, AdamW8bitMatchesSimulatedQuantisationLockstep) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  for (size_t fb : first_blocks_for(n)) {
    dispatch(dtype, [&]<typename T>() { check_adam8_lockstep<T>(n, fb); });
  }
}

TEST_P(OptimizerLevelTest, AdamW8bitFreeRunningAgainstSimulatedQuantisation) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  for (size_t fb : first_blocks_for(n)) {
    dispatch(dtype, [&]<typename T>() { check_adam8_free_running<T>(n, fb); });
  }
}

TEST_P(OptimizerLevelTest, AdamW8bitStateErrorWithinQuantisationBound) {
  const auto& [dtype, n, level] = GetParam();
  ZT_USE_SIMD_LEVEL_OR_SKIP(level);
  for (size_t fb : first_blocks_for(n)) {
    dispatch(dtype, [&]<typename T>() { check_adam8_error_bound<T>(n, fb); });
  }
}

INSTANTIATE_TEST_SUITE_P(Kernels, OptimizerLevelTest,
                         ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                                            ::testing::Values(size_t{1}, size_t{15}, size_t{17},
                                                              size_t{255}, size_t{257},
                                                              size_t{4097}, size_t{100003}),
                                            ::testing::ValuesIn(all_levels())),
                         level_param_name);

// ---------------------------------------------------------------------------------------------
// Same bits across SIMD levels and thread counts
// ---------------------------------------------------------------------------------------------

// Runs every kernel once on fixed inputs and concatenates all outputs' bytes.
template <typename T>
std::vector<uint8_t> run_all_kernels(size_t n) {
  Rng rng(73);
  const auto grad = random_vec<T>(rng, n, -1, 1);
  const auto master0 = random_vec<float>(rng, n, -1, 1);
  const auto m0 = random_vec<float>(rng, n, -0.1, 0.1);
  const auto v0 = random_vec<float>(rng, n, 0, 0.01);
  std::vector<uint8_t> out;
  auto append = [&out](const void* p, size_t bytes) {
    const auto* b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + bytes);
  };
  const AdamWHyper h;
  {
    auto p = master0, m = m0, v = v0;
    cpu::adamw_update(p.data(), m.data(), v.data(), grad.data(), n, h.lr, h.beta1, h.beta2, h.eps,
                      h.weight_decay, 0.5f, 0.3f, h.grad_scale);
    append(p.data(), 4 * n);
    append(m.data(), 4 * n);
    append(v.data(), 4 * n);
  }
  for (const SgdCase& sc : kSgdCases) {
    for (bool first : {true, false}) {
      auto p = master0, buf = m0;
      cpu::sgd_update(p.data(), buf.data(), grad.data(), n, 0.05f, sc.momentum, sc.dampening,
                      sc.weight_decay, sc.nesterov, first, 0.5f);
      append(p.data(), 4 * n);
      append(buf.data(), 4 * n);
    }
  }
  {
    auto p = master0, m = m0;
    cpu::lion_update(p.data(), m.data(), grad.data(), n, 1e-3f, 0.9f, 0.99f, 0.1f, 0.75f);
    append(p.data(), 4 * n);
    append(m.data(), 4 * n);
  }
  for (size_t fb : {size_t{256}, size_t{1}, size_t{77}}) {
    const size_t blocks = cpu::quant_block_count(n, fb);
    Adam8State s;
    s.master = master0;
    s.mc.resize(n);
    s.vc.resize(n);
    s.ma.resize(blocks);
    s.va.resize(blocks);
    cpu::quantize_blocks(cpu::signed_dynamic_map(), m0.data(), n, fb, s.mc.data(), s.ma.data());
    cpu::quantize_blocks(cpu::unsigned_dynamic_map(), v0.data(), n, fb, s.vc.data(), s.va.data());
    adam8_step(s, grad, fb, 3);
    std::vector<float> deq(n);
    cpu::dequantize_blocks(cpu::signed_dynamic_map(), s.mc.data(), s.ma.data(), n, fb, deq.data());
    append(s.master.data(), 4 * n);
    append(s.mc.data(), n);
    append(s.vc.data(), n);
    append(s.ma.data(), 4 * blocks);
    append(s.va.data(), 4 * blocks);
    append(deq.data(), 4 * n);
  }
  const double ss = cpu::sum_squares(grad.data(), n);
  append(&ss, sizeof ss);
  const size_t bad = cpu::count_nonfinite(grad.data(), n);
  append(&bad, sizeof bad);
  return out;
}

std::string first_byte_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return "sizes differ";
  const auto it = std::mismatch(a.begin(), a.end(), b.begin());
  return "first differing byte at offset " + std::to_string(it.first - a.begin()) + " of " +
         std::to_string(a.size());
}

// Sizes from one element to several chunks and threads (100003 > kMinParallel: OpenMP splits it).
class OptimizerBitsTest : public ::testing::TestWithParam<OptimizerParam> {};

TEST_P(OptimizerBitsTest, AllKernelsGiveIdenticalBitsAtEverySimdLevel) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() {
    std::vector<uint8_t> scalar;
    {
      ScopedSimdLevel scope(SimdLevel::kScalar);
      scalar = run_all_kernels<T>(n);
    }
    for (SimdLevel level : all_levels()) {
      if (level == SimdLevel::kScalar || !cpu::simd_level_supported(level)) continue;
      ScopedSimdLevel scope(level);
      const auto got = run_all_kernels<T>(n);
      EXPECT_TRUE(got == scalar) << cpu::simd_level_name(level)
                                 << " vs scalar: " << first_byte_difference(got, scalar);
    }
  });
}

TEST_P(OptimizerBitsTest, AllKernelsBitwiseDeterministicAcrossThreadCounts) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() {
    std::vector<std::vector<uint8_t>> runs;
    for (int threads : determinism_thread_counts()) {
      ScopedOmpThreads scope(threads);
      runs.push_back(run_all_kernels<T>(n));
    }
    for (size_t r = 1; r < runs.size(); ++r) {
      EXPECT_TRUE(runs[r] == runs[0])
          << determinism_thread_counts()[r]
          << " threads vs 1: " << first_byte_difference(runs[r], runs[0]);
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Kernels, OptimizerBitsTest,
                         ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                                            ::testing::Values(size_t{1}, size_t{17}, size_t{257},
                                                              size_t{4097}, size_t{100003})),
                         optimizer_param_name);

}  // namespace
}  // namespace zt::kernels::testing
