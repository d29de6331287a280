// CheckpointCommitter: the coordinator's side of Note [checkpoint commit] (runtime/checkpoint/
// commit.h). Once every rank has acked a checkpoint, the coordinator queues its manifest here; a
// thread of its own commits the queued checkpoints in order (manifest, fsyncs, rename, `latest`,
// retention), so the coordinator's loop — heartbeats, liveness, ztctl — never waits for a disk.
// Each outcome is logged through `log` (from the committer's thread) and handed back through
// take_done(). Destruction finishes what is queued: a checkpoint every rank wrote is committed
// even when the job fails right after.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/manifest.h"

namespace zt {

class CheckpointCommitter {
 public:
  struct Done {
    int64_t step = 0;
    Status status;  // ok: committed into `dir`
    std::string dir;
  };
  // `root`: the run directory's checkpoints/. `log` must be thread-safe.
  CheckpointCommitter(std::string root, int keep_last, std::function<void(const std::string&)> log);
  ~CheckpointCommitter();
  CheckpointCommitter(const CheckpointCommitter&) = delete;
  CheckpointCommitter& operator=(const CheckpointCommitter&) = delete;

  // `summary` ends the event line of a successful commit (sizes, write times).
  void submit(Manifest manifest, std::string summary);
  // Outcomes since the last call, in commit order.
  std::vector<Done> take_done();
  // Nothing queued and nothing being committed.
  bool idle();

 private:
  struct Job {
    Manifest manifest;
    std::string summary;
  };
  void run();

  std::string root_;
  int keep_last_;
  std::function<void(const std::string&)> log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::vector<Done> done_;
  bool busy_ = false;
  bool closing_ = false;
  std::thread thread_;
};

}  // namespace zt
