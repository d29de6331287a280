// The CUDA backend's op tables: Ops (model ops: kernels/cuda + cuBLASLt GEMMs) and OptimizerOps
// (the fused updates of kernels/cuda/optimizer.cuh). Shapes and dtypes are checked exactly as the
// CPU backend checks them (a wrong call is a bug); every kernel goes on the backend's compute
// stream; scratch comes from the backend's workspace. Values returned to the host (sum_squares,
// count_nonfinite, Adafactor's sums) are read back through pinned memory with one stream
// synchronisation.
#pragma once

#include <memory>

#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/cublaslt_matmul.h"
#include "runtime/backend/optimizer_ops.h"

namespace zt {

class CudaBackend;

class CudaOps final : public Ops {
 public:
  // `lt_workspace`: the cuBLASLt scratch (device memory, kept for the backend's lifetime).
  CudaOps(CudaBackend& backend, Buffer lt_workspace);
  ~CudaOps() override;

  Status supports(DType dtype) const override;
  void encoder_fwd(Tensor out, const int32_t* tokens, Tensor wte, Tensor wpe) override;
  void encoder_bwd(Tensor dwte, Tensor dwpe, Tensor dout, const int32_t* tokens) override;
  void layernorm_fwd(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                     Tensor bias) override;
  void layernorm_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                     Tensor weight, Tensor mean, Tensor rstd) override;
  void matmul_fwd(Tensor out, Tensor inp, Tensor weight, Tensor bias) override;
  void matmul_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                  Tensor weight) override;
  void attention_fwd(Tensor out, Tensor lse, Tensor qkv, int n_head) override;
  void attention_bwd(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                     int n_head) override;
  void gelu_fwd(Tensor out, Tensor inp) override;
  void gelu_bwd(Tensor dinp, Tensor inp, Tensor dout) override;
  void residual_fwd(Tensor out, Tensor a, Tensor b) override;
  void add_inplace(Tensor dst, Tensor src) override;
  void softmax_crossentropy(Tensor losses, Tensor dlogits, Tensor logits, const int32_t* targets,
                            float dloss) override;
  void convert(Tensor dst, Tensor src) override;
  double sum_squares(Tensor x) override;
  size_t count_nonfinite(Tensor x) override;

 private:
  CudaBackend& be_;
  Buffer lt_workspace_;
  cuda::LtMatmul lt_;
};

class CudaOptimizerOps final : public OptimizerOps {
 public:
  explicit CudaOptimizerOps(CudaBackend& backend);
  ~CudaOptimizerOps() override;

  void adamw(float* master, float* m, float* v, const void* grad, DType grad_dtype, size_t n,
             const AdamWArgs& a) override;
  void sgd(float* master, float* momentum_buf, const void* grad, DType grad_dtype, size_t n,
           const SgdArgs& a) override;
  void lion(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
            const LionArgs& a) override;
  void adamw8bit(float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                 float* v_absmax, const void* grad, DType grad_dtype, size_t n, size_t first_block,
                 const AdamWArgs& a) override;
  void quantize_blocks(bool signed_map, const float* x, size_t n, size_t first_block,
                       uint8_t* codes, float* absmax) override;
  void dequantize_blocks(bool signed_map, const uint8_t* codes, const float* absmax, size_t n,
                         size_t first_block, float* out) override;
  void adafactor_sq_sums(const void* grad, DType grad_dtype, size_t n, int64_t first, int64_t cols,
                         float grad_scale, float eps1, double* row_sums, double* col_sums) override;
  double adafactor_factored_sq(const void* grad, DType grad_dtype, size_t n, int64_t first,
                               int64_t cols, float grad_scale, const float* rfac,
                               const float* cfac) override;
  double adafactor_unfactored_v(const void* grad, DType grad_dtype, float* v, size_t n,
                                float grad_scale, float beta2t, float eps1) override;
  void adafactor_apply(float* master, float* m, const void* grad, DType grad_dtype, size_t n,
                       int64_t first, int64_t cols, const float* rfac, const float* cfac,
                       const float* v, const AdafactorApplyArgs& a) override;

 private:
  // The 8-bit code maps on the device (signed, then unsigned: 2 x 256 floats), uploaded once.
  const float* maps();

  CudaBackend& be_;
  Buffer maps_;
};

}  // namespace zt
