// OptimizerOps: the optimizer update kernels a backend offers, over flat state in that backend's
// memory (device memory for the CUDA backend, host memory for the CPU backend and for offloaded
// state). The optimizers (runtime/optim) call only these, through the backend that holds their
// state, so the same update rule runs on any backend. Semantics, argument meanings and the
// formulas are kernels/optimizer.h's and kernels/adafactor.h's; every pointer (gradients, state,
// side state, fp64 sums) lies in the backend's memory; the gradient is read in `grad_dtype`.
// Calls are stream-ordered like Ops; the two Adafactor reductions that return a value synchronise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/core/dtype.h"

namespace zt {

struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale;
};
struct SgdArgs {
  float lr, momentum, dampening, weight_decay;
  bool nesterov, first_step;
  float grad_scale;
};
struct LionArgs {
  float lr, beta1, beta2, weight_decay, grad_scale;
};
struct AdafactorApplyArgs {
  float grad_scale, scale, lr, beta1, weight_decay;
};

class OptimizerOps {
 public:
  virtual ~OptimizerOps() = default;

  virtual void adamw(float* master, float* m, float* v, const void* grad, DType grad_dtype,
                     size_t n, const AdamWArgs& a) = 0;
  // momentum_buf may be null when momentum == 0.
  virtual void sgd(float* master, float* momentum_buf, const void* grad, DType grad_dtype, size_t n,
                   const SgdArgs& a) = 0;
  virtual void lion(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
                    const LionArgs& a) = 0;

  // 8-bit block-wise state; `signed_map` picks the signed (exp_avg) or unsigned (exp_avg_sq) map.
  virtual void adamw8bit(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                         float* v_absmax, const void* grad, DType grad_dtype, size_t n,
                         size_t first_block, const AdamWArgs& a) = 0;
  virtual void quantize_blocks(bool signed_map, const float* x, size_t n, size_t first_block,
                               uint8_t* codes, float* absmax) = 0;
  virtual void dequantize_blocks(bool signed_map, const uint8_t* codes, const float* absmax,
                                 size_t n, size_t first_block, float* out) = 0;

  // Adafactor over a piece of one parameter viewed as (rows, cols), `first` its first element.
  virtual void adafactor_sq_sums(const void* grad, DType grad_dtype, size_t n, int64_t first,
                                 int64_t cols, float grad_scale, float eps1, double* row_sums,
                                 double* col_sums) = 0;
  virtual double adafactor_factored_sq(const void* grad, DType grad_dtype, size_t n, int64_t first,
                                       int64_t cols, float grad_scale, const float* rfac,
                                       const float* cfac) = 0;
  virtual double adafactor_unfactored_v(const void* grad, DType grad_dtype, float* v, size_t n,
                                        float grad_scale, float beta2t, float eps1) = 0;
  // rfac/cfac null: unfactored (v given); m may be null.
  virtual void adafactor_apply(float* master, float* m, const void* grad, DType grad_dtype,
                               size_t n, int64_t first, int64_t cols, const float* rfac,
                               const float* cfac, const float* v,
                               const AdafactorApplyArgs& a) = 0;
};

}  // namespace zt
