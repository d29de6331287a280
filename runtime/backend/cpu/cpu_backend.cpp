#include "runtime/backend/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "kernels/attention.h"
#include "kernels/crossentropy.h"
#include "kernels/encoder.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/optimizer.h"  // sum_squares, count_nonfinite
#include "kernels/residual.h"
#include "runtime/backend/op_checks.h"

namespace zt {

namespace k = kernels::cpu;

namespace {

using op_checks::check_f32;
using op_checks::check_same;
using op_checks::cols;
using op_checks::rows;

template <typename T>
T* p(const Tensor& t) {
  return t.defined() ? t.ptr<T>() : nullptr;
}

}  // namespace

class CpuOps final : public Ops {
 public:
  explicit CpuOps(CpuBackend& be) : be_(be) {}

  Status supports(DType) const override { return Status::ok(); }

  void encoder_fwd(Tensor out, const int32_t* tokens, Tensor wte, Tensor wpe) override {
    check_same(out, wte, "encoder_fwd");
    check_same(out, wpe, "encoder_fwd");
    ZT_CHECK(out.shape.rank() == 3 && out.shape[1] <= wpe.shape[0] && out.shape[2] == wte.shape[1],
             "encoder_fwd: out {} wte {} wpe {}", out.shape.to_string(), wte.shape.to_string(),
             wpe.shape.to_string());
    dispatch_dtype(out.dtype, [&]<typename T>() {
      k::encoder_fwd<T>(p<T>(out), tokens, p<T>(wte), p<T>(wpe), static_cast<int>(out.shape[0]),
                        static_cast<int>(out.shape[1]), static_cast<int>(out.shape[2]));
    });
  }

  void encoder_bwd(Tensor dwte, Tensor dwpe, Tensor dout, const int32_t* tokens) override {
    check_same(dout, dwte, "encoder_bwd");
    check_same(dout, dwpe, "encoder_bwd");
    const int B = static_cast<int>(dout.shape[0]), S = static_cast<int>(dout.shape[1]),
              C = static_cast<int>(dout.shape[2]), V = static_cast<int>(dwte.shape[0]);
    void* scratch = be_.workspace(k::encoder_bwd_scratch_bytes(B, S, C, V));
    dispatch_dtype(dout.dtype, [&]<typename T>() {
      k::encoder_bwd<T>(p<T>(dwte), p<T>(dwpe), p<T>(dout), tokens, B, S, C, V, scratch);
    });
  }

  void layernorm_fwd(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                     Tensor bias) override {
    check_same(out, inp, "layernorm_fwd");
    check_f32(mean, "layernorm_fwd", "mean");
    check_f32(rstd, "layernorm_fwd", "rstd");
    ZT_CHECK(out.numel() == inp.numel() && cols(inp) == weight.numel(), "layernorm_fwd shapes");
    dispatch_dtype(inp.dtype, [&]<typename T>() {
      k::layernorm_fwd<T>(p<T>(out), p<float>(mean), p<float>(rstd), p<T>(inp), p<T>(weight),
                          p<T>(bias), rows(inp), cols(inp), 1e-5f);
    });
  }

  void layernorm_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                     Tensor weight, Tensor mean, Tensor rstd) override {
    check_same(dout, inp, "layernorm_bwd");
    check_same(dinp, inp, "layernorm_bwd");
    const int N = rows(inp), C = cols(inp);
    void* scratch = be_.workspace(k::layernorm_bwd_scratch_bytes(N, C));
    dispatch_dtype(inp.dtype, [&]<typename T>() {
      k::layernorm_bwd<T>(p<T>(dinp), p<T>(dweight), p<T>(dbias), p<T>(dout), p<T>(inp),
                          p<T>(weight), p<float>(mean), p<float>(rstd), N, C, scratch);
    });
  }

  void matmul_fwd(Tensor out, Tensor inp, Tensor weight, Tensor bias) override {
    check_same(out, inp, "matmul_fwd");
    check_same(weight, inp, "matmul_fwd");
    const int N = rows(inp), C = cols(inp), OC = static_cast<int>(weight.shape[0]);
    ZT_CHECK(weight.numel() == static_cast<int64_t>(OC) * C &&
                 out.numel() == static_cast<int64_t>(N) * OC,
             "matmul_fwd: inp {} weight {} out {}", inp.shape.to_string(), weight.shape.to_string(),
             out.shape.to_string());
    void* scratch = be_.workspace(k::matmul_fwd_scratch_bytes(N, C, OC, inp.dtype == DType::kF32));
    dispatch_dtype(inp.dtype, [&]<typename T>() {
      k::matmul_fwd<T>(p<T>(out), p<T>(inp), p<T>(weight), p<T>(bias), N, C, OC, scratch);
    });
  }

  void matmul_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                  Tensor weight) override {
    check_same(dout, inp, "matmul_bwd");
    const int N = rows(inp), C = cols(inp), OC = static_cast<int>(weight.shape[0]);
    ZT_CHECK(dout.numel() == static_cast<int64_t>(N) * OC, "matmul_bwd: dout {} inp {} weight {}",
             dout.shape.to_string(), inp.shape.to_string(), weight.shape.to_string());
    void* scratch = be_.workspace(k::matmul_bwd_scratch_bytes(N, C, OC, inp.dtype == DType::kF32));
    dispatch_dtype(inp.dtype, [&]<typename T>() {
      k::matmul_bwd<T>(p<T>(dinp), p<T>(dweight), p<T>(dbias), p<T>(dout), p<T>(inp), p<T>(weight),
                       N, C, OC, scratch);
    });
  }

  void attention_fwd(Tensor out, Tensor lse, Tensor qkv, int n_head) override {
    check_same(out, qkv, "attention_fwd");
    check_f32(lse, "attention_fwd", "lse");
    const int B = static_cast<int>(qkv.shape[0]), S = static_cast<int>(qkv.shape[1]),
              C = static_cast<int>(qkv.shape[2] / 3);
    void* scratch = be_.workspace(k::attention_fwd_scratch_bytes(B, S, C, n_head));
    dispatch_dtype(qkv.dtype, [&]<typename T>() {
      k::attention_fwd<T>(p<T>(out), p<float>(lse), p<T>(qkv), B, S, C, n_head, scratch);
    });
  }

  void attention_bwd(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                     int n_head) override {
    check_same(dqkv, qkv, "attention_bwd");
    check_same(dout, qkv, "attention_bwd");
    const int B = static_cast<int>(qkv.shape[0]), S = static_cast<int>(qkv.shape[1]),
              C = static_cast<int>(qkv.shape[2] / 3);
    void* scratch = be_.workspace(k::attention_bwd_scratch_bytes(B, S, C, n_head));
    dispatch_dtype(qkv.dtype, [&]<typename T>() {
      k::attention_bwd<T>(p<T>(dqkv), p<T>(dout), p<T>(qkv), p<T>(out), p<float>(lse), B, S, C,
                          n_head, scratch);
    });
  }

  void gelu_fwd(Tensor out, Tensor inp) override {
    check_same(out, inp, "gelu_fwd");
    dispatch_dtype(inp.dtype, [&]<typename T>() {
      k::gelu_fwd<T>(p<T>(out), p<T>(inp), static_cast<size_t>(inp.numel()));
    });
  }
  void gelu_bwd(Tensor dinp, Tensor inp, Tensor dout) override {
    check_same(dinp, inp, "gelu_bwd");
    dispatch_dtype(inp.dtype, [&]<typename T>() {
      k::gelu_bwd<T>(p<T>(dinp), p<T>(inp), p<T>(dout), static_cast<size_t>(inp.numel()));
    });
  }
  void residual_fwd(Tensor out, Tensor a, Tensor b) override {
    check_same(out, a, "residual_fwd");
    check_same(a, b, "residual_fwd");
    ZT_CHECK(a.numel() == b.numel() && out.numel() == a.numel(), "residual_fwd sizes");
    dispatch_dtype(a.dtype, [&]<typename T>() {
      k::residual_fwd<T>(p<T>(out), p<T>(a), p<T>(b), static_cast<size_t>(a.numel()));
    });
  }
  void add_inplace(Tensor dst, Tensor src) override {
    check_same(dst, src, "add_inplace");
    dispatch_dtype(dst.dtype, [&]<typename T>() {
      k::add_inplace<T>(p<T>(dst), p<T>(src), static_cast<size_t>(dst.numel()));
    });
  }

  void softmax_crossentropy(Tensor losses, Tensor dlogits, Tensor logits, const int32_t* targets,
                            float dloss) override {
    check_f32(losses, "softmax_crossentropy", "losses");
    if (dlogits.defined()) check_same(dlogits, logits, "softmax_crossentropy");
    dispatch_dtype(logits.dtype, [&]<typename T>() {
      k::softmax_crossentropy_fwd_bwd<T>(p<float>(losses), p<T>(dlogits), p<T>(logits), targets,
                                         rows(logits), cols(logits), dloss);
    });
  }

  void convert(Tensor dst, Tensor src) override {
    ZT_CHECK(dst.numel() == src.numel(), "convert: {} vs {} elements", dst.numel(), src.numel());
    zt::convert(src.data, src.dtype, dst.data, dst.dtype, static_cast<size_t>(src.numel()));
  }
  double sum_squares(Tensor x) override {
    return dispatch_dtype(x.dtype, [&]<typename T>() {
      return k::sum_squares<T>(p<T>(x), static_cast<size_t>(x.numel()));
    });
  }
  size_t count_nonfinite(Tensor x) override {
    return dispatch_dtype(x.dtype, [&]<typename T>() {
      return k::count_nonfinite<T>(p<T>(x), static_cast<size_t>(x.numel()));
    });
  }

 private:
  CpuBackend& be_;
};

CpuBackend::CpuBackend()
    : ops_(std::make_unique<CpuOps>(*this)), optimizer_ops_(make_cpu_optimizer_ops()) {}
CpuBackend::~CpuBackend() { workspace_.reset(); }

void CpuBackend::copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::fill_zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
Ops& CpuBackend::ops() { return *ops_; }

void* CpuBackend::workspace(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (workspace_.bytes() < bytes) {
    workspace_.reset();
    auto r = allocate(bytes, MemCategory::kWorkspace);
    ZT_CHECK(r.is_ok(), "{}", r.status().to_string());
    workspace_ = std::move(r).value();
  }
  return workspace_.data();
}

void* CpuBackend::raw_alloc(size_t bytes) { return std::aligned_alloc(64, bytes); }
void CpuBackend::raw_free(void* ptr, size_t) { std::free(ptr); }

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace zt
