// Checkpointer: a worker's side of checkpoints (Note [checkpoint commit] in
// runtime/checkpoint/commit.h). At a step boundary every rank agreed on, save() waits for the
// previous checkpoint's write, snapshots this rank's shard into host memory and writes it into the
// staging directory — on a background thread when checkpoint.async, so training goes on — and then
// hands the ack (file, size, XXH3-64, trainer state) to `on_written`, which the control client
// sends to the coordinator. A failed write is kept and returned by the next poll(), save() or
// wait(), so the training loop fails the job with it (the previous checkpoint stays intact: nothing
// of this one is committed).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "protocol/codec.h"
#include "runtime/core/status.h"
#include "runtime/train/trainer.h"

namespace zt {

class Checkpointer {
 public:
  using AckFn = std::function<void(const protocol::CheckpointAck&)>;
  // `root`: the run directory's checkpoints/. `on_written` may be empty (the caller collects
  // last_ack() itself, e.g. without a coordinator); it runs on the writer thread when async.
  Checkpointer(Trainer& trainer, int rank, std::string root, bool async, AckFn on_written);
  ~Checkpointer();  // waits for a write in flight

  // Checkpoints the trainer's current step. Returns the milliseconds training was blocked
  // (waiting for the previous write, the snapshot, and the whole write when synchronous).
  Result<double> save();
  // The error of a finished background write, if any; never blocks.
  Status poll();
  // Waits for the write in flight; its status.
  Status wait();
  // The ack of the last completed write (after wait()).
  const std::optional<protocol::CheckpointAck>& last_ack() const { return last_ack_; }

 private:
  Status write(ShardSnapshot snapshot, protocol::CheckpointAck ack);

  Trainer& trainer_;
  int rank_;
  std::string root_;
  bool async_;
  AckFn on_written_;
  std::thread thread_;
  std::mutex mu_;
  Status error_;  // of the last background write
  bool done_ = true;
  std::optional<protocol::CheckpointAck> last_ack_;
  Buffer spare_;  // the last snapshot's buffer, for the next
};

}  // namespace zt
