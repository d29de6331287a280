#include "runtime/zero/zero_engine.h"

#include <algorithm>
#include <cmath>

#include "runtime/model/gpt2_hf.h"
#include "runtime/profile/step_profile.h"

namespace zt {

ZeroEngine::ZeroEngine(const JobConfig& cfg, PartitionPlan plan, Backend& backend,
                       Communicator& comm, DType dtype)
    : cfg_(cfg),
      plan_(std::move(plan)),
      backend_(backend),
      comm_(comm),
      dtype_(dtype),
      stage_(plan_.stage),
      overlap_(cfg.zero.overlap_comm) {}

ZeroEngine::~ZeroEngine() {
  // Collectives still in flight own buffers of ours: let them finish before the buffers go.
  for (Pending& p : pending_) (void)p.work->wait();
  for (auto& g : gathered_)
    if (g)
      for (auto& w : g->works) (void)w->wait();
}

Result<std::unique_ptr<ZeroEngine>> ZeroEngine::create(const JobConfig& cfg, PartitionPlan plan,
                                                       Backend& backend, Communicator& comm,
                                                       DType dtype) {
  if (plan.world_size != comm.world_size())
    return make_error(StatusCode::kInvalidArgument,
                      "partition plan is for {} ranks but the communicator has {}", plan.world_size,
                      comm.world_size());
  std::unique_ptr<ZeroEngine> e(new ZeroEngine(cfg, std::move(plan), backend, comm, dtype));
  ZT_RETURN_IF_ERROR(e->allocate().with_context("allocating ZeRO state"));
  return e;
}

Status ZeroEngine::allocate() {
  const int64_t total = plan_.total, shard = plan_.shard_total;
  const size_t ts = dtype_size(dtype_);
  auto alloc = [&](Buffer& buf, Tensor& t, int64_t n, DType dt, MemCategory cat) -> Status {
    ZT_ASSIGN_OR_RETURN(buf, backend_.allocate(static_cast<size_t>(n) * dtype_size(dt), cat));
    t = buf.as(dt, {n});
    return Status::ok();
  };
  const bool fp32 = dtype_ == DType::kF32;
  const OffloadDevice offload = cfg_.zero.offload_optimizer.device;
  host_backend_ = backend_.make_host_backend();
  state_on_host_ = offload != OffloadDevice::kNone;
  stage_state_ = state_on_host_ && !backend_.host_accessible();
  // fp32 at stage 0: the working weights are the master weights — unless those are on NVMe (never
  // whole in memory) or in host memory the compute backend cannot use (Note [device memory]).
  params_alias_master_ = stage_ == 0 && fp32 && offload != OffloadDevice::kNvme && !stage_state_;
  const OffloadConfig& offp = cfg_.zero.offload_param;
  shard_alias_master_ =
      stage_ == 3 && fp32 && offload == OffloadDevice::kNone && offp.device == OffloadDevice::kNone;
  if (stage_ <= 2 && !params_alias_master_) {
    ZT_RETURN_IF_ERROR(
        alloc(params_full_buf_, params_full_, total, dtype_, MemCategory::kParameters));
  }
  if (stage_ <= 1) {
    ZT_RETURN_IF_ERROR(alloc(grads_full_buf_, grads_full_, total, dtype_, MemCategory::kGradients));
  }
  if (stage_ >= 1) {
    ZT_RETURN_IF_ERROR(alloc(grad_shard_buf_, grad_shard_, shard, dtype_, MemCategory::kGradients));
  }
  ZT_RETURN_IF_ERROR(allocate_state());
  if (stage_ == 3) {
    if (shard_alias_master_) {
      param_shard_ = Tensor(store_->data(0), DType::kF32, {shard});
    } else if (offp.device != OffloadDevice::kNone) {
      std::vector<StoreArray> arrays = {{"parameters", ts}};
      if (offp.device == OffloadDevice::kNvme) {
        ZT_ASSIGN_OR_RETURN(
            param_store_,
            StateStore::on_nvme(offp.nvme_path, comm_.rank(), std::move(arrays), shard,
                                offp.buffer_size, offp.buffer_count, host_backend_->memory(),
                                MemCategory::kParameters, "params"));
      } else {
        ZT_ASSIGN_OR_RETURN(param_store_,
                            StateStore::in_memory(*host_backend_, std::move(arrays), shard,
                                                  offp.buffer_size, MemCategory::kParameters));
        param_shard_ = Tensor(param_store_->data(0), dtype_, {shard});
        param_shard_on_host_ = true;
      }
    } else {
      ZT_RETURN_IF_ERROR(
          alloc(param_shard_buf_, param_shard_, shard, dtype_, MemCategory::kParameters));
    }
    persistent_buf_.resize(plan_.buckets.size());
    for (size_t b = 0; b < plan_.buckets.size(); ++b) {
      if (!plan_.buckets[b].persistent) continue;
      ZT_ASSIGN_OR_RETURN(persistent_buf_[b],
                          backend_.allocate(static_cast<size_t>(plan_.buckets[b].padded) * ts,
                                            MemCategory::kParameters));
    }
  }
  gathered_.resize(plan_.units.size());
  unit_grad_buf_.resize(plan_.units.size());
  return Status::ok();
}

Status ZeroEngine::allocate_state() {
  my_pieces_ = plan_.shard_pieces(comm_.rank());
  const std::vector<PartitionPlan::ShardPiece> held = held_pieces();
  std::vector<OptimSegment> segments;
  segment_of_param_.assign(plan_.layout.entries.size(), -1);
  for (const PartitionPlan::ShardPiece& p : held) {
    segment_of_param_[static_cast<size_t>(p.param)] = static_cast<int>(segments.size());
    segments.push_back({p.param, &plan_.layout.entries[static_cast<size_t>(p.param)].spec,
                        p.param_begin, p.local_offset, p.count});
  }
  const OffloadConfig& off = cfg_.zero.offload_optimizer;
  Backend& state_backend = this->state_backend();
  // The optimizer's own all-reduces run on compute-backend buffers, like every collective here.
  ZT_ASSIGN_OR_RETURN(opt_, Optimizer::create(cfg_.optimizer, plan_.layout, std::move(segments),
                                              stage_ >= 1, state_backend, &backend_));
  std::vector<StoreArray> arrays = {{"master", 4}};
  // fp32 at stage 0: the master weights are the working weights, accounted as parameters.
  if (params_alias_master_) arrays[0].category = MemCategory::kParameters;
  for (const StoreArray& a : opt_->store_arrays()) arrays.push_back(a);
  const int64_t owned = stage_ == 0 ? plan_.total : plan_.shard_total;
  if (off.device == OffloadDevice::kNvme) {
    ZT_ASSIGN_OR_RETURN(
        store_, StateStore::on_nvme(off.nvme_path, comm_.rank(), std::move(arrays), owned,
                                    off.buffer_size, off.buffer_count, state_backend.memory(),
                                    MemCategory::kOptimizerStates));
  } else {
    ZT_ASSIGN_OR_RETURN(
        store_, StateStore::in_memory(state_backend, std::move(arrays), owned, off.buffer_size,
                                      MemCategory::kOptimizerStates));
  }
  ZT_RETURN_IF_ERROR(opt_->init_state(*store_));
  if (params_alias_master_) params_full_ = Tensor(store_->data(0), DType::kF32, {plan_.total});
  ckpt_states_ = {{"master"}};
  for (const CheckpointStateInfo& st : opt_->checkpoint_states()) ckpt_states_.push_back(st);
  return Status::ok();
}

StatePlacementInfo ZeroEngine::placement() const {
  StatePlacementInfo p;
  p.device = cfg_.zero.offload_optimizer.device;
  p.location = p.device == OffloadDevice::kNvme  ? store_->location()
               : p.device == OffloadDevice::kCpu ? "host memory"
                                                 : "device memory (" + backend_.name() + ")";
  p.resident_bytes = store_->resident_bytes();
  p.disk_bytes = store_->disk_bytes();
  p.side_bytes = opt_->side_bytes();
  p.chunk_elements = store_->chunk();
  if (param_store_) {
    p.param_location = param_store_->resident() ? "host memory" : param_store_->location();
    p.param_resident_bytes = param_store_->resident_bytes();
    p.param_disk_bytes = param_store_->disk_bytes();
  }
  return p;
}

void ZeroEngine::check(const Status& st) {
  if (!st.is_ok()) throw StatusError(st.with_context(fmt::format("ZeRO stage {}", stage_)));
}

Result<Buffer> ZeroEngine::take(std::vector<Buffer>& pool, int64_t elements, MemCategory cat) {
  const size_t bytes = static_cast<size_t>(elements) * dtype_size(dtype_);
  // Best fit: the smallest pooled buffer that is large enough. First fit hands a block-sized buffer
  // to the (smaller) embedding unit at the start of the next micro-batch, and the next block then
  // allocates one more block-sized buffer: from the second step on, each pool held a whole unit
  // more than the memory model (parameters at stage 3, gradients at stages 2 and 3).
  size_t best = pool.size();
  for (size_t i = 0; i < pool.size(); ++i)
    if (pool[i].bytes() >= bytes && (best == pool.size() || pool[i].bytes() < pool[best].bytes()))
      best = i;
  if (best < pool.size()) {
    Buffer b = std::move(pool[best]);
    pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(best));
    return b;
  }
  return backend_.allocate(bytes, cat);
}

Tensor ZeroEngine::shard_slot(const Tensor& full, const PlanBucket& b) const {
  const int64_t lo = b.offset + comm_.rank() * b.shard;
  return full.slice(lo, lo + b.shard);
}

void* ZeroEngine::host_scratch(Buffer& buf, size_t bytes) {
  if (buf.bytes() < bytes) {
    buf.reset();
    auto r = host_backend_->allocate(bytes, MemCategory::kWorkspace);
    check(r.status());
    buf = std::move(r).value();
  }
  return buf.data();
}

void* ZeroEngine::device_scratch(Buffer& buf, size_t bytes) {
  if (buf.bytes() < bytes) {
    buf.reset();
    auto r = backend_.allocate(bytes, MemCategory::kWorkspace);
    check(r.status());
    buf = std::move(r).value();
  }
  return buf.data();
}

void ZeroEngine::convert_into(Tensor dst, bool dst_on_host, Tensor src) {
  // On a host-accessible backend every memory here is host memory: convert in place.
  const bool src_on_host = state_on_host_;
  if (backend_.host_accessible() || (!src_on_host && !dst_on_host)) {
    backend_.ops().convert(dst, src);
    return;
  }
  if (src_on_host && dst_on_host) {
    host_backend_->ops().convert(dst, src);
    return;
  }
  // Different memories: convert on the side of the source, then copy across.
  Tensor tmp = src;
  if (src_on_host) {
    if (dst.dtype != src.dtype) {
      tmp = Tensor(host_scratch(host_stage_, dst.nbytes()), dst.dtype, dst.shape);
      host_backend_->ops().convert(tmp, src);
    }
  } else if (dst.dtype != src.dtype) {
    tmp = Tensor(device_scratch(device_stage_, dst.nbytes()), dst.dtype, dst.shape);
    backend_.ops().convert(tmp, src);
  }
  ScopedStepPhase io(StepPhase::kOffloadIo);  // offloaded state crossing host <-> device
  backend_.copy(dst.data, tmp.data, dst.nbytes());
}

void ZeroEngine::convert_master_range(int64_t begin, int64_t count, const float* master) {
  const int64_t end = begin + count;
  auto src = [&](int64_t lo, int64_t hi) {
    return Tensor(const_cast<float*>(master) + (lo - begin), DType::kF32, {hi - lo});
  };
  if (stage_ == 0) {
    if (!params_alias_master_) convert_into(params_full_.slice(begin, end), false, src(begin, end));
    return;
  }
  if (stage_ == 3 && !shard_alias_master_) {
    if (param_shard_.defined()) {
      convert_into(param_shard_.slice(begin, end), param_shard_on_host_, src(begin, end));
    } else {
      // The shard is on NVMe: convert a store chunk at a time into host memory and write it there.
      const int64_t step = param_store_->chunk();
      const size_t ts = dtype_size(dtype_);
      void* tmp = host_scratch(host_stage2_, static_cast<size_t>(std::min(step, count)) * ts);
      for (int64_t lo = begin; lo < end; lo += step) {
        const int64_t hi = std::min(end, lo + step);
        const Tensor t(tmp, dtype_, {hi - lo});
        convert_into(t, true, src(lo, hi));
        check(param_store_->write(0, lo, hi - lo, t.data));
      }
    }
  }
  for (size_t i = 0; i < plan_.buckets.size(); ++i) {
    const PlanBucket& b = plan_.buckets[i];
    const int64_t lo = std::max(begin, b.shard_offset),
                  hi = std::min(end, b.shard_offset + b.shard);
    if (lo >= hi) continue;
    // This rank's slot of the bucket in the full working weights (stages 1-2) or in a persistent
    // bucket (stage 3).
    Tensor full;
    if (stage_ <= 2) {
      full = params_full_.slice(b.offset, b.offset + b.padded);
    } else if (b.persistent) {
      full = persistent_buf_[i].as(dtype_, {b.padded});
    } else {
      continue;
    }
    const int64_t slot = comm_.rank() * b.shard - b.shard_offset;
    convert_into(full.slice(slot + lo, slot + hi), false, src(lo, hi));
  }
}

Status ZeroEngine::refresh_working_weights(bool converted) {
  if (!converted) {
    if (store_->resident()) {
      // A store chunk at a time, which bounds the staging of Note [device memory].
      const float* master = static_cast<const float*>(store_->data(0));
      const int64_t n = store_->size(), step = store_->chunk();
      for (int64_t lo = 0; lo < n; lo += step)
        convert_master_range(lo, std::min(step, n - lo), master + lo);
    } else {
      ZT_RETURN_IF_ERROR(store_->stream(1u, 0u, [&](int64_t begin, int64_t count, void* const* p) {
        convert_master_range(begin, count, static_cast<const float*>(p[0]));
        return Status::ok();
      }));
    }
  }
  if (stage_ == 0) return Status::ok();
  std::vector<std::unique_ptr<Work>> works;
  for (size_t i = 0; i < plan_.buckets.size(); ++i) {
    const PlanBucket& b = plan_.buckets[i];
    Tensor full;
    if (stage_ <= 2) {
      full = params_full_.slice(b.offset, b.offset + b.padded);
    } else if (b.persistent) {
      full = persistent_buf_[i].as(dtype_, {b.padded});
    } else {
      continue;
    }
    const Tensor mine = full.slice(comm_.rank() * b.shard, (comm_.rank() + 1) * b.shard);
    works.push_back(comm_.all_gather_async(mine, full));
  }
  ScopedStepPhase wait(StepPhase::kCommWait);
  for (auto& w : works) ZT_RETURN_IF_ERROR(w->wait());
  return Status::ok();
}

Status ZeroEngine::init_weights() {
  std::vector<float> loaded;
  if (!cfg_.model.init_from.empty()) {
    loaded.assign(static_cast<size_t>(plan_.total), 0.0f);
    ZT_RETURN_IF_ERROR(load_gpt2_safetensors(cfg_.model.init_from, plan_.layout, loaded.data())
                           .with_context("model.init_from"));
  }
  const std::vector<OptimSegment>& segs = opt_->segments();
  Backend& sb = state_backend();
  std::vector<float> staged;  // the chunk, built on the host when the store is device memory
  ZT_RETURN_IF_ERROR(store_->stream(0u, 1u, [&](int64_t begin, int64_t count, void* const* p) {
    float* const chunk = static_cast<float*>(p[0]);
    float* master = chunk;
    if (!sb.host_accessible()) {
      staged.resize(static_cast<size_t>(count));
      master = staged.data();
    }
    std::fill_n(master, count, 0.0f);  // padding stays zero
    for (const OptimSegment& s : segs) {
      const int64_t lo = std::max(begin, s.local), hi = std::min(begin + count, s.local + s.count);
      if (lo >= hi) continue;
      const ParamEntry& e = plan_.layout.entries[static_cast<size_t>(s.param)];
      const int64_t first = s.param_begin + (lo - s.local);
      if (loaded.empty())
        init_param_range(e.spec, cfg_.model.seed, first, hi - lo, master + (lo - begin));
      else
        std::copy_n(loaded.data() + e.offset + first, hi - lo, master + (lo - begin));
    }
    if (master != chunk) sb.copy(chunk, master, static_cast<size_t>(count) * sizeof(float));
    return Status::ok();
  }));
  return refresh_working_weights();
}

void ZeroEngine::zero_grads() {
  if (grads_full_.defined()) backend_.fill_zero(grads_full_.data, grads_full_.nbytes());
  if (grad_shard_.defined()) backend_.fill_zero(grad_shard_.data, grad_shard_.nbytes());
}

void ZeroEngine::begin_micro_batch(bool last_of_step) { last_micro_ = last_of_step; }

void ZeroEngine::begin_pass(Pass pass) { pass_ = pass; }

void ZeroEngine::start_gather(int u) {
  const PlanUnit& unit = plan_.units[static_cast<size_t>(u)];
  auto g = std::make_unique<Gathered>();
  auto buf = take(param_pool_, unit.padded, MemCategory::kParameters);
  check(buf.status());
  g->buf = std::move(buf).value();
  const Tensor all = g->buf.as(dtype_, {unit.padded});
  for (int bi = unit.first_bucket; bi < unit.end_bucket; ++bi) {
    const PlanBucket& b = plan_.buckets[static_cast<size_t>(bi)];
    const Tensor region = all.slice(b.offset - unit.offset, b.offset - unit.offset + b.padded);
    if (b.persistent) {
      backend_.copy(region.data, persistent_buf_[static_cast<size_t>(bi)].data(), region.nbytes());
    } else if (param_shard_.defined() && !(param_shard_on_host_ && !backend_.host_accessible())) {
      g->works.push_back(comm_.all_gather_async(
          param_shard_.slice(b.shard_offset, b.shard_offset + b.shard), region));
    } else {
      // offload_param nvme: the slice comes from the file first (this is a prefetch, so the read
      // overlaps the compute of the unit before). A shard in host memory that the collective
      // cannot use in place (Note [device memory]) is copied into a device buffer first.
      auto st = take(param_stage_pool_, b.shard, MemCategory::kParameters);
      check(st.status());
      Buffer slice = std::move(st).value();
      const size_t bytes = static_cast<size_t>(b.shard) * dtype_size(dtype_);
      {
        ScopedStepPhase io(StepPhase::kOffloadIo);
        if (param_shard_.defined()) {
          backend_.copy(slice.data(),
                        param_shard_.slice(b.shard_offset, b.shard_offset + b.shard).data, bytes);
        } else if (backend_.host_accessible()) {
          check(param_store_->read(0, b.shard_offset, b.shard, slice.data()));
        } else {
          param_read_stage_.resize(bytes);
          check(param_store_->read(0, b.shard_offset, b.shard, param_read_stage_.data()));
          backend_.copy(slice.data(), param_read_stage_.data(), bytes);
        }
      }
      g->works.push_back(comm_.all_gather_async(slice.as(dtype_, {b.shard}), region));
      g->staging.push_back(std::move(slice));
    }
  }
  gathered_bytes_ += static_cast<int64_t>(g->buf.bytes());
  peak_gathered_bytes_ = std::max(peak_gathered_bytes_, gathered_bytes_);
  gathered_[static_cast<size_t>(u)] = std::move(g);
}

// Note [ZeRO-3 prefetch window]: after unit u is requested, the units that come next in this
// pass's order are gathered ahead while their total stays within stage3_prefetch_bucket_size
// elements (always at least the next one when the window is non-zero), so their all-gathers run
// on the communication thread while u computes. Unit 0 is held for the whole micro-batch.
void ZeroEngine::prefetch_from(int u) {
  const int64_t window = cfg_.zero.stage3_prefetch_bucket_size;
  if (window <= 0) return;
  const int n_units = static_cast<int>(plan_.units.size());
  const int dir = pass_ == Pass::kForward ? 1 : -1;
  int64_t ahead = 0;
  for (int v = u + dir, k = 0; v >= 1 && v < n_units; v += dir, ++k) {
    const int64_t size = plan_.units[static_cast<size_t>(v)].padded;
    if (k > 0 && ahead + size > window) break;
    ahead += size;
    if (!gathered_[static_cast<size_t>(v)]) start_gather(v);
  }
}

Tensor ZeroEngine::unit_params(int u) {
  const PlanUnit& unit = plan_.units[static_cast<size_t>(u)];
  if (stage_ <= 2) return params_full_.slice(unit.offset, unit.offset + unit.padded);
  if (!gathered_[static_cast<size_t>(u)]) start_gather(u);
  Gathered& g = *gathered_[static_cast<size_t>(u)];
  if (!g.waited) {
    ScopedStepPhase wait(StepPhase::kCommWait);
    for (auto& w : g.works) check(w->wait());
    g.works.clear();
    g.waited = true;
    for (Buffer& s : g.staging) param_stage_pool_.push_back(std::move(s));
    g.staging.clear();
  }
  ++g.refs;
  prefetch_from(u);
  return g.buf.as(dtype_, {unit.padded});
}

void ZeroEngine::unit_params_done(int u) {
  if (stage_ <= 2) return;
  auto& slot = gathered_[static_cast<size_t>(u)];
  ZT_CHECK(slot && slot->refs > 0, "unit {} released more often than acquired", u);
  if (--slot->refs > 0) return;
  gathered_bytes_ -= static_cast<int64_t>(slot->buf.bytes());
  param_pool_.push_back(std::move(slot->buf));
  slot.reset();
}

Tensor ZeroEngine::unit_grads(int u) {
  const PlanUnit& unit = plan_.units[static_cast<size_t>(u)];
  if (stage_ <= 1) return grads_full_.slice(unit.offset, unit.offset + unit.padded);
  auto buf = take(grad_pool_, unit.padded, MemCategory::kGradients);
  check(buf.status());
  Buffer& b = unit_grad_buf_[static_cast<size_t>(u)];
  b = std::move(buf).value();
  backend_.fill_zero(b.data(), b.bytes());
  return b.as(dtype_, {unit.padded});
}

void ZeroEngine::unit_grads_done(int u) {
  const PlanUnit& unit = plan_.units[static_cast<size_t>(u)];
  if (stage_ <= 1 && !last_micro_) return;  // Note [gradient reduction]: accumulate locally
  for (int bi = unit.first_bucket; bi < unit.end_bucket; ++bi) {
    const PlanBucket& b = plan_.buckets[static_cast<size_t>(bi)];
    Pending p;
    if (stage_ == 0) {
      p.work = comm_.all_reduce_async(grads_full_.slice(b.offset, b.offset + b.padded));
    } else if (stage_ == 1) {
      p.work =
          comm_.reduce_scatter_async(grads_full_.slice(b.offset, b.offset + b.padded),
                                     grad_shard_.slice(b.shard_offset, b.shard_offset + b.shard));
    } else {
      const Tensor unit_grads = unit_grad_buf_[static_cast<size_t>(u)].as(dtype_, {unit.padded});
      auto recv = take(recv_pool_, b.shard, MemCategory::kCommunication);
      check(recv.status());
      p.recv = std::move(recv).value();
      p.shard_offset = b.shard_offset;
      p.recv_elems = b.shard;
      p.work = comm_.reduce_scatter_async(
          unit_grads.slice(b.offset - unit.offset, b.offset - unit.offset + b.padded),
          p.recv.as(dtype_, {b.shard}));
      if (bi + 1 == unit.end_bucket) p.release = std::move(unit_grad_buf_[static_cast<size_t>(u)]);
    }
    pending_.push_back(std::move(p));
  }
  // Without overlap every reduction is waited for at once. With it, this unit's reductions stay in
  // flight while the next unit's backward computes, and are waited for when that one is done: one
  // unit in flight hides the reduction behind a whole block's backward and holds only one extra
  // gradient bucket.
  drain_pending(overlap_ ? static_cast<size_t>(unit.end_bucket - unit.first_bucket) : 0);
}

void ZeroEngine::drain_pending(size_t keep) {
  Ops& ops = backend_.ops();
  while (pending_.size() > keep) {
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    {
      ScopedStepPhase wait(StepPhase::kCommWait);
      check(p.work->wait());
    }
    if (!p.recv.empty()) {
      // Pooled buffers may be larger than this bucket's shard: add only the shard.
      ops.add_inplace(grad_shard_.slice(p.shard_offset, p.shard_offset + p.recv_elems),
                      p.recv.as(dtype_, {p.recv_elems}));
      recv_pool_.push_back(std::move(p.recv));
    }
    if (!p.release.empty()) grad_pool_.push_back(std::move(p.release));
  }
}

Status ZeroEngine::finish_backward() {
  try {
    drain_pending(0);
  } catch (const StatusError& e) {
    return e.status();
  }
  return Status::ok();
}

Result<ZeroEngine::GradStats> ZeroEngine::grad_stats() {
  Ops& ops = backend_.ops();
  GradStats s;
  if (stage_ == 0) {
    s.sum_squares = ops.sum_squares(grads_full_);
    s.overflow = ops.count_nonfinite(grads_full_) > 0;
    return s;
  }
  ZT_ASSIGN_OR_RETURN(Buffer buf,
                      backend_.allocate(2 * sizeof(float), MemCategory::kCommunication));
  // The collective works on compute-backend memory; the host reads the result through a copy.
  float v[2] = {static_cast<float>(ops.sum_squares(grad_shard_)),
                static_cast<float>(ops.count_nonfinite(grad_shard_))};
  backend_.copy(buf.data(), v, sizeof(v));
  {
    ScopedStepPhase wait(StepPhase::kCommWait);
    ZT_RETURN_IF_ERROR(comm_.all_reduce(buf.as(DType::kF32, {2})));
  }
  backend_.copy(v, buf.data(), sizeof(v));
  s.sum_squares = v[0];
  s.overflow = v[1] > 0.0f || !std::isfinite(v[0]);
  return s;
}

Status ZeroEngine::optimizer_step(const OptimizerStepArgs& args) {
  Tensor grads = stage_ == 0 ? grads_full_ : grad_shard_;
  if (stage_state_) {
    // The state is host memory and the gradient device memory: the optimizer reads the gradient
    // from a host copy, taken once per step (Adafactor's prepare() reads all of it).
    if (grad_host_.empty()) {
      ZT_ASSIGN_OR_RETURN(grad_host_,
                          host_backend_->allocate(grads.nbytes(), MemCategory::kGradients));
    }
    ScopedStepPhase io(StepPhase::kOffloadIo);
    backend_.copy(grad_host_.data(), grads.data, grads.nbytes());
    grads = grad_host_.as(grads.dtype, grads.shape);
  }
  ZT_RETURN_IF_ERROR(opt_->prepare(args, grads, *store_, comm_));
  const std::vector<StoreArray>& arrays = store_->arrays();
  const uint32_t all = (1u << arrays.size()) - 1u;
  const std::vector<OptimSegment>& segs = opt_->segments();
  const size_t gsize = dtype_size(grads.dtype);
  // With the master weights on NVMe each updated chunk becomes working weights at once: the
  // master weights are never whole in memory.
  const bool convert_chunks = !store_->resident();
  std::vector<void*> ptrs(arrays.size());
  size_t first = 0;  // segments before it end before the current chunk
  ZT_RETURN_IF_ERROR(
      store_->stream(all, all, [&](int64_t begin, int64_t count, void* const* chunk) {
        const int64_t end = begin + count;
        while (first < segs.size() && segs[first].local + segs[first].count <= begin) ++first;
        for (size_t i = first; i < segs.size() && segs[i].local < end; ++i) {
          const OptimSegment& s = segs[i];
          const int64_t lo = std::max(begin, s.local), hi = std::min(end, s.local + s.count);
          for (size_t k = 0; k < arrays.size(); ++k)
            ptrs[k] = static_cast<char*>(chunk[k]) +
                      static_cast<size_t>(lo - begin) * arrays[k].elem_bytes;
          opt_->update(s, lo, hi - lo, ptrs.data(),
                       static_cast<const char*>(grads.data) + static_cast<size_t>(lo) * gsize,
                       grads.dtype, args);
        }
        if (convert_chunks) convert_master_range(begin, count, static_cast<const float*>(chunk[0]));
        return Status::ok();
      }));
  return refresh_working_weights(convert_chunks);
}

Result<std::vector<float>> ZeroEngine::gather_master() {
  std::vector<float> out(static_cast<size_t>(plan_.total), 0.0f);
  if (stage_ == 0) {
    ZT_RETURN_IF_ERROR(store_->read(0, 0, plan_.total, out.data()));
    return out;
  }
  ZT_ASSIGN_OR_RETURN(Buffer mine, backend_.allocate(static_cast<size_t>(plan_.shard_total) * 4,
                                                     MemCategory::kCommunication));
  // The store reads into host memory (`out`, large enough), which then goes to the collective's
  // compute-backend buffer.
  ZT_RETURN_IF_ERROR(store_->read(0, 0, plan_.shard_total, out.data()));
  backend_.copy(mine.data(), out.data(), static_cast<size_t>(plan_.shard_total) * 4);
  const Tensor master = mine.as(DType::kF32, {plan_.shard_total});
  ZT_ASSIGN_OR_RETURN(Buffer full, backend_.allocate(static_cast<size_t>(plan_.total) * 4,
                                                     MemCategory::kCommunication));
  const Tensor all = full.as(DType::kF32, {plan_.total});
  std::vector<std::unique_ptr<Work>> works;
  for (const PlanBucket& b : plan_.buckets)
    works.push_back(comm_.all_gather_async(master.slice(b.shard_offset, b.shard_offset + b.shard),
                                           all.slice(b.offset, b.offset + b.padded)));
  {
    ScopedStepPhase wait(StepPhase::kCommWait);
    for (auto& w : works) ZT_RETURN_IF_ERROR(w->wait());
  }
  backend_.copy(out.data(), all.data, static_cast<size_t>(plan_.total) * 4);
  return out;
}

std::vector<PartitionPlan::ShardPiece> ZeroEngine::held_pieces() const {
  if (stage_ != 0) return checkpoint_pieces();
  std::vector<PartitionPlan::ShardPiece> out;
  for (size_t p = 0; p < plan_.layout.entries.size(); ++p) {
    const ParamEntry& e = plan_.layout.entries[p];
    out.push_back({static_cast<int>(p), 0, e.offset, e.spec.numel()});
  }
  return out;
}

Status ZeroEngine::state_loaded(const Status& local) {
  ZT_ASSIGN_OR_RETURN(Buffer flag, backend_.allocate(sizeof(float), MemCategory::kCommunication));
  float v[1] = {local.is_ok() ? 0.0f : static_cast<float>(comm_.rank() + 1)};
  backend_.copy(flag.data(), v, sizeof(v));
  ZT_RETURN_IF_ERROR(comm_.all_reduce(flag.as(DType::kF32, {1}), ReduceOp::kMax));
  backend_.copy(v, flag.data(), sizeof(v));
  if (!local.is_ok()) return local;
  if (v[0] != 0.0f)
    return make_error(StatusCode::kAborted,
                      "rank {} could not load its part of the checkpoint (its error names the "
                      "file); the job cannot continue from it",
                      static_cast<int>(v[0]) - 1);
  return refresh_working_weights();
}

int ZeroEngine::segment_of(int param) const {
  const int i = segment_of_param_.at(static_cast<size_t>(param));
  ZT_CHECK(i >= 0, "rank {} holds no state of '{}'", comm_.rank(),
           plan_.layout.entries.at(static_cast<size_t>(param)).spec.name);
  return i;
}

Status ZeroEngine::read_state(int k, int param, int64_t begin, int64_t count, float* out) {
  ZT_CHECK(k >= 0 && k < static_cast<int>(ckpt_states_.size()) && !ckpt_states_[k].whole,
           "ranged optimizer state {} out of range", k);
  const int si = segment_of(param);
  const OptimSegment& s = opt_->segments()[static_cast<size_t>(si)];
  ZT_CHECK(begin >= s.param_begin && begin + count <= s.param_begin + s.count,
           "rank {} does not hold elements [{}, {}) of '{}'", comm_.rank(), begin, begin + count,
           s.spec->name);
  const int64_t local = s.local + (begin - s.param_begin);
  if (k == 0) return store_->read(0, local, count, out);
  return opt_->read_state(k - 1, si, local, count, *store_, out);
}

Status ZeroEngine::write_state(int k, size_t piece, const float* in) {
  ZT_CHECK(k >= 0 && k < static_cast<int>(ckpt_states_.size()) && !ckpt_states_[k].whole,
           "ranged optimizer state {} out of range", k);
  const OptimSegment& s = opt_->segments().at(piece);
  if (k == 0) return store_->write(0, s.local, s.count, in);
  return opt_->write_state(k - 1, static_cast<int>(piece), in, *store_);
}

float* ZeroEngine::state_view(int k, int param, int64_t begin) {
  if (!store_->resident() || !state_backend().host_accessible()) return nullptr;
  int array = k == 0 ? 0 : opt_->store_array_of(k - 1);
  if (array < 0) return nullptr;
  const OptimSegment& s = opt_->segments()[static_cast<size_t>(segment_of(param))];
  return static_cast<float*>(store_->data(array)) + s.local + (begin - s.param_begin);
}

void ZeroEngine::read_whole(int k, int param, float* out) const {
  ZT_CHECK(k > 0 && ckpt_states_.at(static_cast<size_t>(k)).whole, "state {} is not whole", k);
  opt_->read_whole(k - 1, param, out);
}

void ZeroEngine::write_whole(int k, int param, const float* in) {
  ZT_CHECK(k > 0 && ckpt_states_.at(static_cast<size_t>(k)).whole, "state {} is not whole", k);
  opt_->write_whole(k - 1, param, in);
}

}  // namespace zt
