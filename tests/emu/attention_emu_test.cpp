// kernels/cuda/attention.cu on the CPU emulator (cuda_emu.h), against the fp64 reference
// (kernels/reference/attention.h) and the CPU twin (kernels/cpu/attention.cpp): both paths of the
// forward and the backward (tensor cores: bf16/fp16, HS a multiple of 16 up to 128, compute
// capability >= 8, tiles within the opt-in shared memory; CUDA cores: fp32, any other HS, cc 7,
// or tensor-core tiles that do not fit), T not a multiple of the tiles (1 to 130), HS from 1 to
// 200 (15, 32 and 64 among them), tensors one element off 16-byte alignment, cp.async landing
// late; bitwise determinism under adversarial schedules; and the launchers' argument checks.
#include <ostream>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/reference/attention.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;

struct Case {
  int dt, B, T, NH, HS;
  bool fwd_tc, bwd_tc;  // the path the launchers must choose
  bool misalign = false;
  bool late = false;
  int cc = 9;
  int optin = 232448;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << dt_name(c.dt) << " B" << c.B << " T" << c.T << " NH" << c.NH << " HS" << c.HS;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::string s = std::string(dt_name(c.dt)) + "_B" + std::to_string(c.B) + "_T" +
                  std::to_string(c.T) + "_NH" + std::to_string(c.NH) + "_HS" +
                  std::to_string(c.HS) + (c.fwd_tc ? "_tc" : "_generic");
  if (c.bwd_tc != c.fwd_tc) s += c.bwd_tc ? "_bwdtc" : "_bwdgeneric";
  if (c.misalign) s += "_misaligned";
  if (c.late) s += "_late";
  if (c.cc != 9) s += "_cc" + std::to_string(c.cc);
  if (c.optin != 232448) s += "_optin" + std::to_string(c.optin);
  return s;
}

// Scaled tolerances (max error / max |reference|) of out, lse and dqkv.
struct Tols {
  double out, lse, grad;
};
Tols tolerances(int dt) {
  if (dt == kF32) return {1e-5, 1e-6, 2e-5};
  if (dt == kBF16) return {1e-2, 1e-6, 2e-2};
  return {2e-3, 1e-6, 4e-3};
}

// Inputs and outputs of one forward + backward.
struct Tensors {
  Buf qkv, dout, out, lse, dqkv;
  Tensors(const Case& c, int C)
      : qkv(c.dt, size_t(c.B) * c.T * 3 * C, c.misalign),
        dout(c.dt, size_t(c.B) * c.T * C, c.misalign),
        out(c.dt, size_t(c.B) * c.T * C, c.misalign),
        lse(kF32, size_t(c.B) * c.NH * c.T, c.misalign),
        dqkv(c.dt, size_t(c.B) * c.T * 3 * C, c.misalign) {
    Rng rng(1234u + uint64_t(c.T) * 7 + uint64_t(c.HS) * 131 + uint64_t(c.dt));
    qkv.fill_uniform(rng, -2.0, 2.0);
    dout.fill_uniform(rng, -1.0, 1.0);
  }
};

void configure(const Case& c) {
  zt_emu::options().cc_major = c.cc;
  zt_emu::options().smem_optin = c.optin;
  zt_emu::options().late_async_copies = c.late;
}

// Runs the emulated forward and backward into r.out, r.lse, r.dqkv.
void run_cuda(const Case& c, Tensors& r) {
  const int C = c.NH * c.HS;
  Workspace wf(kc::attention_fwd_workspace_bytes(c.B, c.T, C, c.NH));
  ASSERT_EQ(kc::attention_fwd(c.dt, r.out.data(), r.lse.as<float>(), r.qkv.data(), c.B, c.T, C,
                              c.NH, wf.data(), nullptr),
            cudaSuccess);
  Workspace wb(kc::attention_bwd_workspace_bytes(c.B, c.T, C, c.NH));
  ASSERT_EQ(kc::attention_bwd(c.dt, r.dqkv.data(), r.dout.data(), r.qkv.data(), r.out.data(),
                              r.lse.as<float>(), c.B, c.T, C, c.NH, wb.data(), nullptr),
            cudaSuccess);
}

bool launched(const std::string& part) {
  for (const std::string& k : zt_emu::stats().kernels) {
    if (k.find(part) != std::string::npos) return true;
  }
  return false;
}

// Dq, dK and dV of dqkv (B*T rows of [dq | dk | dv]) as separate vectors.
std::vector<double> section(const std::vector<double>& dqkv, int rows, int C, int sec) {
  std::vector<double> s;
  s.reserve(size_t(rows) * C);
  for (int t = 0; t < rows; ++t) {
    for (int j = 0; j < C; ++j) s.push_back(dqkv[(size_t(t) * 3 + sec) * C + j]);
  }
  return s;
}

void expect_close(const std::string& who, const Case& c, const std::vector<double>& out,
                  const std::vector<double>& lse, const std::vector<double>& dqkv,
                  const std::vector<double>& out_want, const std::vector<double>& lse_want,
                  const std::vector<double>& dqkv_want) {
  const Tols tol = tolerances(c.dt);
  const int rows = c.B * c.T, C = c.NH * c.HS;
  EXPECT_TRUE(close_scaled("out vs " + who, out, out_want, tol.out));
  EXPECT_TRUE(close_scaled("lse vs " + who, lse, lse_want, tol.lse));
  const char* names[3] = {"dq", "dk", "dv"};
  for (int sec = 0; sec < 3; ++sec) {
    EXPECT_TRUE(close_scaled(std::string(names[sec]) + " vs " + who, section(dqkv, rows, C, sec),
                             section(dqkv_want, rows, C, sec), tol.grad));
  }
}

class AttentionEmuTest : public EmuTestWithParam<Case> {};

TEST_P(AttentionEmuTest, MatchesReferenceAndCpuTwin) {
  const Case c = GetParam();
  configure(c);
  const int C = c.NH * c.HS;
  Tensors r(c, C);
  run_cuda(c, r);
  if (HasFatalFailure()) return;
  EXPECT_EQ(launched("fwd_tc_kernel"), c.fwd_tc) << "forward path";
  EXPECT_EQ(launched("dq_tc_kernel"), c.bwd_tc) << "backward path";
  EXPECT_TRUE(r.out.guards_intact() && r.lse.guards_intact() && r.dqkv.guards_intact())
      << "a write outside out, lse or dqkv";

  // fp64 reference on the rounded inputs.
  const std::vector<double> qkv = widen(r.qkv.values()), dout = widen(r.dout.values());
  std::vector<double> out_ref(r.out.size()), lse_ref(r.lse.size()), dqkv_ref(r.dqkv.size());
  kernels::ref::attention_fwd(out_ref.data(), lse_ref.data(), qkv.data(), c.B, c.T, C, c.NH);
  kernels::ref::attention_bwd(dqkv_ref.data(), dout.data(), qkv.data(), c.B, c.T, C, c.NH);
  const std::vector<double> out = widen(r.out.values()), lse = widen(r.lse.values()),
                            dqkv = widen(r.dqkv.values());
  expect_close("fp64 reference", c, out, lse, dqkv, out_ref, lse_ref, dqkv_ref);

  // The CPU twin on the same inputs.
  Buf out_cpu(c.dt, r.out.size()), lse_cpu(kF32, r.lse.size()), dqkv_cpu(c.dt, r.dqkv.size());
  with_type(c.dt, [&](auto tag) {
    using T = decltype(tag);
    std::vector<unsigned char> scratch(
        std::max(kernels::cpu::attention_fwd_scratch_bytes(c.B, c.T, C, c.NH),
                 kernels::cpu::attention_bwd_scratch_bytes(c.B, c.T, C, c.NH)));
    kernels::cpu::attention_fwd<T>(out_cpu.as<T>(), lse_cpu.as<float>(), r.qkv.as<T>(), c.B, c.T, C,
                                   c.NH, scratch.data());
    kernels::cpu::attention_bwd<T>(dqkv_cpu.as<T>(), r.dout.as<T>(), r.qkv.as<T>(), out_cpu.as<T>(),
                                   lse_cpu.as<float>(), c.B, c.T, C, c.NH, scratch.data());
  });
  expect_close("CPU twin", c, out, lse, dqkv, widen(out_cpu.values()), widen(lse_cpu.values()),
               widen(dqkv_cpu.values()));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionEmuTest,
    ::testing::Values(
        // Tensor cores.
        Case{kBF16, 1, 130, 2, 64, true, true}, Case{kF16, 2, 64, 1, 64, true, true},
        Case{kBF16, 1, 1, 1, 64, true, true}, Case{kBF16, 1, 100, 1, 48, true, true},
        Case{kF16, 1, 70, 2, 16, true, true}, Case{kBF16, 1, 129, 1, 96, true, true},
        Case{kF16, 1, 65, 1, 128, true, true}, Case{kF16, 2, 97, 2, 32, true, true},
        Case{kBF16, 1, 70, 1, 80, true, true}, Case{kF16, 1, 66, 1, 112, true, true},
        Case{kBF16, 1, 70, 1, 64, true, true, /*misalign=*/true},
        Case{kF16, 1, 130, 1, 32, true, true, /*misalign=*/true, /*late=*/true},
        Case{kBF16, 1, 130, 1, 64, true, true, false, /*late=*/true},
        // Four query tiles: a block streams three key tiles through the two cp.async stages.
        Case{kBF16, 1, 200, 1, 64, true, true}, Case{kF16, 1, 193, 2, 32, true, true, true},
        // Tensor-core forward; the backward's tiles do not fit 99 KiB: CUDA cores.
        Case{kF16, 1, 97, 1, 128, true, false, false, false, 9, 101376},
        // CUDA cores.
        Case{kF32, 1, 130, 2, 64, false, false}, Case{kF32, 2, 33, 3, 5, false, false},
        Case{kBF16, 1, 40, 1, 24, false, false}, Case{kF16, 1, 31, 2, 8, false, false},
        Case{kF32, 1, 50, 1, 1, false, false},
        Case{kF32, 1, 66, 1, 32, false, false, /*misalign=*/true},
        Case{kF16, 1, 97, 1, 15, false, false, /*misalign=*/true},
        Case{kBF16, 1, 130, 1, 15, false, false},
        Case{kF32, 2, 129, 2, 15, false, false, false, /*late=*/true},
        Case{kBF16, 1, 70, 2, 64, false, false, false, false, /*cc=*/7, 101376},
        // Tiles in the workspace (HS 200 does not fit 48 KiB of shared memory).
        Case{kF32, 1, 70, 1, 200, false, false, false, false, 9, 48 * 1024}),
    case_name);

// The same inputs under other thread and block orders, with late cp.async: the same bits (the
// forward has no cross-thread reduction whose order could vary; the backward promises it).
class AttentionEmuDeterminismTest : public EmuTestWithParam<Case> {};

TEST_P(AttentionEmuDeterminismTest, SameBitsUnderAdversarialSchedules) {
  const Case c = GetParam();
  configure(c);
  const int C = c.NH * c.HS;
  Tensors base(c, C);
  run_cuda(c, base);
  for (uint64_t seed : {2, 3}) {
    Tensors again(c, C);
    configure(c);
    use_adversarial_schedule(seed);
    run_cuda(c, again);
    if (HasFatalFailure()) return;
    const std::string tag = " (schedule seed " + std::to_string(seed) + ")";
    EXPECT_TRUE(same_bits("out" + tag, base.out.data(), again.out.data(), base.out.bytes(),
                          elem_size(c.dt)));
    EXPECT_TRUE(same_bits("lse" + tag, base.lse.data(), again.lse.data(), base.lse.bytes()));
    EXPECT_TRUE(same_bits("dqkv" + tag, base.dqkv.data(), again.dqkv.data(), base.dqkv.bytes(),
                          elem_size(c.dt)));
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionEmuDeterminismTest,
                         ::testing::Values(Case{kBF16, 1, 130, 2, 64, true, true},
                                           Case{kF16, 1, 97, 1, 32, true, true, /*misalign=*/true},
                                           Case{kF32, 1, 97, 2, 15, false, false},
                                           Case{kF32, 1, 70, 1, 200, false, false, false, false, 9,
                                                48 * 1024}),
                         case_name);

class AttentionEmuArgsTest : public EmuTest {};

TEST_F(AttentionEmuArgsTest, EmptyShapesLaunchNothing) {
  EXPECT_EQ(kc::attention_fwd(kBF16, nullptr, nullptr, nullptr, 0, 5, 64, 1, nullptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(kc::attention_bwd(kBF16, nullptr, nullptr, nullptr, nullptr, nullptr, 2, 0, 64, 1,
                              nullptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

TEST_F(AttentionEmuArgsTest, BadArgumentsAreInvalidValue) {
  EXPECT_EQ(kc::attention_fwd(3, nullptr, nullptr, nullptr, 1, 5, 64, 1, nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kc::attention_fwd(kF32, nullptr, nullptr, nullptr, 1, 5, 64, 3, nullptr, nullptr),
            cudaErrorInvalidValue);  // C % NH != 0
  EXPECT_EQ(kc::attention_bwd(kF16, nullptr, nullptr, nullptr, nullptr, nullptr, -1, 5, 64, 1,
                              nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
