// Sharded checkpoints at the Trainer level under MPI (DESIGN.md: "sharded checkpoints that resume
// on a different number of workers"; "distributed equals single"):
//  - SameWorld: K steps uninterrupted equal, bit for bit, k steps + checkpoint + a new trainer
//    restored from it + K-k steps, at ZeRO stages 0-3, in fp32, bf16 and fp16 (dynamic loss
//    scaling with skipped steps, a learning-rate warmup).
//  - Reshard: a checkpoint written by A ranks at stage a resumes on B ranks at stage b (4->2, 2->4,
//    1->4, 4->1, 2->1, 1->2, stage 3->1, 0->3, 2->0, ...): right after the restore the master
//    weights are the writer's, bit for bit (resharding only moves bytes); the continued steps
//    follow the writer's own continuation within the rounding of a different reduction order.
//  - NegativeControl: the comparisons have teeth (a run not resumed from the same step fails them),
//    and a checkpoint whose shard file is gone is an error naming the file on every rank.
//
// Sub-worlds are the first n ranks of MPI_COMM_WORLD (MPI_Comm_split); a world of one runs without
// MPI on a local communicator. Ranks outside a sub-world wait at a world barrier. Every phase ends
// with that barrier, so code inside a phase uses EXPECT (never ASSERT, whose early return would
// leave the other ranks in a collective) and the must() wrappers, which abort the whole job.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include "runtime/backend/backend.h"
#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/shard_io.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/train/trainer.h"
#include "runtime/zero/partition_plan.h"
#include "tests/cpu/test_util.h"
#include "tests/mpi/mpi_test_util.h"

namespace zt {
namespace {

using testing::must;
using testing::must_ok;
using testing::SharedTempDir;
using testing::world_barrier;
using testing::world_rank;
using testing::world_size;

// The small model of zero_equivalence_test: vocab 64, block 16, 3 layers, n_embd 32, 2 heads
// (~41K parameters; one block unit is 12704 elements, the embedding unit 2624).
constexpr int kLayers = 3, kEmbd = 32, kHeads = 2, kBlock = 16, kVocab = 64;
constexpr int kSteps = 8;        // the uninterrupted run
constexpr int kGlobalBatch = 8;  // sequences per step, whatever the world: micro * acc * W
constexpr int64_t kSmallBucket = 2048;
// Stage 3: a prefetch window of one block unit and a persistence threshold that keeps the
// embedding unit and, with small buckets, the small LayerNorm/bias buckets whole.
constexpr int64_t kPrefetchOneBlock = 12800;
constexpr int64_t kPersistenceThreshold = 3000;

// The first n ranks of the world. A member of a sub-world of one trains without MPI. The
// destructor is the world barrier that ends a phase.
class SubWorld {
 public:
  explicit SubWorld(int n) : n_(n) {
    const int r = world_rank();
    MPI_Comm_split(MPI_COMM_WORLD, r < n ? 0 : MPI_UNDEFINED, r, &mpi_);
    if (r < n && n > 1) comm_ = must(make_mpi_communicator(mpi_), "make_mpi_communicator");
  }
  ~SubWorld() {
    comm_.reset();
    if (mpi_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_);
    world_barrier();
  }
  bool member() const { return world_rank() < n_; }
  MPI_Comm mpi() const { return mpi_; }               // MPI_COMM_NULL outside or in a world of one
  Communicator* comm() const { return comm_.get(); }  // nullptr: a world of one

 private:
  int n_;
  MPI_Comm mpi_ = MPI_COMM_NULL;
  std::unique_ptr<Communicator> comm_;
};

// One rank's trainer with its backend (which must outlive it).
struct Rank {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Trainer> trainer;
  Trainer* operator->() { return trainer.get(); }
};
Rank make_rank(const JobConfig& cfg, const SubWorld& w) {
  Rank r;
  r.backend = make_cpu_backend();
  r.trainer = w.comm() ? must(Trainer::create(cfg, *r.backend, *w.comm()), "Trainer::create")
                       : must(Trainer::create(cfg, *r.backend), "Trainer::create (1 rank)");
  return r;
}

void train(Rank& r, int steps, std::vector<StepResult>* out) {
  for (int s = 0; s < steps; ++s)
    out->push_back(must(r->step(), fmt::format("step {}", r->completed_steps() + 1)));
}

// A checkpoint of the rank's trainer after its completed steps (testing::save_checkpoint).
std::string save_checkpoint(Rank& r, const JobConfig& cfg, const SubWorld& w,
                            const std::string& root) {
  return testing::save_checkpoint(*r.trainer, cfg, w.mpi(), root);
}

// ---- configurations ----

enum class Prec { kF32, kBF16, kF16 };
const char* prec_name(Prec p) {
  return p == Prec::kF32 ? "fp32" : p == Prec::kBF16 ? "bf16" : "fp16";
}

// fp16 trains on a corpus whose every sequence is the same 16 tokens (zero_equivalence_test's
// periodic_tokens): every split of the batch then overflows at the same loss scales, which at
// initial_scale_power 20 are the first four steps (2^20, 2^20, 2^19, 2^18), with 2^17 clean after.
std::vector<uint16_t> periodic_tokens(size_t n) {
  return testing::periodic_tokens(n, kBlock, kVocab);
}

struct DataFiles {
  std::string varied, periodic;
  std::string nvme;  // a directory for offload_optimizer.device: nvme
};

struct Shape {
  int world = 1;
  int stage = 0;
  int accumulation = 1;
  Prec prec = Prec::kF32;
  bool small_buckets = false;
  bool overlap = false;
  bool warmup = false;      // WarmupLR: the learning rate depends on the applied steps restored
  int scale_window = 1000;  // fp16.loss_scale_window
  std::string optimizer = "AdamW";
  OffloadDevice offload = OffloadDevice::kNone;
  OffloadDevice offload_param = OffloadDevice::kNone;  // stage 3
};

JobConfig make_cfg(const DataFiles& data, const Shape& s) {
  const int micro = kGlobalBatch / (s.accumulation * s.world);
  JobConfig cfg = testing::small_job(s.prec == Prec::kF16 ? data.periodic : data.varied, kLayers,
                                     kEmbd, kHeads, kBlock, kVocab, micro, s.accumulation);
  cfg.train_batch_size = kGlobalBatch;
  cfg.train.steps = kSteps;
  cfg.gradient_clipping = 1.0;
  cfg.bf16.enabled = s.prec == Prec::kBF16;
  cfg.fp16.enabled = s.prec == Prec::kF16;
  cfg.fp16.initial_scale_power = 20;
  cfg.fp16.loss_scale_window = s.scale_window;
  cfg.zero.stage = s.stage;
  cfg.zero.overlap_comm = s.overlap;
  if (s.small_buckets) cfg.zero.reduce_bucket_size = kSmallBucket;
  cfg.zero.stage3_prefetch_bucket_size = kPrefetchOneBlock;
  cfg.zero.stage3_param_persistence_threshold = kPersistenceThreshold;
  testing::use_optimizer(cfg, s.optimizer);
  cfg.zero.offload_optimizer.device = s.offload;
  if (s.offload == OffloadDevice::kNvme) {
    cfg.zero.offload_optimizer.nvme_path = data.nvme;
    cfg.zero.offload_optimizer.buffer_size = 4096;  // many chunks, cutting parameters
    cfg.zero.offload_optimizer.buffer_count = 3;
  }
  cfg.zero.offload_param.device = s.offload_param;
  if (s.offload_param == OffloadDevice::kNvme) {
    cfg.zero.offload_param.nvme_path = data.nvme;
    cfg.zero.offload_param.buffer_size = 4096;
    cfg.zero.offload_param.buffer_count = 3;
  }
  if (s.warmup) {
    cfg.scheduler.type = "WarmupLR";
    cfg.scheduler.warmup_min_lr = 3e-4;
    cfg.scheduler.warmup_max_lr = 3e-3;
    cfg.scheduler.warmup_num_steps = 6;
    cfg.scheduler.warmup_type = WarmupType::kLinear;
  }
  return cfg;
}

std::string shape_name(const Shape& s) {
  return fmt::format("w{}s{}_acc{}_{}{}{}{}{}", s.world, s.stage, s.accumulation, prec_name(s.prec),
                     s.small_buckets ? "_small" : "", s.overlap ? "_overlap" : "",
                     s.warmup ? "_warmup" : "",
                     s.scale_window != 1000 ? fmt::format("_window{}", s.scale_window) : "") +
         (s.optimizer != "AdamW" ? "_" + s.optimizer : "") +
         (s.offload == OffloadDevice::kCpu    ? "_offcpu"
          : s.offload == OffloadDevice::kNvme ? "_offnvme"
                                              : "") +
         (s.offload_param == OffloadDevice::kCpu    ? "_paramcpu"
          : s.offload_param == OffloadDevice::kNvme ? "_paramnvme"
                                                    : "");
}

bool splits_units(const PartitionPlan& plan) {
  for (const PlanUnit& u : plan.units)
    if (u.end_bucket - u.first_bucket > 1) return true;
  return false;
}

// ---- comparisons ----

// Master weights of two runs element by element, each looked up by parameter name in its own
// layout (the flat layouts differ between world sizes: buckets are padded to multiples of
// world * 16).
//
// The key part of attention's c_attn.bias is measured on its own: its exact gradient is zero
// (adding q.b_k to every score of a query row leaves the softmax unchanged), so what it receives
// is rounding noise that AdamW normalises into steps of up to lr whose sign depends on the
// summation order (zero_equivalence_test). Across reduction orders such elements only have to stay
// within lr * steps.
struct WeightDiff {
  double max_abs = 0, max_ref = 0, key_bias_max_abs = 0;
  int64_t compared = 0, bit_mismatches = 0;
  std::string first_mismatch;  // "name[i]: a vs b" of the first element that differs in its bits
  double padding_max = 0;      // largest |w| at a padding position of `a`'s layout (must be 0)
};
bool is_key_bias(const ParamSpec& s, int64_t i) {
  const int64_t C = s.numel() / 3;
  return s.name.ends_with(".attn.c_attn.bias") && i >= C && i < 2 * C;
}
WeightDiff compare_weights(const std::vector<float>& a, const ParamLayout& la,
                           const std::vector<float>& b, const ParamLayout& lb) {
  WeightDiff d;
  std::vector<char> covered(a.size(), 0);
  for (const ParamEntry& eb : lb.entries) {
    const ParamEntry* ea = la.find(eb.spec.name);
    EXPECT_NE(ea, nullptr) << eb.spec.name << " missing";
    if (!ea) continue;
    for (int64_t i = 0; i < eb.spec.numel(); ++i) {
      const size_t ia = static_cast<size_t>(ea->offset + i),
                   ib = static_cast<size_t>(eb.offset + i);
      const float x = a.at(ia), y = b.at(ib);
      covered[ia] = 1;
      ++d.compared;
      if (std::bit_cast<uint32_t>(x) != std::bit_cast<uint32_t>(y)) {
        if (d.bit_mismatches++ == 0)
          d.first_mismatch = fmt::format("{}[{}]: {:.9g} vs {:.9g}", eb.spec.name, i, x, y);
      }
      const double diff = std::fabs(static_cast<double>(x) - y);
      if (is_key_bias(eb.spec, i))
        d.key_bias_max_abs = std::max(d.key_bias_max_abs, diff);
      else
        d.max_abs = std::max(d.max_abs, diff);
      d.max_ref = std::max(d.max_ref, std::fabs(static_cast<double>(y)));
    }
  }
  for (size_t i = 0; i < a.size(); ++i)
    if (!covered[i]) d.padding_max = std::max(d.padding_max, std::fabs(static_cast<double>(a[i])));
  return d;
}

// Steps of two runs, bit for bit.
void expect_same_steps(const std::vector<StepResult>& a, const std::vector<StepResult>& b,
                       const std::string& what) {
  EXPECT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i].step, b[i].step) << what;
    EXPECT_EQ(a[i].loss, b[i].loss) << what << ", step " << b[i].step;
    EXPECT_EQ(a[i].grad_norm, b[i].grad_norm) << what << ", step " << b[i].step;
    EXPECT_EQ(a[i].loss_scale, b[i].loss_scale) << what << ", step " << b[i].step;
    EXPECT_EQ(a[i].skipped, b[i].skipped) << what << ", step " << b[i].step;
    EXPECT_EQ(a[i].lr, b[i].lr) << what << ", step " << b[i].step;
    EXPECT_EQ(a[i].tokens, b[i].tokens) << what << ", step " << b[i].step;
  }
}

// How far a continued run is from the uninterrupted one (steps after the checkpoint, and the
// final master weights).
struct Divergence {
  double loss_rel = 0, grad_norm_rel = 0;
  WeightDiff w;
};
Divergence divergence(const std::vector<StepResult>& a, const std::vector<StepResult>& ref,
                      const std::vector<float>& wa, const ParamLayout& la,
                      const std::vector<float>& wref, const ParamLayout& lref) {
  Divergence d;
  for (size_t i = 0; i < std::min(a.size(), ref.size()); ++i) {
    d.loss_rel = std::max(d.loss_rel, std::fabs(a[i].loss - ref[i].loss) / std::fabs(ref[i].loss));
    d.grad_norm_rel =
        std::max(d.grad_norm_rel, std::fabs(a[i].grad_norm - ref[i].grad_norm) / ref[i].grad_norm);
  }
  d.w = compare_weights(wa, la, wref, lref);
  return d;
}

// fp32 tolerances of a continuation on another world size or stage: only the summation order
// differs (per-rank partial sums, then the reduction), so zero_equivalence_test's bounds apply:
// loss and gradient norm 1e-5 relative, master weights within 1e-5 of their largest magnitude, the
// attention key bias (zero exact gradient, see compare_weights) within 2 * lr * steps. Measured
// over every Reshard case on 2 and 4 ranks (largest), 4 steps after the checkpoint: loss rel
// 6.5e-8, grad_norm rel 1.3e-7, max |dw| 1.2e-7 (1.2e-7 of max |w| = 1.02, one float ulp), key
// bias 5.3e-6 (bound 2.4e-2). A resume from the wrong place is far outside them (NegativeControl:
// loss rel > 1e-3). The weights right after the restore are compared bit for bit: resharding only
// moves bytes.
constexpr double kLossRel = 1e-5, kGradNormRel = 1e-5, kWeightRel = 1e-5;
// An optimizer step moves any weight by at most lr (Adam's normalised step, Lion's sign);
// Adafactor's step is its relative step 1e-2 times max(eps2, RMS(key bias)) = eps2 (the key bias
// stays ~0).
double key_bias_bound(const JobConfig& cfg, int steps) {
  const OptimizerConfig& o = cfg.optimizer;
  const double lr = o.type == "Adafactor" ? 1e-2 * o.eps2 : o.lr;
  return 2.0 * lr * steps;
}

// 8-bit moments resumed on another layout are requantised in other blocks (Note [8-bit
// checkpoints]): the continuation then differs by the quantisation error, not just the summation
// order. Measured (AdamW8bit 2 ranks stage 1 -> 1 rank stage 3, 4 steps): loss rel 3.1e-6,
// grad_norm rel 1.0e-4, max |dw| 4.5e-4 of max |w|.
constexpr double kLossRel8bit = 1e-4, kGradNormRel8bit = 1e-3, kWeightRel8bit = 2e-3;

bool within_tolerance(const Divergence& d, const JobConfig& cfg, int steps) {
  return d.loss_rel <= kLossRel && d.grad_norm_rel <= kGradNormRel &&
         d.w.max_abs <= kWeightRel * d.w.max_ref &&
         d.w.key_bias_max_abs <= key_bias_bound(cfg, steps);
}

std::string describe(const Divergence& d) {
  return fmt::format(
      "max rel diff loss {:.3g} grad_norm {:.3g}; max|dw| {:.3g} ({:.3g} of max|w| "
      "{:.3g}), key bias {:.3g}",
      d.loss_rel, d.grad_norm_rel, d.w.max_abs, d.w.max_abs / d.w.max_ref, d.w.max_ref,
      d.w.key_bias_max_abs);
}

// The writer's observable results, broadcast from world rank 0 (always a writer) to every rank, so
// ranks that were not in the writing world can compare against them.
struct WriterRun {
  std::vector<StepResult> steps;  // all of them: before and after the checkpoint
  std::vector<float> w_ckpt;      // master weights at the checkpoint
  std::vector<float> w_final;     // after the last step
};
void broadcast_floats(std::vector<float>* v) {
  uint64_t n = v->size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  v->resize(n);
  MPI_Bcast(v->data(), static_cast<int>(n), MPI_FLOAT, 0, MPI_COMM_WORLD);
}
void broadcast(WriterRun* r) {
  constexpr int kFields = 7;
  uint64_t n = r->steps.size();
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  std::vector<double> packed(kFields * n);
  if (world_rank() == 0)
    for (size_t i = 0; i < n; ++i) {
      const StepResult& s = r->steps[i];
      const double f[kFields] = {static_cast<double>(s.step),
                                 s.loss,
                                 s.lr,
                                 s.grad_norm,
                                 s.loss_scale,
                                 s.skipped ? 1.0 : 0.0,
                                 static_cast<double>(s.tokens)};
      std::copy_n(f, kFields, packed.begin() + static_cast<std::ptrdiff_t>(kFields * i));
    }
  MPI_Bcast(packed.data(), static_cast<int>(packed.size()), MPI_DOUBLE, 0, MPI_COMM_WORLD);
  r->steps.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const double* f = packed.data() + kFields * i;
    StepResult& s = r->steps[i];
    s.step = static_cast<int64_t>(f[0]);
    s.loss = f[1];
    s.lr = f[2];
    s.grad_norm = f[3];
    s.loss_scale = f[4];
    s.skipped = f[5] != 0.0;
    s.tokens = static_cast<int64_t>(f[6]);
  }
  broadcast_floats(&r->w_ckpt);
  broadcast_floats(&r->w_final);
}

// Trains `ckpt_step` steps on the first cfg-world ranks, checkpoints into `root`, trains on to
// kSteps (the writer's own continuation is the uninterrupted run), and broadcasts what it saw.
// Returns the checkpoint directory.
std::string write_and_continue(const JobConfig& cfg, int world, int ckpt_step,
                               const std::string& root, WriterRun* out) {
  std::string dir = root + "/" + checkpoint_dir_name(ckpt_step);
  {
    SubWorld w(world);
    if (w.member()) {
      Rank r = make_rank(cfg, w);
      train(r, ckpt_step, &out->steps);
      out->w_ckpt = must(r->master_weights(), "master_weights");
      EXPECT_EQ(save_checkpoint(r, cfg, w, root), dir);
      train(r, kSteps - ckpt_step, &out->steps);
      out->w_final = must(r->master_weights(), "master_weights");
    }
  }
  broadcast(out);
  return dir;
}

// After a restore: the trainer's state is the manifest's, and its master weights are the writer's
// at the checkpoint, bit for bit, with zero padding.
void expect_restored(Rank& r, const Manifest& m, const std::vector<float>& w_ckpt,
                     const ParamLayout& writer_layout) {
  EXPECT_EQ(r->completed_steps(), m.step);
  const TrainerState st = r->state();
  EXPECT_TRUE(st == m.trainer) << "state after restore: step " << st.step << " applied "
                               << st.applied_steps << " scale " << st.scaler.scale << " good "
                               << st.scaler.good_steps << " hysteresis "
                               << st.scaler.hysteresis_left << " next_sequence " << st.next_sequence
                               << "; manifest: step " << m.trainer.step << " applied "
                               << m.trainer.applied_steps << " scale " << m.trainer.scaler.scale
                               << " next_sequence " << m.trainer.next_sequence;
  const std::vector<float> w = must(r->master_weights(), "master_weights");
  const WeightDiff d = compare_weights(w, r->layout(), w_ckpt, writer_layout);
  EXPECT_EQ(d.compared, writer_layout.num_parameters);
  EXPECT_EQ(d.bit_mismatches, 0) << "restored master weights differ from the writer's, first "
                                 << d.first_mismatch;
  EXPECT_EQ(d.padding_max, 0.0) << "padding of the restored master weights is not zero";
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = world_size();
    data_.varied = dir_.file("tokens.bin");
    data_.periodic = dir_.file("periodic.bin");
    data_.nvme = dir_.file("nvme");
    if (world_rank() == 0) {
      std::filesystem::create_directories(data_.nvme);
      testing::write_llmc_tokens(data_.varied, testing::patterned_tokens(8192, kVocab, 7));
      testing::write_llmc_tokens(data_.periodic, periodic_tokens(8192));
    }
    world_barrier();
  }
  void TearDown() override { world_barrier(); }

  int world_ = 1;
  SharedTempDir dir_;
  DataFiles data_;
};

// ---- 1. same world, same stage: bit for bit ----

struct SameCase {
  Shape s;
  int ckpt_step = 4;
};
void PrintTo(const SameCase& c, std::ostream* os) {
  *os << shape_name(c.s) << "_ckpt" << c.ckpt_step;
}

class SameWorld : public CheckpointTest, public ::testing::WithParamInterface<SameCase> {};

TEST_P(SameWorld, ResumeIsBitIdentical) {
  SameCase c = GetParam();
  if (c.s.world == 0) c.s.world = world_;  // 0: the whole MPI world
  const JobConfig cfg = make_cfg(data_, c.s);
  const std::string root = checkpoints_root(dir_.file("run"));

  SubWorld w(c.s.world);
  if (!w.member()) return;  // the SubWorld's destructor is the barrier the members reach too

  std::vector<StepResult> full, before, after;
  std::vector<float> w_full, w_ckpt, w_resumed;
  ParamLayout layout;
  {
    Rank r = make_rank(cfg, w);
    // The knobs this case claims to exercise are in effect in the plan.
    if (c.s.small_buckets) {
      EXPECT_TRUE(splits_units(r->plan())) << "no unit split:\n" << r->plan().summary();
    }
    train(r, kSteps, &full);
    w_full = must(r->master_weights(), "master_weights");
    layout = r->layout();
  }
  std::string dir;
  {
    Rank r = make_rank(cfg, w);
    train(r, c.ckpt_step, &before);
    w_ckpt = must(r->master_weights(), "master_weights");
    dir = save_checkpoint(r, cfg, w, root);
  }  // the writer is gone before the resumer exists
  {
    const Manifest m = must(read_manifest(dir), "read_manifest");
    EXPECT_EQ(m.step, c.ckpt_step);
    EXPECT_EQ(m.world_size, c.s.world);
    EXPECT_EQ(m.zero_stage, c.s.stage);
    must_ok(verify_checkpoint_files(dir, m), "verify_checkpoint_files");
    Rank r = make_rank(cfg, w);
    // Negative control: a fresh trainer is not at the checkpoint (so the check below can fail)
    // once an update was applied before it.
    bool applied_before = false;
    for (const StepResult& s : before) applied_before |= !s.skipped;
    const WeightDiff fresh =
        compare_weights(must(r->master_weights(), "master_weights"), layout, w_ckpt, layout);
    EXPECT_EQ(fresh.bit_mismatches > 0, applied_before)
        << "a fresh trainer has the weights of a checkpoint with updates, or vice versa";
    must_ok(r->restore(dir, m), "restore");
    expect_restored(r, m, w_ckpt, layout);
    train(r, kSteps - c.ckpt_step, &after);
    w_resumed = must(r->master_weights(), "master_weights");
  }

  // The first ckpt_step steps are the same computation (determinism of the runs themselves), and
  // the resumed steps are the uninterrupted run's, bit for bit.
  expect_same_steps(before, {full.begin(), full.begin() + c.ckpt_step}, "before the checkpoint");
  expect_same_steps(after, {full.begin() + c.ckpt_step, full.end()}, "after the restore");
  const WeightDiff d = compare_weights(w_resumed, layout, w_full, layout);
  EXPECT_EQ(d.bit_mismatches, 0) << "final master weights differ, first " << d.first_mismatch;
  EXPECT_EQ(d.padding_max, 0.0);

  // The run does what the case claims: it applies updates after the restore; fp16 skips steps
  // before the checkpoint, and after it the loss scale moves (a skip, or a halving or doubling),
  // which depends on the restored scaler state.
  int skipped_before = 0, skipped_after = 0, applied_after = 0;
  bool scale_moved_after = false;
  for (const StepResult& s : before) skipped_before += s.skipped;
  for (const StepResult& s : after) {
    skipped_after += s.skipped;
    applied_after += !s.skipped;
    scale_moved_after |= s.loss_scale != after.front().loss_scale;
  }
  EXPECT_GT(applied_after, 0);
  if (c.s.prec == Prec::kF16) {
    EXPECT_GT(skipped_before, 0);
    EXPECT_TRUE(skipped_after > 0 || scale_moved_after)
        << "the loss scale does not move after the restore: its state is not tested";
  }
  if (w.comm() == nullptr || w.comm()->rank() == 0) {
    std::string scales;  // fp16: log2 of each step's loss scale, "s" where it was skipped
    if (c.s.prec == Prec::kF16)
      for (const StepResult& s : full)
        scales += fmt::format(" {}{}", std::log2(s.loss_scale), s.skipped ? "s" : "");
    std::printf("  [%s ckpt %d] final loss %.7f, %d/%d steps skipped%s%s\n",
                shape_name(c.s).c_str(), c.ckpt_step, after.back().loss,
                skipped_before + skipped_after, kSteps, scales.empty() ? "" : ", scales",
                scales.c_str());
  }
}

std::vector<SameCase> same_cases() {
  std::vector<SameCase> v;
  auto add = [&](int world, int stage, int acc, Prec p, bool small, bool overlap, bool warmup,
                 int ckpt, int scale_window = 1000) {
    SameCase c;
    c.s = {world, stage, acc, p, small, overlap, warmup, scale_window};
    c.ckpt_step = ckpt;
    v.push_back(c);
  };
  // fp32 at every stage on the whole world (world 0), with and without small buckets and overlap.
  add(0, 0, 2, Prec::kF32, false, false, false, 4);
  add(0, 1, 1, Prec::kF32, true, true, false, 4);
  add(0, 2, 2, Prec::kF32, true, false, true, 4);
  add(0, 3, 2, Prec::kF32, true, true, false, 4);
  add(0, 3, 1, Prec::kF32, false, false, false, 5);
  // bf16: the 16-bit working weights are rebuilt from the restored master weights.
  add(0, 2, 2, Prec::kBF16, true, true, false, 4);
  add(0, 3, 1, Prec::kBF16, true, false, true, 4);
  // fp16 with dynamic loss scaling. Steps 1-4 overflow (scales 2^20, 2^20, 2^19, 2^18), then
  // steps are clean at 2^17 until loss_scale_window clean steps double the scale. Both runs of a
  // case split the batch the same way, so every skip decision is reproducible, bit for bit. With
  // warmup the learning rate follows the applied steps, not the steps run, so a resume that
  // confused them would show.
  //  - checkpoint after step 3, between overflows: the restored scale and hysteresis decide that
  //    step 4 is skipped at 2^18 and step 5 runs at 2^17; window 2 doubles it for step 7, which
  //    overflows again (scales 20s 20s 19s 18s 17 17 18s 18s, s = skipped);
  //  - checkpoint after step 6, two clean steps into a window of 3: the restored good-step count
  //    doubles the scale for step 8 (a fresh count would not); 2 of 6 steps applied
  //    (20s 20s 19s 18s 17 17 17 18).
  add(0, 1, 2, Prec::kF16, false, false, true, 3, 2);
  add(0, 3, 2, Prec::kF16, true, true, true, 6, 3);
  // A world of one without MPI.
  add(1, 3, 2, Prec::kF32, true, false, false, 4);
  // The other optimizers, and the state offloaded: 8-bit moments requantise to the same codes
  // (Note [8-bit checkpoints]), Adafactor's whole factored moments come back on every rank.
  auto opt = [&](int stage, Prec p, const char* optimizer,
                 OffloadDevice off = OffloadDevice::kNone) {
    add(0, stage, 2, p, true, stage == 3, false, 4);
    v.back().s.optimizer = optimizer;
    v.back().s.offload = off;
  };
  opt(2, Prec::kBF16, "AdamW8bit");
  opt(3, Prec::kF32, "Adafactor");
  opt(1, Prec::kBF16, "Adafactor");
  opt(1, Prec::kF32, "SGD");
  opt(2, Prec::kBF16, "Lion");
  opt(3, Prec::kBF16, "AdamW", OffloadDevice::kNvme);
  opt(1, Prec::kF32, "AdamW8bit", OffloadDevice::kCpu);
  opt(2, Prec::kBF16, "Adafactor", OffloadDevice::kNvme);
  // Stage 3 with the parameter shard offloaded too (ZeRO-Infinity's layout).
  opt(3, Prec::kBF16, "AdamW", OffloadDevice::kNvme);
  v.back().s.offload_param = OffloadDevice::kNvme;
  opt(3, Prec::kF32, "Lion", OffloadDevice::kCpu);
  v.back().s.offload_param = OffloadDevice::kCpu;
  return v;
}

INSTANTIATE_TEST_SUITE_P(Stages, SameWorld, ::testing::ValuesIn(same_cases()),
                         [](const ::testing::TestParamInfo<SameCase>& i) {
                           std::string n = shape_name(i.param.s);
                           if (i.param.s.world == 0) n.replace(0, 2, "wN");
                           return n + fmt::format("_ckpt{}", i.param.ckpt_step);
                         });

// ---- 2. resharding: another world size and/or stage ----

struct ReshardCase {
  Shape from, to;
};
std::string reshard_name(const ReshardCase& c) {
  return shape_name(c.from) + "_to_" + shape_name(c.to);
}
void PrintTo(const ReshardCase& c, std::ostream* os) { *os << reshard_name(c); }

class Reshard : public CheckpointTest, public ::testing::WithParamInterface<ReshardCase> {};

constexpr int kReshardCkpt = 4;

TEST_P(Reshard, ResumesOnAnotherWorldAndStage) {
  const ReshardCase c = GetParam();
  if (std::max(c.from.world, c.to.world) > world_)
    GTEST_SKIP() << "needs " << std::max(c.from.world, c.to.world) << " ranks";
  const JobConfig cfg_a = make_cfg(data_, c.from), cfg_b = make_cfg(data_, c.to);
  const std::string root = checkpoints_root(dir_.file("run"));
  // Every rank can rebuild the writer's plan (to read its flat layout).
  const PartitionPlan plan_a =
      must(make_partition_plan(cfg_a.model, cfg_a.zero, c.from.world), "make_partition_plan");
  if (c.from.small_buckets) {
    EXPECT_TRUE(splits_units(plan_a)) << plan_a.summary();
  }

  WriterRun ref;
  const std::string dir = write_and_continue(cfg_a, c.from.world, kReshardCkpt, root, &ref);

  SubWorld w(c.to.world);
  if (!w.member()) return;
  const Manifest m = must(read_manifest(dir), "read_manifest");
  EXPECT_EQ(m.world_size, c.from.world);
  EXPECT_EQ(m.zero_stage, c.from.stage);
  EXPECT_EQ(m.step, kReshardCkpt);
  must_ok(verify_checkpoint_files(dir, m), "verify_checkpoint_files");
  // The resume is legal, and the stage change (and only that) is noted for events.log.
  const std::vector<std::string> notes = must(check_resume_compatible(m, cfg_b), "compatible");
  EXPECT_EQ(notes.size(), c.from.stage != c.to.stage ? 1u : 0u) << ::testing::PrintToString(notes);

  Rank r = make_rank(cfg_b, w);
  if (c.to.small_buckets) {
    EXPECT_TRUE(splits_units(r->plan())) << r->plan().summary();
  }
  must_ok(r->restore(dir, m), "restore");
  expect_restored(r, m, ref.w_ckpt, plan_a.layout);
  std::vector<StepResult> after;
  train(r, kSteps - kReshardCkpt, &after);
  const std::vector<float> w_after = must(r->master_weights(), "master_weights");

  const std::vector<StepResult> ref_after(ref.steps.begin() + kReshardCkpt, ref.steps.end());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].step, ref_after[i].step);
    EXPECT_EQ(after[i].lr, ref_after[i].lr) << "step " << ref_after[i].step;
    EXPECT_EQ(after[i].tokens, ref_after[i].tokens) << "step " << ref_after[i].step;
  }
  const Divergence d =
      divergence(after, ref_after, w_after, r->layout(), ref.w_final, plan_a.layout);
  const int steps = kSteps - kReshardCkpt;
  const bool requantised = cfg_b.optimizer.is_8bit();
  EXPECT_LE(d.loss_rel, requantised ? kLossRel8bit : kLossRel) << describe(d);
  EXPECT_LE(d.grad_norm_rel, requantised ? kGradNormRel8bit : kGradNormRel) << describe(d);
  EXPECT_LE(d.w.max_abs, (requantised ? kWeightRel8bit : kWeightRel) * d.w.max_ref) << describe(d);
  EXPECT_LE(d.w.key_bias_max_abs, key_bias_bound(cfg_b, steps)) << describe(d);
  EXPECT_EQ(d.w.padding_max, 0.0) << "padding of the master weights was trained";
  if (w.comm() == nullptr || w.comm()->rank() == 0)
    std::printf("  [%s] %s\n", reshard_name(c).c_str(), describe(d).c_str());
}

std::vector<ReshardCase> reshard_cases() {
  auto opt = [](Shape from, Shape to, const char* optimizer,
                OffloadDevice off = OffloadDevice::kNone) {
    from.optimizer = to.optimizer = optimizer;
    to.offload = off;
    return ReshardCase{from, to};
  };
  auto s = [](int world, int stage, bool small = false, bool overlap = false) {
    Shape x;
    x.world = world;
    x.stage = stage;
    // Accumulation 2 where the batch allows it, so the micro-batch split changes with the world.
    x.accumulation = world == 4 ? 1 : 2;
    x.small_buckets = small;
    x.overlap = overlap;
    return x;
  };
  return {
      // Runnable with 2 ranks.
      {s(2, 3, true), s(1, 1)},        // 2->1, stage 3->1
      {s(1, 0), s(2, 3, true, true)},  // 1->2, stage 0->3
      {s(2, 2, true), s(2, 0)},        // same world, stage 2->0
      {s(2, 3), s(2, 1, true)},        // same world, stage 3->1, other buckets
      {s(2, 0), s(1, 3, true)},        // 2->1, stage 0->3
      {s(1, 2, true), s(2, 2)},        // 1->2, stage 2 (all pieces from one file)
      // With 4 ranks.
      {s(4, 3, true), s(2, 1)},        // 4->2, stage 3->1
      {s(2, 0), s(4, 3, true, true)},  // 2->4, stage 0->3
      {s(1, 2, true), s(4, 2)},        // 1->4
      {s(4, 2, true, true), s(1, 0)},  // 4->1, stage 2->0
      {s(4, 1), s(2, 3, true)},        // 4->2, stage 1->3
      {s(2, 3, true), s(4, 1, true)},  // 2->4, stage 3->1
      // The other optimizers (Adafactor's whole-parameter reductions now span other ranks).
      opt(s(2, 3, true), s(1, 1), "Adafactor"),
      opt(s(1, 0), s(2, 3, true, true), "Adafactor"),
      opt(s(2, 0), s(2, 2, true), "SGD"),
      opt(s(2, 2, true), s(1, 3), "Lion"),
      opt(s(2, 1), s(1, 3, true), "AdamW8bit"),
      opt(s(1, 2), s(2, 1, true), "AdamW", OffloadDevice::kNvme),
      opt(s(4, 3, true), s(2, 1), "Adafactor"),
      opt(s(2, 1), s(4, 2, true), "AdamW8bit", OffloadDevice::kCpu),
  };
}

INSTANTIATE_TEST_SUITE_P(Worlds, Reshard, ::testing::ValuesIn(reshard_cases()),
                         [](const ::testing::TestParamInfo<ReshardCase>& i) {
                           return reshard_name(i.param);
                         });

// ---- 3. negative controls ----

using NegativeControl = CheckpointTest;

// The resume comparisons can fail: runs that did not resume from the checkpoint's step (a fresh
// trainer; one restored from an earlier checkpoint) are far outside the Reshard tolerances and
// fail the bit-for-bit checks.
TEST_F(NegativeControl, RunNotResumedFromTheSameStepDiffers) {
  Shape su;
  su.world = world_;
  su.stage = 2;
  su.accumulation = 1;
  su.small_buckets = true;
  const JobConfig cfg = make_cfg(data_, su);
  const std::string root = checkpoints_root(dir_.file("run"));
  const int steps = kSteps - kReshardCkpt;

  // The writer also checkpoints at step 2, the "wrong" checkpoint.
  WriterRun ref;
  std::string dir2, dir4;
  {
    SubWorld w(world_);
    Rank r = make_rank(cfg, w);
    train(r, 2, &ref.steps);
    dir2 = save_checkpoint(r, cfg, w, root);
    train(r, kReshardCkpt - 2, &ref.steps);
    ref.w_ckpt = must(r->master_weights(), "master_weights");
    dir4 = save_checkpoint(r, cfg, w, root);
    train(r, steps, &ref.steps);
    ref.w_final = must(r->master_weights(), "master_weights");
  }
  EXPECT_EQ(must(latest_checkpoint(root), "latest_checkpoint"), dir4);
  EXPECT_EQ(list_checkpoints(root), (std::vector<int64_t>{2, kReshardCkpt}));
  const std::vector<StepResult> ref_after(ref.steps.begin() + kReshardCkpt, ref.steps.end());

  SubWorld w(world_);
  {
    Rank fresh = make_rank(cfg, w);
    std::vector<StepResult> after;
    train(fresh, steps, &after);
    const Divergence d = divergence(after, ref_after, must(fresh->master_weights(), "weights"),
                                    fresh->layout(), ref.w_final, fresh->layout());
    EXPECT_FALSE(within_tolerance(d, cfg, steps)) << "fresh run: " << describe(d);
    if (world_rank() == 0) std::printf("  [fresh run] %s\n", describe(d).c_str());
    EXPECT_GT(d.loss_rel, 100 * kLossRel) << describe(d);
    EXPECT_GT(d.w.bit_mismatches, 0);
  }
  {
    Rank early = make_rank(cfg, w);
    const Manifest m = must(read_manifest(dir2), "read_manifest");
    must_ok(early->restore(dir2, m), "restore");
    EXPECT_EQ(early->completed_steps(), 2);
    const WeightDiff at_ckpt = compare_weights(must(early->master_weights(), "weights"),
                                               early->layout(), ref.w_ckpt, early->layout());
    EXPECT_GT(at_ckpt.bit_mismatches, 0) << "step 2's weights equal step 4's";
    std::vector<StepResult> after;
    train(early, steps, &after);  // steps 3..6, compared with 5..8
    const Divergence d = divergence(after, ref_after, must(early->master_weights(), "weights"),
                                    early->layout(), ref.w_final, early->layout());
    EXPECT_FALSE(within_tolerance(d, cfg, steps)) << "resumed from step 2: " << describe(d);
    if (world_rank() == 0) std::printf("  [resumed from step 2] %s\n", describe(d).c_str());
    EXPECT_GT(d.loss_rel, 100 * kLossRel) << describe(d);
  }
}

// Restores `dir` (whose shard `missing` was deleted) on the first `world` ranks at `stage`: every
// rank gets an error naming the file, and none is left in a collective.
void expect_missing_file_error(const DataFiles& data, int world, int stage, const std::string& dir,
                               const std::string& missing) {
  Shape su;
  su.world = world;
  su.stage = stage;
  su.accumulation = 1;
  const JobConfig cfg = make_cfg(data, su);
  SubWorld w(world);
  if (!w.member()) return;
  const Manifest m = must(read_manifest(dir), "read_manifest");
  Rank r = make_rank(cfg, w);
  const Status st = r->restore(dir, m);
  EXPECT_FALSE(st.is_ok()) << "restore without " << missing << " succeeded";
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.to_string();
  EXPECT_NE(st.to_string().find(missing), std::string::npos) << st.to_string();
  EXPECT_NE(st.to_string().find("missing"), std::string::npos) << st.to_string();
  EXPECT_EQ(r->completed_steps(), 0) << "a failed restore moved the step counter";
}

// A deleted shard file is an error naming it on every rank of the restoring world, where every
// rank needs the file: all pieces come from a 1-rank checkpoint, or the restorer is at stage 0
// (each rank holds, and reads, everything). (Where only some ranks need the file, see
// MissingShardOfSomeRanksIsAnErrorOnEveryRank.)
TEST_F(NegativeControl, MissingShardFileIsAnErrorOnEveryRank) {
  // Checkpoint directories are deterministic, so every rank knows them.
  const std::string root1 = checkpoints_root(dir_.file("one"));
  const std::string rootN = checkpoints_root(dir_.file("all"));
  const std::string dir1 = root1 + "/" + checkpoint_dir_name(2);
  const std::string dirN = rootN + "/" + checkpoint_dir_name(2);
  for (int world : {1, world_}) {
    Shape su;
    su.world = world;
    su.stage = world == 1 ? 0 : 1;
    su.accumulation = 1;
    const JobConfig cfg = make_cfg(data_, su);
    SubWorld w(world);
    if (!w.member()) continue;
    Rank r = make_rank(cfg, w);
    std::vector<StepResult> steps;
    train(r, 2, &steps);
    EXPECT_EQ(save_checkpoint(r, cfg, w, world == 1 ? root1 : rootN), world == 1 ? dir1 : dirN);
  }
  const std::string last = shard_file_name(world_ - 1);
  if (world_rank() == 0) {
    std::filesystem::remove(dir1 + "/" + shard_file_name(0));
    std::filesystem::remove(dirN + "/" + last);
  }
  world_barrier();
  expect_missing_file_error(data_, world_, 2, dir1, shard_file_name(0));  // 1 -> N, stage 0 -> 2
  expect_missing_file_error(data_, world_, 0, dirN, last);                // N -> N, stage 1 -> 0
}

// Where only some ranks need the missing file (N ranks at stage >= 1 resuming an N-rank checkpoint:
// rank r reads only rank_r's file), the ranks that read their pieces must not wait in the refresh's
// all-gather for the one that failed: every rank returns promptly — the failing rank with the
// file's name, the others naming the failing rank. A short comm timeout turns a regression into a
// timeout (and an abort, since a rank that timed out cannot tear its communicator down) instead of
// a 300 s wait.
TEST_F(NegativeControl, MissingShardOfSomeRanksIsAnErrorOnEveryRank) {
  Shape su;
  su.world = world_;
  su.stage = 2;
  su.accumulation = 1;
  JobConfig cfg = make_cfg(data_, su);
  cfg.comm.timeout_s = 5;
  const std::string root = checkpoints_root(dir_.file("run"));
  {
    SubWorld w(world_);
    Rank r = make_rank(cfg, w);
    std::vector<StepResult> steps;
    train(r, 2, &steps);
    save_checkpoint(r, cfg, w, root);
  }
  const std::string dir = root + "/" + checkpoint_dir_name(2);
  const std::string missing = shard_file_name(world_ - 1);
  if (world_rank() == 0) std::filesystem::remove(dir + "/" + missing);
  world_barrier();
  SubWorld w(world_);
  const Manifest m = must(read_manifest(dir), "read_manifest");
  Rank r = make_rank(cfg, w);
  const auto t0 = std::chrono::steady_clock::now();
  const Status st = r->restore(dir, m);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "[rank %d] restore returned after %.1f s: %s\n", world_rank(), s,
               st.to_string().c_str());
  if (st.code() == StatusCode::kTimeout) {
    ADD_FAILURE() << "rank " << world_rank() << " timed out instead of naming " << missing;
    mpi_abort(1);
  }
  ASSERT_FALSE(st.is_ok());
  const std::string expected = world_rank() == world_ - 1
                                   ? missing
                                   : fmt::format("rank {} could not load its part", world_ - 1);
  EXPECT_NE(st.to_string().find(expected), std::string::npos) << st.to_string();
}

}  // namespace
}  // namespace zt
