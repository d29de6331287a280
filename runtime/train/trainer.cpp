#include "runtime/train/trainer.h"

#include <chrono>
#include <cmath>

#include "runtime/model/gpt2_hf.h"
#include "runtime/optim/lr_schedule.h"

namespace zt {

Trainer::Trainer(const JobConfig& cfg, Backend& backend)
    : cfg_(cfg), backend_(backend), scaler_(cfg.fp16) {
  if (cfg.bf16.enabled) dtype_ = DType::kBF16;
  if (cfg.fp16.enabled) dtype_ = DType::kF16;
}

Trainer::~Trainer() = default;

Result<std::unique_ptr<Trainer>> Trainer::create(const JobConfig& cfg, Backend& backend) {
  std::unique_ptr<Trainer> t(new Trainer(cfg, backend));
  ZT_RETURN_IF_ERROR(t->init());
  return t;
}

Status Trainer::init() {
  // Nothing falls back silently: what this single-rank trainer cannot do is an error.
  if (cfg_.zero.stage != 0)
    return make_error(StatusCode::kUnsupported,
                      "zero_optimization.stage {} needs the ZeRO engine across MPI workers, which "
                      "this build does not have yet; use stage 0",
                      cfg_.zero.stage);
  if (cfg_.zero.offload_optimizer.device != OffloadDevice::kNone ||
      cfg_.zero.offload_param.device != OffloadDevice::kNone)
    return make_error(StatusCode::kUnsupported,
                      "zero_optimization.offload_* is not available in this build yet; remove it");
  if (cfg_.checkpoint.every_steps > 0)
    return make_error(StatusCode::kUnsupported,
                      "checkpoint.every_steps: checkpoints are not available in this build yet; "
                      "remove the checkpoint section");
  if (cfg_.backend != BackendKind::kCpu)
    return make_error(StatusCode::kUnsupported,
                      "backend: cuda is not available in this build yet; use backend: cpu");
  if (cfg_.train_micro_batch_size_per_gpu <= 0 || cfg_.gradient_accumulation_steps <= 0 ||
      cfg_.train_batch_size != cfg_.train_micro_batch_size_per_gpu * cfg_.gradient_accumulation_steps)
    return make_error(StatusCode::kInvalidArgument,
                      "batch sizes not resolved for one worker: train_batch_size {} != micro {} x "
                      "accumulation {}",
                      cfg_.train_batch_size, cfg_.train_micro_batch_size_per_gpu,
                      cfg_.gradient_accumulation_steps);
  const int B = static_cast<int>(cfg_.train_micro_batch_size_per_gpu);
  const int T = cfg_.model.block_size;
  ZT_ASSIGN_OR_RETURN(model_, Gpt2Model::create(backend_, cfg_.model, cfg_.activation_checkpointing,
                                                dtype_, B, T));
  ZT_ASSIGN_OR_RETURN(DataLoader loader, DataLoader::open(cfg_.data, cfg_.model));
  data_ = std::make_unique<DataLoader>(std::move(loader));

  const ParamLayout& layout = model_->layout();
  const size_t n = static_cast<size_t>(layout.total);
  ZT_ASSIGN_OR_RETURN(params_buf_, backend_.allocate(n * dtype_size(dtype_), MemCategory::kParameters));
  ZT_ASSIGN_OR_RETURN(grads_buf_, backend_.allocate(n * dtype_size(dtype_), MemCategory::kGradients));
  ZT_ASSIGN_OR_RETURN(m_buf_, backend_.allocate(n * 4, MemCategory::kOptimizerStates));
  ZT_ASSIGN_OR_RETURN(v_buf_, backend_.allocate(n * 4, MemCategory::kOptimizerStates));
  const Shape flat{layout.total};
  params_ = params_buf_.as(dtype_, flat);
  grads_ = grads_buf_.as(dtype_, flat);
  m_ = m_buf_.as(DType::kF32, flat);
  v_ = v_buf_.as(DType::kF32, flat);
  if (dtype_ == DType::kF32) {
    master_ = params_;  // fp32 training: the working weights are the master weights
  } else {
    ZT_ASSIGN_OR_RETURN(master_buf_, backend_.allocate(n * 4, MemCategory::kOptimizerStates));
    master_ = master_buf_.as(DType::kF32, flat);
  }

  float* master = master_.ptr<float>();
  if (!cfg_.model.init_from.empty()) {
    ZT_RETURN_IF_ERROR(load_gpt2_safetensors(cfg_.model.init_from, layout, master)
                           .with_context("model.init_from"));
  } else {
    for (const ParamEntry& e : layout.entries)
      init_param_range(e.spec, cfg_.model.seed, 0, e.spec.numel(), master + e.offset);
  }
  sync_working_from_master();
  model_->bind(params_, grads_);

  // Weight decay applies to parameters of two or more dimensions only; padding joins the span of
  // the parameter before it (its gradient is always zero, so it never moves).
  for (size_t i = 0; i < layout.entries.size(); ++i) {
    const ParamEntry& e = layout.entries[i];
    const int64_t end = i + 1 < layout.entries.size() ? layout.entries[i + 1].offset : layout.total;
    if (!spans_.empty() && spans_.back().decay == e.spec.weight_decay)
      spans_.back().count = end - spans_.back().offset;
    else
      spans_.push_back({e.offset, end - e.offset, e.spec.weight_decay});
  }
  const size_t tokens = static_cast<size_t>(B) * static_cast<size_t>(T);
  inputs_.resize(tokens);
  targets_.resize(tokens);
  return Status::ok();
}

void Trainer::sync_working_from_master() {
  if (dtype_ != DType::kF32) backend_.ops().convert(params_, master_);
}

Tensor Trainer::master_weights() const { return master_; }

double Trainer::compute_gradients(int64_t step_index, double loss_scale) {
  const int B = static_cast<int>(cfg_.train_micro_batch_size_per_gpu);
  const int64_t G = cfg_.train_batch_size;
  const int64_t T = cfg_.model.block_size;
  const float dloss = static_cast<float>(loss_scale / static_cast<double>(G * T));
  backend_.fill_zero(grads_.data, grads_.nbytes());
  double loss_sum = 0.0;
  for (int64_t a = 0; a < cfg_.gradient_accumulation_steps; ++a) {
    data_->fill(step_index * G + a * B, B, inputs_.data(), targets_.data());
    loss_sum += model_->forward_backward(inputs_.data(), targets_.data(), dloss);
  }
  return loss_sum / static_cast<double>(G * T);
}

double Trainer::evaluate(int64_t step_index) {
  const int B = static_cast<int>(cfg_.train_micro_batch_size_per_gpu);
  const int64_t G = cfg_.train_batch_size;
  double loss_sum = 0.0;
  for (int64_t a = 0; a < cfg_.gradient_accumulation_steps; ++a) {
    data_->fill(step_index * G + a * B, B, inputs_.data(), targets_.data());
    loss_sum += model_->forward_loss(inputs_.data(), targets_.data());
  }
  return loss_sum / static_cast<double>(G * cfg_.model.block_size);
}

Result<StepResult> Trainer::step() {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  backend_.memory().reset_peaks();
  Ops& ops = backend_.ops();

  StepResult r;
  r.step = step_ + 1;
  r.tokens = cfg_.train_batch_size * cfg_.model.block_size;
  r.loss_scale = scaler_.scale();
  r.lr = learning_rate(cfg_.scheduler, cfg_.optimizer.lr, applied_steps_);
  r.loss = compute_gradients(step_, r.loss_scale);

  // fp16: any Inf/NaN in the scaled gradients means overflow: skip the update, shrink the scale.
  const bool overflow = scaler_.enabled() && ops.count_nonfinite(grads_) > 0;
  r.grad_norm = overflow ? INFINITY : std::sqrt(ops.sum_squares(grads_)) / r.loss_scale;
  if (!overflow && !std::isfinite(r.grad_norm))
    return make_error(StatusCode::kAborted,
                      "step {}: gradient norm is not finite (loss {}): training diverged. Lower "
                      "the learning rate or enable gradient_clipping",
                      r.step, r.loss);
  ZT_RETURN_IF_ERROR(scaler_.update(overflow).with_context(fmt::format("step {}", r.step)));
  r.skipped = overflow;

  if (!overflow) {
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below one.
    double clip = 1.0;
    if (cfg_.gradient_clipping > 0.0) {
      const double coef = cfg_.gradient_clipping / (r.grad_norm + 1e-6);
      if (coef < 1.0) clip = coef;
    }
    ++applied_steps_;
    const OptimizerConfig& o = cfg_.optimizer;
    Ops::AdamWParams p{};
    p.lr = static_cast<float>(r.lr);
    p.beta1 = o.beta1;
    p.beta2 = o.beta2;
    p.eps = o.eps;
    p.bias_corr1 = static_cast<float>(1.0 - std::pow(static_cast<double>(o.beta1), applied_steps_));
    p.bias_corr2 = static_cast<float>(1.0 - std::pow(static_cast<double>(o.beta2), applied_steps_));
    p.grad_scale = static_cast<float>(clip / r.loss_scale);
    for (const DecaySpan& s : spans_) {
      p.weight_decay = s.decay ? o.weight_decay : 0.0f;
      ops.adamw_update(master_.slice(s.offset, s.offset + s.count),
                       m_.slice(s.offset, s.offset + s.count),
                       v_.slice(s.offset, s.offset + s.count),
                       grads_.slice(s.offset, s.offset + s.count), p);
    }
    sync_working_from_master();
  }
  ++step_;
  backend_.synchronize();
  r.step_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  r.tokens_per_s = static_cast<double>(r.tokens) / (r.step_ms / 1000.0);
  r.memory = backend_.memory().snapshot();
  return r;
}

Status Trainer::export_safetensors(const std::string& path, DType dtype) const {
  return export_gpt2_safetensors(path, model_->layout(), master_.ptr<float>(), dtype);
}

}  // namespace zt
