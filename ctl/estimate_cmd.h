// `ztctl estimate`: will it fit? Per-rank memory of a config for every ZeRO stage x offload x
// activation checkpointing policy (runtime/plan/auto_plan.h, the same estimator and planner the
// coordinator uses), which combinations fit a budget, and what `auto` would choose. Reads only the
// config; no coordinator, no workers.
#pragma once

#include <ostream>
#include <string>

namespace zt::ctl {

struct EstimateArgs {
  std::string config_path;
  int world = 0;
  std::string device_mem;  // per rank ("16GiB"); empty: memory_budget in the config, or none
  std::string host_mem;    // per rank, CUDA only (the host memory beside each GPU)
  int cpu_threads = 0;     // OpenMP threads per worker (CPU attention scratch); 0: this process's
  bool json = false;
};

// Prints the table (or one JSON object) to `out`; errors to `err`. Returns the exit code: 0, 1 for
// a bad config or argument.
int run_estimate(const EstimateArgs& args, std::ostream& out, std::ostream& err);

}  // namespace zt::ctl
