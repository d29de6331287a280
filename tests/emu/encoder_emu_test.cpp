// kernels/cuda/encoder.cu on the CPU emulator (cuda_emu.h), against the CPU twin
// (kernels/cpu/encoder.cpp). Forward: the 16-byte and the scalar kernel, bit for bit (one fp32 add,
// one rounding). Backward: the radix sort of positions by token (one and two 8-bit passes, one and
// two tiles of 1024 positions, __match_any_sync ranks, shared-memory integer atomics, the
// single-block scan), the window sums with runs of one token crossing many 32-entry windows (the
// carry kernel), dwpe; the += semantics; fp32/bf16/fp16, C not a multiple of the vector width and
// unaligned gradients; bitwise determinism under adversarial schedules.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/cuda/encoder.cuh"
#include "kernels/encoder.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;
namespace cpu = zt::kernels::cpu;

struct Case {
  int dt, B, T, C, V;
  bool misalign = false;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << dt_name(c.dt) << " B" << c.B << " T" << c.T << " C" << c.C << " V" << c.V
      << (c.misalign ? " misaligned" : "");
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return std::string(dt_name(c.dt)) + "_B" + std::to_string(c.B) + "_T" + std::to_string(c.T) +
         "_C" + std::to_string(c.C) + "_V" + std::to_string(c.V) +
         (c.misalign ? "_misaligned" : "");
}

struct Tensors {
  std::vector<int32_t> tokens;
  Buf wte, wpe, out, dout, dwte, dwpe;
  Tensors(const Case& c, uint64_t seed)
      : tokens(size_t(c.B) * c.T),
        wte(c.dt, size_t(c.V) * c.C, c.misalign),
        wpe(c.dt, size_t(c.T) * c.C, c.misalign),
        out(c.dt, size_t(c.B) * c.T * c.C, c.misalign),
        dout(c.dt, size_t(c.B) * c.T * c.C, c.misalign),
        dwte(c.dt, size_t(c.V) * c.C, c.misalign),
        dwpe(c.dt, size_t(c.T) * c.C, c.misalign) {
    Rng rng(seed);
    // A frequent token (runs across many windows of 32), a few common ones, the rest spread over
    // the vocabulary including its last entry.
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int r = rng.below(10);
      tokens[i] = r < 4 ? c.V / 2 : r < 6 ? rng.below(std::min(c.V, 3)) : rng.below(c.V);
    }
    tokens.back() = c.V - 1;
    wte.fill_uniform(rng, -1.0, 1.0);
    wpe.fill_uniform(rng, -1.0, 1.0);
    dout.fill_uniform(rng, -1.0, 1.0);
    dwte.fill_uniform(rng, -0.5, 0.5);  // the backward adds to these
    dwpe.fill_uniform(rng, -0.5, 0.5);
  }
};

Tol sum_tol(int dt) {
  return dt == kF32 ? Tol{1e-5, 1e-5} : dt == kBF16 ? Tol{8e-3, 8e-3} : Tol{1e-3, 1e-3};
}

void run_backward(const Case& c, Tensors& t) {
  Workspace ws(kc::encoder_bwd_workspace_bytes(c.B, c.T, c.C, c.V));
  ASSERT_EQ(kc::encoder_bwd(c.dt, t.dwte.data(), t.dwpe.data(), t.dout.data(), t.tokens.data(), c.B,
                            c.T, c.C, c.V, ws.data(), nullptr),
            cudaSuccess);
}

class EncoderEmuTest : public EmuTestWithParam<Case> {};

TEST_P(EncoderEmuTest, ForwardBitExact) {
  const Case c = GetParam();
  Tensors gpu(c, 41), host(c, 41);
  ASSERT_EQ(kc::encoder_fwd(c.dt, gpu.out.data(), gpu.tokens.data(), gpu.wte.data(), gpu.wpe.data(),
                            c.B, c.T, c.C, nullptr),
            cudaSuccess);
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    cpu::encoder_fwd<T>(host.out.as<T>(), host.tokens.data(), host.wte.as<T>(), host.wpe.as<T>(),
                        c.B, c.T, c.C);
  });
  EXPECT_TRUE(same_bits("out", gpu.out.data(), host.out.data(), gpu.out.bytes(), elem_size(c.dt)));
  EXPECT_TRUE(gpu.out.guards_intact());
}

TEST_P(EncoderEmuTest, BackwardMatchesCpuTwin) {
  const Case c = GetParam();
  Tensors gpu(c, 42), host(c, 42);
  run_backward(c, gpu);
  if (HasFatalFailure()) return;
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    std::vector<unsigned char> scratch(cpu::encoder_bwd_scratch_bytes(c.B, c.T, c.C, c.V));
    cpu::encoder_bwd<T>(host.dwte.as<T>(), host.dwpe.as<T>(), host.dout.as<T>(), host.tokens.data(),
                        c.B, c.T, c.C, c.V, scratch.data());
  });
  EXPECT_TRUE(close("dwte", gpu.dwte.values(), host.dwte.values(), sum_tol(c.dt)));
  EXPECT_TRUE(close("dwpe", gpu.dwpe.values(), host.dwpe.values(), sum_tol(c.dt)));
  EXPECT_TRUE(gpu.dwte.guards_intact() && gpu.dwpe.guards_intact());
}

TEST_P(EncoderEmuTest, BackwardDeterministicUnderAdversarialSchedules) {
  const Case c = GetParam();
  Tensors base(c, 43);
  run_backward(c, base);
  for (uint64_t seed : {2, 3}) {
    Tensors again(c, 43);
    zt_emu::reset();
    use_adversarial_schedule(seed);
    run_backward(c, again);
    if (HasFatalFailure()) return;
    const std::string tag = " (schedule seed " + std::to_string(seed) + ")";
    EXPECT_TRUE(same_bits("dwte" + tag, base.dwte.data(), again.dwte.data(), base.dwte.bytes(),
                          elem_size(c.dt)));
    EXPECT_TRUE(same_bits("dwpe" + tag, base.dwpe.data(), again.dwpe.data(), base.dwpe.bytes(),
                          elem_size(c.dt)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, EncoderEmuTest,
    ::testing::Values(
        // One radix pass (V <= 256), one tile.
        Case{kF32, 2, 17, 45, 101}, Case{kBF16, 2, 64, 64, 200}, Case{kF16, 1, 1, 8, 1},
        // Two passes (V > 256).
        Case{kF32, 2, 64, 64, 300}, Case{kF16, 2, 50, 24, 1000},
        // Three passes (V > 65536).
        Case{kBF16, 2, 40, 8, 70000},
        // Two tiles of 1024 positions.
        Case{kF32, 2, 600, 16, 300}, Case{kBF16, 3, 400, 8, 50},
        // Scalar kernels: unaligned gradients, C not a multiple of the vector width.
        Case{kF32, 2, 33, 16, 70, true}, Case{kBF16, 2, 40, 15, 290, true},
        Case{kF16, 1, 130, 12, 64}),
    case_name);

class EncoderEmuArgsTest : public EmuTest {};

TEST_F(EncoderEmuArgsTest, EmptyAndInvalid) {
  EXPECT_EQ(kc::encoder_fwd(kF32, nullptr, nullptr, nullptr, nullptr, 0, 4, 8, nullptr),
            cudaSuccess);
  EXPECT_EQ(kc::encoder_bwd(kF32, nullptr, nullptr, nullptr, nullptr, 2, 4, 8, 0, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kc::encoder_fwd(9, nullptr, nullptr, nullptr, nullptr, 1, 4, 8, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
