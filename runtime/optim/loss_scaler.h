// Dynamic loss scaling for fp16 with DeepSpeed's rules: start at 2^initial_scale_power; on overflow
// skip the step and, once `hysteresis` consecutive overflows have been seen, halve the scale (never
// below min_loss_scale); after `loss_scale_window` clean steps double it. A static scale
// (fp16.loss_scale > 0) never changes (an overflow only skips the step). An overflow with the scale
// already at its minimum is an error (DeepSpeed's raise_error_at_min_scale), not a loop of skipped
// steps.
#pragma once

#include <cstdint>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"

namespace zt {

class LossScaler {
 public:
  // Disabled (scale 1, never overflows) unless fp16 is enabled.
  explicit LossScaler(const Fp16Config& cfg);

  double scale() const { return scale_; }
  bool enabled() const { return enabled_; }

  // Records the outcome of a step. Returns an error when the scale is stuck at its minimum.
  Status update(bool overflow);

  // State for checkpoints.
  struct State {
    double scale;
    int64_t good_steps;
    int hysteresis_left;
  };
  State state() const { return {scale_, good_steps_, hysteresis_left_}; }
  void restore(const State& s);

 private:
  bool enabled_ = false;
  bool dynamic_ = false;
  double scale_ = 1.0;
  double min_scale_ = 1.0;
  int64_t window_ = 1000;
  int hysteresis_ = 2;
  int hysteresis_left_ = 2;
  int64_t good_steps_ = 0;
};

}  // namespace zt
