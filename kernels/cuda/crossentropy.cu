// CUDA twin of kernels/cpu/crossentropy.cpp (contract: crossentropy.cuh): fused softmax +
// cross-entropy, forward and backward in one kernel.
//
// One block per row (V is tens of thousands: one row is enough work for a block, and rows are
// independent). Pass 1 reads the row once and keeps an online (max, sum of exp(x - max)) pair per
// thread (Milakov & Gimelshein 2018), folded per 16-byte vector so each vector costs one rescale;
// the pairs are combined across the warp (xor shuffles) and then across warps in warp order
// through shared memory, so every thread ends with the same (M, S) and the result depends only on
// the launch shape. loss = (M - x[target]) + log(S), as the CPU twin. Pass 2 (only when dlogits is
// given) re-reads the row, back to front so that the most recently read part (still in L1) comes
// first, and writes (exp(x - M) / S - [i == target]) * dloss, the target's value formed in fp32
// before its single rounding. dlogits may alias logits: every element is read and then written by
// the same thread, and x[target] is read by all threads before the first barrier, long before
// anything is written.
//
// Vectorisation: rows of V elements start at any 16-byte offset (V = 50257 is odd), so each row
// is split into a scalar head up to its first 16-byte boundary, 16-byte vectors and a scalar tail.
// That needs logits and dlogits to sit at the same address modulo 16 (true when they alias or
// are both aligned); otherwise a scalar kernel runs.
//
// exp(x - M) is computed as exp2((x - M) * log2(e)): one MUFU.EX2 per element. The kernel is
// close to balanced between memory and arithmetic on H100/H200, and x - M is exact or nearly so
// for the dominant terms, so this costs ~1e-7 relative accuracy where it matters (the CPU twin's
// exp is a 2-ulp polynomial too).
#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/crossentropy.cuh"
#include "kernels/cuda/device_util.cuh"

namespace zt::kernels::cuda {
namespace {

using detail::kVecN;
using detail::kWarpSize;

constexpr int kMaxThreads = 512;
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float exp_rel(float x, float m) { return exp2f((x - m) * kLog2e); }

// (m, s) <- the pair of the union of (m, s) and (m2, s2) (s: sum of exp(x - m) over the set).
__device__ __forceinline__ void combine(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty (or all -inf): (m, s) = (-inf, 0) already
  s = s * exp_rel(m, mn) + s2 * exp_rel(m2, mn);
  m = mn;
}

// Adds kN values f to (m, s) with one rescale.
template <int kN>
__device__ __forceinline__ void accumulate(float& m, float& s, const float* f) {
  float vmax = f[0];
#pragma unroll
  for (int e = 1; e < kN; ++e) vmax = fmaxf(vmax, f[e]);
  const float mn = fmaxf(m, vmax);
  if (mn == -INFINITY) return;  // nothing but -inf so far
  float add = 0.0f;
#pragma unroll
  for (int e = 0; e < kN; ++e) add += exp_rel(f[e], mn);
  s = s * exp_rel(m, mn) + add;  // m == -inf: exp2(-inf) = 0
  m = mn;
}

// Row split for the vector kernel: [0, head) scalar, nvec vectors from head, scalar tail.
template <typename T, bool kVec>
__device__ __forceinline__ void row_split(const T* x, int V, int& head, int& nvec) {
  if constexpr (kVec) {
    head =
        static_cast<int>(min(static_cast<uintptr_t>(V),
                             ((16u - (reinterpret_cast<uintptr_t>(x) & 15u)) & 15u) / sizeof(T)));
    nvec = (V - head) / kVecN<T>;
  } else {
    head = V;
    nvec = 0;
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kMaxThreads)
    crossentropy_kernel(float* losses, T* dlogits, const T* logits, const int32_t* targets, int V,
                        float dloss) {
  constexpr int kN = kVecN<T>;
  __shared__ float red_m[kMaxThreads / kWarpSize];
  __shared__ float red_s[kMaxThreads / kWarpSize];
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;
  const size_t row = blockIdx.x;
  const T* x = logits + row * V;
  const int tgt = targets[row];
  const float x_tgt = detail::to_f32(x[tgt]);  // before any thread writes (aliasing)
  int head, nvec;
  row_split<T, kVec>(x, V, head, nvec);
  const int tail = head + nvec * kN;
  const int scalars = head + (V - tail);

  // Pass 1: online max / sum.
  float m = -INFINITY, s = 0.0f;
#pragma unroll 4
  for (int k = tid; k < nvec; k += nthreads) {
    float f[kN];
    detail::unpack16<T>(detail::load_raw16(x + head + static_cast<size_t>(k) * kN), f);
    accumulate<kN>(m, s, f);
  }
  for (int k = tid; k < scalars; k += nthreads) {
    const float f = detail::to_f32(x[k < head ? k : tail + (k - head)]);
    accumulate<1>(m, s, &f);
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(detail::kFullMask, m, offset);
    const float s2 = __shfl_xor_sync(detail::kFullMask, s, offset);
    combine(m, s, m2, s2);
  }
  const int warps = nthreads / kWarpSize;
  if (tid % kWarpSize == 0) {
    red_m[tid / kWarpSize] = m;
    red_s[tid / kWarpSize] = s;
  }
  __syncthreads();
  float M = red_m[0], S = red_s[0];
  for (int w = 1; w < warps; ++w) combine(M, S, red_m[w], red_s[w]);
  if (tid == 0) losses[row] = (M - x_tgt) + logf(S);
  if (dlogits == nullptr) return;  // uniform

  // Pass 2: dlogits = (softmax - onehot) * dloss.
  T* d = dlogits + row * V;
  const float inv_sum = 1.0f / S;
  const float scale = dloss * inv_sum;
  const float d_tgt = (exp_rel(x_tgt, M) * inv_sum - 1.0f) * dloss;
#pragma unroll 4
  for (int k = nvec - 1 - tid; k >= 0; k -= nthreads) {
    const size_t i = head + static_cast<size_t>(k) * kN;
    float f[kN];
    detail::unpack16<T>(detail::load_raw16(x + i), f);
#pragma unroll
    for (int e = 0; e < kN; ++e) {
      f[e] = i + e == static_cast<size_t>(tgt) ? d_tgt : exp_rel(f[e], M) * scale;
    }
    detail::store_raw16(d + i, detail::pack16<T>(f));
  }
  for (int k = tid; k < scalars; k += nthreads) {
    const int i = k < head ? k : tail + (k - head);
    const float f = detail::to_f32(x[i]);
    d[i] = detail::from_f32<T>(i == tgt ? d_tgt : exp_rel(f, M) * scale);
  }
}

template <typename T, bool kVec>
cudaError_t launch(float* losses, T* dlogits, const T* logits, const int32_t* targets, int N, int V,
                   float dloss, cudaStream_t stream) {
  const int work = kVec ? V / kVecN<T> + 1 : V;
  const int threads = std::min(kMaxThreads, detail::round_up_warp(std::max(1, work)));
  crossentropy_kernel<T, kVec><<<static_cast<unsigned>(N), threads, 0, stream>>>(
      losses, dlogits, logits, targets, V, dloss);
  return cudaGetLastError();
}

}  // namespace

cudaError_t softmax_crossentropy(int dtype, float* losses, void* dlogits, const void* logits,
                                 const int32_t* targets, int N, int V, float dloss,
                                 cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    if (N < 0 || V < 0) return cudaErrorInvalidValue;
    if (N == 0) return cudaSuccess;
    if (V == 0) return cudaErrorInvalidValue;  // no target can lie in [0, 0)
    auto* d = static_cast<T*>(dlogits);
    const auto* x = static_cast<const T*>(logits);
    const uintptr_t mis = reinterpret_cast<uintptr_t>(logits) & 15u;
    const bool vec = mis % sizeof(T) == 0 &&
                     (dlogits == nullptr || (reinterpret_cast<uintptr_t>(dlogits) & 15u) == mis);
    if (vec) return launch<T, true>(losses, d, x, targets, N, V, dloss, stream);
    return launch<T, false>(losses, d, x, targets, N, V, dloss, stream);
  });
}

}  // namespace zt::kernels::cuda
