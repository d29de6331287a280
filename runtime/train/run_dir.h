// RunDir: the run directory's files a training process appends to — metrics.jsonl (one JSON
// object per optimizer step, flushed line by line so a crash loses at most the step in flight),
// memory.jsonl (the memory timeline of the sampled steps: one object per rank and part of the
// step), events.log (lifecycle lines with UTC timestamps) and config.resolved.yaml.
#pragma once

#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/train/trainer.h"

namespace zt {

// One rank's part of a metrics line (Note [step profile] for the phases).
struct RankStepMetrics {
  MemorySnapshot memory;                                  // `peak` and `total_peak` are written
  StepTimes time_ms{};                                    // its step_ms per StepPhase
  int64_t comm_bytes = 0;                                 // sent in the step, every collective
  std::array<std::string, kNumMemCategories> peak_phase;  // the part that set each peak
  std::string total_peak_phase;
  // Offloaded state beside the compute memory (StepResult::offload_*_bytes).
  int64_t offload_resident_bytes = 0, offload_disk_bytes = 0;
};

class RunDir {
 public:
  // Creates the directory (and parents) if needed; opens metrics.jsonl and events.log for append.
  static Result<RunDir> open(const std::string& path);
  RunDir(RunDir&& o) noexcept;
  RunDir& operator=(RunDir&&) = delete;
  ~RunDir();

  const std::string& path() const { return path_; }
  Status write_resolved_config(const JobConfig& cfg);
  // One metrics line; `per_rank` holds each rank's part (index = rank).
  Status append_metrics(const StepResult& r, const std::vector<RankStepMetrics>& per_rank);
  // One memory.jsonl line per entry of `timeline` (rank `rank`'s, of step `step`); memory.jsonl
  // is created on the first call.
  Status append_memory(int64_t step, int rank, const std::vector<MemoryPhaseRecord>& timeline);
  Status event(const std::string& line);

 private:
  RunDir() = default;
  std::string path_;
  std::FILE* metrics_ = nullptr;
  std::FILE* memory_ = nullptr;
  std::FILE* events_ = nullptr;
};

// "H:MM:SS", or "?" for a negative or unknown time.
std::string format_eta(double seconds);
// The plain progress line of a step (no newline), the same from the coordinator and a worker
// running without one.
std::string progress_line(const StepResult& r, int64_t total_steps, double eta_seconds);
// Whether step `step` of `total` gets a progress line: the first, every steps_per_print, the last.
bool progress_due(int64_t step, int64_t total, int64_t steps_per_print);
// Whether step `step` records and reports its memory timeline (memory.jsonl): the steps with a
// progress line, and step 2 (the first whose memory pools have settled).
bool memory_timeline_due(int64_t step, int64_t total, int64_t steps_per_print);

// The JSON object of one metrics line (exposed for tests). Beyond the documented fields:
//   "time_ms": {"forward": ms, ..., "other": ms}            the mean over the ranks
//   "time_ms_by_rank": [{"rank": 0, "forward": ms, ...}, ...]
//   "comm_bytes": [{"rank": 0, "bytes": N}, ...]            sent in the step, every collective
//   "peak_phase": [{"rank": 0, "parameters": "start of step", ..., "total": "loss"}, ...]
std::string metrics_json(const StepResult& r, const std::vector<RankStepMetrics>& per_rank);
// One memory.jsonl line (no newline):
//   {"step": S, "rank": R, "phase": "forward block 3", "bytes": {category: N, ...},
//    "peak_bytes": {category: N, ...}}
std::string memory_json(int64_t step, int rank, const MemoryPhaseRecord& record);

}  // namespace zt
