// Global statistics over flat buffers (conventions: launch.cuh), deterministic: fixed per-block
// ranges summed in a fixed order, then one block sums the partials in order.
//   sum_squares:     *result (device, fp64) = sum of x^2 (x widened to fp64 per element)
//   count_nonfinite: *result (device) = number of NaN/Inf elements
//   (n == 0: *result = 0, written with cudaMemsetAsync on `stream`.)
//   bias_grad:       dbias (OC) += sum over the N rows of dout (N,OC)  (matmul's bias gradient;
//                    fp32 sums over fixed row ranges, then fixed-order; dbias of dtype)
#pragma once

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda {

size_t reduce_workspace_bytes(size_t n);
cudaError_t sum_squares(int dtype, const void* x, size_t n, double* result, void* workspace,
                        cudaStream_t stream);
cudaError_t count_nonfinite(int dtype, const void* x, size_t n, unsigned long long* result,
                            void* workspace, cudaStream_t stream);

size_t bias_grad_workspace_bytes(int N, int OC);
cudaError_t bias_grad(int dtype, void* dbias, const void* dout, int N, int OC, void* workspace,
                      cudaStream_t stream);

}  // namespace zt::kernels::cuda
