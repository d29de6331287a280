// Dynamic loss scaling follows DeepSpeed's DynamicLossScaler: hysteresis before halving, doubling
// after loss_scale_window clean steps, an error when overflowing at the minimum scale.
#include <cmath>

#include <gtest/gtest.h>

#include "runtime/optim/loss_scaler.h"

namespace zt {
namespace {

Fp16Config fp16(int power, int window, int hysteresis, double min_scale) {
  Fp16Config c;
  c.enabled = true;
  c.initial_scale_power = power;
  c.loss_scale_window = window;
  c.hysteresis = hysteresis;
  c.min_loss_scale = min_scale;
  return c;
}

TEST(LossScaler, DisabledIsOne) {
  LossScaler s(Fp16Config{});
  EXPECT_FALSE(s.enabled());
  EXPECT_EQ(s.scale(), 1.0);
  EXPECT_TRUE(s.update(true).is_ok());
  EXPECT_EQ(s.scale(), 1.0);
}

TEST(LossScaler, DefaultsStartAt2Pow16) {
  LossScaler s(Fp16Config{.enabled = true});
  EXPECT_EQ(s.scale(), 65536.0);
}

TEST(LossScaler, HysteresisThenHalving) {
  LossScaler s(fp16(10, 1000, 2, 1.0));
  ASSERT_TRUE(s.update(true).is_ok());  // first overflow uses up hysteresis
  EXPECT_EQ(s.scale(), 1024.0);
  ASSERT_TRUE(s.update(true).is_ok());  // second halves
  EXPECT_EQ(s.scale(), 512.0);
  ASSERT_TRUE(s.update(true).is_ok());  // hysteresis stays spent until the scale grows
  EXPECT_EQ(s.scale(), 256.0);
}

TEST(LossScaler, GrowsAfterWindowOfCleanSteps) {
  LossScaler s(fp16(4, 3, 1, 1.0));
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(s.update(false).is_ok());
  EXPECT_EQ(s.scale(), 16.0);
  ASSERT_TRUE(s.update(false).is_ok());
  EXPECT_EQ(s.scale(), 32.0);
  ASSERT_TRUE(s.update(true).is_ok());  // halve, and the window restarts
  EXPECT_EQ(s.scale(), 16.0);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(s.update(false).is_ok());
  EXPECT_EQ(s.scale(), 16.0);
  ASSERT_TRUE(s.update(false).is_ok());
  EXPECT_EQ(s.scale(), 32.0);
}

TEST(LossScaler, OverflowAtMinimumIsAnError) {
  LossScaler s(fp16(2, 1000, 1, 1.0));
  ASSERT_TRUE(s.update(true).is_ok());  // 4 -> 2
  ASSERT_TRUE(s.update(true).is_ok());  // 2 -> 1
  EXPECT_EQ(s.scale(), 1.0);
  const Status st = s.update(true);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("minimum"), std::string::npos) << st.to_string();
}

TEST(LossScaler, StaticScaleNeverChanges) {
  Fp16Config c;
  c.enabled = true;
  c.loss_scale = 128.0;
  LossScaler s(c);
  EXPECT_EQ(s.scale(), 128.0);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s.update(i % 2 == 0).is_ok());
  EXPECT_EQ(s.scale(), 128.0);
}

TEST(LossScaler, StateRoundTrip) {
  LossScaler a(fp16(8, 5, 2, 1.0));
  ASSERT_TRUE(a.update(true).is_ok());
  ASSERT_TRUE(a.update(false).is_ok());
  LossScaler b(fp16(8, 5, 2, 1.0));
  b.restore(a.state());
  for (int i = 0; i < 7; ++i) {
    const bool of = i == 3;
    ASSERT_TRUE(a.update(of).is_ok());
    ASSERT_TRUE(b.update(of).is_ok());
    EXPECT_EQ(a.scale(), b.scale());
  }
}

}  // namespace
}  // namespace zt
