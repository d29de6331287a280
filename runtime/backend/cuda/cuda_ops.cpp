#include "runtime/backend/cuda/cuda_ops.h"


#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/crossentropy.cuh"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/encoder.cuh"
#include "kernels/cuda/layernorm.cuh"
#include "kernels/cuda/reduce.cuh"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/cuda_check.h"
#include "runtime/backend/op_checks.h"

namespace zt {

namespace kc = kernels::cuda;

namespace {

using op_checks::check_f32;
using op_checks::check_same;
using op_checks::cols;
using op_checks::rows;
int code(DType t) { return static_cast<int>(t); }
float* f32_or_null(const Tensor& t) { return t.defined() ? t.ptr<float>() : nullptr; }

}  // namespace

CudaOps::CudaOps(CudaBackend& backend, Buffer lt_workspace)
    : be_(backend),
      lt_workspace_(std::move(lt_workspace)),
      lt_(lt_workspace_.data(), lt_workspace_.bytes()) {}

CudaOps::~CudaOps() = default;

Status CudaOps::supports(DType) const { return Status::ok(); }

void CudaOps::encoder_fwd(Tensor out, const int32_t* tokens, Tensor wte, Tensor wpe) {
  check_same(out, wte, "encoder_fwd");
  check_same(out, wpe, "encoder_fwd");
  ZT_CHECK(out.shape.rank() == 3 && out.shape[1] <= wpe.shape[0] && out.shape[2] == wte.shape[1],
           "encoder_fwd: out {} wte {} wpe {}", out.shape.to_string(), wte.shape.to_string(),
           wpe.shape.to_string());
  ZT_CUDA_LAUNCH("encoder_fwd",
                 kc::encoder_fwd(code(out.dtype), out.data, tokens, wte.data, wpe.data,
                                 static_cast<int>(out.shape[0]), static_cast<int>(out.shape[1]),
                                 static_cast<int>(out.shape[2]), be_.stream()));
}

void CudaOps::encoder_bwd(Tensor dwte, Tensor dwpe, Tensor dout, const int32_t* tokens) {
  check_same(dout, dwte, "encoder_bwd");
  check_same(dout, dwpe, "encoder_bwd");
  const int B = static_cast<int>(dout.shape[0]), S = static_cast<int>(dout.shape[1]),
            C = static_cast<int>(dout.shape[2]), V = static_cast<int>(dwte.shape[0]);
  void* ws = be_.workspace(kc::encoder_bwd_workspace_bytes(B, S, C, V));
  ZT_CUDA_LAUNCH("encoder_bwd", kc::encoder_bwd(code(dout.dtype), dwte.data, dwpe.data, dout.data,
                                                tokens, B, S, C, V, ws, be_.stream()));
}

void CudaOps::layernorm_fwd(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                            Tensor bias) {
  check_same(out, inp, "layernorm_fwd");
  if (mean.defined()) check_f32(mean, "layernorm_fwd", "mean");
  if (rstd.defined()) check_f32(rstd, "layernorm_fwd", "rstd");
  ZT_CHECK(out.numel() == inp.numel() && cols(inp) == weight.numel(), "layernorm_fwd shapes");
  ZT_CUDA_LAUNCH(
      "layernorm_fwd",
      kc::layernorm_fwd(code(inp.dtype), out.data, f32_or_null(mean), f32_or_null(rstd), inp.data,
                        weight.data, bias.data, rows(inp), cols(inp), 1e-5f, be_.stream()));
}

void CudaOps::layernorm_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                            Tensor weight, Tensor mean, Tensor rstd) {
  check_same(dout, inp, "layernorm_bwd");
  check_same(dinp, inp, "layernorm_bwd");
  const int N = rows(inp), C = cols(inp);
  void* ws = be_.workspace(kc::layernorm_bwd_workspace_bytes(N, C));
  ZT_CUDA_LAUNCH(
      "layernorm_bwd",
      kc::layernorm_bwd(code(inp.dtype), dinp.data, dweight.data, dbias.data, dout.data, inp.data,
                        weight.data, mean.ptr<float>(), rstd.ptr<float>(), N, C, ws, be_.stream()));
}

// GEMMs: Note [row-major GEMMs] in cublaslt_matmul.cpp.
void CudaOps::matmul_fwd(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
  check_same(out, inp, "matmul_fwd");
  check_same(weight, inp, "matmul_fwd");
  const int N = rows(inp), C = cols(inp), OC = static_cast<int>(weight.shape[0]);
  ZT_CHECK(
      weight.numel() == static_cast<int64_t>(OC) * C && out.numel() == static_cast<int64_t>(N) * OC,
      "matmul_fwd: inp {} weight {} out {}", inp.shape.to_string(), weight.shape.to_string(),
      out.shape.to_string());
  if (bias.defined()) check_same(bias, inp, "matmul_fwd");
  lt_.gemm(inp.dtype, /*trans_a=*/true, /*trans_b=*/false, OC, N, C, weight.data, inp.data,
           out.data, 0.0f, bias.defined() ? bias.data : nullptr, be_.stream());
}

void CudaOps::matmul_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                         Tensor weight) {
  check_same(dout, inp, "matmul_bwd");
  const int N = rows(inp), C = cols(inp), OC = static_cast<int>(weight.shape[0]);
  ZT_CHECK(dout.numel() == static_cast<int64_t>(N) * OC, "matmul_bwd: dout {} inp {} weight {}",
           dout.shape.to_string(), inp.shape.to_string(), weight.shape.to_string());
  if (dinp.defined())  // dinp^T (C,N) = W^T (C,OC, stored) x dout^T (OC,N, stored)
    lt_.gemm(inp.dtype, false, false, C, N, OC, weight.data, dout.data, dinp.data, 0.0f, nullptr,
             be_.stream());
  // dW^T (C,OC) += inp^T (C,N, stored) x dout (N,OC: dout^T stored, transposed)
  lt_.gemm(inp.dtype, false, true, C, OC, N, inp.data, dout.data, dweight.data, 1.0f, nullptr,
           be_.stream());
  if (dbias.defined()) {
    void* ws = be_.workspace(kc::bias_grad_workspace_bytes(N, OC));
    ZT_CUDA_LAUNCH("matmul_bwd bias",
                   kc::bias_grad(code(dout.dtype), dbias.data, dout.data, N, OC, ws, be_.stream()));
  }
}

void CudaOps::attention_fwd(Tensor out, Tensor lse, Tensor qkv, int n_head) {
  check_same(out, qkv, "attention_fwd");
  check_f32(lse, "attention_fwd", "lse");
  const int B = static_cast<int>(qkv.shape[0]), S = static_cast<int>(qkv.shape[1]),
            C = static_cast<int>(qkv.shape[2] / 3);
  void* ws = be_.workspace(kc::attention_fwd_workspace_bytes(B, S, C, n_head));
  ZT_CUDA_LAUNCH("attention_fwd", kc::attention_fwd(code(qkv.dtype), out.data, lse.ptr<float>(),
                                                    qkv.data, B, S, C, n_head, ws, be_.stream()));
}

void CudaOps::attention_bwd(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                            int n_head) {
  check_same(dqkv, qkv, "attention_bwd");
  check_same(dout, qkv, "attention_bwd");
  const int B = static_cast<int>(qkv.shape[0]), S = static_cast<int>(qkv.shape[1]),
            C = static_cast<int>(qkv.shape[2] / 3);
  void* ws = be_.workspace(kc::attention_bwd_workspace_bytes(B, S, C, n_head));
  ZT_CUDA_LAUNCH("attention_bwd",
                 kc::attention_bwd(code(qkv.dtype), dqkv.data, dout.data, qkv.data, out.data,
                                   lse.ptr<float>(), B, S, C, n_head, ws, be_.stream()));
}

void CudaOps::gelu_fwd(Tensor out, Tensor inp) {
  check_same(out, inp, "gelu_fwd");
  ZT_CUDA_LAUNCH("gelu_fwd", kc::gelu_fwd(code(inp.dtype), out.data, inp.data,
                                          static_cast<size_t>(inp.numel()), be_.stream()));
}

void CudaOps::gelu_bwd(Tensor dinp, Tensor inp, Tensor dout) {
  check_same(dinp, inp, "gelu_bwd");
  ZT_CUDA_LAUNCH("gelu_bwd", kc::gelu_bwd(code(inp.dtype), dinp.data, inp.data, dout.data,
                                          static_cast<size_t>(inp.numel()), be_.stream()));
}

void CudaOps::residual_fwd(Tensor out, Tensor a, Tensor b) {
  check_same(out, a, "residual_fwd");
  check_same(a, b, "residual_fwd");
  ZT_CHECK(a.numel() == b.numel() && out.numel() == a.numel(), "residual_fwd sizes");
  ZT_CUDA_LAUNCH("residual_fwd", kc::residual_fwd(code(a.dtype), out.data, a.data, b.data,
                                                  static_cast<size_t>(a.numel()), be_.stream()));
}

void CudaOps::add_inplace(Tensor dst, Tensor src) {
  check_same(dst, src, "add_inplace");
  ZT_CUDA_LAUNCH("add_inplace", kc::add_inplace(code(dst.dtype), dst.data, src.data,
                                                static_cast<size_t>(dst.numel()), be_.stream()));
}

void CudaOps::softmax_crossentropy(Tensor losses, Tensor dlogits, Tensor logits,
                                   const int32_t* targets, float dloss) {
  check_f32(losses, "softmax_crossentropy", "losses");
  if (dlogits.defined()) check_same(dlogits, logits, "softmax_crossentropy");
  ZT_CUDA_LAUNCH(
      "softmax_crossentropy",
      kc::softmax_crossentropy(code(logits.dtype), losses.ptr<float>(),
                               dlogits.defined() ? dlogits.data : nullptr, logits.data, targets,
                               rows(logits), cols(logits), dloss, be_.stream()));
}

void CudaOps::convert(Tensor dst, Tensor src) {
  ZT_CHECK(dst.numel() == src.numel(), "convert: {} vs {} elements", dst.numel(), src.numel());
  if (dst.dtype == src.dtype) {
    if (dst.data != src.data)
      ZT_CUDA(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDefault, be_.stream()));
    return;
  }
  ZT_CUDA_LAUNCH("convert", kc::launch_convert(src.data, code(src.dtype), dst.data, code(dst.dtype),
                                               static_cast<size_t>(src.numel()), be_.stream()));
}

double CudaOps::sum_squares(Tensor x) {
  const size_t n = static_cast<size_t>(x.numel());
  auto [ws, result] = be_.workspace_and_result<double>(kc::reduce_workspace_bytes(n));
  ZT_CUDA_LAUNCH("sum_squares",
                 kc::sum_squares(code(x.dtype), x.data, n, result, ws, be_.stream()));
  return be_.read_back(result);
}

size_t CudaOps::count_nonfinite(Tensor x) {
  const size_t n = static_cast<size_t>(x.numel());
  auto [ws, result] = be_.workspace_and_result<unsigned long long>(kc::reduce_workspace_bytes(n));
  ZT_CUDA_LAUNCH("count_nonfinite",
                 kc::count_nonfinite(code(x.dtype), x.data, n, result, ws, be_.stream()));
  return static_cast<size_t>(be_.read_back(result));
}

}  // namespace zt
