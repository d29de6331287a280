// StepProfile: where one optimizer step's time goes, and how much memory each part of it holds.
//
// Note [step profile]
// Time. Every moment of a step belongs to exactly one StepPhase. ScopedStepPhase switches the
// current phase and restores the previous one when it ends, so the attribution is exclusive: a
// collective's wait inside a block's backward counts as comm_wait, not backward; an NVMe wait
// inside the optimizer step as offload_io. What no scope claims (data loading, host copies between
// the parts) is `other`, so the phases add up to the step's time.
//
// Memory. ScopedMemoryPhase marks a labelled part of the step: "forward block 3", "loss",
// "recompute block 3", "backward block 3", "gradient reduction", "optimizer" (MemPhase). While it
// runs, its id is the memory tracker's phase, so the tracker remembers which part set each peak
// (Note [peak phase] in runtime/memory/memory_tracker.h); when it ends, the bytes in use per
// category and the high-water mark within it join the step's memory timeline. A peak never raised
// during the step is attributed to "start of step": it was already held when the step began
// (preallocated activations, the weights). Memory allocated between marked parts is "other".
// With gradient accumulation, the parts of a micro-batch are labelled with it ("forward block 3
// (micro-batch 2)"), and only the first and the last micro-batch enter the timeline: the middle
// ones repeat the first (stage 0/1 reduce only after the last), and a step of 64 micro-batches
// would otherwise report thousands of entries. Peaks are attributed in every micro-batch.
//
// The running step's profile is reached through a thread-local pointer (ActiveStepProfile), so
// the model, the ZeRO engine and the state store mark their parts without new parameters; the
// scopes do nothing on other threads (the communication thread, checkpoint writers) and outside
// a step (evaluate(), tests that drive the model directly). One step runs on one thread.
//
// On the CUDA backend host clocks measure when work was launched, not when it ran: device time
// shows up in the phase that first waits for the device (a collective's wait, a copy to the host,
// or the step's final synchronize, which is `other`).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/memory/memory_tracker.h"

namespace zt {

enum class StepPhase : uint8_t {
  kForward = 0,
  kBackward,
  kRecompute,  // activation checkpointing: forward re-run during the backward
  kCommWait,   // blocked waiting for a collective
  kOptimizer,  // gradient norm, clipping, the update, refreshing the working weights
  kOffloadIo,  // waiting for offloaded state: NVMe reads and writes, host <-> device staging
  kOther,
  kCount,
};
constexpr size_t kNumStepPhases = static_cast<size_t>(StepPhase::kCount);
// "forward", "backward", "recompute", "comm_wait", "optimizer", "offload_io", "other": the keys of
// metrics.jsonl's time_ms.
const char* step_phase_name(StepPhase p);

// Milliseconds per StepPhase.
using StepTimes = std::array<double, kNumStepPhases>;

enum class MemPhaseKind : uint8_t {
  kNone = 0,  // no step running
  kStepStart,
  kOther,
  kForwardEmbeddings,
  kForwardBlock,
  kLoss,  // final LayerNorm, LM head, cross-entropy and their backward
  kRecomputeBlock,
  kBackwardBlock,
  kBackwardEmbeddings,
  kGradReduction,  // waiting for the last reductions, the loss's all-reduce
  kGradNorm,       // the global gradient norm and overflow check
  kOptimizer,
};

// A labelled part of a step. Packs into the tracker's int64 phase id.
struct MemPhase {
  MemPhaseKind kind = MemPhaseKind::kNone;
  int block = -1;  // the block of the *Block kinds
  int micro = -1;  // 0-based micro-batch of the parts of one, -1 otherwise

  int64_t id() const;
  static MemPhase from_id(int64_t id);
  // "forward block 3"; with micro_batches > 1 the parts of a micro-batch name it:
  // "forward block 3 (micro-batch 2)".
  std::string label(int micro_batches) const;
  bool operator==(const MemPhase&) const = default;
};

// One entry of the memory timeline: a part of the step and the bytes per category it left in use
// and the most it held at once.
struct MemoryPhaseRecord {
  std::string phase;
  std::array<int64_t, kNumMemCategories> bytes{};
  std::array<int64_t, kNumMemCategories> peak{};
  bool operator==(const MemoryPhaseRecord&) const = default;
};

class StepProfile {
 public:
  using Clock = std::chrono::steady_clock;

  // `tracker`: the memory the timeline and the peak phases follow (the compute backend's).
  StepProfile(MemoryTracker& tracker, int micro_batches, bool record_timeline);
  ~StepProfile();  // clears the tracker's phase (a step that failed half-way never finished)
  StepProfile(const StepProfile&) = delete;
  StepProfile& operator=(const StepProfile&) = delete;

  // The step's clock starts at t0 in `other`; the tracker's phase becomes "start of step" and its
  // phase window restarts. Call before MemoryTracker::reset_peaks().
  void start(Clock::time_point t0);
  // Closes the current phase at t1 (the step's end) and clears the tracker's phase.
  void finish(Clock::time_point t1);

  // The micro-batch the following parts belong to (-1: none).
  void set_micro_batch(int micro) { micro_ = micro; }
  int micro_batch() const { return micro_; }
  int micro_batches() const { return micro_batches_; }

  const StepTimes& times_ms() const { return ms_; }
  // The timeline in the order the parts ended (empty unless recorded); moves it out.
  std::vector<MemoryPhaseRecord> take_timeline();
  std::string label(int64_t id) const { return MemPhase::from_id(id).label(micro_batches_); }
  MemoryTracker& tracker() { return tracker_; }

  // For the scopes: switches the time phase, returning the previous one.
  StepPhase switch_phase(StepPhase p);
  // For ScopedMemoryPhase's end: one timeline entry (kept or not, Note [step profile]).
  void record(const MemPhase& phase, const MemoryWindow& window);

 private:
  struct Raw {
    int64_t id;
    std::array<int64_t, kNumMemCategories> bytes, peak;
  };
  MemoryTracker& tracker_;
  int micro_batches_;
  bool record_timeline_;
  int micro_ = -1;
  StepPhase phase_ = StepPhase::kOther;
  Clock::time_point since_{};
  StepTimes ms_{};
  std::vector<Raw> raw_;
};

// The profile of the step running on this thread, or nullptr.
StepProfile* current_step_profile();

// Makes `p` this thread's profile for its lifetime (restores the previous one after).
class ActiveStepProfile {
 public:
  explicit ActiveStepProfile(StepProfile* p);
  ~ActiveStepProfile();
  ActiveStepProfile(const ActiveStepProfile&) = delete;
  ActiveStepProfile& operator=(const ActiveStepProfile&) = delete;

 private:
  StepProfile* prev_;
};

// Time from construction to destruction goes to `phase` (exclusively: Note [step profile]).
class ScopedStepPhase {
 public:
  explicit ScopedStepPhase(StepPhase phase);
  ~ScopedStepPhase();
  ScopedStepPhase(const ScopedStepPhase&) = delete;
  ScopedStepPhase& operator=(const ScopedStepPhase&) = delete;

 private:
  StepProfile* profile_;
  StepPhase prev_ = StepPhase::kOther;
};

// A labelled part of the step for the memory timeline and the peak phases. The micro-batch comes
// from the profile for the kinds that belong to one.
class ScopedMemoryPhase {
 public:
  explicit ScopedMemoryPhase(MemPhaseKind kind, int block = -1);
  ~ScopedMemoryPhase();
  ScopedMemoryPhase(const ScopedMemoryPhase&) = delete;
  ScopedMemoryPhase& operator=(const ScopedMemoryPhase&) = delete;

 private:
  StepProfile* profile_;
  MemPhase phase_;
  int64_t prev_id_ = 0;
  MemoryWindow outer_;  // the enclosing part's high-water marks so far
};

// Both: a labelled part whose time goes to one phase.
class ScopedProfilePhase {
 public:
  ScopedProfilePhase(StepPhase phase, MemPhaseKind kind, int block = -1)
      : time_(phase), memory_(kind, block) {}

 private:
  ScopedStepPhase time_;
  ScopedMemoryPhase memory_;
};

}  // namespace zt
