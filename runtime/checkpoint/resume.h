// Choosing and checking the checkpoint a job resumes from — the one place both the coordinator and
// a worker running without one decide it, so they refuse the same things with the same words.
#pragma once

#include <string>
#include <vector>

#include "runtime/checkpoint/manifest.h"
#include "runtime/config/job_config.h"
#include "runtime/core/status.h"

namespace zt {

struct ResumePoint {
  std::string dir;  // absolute path of the checkpoint directory
  Manifest manifest;
  std::vector<std::string> notes;  // how the resumed job differs from the one that wrote it
};

// `resume_from` (a checkpoint directory), or the run directory's latest when empty: reads the
// manifest (refusing a newer format), checks it against `cfg` resolved for `world` ranks (model
// shape, optimizer; train.steps must go beyond the checkpoint; `world` 0: not known yet, so no
// world-size note), and verifies every shard file's
// size and XXH3-64. Every refusal names the checkpoint and what is wrong; nothing is written.
Result<ResumePoint> prepare_resume(const std::string& run_dir, const std::string& resume_from,
                                   const JobConfig& cfg, int world);

// A fresh (not resumed) job must not start in a run directory that already holds a committed
// checkpoint: it would append a second step 1 to metrics.jsonl and point `latest` back at its own
// early checkpoints. An error naming the directory and what to do instead; ok otherwise.
Status check_fresh_run_dir(const std::string& run_dir);

}  // namespace zt
