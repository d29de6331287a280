// kernels/cuda/crossentropy.cu on the CPU emulator (cuda_emu.h), against the CPU twin
// (kernels/cpu/crossentropy.cpp): the vector kernel (scalar head up to the first 16-byte boundary,
// 16-byte vectors, scalar tail; rows start at every offset since V is odd) and the scalar kernel
// (logits and dlogits at different offsets modulo 16), fp32/bf16/fp16, V from 1 to GPT-2's 50257,
// dlogits aliasing logits, dlogits null (losses only), targets at the ends of the rows, large
// logits; and bitwise determinism under adversarial schedules.
#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/crossentropy.h"
#include "kernels/cuda/crossentropy.cuh"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;
namespace cpu = zt::kernels::cpu;

enum class Mode { kSeparate, kAliased, kLossOnly, kMisaligned };

struct Case {
  int dt, N, V;
  Mode mode;
};

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kSeparate:
      return "separate";
    case Mode::kAliased:
      return "aliased";
    case Mode::kLossOnly:
      return "lossonly";
    case Mode::kMisaligned:
      return "misaligned";
  }
  return "?";
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << dt_name(c.dt) << " N" << c.N << " V" << c.V << " " << mode_name(c.mode);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(dt_name(c.dt)) + "_N" + std::to_string(c.N) + "_V" + std::to_string(c.V) +
         "_" + mode_name(c.mode);
}

struct Tensors {
  Buf logits, dlogits, losses;
  std::vector<int32_t> targets;
  // kMisaligned: dlogits one element off the logits' alignment (the scalar kernel).
  Tensors(const Case& c, uint64_t seed)
      : logits(c.dt, size_t(c.N) * c.V),
        dlogits(c.dt, size_t(c.N) * c.V, c.mode == Mode::kMisaligned ? 1 : 0),
        losses(kF32, size_t(c.N)),
        targets(size_t(c.N)) {
    Rng rng(seed);
    logits.fill_uniform(rng, -4.0, 4.0);
    for (int n = 0; n < c.N; ++n) {
      targets[n] = n == 0 ? 0 : n == 1 ? c.V - 1 : rng.below(c.V);  // both ends of a row
      if (c.V > 10) {
        logits.set(size_t(n) * c.V + rng.below(c.V), 30.0f);  // a dominant logit
        logits.set(size_t(n) * c.V + rng.below(c.V), -1e4f);  // a negligible one
      }
    }
  }
  void* dlogits_ptr(Mode m) {
    return m == Mode::kLossOnly ? nullptr : m == Mode::kAliased ? logits.data() : dlogits.data();
  }
  std::vector<float> grads(Mode m) const {
    return m == Mode::kAliased ? logits.values() : dlogits.values();
  }
};

Tol grad_tol(int dt) {
  // Probabilities are small: an absolute floor well below 1/V.
  return dt == kF32 ? Tol{2e-5, 1e-9} : dt == kBF16 ? Tol{8e-3, 1e-9} : Tol{1e-3, 1e-9};
}

class CrossEntropyEmuTest : public EmuTestWithParam<Case> {};

void run_cuda(const Case& c, Tensors& t, float dloss) {
  ASSERT_EQ(kc::softmax_crossentropy(c.dt, t.losses.as<float>(), t.dlogits_ptr(c.mode),
                                     t.logits.data(), t.targets.data(), c.N, c.V, dloss, nullptr),
            cudaSuccess);
}

TEST_P(CrossEntropyEmuTest, MatchesCpuTwin) {
  const Case c = GetParam();
  const float dloss = 1.0f / static_cast<float>(c.N);
  Tensors gpu(c, 31), host(c, 31);
  run_cuda(c, gpu, dloss);
  if (HasFatalFailure()) return;
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::softmax_crossentropy_fwd_bwd<T>(host.losses.as<float>(),
                                         static_cast<T*>(host.dlogits_ptr(c.mode)),
                                         host.logits.as<T>(), host.targets.data(), c.N, c.V, dloss);
  });
  EXPECT_TRUE(close("losses", gpu.losses.values(), host.losses.values(), Tol{1e-5, 1e-5}));
  if (c.mode != Mode::kLossOnly) {
    EXPECT_TRUE(close("dlogits", gpu.grads(c.mode), host.grads(c.mode), grad_tol(c.dt)));
  } else {
    std::vector<float> untouched = gpu.dlogits.values();
    for (float v : untouched) ASSERT_TRUE(std::isnan(v)) << "dlogits written in loss-only mode";
  }
  EXPECT_TRUE(gpu.logits.guards_intact() && gpu.dlogits.guards_intact() &&
              gpu.losses.guards_intact());
}

TEST_P(CrossEntropyEmuTest, DeterministicUnderAdversarialSchedules) {
  const Case c = GetParam();
  Tensors base(c, 32);
  run_cuda(c, base, 0.5f);
  for (uint64_t seed : {2, 3}) {
    Tensors again(c, 32);
    zt_emu::reset();
    use_adversarial_schedule(seed);
    run_cuda(c, again, 0.5f);
    if (HasFatalFailure()) return;
    EXPECT_TRUE(same_bits("losses", base.losses.data(), again.losses.data(), base.losses.bytes()));
    const Buf& g0 = c.mode == Mode::kAliased ? base.logits : base.dlogits;
    const Buf& g1 = c.mode == Mode::kAliased ? again.logits : again.dlogits;
    EXPECT_TRUE(same_bits("dlogits", g0.data(), g1.data(), g0.bytes(), elem_size(c.dt)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CrossEntropyEmuTest,
    ::testing::Values(Case{kF32, 3, 101, Mode::kSeparate}, Case{kBF16, 3, 101, Mode::kSeparate},
                      Case{kF16, 3, 101, Mode::kAliased}, Case{kF32, 2, 1000, Mode::kAliased},
                      Case{kBF16, 4, 999, Mode::kMisaligned}, Case{kF32, 3, 257, Mode::kLossOnly},
                      Case{kF16, 2, 1, Mode::kSeparate}, Case{kBF16, 2, 7, Mode::kSeparate},
                      Case{kF32, 2, 50257, Mode::kSeparate}, Case{kBF16, 2, 50257, Mode::kAliased},
                      Case{kF16, 2, 3001, Mode::kMisaligned}),
    case_name);

class CrossEntropyEmuArgsTest : public EmuTest {};

TEST_F(CrossEntropyEmuArgsTest, EmptyAndInvalid) {
  EXPECT_EQ(
      kc::softmax_crossentropy(kF32, nullptr, nullptr, nullptr, nullptr, 0, 10, 1.0f, nullptr),
      cudaSuccess);
  EXPECT_EQ(kc::softmax_crossentropy(kF32, nullptr, nullptr, nullptr, nullptr, 2, 0, 1.0f, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kc::softmax_crossentropy(7, nullptr, nullptr, nullptr, nullptr, 2, 4, 1.0f, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
