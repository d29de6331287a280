// AdamW (and DeepSpeed's Adam, which decays decoupled by default): exp_avg and exp_avg_sq as fp32
// store arrays.
#include "runtime/optim/optimizer_impls.h"

namespace zt::optim_impl {
namespace {

class AdamW final : public Fp32StateOptimizer {
 public:
  using Fp32StateOptimizer::Fp32StateOptimizer;
  std::vector<StoreArray> store_arrays() const override {
    return {{"exp_avg", 4}, {"exp_avg_sq", 4}};
  }
  void update(const OptimSegment& seg, int64_t, int64_t count, void* const* arrays,
              const void* grad, DType grad_dtype, const OptimizerStepArgs& a) override {
    const float wd = seg.spec->weight_decay ? cfg_.weight_decay : 0.0f;
    const AdamWArgs args{a.lr,
                         cfg_.beta1,
                         cfg_.beta2,
                         cfg_.eps,
                         wd,
                         bias_correction(cfg_.beta1, a.t),
                         bias_correction(cfg_.beta2, a.t),
                         a.grad_scale};
    backend_.optimizer_ops().adamw(static_cast<float*>(arrays[0]), static_cast<float*>(arrays[1]),
                                   static_cast<float*>(arrays[2]), grad, grad_dtype,
                                   static_cast<size_t>(count), args);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_adamw(const OptimizerConfig& cfg, std::vector<OptimSegment> segs,
                                      bool partitioned, Backend& backend) {
  return std::unique_ptr<Optimizer>(new AdamW(cfg, std::move(segs), partitioned, backend));
}

}  // namespace zt::optim_impl
