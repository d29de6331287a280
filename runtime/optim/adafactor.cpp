// Adafactor (Shazeer & Stern 2018) with Hugging Face's defaults and rule: a factored second moment
// for parameters of two or more dimensions — row and column means of g^2 + eps1 over the parameter
// viewed as (rows, last dim) — and a full one for the rest; update clipping to RMS clip_threshold;
// beta2_t = 1 - t^decay_rate; relative step min(1e-2, 1/sqrt(t)) scaled by max(eps2, RMS(param));
// an optional first moment. A parameter of three or more dimensions is factored as
// (prod(shape[:-1]), shape[-1]) — Hugging Face keeps moments per leading index instead; GPT-2 has
// none such.
//
// Under ZeRO a rank holds only pieces of a parameter, while the row/column means, RMS(param) and
// the update's RMS are over whole parameters: prepare() sums each piece's contribution and
// all-reduces two small vectors (rows + columns of every factored parameter plus one value per
// parameter, then one value per parameter). The factored moments are whole on every rank that holds
// a piece and stay identical there (the same reduced sums in the same order). Weight decay follows
// the project's grouping: only parameters of two or more dimensions decay.
//
// Memory: the unfactored second moments v live in the optimizer backend's memory, like the store
// arrays. The factored row/column moments and this step's factors are computed on the host (a few
// floats per row and column) and kept there authoritatively; the factors are uploaded to a side
// buffer in the backend's memory each step for the kernels. Where the host can dereference the
// backend's memory both are the same side buffer, as they always were on the CPU backend. The
// fp64 row/column sums come back from the kernels through a copy, and the all-reduced vectors go
// through buffers of the communication backend (device memory for NCCL).
#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/optim/optimizer_impls.h"
#include "runtime/profile/step_profile.h"

namespace zt::optim_impl {
namespace {

class Adafactor final : public Optimizer {
 public:
  Adafactor(const OptimizerConfig& cfg, const ParamLayout& layout, std::vector<OptimSegment> segs,
            bool partitioned, Backend& backend, Backend& comm_backend)
      : Optimizer(cfg, std::move(segs), partitioned, backend),
        layout_(layout),
        comm_backend_(comm_backend) {}

  Status allocate() {
    const size_t np = layout_.entries.size();
    params_.resize(np);
    int64_t red = 0;
    for (size_t p = 0; p < np; ++p) {
      const ParamSpec& spec = layout_.entries[p].spec;
      Param& pi = params_[p];
      pi.numel = spec.numel();
      pi.factored = spec.shape.size() >= 2;
      pi.cols = pi.factored ? spec.shape.back() : pi.numel;
      pi.rows = pi.numel / pi.cols;
      if (pi.factored) {
        pi.red = red;
        red += pi.rows + pi.cols;
      }
    }
    red_factored_ = red;
    int64_t v_elems = 0;
    for (const OptimSegment& s : segments_) {
      Param& pi = params_[static_cast<size_t>(s.param)];
      pi.held = true;
      if (!pi.factored) {
        seg_v_.push_back(v_elems);
        v_elems += s.count;
      } else {
        seg_v_.push_back(-1);
      }
    }
    ZT_ASSIGN_OR_RETURN(v_, side_floats(v_elems));
    const bool host = backend_.host_accessible();
    int64_t host_floats = 0, max_sums = 0;
    for (Param& pi : params_) {
      if (!pi.held || !pi.factored) continue;
      host_floats += 2 * (pi.rows + pi.cols);
      max_sums = std::max(max_sums, pi.rows + pi.cols);
    }
    if (!host) host_side_.assign(static_cast<size_t>(host_floats), 0.0f);
    float* next_host = host_side_.data();
    for (Param& pi : params_) {
      if (!pi.held || !pi.factored) continue;
      // Row and column moments (state), then this step's factors (scratch).
      if (host) {
        ZT_ASSIGN_OR_RETURN(pi.row, side_floats(2 * (pi.rows + pi.cols)));
      } else {
        pi.row = next_host;
        next_host += 2 * (pi.rows + pi.cols);
      }
      pi.col = pi.row + pi.rows;
      pi.rfac = pi.col + pi.cols;
      pi.cfac = pi.rfac + pi.rows;
      if (host) {
        pi.dev_rfac = pi.rfac;
      } else {
        ZT_ASSIGN_OR_RETURN(pi.dev_rfac, side_floats(pi.rows + pi.cols));
      }
      pi.dev_cfac = pi.dev_rfac + pi.rows;
    }
    if (!host && max_sums > 0) {
      ZT_ASSIGN_OR_RETURN(
          sums_dev_, backend_.allocate(static_cast<size_t>(max_sums) * 8, MemCategory::kWorkspace));
    }
    ZT_ASSIGN_OR_RETURN(red_a_, comm_backend_.allocate(static_cast<size_t>(red + np) * 4,
                                                       MemCategory::kCommunication));
    ZT_ASSIGN_OR_RETURN(
        red_b_, comm_backend_.allocate(static_cast<size_t>(np) * 4, MemCategory::kCommunication));
    for (const CheckpointStateInfo& s : checkpoint_states()) names_.push_back(s.name);
    return Status::ok();
  }

  std::vector<StoreArray> store_arrays() const override {
    if (!cfg_.use_first_moment) return {};
    return {{"exp_avg", 4}};
  }

  Status prepare(const OptimizerStepArgs& a, const Tensor& grads, StateStore& store,
                 Communicator& comm) override {
    const size_t np = params_.size();
    const double t = static_cast<double>(a.t);
    const float beta2t =
        static_cast<float>(1.0 - std::pow(t, static_cast<double>(cfg_.decay_rate)));
    double rel = a.lr;
    if (cfg_.relative_step) rel = std::min(cfg_.warmup_init ? 1e-6 * t : 1e-2, 1.0 / std::sqrt(t));
    const size_t gsize = dtype_size(grads.dtype);
    auto grad_at = [&](int64_t local) {
      return static_cast<const char*>(grads.data) + static_cast<size_t>(local) * gsize;
    };
    OptimizerOps& ops = backend_.optimizer_ops();
    const bool host = backend_.host_accessible();

    // 1. Row/column sums of g^2 + eps1 and the sum of squares of the master weights, per piece.
    std::vector<float> A(static_cast<size_t>(red_factored_) + np, 0.0f);
    std::vector<double> sums;
    for (const OptimSegment& s : segments_) {
      const Param& pi = params_[static_cast<size_t>(s.param)];
      if (!pi.factored) continue;
      const size_t n_sums = static_cast<size_t>(pi.rows + pi.cols);
      sums.assign(n_sums, 0.0);
      double* out = sums.data();
      if (!host) {
        out = static_cast<double*>(sums_dev_.data());
        backend_.fill_zero(out, n_sums * sizeof(double));
      }
      ops.adafactor_sq_sums(grad_at(s.local), grads.dtype, static_cast<size_t>(s.count),
                            s.param_begin, pi.cols, a.grad_scale, cfg_.eps, out, out + pi.rows);
      if (!host) backend_.copy(sums.data(), out, n_sums * sizeof(double));
      for (size_t i = 0; i < sums.size(); ++i)
        A[static_cast<size_t>(pi.red) + i] += static_cast<float>(sums[i]);
    }
    if (cfg_.scale_parameter) {
      std::vector<double> msq(np, 0.0);
      std::vector<float> staged;  // a piece of the master weights, when they are device memory
      ZT_RETURN_IF_ERROR(store.stream(1u, 0u, [&](int64_t begin, int64_t count, void* const* ptrs) {
        const float* master = static_cast<const float*>(ptrs[0]);
        for_each_piece(begin, count, [&](const OptimSegment& s, int64_t b, int64_t n) {
          const float* x = master + (b - begin);
          if (!host) {
            staged.resize(static_cast<size_t>(n));
            backend_.copy(staged.data(), x, static_cast<size_t>(n) * sizeof(float));
            x = staged.data();
          }
          double acc = 0.0;
          for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * x[i];
          msq[static_cast<size_t>(s.param)] += acc;
        });
        return Status::ok();
      }));
      for (size_t p = 0; p < np; ++p)
        A[static_cast<size_t>(red_factored_) + p] = static_cast<float>(msq[p]);
    }
    if (partitioned_) ZT_RETURN_IF_ERROR(all_reduce(A, red_a_, comm));

    // 2. Factored moments and this step's factors, on the host; the factors then go where the
    // kernels read them.
    for (Param& pi : params_) {
      if (!pi.held) continue;
      pi.rms = std::sqrt(
          static_cast<double>(A[static_cast<size_t>(red_factored_ + (&pi - params_.data()))]) /
          static_cast<double>(pi.numel));
      if (!pi.factored) continue;
      const float* rs = A.data() + pi.red;
      const float* cs = rs + pi.rows;
      double row_total = 0.0;
      for (int64_t r = 0; r < pi.rows; ++r) {
        pi.row[r] = beta2t * pi.row[r] + (1.0f - beta2t) * (rs[r] / static_cast<float>(pi.cols));
        row_total += pi.row[r];
      }
      for (int64_t c = 0; c < pi.cols; ++c)
        pi.col[c] = beta2t * pi.col[c] + (1.0f - beta2t) * (cs[c] / static_cast<float>(pi.rows));
      const float row_mean = static_cast<float>(row_total / static_cast<double>(pi.rows));
      for (int64_t r = 0; r < pi.rows; ++r) pi.rfac[r] = 1.0f / std::sqrt(pi.row[r] / row_mean);
      for (int64_t c = 0; c < pi.cols; ++c) pi.cfac[c] = 1.0f / std::sqrt(pi.col[c]);
      if (pi.dev_rfac != pi.rfac)
        backend_.copy(pi.dev_rfac, pi.rfac, static_cast<size_t>(pi.rows + pi.cols) * sizeof(float));
    }

    // 3. The unclipped update's sum of squares per parameter (the unfactored second moments are
    // updated here: they are side state), reduced, then each parameter's step scale.
    std::vector<float> B(np, 0.0f);
    for (size_t i = 0; i < segments_.size(); ++i) {
      const OptimSegment& s = segments_[i];
      const Param& pi = params_[static_cast<size_t>(s.param)];
      double sq = 0.0;
      if (pi.factored)
        sq = ops.adafactor_factored_sq(grad_at(s.local), grads.dtype, static_cast<size_t>(s.count),
                                       s.param_begin, pi.cols, a.grad_scale, pi.dev_rfac,
                                       pi.dev_cfac);
      else
        sq = ops.adafactor_unfactored_v(grad_at(s.local), grads.dtype, v_ + seg_v_[i],
                                        static_cast<size_t>(s.count), a.grad_scale, beta2t,
                                        cfg_.eps);
      B[static_cast<size_t>(s.param)] += static_cast<float>(sq);
    }
    if (partitioned_) ZT_RETURN_IF_ERROR(all_reduce(B, red_b_, comm));
    for (size_t p = 0; p < np; ++p) {
      Param& pi = params_[p];
      if (!pi.held) continue;
      const double rms_u = std::sqrt(static_cast<double>(B[p]) / static_cast<double>(pi.numel));
      const double clip = std::max(1.0, rms_u / static_cast<double>(cfg_.clip_threshold));
      const double scale = cfg_.scale_parameter ? std::max<double>(cfg_.eps2, pi.rms) : 1.0;
      pi.lr = static_cast<float>(rel * scale);
      pi.scale = static_cast<float>(rel * scale / clip);
    }
    return Status::ok();
  }

  void update(const OptimSegment& seg, int64_t begin, int64_t count, void* const* arrays,
              const void* grad, DType grad_dtype, const OptimizerStepArgs& a) override {
    const size_t si = static_cast<size_t>(&seg - segments_.data());
    const Param& pi = params_[static_cast<size_t>(seg.param)];
    const float wd = seg.spec->weight_decay ? cfg_.weight_decay : 0.0f;
    float* m = cfg_.use_first_moment ? static_cast<float*>(arrays[1]) : nullptr;
    const float* v = pi.factored ? nullptr : v_ + seg_v_[si] + (begin - seg.local);
    const AdafactorApplyArgs args{a.grad_scale, pi.scale, pi.lr, cfg_.beta1, wd};
    backend_.optimizer_ops().adafactor_apply(
        static_cast<float*>(arrays[0]), m, grad, grad_dtype, static_cast<size_t>(count),
        seg.param_begin + (begin - seg.local), pi.cols, pi.factored ? pi.dev_rfac : nullptr,
        pi.factored ? pi.dev_cfac : nullptr, v, args);
  }

  int store_array_of(int k) const override {
    return names_[static_cast<size_t>(k)] == "exp_avg" ? 1 : -1;
  }

  Status read_state(int k, int s, int64_t begin, int64_t count, StateStore& store,
                    float* out) override {
    const OptimSegment& seg = segments_[static_cast<size_t>(s)];
    if (names_[static_cast<size_t>(k)] == "exp_avg") return store.read(1, begin, count, out);
    ZT_CHECK(seg_v_[static_cast<size_t>(s)] >= 0, "exp_avg_sq of factored '{}'", seg.spec->name);
    backend_.copy(out, v_ + seg_v_[static_cast<size_t>(s)] + (begin - seg.local),
                  static_cast<size_t>(count) * sizeof(float));
    return Status::ok();
  }

  Status write_state(int k, int s, const float* in, StateStore& store) override {
    const OptimSegment& seg = segments_[static_cast<size_t>(s)];
    if (names_[static_cast<size_t>(k)] == "exp_avg")
      return store.write(1, seg.local, seg.count, in);
    ZT_CHECK(seg_v_[static_cast<size_t>(s)] >= 0, "exp_avg_sq of factored '{}'", seg.spec->name);
    backend_.copy(v_ + seg_v_[static_cast<size_t>(s)], in,
                  static_cast<size_t>(seg.count) * sizeof(float));
    return Status::ok();
  }

  void read_whole(int k, int param, float* out) const override {
    const Param& pi = params_.at(static_cast<size_t>(param));
    ZT_CHECK(pi.held && pi.factored, "no factored state for parameter {}", param);
    if (names_[static_cast<size_t>(k)] == "exp_avg_sq_row")
      std::copy_n(pi.row, pi.rows, out);
    else
      std::copy_n(pi.col, pi.cols, out);
  }

  void write_whole(int k, int param, const float* in) override {
    Param& pi = params_.at(static_cast<size_t>(param));
    ZT_CHECK(pi.held && pi.factored, "no factored state for parameter {}", param);
    if (names_[static_cast<size_t>(k)] == "exp_avg_sq_row")
      std::copy_n(in, pi.rows, pi.row);
    else
      std::copy_n(in, pi.cols, pi.col);
  }

 private:
  struct Param {
    bool factored = false, held = false;
    int64_t numel = 0, rows = 0, cols = 0;
    int64_t red = 0;  // its row sums in the first reduction (columns follow)
    // Host memory: the moments and this step's factors.
    float* row = nullptr;
    float* col = nullptr;
    float* rfac = nullptr;
    float* cfac = nullptr;
    // The factors in the backend's memory, for the kernels (rfac/cfac themselves where the host
    // can dereference it).
    float* dev_rfac = nullptr;
    float* dev_cfac = nullptr;
    double rms = 0.0;  // RMS of the master weights before this step
    float lr = 0.0f, scale = 0.0f;
  };

  // All-reduces `host` (sum over ranks) through `buf`, a buffer of the communication backend.
  Status all_reduce(std::vector<float>& host, Buffer& buf, Communicator& comm) {
    const size_t bytes = host.size() * sizeof(float);
    comm_backend_.copy(buf.data(), host.data(), bytes);
    {
      ScopedStepPhase wait(StepPhase::kCommWait);
      ZT_RETURN_IF_ERROR(comm.all_reduce(buf.as(DType::kF32, {static_cast<int64_t>(host.size())})));
    }
    comm_backend_.copy(host.data(), buf.data(), bytes);
    return Status::ok();
  }

  // Calls fn(segment, begin, count) for each segment's part of owned [begin, begin + count).
  template <typename F>
  void for_each_piece(int64_t begin, int64_t count, F&& fn) const {
    const int64_t end = begin + count;
    for (const OptimSegment& s : segments_) {
      const int64_t b = std::max(begin, s.local), e = std::min(end, s.local + s.count);
      if (b < e) fn(s, b, e - b);
    }
  }

  const ParamLayout& layout_;
  Backend& comm_backend_;
  std::vector<Param> params_;
  std::vector<float> host_side_;  // the moments and factors when the backend is not host memory
  Buffer sums_dev_;               // fp64 row/column sums of one piece, ditto
  std::vector<int64_t> seg_v_;    // each segment's first unfactored moment in v_ (-1: factored)
  float* v_ = nullptr;
  int64_t red_factored_ = 0;
  Buffer red_a_, red_b_;
  std::vector<std::string> names_;
};

}  // namespace

Result<std::unique_ptr<Optimizer>> make_adafactor(const OptimizerConfig& cfg,
                                                  const ParamLayout& layout,
                                                  std::vector<OptimSegment> segs, bool partitioned,
                                                  Backend& backend, Backend& comm_backend) {
  std::unique_ptr<Adafactor> o(
      new Adafactor(cfg, layout, std::move(segs), partitioned, backend, comm_backend));
  ZT_RETURN_IF_ERROR(o->allocate());
  return std::unique_ptr<Optimizer>(std::move(o));
}

}  // namespace zt::optim_impl
