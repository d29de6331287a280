// The whole training step on the CUDA backend against the CPU backend (the reference), through
// the real Trainer, ZeRO engine, optimizers and offload, with the NCCL communicator (a world of
// one: one GPU). The two backends sum in different orders, so results agree within the dtype's
// rounding, step after step:
//   - the model's step, fp32 and bf16, stage 0;
//   - ZeRO stages 1-3 on the NCCL communicator against stage 0 on the same backend (one rank: the
//     same math through other code paths, so within fp32 rounding);
//   - every optimizer with its state in device memory, and AdamW with the state offloaded to
//     pinned host memory and to NVMe (the update then runs on the host: CPU kernels on staged
//     gradients).
// Without a device every test skips, saying why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "runtime/comm/nccl/nccl_communicator.h"
#include "runtime/train/trainer.h"
#include "tests/cpu/test_util.h"
#include "tests/cuda/cuda_test_util.h"

namespace zt {
namespace {

struct TrainResult {
  std::vector<double> loss, grad_norm;
  std::vector<float> w;
};

constexpr int kSteps = 5;

TrainResult train_on(const JobConfig& cfg, Backend& backend, Communicator* comm) {
  auto t = comm ? Trainer::create(cfg, backend, *comm) : Trainer::create(cfg, backend);
  if (!t.is_ok()) throw StatusError(t.status());
  TrainResult r;
  for (int s = 0; s < kSteps; ++s) {
    auto step = (*t)->step();
    if (!step.is_ok()) throw StatusError(step.status());
    r.loss.push_back(step->loss);
    r.grad_norm.push_back(step->grad_norm);
  }
  auto w = (*t)->master_weights();
  if (!w.is_ok()) throw StatusError(w.status());
  r.w = std::move(w).value();
  return r;
}

class CudaTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    ZT_REQUIRE_CUDA_DEVICE();
    testing::write_llmc_tokens(dir_.file("data.tok"), testing::patterned_tokens(1 << 14, 64));
  }
  JobConfig config(bool bf16) const {
    JobConfig c = testing::small_job(dir_.file("data.tok"), 2, 64, 2, 32, 64, 4, 2);
    c.bf16.enabled = bf16;
    return c;
  }
  TrainResult cpu_run(JobConfig cfg) {
    cfg.backend = BackendKind::kCpu;
    auto be = make_cpu_backend();
    return train_on(cfg, *be, nullptr);
  }
  TrainResult cuda_run(JobConfig cfg) {
    cfg.backend = BackendKind::kCuda;
    auto be = CudaBackend::create(CudaBackendOptions{});
    if (!be.is_ok()) throw StatusError(be.status());
    NcclOptions o;
    o.compute_stream = (*be)->stream();
    auto comm = make_nccl_communicator(o);
    if (!comm.is_ok()) throw StatusError(comm.status());
    return train_on(cfg, **be, comm->get());
  }
  // Losses and gradient norms within `rtol`, master weights within `wtol` of max |w|.
  static void expect_close(const TrainResult& want, const TrainResult& got, double rtol,
                           double wtol, const std::string& what) {
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(got.loss[s], want.loss[s], rtol * want.loss[s]) << what << " step " << s + 1;
      EXPECT_NEAR(got.grad_norm[s], want.grad_norm[s], rtol * want.grad_norm[s] + 1e-6)
          << what << " step " << s + 1;
    }
    ASSERT_EQ(got.w.size(), want.w.size()) << what;
    float max_w = 0.0f, max_err = 0.0f;
    for (size_t i = 0; i < want.w.size(); ++i) {
      max_w = std::max(max_w, std::fabs(want.w[i]));
      max_err = std::max(max_err, std::fabs(want.w[i] - got.w[i]));
    }
    EXPECT_LE(max_err, wtol * max_w) << what << ": master weights differ by " << max_err;
  }

  testing::TempDir dir_;
};

TEST_F(CudaTraining, StepMatchesCpuBackendFp32) {
  const JobConfig cfg = config(false);
  expect_close(cpu_run(cfg), cuda_run(cfg), 1e-4, 1e-4, "fp32");
}

TEST_F(CudaTraining, StepMatchesCpuBackendBf16) {
  const JobConfig cfg = config(true);
  // bf16 activations round to 8 bits of mantissa and the backends round at different places.
  expect_close(cpu_run(cfg), cuda_run(cfg), 2e-2, 2e-2, "bf16");
}

TEST_F(CudaTraining, ZeroStagesMatchStageZeroOnOneGpu) {
  JobConfig cfg = config(false);
  const TrainResult ref = cuda_run(cfg);
  for (int stage = 1; stage <= 3; ++stage) {
    cfg.zero.stage = stage;
    cfg.zero.overlap_comm = stage >= 2;
    expect_close(ref, cuda_run(cfg), 1e-5, 1e-5, fmt::format("stage {}", stage));
  }
}

TEST_F(CudaTraining, OptimizersMatchCpuBackend) {
  for (const char* type : {"AdamW8bit", "Adafactor", "SGD", "Lion"}) {
    JobConfig cfg = config(false);
    cfg.optimizer = OptimizerConfig::defaults_for(type);
    cfg.optimizer.type = type;
    if (std::string(type) == "SGD") cfg.optimizer.lr = 1e-2f;
    if (std::string(type) == "Lion") cfg.optimizer.lr = 1e-4f;
    if (std::string(type) == "Adafactor") {
      cfg.optimizer.relative_step = false;
      cfg.optimizer.lr = 1e-3f;
    }
    cfg.zero.stage = 2;
    expect_close(cpu_run(cfg), cuda_run(cfg), 1e-3, 1e-3, type);
  }
}

TEST_F(CudaTraining, OffloadedStateMatchesDeviceState) {
  JobConfig cfg = config(false);
  cfg.zero.stage = 2;
  const TrainResult device_state = cuda_run(cfg);
  for (OffloadDevice d : {OffloadDevice::kCpu, OffloadDevice::kNvme}) {
    cfg.zero.offload_optimizer.device = d;
    cfg.zero.offload_optimizer.nvme_path = dir_.path();
    expect_close(device_state, cuda_run(cfg), 1e-4, 1e-4,
                 d == OffloadDevice::kCpu ? "offload cpu" : "offload nvme");
  }
}

}  // namespace
}  // namespace zt
