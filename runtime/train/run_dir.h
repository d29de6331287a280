// RunDir: the run directory's files a training process appends to — metrics.jsonl (one JSON
// object per optimizer step, flushed line by line so a crash loses at most the step in flight),
// events.log (lifecycle lines with UTC timestamps) and config.resolved.yaml.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/train/trainer.h"

namespace zt {

class RunDir {
 public:
  // Creates the directory (and parents) if needed; opens metrics.jsonl and events.log for append.
  static Result<RunDir> open(const std::string& path);
  RunDir(RunDir&& o) noexcept;
  RunDir& operator=(RunDir&&) = delete;
  ~RunDir();

  const std::string& path() const { return path_; }
  Status write_resolved_config(const JobConfig& cfg);
  // One metrics line; `per_rank` holds each rank's memory (index = rank).
  Status append_metrics(const StepResult& r, const std::vector<MemorySnapshot>& per_rank);
  Status event(const std::string& line);

 private:
  RunDir() = default;
  std::string path_;
  std::FILE* metrics_ = nullptr;
  std::FILE* events_ = nullptr;
};

// "H:MM:SS", or "?" for a negative or unknown time.
std::string format_eta(double seconds);
// The plain progress line of a step (no newline), the same from the coordinator and a worker
// running without one.
std::string progress_line(const StepResult& r, int64_t total_steps, double eta_seconds);
// Whether step `step` of `total` gets a progress line: the first, every steps_per_print, the last.
bool progress_due(int64_t step, int64_t total, int64_t steps_per_print);

// The JSON object of one metrics line (exposed for tests).
std::string metrics_json(const StepResult& r, const std::vector<MemorySnapshot>& per_rank);

}  // namespace zt
