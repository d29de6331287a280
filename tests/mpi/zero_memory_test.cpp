// ZeRO's model-state memory and communication per rank, measured on a GPT-2 of ~10.8M parameters
// in bf16 with AdamW, against the formulas of the ZeRO paper (Rajbhandari et al., 2020, with
// K = 12 bytes of fp32 optimizer state per parameter: master weights, m, v):
//
//   stage | model-state bytes per rank (Psi parameters, N ranks, 2-byte working dtype)
//   0     | 16 Psi
//   1     | 4 Psi + 12 Psi / N
//   2     | 2 Psi + 14 Psi / N
//   3     | 16 Psi / N
//
// and per step (gradient_accumulation_steps 1) about 2 Psi elements sent per rank at stages 0-2
// (all-reduce, or reduce-scatter + all-gather) and 3 Psi at stage 3 (one more all-gather of the
// parameters for the backward pass), each scaled by the ring's (N-1)/N.
//
// The memory test runs only on 4 ranks (skipped on 2); the communication test on both.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include "runtime/backend/backend.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"
#include "tests/mpi/mpi_test_util.h"

namespace zt {
namespace {

using testing::must;
using testing::must_ok;
using testing::TempDir;
using testing::world_rank;
using testing::world_size;

constexpr int kSteps = 2;  // the second step runs with every pool and buffer of the first still held
constexpr int64_t kBf16 = 2;

struct Case {
  int stage = 0;
  bool overlap = false;
};
std::string case_name(const Case& c) {
  return fmt::format("stage{}{}", c.stage, c.overlap ? "_overlap" : "");
}
// gtest prints a failing parameter with this (instead of its bytes).
void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

struct Measured {
  PartitionPlan plan;
  std::vector<StepResult> steps;
  int64_t peak_gathered_bytes = 0;
};

// GPT-2 with vocab 256, block 32, 6 layers of n_embd 384, 6 heads: 10,758,144 parameters; one
// block unit holds 1,774,464, the embedding unit (wte, wpe, ln_f) 111,360. Micro-batch 1, bf16.
JobConfig big_job(const std::string& data, const Case& c, int world) {
  JobConfig cfg = testing::small_job(data, /*n_layer=*/6, /*n_embd=*/384, /*n_head=*/6,
                                     /*block=*/32, /*vocab=*/256, /*micro=*/1, /*accumulation=*/1);
  cfg.train_batch_size = world;
  cfg.bf16.enabled = true;
  cfg.zero.stage = c.stage;
  cfg.zero.overlap_comm = c.overlap;
  // Stage 3 gathers one unit ahead (the default window of 5e7 elements would prefetch the whole
  // model, which is no ZeRO-3 memory at all). The default persistence threshold (1e5) keeps no
  // bucket of this model whole: the smallest, the embedding unit, has 111,360 elements.
  cfg.zero.stage3_prefetch_bucket_size = 1'800'000;
  return cfg;
}

// The runs are shared by the memory and the communication tests (cached per process; every rank
// runs the same tests in the same order, so the cache is filled collectively).
const Measured& measure(const Case& c) {
  static std::map<std::string, Measured> cache;
  const std::string key = case_name(c);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  TempDir dir;
  const std::string data = dir.file("tokens.bin");
  testing::write_llmc_tokens(data, testing::patterned_tokens(4096, 256, 3));
  auto comm = must(make_mpi_communicator(MPI_COMM_WORLD), "make_mpi_communicator");
  comm->set_timeout(std::chrono::seconds(120));
  Measured m;
  {
    auto backend = make_cpu_backend();
    auto t = must(Trainer::create(big_job(data, c, comm->world_size()), *backend, *comm),
                  "Trainer::create");
    m.plan = t->plan();
    for (int s = 0; s < kSteps; ++s) m.steps.push_back(must(t->step(), fmt::format("step {}", s + 1)));
    m.peak_gathered_bytes = t->engine().peak_gathered_bytes();
  }
  must_ok(comm->barrier(), "barrier");
  return cache.emplace(key, std::move(m)).first->second;
}

int64_t largest_block_unit(const PartitionPlan& p) {
  int64_t m = 0;
  for (size_t u = 1; u < p.units.size(); ++u) m = std::max(m, p.units[u].padded);
  return m;
}

double rel_diff(double measured, double expected) {
  return std::fabs(measured - expected) / expected;
}

// ---------------------------------------------------------------------------------------------
// Memory

struct MemoryModel {
  // The ZeRO formula, split by category, with Psi the unpadded parameter count.
  double params = 0, grads = 0, optim = 0;
  // The buffers the formula leaves out, which the engine holds by design (bytes, from the plan).
  double params_extra = 0, grads_extra = 0;
  std::string extras;  // what they are, for the report
};

MemoryModel memory_model(const Case& c, const PartitionPlan& plan) {
  const double psi = static_cast<double>(plan.layout.num_parameters);
  const double n = plan.world_size;
  const double d = kBf16;
  MemoryModel m;
  // Working weights and gradients in bf16 (full or 1/N), fp32 master + m + v (12 bytes, full or
  // 1/N).
  m.params = c.stage <= 2 ? d * psi : d * psi / n;
  m.grads = c.stage <= 1 ? d * psi : d * psi / n;
  m.optim = c.stage == 0 ? 12 * psi : 12 * psi / n;
  const double unit0 = static_cast<double>(plan.units[0].padded) * d;
  const double block = static_cast<double>(largest_block_unit(plan)) * d;
  if (c.stage == 1) {
    // The reduce-scatter's output: the rank's reduced gradient shard (2 Psi / N), beside the full
    // gradient buffer the backward accumulates into (MPI cannot reduce-scatter in place).
    m.grads_extra = static_cast<double>(plan.shard_total) * d;
    m.extras = "grads: reduced gradient shard 2Psi/N";
  }
  if (c.stage >= 2) {
    // Unit gradient buffers handed to the backward: the embedding unit's for the whole backward
    // (its gradient comes from the LM head first and the embeddings last), plus the block being
    // computed, plus with overlap_comm the block whose reduce-scatter is in flight.
    const int blocks = c.overlap ? 2 : 1;
    m.grads_extra = unit0 + blocks * block;
    m.extras = fmt::format("grads: unit-0 buffer + {} block unit buffer(s)", blocks);
  }
  if (c.stage == 3) {
    // Gathered units: the embedding unit for the whole micro-batch, the block in use and the one
    // prefetched (a window of one unit), plus any persistent bucket kept whole.
    double persistent = 0;
    for (const PlanBucket& b : plan.buckets)
      if (b.persistent) persistent += static_cast<double>(b.padded) * d;
    m.params_extra = unit0 + 2 * block + persistent;
    m.extras += "; params: gathered unit 0 + 2 block units (in use + prefetched)";
  }
  return m;
}

class ZeroMemory : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroMemory, ModelStatesPerRankFollowZeroFormulas) {
  if (world_size() != 4) GTEST_SKIP() << "the memory model is checked on 4 ranks (np4) only";
  const Case c = GetParam();
  const Measured& r = measure(c);
  const PartitionPlan& plan = r.plan;
  const MemoryModel m = memory_model(c, plan);
  const double psi = static_cast<double>(plan.layout.num_parameters);
  const double n = plan.world_size;
  ASSERT_GE(psi, 10e6);
  const double formula[4] = {16 * psi, 4 * psi + 12 * psi / n, 2 * psi + 14 * psi / n,
                             16 * psi / n};
  ASSERT_NEAR(m.params + m.grads + m.optim, formula[c.stage], 1.0);  // the split adds up

  for (size_t s = 0; s < r.steps.size(); ++s) {
    const MemorySnapshot& mem = r.steps[s].memory;
    const auto peak = [&](MemCategory cat) {
      return static_cast<double>(mem.peak[static_cast<size_t>(cat)]);
    };
    const double p = peak(MemCategory::kParameters), g = peak(MemCategory::kGradients),
                 o = peak(MemCategory::kOptimizerStates);
    const double want_p = m.params + m.params_extra, want_g = m.grads + m.grads_extra,
                 want_o = m.optim;
    const double total = p + g + o, want_total = want_p + want_g + want_o;
    if (world_rank() == 0)
      std::printf("  [%s step %zu] peak MB: params %.2f (expect %.2f), grads %.2f (%.2f), "
                  "optimizer %.2f (%.2f); total %.2f = %.3f Psi vs formula %.3f Psi + extras "
                  "%.3f Psi [%s]\n",
                  case_name(c).c_str(), s + 1, p / 1e6, want_p / 1e6, g / 1e6, want_g / 1e6,
                  o / 1e6, want_o / 1e6, total / 1e6, total / psi, formula[c.stage] / psi,
                  (m.params_extra + m.grads_extra) / psi, m.extras.c_str());
    const std::string at = fmt::format("{} step {}", case_name(c), s + 1);
    EXPECT_LT(rel_diff(p, want_p), 0.10) << at << ": parameters " << p << " vs " << want_p;
    EXPECT_LT(rel_diff(g, want_g), 0.10) << at << ": gradients " << g << " vs " << want_g;
    EXPECT_LT(rel_diff(o, want_o), 0.10) << at << ": optimizer states " << o << " vs " << want_o;
    EXPECT_LT(rel_diff(total, want_total), 0.10) << at << ": model states " << total << " vs "
                                                 << want_total;
  }
  if (c.stage == 3) {
    // The engine's own report of the live gathers: unit 0 + the block in use + the prefetched one.
    const double want = static_cast<double>(plan.units[0].padded + 2 * largest_block_unit(plan)) *
                        kBf16;
    EXPECT_LT(rel_diff(static_cast<double>(r.peak_gathered_bytes), want), 0.01)
        << "peak_gathered_bytes " << r.peak_gathered_bytes << " vs " << want;
  } else {
    EXPECT_EQ(r.peak_gathered_bytes, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Communication

class ZeroCommunication : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroCommunication, BytesPerRankPerStepFollowZeroFormulas) {
  const Case c = GetParam();
  const Measured& r = measure(c);
  const PartitionPlan& plan = r.plan;
  const double psi = static_cast<double>(plan.layout.num_parameters);
  const double n = plan.world_size;
  const double ring = (n - 1) / n;  // the counters already hold the ring's (N-1)/N factors
  const double psi_bytes = psi * kBf16 * ring;
  const auto kind = [](const CommStats& s, CollectiveKind k) {
    return static_cast<double>(s.bytes[static_cast<size_t>(k)]);
  };
  for (size_t s = 0; s < r.steps.size(); ++s) {
    const CommStats& st = r.steps[s].comm;
    const double ar = kind(st, CollectiveKind::kAllReduce),
                 rs = kind(st, CollectiveKind::kReduceScatter),
                 ag = kind(st, CollectiveKind::kAllGather),
                 bc = kind(st, CollectiveKind::kBroadcast);
    const double total = static_cast<double>(st.total_bytes());
    const double want_total = (c.stage == 3 ? 3 : 2) * psi_bytes;
    if (world_rank() == 0)
      std::printf("  [%s step %zu N=%d] bytes sent: all_reduce %.0f, reduce_scatter %.0f, "
                  "all_gather %.0f, broadcast %.0f; total %.0f = %.4f x Psi*2B*(N-1)/N "
                  "(formula %d)\n",
                  case_name(c).c_str(), s + 1, plan.world_size, ar, rs, ag, bc, total,
                  total / psi_bytes, c.stage == 3 ? 3 : 2);
    const std::string at = fmt::format("{} step {}", case_name(c), s + 1);
    // 2% covers the bucket padding (< 0.01% here), the scalar all-reduces (loss: 4 bytes, grad
    // norm and overflow flag: 8) and, at stage 3, the embedding unit (1% of Psi) that stays
    // gathered from forward to backward and so is not gathered a second time.
    EXPECT_LT(rel_diff(total, want_total), 0.02) << at << ": total " << total << " vs "
                                                 << want_total;
    EXPECT_EQ(bc, 0) << at;
    if (c.stage == 0) {
      EXPECT_LT(rel_diff(ar, 2 * psi_bytes), 0.01) << at << ": all-reduce of the gradients";
      EXPECT_EQ(rs, 0) << at;
      EXPECT_EQ(ag, 0) << at;
    } else {
      // Only scalars are all-reduced (loss; grad sum of squares and overflow count).
      EXPECT_LE(ar, 64) << at;
      EXPECT_LT(rel_diff(rs, psi_bytes), 0.01) << at << ": reduce-scatter of the gradients";
      EXPECT_LT(rel_diff(ag, (c.stage == 3 ? 2 : 1) * psi_bytes), 0.02)
          << at << ": all-gather of the parameters";
    }
  }
}

const std::vector<Case> kCases = {{0, false}, {1, false}, {2, false},
                                  {3, false}, {2, true},  {3, true}};
const auto kName = [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); };

INSTANTIATE_TEST_SUITE_P(Stages, ZeroMemory, ::testing::ValuesIn(kCases), kName);
INSTANTIATE_TEST_SUITE_P(Stages, ZeroCommunication,
                         ::testing::Values(Case{0, false}, Case{1, false}, Case{2, false},
                                           Case{3, false}),
                         kName);

}  // namespace
}  // namespace zt
