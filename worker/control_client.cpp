#include "worker/control_client.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include <fmt/format.h>

#include "runtime/comm/mpi/mpi_communicator.h"

namespace zt {
namespace {

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

protocol::StepReport make_step_report(const StepResult& r, int rank) {
  const bool lead = rank == 0;
  protocol::StepReport rep;
  rep.rank = rank;
  rep.step = r.step;
  rep.loss_sum = lead ? r.loss * static_cast<double>(r.tokens) : 0.0;
  rep.token_count = lead ? r.tokens : 0;
  rep.grad_norm_sq_part = lead && std::isfinite(r.grad_norm) ? r.grad_norm * r.grad_norm : 0.0;
  rep.overflow = r.skipped;
  rep.step_ms = r.step_ms;
  rep.lr = r.lr;
  rep.loss_scale = r.loss_scale;
  for (size_t c = 0; c < kNumMemCategories; ++c) {
    rep.memory_current[c] = r.memory.current[c];
    rep.memory_peak[c] = r.memory.peak[c];
  }
  rep.memory_total_current = r.memory.total_current;
  rep.memory_total_peak = r.memory.total_peak;
  for (size_t k = 0; k < kNumCollectiveKinds; ++k) {
    rep.comm_bytes[k] = r.comm.bytes[k];
    rep.comm_calls[k] = r.comm.calls[k];
  }
  rep.comm_busy_ms = r.comm.busy_ms;
  rep.comm_blocked_ms = r.comm.blocked_ms;
  rep.checkpoint_ms = r.checkpoint_ms;
  rep.offload_resident_bytes = r.offload_resident_bytes;
  rep.offload_disk_bytes = r.offload_disk_bytes;
  for (size_t p = 0; p < kNumStepPhases; ++p) rep.time_ms[p] = r.time_ms[p];
  rep.peak_phase = r.peak_phase;
  rep.total_peak_phase = r.total_peak_phase;
  rep.memory_timeline.reserve(r.memory_timeline.size());
  for (const MemoryPhaseRecord& m : r.memory_timeline)
    rep.memory_timeline.push_back(protocol::MemoryPhase{m.phase, m.bytes, m.peak});
  return rep;
}

Result<std::unique_ptr<ControlClient>> ControlClient::register_worker(
    const protocol::CoordinatorAddress& address, const protocol::WorkerHello& hello,
    double timeout_s) {
  std::unique_ptr<ControlClient> c(new ControlClient());
  c->hello_ = hello;
  ZT_ASSIGN_OR_RETURN(c->socket_, protocol::ClientSocket::connect(address));
  // A worker's last words (its goodbye, an error report) must not be dropped at exit.
  ZT_RETURN_IF_ERROR(c->socket_->set_linger(std::chrono::seconds(2)));
  ZT_RETURN_IF_ERROR(c->socket_->send(hello));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return make_error(StatusCode::kTimeout,
                        "rank {}: no plan from the coordinator at {} within {} s", hello.rank,
                        address.endpoint, timeout_s);
    auto m = c->socket_->recv(left);
    if (!m.is_ok()) {
      if (m.status().code() == StatusCode::kTimeout) continue;
      return m.status().with_context(fmt::format("rank {}: registering", hello.rank));
    }
    if (const auto* plan = m->as<protocol::Plan>()) {
      c->plan_ = *plan;
      return c;
    }
    if (const auto* err = m->as<protocol::ErrorReport>())
      return make_error(StatusCode::kAborted, "rank {}: the coordinator refused: {}", hello.rank,
                        err->message);
    if (const auto* cmd = m->as<protocol::Command>();
        cmd && cmd->type == protocol::Command::Type::kAbort)
      return make_error(StatusCode::kAborted, "rank {}: the coordinator aborted the job: {}",
                        hello.rank, cmd->reason);
    // Heartbeats before the plan are fine; anything else is ignored.
  }
}

ControlClient::~ControlClient() {
  {
    std::lock_guard<std::mutex> g(mu_);
    closing_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ControlClient::start(double heartbeat_interval_s, double heartbeat_timeout_s) {
  interval_s_ = heartbeat_interval_s;
  timeout_s_ = heartbeat_timeout_s;
  thread_ = std::thread([this] { run(); });
}

void ControlClient::enqueue(protocol::Message m) {
  {
    std::lock_guard<std::mutex> g(mu_);
    outbox_.push_back(std::move(m));
  }
  cv_.notify_all();
}

void ControlClient::report_step(const protocol::StepReport& r) {
  step_.store(r.step);
  enqueue(r);
}

void ControlClient::finish(int64_t step) {
  enqueue(protocol::Heartbeat{hello_.rank, step, now_unix_ms(), true});
  std::unique_lock<std::mutex> lk(mu_);
  closing_ = true;
  cv_.notify_all();
  lk.unlock();
  if (thread_.joinable()) thread_.join();
}

void ControlClient::report_error(const std::string& message) {
  protocol::ErrorReport e{hello_.rank, hello_.host, message};
  if (thread_.joinable()) {
    enqueue(e);
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::seconds(2), [this] { return outbox_.empty(); });
  } else if (socket_) {
    (void)socket_->send(e);
  }
}

// The control thread: the only user of the socket once training runs.
void ControlClient::run() {
  using Clock = std::chrono::steady_clock;
  auto last_heard = Clock::now(), last_sent = Clock::time_point{};
  for (;;) {
    std::deque<protocol::Message> out;
    bool closing;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(50),
                   [this] { return closing_ || !outbox_.empty(); });
      out.swap(outbox_);
      closing = closing_;
    }
    for (const protocol::Message& m : out) (void)socket_->send(m);
    cv_.notify_all();  // report_error waits for the outbox to drain
    if (closing) return;
    if (std::chrono::duration<double>(Clock::now() - last_sent).count() >= interval_s_) {
      (void)socket_->send(protocol::Heartbeat{hello_.rank, step_.load(), now_unix_ms(), false});
      last_sent = Clock::now();
    }
    while (true) {
      auto in = socket_->recv(std::chrono::milliseconds(0));
      if (!in.is_ok()) break;
      last_heard = Clock::now();
      if (const auto* cmd = in->as<protocol::Command>()) {
        if (cmd->type == protocol::Command::Type::kStop) stop_.store(true);
        if (cmd->type == protocol::Command::Type::kCheckpointNow) checkpoint_.store(true);
        if (cmd->type == protocol::Command::Type::kAbort) {
          std::fprintf(stderr, "zt-worker[rank %d]: the coordinator aborted the job: %s\n",
                       hello_.rank, cmd->reason.c_str());
          std::fflush(stderr);
          mpi_abort(1);
        }
      }
    }
    const double silent = std::chrono::duration<double>(Clock::now() - last_heard).count();
    if (silent > timeout_s_) {
      std::fprintf(stderr,
                   "zt-worker[rank %d]: the coordinator has been silent for %.1f s (heartbeat "
                   "timeout %.1f s): it is gone; aborting the job\n",
                   hello_.rank, silent, timeout_s_);
      std::fflush(stderr);
      mpi_abort(1);
    }
  }
}

}  // namespace zt
