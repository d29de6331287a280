// Optimizer kernels: AdamW against an fp64 loop of PyTorch's formula over several steps,
// sum_squares and count_nonfinite against fp64 references, and determinism across thread counts.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>

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

}  // namespace
}  // namespace zt::kernels::testing
