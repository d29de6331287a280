// The optimizers behind Optimizer::create, one per file (adamw.cpp, adamw8bit.cpp, adafactor.cpp,
// sgd.cpp, lion.cpp). Internal to runtime/optim.
#pragma once

#include <cmath>
#include <memory>

#include "runtime/optim/optimizer.h"

namespace zt::optim_impl {

std::unique_ptr<Optimizer> make_adamw(const OptimizerConfig&, std::vector<OptimSegment>, bool,
                                      Backend&);
Result<std::unique_ptr<Optimizer>> make_adamw8bit(const OptimizerConfig&, std::vector<OptimSegment>,
                                                  bool, Backend&);
// The last backend holds the buffers of Adafactor's all-reduces (Optimizer::create).
Result<std::unique_ptr<Optimizer>> make_adafactor(const OptimizerConfig&, const ParamLayout&,
                                                  std::vector<OptimSegment>, bool, Backend&,
                                                  Backend&);
std::unique_ptr<Optimizer> make_sgd(const OptimizerConfig&, std::vector<OptimSegment>, bool,
                                    Backend&);
std::unique_ptr<Optimizer> make_lion(const OptimizerConfig&, std::vector<OptimSegment>, bool,
                                     Backend&);

// An optimizer whose every checkpoint state k is fp32 store array k + 1 (AdamW, SGD, Lion): the
// checkpoint reads and writes go straight through the store.
class Fp32StateOptimizer : public Optimizer {
 public:
  using Optimizer::Optimizer;
  int store_array_of(int k) const override { return k + 1; }
  Status read_state(int k, int, int64_t begin, int64_t count, StateStore& store,
                    float* out) override {
    return store.read(k + 1, begin, count, out);
  }
  Status write_state(int k, int s, const float* in, StateStore& store) override {
    const OptimSegment& seg = segments_[static_cast<size_t>(s)];
    return store.write(k + 1, seg.local, seg.count, in);
  }
};

// AdamW's bias corrections for step t.
inline float bias_correction(float beta, int64_t t) {
  return static_cast<float>(1.0 - std::pow(static_cast<double>(beta), static_cast<double>(t)));
}

}  // namespace zt::optim_impl
