// zt-worker: executes a training job on one rank; `mpirun -np N` starts the ranks.
//
//   mpirun -np N zt-worker --coordinator tcp://HOST:PORT [--run-dir DIR]
//     registers with the coordinator (its public key from ZT_COORDINATOR_KEY or DIR), receives the
//     resolved config and the partition plan, trains, and reports every step and a heartbeat;
//     the coordinator writes the run directory. Its stop command, or SIGINT/SIGTERM, stops every
//     rank after the same step; its abort command, or its silence for comm.heartbeat_timeout_s,
//     aborts the MPI job.
//   mpirun -np N zt-worker --config FILE --run-dir DIR
//     runs the job without a coordinator; rank 0 writes the run directory.
// A rank that fails reports (to the coordinator when there is one) and aborts the whole MPI job
// rather than leave the others waiting in a collective.
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <mpi.h>
#include <CLI/CLI.hpp>

#include "kernels/threads.h"
#include "protocol/partition_spec.h"
#include "runtime/backend/backend.h"
#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/resume.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/core/check.h"
#include "runtime/train/run_dir.h"
#include "runtime/train/trainer.h"
#include "worker/checkpointer.h"
#include "worker/compute_setup.h"
#include "worker/control_client.h"

namespace {

std::atomic<int> g_stop_signal{0};
void on_signal(int sig) { g_stop_signal.store(sig); }

struct Context {
  int rank = 0, world = 1;
  zt::RunDir* run_dir = nullptr;
  zt::ControlClient* control = nullptr;
};

// Reports a failure and ends the job: with several ranks the others may be inside a collective,
// so the whole MPI job is aborted.
int fail(const zt::Status& st, const Context& ctx) {
  std::fprintf(stderr, "zt-worker[rank %d/%d]: error: %s\n", ctx.rank, ctx.world,
               st.to_string().c_str());
  if (ctx.run_dir)
    (void)ctx.run_dir->event(fmt::format("failed on rank {}: {}", ctx.rank, st.to_string()));
  if (ctx.control) ctx.control->report_error(st.to_string());
  std::fflush(stderr);
  if (ctx.world > 1) zt::mpi_abort(1);
  return 1;
}

// Without a coordinator: every rank's part of the metrics line, on rank 0 (index = rank). The
// parts of the step that set the peaks travel as their phase ids (MemorySnapshot::peak_phase) and
// are labelled here, like the worker labels them for the coordinator.
std::vector<zt::RankStepMetrics> gather_metrics(const zt::StepResult& r, int micro_batches,
                                                const Context& ctx) {
  constexpr size_t N = zt::kNumMemCategories;
  constexpr int kInts = static_cast<int>(3 * N + 6);
  constexpr int kDoubles = static_cast<int>(zt::kNumStepPhases);
  std::vector<int64_t> send(kInts), recv(static_cast<size_t>(kInts * ctx.world));
  for (size_t c = 0; c < N; ++c) {
    send[c] = r.memory.current[c];
    send[N + c] = r.memory.peak[c];
    send[2 * N + c] = r.memory.peak_phase[c];
  }
  send[3 * N] = r.memory.total_current;
  send[3 * N + 1] = r.memory.total_peak;
  send[3 * N + 2] = r.memory.total_peak_phase;
  send[3 * N + 3] = r.comm.total_bytes();
  send[3 * N + 4] = r.offload_resident_bytes;
  send[3 * N + 5] = r.offload_disk_bytes;
  std::vector<double> times(r.time_ms.begin(), r.time_ms.end()),
      all_times(static_cast<size_t>(kDoubles * ctx.world));
  MPI_Gather(send.data(), kInts, MPI_INT64_T, recv.data(), kInts, MPI_INT64_T, 0, MPI_COMM_WORLD);
  MPI_Gather(times.data(), kDoubles, MPI_DOUBLE, all_times.data(), kDoubles, MPI_DOUBLE, 0,
             MPI_COMM_WORLD);
  std::vector<zt::RankStepMetrics> out(static_cast<size_t>(ctx.world));
  auto label = [&](int64_t id) { return zt::MemPhase::from_id(id).label(micro_batches); };
  for (size_t rank = 0; rank < out.size(); ++rank) {
    const int64_t* f = recv.data() + rank * kInts;
    zt::RankStepMetrics& m = out[rank];
    for (size_t c = 0; c < N; ++c) {
      m.memory.current[c] = f[c];
      m.memory.peak[c] = f[N + c];
      m.peak_phase[c] = label(f[2 * N + c]);
    }
    m.memory.total_current = f[3 * N];
    m.memory.total_peak = f[3 * N + 1];
    m.total_peak_phase = label(f[3 * N + 2]);
    m.comm_bytes = f[3 * N + 3];
    m.offload_resident_bytes = f[3 * N + 4];
    m.offload_disk_bytes = f[3 * N + 5];
    for (size_t p = 0; p < zt::kNumStepPhases; ++p) m.time_ms[p] = all_times[rank * kDoubles + p];
  }
  return out;
}

// Without a coordinator: every rank's memory timeline, on rank 0 (index = rank). Each record goes
// as the length of its label, the label, and its 2 * kNumMemCategories byte counts.
std::vector<std::vector<zt::MemoryPhaseRecord>> gather_timelines(
    const std::vector<zt::MemoryPhaseRecord>& mine, const Context& ctx) {
  constexpr size_t kCounts = sizeof(int64_t) * zt::kNumMemCategories;
  std::string send;
  for (const zt::MemoryPhaseRecord& m : mine) {
    const auto len = static_cast<uint32_t>(m.phase.size());
    send.append(reinterpret_cast<const char*>(&len), sizeof(len));
    send += m.phase;
    send.append(reinterpret_cast<const char*>(m.bytes.data()), kCounts);
    send.append(reinterpret_cast<const char*>(m.peak.data()), kCounts);
  }
  int size = static_cast<int>(send.size());
  std::vector<int> sizes(static_cast<size_t>(ctx.world)), offsets(sizes.size());
  MPI_Gather(&size, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  int total = 0;
  for (size_t r = 0; r < sizes.size(); ++r) offsets[r] = total, total += sizes[r];
  std::string recv(static_cast<size_t>(ctx.rank == 0 ? total : 0), '\0');
  MPI_Gatherv(send.data(), size, MPI_CHAR, recv.data(), sizes.data(), offsets.data(), MPI_CHAR, 0,
              MPI_COMM_WORLD);
  std::vector<std::vector<zt::MemoryPhaseRecord>> out(static_cast<size_t>(ctx.world));
  if (ctx.rank != 0) return out;
  for (size_t r = 0; r < out.size(); ++r) {
    size_t at = static_cast<size_t>(offsets[r]);
    const size_t end = at + static_cast<size_t>(sizes[r]);
    while (at < end) {
      zt::MemoryPhaseRecord m;
      uint32_t len = 0;
      std::memcpy(&len, recv.data() + at, sizeof(len));
      at += sizeof(len);
      m.phase = recv.substr(at, len);
      at += len;
      std::memcpy(m.bytes.data(), recv.data() + at, kCounts);
      std::memcpy(m.peak.data(), recv.data() + at + kCounts, kCounts);
      at += 2 * kCounts;
      out[r].push_back(std::move(m));
    }
  }
  return out;
}

// Without a coordinator: rank 0 chooses and verifies the checkpoint (prepare_resume), every rank
// learns the outcome, and a refusal fails the job on every rank with rank 0's message.
zt::Result<std::string> agree_on_resume(const std::string& run_dir, const std::string& resume_from,
                                        const zt::JobConfig& cfg, const Context& ctx) {
  std::string dir;
  zt::Status st;
  if (ctx.rank == 0) {
    auto p = zt::prepare_resume(run_dir, resume_from, cfg, ctx.world);
    if (p.is_ok()) {
      dir = p->dir;
      for (const std::string& note : p->notes)
        if (ctx.run_dir) (void)ctx.run_dir->event("resume: " + note);
    } else {
      st = p.status();
    }
  }
  // Rank 0's verdict: the directory, or an empty string after a refusal.
  int len = static_cast<int>(dir.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  dir.resize(static_cast<size_t>(len));
  MPI_Bcast(dir.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
  if (ctx.rank == 0 && !st.is_ok()) return st;
  if (dir.empty())
    return zt::make_error(zt::StatusCode::kAborted,
                          "rank 0 refused the checkpoint (see its error)");
  return dir;
}

// Without a coordinator, rank 0 commits: every rank's ack (size, XXH3-64) is gathered to it.
zt::Status commit_locally(const zt::Checkpointer& checkpointer, zt::Trainer& trainer,
                          const zt::JobConfig& cfg, const std::string& root, zt::RunDir* run_dir,
                          const Context& ctx) {
  const auto& ack = checkpointer.last_ack();
  ZT_CHECK(ack.has_value() && ack->files.size() == 1, "no checkpoint ack after a save");
  uint64_t mine[2] = {ack->files[0].size_bytes, ack->files[0].xxh3};
  std::vector<uint64_t> all(2 * static_cast<size_t>(ctx.world));
  MPI_Gather(mine, 2, MPI_UINT64_T, all.data(), 2, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  if (ctx.rank != 0) return zt::Status::ok();
  std::vector<zt::ShardAck> acks;
  for (int r = 0; r < ctx.world; ++r)
    acks.push_back({zt::shard_file_name(r), all[2 * static_cast<size_t>(r)],
                    all[2 * static_cast<size_t>(r) + 1]});
  const zt::Manifest m = zt::make_manifest(cfg, trainer.plan(), trainer.state(), acks);
  ZT_ASSIGN_OR_RETURN(zt::CommitResult c, zt::commit_checkpoint(root, m, cfg.checkpoint.keep_last));
  if (run_dir) {
    (void)run_dir->event(fmt::format("checkpoint step {} committed: {}", m.step, c.dir));
    for (const std::string& gone : c.removed)
      (void)run_dir->event("checkpoint removed (checkpoint.keep_last): " + gone);
  }
  return zt::Status::ok();
}

int run(int argc, char** argv) {
  CLI::App app{"zt-worker: trains a GPT-2 model; run N of them with mpirun -np N"};
  std::string config_path, run_dir_path, export_path, export_dtype = "fp32", coordinator;
  int64_t steps_override = 0;
  double register_timeout_s = 300.0;
  app.add_option("--coordinator", coordinator,
                 "the coordinator's endpoint (tcp://HOST:PORT; default $ZT_COORDINATOR or the "
                 "run dir's coordinator.endpoint)");
  app.add_option("--config", config_path,
                 "job config, to run without a coordinator (YAML or DeepSpeed-style JSON)");
  app.add_option("--run-dir", run_dir_path,
                 "run directory: written here without a coordinator; with one, where its "
                 "endpoint and key files are");
  app.add_option("--register-timeout", register_timeout_s,
                 "seconds to wait for the coordinator's plan");
  app.add_option("--steps", steps_override, "override train.steps");
  app.add_option("--export", export_path,
                 "after training, write the weights as a Hugging Face GPT-2 .safetensors file");
  app.add_option("--export-dtype", export_dtype, "dtype of the export: fp32, bf16 or fp16");
  bool resume = false;
  std::string resume_from;
  app.add_flag("--resume", resume,
               "without a coordinator: continue from the run directory's latest checkpoint");
  app.add_option("--resume-from", resume_from,
                 "without a coordinator: continue from this checkpoint directory");
  CLI11_PARSE(app, argc, argv);

  auto env_or = zt::MpiEnvironment::init(&argc, &argv);
  if (!env_or.is_ok()) return fail(env_or.status(), Context{});
  auto env = std::move(env_or).value();
  Context ctx{env->world_rank(), env->world_size(), nullptr};
  const bool lead = ctx.rank == 0;
  // Ranks on one machine share its cores: unless OMP_NUM_THREADS says otherwise, each takes an
  // equal part (oversubscribed spinning OpenMP pools slow everyone down several times over).
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    const int local_ranks = local ? std::max(1, std::atoi(local)) : 1;
    const int cores = static_cast<int>(std::thread::hardware_concurrency());
    zt::kernels::cpu::set_num_threads(std::max(1, cores / local_ranks));
  }

  const bool with_coordinator = config_path.empty();
  if (with_coordinator && coordinator.empty() && run_dir_path.empty() &&
      std::getenv("ZT_COORDINATOR") == nullptr)
    return fail(zt::make_error(zt::StatusCode::kInvalidArgument,
                               "give --coordinator tcp://HOST:PORT (or --run-dir of the job, or "
                               "ZT_COORDINATOR), or --config FILE --run-dir DIR to run without a "
                               "coordinator"),
                ctx);
  if (!with_coordinator && run_dir_path.empty())
    return fail(zt::make_error(zt::StatusCode::kInvalidArgument, "--config needs --run-dir"), ctx);
  if (with_coordinator && (resume || !resume_from.empty()))
    return fail(zt::make_error(zt::StatusCode::kInvalidArgument,
                               "--resume/--resume-from go to the coordinator (zt-coordinator or "
                               "ztctl launch), which tells the workers"),
                ctx);

  zt::JobConfig cfg;
  std::unique_ptr<zt::ControlClient> control;
  std::unique_ptr<zt::RunDir> run_dir;
  if (with_coordinator) {
    auto address = zt::protocol::find_coordinator(run_dir_path, coordinator);
    if (!address.is_ok()) return fail(address.status(), ctx);
    zt::protocol::WorkerHello hello;
    hello.rank = ctx.rank;
    hello.world_size = ctx.world;
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    hello.host = host;
    hello.pid = getpid();
    const zt::LocalDevice dev = zt::probe_local_device();
    hello.backend = dev.cuda ? zt::protocol::Backend::kCuda : zt::protocol::Backend::kCpu;
    hello.device_name = dev.name;
    hello.device_memory_bytes = dev.memory_bytes;
    hello.host_memory_bytes = static_cast<int64_t>(sysconf(_SC_AVPHYS_PAGES)) *
                              static_cast<int64_t>(sysconf(_SC_PAGESIZE));
    auto client = zt::ControlClient::register_worker(*address, hello, register_timeout_s);
    if (!client.is_ok()) return fail(client.status(), ctx);
    control = std::move(client).value();
    ctx.control = control.get();
    const zt::protocol::Plan& plan = control->plan();
    auto parsed =
        zt::parse_job_config(plan.config_yaml, "<config from the coordinator>", plan.run_dir);
    if (!parsed.is_ok()) return fail(parsed.status(), ctx);
    cfg = std::move(parsed).value();
    run_dir_path = plan.run_dir;
  } else {
    auto cfg_or = zt::load_job_config(config_path);
    if (!cfg_or.is_ok()) return fail(cfg_or.status(), ctx);
    cfg = std::move(cfg_or).value();
  }
  if (steps_override > 0) cfg.train.steps = steps_override;
  if (zt::Status st = zt::resolve_batch_sizes(cfg, ctx.world); !st.is_ok()) return fail(st, ctx);
  auto export_type = zt::parse_dtype(export_dtype);
  if (!export_type.is_ok()) return fail(export_type.status().with_context("--export-dtype"), ctx);

  if (lead && !with_coordinator && !resume && resume_from.empty()) {
    if (zt::Status st = zt::check_fresh_run_dir(run_dir_path); !st.is_ok()) return fail(st, ctx);
  }
  if (lead && !with_coordinator) {
    auto rd = zt::RunDir::open(run_dir_path);
    if (!rd.is_ok()) return fail(rd.status(), ctx);
    run_dir = std::make_unique<zt::RunDir>(std::move(rd).value());
    ctx.run_dir = run_dir.get();
    if (zt::Status st = run_dir->write_resolved_config(cfg); !st.is_ok()) return fail(st, ctx);
  }

  auto compute = zt::make_compute(cfg);
  if (!compute.is_ok()) return fail(compute.status(), ctx);
  std::unique_ptr<zt::Communicator> comm = std::move(compute->comm);
  std::unique_ptr<zt::Backend> backend = std::move(compute->backend);
  auto trainer_or = zt::Trainer::create(cfg, *backend, *comm);
  if (!trainer_or.is_ok()) return fail(trainer_or.status(), ctx);
  auto trainer = std::move(trainer_or).value();
  const auto& layout = trainer->layout();
  if (control) {
    // One plan for the job: what this rank computed must be what the coordinator sent.
    const bool same = zt::protocol::to_partition_spec(trainer->plan()) == control->plan().partition;
    if (!same)
      return fail(zt::make_error(zt::StatusCode::kInternal,
                                 "the coordinator's partition plan differs from this worker's: "
                                 "are the coordinator and the workers the same zerotrain build?"),
                  ctx);
    control->start(cfg.comm.heartbeat_interval_s, cfg.comm.heartbeat_timeout_s);
  }
  if (lead) {
    // Where this rank's optimizer state lives (every rank's is alike).
    const zt::StatePlacementInfo pl = trainer->engine().placement();
    std::string line = fmt::format(
        "optimizer {}: state on {} ({:.1f} MiB in memory{}, {:.1f} MiB small state; "
        "streamed in chunks of {} elements)",
        cfg.optimizer.type, pl.location, static_cast<double>(pl.resident_bytes) / 1048576.0,
        pl.disk_bytes > 0
            ? fmt::format(", {:.1f} MiB on disk", static_cast<double>(pl.disk_bytes) / 1048576.0)
            : std::string(),
        static_cast<double>(pl.side_bytes) / 1048576.0, pl.chunk_elements);
    if (!pl.param_location.empty())
      line +=
          fmt::format("; parameter shard on {} ({:.1f} MiB in memory, {:.1f} MiB on disk)",
                      pl.param_location, static_cast<double>(pl.param_resident_bytes) / 1048576.0,
                      static_cast<double>(pl.param_disk_bytes) / 1048576.0);
    if (run_dir) (void)run_dir->event("rank 0 " + line);
    std::printf("zt-worker: rank 0 %s\n", line.c_str());
  }
  if (lead && !control) {
    (void)run_dir->event(
        fmt::format("started: {} parameters, world {}, ZeRO stage {}, {} steps, "
                    "dtype {}{}",
                    layout.num_parameters, ctx.world, cfg.zero.stage, cfg.train.steps,
                    zt::dtype_name(trainer->dtype()),
                    cfg.checkpoint.async ? "; checkpoints are written synchronously without a "
                                           "coordinator (checkpoint.async needs its commit)"
                                         : ""));
    std::printf(
        "zt-worker: GPT-2 %.2fM parameters, %s, %d worker(s), ZeRO stage %d, micro-batch "
        "%lld x %lld accumulation, %lld steps; run dir %s\n",
        layout.num_parameters / 1e6, zt::dtype_name(trainer->dtype()), ctx.world, cfg.zero.stage,
        static_cast<long long>(cfg.train_micro_batch_size_per_gpu),
        static_cast<long long>(cfg.gradient_accumulation_steps),
        static_cast<long long>(cfg.train.steps), run_dir_path.c_str());
    std::fflush(stdout);
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  // Resume: the coordinator chose and verified the checkpoint; without one, rank 0 does.
  std::string resume_dir;
  if (control) {
    resume_dir = control->plan().resume_from;
  } else if (resume || !resume_from.empty()) {
    auto dir = agree_on_resume(run_dir_path, resume_from, cfg, ctx);
    if (!dir.is_ok()) return fail(dir.status(), ctx);
    resume_dir = *dir;
  }
  if (!resume_dir.empty()) {
    auto m = zt::read_manifest(resume_dir);
    if (!m.is_ok()) return fail(m.status(), ctx);
    if (control && m->step != control->plan().start_step)
      return fail(zt::make_error(zt::StatusCode::kInternal,
                                 "the coordinator resumes at step {} but '{}' is step {}",
                                 control->plan().start_step, resume_dir, m->step),
                  ctx);
    const auto t0 = std::chrono::steady_clock::now();
    if (zt::Status st = trainer->restore(resume_dir, *m); !st.is_ok()) return fail(st, ctx);
    // What every rank read and the slowest rank's time: the load throughput of the job.
    double local[2] = {
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
        0.0};
    for (const auto& p : trainer->engine().held_pieces())
      for (const zt::CheckpointStateInfo& st : trainer->engine().checkpoint_states())
        if (zt::state_applies(st, layout.entries[static_cast<size_t>(p.param)].spec))
          local[1] += static_cast<double>(p.count) * sizeof(float);
    double ms = 0.0, bytes = 0.0;
    MPI_Reduce(&local[0], &ms, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Reduce(&local[1], &bytes, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (lead) {
      const std::string line = fmt::format(
          "resumed from {} at step {}: {:.1f} MiB read by {} rank(s) in {:.0f} ms ({:.0f} MB/s)",
          resume_dir, m->step, bytes / 1048576.0, ctx.world, ms, bytes / 1e6 / (ms / 1e3));
      if (run_dir) (void)run_dir->event(line);
      std::printf("zt-worker: %s\n", line.c_str());
      std::fflush(stdout);
    }
  }

  // Checkpoints: with a coordinator each rank acks its file to it and it commits; without one the
  // writes are synchronous and rank 0 commits after gathering the acks (commit_locally).
  const std::string ckpt_root = zt::checkpoints_root(run_dir_path);
  if (lead && !control) {
    for (const std::string& name : zt::remove_crash_leftovers(ckpt_root))
      (void)run_dir->event("removed an incomplete checkpoint left by a crash: " + name);
  }
  zt::ControlClient* ctl_ptr = control.get();
  zt::Checkpointer checkpointer(
      *trainer, ctx.rank, ckpt_root, cfg.checkpoint.async && control != nullptr,
      control ? zt::Checkpointer::AckFn([ctl_ptr](const zt::protocol::CheckpointAck& a) {
        ctl_ptr->report_checkpoint(a);
      })
              : zt::Checkpointer::AckFn());

  auto flags_buf = backend->allocate(2 * sizeof(float), zt::MemCategory::kCommunication);
  if (!flags_buf.is_ok()) return fail(flags_buf.status(), ctx);
  int64_t checkpoint_requests_done = 0, checkpoint_requests_seen = 0;
  double elapsed_ms = 0.0;
  while (trainer->completed_steps() < cfg.train.steps) {
    const bool timeline = zt::memory_timeline_due(trainer->completed_steps() + 1, cfg.train.steps,
                                                  cfg.steps_per_print);
    trainer->set_memory_timeline(timeline);
    auto r = trainer->step();
    if (!r.is_ok()) return fail(r.status(), ctx);
    if (zt::Status st = checkpointer.poll(); !st.is_ok()) return fail(st, ctx);
    elapsed_ms += r->step_ms;
    const int64_t done = r->step;
    // Act only where every rank acts: agree on a stop (a signal, or 64 for the coordinator's stop
    // command) and on checkpoint requests (each rank counts the coordinator's requests; the
    // highest count not yet served triggers one) with one collective.
    // The flags travel through backend memory (NCCL needs device buffers): staged on the host.
    float flag[2];
    flag[0] = static_cast<float>(g_stop_signal.load());
    if (control && control->stop_requested() && flag[0] == 0.0f) flag[0] = 64.0f;
    if (control && control->take_checkpoint_request()) ++checkpoint_requests_seen;
    flag[1] = static_cast<float>(checkpoint_requests_seen);
    backend->copy(flags_buf->data(), flag, sizeof(flag));
    if (zt::Status st = comm->all_reduce(flags_buf->as(zt::DType::kF32, {2}), zt::ReduceOp::kMax);
        !st.is_ok())
      return fail(st, ctx);
    backend->copy(flag, flags_buf->data(), sizeof(flag));
    const int sig = static_cast<int>(flag[0]);
    const auto requests = static_cast<int64_t>(flag[1]);
    const zt::CheckpointConfig& cc = cfg.checkpoint;
    const bool checkpoint_now = requests > checkpoint_requests_done ||
                                (cc.every_steps > 0 && done % cc.every_steps == 0) ||
                                (sig != 0 && cc.on_stop) || (done == cfg.train.steps && cc.at_end);
    checkpoint_requests_done = std::max(checkpoint_requests_done, requests);
    if (checkpoint_now) {
      auto blocked = checkpointer.save();
      if (!blocked.is_ok()) return fail(blocked.status(), ctx);
      r->checkpoint_ms = *blocked;
      if (!control) {
        if (zt::Status st =
                commit_locally(checkpointer, *trainer, cfg, ckpt_root, run_dir.get(), ctx);
            !st.is_ok())
          return fail(st, ctx);
      }
    }
    if (control) {
      control->report_step(zt::make_step_report(*r, ctx.rank));
    } else {
      const auto metrics =
          gather_metrics(*r, static_cast<int>(cfg.gradient_accumulation_steps), ctx);
      std::vector<std::vector<zt::MemoryPhaseRecord>> timelines;
      if (timeline) timelines = gather_timelines(r->memory_timeline, ctx);
      if (lead) {
        for (size_t rank = 0; rank < timelines.size(); ++rank)
          if (zt::Status st = run_dir->append_memory(done, static_cast<int>(rank), timelines[rank]);
              !st.is_ok())
            return fail(st, ctx);
        if (zt::Status st = run_dir->append_metrics(*r, metrics); !st.is_ok()) return fail(st, ctx);
        if (zt::progress_due(done, cfg.train.steps, cfg.steps_per_print)) {
          const double eta = elapsed_ms / 1000.0 / static_cast<double>(done) *
                             static_cast<double>(cfg.train.steps - done);
          std::printf("%s\n", zt::progress_line(*r, cfg.train.steps, eta).c_str());
          std::fflush(stdout);
        }
      }
    }
    if (sig) {
      if (zt::Status st = checkpointer.wait(); !st.is_ok()) return fail(st, ctx);
      if (lead && run_dir) {
        (void)run_dir->event(fmt::format("stopped by signal {} after step {}", sig, done));
        std::printf("zt-worker: stopped by signal %d after step %lld\n", sig,
                    static_cast<long long>(done));
      }
      if (control) control->finish(done);
      return 0;
    }
  }
  if (zt::Status st = checkpointer.wait(); !st.is_ok()) return fail(st, ctx);
  if (!export_path.empty()) {
    if (zt::Status st = trainer->export_safetensors(export_path, export_type.value()); !st.is_ok())
      return fail(st, ctx);
    if (lead) {
      if (run_dir) (void)run_dir->event("exported " + export_path);
      std::printf("zt-worker: exported %s\n", export_path.c_str());
    }
  }
  if (control) {
    control->finish(trainer->completed_steps());
  } else if (lead) {
    (void)run_dir->event(fmt::format("finished {} steps", trainer->completed_steps()));
    std::printf("zt-worker: done; run dir: %s\n", run_dir_path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zt-worker: internal error: %s\n", e.what());
    std::fflush(stderr);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) zt::mpi_abort(2);
    return 2;
  }
}
