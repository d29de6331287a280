// kernels/cuda/optimizer.cu on the CPU emulator (cuda_emu.h), against the CPU twins
// (kernels/cpu/optimizer.cpp, quantize.cpp, adafactor.cpp), bit for bit where the contract says so
// (optimizer.cuh): AdamW, SGD (with and without momentum, dampening, Nesterov) and Lion for
// fp32/bf16/fp16 gradients, over lengths and misalignments that take the 16-byte path, its scalar
// head and tail, or the all-scalar path; 8-bit block-wise quantisation (codes and absmax
// identical, also for zero, NaN and Inf blocks and clamped first blocks), dequantisation and
// AdamW8bit; Adafactor's sums (fp64, another order than the CPU: equal to rounding, column sums
// exactly when the piece spans at most 32 rows) and its elementwise updates (bit for bit); and
// determinism of the reductions under adversarial schedules.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/adafactor.h"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/optimizer.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace kc = zt::kernels::cuda;
namespace cpu = zt::kernels::cpu;

// Gradients with the awkward values: zeros, denormal-sized, large, of both signs.
void fill_grad(Buf& g, Rng& rng) {
  for (size_t i = 0; i < g.size(); ++i) {
    float v = static_cast<float>(rng.uniform(-1.0, 1.0));
    switch (i % 17) {
      case 3:
        v = 0.0f;
        break;
      case 7:
        v *= 1e-38f;  // denormal in fp32; flushes to zero in bf16/fp16 storage rounding
        break;
      case 11:
        v *= 3e4f;
        break;
      default:
        break;
    }
    g.set(i, v);
  }
}

void fill_f32(Buf& b, Rng& rng, double lo, double hi) { b.fill_uniform(rng, lo, hi); }

// ---- AdamW, SGD, Lion ----

struct ElemCase {
  int gdt;
  size_t n;
  size_t state_off, grad_off;  // elements past a 256-byte boundary
};

void PrintTo(const ElemCase& c, std::ostream* os) {
  *os << dt_name(c.gdt) << " n" << c.n << " offsets " << c.state_off << "/" << c.grad_off;
}

std::string elem_name(const ::testing::TestParamInfo<ElemCase>& info) {
  const ElemCase& c = info.param;
  return std::string(dt_name(c.gdt)) + "_n" + std::to_string(c.n) + "_state" +
         std::to_string(c.state_off) + "_grad" + std::to_string(c.grad_off);
}

// State buffers of one update, the emulated and the CPU copy.
struct State {
  Buf master, m, v, grad;
  State(const ElemCase& c, uint64_t seed)
      : master(kF32, c.n, c.state_off),
        m(kF32, c.n, c.state_off),
        v(kF32, c.n, c.state_off),
        grad(c.gdt, c.n, c.grad_off) {
    Rng rng(seed);
    fill_f32(master, rng, -1.0, 1.0);
    fill_f32(m, rng, -0.1, 0.1);
    fill_f32(v, rng, 0.0, 0.01);
    fill_grad(grad, rng);
    for (size_t i = 0; i < c.n; i += 13) m.set(i, 0.0f);  // Lion: sign(0) where g is 0 too
  }
};

::testing::AssertionResult same(const std::string& what, const Buf& a, const Buf& b) {
  return same_bits(what, a.data(), b.data(), a.bytes());
}

class OptimizerElementwiseEmuTest : public EmuTestWithParam<ElemCase> {};

TEST_P(OptimizerElementwiseEmuTest, AdamWBitExact) {
  const ElemCase c = GetParam();
  State gpu(c, 11), host(c, 11);
  const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
  const float bc1 = 1.0f - std::pow(b1, 3.0f), bc2 = 1.0f - std::pow(b2, 3.0f), gs = 0.5f;
  ASSERT_EQ(kc::adamw_update(c.gdt, gpu.master.as<float>(), gpu.m.as<float>(), gpu.v.as<float>(),
                             gpu.grad.data(), c.n, lr, b1, b2, eps, wd, bc1, bc2, gs, nullptr),
            cudaSuccess);
  with_type(c.gdt, [&](auto tag) {
    using T = decltype(tag);
    cpu::adamw_update<T>(host.master.as<float>(), host.m.as<float>(), host.v.as<float>(),
                         host.grad.as<T>(), c.n, lr, b1, b2, eps, wd, bc1, bc2, gs);
  });
  EXPECT_TRUE(same("master", gpu.master, host.master));
  EXPECT_TRUE(same("m", gpu.m, host.m));
  EXPECT_TRUE(same("v", gpu.v, host.v));
  EXPECT_TRUE(gpu.master.guards_intact() && gpu.m.guards_intact() && gpu.v.guards_intact());
}

TEST_P(OptimizerElementwiseEmuTest, SgdBitExact) {
  const ElemCase c = GetParam();
  struct Variant {
    float momentum, dampening, wd;
    bool nesterov, first;
  };
  for (const Variant& s :
       {Variant{0.0f, 0.0f, 0.01f, false, false}, Variant{0.9f, 0.0f, 0.0f, false, true},
        Variant{0.9f, 0.1f, 0.01f, false, false}, Variant{0.8f, 0.0f, 0.02f, true, false}}) {
    State gpu(c, 12), host(c, 12);
    float* gbuf = s.momentum != 0.0f ? gpu.m.as<float>() : nullptr;
    float* hbuf = s.momentum != 0.0f ? host.m.as<float>() : nullptr;
    ASSERT_EQ(kc::sgd_update(c.gdt, gpu.master.as<float>(), gbuf, gpu.grad.data(), c.n, 0.05f,
                             s.momentum, s.dampening, s.wd, s.nesterov, s.first, 0.75f, nullptr),
              cudaSuccess);
    with_type(c.gdt, [&](auto tag) {
      using T = decltype(tag);
      cpu::sgd_update<T>(host.master.as<float>(), hbuf, host.grad.as<T>(), c.n, 0.05f, s.momentum,
                         s.dampening, s.wd, s.nesterov, s.first, 0.75f);
    });
    const std::string tag = "momentum " + std::to_string(s.momentum) +
                            (s.nesterov ? " nesterov" : "") + (s.first ? " first step" : "");
    EXPECT_TRUE(same("master, " + tag, gpu.master, host.master));
    EXPECT_TRUE(same("momentum buffer, " + tag, gpu.m, host.m));
  }
}

TEST_P(OptimizerElementwiseEmuTest, LionBitExact) {
  const ElemCase c = GetParam();
  State gpu(c, 13), host(c, 13);
  ASSERT_EQ(kc::lion_update(c.gdt, gpu.master.as<float>(), gpu.m.as<float>(), gpu.grad.data(), c.n,
                            1e-4f, 0.9f, 0.99f, 0.1f, 2.0f, nullptr),
            cudaSuccess);
  with_type(c.gdt, [&](auto tag) {
    using T = decltype(tag);
    cpu::lion_update<T>(host.master.as<float>(), host.m.as<float>(), host.grad.as<T>(), c.n, 1e-4f,
                        0.9f, 0.99f, 0.1f, 2.0f);
  });
  EXPECT_TRUE(same("master", gpu.master, host.master));
  EXPECT_TRUE(same("m", gpu.m, host.m));
}

INSTANTIATE_TEST_SUITE_P(Shapes, OptimizerElementwiseEmuTest,
                         ::testing::Values(ElemCase{kF32, 1, 0, 0}, ElemCase{kF32, 1003, 0, 0},
                                           ElemCase{kF32, 1003, 1, 1}, ElemCase{kF32, 258, 2, 0},
                                           ElemCase{kBF16, 7, 0, 0}, ElemCase{kBF16, 1003, 0, 0},
                                           ElemCase{kBF16, 1003, 3, 3}, ElemCase{kBF16, 1003, 0, 1},
                                           ElemCase{kF16, 5, 1, 1}, ElemCase{kF16, 1003, 0, 0},
                                           ElemCase{kF16, 1003, 1, 1}, ElemCase{kF16, 777, 0, 2}),
                         elem_name);

// ---- 8-bit quantisation ----

const cpu::QuantMap& map_of(bool is_signed) {
  return is_signed ? cpu::signed_dynamic_map() : cpu::unsigned_dynamic_map();
}

struct QuantCase {
  size_t n, first_block;
};

class QuantizeEmuTest : public EmuTestWithParam<QuantCase> {};

// Values for block-wise quantisation: block 1 all zero, block 2 holding NaN and Inf, elements equal
// to +-absmax, ties between codes are left to chance.
std::vector<float> quant_values(size_t n, size_t fb, bool is_signed, Rng& rng) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(is_signed ? rng.uniform(-3.0, 3.0) : rng.uniform(0.0, 3.0));
  }
  const size_t b1 = std::min(n, fb), e1 = std::min(n, fb + 256);
  for (size_t i = b1; i < e1; ++i) x[i] = 0.0f;
  if (n > fb + 300) {
    x[fb + 260] = NAN;
    x[fb + 270] = INFINITY;
  }
  if (n > 2) x[1] = x[0] < 0 ? -2.5f : 2.5f;
  return x;
}

TEST_P(QuantizeEmuTest, CodesAbsmaxAndDequantisedValuesIdentical) {
  const QuantCase c = GetParam();
  const size_t blocks = cpu::quant_block_count(c.n, c.first_block);
  for (bool is_signed : {true, false}) {
    Rng rng(c.n * 31 + c.first_block);
    const std::vector<float> x =
        quant_values(c.n, std::clamp<size_t>(c.first_block, 1, 256), is_signed, rng);
    const cpu::QuantMap& map = map_of(is_signed);
    std::vector<uint8_t> codes(c.n, 0xAB), codes_cpu(c.n);
    std::vector<float> absmax(blocks, -1.0f), absmax_cpu(blocks);
    ASSERT_EQ(kc::quantize_blocks(map.code, x.data(), c.n, c.first_block, codes.data(),
                                  absmax.data(), nullptr),
              cudaSuccess);
    cpu::quantize_blocks(map, x.data(), c.n, c.first_block, codes_cpu.data(), absmax_cpu.data());
    const std::string tag = is_signed ? " (signed map)" : " (unsigned map)";
    EXPECT_TRUE(same_bits("codes" + tag, codes.data(), codes_cpu.data(), c.n, 1));
    EXPECT_TRUE(same_bits("absmax" + tag, absmax.data(), absmax_cpu.data(), 4 * blocks));

    std::vector<float> out(c.n, -7.0f), out_cpu(c.n);
    ASSERT_EQ(kc::dequantize_blocks(map.code, codes_cpu.data(), absmax_cpu.data(), c.n,
                                    c.first_block, out.data(), nullptr),
              cudaSuccess);
    cpu::dequantize_blocks(map, codes_cpu.data(), absmax_cpu.data(), c.n, c.first_block,
                           out_cpu.data());
    for (size_t i = 0; i < c.n; ++i) {
      if (std::isnan(out[i]) && std::isnan(out_cpu[i])) continue;  // NaN payloads may differ
      ASSERT_EQ(std::memcmp(&out[i], &out_cpu[i], 4), 0)
          << "dequantised element " << i << tag << ": " << out[i] << " vs " << out_cpu[i];
    }
  }
}

TEST_P(QuantizeEmuTest, AdamW8bitBitExact) {
  const QuantCase c = GetParam();
  const size_t blocks = cpu::quant_block_count(c.n, c.first_block);
  for (int gdt : kAllDtypes) {
    Rng rng(c.n + 7 * c.first_block + gdt);
    Buf grad(gdt, c.n);
    fill_grad(grad, rng);
    std::vector<float> master(c.n), m_abs(blocks), v_abs(blocks);
    std::vector<uint8_t> m_codes(c.n), v_codes(c.n);
    for (auto& p : master) p = static_cast<float>(rng.uniform(-1.0, 1.0));
    for (auto& a : m_abs) a = static_cast<float>(rng.uniform(0.01, 0.1));
    for (auto& a : v_abs) a = static_cast<float>(rng.uniform(0.0001, 0.001));
    for (auto& q : m_codes) q = static_cast<uint8_t>(rng.below(256));
    for (auto& q : v_codes) q = static_cast<uint8_t>(rng.below(256));
    if (blocks > 1) m_abs[1] = 0.0f;  // an all-zero block of m
    auto master_cpu = master, m_abs_cpu = m_abs, v_abs_cpu = v_abs;
    auto m_codes_cpu = m_codes, v_codes_cpu = v_codes;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f, bc1 = 0.19f,
                bc2 = 0.002997f, gs = 0.5f;
    ASSERT_EQ(kc::adamw8bit_update(gdt, cpu::signed_dynamic_map().code,
                                   cpu::unsigned_dynamic_map().code, master.data(), m_codes.data(),
                                   m_abs.data(), v_codes.data(), v_abs.data(), grad.data(), c.n,
                                   c.first_block, lr, b1, b2, eps, wd, bc1, bc2, gs, nullptr),
              cudaSuccess);
    with_type(gdt, [&](auto tag) {
      using T = decltype(tag);
      cpu::adamw8bit_update<T>(master_cpu.data(), m_codes_cpu.data(), m_abs_cpu.data(),
                               v_codes_cpu.data(), v_abs_cpu.data(), grad.as<T>(), c.n,
                               c.first_block, lr, b1, b2, eps, wd, bc1, bc2, gs);
    });
    const std::string tag = std::string(" (grad ") + dt_name(gdt) + ")";
    EXPECT_TRUE(same_bits("master" + tag, master.data(), master_cpu.data(), 4 * c.n));
    EXPECT_TRUE(same_bits("m codes" + tag, m_codes.data(), m_codes_cpu.data(), c.n, 1));
    EXPECT_TRUE(same_bits("v codes" + tag, v_codes.data(), v_codes_cpu.data(), c.n, 1));
    EXPECT_TRUE(same_bits("m absmax" + tag, m_abs.data(), m_abs_cpu.data(), 4 * blocks));
    EXPECT_TRUE(same_bits("v absmax" + tag, v_abs.data(), v_abs_cpu.data(), 4 * blocks));
  }
}

INSTANTIATE_TEST_SUITE_P(Blocks, QuantizeEmuTest,
                         ::testing::Values(QuantCase{1, 256}, QuantCase{300, 256},
                                           QuantCase{777, 100}, QuantCase{613, 1},
                                           QuantCase{640, 0}, QuantCase{700, 1000}),
                         [](const ::testing::TestParamInfo<QuantCase>& info) {
                           return "n" + std::to_string(info.param.n) + "_first" +
                                  std::to_string(info.param.first_block);
                         });

// ---- Adafactor ----

struct FactorCase {
  int gdt;
  int64_t rows, cols, first;
  size_t n;
};

void PrintTo(const FactorCase& c, std::ostream* os) {
  *os << dt_name(c.gdt) << " " << c.rows << "x" << c.cols << " piece " << c.first << "+" << c.n;
}

class AdafactorEmuTest : public EmuTestWithParam<FactorCase> {};

// The CPU twin's Adafactor update leaves a few roundings to the host compiler's FMA contraction
// (Note [CPU rounding sequence] in kernels/cuda/optimizer.cu, which the CUDA code copies for the
// -O3 -march=native build). Sanitizer instrumentation changes those choices (one rounding of a
// term of the size of master, so a few ulps of a master that nearly cancels), so sanitizer builds
// allow that; every other build must match bit for bit.
::testing::AssertionResult same_update(const std::string& what, const Buf& a, const Buf& b) {
#ifdef ZT_EMU_SANITIZED
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = a.get(i), y = b.get(i);
    if (!(std::fabs(x - y) <= 0x1p-22 * std::max(1.0, std::fabs(y)))) {
      return ::testing::AssertionFailure() << what << ": element " << i << " " << x << " vs " << y;
    }
  }
  return ::testing::AssertionSuccess();
#else
  return same(what, a, b);
#endif
}

std::vector<float> positive(size_t n, Rng& rng) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(0.1, 2.0));
  return v;
}

bool near(double a, double b) { return std::fabs(a - b) <= 1e-12 * std::fabs(b) + 1e-300; }

TEST_P(AdafactorEmuTest, SumsMatchCpuTwin) {
  const FactorCase c = GetParam();
  Rng rng(static_cast<uint64_t>(c.rows * 1000 + c.cols + c.gdt));
  Buf grad(c.gdt, c.n, 1);
  fill_grad(grad, rng);
  const float gs = 0.5f, eps1 = 1e-30f;
  std::vector<double> rows(static_cast<size_t>(c.rows)), cols(static_cast<size_t>(c.cols));
  for (auto& s : rows) s = rng.uniform(0.0, 1.0);
  for (auto& s : cols) s = rng.uniform(0.0, 1.0);
  auto rows_cpu = rows, cols_cpu = cols;
  Workspace ws(kc::adafactor_workspace_bytes(c.n, c.rows, c.cols));
  ASSERT_EQ(kc::adafactor_sq_sums(c.gdt, grad.data(), c.n, c.first, c.cols, gs, eps1, rows.data(),
                                  cols.data(), ws.data(), nullptr),
            cudaSuccess);
  with_type(c.gdt, [&](auto tag) {
    using T = decltype(tag);
    cpu::adafactor_sq_sums<T>(grad.as<T>(), c.n, c.first, c.cols, gs, eps1, rows_cpu.data(),
                              cols_cpu.data());
  });
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_TRUE(near(rows[r], rows_cpu[r]))
        << "row sum " << r << ": " << rows[r] << " vs " << rows_cpu[r];
  }
  const int64_t spanned = (c.first + static_cast<int64_t>(c.n) - 1) / c.cols - c.first / c.cols + 1;
  for (size_t j = 0; j < cols.size(); ++j) {
    if (spanned <= 32) {  // one chunk, the CPU's order: exact
      EXPECT_EQ(std::memcmp(&cols[j], &cols_cpu[j], 8), 0)
          << "column sum " << j << ": " << cols[j] << " vs " << cols_cpu[j];
    } else {
      EXPECT_TRUE(near(cols[j], cols_cpu[j]))
          << "column sum " << j << ": " << cols[j] << " vs " << cols_cpu[j];
    }
  }

  Rng frng(5);
  const std::vector<float> rfac = positive(static_cast<size_t>(c.rows), frng);
  const std::vector<float> cfac = positive(static_cast<size_t>(c.cols), frng);
  double fsq = -1.0, fsq_cpu = 0.0;
  ASSERT_EQ(kc::adafactor_factored_sq(c.gdt, grad.data(), c.n, c.first, c.cols, gs, rfac.data(),
                                      cfac.data(), &fsq, ws.data(), nullptr),
            cudaSuccess);
  with_type(c.gdt, [&](auto tag) {
    using T = decltype(tag);
    fsq_cpu = cpu::adafactor_factored_sq<T>(grad.as<T>(), c.n, c.first, c.cols, gs, rfac.data(),
                                            cfac.data());
  });
  EXPECT_TRUE(near(fsq, fsq_cpu)) << "factored sum of squares " << fsq << " vs " << fsq_cpu;

  std::vector<float> v = positive(c.n, frng);
  auto v_cpu = v;
  double usq = -1.0, usq_cpu = 0.0;
  ASSERT_EQ(kc::adafactor_unfactored_v(c.gdt, grad.data(), v.data(), c.n, gs, 0.8f, eps1, &usq,
                                       ws.data(), nullptr),
            cudaSuccess);
  with_type(c.gdt, [&](auto tag) {
    using T = decltype(tag);
    usq_cpu = cpu::adafactor_unfactored_v<T>(grad.as<T>(), v_cpu.data(), c.n, gs, 0.8f, eps1);
  });
  EXPECT_TRUE(same_bits("unfactored v", v.data(), v_cpu.data(), 4 * c.n));
  EXPECT_TRUE(near(usq, usq_cpu)) << "unfactored sum of squares " << usq << " vs " << usq_cpu;
}

TEST_P(AdafactorEmuTest, ApplyBitExact) {
  const FactorCase c = GetParam();
  Rng rng(static_cast<uint64_t>(c.rows * 77 + c.cols + c.gdt));
  Buf grad(c.gdt, c.n, c.first % 2);
  fill_grad(grad, rng);
  const std::vector<float> rfac = positive(static_cast<size_t>(c.rows), rng);
  const std::vector<float> cfac = positive(static_cast<size_t>(c.cols), rng);
  const std::vector<float> v = positive(c.n, rng);
  for (int variant = 0; variant < 4; ++variant) {
    const bool factored = variant < 2, with_m = variant % 2 == 0;
    Buf master(kF32, c.n, c.first % 4), m(kF32, c.n, c.first % 4);
    master.fill_uniform(rng, -1.0, 1.0);
    m.fill_uniform(rng, -0.01, 0.01);
    Buf master_cpu(kF32, c.n), m_cpu(kF32, c.n);
    master_cpu.copy_from(master);
    m_cpu.copy_from(m);
    const float* rf = factored ? rfac.data() : nullptr;
    const float* cf = factored ? cfac.data() : nullptr;
    const float* vv = factored ? nullptr : v.data();
    ASSERT_EQ(kc::adafactor_apply(c.gdt, master.as<float>(), with_m ? m.as<float>() : nullptr,
                                  grad.data(), c.n, c.first, c.cols, rf, cf, vv, 0.5f, 0.01f, 1e-2f,
                                  0.9f, 0.1f, nullptr),
              cudaSuccess);
    with_type(c.gdt, [&](auto tag) {
      using T = decltype(tag);
      cpu::adafactor_apply<T>(master_cpu.as<float>(), with_m ? m_cpu.as<float>() : nullptr,
                              grad.as<T>(), c.n, c.first, c.cols, rf, cf, vv, 0.5f, 0.01f, 1e-2f,
                              0.9f, 0.1f);
    });
    const std::string tag =
        std::string(factored ? " factored" : " unfactored") + (with_m ? " with m" : " without m");
    EXPECT_TRUE(same_update("master" + tag, master, master_cpu));
    EXPECT_TRUE(same_update("m" + tag, m, m_cpu));
  }
}

TEST_P(AdafactorEmuTest, SumsDeterministicUnderAdversarialSchedules) {
  const FactorCase c = GetParam();
  Rng rng(99);
  Buf grad(c.gdt, c.n);
  fill_grad(grad, rng);
  const std::vector<float> rfac = positive(static_cast<size_t>(c.rows), rng);
  const std::vector<float> cfac = positive(static_cast<size_t>(c.cols), rng);
  std::vector<double> first_result;
  for (uint64_t seed : {0, 2, 3}) {
    zt_emu::reset();
    if (seed != 0) use_adversarial_schedule(seed);
    std::vector<double> rows(static_cast<size_t>(c.rows), 0.0), cols(static_cast<size_t>(c.cols));
    double fsq = 0.0;
    Workspace ws(kc::adafactor_workspace_bytes(c.n, c.rows, c.cols));
    ASSERT_EQ(kc::adafactor_sq_sums(c.gdt, grad.data(), c.n, c.first, c.cols, 1.0f, 1e-30f,
                                    rows.data(), cols.data(), ws.data(), nullptr),
              cudaSuccess);
    ASSERT_EQ(kc::adafactor_factored_sq(c.gdt, grad.data(), c.n, c.first, c.cols, 1.0f, rfac.data(),
                                        cfac.data(), &fsq, ws.data(), nullptr),
              cudaSuccess);
    std::vector<double> result = rows;
    result.insert(result.end(), cols.begin(), cols.end());
    result.push_back(fsq);
    if (seed == 0) {
      first_result = result;
    } else {
      EXPECT_TRUE(same_bits("sums under schedule " + std::to_string(seed), result.data(),
                            first_result.data(), 8 * result.size(), 8));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Pieces, AdafactorEmuTest,
    ::testing::Values(FactorCase{kF32, 37, 45, 50, 1500}, FactorCase{kBF16, 37, 45, 0, 1665},
                      FactorCase{kF16, 37, 45, 91, 1400}, FactorCase{kF32, 20, 33, 7, 600},
                      FactorCase{kF16, 20, 33, 0, 660}, FactorCase{kBF16, 3, 1, 1, 2}),
    [](const ::testing::TestParamInfo<FactorCase>& info) {
      const FactorCase& c = info.param;
      return std::string(dt_name(c.gdt)) + "_" + std::to_string(c.rows) + "x" +
             std::to_string(c.cols) + "_first" + std::to_string(c.first) + "_n" +
             std::to_string(c.n);
    });

class OptimizerEmuArgsTest : public EmuTest {};

TEST_F(OptimizerEmuArgsTest, EmptyAndInvalid) {
  EXPECT_EQ(kc::adamw_update(kF32, nullptr, nullptr, nullptr, nullptr, 0, 1e-3f, 0.9f, 0.999f,
                             1e-8f, 0.0f, 1.0f, 1.0f, 1.0f, nullptr),
            cudaSuccess);
  EXPECT_EQ(kc::adamw_update(5, nullptr, nullptr, nullptr, nullptr, 4, 1e-3f, 0.9f, 0.999f, 1e-8f,
                             0.0f, 1.0f, 1.0f, 1.0f, nullptr),
            cudaErrorInvalidValue);
  double r = -1.0;
  EXPECT_EQ(kc::adafactor_factored_sq(kF32, nullptr, 0, 0, 4, 1.0f, nullptr, nullptr, &r, nullptr,
                                      nullptr),
            cudaSuccess);
  EXPECT_EQ(r, 0.0);
  EXPECT_EQ(
      kc::adafactor_sq_sums(kF32, &r, 1, 0, 0, 1.0f, 0.0f, nullptr, nullptr, nullptr, nullptr),
      cudaErrorInvalidValue);
  EXPECT_EQ(zt_emu::stats().launches, 0);
}

}  // namespace
}  // namespace zt::emu_test
