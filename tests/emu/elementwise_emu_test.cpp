// kernels/cuda/elementwise.cu on the CPU emulator (cuda_emu.h), against the CPU twins
// (kernels/cpu/gelu.cpp, residual.cpp): gelu_fwd, gelu_bwd, residual_fwd, add_inplace over
// fp32/bf16/fp16, lengths around the vector width, all pointers at the same offset modulo 16 (a
// scalar head, 16-byte vectors, a scalar tail) or at different offsets (all scalar), outputs
// aliasing inputs, very negative GELU inputs (the capped exponent); residual_fwd and add_inplace
// bit for bit (one fp32 add, one rounding), GELU to a few ulps (exp2 instead of exp).
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cuda/elementwise.cuh"
#include "kernels/gelu.h"
#include "kernels/residual.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;
namespace cpu = zt::kernels::cpu;

struct Case {
  int dt;
  size_t n;
  size_t out_off, in_off;  // elements past a 256-byte boundary
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << dt_name(c.dt) << " n" << c.n << " offsets " << c.out_off << "/" << c.in_off;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(dt_name(c.dt)) + "_n" + std::to_string(c.n) + "_out" +
         std::to_string(c.out_off) + "_in" + std::to_string(c.in_off);
}

Tol gelu_tol(int dt) {
  return dt == kF32 ? Tol{2e-6, 1e-6} : dt == kBF16 ? Tol{8e-3, 1e-3} : Tol{1e-3, 1e-4};
}

struct Tensors {
  Buf a, b, out;
  Tensors(const Case& c, uint64_t seed)
      : a(c.dt, c.n, c.in_off), b(c.dt, c.n, c.in_off), out(c.dt, c.n, c.out_off) {
    Rng rng(seed);
    a.fill_uniform(rng, -4.0, 4.0);
    b.fill_uniform(rng, -1.0, 1.0);
    for (size_t i = 5; i < c.n; i += 41) a.set(i, -30.0f);  // e = exp(-2u) would overflow
    for (size_t i = 9; i < c.n; i += 53) a.set(i, -1e4f);
  }
};

class ElementwiseEmuTest : public EmuTestWithParam<Case> {};

TEST_P(ElementwiseEmuTest, GeluMatchesCpuTwin) {
  const Case c = GetParam();
  Tensors gpu(c, 51), host(c, 51);
  ASSERT_EQ(kc::gelu_fwd(c.dt, gpu.out.data(), gpu.a.data(), c.n, nullptr), cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_fwd<T>(host.out.as<T>(), host.a.as<T>(), c.n);
  });
  EXPECT_TRUE(close("gelu_fwd", gpu.out.values(), host.out.values(), gelu_tol(c.dt)));
  EXPECT_TRUE(gpu.out.guards_intact());

  ASSERT_EQ(kc::gelu_bwd(c.dt, gpu.out.data(), gpu.a.data(), gpu.b.data(), c.n, nullptr),
            cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_bwd<T>(host.out.as<T>(), host.a.as<T>(), host.b.as<T>(), c.n);
  });
  EXPECT_TRUE(close("gelu_bwd", gpu.out.values(), host.out.values(), gelu_tol(c.dt)));

  // dinp aliasing dout.
  ASSERT_EQ(kc::gelu_bwd(c.dt, gpu.b.data(), gpu.a.data(), gpu.b.data(), c.n, nullptr),
            cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::gelu_bwd<T>(host.b.as<T>(), host.a.as<T>(), host.b.as<T>(), c.n);
  });
  EXPECT_TRUE(close("gelu_bwd in place", gpu.b.values(), host.b.values(), gelu_tol(c.dt)));
}

TEST_P(ElementwiseEmuTest, ResidualBitExact) {
  const Case c = GetParam();
  Tensors gpu(c, 52), host(c, 52);
  const size_t es = elem_size(c.dt);
  ASSERT_EQ(kc::residual_fwd(c.dt, gpu.out.data(), gpu.a.data(), gpu.b.data(), c.n, nullptr),
            cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::residual_fwd<T>(host.out.as<T>(), host.a.as<T>(), host.b.as<T>(), c.n);
  });
  EXPECT_TRUE(same_bits("residual_fwd", gpu.out.data(), host.out.data(), gpu.out.bytes(), es));

  // out aliasing a.
  ASSERT_EQ(kc::residual_fwd(c.dt, gpu.a.data(), gpu.a.data(), gpu.b.data(), c.n, nullptr),
            cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::residual_fwd<T>(host.a.as<T>(), host.a.as<T>(), host.b.as<T>(), c.n);
  });
  EXPECT_TRUE(same_bits("residual_fwd in place", gpu.a.data(), host.a.data(), gpu.a.bytes(), es));

  ASSERT_EQ(kc::add_inplace(c.dt, gpu.out.data(), gpu.b.data(), c.n, nullptr), cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::add_inplace<T>(host.out.as<T>(), host.b.as<T>(), c.n);
  });
  EXPECT_TRUE(same_bits("add_inplace", gpu.out.data(), host.out.data(), gpu.out.bytes(), es));
  EXPECT_TRUE(gpu.out.guards_intact() && gpu.a.guards_intact());
}

INSTANTIATE_TEST_SUITE_P(Shapes, ElementwiseEmuTest,
                         ::testing::Values(Case{kF32, 1, 0, 0}, Case{kF32, 7, 0, 0},
                                           Case{kF32, 1000, 0, 0}, Case{kF32, 1000, 1, 1},
                                           Case{kF32, 4099, 3, 0}, Case{kBF16, 1, 1, 1},
                                           Case{kBF16, 9, 0, 0}, Case{kBF16, 1000, 5, 5},
                                           Case{kBF16, 4099, 0, 1}, Case{kF16, 15, 7, 7},
                                           Case{kF16, 1000, 0, 0}, Case{kF16, 4099, 2, 1}),
                         case_name);

class ElementwiseEmuArgsTest : public EmuTest {};

TEST_F(ElementwiseEmuArgsTest, EmptyAndInvalid) {
  EXPECT_EQ(kc::gelu_fwd(kF32, nullptr, nullptr, 0, nullptr), cudaSuccess);
  EXPECT_EQ(kc::residual_fwd(3, nullptr, nullptr, nullptr, 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
