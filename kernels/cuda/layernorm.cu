// CUDA twin of kernels/cpu/layernorm.cpp (contract: layernorm.cuh): LayerNorm over the last
// dimension, biased variance, fp32 statistics.
//
// Forward: one warp per row (C is a few hundred to a few thousand: a warp's 32 lanes cover a row
// with no block-level barrier, and 8 rows share a 256-thread block). The row statistics are the
// CPU twin's corrected two-pass algorithm (sum -> m0; then sums of d = x - m0 and d^2, which
// correct the mean and give the variance without cancellation). Where inp, out, weight and bias
// are 16-byte aligned and C is a multiple of the vector width, each lane keeps its share of the
// row in registers as raw 16-byte vectors (kVecs of them, a template parameter up to 16: C up to
// 2048 fp32 / 4096 16-bit), so the row is read from memory once; otherwise a generic warp-per-row
// kernel reads the row three times with scalar loads (the re-reads hit L1/L2).
//
// Backward: rows are cut into fixed chunks of S consecutive rows (S depends only on N: at most
// kMaxChunks chunks). A group of threads (a "row team": tx threads over the columns, tx a multiple
// of 32) handles one chunk, row after row: per row it forms sum(dn) and sum(dn * norm) (warp
// shuffles, then shared memory between the team's warps in fixed order, double-buffered so one
// barrier per row suffices), adds into dinp, and accumulates the chunk's dweight/dbias partials
// for its columns in ascending row order; the chunk's partials go to its own workspace slot. A
// block holds ny teams (ny chunks) so that small C still gives 256-thread blocks. A second kernel
// sums the slots of each column in a fixed order (column_sum_fixed) and adds to dweight/dbias
// once. The vector kernel keeps the partials in registers (each thread owns kVecs 16-byte column
// groups); the generic kernel (unaligned pointers, odd C, or very large C) accumulates straight in
// its workspace slot (each column of a slot has a single owner thread, so there is no race). Both
// use the same chunks and the same per-column order, so dweight/dbias are deterministic.
#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/layernorm.cuh"

namespace zt::kernels::cuda {
namespace {

using detail::kVecN;
using detail::kWarpSize;

// ---- forward ----

constexpr int kFwdThreads = 256;
constexpr int kFwdRowsPerBlock = kFwdThreads / kWarpSize;
constexpr int kFwdMaxVecs = 16;

// Row statistics from the three sums (the CPU twin's formulas).
struct RowStats {
  float mean;
  float rstd;
};
__device__ __forceinline__ RowStats row_stats(float m0, float sum_d, float sum_d2, float inv_c,
                                              float eps) {
  const float m = m0 + sum_d * inv_c;
  const float var = fmaxf(0.0f, (sum_d2 - sum_d * sum_d * inv_c) * inv_c);
  return {m, 1.0f / sqrtf(var + eps)};
}

template <typename T, int kVecs>
__global__ void __launch_bounds__(kFwdThreads)
    layernorm_fwd_vec_kernel(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                             const T* bias, int N, int C, float eps) {
  constexpr int kN = kVecN<T>;
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * kFwdRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;  // warp-uniform; the kernel has no block barrier
  const int nvec = C / kN;
  const float inv_c = 1.0f / static_cast<float>(C);
  const T* x = inp + static_cast<size_t>(row) * C;
  uint4 raw[kVecs];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int v = lane + k * kWarpSize;
    raw[k] = make_uint4(0u, 0u, 0u, 0u);
    if (v < nvec) {
      raw[k] = detail::load_raw16(x + static_cast<size_t>(v) * kN);
      float f[kN];
      detail::unpack16<T>(raw[k], f);
#pragma unroll
      for (int e = 0; e < kN; ++e) sum += f[e];
    }
  }
  const float m0 = detail::warp_sum(sum) * inv_c;
  float sum_d = 0.0f, sum_d2 = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    if (lane + k * kWarpSize < nvec) {
      float f[kN];
      detail::unpack16<T>(raw[k], f);
#pragma unroll
      for (int e = 0; e < kN; ++e) {
        const float d = f[e] - m0;
        sum_d += d;
        sum_d2 += d * d;
      }
    }
  }
  const RowStats st = row_stats(m0, detail::warp_sum(sum_d), detail::warp_sum(sum_d2), inv_c, eps);
  T* o = out + static_cast<size_t>(row) * C;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int v = lane + k * kWarpSize;
    if (v < nvec) {
      float f[kN], w[kN], b[kN];
      detail::unpack16<T>(raw[k], f);
      detail::unpack16<T>(detail::load_raw16(weight + v * kN), w);
      detail::unpack16<T>(detail::load_raw16(bias + v * kN), b);
#pragma unroll
      for (int e = 0; e < kN; ++e) f[e] = (f[e] - st.mean) * st.rstd * w[e] + b[e];
      detail::store_raw16(o + static_cast<size_t>(v) * kN, detail::pack16<T>(f));
    }
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = st.mean;
    if (rstd != nullptr) rstd[row] = st.rstd;
  }
}

template <typename T>
__global__ void __launch_bounds__(kFwdThreads)
    layernorm_fwd_generic_kernel(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                                 const T* bias, int N, int C, float eps) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * kFwdRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= N) return;  // warp-uniform; the kernel has no block barrier
  const float inv_c = 1.0f / static_cast<float>(C);
  const T* x = inp + static_cast<size_t>(row) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) sum += detail::to_f32(x[c]);
  const float m0 = detail::warp_sum(sum) * inv_c;
  float sum_d = 0.0f, sum_d2 = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float d = detail::to_f32(x[c]) - m0;
    sum_d += d;
    sum_d2 += d * d;
  }
  const RowStats st = row_stats(m0, detail::warp_sum(sum_d), detail::warp_sum(sum_d2), inv_c, eps);
  T* o = out + static_cast<size_t>(row) * C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float y = (detail::to_f32(x[c]) - st.mean) * st.rstd * detail::to_f32(weight[c]) +
                    detail::to_f32(bias[c]);
    o[c] = detail::from_f32<T>(y);
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = st.mean;
    if (rstd != nullptr) rstd[row] = st.rstd;
  }
}

template <typename T, int kVecs>
void launch_fwd_vec(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
                    int N, int C, float eps, unsigned blocks, cudaStream_t stream) {
  layernorm_fwd_vec_kernel<T, kVecs>
      <<<blocks, kFwdThreads, 0, stream>>>(out, mean, rstd, inp, weight, bias, N, C, eps);
}

// ---- backward ----

constexpr int kBwdThreads = 256;  // target threads per block (ny teams of tx)
constexpr int kBwdMaxTeam = 512;  // most threads of one row team (vector kernel)
constexpr int kBwdGenericTeam = 256;
constexpr int kMaxChunks = 1024;
constexpr int kMinRowsPerChunk = 4;

int rows_per_chunk(int N) { return std::max(kMinRowsPerChunk, (N + kMaxChunks - 1) / kMaxChunks); }
int num_chunks(int N) { return (N + rows_per_chunk(N) - 1) / rows_per_chunk(N); }

// The team's sum of (a, b): warp shuffles, then the team's warps in order through shared memory.
// red: [2][32] float2 in shared memory, buffer `parity` alternating between calls. Must be called
// by every thread of the block (a barrier when the team has more than one warp).
__device__ __forceinline__ float2 team_sum2(float a, float b, float2 (*red)[kWarpSize],
                                            int parity) {
  a = detail::warp_sum(a);
  b = detail::warp_sum(b);
  const int warps = blockDim.x / kWarpSize;  // per team; uniform over the block
  if (warps == 1) return make_float2(a, b);
  const int base = threadIdx.y * warps;
  if (threadIdx.x % kWarpSize == 0) red[parity][base + threadIdx.x / kWarpSize] = make_float2(a, b);
  __syncthreads();
  float2 s = red[parity][base];
  for (int w = 1; w < warps; ++w) {
    const float2 p = red[parity][base + w];
    s.x += p.x;
    s.y += p.y;
  }
  return s;
}

// Block (tx, ny): team threadIdx.y owns chunk blockIdx.x * ny + threadIdx.y; thread threadIdx.x
// owns the column groups threadIdx.x + k * tx (k < kVecs) of kN columns each.
template <typename T, int kVecs>
__global__ void __launch_bounds__(kBwdMaxTeam)
    layernorm_bwd_vec_kernel(T* dinp, float* partials, const T* dout, const T* inp, const T* weight,
                             const float* mean, const float* rstd, int N, int C, int rows,
                             int chunks) {
  constexpr int kN = kVecN<T>;
  __shared__ float2 red[2][kWarpSize];
  const int tx = blockDim.x;
  const int nvec = C / kN;
  const int chunk = blockIdx.x * blockDim.y + threadIdx.y;
  const float inv_c = 1.0f / static_cast<float>(C);
  uint4 wraw[kVecs];
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int v = threadIdx.x + k * tx;
    wraw[k] = v < nvec ? detail::load_raw16(weight + static_cast<size_t>(v) * kN)
                       : make_uint4(0u, 0u, 0u, 0u);
  }
  float dw[kVecs][kN] = {};
  float db[kVecs][kN] = {};
  for (int i = 0; i < rows; ++i) {
    const int64_t row = static_cast<int64_t>(chunk) * rows + i;
    const bool valid = chunk < chunks && row < N;
    const float m = valid ? mean[row] : 0.0f;
    const float s = valid ? rstd[row] : 0.0f;
    const size_t off = static_cast<size_t>(row) * C;
    // dinp is loaded with x and dout (one memory round trip per row), stored after the sums.
    uint4 xraw[kVecs], graw[kVecs], draw[kVecs];
    float sum_dn = 0.0f, sum_dn_norm = 0.0f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int v = threadIdx.x + k * tx;
      xraw[k] = make_uint4(0u, 0u, 0u, 0u);
      graw[k] = make_uint4(0u, 0u, 0u, 0u);
      draw[k] = make_uint4(0u, 0u, 0u, 0u);
      if (valid && v < nvec) {
        xraw[k] = detail::load_raw16(inp + off + static_cast<size_t>(v) * kN);
        graw[k] = detail::load_raw16(dout + off + static_cast<size_t>(v) * kN);
        draw[k] = detail::load_raw16(dinp + off + static_cast<size_t>(v) * kN);
        float x[kN], g[kN], w[kN];
        detail::unpack16<T>(xraw[k], x);
        detail::unpack16<T>(graw[k], g);
        detail::unpack16<T>(wraw[k], w);
#pragma unroll
        for (int e = 0; e < kN; ++e) {
          const float norm = (x[e] - m) * s;
          const float dn = w[e] * g[e];
          sum_dn += dn;
          sum_dn_norm += dn * norm;
          dw[k][e] += g[e] * norm;
          db[k][e] += g[e];
        }
      }
    }
    const float2 sums = team_sum2(sum_dn, sum_dn_norm, red, i & 1);
    const float mean_dn = sums.x * inv_c;
    const float mean_dn_norm = sums.y * inv_c;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int v = threadIdx.x + k * tx;
      if (valid && v < nvec) {
        float x[kN], g[kN], w[kN], d[kN];
        detail::unpack16<T>(xraw[k], x);
        detail::unpack16<T>(graw[k], g);
        detail::unpack16<T>(wraw[k], w);
        detail::unpack16<T>(draw[k], d);
#pragma unroll
        for (int e = 0; e < kN; ++e) {
          const float norm = (x[e] - m) * s;
          const float dn = w[e] * g[e];
          d[e] += (dn - mean_dn - norm * mean_dn_norm) * s;
        }
        detail::store_raw16(dinp + off + static_cast<size_t>(v) * kN, detail::pack16<T>(d));
      }
    }
  }
  if (chunk < chunks) {
    float* slot = partials + static_cast<size_t>(chunk) * 2 * C;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int v = threadIdx.x + k * tx;
      if (v < nvec) {
        detail::store_f32_n<kN>(slot + static_cast<size_t>(v) * kN, dw[k]);
        detail::store_f32_n<kN>(slot + C + static_cast<size_t>(v) * kN, db[k]);
      }
    }
  }
}

// Same chunks and per-column order as the vector kernel; columns threadIdx.x + j * tx, scalar
// loads, the partials accumulated in the chunk's workspace slot.
template <typename T>
__global__ void __launch_bounds__(kBwdGenericTeam)
    layernorm_bwd_generic_kernel(T* dinp, float* partials, const T* dout, const T* inp,
                                 const T* weight, const float* mean, const float* rstd, int N,
                                 int C, int rows, int chunks) {
  __shared__ float2 red[2][kWarpSize];
  const int tx = blockDim.x;
  const int chunk = blockIdx.x * blockDim.y + threadIdx.y;
  const float inv_c = 1.0f / static_cast<float>(C);
  float* dw = partials + static_cast<size_t>(chunk < chunks ? chunk : 0) * 2 * C;
  float* db = dw + C;
  for (int i = 0; i < rows; ++i) {
    const int64_t row = static_cast<int64_t>(chunk) * rows + i;
    const bool valid = chunk < chunks && row < N;
    const float m = valid ? mean[row] : 0.0f;
    const float s = valid ? rstd[row] : 0.0f;
    const size_t off = static_cast<size_t>(row) * C;
    float sum_dn = 0.0f, sum_dn_norm = 0.0f;
    if (valid) {
      for (int c = threadIdx.x; c < C; c += tx) {
        const float norm = (detail::to_f32(inp[off + c]) - m) * s;
        const float dn = detail::to_f32(weight[c]) * detail::to_f32(dout[off + c]);
        sum_dn += dn;
        sum_dn_norm += dn * norm;
      }
    }
    const float2 sums = team_sum2(sum_dn, sum_dn_norm, red, i & 1);
    if (valid) {
      const float mean_dn = sums.x * inv_c;
      const float mean_dn_norm = sums.y * inv_c;
      for (int c = threadIdx.x; c < C; c += tx) {
        const float norm = (detail::to_f32(inp[off + c]) - m) * s;
        const float g = detail::to_f32(dout[off + c]);
        const float dn = detail::to_f32(weight[c]) * g;
        const float v = (dn - mean_dn - norm * mean_dn_norm) * s;
        dinp[off + c] = detail::from_f32<T>(detail::to_f32(dinp[off + c]) + v);
        // Same sequence as the vector kernel's registers: first row 0 + x, then += x.
        dw[c] = (i == 0 ? 0.0f : dw[c]) + g * norm;
        db[c] = (i == 0 ? 0.0f : db[c]) + g;
      }
    }
  }
}

// dweight[j] += column j of the partials (j < C), dbias[j - C] += column j (C <= j < 2C).
template <typename T>
__global__ void __launch_bounds__(detail::kColTile* detail::kColSplit)
    layernorm_bwd_params_kernel(T* dweight, T* dbias, const float* partials, int C, int chunks) {
  __shared__ float scratch[detail::kColSplit][detail::kColTile + 1];
  const size_t j = static_cast<size_t>(blockIdx.x) * detail::kColTile + threadIdx.x;
  const size_t cols = 2 * static_cast<size_t>(C);
  const float total = detail::column_sum_fixed(partials, cols, chunks, j, j < cols, scratch);
  if (threadIdx.y == 0 && j < cols) {
    T* p = j < static_cast<size_t>(C) ? dweight + j : dbias + (j - C);
    *p = detail::from_f32<T>(detail::to_f32(*p) + total);
  }
}

template <typename T, int kVecs>
void launch_bwd_vec(T* dinp, float* partials, const T* dout, const T* inp, const T* weight,
                    const float* mean, const float* rstd, int N, int C, int tx,
                    cudaStream_t stream) {
  const int ny = std::max(1, kBwdThreads / tx);
  const int chunks = num_chunks(N);
  const unsigned blocks = static_cast<unsigned>((chunks + ny - 1) / ny);
  layernorm_bwd_vec_kernel<T, kVecs><<<blocks, dim3(tx, ny), 0, stream>>>(
      dinp, partials, dout, inp, weight, mean, rstd, N, C, rows_per_chunk(N), chunks);
}

}  // namespace

cudaError_t layernorm_fwd(int dtype, void* out, float* mean, float* rstd, const void* inp,
                          const void* weight, const void* bias, int N, int C, float eps,
                          cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    if (N < 0 || C < 0) return cudaErrorInvalidValue;
    if (N == 0 || C == 0) return cudaSuccess;
    constexpr int kN = kVecN<T>;
    auto* o = static_cast<T*>(out);
    const auto* x = static_cast<const T*>(inp);
    const auto* w = static_cast<const T*>(weight);
    const auto* b = static_cast<const T*>(bias);
    const unsigned blocks = static_cast<unsigned>((N + kFwdRowsPerBlock - 1) / kFwdRowsPerBlock);
    const int nvec = C / kN;
    const int per_lane = (nvec + kWarpSize - 1) / kWarpSize;
    const bool vec = C % kN == 0 && per_lane <= kFwdMaxVecs && detail::aligned16(out) &&
                     detail::aligned16(inp) && detail::aligned16(weight) && detail::aligned16(bias);
    if (!vec) {
      layernorm_fwd_generic_kernel<T>
          <<<blocks, kFwdThreads, 0, stream>>>(o, mean, rstd, x, w, b, N, C, eps);
    } else if (per_lane <= 1) {
      launch_fwd_vec<T, 1>(o, mean, rstd, x, w, b, N, C, eps, blocks, stream);
    } else if (per_lane <= 2) {
      launch_fwd_vec<T, 2>(o, mean, rstd, x, w, b, N, C, eps, blocks, stream);
    } else if (per_lane <= 4) {
      launch_fwd_vec<T, 4>(o, mean, rstd, x, w, b, N, C, eps, blocks, stream);
    } else if (per_lane <= 8) {
      launch_fwd_vec<T, 8>(o, mean, rstd, x, w, b, N, C, eps, blocks, stream);
    } else {
      launch_fwd_vec<T, 16>(o, mean, rstd, x, w, b, N, C, eps, blocks, stream);
    }
    return cudaGetLastError();
  });
}

size_t layernorm_bwd_workspace_bytes(int N, int C) {
  if (N <= 0 || C <= 0) return 0;
  return align_workspace(static_cast<size_t>(num_chunks(N)) * 2 * static_cast<size_t>(C) *
                         sizeof(float));
}

cudaError_t layernorm_bwd(int dtype, void* dinp, void* dweight, void* dbias, const void* dout,
                          const void* inp, const void* weight, const float* mean, const float* rstd,
                          int N, int C, void* workspace, cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    if (N < 0 || C < 0) return cudaErrorInvalidValue;
    if (N == 0 || C == 0) return cudaSuccess;
    constexpr int kN = kVecN<T>;
    auto* dx = static_cast<T*>(dinp);
    const auto* g = static_cast<const T*>(dout);
    const auto* x = static_cast<const T*>(inp);
    const auto* w = static_cast<const T*>(weight);
    auto* partials = static_cast<float*>(workspace);
    const int chunks = num_chunks(N);
    const int nvec = C / kN;
    const bool aligned = C % kN == 0 && detail::aligned16(dinp) && detail::aligned16(dout) &&
                         detail::aligned16(inp) && detail::aligned16(weight);
    if (aligned && nvec <= kBwdMaxTeam) {
      launch_bwd_vec<T, 1>(dx, partials, g, x, w, mean, rstd, N, C, detail::round_up_warp(nvec),
                           stream);
    } else if (aligned && nvec <= 2 * kBwdMaxTeam) {
      launch_bwd_vec<T, 2>(dx, partials, g, x, w, mean, rstd, N, C,
                           detail::round_up_warp((nvec + 1) / 2), stream);
    } else {
      const int tx = std::min(kBwdGenericTeam, detail::round_up_warp(C));
      const int ny = std::max(1, kBwdThreads / tx);
      const unsigned blocks = static_cast<unsigned>((chunks + ny - 1) / ny);
      layernorm_bwd_generic_kernel<T><<<blocks, dim3(tx, ny), 0, stream>>>(
          dx, partials, g, x, w, mean, rstd, N, C, rows_per_chunk(N), chunks);
    }
    const size_t cols = 2 * static_cast<size_t>(C);
    const unsigned col_blocks =
        static_cast<unsigned>((cols + detail::kColTile - 1) / detail::kColTile);
    layernorm_bwd_params_kernel<T>
        <<<col_blocks, dim3(detail::kColTile, detail::kColSplit), 0, stream>>>(
            static_cast<T*>(dweight), static_cast<T*>(dbias), partials, C, chunks);
    return cudaGetLastError();
  });
}

}  // namespace zt::kernels::cuda
