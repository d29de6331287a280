// kernels/cuda/reduce.cu on the CPU emulator (cuda_emu.h): sum_squares and count_nonfinite
// against their CPU twins (kernels/cpu/optimizer.cpp; the sums to fp64 rounding, the counts
// exactly, with NaN/Inf planted in every storage type), over lengths that give one and several
// partial blocks, aligned and unaligned buffers, n = 0; bias_grad against an fp64 reference (its
// fp32 partials over fixed row chunks, the fixed-order column sum, the += into dbias), over OC not
// a multiple of the vector width, rows spanning several chunks, unaligned dout; and bitwise
// determinism of all three under adversarial schedules.
#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cuda/reduce.cuh"
#include "kernels/optimizer.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;
namespace cpu = zt::kernels::cpu;

struct FlatCase {
  int dt;
  size_t n, off;
};

void PrintTo(const FlatCase& c, std::ostream* os) {
  *os << dt_name(c.dt) << " n" << c.n << " offset " << c.off;
}

class ReduceEmuTest : public EmuTestWithParam<FlatCase> {};

// Values with NaN and +-Inf planted (when `nonfinite`); returns how many.
size_t fill(Buf& x, Rng& rng, bool nonfinite) {
  x.fill_uniform(rng, -3.0, 3.0);
  size_t planted = 0;
  if (nonfinite) {
    for (size_t i = 3; i < x.size(); i += 97) {
      x.set(i, i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -INFINITY);
      ++planted;
    }
    if (x.dtype() == kF16 && x.size() > 10) {
      x.set(10, 70000.0f);  // overflows fp16 storage: Inf
      ++planted;
    }
  }
  return planted;
}

TEST_P(ReduceEmuTest, SumSquaresMatchesCpuTwin) {
  const FlatCase c = GetParam();
  Rng rng(c.n + c.off);
  Buf x(c.dt, c.n, c.off);
  fill(x, rng, false);
  Workspace ws(kc::reduce_workspace_bytes(c.n));
  double got = -1.0, want = 0.0;
  ASSERT_EQ(kc::sum_squares(c.dt, x.data(), c.n, &got, ws.data(), nullptr), cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    want = cpu::sum_squares<T>(x.as<T>(), c.n);
  });
  EXPECT_NEAR(got, want, 1e-12 * std::fabs(want) + 1e-300);
}

TEST_P(ReduceEmuTest, CountNonfiniteExact) {
  const FlatCase c = GetParam();
  Rng rng(c.n * 3 + c.off);
  Buf x(c.dt, c.n, c.off);
  const size_t planted = fill(x, rng, true);
  Workspace ws(kc::reduce_workspace_bytes(c.n));
  unsigned long long got = 12345;
  size_t want = 0;
  ASSERT_EQ(kc::count_nonfinite(c.dt, x.data(), c.n, &got, ws.data(), nullptr), cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    want = cpu::count_nonfinite<T>(x.as<T>(), c.n);
  });
  EXPECT_EQ(want, planted);
  EXPECT_EQ(got, want);
}

TEST_P(ReduceEmuTest, DeterministicUnderAdversarialSchedules) {
  const FlatCase c = GetParam();
  Rng rng(7);
  Buf x(c.dt, c.n, c.off);
  fill(x, rng, false);
  double base = 0.0;
  Workspace ws(kc::reduce_workspace_bytes(c.n));
  ASSERT_EQ(kc::sum_squares(c.dt, x.data(), c.n, &base, ws.data(), nullptr), cudaSuccess);
  for (uint64_t seed : {2, 3}) {
    zt_emu::reset();
    use_adversarial_schedule(seed);
    double again = -1.0;
    ASSERT_EQ(kc::sum_squares(c.dt, x.data(), c.n, &again, ws.data(), nullptr), cudaSuccess);
    EXPECT_TRUE(same_bits("sum_squares", &base, &again, 8, 8));
  }
}

INSTANTIATE_TEST_SUITE_P(Lengths, ReduceEmuTest,
                         ::testing::Values(FlatCase{kF32, 0, 0}, FlatCase{kF32, 1, 0},
                                           FlatCase{kF32, 1000, 1}, FlatCase{kF32, 20003, 0},
                                           FlatCase{kBF16, 5, 3}, FlatCase{kBF16, 20003, 1},
                                           FlatCase{kF16, 999, 0}, FlatCase{kF16, 17000, 7}),
                         [](const ::testing::TestParamInfo<FlatCase>& info) {
                           return std::string(dt_name(info.param.dt)) + "_n" +
                                  std::to_string(info.param.n) + "_off" +
                                  std::to_string(info.param.off);
                         });

// ---- bias_grad ----

struct BiasCase {
  int dt, N, OC;
  bool misalign = false;
};

void PrintTo(const BiasCase& c, std::ostream* os) {
  *os << dt_name(c.dt) << " N" << c.N << " OC" << c.OC << (c.misalign ? " misaligned" : "");
}

class BiasGradEmuTest : public EmuTestWithParam<BiasCase> {};

Tol bias_tol(int dt) {
  return dt == kF32 ? Tol{1e-5, 1e-5} : dt == kBF16 ? Tol{8e-3, 8e-3} : Tol{1e-3, 1e-3};
}

void run_bias(const BiasCase& c, Buf& dbias, const Buf& dout) {
  Workspace ws(kc::bias_grad_workspace_bytes(c.N, c.OC));
  ASSERT_EQ(kc::bias_grad(c.dt, dbias.data(), dout.data(), c.N, c.OC, ws.data(), nullptr),
            cudaSuccess);
}

TEST_P(BiasGradEmuTest, MatchesFp64Reference) {
  const BiasCase c = GetParam();
  Rng rng(uint64_t(c.N) * 100 + c.OC);
  Buf dout(c.dt, size_t(c.N) * c.OC, c.misalign), dbias(c.dt, size_t(c.OC), c.misalign);
  dout.fill_uniform(rng, -1.0, 1.0);
  dbias.fill_uniform(rng, -0.5, 0.5);
  std::vector<float> want(size_t(c.OC));
  for (int j = 0; j < c.OC; ++j) {
    double s = dbias.get(size_t(j));
    for (int i = 0; i < c.N; ++i) s += dout.get(size_t(i) * c.OC + j);
    want[size_t(j)] = round_to(c.dt, static_cast<float>(s));
  }
  run_bias(c, dbias, dout);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(close("dbias", dbias.values(), want, bias_tol(c.dt)));
  EXPECT_TRUE(dbias.guards_intact());
}

TEST_P(BiasGradEmuTest, DeterministicUnderAdversarialSchedules) {
  const BiasCase c = GetParam();
  Rng rng(5);
  Buf dout(c.dt, size_t(c.N) * c.OC, c.misalign), base(c.dt, size_t(c.OC), c.misalign);
  dout.fill_uniform(rng, -1.0, 1.0);
  base.fill_uniform(rng, -0.5, 0.5);
  Buf again(c.dt, size_t(c.OC), c.misalign);
  again.copy_from(base);
  run_bias(c, base, dout);
  zt_emu::reset();
  use_adversarial_schedule(3);
  run_bias(c, again, dout);
  EXPECT_TRUE(same_bits("dbias", base.data(), again.data(), base.bytes(), elem_size(c.dt)));
}

INSTANTIATE_TEST_SUITE_P(Shapes, BiasGradEmuTest,
                         ::testing::Values(BiasCase{kF32, 5, 7}, BiasCase{kF32, 70, 64},
                                           BiasCase{kBF16, 70, 64}, BiasCase{kF16, 33, 130, true},
                                           BiasCase{kBF16, 100, 45}, BiasCase{kF32, 1, 1}),
                         [](const ::testing::TestParamInfo<BiasCase>& info) {
                           const BiasCase& c = info.param;
                           return std::string(dt_name(c.dt)) + "_N" + std::to_string(c.N) + "_OC" +
                                  std::to_string(c.OC) + (c.misalign ? "_misaligned" : "");
                         });

class ReduceEmuArgsTest : public EmuTest {};

TEST_F(ReduceEmuArgsTest, EmptyAndInvalid) {
  EXPECT_EQ(kc::bias_grad(kF32, nullptr, nullptr, 0, 8, nullptr, nullptr), cudaSuccess);
  EXPECT_EQ(kc::bias_grad(kF32, nullptr, nullptr, -1, 8, nullptr, nullptr), cudaErrorInvalidValue);
  double r = 0.0;
  EXPECT_EQ(kc::sum_squares(6, &r, 4, &r, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
