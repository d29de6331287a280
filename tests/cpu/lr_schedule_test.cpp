// Learning-rate schedules against DeepSpeed's documented formulas, evaluated by hand at chosen
// steps. Optimizer step s runs with DeepSpeed's last_batch_iteration = s - 1
// (Note [scheduler step alignment]).
#include <cmath>

#include <gtest/gtest.h>

#include "runtime/optim/lr_schedule.h"

namespace zt {
namespace {

TEST(LrSchedule, ConstantWithoutScheduler) {
  SchedulerConfig s;
  EXPECT_DOUBLE_EQ(learning_rate(s, 3e-4, 0), 3e-4);
  EXPECT_DOUBLE_EQ(learning_rate(s, 3e-4, 12345), 3e-4);
}

TEST(LrSchedule, WarmupLRLinear) {
  SchedulerConfig s;
  s.type = "WarmupLR";
  s.warmup_min_lr = 1e-5;
  s.warmup_max_lr = 1e-3;
  s.warmup_num_steps = 10;
  s.warmup_type = WarmupType::kLinear;
  EXPECT_DOUBLE_EQ(learning_rate(s, 0.5, 0), 1e-5);  // iteration -1: min
  EXPECT_DOUBLE_EQ(learning_rate(s, 0.5, 1), 1e-5);  // iteration 0: gamma 0
  EXPECT_NEAR(learning_rate(s, 0.5, 5), 1e-5 + (1e-3 - 1e-5) * 4.0 / 10.0, 1e-15);
  EXPECT_DOUBLE_EQ(learning_rate(s, 0.5, 11), 1e-3);  // iteration 10: warm
  EXPECT_DOUBLE_EQ(learning_rate(s, 0.5, 1000), 1e-3);
}

TEST(LrSchedule, WarmupLRLog) {
  SchedulerConfig s;
  s.type = "WarmupLR";
  s.warmup_min_lr = 0.0;
  s.warmup_max_lr = 2e-3;
  s.warmup_num_steps = 100;
  s.warmup_type = WarmupType::kLog;
  EXPECT_NEAR(learning_rate(s, 0.5, 10), 2e-3 * std::log(10.0) / std::log(100.0), 1e-15);
  EXPECT_NEAR(learning_rate(s, 0.5, 100), 2e-3 * std::log(100.0) / std::log(100.0), 1e-15);
}

TEST(LrSchedule, WarmupDecayLR) {
  SchedulerConfig s;
  s.type = "WarmupDecayLR";
  s.warmup_min_lr = 0.0;
  s.warmup_max_lr = 1e-3;
  s.warmup_num_steps = 10;
  s.total_num_steps = 110;
  s.warmup_type = WarmupType::kLinear;
  // iteration 10: (110 - 10) / (110 - 10) = 1; iteration 60: 50/100; iteration 110+: 0.
  EXPECT_NEAR(learning_rate(s, 0.5, 11), 1e-3, 1e-15);
  EXPECT_NEAR(learning_rate(s, 0.5, 61), 0.5e-3, 1e-15);
  EXPECT_NEAR(learning_rate(s, 0.5, 111), 0.0, 1e-15);
  EXPECT_NEAR(learning_rate(s, 0.5, 500), 0.0, 1e-15);
}

TEST(LrSchedule, WarmupCosineLR) {
  SchedulerConfig s;
  s.type = "WarmupCosineLR";
  s.warmup_min_ratio = 0.1;
  s.warmup_num_steps = 4;
  s.total_num_steps = 24;
  s.cos_min_ratio = 0.01;
  s.warmup_type = WarmupType::kLinear;
  const double base = 6e-4;
  EXPECT_DOUBLE_EQ(learning_rate(s, base, 0), 0.0);  // DeepSpeed returns 0 before the first step
  // iteration 2 (step 3): 0.1 + 2/4 * 0.9
  EXPECT_NEAR(learning_rate(s, base, 3), base * (0.1 + 0.5 * 0.9), 1e-15);
  // iteration 4: first cosine iteration, real step 1 of 20
  const double c1 = (1 + std::cos(M_PI * 1.0 / 20.0)) / 2;
  EXPECT_NEAR(learning_rate(s, base, 5), base * (0.01 + 0.99 * c1), 1e-15);
  // iteration 13: half way, cos(pi/2) = 0
  EXPECT_NEAR(learning_rate(s, base, 14), base * (0.01 + 0.99 * 0.5), 1e-15);
  // iteration 23: the end: cos_min_ratio
  EXPECT_NEAR(learning_rate(s, base, 24), base * 0.01, 1e-15);
}

}  // namespace
}  // namespace zt
