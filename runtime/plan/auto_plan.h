// The planner behind `auto`: enumerates the combinations of ZeRO stage, offload, activation
// checkpointing policy and micro-batch that a config leaves open, estimates each one's memory
// (runtime/plan/memory_estimator.h), and picks the fastest that fits the budget with a safety
// margin. `ztctl estimate` shows the same table, so what a user reads is what the coordinator
// decides with.
//
// Note [auto plan]
// Which keys vary: zero_optimization.stage: auto tries stages 0-3 and, when the config sets no
// offload, CPU offload of the optimizer state (stages 1-3) and of the parameters too (stage 3);
// an offload set in the config is kept. activation_checkpointing.policy: auto tries none,
// selective, every_n (the config's every_n, at least 2) and layer.
// train_micro_batch_size_per_gpu: auto tries every divisor of train_batch_size / world, and
// gradient_accumulation_steps follows, so the global batch (and the step's math) is unchanged.
// "Fastest" is a model, not a measurement: relative step time =
//     recompute (none 1, selective 1.08, every_n and layer 1.33: the blocks' forward runs twice)
//   x micro-batch efficiency (1 + 0.15 log2(largest candidate / micro-batch))
//   + 0.10 at stage 3 (the parameters' second all-gather) + 0.3 for CPU offload of the optimizer
//   state, 0.8 for NVMe, 0.3 for CPU offload of the parameters.
// Ties go to the lower stage, then the larger micro-batch, then the smaller memory.
// Fits: the estimate (the sum of its category peaks, Note [memory estimate]) is at most the budget
// less the margin (10%). On the CPU backend the compute memory is host memory, so the device and
// host parts are added and compared with the one budget.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/plan/memory_estimator.h"

namespace zt {

struct MemoryBudget {
  int64_t device_bytes = 0;  // per rank; on the CPU backend the host memory per rank. 0: unknown
  int64_t host_bytes = 0;    // per rank (CUDA: the host memory beside the device); 0: unknown
  double margin = 0.10;      // kept free
  std::string source;        // where the numbers came from, for the reasons
};

// `reported` with the config's memory_budget, when it has one, in place of the device budget.
MemoryBudget budget_with_config(const JobConfig& cfg, MemoryBudget reported);

struct PlanChoice {
  int stage = 0;
  OffloadDevice offload_optimizer = OffloadDevice::kNone;
  OffloadDevice offload_param = OffloadDevice::kNone;
  CheckpointPolicy policy = CheckpointPolicy::kNone;
  int every_n = 1;
  int64_t micro_batch = 0;
  int64_t accumulation = 0;

  // "stage 2, optimizer on device, checkpointing none, micro-batch 8 x 2"
  std::string describe() const;
};

struct PlanCandidate {
  PlanChoice choice;
  MemoryEstimate estimate;     // the largest over the ranks
  int64_t device_needed = 0;   // compared with the device budget (CPU: device + host)
  int64_t host_needed = 0;     // compared with the host budget (CUDA only)
  double relative_time = 0.0;  // Note [auto plan]; 1 = stage 0-2, no recompute, largest batch
  bool fits = true;            // within the budget (true when the budget is unknown)
  std::string why_not;         // when it does not fit
};

// The combinations the config leaves open (its `auto` keys), or with `every_combination` all of
// stage x offload x policy at the config's micro-batch (ztctl estimate's table; a micro-batch
// left `auto` is then tried at every divisor too). Sorted fastest first.
Result<std::vector<PlanCandidate>> evaluate_plans(const JobConfig& cfg, int world,
                                                  const MemoryBudget& budget,
                                                  const EstimateOptions& options,
                                                  bool every_combination = false);

// `cfg` with the choice applied: concrete, batch sizes resolved for `world`, no `auto` left.
JobConfig apply_plan_choice(const JobConfig& cfg, const PlanChoice& choice, int world);

struct AutoDecision {
  PlanCandidate chosen;
  std::vector<std::string> reasons;  // one line each, for events.log and ztctl status
};

// Resolves the config's `auto` keys for `world` ranks within `budget` (memory_budget in the config
// overrides budget.device_bytes), rewriting `cfg`. An error names the smallest combination and
// what it needs when none fits, or says that no budget is known.
Result<AutoDecision> resolve_auto(JobConfig& cfg, int world, MemoryBudget budget,
                                  const EstimateOptions& options);

}  // namespace zt
