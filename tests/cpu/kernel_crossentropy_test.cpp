// Fused softmax + cross-entropy: the fp64 reference against finite differences, the fast CPU
// kernel against the reference over dtype x shape x output mode (separate, aliased, loss only),
// overwrite semantics, numerical stability and determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "kernels/crossentropy.h"
#include "kernels/reference/crossentropy.h"
#include "tests/cpu/kernel_test_util.h"

namespace zt::kernels::testing {
namespace {

TEST(CrossEntropyReference, BackwardMatchesFiniteDifferences) {
  const int N = 3, V = 6;
  const double dloss = 0.7;
  Rng rng(1);
  std::vector<double> logits(N * V);
  for (auto& x : logits) x = rng.uniform(-3, 3);
  const auto targets = random_ints(rng, N, 0, V);
  std::vector<double> losses(N);
  auto loss = [&] {
    ref::softmax_crossentropy_fwd_bwd(losses.data(), nullptr, logits.data(), targets.data(), N, V,
                                      dloss);
    double s = 0.0;
    for (double l : losses) s += dloss * l;
    return s;
  };
  std::vector<double> dlogits(N * V, 5.0);  // overwritten (=)
  ref::softmax_crossentropy_fwd_bwd(losses.data(), dlogits.data(), logits.data(), targets.data(), N,
                                    V, dloss);
  EXPECT_TRUE(all_close("dlogits", dlogits, numeric_grad(loss, logits),
                        finite_difference_tolerance(), 1.0, V));
}

TEST(CrossEntropyReference, UniformLogitsGiveLogV) {
  const int V = 10;
  const std::vector<double> logits(V, 3.0);
  const std::vector<int32_t> target = {4};
  double loss = 0.0;
  ref::softmax_crossentropy_fwd_bwd(&loss, nullptr, logits.data(), target.data(), 1, V, 1.0);
  EXPECT_NEAR(loss, std::log(10.0), 1e-14);
}

// kSeparate: dlogits its own buffer; kAliased: dlogits == logits; kLossOnly: dlogits null.
enum class CeMode { kSeparate, kAliased, kLossOnly };

struct CeShape {
  int N, V;
};
void PrintTo(const CeShape& s, std::ostream* os) { *os << "N=" << s.N << " V=" << s.V; }
const char* mode_name(CeMode m) {
  return m == CeMode::kSeparate ? "separate" : m == CeMode::kAliased ? "aliased" : "lossonly";
}
void PrintTo(CeMode m, std::ostream* os) { *os << mode_name(m); }

using CeParam = std::tuple<Dtype, CeShape, CeMode>;

class CrossEntropyTest : public ::testing::TestWithParam<CeParam> {};

std::string ce_param_name(const ::testing::TestParamInfo<CeParam>& info) {
  const auto& [dtype, s, mode] = info.param;
  return std::string(dtype_name(dtype)) + "_N" + std::to_string(s.N) + "_V" + std::to_string(s.V) +
         "_" + mode_name(mode);
}

template <typename T>
struct CeRun {
  std::vector<float> losses;
  std::vector<T> dlogits;
};

template <typename T>
CeRun<T> run(const CeShape& s, CeMode mode, const std::vector<T>& logits,
             const std::vector<int32_t>& targets, float dloss) {
  Rng rng(77);
  CeRun<T> r{random_vec<float>(rng, s.N, -9, 9), {}};  // losses overwritten (=)
  switch (mode) {
    case CeMode::kSeparate:
      r.dlogits = random_vec<T>(rng, logits.size(), -9, 9);  // overwritten (=)
      cpu::softmax_crossentropy_fwd_bwd(r.losses.data(), r.dlogits.data(), logits.data(),
                                        targets.data(), s.N, s.V, dloss);
      break;
    case CeMode::kAliased:
      r.dlogits = logits;
      cpu::softmax_crossentropy_fwd_bwd(r.losses.data(), r.dlogits.data(), r.dlogits.data(),
                                        targets.data(), s.N, s.V, dloss);
      break;
    case CeMode::kLossOnly:
      cpu::softmax_crossentropy_fwd_bwd<T>(r.losses.data(), nullptr, logits.data(), targets.data(),
                                           s.N, s.V, dloss);
      break;
  }
  return r;
}

template <typename T>
void check_against_reference(const CeShape& s, CeMode mode) {
  Rng rng(50);
  // A large common offset: only a max-subtracted softmax survives exp(100) in fp32.
  auto logits = random_vec<T>(rng, static_cast<size_t>(s.N) * s.V, -4, 4);
  if (s.N > 1) {
    for (int v = 0; v < s.V; ++v) {
      logits[v] = from_f32<T>(to_f32(logits[v]) + 100.0f);  // row 0 shifted
    }
  }
  const auto targets = random_ints(rng, s.N, 0, s.V);
  const float dloss = 1.0f / static_cast<float>(s.N);
  const auto got = run(s, mode, logits, targets, dloss);

  std::vector<double> losses(s.N), dlogits(logits.size());
  ref::softmax_crossentropy_fwd_bwd(losses.data(), dlogits.data(), to_double(logits).data(),
                                    targets.data(), s.N, s.V, dloss);
  EXPECT_TRUE(all_close("losses", got.losses, losses, tolerance(Dtype::kF32)));
  if (mode != CeMode::kLossOnly) {
    // dlogits are judged relative to dloss, their natural size.
    EXPECT_TRUE(all_close("dlogits", got.dlogits, dlogits, tolerance_for<T>(), dloss, s.V));
  }
}

template <typename T>
void check_deterministic(const CeShape& s, CeMode mode) {
  Rng rng(51);
  const auto logits = random_vec<T>(rng, static_cast<size_t>(s.N) * s.V, -4, 4);
  const auto targets = random_ints(rng, s.N, 0, s.V);
  std::vector<CeRun<T>> runs;
  for (int threads : determinism_thread_counts()) {
    ScopedOmpThreads scope(threads);
    runs.push_back(run(s, mode, logits, targets, 0.25f));
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_TRUE(bitwise_equal("losses run " + std::to_string(r), runs[0].losses, runs[r].losses));
    EXPECT_TRUE(
        bitwise_equal("dlogits run " + std::to_string(r), runs[0].dlogits, runs[r].dlogits));
  }
}

TEST_P(CrossEntropyTest, MatchesReference) {
  const auto& [dtype, shape, mode] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_against_reference<T>(shape, mode); });
}

TEST_P(CrossEntropyTest, BitwiseDeterministicAcrossThreadCounts) {
  const auto& [dtype, shape, mode] = GetParam();
  dispatch(dtype, [&]<typename T>() { check_deterministic<T>(shape, mode); });
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, CrossEntropyTest,
    ::testing::Combine(::testing::ValuesIn(all_dtypes()),
                       ::testing::Values(CeShape{1, 1}, CeShape{7, 33}, CeShape{33, 7},
                                         CeShape{9, 4097}, CeShape{16, 50257}),
                       ::testing::Values(CeMode::kSeparate, CeMode::kAliased, CeMode::kLossOnly)),
    ce_param_name);

}  // namespace
}  // namespace zt::kernels::testing
