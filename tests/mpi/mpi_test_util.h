// Helpers shared by the MPI tests: the world's rank and size, and "must" wrappers that abort the
// whole MPI job on a failure — a failed step or create on one rank leaves the others blocked in a
// collective that will never complete, so reporting and aborting beats hanging until ctest's
// timeout; a temporary directory every rank sees, the optimizer settings the tests train with, and
// a checkpoint taken the way a worker without a coordinator takes one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <mpi.h>

#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/shard_io.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/train/trainer.h"

namespace zt::testing {

inline int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline void must_ok(const Status& st, const std::string& what) {
  if (st.is_ok()) return;
  std::fprintf(stderr, "[rank %d] %s failed: %s -- aborting the MPI job\n", world_rank(),
               what.c_str(), st.to_string().c_str());
  std::fflush(stderr);
  mpi_abort(1);
}

template <typename T>
T must(Result<T> r, const std::string& what) {
  must_ok(r.status(), what);
  return std::move(r).value();
}

inline void world_barrier() { MPI_Barrier(MPI_COMM_WORLD); }

// A directory every rank sees: rank 0 creates it and broadcasts its path; removed by rank 0 once
// every rank is done with it.
class SharedTempDir {
 public:
  SharedTempDir() {
    char path[256] = {};
    if (world_rank() == 0) {
      char tmpl[] = "/tmp/zt_ckpt_test_XXXXXX";
      const char* p = mkdtemp(tmpl);
      if (!p) must_ok(make_error(StatusCode::kInternal, "mkdtemp failed"), "SharedTempDir");
      std::snprintf(path, sizeof(path), "%s", p);
    }
    MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = path;
  }
  ~SharedTempDir() {
    world_barrier();
    std::error_code ec;
    if (world_rank() == 0) std::filesystem::remove_all(path_, ec);
  }
  SharedTempDir(const SharedTempDir&) = delete;
  SharedTempDir& operator=(const SharedTempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Switches `cfg` to optimizer `type` with settings that make every one of its states matter.
inline void use_optimizer(JobConfig& cfg, const std::string& type) {
  if (type == "AdamW") return;
  const float lr = cfg.optimizer.lr;
  cfg.optimizer = OptimizerConfig::defaults_for(type);
  if (cfg.optimizer.is_adam()) cfg.optimizer.lr = lr;
  if (type == "SGD") {
    cfg.optimizer.lr = 0.05f;
    cfg.optimizer.momentum = 0.9f;
    cfg.optimizer.nesterov = true;
    cfg.optimizer.weight_decay = 1e-3f;
  }
  if (type == "Lion") {
    cfg.optimizer.lr = lr / 3;
    cfg.optimizer.weight_decay = 0.1f;
  }
  if (type == "Adafactor") {  // a first moment too: ranged and whole states
    cfg.optimizer.use_first_moment = true;
    cfg.optimizer.beta1 = 0.9f;
  }
}

// A checkpoint of `t` after its completed steps, the way a worker without a coordinator takes one
// (Note [checkpoint commit]): every rank stages its shard, rank 0 of `mpi` (MPI_COMM_NULL: a world
// of one) gathers the acks, writes the manifest and commits. Both kinds of snapshot are used: a
// copy (what an asynchronous write takes) at even steps, a view of the engine's memory (a
// synchronous write) at odd ones. Returns the committed directory (on every rank).
inline std::string save_checkpoint(Trainer& t, const JobConfig& cfg, MPI_Comm mpi,
                                   const std::string& root) {
  const int64_t step = t.completed_steps();
  must_ok(prepare_staging_dir(root, step), "prepare_staging_dir");
  const ShardSnapshot snap = must(t.snapshot_shard(/*copy=*/step % 2 == 0), "snapshot_shard");
  const WrittenShard written = must(write_shard(snap, staging_dir(root, step)), "write_shard");
  EXPECT_EQ(written.file, shard_file_name(t.comm().rank()));
  const int n = t.comm().world_size();
  uint64_t mine[2] = {written.size, written.xxh3};
  std::vector<uint64_t> all(2 * static_cast<size_t>(n));
  if (n == 1)
    std::copy_n(mine, 2, all.begin());
  else
    MPI_Gather(mine, 2, MPI_UINT64_T, all.data(), 2, MPI_UINT64_T, 0, mpi);
  const std::string dir = root + "/" + checkpoint_dir_name(step);
  if (t.comm().rank() == 0) {
    std::vector<ShardAck> acks;
    for (int i = 0; i < n; ++i)
      acks.push_back({shard_file_name(i), all[2 * static_cast<size_t>(i)],
                      all[2 * static_cast<size_t>(i) + 1]});
    const Manifest m = make_manifest(cfg, t.plan(), t.state(), acks);
    const CommitResult c = must(commit_checkpoint(root, m, /*keep_last=*/0), "commit_checkpoint");
    EXPECT_EQ(c.dir, dir);
  }
  if (n > 1) MPI_Barrier(mpi);
  return dir;
}

}  // namespace zt::testing
