// GEMMs of the CUDA backend through cuBLASLt: 16-bit (bf16/fp16) operands with fp32 accumulation,
// fp32 operands in full fp32 (CUBLAS_COMPUTE_32F, no TF32: the CPU backend is the reference), the
// bias added in the epilogue of the forward GEMM.
//
// Row-major tensors are column-major transposes, so every product is written for column-major
// cuBLASLt as (see Note [row-major GEMMs] in the .cpp):
//   forward   out (N,OC) = inp (N,C) W^T + b   ->  out^T = op_T(W) * inp^T        (+ bias)
//   dinp      (N,C)  = dout W                  ->  dinp^T = W^T * dout^T
//   dweight   (OC,C) += dout^T inp             ->  dW^T += inp^T * dout
// Plans (layouts, descriptor, the heuristic's algorithm) are cached per shape, dtype, epilogue
// and operand alignment; the heuristic runs once per key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "runtime/core/dtype.h"

namespace zt::cuda {

class LtMatmul {
 public:
  // `workspace` (device, `workspace_bytes`) is the cuBLASLt scratch, owned by the caller.
  LtMatmul(void* workspace, size_t workspace_bytes);
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  // D (m x n, column-major, ldd = m) = alpha op(A) op(B) + beta D, op(A) m x k, op(B) k x n;
  // A stored k x m when trans_a (lda = k) else m x k (lda = m); likewise B. bias (m) is added to
  // every column when given (forward epilogue). All operands of `dtype`.
  void gemm(DType dtype, bool trans_a, bool trans_b, int m, int n, int k, const void* a,
            const void* b, void* d, float beta, const void* bias, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int, bool, bool, int, int, int, bool, float, int, int, int, int>;
  Plan& plan(const Key& key, DType dtype, bool trans_a, bool trans_b, int m, int n, int k,
             bool bias, float beta, int align_a, int align_b, int align_d, int align_bias);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace zt::cuda
