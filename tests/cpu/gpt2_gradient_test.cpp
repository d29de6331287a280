// The whole model's gradient: the fp64 reference GPT-2 against central finite differences, then
// zerotrain's fp32 model (fast kernels, every checkpointing policy) against the reference.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/backend/backend.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/gpt2_reference.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

ModelConfig tiny_model() {
  ModelConfig m;
  m.vocab_size = 23;
  m.block_size = 9;
  m.n_layer = 2;
  m.n_head = 2;
  m.n_embd = 12;
  m.seed = 99;
  return m;
}

std::vector<double> init_params(const ParamLayout& layout, uint64_t seed) {
  std::vector<float> f(static_cast<size_t>(layout.total), 0.0f);
  for (const ParamEntry& e : layout.entries) {
    init_param_range(e.spec, seed, 0, e.spec.numel(), f.data() + e.offset);
    // Perturb LayerNorm gains/biases and biases too, so their gradients are not special.
    if (e.spec.init != ParamInit::kNormal)
      for (int64_t i = 0; i < e.spec.numel(); ++i)
        f[static_cast<size_t>(e.offset + i)] += 0.1f * std::sin(static_cast<float>(i * 7 + 1));
  }
  return std::vector<double>(f.begin(), f.end());
}

// The trainer's master weights in the reference's own (inventory-order) layout, by name.
std::vector<double> reference_params(Trainer& t, const testing::Gpt2Reference& ref) {
  const std::vector<float> w = *t.master_weights();
  std::vector<double> p(static_cast<size_t>(ref.layout().total), 0.0);
  for (const ParamEntry& e : t.layout().entries) {
    const ParamEntry* re = ref.layout().find(e.spec.name);
    EXPECT_NE(re, nullptr) << e.spec.name;
    if (re == nullptr) continue;
    for (int64_t i = 0; i < e.spec.numel(); ++i)
      p[static_cast<size_t>(re->offset + i)] = w[static_cast<size_t>(e.offset + i)];
  }
  return p;
}

// Every parameter's gradient within 1e-4 of the reference's largest for that tensor.
void expect_grads_match(Trainer& t, const testing::Gpt2Reference& ref,
                        const std::vector<double>& g_ref) {
  const float* g = t.grads().ptr<float>();
  for (const ParamEntry& e : t.layout().entries) {
    const int64_t roff = ref.layout().find(e.spec.name)->offset;
    double max_ref = 0, max_err = 0;
    for (int64_t i = 0; i < e.spec.numel(); ++i) {
      const double gr = g_ref[static_cast<size_t>(roff + i)];
      max_ref = std::max(max_ref, std::fabs(gr));
      max_err = std::max(max_err, std::fabs(g[static_cast<size_t>(e.offset + i)] - gr));
    }
    EXPECT_LE(max_err, 1e-4 * max_ref + 1e-7)
        << e.spec.name << ": max |grad - ref| " << max_err << " vs max |ref| " << max_ref;
  }
}

TEST(Gpt2Reference, GradientMatchesFiniteDifferences) {
  const ModelConfig m = tiny_model();
  const int B = 2, T = 7;
  testing::Gpt2Reference ref(m, B, T);
  std::vector<double> p = init_params(ref.layout(), 5);
  std::vector<int32_t> in(B * T), tgt(B * T);
  for (int i = 0; i < B * T; ++i) {
    in[static_cast<size_t>(i)] = (i * 5 + 3) % m.vocab_size;
    tgt[static_cast<size_t>(i)] = (i * 11 + 1) % m.vocab_size;
  }
  std::vector<double> g;
  ref.loss(p, in.data(), tgt.data(), &g);
  // Every parameter tensor, a few elements each.
  int checked = 0;
  for (const ParamEntry& e : ref.layout().entries) {
    for (int64_t k = 0; k < std::min<int64_t>(3, e.spec.numel()); ++k) {
      const size_t i = static_cast<size_t>(e.offset + (k * 7919) % e.spec.numel());
      const double h = 1e-5, saved = p[i];
      p[i] = saved + h;
      const double lp = ref.loss(p, in.data(), tgt.data(), nullptr);
      p[i] = saved - h;
      const double lm = ref.loss(p, in.data(), tgt.data(), nullptr);
      p[i] = saved;
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(g[i], fd, 1e-7 + 1e-5 * std::fabs(fd))
          << e.spec.name << "[" << i - e.offset << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
}

TEST(Gpt2Gradient, FastModelMatchesReference) {
  testing::TempDir dir;
  const ModelConfig m = tiny_model();
  const int B = 3, T = m.block_size;
  const std::string data = dir.file("tokens.bin");
  testing::write_llmc_tokens(data, testing::patterned_tokens(2000, m.vocab_size, 3));
  for (CheckpointPolicy policy : {CheckpointPolicy::kNone, CheckpointPolicy::kLayer,
                                  CheckpointPolicy::kEveryN, CheckpointPolicy::kSelective}) {
    JobConfig cfg =
        testing::small_job(data, m.n_layer, m.n_embd, m.n_head, m.block_size, m.vocab_size, B, 1);
    cfg.model.seed = m.seed;
    cfg.activation_checkpointing.policy = policy;
    cfg.activation_checkpointing.every_n = 2;
    auto be = make_cpu_backend();
    auto tr = Trainer::create(cfg, *be);
    ASSERT_TRUE(tr.is_ok()) << tr.status().to_string();
    Trainer& t = *tr.value();
    const double loss = *t.compute_gradients(0);

    // The same batch and weights through the reference.
    auto loader = DataLoader::open(cfg.data, cfg.model);
    ASSERT_TRUE(loader.is_ok());
    std::vector<int32_t> in(static_cast<size_t>(B * T)), tgt(in.size());
    loader->fill(0, B, in.data(), tgt.data());
    testing::Gpt2Reference ref(cfg.model, B, T);
    const std::vector<double> p = reference_params(t, ref);
    std::vector<double> g_ref;
    const double ref_loss = ref.loss(p, in.data(), tgt.data(), &g_ref);
    EXPECT_NEAR(loss, ref_loss, 1e-5 * ref_loss);

    expect_grads_match(t, ref, g_ref);
  }
}

// Sequence-length warm-up (data.seq_len_schedule): a step at half the block size trains twice as
// many sequences of half the length. Against the reference at that shape, fed the step's full
// sequences cut in two by hand.
TEST(Gpt2Gradient, SequenceLengthWarmupMatchesReferenceAtTheShorterLength) {
  testing::TempDir dir;
  ModelConfig m = tiny_model();
  m.block_size = 8;
  const int B = 3, T = 8, len = 4, r = T / len;
  const std::string data = dir.file("tokens.bin");
  testing::write_llmc_tokens(data, testing::patterned_tokens(2000, m.vocab_size, 4));
  for (CheckpointPolicy policy : {CheckpointPolicy::kNone, CheckpointPolicy::kLayer}) {
    JobConfig cfg =
        testing::small_job(data, m.n_layer, m.n_embd, m.n_head, m.block_size, m.vocab_size, B, 1);
    cfg.model.seed = m.seed;
    cfg.activation_checkpointing.policy = policy;
    cfg.data.seq_len_schedule = {{1, len}};
    auto be = make_cpu_backend();
    auto tr = Trainer::create(cfg, *be);
    ASSERT_TRUE(tr.is_ok()) << tr.status().to_string();
    Trainer& t = *tr.value();
    const double loss = *t.compute_gradients(0);

    auto loader = DataLoader::open(cfg.data, cfg.model);
    ASSERT_TRUE(loader.is_ok());
    std::vector<int32_t> full_in(static_cast<size_t>(B * T)), full_tgt(full_in.size());
    loader->fill(0, B, full_in.data(), full_tgt.data());
    // Sequence i's tokens [j*len, j*len + len) become row i*r + j: the same bytes, since rows are
    // contiguous; the reference just sees B*r rows of len.
    testing::Gpt2Reference ref(cfg.model, B * r, len);
    const std::vector<double> p = reference_params(t, ref);
    std::vector<double> g_ref;
    const double ref_loss = ref.loss(p, full_in.data(), full_tgt.data(), &g_ref);
    EXPECT_NEAR(loss, ref_loss, 1e-5 * ref_loss);
    // And not what the full-length step would give: the warm-up really ran shorter sequences.
    testing::Gpt2Reference ref_full(cfg.model, B, T);
    EXPECT_GT(std::fabs(ref_full.loss(p, full_in.data(), full_tgt.data(), nullptr) - ref_loss),
              1e-4 * ref_loss);

    expect_grads_match(t, ref, g_ref);
    // Step 2 is past the schedule: back at block_size.
    ASSERT_TRUE(t.compute_gradients(1).is_ok());
    EXPECT_EQ(t.model().shape().T, T);
    EXPECT_EQ(t.model().shape().B, B);
  }
}

}  // namespace
}  // namespace zt
