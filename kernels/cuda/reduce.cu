// Global reductions over flat buffers (contract: reduce.cuh): sum_squares, count_nonfinite (the
// CUDA twins of those in kernels/cpu/optimizer.cpp) and bias_grad (matmul's bias gradient).
//
// sum_squares / count_nonfinite: a fixed grid of P blocks (P depends only on n: at least
// kMinPerThread elements per thread, at most kMaxBlocks blocks) reads the buffer once with 16-byte
// loads where it is aligned (a scalar head up to the first 16-byte boundary and a scalar tail
// otherwise) in a grid-stride loop; each thread accumulates its elements in order (fp64 for the
// sum of squares: x widened per element, so squares of fp32 values are exact, as on the CPU), each
// block folds its threads with the fixed warp/block tree of device_util.cuh into its partial in the
// workspace, and a one-block kernel folds the P partials the same way. The order depends only on
// n (and on the buffer's address modulo 16), so results are bit-reproducible; count_nonfinite is
// exact anyway. n == 0 writes 0 with cudaMemsetAsync (the result is "=", as the CPU twin's 0).
//
// bias_grad: rows are cut into fixed chunks (at least kBiasMinRows rows, at most kMaxChunks
// chunks; grid (column tiles, chunks)); each thread sums one 16-byte column group (or one column
// when unaligned) over its chunk's rows in ascending order into the chunk's fp32 slot, and
// column_sum_fixed adds the slots in a fixed order before the single += into dbias.
#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/reduce.cuh"

namespace zt::kernels::cuda {
namespace {

using detail::kVecN;

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = 1024;
constexpr size_t kMinPerThread = 32;

int reduce_blocks(size_t n) {
  return static_cast<int>(
      detail::grid_blocks(n, kThreads * static_cast<int>(kMinPerThread), kMaxBlocks));
}

// ---- per-element statistics ----

struct SumSquares {
  using Acc = double;
  __device__ __forceinline__ static void add(Acc& acc, float x) {
    const double d = x;
    acc = fma(d, d, acc);
  }
  // Raw 16-byte vectors: decoded by the caller (values).
  static constexpr bool kRaw = false;
};

// NaN/Inf test on the bits: all exponent bits set.
struct CountNonfinite {
  using Acc = unsigned long long;
  static constexpr bool kRaw = true;
};

template <typename T>
__device__ __forceinline__ unsigned nonfinite_bits(uint32_t word) {
  if constexpr (std::is_same_v<T, float>) {
    return (word & 0x7F800000u) == 0x7F800000u ? 1u : 0u;
  } else {
    constexpr uint32_t kExp = std::is_same_v<T, __nv_bfloat16> ? 0x7F80u : 0x7C00u;
    return ((word & kExp) == kExp ? 1u : 0u) + (((word >> 16) & kExp) == kExp ? 1u : 0u);
  }
}
template <typename T>
__device__ __forceinline__ unsigned nonfinite_scalar(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return nonfinite_bits<T>(__float_as_uint(*p));
  } else {
    return nonfinite_bits<T>(*reinterpret_cast<const uint16_t*>(p));  // high half 0: not counted
  }
}

template <typename T, typename Op>
__device__ __forceinline__ void accumulate_vec(typename Op::Acc& acc, const uint4& raw) {
  if constexpr (Op::kRaw) {
    acc += nonfinite_bits<T>(raw.x) + nonfinite_bits<T>(raw.y) + nonfinite_bits<T>(raw.z) +
           nonfinite_bits<T>(raw.w);
  } else {
    float f[kVecN<T>];
    detail::unpack16<T>(raw, f);
#pragma unroll
    for (int e = 0; e < kVecN<T>; ++e) Op::add(acc, f[e]);
  }
}
template <typename T, typename Op>
__device__ __forceinline__ void accumulate_scalar(typename Op::Acc& acc, const T* p) {
  if constexpr (Op::kRaw) {
    acc += nonfinite_scalar<T>(p);
  } else {
    Op::add(acc, detail::to_f32(*p));
  }
}

template <typename T, typename Op>
__global__ void __launch_bounds__(kThreads)
    reduce_partial_kernel(const T* x, size_t n, size_t head, size_t nvec,
                          typename Op::Acc* partials) {
  using Acc = typename Op::Acc;
  __shared__ Acc scratch[detail::kWarpSize];
  const size_t tid = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  Acc acc = 0;
  for (size_t v = tid; v < nvec; v += stride) {
    accumulate_vec<T, Op>(acc, detail::load_raw16(x + head + v * kVecN<T>));
  }
  const size_t tail = head + nvec * kVecN<T>;
  const size_t scalars = head + (n - tail);
  for (size_t s = tid; s < scalars; s += stride) {
    accumulate_scalar<T, Op>(acc, x + (s < head ? s : tail + (s - head)));
  }
  acc = detail::block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    reduce_final_kernel(const Acc* partials, int count, Acc* result) {
  __shared__ Acc scratch[detail::kWarpSize];
  Acc acc = 0;
  for (int k = threadIdx.x; k < count; k += blockDim.x) acc += partials[k];
  acc = detail::block_sum(acc, scratch);
  if (threadIdx.x == 0) *result = acc;
}

template <typename Op>
cudaError_t launch_reduce(int dtype, const void* x, size_t n, typename Op::Acc* result,
                          void* workspace, cudaStream_t stream) {
  using Acc = typename Op::Acc;
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    if (n == 0) return cudaMemsetAsync(result, 0, sizeof(Acc), stream);
    const detail::VecPlan plan = detail::plan_vec16(n, sizeof(T), {x});
    const int blocks = reduce_blocks(n);
    auto* partials = static_cast<Acc*>(workspace);
    reduce_partial_kernel<T, Op><<<blocks, kThreads, 0, stream>>>(static_cast<const T*>(x), n,
                                                                  plan.head, plan.nvec, partials);
    reduce_final_kernel<Acc><<<1, kThreads, 0, stream>>>(partials, blocks, result);
    return cudaGetLastError();
  });
}

// ---- bias_grad ----

constexpr int kBiasThreads = 128;
constexpr int kBiasMinRows = 32;
constexpr int kMaxChunks = 1024;

int bias_rows_per_chunk(int N) { return std::max(kBiasMinRows, (N + kMaxChunks - 1) / kMaxChunks); }
int bias_chunks(int N) { return (N + bias_rows_per_chunk(N) - 1) / bias_rows_per_chunk(N); }

// Block (kBiasThreads) over column groups of kN columns, blockIdx.y = chunk.
template <typename T, int kN>
__global__ void __launch_bounds__(kBiasThreads)
    bias_grad_partial_kernel(float* partials, const T* dout, int N, int OC, int rows) {
  const int groups = OC / kN;
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  if (g >= groups) return;  // no barrier in this kernel
  const int chunk = blockIdx.y;
  const int64_t begin = static_cast<int64_t>(chunk) * rows;
  const int64_t end = std::min<int64_t>(N, begin + rows);
  const size_t col = static_cast<size_t>(g) * kN;
  float acc[kN] = {};
#pragma unroll 8
  for (int64_t r = begin; r < end; ++r) {
    float x[kN];
    detail::load_n<T, kN>(dout + static_cast<size_t>(r) * OC + col, x);
#pragma unroll
    for (int e = 0; e < kN; ++e) acc[e] += x[e];
  }
  detail::store_f32_n<kN>(partials + static_cast<size_t>(chunk) * OC + col, acc);
}

template <typename T>
__global__ void __launch_bounds__(detail::kColTile* detail::kColSplit)
    bias_grad_final_kernel(T* dbias, const float* partials, int OC, int chunks) {
  __shared__ float scratch[detail::kColSplit][detail::kColTile + 1];
  const size_t j = static_cast<size_t>(blockIdx.x) * detail::kColTile + threadIdx.x;
  const bool valid = j < static_cast<size_t>(OC);
  const float total =
      detail::column_sum_fixed(partials, static_cast<size_t>(OC), chunks, j, valid, scratch);
  if (threadIdx.y == 0 && valid) dbias[j] = detail::from_f32<T>(detail::to_f32(dbias[j]) + total);
}

}  // namespace

size_t reduce_workspace_bytes(size_t n) {
  return align_workspace(static_cast<size_t>(reduce_blocks(n)) * sizeof(double));
}

cudaError_t sum_squares(int dtype, const void* x, size_t n, double* result, void* workspace,
                        cudaStream_t stream) {
  return launch_reduce<SumSquares>(dtype, x, n, result, workspace, stream);
}

cudaError_t count_nonfinite(int dtype, const void* x, size_t n, unsigned long long* result,
                            void* workspace, cudaStream_t stream) {
  static_assert(sizeof(unsigned long long) == sizeof(double), "one workspace size for both");
  return launch_reduce<CountNonfinite>(dtype, x, n, result, workspace, stream);
}

size_t bias_grad_workspace_bytes(int N, int OC) {
  if (N <= 0 || OC <= 0) return 0;
  return align_workspace(static_cast<size_t>(bias_chunks(N)) * static_cast<size_t>(OC) *
                         sizeof(float));
}

cudaError_t bias_grad(int dtype, void* dbias, const void* dout, int N, int OC, void* workspace,
                      cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    if (N < 0 || OC < 0) return cudaErrorInvalidValue;
    if (N == 0 || OC == 0) return cudaSuccess;
    constexpr int kN = kVecN<T>;
    const int rows = bias_rows_per_chunk(N);
    const int chunks = bias_chunks(N);
    auto* partials = static_cast<float*>(workspace);
    const auto* g = static_cast<const T*>(dout);
    if (OC % kN == 0 && detail::aligned16(dout)) {
      const dim3 grid(static_cast<unsigned>((OC / kN + kBiasThreads - 1) / kBiasThreads),
                      static_cast<unsigned>(chunks));
      bias_grad_partial_kernel<T, kN><<<grid, kBiasThreads, 0, stream>>>(partials, g, N, OC, rows);
    } else {
      const dim3 grid(static_cast<unsigned>((OC + kBiasThreads - 1) / kBiasThreads),
                      static_cast<unsigned>(chunks));
      bias_grad_partial_kernel<T, 1><<<grid, kBiasThreads, 0, stream>>>(partials, g, N, OC, rows);
    }
    const unsigned col_blocks =
        static_cast<unsigned>((OC + detail::kColTile - 1) / detail::kColTile);
    bias_grad_final_kernel<T><<<col_blocks, dim3(detail::kColTile, detail::kColSplit), 0, stream>>>(
        static_cast<T*>(dbias), partials, OC, chunks);
    return cudaGetLastError();
  });
}

}  // namespace zt::kernels::cuda
