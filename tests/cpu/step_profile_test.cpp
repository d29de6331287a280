// The step profile (runtime/profile/step_profile.h, Note [step profile]) and the memory tracker's
// peak phases (Note [peak phase]):
//  - time goes exclusively to the innermost phase: nested scopes restore the outer phase, the
//    phases add up to the profiled time, and scopes on another thread or without a profile do
//    nothing;
//  - the tracker stores with each peak the phase id current when it was raised, reset_peaks() gives
//    every peak the current id, and the phase window's high-water marks nest;
//  - memory phases build the timeline in the order they end, with labels, the micro-batch filter
//    of gradient accumulation, and peaks attributed in every micro-batch;
//  - a real Trainer step (a world of one on the CPU backend) reports a timeline that follows the
//    model (embeddings, L forward blocks, loss, [recompute,] L backward blocks in reverse, ...),
//    time by phase that adds up to step_ms, and peak phases the memory model predicts.
#include "runtime/profile/step_profile.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "runtime/backend/backend.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

using std::chrono::milliseconds;
using ::testing::StartsWith;
using Clock = StepProfile::Clock;

double ms(StepPhase p, const StepProfile& prof) { return prof.times_ms()[static_cast<size_t>(p)]; }
double total_ms(const StepTimes& t) { return std::accumulate(t.begin(), t.end(), 0.0); }

// ---- time
// ----------------------------------------------------------------------------------------

TEST(StepProfileTime, NestedScopesAttributeExclusively) {
  MemoryTracker tracker;
  StepProfile prof(tracker, 1, true);
  ActiveStepProfile active(&prof);
  const Clock::time_point t0 = Clock::now();
  prof.start(t0);
  {
    ScopedStepPhase fwd(StepPhase::kBackward);
    std::this_thread::sleep_for(milliseconds(15));
    {
      ScopedStepPhase wait(StepPhase::kCommWait);
      std::this_thread::sleep_for(milliseconds(25));
      {
        ScopedStepPhase io(StepPhase::kOffloadIo);
        std::this_thread::sleep_for(milliseconds(10));
      }
      std::this_thread::sleep_for(milliseconds(5));  // back in comm_wait
    }
    std::this_thread::sleep_for(milliseconds(15));  // back in backward
  }
  std::this_thread::sleep_for(milliseconds(5));  // back in other
  const Clock::time_point t1 = Clock::now();
  prof.finish(t1);

  // Lower bounds only (a sleep lasts at least its time); exclusivity shows in the sum, which
  // would exceed the profiled time if an outer phase also counted its inner ones.
  EXPECT_GE(ms(StepPhase::kBackward, prof), 30.0);
  EXPECT_GE(ms(StepPhase::kCommWait, prof), 30.0);
  EXPECT_GE(ms(StepPhase::kOffloadIo, prof), 10.0);
  EXPECT_GE(ms(StepPhase::kOther, prof), 5.0);
  EXPECT_EQ(ms(StepPhase::kForward, prof), 0.0);
  EXPECT_EQ(ms(StepPhase::kOptimizer, prof), 0.0);
  const double wall = std::chrono::duration<double, std::milli>(t1 - t0).count();
  EXPECT_NEAR(total_ms(prof.times_ms()), wall, 1e-6 * wall);
  for (double v : prof.times_ms()) EXPECT_GE(v, 0.0);
}

TEST(StepProfileTime, OtherThreadsAndNoProfileAreNoOps) {
  {
    ScopedStepPhase nothing(StepPhase::kForward);  // no profile: must not crash
    ScopedMemoryPhase neither(MemPhaseKind::kForwardBlock, 0);
  }
  MemoryTracker tracker;
  StepProfile prof(tracker, 1, true);
  ActiveStepProfile active(&prof);
  prof.start(Clock::now());
  {
    ScopedStepPhase fwd(StepPhase::kForward);
    std::thread other([] {
      EXPECT_EQ(current_step_profile(), nullptr);
      ScopedStepPhase opt(StepPhase::kOptimizer);
      ScopedMemoryPhase part(MemPhaseKind::kOptimizer);
      std::this_thread::sleep_for(milliseconds(10));
    });
    other.join();
  }
  prof.finish(Clock::now());
  EXPECT_EQ(ms(StepPhase::kOptimizer, prof), 0.0);
  EXPECT_GE(ms(StepPhase::kForward, prof), 10.0);
  EXPECT_TRUE(prof.take_timeline().empty());
}

// ---- memory tracker
// ------------------------------------------------------------------------------

TEST(MemoryTrackerPeakPhase, RemembersThePhaseThatSetEachPeak) {
  MemoryTracker t;
  t.set_phase(1);
  t.charge(MemCategory::kParameters, 100);
  t.set_phase(2);
  t.charge(MemCategory::kActivations, 50);
  t.release(MemCategory::kActivations, 50);
  t.set_phase(3);
  t.charge(MemCategory::kActivations, 30);  // below the peak of phase 2
  EXPECT_EQ(t.peak_phase(MemCategory::kActivations), 2);
  EXPECT_EQ(t.peak_phase(MemCategory::kParameters), 1);
  EXPECT_EQ(t.total_peak_phase(), 2);       // 150
  t.charge(MemCategory::kActivations, 30);  // 60 > 50, total 160 > 150
  EXPECT_EQ(t.peak_phase(MemCategory::kActivations), 3);
  EXPECT_EQ(t.total_peak_phase(), 3);
  EXPECT_EQ(t.peak_phase(MemCategory::kGradients), 0);  // never charged, never reset

  t.set_phase(4);
  t.reset_peaks();
  const MemorySnapshot s = t.snapshot();
  for (size_t c = 0; c < kNumMemCategories; ++c) EXPECT_EQ(s.peak_phase[c], 4) << c;
  EXPECT_EQ(s.total_peak_phase, 4);
  t.set_phase(5);
  t.release(MemCategory::kActivations, 60);
  t.charge(MemCategory::kActivations, 60);  // back to the peak, not above it
  EXPECT_EQ(t.peak_phase(MemCategory::kActivations), 4);
}

TEST(MemoryTrackerPeakPhase, WindowHighWaterMarksNest) {
  MemoryTracker t;
  t.charge(MemCategory::kWorkspace, 10);
  t.reset_window();
  t.charge(MemCategory::kWorkspace, 90);
  t.release(MemCategory::kWorkspace, 90);
  const MemoryWindow outer = t.window();
  EXPECT_EQ(outer.peak[static_cast<size_t>(MemCategory::kWorkspace)], 100);
  EXPECT_EQ(outer.total_peak, 100);
  t.reset_window();  // an inner phase
  t.charge(MemCategory::kGradients, 5);
  EXPECT_EQ(t.window().peak[static_cast<size_t>(MemCategory::kWorkspace)], 10);
  t.raise_window(outer);  // the inner phase ends: the outer one keeps both
  const MemoryWindow w = t.window();
  EXPECT_EQ(w.peak[static_cast<size_t>(MemCategory::kWorkspace)], 100);
  EXPECT_EQ(w.peak[static_cast<size_t>(MemCategory::kGradients)], 5);
  EXPECT_EQ(w.total_peak, 100);
}

// ---- memory phases
// -------------------------------------------------------------------------------

TEST(StepProfileMemory, TimelineLabelsWindowsAndPeakPhases) {
  MemoryTracker t;
  t.charge(MemCategory::kParameters, 1000);  // held before the step
  StepProfile prof(t, 1, true);
  ActiveStepProfile active(&prof);
  prof.start(Clock::now());
  t.reset_peaks();
  {
    ScopedMemoryPhase part(MemPhaseKind::kForwardBlock, 3);
    t.charge(MemCategory::kActivations, 200);
    t.charge(MemCategory::kWorkspace, 50);
    t.release(MemCategory::kWorkspace, 50);
  }
  t.charge(MemCategory::kCommunication, 10);  // between parts: "other"
  {
    ScopedMemoryPhase outer(MemPhaseKind::kOptimizer);
    {
      ScopedMemoryPhase inner(MemPhaseKind::kGradNorm);
      t.charge(MemCategory::kWorkspace, 70);
      t.release(MemCategory::kWorkspace, 70);
    }
    t.release(MemCategory::kActivations, 200);
  }
  prof.finish(Clock::now());

  const std::vector<MemoryPhaseRecord> tl = prof.take_timeline();
  ASSERT_EQ(tl.size(), 3u);
  const size_t act = static_cast<size_t>(MemCategory::kActivations);
  const size_t ws = static_cast<size_t>(MemCategory::kWorkspace);
  EXPECT_EQ(tl[0].phase, "forward block 3");
  EXPECT_EQ(tl[0].bytes[act], 200);
  EXPECT_EQ(tl[0].bytes[ws], 0);
  EXPECT_EQ(tl[0].peak[ws], 50);
  EXPECT_EQ(tl[1].phase, "gradient norm");  // parts enter the timeline as they end
  EXPECT_EQ(tl[1].peak[ws], 70);
  EXPECT_EQ(tl[2].phase, "optimizer");
  EXPECT_EQ(tl[2].bytes[act], 0);
  EXPECT_EQ(tl[2].peak[act], 200);
  EXPECT_EQ(tl[2].peak[ws], 70);  // the inner part's marks count for the outer one

  const MemorySnapshot s = t.snapshot();
  auto label = [&](MemCategory c) { return prof.label(s.peak_phase[static_cast<size_t>(c)]); };
  EXPECT_EQ(label(MemCategory::kParameters), "start of step");
  EXPECT_EQ(label(MemCategory::kActivations), "forward block 3");
  EXPECT_EQ(label(MemCategory::kWorkspace), "gradient norm");
  EXPECT_EQ(label(MemCategory::kCommunication), "other");
  EXPECT_EQ(prof.label(s.total_peak_phase), "gradient norm");  // 1000 + 200 + 10 + 70
  EXPECT_EQ(t.phase(), 0);                                     // finish() cleared it
}

TEST(StepProfileMemory, MicroBatchesAreLabelledAndOnlyTheFirstAndLastRecorded) {
  MemoryTracker t;
  StepProfile prof(t, 3, true);
  ActiveStepProfile active(&prof);
  prof.start(Clock::now());
  t.reset_peaks();
  for (int m = 0; m < 3; ++m) {
    prof.set_micro_batch(m);
    ScopedMemoryPhase part(MemPhaseKind::kBackwardBlock, 1);
    if (m == 1) t.charge(MemCategory::kGradients, 64);  // the peak is set in the middle one
  }
  prof.set_micro_batch(-1);
  { ScopedMemoryPhase part(MemPhaseKind::kGradReduction); }
  prof.finish(Clock::now());
  std::vector<std::string> labels;
  for (const MemoryPhaseRecord& r : prof.take_timeline()) labels.push_back(r.phase);
  EXPECT_EQ(labels,
            (std::vector<std::string>{"backward block 1 (micro-batch 1)",
                                      "backward block 1 (micro-batch 3)", "gradient reduction"}));
  EXPECT_EQ(prof.label(t.peak_phase(MemCategory::kGradients)), "backward block 1 (micro-batch 2)");
}

TEST(StepProfileMemory, PhaseIdsRoundTrip) {
  for (const MemPhase p :
       {MemPhase{MemPhaseKind::kStepStart}, MemPhase{MemPhaseKind::kLoss, -1, 7},
        MemPhase{MemPhaseKind::kRecomputeBlock, 95, 63}, MemPhase{MemPhaseKind::kOptimizer}}) {
    EXPECT_NE(p.id(), 0);
    EXPECT_EQ(MemPhase::from_id(p.id()), p);
  }
  EXPECT_EQ(MemPhase::from_id(0).kind, MemPhaseKind::kNone);
  EXPECT_EQ(MemPhase::from_id(-5).kind, MemPhaseKind::kNone);
}

// ---- a real step
// ---------------------------------------------------------------------------------

class TrainerProfileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.file("tokens.bin");
    testing::write_llmc_tokens(data_, testing::patterned_tokens(4096, 64));
  }
  // Runs `steps` steps of `cfg` in a world of one; the results in order.
  std::vector<StepResult> run(const JobConfig& cfg, int steps) {
    backend_ = make_cpu_backend();
    auto t = Trainer::create(cfg, *backend_);
    EXPECT_TRUE(t.is_ok()) << t.status().to_string();
    if (!t.is_ok()) return {};
    std::vector<StepResult> out;
    for (int s = 0; s < steps; ++s) {
      auto r = (*t)->step();
      EXPECT_TRUE(r.is_ok()) << r.status().to_string();
      if (!r.is_ok()) break;
      out.push_back(std::move(r).value());
    }
    return out;
  }
  static std::vector<std::string> labels(const StepResult& r) {
    std::vector<std::string> out;
    for (const MemoryPhaseRecord& m : r.memory_timeline) out.push_back(m.phase);
    return out;
  }
  JobConfig job(int layers = 3) {
    return testing::small_job(data_, layers, 32, 2, 16, 64, /*micro=*/2, /*accumulation=*/1);
  }

  testing::TempDir dir_;
  std::string data_;
  std::unique_ptr<Backend> backend_;
};

// What the model runs, in order, for one micro-batch under `policy` (Note [activation
// checkpointing policies] in runtime/model/gpt2.h: every_n re-runs n blocks, then runs their
// backward), then the step's tail.
std::vector<std::string> expected_parts(int L, CheckpointPolicy policy, int n = 1) {
  std::vector<std::string> p = {"forward embeddings"};
  for (int l = 0; l < L; ++l) p.push_back("forward block " + std::to_string(l));
  p.push_back("loss");
  for (int l = L - 1; l >= 0;) {
    const int s = policy == CheckpointPolicy::kEveryN ? l - l % n : l;
    if (policy != CheckpointPolicy::kNone)
      for (int j = s; j <= l; ++j) p.push_back("recompute block " + std::to_string(j));
    for (int j = l; j >= s; --j) p.push_back("backward block " + std::to_string(j));
    l = s - 1;
  }
  p.insert(p.end(), {"backward embeddings", "gradient reduction", "gradient norm", "optimizer"});
  return p;
}

TEST_F(TrainerProfileTest, TimelineFollowsTheModel) {
  for (CheckpointPolicy policy : {CheckpointPolicy::kNone, CheckpointPolicy::kLayer,
                                  CheckpointPolicy::kEveryN, CheckpointPolicy::kSelective}) {
    SCOPED_TRACE(static_cast<int>(policy));
    JobConfig cfg = job(5);
    cfg.activation_checkpointing.policy = policy;
    if (policy == CheckpointPolicy::kEveryN) cfg.activation_checkpointing.every_n = 2;
    const std::vector<StepResult> steps = run(cfg, 1);
    ASSERT_EQ(steps.size(), 1u);
    const StepResult& r = steps[0];
    EXPECT_EQ(labels(r), expected_parts(5, policy, 2));
    for (const MemoryPhaseRecord& m : r.memory_timeline)
      for (size_t c = 0; c < kNumMemCategories; ++c) {
        EXPECT_LE(m.bytes[c], m.peak[c]) << m.phase << " " << c;
        EXPECT_LE(m.peak[c], r.memory.peak[c]) << m.phase << " " << c;
      }
    const double recompute = r.time_ms[static_cast<size_t>(StepPhase::kRecompute)];
    if (policy == CheckpointPolicy::kNone) {
      EXPECT_EQ(recompute, 0.0);
    } else {
      EXPECT_GT(recompute, 0.0);
    }
  }
}

TEST_F(TrainerProfileTest, TimeByPhaseAddsUpToTheStep) {
  JobConfig cfg = job();
  cfg.zero.stage = 2;
  for (const StepResult& r : run(cfg, 3)) {
    SCOPED_TRACE("step " + std::to_string(r.step));
    for (size_t p = 0; p < kNumStepPhases; ++p)
      EXPECT_GE(r.time_ms[p], 0.0) << step_phase_name(static_cast<StepPhase>(p));
    // The profile covers the step from its first to its last instant.
    const double sum = total_ms(r.time_ms);
    EXPECT_LE(sum, r.step_ms + 1e-6 * r.step_ms);
    EXPECT_GE(sum, r.step_ms - 1e-6 * r.step_ms);
    for (StepPhase p : {StepPhase::kForward, StepPhase::kBackward, StepPhase::kOptimizer})
      EXPECT_GT(r.time_ms[static_cast<size_t>(p)], 0.0) << step_phase_name(p);
    EXPECT_EQ(r.time_ms[static_cast<size_t>(StepPhase::kOffloadIo)], 0.0);  // nothing offloaded
  }
}

// Stage 2: each unit's gradient is a pooled buffer taken when the backward reaches the unit, and
// the norm's all-reduce allocates its small buffer on top of the pooled reduction buffers.
TEST_F(TrainerProfileTest, PeakPhasesFollowTheMemoryModel) {
  JobConfig cfg = job();
  cfg.zero.stage = 2;
  const std::vector<StepResult> steps = run(cfg, 2);
  ASSERT_EQ(steps.size(), 2u);
  auto phase = [](const StepResult& r, MemCategory c) {
    return r.peak_phase[static_cast<size_t>(c)];
  };
  for (const StepResult& r : steps) {
    SCOPED_TRACE("step " + std::to_string(r.step));
    // Allocated when the trainer was created, held through every step.
    EXPECT_EQ(phase(r, MemCategory::kActivations), "start of step");
    EXPECT_EQ(phase(r, MemCategory::kOptimizerStates), "start of step");
    EXPECT_EQ(phase(r, MemCategory::kParameters), "start of step");
    EXPECT_EQ(phase(r, MemCategory::kCommunication), "gradient norm");
    // A peak set by a marked part is that part's high-water mark.
    for (size_t c = 0; c < kNumMemCategories; ++c)
      for (const MemoryPhaseRecord& m : r.memory_timeline)
        if (m.phase == r.peak_phase[c]) {
          EXPECT_EQ(m.peak[c], r.memory.peak[c]) << m.phase;
        }
  }
  // The first step grows the gradient pool block by block; from the second on, it is reused.
  EXPECT_THAT(phase(steps[0], MemCategory::kGradients), StartsWith("backward block "));
  EXPECT_EQ(phase(steps[1], MemCategory::kGradients), "start of step");
}

// Stage 0, fp32: the working weights are the master weights and every buffer is allocated up
// front or on first use, so a step after the first allocates nothing.
TEST_F(TrainerProfileTest, SteadyStateStageZeroStepHoldsEveryPeakFromItsStart) {
  const std::vector<StepResult> steps = run(job(), 2);
  ASSERT_EQ(steps.size(), 2u);
  for (size_t c = 0; c < kNumMemCategories; ++c)
    EXPECT_EQ(steps[1].peak_phase[c], "start of step")
        << mem_category_name(static_cast<MemCategory>(c));
  EXPECT_EQ(steps[1].total_peak_phase, "start of step");
}

TEST_F(TrainerProfileTest, AccumulationAndTimelineSwitch) {
  JobConfig cfg = testing::small_job(data_, 2, 32, 2, 16, 64, /*micro=*/1, /*accumulation=*/3);
  backend_ = make_cpu_backend();
  auto t = Trainer::create(cfg, *backend_);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  auto r = (*t)->step();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const std::vector<std::string> got = labels(*r);
  // Micro-batches 1 and 3 of the 3 enter the timeline (Note [step profile]).
  auto count = [&](const std::string& needle) {
    return std::count_if(got.begin(), got.end(),
                         [&](const std::string& s) { return s.find(needle) != std::string::npos; });
  };
  EXPECT_EQ(count("(micro-batch 1)"), count("(micro-batch 3)"));
  EXPECT_GT(count("(micro-batch 1)"), 0);
  EXPECT_EQ(count("(micro-batch 2)"), 0);
  EXPECT_EQ(got.back(), "optimizer");

  (*t)->set_memory_timeline(false);
  r = (*t)->step();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_TRUE(r->memory_timeline.empty());
  EXPECT_GT(total_ms(r->time_ms), 0.0);
  for (const std::string& p : r->peak_phase) EXPECT_FALSE(p.empty());
  EXPECT_FALSE(r->total_peak_phase.empty());
}

}  // namespace
}  // namespace zt
