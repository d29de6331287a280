// The CPU backend's OptimizerOps: kernels/cpu's optimizer and Adafactor loops over host memory,
// the gradient dispatched on its storage type.
#include "kernels/adafactor.h"
#include "kernels/optimizer.h"
#include "runtime/backend/cpu/cpu_backend.h"

namespace zt {

namespace {

namespace k = kernels::cpu;

// Calls fn(const T* grad) with T the gradient's storage type.
template <typename F>
decltype(auto) with_grad(DType dtype, const void* grad, F&& fn) {
  return dispatch_dtype(dtype, [&]<typename T>() { return fn(static_cast<const T*>(grad)); });
}

const k::QuantMap& quant_map(bool signed_map) {
  return signed_map ? k::signed_dynamic_map() : k::unsigned_dynamic_map();
}

class CpuOptimizerOps final : public OptimizerOps {
 public:
  void adamw(float* master, float* m, float* v, const void* grad, DType grad_dtype, size_t n,
             const AdamWArgs& a) override {
    with_grad(grad_dtype, grad, [&](const auto* g) {
      k::adamw_update(master, m, v, g, n, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                      a.bias_corr1, a.bias_corr2, a.grad_scale);
    });
  }
  void sgd(float* master, float* momentum_buf, const void* grad, DType grad_dtype, size_t n,
           const SgdArgs& a) override {
    with_grad(grad_dtype, grad, [&](const auto* g) {
      k::sgd_update(master, momentum_buf, g, n, a.lr, a.momentum, a.dampening, a.weight_decay,
                    a.nesterov, a.first_step, a.grad_scale);
    });
  }
  void lion(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
            const LionArgs& a) override {
    with_grad(grad_dtype, grad, [&](const auto* g) {
      k::lion_update(master, m, g, n, a.lr, a.beta1, a.beta2, a.weight_decay, a.grad_scale);
    });
  }

  void adamw8bit(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                 float* v_absmax, const void* grad, DType grad_dtype, size_t n, size_t first_block,
                 const AdamWArgs& a) override {
    with_grad(grad_dtype, grad, [&](const auto* g) {
      k::adamw8bit_update(master, m_codes, m_absmax, v_codes, v_absmax, g, n, first_block, a.lr,
                          a.beta1, a.beta2, a.eps, a.weight_decay, a.bias_corr1, a.bias_corr2,
                          a.grad_scale);
    });
  }
  void quantize_blocks(bool signed_map, const float* x, size_t n, size_t first_block,
                       uint8_t* codes, float* absmax) override {
    k::quantize_blocks(quant_map(signed_map), x, n, first_block, codes, absmax);
  }
  void dequantize_blocks(bool signed_map, const uint8_t* codes, const float* absmax, size_t n,
                         size_t first_block, float* out) override {
    k::dequantize_blocks(quant_map(signed_map), codes, absmax, n, first_block, out);
  }

  void adafactor_sq_sums(const void* grad, DType grad_dtype, size_t n, int64_t first, int64_t cols,
                         float grad_scale, float eps1, double* row_sums,
                         double* col_sums) override {
    with_grad(grad_dtype, grad, [&](const auto* g) {
      k::adafactor_sq_sums(g, n, first, cols, grad_scale, eps1, row_sums, col_sums);
    });
  }
  double adafactor_factored_sq(const void* grad, DType grad_dtype, size_t n, int64_t first,
                               int64_t cols, float grad_scale, const float* rfac,
                               const float* cfac) override {
    return with_grad(grad_dtype, grad, [&](const auto* g) {
      return k::adafactor_factored_sq(g, n, first, cols, grad_scale, rfac, cfac);
    });
  }
  double adafactor_unfactored_v(const void* grad, DType grad_dtype, float* v, size_t n,
                                float grad_scale, float beta2t, float eps1) override {
    return with_grad(grad_dtype, grad, [&](const auto* g) {
      return k::adafactor_unfactored_v(g, v, n, grad_scale, beta2t, eps1);
    });
  }
  void adafactor_apply(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
                       int64_t first, int64_t cols, const float* rfac, const float* cfac,
                       const float* v, const AdafactorApplyArgs& a) override {
    with_grad(grad_dtype, grad, [&](const auto* g) {
      k::adafactor_apply(master, m, g, n, first, cols, rfac, cfac, v, a.grad_scale, a.scale, a.lr,
                         a.beta1, a.weight_decay);
    });
  }
};

}  // namespace

std::unique_ptr<OptimizerOps> make_cpu_optimizer_ops() {
  return std::make_unique<CpuOptimizerOps>();
}

}  // namespace zt
