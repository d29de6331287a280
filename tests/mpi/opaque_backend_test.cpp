// The runtime on a backend whose memory the host cannot dereference
// (tests/support/opaque_backend.h, standing in for GPU memory): training on it under MPI gives, bit
// for bit, what the CPU backend gives — losses, gradient norms and master weights — at ZeRO stages
// 0-3, with the optimizer state in device memory, offloaded to host memory or to NVMe, stage-3
// parameters offloaded, in fp32 and bf16, for AdamW, AdamW8bit, Adafactor, SGD and Lion (Note
// [device memory] in zero_engine.h). A checkpoint written from the opaque backend resumes, on the
// opaque backend and on the CPU backend, into the CPU backend's own uninterrupted continuation.
//
// Any host load or store through the opaque backend's memory faults, its ops and the communicator
// wrapped around MPI refuse host pointers (a CheckError aborts the job), so a path that still
// assumes host memory cannot pass. Every rank compares its own runs; the collectives are the
// world's.
#include <cstring>
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
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"
#include "tests/mpi/mpi_test_util.h"
#include "tests/support/opaque_backend.h"

namespace zt {
namespace {

using testing::must;
using testing::must_ok;
using testing::SharedTempDir;
using testing::world_barrier;
using testing::world_rank;
using testing::world_size;

// A small model (vocab 64, block 16, 2 layers, n_embd 32, 2 heads): large enough for several store
// chunks of 4096 elements, 8-bit blocks and factored Adafactor moments, small enough to run the
// whole matrix in seconds.
constexpr int kLayers = 2, kEmbd = 32, kHeads = 2, kBlock = 16, kVocab = 64, kMicro = 2;
constexpr int kSteps = 3;
// Stage 3: a prefetch window of one block unit and persistent small buckets (the embedding unit).
constexpr int64_t kPrefetchOneBlock = 12800;
constexpr int64_t kPersistenceThreshold = 3000;

struct Case {
  int stage = 0;
  OffloadDevice offload = OffloadDevice::kNone;
  bool bf16 = false;
  std::string optimizer = "AdamW";
  OffloadDevice offload_param = OffloadDevice::kNone;  // stage 3
  int accumulation = 1;
  bool overlap = false;
};

const char* device_name(OffloadDevice d) {
  return d == OffloadDevice::kCpu ? "cpu" : d == OffloadDevice::kNvme ? "nvme" : "none";
}
std::string case_name(const Case& c) {
  std::string s = fmt::format("stage{}_off{}_{}_{}", c.stage, device_name(c.offload),
                              c.bf16 ? "bf16" : "fp32", c.optimizer);
  if (c.offload_param != OffloadDevice::kNone)
    s += fmt::format("_param{}", device_name(c.offload_param));
  if (c.accumulation > 1) s += fmt::format("_acc{}", c.accumulation);
  if (c.overlap) s += "_overlap";
  return s;
}
void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

struct Files {
  std::string data, nvme;
};

JobConfig make_cfg(const Files& f, const Case& c, bool opaque) {
  JobConfig cfg =
      testing::small_job(f.data, kLayers, kEmbd, kHeads, kBlock, kVocab, kMicro, c.accumulation);
  cfg.train_batch_size = static_cast<int64_t>(kMicro) * c.accumulation * world_size();
  cfg.backend = opaque ? BackendKind::kCuda : BackendKind::kCpu;  // the opaque backend's kind
  cfg.bf16.enabled = c.bf16;
  cfg.zero.stage = c.stage;
  cfg.zero.overlap_comm = c.overlap;
  cfg.zero.stage3_prefetch_bucket_size = kPrefetchOneBlock;
  cfg.zero.stage3_param_persistence_threshold = kPersistenceThreshold;
  testing::use_optimizer(cfg, c.optimizer);
  OffloadConfig& off = cfg.zero.offload_optimizer;
  off.device = c.offload;
  if (c.offload == OffloadDevice::kNvme) {
    off.nvme_path = f.nvme;
    off.buffer_size = 4096;  // several chunks, cutting parameters
    off.buffer_count = 3;
  }
  OffloadConfig& offp = cfg.zero.offload_param;
  offp.device = c.offload_param;
  if (c.offload_param == OffloadDevice::kNvme) {
    offp.nvme_path = f.nvme;
    offp.buffer_size = 4096;
    offp.buffer_count = 3;
  }
  return cfg;
}

// One rank's trainer on the CPU or the opaque backend, with what it needs kept alive.
struct Rank {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;  // the opaque wrapper around the world's communicator
  std::unique_ptr<Trainer> trainer;
};
Rank make_rank(const JobConfig& cfg, bool opaque, Communicator& world) {
  Rank r;
  r.backend = opaque ? testing::make_opaque_backend() : make_cpu_backend();
  Communicator* comm = &world;
  if (opaque) {
    r.comm = testing::make_opaque_communicator(world);
    comm = r.comm.get();
  }
  r.trainer = must(Trainer::create(cfg, *r.backend, *comm), "Trainer::create");
  return r;
}

struct TrainRun {
  std::vector<StepResult> steps;
  std::vector<float> w;  // master weights after the last step
};

// A host dereference of opaque memory dies by signal; a host pointer handed to a device op or to
// the collectives throws: abort the whole job rather than leave the other ranks waiting.
template <typename F>
void guarded(const std::string& what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    must_ok(make_error(StatusCode::kInternal, "{}", e.what()), what);
  }
}

void train(Rank& r, int steps, TrainRun* out) {
  for (int s = 0; s < steps; ++s)
    out->steps.push_back(
        must(r.trainer->step(), fmt::format("step {}", r.trainer->completed_steps() + 1)));
  out->w = must(r.trainer->master_weights(), "master_weights");
}

void expect_same(const TrainRun& cpu, const TrainRun& opq, const std::string& what) {
  ASSERT_EQ(cpu.steps.size(), opq.steps.size()) << what;
  for (size_t i = 0; i < cpu.steps.size(); ++i) {
    EXPECT_EQ(cpu.steps[i].step, opq.steps[i].step) << what;
    EXPECT_EQ(cpu.steps[i].loss, opq.steps[i].loss) << what << ", step " << cpu.steps[i].step;
    EXPECT_EQ(cpu.steps[i].grad_norm, opq.steps[i].grad_norm)
        << what << ", step " << cpu.steps[i].step;
  }
  ASSERT_EQ(cpu.w.size(), opq.w.size()) << what;
  size_t diff = 0;
  for (size_t i = 0; i < cpu.w.size(); ++i)
    if (std::memcmp(&cpu.w[i], &opq.w[i], sizeof(float)) != 0) ++diff;
  EXPECT_EQ(diff, 0u) << what << ": master weights differ in " << diff << " of " << cpu.w.size()
                      << " elements";
}

class OpaqueBackend : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    files_.data = dir_.file("tokens.bin");
    files_.nvme = dir_.file("nvme");
    if (world_rank() == 0) {
      std::filesystem::create_directories(files_.nvme);
      testing::write_llmc_tokens(files_.data, testing::patterned_tokens(8192, kVocab, 7));
    }
    world_barrier();
    world_ = must(make_mpi_communicator(MPI_COMM_WORLD), "make_mpi_communicator");
  }
  void TearDown() override {
    world_.reset();
    world_barrier();
  }

  SharedTempDir dir_;
  Files files_;
  std::unique_ptr<Communicator> world_;
};

// ---- 1. training equals the CPU backend's, bit for bit ----

class Equivalence : public OpaqueBackend {};

TEST_P(Equivalence, StepsAndMasterWeightsMatchTheCpuBackend) {
  const Case c = GetParam();
  TrainRun cpu, opq;
  guarded("cpu run", [&] {
    Rank r = make_rank(make_cfg(files_, c, false), false, *world_);
    train(r, kSteps, &cpu);
  });
  guarded("opaque run", [&] {
    Rank r = make_rank(make_cfg(files_, c, true), true, *world_);
    EXPECT_FALSE(r.backend->host_accessible());
    train(r, kSteps, &opq);
  });
  expect_same(cpu, opq, case_name(c));
}

std::vector<Case> equivalence_cases() {
  std::vector<Case> cases;
  const char* optimizers[] = {"AdamW", "AdamW8bit", "Adafactor", "SGD", "Lion"};
  const OffloadDevice offloads[] = {OffloadDevice::kNone, OffloadDevice::kCpu,
                                    OffloadDevice::kNvme};
  for (int stage = 0; stage <= 3; ++stage)
    for (OffloadDevice off : offloads)
      for (const char* opt : optimizers)
        for (bool bf16 : {false, true}) cases.push_back({stage, off, bf16, opt});
  // Stage-3 parameter offload (its shard in host memory or on NVMe, staged into device buffers
  // for the gathers), gradient accumulation with overlapped reductions.
  for (OffloadDevice p : {OffloadDevice::kCpu, OffloadDevice::kNvme})
    for (bool bf16 : {false, true}) {
      cases.push_back({3, OffloadDevice::kNone, bf16, "AdamW", p});
      cases.push_back({3, OffloadDevice::kCpu, bf16, "Adafactor", p});
    }
  cases.push_back({2, OffloadDevice::kCpu, true, "AdamW", OffloadDevice::kNone, 2, true});
  cases.push_back({3, OffloadDevice::kNone, true, "AdamW8bit", OffloadDevice::kNone, 2, true});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, Equivalence, ::testing::ValuesIn(equivalence_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return case_name(i.param);
                         });

// ---- 2. a checkpoint written from the opaque backend resumes into the CPU continuation ----

class Resume : public OpaqueBackend {};

TEST_P(Resume, OpaqueCheckpointContinuesLikeTheCpuBackend) {
  const Case c = GetParam();
  constexpr int kBefore = 2, kAfter = 2;
  const JobConfig cpu_cfg = make_cfg(files_, c, false), opq_cfg = make_cfg(files_, c, true);
  TrainRun ref;  // the CPU backend, uninterrupted
  guarded("cpu run", [&] {
    Rank r = make_rank(cpu_cfg, false, *world_);
    train(r, kBefore + kAfter, &ref);
  });
  ref.steps.erase(ref.steps.begin(), ref.steps.begin() + kBefore);
  // Checkpoints after steps 1 and 2: a copied snapshot (even step) and a view (odd step), which
  // the opaque backend must turn into copies (its state is not host memory).
  std::string dir;
  guarded("opaque writer", [&] {
    Rank r = make_rank(opq_cfg, true, *world_);
    TrainRun before;
    train(r, 1, &before);
    (void)testing::save_checkpoint(*r.trainer, opq_cfg, MPI_COMM_WORLD,
                                   checkpoints_root(dir_.file("odd")));
    train(r, kBefore - 1, &before);
    dir = testing::save_checkpoint(*r.trainer, opq_cfg, MPI_COMM_WORLD,
                                   checkpoints_root(dir_.file("even")));
  });
  const Manifest m = must(read_manifest(dir), "read_manifest");
  for (bool opaque : {true, false}) {
    TrainRun after;
    guarded(opaque ? "opaque resume" : "cpu resume", [&] {
      Rank r = make_rank(opaque ? opq_cfg : cpu_cfg, opaque, *world_);
      must_ok(r.trainer->restore(dir, m), "restore");
      train(r, kAfter, &after);
    });
    expect_same(
        ref, after,
        fmt::format("{} resumed on the {} backend", case_name(c), opaque ? "opaque" : "cpu"));
  }
  // The odd-step checkpoint (a view snapshot) resumes too.
  const std::string odd = checkpoints_root(dir_.file("odd")) + "/" + checkpoint_dir_name(1);
  TrainRun after_odd;
  guarded("opaque resume (odd)", [&] {
    Rank r = make_rank(opq_cfg, true, *world_);
    must_ok(r.trainer->restore(odd, must(read_manifest(odd), "read_manifest")), "restore");
    train(r, kBefore - 1 + kAfter, &after_odd);
  });
  after_odd.steps.erase(after_odd.steps.begin(), after_odd.steps.begin() + (kBefore - 1));
  expect_same(ref, after_odd, case_name(c) + " resumed from the view snapshot");
}

std::vector<Case> resume_cases() {
  return {
      {0, OffloadDevice::kNone, false, "AdamW"},
      {1, OffloadDevice::kCpu, true, "AdamW"},
      {2, OffloadDevice::kNvme, false, "AdamW8bit"},
      {3, OffloadDevice::kNone, true, "AdamW8bit"},
      {0, OffloadDevice::kCpu, true, "Adafactor"},
      {3, OffloadDevice::kNone, false, "Adafactor"},
      {2, OffloadDevice::kNone, true, "Adafactor"},
      {1, OffloadDevice::kNone, false, "SGD"},
      {3, OffloadDevice::kNvme, true, "SGD"},
      {2, OffloadDevice::kCpu, false, "Lion"},
      {3, OffloadDevice::kNone, true, "Lion", OffloadDevice::kCpu},
  };
}

INSTANTIATE_TEST_SUITE_P(Matrix, Resume, ::testing::ValuesIn(resume_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return case_name(i.param);
                         });

}  // namespace
}  // namespace zt
