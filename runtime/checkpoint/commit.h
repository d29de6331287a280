// The checkpoint directory protocol: where a checkpoint is staged, how it is made visible, which
// one `latest` names, and retention.
//
// Note [checkpoint commit]
//   1. Every rank writes its shard into checkpoints/step_NNNNNNNN.tmp/ (the file itself through its
//      own .tmp name, fsynced, renamed) and acknowledges it with its size and XXH3-64.
//   2. The committer (the coordinator; rank 0 of a job without one) has every rank's ack: it writes
//      manifest.json into the staging directory and fsyncs the file and the directory.
//   3. It renames step_NNNNNNNN.tmp to step_NNNNNNNN and fsyncs checkpoints/.
//   4. It writes "step_NNNNNNNN\n" to checkpoints/latest.tmp, fsyncs it, renames it to
//      checkpoints/latest and fsyncs checkpoints/ again.
//   5. Retention (checkpoint.keep_last) removes the oldest complete checkpoints beyond the newest
//      keep_last (never the one `latest` names), each by removing its manifest first, so a crash
//      mid-removal leaves a directory without a manifest, which is never read as a checkpoint and
//      which the next job removes; and superseded copies (step_N.replaced-*, never read either).
// A crash anywhere leaves `latest` naming a complete checkpoint: before 3 the staging directory is
// an orphan the next job removes (remove_crash_leftovers); between 3 and 4 `latest` still names the
// previous one, which is complete. Only directories without the .tmp suffix with a manifest are
// ever read as checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/checkpoint/manifest.h"
#include "runtime/core/status.h"

namespace zt {

// RUN_DIR/checkpoints
std::string checkpoints_root(const std::string& run_dir);
// "step_00000100"
std::string checkpoint_dir_name(int64_t step);
// ROOT/step_00000100.tmp
std::string staging_dir(const std::string& root, int64_t step);
// Creates the staging directory of `step` (and the root); several ranks may race to do it.
Status prepare_staging_dir(const std::string& root, int64_t step);

struct CommitResult {
  std::string dir;                   // the committed checkpoint
  std::string replaced;              // an older checkpoint of the same step, moved aside (or "")
  std::vector<std::string> removed;  // checkpoints removed by retention
};
// Steps 2-5 of Note [checkpoint commit] for the staged checkpoint of `manifest.step`. keep_last 0
// keeps everything. A checkpoint of the same step already committed (a job resumed from an earlier
// one got here again) is renamed to step_NNNNNNNN.replaced-<unix ms>; retention (keep_last > 0)
// removes such copies, keep_last 0 keeps them.
Result<CommitResult> commit_checkpoint(const std::string& root, const Manifest& manifest,
                                       int keep_last);

// The checkpoint `latest` names (a directory path); kNotFound when there is none.
Result<std::string> latest_checkpoint(const std::string& root);
// Steps of the committed checkpoints under root (directories step_NNNNNNNN with a manifest),
// ascending.
std::vector<int64_t> list_checkpoints(const std::string& root);
// Removes what a crash leaves under root: staging directories (step_*.tmp) and step_NNNNNNNN
// directories without a manifest (a retention removal cut short). Returns their names.
std::vector<std::string> remove_crash_leftovers(const std::string& root);

// What to resume from: `resume_from` when given (a checkpoint directory), else the run directory's
// latest. Errors say what was looked for.
Result<std::string> resolve_resume_dir(const std::string& run_dir, const std::string& resume_from);

// fsync of a directory, so renames inside it are durable.
Status fsync_dir(const std::string& dir);

}  // namespace zt
