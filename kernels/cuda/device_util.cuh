// Device helpers shared by the CUDA kernels of kernels/cuda/ (conventions: launch.cuh).
//
// - Storage <-> fp32: to_f32 / from_f32 for float, __nv_bfloat16 and __half. 16-bit stores round
//   to nearest even once (cvt.rn), as zt::to_bf16 / zt::to_fp16 do for every non-NaN value (NaN
//   stays NaN; its payload may differ).
// - 16-byte vectors: a thread moving 16 bytes per load/store (4 fp32 or 8 bf16/fp16 values) needs
//   a quarter or an eighth of the memory instructions of scalar code, which is what keeps a
//   memory-bound kernel at full bandwidth. The raw vector is a uint4 (its bits only); unpack16 /
//   pack16 convert between it and kVecN<T> floats (element j of the vector = element j in memory).
//   The pointer of a 16-byte access must be 16-byte aligned: Tensor slices can start at any
//   element, so launchers check (aligned16, plan_vec16) and fall back to scalar code.
// - Deterministic sums: warp_sum is a butterfly (xor shuffles), so every lane ends with the same
//   bits; block_sum reads the per-warp results back from shared memory in warp order. The order
//   of additions depends only on blockDim, never on timing. Both need all 32 lanes of each warp
//   (blockDim.x a multiple of 32) and every thread of the block must call them (they contain
//   __syncthreads / full-mask shuffles).
// - column_sum_fixed: the fixed-order reduction over per-chunk fp32 partials that turns
//   "partial sums over fixed row ranges" into a deterministic column sum (LayerNorm dweight/dbias,
//   bias_grad).
// - dispatch_dtype: maps the dtype code of launch.cuh to a storage type for a generic lambda.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/launch.cuh"

namespace zt::kernels::cuda::detail {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ---- scalar storage <-> fp32 ----

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    static_assert(std::is_same_v<T, __half>, "storage type must be float, bf16 or fp16");
    return __float2half_rn(x);
  }
}

// p[i] as fp32, and p[i] = v rounded once.
template <typename T>
__device__ __forceinline__ float load_f32(const T* p, size_t i) {
  return to_f32(p[i]);
}
template <typename T>
__device__ __forceinline__ void store_f32(T* p, size_t i, float v) {
  p[i] = from_f32<T>(v);
}

// ---- 16-byte vectors ----

// Elements of storage type T in one 16-byte vector.
template <typename T>
inline constexpr int kVecN = static_cast<int>(16 / sizeof(T));

__host__ __device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

template <typename T>
__device__ __forceinline__ uint4 load_raw16(const T* p) {
  return *reinterpret_cast<const uint4*>(p);
}
template <typename T>
__device__ __forceinline__ void store_raw16(T* p, uint4 v) {
  *reinterpret_cast<uint4*>(p) = v;
}

// The kVecN<T> values held in the raw vector r (little endian: element 0 in the low bits of r.x).
template <typename T>
__device__ __forceinline__ void unpack16(const uint4& r, float* f) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, float>) {
      f[i] = __uint_as_float(w[i]);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      f[2 * i] = __uint_as_float(w[i] << 16);  // bf16 -> fp32 is exact: the high half of the bits
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    } else {
      static_assert(std::is_same_v<T, __half>, "storage type must be float, bf16 or fp16");
      f[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
      f[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
    }
  }
}

// The raw vector of kVecN<T> values f, each rounded once to T.
template <typename T>
__device__ __forceinline__ uint4 pack16(const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, float>) {
      w[i] = __float_as_uint(f[i]);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      w[i] = static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i]))) |
             (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(f[2 * i + 1]))) << 16);
    } else {
      static_assert(std::is_same_v<T, __half>, "storage type must be float, bf16 or fp16");
      w[i] = static_cast<uint32_t>(__half_as_ushort(__float2half_rn(f[2 * i]))) |
             (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(f[2 * i + 1]))) << 16);
    }
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// kN consecutive values p[0..kN) as fp32 (and back), for kN == 1 (scalar code) or kN == kVecN<T>
// (one 16-byte access: p must be 16-byte aligned).
template <typename T, int kN>
__device__ __forceinline__ void load_n(const T* p, float (&f)[kN]) {
  static_assert(kN == 1 || kN == kVecN<T>, "kN: 1 or one 16-byte vector");
  if constexpr (kN == 1) {
    f[0] = to_f32(p[0]);
  } else {
    unpack16<T>(load_raw16(p), f);
  }
}
template <typename T, int kN>
__device__ __forceinline__ void store_n(T* p, const float (&f)[kN]) {
  static_assert(kN == 1 || kN == kVecN<T>, "kN: 1 or one 16-byte vector");
  if constexpr (kN == 1) {
    p[0] = from_f32<T>(f[0]);
  } else {
    store_raw16(p, pack16<T>(f));
  }
}
// p[0..kN) += f, rounded once.
template <typename T, int kN>
__device__ __forceinline__ void add_n(T* p, const float (&f)[kN]) {
  float cur[kN];
  load_n<T, kN>(p, cur);
#pragma unroll
  for (int e = 0; e < kN; ++e) cur[e] += f[e];
  store_n<T, kN>(p, cur);
}

// fp32 workspace rows: kN floats at p; 16-byte accesses when kN is a multiple of 4 (p then
// 16-byte aligned), scalar otherwise.
template <int kN>
__device__ __forceinline__ void store_f32_n(float* p, const float (&f)[kN]) {
  if constexpr (kN % 4 == 0) {
#pragma unroll
    for (int e = 0; e < kN; e += 4) {
      *reinterpret_cast<float4*>(p + e) = make_float4(f[e], f[e + 1], f[e + 2], f[e + 3]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < kN; ++e) p[e] = f[e];
  }
}
template <int kN>
__device__ __forceinline__ void add_f32_n(const float* p, float (&acc)[kN]) {  // acc += p[0..kN)
  if constexpr (kN % 4 == 0) {
#pragma unroll
    for (int e = 0; e < kN; e += 4) {
      const float4 v = *reinterpret_cast<const float4*>(p + e);
      acc[e] += v.x;
      acc[e + 1] += v.y;
      acc[e + 2] += v.z;
      acc[e + 3] += v.w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < kN; ++e) acc[e] += p[e];
  }
}

// How a flat range [0, n) of elements of elem_bytes bytes splits into a scalar head [0, head),
// nvec 16-byte vectors starting at element head, and a scalar tail [head + nvec * (16 /
// elem_bytes), n). Vectorised only when every pointer has the same address modulo 16 (and is
// element aligned); otherwise head = n, nvec = 0 (all scalar). Host side.
struct VecPlan {
  size_t head;
  size_t nvec;
};
inline VecPlan plan_vec16(size_t n, size_t elem_bytes, std::initializer_list<const void*> ptrs) {
  const uintptr_t mis = reinterpret_cast<uintptr_t>(*ptrs.begin()) & 15u;
  bool same = mis % elem_bytes == 0;
  for (const void* p : ptrs) same = same && (reinterpret_cast<uintptr_t>(p) & 15u) == mis;
  if (!same) return {n, 0};
  size_t head = ((16u - mis) & 15u) / elem_bytes;
  if (head > n) head = n;
  return {head, (n - head) / (16 / elem_bytes)};
}

// ---- deterministic reductions ----

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

// Sum over the whole (1-D) block; every thread returns the same bits. scratch: kWarpSize values in
// shared memory, reusable right after the call (the leading barrier protects earlier readers).
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  return warp_sum(lane < num_warps ? scratch[lane] : T(0));
}

// Fixed-order column sums of fp32 partials (K rows of ld floats, row k = the partial of fixed row
// range k). Block (kColTile, kColSplit): thread (x, y) sums rows k = y, y + kColSplit, ... of
// column j in ascending k; then the kColSplit sums of the column are added in y order. The total
// is returned to the threads with threadIdx.y == 0 (others get 0). Every thread must call it.
constexpr int kColTile = 32;
constexpr int kColSplit = 32;
__device__ __forceinline__ float column_sum_fixed(const float* partials, size_t ld, int K, size_t j,
                                                  bool valid,
                                                  float (&scratch)[kColSplit][kColTile + 1]) {
  float acc = 0.0f;
  if (valid) {
#pragma unroll 4
    for (int k = threadIdx.y; k < K; k += kColSplit)
      acc += partials[static_cast<size_t>(k) * ld + j];
  }
  scratch[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  float total = 0.0f;
  if (threadIdx.y == 0) {
#pragma unroll
    for (int y = 0; y < kColSplit; ++y) total += scratch[y][threadIdx.x];
  }
  return total;
}

// ---- launch helpers ----

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) for the storage type of dtype (launch.cuh codes); cudaErrorInvalidValue
// for any other code.
template <typename F>
inline cudaError_t dispatch_dtype(int dtype, F&& f) {
  switch (dtype) {
    case kF32:
      return f(TypeTag<float>{});
    case kBF16:
      return f(TypeTag<__nv_bfloat16>{});
    case kF16:
      return f(TypeTag<__half>{});
    default:
      return cudaErrorInvalidValue;
  }
}

// Blocks for a grid-stride loop over `work` items, `threads` per block, at most max_blocks.
inline unsigned grid_blocks(size_t work, int threads, size_t max_blocks) {
  size_t blocks = (work + static_cast<size_t>(threads) - 1) / static_cast<size_t>(threads);
  if (blocks < 1) blocks = 1;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks);
}

// Smallest multiple of 32 >= x (x >= 1).
constexpr int round_up_warp(int x) { return (x + kWarpSize - 1) / kWarpSize * kWarpSize; }

}  // namespace zt::kernels::cuda::detail
