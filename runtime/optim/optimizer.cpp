#include "runtime/optim/optimizer.h"

#include "runtime/optim/optimizer_impls.h"

namespace zt {

std::vector<CheckpointStateInfo> optimizer_checkpoint_states(const OptimizerConfig& cfg) {
  if (cfg.is_adam()) return {{"exp_avg"}, {"exp_avg_sq"}};
  if (cfg.type == "SGD") {
    if (cfg.momentum == 0.0f) return {};
    return {{"momentum_buffer"}};
  }
  if (cfg.type == "Lion") return {{"exp_avg"}};
  // Adafactor (Hugging Face's state names).
  std::vector<CheckpointStateInfo> s;
  if (cfg.use_first_moment) s.push_back({"exp_avg"});
  s.push_back({"exp_avg_sq", false, StateScope::kUnfactored});
  s.push_back({"exp_avg_sq_row", true, StateScope::kFactored, true});
  s.push_back({"exp_avg_sq_col", true, StateScope::kFactored, false});
  return s;
}

bool state_applies(const CheckpointStateInfo& s, const ParamSpec& spec) {
  const bool factored = spec.shape.size() >= 2;
  switch (s.scope) {
    case StateScope::kAll:
      return true;
    case StateScope::kFactored:
      return factored;
    case StateScope::kUnfactored:
      return !factored;
  }
  return true;
}

int64_t state_numel(const CheckpointStateInfo& s, const ParamSpec& spec) {
  if (!s.whole) return spec.numel();
  const int64_t cols = spec.shape.back();
  return s.rows ? spec.numel() / cols : cols;
}

double optimizer_state_bytes_per_param(const OptimizerConfig& cfg) {
  double bytes = 4.0;  // fp32 master weights
  if (cfg.is_8bit()) return bytes + 2.0 + 2.0 * 4.0 / 256.0;
  for (const CheckpointStateInfo& s : optimizer_checkpoint_states(cfg))
    if (!s.whole && s.scope == StateScope::kAll) bytes += 4.0;
  return bytes;
}

Result<std::unique_ptr<Optimizer>> Optimizer::create(const OptimizerConfig& cfg,
                                                     const ParamLayout& layout,
                                                     std::vector<OptimSegment> segments,
                                                     bool partitioned, Backend& backend,
                                                     Backend* comm_backend) {
  for (size_t i = 1; i < segments.size(); ++i)
    ZT_CHECK(segments[i - 1].local + segments[i - 1].count <= segments[i].local,
             "optimizer segments must be sorted and disjoint");
  if (cfg.is_adam() && !cfg.is_8bit())
    return optim_impl::make_adamw(cfg, std::move(segments), partitioned, backend);
  if (cfg.is_8bit())
    return optim_impl::make_adamw8bit(cfg, std::move(segments), partitioned, backend);
  if (cfg.type == "Adafactor")
    return optim_impl::make_adafactor(cfg, layout, std::move(segments), partitioned, backend,
                                      comm_backend ? *comm_backend : backend);
  if (cfg.type == "SGD")
    return optim_impl::make_sgd(cfg, std::move(segments), partitioned, backend);
  if (cfg.type == "Lion")
    return optim_impl::make_lion(cfg, std::move(segments), partitioned, backend);
  return make_error(StatusCode::kInvalidArgument, "optimizer.type '{}' is not supported", cfg.type);
}

Result<float*> Optimizer::side_floats(int64_t n) {
  ZT_ASSIGN_OR_RETURN(Buffer b, backend_.allocate(static_cast<size_t>(std::max<int64_t>(n, 1)) * 4,
                                                  MemCategory::kOptimizerStates));
  float* p = static_cast<float*>(b.data());
  side_.push_back(std::move(b));
  return p;
}

int64_t Optimizer::side_bytes() const {
  int64_t bytes = 0;
  for (const Buffer& b : side_) bytes += static_cast<int64_t>(b.bytes());
  return bytes;
}

}  // namespace zt
