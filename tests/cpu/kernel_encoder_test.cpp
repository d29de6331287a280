// Encoder (token + position embedding): the fp64 reference against finite differences, the fast
// CPU kernel against the reference over dtype x shape, += semantics and determinism.
#include <gtest/gtest.h>

#include <tuple>

#include "kernels/encoder.h"
#include "kernels/reference/encoder.h"
#include "tests/cpu/kernel_test_util.h"

namespace zt::kernels::testing {
namespace {

TEST(EncoderReference, BackwardMatchesFiniteDifferences) {
  const int B = 2, T = 3, C = 4, V = 3, max_t = 5;
  Rng rng(1);
  const std::vector<int32_t> tokens = random_ints(rng, B * T, 0, V);  // 6 positions, 3 tokens
  std::vector<double> wte(V * C), wpe(max_t * C), w(B * T * C);
  for (auto& x : wte) x = rng.uniform(-1, 1);
  for (auto& x : wpe) x = rng.uniform(-1, 1);
  for (auto& x : w) x = rng.uniform(-1, 1);
  std::vector<double> out(B * T * C);
  auto loss = [&] {
    ref::encoder_fwd(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, w);
  };
  std::vector<double> dwte(V * C, 0.0), dwpe(max_t * C, 0.0);
  ref::encoder_bwd(dwte.data(), dwpe.data(), w.data(), tokens.data(), B, T, C);
  EXPECT_TRUE(all_close("dwte", dwte, numeric_grad(loss, wte), finite_difference_tolerance()));
  EXPECT_TRUE(all_close("dwpe", dwpe, numeric_grad(loss, wpe), finite_difference_tolerance()));
}

TEST(EncoderReference, BackwardAccumulates) {
  const int B = 2, T = 3, C = 2, V = 4;
  Rng rng(2);
  const std::vector<int32_t> tokens = random_ints(rng, B * T, 0, V);
  std::vector<double> dout(B * T * C);
  for (auto& x : dout) x = rng.uniform(-1, 1);
  std::vector<double> dwte0(V * C, 0.0), dwpe0(T * C, 0.0);
  ref::encoder_bwd(dwte0.data(), dwpe0.data(), dout.data(), tokens.data(), B, T, C);
  std::vector<double> dwte(V * C), dwpe(T * C);
  for (auto& x : dwte) x = rng.uniform(-1, 1);
  for (auto& x : dwpe) x = rng.uniform(-1, 1);
  std::vector<double> want_dwte = dwte, want_dwpe = dwpe;
  for (size_t i = 0; i < dwte.size(); ++i) want_dwte[i] += dwte0[i];
  for (size_t i = 0; i < dwpe.size(); ++i) want_dwpe[i] += dwpe0[i];
  ref::encoder_bwd(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
  EXPECT_TRUE(all_close("dwte", dwte, want_dwte, {1e-15, 1e-15}));
  EXPECT_TRUE(all_close("dwpe", dwpe, want_dwpe, {1e-15, 1e-15}));
}

struct EncoderShape {
  int B, T, C, V;
};
void PrintTo(const EncoderShape& s, std::ostream* os) {
  *os << "B=" << s.B << " T=" << s.T << " C=" << s.C << " V=" << s.V;
}

using EncoderParam = std::tuple<Dtype, EncoderShape>;

// wpe gets T + 2 rows in these tests: rows T.. must stay untouched by the backward.
class EncoderTest : public ::testing::TestWithParam<EncoderParam> {};

std::string encoder_param_name(const ::testing::TestParamInfo<EncoderParam>& info) {
  const auto& [dtype, s] = info.param;
  return std::string(dtype_name(dtype)) + "_B" + std::to_string(s.B) + "_T" + std::to_string(s.T) +
         "_C" + std::to_string(s.C) + "_V" + std::to_string(s.V);
}

template <typename T>
void check_forward(const EncoderShape& s) {
  const size_t bt = static_cast<size_t>(s.B) * s.T;
  Rng rng(10);
  const auto tokens = random_ints(rng, bt, 0, s.V);
  const auto wte = random_vec<T>(rng, static_cast<size_t>(s.V) * s.C, -1, 1);
  const auto wpe = random_vec<T>(rng, static_cast<size_t>(s.T + 2) * s.C, -1, 1);
  auto out = random_vec<T>(rng, bt * s.C, -5, 5);  // garbage: the kernel overwrites (=)
  cpu::encoder_fwd(out.data(), tokens.data(), wte.data(), wpe.data(), s.B, s.T, s.C);
  std::vector<double> want(bt * s.C);
  ref::encoder_fwd(want.data(), tokens.data(), to_double(wte).data(), to_double(wpe).data(), s.B,
                   s.T, s.C);
  EXPECT_TRUE(all_close("out", out, want, tolerance_for<T>(), 1.0, s.C));
}

template <typename T>
struct EncoderBwdRun {
  std::vector<T> dwte, dwpe;
};

template <typename T>
EncoderBwdRun<T> run_backward(const EncoderShape& s, const std::vector<int32_t>& tokens,
                              const std::vector<T>& dout, std::vector<T> dwte,
                              std::vector<T> dwpe) {
  GuardedScratch scratch(cpu::encoder_bwd_scratch_bytes(s.B, s.T, s.C, s.V));
  cpu::encoder_bwd(dwte.data(), dwpe.data(), dout.data(), tokens.data(), s.B, s.T, s.C, s.V,
                   scratch.get());
  EXPECT_TRUE(scratch.guard_intact()) << "encoder_bwd wrote past its scratch";
  return {std::move(dwte), std::move(dwpe)};
}

template <typename T>
void check_backward(const EncoderShape& s) {
  const size_t bt = static_cast<size_t>(s.B) * s.T;
  Rng rng(11);
  const auto tokens = random_ints(rng, bt, 0, s.V);
  const auto dout = random_vec<T>(rng, bt * s.C, -1, 1);
  // Non-zero starting gradients: the kernel must accumulate (+=).
  const auto dwte0 = random_vec<T>(rng, static_cast<size_t>(s.V) * s.C, -1, 1);
  const auto dwpe0 = random_vec<T>(rng, static_cast<size_t>(s.T + 2) * s.C, -1, 1);
  const auto got = run_backward(s, tokens, dout, dwte0, dwpe0);

  std::vector<double> want_dwte = to_double(dwte0), want_dwpe = to_double(dwpe0);
  ref::encoder_bwd(want_dwte.data(), want_dwpe.data(), to_double(dout).data(), tokens.data(), s.B,
                   s.T, s.C);
  // dwte/dwpe are sums of up to B*T terms: judge absolute error against their size.
  EXPECT_TRUE(all_close("dwte", got.dwte, want_dwte, tolerance_for<T>(), max_abs(want_dwte), s.C));
  EXPECT_TRUE(all_close("dwpe", got.dwpe, want_dwpe, tolerance_for<T>(), max_abs(want_dwpe), s.C));
}

template <typename T>
void check_backward_deterministic(const EncoderShape& s) {
  const size_t bt = static_cast<size_t>(s.B) * s.T;
  Rng rng(12);
  const auto tokens = random_ints(rng, bt, 0, s.V);
  const auto dout = random_vec<T>(rng, bt * s.C, -1, 1);
  const auto dwte0 = random_vec<T>(rng, static_cast<size_t>(s.V) * s.C, -1, 1);
  const auto dwpe0 = random_vec<T>(rng, static_cast<size_t>(s.T + 2) * s.C, -1, 1);
  std::vector<EncoderBwdRun<T>> runs;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    runs.push_back(run_backward(s, tokens, dout, dwte0, dwpe0));
    runs.push_back(run_backward(s, tokens, dout, dwte0, dwpe0));
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_TRUE(bitwise_equal("dwte run " + std::to_string(r), runs[0].dwte, runs[r].dwte));
    EXPECT_TRUE(bitwise_equal("dwpe run " + std::to_string(r), runs[0].dwpe, runs[r].dwpe));
  }
}

TEST_P(EncoderTest, ForwardMatchesReference) {
  const auto& [dtype, shape] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_forward<T>(shape); });
}

TEST_P(EncoderTest, BackwardAccumulatesAndMatchesReference) {
  const auto& [dtype, shape] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_backward<T>(shape); });
}

TEST_P(EncoderTest, BackwardIsBitwiseDeterministicAcrossThreadCounts) {
  const auto& [dtype, shape] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_backward_deterministic<T>(shape); });
}

// Small vocabularies force many repeated tokens; C = 130 spans three column blocks; the larger
// shapes cross the threshold where the kernels go parallel.
INSTANTIATE_TEST_SUITE_P(
    Kernels, EncoderTest,
    ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                       ::testing::Values(EncoderShape{1, 1, 1, 1}, EncoderShape{2, 7, 33, 5},
                                         EncoderShape{3, 33, 7, 50}, EncoderShape{1, 4097, 3, 11},
                                         EncoderShape{2, 4097, 9, 97},
                                         EncoderShape{4, 64, 130, 1000})),
    encoder_param_name);

}  // namespace
}  // namespace zt::kernels::testing
