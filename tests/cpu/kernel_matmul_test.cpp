// Matmul (linear layer): the fp64 reference against finite differences, the fast CPU kernel
// (OpenBLAS, 16-bit staging) against the reference over dtype x shape x optional outputs,
// = / += semantics, scratch bounds and determinism across thread counts.
#include <gtest/gtest.h>

#include <tuple>

#include "kernels/matmul.h"
#include "kernels/reference/matmul.h"
#include "tests/cpu/kernel_test_util.h"

namespace zt::kernels::testing {
namespace {

TEST(MatmulReference, BackwardMatchesFiniteDifferences) {
  const int N = 3, C = 4, OC = 5;
  Rng rng(1);
  std::vector<double> inp(N * C), weight(OC * C), bias(OC), w(N * OC);
  for (auto& x : inp) x = rng.uniform(-1, 1);
  for (auto& x : weight) x = rng.uniform(-1, 1);
  for (auto& x : bias) x = rng.uniform(-1, 1);
  for (auto& x : w) x = rng.uniform(-1, 1);
  std::vector<double> out(N * OC);
  auto loss = [&] {
    ref::matmul_fwd(out.data(), inp.data(), weight.data(), bias.data(), N, C, OC);
    return dot(out, w);
  };
  std::vector<double> dinp(N * C, 0.0), dweight(OC * C, 0.0), dbias(OC, 0.0);
  ref::matmul_bwd(dinp.data(), dweight.data(), dbias.data(), w.data(), inp.data(), weight.data(), N,
                  C, OC);
  const Tolerance tol = finite_difference_tolerance();
  EXPECT_TRUE(all_close("dinp", dinp, numeric_grad(loss, inp), tol, 1.0, C));
  EXPECT_TRUE(all_close("dweight", dweight, numeric_grad(loss, weight), tol, 1.0, C));
  EXPECT_TRUE(all_close("dbias", dbias, numeric_grad(loss, bias), tol));
}

TEST(MatmulReference, BackwardSemantics) {
  // dinp is overwritten (=), dweight and dbias accumulate (+=).
  const int N = 2, C = 3, OC = 2;
  Rng rng(2);
  std::vector<double> inp(N * C), weight(OC * C), dout(N * OC);
  for (auto& x : inp) x = rng.uniform(-1, 1);
  for (auto& x : weight) x = rng.uniform(-1, 1);
  for (auto& x : dout) x = rng.uniform(-1, 1);
  std::vector<double> dinp0(N * C, 0.0), dweight0(OC * C, 0.0), dbias0(OC, 0.0);
  ref::matmul_bwd(dinp0.data(), dweight0.data(), dbias0.data(), dout.data(), inp.data(),
                  weight.data(), N, C, OC);
  std::vector<double> dinp(N * C, 9.0), dweight(OC * C), dbias(OC);
  for (auto& x : dweight) x = rng.uniform(-1, 1);
  for (auto& x : dbias) x = rng.uniform(-1, 1);
  std::vector<double> want_dweight = dweight, want_dbias = dbias;
  for (size_t i = 0; i < dweight.size(); ++i) want_dweight[i] += dweight0[i];
  for (int o = 0; o < OC; ++o) want_dbias[o] += dbias0[o];
  ref::matmul_bwd(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(),
                  N, C, OC);
  EXPECT_TRUE(all_close("dinp", dinp, dinp0, {0.0, 0.0}));
  EXPECT_TRUE(all_close("dweight", dweight, want_dweight, {1e-15, 1e-14}));
  EXPECT_TRUE(all_close("dbias", dbias, want_dbias, {1e-15, 1e-14}));
}

struct MatmulShape {
  int N, C, OC;
};

// Which optional pointers are passed: kFull all; kNoBias bias and dbias null; kNoDinp dinp null.
enum class MatmulVariant { kFull, kNoBias, kNoDinp };

void PrintTo(const MatmulShape& s, std::ostream* os) {
  *os << "N=" << s.N << " C=" << s.C << " OC=" << s.OC;
}
const char* variant_name(MatmulVariant v) {
  return v == MatmulVariant::kFull ? "full" : v == MatmulVariant::kNoBias ? "nobias" : "nodinp";
}
void PrintTo(MatmulVariant v, std::ostream* os) { *os << variant_name(v); }

using MatmulParam = std::tuple<Dtype, MatmulShape, MatmulVariant>;

class MatmulTest : public ::testing::TestWithParam<MatmulParam> {};

std::string matmul_param_name(const ::testing::TestParamInfo<MatmulParam>& info) {
  const auto& [dtype, s, variant] = info.param;
  return std::string(dtype_name(dtype)) + "_N" + std::to_string(s.N) + "_C" + std::to_string(s.C) +
         "_OC" + std::to_string(s.OC) + "_" + variant_name(variant);
}

template <typename T>
struct MatmulData {
  std::vector<T> inp, weight, bias, dout;
  MatmulData(const MatmulShape& s, uint64_t seed) {
    Rng rng(seed);
    // nn.Linear-like scale keeps outputs O(1).
    const double wscale = 1.0 / std::sqrt(static_cast<double>(s.C));
    inp = random_vec<T>(rng, static_cast<size_t>(s.N) * s.C, -1, 1);
    weight = random_vec<T>(rng, static_cast<size_t>(s.OC) * s.C, -wscale, wscale);
    bias = random_vec<T>(rng, s.OC, -1, 1);
    dout = random_vec<T>(rng, static_cast<size_t>(s.N) * s.OC, -1, 1);
  }
};

template <typename T>
std::vector<T> run_forward(const MatmulShape& s, const MatmulData<T>& d, bool with_bias) {
  Rng rng(98);
  auto out = random_vec<T>(rng, static_cast<size_t>(s.N) * s.OC, -5, 5);  // overwritten (=)
  GuardedScratch scratch(
      cpu::matmul_fwd_scratch_bytes(s.N, s.C, s.OC, dtype_of<T>() == Dtype::kF32));
  cpu::matmul_fwd(out.data(), d.inp.data(), d.weight.data(), with_bias ? d.bias.data() : nullptr,
                  s.N, s.C, s.OC, scratch.get());
  EXPECT_TRUE(scratch.guard_intact()) << "matmul_fwd wrote past its scratch";
  return out;
}

template <typename T>
struct MatmulGrads {
  std::vector<T> dinp, dweight, dbias;
};

template <typename T>
MatmulGrads<T> initial_grads(const MatmulShape& s) {
  Rng rng(97);
  // dinp garbage (overwritten), dweight/dbias non-zero (accumulated).
  return {random_vec<T>(rng, static_cast<size_t>(s.N) * s.C, -5, 5),
          random_vec<T>(rng, static_cast<size_t>(s.OC) * s.C, -1, 1),
          random_vec<T>(rng, s.OC, -1, 1)};
}

template <typename T>
MatmulGrads<T> run_backward(const MatmulShape& s, const MatmulData<T>& d, MatmulVariant variant,
                            MatmulGrads<T> g) {
  GuardedScratch scratch(
      cpu::matmul_bwd_scratch_bytes(s.N, s.C, s.OC, dtype_of<T>() == Dtype::kF32));
  cpu::matmul_bwd(variant == MatmulVariant::kNoDinp ? nullptr : g.dinp.data(), g.dweight.data(),
                  variant == MatmulVariant::kNoBias ? nullptr : g.dbias.data(), d.dout.data(),
                  d.inp.data(), d.weight.data(), s.N, s.C, s.OC, scratch.get());
  EXPECT_TRUE(scratch.guard_intact()) << "matmul_bwd wrote past its scratch";
  return g;
}

template <typename T>
void check_forward(const MatmulShape& s, MatmulVariant variant) {
  const MatmulData<T> d(s, 30);
  const bool with_bias = variant != MatmulVariant::kNoBias;
  const auto got = run_forward(s, d, with_bias);
  std::vector<double> want(static_cast<size_t>(s.N) * s.OC);
  ref::matmul_fwd(want.data(), to_double(d.inp).data(), to_double(d.weight).data(),
                  with_bias ? to_double(d.bias).data() : nullptr, s.N, s.C, s.OC);
  // Each output is a sum of C products: judge absolute error against the output's size.
  EXPECT_TRUE(all_close("out", got, want, tolerance_for<T>(), max_abs(want), s.OC));
}

template <typename T>
void check_backward(const MatmulShape& s, MatmulVariant variant) {
  const MatmulData<T> d(s, 31);
  const auto g0 = initial_grads<T>(s);
  const auto got = run_backward(s, d, variant, g0);

  std::vector<double> dinp(g0.dinp.size(), 0.0), dweight = to_double(g0.dweight),
                                                 dbias = to_double(g0.dbias);
  ref::matmul_bwd(variant == MatmulVariant::kNoDinp ? nullptr : dinp.data(), dweight.data(),
                  variant == MatmulVariant::kNoBias ? nullptr : dbias.data(),
                  to_double(d.dout).data(), to_double(d.inp).data(), to_double(d.weight).data(),
                  s.N, s.C, s.OC);
  const Tolerance tol = tolerance_for<T>();
  if (variant == MatmulVariant::kNoDinp) {
    EXPECT_TRUE(bitwise_equal("dinp (null: untouched)", got.dinp, g0.dinp));
  } else {
    EXPECT_TRUE(all_close("dinp", got.dinp, dinp, tol, max_abs(dinp), s.C));
  }
  EXPECT_TRUE(all_close("dweight", got.dweight, dweight, tol, max_abs(dweight), s.C));
  if (variant == MatmulVariant::kNoBias) {
    EXPECT_TRUE(bitwise_equal("dbias (null: untouched)", got.dbias, g0.dbias));
  } else {
    EXPECT_TRUE(all_close("dbias", got.dbias, dbias, tol, max_abs(dbias)));
  }
}

// GEMM outputs are bitwise reproducible at a fixed thread count only (Note [GEMM
// reproducibility] in kernels/cpu/matmul.cpp); dbias must not depend on the thread count at all.
template <typename T>
void check_deterministic(const MatmulShape& s, MatmulVariant variant) {
  const MatmulData<T> d(s, 32);
  const auto g0 = initial_grads<T>(s);
  std::vector<MatmulGrads<T>> across_threads;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    const std::string tag = " (" + std::to_string(threads) + " threads, run 2 vs 1)";
    const auto out1 = run_forward(s, d, variant != MatmulVariant::kNoBias);
    const auto out2 = run_forward(s, d, variant != MatmulVariant::kNoBias);
    EXPECT_TRUE(bitwise_equal("out" + tag, out1, out2));
    const auto g1 = run_backward(s, d, variant, g0);
    const auto g2 = run_backward(s, d, variant, g0);
    EXPECT_TRUE(bitwise_equal("dinp" + tag, g1.dinp, g2.dinp));
    EXPECT_TRUE(bitwise_equal("dweight" + tag, g1.dweight, g2.dweight));
    EXPECT_TRUE(bitwise_equal("dbias" + tag, g1.dbias, g2.dbias));
    across_threads.push_back(g1);
  }
  for (size_t r = 1; r < across_threads.size(); ++r) {
    EXPECT_TRUE(bitwise_equal("dbias across thread counts, run " + std::to_string(r),
                              across_threads[0].dbias, across_threads[r].dbias));
  }
}

TEST_P(MatmulTest, ForwardMatchesReference) {
  const auto& [dtype, shape, variant] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_forward<T>(shape, variant); });
}

TEST_P(MatmulTest, BackwardSemanticsAndMatchesReference) {
  const auto& [dtype, shape, variant] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_backward<T>(shape, variant); });
}

TEST_P(MatmulTest, BitwiseReproducible) {
  const auto& [dtype, shape, variant] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_deterministic<T>(shape, variant); });
}

// {2049, 3, 4097} is wide enough (N * (C + OC) > 8M floats) to split the 16-bit path into two
// staging blocks, the second partial; OC = 65, 130 and 4097 span several column blocks of the
// dbias reduction.
INSTANTIATE_TEST_SUITE_P(
    Kernels, MatmulTest,
    ::testing::Combine(
        ::testing::ValuesIn(all_dtypes()),
        ::testing::Values(MatmulShape{1, 1, 1}, MatmulShape{7, 33, 65}, MatmulShape{33, 7, 1},
                          MatmulShape{1025, 33, 7}, MatmulShape{4097, 37, 65},
                          MatmulShape{64, 96, 130}, MatmulShape{2049, 3, 4097}),
        ::testing::Values(MatmulVariant::kFull, MatmulVariant::kNoBias, MatmulVariant::kNoDinp)),
    matmul_param_name);

}  // namespace
}  // namespace zt::kernels::testing
