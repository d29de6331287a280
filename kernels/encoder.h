// Token + position embedding.
//   encoder_fwd: out (B,T,C) = wte[tokens[b,t], :] + wpe[t, :]                        (=)
//   encoder_bwd: dwte (V,C) += scatter of dout by token; dwpe (maxT,C) rows 0..T-1 += sum_b dout (+=)
// Sums are formed in fp32 in a fixed order (deterministic, independent of thread count) and added
// to the 16-bit gradients once. tokens must lie in [0, V): the caller validates the data.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zt::kernels::cpu {

template <typename T>
void encoder_fwd(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int T_, int C);

// scratch: encoder_bwd_scratch_bytes(B, T_, C, V) bytes.
size_t encoder_bwd_scratch_bytes(int B, int T_, int C, int V);
template <typename T>
void encoder_bwd(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int B, int T_, int C, int V,
                 void* scratch);

}  // namespace zt::kernels::cpu
