// kernels/cuda/layernorm.cu on the CPU emulator (cuda_emu.h), against the CPU twin
// (kernels/cpu/layernorm.cpp): forward (the warp-per-row vector kernel at each register width and
// the generic kernel) and backward (the vector row-team kernel with one and two column groups per
// thread, the generic kernel, the fixed-order column sums), over fp32/bf16/fp16, C not a multiple
// of the vector width, rows not a multiple of the chunks, tensors one element off alignment, the
// += semantics of the gradients, mean/rstd omitted; and bitwise determinism of the backward under
// adversarial schedules.
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cuda/layernorm.cuh"
#include "kernels/layernorm.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;
namespace cpu = zt::kernels::cpu;

struct Case {
  int dt, N, C;
  bool misalign = false;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << dt_name(c.dt) << " N" << c.N << " C" << c.C << (c.misalign ? " misaligned" : "");
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(dt_name(c.dt)) + "_N" + std::to_string(c.N) + "_C" + std::to_string(c.C) +
         (c.misalign ? "_misaligned" : "");
}

// Per-element tolerances of the outputs and of the column sums (dweight, dbias).
Tol elem_tol(int dt) {
  return dt == kF32 ? Tol{2e-5, 2e-5} : dt == kBF16 ? Tol{8e-3, 8e-3} : Tol{1e-3, 1e-3};
}
Tol sum_tol(int dt) {
  return dt == kF32 ? Tol{1e-4, 1e-4} : dt == kBF16 ? Tol{1.6e-2, 1.6e-2} : Tol{4e-3, 4e-3};
}

struct Tensors {
  Buf inp, weight, bias, out, mean, rstd, dout, dinp, dweight, dbias;
  Tensors(const Case& c, uint64_t seed)
      : inp(c.dt, size_t(c.N) * c.C, c.misalign),
        weight(c.dt, size_t(c.C), c.misalign),
        bias(c.dt, size_t(c.C), c.misalign),
        out(c.dt, size_t(c.N) * c.C, c.misalign),
        mean(kF32, size_t(c.N)),
        rstd(kF32, size_t(c.N)),
        dout(c.dt, size_t(c.N) * c.C, c.misalign),
        dinp(c.dt, size_t(c.N) * c.C, c.misalign),
        dweight(c.dt, size_t(c.C), c.misalign),
        dbias(c.dt, size_t(c.C), c.misalign) {
    Rng rng(seed);
    // Rows with an offset (the corrected two-pass statistics matter) and a spread.
    for (int n = 0; n < c.N; ++n) {
      const double shift = rng.uniform(-3.0, 3.0), spread = rng.uniform(0.1, 2.0);
      for (int j = 0; j < c.C; ++j)
        inp.set(size_t(n) * c.C + j, float(shift + spread * rng.uniform(-1, 1)));
    }
    weight.fill_uniform(rng, 0.5, 1.5);
    bias.fill_uniform(rng, -0.5, 0.5);
    dout.fill_uniform(rng, -1.0, 1.0);
    dinp.fill_uniform(rng, -0.5, 0.5);  // the backward adds to these
    dweight.fill_uniform(rng, -0.5, 0.5);
    dbias.fill_uniform(rng, -0.5, 0.5);
  }
};

class LayerNormEmuTest : public EmuTestWithParam<Case> {};

TEST_P(LayerNormEmuTest, ForwardMatchesCpuTwin) {
  const Case c = GetParam();
  Tensors gpu(c, 21), host(c, 21);
  const float eps = 1e-5f;
  ASSERT_EQ(
      kc::layernorm_fwd(c.dt, gpu.out.data(), gpu.mean.as<float>(), gpu.rstd.as<float>(),
                        gpu.inp.data(), gpu.weight.data(), gpu.bias.data(), c.N, c.C, eps, nullptr),
      cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::layernorm_fwd<T>(host.out.as<T>(), host.mean.as<float>(), host.rstd.as<float>(),
                          host.inp.as<T>(), host.weight.as<T>(), host.bias.as<T>(), c.N, c.C, eps);
  });
  EXPECT_TRUE(close("out", gpu.out.values(), host.out.values(), elem_tol(c.dt)));
  EXPECT_TRUE(close("mean", gpu.mean.values(), host.mean.values(), Tol{1e-5, 1e-6}));
  EXPECT_TRUE(close("rstd", gpu.rstd.values(), host.rstd.values(), Tol{1e-5, 1e-6}));
  EXPECT_TRUE(gpu.out.guards_intact() && gpu.mean.guards_intact() && gpu.rstd.guards_intact());

  // mean/rstd may be null: the same out.
  Tensors again(c, 21);
  ASSERT_EQ(kc::layernorm_fwd(c.dt, again.out.data(), nullptr, nullptr, again.inp.data(),
                              again.weight.data(), again.bias.data(), c.N, c.C, eps, nullptr),
            cudaSuccess);
  EXPECT_TRUE(same_bits("out without mean/rstd", again.out.data(), gpu.out.data(), gpu.out.bytes(),
                        elem_size(c.dt)));
}

// Runs the emulated backward on t (mean/rstd from the CPU forward).
void run_backward(const Case& c, Tensors& t) {
  Workspace ws(kc::layernorm_bwd_workspace_bytes(c.N, c.C));
  ASSERT_EQ(kc::layernorm_bwd(c.dt, t.dinp.data(), t.dweight.data(), t.dbias.data(), t.dout.data(),
                              t.inp.data(), t.weight.data(), t.mean.as<float>(), t.rstd.as<float>(),
                              c.N, c.C, ws.data(), nullptr),
            cudaSuccess);
}

void cpu_forward_stats(const Case& c, Tensors& t) {
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::layernorm_fwd<T>(t.out.as<T>(), t.mean.as<float>(), t.rstd.as<float>(), t.inp.as<T>(),
                          t.weight.as<T>(), t.bias.as<T>(), c.N, c.C, 1e-5f);
  });
}

TEST_P(LayerNormEmuTest, BackwardMatchesCpuTwin) {
  const Case c = GetParam();
  Tensors gpu(c, 22), host(c, 22);
  cpu_forward_stats(c, gpu);
  cpu_forward_stats(c, host);
  run_backward(c, gpu);
  if (HasFatalFailure()) return;
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    std::vector<unsigned char> scratch(cpu::layernorm_bwd_scratch_bytes(c.N, c.C));
    cpu::layernorm_bwd<T>(host.dinp.as<T>(), host.dweight.as<T>(), host.dbias.as<T>(),
                          host.dout.as<T>(), host.inp.as<T>(), host.weight.as<T>(),
                          host.mean.as<float>(), host.rstd.as<float>(), c.N, c.C, scratch.data());
  });
  EXPECT_TRUE(close("dinp", gpu.dinp.values(), host.dinp.values(), elem_tol(c.dt)));
  EXPECT_TRUE(close("dweight", gpu.dweight.values(), host.dweight.values(), sum_tol(c.dt)));
  EXPECT_TRUE(close("dbias", gpu.dbias.values(), host.dbias.values(), sum_tol(c.dt)));
  EXPECT_TRUE(gpu.dinp.guards_intact() && gpu.dweight.guards_intact() && gpu.dbias.guards_intact());
}

TEST_P(LayerNormEmuTest, BackwardDeterministicUnderAdversarialSchedules) {
  const Case c = GetParam();
  Tensors base(c, 23);
  cpu_forward_stats(c, base);
  run_backward(c, base);
  for (uint64_t seed : {2, 3}) {
    Tensors again(c, 23);
    cpu_forward_stats(c, again);
    zt_emu::reset();
    use_adversarial_schedule(seed);
    run_backward(c, again);
    if (HasFatalFailure()) return;
    const std::string tag = " (schedule seed " + std::to_string(seed) + ")";
    const size_t es = elem_size(c.dt);
    EXPECT_TRUE(
        same_bits("dinp" + tag, base.dinp.data(), again.dinp.data(), base.dinp.bytes(), es));
    EXPECT_TRUE(same_bits("dweight" + tag, base.dweight.data(), again.dweight.data(),
                          base.dweight.bytes(), es));
    EXPECT_TRUE(
        same_bits("dbias" + tag, base.dbias.data(), again.dbias.data(), base.dbias.bytes(), es));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LayerNormEmuTest,
    ::testing::Values(
        // Vector kernels: forward 1 vector per lane, backward one group per thread.
        Case{kF32, 5, 64}, Case{kBF16, 5, 64}, Case{kF16, 9, 64},
        // Forward 8 (fp32) / 4 (16-bit) vectors per lane; backward teams of 6 and 3 warps.
        Case{kF32, 17, 768}, Case{kBF16, 17, 768}, Case{kF16, 6, 768},
        // fp32 C = 2080: generic forward (more than 16 vectors per lane), backward with two column
        // groups per thread.
        Case{kF32, 3, 2080}, Case{kBF16, 3, 2080},
        // Generic kernels: C not a multiple of the vector width, or unaligned tensors.
        Case{kF32, 3, 45}, Case{kBF16, 33, 130}, Case{kF16, 9, 15}, Case{kF32, 9, 64, true},
        Case{kBF16, 5, 96, true}, Case{kF16, 1, 1}),
    case_name);

class LayerNormEmuArgsTest : public EmuTest {};

TEST_F(LayerNormEmuArgsTest, EmptyAndInvalid) {
  EXPECT_EQ(kc::layernorm_fwd(kF32, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 64,
                              1e-5f, nullptr),
            cudaSuccess);
  EXPECT_EQ(kc::layernorm_fwd(kF32, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, -1, 64,
                              1e-5f, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kc::layernorm_bwd(4, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                              nullptr, 2, 8, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
