#include "runtime/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace zt {
namespace {

// DeepSpeed's warm-up fraction at iteration `it` (< warmup_num_steps).
double warmup_gamma(const SchedulerConfig& s, int64_t it) {
  const double n = static_cast<double>(std::max<int64_t>(2, s.warmup_num_steps));
  if (s.warmup_type == WarmupType::kLog)
    return std::log(static_cast<double>(it) + 1.0) / std::log(n);
  return static_cast<double>(it) / n;
}

}  // namespace

double learning_rate(const SchedulerConfig& s, double base_lr, int64_t step) {
  if (s.type.empty()) return base_lr;
  const int64_t it = step - 1;  // Note [scheduler step alignment]
  const int64_t warmup = std::max<int64_t>(2, s.warmup_num_steps);
  if (s.type == "WarmupCosineLR") {
    if (it < 0) return 0.0;
    double ratio;
    if (it < warmup) {
      ratio = s.warmup_min_ratio + warmup_gamma(s, it) * (1.0 - s.warmup_min_ratio);
    } else {
      const double real_step = static_cast<double>(it - warmup + 1);
      const double real_total = static_cast<double>(s.total_num_steps - warmup);
      const double cosine = (1.0 + std::cos(M_PI * real_step / real_total)) / 2.0;
      ratio = std::max(0.0, s.cos_min_ratio + (1.0 - s.cos_min_ratio) * cosine);
    }
    return base_lr * ratio;
  }
  // WarmupLR and WarmupDecayLR
  if (it < 0) return s.warmup_min_lr;
  double gamma;
  if (it < warmup) {
    gamma = warmup_gamma(s, it);
  } else if (s.type == "WarmupDecayLR") {
    gamma = std::max(0.0, static_cast<double>(s.total_num_steps - it) /
                              std::max(1.0, static_cast<double>(s.total_num_steps - warmup)));
  } else {
    gamma = 1.0;
  }
  return s.warmup_min_lr + (s.warmup_max_lr - s.warmup_min_lr) * gamma;
}

}  // namespace zt
