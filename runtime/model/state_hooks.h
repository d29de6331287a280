// ModelStateHooks: how a model reaches its parameters and gradients without owning them. The
// ZeRO engine implements it: at stages 0-2 a unit's parameters are a view of the full working
// buffer; at stage 3 they are gathered on demand (and prefetched) and freed after use. Gradients
// go to buffers the engine reduces as soon as a unit's backward is done, overlapping the rest of
// the backward pass.
//
// A unit is a group of parameters used together (Note [partition plan]): unit 0 the embeddings
// and final LayerNorm, unit l+1 block l. Tensors handed out span the unit's global flat range
// [offset, offset + padded) of the partition plan; parameters sit at their layout offsets minus
// the unit's offset.
//
// Call order within one micro-batch (the model's contract):
//   begin_pass(kForward); unit_params(0); for each block: unit_params(u) ... unit_params_done(u);
//   [forward only: unit_params_done(0)]
//   begin_pass(kBackward); unit_grads(0); then for blocks in reverse: unit_params(u),
//   unit_grads(u), ..., unit_grads_done(u), unit_params_done(u); finally unit_grads_done(0),
//   unit_params_done(0). Activation checkpointing may hold several blocks' parameters at once.
#pragma once

#include "runtime/tensor/tensor.h"

namespace zt {

class ModelStateHooks {
 public:
  enum class Pass { kForward, kBackward };
  virtual ~ModelStateHooks() = default;
  virtual void begin_pass(Pass pass) = 0;
  // Working parameters of unit u, valid until unit_params_done(u).
  virtual Tensor unit_params(int u) = 0;
  virtual void unit_params_done(int u) = 0;
  // Gradient accumulator of unit u (the model adds into it), valid until unit_grads_done(u).
  virtual Tensor unit_grads(int u) = 0;
  virtual void unit_grads_done(int u) = 0;
};

}  // namespace zt
