// Ops: the op table a backend offers, on Tensor views. Shapes and dtypes are checked here (a wrong
// call is a bug: ZT_CHECK); an op or dtype a backend cannot do returns kUnsupported from supports()
// and throws if called anyway — nothing falls back quietly. Semantics (which outputs are
// overwritten (=), which accumulate (+=)) follow kernels/<op>.h. Activation and weight tensors
// share one dtype per call; statistics (mean, rstd, lse, losses) are fp32; tokens and targets are
// int32 raw pointers into the backend's memory (the model stages the loader's host batch there).
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/core/status.h"
#include "runtime/tensor/tensor.h"

namespace zt {

class Ops {
 public:
  virtual ~Ops() = default;

  // kOk when the backend implements every op of the table for `dtype`.
  virtual Status supports(DType dtype) const = 0;

  // out (B,T,C) = wte[tokens] + wpe[t]
  virtual void encoder_fwd(Tensor out, const int32_t* tokens, Tensor wte, Tensor wpe) = 0;
  // dwte += scatter(dout), dwpe += sum_b dout
  virtual void encoder_bwd(Tensor dwte, Tensor dwpe, Tensor dout, const int32_t* tokens) = 0;

  // out (N,C) =, mean/rstd (N) fp32 =
  virtual void layernorm_fwd(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight,
                             Tensor bias) = 0;
  // dinp +=, dweight +=, dbias +=
  virtual void layernorm_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                             Tensor weight, Tensor mean, Tensor rstd) = 0;

  // out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias
  virtual void matmul_fwd(Tensor out, Tensor inp, Tensor weight, Tensor bias) = 0;
  // dinp = dout @ weight (may be undefined), dweight +=, dbias += (may be undefined)
  virtual void matmul_bwd(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp,
                          Tensor weight) = 0;

  // qkv (B,T,3C) -> out (B,T,C) =, lse (B,NH,T) fp32 =
  virtual void attention_fwd(Tensor out, Tensor lse, Tensor qkv, int n_head) = 0;
  // dqkv (B,T,3C) =
  virtual void attention_bwd(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                             int n_head) = 0;

  virtual void gelu_fwd(Tensor out, Tensor inp) = 0;                // out =
  virtual void gelu_bwd(Tensor dinp, Tensor inp, Tensor dout) = 0;  // dinp =
  virtual void residual_fwd(Tensor out, Tensor a, Tensor b) = 0;    // out = a + b
  virtual void add_inplace(Tensor dst, Tensor src) = 0;             // dst += src

  // logits (N,V); losses (N) fp32 =; dlogits (N,V) = (softmax - onehot) * dloss (may alias logits,
  // may be undefined for forward only)
  virtual void softmax_crossentropy(Tensor losses, Tensor dlogits, Tensor logits,
                                    const int32_t* targets, float dloss) = 0;

  // Flat-buffer ops for the optimizer and its statistics (the update rules are OptimizerOps).
  virtual void convert(Tensor dst, Tensor src) = 0;  // same numel, any dtypes
  virtual double sum_squares(Tensor x) = 0;
  virtual size_t count_nonfinite(Tensor x) = 0;
};

}  // namespace zt
