// Every op of the CUDA backend against its CPU twin (the reference; tests/cpu checks it against
// fp64 loops), over dtype x odd shapes, with the tolerance table of cuda_test_util.h; plus
// determinism (the same call twice gives the same bits) where the CPU backend is deterministic.
// Without a device every test skips, saying why.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/backend/optimizer_ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace zt {
namespace {

using cudatest::close;
using cudatest::OpKind;
using cudatest::random_values;
using cudatest::tolerance;
using cudatest::Twin;
using Tolerance = cudatest::Tolerance;

class CudaOpsTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    ZT_REQUIRE_CUDA_DEVICE();
    be_ = cudatest::make_backends();
  }
  Twin twin(Shape s, const std::vector<float>& v, DType dt) {
    return Twin(*be_.cpu, *be_.gpu, dt, s, v);
  }
  Twin twin(Shape s, const std::vector<float>& v) { return twin(s, v, GetParam()); }
  Twin zeros(Shape s, DType dt) {
    return twin(s, std::vector<float>(static_cast<size_t>(s.numel()), 0.0f), dt);
  }
  Ops& cpu() { return be_.cpu->ops(); }
  Ops& gpu() { return be_.gpu->ops(); }
  cudatest::Tolerance tol(OpKind k) const { return tolerance(GetParam(), k); }

  cudatest::Backends be_;
};

TEST_P(CudaOpsTest, Elementwise) {
  for (int64_t n : {1, 7, 1000, 4099}) {
    for (int64_t off : {0, 1}) {  // off 1: a slice not 16-byte aligned
      const int64_t m = n + off;
      Twin a = twin({m}, random_values(static_cast<size_t>(m), 1, 2.0f));
      Twin b = twin({m}, random_values(static_cast<size_t>(m), 2));
      Twin out = zeros({m}, GetParam());
      const std::string tag = "n=" + std::to_string(n) + " off=" + std::to_string(off);
      auto sl = [&](const Tensor& t) { return t.slice(off, m); };
      cpu().gelu_fwd(sl(out.cpu()), sl(a.cpu()));
      gpu().gelu_fwd(sl(out.gpu()), sl(a.gpu()));
      EXPECT_TRUE(
          close("gelu_fwd " + tag, out.cpu_values(), out.gpu_values(), tol(OpKind::kElementwise)));
      cpu().gelu_bwd(sl(out.cpu()), sl(a.cpu()), sl(b.cpu()));
      gpu().gelu_bwd(sl(out.gpu()), sl(a.gpu()), sl(b.gpu()));
      EXPECT_TRUE(
          close("gelu_bwd " + tag, out.cpu_values(), out.gpu_values(), tol(OpKind::kElementwise)));
      cpu().residual_fwd(sl(out.cpu()), sl(a.cpu()), sl(b.cpu()));
      gpu().residual_fwd(sl(out.gpu()), sl(a.gpu()), sl(b.gpu()));
      EXPECT_TRUE(close("residual_fwd " + tag, out.cpu_values(), out.gpu_values(),
                        tol(OpKind::kElementwise)));
      cpu().add_inplace(sl(out.cpu()), sl(a.cpu()));
      gpu().add_inplace(sl(out.gpu()), sl(a.gpu()));
      EXPECT_TRUE(close("add_inplace " + tag, out.cpu_values(), out.gpu_values(),
                        tol(OpKind::kElementwise)));
    }
  }
}

TEST_P(CudaOpsTest, Encoder) {
  struct Case {
    int B, T, C, V;
  };
  for (Case c : {Case{3, 17, 45, 101}, Case{2, 64, 768, 1000}}) {
    std::vector<int32_t> tokens(static_cast<size_t>(c.B * c.T));
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = static_cast<int32_t>((i * 7919 + i / 3) % static_cast<size_t>(c.V / 3));
    Buffer dtok = cudatest::device_tokens(*be_.gpu, tokens);
    Twin wte = twin({c.V, c.C}, random_values(static_cast<size_t>(c.V * c.C), 3));
    Twin wpe = twin({c.T + 5, c.C}, random_values(static_cast<size_t>((c.T + 5) * c.C), 4));
    Twin out = zeros({c.B, c.T, c.C}, GetParam());
    cpu().encoder_fwd(out.cpu(), tokens.data(), wte.cpu(), wpe.cpu());
    gpu().encoder_fwd(out.gpu(), static_cast<const int32_t*>(dtok.data()), wte.gpu(), wpe.gpu());
    EXPECT_TRUE(
        close("encoder_fwd", out.cpu_values(), out.gpu_values(), tol(OpKind::kElementwise)));
    // Backward accumulates into gradients that already hold values.
    Twin dout = twin({c.B, c.T, c.C}, random_values(static_cast<size_t>(c.B * c.T * c.C), 5));
    Twin dwte = twin({c.V, c.C}, random_values(static_cast<size_t>(c.V * c.C), 6, 0.1f));
    Twin dwpe = twin({c.T + 5, c.C}, random_values(static_cast<size_t>((c.T + 5) * c.C), 7, 0.1f));
    cpu().encoder_bwd(dwte.cpu(), dwpe.cpu(), dout.cpu(), tokens.data());
    gpu().encoder_bwd(dwte.gpu(), dwpe.gpu(), dout.gpu(), static_cast<const int32_t*>(dtok.data()));
    EXPECT_TRUE(
        close("encoder_bwd dwte", dwte.cpu_values(), dwte.gpu_values(), tol(OpKind::kReduction)));
    EXPECT_TRUE(
        close("encoder_bwd dwpe", dwpe.cpu_values(), dwpe.gpu_values(), tol(OpKind::kReduction)));
    // Deterministic: the same accumulation again from the same start gives the same bits.
    Twin again = twin({c.V, c.C}, random_values(static_cast<size_t>(c.V * c.C), 6, 0.1f));
    Twin again_pe =
        twin({c.T + 5, c.C}, random_values(static_cast<size_t>((c.T + 5) * c.C), 7, 0.1f));
    gpu().encoder_bwd(again.gpu(), again_pe.gpu(), dout.gpu(),
                      static_cast<const int32_t*>(dtok.data()));
    EXPECT_EQ(again.gpu_bytes(), dwte.gpu_bytes()) << "encoder_bwd is not deterministic";
  }
}

TEST_P(CudaOpsTest, LayerNorm) {
  for (int C : {45, 768, 1601}) {
    const int N = 37;
    const size_t nc = static_cast<size_t>(N) * C;
    Twin inp = twin({N, C}, random_values(nc, 8, 3.0f));
    Twin w = twin({C}, random_values(static_cast<size_t>(C), 9));
    Twin b = twin({C}, random_values(static_cast<size_t>(C), 10));
    Twin out = zeros({N, C}, GetParam());
    Twin mean = zeros({N}, DType::kF32), rstd = zeros({N}, DType::kF32);
    cpu().layernorm_fwd(out.cpu(), mean.cpu(), rstd.cpu(), inp.cpu(), w.cpu(), b.cpu());
    gpu().layernorm_fwd(out.gpu(), mean.gpu(), rstd.gpu(), inp.gpu(), w.gpu(), b.gpu());
    const std::string tag = " C=" + std::to_string(C);
    EXPECT_TRUE(close("layernorm_fwd out" + tag, out.cpu_values(), out.gpu_values(),
                      tol(OpKind::kReduction)));
    EXPECT_TRUE(close("layernorm_fwd mean" + tag, mean.cpu_values(), mean.gpu_values(),
                      tolerance(DType::kF32, OpKind::kReduction)));
    EXPECT_TRUE(close("layernorm_fwd rstd" + tag, rstd.cpu_values(), rstd.gpu_values(),
                      tolerance(DType::kF32, OpKind::kReduction)));
    Twin dout = twin({N, C}, random_values(nc, 11));
    Twin dinp = twin({N, C}, random_values(nc, 12, 0.1f));
    Twin dw = twin({C}, random_values(static_cast<size_t>(C), 13, 0.1f));
    Twin db = twin({C}, random_values(static_cast<size_t>(C), 14, 0.1f));
    cpu().layernorm_bwd(dinp.cpu(), dw.cpu(), db.cpu(), dout.cpu(), inp.cpu(), w.cpu(), mean.cpu(),
                        rstd.cpu());
    gpu().layernorm_bwd(dinp.gpu(), dw.gpu(), db.gpu(), dout.gpu(), inp.gpu(), w.gpu(), mean.gpu(),
                        rstd.gpu());
    EXPECT_TRUE(close("layernorm_bwd dinp" + tag, dinp.cpu_values(), dinp.gpu_values(),
                      tol(OpKind::kReduction)));
    EXPECT_TRUE(close("layernorm_bwd dweight" + tag, dw.cpu_values(), dw.gpu_values(),
                      tol(OpKind::kReduction)));
    EXPECT_TRUE(close("layernorm_bwd dbias" + tag, db.cpu_values(), db.gpu_values(),
                      tol(OpKind::kReduction)));
  }
}

TEST_P(CudaOpsTest, Matmul) {
  struct Case {
    int N, C, OC;
    bool bias;
  };
  for (Case c : {Case{37, 45, 71, true}, Case{37, 45, 71, false}, Case{64, 768, 2304, true},
                 Case{3, 1, 5, true}}) {
    const std::string tag = " N=" + std::to_string(c.N) + " C=" + std::to_string(c.C) +
                            " OC=" + std::to_string(c.OC) + (c.bias ? " bias" : "");
    const float ws = 1.0f / std::sqrt(static_cast<float>(c.C));
    Twin inp = twin({c.N, c.C}, random_values(static_cast<size_t>(c.N * c.C), 15));
    Twin w = twin({c.OC, c.C}, random_values(static_cast<size_t>(c.OC * c.C), 16, ws));
    Twin b = twin({c.OC}, random_values(static_cast<size_t>(c.OC), 17));
    Twin out = zeros({c.N, c.OC}, GetParam());
    cpu().matmul_fwd(out.cpu(), inp.cpu(), w.cpu(), c.bias ? b.cpu() : Tensor());
    gpu().matmul_fwd(out.gpu(), inp.gpu(), w.gpu(), c.bias ? b.gpu() : Tensor());
    EXPECT_TRUE(
        close("matmul_fwd" + tag, out.cpu_values(), out.gpu_values(), tol(OpKind::kReduction)));
    Twin dout = twin({c.N, c.OC}, random_values(static_cast<size_t>(c.N * c.OC), 18));
    Twin dinp = zeros({c.N, c.C}, GetParam());
    Twin dw = twin({c.OC, c.C}, random_values(static_cast<size_t>(c.OC * c.C), 19, 0.1f));
    Twin db = twin({c.OC}, random_values(static_cast<size_t>(c.OC), 20, 0.1f));
    cpu().matmul_bwd(dinp.cpu(), dw.cpu(), c.bias ? db.cpu() : Tensor(), dout.cpu(), inp.cpu(),
                     w.cpu());
    gpu().matmul_bwd(dinp.gpu(), dw.gpu(), c.bias ? db.gpu() : Tensor(), dout.gpu(), inp.gpu(),
                     w.gpu());
    EXPECT_TRUE(close("matmul_bwd dinp" + tag, dinp.cpu_values(), dinp.gpu_values(),
                      tol(OpKind::kReduction)));
    EXPECT_TRUE(close("matmul_bwd dweight" + tag, dw.cpu_values(), dw.gpu_values(),
                      tol(OpKind::kReduction)));
    if (c.bias) {
      EXPECT_TRUE(close("matmul_bwd dbias" + tag, db.cpu_values(), db.gpu_values(),
                        tol(OpKind::kReduction)));
    }
  }
}

TEST_P(CudaOpsTest, Attention) {
  struct Case {
    int B, T, C, NH;
  };
  // HS 32 and 64 take the tensor-core path for 16-bit dtypes; HS 15 the general one.
  for (Case c : {Case{2, 67, 96, 3}, Case{1, 130, 128, 2}, Case{2, 33, 60, 4}, Case{1, 1, 64, 1},
                 Case{1, 256, 768, 12}}) {
    const std::string tag = " B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) +
                            " C=" + std::to_string(c.C) + " NH=" + std::to_string(c.NH);
    const size_t nq = static_cast<size_t>(c.B) * c.T * 3 * c.C, no = nq / 3;
    Twin qkv = twin({c.B, c.T, 3 * c.C}, random_values(nq, 21));
    Twin out = zeros({c.B, c.T, c.C}, GetParam());
    Twin lse = zeros({c.B, c.NH, c.T}, DType::kF32);
    cpu().attention_fwd(out.cpu(), lse.cpu(), qkv.cpu(), c.NH);
    gpu().attention_fwd(out.gpu(), lse.gpu(), qkv.gpu(), c.NH);
    EXPECT_TRUE(close("attention_fwd out" + tag, out.cpu_values(), out.gpu_values(),
                      tol(OpKind::kReduction)));
    EXPECT_TRUE(close("attention_fwd lse" + tag, lse.cpu_values(), lse.gpu_values(),
                      tol(OpKind::kReduction)));
    Twin dout = twin({c.B, c.T, c.C}, random_values(no, 22));
    Twin dqkv = twin({c.B, c.T, 3 * c.C}, random_values(nq, 23));  // overwritten (=)
    cpu().attention_bwd(dqkv.cpu(), dout.cpu(), qkv.cpu(), out.cpu(), lse.cpu(), c.NH);
    gpu().attention_bwd(dqkv.gpu(), dout.gpu(), qkv.gpu(), out.gpu(), lse.gpu(), c.NH);
    EXPECT_TRUE(close("attention_bwd dqkv" + tag, dqkv.cpu_values(), dqkv.gpu_values(),
                      tol(OpKind::kReduction)));
    const std::vector<uint8_t> first = dqkv.gpu_bytes();
    gpu().attention_bwd(dqkv.gpu(), dout.gpu(), qkv.gpu(), out.gpu(), lse.gpu(), c.NH);
    EXPECT_EQ(first, dqkv.gpu_bytes()) << "attention_bwd is not deterministic" << tag;
  }
}

TEST_P(CudaOpsTest, SoftmaxCrossEntropy) {
  for (int V : {1003, 50304}) {
    const int N = 13;
    const size_t nv = static_cast<size_t>(N) * V;
    std::vector<int32_t> targets(N);
    for (int i = 0; i < N; ++i) targets[static_cast<size_t>(i)] = (i * 7717) % V;
    Buffer dt = cudatest::device_tokens(*be_.gpu, targets);
    const auto* dtg = static_cast<const int32_t*>(dt.data());
    Twin logits = twin({N, V}, random_values(nv, 24, 3.0f));
    Twin losses = zeros({N}, DType::kF32);
    cpu().softmax_crossentropy(losses.cpu(), Tensor(), logits.cpu(), targets.data(), 0.0f);
    gpu().softmax_crossentropy(losses.gpu(), Tensor(), logits.gpu(), dtg, 0.0f);
    const std::string tag = " V=" + std::to_string(V);
    EXPECT_TRUE(close("crossentropy losses" + tag, losses.cpu_values(), losses.gpu_values(),
                      tolerance(DType::kF32, OpKind::kReduction)));
    // Backward in place (dlogits aliases logits), as the model calls it.
    cpu().softmax_crossentropy(losses.cpu(), logits.cpu(), logits.cpu(), targets.data(), 0.37f);
    gpu().softmax_crossentropy(losses.gpu(), logits.gpu(), logits.gpu(), dtg, 0.37f);
    EXPECT_TRUE(close("crossentropy dlogits" + tag, logits.cpu_values(), logits.gpu_values(),
                      tol(OpKind::kReduction)));
  }
}

TEST_P(CudaOpsTest, ConvertAndStatistics) {
  const int64_t n = 100003;
  std::vector<float> v = random_values(static_cast<size_t>(n), 25, 10.0f);
  v[17] = NAN;
  v[n - 1] = INFINITY;
  v[5000] = -INFINITY;
  Twin x = twin({n}, v);
  for (DType to : {DType::kF32, DType::kBF16, DType::kF16}) {
    Twin y = zeros({n}, to);
    cpu().convert(y.cpu(), x.cpu());
    gpu().convert(y.gpu(), x.gpu());
    EXPECT_EQ(y.gpu_bytes(),
              [&] {
                std::vector<uint8_t> b(static_cast<size_t>(n) * dtype_size(to));
                std::memcpy(b.data(), y.cpu().data, b.size());
                return b;
              }())
        << "convert to " << dtype_name(to);
  }
  EXPECT_EQ(cpu().count_nonfinite(x.cpu()), 3u);
  EXPECT_EQ(gpu().count_nonfinite(x.gpu()), 3u);
  std::vector<float> finite = random_values(static_cast<size_t>(n), 26, 10.0f);
  Twin f = twin({n}, finite);
  const double want = cpu().sum_squares(f.cpu());
  const double got = gpu().sum_squares(f.gpu());
  EXPECT_NEAR(got, want, 1e-12 * want);
  EXPECT_EQ(got, gpu().sum_squares(f.gpu())) << "sum_squares is not deterministic";
  EXPECT_EQ(gpu().count_nonfinite(f.gpu()), 0u);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOpsTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---- optimizer ops: fp32 state, the gradient in each dtype ----

class CudaOptimizerOpsTest : public CudaOpsTest {
 protected:
  OptimizerOps& cpu_opt() { return be_.cpu->optimizer_ops(); }
  OptimizerOps& gpu_opt() { return be_.gpu->optimizer_ops(); }
  static float* f(const Tensor& t) { return t.ptr<float>(); }
};

TEST_P(CudaOptimizerOpsTest, FusedUpdates) {
  const int64_t n = 10007;
  const DType gd = GetParam();
  const Tolerance t{2e-6, 1e-7};  // the same fp32 formulas: rounding only
  for (int step = 1; step <= 3; ++step) {
    Twin master = twin({n}, random_values(static_cast<size_t>(n), 30), DType::kF32);
    Twin m = twin({n}, random_values(static_cast<size_t>(n), 31, 0.01f), DType::kF32);
    Twin v = twin(
        {n},
        [&] {
          auto x = random_values(static_cast<size_t>(n), 32, 0.01f);
          for (float& e : x) e = e * e;
          return x;
        }(),
        DType::kF32);
    Twin g = twin({n}, random_values(static_cast<size_t>(n), 33 + step), gd);
    const AdamWArgs aw{1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f * step, 0.05f * step, 0.5f};
    cpu_opt().adamw(f(master.cpu()), f(m.cpu()), f(v.cpu()), g.cpu().data, gd, n, aw);
    gpu_opt().adamw(f(master.gpu()), f(m.gpu()), f(v.gpu()), g.gpu().data, gd, n, aw);
    EXPECT_TRUE(close("adamw master", master.cpu_values(), master.gpu_values(), t));
    EXPECT_TRUE(close("adamw m", m.cpu_values(), m.gpu_values(), t));
    EXPECT_TRUE(close("adamw v", v.cpu_values(), v.gpu_values(), t));
    const SgdArgs sg{1e-2f, 0.9f, 0.1f, 1e-4f, step == 2, step == 1, 0.5f};
    cpu_opt().sgd(f(master.cpu()), f(m.cpu()), g.cpu().data, gd, n, sg);
    gpu_opt().sgd(f(master.gpu()), f(m.gpu()), g.gpu().data, gd, n, sg);
    EXPECT_TRUE(close("sgd master", master.cpu_values(), master.gpu_values(), t));
    EXPECT_TRUE(close("sgd momentum", m.cpu_values(), m.gpu_values(), t));
    const LionArgs li{1e-4f, 0.9f, 0.99f, 0.1f, 0.5f};
    cpu_opt().lion(f(master.cpu()), f(m.cpu()), g.cpu().data, gd, n, li);
    gpu_opt().lion(f(master.gpu()), f(m.gpu()), g.gpu().data, gd, n, li);
    EXPECT_TRUE(close("lion master", master.cpu_values(), master.gpu_values(), t));
    EXPECT_TRUE(close("lion m", m.cpu_values(), m.gpu_values(), t));
  }
}

// Raw bytes in both memories (8-bit codes).
struct ByteTwin {
  Buffer c, g;
  ByteTwin(Backend& cpu, Backend& gpu, size_t n) {
    c = std::move(cpu.allocate(n, MemCategory::kWorkspace)).value();
    g = std::move(gpu.allocate(n, MemCategory::kWorkspace)).value();
  }
  std::vector<uint8_t> cpu_bytes(size_t n) const {
    const auto* p = static_cast<const uint8_t*>(c.data());
    return std::vector<uint8_t>(p, p + n);
  }
  std::vector<uint8_t> gpu_bytes(Backend& gpu, size_t n) const {
    std::vector<uint8_t> out(n);
    gpu.copy(out.data(), g.data(), n);
    return out;
  }
};

TEST_P(CudaOptimizerOpsTest, EightBitMatchesCodeForCode) {
  const int64_t n = 5000;
  const size_t first = 77;  // a block cut at a segment edge
  const size_t blocks = 1 + (static_cast<size_t>(n) - first + 255) / 256;
  const DType gd = GetParam();
  std::vector<float> x = random_values(static_cast<size_t>(n), 40, 0.02f);
  x[300] = 0.0f;
  Twin xs = twin({n}, x, DType::kF32);
  ByteTwin codes(*be_.cpu, *be_.gpu, static_cast<size_t>(n));
  Twin absmax = zeros({static_cast<int64_t>(blocks)}, DType::kF32);
  for (bool sgn : {true, false}) {
    if (!sgn) {
      for (float& e : x) e = std::fabs(e);
    }
    xs.set(x);
    cpu_opt().quantize_blocks(sgn, f(xs.cpu()), n, first, static_cast<uint8_t*>(codes.c.data()),
                              f(absmax.cpu()));
    gpu_opt().quantize_blocks(sgn, f(xs.gpu()), n, first, static_cast<uint8_t*>(codes.g.data()),
                              f(absmax.gpu()));
    EXPECT_EQ(codes.cpu_bytes(n), codes.gpu_bytes(*be_.gpu, n)) << "quantize, signed " << sgn;
    EXPECT_TRUE(close("quantize absmax", absmax.cpu_values(), absmax.gpu_values(), {0, 0}));
    Twin back = zeros({n}, DType::kF32);
    cpu_opt().dequantize_blocks(sgn, static_cast<uint8_t*>(codes.c.data()), f(absmax.cpu()), n,
                                first, f(back.cpu()));
    gpu_opt().dequantize_blocks(sgn, static_cast<uint8_t*>(codes.g.data()), f(absmax.gpu()), n,
                                first, f(back.gpu()));
    EXPECT_TRUE(close("dequantize", back.cpu_values(), back.gpu_values(), {0, 0}));
  }
  // A few 8-bit AdamW steps in lockstep: codes equal, master within rounding.
  ByteTwin mc(*be_.cpu, *be_.gpu, static_cast<size_t>(n));
  ByteTwin vc(*be_.cpu, *be_.gpu, static_cast<size_t>(n));
  Twin ma = zeros({static_cast<int64_t>(blocks)}, DType::kF32);
  Twin va = zeros({static_cast<int64_t>(blocks)}, DType::kF32);
  Twin master = twin({n}, random_values(static_cast<size_t>(n), 41), DType::kF32);
  std::memset(mc.c.data(), 0, static_cast<size_t>(n));
  std::memset(vc.c.data(), 0, static_cast<size_t>(n));
  size_t differing = 0;
  for (int step = 1; step <= 4; ++step) {
    Twin g = twin({n}, random_values(static_cast<size_t>(n), 42 + step), gd);
    const float bc1 = 1.0f - std::pow(0.9f, step), bc2 = 1.0f - std::pow(0.999f, step);
    const AdamWArgs a{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, bc1, bc2, 1.0f};
    cpu_opt().adamw8bit(f(master.cpu()), static_cast<uint8_t*>(mc.c.data()), f(ma.cpu()),
                        static_cast<uint8_t*>(vc.c.data()), f(va.cpu()), g.cpu().data, gd, n, first,
                        a);
    gpu_opt().adamw8bit(f(master.gpu()), static_cast<uint8_t*>(mc.g.data()), f(ma.gpu()),
                        static_cast<uint8_t*>(vc.g.data()), f(va.gpu()), g.gpu().data, gd, n, first,
                        a);
    const auto c1 = mc.cpu_bytes(n), g1 = mc.gpu_bytes(*be_.gpu, n);
    for (size_t i = 0; i < c1.size(); ++i) differing += c1[i] != g1[i];
  }
  // Rounding differences may move a value across a code midpoint once in a long while.
  EXPECT_LE(differing, static_cast<size_t>(n) / 1000) << "8-bit codes differ";
  EXPECT_TRUE(close("adamw8bit master", master.cpu_values(), master.gpu_values(), {1e-5, 1e-6}));
}

TEST_P(CudaOptimizerOpsTest, Adafactor) {
  const DType gd = GetParam();
  const int64_t rows = 37, cols = 45, first = 50, n = rows * cols - first - 20;
  Twin g = twin({n}, random_values(static_cast<size_t>(n), 50), gd);
  // fp64 sums kept as pairs of floats is not possible: use raw buffers of doubles.
  const size_t sums = static_cast<size_t>(rows + cols) * sizeof(double);
  Buffer cs = std::move(be_.cpu->allocate(sums, MemCategory::kWorkspace)).value();
  Buffer gs = std::move(be_.gpu->allocate(sums, MemCategory::kWorkspace)).value();
  auto* c_rows = static_cast<double*>(cs.data());
  auto* g_rows = static_cast<double*>(gs.data());
  cpu_opt().adafactor_sq_sums(g.cpu().data, gd, n, first, cols, 0.5f, 1e-30f, c_rows,
                              c_rows + rows);
  gpu_opt().adafactor_sq_sums(g.gpu().data, gd, n, first, cols, 0.5f, 1e-30f, g_rows,
                              g_rows + rows);
  std::vector<double> got(static_cast<size_t>(rows + cols));
  be_.gpu->copy(got.data(), g_rows, sums);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], c_rows[i], 1e-12 * (1.0 + std::fabs(c_rows[i]))) << "sums " << i;
  Twin rfac = twin({rows}, random_values(static_cast<size_t>(rows), 51), DType::kF32);
  Twin cfac = twin({cols}, random_values(static_cast<size_t>(cols), 52), DType::kF32);
  const double want = cpu_opt().adafactor_factored_sq(g.cpu().data, gd, n, first, cols, 0.5f,
                                                      f(rfac.cpu()), f(cfac.cpu()));
  const double have = gpu_opt().adafactor_factored_sq(g.gpu().data, gd, n, first, cols, 0.5f,
                                                      f(rfac.gpu()), f(cfac.gpu()));
  EXPECT_NEAR(have, want, 1e-12 * want);
  auto vv = random_values(static_cast<size_t>(n), 53, 0.01f);
  for (float& e : vv) e = e * e;
  Twin v = twin({n}, vv, DType::kF32);
  const double wv =
      cpu_opt().adafactor_unfactored_v(g.cpu().data, gd, f(v.cpu()), n, 0.5f, 0.2f, 1e-30f);
  const double hv =
      gpu_opt().adafactor_unfactored_v(g.gpu().data, gd, f(v.gpu()), n, 0.5f, 0.2f, 1e-30f);
  EXPECT_NEAR(hv, wv, 1e-9 * wv);
  EXPECT_TRUE(close("adafactor v", v.cpu_values(), v.gpu_values(), {2e-6, 1e-30}));
  Twin master = twin({n}, random_values(static_cast<size_t>(n), 54), DType::kF32);
  Twin m = twin({n}, random_values(static_cast<size_t>(n), 55, 0.01f), DType::kF32);
  const AdafactorApplyArgs a{0.5f, 1e-3f, 1e-2f, 0.9f, 0.01f};
  cpu_opt().adafactor_apply(f(master.cpu()), f(m.cpu()), g.cpu().data, gd, n, first, cols,
                            f(rfac.cpu()), f(cfac.cpu()), nullptr, a);
  gpu_opt().adafactor_apply(f(master.gpu()), f(m.gpu()), g.gpu().data, gd, n, first, cols,
                            f(rfac.gpu()), f(cfac.gpu()), nullptr, a);
  EXPECT_TRUE(
      close("adafactor factored master", master.cpu_values(), master.gpu_values(), {2e-6, 1e-7}));
  cpu_opt().adafactor_apply(f(master.cpu()), nullptr, g.cpu().data, gd, n, 0, n, nullptr, nullptr,
                            f(v.cpu()), a);
  gpu_opt().adafactor_apply(f(master.gpu()), nullptr, g.gpu().data, gd, n, 0, n, nullptr, nullptr,
                            f(v.gpu()), a);
  EXPECT_TRUE(
      close("adafactor unfactored master", master.cpu_values(), master.gpu_values(), {2e-6, 1e-7}));
}

INSTANTIATE_TEST_SUITE_P(GradDtypes, CudaOptimizerOpsTest,
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace zt
