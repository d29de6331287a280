// The memory estimator: how many bytes each rank of a job will hold per category at its peak,
// before the job runs. The coordinator (to check a plan and to choose `auto` values) and
// `ztctl estimate` both call this one function, so what the planner promises and what the user is
// shown cannot differ.
//
// Note [memory estimate]
// The estimate is derived from the config, the partition plan (make_partition_plan, the layout
// every rank will use) and the model's shapes, category by category, following what the runtime
// allocates (runtime/zero/zero_engine.cpp, runtime/model/gpt2.cpp, runtime/optim, runtime/offload):
//   parameters        working weights: full (stages 0-2; fp32 stage 0 shares the master weights),
//                     or the rank's shard + persistent buckets + the units gathered at once
//                     (stage 3: the embedding unit for the whole micro-batch, the unit in use and
//                     the prefetch window; simulated over two micro-batches, since the engine pools
//                     its gather buffers);
//   gradients         full (stages 0-1) + the reduced shard (stages 1-3) + the pooled unit
//                     gradient buffers of stages 2-3 (simulated the same way);
//   optimizer states  fp32 master weights and the optimizer's per-element arrays over the owned
//                     range, plus its side state (8-bit absmax blocks, Adafactor's factored
//                     moments), in device memory, host memory (offload cpu) or NVMe with host
//                     streaming buffers (offload nvme);
//   activations       every buffer the activation checkpointing policy keeps, plus the backward's
//                     gradient and scratch buffers (Note [activation checkpointing policies]);
//   communication     the reduce-scatter receive buffers of stages 2-3 and the scalars of the
//                     loss, the gradient norm and the worker's control flags;
//   workspace         the micro-batch's tokens and the largest scratch any kernel asks for (the
//                     CPU kernels' own *_scratch_bytes; on CUDA the cuBLASLt workspace plus the
//                     kernels' largest workspace).
// Every buffer is rounded to the backend's 64-byte allocation granule. Categories peak at
// different moments of a step, so the sum of the category peaks bounds the total peak from above;
// the planner compares that sum with the budget.
// Not included: checkpoint snapshots (host memory, while a checkpoint is taken), the process
// itself (code, MPI, the CUDA context), and the CUDA caching allocator's rounding.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/memory/memory_tracker.h"

namespace zt {

struct EstimateOptions {
  // OpenMP threads per worker: the CPU attention kernels keep per-thread scratch. 0: this
  // process's omp_get_max_threads().
  int cpu_threads = 0;
  // The zt-worker's own control buffer (its stop/checkpoint flags, one collective buffer). Off
  // when estimating a Trainer that runs without the worker around it (tests).
  bool worker_buffers = true;
};

using CategoryBytes = std::array<int64_t, kNumMemCategories>;

struct MemoryEstimate {
  int rank = 0;
  // Peak bytes per category (MemCategory order) during a step, in the compute backend's memory
  // (device memory on CUDA, host memory on the CPU backend).
  CategoryBytes device{};
  // Host memory the engine adds beside it: offloaded optimizer state (the arrays, or NVMe
  // streaming buffers), offloaded parameters, host staging of gradients.
  CategoryBytes host{};
  int64_t nvme_bytes = 0;  // files under nvme_path (optimizer state and parameters)

  int64_t device_total() const;
  int64_t host_total() const;
};

// The estimate for rank `rank` of a job of `world` ranks. `cfg` must be concrete: batch sizes
// resolved for `world`, no `auto` left.
Result<MemoryEstimate> estimate_memory(const JobConfig& cfg, int world, int rank,
                                       const EstimateOptions& options = {});
// The largest of every rank's estimate, category by category (ranks differ a little where the
// shard boundaries cut parameters differently: 8-bit blocks, Adafactor's factored state).
Result<MemoryEstimate> estimate_memory_max(const JobConfig& cfg, int world,
                                           const EstimateOptions& options = {});

}  // namespace zt
