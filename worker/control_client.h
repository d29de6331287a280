// ControlClient: a worker's side of the control plane. It registers with the coordinator
// (WorkerHello), waits for the plan, and then runs a control thread that owns the socket: it sends
// the queued step reports, a heartbeat every comm.heartbeat_interval_s, and turns the
// coordinator's commands into flags the training loop reads after each step. If the coordinator
// says abort, or falls silent for comm.heartbeat_timeout_s, the thread aborts the whole MPI job:
// a worker never hangs on a coordinator that is gone.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "protocol/codec.h"
#include "protocol/transport.h"
#include "runtime/core/status.h"
#include "runtime/train/trainer.h"

namespace zt {

// The report of one step for the coordinator. The trainer has already reduced loss and gradient
// norm over the ranks, so rank 0 carries the totals as its "parts" and the other ranks add zero:
// the coordinator's sum over ranks is then exact.
protocol::StepReport make_step_report(const StepResult& r, int rank);

class ControlClient {
 public:
  // Connects and registers; returns once the plan has arrived (or the timeout passed).
  static Result<std::unique_ptr<ControlClient>> register_worker(
      const protocol::CoordinatorAddress& address, const protocol::WorkerHello& hello,
      double timeout_s);
  ~ControlClient();

  const protocol::Plan& plan() const { return plan_; }

  // Starts the control thread (heartbeats, reports, commands).
  void start(double heartbeat_interval_s, double heartbeat_timeout_s);
  void report_step(const protocol::StepReport& r);
  bool stop_requested() const { return stop_.load(); }
  // Whether the coordinator asked for a checkpoint since the last call (clears the request).
  bool take_checkpoint_request() { return checkpoint_.exchange(false); }
  // Sends a checkpoint ack (thread-safe: the background checkpoint writer calls it).
  void report_checkpoint(const protocol::CheckpointAck& ack) { enqueue(ack); }
  // Sends the last heartbeat (done) and the queued reports, then stops the thread.
  void finish(int64_t step);
  // Tells the coordinator why this rank is failing (best effort, bounded wait).
  void report_error(const std::string& message);

 private:
  ControlClient() = default;
  void run();
  void enqueue(protocol::Message m);

  std::unique_ptr<protocol::ClientSocket> socket_;
  protocol::WorkerHello hello_;
  protocol::Plan plan_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<protocol::Message> outbox_;
  bool closing_ = false;
  bool flushed_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> checkpoint_{false};
  std::atomic<int64_t> step_{0};
  double interval_s_ = 1.0, timeout_s_ = 30.0;
};

}  // namespace zt
