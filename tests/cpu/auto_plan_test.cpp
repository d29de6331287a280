// The `auto` planner (runtime/plan/auto_plan.h): which combinations it tries, that it picks the
// fastest one that fits and keeps the global batch, and how it refuses. The memory numbers
// themselves are checked against measurement in tests/mpi/memory_estimate_test.cpp.
#include "runtime/plan/auto_plan.h"

#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "runtime/backend/backend.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

using testing::TempDir;

class AutoPlan : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.file("tokens.bin");
    testing::write_llmc_tokens(data_, testing::patterned_tokens(4096, 64, 2));
  }
  // A 4-layer model with every key the planner can choose left `auto`, 16 sequences per step.
  JobConfig all_auto() const {
    JobConfig c = testing::small_job(data_, /*n_layer=*/4, /*n_embd=*/64, /*n_head=*/4,
                                     /*block=*/32, /*vocab=*/64, /*micro=*/0, /*accumulation=*/0);
    c.train_batch_size = 16;
    c.train_micro_batch_size_per_gpu = 0;
    c.gradient_accumulation_steps = 0;
    c.autos.stage = c.autos.micro_batch = c.autos.checkpoint_policy = true;
    c.autos.overlap_comm_follows_stage = true;
    // One unit gathered ahead and no bucket kept whole: stage 3 saves memory on this small model.
    c.zero.stage3_prefetch_bucket_size = 1;
    c.zero.stage3_param_persistence_threshold = 0;
    return c;
  }
  TempDir dir_;
  std::string data_;
};

TEST_F(AutoPlan, TriesEveryOpenCombinationAndOnlyValidOnes) {
  const JobConfig c = all_auto();
  auto plans = evaluate_plans(c, 2, {}, {});
  ASSERT_TRUE(plans.is_ok()) << plans.status().message();
  std::set<std::tuple<int, OffloadDevice, OffloadDevice, CheckpointPolicy, int64_t>> seen;
  for (const PlanCandidate& p : *plans) {
    const PlanChoice& ch = p.choice;
    EXPECT_TRUE(p.fits) << "no budget: everything fits";
    EXPECT_FALSE(ch.offload_optimizer != OffloadDevice::kNone && ch.stage < 1) << ch.describe();
    EXPECT_FALSE(ch.offload_param != OffloadDevice::kNone && ch.stage < 3) << ch.describe();
    EXPECT_EQ(ch.micro_batch * ch.accumulation * 2, 16) << ch.describe();
    seen.insert({ch.stage, ch.offload_optimizer, ch.offload_param, ch.policy, ch.micro_batch});
  }
  // stages 0-3 x {none, cpu, cpu+param cpu} where valid (1 + 2 + 2 + 3 = 8) x 4 policies x the
  // micro-batches 8, 4, 2, 1 (the divisors of 16 / 2).
  EXPECT_EQ(seen.size(), 8u * 4u * 4u);
  EXPECT_EQ(plans->size(), seen.size());
  for (size_t i = 1; i < plans->size(); ++i)
    EXPECT_LE((*plans)[i - 1].relative_time, (*plans)[i].relative_time) << "sorted fastest first";
}

TEST_F(AutoPlan, KeysNotAutoStayAsConfigured) {
  JobConfig c = all_auto();
  c.autos.stage = false;
  c.zero.stage = 1;
  c.autos.micro_batch = false;
  c.train_micro_batch_size_per_gpu = 4;
  ASSERT_TRUE(resolve_batch_sizes(c, 2).is_ok());
  auto plans = evaluate_plans(c, 2, {}, {});
  ASSERT_TRUE(plans.is_ok()) << plans.status().message();
  EXPECT_EQ(plans->size(), 4u) << "only the policy varies";
  for (const PlanCandidate& p : *plans) {
    EXPECT_EQ(p.choice.stage, 1);
    EXPECT_EQ(p.choice.offload_optimizer, OffloadDevice::kNone);
    EXPECT_EQ(p.choice.micro_batch, 4);
    EXPECT_EQ(p.choice.accumulation, 2);
  }
}

// A fixed micro-batch with stage: auto: the accumulation the config implies is kept (a plan with
// accumulation 1 would quietly shrink the global batch).
TEST_F(AutoPlan, AFixedMicroBatchKeepsTheGlobalBatch) {
  JobConfig c = all_auto();
  c.autos.micro_batch = false;
  c.train_batch_size = 32;
  c.train_micro_batch_size_per_gpu = 4;
  c.memory_budget = int64_t{1} << 40;
  ASSERT_TRUE(resolve_batch_sizes(c, 2).is_ok());
  auto d = resolve_auto(c, 2, {}, {});
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(c.train_batch_size, 32);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c.gradient_accumulation_steps, 4);
}

// Outside a coordinator nothing resolves `auto`: the trainer refuses instead of running stage 0.
TEST_F(AutoPlan, TrainerRefusesUnresolvedAuto) {
  JobConfig c = all_auto();
  c.autos.micro_batch = false;
  c.train_micro_batch_size_per_gpu = 8;
  c.gradient_accumulation_steps = 2;
  auto backend = make_cpu_backend();
  auto t = Trainer::create(c, *backend);
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("zero_optimization.stage"), std::string::npos)
      << t.status().message();
}

TEST_F(AutoPlan, AmpleBudgetChoosesTheFastest) {
  JobConfig c = all_auto();
  c.memory_budget = int64_t{1} << 40;
  auto d = resolve_auto(c, 2, {}, {});
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_EQ(c.zero.stage, 0);
  EXPECT_EQ(c.activation_checkpointing.policy, CheckpointPolicy::kNone);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 8);
  EXPECT_EQ(c.gradient_accumulation_steps, 1);
  EXPECT_EQ(c.train_batch_size, 16);
  EXPECT_FALSE(c.autos.any()) << "the resolved config holds no auto";
  EXPECT_FALSE(c.zero.overlap_comm) << "overlap_comm follows the chosen stage";
  ASSERT_FALSE(d->reasons.empty());
  EXPECT_NE(d->reasons[0].find("stage 0"), std::string::npos) << d->reasons[0];
}

// For budgets between the largest and the smallest combination: the choice fits, and every
// combination the model ranks faster does not.
TEST_F(AutoPlan, ChoosesTheFastestThatFitsForEveryBudget) {
  const JobConfig base = all_auto();
  auto all = evaluate_plans(base, 2, {}, {});
  ASSERT_TRUE(all.is_ok());
  int64_t lo = INT64_MAX, hi = 0;
  for (const PlanCandidate& p : *all) {
    lo = std::min(lo, p.device_needed);
    hi = std::max(hi, p.device_needed);
  }
  for (int k = 0; k <= 20; ++k) {
    JobConfig c = base;
    const int64_t usable = lo + (hi - lo) * k / 20;
    c.memory_budget = static_cast<int64_t>(static_cast<double>(usable) / 0.9) + 1;
    auto d = resolve_auto(c, 2, {}, {});
    ASSERT_TRUE(d.is_ok()) << "budget " << c.memory_budget << ": " << d.status().message();
    const PlanCandidate& chosen = d->chosen;
    EXPECT_LE(chosen.device_needed, usable + 1);
    EXPECT_EQ(c.zero.stage, chosen.choice.stage);
    EXPECT_EQ(c.train_micro_batch_size_per_gpu * c.gradient_accumulation_steps * 2, 16);
    for (const PlanCandidate& p : *all) {
      if (p.relative_time < chosen.relative_time - 1e-9) {
        EXPECT_GT(p.device_needed, usable)
            << "faster and fits: " << p.choice.describe() << " over " << chosen.choice.describe();
      }
    }
  }
}

// A budget below everything stages 0-2 can do without offload, but above stage 3's smallest:
// the planner must go to stage 3 (or offload).
TEST_F(AutoPlan, ABudgetStagesZeroToTwoCannotMeetForcesStageThree) {
  // One sequence per rank and step: no accumulation, whose reductions in flight between
  // micro-batches would cost stage 3 (with overlap_comm) more than its sharded parameters save.
  JobConfig base = all_auto();
  base.train_batch_size = 4;
  auto all = evaluate_plans(base, 4, {}, {});
  ASSERT_TRUE(all.is_ok());
  int64_t min_low = INT64_MAX, min_high = INT64_MAX;
  for (const PlanCandidate& p : *all) {
    const bool low = p.choice.stage <= 2 && p.choice.offload_optimizer == OffloadDevice::kNone;
    (low ? min_low : min_high) = std::min(low ? min_low : min_high, p.device_needed);
  }
  ASSERT_LT(min_high, min_low) << "the test model must let stage 3 save memory on 4 ranks";
  JobConfig c = base;
  c.memory_budget = static_cast<int64_t>(static_cast<double>(min_low - 1) / 0.9);
  auto d = resolve_auto(c, 4, {}, {});
  ASSERT_TRUE(d.is_ok()) << d.status().message();
  EXPECT_TRUE(c.zero.stage == 3 || c.zero.offload_optimizer.device != OffloadDevice::kNone)
      << d->chosen.choice.describe();
  EXPECT_LT(d->chosen.device_needed, min_low);
  EXPECT_TRUE(c.zero.overlap_comm || c.zero.stage != 3) << "stage 3 turns overlap_comm on";
}

TEST_F(AutoPlan, RefusesWithoutABudgetOrWhenNothingFits) {
  JobConfig c = all_auto();
  auto none = resolve_auto(c, 2, {}, {});
  ASSERT_FALSE(none.is_ok());
  EXPECT_NE(none.status().message().find("memory_budget"), std::string::npos);

  c.memory_budget = 64 << 10;  // 64 KiB
  auto tiny = resolve_auto(c, 2, {}, {});
  ASSERT_FALSE(tiny.is_ok());
  EXPECT_EQ(tiny.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(tiny.status().message().find("nothing fits"), std::string::npos)
      << tiny.status().message();
  EXPECT_NE(tiny.status().message().find("micro-batch 1"), std::string::npos)
      << "names the smallest combination: " << tiny.status().message();
  EXPECT_TRUE(c.autos.any()) << "a failed resolution leaves the config as it was";

  // The workers' reports serve when the config has no memory_budget.
  JobConfig w = all_auto();
  MemoryBudget reported;
  reported.device_bytes = int64_t{1} << 40;
  reported.source = "test";
  EXPECT_TRUE(resolve_auto(w, 2, reported, {}).is_ok());
}

}  // namespace
}  // namespace zt
