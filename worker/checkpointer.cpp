#include "worker/checkpointer.h"

#include <chrono>

#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/shard_io.h"

namespace zt {

Checkpointer::Checkpointer(Trainer& trainer, int rank, std::string root, bool async,
                           AckFn on_written)
    : trainer_(trainer),
      rank_(rank),
      root_(std::move(root)),
      async_(async),
      on_written_(std::move(on_written)) {}

Checkpointer::~Checkpointer() { (void)wait(); }

Status Checkpointer::write(ShardSnapshot snapshot, protocol::CheckpointAck ack) {
  const int64_t step = snapshot.step;
  auto written = write_shard(snapshot, staging_dir(root_, step));
  {
    // Kept for the next snapshot (see the header).
    std::lock_guard<std::mutex> g(mu_);
    if (!snapshot.data.empty()) spare_ = std::move(snapshot.data);
  }
  if (!written.is_ok())
    return written.status().with_context(
        fmt::format("rank {}: writing checkpoint step {}", rank_, step));
  ack.files = {{written->file, written->size, written->xxh3}};
  ack.write_ms = written->write_ms;
  {
    std::lock_guard<std::mutex> g(mu_);
    last_ack_ = ack;
  }
  if (on_written_) on_written_(ack);
  return Status::ok();
}

Result<double> Checkpointer::save() {
  const auto t0 = std::chrono::steady_clock::now();
  ZT_RETURN_IF_ERROR(wait());
  const TrainerState st = trainer_.state();
  ZT_RETURN_IF_ERROR(prepare_staging_dir(root_, st.step));
  Buffer reuse;
  {
    std::lock_guard<std::mutex> g(mu_);
    reuse = std::move(spare_);
  }
  // Synchronous: written before training moves on, so the engine's own memory is written (a view).
  ZT_ASSIGN_OR_RETURN(ShardSnapshot snap, trainer_.snapshot_shard(async_, std::move(reuse)));
  protocol::CheckpointAck ack;
  ack.rank = rank_;
  ack.step = st.step;
  ack.applied_steps = st.applied_steps;
  ack.loss_scale = st.scaler.scale;
  ack.loss_scale_good_steps = st.scaler.good_steps;
  ack.loss_scale_hysteresis_left = st.scaler.hysteresis_left;
  ack.next_sequence = st.next_sequence;
  auto ms_since = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  // Up to here: waiting for the previous write and the snapshot. A synchronous write adds itself
  // to what save() returns, not to the ack.
  ack.blocked_ms = ms_since();
  // State on NVMe is read from its file as the shard is written, before training moves on.
  if (!async_ || snap.reads_engine) {
    ZT_RETURN_IF_ERROR(write(std::move(snap), std::move(ack)));
    return ms_since();
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    done_ = false;
  }
  thread_ = std::thread([this, snap = std::move(snap), ack = std::move(ack)]() mutable {
    Status st = write(std::move(snap), std::move(ack));
    std::lock_guard<std::mutex> g(mu_);
    error_ = std::move(st);
    done_ = true;
  });
  return ms_since();
}

Status Checkpointer::poll() {
  std::lock_guard<std::mutex> g(mu_);
  return done_ ? error_ : Status::ok();
}

Status Checkpointer::wait() {
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> g(mu_);
  Status st = std::move(error_);
  error_ = Status::ok();
  return st;
}

}  // namespace zt
