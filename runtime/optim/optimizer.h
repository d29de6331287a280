// Optimizer: an update rule over the model state one rank holds, and the state it keeps.
//
// Note [optimizer state]
// The ZeRO engine hands the optimizer the rank's segments — the contiguous ranges of parameters it
// owns in its flat owned range (its shard at stage >= 1; every parameter at stage 0) — and a
// StateStore (runtime/offload) holding the fp32 master weights as array 0. The optimizer's state
// is of two kinds:
//   store arrays  one value per element of the owned range, kept in the store beside the master
//                 weights and offloaded with them (AdamW's exp_avg and exp_avg_sq, 8-bit codes,
//                 SGD's momentum buffer, Lion's exp_avg, Adafactor's optional exp_avg);
//   side state    small, always in memory: 8-bit absmax per block and the fp32 moments of small
//                 tensors, Adafactor's factored row/column moments (whole per parameter and the
//                 same on every rank) and its unfactored second moments.
// A step is prepare() (statistics over whole parameters: Adafactor's reductions, collective), then
// update() on every (store chunk x segment) piece in order (Note [state chunks]), so the store can
// stream the state from NVMe.
//
// Memory: the store arrays and the side state are in the memory of the optimizer's backend (the
// compute backend, or the host backend when the state is offloaded; with NVMe the store's chunk
// buffers are host memory and the backend is the host backend), and every update kernel runs
// through that backend's OptimizerOps. That memory may be device memory the host cannot
// dereference (Backend::host_accessible()): host code reaches it only through backend copies, and
// the gradients handed to prepare() and update() must lie in it too (the engine stages them).
//
// Checkpoints see the state as named fp32 tensors per parameter (checkpoint_states()): "ranged"
// ones hold one value per element and are split like the master weights; "whole" ones (Adafactor's
// exp_avg_sq_row/_col) are written once, by the rank holding the parameter's first element, and
// read by every rank. A state may exist only for some parameters (state_applies).
//
// Note [8-bit checkpoints]
// 8-bit moments are checkpointed dequantised (fp32), so a resumed job may cut its blocks anywhere
// (another world size or stage). Resuming on the same layout is still bit-exact: the code maps hold
// exact 0 and +-1, so requantising a dequantised block finds the same absmax (its largest element
// is +-1 * absmax) and the same codes. On another layout the moments are requantised once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/comm/communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/model/gpt2_params.h"
#include "runtime/offload/state_store.h"

namespace zt {

// Elements [param_begin, param_begin + count) of a parameter at [local, local + count) of the
// rank's owned range.
struct OptimSegment {
  int param = 0;
  const ParamSpec* spec = nullptr;
  int64_t param_begin = 0, local = 0, count = 0;
};

struct OptimizerStepArgs {
  float lr = 0.0f;          // the scheduled learning rate
  int64_t t = 0;            // applied steps including this one (1 on the first update)
  float grad_scale = 1.0f;  // multiplies every gradient first: loss-scale unscaling and clipping
};

enum class StateScope {
  kAll,         // every parameter
  kFactored,    // Adafactor: parameters of two or more dimensions
  kUnfactored,  // Adafactor: one-dimensional parameters
};

struct CheckpointStateInfo {
  std::string name;  // tensor-name prefix in shard files ("exp_avg", ...)
  bool whole = false;
  StateScope scope = StateScope::kAll;
  // whole states: rows (true) or columns (false) of the parameter viewed as (rows, last dim)
  bool rows = false;
};

// The states a checkpoint of `cfg`'s optimizer holds, after "master" (which the engine keeps).
std::vector<CheckpointStateInfo> optimizer_checkpoint_states(const OptimizerConfig& cfg);
bool state_applies(const CheckpointStateInfo& s, const ParamSpec& spec);
// Elements of a state for one parameter: the parameter's numel for ranged states, its rows or
// columns for whole ones.
int64_t state_numel(const CheckpointStateInfo& s, const ParamSpec& spec);
// Bytes of optimizer state per parameter (master weights included) for a model of
// `num_parameters`, as this optimizer keeps it: for the memory accounting and the benchmarks.
// The exact side-state bytes depend on the shapes, so this is the per-element part only.
double optimizer_state_bytes_per_param(const OptimizerConfig& cfg);

class Optimizer {
 public:
  // `segments` sorted by `local`, pointing into `layout` (which must outlive the optimizer);
  // `partitioned`: the segments are this rank's share (stage >= 1), so whole-parameter statistics
  // need a reduction over ranks. Side state is allocated from `backend` (the host backend when
  // offloaded) and charged to kOptimizerStates there. The buffers of the optimizer's own
  // collectives come from `comm_backend` (default: `backend`), which must be the memory the
  // communicator works on (device memory for NCCL, even when the state is offloaded).
  static Result<std::unique_ptr<Optimizer>> create(const OptimizerConfig& cfg,
                                                   const ParamLayout& layout,
                                                   std::vector<OptimSegment> segments,
                                                   bool partitioned, Backend& backend,
                                                   Backend* comm_backend = nullptr);
  virtual ~Optimizer() = default;

  const OptimizerConfig& config() const { return cfg_; }
  const std::vector<OptimSegment>& segments() const { return segments_; }
  // Arrays the store keeps after the master weights (store array i+1 = store_arrays()[i]).
  virtual std::vector<StoreArray> store_arrays() const = 0;
  std::vector<CheckpointStateInfo> checkpoint_states() const {
    return optimizer_checkpoint_states(cfg_);
  }

  // Sets the store arrays' initial values once the store exists (it starts zero-filled).
  virtual Status init_state(StateStore& store) {
    (void)store;
    return Status::ok();
  }

  // Whole-parameter statistics before the update; `grads` is the rank's gradient over the owned
  // range (the working dtype), in the optimizer's backend memory. Collective when partitioned.
  virtual Status prepare(const OptimizerStepArgs& args, const Tensor& grads, StateStore& store,
                         Communicator& comm) {
    (void)args, (void)grads, (void)store, (void)comm;
    return Status::ok();
  }
  // Updates owned elements [begin, begin + count) — inside `seg` (one of segments(), by
  // reference) and inside one store chunk.
  // master and arrays[i] point at element `begin` (arrays[0] is the master weights);
  // grad at the gradient of element `begin`, of dtype `grad_dtype`. All of them in the optimizer's
  // backend memory.
  virtual void update(const OptimSegment& seg, int64_t begin, int64_t count, void* const* arrays,
                      const void* grad, DType grad_dtype, const OptimizerStepArgs& args) = 0;

  // ---- checkpoints: state k of checkpoint_states(); `out` and `in` are host memory ----
  // Ranged: owned elements [begin, begin + count) inside segment `s`, as fp32.
  virtual Status read_state(int k, int s, int64_t begin, int64_t count, StateStore& store,
                            float* out) = 0;
  // Ranged: the whole segment `s` (segments()[s].count values).
  virtual Status write_state(int k, int s, const float* in, StateStore& store) = 0;
  // Whole states of parameter `param` (state_numel values); only for parameters with a segment.
  virtual void read_whole(int k, int param, float* out) const { (void)k, (void)param, (void)out; }
  virtual void write_whole(int k, int param, const float* in) { (void)k, (void)param, (void)in; }

  // The store array holding ranged state k as plain fp32, one value per owned element, or -1
  // (8-bit codes, side state): lets checkpoints read it in place when the store is in memory.
  virtual int store_array_of(int k) const {
    (void)k;
    return -1;
  }

  // Side state bytes (in memory whatever the offload).
  int64_t side_bytes() const;

  // For the implementations (create() is the way in).
  Optimizer(const OptimizerConfig& cfg, std::vector<OptimSegment> segments, bool partitioned,
            Backend& backend)
      : cfg_(cfg), segments_(std::move(segments)), partitioned_(partitioned), backend_(backend) {}

 protected:
  // Allocates `n` floats of side state, zeroed.
  Result<float*> side_floats(int64_t n);
  // A temporary buffer of `bytes` in the backend's memory (checkpoint staging), kWorkspace.
  Result<Buffer> scratch_bytes(size_t bytes) {
    return backend_.allocate(bytes, MemCategory::kWorkspace);
  }
  // Ranged state kept as a store array: copies through the store (fp32 arrays).
  static Status read_store_f32(StateStore& store, int array, int64_t begin, int64_t count,
                               float* out) {
    return store.read(array, begin, count, out);
  }

  OptimizerConfig cfg_;
  std::vector<OptimSegment> segments_;
  bool partitioned_;
  Backend& backend_;
  std::vector<Buffer> side_;
};

}  // namespace zt
