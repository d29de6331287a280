// Learning-rate schedules with DeepSpeed's semantics (WarmupLR, WarmupDecayLR, WarmupCosineLR).
//
// Note [scheduler step alignment]: DeepSpeed builds the scheduler with last_batch_iteration = -1,
// applies the optimizer step, then calls scheduler.step(). So optimizer step s (0-based) runs with
// the learning rate of last_batch_iteration = s - 1: at s = 0 WarmupLR/WarmupDecayLR give
// warmup_min_lr and WarmupCosineLR gives 0. We reproduce that exactly so a DeepSpeed config trains
// with the same learning rates here.
#pragma once

#include <cstdint>

#include "runtime/config/job_config.h"

namespace zt {

// The learning rate of optimizer step `step` (0-based). `base_lr` is optimizer.params.lr (used by
// the constant schedule and as WarmupCosineLR's peak).
double learning_rate(const SchedulerConfig& sched, double base_lr, int64_t step);

}  // namespace zt
