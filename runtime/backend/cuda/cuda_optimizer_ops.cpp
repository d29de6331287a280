// CudaOptimizerOps: the fused optimizer kernels of kernels/cuda/optimizer.cuh on the backend's
// stream. The 8-bit code maps are the CPU's (kernels/optimizer.h), uploaded once, so the device
// picks the same codes.
#include <cstring>

#include "kernels/cuda/optimizer.cuh"
#include "kernels/optimizer.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/cuda_check.h"
#include "runtime/backend/cuda/cuda_ops.h"

namespace zt {

namespace kc = kernels::cuda;

namespace {
int code(DType t) { return static_cast<int>(t); }
// Rows of a (rows, cols) parameter that a piece of n elements from element `first` touches.
int64_t rows_touched(size_t n, int64_t first, int64_t cols) {
  return (first + static_cast<int64_t>(n) + cols - 1) / cols - first / cols;
}
}  // namespace

CudaOptimizerOps::CudaOptimizerOps(CudaBackend& backend) : be_(backend) {}
CudaOptimizerOps::~CudaOptimizerOps() = default;

const float* CudaOptimizerOps::maps() {
  if (maps_.empty()) {
    auto r = be_.allocate(2 * 256 * sizeof(float), MemCategory::kOptimizerStates);
    if (!r.is_ok()) throw StatusError(r.status());
    maps_ = std::move(r).value();
    float host[512];
    std::memcpy(host, kernels::cpu::signed_dynamic_map().code, 256 * sizeof(float));
    std::memcpy(host + 256, kernels::cpu::unsigned_dynamic_map().code, 256 * sizeof(float));
    be_.copy(maps_.data(), host, sizeof(host));
  }
  return static_cast<const float*>(maps_.data());
}

void CudaOptimizerOps::adamw(float* master, float* m, float* v, const void* grad, DType gd,
                             size_t n, const AdamWArgs& a) {
  ZT_CUDA_LAUNCH("adamw", kc::adamw_update(code(gd), master, m, v, grad, n, a.lr, a.beta1, a.beta2,
                                           a.eps, a.weight_decay, a.bias_corr1, a.bias_corr2,
                                           a.grad_scale, be_.stream()));
}

void CudaOptimizerOps::sgd(float* master, float* momentum_buf, const void* grad, DType gd, size_t n,
                           const SgdArgs& a) {
  ZT_CUDA_LAUNCH(
      "sgd", kc::sgd_update(code(gd), master, momentum_buf, grad, n, a.lr, a.momentum, a.dampening,
                            a.weight_decay, a.nesterov, a.first_step, a.grad_scale, be_.stream()));
}

void CudaOptimizerOps::lion(float* master, float* m, const void* grad, DType gd, size_t n,
                            const LionArgs& a) {
  ZT_CUDA_LAUNCH("lion", kc::lion_update(code(gd), master, m, grad, n, a.lr, a.beta1, a.beta2,
                                         a.weight_decay, a.grad_scale, be_.stream()));
}

void CudaOptimizerOps::adamw8bit(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                                 float* v_absmax, const void* grad, DType gd, size_t n,
                                 size_t first_block, const AdamWArgs& a) {
  const float* map = maps();
  ZT_CUDA_LAUNCH(
      "adamw8bit",
      kc::adamw8bit_update(code(gd), map, map + 256, master, m_codes, m_absmax, v_codes, v_absmax,
                           grad, n, first_block, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                           a.bias_corr1, a.bias_corr2, a.grad_scale, be_.stream()));
}

void CudaOptimizerOps::quantize_blocks(bool signed_map, const float* x, size_t n,
                                       size_t first_block, uint8_t* codes, float* absmax) {
  const float* map = maps() + (signed_map ? 0 : 256);
  ZT_CUDA_LAUNCH("quantize_blocks",
                 kc::quantize_blocks(map, x, n, first_block, codes, absmax, be_.stream()));
}

void CudaOptimizerOps::dequantize_blocks(bool signed_map, const uint8_t* codes, const float* absmax,
                                         size_t n, size_t first_block, float* out) {
  const float* map = maps() + (signed_map ? 0 : 256);
  ZT_CUDA_LAUNCH("dequantize_blocks",
                 kc::dequantize_blocks(map, codes, absmax, n, first_block, out, be_.stream()));
}

void CudaOptimizerOps::adafactor_sq_sums(const void* grad, DType gd, size_t n, int64_t first,
                                         int64_t cols, float grad_scale, float eps1,
                                         double* row_sums, double* col_sums) {
  void* ws = be_.workspace(kc::adafactor_workspace_bytes(n, rows_touched(n, first, cols), cols));
  ZT_CUDA_LAUNCH("adafactor_sq_sums",
                 kc::adafactor_sq_sums(code(gd), grad, n, first, cols, grad_scale, eps1, row_sums,
                                       col_sums, ws, be_.stream()));
}

double CudaOptimizerOps::adafactor_factored_sq(const void* grad, DType gd, size_t n, int64_t first,
                                               int64_t cols, float grad_scale, const float* rfac,
                                               const float* cfac) {
  auto [ws, result] = be_.workspace_and_result<double>(
      kc::adafactor_workspace_bytes(n, rows_touched(n, first, cols), cols));
  ZT_CUDA_LAUNCH("adafactor_factored_sq",
                 kc::adafactor_factored_sq(code(gd), grad, n, first, cols, grad_scale, rfac, cfac,
                                           result, ws, be_.stream()));
  return be_.read_back(result);
}

double CudaOptimizerOps::adafactor_unfactored_v(const void* grad, DType gd, float* v, size_t n,
                                                float grad_scale, float beta2t, float eps1) {
  auto [ws, result] = be_.workspace_and_result<double>(kc::adafactor_workspace_bytes(n, 1, 1));
  ZT_CUDA_LAUNCH("adafactor_unfactored_v",
                 kc::adafactor_unfactored_v(code(gd), grad, v, n, grad_scale, beta2t, eps1, result,
                                            ws, be_.stream()));
  return be_.read_back(result);
}

void CudaOptimizerOps::adafactor_apply(float* master, float* m, const void* grad, DType gd,
                                       size_t n, int64_t first, int64_t cols, const float* rfac,
                                       const float* cfac, const float* v,
                                       const AdafactorApplyArgs& a) {
  ZT_CUDA_LAUNCH("adafactor_apply", kc::adafactor_apply(code(gd), master, m, grad, n, first, cols,
                                                        rfac, cfac, v, a.grad_scale, a.scale, a.lr,
                                                        a.beta1, a.weight_decay, be_.stream()));
}

}  // namespace zt
