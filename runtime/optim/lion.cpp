// Lion (Chen et al. 2023): one moment, exp_avg, as an fp32 store array; decoupled weight decay on
// parameters of two or more dimensions.
#include "runtime/optim/optimizer_impls.h"

namespace zt::optim_impl {
namespace {

class Lion final : public Fp32StateOptimizer {
 public:
  using Fp32StateOptimizer::Fp32StateOptimizer;
  std::vector<StoreArray> store_arrays() const override { return {{"exp_avg", 4}}; }
  void update(const OptimSegment& seg, int64_t, int64_t count, void* const* arrays,
              const void* grad, DType grad_dtype, const OptimizerStepArgs& a) override {
    const float wd = seg.spec->weight_decay ? cfg_.weight_decay : 0.0f;
    const LionArgs args{a.lr, cfg_.beta1, cfg_.beta2, wd, a.grad_scale};
    backend_.optimizer_ops().lion(static_cast<float*>(arrays[0]), static_cast<float*>(arrays[1]),
                                  grad, grad_dtype, static_cast<size_t>(count), args);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_lion(const OptimizerConfig& cfg, std::vector<OptimSegment> segs,
                                     bool partitioned, Backend& backend) {
  return std::unique_ptr<Optimizer>(new Lion(cfg, std::move(segs), partitioned, backend));
}

}  // namespace zt::optim_impl
