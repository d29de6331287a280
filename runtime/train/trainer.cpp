#include "runtime/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "runtime/comm/local_communicator.h"
#include "runtime/model/gpt2_hf.h"
#include "runtime/optim/lr_schedule.h"

namespace zt {

Trainer::Trainer(const JobConfig& cfg, Backend& backend, Communicator& comm)
    : cfg_(cfg), backend_(backend), comm_(comm), scaler_(cfg.fp16) {
  if (cfg.bf16.enabled) dtype_ = DType::kBF16;
  if (cfg.fp16.enabled) dtype_ = DType::kF16;
}

Trainer::~Trainer() = default;

Result<std::unique_ptr<Trainer>> Trainer::create(const JobConfig& cfg, Backend& backend,
                                                 Communicator& comm) {
  std::unique_ptr<Trainer> t(new Trainer(cfg, backend, comm));
  ZT_RETURN_IF_ERROR(t->init());
  return t;
}

Result<std::unique_ptr<Trainer>> Trainer::create(const JobConfig& cfg, Backend& backend) {
  auto comm = make_local_communicator(&backend);
  std::unique_ptr<Trainer> t(new Trainer(cfg, backend, *comm));
  t->owned_comm_ = std::move(comm);
  ZT_RETURN_IF_ERROR(t->init());
  return t;
}

Status Trainer::init() {
  // Nothing falls back silently: the config's backend must be the one this worker runs.
  const BackendKind runs =
      backend_.kind() == DeviceKind::kCuda ? BackendKind::kCuda : BackendKind::kCpu;
  if (cfg_.backend != runs) {
    auto name = [](BackendKind k) { return k == BackendKind::kCuda ? "cuda" : "cpu"; };
    return make_error(StatusCode::kInvalidArgument,
                      "config says backend: {} but this worker runs the {} backend ({})",
                      name(cfg_.backend), name(runs), backend_.name());
  }
  // `auto` is the coordinator's to resolve (runtime/plan/auto_plan.h): running it as parsed would
  // silently train stage 0 without checkpointing.
  if (cfg_.autos.any())
    return make_error(StatusCode::kInvalidArgument,
                      "the config leaves {} to `auto`, which zt-coordinator resolves when the "
                      "workers register; run under a coordinator, or give the value",
                      cfg_.autos.stage         ? "zero_optimization.stage"
                      : cfg_.autos.micro_batch ? "train_micro_batch_size_per_gpu"
                                               : "activation_checkpointing.policy");
  const int64_t W = comm_.world_size();
  if (cfg_.train_micro_batch_size_per_gpu <= 0 || cfg_.gradient_accumulation_steps <= 0 ||
      cfg_.train_batch_size !=
          cfg_.train_micro_batch_size_per_gpu * cfg_.gradient_accumulation_steps * W)
    return make_error(StatusCode::kInvalidArgument,
                      "batch sizes not resolved for {} workers: train_batch_size {} != micro {} x "
                      "accumulation {} x {}",
                      W, cfg_.train_batch_size, cfg_.train_micro_batch_size_per_gpu,
                      cfg_.gradient_accumulation_steps, W);
  const int B = static_cast<int>(cfg_.train_micro_batch_size_per_gpu);
  const int T = cfg_.model.block_size;
  comm_.set_timeout(std::chrono::milliseconds(static_cast<int64_t>(cfg_.comm.timeout_s * 1000.0)));

  ZT_ASSIGN_OR_RETURN(PartitionPlan plan,
                      make_partition_plan(cfg_.model, cfg_.zero, comm_.world_size()));
  std::vector<int64_t> unit_offsets;
  for (const PlanUnit& u : plan.units) unit_offsets.push_back(u.offset);
  ZT_ASSIGN_OR_RETURN(model_, Gpt2Model::create(backend_, cfg_.model, cfg_.activation_checkpointing,
                                                dtype_, B, T, plan.layout, unit_offsets));
  ZT_ASSIGN_OR_RETURN(engine_, ZeroEngine::create(cfg_, std::move(plan), backend_, comm_, dtype_));
  model_->set_hooks(engine_.get());
  ZT_ASSIGN_OR_RETURN(DataLoader loader, DataLoader::open(cfg_.data, cfg_.model));
  data_ = std::make_unique<DataLoader>(std::move(loader));
  ZT_ASSIGN_OR_RETURN(scalar_buf_, backend_.allocate(sizeof(float), MemCategory::kCommunication));
  ZT_RETURN_IF_ERROR(engine_->init_weights());
  const size_t tokens = static_cast<size_t>(B) * static_cast<size_t>(T);
  inputs_.resize(tokens);
  targets_.resize(tokens);
  return Status::ok();
}

// The global batch of step s is sequences s*G ... s*G+G-1; rank r takes, in micro-step a, the B
// sequences starting at s*G + (a*W + r)*B (DESIGN.md: the split must not change the step).
Result<double> Trainer::run_micro_batches(int64_t step_index, double loss_scale, bool backward) {
  const int B = static_cast<int>(cfg_.train_micro_batch_size_per_gpu);
  const int64_t G = cfg_.train_batch_size, T = cfg_.model.block_size;
  // Note [sequence-length warm-up]: a step at a shorter length trains r = T / len times as many
  // sequences of len tokens: the same tokens, so the loss normalisation and data position hold.
  // evaluate() measures at full length, so its losses compare across the warm-up.
  const int len = backward ? seq_len_at(cfg_, step_index + 1) : static_cast<int>(T);
  const int64_t pieces = T / len;
  ZT_RETURN_IF_ERROR(model_->set_sequence(static_cast<int>(B * pieces), len));
  const int64_t W = comm_.world_size(), r = comm_.rank();
  const int64_t A = cfg_.gradient_accumulation_steps;
  const float dloss = static_cast<float>(loss_scale / static_cast<double>(G * T));
  double loss_sum = 0.0;
  StepProfile* profile = current_step_profile();
  try {
    if (backward) engine_->zero_grads();
    for (int64_t a = 0; a < A; ++a) {
      if (profile) profile->set_micro_batch(static_cast<int>(a));
      data_->fill_pieces((first_sequence(step_index) + (a * W + r) * B) * pieces,
                         static_cast<int>(B * pieces), len, inputs_.data(), targets_.data());
      if (backward) {
        engine_->begin_micro_batch(a + 1 == A);
        loss_sum += model_->forward_backward(inputs_.data(), targets_.data(), dloss);
      } else {
        loss_sum += model_->forward_loss(inputs_.data(), targets_.data());
      }
    }
  } catch (const StatusError& e) {
    return e.status();
  }
  if (profile) profile->set_micro_batch(-1);
  // The tail of the backward: the reductions still in flight, and the loss.
  ScopedProfilePhase reduction(StepPhase::kBackward, MemPhaseKind::kGradReduction);
  if (backward) ZT_RETURN_IF_ERROR(engine_->finish_backward());
  // The loss of the step is global: sum the ranks' partial sums. The collective works on backend
  // memory (device memory for NCCL), which the host reaches through copies.
  float v = static_cast<float>(loss_sum / static_cast<double>(G * T));
  backend_.copy(scalar_buf_.data(), &v, sizeof(v));
  {
    ScopedStepPhase wait(StepPhase::kCommWait);
    ZT_RETURN_IF_ERROR(comm_.all_reduce(scalar_buf_.as(DType::kF32, {1})));
  }
  backend_.copy(&v, scalar_buf_.data(), sizeof(v));
  return static_cast<double>(v);
}

int64_t Trainer::first_sequence(int64_t step_index) const {
  return data_base_sequence_ + (step_index - data_base_step_) * cfg_.train_batch_size;
}

Result<double> Trainer::compute_gradients(int64_t step_index, double loss_scale) {
  return run_micro_batches(step_index, loss_scale, true);
}

Result<double> Trainer::evaluate(int64_t step_index) {
  return run_micro_batches(step_index, 1.0, false);
}

Result<StepResult> Trainer::step() {
  auto r = step_impl();
  if (!r.is_ok())
    return r.status().with_context(fmt::format("rank {}: step {}", comm_.rank(), step_ + 1));
  return r;
}

Result<StepResult> Trainer::step_impl() {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  // Note [step profile]: the model, the engine and the state store mark their phases through this
  // thread's active profile. It starts before reset_peaks(), so a peak the step never raises is
  // attributed to "start of step".
  StepProfile profile(backend_.memory(), static_cast<int>(cfg_.gradient_accumulation_steps),
                      memory_timeline_);
  ActiveStepProfile active(&profile);
  profile.start(t0);
  backend_.memory().reset_peaks();
  comm_.reset_stats();

  StepResult r;
  r.step = step_ + 1;
  r.tokens = cfg_.train_batch_size * cfg_.model.block_size;
  r.loss_scale = scaler_.scale();
  r.lr = learning_rate(cfg_.scheduler, cfg_.optimizer.lr, applied_steps_);
  if (cfg_.optimizer.type == "Adafactor" && cfg_.optimizer.relative_step) {
    // Adafactor's relative step (before its per-parameter scale): what the run's lr curve shows.
    const double t = static_cast<double>(applied_steps_ + 1);
    r.lr = std::min(cfg_.optimizer.warmup_init ? 1e-6 * t : 1e-2, 1.0 / std::sqrt(t));
  }
  ZT_ASSIGN_OR_RETURN(r.loss, run_micro_batches(step_, r.loss_scale, true));

  // fp16: any Inf/NaN in the scaled gradients means overflow: skip the update, shrink the scale.
  ZeroEngine::GradStats gs;
  {
    ScopedProfilePhase norm(StepPhase::kOptimizer, MemPhaseKind::kGradNorm);
    ZT_ASSIGN_OR_RETURN(gs, engine_->grad_stats());
  }
  const bool overflow = scaler_.enabled() && gs.overflow;
  r.grad_norm = overflow ? INFINITY : std::sqrt(gs.sum_squares) / r.loss_scale;
  if (!overflow && (!std::isfinite(r.grad_norm) || gs.overflow))
    return make_error(StatusCode::kAborted,
                      "gradient norm is not finite (loss {}): training diverged. Lower the "
                      "learning rate or enable gradient_clipping",
                      r.loss);
  ZT_RETURN_IF_ERROR(scaler_.update(overflow));
  r.skipped = overflow;

  if (!overflow) {
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below one.
    double clip = 1.0;
    if (cfg_.gradient_clipping > 0.0) {
      const double coef = cfg_.gradient_clipping / (r.grad_norm + 1e-6);
      if (coef < 1.0) clip = coef;
    }
    ++applied_steps_;
    OptimizerStepArgs p;
    p.lr = static_cast<float>(r.lr);
    p.t = applied_steps_;
    p.grad_scale = static_cast<float>(clip / r.loss_scale);
    ScopedProfilePhase update(StepPhase::kOptimizer, MemPhaseKind::kOptimizer);
    ZT_RETURN_IF_ERROR(engine_->optimizer_step(p));
  }
  ++step_;
  backend_.synchronize();
  const auto t1 = Clock::now();
  profile.finish(t1);
  r.step_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
  r.tokens_per_s = static_cast<double>(r.tokens) / (r.step_ms / 1000.0);
  r.memory = backend_.memory().snapshot();
  r.time_ms = profile.times_ms();
  for (size_t c = 0; c < kNumMemCategories; ++c)
    r.peak_phase[c] = profile.label(r.memory.peak_phase[c]);
  r.total_peak_phase = profile.label(r.memory.total_peak_phase);
  r.memory_timeline = profile.take_timeline();
  const StatePlacementInfo pl = engine_->placement();
  if (cfg_.zero.offload_optimizer.device != OffloadDevice::kNone) {
    r.offload_resident_bytes = pl.resident_bytes + pl.side_bytes;
    r.offload_disk_bytes = pl.disk_bytes;
  }
  r.offload_resident_bytes += pl.param_resident_bytes;
  r.offload_disk_bytes += pl.param_disk_bytes;
  r.comm = comm_.stats();
  return r;
}

Result<std::vector<float>> Trainer::master_weights() { return engine_->gather_master(); }

Status Trainer::export_safetensors(const std::string& path, DType dtype) {
  ZT_ASSIGN_OR_RETURN(std::vector<float> master, engine_->gather_master());
  if (comm_.rank() != 0) return Status::ok();
  return export_gpt2_safetensors(path, layout(), master.data(), dtype);
}

TrainerState Trainer::state() const {
  TrainerState s;
  s.step = step_;
  s.applied_steps = applied_steps_;
  s.scaler = scaler_.state();
  s.next_sequence = first_sequence(step_);
  return s;
}

Result<ShardSnapshot> Trainer::snapshot_shard(bool copy, Buffer reuse) {
  // The snapshot is read and written by the host: host memory, from the engine's host backend
  // when the compute backend's memory is not.
  Backend& mem = backend_.host_accessible() ? backend_ : engine_->host_backend();
  return zt::snapshot_shard(*engine_, mem, step_, copy, std::move(reuse));
}

Status Trainer::restore(const std::string& dir, const Manifest& m) {
  ZT_RETURN_IF_ERROR(
      load_shards(dir, m, *engine_)
          .with_context(fmt::format("rank {}: loading checkpoint '{}'", comm_.rank(), dir)));
  step_ = m.trainer.step;
  applied_steps_ = m.trainer.applied_steps;
  if (scaler_.enabled() && m.dtype == "fp16") scaler_.restore(m.trainer.scaler);
  data_base_step_ = m.trainer.step;
  data_base_sequence_ = m.trainer.next_sequence;
  return Status::ok();
}

}  // namespace zt
