// SGD with momentum and Nesterov (torch.optim.SGD): the momentum buffer as an fp32 store array,
// none without momentum. Weight decay is L2 (added to the gradient), as in torch, on parameters of
// two or more dimensions.
#include "runtime/optim/optimizer_impls.h"

namespace zt::optim_impl {
namespace {

class Sgd final : public Fp32StateOptimizer {
 public:
  using Fp32StateOptimizer::Fp32StateOptimizer;
  std::vector<StoreArray> store_arrays() const override {
    if (cfg_.momentum == 0.0f) return {};
    return {{"momentum_buffer", 4}};
  }
  void update(const OptimSegment& seg, int64_t, int64_t count, void* const* arrays,
              const void* grad, DType grad_dtype, const OptimizerStepArgs& a) override {
    const float wd = seg.spec->weight_decay ? cfg_.weight_decay : 0.0f;
    float* buf = cfg_.momentum == 0.0f ? nullptr : static_cast<float*>(arrays[1]);
    const SgdArgs args{a.lr,          cfg_.momentum, cfg_.dampening, wd,
                       cfg_.nesterov, a.t == 1,      a.grad_scale};
    backend_.optimizer_ops().sgd(static_cast<float*>(arrays[0]), buf, grad, grad_dtype,
                                 static_cast<size_t>(count), args);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_sgd(const OptimizerConfig& cfg, std::vector<OptimSegment> segs,
                                    bool partitioned, Backend& backend) {
  return std::unique_ptr<Optimizer>(new Sgd(cfg, std::move(segs), partitioned, backend));
}

}  // namespace zt::optim_impl
