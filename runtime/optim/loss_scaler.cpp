#include "runtime/optim/loss_scaler.h"

#include <algorithm>
#include <cmath>

namespace zt {

LossScaler::LossScaler(const Fp16Config& cfg) {
  enabled_ = cfg.enabled;
  if (!enabled_) return;
  dynamic_ = cfg.loss_scale == 0.0;
  scale_ = dynamic_ ? std::ldexp(1.0, cfg.initial_scale_power) : cfg.loss_scale;
  min_scale_ = cfg.min_loss_scale;
  window_ = cfg.loss_scale_window;
  hysteresis_ = hysteresis_left_ = cfg.hysteresis;
}

Status LossScaler::update(bool overflow) {
  if (!enabled_) return Status::ok();
  if (!overflow) {
    if (dynamic_ && ++good_steps_ % window_ == 0) {
      scale_ *= 2.0;
      hysteresis_left_ = hysteresis_;  // DeepSpeed restores hysteresis when the scale grows
    }
    return Status::ok();
  }
  if (!dynamic_) return Status::ok();  // a static scale only skips the step
  good_steps_ = 0;
  if (hysteresis_left_ > 1) {
    --hysteresis_left_;
  } else if (scale_ <= min_scale_) {
    return make_error(StatusCode::kAborted,
                      "fp16 gradients overflowed with the loss scale already at its minimum ({}): "
                      "training diverged. Lower the learning rate, enable gradient_clipping, "
                      "lower fp16.min_loss_scale, or train in bf16",
                      min_scale_);
  } else {
    scale_ = std::max(min_scale_, scale_ / 2.0);
  }
  return Status::ok();
}

void LossScaler::restore(const State& s) {
  scale_ = s.scale;
  good_steps_ = s.good_steps;
  hysteresis_left_ = s.hysteresis_left;
}

}  // namespace zt
