// LayerNorm: the fp64 reference against finite differences, the fast CPU kernel against the
// reference over dtype x shape, = / += semantics and determinism across thread counts.
#include <gtest/gtest.h>

#include <tuple>

#include "kernels/layernorm.h"
#include "kernels/reference/layernorm.h"
#include "tests/cpu/kernel_test_util.h"

namespace zt::kernels::testing {
namespace {

constexpr double kEps = 1e-5;

TEST(LayerNormReference, BackwardMatchesFiniteDifferences) {
  const int N = 3, C = 5;
  Rng rng(1);
  std::vector<double> inp(N * C), weight(C), bias(C), w(N * C);
  for (auto& x : inp) x = rng.uniform(-2, 2);
  for (auto& x : weight) x = rng.uniform(0.5, 1.5);
  for (auto& x : bias) x = rng.uniform(-1, 1);
  for (auto& x : w) x = rng.uniform(-1, 1);
  std::vector<double> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    ref::layernorm_fwd(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                       N, C, kEps);
    return dot(out, w);
  };
  loss();  // mean/rstd of the unperturbed input
  const std::vector<double> mean0 = mean, rstd0 = rstd;
  std::vector<double> dinp(N * C, 0.0), dweight(C, 0.0), dbias(C, 0.0);
  ref::layernorm_bwd(dinp.data(), dweight.data(), dbias.data(), w.data(), inp.data(), weight.data(),
                     mean0.data(), rstd0.data(), N, C);
  const Tolerance tol = finite_difference_tolerance();
  EXPECT_TRUE(all_close("dinp", dinp, numeric_grad(loss, inp), tol, 1.0, C));
  EXPECT_TRUE(all_close("dweight", dweight, numeric_grad(loss, weight), tol));
  EXPECT_TRUE(all_close("dbias", dbias, numeric_grad(loss, bias), tol));
}

TEST(LayerNormReference, BackwardAccumulates) {
  const int N = 2, C = 3;
  Rng rng(2);
  std::vector<double> inp(N * C), weight(C), dout(N * C), mean(N), rstd(N), bias(C, 0.0);
  for (auto& x : inp) x = rng.uniform(-2, 2);
  for (auto& x : weight) x = rng.uniform(0.5, 1.5);
  for (auto& x : dout) x = rng.uniform(-1, 1);
  std::vector<double> out(N * C);
  ref::layernorm_fwd(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(),
                     N, C, kEps);
  std::vector<double> dinp0(N * C, 0.0), dweight0(C, 0.0), dbias0(C, 0.0);
  ref::layernorm_bwd(dinp0.data(), dweight0.data(), dbias0.data(), dout.data(), inp.data(),
                     weight.data(), mean.data(), rstd.data(), N, C);
  std::vector<double> dinp(N * C), dweight(C), dbias(C);
  for (auto& x : dinp) x = rng.uniform(-1, 1);
  for (auto& x : dweight) x = rng.uniform(-1, 1);
  for (auto& x : dbias) x = rng.uniform(-1, 1);
  std::vector<double> want_dinp = dinp, want_dweight = dweight, want_dbias = dbias;
  for (size_t i = 0; i < dinp.size(); ++i) want_dinp[i] += dinp0[i];
  for (int c = 0; c < C; ++c) want_dweight[c] += dweight0[c];
  for (int c = 0; c < C; ++c) want_dbias[c] += dbias0[c];
  ref::layernorm_bwd(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                     weight.data(), mean.data(), rstd.data(), N, C);
  EXPECT_TRUE(all_close("dinp", dinp, want_dinp, {1e-15, 1e-14}));
  EXPECT_TRUE(all_close("dweight", dweight, want_dweight, {1e-15, 1e-14}));
  EXPECT_TRUE(all_close("dbias", dbias, want_dbias, {1e-15, 1e-14}));
}

struct LayerNormShape {
  int N, C;
};
void PrintTo(const LayerNormShape& s, std::ostream* os) { *os << "N=" << s.N << " C=" << s.C; }

using LayerNormParam = std::tuple<Dtype, LayerNormShape>;

class LayerNormTest : public ::testing::TestWithParam<LayerNormParam> {};

std::string layernorm_param_name(const ::testing::TestParamInfo<LayerNormParam>& info) {
  const auto& [dtype, s] = info.param;
  return std::string(dtype_name(dtype)) + "_N" + std::to_string(s.N) + "_C" + std::to_string(s.C);
}

// Inputs of one test case, in storage type T. Inputs lie in [1, 5]: the rows share an offset of 3,
// which a one-pass variance (E[x^2] - mean^2) or an uncorrected fp32 mean turns into visible error.
template <typename T>
struct LayerNormData {
  std::vector<T> inp, weight, bias, dout;
  LayerNormData(const LayerNormShape& s, uint64_t seed) {
    Rng rng(seed);
    const size_t nc = static_cast<size_t>(s.N) * s.C;
    inp = random_vec<T>(rng, nc, 1, 5);
    weight = random_vec<T>(rng, s.C, 0.5, 1.5);
    bias = random_vec<T>(rng, s.C, -1, 1);
    dout = random_vec<T>(rng, nc, -1, 1);
  }
};

template <typename T>
struct LayerNormFwdRun {
  std::vector<T> out;
  std::vector<float> mean, rstd;
};

template <typename T>
LayerNormFwdRun<T> run_forward(const LayerNormShape& s, const LayerNormData<T>& d) {
  Rng rng(99);
  const size_t nc = static_cast<size_t>(s.N) * s.C;
  // Garbage in the outputs: all three are overwritten (=).
  LayerNormFwdRun<T> r{random_vec<T>(rng, nc, -5, 5), random_vec<float>(rng, s.N, -5, 5),
                       random_vec<float>(rng, s.N, -5, 5)};
  cpu::layernorm_fwd(r.out.data(), r.mean.data(), r.rstd.data(), d.inp.data(), d.weight.data(),
                     d.bias.data(), s.N, s.C, static_cast<float>(kEps));
  return r;
}

template <typename T>
struct LayerNormBwdRun {
  std::vector<T> dinp, dweight, dbias;
};

template <typename T>
LayerNormBwdRun<T> run_backward(const LayerNormShape& s, const LayerNormData<T>& d,
                                const LayerNormFwdRun<T>& fwd, LayerNormBwdRun<T> grads) {
  GuardedScratch scratch(cpu::layernorm_bwd_scratch_bytes(s.N, s.C));
  cpu::layernorm_bwd(grads.dinp.data(), grads.dweight.data(), grads.dbias.data(), d.dout.data(),
                     d.inp.data(), d.weight.data(), fwd.mean.data(), fwd.rstd.data(), s.N, s.C,
                     scratch.get());
  EXPECT_TRUE(scratch.guard_intact()) << "layernorm_bwd wrote past its scratch";
  return grads;
}

template <typename T>
LayerNormBwdRun<T> initial_grads(const LayerNormShape& s) {
  Rng rng(7);
  // Non-zero: all three gradients accumulate (+=).
  return {random_vec<T>(rng, static_cast<size_t>(s.N) * s.C, -1, 1), random_vec<T>(rng, s.C, -1, 1),
          random_vec<T>(rng, s.C, -1, 1)};
}

template <typename T>
void check_forward(const LayerNormShape& s) {
  const LayerNormData<T> d(s, 20);
  const auto got = run_forward(s, d);
  const size_t nc = static_cast<size_t>(s.N) * s.C;
  std::vector<double> out(nc), mean(s.N), rstd(s.N);
  ref::layernorm_fwd(out.data(), mean.data(), rstd.data(), to_double(d.inp).data(),
                     to_double(d.weight).data(), to_double(d.bias).data(), s.N, s.C, kEps);
  EXPECT_TRUE(all_close("out", got.out, out, tolerance_for<T>(), 1.0, s.C));
  EXPECT_TRUE(all_close("mean", got.mean, mean, tolerance(Dtype::kF32)));
  EXPECT_TRUE(all_close("rstd", got.rstd, rstd, tolerance(Dtype::kF32)));
}

template <typename T>
void check_backward(const LayerNormShape& s) {
  const LayerNormData<T> d(s, 21);
  const auto fwd = run_forward(s, d);
  const auto grads0 = initial_grads<T>(s);
  const auto got = run_backward(s, d, fwd, grads0);

  std::vector<double> dinp = to_double(grads0.dinp), dweight = to_double(grads0.dweight),
                      dbias = to_double(grads0.dbias);
  // The reference gets the kernel's own fp32 statistics so only the backward is compared.
  ref::layernorm_bwd(dinp.data(), dweight.data(), dbias.data(), to_double(d.dout).data(),
                     to_double(d.inp).data(), to_double(d.weight).data(),
                     to_double(fwd.mean).data(), to_double(fwd.rstd).data(), s.N, s.C);
  EXPECT_TRUE(all_close("dinp", got.dinp, dinp, tolerance_for<T>(), 1.0, s.C));
  // dweight and dbias are sums over N rows.
  EXPECT_TRUE(all_close("dweight", got.dweight, dweight, tolerance_for<T>(), max_abs(dweight)));
  EXPECT_TRUE(all_close("dbias", got.dbias, dbias, tolerance_for<T>(), max_abs(dbias)));
}

template <typename T>
void check_deterministic(const LayerNormShape& s) {
  const LayerNormData<T> d(s, 22);
  const auto grads0 = initial_grads<T>(s);
  std::vector<LayerNormFwdRun<T>> fwd;
  std::vector<LayerNormBwdRun<T>> bwd;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    for (int rep = 0; rep < 2; ++rep) {
      fwd.push_back(run_forward(s, d));
      bwd.push_back(run_backward(s, d, fwd[0], grads0));
    }
  }
  for (size_t r = 1; r < fwd.size(); ++r) {
    const std::string tag = " run " + std::to_string(r);
    EXPECT_TRUE(bitwise_equal("out" + tag, fwd[0].out, fwd[r].out));
    EXPECT_TRUE(bitwise_equal("mean" + tag, fwd[0].mean, fwd[r].mean));
    EXPECT_TRUE(bitwise_equal("rstd" + tag, fwd[0].rstd, fwd[r].rstd));
    EXPECT_TRUE(bitwise_equal("dinp" + tag, bwd[0].dinp, bwd[r].dinp));
    EXPECT_TRUE(bitwise_equal("dweight" + tag, bwd[0].dweight, bwd[r].dweight));
    EXPECT_TRUE(bitwise_equal("dbias" + tag, bwd[0].dbias, bwd[r].dbias));
  }
}

TEST_P(LayerNormTest, ForwardMatchesReference) {
  const auto& [dtype, shape] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_forward<T>(shape); });
}

TEST_P(LayerNormTest, BackwardAccumulatesAndMatchesReference) {
  const auto& [dtype, shape] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_backward<T>(shape); });
}

TEST_P(LayerNormTest, BitwiseDeterministicAcrossThreadCounts) {
  const auto& [dtype, shape] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_deterministic<T>(shape); });
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, LayerNormTest,
    ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                       ::testing::Values(LayerNormShape{1, 1}, LayerNormShape{7, 33},
                                         LayerNormShape{33, 7}, LayerNormShape{4097, 37},
                                         LayerNormShape{64, 768})),
    layernorm_param_name);

}  // namespace
}  // namespace zt::kernels::testing
