#include "coordinator/coordinator.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "protocol/partition_spec.h"
#include "runtime/checkpoint/commit.h"

namespace zt {

namespace fs = std::filesystem;
using protocol::JobState;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

Coordinator::Coordinator(const CoordinatorOptions& options) : opts_(options) {}
Coordinator::~Coordinator() = default;

Result<std::unique_ptr<Coordinator>> Coordinator::create(const CoordinatorOptions& options) {
  std::unique_ptr<Coordinator> c(new Coordinator(options));
  ZT_RETURN_IF_ERROR(c->init());
  return c;
}

Status Coordinator::init() {
  ZT_ASSIGN_OR_RETURN(cfg_, load_job_config(opts_.config_path));
  if (opts_.steps > 0) cfg_.train.steps = opts_.steps;
  if (opts_.world < 0)
    return make_error(StatusCode::kInvalidArgument, "--world {} must be positive", opts_.world);
  if (opts_.world > 0) {
    // Check the batch arithmetic now, before anyone waits for workers.
    JobConfig probe = cfg_;
    ZT_RETURN_IF_ERROR(resolve_batch_sizes(probe, opts_.world).with_context("--world"));
    // With memory_budget the `auto` keys need nothing from the workers: a budget nothing fits
    // fails here, before anyone waits.
    if (cfg_.autos.any() && cfg_.memory_budget > 0)
      ZT_RETURN_IF_ERROR(resolve_auto(probe, opts_.world, {}, {}).status());
  }
  if (opts_.resume || !opts_.resume_from.empty()) {
    // Refuse a bad checkpoint now, before anyone waits for workers; the world size may not be
    // known yet (it only adds a note).
    JobConfig probe = cfg_;
    if (opts_.world > 0) ZT_RETURN_IF_ERROR(resolve_batch_sizes(probe, opts_.world));
    ZT_ASSIGN_OR_RETURN(ResumePoint p,
                        prepare_resume(opts_.run_dir, opts_.resume_from, probe, opts_.world));
    resume_ = std::move(p);
  } else {
    ZT_RETURN_IF_ERROR(check_fresh_run_dir(opts_.run_dir));
  }
  ZT_ASSIGN_OR_RETURN(RunDir rd, RunDir::open(opts_.run_dir));
  run_dir_ = std::make_unique<RunDir>(std::move(rd));
  for (const std::string& name : remove_crash_leftovers(checkpoints_root(opts_.run_dir)))
    event("removed an incomplete checkpoint left by a crash: " + name);
  committer_ = std::make_unique<CheckpointCommitter>(
      checkpoints_root(opts_.run_dir), cfg_.checkpoint.keep_last,
      [rd = run_dir_.get()](const std::string& line) { (void)rd->event(line); });
  ZT_ASSIGN_OR_RETURN(keys_, protocol::generate_keypair());
  protocol::ServerOptions so;
  so.bind_endpoint = opts_.listen;
  ZT_ASSIGN_OR_RETURN(server_, protocol::ServerSocket::bind(keys_, so));
  server_->set_drop_handler([this](const protocol::PeerId& peer, const Status& why) {
    // Rate-limited as the transport's default handler is, so a flood cannot fill the disk.
    const int64_t n = server_->stats().dropped();
    if (n <= 100 || n % 1000 == 0)
      event(fmt::format("dropped a frame ({} so far): {}", n, why.message()));
    // A peer speaking another protocol version learns why nobody answers it.
    if (why.code() == StatusCode::kUnsupported) {
      char host[256] = {};
      gethostname(host, sizeof(host) - 1);
      (void)server_->send(peer, protocol::ErrorReport{-1, host, why.message()});
    }
  });
  ZT_RETURN_IF_ERROR(
      protocol::write_endpoint_files(opts_.run_dir, server_->endpoint(), keys_.public_key));
  tty_ = isatty(STDOUT_FILENO) != 0;
  event(fmt::format("coordinator listening on {} (pid {}), config {}", server_->endpoint(),
                    getpid(), opts_.config_path));
  publish_metrics();
  return Status::ok();
}

void Coordinator::event(const std::string& line) {
  if (run_dir_) (void)run_dir_->event(line);
}

Coordinator::Rank* Coordinator::rank_of_peer(const protocol::PeerId& peer) {
  for (Rank& r : ranks_)
    if (r.registered && r.peer == peer) return &r;
  return nullptr;
}

int Coordinator::run() {
  started_ = Clock::now();
  last_heartbeat_sent_ = started_;
  if (!opts_.quiet)
    std::printf("zt-coordinator: listening on %s; waiting for %s worker(s); run dir %s\n",
                server_->endpoint().c_str(),
                opts_.world > 0 ? std::to_string(opts_.world).c_str() : "the",
                opts_.run_dir.c_str());
  std::fflush(stdout);
  while (state_ != JobState::kFinished && state_ != JobState::kFailed) {
    publish_metrics();
    if (stop_requested_.exchange(false)) begin_stop("stop requested by signal");
    // Everything queued is handled before liveness is judged: after a stall of this process the
    // ranks' heartbeats are waiting in the socket, and they are not silent.
    auto in = server_->recv(std::chrono::milliseconds(100));
    for (int handled = 0; in.is_ok() && handled < 10000; ++handled) {
      handle(*in);
      if (state_ == JobState::kFinished || state_ == JobState::kFailed) break;
      in = server_->recv(std::chrono::milliseconds(0));
    }
    if (!in.is_ok() && in.status().code() != StatusCode::kTimeout)
      fail("control socket: " + in.status().to_string());
    collect_commits();
    if (workers_done_ && state_ == JobState::kRunning && committer_->idle()) {
      collect_commits();
      if (state_ == JobState::kRunning) finish_job();
    }
    if (state_ == JobState::kFinished || state_ == JobState::kFailed) break;
    if (state_ == JobState::kStarting) {
      if (seconds_since(started_) > opts_.register_timeout_s) {
        std::string missing;
        for (size_t r = 0; r < ranks_.size(); ++r)
          if (!ranks_[r].registered) missing += fmt::format(" {}", r);
        fail(world_ == 0 ? fmt::format("no worker registered within {} s (start them with "
                                       "`mpirun -np N zt-worker --coordinator {}`)",
                                       opts_.register_timeout_s, server_->endpoint())
                         : fmt::format("ranks{} of {} did not register within {} s", missing,
                                       world_, opts_.register_timeout_s));
      }
      if (stopping_) {
        event("stopped before the job started");
        // Registered workers wait for a plan that will not come; only an abort ends that wait.
        for (const Rank& r : ranks_)
          if (r.registered)
            (void)server_->send(r.peer, protocol::Command{protocol::Command::Type::kAbort, 0,
                                                          "the job was stopped before it started"});
        state_ = JobState::kFinished;
      }
      continue;
    }
    send_heartbeats();
    check_liveness();
  }
  publish_metrics();
  // Aborts and final replies still queued must reach the workers before the socket closes.
  (void)server_->set_linger(std::chrono::seconds(2));
  if (state_ == JobState::kFailed) {
    std::fprintf(stderr, "zt-coordinator: job failed: %s\n", failure_.c_str());
    return 1;
  }
  return 0;
}

void Coordinator::handle(const protocol::Incoming& in) {
  const protocol::Message& m = in.message.body;
  if (const auto* h = std::get_if<protocol::WorkerHello>(&m)) return on_hello(in.peer, *h);
  if (const auto* c = std::get_if<protocol::CtlRequest>(&m)) return on_ctl(in.peer, *c);
  Rank* r = rank_of_peer(in.peer);
  if (!r) {
    event(fmt::format("ignored a {} from an unregistered peer",
                      protocol::message_kind_name(in.message.kind())));
    return;
  }
  r->last_seen = Clock::now();
  if (const auto* hb = std::get_if<protocol::Heartbeat>(&m)) {
    r->last_step = hb->step;
    if (hb->done && !r->done) {
      r->done = true;
      bool all = true;
      for (const Rank& x : ranks_) all = all && x.done;
      if (all) {
        workers_done_ = true;  // finish_job() once the last checkpoints are committed
      }
    }
  } else if (const auto* s = std::get_if<protocol::StepReport>(&m)) {
    // The report's rank indexes ranks_: it must be the sender's own (decode() does not bound it).
    if (s->rank != r->hello.rank) {
      event(fmt::format("ignored a StepReport for rank {} from rank {}", s->rank, r->hello.rank));
    } else if (s->step <= completed_step_) {
      event(fmt::format("ignored a StepReport of step {} from rank {}: step {} is already written",
                        s->step, s->rank, completed_step_));
    } else {
      on_step_report(*s);
    }
  } else if (const auto* a = std::get_if<protocol::CheckpointAck>(&m)) {
    if (a->rank != r->hello.rank)
      event(
          fmt::format("ignored a CheckpointAck for rank {} from rank {}", a->rank, r->hello.rank));
    else
      on_checkpoint_ack(*a);
  } else if (const auto* e = std::get_if<protocol::ErrorReport>(&m)) {
    fail(fmt::format("rank {} on {} (pid {}) reported: {}", e->rank, r->hello.host, r->hello.pid,
                     e->message));
  } else {
    event(fmt::format("ignored an unexpected {} from rank {}",
                      protocol::message_kind_name(in.message.kind()), r->hello.rank));
  }
}

void Coordinator::on_hello(const protocol::PeerId& peer, const protocol::WorkerHello& h) {
  if (state_ != JobState::kStarting) {
    (void)server_->send(peer, protocol::ErrorReport{-1, "", "the job is already running"});
    event(fmt::format("refused a late registration of rank {} from {} (pid {})", h.rank, h.host,
                      h.pid));
    return;
  }
  if (world_ == 0) {
    world_ = opts_.world > 0 ? opts_.world : h.world_size;
    ranks_.assign(static_cast<size_t>(world_), Rank{});
  }
  // A refused peer is not registered, so fail()'s abort does not reach it: tell it directly.
  auto refuse = [&](const std::string& why) {
    (void)server_->send(peer, protocol::ErrorReport{-1, "", why});
    fail(why);
  };
  if (h.world_size != world_) {
    return refuse(
        fmt::format("rank {} on {} reports a world of {} but the job has {} ranks "
                    "(--world / the first worker)",
                    h.rank, h.host, h.world_size, world_));
  }
  if (h.rank < 0 || h.rank >= world_)
    return refuse(fmt::format("rank {} on {} is outside the world of {}", h.rank, h.host, world_));
  Rank& r = ranks_[static_cast<size_t>(h.rank)];
  if (r.registered)
    return refuse(fmt::format("rank {} registered twice: from {} (pid {}) and from {} (pid {})",
                              h.rank, r.hello.host, r.hello.pid, h.host, h.pid));
  r.registered = true;
  r.peer = peer;
  r.hello = h;
  r.last_seen = Clock::now();
  event(fmt::format("registered rank {} of {}: host {}, pid {}, backend {}, host memory {:.1f} GiB",
                    h.rank, world_, h.host, h.pid, protocol::backend_name(h.backend),
                    h.host_memory_bytes / 1073741824.0));
  for (const Rank& x : ranks_)
    if (!x.registered) return;
  if (Status st = send_plans(); !st.is_ok()) fail(st.to_string());
}

namespace {

// Where the plan puts the model state: optimizer states (master weights included) follow
// offload_optimizer, the stage-3 parameter shard offload_param; gradients stay on the device.
protocol::StatePlacement state_placement(const ZeroConfig& z) {
  protocol::StatePlacement p;
  switch (z.offload_optimizer.device) {
    case OffloadDevice::kNone:
      p.optimizer_states = protocol::Placement::kDevice;
      break;
    case OffloadDevice::kCpu:
      p.optimizer_states = protocol::Placement::kCpu;
      break;
    case OffloadDevice::kNvme:
      p.optimizer_states = protocol::Placement::kNvme;
      p.nvme_path = z.offload_optimizer.nvme_path;
      break;
  }
  if (z.offload_param.device == OffloadDevice::kCpu) p.parameters = protocol::Placement::kCpu;
  if (z.offload_param.device == OffloadDevice::kNvme) {
    p.parameters = protocol::Placement::kNvme;
    if (p.nvme_path.empty()) p.nvme_path = z.offload_param.nvme_path;
  }
  return p;
}

}  // namespace

MemoryBudget Coordinator::budget_from_workers() const {
  // Ranks on one host share its memory: each gets its share of what the host reported free.
  std::map<std::string, int> per_host;
  for (const Rank& r : ranks_) ++per_host[r.hello.host];
  MemoryBudget b;
  int64_t host = -1, device = -1;
  std::string tightest;
  for (const Rank& r : ranks_) {
    const int64_t share = r.hello.host_memory_bytes / std::max(1, per_host[r.hello.host]);
    if (r.hello.host_memory_bytes > 0 && (host < 0 || share < host)) {
      host = share;
      tightest =
          fmt::format("{} free on {} shared by {} ranks", bytes_text(r.hello.host_memory_bytes),
                      r.hello.host, per_host[r.hello.host]);
    }
    if (r.hello.device_memory_bytes > 0 && (device < 0 || r.hello.device_memory_bytes < device))
      device = r.hello.device_memory_bytes;
  }
  if (cfg_.backend == BackendKind::kCpu) {
    b.device_bytes = std::max<int64_t>(host, 0);
    b.source = "the workers' reports: " + tightest;
  } else {
    b.device_bytes = std::max<int64_t>(device, 0);
    b.host_bytes = std::max<int64_t>(host, 0);
    b.source = fmt::format("the workers' reports: {} device memory, host {}",
                           bytes_text(b.device_bytes), tightest);
  }
  return b;
}

Status Coordinator::send_plans() {
  const MemoryBudget budget = budget_with_config(cfg_, budget_from_workers());
  // Batch sizes first: `auto` keeps the train_batch_size this resolves (and sets the others).
  ZT_RETURN_IF_ERROR(resolve_batch_sizes(cfg_, world_));
  if (cfg_.autos.any()) {
    ZT_ASSIGN_OR_RETURN(AutoDecision d, resolve_auto(cfg_, world_, budget, {}));
    plan_notes_ = d.reasons;
  }
  // Every plan gets its memory estimate (the estimator `auto` uses), against what the workers
  // reported or memory_budget: a plan over it is worth a warning before the first step, not an
  // error — the reports are what was free at registration, not a hard limit.
  if (auto est = estimate_memory_max(cfg_, world_); est.is_ok()) {
    const bool cpu = cfg_.backend == BackendKind::kCpu;
    const int64_t need = est->device_total() + (cpu ? est->host_total() : 0);
    std::string line = fmt::format("memory estimate: {} per rank at its peak{}", bytes_text(need),
                                   cpu || est->host_total() == 0
                                       ? ""
                                       : fmt::format(", and {} of host memory for offloaded state",
                                                     bytes_text(est->host_total())));
    if (budget.device_bytes > 0)
      line += fmt::format(" of {} ({})", bytes_text(budget.device_bytes), budget.source);
    plan_notes_.push_back(line);
    if (budget.device_bytes > 0 && need > budget.device_bytes)
      plan_notes_.push_back(fmt::format(
          "warning: the estimate exceeds the memory available per rank by {}: the job may run out "
          "of memory (see ztctl estimate for combinations that fit)",
          bytes_text(need - budget.device_bytes)));
  }
  for (const std::string& line : plan_notes_) event(line);
  ZT_ASSIGN_OR_RETURN(PartitionPlan plan, make_partition_plan(cfg_.model, cfg_.zero, world_));
  ZT_RETURN_IF_ERROR(run_dir_->write_resolved_config(cfg_));
  protocol::Plan msg;
  msg.config_yaml = to_yaml(cfg_);
  msg.partition = protocol::to_partition_spec(plan);
  msg.placement = state_placement(cfg_.zero);
  msg.run_dir = fs::absolute(opts_.run_dir).string();
  if (resume_) {
    msg.start_step = resume_->manifest.step;
    msg.resume_from = resume_->dir;
    start_step_ = completed_step_ = resume_->manifest.step;
    event(fmt::format("resuming from {} at step {} (written by {} ranks at ZeRO stage {})",
                      resume_->dir, resume_->manifest.step, resume_->manifest.world_size,
                      resume_->manifest.zero_stage));
    // With --world the note was made at init; otherwise the world is known only now.
    if (opts_.world == 0 && resume_->manifest.world_size != world_)
      event(fmt::format("resume: world size: {} -> {}", resume_->manifest.world_size, world_));
    for (const std::string& note : resume_->notes) event("resume: " + note);
  }
  plan_ = std::move(plan);
  for (const Rank& r : ranks_) ZT_RETURN_IF_ERROR(server_->send(r.peer, msg));
  state_ = JobState::kRunning;
  started_ = Clock::now();
  // Liveness starts with the plan: a worker waits silently for it (ControlClient sends no
  // heartbeat before), so the time it waited for the last rank to register is not silence.
  for (Rank& r : ranks_) r.last_seen = started_;
  event(fmt::format(
      "plan sent to {} ranks: ZeRO stage {}, {} parameters, {} elements per rank "
      "shard, global batch {} sequences; optimizer {} with its state on {}{}",
      world_, plan_->stage, plan_->layout.num_parameters, plan_->shard_total, cfg_.train_batch_size,
      cfg_.optimizer.type, protocol::placement_name(msg.placement.optimizer_states),
      msg.placement.nvme_path.empty() ? "" : " (" + msg.placement.nvme_path + ")"));
  if (!opts_.quiet) {
    std::printf(
        "zt-coordinator: %d workers registered; GPT-2 %.2fM parameters, ZeRO stage %d, "
        "%lld steps\n",
        world_, plan_->layout.num_parameters / 1e6, plan_->stage,
        static_cast<long long>(cfg_.train.steps));
    std::fflush(stdout);
  }
  // A stop that came while registering (a signal in the same loop turn as the last hello) has
  // already set stopping_, so begin_stop() would return early: send the stop here.
  if (stopping_) {
    event("stop requested during registration: stopping after the plan");
    for (const Rank& r : ranks_)
      (void)server_->send(r.peer,
                          protocol::Command{protocol::Command::Type::kStop, completed_step_, ""});
  }
  return Status::ok();
}

void Coordinator::on_step_report(const protocol::StepReport& rep) {
  Rank& rk = ranks_[static_cast<size_t>(rep.rank)];
  rk.last_step = rep.step;
  rk.current = rep.memory_current;
  rk.total_current = rep.memory_total_current;
  rk.total_peak = std::max(rk.total_peak, rep.memory_total_peak);
  rk.offload_resident_bytes = rep.offload_resident_bytes;
  rk.offload_disk_bytes = rep.offload_disk_bytes;
  for (size_t c = 0; c < rk.peak.size(); ++c) rk.peak[c] = std::max(rk.peak[c], rep.memory_peak[c]);
  auto& slot = pending_steps_[rep.step];
  if (slot.empty()) slot.resize(static_cast<size_t>(world_));
  slot[static_cast<size_t>(rep.rank)] = rep;
  for (const auto& s : slot)
    if (!s) return;

  // Every rank has reported this step: one metrics line. Loss and norm parts are sums over ranks.
  StepResult r;
  r.step = rep.step;
  double loss_sum = 0, sq = 0;
  int64_t tokens = 0;
  std::vector<RankStepMetrics> mem(static_cast<size_t>(world_));
  for (size_t i = 0; i < slot.size(); ++i) {
    const protocol::StepReport& s = *slot[i];
    loss_sum += s.loss_sum;
    tokens += s.token_count;
    sq += s.grad_norm_sq_part;
    r.step_ms = std::max(r.step_ms, s.step_ms);
    r.checkpoint_ms = std::max(r.checkpoint_ms, s.checkpoint_ms);
    r.skipped = r.skipped || s.overflow;
    RankStepMetrics& m = mem[i];
    for (size_t c = 0; c < kNumMemCategories; ++c) {
      m.memory.current[c] = s.memory_current[c];
      m.memory.peak[c] = s.memory_peak[c];
    }
    m.memory.total_current = s.memory_total_current;
    m.memory.total_peak = s.memory_total_peak;
    for (size_t p = 0; p < kNumStepPhases; ++p) m.time_ms[p] = s.time_ms[p];
    for (const int64_t b : s.comm_bytes) m.comm_bytes += b;
    m.peak_phase = s.peak_phase;
    m.total_peak_phase = s.total_peak_phase;
    m.offload_resident_bytes = s.offload_resident_bytes;
    m.offload_disk_bytes = s.offload_disk_bytes;
  }
  const protocol::StepReport& first = *slot[0];
  r.loss = tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0;
  r.tokens = tokens;
  r.lr = first.lr;
  r.loss_scale = first.loss_scale;
  r.grad_norm = r.skipped ? INFINITY : std::sqrt(sq);
  r.tokens_per_s = r.step_ms > 0 ? static_cast<double>(tokens) / (r.step_ms / 1000.0) : 0.0;
  // The sampled steps' memory timelines (the workers decide which: memory_timeline_due), rank by
  // rank, before the metrics line: a reader that sees step S in metrics.jsonl finds its timeline.
  for (size_t i = 0; i < slot.size(); ++i) {
    std::vector<MemoryPhaseRecord> timeline;
    for (const protocol::MemoryPhase& p : slot[i]->memory_timeline)
      timeline.push_back(MemoryPhaseRecord{p.phase, p.bytes, p.peak});
    if (Status st = run_dir_->append_memory(r.step, static_cast<int>(i), timeline); !st.is_ok())
      return fail(st.to_string());
  }
  pending_steps_.erase(rep.step);
  if (Status st = run_dir_->append_metrics(r, mem); !st.is_ok()) return fail(st.to_string());
  completed_step_ = std::max(completed_step_, r.step);
  last_loss_ = r.loss;
  last_tokens_per_s_ = r.tokens_per_s;
  last_step_ = StepFigures{
      r.step, r.loss, r.lr, r.grad_norm, r.loss_scale, r.tokens_per_s, r.step_ms / 1000.0};
  skipped_steps_ += r.skipped ? 1 : 0;
  tokens_trained_ += r.tokens;
  print_progress(r);
}

void Coordinator::print_progress(const StepResult& r) {
  if (opts_.quiet) return;
  const int64_t total = cfg_.train.steps;
  // Wall clock since the plan went out, not the sum of step times: it includes everything a step
  // costs (data, reporting, waiting for the slowest rank).
  const double eta = seconds_since(started_) /
                     static_cast<double>(std::max<int64_t>(1, completed_step_ - start_step_)) *
                     static_cast<double>(total - completed_step_);
  if (tty_) {
    const int width = 30;
    const int filled =
        static_cast<int>(width * static_cast<double>(r.step) / static_cast<double>(total));
    std::string bar(static_cast<size_t>(std::clamp(filled, 0, width)), '#');
    bar.resize(static_cast<size_t>(width), '.');
    std::printf("\r[%s] %lld/%lld | loss %.4f | %.0f tok/s | ETA %s   ", bar.c_str(),
                static_cast<long long>(r.step), static_cast<long long>(total), r.loss,
                r.tokens_per_s, format_eta(eta).c_str());
  } else if (progress_due(r.step, total, cfg_.steps_per_print)) {
    std::printf("%s\n", progress_line(r, total, eta).c_str());
  }
  std::fflush(stdout);
}

protocol::CtlReply Coordinator::status_reply() const {
  protocol::CtlReply rep;
  rep.state = stopping_ && state_ == JobState::kRunning ? JobState::kStopping : state_;
  rep.step = completed_step_;
  rep.total_steps = cfg_.train.steps;
  rep.world_size = world_;
  rep.loss = last_loss_;
  rep.tokens_per_sec = last_tokens_per_s_;
  rep.eta_seconds = completed_step_ > start_step_
                        ? seconds_since(started_) /
                              static_cast<double>(completed_step_ - start_step_) *
                              static_cast<double>(cfg_.train.steps - completed_step_)
                        : -1.0;
  rep.last_checkpoint_step = last_checkpoint_step_;
  rep.last_checkpoint_dir = last_checkpoint_dir_;
  for (size_t i = 0; i < ranks_.size(); ++i) {
    const Rank& r = ranks_[i];
    if (!r.registered) continue;
    rep.ranks.push_back({static_cast<int32_t>(i), r.hello.host, r.current, r.peak,
                         static_cast<int64_t>(seconds_since(r.last_seen) * 1000.0),
                         r.offload_resident_bytes, r.offload_disk_bytes});
  }
  rep.placement = state_placement(cfg_.zero);
  rep.optimizer_type = cfg_.optimizer.type;
  if (!failure_.empty())
    rep.message = failure_;
  else if (plan_)
    rep.message = plan_->summary();
  // Why the `auto` keys got their values (Note [auto plan]) and the memory estimate, above the
  // plan.
  if (!plan_notes_.empty() && failure_.empty()) {
    std::string why;
    for (const std::string& line : plan_notes_) why += line + "\n";
    rep.message = why + rep.message;
  }
  return rep;
}

void Coordinator::publish_metrics() {
  auto p = std::make_shared<PublishedMetrics>();
  MetricsSnapshot& s = p->snapshot;
  s.state = stopping_ && state_ == JobState::kRunning ? JobState::kStopping : state_;
  s.run_dir = opts_.run_dir;
  s.optimizer = cfg_.optimizer.type;
  s.backend = cfg_.backend == BackendKind::kCuda ? "cuda" : "cpu";
  s.world_size = world_ > 0 ? world_ : opts_.world;  // --world is known before any hello
  s.zero_stage = cfg_.zero.stage;
  s.steps_planned = cfg_.train.steps;
  s.steps_completed = completed_step_;
  s.last_step = last_step_;
  s.skipped_steps = skipped_steps_;
  s.tokens = tokens_trained_;
  s.checkpoints_committed = checkpoints_committed_;
  s.last_checkpoint_step = last_checkpoint_step_;
  for (size_t i = 0; i < ranks_.size(); ++i) {
    const Rank& r = ranks_[i];
    if (!r.registered) continue;
    s.ranks.push_back({static_cast<int>(i), r.hello.host, r.hello.pid, 0.0, r.current, r.peak,
                       r.total_current, r.total_peak, r.offload_resident_bytes,
                       r.offload_disk_bytes});
    p->last_seen.push_back(r.last_seen);
    p->done.push_back(r.done);
  }
  p->heartbeat_timeout_s = cfg_.comm.heartbeat_timeout_s;
  std::lock_guard<std::mutex> lock(metrics_mu_);
  published_ = std::move(p);
}

MetricsSnapshot Coordinator::metrics_snapshot() const {
  std::shared_ptr<const PublishedMetrics> p;
  {
    // Only the pointer is taken under the lock: the copy below never holds up publish_metrics().
    std::lock_guard<std::mutex> lock(metrics_mu_);
    p = published_;
  }
  if (!p) return MetricsSnapshot{};
  MetricsSnapshot s = p->snapshot;
  // Ages from now, not from the last publish: a loop that has stopped turning must not look alive.
  const bool live = s.state != JobState::kFinished && s.state != JobState::kFailed;
  for (size_t i = 0; i < s.ranks.size(); ++i) {
    s.ranks[i].heartbeat_age_seconds = seconds_since(p->last_seen[i]);
    if (live && !p->done[i] && s.ranks[i].heartbeat_age_seconds <= p->heartbeat_timeout_s)
      ++s.workers_alive;
  }
  return s;
}

void Coordinator::on_ctl(const protocol::PeerId& peer, const protocol::CtlRequest& req) {
  protocol::CtlReply rep = status_reply();
  switch (req.type) {
    case protocol::CtlRequest::Type::kStatus:
      break;
    case protocol::CtlRequest::Type::kStop:
      rep.message = stopping_ ? "already stopping" : "stopping after the step in flight";
      begin_stop("stop requested by ztctl");
      rep.state = JobState::kStopping;
      break;
    case protocol::CtlRequest::Type::kCheckpoint:
      if (state_ != JobState::kRunning || stopping_ || workers_done_) {
        rep.ok = false;
        rep.message = stopping_       ? "the job is stopping (it checkpoints on stop unless "
                                        "checkpoint.on_stop is false)"
                      : workers_done_ ? "the job has finished its last step"
                                      : "the job is not running yet";
        break;
      }
      event("checkpoint requested by ztctl");
      for (const Rank& r : ranks_)
        (void)server_->send(r.peer, protocol::Command{protocol::Command::Type::kCheckpointNow,
                                                      completed_step_, ""});
      rep.message = fmt::format(
          "checkpoint requested: the workers take it after the step in flight (last committed: "
          "{})",
          last_checkpoint_step_ > 0 ? fmt::format("step {}", last_checkpoint_step_) : "none");
      break;
  }
  (void)server_->send(peer, rep);
}

void Coordinator::begin_stop(const std::string& why) {
  if (stopping_) return;
  stopping_ = true;
  event(why);
  if (state_ != JobState::kRunning) return;  // registration: stop once the plan is out
  for (const Rank& r : ranks_)
    (void)server_->send(r.peer,
                        protocol::Command{protocol::Command::Type::kStop, completed_step_, ""});
}

void Coordinator::send_heartbeats() {
  if (seconds_since(last_heartbeat_sent_) < cfg_.comm.heartbeat_interval_s) return;
  last_heartbeat_sent_ = Clock::now();
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  for (const Rank& r : ranks_)
    if (!r.done)
      (void)server_->send(r.peer, protocol::Heartbeat{-1, completed_step_, now_ms, false});
}

void Coordinator::check_liveness() {
  // When one rank dies, mpirun soon takes the others down too: blame the one silent the longest,
  // the first to go.
  size_t worst = ranks_.size();
  double worst_silence = cfg_.comm.heartbeat_timeout_s;
  for (size_t i = 0; i < ranks_.size(); ++i) {
    if (ranks_[i].done) continue;
    const double silent = seconds_since(ranks_[i].last_seen);
    if (silent > worst_silence) {
      worst = i;
      worst_silence = silent;
    }
  }
  if (worst == ranks_.size()) return;
  const Rank& r = ranks_[worst];
  fail(
      fmt::format("rank {} on {} (pid {}) has been silent for {:.1f} s (heartbeat timeout {} s): "
                  "the process died or hangs",
                  worst, r.hello.host, r.hello.pid, worst_silence, cfg_.comm.heartbeat_timeout_s));
}

void Coordinator::fail(const std::string& why) {
  if (state_ == JobState::kFailed) return;
  failure_ = why;
  state_ = JobState::kFailed;
  event("failed: " + why);
  for (const Rank& r : ranks_)
    if (r.registered && !r.done)
      (void)server_->send(r.peer,
                          protocol::Command{protocol::Command::Type::kAbort, completed_step_, why});
}

void Coordinator::on_checkpoint_ack(const protocol::CheckpointAck& a) {
  auto& slot = pending_checkpoints_[a.step];
  if (slot.empty()) slot.resize(static_cast<size_t>(world_));
  slot[static_cast<size_t>(a.rank)] = a;
  for (const auto& s : slot)
    if (!s) return;
  std::vector<protocol::CheckpointAck> acks;
  for (auto& s : slot) acks.push_back(*s);
  pending_checkpoints_.erase(a.step);

  // Every rank has written its shard. The trainer state is global: the ranks must agree on it.
  const protocol::CheckpointAck& first = acks[0];
  std::vector<ShardAck> files;
  double write_ms = 0, blocked_ms = 0;
  uint64_t bytes = 0;
  for (const protocol::CheckpointAck& x : acks) {
    if (x.files.size() != 1 || x.applied_steps != first.applied_steps ||
        x.loss_scale != first.loss_scale || x.next_sequence != first.next_sequence)
      return fail(
          fmt::format("checkpoint step {}: rank {}'s ack disagrees with rank 0's (files {}, "
                      "applied steps {} vs {}, data position {} vs {})",
                      a.step, x.rank, x.files.size(), x.applied_steps, first.applied_steps,
                      x.next_sequence, first.next_sequence));
    files.push_back({x.files[0].path, x.files[0].size_bytes, x.files[0].xxh3});
    write_ms = std::max(write_ms, x.write_ms);
    blocked_ms = std::max(blocked_ms, x.blocked_ms);
    bytes += x.files[0].size_bytes;
  }
  TrainerState st;
  st.step = a.step;
  st.applied_steps = first.applied_steps;
  st.scaler = {first.loss_scale, first.loss_scale_good_steps, first.loss_scale_hysteresis_left};
  st.next_sequence = first.next_sequence;
  committer_->submit(
      make_manifest(cfg_, *plan_, st, files),
      fmt::format("{:.1f} MiB in {} files; slowest write {:.0f} ms, training "
                  "blocked up to {:.0f} ms",
                  static_cast<double>(bytes) / 1048576.0, files.size(), write_ms, blocked_ms));
}

void Coordinator::collect_commits() {
  for (CheckpointCommitter::Done& d : committer_->take_done()) {
    if (!d.status.is_ok()) return fail(d.status.to_string());
    last_checkpoint_step_ = d.step;
    last_checkpoint_dir_ = d.dir;
    ++checkpoints_committed_;
  }
}

void Coordinator::finish_job() {
  event(stopping_ ? fmt::format("stopped after step {}", completed_step_)
                  : fmt::format("finished {} steps", completed_step_));
  if (!opts_.quiet)
    std::printf("%szt-coordinator: %s after step %lld; run dir %s\n", tty_ ? "\n" : "",
                stopping_ ? "stopped" : "finished", static_cast<long long>(completed_step_),
                opts_.run_dir.c_str());
  state_ = JobState::kFinished;
}

}  // namespace zt
