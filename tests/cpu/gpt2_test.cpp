// GPT-2 on the CPU backend: initialisation, checkpointing policies (bit-identical gradients, less
// activation memory), gradient accumulation, mixed precision against fp32, fp16 overflow handling.
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/backend/backend.h"
#include "runtime/model/gpt2.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

using testing::TempDir;

std::vector<float> to_f32_vector(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  convert(t.data, t.dtype, v.data(), DType::kF32, v.size());
  return v;
}

class Gpt2Test : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.file("tokens.bin");
    testing::write_llmc_tokens(data_, testing::patterned_tokens(4096, 64));
  }
  std::unique_ptr<Trainer> make(const JobConfig& cfg, Backend& be) {
    auto t = Trainer::create(cfg, be);
    EXPECT_TRUE(t.is_ok()) << t.status().to_string();
    return t.is_ok() ? std::move(t).value() : nullptr;
  }
  TempDir dir_;
  std::string data_;
};

TEST(Gpt2Init, IndependentOfHowTheRangeIsSplit) {
  ModelConfig m;
  m.vocab_size = 50;
  m.block_size = 8;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 16;
  m.seed = 7;
  for (const ParamSpec& s : gpt2_param_inventory(m)) {
    std::vector<float> whole(static_cast<size_t>(s.numel())), parts(whole.size());
    init_param_range(s, m.seed, 0, s.numel(), whole.data());
    // Odd-sized chunks starting at odd offsets.
    for (int64_t b = 0; b < s.numel(); b += 7)
      init_param_range(s, m.seed, b, std::min<int64_t>(7, s.numel() - b), parts.data() + b);
    ASSERT_EQ(0, std::memcmp(whole.data(), parts.data(), whole.size() * 4)) << s.name;
  }
}

TEST(Gpt2Init, Gpt2Statistics) {
  ModelConfig m;
  m.vocab_size = 256;
  m.block_size = 64;
  m.n_layer = 8;
  m.n_head = 4;
  m.n_embd = 128;
  m.seed = 3;
  const auto inv = gpt2_param_inventory(m);
  for (const ParamSpec& s : inv) {
    std::vector<float> v(static_cast<size_t>(s.numel()));
    init_param_range(s, m.seed, 0, s.numel(), v.data());
    double sum = 0, sq = 0;
    for (float x : v) {
      sum += x;
      sq += static_cast<double>(x) * x;
    }
    const double mean = sum / static_cast<double>(v.size());
    const double stdv = std::sqrt(sq / static_cast<double>(v.size()) - mean * mean);
    if (s.init == ParamInit::kNormal) {
      const bool resid = s.name.find("c_proj.weight") != std::string::npos;
      const double want = resid ? 0.02 / std::sqrt(16.0) : 0.02;
      EXPECT_NEAR(stdv, want, want * 0.05) << s.name;
      EXPECT_NEAR(mean, 0.0, want * 0.05) << s.name;
      EXPECT_TRUE(s.weight_decay) << s.name;
    } else {
      EXPECT_EQ(stdv, 0.0) << s.name;
      EXPECT_EQ(mean, s.init == ParamInit::kOnes ? 1.0 : 0.0) << s.name;
      EXPECT_FALSE(s.weight_decay) << s.name;
    }
  }
  // Different seeds give different weights.
  std::vector<float> a(100), b(100);
  init_param_range(inv[0], 1, 0, 100, a.data());
  init_param_range(inv[0], 2, 0, 100, b.data());
  EXPECT_NE(0, std::memcmp(a.data(), b.data(), 400));
}

TEST(Gpt2Layout, ParameterCountMatchesGpt2Formula) {
  ModelConfig m;
  m.vocab_size = 50257;
  m.block_size = 1024;
  m.n_layer = 12;
  m.n_head = 12;
  m.n_embd = 768;
  const ParamLayout l = make_param_layout(gpt2_param_inventory(m));
  EXPECT_EQ(l.num_parameters, 124439808);  // GPT-2 small, tied LM head
  for (const ParamEntry& e : l.entries) EXPECT_EQ(e.offset % ParamLayout::kParamAlignment, 0);
}

// Gradients of every policy equal those of `none`, bit for bit, and the policies that drop
// activations allocate less.
TEST_F(Gpt2Test, CheckpointPoliciesGiveIdenticalGradientsAndSaveMemory) {
  struct Case {
    CheckpointPolicy policy;
    int every_n;
    const char* name;
  };
  const std::vector<Case> cases = {{CheckpointPolicy::kNone, 1, "none"},
                                   {CheckpointPolicy::kLayer, 1, "layer"},
                                   {CheckpointPolicy::kEveryN, 2, "every_n=2"},
                                   {CheckpointPolicy::kEveryN, 3, "every_n=3"},
                                   {CheckpointPolicy::kSelective, 1, "selective"}};
  for (DType dt : {DType::kF32, DType::kBF16}) {
    std::vector<float> ref_grads;
    double ref_loss = 0;
    int64_t none_bytes = 0;
    for (const Case& c : cases) {
      JobConfig cfg = testing::small_job(data_, /*n_layer=*/5);
      cfg.bf16.enabled = dt == DType::kBF16;
      cfg.activation_checkpointing.policy = c.policy;
      cfg.activation_checkpointing.every_n = c.every_n;
      auto be = make_cpu_backend();
      auto t = make(cfg, *be);
      ASSERT_TRUE(t);
      const double loss = *t->compute_gradients(3);
      const std::vector<float> g = to_f32_vector(t->grads());
      const int64_t bytes = t->model().activation_bytes();
      if (c.policy == CheckpointPolicy::kNone) {
        ref_grads = g;
        ref_loss = loss;
        none_bytes = bytes;
        continue;
      }
      EXPECT_EQ(loss, ref_loss) << c.name;
      ASSERT_EQ(0, std::memcmp(g.data(), ref_grads.data(), g.size() * 4))
          << c.name << " (" << dtype_name(dt) << ") gradients differ from policy none";
      EXPECT_LT(bytes, none_bytes) << c.name;
      EXPECT_GT(be->memory().peak(MemCategory::kActivations), 0);
    }
  }
}

// The result of a step does not depend on how the global batch is split into micro-batches.
TEST_F(Gpt2Test, AccumulationSplitDoesNotChangeTheStep) {
  JobConfig a = testing::small_job(data_, 2, 32, 2, 16, 64, /*micro=*/4, /*accumulation=*/1);
  JobConfig b = testing::small_job(data_, 2, 32, 2, 16, 64, /*micro=*/1, /*accumulation=*/4);
  auto be1 = make_cpu_backend(), be2 = make_cpu_backend();
  auto ta = make(a, *be1), tb = make(b, *be2);
  ASSERT_TRUE(ta && tb);
  for (int s = 0; s < 3; ++s) {
    auto ra = ta->step(), rb = tb->step();
    ASSERT_TRUE(ra.is_ok() && rb.is_ok());
    EXPECT_NEAR(ra->loss, rb->loss, 1e-5 * ra->loss) << "step " << s;
    EXPECT_NEAR(ra->grad_norm, rb->grad_norm, 1e-4 * ra->grad_norm) << "step " << s;
  }
  const auto wa = *ta->master_weights(), wb = *tb->master_weights();
  double max_diff = 0;
  for (size_t i = 0; i < wa.size(); ++i) max_diff = std::max<double>(max_diff, std::fabs(wa[i] - wb[i]));
  EXPECT_LT(max_diff, 1e-5);
}

// Training reduces the loss on structured data (the model learns).
TEST_F(Gpt2Test, LossDecreases) {
  JobConfig cfg = testing::small_job(data_);
  auto be = make_cpu_backend();
  auto t = make(cfg, *be);
  ASSERT_TRUE(t);
  double first = 0, last = 0;
  for (int s = 0; s < 30; ++s) {
    auto r = t->step();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    if (s == 0) first = r->loss;
    last = r->loss;
  }
  EXPECT_NEAR(first, std::log(64.0), 0.3);  // near-uniform predictions at init
  EXPECT_LT(last, first - 1.0);
}

// bf16 and fp16 training follow fp32 within documented tolerances (README: mixed precision).
TEST_F(Gpt2Test, MixedPrecisionTracksFp32) {
  std::vector<double> losses[3];
  const DType dts[3] = {DType::kF32, DType::kBF16, DType::kF16};
  for (int i = 0; i < 3; ++i) {
    JobConfig cfg = testing::small_job(data_);
    cfg.bf16.enabled = dts[i] == DType::kBF16;
    cfg.fp16.enabled = dts[i] == DType::kF16;
    cfg.fp16.initial_scale_power = 12;
    auto be = make_cpu_backend();
    auto t = make(cfg, *be);
    ASSERT_TRUE(t);
    for (int s = 0; s < 15; ++s) {
      auto r = t->step();
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      ASSERT_FALSE(r->skipped) << dtype_name(dts[i]) << " step " << s;
      losses[i].push_back(r->loss);
    }
  }
  for (size_t s = 0; s < losses[0].size(); ++s) {
    EXPECT_NEAR(losses[1][s], losses[0][s], 0.02 * losses[0][s]) << "bf16 step " << s;
    EXPECT_NEAR(losses[2][s], losses[0][s], 0.005 * losses[0][s]) << "fp16 step " << s;
  }
}

// An fp16 step whose scaled gradients overflow is skipped: the weights do not move, the scale
// falls, and the metrics say so.
TEST_F(Gpt2Test, Fp16OverflowIsSkippedNotApplied) {
  JobConfig cfg = testing::small_job(data_);
  cfg.fp16.enabled = true;
  cfg.fp16.initial_scale_power = 40;  // 2^40 times any gradient overflows fp16
  cfg.fp16.hysteresis = 1;
  auto be = make_cpu_backend();
  auto t = make(cfg, *be);
  ASSERT_TRUE(t);
  const auto before = *t->master_weights();
  auto r = t->step();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->skipped);
  EXPECT_EQ(r->loss_scale, std::ldexp(1.0, 40));
  const auto after = *t->master_weights();
  EXPECT_EQ(0, std::memcmp(before.data(), after.data(), before.size() * 4));
  // The scale halves each time until the gradients fit; then steps apply.
  int skipped = 1;
  for (int s = 0; s < 40; ++s) {
    auto q = t->step();
    ASSERT_TRUE(q.is_ok()) << q.status().to_string();
    if (!q->skipped) {
      EXPECT_LT(q->loss_scale, std::ldexp(1.0, 40));
      break;
    }
    ++skipped;
  }
  EXPECT_GT(skipped, 5);
  EXPECT_LT(skipped, 40);
  const auto moved = *t->master_weights();
  EXPECT_NE(0, std::memcmp(before.data(), moved.data(), before.size() * 4));
}

// Export writes Hugging Face GPT-2 safetensors that model.init_from loads back exactly: a model
// started from the export computes the same loss as the one that wrote it.
TEST_F(Gpt2Test, ExportThenInitFromRoundTrips) {
  JobConfig cfg = testing::small_job(data_);
  auto be = make_cpu_backend();
  auto a = make(cfg, *be);
  ASSERT_TRUE(a);
  for (int s = 0; s < 3; ++s) ASSERT_TRUE(a->step().is_ok());
  const std::string path = dir_.file("export.safetensors");
  ASSERT_TRUE(a->export_safetensors(path, DType::kF32).is_ok());

  JobConfig cfg_b = cfg;
  cfg_b.model.init_from = path;
  cfg_b.model.seed = 777;  // ignored when init_from is set
  auto be_b = make_cpu_backend();
  auto b = make(cfg_b, *be_b);
  ASSERT_TRUE(b);
  const auto wa = *a->master_weights(), wb = *b->master_weights();
  ASSERT_EQ(0, std::memcmp(wa.data(), wb.data(), wa.size() * 4));
  EXPECT_EQ(*a->evaluate(7), *b->evaluate(7));

  // A bf16 export loads too, within bf16 rounding of the weights.
  const std::string path16 = dir_.file("export_bf16.safetensors");
  ASSERT_TRUE(a->export_safetensors(path16, DType::kBF16).is_ok());
  cfg_b.model.init_from = path16;
  auto be_c = make_cpu_backend();
  auto c = make(cfg_b, *be_c);
  ASSERT_TRUE(c);
  EXPECT_NEAR(*c->evaluate(7), *a->evaluate(7), 0.01 * *a->evaluate(7));
}

TEST_F(Gpt2Test, InitFromWithWrongShapeNamesTheTensor) {
  JobConfig cfg = testing::small_job(data_);
  auto be = make_cpu_backend();
  auto a = make(cfg, *be);
  ASSERT_TRUE(a);
  const std::string path = dir_.file("export.safetensors");
  ASSERT_TRUE(a->export_safetensors(path, DType::kF32).is_ok());
  JobConfig wider = testing::small_job(data_, 3, /*n_embd=*/48, 2);
  wider.model.init_from = path;
  auto be2 = make_cpu_backend();
  auto r = Trainer::create(wider, *be2);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("wte.weight"), std::string::npos) << r.status().to_string();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().to_string();
}

}  // namespace
}  // namespace zt
