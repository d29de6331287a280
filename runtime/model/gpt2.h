// The GPT-2 model on a Backend: forward and backward written op by op, with activation
// checkpointing. It owns its activation buffers (category activations); parameters and their
// gradients belong to the ZeRO engine, which hands them out unit by unit through ModelStateHooks.
//
// Note [activation checkpointing policies]
//   none       every block keeps all the tensors its backward needs.
//   layer      only each block's input (the residual stream) is kept; backward re-runs the block's
//              forward into one shared set of buffers, then runs its backward.
//   every_n    the input of every n-th block is kept; backward re-runs n blocks at a time into n
//              shared sets.
//   selective  everything is kept except the attention internals (ln_1 output, qkv, the attention
//              output and its log-sum-exp), recomputed from the kept block input in backward.
// The recomputed forward runs the same kernels on the same inputs, so every policy yields
// bit-identical gradients; only the activation memory and the step time differ.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/config/job_config.h"
#include "runtime/model/gpt2_params.h"
#include "runtime/model/state_hooks.h"

namespace zt {

struct Gpt2Shape {
  int B = 0;  // micro-batch (sequences)
  int T = 0;  // sequence length
  int C = 0, NH = 0, L = 0, V = 0, maxT = 0;
};

class Gpt2Model {
 public:
  // Allocates the activation buffers for micro-batches of B sequences of T tokens in `dtype`.
  // `layout` gives each parameter's global flat offset, `unit_offsets` each unit's (the partition
  // plan's).
  static Result<std::unique_ptr<Gpt2Model>> create(Backend& backend, const ModelConfig& cfg,
                                                   const ActivationCheckpointingConfig& ckpt,
                                                   DType dtype, int B, int T, ParamLayout layout,
                                                   std::vector<int64_t> unit_offsets);
  ~Gpt2Model();

  const ParamLayout& layout() const { return layout_; }
  const Gpt2Shape& shape() const { return shape_; }

  // Sequence-length warm-up (data.seq_len_schedule): the next micro-batches hold B sequences of T
  // tokens with the same B*T as at create(), so every buffer keeps its size and only the views
  // with a sequence axis change. kInvalidArgument if B*T differs or T is outside [1, block_size].
  Status set_sequence(int B, int T);
  DType dtype() const { return dtype_; }

  // Where parameters and gradients come from; must be set before the first pass.
  void set_hooks(ModelStateHooks* hooks) { hooks_ = hooks; }

  // One micro-batch: forward, loss, backward. inputs/targets (B*T) int32 in host memory (copied
  // into the model's token buffers in backend memory first). Parameter gradients
  // accumulate (+=) with the loss gradient scaled by `dloss` per token (loss_scale / tokens of the
  // global batch). Returns the sum over the B*T tokens of the cross-entropy (fp64).
  double forward_backward(const int32_t* inputs, const int32_t* targets, float dloss);
  // Forward and loss only (no saved activations needed afterwards).
  double forward_loss(const int32_t* inputs, const int32_t* targets);

  // Bytes of the activation buffers this policy allocated.
  int64_t activation_bytes() const { return activation_bytes_; }

 private:
  struct LayerParams;
  struct LayerActs;
  Gpt2Model(Backend& backend, const ModelConfig& cfg, const ActivationCheckpointingConfig& ckpt,
            DType dtype, int B, int T, ParamLayout layout, std::vector<int64_t> unit_offsets);
  Status allocate();
  Result<Tensor> alloc(Shape shape, DType dtype);

  // Views of block l's parameters (or gradients) inside its unit's tensor.
  LayerParams layer_params(int l, const Tensor& unit) const;
  // View of parameter `name` inside the tensor of the unit `unit` that holds it.
  Tensor param(const Tensor& unit_tensor, int unit, const std::string& name) const;
  Tensor param(const Tensor& unit_tensor, int unit, const ParamEntry& entry) const;
  // Block forward from x_in to x_out, filling `acts`. attention_only: stop after the attention
  // internals (selective recompute).
  void block_forward(const LayerParams& p, Tensor x_in, Tensor x_out, LayerActs& acts,
                     bool attention_only);
  void block_backward(const LayerParams& p, const LayerParams& g, Tensor x_in, LayerActs& acts,
                      Tensor dx);
  // Copies the host batch into tokens_/targets_ (backend memory).
  void load_batch(const int32_t* inputs, const int32_t* targets);
  // The sum of losses_ (fp64, in order), read back through a host copy.
  double sum_losses();
  // The forward up to the last block's output, then the final LayerNorm and the logits.
  void forward_blocks();
  void head_forward();
  // Which kept residual buffer / activation set layer l uses under the policy.
  Tensor x_in(int l) const;
  Tensor x_out(int l) const;
  LayerActs& acts_for(int l);

  Backend& backend_;
  Ops& ops_;
  ModelConfig cfg_;
  ActivationCheckpointingConfig ckpt_;
  DType dtype_;
  Gpt2Shape shape_;
  ParamLayout layout_;
  std::vector<int64_t> unit_offsets_;
  // Each block's 12 parameters in LayerParams order, resolved from layout_ at construction.
  std::vector<std::array<const ParamEntry*, 12>> block_entries_;
  ModelStateHooks* hooks_ = nullptr;
  Tensor unit0_params_;  // the embedding unit, held from the encoder to the LM head

  std::vector<Buffer> buffers_;
  std::vector<Tensor> residual_;  // residual stream buffers (policy-dependent count)
  std::vector<int> residual_of_;  // layer boundary l (0..L) -> index into residual_
  std::vector<std::unique_ptr<LayerActs>> act_sets_;
  std::vector<int> acts_of_;                                  // layer -> index into act_sets_
  std::vector<std::unique_ptr<LayerActs>> shared_attention_;  // selective: one shared set
  Tensor lnf_, lnf_mean_, lnf_rstd_, logits_, losses_;
  // The micro-batch's tokens and targets (B*T int32) in backend memory: the ops read them there.
  Buffer tokens_buf_, targets_buf_;
  std::vector<float> host_losses_;
  Tensor dx_, scratch_c_, scratch_c2_, scratch_3c_, scratch_4c_;
  int64_t activation_bytes_ = 0;
};

}  // namespace zt
