// ZeroEngine: one rank's share of the model state under ZeRO stage 0-3, and the collectives that
// keep it consistent (Note [partition plan] says who owns what).
//
//   stage | working weights (dtype) | gradients                     | master + optimizer state
//   0     | full                    | full, all-reduced per bucket  | full (replicated update)
//   1     | full                    | full, reduce-scattered        | own shard
//   2     | full                    | own shard; per-unit buckets   | own shard
//         |                         | reduce-scattered as soon as   |
//         |                         | the unit's backward is done   |
//   3     | own shard (+ persistent | as stage 2                    | own shard
//         | buckets); units gathered |                               |
//         | before use, prefetched, |                               |
//         | freed after             |                               |
// After the update, stages 1 and 2 all-gather the new working weights bucket by bucket; stage 3
// only refreshes its shard (and all-gathers the persistent buckets).
//
// Note [gradient reduction]
// Stage 0/1 accumulate every micro-batch into the full gradient buffer and reduce only after the
// last micro-batch of the step; stage 2/3 reduce-scatter each micro-batch's unit gradients and add
// the result into the shard (the full gradient is never kept). With overlap_comm the reduction of a
// unit is issued the moment its backward is done and runs on the communication thread while the
// backward of the next unit computes; without it, each reduction is waited for at once.
//
// The master weights and the optimizer's per-element state live in a StateStore (runtime/offload):
// device memory, host memory (offload_optimizer.device: cpu) or files streamed through a few
// buffers (nvme); the update rule is an Optimizer (runtime/optim, Note [optimizer state]). The step
// streams the store chunk by chunk, and with nvme converts each updated chunk of master weights
// into the working weights as it goes, so the master weights are never whole in memory.
//
// Note [device memory]: the compute backend's memory may be device memory the host cannot
// dereference (Backend::host_accessible()). The engine then never touches it from the host: the
// scalars of its collectives go through small host copies; with the optimizer state offloaded (host
// memory, NVMe) the gradient is staged to a host buffer once per step before the update, and the
// updated master weights are converted to the working dtype on the host and copied to the device;
// stage-3 parameter shards in host memory or on NVMe are staged into device buffers before their
// all-gathers. The communicator only ever sees compute-backend memory. On a host-accessible
// backend none of this staging happens: every path is the direct one.
//
// The engine implements ModelStateHooks, so the model never sees which stage is running.
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/comm/communicator.h"
#include "runtime/config/job_config.h"
#include "runtime/model/state_hooks.h"
#include "runtime/offload/state_store.h"
#include "runtime/optim/optimizer.h"
#include "runtime/zero/partition_plan.h"

namespace zt {

// Where the optimizer state of one rank lives, for logs, ztctl status and the memory accounting.
struct StatePlacementInfo {
  OffloadDevice device = OffloadDevice::kNone;
  std::string location;        // "device memory", "host memory" or the NVMe file
  int64_t resident_bytes = 0;  // in memory: the arrays, or the streaming buffers (nvme)
  int64_t disk_bytes = 0;      // in the NVMe file
  int64_t side_bytes = 0;      // the optimizer's small state, always in memory
  int64_t chunk_elements = 0;  // the streaming block (Note [state chunks])
  // Stage 3 with offload_param: the working-weight shard's home (else empty / 0).
  std::string param_location;
  int64_t param_resident_bytes = 0, param_disk_bytes = 0;
};

class ZeroEngine final : public ModelStateHooks {
 public:
  static Result<std::unique_ptr<ZeroEngine>> create(const JobConfig& cfg, PartitionPlan plan,
                                                    Backend& backend, Communicator& comm,
                                                    DType dtype);
  ~ZeroEngine() override;

  const PartitionPlan& plan() const { return plan_; }
  int rank() const { return comm_.rank(); }
  int world_size() const { return comm_.world_size(); }

  // Fills this rank's master weights (from model.seed, or from model.init_from) and the working
  // weights derived from them. Collective.
  Status init_weights();

  // Zeroes the gradient state at the start of a step.
  void zero_grads();
  // Before each micro-batch: whether it is the last of the step (stage 0/1 reduce only then).
  void begin_micro_batch(bool last_of_step);
  // Waits for every reduction and gather issued so far (call after the last micro-batch).
  Status finish_backward();

  struct GradStats {
    double sum_squares = 0.0;  // of the (scaled) reduced gradient, over all ranks
    bool overflow = false;     // any Inf/NaN anywhere
  };
  Result<GradStats> grad_stats();

  // The optimizer's update of the state this rank owns, then refreshes the working weights
  // everywhere they live. Collective.
  Status optimizer_step(const OptimizerStepArgs& step);
  const Optimizer& optimizer() const { return *opt_; }
  StatePlacementInfo placement() const;

  // The full fp32 master weights in the plan's global layout (padding zero). Collective: every
  // rank must call it; every rank gets the whole vector.
  Result<std::vector<float>> gather_master();

  // ---- checkpoint access (Note [checkpoint format] in runtime/checkpoint/manifest.h) ----
  // The states a checkpoint holds: 0 the master weights, then the optimizer's
  // (Optimizer::checkpoint_states()).
  const std::vector<CheckpointStateInfo>& checkpoint_states() const { return ckpt_states_; }
  // The parameter ranges this rank writes into a checkpoint: its shard pieces under the plan. At
  // stage 0 every rank holds everything; the ranks then split the writing the same way.
  const std::vector<PartitionPlan::ShardPiece>& checkpoint_pieces() const { return my_pieces_; }
  // The parameter ranges whose state this rank holds (stage 0: every parameter whole), i.e. what a
  // checkpoint load must fill, in the optimizer's segment order.
  std::vector<PartitionPlan::ShardPiece> held_pieces() const;
  // Ranged state k, elements [begin, begin + count) of parameter `param` (held by this rank),
  // as fp32.
  Status read_state(int k, int param, int64_t begin, int64_t count, float* out);
  // Ranged state k of held piece `piece` (an index into held_pieces()), all of it.
  Status write_state(int k, size_t piece, const float* in);
  // Where ranged state k of `param` from element `begin` lives as plain fp32 in host-accessible
  // memory, or nullptr (offloaded to NVMe, 8-bit, side state, device memory): lets checkpoints
  // copy without a staging copy.
  float* state_view(int k, int param, int64_t begin);
  // Whether the state store is in memory (else on NVMe: read_state goes to the file).
  bool state_in_memory() const { return store_->resident(); }
  // The host-memory backend paired with the compute backend (Backend::make_host_backend()): it
  // holds offloaded state and the engine's host staging; checkpoint snapshots may use it.
  Backend& host_backend() { return *host_backend_; }
  // Whole states (state_numel values) of a held parameter.
  void read_whole(int k, int param, float* out) const;
  void write_whole(int k, int param, const float* in);
  // After a checkpoint load overwrote the held state (`local`: how this rank's load went): the
  // ranks first agree on whether every load succeeded — a rank whose file was bad must not leave
  // the others waiting in the refresh's all-gather — then the working weights are refreshed
  // everywhere they live. Returns this rank's error, or one naming the rank that failed.
  // Collective.
  Status state_loaded(const Status& local);

  // The full gradient buffer at stages 0 and 1 (after finish_backward: all-reduced at stage 0; at
  // stage 1 it holds this rank's local sum, the reduced values being in the shard); undefined at
  // stages 2 and 3.
  Tensor full_grads() const { return grads_full_; }

  // ModelStateHooks
  void begin_pass(Pass pass) override;
  Tensor unit_params(int u) override;
  void unit_params_done(int u) override;
  Tensor unit_grads(int u) override;
  void unit_grads_done(int u) override;

  // Memory this rank holds per category is in backend.memory(); these report the live
  // stage-3 gathers and gradient buckets (for the memory model and its tests).
  int64_t peak_gathered_bytes() const { return peak_gathered_bytes_; }

 private:
  struct Pending {
    std::unique_ptr<Work> work;
    Buffer recv;  // reduce-scatter output to add into the gradient shard (stage 2/3)
    int64_t shard_offset = 0, recv_elems = 0;
    Buffer release;  // a unit gradient buffer to return to the pool when done
  };
  struct Gathered {
    Buffer buf;
    std::vector<Buffer> staging;  // shard slices read from an NVMe parameter store
    std::vector<std::unique_ptr<Work>> works;
    int refs = 0;
    bool waited = false;
  };

  ZeroEngine(const JobConfig& cfg, PartitionPlan plan, Backend& backend, Communicator& comm,
             DType dtype);
  Status allocate();
  Status allocate_state();  // the optimizer and the state store
  // Converts master weights [begin, begin + count) of the owned range (`master` in the state
  // store's memory) into the working weights this rank holds (its slots in the full buffer, its
  // stage-3 shard, persistent buckets).
  void convert_master_range(int64_t begin, int64_t count, const float* master);
  // dst = src converted to dst's dtype; src lies in the state store's memory, dst in host memory
  // (`dst_on_host`) or the compute backend's. Stages through host or device scratch when they
  // are different memories (Note [device memory]).
  void convert_into(Tensor dst, bool dst_on_host, Tensor src);
  // Grow-only scratch of `bytes` in host memory (host_backend_) or compute-backend memory.
  void* host_scratch(Buffer& buf, size_t bytes);
  void* device_scratch(Buffer& buf, size_t bytes);
  // The backend whose memory holds the optimizer state (host_backend_ when offloaded).
  Backend& state_backend() { return state_on_host_ ? *host_backend_ : backend_; }
  // Working weights from the master weights (`converted`: already done chunk by chunk), then the
  // all-gathers that spread them.
  Status refresh_working_weights(bool converted = false);
  int segment_of(int param) const;
  void check(const Status& st);  // a failed collective is fatal to the step: throw with context
  Result<Buffer> take(std::vector<Buffer>& pool, int64_t elements, MemCategory cat);
  void start_gather(int u);
  void prefetch_from(int u);
  void drain_pending(size_t keep);
  Tensor shard_slot(const Tensor& full, const PlanBucket& b) const;

  JobConfig cfg_;
  PartitionPlan plan_;
  Backend& backend_;
  Communicator& comm_;
  DType dtype_;
  int stage_;
  bool overlap_;
  bool last_micro_ = true;
  Pass pass_ = Pass::kForward;

  Buffer params_full_buf_, param_shard_buf_, grads_full_buf_, grad_shard_buf_;
  Tensor params_full_, param_shard_, grads_full_, grad_shard_;
  bool params_alias_master_ = false, shard_alias_master_ = false;  // fp32, master usable
  // Offloaded state (cpu, nvme) and host staging are host memory with their own accounting.
  std::unique_ptr<Backend> host_backend_;
  // offload_optimizer cpu/nvme: the master weights and optimizer state are host memory.
  bool state_on_host_ = false;
  // The state is host memory but the compute backend is not (Note [device memory]).
  bool stage_state_ = false;
  // offload_param cpu: param_shard_ views host memory.
  bool param_shard_on_host_ = false;
  Buffer grad_host_;                    // the step's gradient, staged for offloaded state
  Buffer host_stage_, host_stage2_;     // convert_master_range's host scratch
  Buffer device_stage_;                 // ... and its device scratch
  std::vector<char> param_read_stage_;  // offload_param nvme: a slice read from the file
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<StateStore> store_;
  // Stage 3 with offload_param: the working-weight shard (one array of the working dtype). In host
  // memory (cpu) param_shard_ views it; on nvme each gather reads its slices into staging buffers.
  std::unique_ptr<StateStore> param_store_;
  std::vector<Buffer> param_stage_pool_;
  std::vector<CheckpointStateInfo> ckpt_states_;
  std::vector<Buffer> persistent_buf_;  // per bucket (stage 3, persistent ones only)
  // Stage 3: gathered units; stage 2/3: unit gradient buffers handed to the model.
  std::vector<std::unique_ptr<Gathered>> gathered_;
  std::vector<Buffer> unit_grad_buf_;
  std::vector<Buffer> param_pool_, grad_pool_, recv_pool_;
  std::deque<Pending> pending_;
  // This rank's shard pieces (plan_.shard_pieces(rank)), and for each parameter the index of its
  // optimizer segment (-1: none) — a rank owns at most one contiguous piece of a parameter.
  std::vector<PartitionPlan::ShardPiece> my_pieces_;
  std::vector<int> segment_of_param_;
  int64_t gathered_bytes_ = 0, peak_gathered_bytes_ = 0;
};

}  // namespace zt
