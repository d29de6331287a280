// CUDA twins of kernels/optimizer.h and kernels/adafactor.h (conventions: launch.cuh): the fused
// optimizer updates over flat fp32 state. Each reads the gradient in its storage type (grad_dtype:
// 0 fp32, 1 bf16, 2 fp16), multiplies it by grad_scale first, and updates the fp32 master weights
// in place, with the same formulas and the same order of fp32 operations as the CPU twin, so the
// results agree to a few ulps (exactly where no transcendental is involved).
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

cudaError_t adamw_update(int grad_dtype, float* master, float* m, float* v, const void* grad,
                         size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float bias_corr1, float bias_corr2, float grad_scale,
                         cudaStream_t stream);

// momentum_buf may be null when momentum == 0.
cudaError_t sgd_update(int grad_dtype, float* master, float* momentum_buf, const void* grad,
                       size_t n, float lr, float momentum, float dampening, float weight_decay,
                       bool nesterov, bool first_step, float grad_scale, cudaStream_t stream);

cudaError_t lion_update(int grad_dtype, float* master, float* m, const void* grad, size_t n,
                        float lr, float beta1, float beta2, float weight_decay, float grad_scale,
                        cudaStream_t stream);

// ---- 8-bit block-wise quantisation (kernels/optimizer.h; blocks of 256, the first first_block
// long). The code maps are the CPU maps' `code` arrays (256 ascending floats each) copied to the
// device by the caller; the nearest code is the CPU's rule exactly (ties to the lower code, NaN
// to the code of 0, values outside the map clamped), so codes agree bit for bit.
cudaError_t quantize_blocks(const float* code_map, const float* x, size_t n, size_t first_block,
                            uint8_t* codes, float* absmax, cudaStream_t stream);
cudaError_t dequantize_blocks(const float* code_map, const uint8_t* codes, const float* absmax,
                              size_t n, size_t first_block, float* out, cudaStream_t stream);
cudaError_t adamw8bit_update(int grad_dtype, const float* signed_map, const float* unsigned_map,
                             float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                             float* v_absmax, const void* grad, size_t n, size_t first_block,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float bias_corr1, float bias_corr2, float grad_scale,
                             cudaStream_t stream);

// ---- Adafactor (kernels/adafactor.h): a piece of one parameter viewed as (rows, cols), `first`
// its first element. Sums are fp64 in a fixed order (deterministic); results of the two
// reductions land in *result (device fp64) so the caller reads them once.
size_t adafactor_workspace_bytes(size_t n, int64_t rows, int64_t cols);
cudaError_t adafactor_sq_sums(int grad_dtype, const void* grad, size_t n, int64_t first,
                              int64_t cols, float grad_scale, float eps1, double* row_sums,
                              double* col_sums, void* workspace, cudaStream_t stream);
cudaError_t adafactor_factored_sq(int grad_dtype, const void* grad, size_t n, int64_t first,
                                  int64_t cols, float grad_scale, const float* rfac,
                                  const float* cfac, double* result, void* workspace,
                                  cudaStream_t stream);
cudaError_t adafactor_unfactored_v(int grad_dtype, const void* grad, float* v, size_t n,
                                   float grad_scale, float beta2t, float eps1, double* result,
                                   void* workspace, cudaStream_t stream);
// rfac/cfac null: unfactored (v given); m may be null (no first moment).
cudaError_t adafactor_apply(int grad_dtype, float* master, float* m, const void* grad, size_t n,
                            int64_t first, int64_t cols, const float* rfac, const float* cfac,
                            const float* v, float grad_scale, float scale, float lr, float beta1,
                            float weight_decay, cudaStream_t stream);

}  // namespace zt::kernels::cuda
