// bench_zero: one ZeRO stage on the ranks of `mpirun -np N`: aggregate tokens/s, per-rank peak
// memory by category and bytes communicated per step, each beside the ZeRO paper's formula, and
// how much of the communication ran hidden behind compute. Rank 0 prints one JSON object.
// Driven by tools/bench/run_zero_bench.sh (N in {1, 2, 4} x stage 0-3).
//
// The micro-batch is fixed per rank and there is no gradient accumulation, so the global batch is
// micro x N: tokens_per_s is the aggregate throughput of all ranks (weak scaling), not the speed of
// a fixed global batch.
//
// Formulas (Psi parameters, mixed precision with AdamW: 2 bytes of working weights, 2 of gradients,
// 12 of fp32 master weights + m + v per parameter; N ranks):
//   model-state bytes per rank: stage 0 16Psi, 1 4Psi + 12Psi/N, 2 2Psi + 14Psi/N, 3 16Psi/N
//   communication per rank per step: stages 0-2 2Psi elements (an all-reduce, or a reduce-scatter
//   plus an all-gather), stage 3 3Psi (all-gather in forward and again in backward, plus a
//   reduce-scatter). The communicator counts what a rank sends under the ring algorithm, i.e.
//   (N-1)/N of those volumes (communicator.h), so the formula in bytes is
//   k Psi x sizeof(dtype) x (N-1)/N with k = 2 or 3.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <mpi.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/train/trainer.h"

namespace {

// Every rank reports its own failure; the job cannot go on without it, so take every rank down
// rather than leave the others waiting in a collective.
[[noreturn]] void die(int rank, const zt::Status& st) {
  std::fprintf(stderr, "bench_zero: rank %d: %s\n", rank, st.to_string().c_str());
  std::fflush(stderr);
  zt::mpi_abort(1);
}

// Forwards to the MPI communicator and adds up, per collective kind, the time callers spend blocked
// in Work::wait(), so the exposed communication can be told apart by kind (backward reductions,
// stage-3 gathers and the post-update refresh, the loss and norm all-reduces). Everything else,
// accounting included, is the wrapped communicator's.
class KindTimedCommunicator final : public zt::Communicator {
 public:
  explicit KindTimedCommunicator(zt::Communicator& inner) : inner_(inner) {}

  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }
  std::string name() const override { return inner_.name(); }

  std::unique_ptr<zt::Work> all_reduce_async(zt::Tensor buf, zt::ReduceOp op) override {
    return wrap(zt::CollectiveKind::kAllReduce, inner_.all_reduce_async(buf, op));
  }
  std::unique_ptr<zt::Work> reduce_scatter_async(zt::Tensor in, zt::Tensor out) override {
    return wrap(zt::CollectiveKind::kReduceScatter, inner_.reduce_scatter_async(in, out));
  }
  std::unique_ptr<zt::Work> all_gather_async(zt::Tensor in, zt::Tensor out) override {
    return wrap(zt::CollectiveKind::kAllGather, inner_.all_gather_async(in, out));
  }
  std::unique_ptr<zt::Work> broadcast_async(zt::Tensor buf, int root) override {
    return wrap(zt::CollectiveKind::kBroadcast, inner_.broadcast_async(buf, root));
  }
  std::unique_ptr<zt::Work> barrier_async() override {
    return wrap(zt::CollectiveKind::kBarrier, inner_.barrier_async());
  }

  zt::CommStats stats() const override { return inner_.stats(); }
  void reset_stats() override {
    inner_.reset_stats();
    std::lock_guard<std::mutex> g(mu_);
    blocked_.fill(0.0);
  }
  void set_timeout(std::chrono::milliseconds t) override { inner_.set_timeout(t); }

  std::array<double, zt::kNumCollectiveKinds> blocked_by_kind() const {
    std::lock_guard<std::mutex> g(mu_);
    return blocked_;
  }

 private:
  class TimedWork final : public zt::Work {
   public:
    TimedWork(std::unique_ptr<zt::Work> w, KindTimedCommunicator* c, zt::CollectiveKind k)
        : w_(std::move(w)), c_(c), k_(k) {}
    zt::Status wait() override {
      const auto t0 = std::chrono::steady_clock::now();
      zt::Status st = w_->wait();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
              .count();
      std::lock_guard<std::mutex> g(c_->mu_);
      c_->blocked_[static_cast<size_t>(k_)] += ms;
      return st;
    }
    bool is_completed() const override { return w_->is_completed(); }

   private:
    std::unique_ptr<zt::Work> w_;
    KindTimedCommunicator* c_;
    zt::CollectiveKind k_;
  };

  std::unique_ptr<zt::Work> wrap(zt::CollectiveKind k, std::unique_ptr<zt::Work> w) {
    return std::make_unique<TimedWork>(std::move(w), this, k);
  }

  zt::Communicator& inner_;
  mutable std::mutex mu_;
  std::array<double, zt::kNumCollectiveKinds> blocked_{};
};

double model_state_formula(int stage, double psi, int n) {
  switch (stage) {
    case 0: return 16.0 * psi;
    case 1: return 4.0 * psi + 12.0 * psi / n;
    case 2: return 2.0 * psi + 14.0 * psi / n;
    default: return 16.0 * psi / n;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_zero: ZeRO stage memory, communication and throughput (run under mpirun)"};
  std::string config, overlap = "on";
  int stage = -1, steps = 3, warmup = 2, seq_len = 0;
  int64_t micro = 0, prefetch = -1;
  bool bf16 = true;
  app.add_option("--config", config, "job config (YAML)")->required();
  app.add_option("--stage", stage, "ZeRO stage 0-3 (default: the config's)")
      ->check(CLI::Range(0, 3));
  app.add_option("--steps", steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  app.add_option("--micro-batch", micro, "sequences per rank per step (default: the config's)");
  app.add_option("--seq-len", seq_len, "override model.block_size (the sequence length)");
  app.add_option("--bf16", bf16, "bf16 mixed precision, so the formulas apply (default true)");
  app.add_option("--overlap", overlap, "zero_optimization.overlap_comm")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--prefetch", prefetch,
                 "zero_optimization.stage3_prefetch_bucket_size in elements (default: the "
                 "config's)");
  CLI11_PARSE(app, argc, argv);

  auto env_or = zt::MpiEnvironment::init(&argc, &argv);
  if (!env_or.is_ok()) {
    std::fprintf(stderr, "bench_zero: %s\n", env_or.status().to_string().c_str());
    return 1;
  }
  auto env = std::move(env_or).value();
  const int rank = env->world_rank(), world = env->world_size();

  auto cfg_or = zt::load_job_config(config);
  if (!cfg_or.is_ok()) die(rank, cfg_or.status());
  zt::JobConfig cfg = std::move(cfg_or).value();
  if (stage >= 0) cfg.zero.stage = stage;
  if (micro > 0) cfg.train_micro_batch_size_per_gpu = micro;
  if (seq_len > 0) cfg.model.block_size = seq_len;
  cfg.bf16.enabled = bf16;
  if (bf16) cfg.fp16.enabled = false;
  cfg.zero.overlap_comm = overlap == "on";
  if (prefetch >= 0) cfg.zero.stage3_prefetch_bucket_size = prefetch;
  // One micro-batch per rank per step: the global batch is micro x world.
  cfg.train_batch_size = 0;
  cfg.gradient_accumulation_steps = 1;
  cfg.scheduler = zt::SchedulerConfig{};
  cfg.checkpoint = zt::CheckpointConfig{};
  if (zt::Status st = zt::resolve_batch_sizes(cfg, world); !st.is_ok()) die(rank, st);

  auto comm_or = zt::make_mpi_communicator(MPI_COMM_WORLD);
  if (!comm_or.is_ok()) die(rank, comm_or.status());
  auto mpi_comm = std::move(comm_or).value();
  KindTimedCommunicator comm(*mpi_comm);
  auto backend = zt::make_cpu_backend();
  auto tr = zt::Trainer::create(cfg, *backend, comm);
  if (!tr.is_ok()) die(rank, tr.status());
  zt::Trainer& trainer = *tr.value();

  constexpr size_t kCats = zt::kNumMemCategories, kKinds = zt::kNumCollectiveKinds;
  std::vector<double> step_ms;
  std::array<int64_t, kCats> peak{};  // per category, max over the timed steps
  int64_t total_peak = 0;
  zt::CommStats last_comm;            // one step's bytes (every step sends the same)
  double busy_ms = 0.0, blocked_ms = 0.0;
  std::array<double, kKinds> blocked_kind{};
  double loss = 0.0;
  int64_t global_tokens = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    auto r = trainer.step();
    if (!r.is_ok()) die(rank, r.status());
    loss = r->loss;
    if (i < warmup) continue;
    step_ms.push_back(r->step_ms);
    for (size_t c = 0; c < kCats; ++c) peak[c] = std::max(peak[c], r->memory.peak[c]);
    total_peak = std::max(total_peak, r->memory.total_peak);
    last_comm = r->comm;
    busy_ms += r->comm.busy_ms;
    blocked_ms += r->comm.blocked_ms;
    const auto bk = comm.blocked_by_kind();
    for (size_t k = 0; k < kKinds; ++k) blocked_kind[k] += bk[k];
    global_tokens = r->tokens;
  }

  // A step ends when its slowest rank does: time each step by the max over ranks.
  std::vector<double> step_ms_max(step_ms.size());
  MPI_Reduce(step_ms.data(), step_ms_max.data(), static_cast<int>(step_ms.size()), MPI_DOUBLE,
             MPI_MAX, 0, MPI_COMM_WORLD);

  // Per rank: peaks per category, total peak, bytes per collective kind.
  constexpr size_t kRow = kCats + 1 + kKinds;
  std::array<int64_t, kRow> row{};
  for (size_t c = 0; c < kCats; ++c) row[c] = peak[c];
  row[kCats] = total_peak;
  for (size_t k = 0; k < kKinds; ++k) row[kCats + 1 + k] = last_comm.bytes[k];
  std::vector<int64_t> rows(rank == 0 ? kRow * static_cast<size_t>(world) : 0);
  MPI_Gather(row.data(), static_cast<int>(kRow), MPI_INT64_T, rows.data(), static_cast<int>(kRow),
             MPI_INT64_T, 0, MPI_COMM_WORLD);
  const std::array<double, 2> times{busy_ms, blocked_ms};
  std::vector<double> all_times(rank == 0 ? 2 * static_cast<size_t>(world) : 0);
  MPI_Gather(times.data(), 2, MPI_DOUBLE, all_times.data(), 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  std::vector<double> all_kind(rank == 0 ? kKinds * static_cast<size_t>(world) : 0);
  MPI_Gather(blocked_kind.data(), static_cast<int>(kKinds), MPI_DOUBLE, all_kind.data(),
             static_cast<int>(kKinds), MPI_DOUBLE, 0, MPI_COMM_WORLD);

  if (rank == 0) {
    std::vector<double> sorted = step_ms_max;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    const int64_t psi = trainer.layout().num_parameters;
    const size_t dsize = zt::dtype_size(trainer.dtype());
    const int st = cfg.zero.stage;

    nlohmann::ordered_json j;
    j["world"] = world;
    j["stage"] = st;
    j["config"] = config;
    j["dtype"] = zt::dtype_name(trainer.dtype());
    j["overlap_comm"] = cfg.zero.overlap_comm;
    j["stage3_prefetch_bucket_size"] = cfg.zero.stage3_prefetch_bucket_size;
    j["params"] = psi;
    j["padded_params"] = trainer.plan().total;
    j["micro_batch_per_rank"] = cfg.train_micro_batch_size_per_gpu;
    j["seq_len"] = cfg.model.block_size;
    j["global_batch"] = cfg.train_batch_size;
    j["timed_steps"] = steps;
    j["step_ms"] = median;
    j["step_ms_all"] = step_ms_max;
    j["tokens_per_s"] = static_cast<double>(global_tokens) / (median / 1000.0);  // aggregate
    j["tokens_per_s_note"] = "aggregate over ranks: micro-batch fixed per rank, global batch grows with N";
    j["last_loss"] = loss;

    // Memory: per-rank peaks by category, and the model state (parameters + gradients + optimizer
    // states; the sum of the categories' peaks, an upper bound on their simultaneous peak).
    nlohmann::ordered_json mem = nlohmann::ordered_json::object();
    for (size_t c = 0; c < kCats; ++c) {
      std::vector<int64_t> per_rank;
      for (int r = 0; r < world; ++r) per_rank.push_back(rows[static_cast<size_t>(r) * kRow + c]);
      mem[zt::mem_category_name(static_cast<zt::MemCategory>(c))] = per_rank;
    }
    std::vector<int64_t> totals;
    for (int r = 0; r < world; ++r) totals.push_back(rows[static_cast<size_t>(r) * kRow + kCats]);
    mem["total"] = totals;
    j["peak_bytes_per_rank"] = mem;
    int64_t state_max = 0, act_max = 0;
    for (int r = 0; r < world; ++r) {
      const int64_t* rr = rows.data() + static_cast<size_t>(r) * kRow;
      using zt::MemCategory;
      const int64_t s = rr[static_cast<size_t>(MemCategory::kParameters)] +
                        rr[static_cast<size_t>(MemCategory::kGradients)] +
                        rr[static_cast<size_t>(MemCategory::kOptimizerStates)];
      state_max = std::max(state_max, s);
      act_max = std::max(act_max, rr[static_cast<size_t>(MemCategory::kActivations)]);
    }
    const double state_formula = model_state_formula(st, static_cast<double>(psi), world);
    j["model_state_bytes"] = state_max;
    j["model_state_formula_bytes"] = state_formula;
    j["model_state_ratio"] = static_cast<double>(state_max) / state_formula;
    j["activation_bytes"] = act_max;

    // Communication: bytes one rank sends per step, by kind (rank 0's; max total over ranks too).
    nlohmann::ordered_json by_kind = nlohmann::ordered_json::object();
    for (size_t k = 0; k < kKinds; ++k)
      by_kind[zt::collective_name(static_cast<zt::CollectiveKind>(k))] = rows[kCats + 1 + k];
    int64_t comm_max = 0;
    for (int r = 0; r < world; ++r) {
      int64_t t = 0;
      for (size_t k = 0; k < kKinds; ++k) t += rows[static_cast<size_t>(r) * kRow + kCats + 1 + k];
      comm_max = std::max(comm_max, t);
    }
    const double k_elems = st == 3 ? 3.0 : 2.0;
    const double comm_formula = k_elems * static_cast<double>(psi) * static_cast<double>(dsize) *
                                (world - 1) / static_cast<double>(world);
    j["comm_bytes_per_step"] = by_kind;
    j["comm_bytes_per_step_total"] = comm_max;
    j["comm_formula_bytes"] = comm_formula;
    j["comm_ratio"] = comm_formula > 0 ? nlohmann::ordered_json(comm_max / comm_formula)
                                       : nlohmann::ordered_json(nullptr);

    // Note [hidden communication]: every collective runs on the communicator's own thread;
    // busy_ms is the wall time that thread spent inside them, blocked_ms the time the compute
    // thread spent waiting in Work::wait(). Communication costs the step time only while compute
    // waits for it; the rest of the busy time elapsed while compute went on, i.e. it was hidden.
    // So hidden = 1 - blocked/busy. It is an estimate, and an optimistic one:
    //  - busy includes a rank's wait inside MPI for peers that have not reached the collective
    //    yet. Issuing early (overlap, prefetch) lengthens that wait, so busy grows with overlap
    //    although no more bytes move; run_zero_bench.sh's control (overlap and prefetch off)
    //    gives the sturdier figure 1 - blocked(on)/blocked(off).
    //  - On a CPU the communication thread shares the cores with compute (it copies and, for
    //    16-bit reductions, adds), so hidden time is hidden latency, not free.
    //  - blocked also covers collectives queued behind others and slower peers, so it can exceed
    //    busy: clamped to 0. Collectives waited for at once by design (loss and norm
    //    all-reduces, the post-update all-gather of stages 1-2) cap the fraction below 1.
    std::vector<double> busy, blocked, hidden;
    double busy_sum = 0.0, blocked_sum = 0.0;
    auto hidden_of = [](double b, double w) {
      return b > 0.0 ? std::clamp(1.0 - w / b, 0.0, 1.0) : 0.0;
    };
    for (int r = 0; r < world; ++r) {
      const double b = all_times[2 * static_cast<size_t>(r)] / steps;
      const double w = all_times[2 * static_cast<size_t>(r) + 1] / steps;
      busy.push_back(b);
      blocked.push_back(w);
      hidden.push_back(hidden_of(b, w));
      busy_sum += b;
      blocked_sum += w;
    }
    j["busy_ms_per_step"] = busy;
    j["blocked_ms_per_step"] = blocked;
    j["hidden_fraction_per_rank"] = hidden;
    // Exposed communication by kind, ms per step, mean over ranks.
    nlohmann::ordered_json kind_ms = nlohmann::ordered_json::object();
    for (size_t k = 0; k < kKinds; ++k) {
      double sum = 0.0;
      for (int r = 0; r < world; ++r) sum += all_kind[static_cast<size_t>(r) * kKinds + k];
      kind_ms[zt::collective_name(static_cast<zt::CollectiveKind>(k))] = sum / world / steps;
    }
    j["blocked_ms_per_step_by_kind"] = kind_ms;
    j["hidden_fraction"] = world > 1 ? nlohmann::ordered_json(hidden_of(busy_sum, blocked_sum))
                                     : nlohmann::ordered_json(nullptr);
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  return 0;
}
