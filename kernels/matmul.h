// Linear layer, weights in PyTorch nn.Linear layout (OC, C). GEMMs run in fp32 through OpenBLAS;
// 16-bit operands are widened into the scratch first and results rounded once on store.
//   matmul_fwd: out (N,OC) = inp (N,C) @ weight (OC,C)^T + bias (OC)       (=); bias may be null
//   matmul_bwd: dinp (N,C) = dout (N,OC) @ weight (OC,C)                   (=); dinp may be null
//               dweight (OC,C) += dout^T @ inp                              (+=)
//               dbias (OC) += sum over N of dout                            (+=); may be null
// Scratch sizes are exact (0 for fp32). dbias is reduced in a fixed order (bitwise the same for any
// thread count); the GEMM outputs are bitwise reproducible at a fixed OpenMP thread count only,
// because OpenBLAS splits the work by thread count (Note [GEMM reproducibility] in
// kernels/cpu/matmul.cpp).
#pragma once

#include <cstddef>

namespace zt::kernels::cpu {

size_t matmul_fwd_scratch_bytes(int N, int C, int OC, bool is_fp32);
template <typename T>
void matmul_fwd(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC,
                void* scratch);

size_t matmul_bwd_scratch_bytes(int N, int C, int OC, bool is_fp32);
template <typename T>
void matmul_bwd(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, int N,
                int C, int OC, void* scratch);

}  // namespace zt::kernels::cpu
