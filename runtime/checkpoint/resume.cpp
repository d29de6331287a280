#include "runtime/checkpoint/resume.h"

#include <fmt/format.h>

#include "runtime/checkpoint/commit.h"

namespace zt {

Result<ResumePoint> prepare_resume(const std::string& run_dir, const std::string& resume_from,
                                   const JobConfig& cfg, int world) {
  ResumePoint p;
  ZT_ASSIGN_OR_RETURN(p.dir, resolve_resume_dir(run_dir, resume_from));
  ZT_ASSIGN_OR_RETURN(p.manifest, read_manifest(p.dir));
  const Manifest& m = p.manifest;
  auto notes = check_resume_compatible(m, cfg);
  if (!notes.is_ok()) return notes.status().with_context(p.dir);
  p.notes = std::move(notes).value();
  if (cfg.train.steps <= m.step)
    return make_error(StatusCode::kInvalidArgument,
                      "{}: the checkpoint is at step {} and train.steps is {}: nothing is left to "
                      "train; raise train.steps (e.g. --steps on ztctl launch)",
                      p.dir, m.step, cfg.train.steps);
  if (world > 0 && m.world_size != world)
    p.notes.push_back(fmt::format("world size: {} -> {}", m.world_size, world));
  ZT_RETURN_IF_ERROR(verify_checkpoint_files(p.dir, m));
  return p;
}

Status check_fresh_run_dir(const std::string& run_dir) {
  auto latest = latest_checkpoint(checkpoints_root(run_dir));
  if (!latest.is_ok()) return Status::ok();
  return make_error(StatusCode::kInvalidArgument,
                    "run directory '{}' already holds a job's checkpoints (latest: {}): continue "
                    "that job with --resume, or start a new one in another run directory",
                    run_dir, *latest);
}

}  // namespace zt
