// Elementwise kernels, GELU and the residual adds: the fp64 references against finite
// differences, the fast CPU kernels against the references over dtype x size, overwrite (=) /
// accumulate (+=) semantics, aliasing and determinism.
#include <gtest/gtest.h>

#include <tuple>

#include "kernels/gelu.h"
#include "kernels/reference/gelu.h"
#include "kernels/reference/residual.h"
#include "kernels/residual.h"
#include "tests/cpu/kernel_test_util.h"

namespace zt::kernels::testing {
namespace {

TEST(GeluReference, BackwardMatchesFiniteDifferences) {
  const size_t n = 41;
  Rng rng(1);
  std::vector<double> inp(n), w(n), out(n);
  for (auto& x : inp) x = rng.uniform(-5, 5);
  for (auto& x : w) x = rng.uniform(-1, 1);
  auto loss = [&] {
    ref::gelu_fwd(out.data(), inp.data(), n);
    return dot(out, w);
  };
  std::vector<double> dinp(n, 7.0);  // overwritten (=)
  ref::gelu_bwd(dinp.data(), inp.data(), w.data(), n);
  EXPECT_TRUE(all_close("dinp", dinp, numeric_grad(loss, inp), finite_difference_tolerance()));
}

TEST(GeluReference, KnownValues) {
  // Independent of the formula's implementation: gelu(0) = 0, gelu(x) -> x for large x,
  // gelu(x) -> 0 for very negative x, and the published tanh-GELU value at x = 1.
  const std::vector<double> inp = {0.0, 20.0, -20.0, 1.0};
  std::vector<double> out(inp.size());
  ref::gelu_fwd(out.data(), inp.data(), inp.size());
  EXPECT_EQ(out[0], 0.0);
  EXPECT_NEAR(out[1], 20.0, 1e-12);
  EXPECT_NEAR(out[2], 0.0, 1e-12);
  EXPECT_NEAR(out[3], 0.8411919906082768, 1e-12);
}

TEST(ResidualReference, AddInplaceIsTheBackwardOfResidual) {
  // out = a + b, L = <out, w>: dL/da = dL/db = w, which add_inplace accumulates into zeros.
  const size_t n = 9;
  Rng rng(2);
  std::vector<double> a(n), b(n), w(n), out(n);
  for (auto& x : a) x = rng.uniform(-1, 1);
  for (auto& x : b) x = rng.uniform(-1, 1);
  for (auto& x : w) x = rng.uniform(-1, 1);
  auto loss = [&] {
    ref::residual_fwd(out.data(), a.data(), b.data(), n);
    return dot(out, w);
  };
  std::vector<double> da(n, 0.0), db(n, 0.0);
  ref::add_inplace(da.data(), w.data(), n);
  ref::add_inplace(db.data(), w.data(), n);
  EXPECT_TRUE(all_close("da", da, numeric_grad(loss, a), finite_difference_tolerance()));
  EXPECT_TRUE(all_close("db", db, numeric_grad(loss, b), finite_difference_tolerance()));
}

using ElementwiseParam = std::tuple<Dtype, size_t>;

class ElementwiseTest : public ::testing::TestWithParam<ElementwiseParam> {};

std::string elementwise_param_name(const ::testing::TestParamInfo<ElementwiseParam>& info) {
  return std::string(dtype_name(std::get<0>(info.param))) + "_n" +
         std::to_string(std::get<1>(info.param));
}

template <typename T>
void check_gelu_forward(size_t n) {
  Rng rng(40);
  const auto inp = random_vec<T>(rng, n, -6, 6);
  auto out = random_vec<T>(rng, n, -9, 9);  // overwritten (=)
  cpu::gelu_fwd(out.data(), inp.data(), n);
  std::vector<double> want(n);
  ref::gelu_fwd(want.data(), to_double(inp).data(), n);
  EXPECT_TRUE(all_close("out", out, want, tolerance_for<T>()));
}

template <typename T>
void check_gelu_backward(size_t n) {
  Rng rng(41);
  const auto inp = random_vec<T>(rng, n, -6, 6);
  const auto dout = random_vec<T>(rng, n, -1, 1);
  std::vector<double> want(n);
  ref::gelu_bwd(want.data(), to_double(inp).data(), to_double(dout).data(), n);

  auto dinp = random_vec<T>(rng, n, -9, 9);  // overwritten (=)
  cpu::gelu_bwd(dinp.data(), inp.data(), dout.data(), n);
  EXPECT_TRUE(all_close("dinp", dinp, want, tolerance_for<T>()));

  auto aliased = dout;  // dinp may alias dout
  cpu::gelu_bwd(aliased.data(), inp.data(), aliased.data(), n);
  EXPECT_TRUE(bitwise_equal("dinp aliasing dout", aliased, dinp));
}

template <typename T>
void check_residual(size_t n) {
  Rng rng(42);
  const auto a = random_vec<T>(rng, n, -2, 2);
  const auto b = random_vec<T>(rng, n, -2, 2);
  std::vector<double> want(n);
  ref::residual_fwd(want.data(), to_double(a).data(), to_double(b).data(), n);

  auto out = random_vec<T>(rng, n, -9, 9);  // overwritten (=)
  cpu::residual_fwd(out.data(), a.data(), b.data(), n);
  EXPECT_TRUE(all_close("out", out, want, tolerance_for<T>()));

  auto out_a = a;  // out may alias a
  cpu::residual_fwd(out_a.data(), out_a.data(), b.data(), n);
  EXPECT_TRUE(bitwise_equal("out aliasing a", out_a, out));
  auto out_b = b;  // or b
  cpu::residual_fwd(out_b.data(), a.data(), out_b.data(), n);
  EXPECT_TRUE(bitwise_equal("out aliasing b", out_b, out));
}

template <typename T>
void check_add_inplace(size_t n) {
  Rng rng(43);
  auto dst = random_vec<T>(rng, n, -2, 2);  // accumulated into (+=)
  const auto src = random_vec<T>(rng, n, -2, 2);
  std::vector<double> want = to_double(dst);
  ref::add_inplace(want.data(), to_double(src).data(), n);
  cpu::add_inplace(dst.data(), src.data(), n);
  EXPECT_TRUE(all_close("dst", dst, want, tolerance_for<T>()));
}

template <typename T>
void check_deterministic(size_t n) {
  Rng rng(44);
  const auto inp = random_vec<T>(rng, n, -6, 6);
  const auto dout = random_vec<T>(rng, n, -1, 1);
  std::vector<std::vector<T>> fwd, bwd;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    std::vector<T> out(n), dinp(n);
    cpu::gelu_fwd(out.data(), inp.data(), n);
    cpu::gelu_bwd(dinp.data(), inp.data(), dout.data(), n);
    fwd.push_back(out);
    bwd.push_back(dinp);
  }
  for (size_t r = 1; r < fwd.size(); ++r) {
    EXPECT_TRUE(bitwise_equal("gelu out run " + std::to_string(r), fwd[0], fwd[r]));
    EXPECT_TRUE(bitwise_equal("gelu dinp run " + std::to_string(r), bwd[0], bwd[r]));
  }
}

TEST_P(ElementwiseTest, GeluForwardMatchesReference) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_gelu_forward<T>(n); });
}

TEST_P(ElementwiseTest, GeluBackwardMatchesReferenceAndAllowsAliasing) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_gelu_backward<T>(n); });
}

TEST_P(ElementwiseTest, ResidualForwardMatchesReferenceAndAllowsAliasing) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_residual<T>(n); });
}

TEST_P(ElementwiseTest, AddInplaceAccumulates) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_add_inplace<T>(n); });
}

TEST_P(ElementwiseTest, GeluBitwiseDeterministicAcrossThreadCounts) {
  const auto& [dtype, n] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_deterministic<T>(n); });
}

// 100003 crosses the size where the kernels go parallel and leaves a vector remainder.
INSTANTIATE_TEST_SUITE_P(Kernels, ElementwiseTest,
                         ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                                            ::testing::Values(size_t{1}, size_t{7}, size_t{33},
                                                              size_t{4097}, size_t{100003})),
                         elementwise_param_name);

}  // namespace
}  // namespace zt::kernels::testing
