#include "runtime/profile/step_profile.h"

#include <fmt/format.h>

namespace zt {

namespace {

thread_local StepProfile* t_profile = nullptr;

// The id packs kind, micro-batch + 1 and block + 1 into 8, 24 and 24 bits; 0 is kNone.
constexpr int kFieldBits = 24;
constexpr int64_t kFieldMask = (int64_t{1} << kFieldBits) - 1;

bool per_micro_batch(MemPhaseKind k) {
  switch (k) {
    case MemPhaseKind::kForwardEmbeddings:
    case MemPhaseKind::kForwardBlock:
    case MemPhaseKind::kLoss:
    case MemPhaseKind::kRecomputeBlock:
    case MemPhaseKind::kBackwardBlock:
    case MemPhaseKind::kBackwardEmbeddings:
      return true;
    default:
      return false;
  }
}

}  // namespace

const char* step_phase_name(StepPhase p) {
  switch (p) {
    case StepPhase::kForward:
      return "forward";
    case StepPhase::kBackward:
      return "backward";
    case StepPhase::kRecompute:
      return "recompute";
    case StepPhase::kCommWait:
      return "comm_wait";
    case StepPhase::kOptimizer:
      return "optimizer";
    case StepPhase::kOffloadIo:
      return "offload_io";
    case StepPhase::kOther:
      return "other";
    case StepPhase::kCount:
      break;
  }
  return "?";
}

int64_t MemPhase::id() const {
  if (kind == MemPhaseKind::kNone) return 0;
  return static_cast<int64_t>(kind) << (2 * kFieldBits) |
         (static_cast<int64_t>(micro + 1) & kFieldMask) << kFieldBits |
         (static_cast<int64_t>(block + 1) & kFieldMask);
}

MemPhase MemPhase::from_id(int64_t id) {
  MemPhase p;
  const int64_t kind = id >> (2 * kFieldBits);
  if (id <= 0 || kind > static_cast<int64_t>(MemPhaseKind::kOptimizer)) return p;
  p.kind = static_cast<MemPhaseKind>(kind);
  p.micro = static_cast<int>((id >> kFieldBits) & kFieldMask) - 1;
  p.block = static_cast<int>(id & kFieldMask) - 1;
  return p;
}

std::string MemPhase::label(int micro_batches) const {
  std::string s;
  switch (kind) {
    case MemPhaseKind::kNone:
      return "outside a step";
    case MemPhaseKind::kStepStart:
      return "start of step";
    case MemPhaseKind::kOther:
      return "other";
    case MemPhaseKind::kForwardEmbeddings:
      s = "forward embeddings";
      break;
    case MemPhaseKind::kForwardBlock:
      s = fmt::format("forward block {}", block);
      break;
    case MemPhaseKind::kLoss:
      s = "loss";
      break;
    case MemPhaseKind::kRecomputeBlock:
      s = fmt::format("recompute block {}", block);
      break;
    case MemPhaseKind::kBackwardBlock:
      s = fmt::format("backward block {}", block);
      break;
    case MemPhaseKind::kBackwardEmbeddings:
      s = "backward embeddings";
      break;
    case MemPhaseKind::kGradReduction:
      return "gradient reduction";
    case MemPhaseKind::kGradNorm:
      return "gradient norm";
    case MemPhaseKind::kOptimizer:
      return "optimizer";
  }
  if (micro_batches > 1 && micro >= 0) s += fmt::format(" (micro-batch {})", micro + 1);
  return s;
}

StepProfile::StepProfile(MemoryTracker& tracker, int micro_batches, bool record_timeline)
    : tracker_(tracker), micro_batches_(micro_batches), record_timeline_(record_timeline) {}

StepProfile::~StepProfile() { tracker_.set_phase(0); }

void StepProfile::start(Clock::time_point t0) {
  since_ = t0;
  phase_ = StepPhase::kOther;
  ms_ = {};
  raw_.clear();
  tracker_.set_phase(MemPhase{MemPhaseKind::kStepStart}.id());
  tracker_.reset_window();
}

void StepProfile::finish(Clock::time_point t1) {
  ms_[static_cast<size_t>(phase_)] +=
      std::chrono::duration<double, std::milli>(t1 - since_).count();
  since_ = t1;
  tracker_.set_phase(0);
}

StepPhase StepProfile::switch_phase(StepPhase p) {
  const StepPhase prev = phase_;
  if (p == prev) return prev;
  const Clock::time_point now = Clock::now();
  ms_[static_cast<size_t>(prev)] += std::chrono::duration<double, std::milli>(now - since_).count();
  since_ = now;
  phase_ = p;
  return prev;
}

void StepProfile::record(const MemPhase& phase, const MemoryWindow& window) {
  if (!record_timeline_) return;
  if (phase.micro > 0 && phase.micro < micro_batches_ - 1) return;  // Note [step profile]
  const MemorySnapshot s = tracker_.snapshot();
  raw_.push_back(Raw{phase.id(), s.current, window.peak});
}

std::vector<MemoryPhaseRecord> StepProfile::take_timeline() {
  std::vector<MemoryPhaseRecord> out;
  out.reserve(raw_.size());
  for (const Raw& r : raw_) out.push_back(MemoryPhaseRecord{label(r.id), r.bytes, r.peak});
  raw_.clear();
  return out;
}

StepProfile* current_step_profile() { return t_profile; }

ActiveStepProfile::ActiveStepProfile(StepProfile* p) : prev_(t_profile) { t_profile = p; }
ActiveStepProfile::~ActiveStepProfile() { t_profile = prev_; }

ScopedStepPhase::ScopedStepPhase(StepPhase phase) : profile_(t_profile) {
  if (profile_) prev_ = profile_->switch_phase(phase);
}

ScopedStepPhase::~ScopedStepPhase() {
  if (profile_) profile_->switch_phase(prev_);
}

ScopedMemoryPhase::ScopedMemoryPhase(MemPhaseKind kind, int block) : profile_(t_profile) {
  if (!profile_) return;
  phase_ = MemPhase{kind, block, per_micro_batch(kind) ? profile_->micro_batch() : -1};
  MemoryTracker& t = profile_->tracker();
  prev_id_ = t.phase();
  outer_ = t.window();
  t.reset_window();
  t.set_phase(phase_.id());
}

ScopedMemoryPhase::~ScopedMemoryPhase() {
  if (!profile_) return;
  MemoryTracker& t = profile_->tracker();
  profile_->record(phase_, t.window());
  t.raise_window(outer_);
  // After the first marked part, what runs outside the marked parts is "other", not the start.
  const int64_t start = MemPhase{MemPhaseKind::kStepStart}.id();
  t.set_phase(prev_id_ == start ? MemPhase{MemPhaseKind::kOther}.id() : prev_id_);
}

}  // namespace zt
