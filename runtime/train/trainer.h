// Trainer: one rank's training step — micro-batches with gradient accumulation, mixed precision
// (16-bit working weights, activations and gradients; fp32 master weights), fp16 dynamic loss
// scaling, global-norm clipping, AdamW and the learning-rate schedule. Single-rank (ZeRO stage 0
// on a world of one); the ZeRO engine generalises the parameter/gradient/state handling across
// ranks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/config/job_config.h"
#include "runtime/data/data_loader.h"
#include "runtime/memory/memory_tracker.h"
#include "runtime/model/gpt2.h"
#include "runtime/optim/loss_scaler.h"

namespace zt {

struct StepResult {
  int64_t step = 0;          // 1-based optimizer step
  double loss = 0.0;         // mean cross-entropy over every target token of the global batch
  double lr = 0.0;           // learning rate of this step
  double grad_norm = 0.0;    // global L2 norm of the (unscaled) gradient, before clipping
  double loss_scale = 1.0;   // fp16 loss scale used for this step (1 otherwise)
  bool skipped = false;      // fp16 overflow: the update was not applied
  int64_t tokens = 0;        // target tokens in the global batch
  double step_ms = 0.0;
  double tokens_per_s = 0.0;
  MemorySnapshot memory;     // this rank's current/peak bytes per category during the step
};

class Trainer {
 public:
  // Builds the model, allocates and initialises the state (from model.seed, or model.init_from),
  // opens the data. cfg must have its batch sizes resolved for a world of one.
  static Result<std::unique_ptr<Trainer>> create(const JobConfig& cfg, Backend& backend);
  ~Trainer();

  // Runs optimizer step number completed_steps()+1.
  Result<StepResult> step();
  int64_t completed_steps() const { return step_; }

  // Mean loss of the global batch of `step_index` (0-based) without updating anything.
  double evaluate(int64_t step_index);

  // fp32 master weights, flat in the model's layout (the working weights when training in fp32).
  Tensor master_weights() const;
  const ParamLayout& layout() const { return model_->layout(); }
  Gpt2Model& model() { return *model_; }
  Tensor grads() const { return grads_; }
  DType dtype() const { return dtype_; }

  // Writes the current weights as a Hugging Face GPT-2 safetensors file.
  Status export_safetensors(const std::string& path, DType dtype) const;

  // Stops after the micro-batches' backward; for tests of gradients (fills grads(), no update).
  // Returns the mean loss.
  double compute_gradients(int64_t step_index, double loss_scale = 1.0);

 private:
  Trainer(const JobConfig& cfg, Backend& backend);
  Status init();
  void sync_working_from_master();

  JobConfig cfg_;
  Backend& backend_;
  DType dtype_ = DType::kF32;
  std::unique_ptr<Gpt2Model> model_;
  std::unique_ptr<DataLoader> data_;
  LossScaler scaler_;
  Buffer params_buf_, grads_buf_, master_buf_, m_buf_, v_buf_;
  Tensor params_, grads_, master_, m_, v_;
  std::vector<int32_t> inputs_, targets_;
  // Contiguous ranges of the flat buffer with one weight-decay class: {offset, count, decay}.
  struct DecaySpan {
    int64_t offset, count;
    bool decay;
  };
  std::vector<DecaySpan> spans_;
  int64_t step_ = 0;          // optimizer steps run (skipped ones included)
  int64_t applied_steps_ = 0; // optimizer steps applied (AdamW's t, the scheduler's position)
};

}  // namespace zt
