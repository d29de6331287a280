// Trainer: one rank's training loop step — micro-batches with gradient accumulation, mixed
// precision (16-bit working weights, activations and gradients; fp32 master weights), fp16 dynamic
// loss scaling, global-norm clipping, AdamW and the learning-rate schedule — on top of the ZeRO
// engine, which owns the model state and its collectives. Every rank of the job runs the same
// Trainer calls in the same order; losses, norms and overflow flags are global (reduced over
// ranks) and identical everywhere.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/shard_io.h"
#include "runtime/comm/communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/data/data_loader.h"
#include "runtime/memory/memory_tracker.h"
#include "runtime/model/gpt2.h"
#include "runtime/optim/loss_scaler.h"
#include "runtime/profile/step_profile.h"
#include "runtime/zero/zero_engine.h"

namespace zt {

struct StepResult {
  int64_t step = 0;         // 1-based optimizer step
  double loss = 0.0;        // mean cross-entropy over every target token of the global batch
  double lr = 0.0;          // learning rate of this step
  double grad_norm = 0.0;   // global L2 norm of the (unscaled) gradient, before clipping
  double loss_scale = 1.0;  // fp16 loss scale used for this step (1 otherwise)
  bool skipped = false;     // fp16 overflow: the update was not applied
  int64_t tokens = 0;       // target tokens in the global batch
  double step_ms = 0.0;
  double tokens_per_s = 0.0;
  double checkpoint_ms = 0.0;  // training blocked by a checkpoint taken after this step
  MemorySnapshot memory;       // this rank's current/peak bytes per category during the step
  // Offloaded optimizer state (offload_optimizer cpu/nvme; 0 otherwise): bytes in host memory (the
  // arrays, or nvme's streaming buffers) and in the NVMe file. Not in `memory`, which is the
  // device's.
  int64_t offload_resident_bytes = 0, offload_disk_bytes = 0;
  CommStats comm;  // this rank's collectives during the step
  // Note [step profile] (runtime/profile/step_profile.h): this rank's step_ms split exclusively
  // over the phases (they add up to step_ms), the part of the step that set each peak of `memory`
  // ("forward block 3", "start of step", ...), and — when recorded (Trainer::set_memory_timeline)
  // — the memory timeline, in the order the parts ended.
  StepTimes time_ms{};
  std::array<std::string, kNumMemCategories> peak_phase;
  std::string total_peak_phase;
  std::vector<MemoryPhaseRecord> memory_timeline;
};

class Trainer {
 public:
  // Builds the partition plan, the model and the ZeRO engine, initialises the weights (from
  // model.seed, or model.init_from), opens the data. cfg's batch sizes must be resolved for
  // comm.world_size() ranks. `comm` must outlive the trainer.
  static Result<std::unique_ptr<Trainer>> create(const JobConfig& cfg, Backend& backend,
                                                 Communicator& comm);
  // A world of one, without MPI.
  static Result<std::unique_ptr<Trainer>> create(const JobConfig& cfg, Backend& backend);
  ~Trainer();

  // Runs optimizer step number completed_steps()+1. Collective.
  Result<StepResult> step();
  // Whether the following steps record the memory timeline (on by default). It costs a snapshot
  // of the tracker per block and pass; off, StepResult::memory_timeline stays empty.
  void set_memory_timeline(bool on) { memory_timeline_ = on; }
  int64_t completed_steps() const { return step_; }

  // Mean loss of the global batch of `step_index` (0-based), nothing updated. Collective.
  Result<double> evaluate(int64_t step_index);

  // Forward and backward of the global batch of `step_index` with loss scale `loss_scale`,
  // leaving the reduced gradients in the engine (full_grads() at stages 0-1); no update.
  // Returns the global mean loss. Collective; for tests.
  Result<double> compute_gradients(int64_t step_index, double loss_scale = 1.0);

  // The full fp32 master weights in layout() order. Collective.
  Result<std::vector<float>> master_weights();
  const ParamLayout& layout() const { return engine_->plan().layout; }
  const PartitionPlan& plan() const { return engine_->plan(); }
  Gpt2Model& model() { return *model_; }
  ZeroEngine& engine() { return *engine_; }
  Tensor grads() const { return engine_->full_grads(); }
  DType dtype() const { return dtype_; }
  Communicator& comm() { return comm_; }

  // Writes the weights as a Hugging Face GPT-2 safetensors file (rank 0 writes). Collective.
  Status export_safetensors(const std::string& path, DType dtype);

  // ---- checkpoints (runtime/checkpoint/) ----
  // Where training stands after completed_steps(): step counters, loss scaler, data position.
  TrainerState state() const;
  // This rank's checkpoint pieces of the optimizer state (not collective): a copy, to write with
  // write_shard() while training goes on (`reuse`: a previous snapshot's buffer), or with
  // copy = false a view to write before the next step.
  Result<ShardSnapshot> snapshot_shard(bool copy = true, Buffer reuse = {});
  // Continues from the checkpoint in `dir` (its manifest `m`, already checked against this job's
  // config): loads the optimizer state this rank holds under its own plan, whatever the world size
  // and stage that wrote it, and the step counters, loss scaler and data position. Collective.
  Status restore(const std::string& dir, const Manifest& m);

 private:
  Trainer(const JobConfig& cfg, Backend& backend, Communicator& comm);
  Status init();
  Result<double> run_micro_batches(int64_t step_index, double loss_scale, bool backward);
  Result<StepResult> step_impl();

  JobConfig cfg_;
  Backend& backend_;
  Communicator& comm_;
  std::unique_ptr<Communicator> owned_comm_;
  DType dtype_ = DType::kF32;
  std::unique_ptr<ZeroEngine> engine_;
  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<DataLoader> data_;
  LossScaler scaler_;
  Buffer scalar_buf_;                      // one fp32 for reducing the loss (backend memory)
  std::vector<int32_t> inputs_, targets_;  // host memory; the model stages them
  // The global sequence step s starts at is data_base_sequence_ + (s - data_base_step_) * G: s * G
  // for a fresh job; after a resume with another train_batch_size, the data continues where the
  // checkpoint left it.
  int64_t first_sequence(int64_t step_index) const;
  int64_t data_base_step_ = 0, data_base_sequence_ = 0;
  int64_t step_ = 0;           // optimizer steps run (skipped ones included)
  int64_t applied_steps_ = 0;  // optimizer steps applied (AdamW's t, the scheduler's position)
  bool memory_timeline_ = true;
};

}  // namespace zt
