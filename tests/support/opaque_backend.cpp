#include "tests/support/opaque_backend.h"

#include <cstdlib>
#include <cstring>

#include "runtime/core/check.h"

namespace zt::testing {
namespace {

// A device pointer (tagged) as the host pointer the CPU kernels use. Null stays null (optional
// arguments); anything else must be tagged: a host pointer reaching a device op is the bug the
// opaque backend exists to catch.
template <typename T>
T* dev(T* p, const char* what) {
  if (p == nullptr) return p;
  ZT_CHECK(is_tagged(p), "opaque backend: {} got host pointer {} instead of device memory", what,
           static_cast<const void*>(p));
  return untag(p);
}
Tensor dev(const Tensor& t, const char* what) {
  if (!t.defined()) return t;
  return Tensor(dev(t.data, what), t.dtype, t.shape);
}

class OpaqueOps final : public Ops {
 public:
  explicit OpaqueOps(Ops& inner) : in_(inner) {}

  Status supports(DType dtype) const override { return in_.supports(dtype); }
  void encoder_fwd(Tensor out, const int32_t* tokens, Tensor wte, Tensor wpe) override {
    const char* op = "encoder_fwd";
    in_.encoder_fwd(dev(out, op), dev(tokens, op), dev(wte, op), dev(wpe, op));
  }
  void encoder_bwd(Tensor dwte, Tensor dwpe, Tensor dout, const int32_t* tokens) override {
    const char* op = "encoder_bwd";
    in_.encoder_bwd(dev(dwte, op), dev(dwpe, op), dev(dout, op), dev(tokens, op));
  }
  void layernorm_fwd(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                     Tensor bias) override {
    const char* op = "layernorm_fwd";
    in_.layernorm_fwd(dev(out, op), dev(mean, op), dev(rstd, op), dev(inp, op), dev(weight, op),
                      dev(bias, op));
  }
  void layernorm_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                     Tensor weight, Tensor mean, Tensor rstd) override {
    const char* op = "layernorm_bwd";
    in_.layernorm_bwd(dev(dinp, op), dev(dweight, op), dev(dbias, op), dev(dout, op), dev(inp, op),
                      dev(weight, op), dev(mean, op), dev(rstd, op));
  }
  void matmul_fwd(Tensor out, Tensor inp, Tensor weight, Tensor bias) override {
    const char* op = "matmul_fwd";
    in_.matmul_fwd(dev(out, op), dev(inp, op), dev(weight, op), dev(bias, op));
  }
  void matmul_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                  Tensor weight) override {
    const char* op = "matmul_bwd";
    in_.matmul_bwd(dev(dinp, op), dev(dweight, op), dev(dbias, op), dev(dout, op), dev(inp, op),
                   dev(weight, op));
  }
  void attention_fwd(Tensor out, Tensor lse, Tensor qkv, int n_head) override {
    const char* op = "attention_fwd";
    in_.attention_fwd(dev(out, op), dev(lse, op), dev(qkv, op), n_head);
  }
  void attention_bwd(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                     int n_head) override {
    const char* op = "attention_bwd";
    in_.attention_bwd(dev(dqkv, op), dev(dout, op), dev(qkv, op), dev(out, op), dev(lse, op),
                      n_head);
  }
  void gelu_fwd(Tensor out, Tensor inp) override {
    in_.gelu_fwd(dev(out, "gelu_fwd"), dev(inp, "gelu_fwd"));
  }
  void gelu_bwd(Tensor dinp, Tensor inp, Tensor dout) override {
    const char* op = "gelu_bwd";
    in_.gelu_bwd(dev(dinp, op), dev(inp, op), dev(dout, op));
  }
  void residual_fwd(Tensor out, Tensor a, Tensor b) override {
    const char* op = "residual_fwd";
    in_.residual_fwd(dev(out, op), dev(a, op), dev(b, op));
  }
  void add_inplace(Tensor dst, Tensor src) override {
    in_.add_inplace(dev(dst, "add_inplace"), dev(src, "add_inplace"));
  }
  void softmax_crossentropy(Tensor losses, Tensor dlogits, Tensor logits, const int32_t* targets,
                            float dloss) override {
    const char* op = "softmax_crossentropy";
    in_.softmax_crossentropy(dev(losses, op), dev(dlogits, op), dev(logits, op), dev(targets, op),
                             dloss);
  }
  void convert(Tensor dst, Tensor src) override {
    in_.convert(dev(dst, "convert"), dev(src, "convert"));
  }
  double sum_squares(Tensor x) override { return in_.sum_squares(dev(x, "sum_squares")); }
  size_t count_nonfinite(Tensor x) override {
    return in_.count_nonfinite(dev(x, "count_nonfinite"));
  }

 private:
  Ops& in_;
};

class OpaqueOptimizerOps final : public OptimizerOps {
 public:
  explicit OpaqueOptimizerOps(OptimizerOps& inner) : in_(inner) {}

  void adamw(float* master, float* m, float* v, const void* grad, DType grad_dtype, size_t n,
             const AdamWArgs& a) override {
    const char* op = "adamw";
    in_.adamw(dev(master, op), dev(m, op), dev(v, op), dev(grad, op), grad_dtype, n, a);
  }
  void sgd(float* master, float* momentum_buf, const void* grad, DType grad_dtype, size_t n,
           const SgdArgs& a) override {
    const char* op = "sgd";
    in_.sgd(dev(master, op), dev(momentum_buf, op), dev(grad, op), grad_dtype, n, a);
  }
  void lion(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
            const LionArgs& a) override {
    const char* op = "lion";
    in_.lion(dev(master, op), dev(m, op), dev(grad, op), grad_dtype, n, a);
  }
  void adamw8bit(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                 float* v_absmax, const void* grad, DType grad_dtype, size_t n, size_t first_block,
                 const AdamWArgs& a) override {
    const char* op = "adamw8bit";
    in_.adamw8bit(dev(master, op), dev(m_codes, op), dev(m_absmax, op), dev(v_codes, op),
                  dev(v_absmax, op), dev(grad, op), grad_dtype, n, first_block, a);
  }
  void quantize_blocks(bool signed_map, const float* x, size_t n, size_t first_block,
                       uint8_t* codes, float* absmax) override {
    const char* op = "quantize_blocks";
    in_.quantize_blocks(signed_map, dev(x, op), n, first_block, dev(codes, op), dev(absmax, op));
  }
  void dequantize_blocks(bool signed_map, const uint8_t* codes, const float* absmax, size_t n,
                         size_t first_block, float* out) override {
    const char* op = "dequantize_blocks";
    in_.dequantize_blocks(signed_map, dev(codes, op), dev(absmax, op), n, first_block,
                          dev(out, op));
  }
  void adafactor_sq_sums(const void* grad, DType grad_dtype, size_t n, int64_t first, int64_t cols,
                         float grad_scale, float eps1, double* row_sums,
                         double* col_sums) override {
    const char* op = "adafactor_sq_sums";
    in_.adafactor_sq_sums(dev(grad, op), grad_dtype, n, first, cols, grad_scale, eps1,
                          dev(row_sums, op), dev(col_sums, op));
  }
  double adafactor_factored_sq(const void* grad, DType grad_dtype, size_t n, int64_t first,
                               int64_t cols, float grad_scale, const float* rfac,
                               const float* cfac) override {
    const char* op = "adafactor_factored_sq";
    return in_.adafactor_factored_sq(dev(grad, op), grad_dtype, n, first, cols, grad_scale,
                                     dev(rfac, op), dev(cfac, op));
  }
  double adafactor_unfactored_v(const void* grad, DType grad_dtype, float* v, size_t n,
                                float grad_scale, float beta2t, float eps1) override {
    const char* op = "adafactor_unfactored_v";
    return in_.adafactor_unfactored_v(dev(grad, op), grad_dtype, dev(v, op), n, grad_scale, beta2t,
                                      eps1);
  }
  void adafactor_apply(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
                       int64_t first, int64_t cols, const float* rfac, const float* cfac,
                       const float* v, const AdafactorApplyArgs& a) override {
    const char* op = "adafactor_apply";
    in_.adafactor_apply(dev(master, op), dev(m, op), dev(grad, op), grad_dtype, n, first, cols,
                        dev(rfac, op), dev(cfac, op), dev(v, op), a);
  }

 private:
  OptimizerOps& in_;
};

class OpaqueBackend final : public Backend {
 public:
  OpaqueBackend()
      : inner_(make_cpu_backend()), ops_(inner_->ops()), optimizer_ops_(inner_->optimizer_ops()) {}
  ~OpaqueBackend() override = default;

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return "opaque"; }
  bool host_accessible() const override { return false; }

  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    std::memcpy(untag(dst), untag(src), bytes);
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (bytes == 0) return;
    std::memset(dev(dst, "fill_zero"), 0, bytes);
  }
  void synchronize() override {}
  Ops& ops() override { return ops_; }
  OptimizerOps& optimizer_ops() override { return optimizer_ops_; }
  std::unique_ptr<Backend> make_host_backend() override { return make_cpu_backend(); }

 protected:
  void* raw_alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, bytes);
    return p ? tag(p) : nullptr;
  }
  void raw_free(void* p, size_t) override { std::free(dev(p, "raw_free")); }

 private:
  std::unique_ptr<Backend> inner_;  // runs the kernels (its workspace is its own host memory)
  OpaqueOps ops_;
  OpaqueOptimizerOps optimizer_ops_;
};

class OpaqueCommunicator final : public Communicator {
 public:
  explicit OpaqueCommunicator(Communicator& inner) : in_(inner) {}

  int rank() const override { return in_.rank(); }
  int world_size() const override { return in_.world_size(); }
  std::string name() const override { return "opaque(" + in_.name() + ")"; }
  std::unique_ptr<Work> all_reduce_async(Tensor buf, ReduceOp op) override {
    return in_.all_reduce_async(dev(buf, "all_reduce"), op);
  }
  std::unique_ptr<Work> reduce_scatter_async(Tensor in, Tensor out) override {
    return in_.reduce_scatter_async(dev(in, "reduce_scatter"), dev(out, "reduce_scatter"));
  }
  std::unique_ptr<Work> all_gather_async(Tensor in, Tensor out) override {
    return in_.all_gather_async(dev(in, "all_gather"), dev(out, "all_gather"));
  }
  std::unique_ptr<Work> broadcast_async(Tensor buf, int root) override {
    return in_.broadcast_async(dev(buf, "broadcast"), root);
  }
  std::unique_ptr<Work> barrier_async() override { return in_.barrier_async(); }
  CommStats stats() const override { return in_.stats(); }
  void reset_stats() override { in_.reset_stats(); }
  void set_timeout(std::chrono::milliseconds timeout) override { in_.set_timeout(timeout); }

 private:
  Communicator& in_;
};

}  // namespace

std::unique_ptr<Backend> make_opaque_backend() { return std::make_unique<OpaqueBackend>(); }

std::unique_ptr<Communicator> make_opaque_communicator(Communicator& inner) {
  return std::make_unique<OpaqueCommunicator>(inner);
}

}  // namespace zt::testing
