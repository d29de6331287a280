#include "runtime/zero/zero_engine.h"

#include <algorithm>
#include <cmath>

#include "runtime/model/gpt2_hf.h"

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
  if (stage_ <= 2) {
    ZT_RETURN_IF_ERROR(
        alloc(params_full_buf_, params_full_, total, dtype_, MemCategory::kParameters));
  }
  if (stage_ <= 1) {
    ZT_RETURN_IF_ERROR(alloc(grads_full_buf_, grads_full_, total, dtype_, MemCategory::kGradients));
  }
  if (stage_ >= 1) {
    ZT_RETURN_IF_ERROR(alloc(grad_shard_buf_, grad_shard_, shard, dtype_, MemCategory::kGradients));
  }
  const int64_t owned = stage_ == 0 ? total : shard;
  if (stage_ == 0 && fp32) {
    master_ = params_full_;  // fp32 training: the working weights are the master weights
  } else {
    ZT_RETURN_IF_ERROR(
        alloc(master_buf_, master_, owned, DType::kF32, MemCategory::kOptimizerStates));
  }
  ZT_RETURN_IF_ERROR(alloc(m_buf_, m_, owned, DType::kF32, MemCategory::kOptimizerStates));
  ZT_RETURN_IF_ERROR(alloc(v_buf_, v_, owned, DType::kF32, MemCategory::kOptimizerStates));
  if (stage_ == 3) {
    if (fp32) {
      param_shard_ = master_;
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
  my_pieces_ = plan_.shard_pieces(comm_.rank());
  piece_of_param_.assign(plan_.layout.entries.size(), -1);
  for (size_t i = 0; i < my_pieces_.size(); ++i)
    piece_of_param_[static_cast<size_t>(my_pieces_[i].param)] = static_cast<int>(i);

  // Optimizer spans: the whole flat buffer at stage 0, the rank's shard pieces otherwise.
  auto add_span = [&](int64_t off, int64_t n, bool decay) {
    if (!spans_.empty() && spans_.back().decay == decay &&
        spans_.back().offset + spans_.back().count == off)
      spans_.back().count += n;
    else
      spans_.push_back({off, n, decay});
  };
  if (stage_ == 0) {
    for (const ParamEntry& e : plan_.layout.entries)
      add_span(e.offset, e.spec.numel(), e.spec.weight_decay);
  } else {
    for (const PartitionPlan::ShardPiece& p : plan_.shard_pieces(comm_.rank()))
      add_span(p.local_offset, p.count,
               plan_.layout.entries[static_cast<size_t>(p.param)].spec.weight_decay);
  }
  return Status::ok();
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

Status ZeroEngine::refresh_working_weights() {
  Ops& ops = backend_.ops();
  std::vector<std::unique_ptr<Work>> works;
  if (stage_ == 0) {
    if (dtype_ != DType::kF32) ops.convert(params_full_, master_);
    return Status::ok();
  }
  for (size_t i = 0; i < plan_.buckets.size(); ++i) {
    const PlanBucket& b = plan_.buckets[i];
    const Tensor master = master_.slice(b.shard_offset, b.shard_offset + b.shard);
    Tensor full;
    if (stage_ <= 2) {
      full = params_full_.slice(b.offset, b.offset + b.padded);
    } else if (b.persistent) {
      full = persistent_buf_[i].as(dtype_, {b.padded});
    } else {
      continue;
    }
    const Tensor mine = full.slice(comm_.rank() * b.shard, (comm_.rank() + 1) * b.shard);
    ops.convert(mine, master);
    works.push_back(comm_.all_gather_async(mine, full));
  }
  if (stage_ == 3 && dtype_ != DType::kF32) ops.convert(param_shard_, master_);
  for (auto& w : works) ZT_RETURN_IF_ERROR(w->wait());
  return Status::ok();
}

Status ZeroEngine::init_weights() {
  float* master = master_.ptr<float>();
  std::vector<float> loaded;
  if (!cfg_.model.init_from.empty()) {
    loaded.assign(static_cast<size_t>(plan_.total), 0.0f);
    ZT_RETURN_IF_ERROR(load_gpt2_safetensors(cfg_.model.init_from, plan_.layout, loaded.data())
                           .with_context("model.init_from"));
  }
  auto fill = [&](const ParamEntry& e, int64_t begin, int64_t count, float* out) {
    if (loaded.empty())
      init_param_range(e.spec, cfg_.model.seed, begin, count, out);
    else
      std::copy_n(loaded.data() + e.offset + begin, count, out);
  };
  if (stage_ == 0) {
    for (const ParamEntry& e : plan_.layout.entries) fill(e, 0, e.spec.numel(), master + e.offset);
  } else {
    for (const PartitionPlan::ShardPiece& p : plan_.shard_pieces(comm_.rank()))
      fill(plan_.layout.entries[static_cast<size_t>(p.param)], p.param_begin, p.count,
           master + p.local_offset);
  }
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
    } else {
      g->works.push_back(comm_.all_gather_async(
          param_shard_.slice(b.shard_offset, b.shard_offset + b.shard), region));
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
    for (auto& w : g.works) check(w->wait());
    g.works.clear();
    g.waited = true;
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
    check(p.work->wait());
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
  float* v = static_cast<float*>(buf.data());
  v[0] = static_cast<float>(ops.sum_squares(grad_shard_));
  v[1] = static_cast<float>(ops.count_nonfinite(grad_shard_));
  ZT_RETURN_IF_ERROR(comm_.all_reduce(buf.as(DType::kF32, {2})));
  s.sum_squares = v[0];
  s.overflow = v[1] > 0.0f || !std::isfinite(v[0]);
  return s;
}

Status ZeroEngine::optimizer_step(const AdamWStep& st) {
  Ops& ops = backend_.ops();
  const Tensor grads = stage_ == 0 ? grads_full_ : grad_shard_;
  Ops::AdamWParams p{st.lr, st.beta1,      st.beta2,      st.eps,
                     0.0f,  st.bias_corr1, st.bias_corr2, st.grad_scale};
  for (const Span& s : spans_) {
    p.weight_decay = s.decay ? st.weight_decay : 0.0f;
    ops.adamw_update(master_.slice(s.offset, s.offset + s.count),
                     m_.slice(s.offset, s.offset + s.count), v_.slice(s.offset, s.offset + s.count),
                     grads.slice(s.offset, s.offset + s.count), p);
  }
  return refresh_working_weights();
}

Result<std::vector<float>> ZeroEngine::gather_master() {
  std::vector<float> out(static_cast<size_t>(plan_.total), 0.0f);
  if (stage_ == 0) {
    std::copy_n(master_.ptr<float>(), plan_.total, out.data());
    return out;
  }
  ZT_ASSIGN_OR_RETURN(Buffer full, backend_.allocate(static_cast<size_t>(plan_.total) * 4,
                                                     MemCategory::kCommunication));
  const Tensor all = full.as(DType::kF32, {plan_.total});
  std::vector<std::unique_ptr<Work>> works;
  for (const PlanBucket& b : plan_.buckets)
    works.push_back(comm_.all_gather_async(master_.slice(b.shard_offset, b.shard_offset + b.shard),
                                           all.slice(b.offset, b.offset + b.padded)));
  for (auto& w : works) ZT_RETURN_IF_ERROR(w->wait());
  std::copy_n(all.ptr<float>(), plan_.total, out.data());
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
  float* v = static_cast<float*>(flag.data());
  v[0] = local.is_ok() ? 0.0f : static_cast<float>(comm_.rank() + 1);
  ZT_RETURN_IF_ERROR(comm_.all_reduce(flag.as(DType::kF32, {1}), ReduceOp::kMax));
  if (!local.is_ok()) return local;
  if (v[0] != 0.0f)
    return make_error(StatusCode::kAborted,
                      "rank {} could not load its part of the checkpoint (its error names the "
                      "file); the job cannot continue from it",
                      static_cast<int>(v[0]) - 1);
  return refresh_working_weights();
}

float* ZeroEngine::state_data(int k, int param, int64_t begin) {
  ZT_CHECK(k >= 0 && k < kNumStates, "optimizer state {} out of range", k);
  const Tensor& t = k == 0 ? master_ : k == 1 ? m_ : v_;
  const ParamEntry& e = plan_.layout.entries.at(static_cast<size_t>(param));
  if (stage_ == 0) return t.ptr<float>() + e.offset + begin;
  const int i = piece_of_param_.at(static_cast<size_t>(param));
  if (i >= 0) {
    const PartitionPlan::ShardPiece& p = my_pieces_[static_cast<size_t>(i)];
    if (begin >= p.param_begin && begin < p.param_begin + p.count)
      return t.ptr<float>() + p.local_offset + (begin - p.param_begin);
  }
  ZT_CHECK(false, "rank {} holds no state for element {} of '{}'", comm_.rank(), begin,
           e.spec.name);
  return nullptr;
}

}  // namespace zt
