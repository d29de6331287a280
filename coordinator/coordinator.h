// The coordinator: the single source of truth of a job. It validates the config, waits for every
// worker to register, computes the partition plan (make_partition_plan, the same function the ZeRO
// engine uses) and sends it with the resolved config, aggregates the ranks' step reports into
// metrics.jsonl and a progress line, answers ztctl, and watches liveness: a worker silent for
// comm.heartbeat_timeout_s, or one that reports an error, fails the job — the survivors are told to
// abort, events.log says which rank on which host failed and why, and run() returns non-zero.
// A stop (ztctl stop, SIGINT/SIGTERM) lets the workers finish the step in flight and returns 0.
// Checkpoints: the workers write their shards and ack them; once every rank has acked a step the
// coordinator writes the manifest and commits (Note [checkpoint commit]). --resume/--resume-from
// choose and verify the checkpoint before any worker registers, and the plan tells the workers.
//
// Single-threaded: run() polls the socket and checks timers; request_stop() only sets a flag, so it
// may be called from a signal handler. The one exception, metrics_snapshot(), reads a copy the loop
// publishes under a mutex of its own, so a metrics scraper never waits on, or delays, the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/checkpoint_committer.h"
#include "coordinator/metrics_exporter.h"
#include "protocol/codec.h"
#include "protocol/transport.h"
#include "runtime/checkpoint/resume.h"
#include "runtime/config/job_config.h"
#include "runtime/plan/auto_plan.h"
#include "runtime/train/run_dir.h"
#include "runtime/zero/partition_plan.h"

namespace zt {

struct CoordinatorOptions {
  std::string config_path;
  std::string run_dir;
  std::string listen = "tcp://127.0.0.1:0";
  int world = 0;                      // 0: the world size the first worker reports
  double register_timeout_s = 300.0;  // all ranks must register within this
  bool quiet = false;                 // no progress output (tests)
  bool resume = false;                // continue from the run directory's latest checkpoint
  std::string resume_from;            // continue from this checkpoint directory
  int64_t steps = 0;                  // > 0: overrides train.steps
};

class Coordinator {
 public:
  // Validates the config, opens the run directory, binds the socket and writes the endpoint and
  // public key files (mode 0600) into the run directory.
  static Result<std::unique_ptr<Coordinator>> create(const CoordinatorOptions& options);
  ~Coordinator();

  const std::string& endpoint() const { return server_->endpoint(); }
  const std::string& public_key() const { return keys_.public_key; }

  // Runs the job to its end: 0 when it finished or was stopped, 1 when it failed.
  int run();
  // Asks for a graceful stop (async-signal-safe).
  void request_stop() { stop_requested_.store(true); }
  // The job's live figures for --metrics-port (coordinator/metrics_server.h), as of the loop's
  // latest turn (at most ~100 ms old; heartbeat ages are computed now). Any thread.
  MetricsSnapshot metrics_snapshot() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct Rank {
    bool registered = false;
    protocol::PeerId peer;
    protocol::WorkerHello hello;
    Clock::time_point last_seen;
    int64_t last_step = 0;
    bool done = false;
    protocol::MemBytes current{}, peak{};
    int64_t total_current = 0, total_peak = 0;
    int64_t offload_resident_bytes = 0, offload_disk_bytes = 0;
  };

  explicit Coordinator(const CoordinatorOptions& options);
  Status init();
  void handle(const protocol::Incoming& in);
  void on_hello(const protocol::PeerId& peer, const protocol::WorkerHello& h);
  void on_step_report(const protocol::StepReport& r);
  void on_checkpoint_ack(const protocol::CheckpointAck& a);
  void collect_commits();
  void finish_job();
  void on_ctl(const protocol::PeerId& peer, const protocol::CtlRequest& req);
  Status send_plans();
  // The per-rank memory budget for `auto` keys from the workers' hellos (runtime/plan/auto_plan.h).
  MemoryBudget budget_from_workers() const;
  void check_liveness();
  void send_heartbeats();
  void begin_stop(const std::string& why);
  void fail(const std::string& why);
  void event(const std::string& line);
  protocol::CtlReply status_reply() const;
  Rank* rank_of_peer(const protocol::PeerId& peer);
  void print_progress(const StepResult& r);
  void publish_metrics();

  CoordinatorOptions opts_;
  JobConfig cfg_;
  std::unique_ptr<RunDir> run_dir_;
  protocol::CurveKeyPair keys_;
  std::unique_ptr<protocol::ServerSocket> server_;
  protocol::JobState state_ = protocol::JobState::kStarting;
  int world_ = 0;
  std::vector<Rank> ranks_;
  std::optional<PartitionPlan> plan_;
  // Why the `auto` keys got their values, and the plan's memory estimate (events.log, ztctl
  // status).
  std::vector<std::string> plan_notes_;
  // Step reports waiting for the other ranks: step -> per-rank report.
  std::map<int64_t, std::vector<std::optional<protocol::StepReport>>> pending_steps_;
  int64_t completed_step_ = 0;
  int64_t start_step_ = 0;  // the resumed checkpoint's step (0 for a fresh job)
  std::optional<ResumePoint> resume_;
  // Checkpoint acks waiting for the other ranks: step -> per-rank ack (Note [checkpoint commit]).
  std::map<int64_t, std::vector<std::optional<protocol::CheckpointAck>>> pending_checkpoints_;
  int64_t last_checkpoint_step_ = 0;
  std::string last_checkpoint_dir_;
  bool workers_done_ = false;  // every rank sent its last heartbeat; finished once commits are
  // Figures only the metrics endpoint shows.
  std::optional<StepFigures> last_step_;
  int64_t skipped_steps_ = 0, tokens_trained_ = 0, checkpoints_committed_ = 0;
  // What metrics_snapshot() reads: written by publish_metrics() on the loop's thread.
  struct PublishedMetrics {
    MetricsSnapshot snapshot;
    std::vector<Clock::time_point> last_seen;  // of snapshot.ranks[i]
    std::vector<bool> done;                    // of snapshot.ranks[i]
    double heartbeat_timeout_s = 0.0;
  };
  mutable std::mutex metrics_mu_;
  std::shared_ptr<const PublishedMetrics> published_;  // guarded by metrics_mu_
  // Last member: destroyed first, so it finishes its queue while the run dir is still open.
  std::unique_ptr<CheckpointCommitter> committer_;
  double last_loss_ = 0.0, last_tokens_per_s_ = 0.0;
  Clock::time_point started_, last_heartbeat_sent_;
  std::atomic<bool> stop_requested_{false};
  bool stopping_ = false;
  std::string failure_;
  bool tty_ = false;
};

}  // namespace zt
