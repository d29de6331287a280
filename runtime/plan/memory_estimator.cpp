#include "runtime/plan/memory_estimator.h"

#include <omp.h>

#include <algorithm>
#include <deque>
#include <set>

#include "kernels/attention.h"
#include "kernels/encoder.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "runtime/zero/partition_plan.h"

namespace zt {

int64_t MemoryEstimate::device_total() const {
  int64_t s = 0;
  for (int64_t b : device) s += b;
  return s;
}

int64_t MemoryEstimate::host_total() const {
  int64_t s = 0;
  for (int64_t b : host) s += b;
  return s;
}

namespace {

constexpr int64_t kGranule = 64;  // Backend::allocate rounds every buffer up to this
constexpr int64_t kChunkAlign = 4096;
constexpr int64_t kQuantBlock = 256;     // 8-bit AdamW's absmax block (runtime/optim/adamw8bit.cpp)
constexpr int64_t kMin8bitNumel = 4096;  // smaller parameters keep fp32 moments there
constexpr int64_t kCublasLtWorkspace = int64_t{32} << 20;  // CudaBackendOptions' default

int64_t buf(int64_t bytes) { return bytes <= 0 ? 0 : (bytes + kGranule - 1) / kGranule * kGranule; }
int64_t align_up(int64_t x, int64_t a) { return (x + a - 1) / a * a; }
size_t cat(MemCategory c) { return static_cast<size_t>(c); }

// A StateStore's chunk (Note [state chunks]).
int64_t store_chunk(int64_t buffer_elements, int64_t n) {
  return std::min(align_up(std::max<int64_t>(buffer_elements, 1), kChunkAlign),
                  align_up(std::max<int64_t>(n, 1), kChunkAlign));
}

// A pool of reusable buffers handed out best fit and never freed (ZeroEngine::take): what it ends
// up holding is its peak.
class Pool {
 public:
  // Returns the size of the buffer taken.
  // Best fit against the request; a buffer's size is the allocation's, rounded up to the
  // granule (Buffer::bytes()), as the engine compares them.
  int64_t take(int64_t bytes) {
    auto it = free_.lower_bound(bytes);
    if (it != free_.end()) {
      const int64_t got = *it;
      free_.erase(it);
      return got;
    }
    held_ += buf(bytes);
    return buf(bytes);
  }
  void put(int64_t bytes) { free_.insert(bytes); }
  int64_t held() const { return held_; }

 private:
  std::multiset<int64_t> free_;
  int64_t held_ = 0;
};

// The ZeRO engine's pooled buffers over the model's pass order (stages 2 and 3): gathered
// parameter units and their staging slices, unit gradient buffers and reduce-scatter receive
// buffers. Mirrors the hook calls of Gpt2Model::forward_backward (runtime/model/gpt2.cpp).
class PoolSimulation {
 public:
  PoolSimulation(const JobConfig& cfg, const PartitionPlan& plan, int64_t elem, bool stage_slices)
      : cfg_(cfg),
        plan_(plan),
        elem_(elem),
        stage_slices_(stage_slices),
        gathered_(plan.units.size(), -1),
        refs_(plan.units.size(), 0),
        slices_(plan.units.size()),
        unit_grad_(plan.units.size(), -1) {}

  // `last`: the step's last micro-batch, after which the trainer waits for every reduction still
  // in flight (ZeroEngine::finish_backward); between micro-batches they stay in flight.
  void run_micro_batch(bool last) {
    const int L = cfg_.model.n_layer;
    forward_ = true;
    acquire(0);
    for (int l = 0; l < L; ++l) {
      acquire(l + 1);
      release(l + 1);
    }
    forward_ = false;
    grad_take(0);
    const CheckpointPolicy policy = cfg_.activation_checkpointing.policy;
    const int n = policy == CheckpointPolicy::kEveryN
                      ? std::max(1, cfg_.activation_checkpointing.every_n)
                      : 1;
    for (int l = L - 1; l >= 0;) {
      const int s = policy == CheckpointPolicy::kEveryN ? l - l % n : l;
      for (int j = s; j <= l; ++j) acquire(j + 1);
      for (int j = l; j >= s; --j) {
        grad_take(j + 1);
        grad_done(j + 1);
        release(j + 1);
      }
      l = s - 1;
    }
    grad_done(0);
    release(0);
    if (last) drain(0);
  }

  int64_t params_held() const { return param_pool_.held() + slice_pool_.held(); }
  int64_t grads_held() const { return grad_pool_.held(); }
  int64_t recv_held() const { return recv_pool_.held(); }

 private:
  bool stage3() const { return plan_.stage == 3; }

  void gather(int u) {
    const PlanUnit& unit = plan_.units[static_cast<size_t>(u)];
    gathered_[static_cast<size_t>(u)] = param_pool_.take(unit.padded * elem_);
    for (int b = unit.first_bucket; b < unit.end_bucket; ++b) {
      const PlanBucket& pb = plan_.buckets[static_cast<size_t>(b)];
      if (pb.persistent || !stage_slices_) continue;
      slices_[static_cast<size_t>(u)].push_back(slice_pool_.take(pb.shard * elem_));
    }
  }

  void acquire(int u) {
    if (!stage3()) return;
    if (gathered_[static_cast<size_t>(u)] < 0) gather(u);
    for (int64_t s : slices_[static_cast<size_t>(u)]) slice_pool_.put(s);
    slices_[static_cast<size_t>(u)].clear();
    ++refs_[static_cast<size_t>(u)];
    // Note [ZeRO-3 prefetch window].
    const int64_t window = cfg_.zero.stage3_prefetch_bucket_size;
    if (window <= 0) return;
    const int n_units = static_cast<int>(plan_.units.size());
    const int dir = forward_ ? 1 : -1;
    int64_t ahead = 0;
    for (int v = u + dir, k = 0; v >= 1 && v < n_units; v += dir, ++k) {
      const int64_t size = plan_.units[static_cast<size_t>(v)].padded;
      if (k > 0 && ahead + size > window) break;
      ahead += size;
      if (gathered_[static_cast<size_t>(v)] < 0) gather(v);
    }
  }

  void release(int u) {
    if (!stage3()) return;
    if (--refs_[static_cast<size_t>(u)] > 0) return;
    param_pool_.put(gathered_[static_cast<size_t>(u)]);
    gathered_[static_cast<size_t>(u)] = -1;
  }

  void grad_take(int u) {
    unit_grad_[static_cast<size_t>(u)] =
        grad_pool_.take(plan_.units[static_cast<size_t>(u)].padded * elem_);
  }

  struct Pending {
    int64_t recv = 0, release = -1;
  };

  void grad_done(int u) {
    const PlanUnit& unit = plan_.units[static_cast<size_t>(u)];
    for (int b = unit.first_bucket; b < unit.end_bucket; ++b) {
      Pending p;
      p.recv = recv_pool_.take(plan_.buckets[static_cast<size_t>(b)].shard * elem_);
      if (b + 1 == unit.end_bucket) p.release = unit_grad_[static_cast<size_t>(u)];
      pending_.push_back(p);
    }
    drain(cfg_.zero.overlap_comm ? static_cast<size_t>(unit.end_bucket - unit.first_bucket) : 0);
  }

  void drain(size_t keep) {
    while (pending_.size() > keep) {
      const Pending p = pending_.front();
      pending_.pop_front();
      recv_pool_.put(p.recv);
      if (p.release >= 0) grad_pool_.put(p.release);
    }
  }

  const JobConfig& cfg_;
  const PartitionPlan& plan_;
  int64_t elem_;
  bool stage_slices_;
  bool forward_ = true;
  std::vector<int64_t> gathered_;
  std::vector<int> refs_;
  std::vector<std::vector<int64_t>> slices_;
  std::vector<int64_t> unit_grad_;
  std::deque<Pending> pending_;
  Pool param_pool_, slice_pool_, grad_pool_, recv_pool_;
};

// Bytes of the activation buffers Gpt2Model::allocate makes under the policy.
int64_t activation_bytes(const JobConfig& cfg, int64_t d) {
  const int64_t B = cfg.train_micro_batch_size_per_gpu, T = cfg.model.block_size;
  const int64_t C = cfg.model.n_embd, L = cfg.model.n_layer, NH = cfg.model.n_head;
  const int64_t V = cfg.model.vocab_size, N = B * T;
  const int64_t attention =
      buf(N * C * d) + 2 * buf(N * 4) + buf(N * 3 * C * d) + buf(N * C * d) + buf(B * NH * T * 4);
  const int64_t mlp = 2 * buf(N * C * d) + 2 * buf(N * 4) + 2 * buf(N * 4 * C * d);
  const CheckpointPolicy policy = cfg.activation_checkpointing.policy;
  const int64_t n =
      policy == CheckpointPolicy::kEveryN ? std::max(1, cfg.activation_checkpointing.every_n) : 1;
  // Residual stream buffers at block boundaries 0..L.
  int64_t residuals = L + 1;
  if (policy == CheckpointPolicy::kEveryN) {
    std::set<int64_t> inner;
    residuals = 0;
    for (int64_t b = 0; b <= L; ++b) {
      if (b % n == 0 || b == L)
        ++residuals;
      else
        inner.insert(b % n);
    }
    residuals += static_cast<int64_t>(inner.size());
  }
  int64_t sets = L;
  if (policy == CheckpointPolicy::kLayer) sets = 1;
  if (policy == CheckpointPolicy::kEveryN) sets = std::min(n, L);
  int64_t bytes = residuals * buf(N * C * d);
  bytes +=
      policy == CheckpointPolicy::kSelective ? attention + sets * mlp : sets * (attention + mlp);
  // Final LayerNorm, logits, losses; the backward's dx and scratch.
  bytes += buf(N * C * d) + 2 * buf(N * 4) + buf(N * V * d) + buf(N * 4);
  bytes += 3 * buf(N * C * d) + buf(N * 3 * C * d) + buf(N * 4 * C * d);
  return bytes;
}

// The largest scratch one kernel call asks of the backend's growing workspace.
int64_t kernel_scratch_bytes(const JobConfig& cfg, bool fp32, int threads) {
  namespace k = kernels::cpu;
  const int B = static_cast<int>(cfg.train_micro_batch_size_per_gpu), T = cfg.model.block_size;
  const int C = cfg.model.n_embd, NH = cfg.model.n_head, V = cfg.model.vocab_size;
  const int N = B * T;
  if (cfg.backend == BackendKind::kCuda) {
    // kernels/cuda: the attention backward's per-row fp32 delta plus its tile buffers, and the
    // LayerNorm and bias-gradient partial sums. Approximate (the exact sizes live in the CUDA
    // sources, which the coordinator does not link); small next to the cuBLASLt workspace.
    const int64_t chunks = (N + 255) / 256;
    const int64_t attention = align_up(int64_t{B} * NH * T * 4, 256) * 2;
    const int64_t partials = chunks * 2 * std::max<int64_t>(4 * C, V) * 4;
    return std::max(attention, partials);
  }
  // The CPU kernels size per-thread scratch by omp_get_max_threads(): rescale to the workers'.
  const int here = std::max(1, omp_get_max_threads());
  const auto per_threads = [&](size_t bytes) {
    return static_cast<int64_t>(bytes / static_cast<size_t>(here)) * threads;
  };
  int64_t m = 0;
  const auto take = [&](int64_t b) { m = std::max(m, b); };
  take(static_cast<int64_t>(k::encoder_bwd_scratch_bytes(B, T, C, V)));
  take(static_cast<int64_t>(k::layernorm_bwd_scratch_bytes(N, C)));
  const int shapes[5][2] = {{C, 3 * C}, {C, C}, {C, 4 * C}, {4 * C, C}, {C, V}};
  for (const auto& s : shapes) {
    take(static_cast<int64_t>(k::matmul_fwd_scratch_bytes(N, s[0], s[1], fp32)));
    take(static_cast<int64_t>(k::matmul_bwd_scratch_bytes(N, s[0], s[1], fp32)));
  }
  take(per_threads(k::attention_fwd_scratch_bytes(B, T, C, NH)));
  take(per_threads(k::attention_bwd_scratch_bytes(B, T, C, NH)));
  return m;
}

// Per-element bytes of the optimizer's store arrays (after the fp32 master weights).
int64_t store_array_bytes(const OptimizerConfig& o) {
  if (o.is_8bit()) return 2;
  if (o.is_adam()) return 8;
  if (o.type == "Lion") return 4;
  if (o.type == "SGD") return o.momentum == 0.0f ? 0 : 4;
  if (o.type == "Adafactor") return o.use_first_moment ? 4 : 0;
  return 0;
}
int store_array_count(const OptimizerConfig& o) {
  if (o.is_adam()) return 2;
  if (o.type == "Lion") return 1;
  if (o.type == "SGD") return o.momentum == 0.0f ? 0 : 1;
  if (o.type == "Adafactor") return o.use_first_moment ? 1 : 0;
  return 0;
}

struct SideState {
  int64_t state = 0;          // optimizer states, in the state's memory
  int64_t workspace = 0;      // compute-backend workspace
  int64_t communication = 0;  // the optimizer's collective buffers (compute backend)
};

// The optimizer's side state for the segments a rank holds (runtime/optim/adamw8bit.cpp,
// adafactor.cpp).
SideState side_state(const OptimizerConfig& o, const ParamLayout& layout,
                     const std::vector<PartitionPlan::ShardPiece>& held, bool host_accessible) {
  SideState s;
  if (o.is_8bit()) {
    int64_t blocks = 0, small = 0;
    for (const PartitionPlan::ShardPiece& p : held) {
      if (layout.entries[static_cast<size_t>(p.param)].spec.numel() < kMin8bitNumel) {
        small += p.count;
      } else {
        blocks += (p.local_offset + p.count - 1) / kQuantBlock - p.local_offset / kQuantBlock + 1;
      }
    }
    s.state = 2 * buf(std::max<int64_t>(blocks, 1) * 4) + 2 * buf(std::max<int64_t>(small, 1) * 4);
  } else if (o.type == "Adafactor") {
    int64_t v = 0, red = 0, max_sums = 0;
    std::set<int> factored_held;
    for (const PartitionPlan::ShardPiece& p : held) {
      const ParamSpec& spec = layout.entries[static_cast<size_t>(p.param)].spec;
      if (spec.shape.size() >= 2)
        factored_held.insert(p.param);
      else
        v += p.count;
    }
    s.state = buf(std::max<int64_t>(v, 1) * 4);
    for (const ParamEntry& e : layout.entries)
      if (e.spec.shape.size() >= 2)
        red += e.spec.numel() / e.spec.shape.back() + e.spec.shape.back();
    for (int p : factored_held) {
      const ParamSpec& spec = layout.entries[static_cast<size_t>(p)].spec;
      const int64_t rc = spec.numel() / spec.shape.back() + spec.shape.back();
      max_sums = std::max(max_sums, rc);
      // Host memory: the moments and factors together; device memory: only the factors there.
      s.state += host_accessible ? buf(2 * rc * 4) : buf(rc * 4);
    }
    if (!host_accessible && max_sums > 0) s.workspace = buf(max_sums * 8);
    const int64_t np = static_cast<int64_t>(layout.entries.size());
    s.communication = buf((red + np) * 4) + buf(np * 4);
  }
  return s;
}

}  // namespace

namespace {

// The plan every rank shares, after the checks both entry points need.
Result<PartitionPlan> plan_for_estimate(const JobConfig& cfg, int world) {
  if (world < 1) return make_error(StatusCode::kInvalidArgument, "a world of {} ranks", world);
  if (cfg.train_micro_batch_size_per_gpu <= 0)
    return make_error(StatusCode::kInvalidArgument,
                      "train_micro_batch_size_per_gpu is not resolved (got {})",
                      cfg.train_micro_batch_size_per_gpu);
  return make_partition_plan(cfg.model, cfg.zero, world);
}

MemoryEstimate estimate_rank(const JobConfig& cfg, const PartitionPlan& plan, int rank,
                             const EstimateOptions& options) {
  const int stage = plan.stage;
  const int64_t d = cfg.bf16.enabled || cfg.fp16.enabled ? 2 : 4;
  const bool fp32 = d == 4;
  const bool host_accessible = cfg.backend == BackendKind::kCpu;
  const OffloadDevice off = cfg.zero.offload_optimizer.device;
  const OffloadDevice offp = cfg.zero.offload_param.device;
  const int64_t P = plan.total, S = plan.shard_total;
  const int threads = options.cpu_threads > 0 ? options.cpu_threads : omp_get_max_threads();

  MemoryEstimate e;
  e.rank = rank;
  CategoryBytes& dev = e.device;
  CategoryBytes& host = e.host;
  const bool state_on_host = off != OffloadDevice::kNone;
  const bool stage_state = state_on_host && !host_accessible;
  CategoryBytes& state_mem = state_on_host ? host : dev;

  // ---- optimizer state (ZeroEngine::allocate_state) ----
  const bool params_alias_master =
      stage == 0 && fp32 && off != OffloadDevice::kNvme && !stage_state;
  const int64_t owned = stage == 0 ? P : S;
  const int64_t array_bytes = store_array_bytes(cfg.optimizer);
  if (off == OffloadDevice::kNvme) {
    const int64_t chunk = store_chunk(cfg.zero.offload_optimizer.buffer_size, owned);
    const int64_t per_element = 4 + array_bytes;
    host[cat(MemCategory::kOptimizerStates)] +=
        cfg.zero.offload_optimizer.buffer_count * chunk * per_element;
    e.nvme_bytes += (owned + chunk - 1) / chunk * chunk * per_element;
  } else {
    (params_alias_master ? state_mem[cat(MemCategory::kParameters)]
                         : state_mem[cat(MemCategory::kOptimizerStates)]) += buf(owned * 4);
    const int arrays = store_array_count(cfg.optimizer);
    if (arrays > 0)
      state_mem[cat(MemCategory::kOptimizerStates)] += arrays * buf(owned * (array_bytes / arrays));
  }
  std::vector<PartitionPlan::ShardPiece> held;
  if (stage == 0) {
    for (size_t p = 0; p < plan.layout.entries.size(); ++p) {
      const ParamEntry& en = plan.layout.entries[p];
      held.push_back({static_cast<int>(p), 0, en.offset, en.spec.numel()});
    }
  } else {
    held = plan.shard_pieces(rank);
  }
  // Side state lives in the state backend's memory; it is host memory when offloaded.
  const SideState side =
      side_state(cfg.optimizer, plan.layout, held, host_accessible || state_on_host);
  state_mem[cat(MemCategory::kOptimizerStates)] += side.state;
  dev[cat(MemCategory::kWorkspace)] += state_on_host ? 0 : side.workspace;
  dev[cat(MemCategory::kCommunication)] += side.communication;

  // ---- parameters and gradients ----
  if (stage <= 2 && !params_alias_master) dev[cat(MemCategory::kParameters)] += buf(P * d);
  if (stage <= 1) dev[cat(MemCategory::kGradients)] += buf(P * d);
  if (stage >= 1) dev[cat(MemCategory::kGradients)] += buf(S * d);
  if (stage_state) host[cat(MemCategory::kGradients)] += buf(owned * d);
  bool stage_slices = false;
  if (stage == 3) {
    const bool shard_alias_master =
        fp32 && off == OffloadDevice::kNone && offp == OffloadDevice::kNone;
    if (offp == OffloadDevice::kNvme) {
      const int64_t chunk = store_chunk(cfg.zero.offload_param.buffer_size, S);
      host[cat(MemCategory::kParameters)] += cfg.zero.offload_param.buffer_count * chunk * d;
      e.nvme_bytes += (S + chunk - 1) / chunk * chunk * d;
      stage_slices = true;
      // Master weights become working weights a chunk at a time through host scratch.
      const int64_t master_chunk = store_chunk(cfg.zero.offload_optimizer.buffer_size, S);
      host[cat(MemCategory::kWorkspace)] += buf(std::min({chunk, master_chunk, S}) * d);
    } else if (offp == OffloadDevice::kCpu) {
      host[cat(MemCategory::kParameters)] += buf(S * d);
      stage_slices = !host_accessible;
    } else if (!shard_alias_master) {
      dev[cat(MemCategory::kParameters)] += buf(S * d);
    }
    for (const PlanBucket& b : plan.buckets)
      if (b.persistent) dev[cat(MemCategory::kParameters)] += buf(b.padded * d);
  }
  if (stage >= 2) {
    PoolSimulation sim(cfg, plan, d, stage_slices);
    // Steps of first, middle and last micro-batch (the middle ones all alike) until the pools stop
    // growing: best-fit reuse reaches its fixed point within a step or two; the cap only guards.
    const int64_t A = std::max<int64_t>(1, cfg.gradient_accumulation_steps);
    int64_t held = -1;
    for (int step = 0; step < 16; ++step) {
      for (int64_t a = std::max<int64_t>(0, A - 3); a < A; ++a) sim.run_micro_batch(a + 1 == A);
      const int64_t now = sim.params_held() + sim.grads_held() + sim.recv_held();
      if (now == held) break;
      held = now;
    }
    dev[cat(MemCategory::kParameters)] += sim.params_held();
    dev[cat(MemCategory::kGradients)] += sim.grads_held();
    dev[cat(MemCategory::kCommunication)] += sim.recv_held();
  }
  // Conversions of master-weight chunks into working weights across memories (Note [device
  // memory], ZeroEngine::convert_into): on the side of the source, only when the dtype changes.
  if (!host_accessible && !fp32) {
    const int64_t chunk = store_chunk(cfg.zero.offload_optimizer.buffer_size, owned);
    // Offloaded state converts in host scratch before the copy to the device.
    if (stage_state) host[cat(MemCategory::kWorkspace)] += buf(chunk * d);
    // Device state, stage-3 parameters in host memory: device scratch before the copy out.
    if (!state_on_host && stage == 3 && offp != OffloadDevice::kNone)
      dev[cat(MemCategory::kWorkspace)] += buf(std::min(chunk, owned) * d);
  }

  // ---- activations ----
  dev[cat(MemCategory::kActivations)] += activation_bytes(cfg, d);

  // ---- communication scalars ----
  dev[cat(MemCategory::kCommunication)] += buf(4);                  // the step's loss
  if (stage >= 1) dev[cat(MemCategory::kCommunication)] += buf(8);  // grad norm + overflow
  if (options.worker_buffers) dev[cat(MemCategory::kCommunication)] += buf(8);

  // ---- workspace ----
  const int64_t N = cfg.train_micro_batch_size_per_gpu * cfg.model.block_size;
  dev[cat(MemCategory::kWorkspace)] += 2 * buf(N * 4);  // tokens and targets
  dev[cat(MemCategory::kWorkspace)] += buf(kernel_scratch_bytes(cfg, fp32, threads));
  if (cfg.backend == BackendKind::kCuda) dev[cat(MemCategory::kWorkspace)] += kCublasLtWorkspace;
  return e;
}

}  // namespace

Result<MemoryEstimate> estimate_memory(const JobConfig& cfg, int world, int rank,
                                       const EstimateOptions& options) {
  if (rank < 0 || rank >= world)
    return make_error(StatusCode::kInvalidArgument, "rank {} of a world of {}", rank, world);
  ZT_ASSIGN_OR_RETURN(const PartitionPlan plan, plan_for_estimate(cfg, world));
  return estimate_rank(cfg, plan, rank, options);
}

Result<MemoryEstimate> estimate_memory_max(const JobConfig& cfg, int world,
                                           const EstimateOptions& options) {
  ZT_ASSIGN_OR_RETURN(const PartitionPlan plan, plan_for_estimate(cfg, world));
  MemoryEstimate out;
  for (int r = 0; r < world; ++r) {
    const MemoryEstimate e = estimate_rank(cfg, plan, r, options);
    for (size_t c = 0; c < kNumMemCategories; ++c) {
      out.device[c] = std::max(out.device[c], e.device[c]);
      out.host[c] = std::max(out.host[c], e.host[c]);
    }
    out.nvme_bytes = std::max(out.nvme_bytes, e.nvme_bytes);
    // Only 8-bit and Adafactor side state differ between ranks: two ranks bound the rest.
    if (!cfg.optimizer.is_8bit() && cfg.optimizer.type != "Adafactor" && r >= 1) break;
  }
  return out;
}

}  // namespace zt
