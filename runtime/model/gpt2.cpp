#include "runtime/model/gpt2.h"

#include <optional>

#include <fmt/format.h>

#include "runtime/profile/step_profile.h"

namespace zt {

struct Gpt2Model::LayerParams {
  Tensor ln1w, ln1b, qkvw, qkvb, attpw, attpb, ln2w, ln2b, fcw, fcb, fcpw, fcpb;
};

// The tensors one block's backward reads. Under `selective` the attention fields of every layer
// alias one shared set.
struct Gpt2Model::LayerActs {
  Tensor ln1, ln1_mean, ln1_rstd, qkv, atty, lse;       // attention part
  Tensor res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu;  // MLP part
};

Gpt2Model::Gpt2Model(Backend& backend, const ModelConfig& cfg,
                     const ActivationCheckpointingConfig& ckpt, DType dtype, int B, int T,
                     ParamLayout layout, std::vector<int64_t> unit_offsets)
    : backend_(backend),
      ops_(backend.ops()),
      cfg_(cfg),
      ckpt_(ckpt),
      dtype_(dtype),
      layout_(std::move(layout)),
      unit_offsets_(std::move(unit_offsets)) {
  shape_ = {B, T, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.vocab_size, cfg.block_size};
  // Resolved once: the step looks each block's parameters up by position, not by name.
  static constexpr const char* kBlockParams[12] = {
      "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
      "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
      "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
  block_entries_.resize(static_cast<size_t>(cfg.n_layer));
  for (int l = 0; l < cfg.n_layer; ++l)
    for (size_t k = 0; k < 12; ++k) {
      const std::string name = fmt::format("h.{}.{}", l, kBlockParams[k]);
      const ParamEntry* e = layout_.find(name);
      ZT_CHECK(e != nullptr, "no parameter named {}", name);
      block_entries_[static_cast<size_t>(l)][k] = e;
    }
}

Gpt2Model::~Gpt2Model() = default;

Result<std::unique_ptr<Gpt2Model>> Gpt2Model::create(Backend& backend, const ModelConfig& cfg,
                                                     const ActivationCheckpointingConfig& ckpt,
                                                     DType dtype, int B, int T, ParamLayout layout,
                                                     std::vector<int64_t> unit_offsets) {
  if (cfg.family != "gpt2")
    return make_error(StatusCode::kUnsupported, "model.family '{}' is not supported", cfg.family);
  if (T < 1 || T > cfg.block_size)
    return make_error(StatusCode::kInvalidArgument, "sequence length {} outside [1, block_size={}]",
                      T, cfg.block_size);
  ZT_RETURN_IF_ERROR(backend.ops().supports(dtype));
  if (static_cast<int>(unit_offsets.size()) != cfg.n_layer + 1)
    return make_error(StatusCode::kInternal, "{} unit offsets for {} blocks", unit_offsets.size(),
                      cfg.n_layer);
  std::unique_ptr<Gpt2Model> m(
      new Gpt2Model(backend, cfg, ckpt, dtype, B, T, std::move(layout), std::move(unit_offsets)));
  ZT_RETURN_IF_ERROR(m->allocate().with_context("allocating GPT-2 activations"));
  return m;
}

Result<Tensor> Gpt2Model::alloc(Shape shape, DType dtype) {
  ZT_ASSIGN_OR_RETURN(Buffer buf,
                      backend_.allocate(static_cast<size_t>(shape.numel()) * dtype_size(dtype),
                                        MemCategory::kActivations));
  activation_bytes_ += static_cast<int64_t>(buf.bytes());
  Tensor t = buf.as(dtype, shape);
  buffers_.push_back(std::move(buf));
  return t;
}

Status Gpt2Model::allocate() {
  const int64_t N = static_cast<int64_t>(shape_.B) * shape_.T, C = shape_.C, L = shape_.L;
  const int64_t B = shape_.B, T = shape_.T, NH = shape_.NH;
  const DType dt = dtype_;
  auto alloc_attention = [&](LayerActs& a) -> Status {
    ZT_ASSIGN_OR_RETURN(a.ln1, alloc({N, C}, dt));
    ZT_ASSIGN_OR_RETURN(a.ln1_mean, alloc({N}, DType::kF32));
    ZT_ASSIGN_OR_RETURN(a.ln1_rstd, alloc({N}, DType::kF32));
    ZT_ASSIGN_OR_RETURN(a.qkv, alloc({B, T, 3 * C}, dt));
    ZT_ASSIGN_OR_RETURN(a.atty, alloc({B, T, C}, dt));
    ZT_ASSIGN_OR_RETURN(a.lse, alloc({B, NH, T}, DType::kF32));
    return Status::ok();
  };
  auto alloc_mlp = [&](LayerActs& a) -> Status {
    ZT_ASSIGN_OR_RETURN(a.res2, alloc({N, C}, dt));
    ZT_ASSIGN_OR_RETURN(a.ln2, alloc({N, C}, dt));
    ZT_ASSIGN_OR_RETURN(a.ln2_mean, alloc({N}, DType::kF32));
    ZT_ASSIGN_OR_RETURN(a.ln2_rstd, alloc({N}, DType::kF32));
    ZT_ASSIGN_OR_RETURN(a.fch, alloc({N, 4 * C}, dt));
    ZT_ASSIGN_OR_RETURN(a.fch_gelu, alloc({N, 4 * C}, dt));
    return Status::ok();
  };

  const CheckpointPolicy policy = ckpt_.policy;
  const int n = policy == CheckpointPolicy::kEveryN ? std::max(1, ckpt_.every_n) : 1;

  // Residual stream at block boundaries 0..L. every_n keeps the segment inputs and the final
  // output; the boundaries inside a segment share n-1 buffers that recompute refills.
  residual_of_.assign(static_cast<size_t>(L + 1), -1);
  std::vector<int> inner(static_cast<size_t>(n), -1);
  for (int64_t b = 0; b <= L; ++b) {
    const bool kept = policy != CheckpointPolicy::kEveryN || b % n == 0 || b == L;
    int& slot = kept ? residual_of_[static_cast<size_t>(b)] : inner[static_cast<size_t>(b % n)];
    if (slot < 0) {
      ZT_ASSIGN_OR_RETURN(Tensor t, alloc({N, C}, dt));
      residual_.push_back(t);
      slot = static_cast<int>(residual_.size()) - 1;
    }
    residual_of_[static_cast<size_t>(b)] = slot;
  }

  // Activation sets.
  int sets = static_cast<int>(L);
  if (policy == CheckpointPolicy::kLayer) sets = 1;
  if (policy == CheckpointPolicy::kEveryN) sets = static_cast<int>(std::min<int64_t>(n, L));
  LayerActs shared;
  if (policy == CheckpointPolicy::kSelective) ZT_RETURN_IF_ERROR(alloc_attention(shared));
  for (int s = 0; s < sets; ++s) {
    auto a = std::make_unique<LayerActs>();
    if (policy == CheckpointPolicy::kSelective) {
      *a = shared;
    } else {
      ZT_RETURN_IF_ERROR(alloc_attention(*a));
    }
    ZT_RETURN_IF_ERROR(alloc_mlp(*a));
    act_sets_.push_back(std::move(a));
  }
  acts_of_.resize(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) acts_of_[static_cast<size_t>(l)] = static_cast<int>(l % sets);

  ZT_ASSIGN_OR_RETURN(lnf_, alloc({N, C}, dt));
  ZT_ASSIGN_OR_RETURN(lnf_mean_, alloc({N}, DType::kF32));
  ZT_ASSIGN_OR_RETURN(lnf_rstd_, alloc({N}, DType::kF32));
  ZT_ASSIGN_OR_RETURN(logits_, alloc({N, shape_.V}, dt));
  ZT_ASSIGN_OR_RETURN(losses_, alloc({N}, DType::kF32));
  host_losses_.resize(static_cast<size_t>(N));
  // Inputs, not activations: charged to the workspace.
  ZT_ASSIGN_OR_RETURN(tokens_buf_, backend_.allocate(static_cast<size_t>(N) * sizeof(int32_t),
                                                     MemCategory::kWorkspace));
  ZT_ASSIGN_OR_RETURN(targets_buf_, backend_.allocate(static_cast<size_t>(N) * sizeof(int32_t),
                                                      MemCategory::kWorkspace));
  // Gradient and scratch buffers of the backward pass (live only during one micro-batch).
  ZT_ASSIGN_OR_RETURN(dx_, alloc({N, C}, dt));
  ZT_ASSIGN_OR_RETURN(scratch_c_, alloc({N, C}, dt));
  ZT_ASSIGN_OR_RETURN(scratch_c2_, alloc({N, C}, dt));
  ZT_ASSIGN_OR_RETURN(scratch_3c_, alloc({B, T, 3 * C}, dt));
  ZT_ASSIGN_OR_RETURN(scratch_4c_, alloc({N, 4 * C}, dt));
  return Status::ok();
}

Status Gpt2Model::set_sequence(int B, int T) {
  if (B == shape_.B && T == shape_.T) return Status::ok();
  const int64_t N = static_cast<int64_t>(shape_.B) * shape_.T;
  if (B < 1 || T < 1 || T > shape_.maxT || static_cast<int64_t>(B) * T != N)
    return make_error(StatusCode::kInvalidArgument,
                      "micro-batch of {} sequences of {} tokens: the model's buffers hold {} "
                      "tokens per micro-batch (block_size {})",
                      B, T, N, shape_.maxT);
  shape_.B = B;
  shape_.T = T;
  const int64_t C = shape_.C, NH = shape_.NH;
  auto reshape = [&](LayerActs& a) {
    a.qkv = a.qkv.view({B, T, 3 * C});
    a.atty = a.atty.view({B, T, C});
    a.lse = a.lse.view({B, NH, T});
  };
  for (auto& a : act_sets_) reshape(*a);
  scratch_3c_ = scratch_3c_.view({B, T, 3 * C});
  return Status::ok();
}

Tensor Gpt2Model::param(const Tensor& unit_tensor, int unit, const std::string& name) const {
  const ParamEntry* e = layout_.find(name);
  ZT_CHECK(e != nullptr, "no parameter named {}", name);
  return param(unit_tensor, unit, *e);
}

Tensor Gpt2Model::param(const Tensor& unit_tensor, int unit, const ParamEntry& e) const {
  const int64_t off = e.offset - unit_offsets_[static_cast<size_t>(unit)];
  ZT_CHECK(off >= 0 && off + e.spec.numel() <= unit_tensor.numel(),
           "parameter {} outside its unit {}", e.spec.name, unit);
  const auto& s = e.spec.shape;
  char* base = static_cast<char*>(unit_tensor.data) + static_cast<size_t>(off) * dtype_size(dtype_);
  return s.size() == 1 ? Tensor(base, dtype_, Shape{s[0]})
                       : Tensor(base, dtype_, Shape{s[0], s[1]});
}

Gpt2Model::LayerParams Gpt2Model::layer_params(int l, const Tensor& t) const {
  const auto& e = block_entries_[static_cast<size_t>(l)];
  const int u = l + 1;
  return {param(t, u, *e[0]), param(t, u, *e[1]), param(t, u, *e[2]),  param(t, u, *e[3]),
          param(t, u, *e[4]), param(t, u, *e[5]), param(t, u, *e[6]),  param(t, u, *e[7]),
          param(t, u, *e[8]), param(t, u, *e[9]), param(t, u, *e[10]), param(t, u, *e[11])};
}

Tensor Gpt2Model::x_in(int l) const {
  return residual_[static_cast<size_t>(residual_of_[static_cast<size_t>(l)])];
}
Tensor Gpt2Model::x_out(int l) const { return x_in(l + 1); }
Gpt2Model::LayerActs& Gpt2Model::acts_for(int l) {
  return *act_sets_[static_cast<size_t>(acts_of_[static_cast<size_t>(l)])];
}

void Gpt2Model::block_forward(const LayerParams& p, Tensor x, Tensor out, LayerActs& a,
                              bool attention_only) {
  const int64_t N = static_cast<int64_t>(shape_.B) * shape_.T, C = shape_.C;
  ops_.layernorm_fwd(a.ln1, a.ln1_mean, a.ln1_rstd, x, p.ln1w, p.ln1b);
  ops_.matmul_fwd(a.qkv.view({N, 3 * C}), a.ln1, p.qkvw, p.qkvb);
  ops_.attention_fwd(a.atty, a.lse, a.qkv, shape_.NH);
  if (attention_only) return;
  ops_.matmul_fwd(scratch_c_, a.atty.view({N, C}), p.attpw, p.attpb);
  ops_.residual_fwd(a.res2, x, scratch_c_);
  ops_.layernorm_fwd(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, p.ln2w, p.ln2b);
  ops_.matmul_fwd(a.fch, a.ln2, p.fcw, p.fcb);
  ops_.gelu_fwd(a.fch_gelu, a.fch);
  ops_.matmul_fwd(scratch_c_, a.fch_gelu, p.fcpw, p.fcpb);
  ops_.residual_fwd(out, a.res2, scratch_c_);
}

// dx holds dLoss/d(block output) on entry and dLoss/d(block input) on return: both residual
// branches pass the gradient through unchanged, so the branch gradients are added into it.
void Gpt2Model::block_backward(const LayerParams& p, const LayerParams& g, Tensor x, LayerActs& a,
                               Tensor dx) {
  const int64_t N = static_cast<int64_t>(shape_.B) * shape_.T, C = shape_.C;
  Tensor d4 = scratch_4c_, dc = scratch_c_, dqkv = scratch_3c_;
  ops_.matmul_bwd(d4, g.fcpw, g.fcpb, dx, a.fch_gelu, p.fcpw);
  ops_.gelu_bwd(d4, a.fch, d4);
  ops_.matmul_bwd(dc, g.fcw, g.fcb, d4, a.ln2, p.fcw);
  ops_.layernorm_bwd(dx, g.ln2w, g.ln2b, dc, a.res2, p.ln2w, a.ln2_mean, a.ln2_rstd);
  ops_.matmul_bwd(dc, g.attpw, g.attpb, dx, a.atty.view({N, C}), p.attpw);
  ops_.attention_bwd(dqkv, dc.view({shape_.B, shape_.T, C}), a.qkv, a.atty, a.lse, shape_.NH);
  ops_.matmul_bwd(dc, g.qkvw, g.qkvb, dqkv.view({N, 3 * C}), a.ln1, p.qkvw);
  ops_.layernorm_bwd(dx, g.ln1w, g.ln1b, dc, x, p.ln1w, a.ln1_mean, a.ln1_rstd);
}

void Gpt2Model::load_batch(const int32_t* inputs, const int32_t* targets) {
  const size_t bytes = static_cast<size_t>(shape_.B) * static_cast<size_t>(shape_.T) * 4;
  backend_.copy(tokens_buf_.data(), inputs, bytes);
  backend_.copy(targets_buf_.data(), targets, bytes);
}

// Note [step profile] (runtime/profile/step_profile.h): each block's forward, recompute and
// backward is a part of the step of its own, fetching its parameters included (at stage 3 the
// wait for their gather is comm_wait inside it); the LM head and the loss are "loss".
void Gpt2Model::forward_blocks() {
  const int32_t* inputs = static_cast<const int32_t*>(tokens_buf_.data());
  ZT_CHECK(hooks_ != nullptr, "Gpt2Model: no state hooks set");
  const int64_t C = shape_.C;
  ScopedStepPhase time(StepPhase::kForward);
  hooks_->begin_pass(ModelStateHooks::Pass::kForward);
  {
    ScopedMemoryPhase part(MemPhaseKind::kForwardEmbeddings);
    unit0_params_ = hooks_->unit_params(0);
    const Tensor& u0 = unit0_params_;
    ops_.encoder_fwd(x_in(0).view({shape_.B, shape_.T, C}), inputs, param(u0, 0, "wte.weight"),
                     param(u0, 0, "wpe.weight"));
  }
  for (int l = 0; l < shape_.L; ++l) {
    ScopedMemoryPhase part(MemPhaseKind::kForwardBlock, l);
    const int u = l + 1;
    const LayerParams p = layer_params(l, hooks_->unit_params(u));
    block_forward(p, x_in(l), x_out(l), acts_for(l), false);
    hooks_->unit_params_done(u);
  }
}

void Gpt2Model::head_forward() {
  ScopedStepPhase time(StepPhase::kForward);
  const Tensor& u0 = unit0_params_;
  ops_.layernorm_fwd(lnf_, lnf_mean_, lnf_rstd_, x_in(shape_.L), param(u0, 0, "ln_f.weight"),
                     param(u0, 0, "ln_f.bias"));
  ops_.matmul_fwd(logits_, lnf_, param(u0, 0, "wte.weight"), Tensor());
}

double Gpt2Model::sum_losses() {
  backend_.copy(host_losses_.data(), losses_.data, losses_.nbytes());
  double s = 0.0;
  for (const float l : host_losses_) s += l;
  return s;
}

double Gpt2Model::forward_loss(const int32_t* inputs, const int32_t* targets) {
  load_batch(inputs, targets);
  forward_blocks();
  {
    ScopedMemoryPhase part(MemPhaseKind::kLoss);
    head_forward();
    ScopedStepPhase time(StepPhase::kForward);
    ops_.softmax_crossentropy(losses_, Tensor(), logits_,
                              static_cast<const int32_t*>(targets_buf_.data()), 0.0f);
  }
  hooks_->unit_params_done(0);
  return sum_losses();
}

double Gpt2Model::forward_backward(const int32_t* inputs, const int32_t* targets, float dloss) {
  load_batch(inputs, targets);
  forward_blocks();
  const int32_t* dev_inputs = static_cast<const int32_t*>(tokens_buf_.data());
  const Tensor u0 = unit0_params_;
  Tensor g0;
  double loss_sum = 0.0;
  {
    ScopedMemoryPhase part(MemPhaseKind::kLoss);
    head_forward();
    {
      ScopedStepPhase time(StepPhase::kForward);
      ops_.softmax_crossentropy(losses_, logits_, logits_,
                                static_cast<const int32_t*>(targets_buf_.data()),
                                dloss);  // dlogits in place
      loss_sum = sum_losses();
    }
    ScopedStepPhase time(StepPhase::kBackward);
    hooks_->begin_pass(ModelStateHooks::Pass::kBackward);
    g0 = hooks_->unit_grads(0);
    // LM head (tied to wte) and final LayerNorm.
    ops_.matmul_bwd(scratch_c_, param(g0, 0, "wte.weight"), Tensor(), logits_, lnf_,
                    param(u0, 0, "wte.weight"));
    backend_.fill_zero(dx_.data, dx_.nbytes());
    ops_.layernorm_bwd(dx_, param(g0, 0, "ln_f.weight"), param(g0, 0, "ln_f.bias"), scratch_c_,
                       x_in(shape_.L), param(u0, 0, "ln_f.weight"), lnf_mean_, lnf_rstd_);
  }

  const int L = shape_.L;
  const CheckpointPolicy policy = ckpt_.policy;
  const int n = policy == CheckpointPolicy::kEveryN ? std::max(1, ckpt_.every_n) : 1;
  const bool recompute = policy != CheckpointPolicy::kNone;
  std::vector<LayerParams> seg_params;
  for (int l = L - 1; l >= 0;) {
    // The segment [s, l] is recomputed (if the policy drops it) and then run backward; its blocks'
    // parameters are held from the recompute to their backward. Fetching them belongs to the part
    // that runs first: the segment's first recompute, or without one the block's backward.
    const int s = policy == CheckpointPolicy::kEveryN ? l - l % n : l;
    std::optional<ScopedProfilePhase> part;
    if (recompute) {
      part.emplace(StepPhase::kRecompute, MemPhaseKind::kRecomputeBlock,
                   policy == CheckpointPolicy::kSelective ? l : s);
    } else {
      part.emplace(StepPhase::kBackward, MemPhaseKind::kBackwardBlock, l);
    }
    seg_params.clear();
    for (int j = s; j <= l; ++j) seg_params.push_back(layer_params(j, hooks_->unit_params(j + 1)));
    if (policy == CheckpointPolicy::kLayer || policy == CheckpointPolicy::kEveryN) {
      for (int j = s; j <= l; ++j) {
        if (j > s) part.emplace(StepPhase::kRecompute, MemPhaseKind::kRecomputeBlock, j);
        // The segment's last output is already kept (and not needed again): write it to scratch.
        Tensor out = j == l ? scratch_c2_ : x_out(j);
        block_forward(seg_params[static_cast<size_t>(j - s)], x_in(j), out, acts_for(j), false);
      }
    } else if (policy == CheckpointPolicy::kSelective) {
      block_forward(seg_params.back(), x_in(l), Tensor(), acts_for(l), true);
    }
    for (int j = l; j >= s; --j) {
      if (recompute || j != l) part.emplace(StepPhase::kBackward, MemPhaseKind::kBackwardBlock, j);
      const int u = j + 1;
      const LayerParams g = layer_params(j, hooks_->unit_grads(u));
      block_backward(seg_params[static_cast<size_t>(j - s)], g, x_in(j), acts_for(j), dx_);
      hooks_->unit_grads_done(u);
      hooks_->unit_params_done(u);
    }
    l = s - 1;
  }
  ScopedProfilePhase part(StepPhase::kBackward, MemPhaseKind::kBackwardEmbeddings);
  ops_.encoder_bwd(param(g0, 0, "wte.weight"), param(g0, 0, "wpe.weight"),
                   dx_.view({shape_.B, shape_.T, shape_.C}), dev_inputs);
  hooks_->unit_grads_done(0);
  hooks_->unit_params_done(0);
  return loss_sum;
}

}  // namespace zt
