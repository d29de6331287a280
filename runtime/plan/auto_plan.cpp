#include "runtime/plan/auto_plan.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace zt {

std::string PlanChoice::describe() const {
  std::string s = fmt::format("stage {}", stage);
  s += offload_optimizer == OffloadDevice::kNone
           ? ", optimizer state on the device"
           : fmt::format(", optimizer state offloaded to {}",
                         offload_device_name(offload_optimizer));
  if (offload_param != OffloadDevice::kNone)
    s += fmt::format(", parameters offloaded to {}", offload_device_name(offload_param));
  s += fmt::format(", checkpointing {}", checkpoint_policy_name(policy));
  if (policy == CheckpointPolicy::kEveryN) s += fmt::format(" (n={})", every_n);
  s += fmt::format(", micro-batch {} x {} accumulation", micro_batch, accumulation);
  return s;
}

namespace {

struct Offload {
  OffloadDevice optimizer, param;
};

double recompute_factor(CheckpointPolicy p) {
  switch (p) {
    case CheckpointPolicy::kNone:
      return 1.0;
    case CheckpointPolicy::kSelective:
      return 1.08;
    case CheckpointPolicy::kEveryN:
    case CheckpointPolicy::kLayer:
      return 1.33;
  }
  return 1.0;
}

double offload_cost(OffloadDevice d) {
  return d == OffloadDevice::kCpu ? 0.3 : d == OffloadDevice::kNvme ? 0.8 : 0.0;
}

double relative_time(const PlanChoice& c, int64_t largest_micro) {
  const double micro = 1.0 + 0.15 * std::log2(static_cast<double>(largest_micro) /
                                              static_cast<double>(c.micro_batch));
  double t = recompute_factor(c.policy) * micro;
  if (c.stage == 3) t += 0.10;
  t += offload_cost(c.offload_optimizer);
  if (c.offload_param == OffloadDevice::kCpu) t += 0.3;
  if (c.offload_param == OffloadDevice::kNvme) t += 0.8;
  return t;
}

std::vector<int64_t> micro_batches(const JobConfig& cfg, int world, bool vary) {
  if (!vary || !cfg.autos.micro_batch) {
    if (cfg.train_micro_batch_size_per_gpu > 0) return {cfg.train_micro_batch_size_per_gpu};
  }
  const int64_t per_rank = cfg.train_batch_size / world;
  std::vector<int64_t> out;
  for (int64_t m = per_rank; m >= 1; --m)
    if (per_rank % m == 0) out.push_back(m);
  return out;
}

}  // namespace

JobConfig apply_plan_choice(const JobConfig& cfg, const PlanChoice& c, int world) {
  JobConfig out = cfg;
  out.zero.stage = c.stage;
  out.zero.offload_optimizer.device = c.offload_optimizer;
  out.zero.offload_param.device = c.offload_param;
  if (cfg.autos.overlap_comm_follows_stage) out.zero.overlap_comm = c.stage == 3;
  out.activation_checkpointing.policy = c.policy;
  out.activation_checkpointing.every_n = c.policy == CheckpointPolicy::kEveryN ? c.every_n : 1;
  out.train_micro_batch_size_per_gpu = c.micro_batch;
  out.gradient_accumulation_steps = c.accumulation;
  out.train_batch_size = c.micro_batch * c.accumulation * world;
  out.autos = AutoKeys{};
  return out;
}

Result<std::vector<PlanCandidate>> evaluate_plans(const JobConfig& cfg, int world,
                                                  const MemoryBudget& budget,
                                                  const EstimateOptions& options,
                                                  bool every_combination) {
  const ZeroConfig& z = cfg.zero;
  const bool vary_stage = every_combination || cfg.autos.stage;
  const bool vary_policy = every_combination || cfg.autos.checkpoint_policy;
  // Batch sizes resolved first (resolve_batch_sizes): train_batch_size is what every choice keeps.
  if (cfg.train_batch_size <= 0 || cfg.train_batch_size % world != 0 ||
      (!cfg.autos.micro_batch &&
       (cfg.train_micro_batch_size_per_gpu <= 0 ||
        cfg.train_batch_size % (cfg.train_micro_batch_size_per_gpu * world) != 0)))
    return make_error(StatusCode::kInvalidArgument,
                      "batch sizes not resolved for {} ranks (train_batch_size {}, "
                      "train_micro_batch_size_per_gpu {})",
                      world, cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu);

  std::vector<int> stages = {z.stage};
  if (vary_stage) stages = {0, 1, 2, 3};
  // Offloads set in the config are kept (Note [auto plan]).
  const bool configured_offload = z.offload_optimizer.device != OffloadDevice::kNone ||
                                  z.offload_param.device != OffloadDevice::kNone;
  std::vector<Offload> offloads = {{z.offload_optimizer.device, z.offload_param.device}};
  if (vary_stage && !configured_offload) {
    offloads = {{OffloadDevice::kNone, OffloadDevice::kNone},
                {OffloadDevice::kCpu, OffloadDevice::kNone},
                {OffloadDevice::kCpu, OffloadDevice::kCpu}};
    if (every_combination && !z.offload_optimizer.nvme_path.empty())
      offloads.push_back({OffloadDevice::kNvme, OffloadDevice::kNone});
  }
  const int n = std::max(2, cfg.activation_checkpointing.every_n);
  std::vector<std::pair<CheckpointPolicy, int>> policies = {
      {cfg.activation_checkpointing.policy, cfg.activation_checkpointing.every_n}};
  if (vary_policy)
    policies = {{CheckpointPolicy::kNone, 1},
                {CheckpointPolicy::kSelective, 1},
                {CheckpointPolicy::kEveryN, n},
                {CheckpointPolicy::kLayer, 1}};
  const std::vector<int64_t> micros = micro_batches(cfg, world, true);
  if (micros.empty())
    return make_error(StatusCode::kInvalidArgument,
                      "no micro-batch: train_batch_size {} on {} ranks", cfg.train_batch_size,
                      world);
  const int64_t largest = micros.front();
  const double usable_device = static_cast<double>(budget.device_bytes) * (1.0 - budget.margin);
  const double usable_host = static_cast<double>(budget.host_bytes) * (1.0 - budget.margin);

  std::vector<PlanCandidate> out;
  for (int stage : stages)
    for (const Offload& off : offloads) {
      if (off.optimizer != OffloadDevice::kNone && stage < 1) continue;
      if (off.param != OffloadDevice::kNone && stage < 3) continue;
      for (const auto& [policy, every] : policies)
        for (int64_t micro : micros) {
          PlanCandidate c;
          // The global batch is fixed: the accumulation follows the micro-batch.
          c.choice = {stage,
                      off.optimizer,
                      off.param,
                      policy,
                      every,
                      micro,
                      cfg.train_batch_size / (micro * world)};
          const JobConfig concrete = apply_plan_choice(cfg, c.choice, world);
          ZT_ASSIGN_OR_RETURN(c.estimate, estimate_memory_max(concrete, world, options));
          const bool cpu = cfg.backend == BackendKind::kCpu;
          c.device_needed = c.estimate.device_total() + (cpu ? c.estimate.host_total() : 0);
          c.host_needed = cpu ? 0 : c.estimate.host_total();
          c.relative_time = relative_time(c.choice, largest);
          if (budget.device_bytes > 0 && static_cast<double>(c.device_needed) > usable_device) {
            c.fits = false;
            c.why_not = fmt::format("needs {} of {} usable", bytes_text(c.device_needed),
                                    bytes_text(static_cast<int64_t>(usable_device)));
          } else if (budget.host_bytes > 0 && static_cast<double>(c.host_needed) > usable_host) {
            c.fits = false;
            c.why_not = fmt::format("needs {} of host memory, {} usable", bytes_text(c.host_needed),
                                    bytes_text(static_cast<int64_t>(usable_host)));
          }
          out.push_back(std::move(c));
        }
    }
  std::stable_sort(out.begin(), out.end(), [](const PlanCandidate& a, const PlanCandidate& b) {
    if (std::fabs(a.relative_time - b.relative_time) > 1e-9)
      return a.relative_time < b.relative_time;
    if (a.choice.stage != b.choice.stage) return a.choice.stage < b.choice.stage;
    if (a.choice.micro_batch != b.choice.micro_batch)
      return a.choice.micro_batch > b.choice.micro_batch;
    return a.device_needed < b.device_needed;
  });
  return out;
}

MemoryBudget budget_with_config(const JobConfig& cfg, MemoryBudget reported) {
  if (cfg.memory_budget > 0) {
    reported.device_bytes = cfg.memory_budget;
    reported.source = "memory_budget in the config";
  }
  return reported;
}

Result<AutoDecision> resolve_auto(JobConfig& cfg, int world, MemoryBudget reported,
                                  const EstimateOptions& options) {
  const MemoryBudget budget = budget_with_config(cfg, std::move(reported));
  if (budget.device_bytes <= 0)
    return make_error(StatusCode::kInvalidArgument,
                      "`auto` needs a memory budget: set memory_budget in the config (bytes per "
                      "rank, e.g. 16GiB); the workers reported none");
  ZT_ASSIGN_OR_RETURN(std::vector<PlanCandidate> plans,
                      evaluate_plans(cfg, world, budget, options, false));
  if (plans.empty())
    return make_error(StatusCode::kInvalidArgument, "auto: no combination to choose from");
  auto it = std::find_if(plans.begin(), plans.end(), [](const PlanCandidate& c) { return c.fits; });
  if (it == plans.end()) {
    const auto smallest = std::min_element(plans.begin(), plans.end(),
                                           [](const PlanCandidate& a, const PlanCandidate& b) {
                                             return a.device_needed < b.device_needed;
                                           });
    return make_error(StatusCode::kOutOfMemory,
                      "auto: nothing fits {} per rank ({}, {:.0f}% kept free): the smallest "
                      "combination, {}, {}",
                      bytes_text(budget.device_bytes), budget.source, budget.margin * 100,
                      smallest->choice.describe(), smallest->why_not);
  }
  AutoDecision d;
  d.chosen = *it;
  const MemoryEstimate& e = d.chosen.estimate;
  std::vector<std::string> keys;
  if (cfg.autos.stage) keys.push_back("zero_optimization.stage");
  if (cfg.autos.micro_batch) keys.push_back("train_micro_batch_size_per_gpu");
  if (cfg.autos.checkpoint_policy) keys.push_back("activation_checkpointing.policy");
  std::string key_list;
  for (const std::string& k : keys) key_list += (key_list.empty() ? "" : ", ") + k;
  d.reasons.push_back(fmt::format(
      "auto ({}): chose {} on {} ranks (train_batch_size {})", key_list, d.chosen.choice.describe(),
      world, d.chosen.choice.micro_batch * d.chosen.choice.accumulation * world));
  std::string parts;
  for (size_t k = 0; k < kNumMemCategories; ++k) {
    const int64_t b = e.device[k] + (cfg.backend == BackendKind::kCpu ? e.host[k] : 0);
    if (b > 0)
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ",
                           mem_category_name(static_cast<MemCategory>(k)), bytes_text(b));
  }
  d.reasons.push_back(
      fmt::format("auto: it needs {} per rank ({}) of the budget {} ({}) less {:.0f}% kept free",
                  bytes_text(d.chosen.device_needed), parts, bytes_text(budget.device_bytes),
                  budget.source, budget.margin * 100));
  int shown = 0;
  for (auto f = plans.begin(); f != it && shown < 3; ++f, ++shown)
    d.reasons.push_back(
        fmt::format("auto: faster but does not fit: {}: {}", f->choice.describe(), f->why_not));
  if (it != plans.begin() && std::distance(plans.begin(), it) > 3)
    d.reasons.push_back(fmt::format("auto: ... and {} more faster combinations that do not fit",
                                    std::distance(plans.begin(), it) - 3));
  cfg = apply_plan_choice(cfg, d.chosen.choice, world);
  return d;
}

}  // namespace zt
