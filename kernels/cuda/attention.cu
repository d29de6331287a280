// CUDA causal self-attention (contract: attention.cuh; CPU twin: kernels/cpu/attention.cpp).
//
// Algorithm: FlashAttention-2. The forward pass walks, for one tile of queries, over the key tiles
// in its causal past, keeping an online softmax per query row (running max m, running sum l, and
// the unnormalised output O rescaled by exp(m_old - m_new) whenever the max grows); at the end
// out = O / l and lse = m + log(l). Scores are s = scale * q.k with scale = 1/sqrt(HS); the
// exponentials are evaluated as exp2 of s * log2(e) (m is kept in that base-2 domain).
// The backward pass recomputes the probabilities from lse, P = exp(s - lse), and with
// D_i = rowsum(dO_i * O_i) (computed first, into the workspace) forms dS = P * (dO.V^T - D):
//   dV_j = sum_i P_ij dO_i,  dK_j = scale sum_i dS_ij q_i,  dQ_i = scale sum_j dS_ij k_j.
// It runs as two kernels so that no output is reduced across blocks: one block per (b, head, key
// tile) owns dK and dV of its keys and loops over the query tiles at or after it; one block per
// (b, head, query tile) owns dQ of its queries and loops over the key tiles at or before it
// (recomputing S and dP). Every output element is written by exactly one thread, accumulated in a
// fixed order, so the results are bitwise reproducible (no atomics).
//
// Two implementations of that algorithm:
//  - Tensor cores (bf16/fp16 storage, HS a multiple of 16, HS <= 128): 64x64 tiles, 4 warps per
//    block, each warp owning 16 rows (queries in the forward and dQ kernels, keys in the dK/dV
//    kernel), so everything after the block-wide tile loads is warp-private and needs __syncwarp
//    only. All products (forward Q.K^T, P.V; dK/dV kernel K.Q^T, V.dO^T, P^T.dO, dS^T.Q; dQ
//    kernel Q.K^T, dO.V^T, dS.K) are WMMA 16x16x16 with fp32 accumulators. The streamed tiles (K/V
//    in the forward and dQ kernels, Q/dO/lse/D in the dK/dV kernel) are double-buffered with
//    cp.async so that the next tile loads while the current one is being used. The operand that
//    stays fixed for a block (a warp's Q rows, or K/V rows) is staged through the warp's scratch
//    region and kept in registers as fragments. Scores leave the accumulators through the warp's
//    fp32 scratch (16 x 68 floats); each query row is then handled by two lanes (32 columns each,
//    interleaved in groups of four so that the float4 reads are conflict-free), which write the
//    16-bit P (or dS) over the same bytes for the next product. The output accumulators stay in
//    registers across key tiles; the per-row rescale needs to know which row each accumulator
//    element belongs to, which the WMMA API leaves unspecified, so each warp discovers it once by
//    loading a matrix whose entries are their row numbers (valid because load, store and mma share
//    one element mapping per fragment type). Key blocks that are entirely in a warp's causal future
//    are skipped in the diagonal tile; partially visible ones are masked element-wise (with
//    selects, so that stale scratch never turns into NaN). HS that is not a multiple of 32 is
//    padded with zero columns up to the next instantiated width (32, 64, 96, 128).
//  - CUDA cores (fp32 storage, or any other HS): the same loop structure with 32x32 tiles, 128
//    threads, everything fp32 in shared memory (rows padded to an odd pitch against bank
//    conflicts), each thread computing a 2x4 block of scores and a 2x(4 per 32 columns) block of
//    the output. When the tiles do not fit in shared memory (very large HS) the kernel keeps them
//    in a per-block slice of the workspace instead (same code through a pointer).
//
// Rows past T (the last tile) are loaded as zeros, so every intermediate stays finite, and are
// never stored. The launchers query the current device (opt-in shared memory per block, compute
// capability >= 8.0 for the tensor-core path) to choose between the two paths and where the
// generic path keeps its tiles; the workspace size functions make the same choice, so query them
// with the same current device. Workspace: forward, nothing unless the generic tiles do not fit in
// shared memory; backward, D (B, NH, T) fp32, then (same condition) the generic tiles.
#include "kernels/cuda/attention.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>
#include <mma.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace zt::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFullMask = 0xffffffffu;

// ------------------------------------------------------------------------------------------------
// Storage conversions (fp32 arithmetic; 16-bit values rounded to nearest even once, on store).

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
  return __float2half_rn(x);
}

// Two rounded 16-bit values in one word, `lo` at the lower address.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>, "16-bit only");
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

// ------------------------------------------------------------------------------------------------
// Tensor-core path: shapes and shared-memory layouts.

constexpr int kTile = 64;              // query and key rows per tile
constexpr int kWarps = 4;              // each warp owns 16 rows of the tile
constexpr int kThreads = 32 * kWarps;  // threads per block (both paths)
constexpr int kScoreLd = kTile + 4;    // fp32 score pitch: float4 reads conflict-free
[[maybe_unused]] constexpr int kProbLd = 2 * kScoreLd;  // 16-bit P/dS pitch, over the same bytes
constexpr int kRegionBytes = 16 * kScoreLd * 4;         // one warp's 16 x 68 fp32 scratch (4352 B)
constexpr int kStatsBytes = 2 * kTile * 4;      // lse and D of one query tile (dK/dV kernel)
[[maybe_unused]] constexpr int kElemBytes = 2;  // 16-bit storage on this path

// In-place P: a warp's 16 x 64 fp32 scores (pitch 68 floats = 272 bytes per row) are replaced by
// 16-bit P (or dS) of pitch 136 elements over the same bytes, so row r of P occupies the first 128
// bytes of row r of the scores. Lane pair (r, half) handles columns 8j + 4*half + e (j < 8, e < 4).
// P columns 0..31 (bytes 0..63) overwrite only scores 0..15, P columns 32..63 (bytes 64..127) only
// scores 16..31. So each lane reads its columns < 32 (j < 4), a __syncwarp passes, and then it
// writes that half and reads/writes the second: those reads (bytes >= 128) and writes (bytes
// 64..127) touch neither each other nor anything still unread. This keeps 16 values per lane live
// instead of 32.

// Number of 16-wide column blocks of a tile of width HSP.
template <int HSP>
constexpr int kColBlocks = HSP / 16;

// Tiles of 16-bit storage are kTile rows of HSP columns (HS zero-padded to HSP), with a pitch of
// HSP + 8 elements: a multiple of 8 (WMMA) whose 16-byte shift per row spreads the fragment loads
// over all banks. 16 rows of such a tile fit in one warp region for HSP <= 128.
template <int HSP>
struct TcShape {
  static_assert(HSP % 32 == 0 && HSP <= 128, "instantiated widths: 32, 64, 96, 128");
  static constexpr int kLd = HSP + 8;
  static constexpr int kTileElems = kTile * kLd;
  static constexpr int kTileBytes = kTileElems * 2;
  static_assert(16 * kLd * 2 <= kRegionBytes, "16 staged rows must fit in a warp region");
};

// Forward: [stage 0 K, V | stage 1 K, V] [warp regions] [per-warp row values, 16 floats each].
template <int HSP>
struct FwdTcLayout {
  static constexpr int kKv = 0;
  static constexpr int kRegions = kKv + 4 * TcShape<HSP>::kTileBytes;
  static constexpr int kRowVals = kRegions + kWarps * kRegionBytes;
  static constexpr int kBytes = kRowVals + kWarps * 16 * 4;
};

// dK/dV: [stage 0 Q, dO | stage 1 Q, dO] [stage 0, 1 lse and D] [warp regions A (S^T, then P^T),
// B (dP^T, then dS^T)]. K and V, fixed for the block, are staged through the warp regions (K rows
// of warp w in its A, V rows in its B) and then kept in registers as fragments.
template <int HSP>
struct DkdvTcLayout {
  static constexpr int kQdo = 0;
  static constexpr int kStats = kQdo + 4 * TcShape<HSP>::kTileBytes;
  static constexpr int kRegions = kStats + 2 * kStatsBytes;
  static constexpr int kBytes = kRegions + kWarps * 2 * kRegionBytes;
};

// dQ: [stage 0 K, V | stage 1 K, V] [warp regions A (S, then dS), B (dP)]. Q and dO, fixed for
// the block, are staged through the warp regions (A and B) and then kept in registers.
template <int HSP>
struct DqTcLayout {
  static constexpr int kKv = 0;
  static constexpr int kRegions = kKv + 4 * TcShape<HSP>::kTileBytes;
  static constexpr int kBytes = kRegions + kWarps * 2 * kRegionBytes;
};

// Blocks per SM the register allocation must allow (__launch_bounds__), matched to what shared
// memory allows on sm_90 (228 KiB per SM), so that registers are not the occupancy limit.
constexpr int fwd_min_blocks(int hsp) { return hsp <= 64 ? 4 : hsp <= 96 ? 3 : 2; }
constexpr int dkdv_min_blocks(int hsp) { return hsp <= 32 ? 4 : hsp <= 64 ? 3 : 2; }
constexpr int dq_min_blocks(int hsp) { return hsp <= 32 ? 4 : hsp <= 64 ? 3 : 2; }

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// bf16 WMMA needs sm_80. When compiling for an older target the tensor-core kernels' bodies are
// replaced by a trap; the launchers never select them on such a device (see DeviceCaps).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define ZT_ATTENTION_NO_TC 1
#endif

// Copies rows [row0, row0 + 64) of one head's HS columns (row stride `stride` elements in global
// memory) into a 16-bit tile with pitch kLd; tile row r goes to dst + (r / 16) * group_stride +
// (r % 16) * kLd, so the 16-row groups may live in separate warp regions. Rows >= T_ and columns
// >= HS are zero-filled. With `vec` (16-byte aligned global rows) the copies are asynchronous
// (cp.async, 16 bytes; the caller commits and waits); otherwise they are plain loads.
template <typename T, int HSP>
__device__ __forceinline__ void tile_load(T* dst, int group_stride, const T* src, size_t stride,
                                          int row0, int T_, int HS, bool vec) {
  constexpr int kChunks = HSP / 8;  // 16-byte chunks per row
  constexpr int kLd = TcShape<HSP>::kLd;
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks;
    const int col = (i - r * kChunks) * 8;
    T* d = dst + (r >> 4) * group_stride + (r & 15) * kLd + col;
    const int t = row0 + r;
    if (t < T_ && col < HS) {
      const T* s = src + static_cast<size_t>(t) * stride + col;
      if (vec) {
        __pipeline_memcpy_async(d, s, 16);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) d[e] = s[e];
      }
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// lse and D of query rows [row0, row0 + 64) into lse_dst[64], d_dst[64] (zeros past T_).
[[maybe_unused]] __device__ __forceinline__ void stats_load(float* lse_dst, float* d_dst,
                                                            const float* lse_row,
                                                            const float* d_row, int row0, int T_) {
  const int i = threadIdx.x & (kTile - 1);
  float* dst = (threadIdx.x < kTile ? lse_dst : d_dst) + i;
  const float* src = threadIdx.x < kTile ? lse_row : d_row;
  const int t = row0 + i;
  if (t < T_) {
    __pipeline_memcpy_async(dst, src + t, 4);
  } else {
    *dst = 0.0f;
  }
}

// Writes 8 consecutive values src[0..7] * mul to dst[0..7] (16 bytes when `vec`).
template <typename T>
__device__ __forceinline__ void store8(T* dst, const float* src, float mul, bool vec) {
  if (vec) {
    const float4 a = *reinterpret_cast<const float4*>(src);
    const float4 b = *reinterpret_cast<const float4*>(src + 4);
    uint4 u;
    u.x = pack2<T>(a.x * mul, a.y * mul);
    u.y = pack2<T>(a.z * mul, a.w * mul);
    u.z = pack2<T>(b.x * mul, b.y * mul);
    u.w = pack2<T>(b.z * mul, b.w * mul);
    *reinterpret_cast<uint4*>(dst) = u;
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) dst[e] = from_f32<T>(src[e] * mul);
  }
}

// Writes 4 rounded values to 8 bytes of 16-bit storage.
template <typename T>
__device__ __forceinline__ void store4_16(T* dst, float a, float b, float c, float d) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(pack2<T>(a, b), pack2<T>(c, d));
}

// Stores a 16x16 accumulator (times `mul`) to rows row0.. of a head in global memory (row stride
// `stride`, columns col0..col0+15), through the warp's fp32 scratch; rows >= T_ are skipped. Lane
// (r, half) writes row r, columns 8 * half .. 8 * half + 7.
template <typename T>
__device__ __forceinline__ void store_frag(T* dst, size_t stride, int row0, int col0, int T_,
                                           const FragC& acc, float mul, float* scratch, bool vec) {
  const int lane = threadIdx.x & 31;
  const int r = lane >> 1, half = lane & 1;
  wmma::store_matrix_sync(scratch, acc, kScoreLd, wmma::mem_row_major);
  __syncwarp();
  if (row0 + r < T_) {
    store8(dst + static_cast<size_t>(row0 + r) * stride + col0 + 8 * half,
           scratch + r * kScoreLd + 8 * half, mul, vec);
  }
  __syncwarp();
}

// ------------------------------------------------------------------------------------------------
// Tensor-core forward. Grid (B*NH, ntiles): blockIdx.y = 0 is the last query tile (the most key
// tiles), so the longest blocks start first.

template <typename T, int HSP>
__global__ void __launch_bounds__(kThreads, fwd_min_blocks(HSP))
    fwd_tc_kernel(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ qkv, int T_,
                  int NH, int HS, float scale_log2, bool vec) {
#ifdef ZT_ATTENTION_NO_TC
  __trap();
#else
  using S = TcShape<HSP>;
  using L = FwdTcLayout<HSP>;
  extern __shared__ __align__(128) unsigned char tc_fwd_smem[];
  unsigned char* smem = tc_fwd_smem;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r = lane >> 1, half = lane & 1;  // softmax: lane pair per row, half of its columns
  const int bh = blockIdx.x, b = bh / NH, h = bh - b * NH;
  const int ntiles = (T_ + kTile - 1) / kTile;
  const int qt = ntiles - 1 - static_cast<int>(blockIdx.y);
  const int q0 = qt * kTile;
  const int C = NH * HS;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const int nd = HS / 16;
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + static_cast<size_t>(h) * HS;
  T* kv = reinterpret_cast<T*>(smem + L::kKv);
  float* rf = reinterpret_cast<float*>(smem + L::kRegions + warp * kRegionBytes);
  T* rp = reinterpret_cast<T*>(rf);
  float* row_vals = reinterpret_cast<float*>(smem + L::kRowVals) + warp * 16;

  // Row of each accumulator element (see the file comment), 4 bits per element.
  static_assert(FragC::num_elements <= 8, "rows packed in 32 bits");
  uint32_t rows = 0;
  {
    for (int i = lane; i < 256; i += 32)
      rf[(i >> 4) * kScoreLd + (i & 15)] = static_cast<float>(i >> 4);
    __syncwarp();
    FragC idx;
    wmma::load_matrix_sync(idx, rf, kScoreLd, wmma::mem_row_major);
#pragma unroll
    for (int i = 0; i < FragC::num_elements; ++i)
      rows |= static_cast<uint32_t>(idx.x[i]) << (4 * i);
  }
  __syncthreads();  // the regions are about to receive the Q rows from every thread

  // Q rows of warp w into region w; K/V tile 0 into stage 0.
  tile_load<T, HSP>(reinterpret_cast<T*>(smem + L::kRegions), kRegionBytes / kElemBytes, head, C3,
                    q0, T_, HS, vec);
  tile_load<T, HSP>(kv, 16 * S::kLd, head + C, C3, 0, T_, HS, vec);
  tile_load<T, HSP>(kv + S::kTileElems, 16 * S::kLd, head + 2 * C, C3, 0, T_, HS, vec);
  __pipeline_commit();

  FragA<T> qf[kColBlocks<HSP>];
  FragC of[kColBlocks<HSP>];
#pragma unroll
  for (int n = 0; n < kColBlocks<HSP>; ++n) wmma::fill_fragment(of[n], 0.0f);
  float m = -INFINITY, l = 0.0f;  // of row r (both lanes of the pair hold the same values)
  const int row_in_tile = warp * 16 + r;

  for (int kt = 0; kt <= qt; ++kt) {
    if (kt < qt) {
      T* next = kv + ((kt + 1) & 1) * 2 * S::kTileElems;
      const int k0 = (kt + 1) * kTile;
      tile_load<T, HSP>(next, 16 * S::kLd, head + C, C3, k0, T_, HS, vec);
      tile_load<T, HSP>(next + S::kTileElems, 16 * S::kLd, head + 2 * C, C3, k0, T_, HS, vec);
    }
    __pipeline_commit();
    __pipeline_wait_prior(1);  // this thread's copies of tile kt (and Q) have landed
    __syncthreads();           // and everyone's
    if (kt == 0) {
#pragma unroll
      for (int k = 0; k < kColBlocks<HSP>; ++k) wmma::load_matrix_sync(qf[k], rp + 16 * k, S::kLd);
      __syncwarp();  // the scores below overwrite the staged Q rows
    }
    const T* ks = kv + (kt & 1) * 2 * S::kTileElems;
    const T* vs = ks + S::kTileElems;
    const bool diag = kt == qt;
    const int last = diag ? warp : 3;  // key blocks past `last` are in this warp's future

    // S = Q K^T (16 x 64 for this warp) into the region.
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      if (n <= last) {
        FragC s;
        wmma::fill_fragment(s, 0.0f);
#pragma unroll
        for (int k = 0; k < kColBlocks<HSP>; ++k) {
          if (k < nd) {
            FragBCol<T> kb;
            wmma::load_matrix_sync(kb, ks + 16 * n * S::kLd + 16 * k, S::kLd);
            wmma::mma_sync(s, qf[k], kb, s);
          }
        }
        wmma::store_matrix_sync(rf + 16 * n, s, kScoreLd, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // Online softmax of row r over columns 8j + 4*half + e (j < 8, e < 4): the row max first,
    // then the probabilities in two halves of 16 values (see "In-place P" above).
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float4 v = *reinterpret_cast<const float4*>(rf + r * kScoreLd + 8 * j + 4 * half);
      const float e4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 8 * j + 4 * half + e;
        mx = fmaxf(mx, (diag && c > row_in_tile) ? -INFINITY : e4[e] * scale_log2);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    const float m_new = fmaxf(m, mx);     // finite: every row sees key 0 in tile 0
    const float corr = exp2f(m - m_new);  // 0 on the first tile (m = -inf)
    float sum = 0.0f;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float p[16];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int j = 4 * hh + jj;
        const float4 v = *reinterpret_cast<const float4*>(rf + r * kScoreLd + 8 * j + 4 * half);
        const float e4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 8 * j + 4 * half + e;
          const float pe = (diag && c > row_in_tile) ? 0.0f : exp2f(e4[e] * scale_log2 - m_new);
          p[4 * jj + e] = pe;
          sum += pe;
        }
      }
      if (hh == 0) __syncwarp();  // every lane has read what the first half overwrites
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        store4_16(rp + r * kProbLd + 8 * (4 * hh + jj) + 4 * half, p[4 * jj], p[4 * jj + 1],
                  p[4 * jj + 2], p[4 * jj + 3]);
      }
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = l * corr + sum;
    m = m_new;
    if (half == 0) row_vals[r] = corr;
    __syncwarp();

    // O = O * corr + P V.
    float cr[FragC::num_elements];
#pragma unroll
    for (int i = 0; i < FragC::num_elements; ++i) cr[i] = row_vals[(rows >> (4 * i)) & 15u];
#pragma unroll
    for (int n = 0; n < kColBlocks<HSP>; ++n) {
#pragma unroll
      for (int i = 0; i < FragC::num_elements; ++i) of[n].x[i] *= cr[i];
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (k <= last) {
        FragA<T> pa;
        wmma::load_matrix_sync(pa, rp + 16 * k, kProbLd);
#pragma unroll
        for (int n = 0; n < kColBlocks<HSP>; ++n) {
          if (n < nd) {
            FragBRow<T> vb;
            wmma::load_matrix_sync(vb, vs + 16 * k * S::kLd + 16 * n, S::kLd);
            wmma::mma_sync(of[n], pa, vb, of[n]);
          }
        }
      }
    }
    __syncwarp();
    __syncthreads();  // stage kt & 1 is refilled by the next iteration
  }

  const int qi = q0 + row_in_tile;
  if (half == 0 && qi < T_) lse[static_cast<size_t>(bh) * T_ + qi] = m * kLn2 + logf(l);
  const float inv_l = 1.0f / l;  // l >= 1: the row max contributes exp2(0)
  T* out_head = out + static_cast<size_t>(b) * T_ * C + static_cast<size_t>(h) * HS;
#pragma unroll
  for (int n = 0; n < kColBlocks<HSP>; ++n) {
    if (n < nd) {
      wmma::store_matrix_sync(rf, of[n], kScoreLd, wmma::mem_row_major);
      __syncwarp();
      if (qi < T_) {
        store8(out_head + static_cast<size_t>(qi) * C + 16 * n + 8 * half,
               rf + r * kScoreLd + 8 * half, inv_l, vec);
      }
      __syncwarp();
    }
  }
#endif
}

// ------------------------------------------------------------------------------------------------
// Tensor-core backward, dK/dV. Grid (B*NH, ntiles): blockIdx.y = key tile kt (tile 0 sees every
// query tile, so the longest blocks start first). Warp w owns keys 16w..16w+15 of the tile.

template <typename T, int HSP>
__global__ void __launch_bounds__(kThreads, dkdv_min_blocks(HSP))
    dkdv_tc_kernel(T* __restrict__ dqkv, const T* __restrict__ dout, const T* __restrict__ qkv,
                   const float* __restrict__ lse, const float* __restrict__ dsum, int T_, int NH,
                   int HS, float scale, float scale_log2, bool vec) {
#ifdef ZT_ATTENTION_NO_TC
  __trap();
#else
  using S = TcShape<HSP>;
  using L = DkdvTcLayout<HSP>;
  extern __shared__ __align__(128) unsigned char tc_dkdv_smem[];
  unsigned char* smem = tc_dkdv_smem;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r = lane >> 1, half = lane & 1;
  const int bh = blockIdx.x, b = bh / NH, h = bh - b * NH;
  const int ntiles = (T_ + kTile - 1) / kTile;
  const int kt = blockIdx.y;
  const int k0 = kt * kTile;
  const int C = NH * HS;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const int nd = HS / 16;
  const size_t hoff = static_cast<size_t>(h) * HS;
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  const T* dout_head = dout + static_cast<size_t>(b) * T_ * C + hoff;
  const float* lse_row = lse + static_cast<size_t>(bh) * T_;
  const float* d_row = dsum + static_cast<size_t>(bh) * T_;
  T* qdo = reinterpret_cast<T*>(smem + L::kQdo);
  float* stats = reinterpret_cast<float*>(smem + L::kStats);
  unsigned char* regions = smem + L::kRegions;
  float* af = reinterpret_cast<float*>(regions + warp * 2 * kRegionBytes);
  float* bf = af + kRegionBytes / 4;
  T* ap = reinterpret_cast<T*>(af);
  T* bp = reinterpret_cast<T*>(bf);

  constexpr int kStride = 2 * kRegionBytes / kElemBytes;  // from warp w's regions to w + 1's
  tile_load<T, HSP>(reinterpret_cast<T*>(regions), kStride, head + C, C3, k0, T_, HS, vec);
  tile_load<T, HSP>(reinterpret_cast<T*>(regions + kRegionBytes), kStride, head + 2 * C, C3, k0, T_,
                    HS, vec);
  tile_load<T, HSP>(qdo, 16 * S::kLd, head, C3, k0, T_, HS, vec);
  tile_load<T, HSP>(qdo + S::kTileElems, 16 * S::kLd, dout_head, C, k0, T_, HS, vec);
  stats_load(stats, stats + kTile, lse_row, d_row, k0, T_);
  __pipeline_commit();

  FragA<T> kf[kColBlocks<HSP>], vf[kColBlocks<HSP>];
  FragC dk[kColBlocks<HSP>], dv[kColBlocks<HSP>];
#pragma unroll
  for (int n = 0; n < kColBlocks<HSP>; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  const int key_in_tile = warp * 16 + r;  // this lane's key row in the element-wise phase

  for (int qt = kt; qt < ntiles; ++qt) {
    const int it = qt - kt;
    if (qt + 1 < ntiles) {
      const int st = (it + 1) & 1;
      const int q1 = (qt + 1) * kTile;
      T* next = qdo + st * 2 * S::kTileElems;
      tile_load<T, HSP>(next, 16 * S::kLd, head, C3, q1, T_, HS, vec);
      tile_load<T, HSP>(next + S::kTileElems, 16 * S::kLd, dout_head, C, q1, T_, HS, vec);
      stats_load(stats + st * 2 * kTile, stats + st * 2 * kTile + kTile, lse_row, d_row, q1, T_);
    }
    __pipeline_commit();
    __pipeline_wait_prior(1);
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int k = 0; k < kColBlocks<HSP>; ++k) {
        wmma::load_matrix_sync(kf[k], ap + 16 * k, S::kLd);
        wmma::load_matrix_sync(vf[k], bp + 16 * k, S::kLd);
      }
      __syncwarp();  // S^T and dP^T below overwrite the staged K and V rows
    }
    const T* qs = qdo + (it & 1) * 2 * S::kTileElems;
    const T* dos = qs + S::kTileElems;
    const float* lse_s = stats + (it & 1) * 2 * kTile;
    const float* d_s = lse_s + kTile;
    const int q0 = qt * kTile;
    const bool diag = qt == kt;
    const int first = diag ? warp : 0;  // query blocks before `first` are in these keys' past

    // S^T = K Q^T and dP^T = V dO^T (16 keys x 64 queries each).
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      if (n >= first) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < kColBlocks<HSP>; ++k) {
          if (k < nd) {
            FragBCol<T> qb;
            wmma::load_matrix_sync(qb, qs + 16 * n * S::kLd + 16 * k, S::kLd);
            wmma::mma_sync(acc, kf[k], qb, acc);
          }
        }
        wmma::store_matrix_sync(af + 16 * n, acc, kScoreLd, wmma::mem_row_major);
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < kColBlocks<HSP>; ++k) {
          if (k < nd) {
            FragBCol<T> gb;
            wmma::load_matrix_sync(gb, dos + 16 * n * S::kLd + 16 * k, S::kLd);
            wmma::mma_sync(acc, vf[k], gb, acc);
          }
        }
        wmma::store_matrix_sync(bf + 16 * n, acc, kScoreLd, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // P^T = exp2(S^T * scale * log2e - lse * log2e) where visible, dS^T = P^T (dP^T - D), in two
    // halves of 16 columns (see "In-place P" above).
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float p[16], ds[16];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int cb = 8 * (4 * hh + jj) + 4 * half;
        const float4 sv = *reinterpret_cast<const float4*>(af + r * kScoreLd + cb);
        const float4 gv = *reinterpret_cast<const float4*>(bf + r * kScoreLd + cb);
        const float s4[4] = {sv.x, sv.y, sv.z, sv.w};
        const float g4[4] = {gv.x, gv.y, gv.z, gv.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = cb + e;
          const bool visible = (!diag || key_in_tile <= c) && q0 + c < T_;
          const float pe = visible ? exp2f(fmaf(s4[e], scale_log2, -lse_s[c] * kLog2e)) : 0.0f;
          p[4 * jj + e] = pe;
          ds[4 * jj + e] = visible ? pe * (g4[e] - d_s[c]) : 0.0f;
        }
      }
      if (hh == 0) __syncwarp();
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int cb = 8 * (4 * hh + jj) + 4 * half;
        store4_16(ap + r * kProbLd + cb, p[4 * jj], p[4 * jj + 1], p[4 * jj + 2], p[4 * jj + 3]);
        store4_16(bp + r * kProbLd + cb, ds[4 * jj], ds[4 * jj + 1], ds[4 * jj + 2],
                  ds[4 * jj + 3]);
      }
    }
    __syncwarp();

    // dV += P^T dO, dK += dS^T Q (the scale is applied once at the end).
#pragma unroll
    for (int kb = 0; kb < 4; ++kb) {
      if (kb >= first) {
        FragA<T> pa, dsa;
        wmma::load_matrix_sync(pa, ap + 16 * kb, kProbLd);
        wmma::load_matrix_sync(dsa, bp + 16 * kb, kProbLd);
#pragma unroll
        for (int n = 0; n < kColBlocks<HSP>; ++n) {
          if (n < nd) {
            FragBRow<T> gb, qb;
            wmma::load_matrix_sync(gb, dos + 16 * kb * S::kLd + 16 * n, S::kLd);
            wmma::mma_sync(dv[n], pa, gb, dv[n]);
            wmma::load_matrix_sync(qb, qs + 16 * kb * S::kLd + 16 * n, S::kLd);
            wmma::mma_sync(dk[n], dsa, qb, dk[n]);
          }
        }
      }
    }
    __syncwarp();
    __syncthreads();  // stage it & 1 is refilled by the next iteration
  }

  T* dhead = dqkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  const int row0 = k0 + warp * 16;
#pragma unroll
  for (int n = 0; n < kColBlocks<HSP>; ++n) {
    if (n < nd) {
      store_frag(dhead + C, C3, row0, 16 * n, T_, dk[n], scale, af, vec);
      store_frag(dhead + 2 * C, C3, row0, 16 * n, T_, dv[n], 1.0f, af, vec);
    }
  }
#endif
}

// ------------------------------------------------------------------------------------------------
// Tensor-core backward, dQ. Grid (B*NH, ntiles): blockIdx.y = 0 is the last query tile. Warp w
// owns queries 16w..16w+15 of the tile.

template <typename T, int HSP>
__global__ void __launch_bounds__(kThreads, dq_min_blocks(HSP))
    dq_tc_kernel(T* __restrict__ dqkv, const T* __restrict__ dout, const T* __restrict__ qkv,
                 const float* __restrict__ lse, const float* __restrict__ dsum, int T_, int NH,
                 int HS, float scale, float scale_log2, bool vec) {
#ifdef ZT_ATTENTION_NO_TC
  __trap();
#else
  using S = TcShape<HSP>;
  using L = DqTcLayout<HSP>;
  extern __shared__ __align__(128) unsigned char tc_dq_smem[];
  unsigned char* smem = tc_dq_smem;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r = lane >> 1, half = lane & 1;
  const int bh = blockIdx.x, b = bh / NH, h = bh - b * NH;
  const int ntiles = (T_ + kTile - 1) / kTile;
  const int qt = ntiles - 1 - static_cast<int>(blockIdx.y);
  const int q0 = qt * kTile;
  const int C = NH * HS;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const int nd = HS / 16;
  const size_t hoff = static_cast<size_t>(h) * HS;
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  const T* dout_head = dout + static_cast<size_t>(b) * T_ * C + hoff;
  T* kv = reinterpret_cast<T*>(smem + L::kKv);
  unsigned char* regions = smem + L::kRegions;
  float* af = reinterpret_cast<float*>(regions + warp * 2 * kRegionBytes);
  float* bf = af + kRegionBytes / 4;
  T* ap = reinterpret_cast<T*>(af);
  T* bp = reinterpret_cast<T*>(bf);

  constexpr int kStride = 2 * kRegionBytes / kElemBytes;  // from warp w's regions to w + 1's
  tile_load<T, HSP>(reinterpret_cast<T*>(regions), kStride, head, C3, q0, T_, HS, vec);
  tile_load<T, HSP>(reinterpret_cast<T*>(regions + kRegionBytes), kStride, dout_head, C, q0, T_, HS,
                    vec);
  tile_load<T, HSP>(kv, 16 * S::kLd, head + C, C3, 0, T_, HS, vec);
  tile_load<T, HSP>(kv + S::kTileElems, 16 * S::kLd, head + 2 * C, C3, 0, T_, HS, vec);
  __pipeline_commit();

  const int row_in_tile = warp * 16 + r;
  const int qi = q0 + row_in_tile;
  // Rows past T_ only need finite values (their dQ is not stored).
  const float lse2 = qi < T_ ? lse[static_cast<size_t>(bh) * T_ + qi] * kLog2e : 0.0f;
  const float drow = qi < T_ ? dsum[static_cast<size_t>(bh) * T_ + qi] : 0.0f;

  FragA<T> qf[kColBlocks<HSP>], gf[kColBlocks<HSP>];
  FragC dq[kColBlocks<HSP>];
#pragma unroll
  for (int n = 0; n < kColBlocks<HSP>; ++n) wmma::fill_fragment(dq[n], 0.0f);

  for (int kt = 0; kt <= qt; ++kt) {
    if (kt < qt) {
      T* next = kv + ((kt + 1) & 1) * 2 * S::kTileElems;
      const int k1 = (kt + 1) * kTile;
      tile_load<T, HSP>(next, 16 * S::kLd, head + C, C3, k1, T_, HS, vec);
      tile_load<T, HSP>(next + S::kTileElems, 16 * S::kLd, head + 2 * C, C3, k1, T_, HS, vec);
    }
    __pipeline_commit();
    __pipeline_wait_prior(1);
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int k = 0; k < kColBlocks<HSP>; ++k) {
        wmma::load_matrix_sync(qf[k], ap + 16 * k, S::kLd);
        wmma::load_matrix_sync(gf[k], bp + 16 * k, S::kLd);
      }
      __syncwarp();  // S and dP below overwrite the staged Q and dO rows
    }
    const T* ks = kv + (kt & 1) * 2 * S::kTileElems;
    const T* vs = ks + S::kTileElems;
    const bool diag = kt == qt;
    const int last = diag ? warp : 3;

    // S = Q K^T, dP = dO V^T (16 queries x 64 keys each).
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      if (n <= last) {
        FragC acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < kColBlocks<HSP>; ++k) {
          if (k < nd) {
            FragBCol<T> kb;
            wmma::load_matrix_sync(kb, ks + 16 * n * S::kLd + 16 * k, S::kLd);
            wmma::mma_sync(acc, qf[k], kb, acc);
          }
        }
        wmma::store_matrix_sync(af + 16 * n, acc, kScoreLd, wmma::mem_row_major);
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < kColBlocks<HSP>; ++k) {
          if (k < nd) {
            FragBCol<T> vb;
            wmma::load_matrix_sync(vb, vs + 16 * n * S::kLd + 16 * k, S::kLd);
            wmma::mma_sync(acc, gf[k], vb, acc);
          }
        }
        wmma::store_matrix_sync(bf + 16 * n, acc, kScoreLd, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // dS = P (dP - D), P = exp2(S * scale * log2e - lse * log2e) where visible, in two halves of
    // 16 columns (see "In-place P" above).
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      float ds[16];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int cb = 8 * (4 * hh + jj) + 4 * half;
        const float4 sv = *reinterpret_cast<const float4*>(af + r * kScoreLd + cb);
        const float4 gv = *reinterpret_cast<const float4*>(bf + r * kScoreLd + cb);
        const float s4[4] = {sv.x, sv.y, sv.z, sv.w};
        const float g4[4] = {gv.x, gv.y, gv.z, gv.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool visible = !diag || cb + e <= row_in_tile;
          const float pe = visible ? exp2f(fmaf(s4[e], scale_log2, -lse2)) : 0.0f;
          ds[4 * jj + e] = visible ? pe * (g4[e] - drow) : 0.0f;
        }
      }
      if (hh == 0) __syncwarp();
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        store4_16(ap + r * kProbLd + 8 * (4 * hh + jj) + 4 * half, ds[4 * jj], ds[4 * jj + 1],
                  ds[4 * jj + 2], ds[4 * jj + 3]);
      }
    }
    __syncwarp();

    // dQ += dS K.
#pragma unroll
    for (int kb = 0; kb < 4; ++kb) {
      if (kb <= last) {
        FragA<T> dsa;
        wmma::load_matrix_sync(dsa, ap + 16 * kb, kProbLd);
#pragma unroll
        for (int n = 0; n < kColBlocks<HSP>; ++n) {
          if (n < nd) {
            FragBRow<T> kb_frag;
            wmma::load_matrix_sync(kb_frag, ks + 16 * kb * S::kLd + 16 * n, S::kLd);
            wmma::mma_sync(dq[n], dsa, kb_frag, dq[n]);
          }
        }
      }
    }
    __syncwarp();
    __syncthreads();
  }

  T* dhead = dqkv + static_cast<size_t>(b) * T_ * C3 + hoff;
#pragma unroll
  for (int n = 0; n < kColBlocks<HSP>; ++n) {
    if (n < nd) store_frag(dhead, C3, q0 + warp * 16, 16 * n, T_, dq[n], scale, af, vec);
  }
#endif
}

// ------------------------------------------------------------------------------------------------
// D_i = rowsum(dO_i * O_i) for the backward, into dsum (B, NH, T). One block per token, one warp
// per head (strided), lanes over the head's columns, combined by a fixed butterfly.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dsum_kernel(float* __restrict__ dsum, const T* __restrict__ dout, const T* __restrict__ out,
                int T_, int NH, int HS) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const size_t tok = blockIdx.x;
  const int b = static_cast<int>(tok / T_), t = static_cast<int>(tok % T_);
  const size_t C = static_cast<size_t>(NH) * HS;
  for (int h = warp; h < NH; h += kWarps) {
    const size_t base = tok * C + static_cast<size_t>(h) * HS;
    float s = 0.0f;
    for (int d = lane; d < HS; d += 32) s += to_f32(dout[base + d]) * to_f32(out[base + d]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(kFullMask, s, o);
    if (lane == 0) dsum[(static_cast<size_t>(b) * NH + h) * T_ + t] = s;
  }
}

// ------------------------------------------------------------------------------------------------
// CUDA-core path: 32x32 tiles, 128 threads, fp32 tiles in shared memory (or in the workspace).
// Thread (rg = tid / 8, cg = tid % 8) computes rows 2rg, 2rg + 1 against columns cg + 8j (j < 4)
// of a score tile, and the same rows against columns d0 + cg + 8u (u < 4) of each 32-column slice
// of an HS-wide accumulator.

constexpr int kGTile = 32;
constexpr int kGsLd = kGTile + 1;  // score tile pitch

// Pitch of an HS-wide fp32 tile: HS rounded up to 32 (zero-filled), plus one against conflicts.
__host__ __device__ constexpr int generic_ld(int HS) { return (HS + 31) / 32 * 32 + 1; }

// Floats per block of each generic kernel: HS-wide tiles, then score tiles and row values.
__host__ __device__ constexpr size_t generic_fwd_floats(int HS) {
  return 4 * static_cast<size_t>(kGTile) * generic_ld(HS) + kGTile * kGsLd + 2 * kGTile;
}
__host__ __device__ constexpr size_t generic_dkdv_floats(int HS) {
  return 6 * static_cast<size_t>(kGTile) * generic_ld(HS) + 2 * kGTile * kGsLd + 2 * kGTile;
}
__host__ __device__ constexpr size_t generic_dq_floats(int HS) {
  return 5 * static_cast<size_t>(kGTile) * generic_ld(HS) + kGTile * kGsLd + 2 * kGTile;
}

// Rows [row0, row0 + 32) of one head (row stride `stride`) into a tile of pitch ld as fp32; rows
// >= T_ and columns in [HS, ld - 1) are zeros.
template <typename T>
__device__ __forceinline__ void gtile_load(float* dst, int ld, const T* src, size_t stride,
                                           int row0, int T_, int HS) {
  const int w = ld - 1;
  for (int i = threadIdx.x; i < kGTile * w; i += kThreads) {
    const int r = i / w, d = i - r * w;
    const int t = row0 + r;
    dst[r * ld + d] = (t < T_ && d < HS) ? to_f32(src[static_cast<size_t>(t) * stride + d]) : 0.0f;
  }
}

// The block's buffer: dynamic shared memory, or its slice of the workspace.
__device__ __forceinline__ float* generic_buffer(float* smem, float* gbuf, size_t floats) {
  if (gbuf == nullptr) return smem;
  return gbuf + (static_cast<size_t>(blockIdx.y) * gridDim.x + blockIdx.x) * floats;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fwd_generic_kernel(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ qkv,
                       int T_, int NH, int HS, float scale_log2, float* gbuf) {
  extern __shared__ float g_fwd_smem[];
  const int ld = generic_ld(HS), w = ld - 1;
  float* sq = generic_buffer(g_fwd_smem, gbuf, generic_fwd_floats(HS));
  float* sk = sq + kGTile * ld;
  float* sv = sk + kGTile * ld;
  float* so = sv + kGTile * ld;
  float* ss = so + kGTile * ld;
  float* scorr = ss + kGTile * kGsLd;
  float* sl = scorr + kGTile;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int r0 = 2 * (tid >> 3), r1 = r0 + 1, cg = tid & 7;
  const int srow = warp * 8 + (lane >> 2), quarter = lane & 3;  // softmax: 4 lanes per row
  const int bh = blockIdx.x, b = bh / NH, h = bh - b * NH;
  const int ntiles = (T_ + kGTile - 1) / kGTile;
  const int qt = ntiles - 1 - static_cast<int>(blockIdx.y);
  const int q0 = qt * kGTile;
  const int C = NH * HS;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + static_cast<size_t>(h) * HS;

  gtile_load(sq, ld, head, C3, q0, T_, HS);
  for (int i = tid; i < kGTile * ld; i += kThreads) so[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // of row srow

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kGTile;
    const bool diag = kt == qt;
    __syncthreads();  // previous tile's readers of sk, sv, ss are done
    gtile_load(sk, ld, head + C, C3, k0, T_, HS);
    gtile_load(sv, ld, head + 2 * C, C3, k0, T_, HS);
    __syncthreads();

    float a0[4] = {}, a1[4] = {};
    for (int d = 0; d < HS; ++d) {
      const float x0 = sq[r0 * ld + d], x1 = sq[r1 * ld + d];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float y = sk[(cg + 8 * j) * ld + d];
        a0[j] = fmaf(x0, y, a0[j]);
        a1[j] = fmaf(x1, y, a1[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = cg + 8 * j;
      ss[r0 * kGsLd + c] = (diag && c > r0) ? -INFINITY : a0[j] * scale_log2;
      ss[r1 * kGsLd + c] = (diag && c > r1) ? -INFINITY : a1[j] * scale_log2;
    }
    __syncthreads();

    float v[8];
    float mx = -INFINITY;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = ss[srow * kGsLd + quarter * 8 + e];
      mx = fmaxf(mx, v[e]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 2));
    const float m_new = fmaxf(m, mx);
    const float corr = exp2f(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = exp2f(v[e] - m_new);
      sum += v[e];
      ss[srow * kGsLd + quarter * 8 + e] = v[e];
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    sum += __shfl_xor_sync(kFullMask, sum, 2);
    l = l * corr + sum;
    m = m_new;
    if (quarter == 0) scorr[srow] = corr;
    __syncthreads();

    const float c0 = scorr[r0], c1 = scorr[r1];
    const int cend = diag ? r1 + 1 : kGTile;  // later keys have p = 0 for both rows
    for (int d0 = 0; d0 < w; d0 += 32) {
      float o0[4], o1[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        o0[u] = so[r0 * ld + d0 + cg + 8 * u] * c0;
        o1[u] = so[r1 * ld + d0 + cg + 8 * u] * c1;
      }
      for (int c = 0; c < cend; ++c) {
        const float p0 = ss[r0 * kGsLd + c], p1 = ss[r1 * kGsLd + c];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float y = sv[c * ld + d0 + cg + 8 * u];
          o0[u] = fmaf(p0, y, o0[u]);
          o1[u] = fmaf(p1, y, o1[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        so[r0 * ld + d0 + cg + 8 * u] = o0[u];
        so[r1 * ld + d0 + cg + 8 * u] = o1[u];
      }
    }
  }

  if (quarter == 0) {
    sl[srow] = 1.0f / l;
    if (q0 + srow < T_) lse[static_cast<size_t>(bh) * T_ + q0 + srow] = m * kLn2 + logf(l);
  }
  __syncthreads();
  T* out_head = out + static_cast<size_t>(b) * T_ * C + static_cast<size_t>(h) * HS;
  for (int i = tid; i < kGTile * HS; i += kThreads) {
    const int rr = i / HS, d = i - rr * HS;
    if (q0 + rr < T_) {
      out_head[static_cast<size_t>(q0 + rr) * C + d] = from_f32<T>(so[rr * ld + d] * sl[rr]);
    }
  }
}

// dK/dV, one block per (b, head, key tile of 32); thread rows are keys, score columns queries.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dkdv_generic_kernel(T* __restrict__ dqkv, const T* __restrict__ dout, const T* __restrict__ qkv,
                        const float* __restrict__ lse, const float* __restrict__ dsum, int T_,
                        int NH, int HS, float scale, float scale_log2, float* gbuf) {
  extern __shared__ float g_dkdv_smem[];
  const int ld = generic_ld(HS), w = ld - 1;
  float* sk = generic_buffer(g_dkdv_smem, gbuf, generic_dkdv_floats(HS));
  float* sv = sk + kGTile * ld;
  float* sdk = sv + kGTile * ld;
  float* sdv = sdk + kGTile * ld;
  float* sq = sdv + kGTile * ld;
  float* sdo = sq + kGTile * ld;
  float* sp = sdo + kGTile * ld;
  float* sds = sp + kGTile * kGsLd;
  float* slse = sds + kGTile * kGsLd;
  float* sd = slse + kGTile;
  const int tid = threadIdx.x;
  const int r0 = 2 * (tid >> 3), r1 = r0 + 1, cg = tid & 7;
  const int bh = blockIdx.x, b = bh / NH, h = bh - b * NH;
  const int ntiles = (T_ + kGTile - 1) / kGTile;
  const int kt = blockIdx.y;
  const int k0 = kt * kGTile;
  const int C = NH * HS;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const size_t hoff = static_cast<size_t>(h) * HS;
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  const T* dout_head = dout + static_cast<size_t>(b) * T_ * C + hoff;
  const float* lse_row = lse + static_cast<size_t>(bh) * T_;
  const float* d_row = dsum + static_cast<size_t>(bh) * T_;

  gtile_load(sk, ld, head + C, C3, k0, T_, HS);
  gtile_load(sv, ld, head + 2 * C, C3, k0, T_, HS);
  for (int i = tid; i < kGTile * ld; i += kThreads) {
    sdk[i] = 0.0f;
    sdv[i] = 0.0f;
  }

  for (int qt = kt; qt < ntiles; ++qt) {
    const int q0 = qt * kGTile;
    const bool diag = qt == kt;
    __syncthreads();
    gtile_load(sq, ld, head, C3, q0, T_, HS);
    gtile_load(sdo, ld, dout_head, C, q0, T_, HS);
    if (tid < 2 * kGTile) {
      const int i = tid & (kGTile - 1);
      const float* src = tid < kGTile ? lse_row : d_row;
      (tid < kGTile ? slse : sd)[i] = q0 + i < T_ ? src[q0 + i] : 0.0f;
    }
    __syncthreads();

    float s0[4] = {}, s1[4] = {}, g0[4] = {}, g1[4] = {};
    for (int d = 0; d < HS; ++d) {
      const float ka = sk[r0 * ld + d], kb = sk[r1 * ld + d];
      const float va = sv[r0 * ld + d], vb = sv[r1 * ld + d];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = cg + 8 * j;
        const float x = sq[c * ld + d], g = sdo[c * ld + d];
        s0[j] = fmaf(ka, x, s0[j]);
        s1[j] = fmaf(kb, x, s1[j]);
        g0[j] = fmaf(va, g, g0[j]);
        g1[j] = fmaf(vb, g, g1[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = cg + 8 * j;
      const bool in_t = q0 + c < T_;
      const float lse2 = slse[c] * kLog2e, dc = sd[c];
      const bool vis0 = in_t && (!diag || r0 <= c), vis1 = in_t && (!diag || r1 <= c);
      const float p0 = vis0 ? exp2f(fmaf(s0[j], scale_log2, -lse2)) : 0.0f;
      const float p1 = vis1 ? exp2f(fmaf(s1[j], scale_log2, -lse2)) : 0.0f;
      sp[r0 * kGsLd + c] = p0;
      sp[r1 * kGsLd + c] = p1;
      sds[r0 * kGsLd + c] = vis0 ? p0 * (g0[j] - dc) : 0.0f;
      sds[r1 * kGsLd + c] = vis1 ? p1 * (g1[j] - dc) : 0.0f;
    }
    __syncthreads();

    const int cbeg = diag ? r0 : 0;  // earlier queries do not see these keys
    for (int d0 = 0; d0 < w; d0 += 32) {
      float dv0[4], dv1[4], dk0[4], dk1[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int d = d0 + cg + 8 * u;
        dv0[u] = sdv[r0 * ld + d];
        dv1[u] = sdv[r1 * ld + d];
        dk0[u] = sdk[r0 * ld + d];
        dk1[u] = sdk[r1 * ld + d];
      }
      for (int c = cbeg; c < kGTile; ++c) {
        const float pa = sp[r0 * kGsLd + c], pb = sp[r1 * kGsLd + c];
        const float da = sds[r0 * kGsLd + c], db = sds[r1 * kGsLd + c];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int d = d0 + cg + 8 * u;
          const float g = sdo[c * ld + d], x = sq[c * ld + d];
          dv0[u] = fmaf(pa, g, dv0[u]);
          dv1[u] = fmaf(pb, g, dv1[u]);
          dk0[u] = fmaf(da, x, dk0[u]);
          dk1[u] = fmaf(db, x, dk1[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int d = d0 + cg + 8 * u;
        sdv[r0 * ld + d] = dv0[u];
        sdv[r1 * ld + d] = dv1[u];
        sdk[r0 * ld + d] = dk0[u];
        sdk[r1 * ld + d] = dk1[u];
      }
    }
  }

  __syncthreads();
  T* dhead = dqkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  for (int i = tid; i < kGTile * HS; i += kThreads) {
    const int rr = i / HS, d = i - rr * HS;
    if (k0 + rr < T_) {
      T* row = dhead + static_cast<size_t>(k0 + rr) * C3;
      row[C + d] = from_f32<T>(sdk[rr * ld + d] * scale);
      row[2 * C + d] = from_f32<T>(sdv[rr * ld + d]);
    }
  }
}

// dQ, one block per (b, head, query tile of 32); thread rows are queries, score columns keys.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dq_generic_kernel(T* __restrict__ dqkv, const T* __restrict__ dout, const T* __restrict__ qkv,
                      const float* __restrict__ lse, const float* __restrict__ dsum, int T_, int NH,
                      int HS, float scale, float scale_log2, float* gbuf) {
  extern __shared__ float g_dq_smem[];
  const int ld = generic_ld(HS), w = ld - 1;
  float* sq = generic_buffer(g_dq_smem, gbuf, generic_dq_floats(HS));
  float* sdo = sq + kGTile * ld;
  float* sdq = sdo + kGTile * ld;
  float* sk = sdq + kGTile * ld;
  float* sv = sk + kGTile * ld;
  float* sds = sv + kGTile * ld;
  float* slse = sds + kGTile * kGsLd;
  float* sd = slse + kGTile;
  const int tid = threadIdx.x;
  const int r0 = 2 * (tid >> 3), r1 = r0 + 1, cg = tid & 7;
  const int bh = blockIdx.x, b = bh / NH, h = bh - b * NH;
  const int ntiles = (T_ + kGTile - 1) / kGTile;
  const int qt = ntiles - 1 - static_cast<int>(blockIdx.y);
  const int q0 = qt * kGTile;
  const int C = NH * HS;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const size_t hoff = static_cast<size_t>(h) * HS;
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  const T* dout_head = dout + static_cast<size_t>(b) * T_ * C + hoff;

  gtile_load(sq, ld, head, C3, q0, T_, HS);
  gtile_load(sdo, ld, dout_head, C, q0, T_, HS);
  for (int i = tid; i < kGTile * ld; i += kThreads) sdq[i] = 0.0f;
  if (tid < 2 * kGTile) {
    const int i = tid & (kGTile - 1);
    const float* src = (tid < kGTile ? lse : dsum) + static_cast<size_t>(bh) * T_;
    (tid < kGTile ? slse : sd)[i] = q0 + i < T_ ? src[q0 + i] : 0.0f;
  }

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kGTile;
    const bool diag = kt == qt;
    __syncthreads();
    gtile_load(sk, ld, head + C, C3, k0, T_, HS);
    gtile_load(sv, ld, head + 2 * C, C3, k0, T_, HS);
    __syncthreads();

    float s0[4] = {}, s1[4] = {}, g0[4] = {}, g1[4] = {};
    for (int d = 0; d < HS; ++d) {
      const float xa = sq[r0 * ld + d], xb = sq[r1 * ld + d];
      const float ga = sdo[r0 * ld + d], gb = sdo[r1 * ld + d];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = cg + 8 * j;
        const float y = sk[c * ld + d], v = sv[c * ld + d];
        s0[j] = fmaf(xa, y, s0[j]);
        s1[j] = fmaf(xb, y, s1[j]);
        g0[j] = fmaf(ga, v, g0[j]);
        g1[j] = fmaf(gb, v, g1[j]);
      }
    }
    const float lse0 = slse[r0] * kLog2e, lse1 = slse[r1] * kLog2e;
    const float d0v = sd[r0], d1v = sd[r1];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = cg + 8 * j;
      const bool vis0 = !diag || c <= r0, vis1 = !diag || c <= r1;
      const float p0 = vis0 ? exp2f(fmaf(s0[j], scale_log2, -lse0)) : 0.0f;
      const float p1 = vis1 ? exp2f(fmaf(s1[j], scale_log2, -lse1)) : 0.0f;
      sds[r0 * kGsLd + c] = vis0 ? p0 * (g0[j] - d0v) : 0.0f;
      sds[r1 * kGsLd + c] = vis1 ? p1 * (g1[j] - d1v) : 0.0f;
    }
    __syncthreads();

    const int cend = diag ? r1 + 1 : kGTile;
    for (int d0 = 0; d0 < w; d0 += 32) {
      float a0[4], a1[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        a0[u] = sdq[r0 * ld + d0 + cg + 8 * u];
        a1[u] = sdq[r1 * ld + d0 + cg + 8 * u];
      }
      for (int c = 0; c < cend; ++c) {
        const float da = sds[r0 * kGsLd + c], db = sds[r1 * kGsLd + c];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const float y = sk[c * ld + d0 + cg + 8 * u];
          a0[u] = fmaf(da, y, a0[u]);
          a1[u] = fmaf(db, y, a1[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        sdq[r0 * ld + d0 + cg + 8 * u] = a0[u];
        sdq[r1 * ld + d0 + cg + 8 * u] = a1[u];
      }
    }
  }

  __syncthreads();
  T* dhead = dqkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  for (int i = tid; i < kGTile * HS; i += kThreads) {
    const int rr = i / HS, d = i - rr * HS;
    if (q0 + rr < T_) {
      dhead[static_cast<size_t>(q0 + rr) * C3 + d] = from_f32<T>(sdq[rr * ld + d] * scale);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Planning (shared by the workspace-size functions and the launchers, so they always agree).

// What the current device allows: opt-in shared memory per block, and whether it runs the
// tensor-core kernels (compute capability 8.0 or newer).
struct DeviceCaps {
  int smem_limit = 48 * 1024;
  bool tc = false;
};

DeviceCaps device_caps() {
  DeviceCaps caps;
  int dev = 0, bytes = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return caps;
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess) {
    caps.smem_limit = bytes;
  }
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess) {
    caps.tc = major >= 8;
  }
  return caps;
}

int tc_width(int HS) { return HS <= 32 ? 32 : HS <= 64 ? 64 : HS <= 96 ? 96 : 128; }

// Largest dynamic shared memory of the tensor-core kernels of one pass at width hsp.
template <template <int> class Layout>
int tc_bytes(int hsp) {
  switch (hsp) {
    case 32:
      return Layout<32>::kBytes;
    case 64:
      return Layout<64>::kBytes;
    case 96:
      return Layout<96>::kBytes;
    default:
      return Layout<128>::kBytes;
  }
}

bool tc_eligible(const DeviceCaps& caps, int dtype, int HS) {
  return caps.tc && dtype != kF32 && HS % 16 == 0 && HS <= 128;
}

struct Plan {
  bool tc = false;        // tensor-core kernels
  bool gbuf = false;      // generic kernels with their tiles in the workspace
  size_t gbuf_bytes = 0;  // that part of the workspace
};

Plan plan_fwd(int dtype, int B, int T, int C, int NH) {
  Plan p;
  const int HS = C / NH;
  const DeviceCaps caps = device_caps();
  const int limit = caps.smem_limit;
  if (tc_eligible(caps, dtype, HS) && tc_bytes<FwdTcLayout>(tc_width(HS)) <= limit) {
    p.tc = true;
    return p;
  }
  const size_t floats = generic_fwd_floats(HS);
  if (floats * sizeof(float) > static_cast<size_t>(limit)) {
    p.gbuf = true;
    const size_t blocks = static_cast<size_t>(B) * NH * ((T + kGTile - 1) / kGTile);
    p.gbuf_bytes = align_workspace(blocks * floats * sizeof(float));
  }
  return p;
}

Plan plan_bwd(int dtype, int B, int T, int C, int NH) {
  Plan p;
  const int HS = C / NH;
  const DeviceCaps caps = device_caps();
  const int limit = caps.smem_limit;
  if (tc_eligible(caps, dtype, HS)) {
    const int hsp = tc_width(HS);
    if (tc_bytes<DkdvTcLayout>(hsp) <= limit && tc_bytes<DqTcLayout>(hsp) <= limit) {
      p.tc = true;
      return p;
    }
  }
  const size_t floats = std::max(generic_dkdv_floats(HS), generic_dq_floats(HS));
  if (generic_dkdv_floats(HS) * sizeof(float) > static_cast<size_t>(limit) ||
      generic_dq_floats(HS) * sizeof(float) > static_cast<size_t>(limit)) {
    // Both kernels then use the workspace (they run one after the other, so they share it).
    p.gbuf = true;
    const size_t blocks = static_cast<size_t>(B) * NH * ((T + kGTile - 1) / kGTile);
    p.gbuf_bytes = align_workspace(blocks * floats * sizeof(float));
  }
  return p;
}

// Checks shared by both launchers; returns false (with *err set) when there is nothing to launch.
bool check_shape(int dtype, int B, int T, int C, int NH, int tile, cudaError_t* err) {
  *err = cudaSuccess;
  if (dtype != kF32 && dtype != kBF16 && dtype != kF16) {
    *err = cudaErrorInvalidValue;
    return false;
  }
  if (B < 0 || T < 0 || C <= 0 || NH <= 0 || C % NH != 0) {
    *err = cudaErrorInvalidValue;
    return false;
  }
  if (B == 0 || T == 0) return false;
  const int64_t heads = static_cast<int64_t>(B) * NH;
  const int64_t tiles = (static_cast<int64_t>(T) + tile - 1) / tile;
  const int64_t tokens = static_cast<int64_t>(B) * T;  // blocks of the D kernel
  if (heads > INT_MAX || tokens > INT_MAX || tiles > 65535) {
    *err = cudaErrorInvalidValue;
    return false;
  }
  return true;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(bytes));
}

// ------------------------------------------------------------------------------------------------
// Launch helpers per storage type.

template <typename T, int HSP>
cudaError_t launch_fwd_tc(T* out, float* lse, const T* qkv, int B, int T_, int NH, int HS,
                          float scale_log2, bool vec, cudaStream_t stream) {
  constexpr int kBytes = FwdTcLayout<HSP>::kBytes;
  const cudaError_t e = allow_smem(fwd_tc_kernel<T, HSP>, kBytes);
  if (e != cudaSuccess) return e;
  const dim3 grid(B * NH, (T_ + kTile - 1) / kTile);
  fwd_tc_kernel<T, HSP>
      <<<grid, kThreads, kBytes, stream>>>(out, lse, qkv, T_, NH, HS, scale_log2, vec);
  return cudaGetLastError();
}

template <typename T, int HSP>
cudaError_t launch_bwd_tc(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* dsum,
                          int B, int T_, int NH, int HS, float scale, float scale_log2, bool vec,
                          cudaStream_t stream) {
  constexpr int kDkdvBytes = DkdvTcLayout<HSP>::kBytes;
  constexpr int kDqBytes = DqTcLayout<HSP>::kBytes;
  cudaError_t e = allow_smem(dkdv_tc_kernel<T, HSP>, kDkdvBytes);
  if (e != cudaSuccess) return e;
  e = allow_smem(dq_tc_kernel<T, HSP>, kDqBytes);
  if (e != cudaSuccess) return e;
  const dim3 grid(B * NH, (T_ + kTile - 1) / kTile);
  dkdv_tc_kernel<T, HSP><<<grid, kThreads, kDkdvBytes, stream>>>(dqkv, dout, qkv, lse, dsum, T_, NH,
                                                                 HS, scale, scale_log2, vec);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  dq_tc_kernel<T, HSP><<<grid, kThreads, kDqBytes, stream>>>(dqkv, dout, qkv, lse, dsum, T_, NH, HS,
                                                             scale, scale_log2, vec);
  return cudaGetLastError();
}

template <typename T>
cudaError_t fwd_typed(void* out_v, float* lse, const void* qkv_v, int B, int T_, int C, int NH,
                      const Plan& plan, void* workspace, cudaStream_t stream) {
  T* out = static_cast<T*>(out_v);
  const T* qkv = static_cast<const T*>(qkv_v);
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const float scale_log2 = scale * kLog2e;
  if constexpr (!std::is_same_v<T, float>) {
    if (plan.tc) {
      const bool vec = aligned16(out) && aligned16(qkv);
      switch (tc_width(HS)) {
        case 32:
          return launch_fwd_tc<T, 32>(out, lse, qkv, B, T_, NH, HS, scale_log2, vec, stream);
        case 64:
          return launch_fwd_tc<T, 64>(out, lse, qkv, B, T_, NH, HS, scale_log2, vec, stream);
        case 96:
          return launch_fwd_tc<T, 96>(out, lse, qkv, B, T_, NH, HS, scale_log2, vec, stream);
        default:
          return launch_fwd_tc<T, 128>(out, lse, qkv, B, T_, NH, HS, scale_log2, vec, stream);
      }
    }
  }
  const size_t bytes = plan.gbuf ? 0 : generic_fwd_floats(HS) * sizeof(float);
  const cudaError_t e = allow_smem(fwd_generic_kernel<T>, bytes);
  if (e != cudaSuccess) return e;
  float* gbuf = plan.gbuf ? static_cast<float*>(workspace) : nullptr;
  const dim3 grid(B * NH, (T_ + kGTile - 1) / kGTile);
  fwd_generic_kernel<T>
      <<<grid, kThreads, bytes, stream>>>(out, lse, qkv, T_, NH, HS, scale_log2, gbuf);
  return cudaGetLastError();
}

template <typename T>
cudaError_t bwd_typed(void* dqkv_v, const void* dout_v, const void* qkv_v, const void* out_v,
                      const float* lse, int B, int T_, int C, int NH, const Plan& plan,
                      void* workspace, cudaStream_t stream) {
  T* dqkv = static_cast<T*>(dqkv_v);
  const T* dout = static_cast<const T*>(dout_v);
  const T* qkv = static_cast<const T*>(qkv_v);
  const T* out = static_cast<const T*>(out_v);
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const float scale_log2 = scale * kLog2e;
  // Workspace: [D (B, NH, T) fp32][generic tiles, if they do not fit in shared memory].
  float* dsum = static_cast<float*>(workspace);
  const size_t dsum_bytes = align_workspace(static_cast<size_t>(B) * NH * T_ * sizeof(float));

  dsum_kernel<T><<<static_cast<unsigned>(static_cast<size_t>(B) * T_), kThreads, 0, stream>>>(
      dsum, dout, out, T_, NH, HS);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  if constexpr (!std::is_same_v<T, float>) {
    if (plan.tc) {
      const bool vec = aligned16(dqkv) && aligned16(dout) && aligned16(qkv);
      switch (tc_width(HS)) {
        case 32:
          return launch_bwd_tc<T, 32>(dqkv, dout, qkv, lse, dsum, B, T_, NH, HS, scale, scale_log2,
                                      vec, stream);
        case 64:
          return launch_bwd_tc<T, 64>(dqkv, dout, qkv, lse, dsum, B, T_, NH, HS, scale, scale_log2,
                                      vec, stream);
        case 96:
          return launch_bwd_tc<T, 96>(dqkv, dout, qkv, lse, dsum, B, T_, NH, HS, scale, scale_log2,
                                      vec, stream);
        default:
          return launch_bwd_tc<T, 128>(dqkv, dout, qkv, lse, dsum, B, T_, NH, HS, scale, scale_log2,
                                       vec, stream);
      }
    }
  }
  float* gbuf =
      plan.gbuf ? reinterpret_cast<float*>(static_cast<char*>(workspace) + dsum_bytes) : nullptr;
  const size_t dkdv_bytes = plan.gbuf ? 0 : generic_dkdv_floats(HS) * sizeof(float);
  const size_t dq_bytes = plan.gbuf ? 0 : generic_dq_floats(HS) * sizeof(float);
  e = allow_smem(dkdv_generic_kernel<T>, dkdv_bytes);
  if (e != cudaSuccess) return e;
  e = allow_smem(dq_generic_kernel<T>, dq_bytes);
  if (e != cudaSuccess) return e;
  const dim3 grid(B * NH, (T_ + kGTile - 1) / kGTile);
  dkdv_generic_kernel<T><<<grid, kThreads, dkdv_bytes, stream>>>(dqkv, dout, qkv, lse, dsum, T_, NH,
                                                                 HS, scale, scale_log2, gbuf);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  dq_generic_kernel<T><<<grid, kThreads, dq_bytes, stream>>>(dqkv, dout, qkv, lse, dsum, T_, NH, HS,
                                                             scale, scale_log2, gbuf);
  return cudaGetLastError();
}

}  // namespace

size_t attention_fwd_workspace_bytes(int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C % NH != 0) return 0;
  // The size may only depend on the dtype through the choice of path; take the largest.
  size_t bytes = 0;
  for (int dtype : {kF32, kBF16, kF16})
    bytes = std::max(bytes, plan_fwd(dtype, B, T, C, NH).gbuf_bytes);
  return bytes;
}

cudaError_t attention_fwd(int dtype, void* out, float* lse, const void* qkv, int B, int T, int C,
                          int NH, void* workspace, cudaStream_t stream) {
  cudaError_t err;
  if (!check_shape(dtype, B, T, C, NH, kGTile, &err)) return err;
  const Plan plan = plan_fwd(dtype, B, T, C, NH);
  switch (dtype) {
    case kF32:
      return fwd_typed<float>(out, lse, qkv, B, T, C, NH, plan, workspace, stream);
    case kBF16:
      return fwd_typed<__nv_bfloat16>(out, lse, qkv, B, T, C, NH, plan, workspace, stream);
    default:
      return fwd_typed<__half>(out, lse, qkv, B, T, C, NH, plan, workspace, stream);
  }
}

size_t attention_bwd_workspace_bytes(int B, int T, int C, int NH) {
  if (B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C % NH != 0) return 0;
  size_t gbuf = 0;
  for (int dtype : {kF32, kBF16, kF16})
    gbuf = std::max(gbuf, plan_bwd(dtype, B, T, C, NH).gbuf_bytes);
  return align_workspace(static_cast<size_t>(B) * NH * T * sizeof(float)) + gbuf;
}

cudaError_t attention_bwd(int dtype, void* dqkv, const void* dout, const void* qkv, const void* out,
                          const float* lse, int B, int T, int C, int NH, void* workspace,
                          cudaStream_t stream) {
  cudaError_t err;
  if (!check_shape(dtype, B, T, C, NH, kGTile, &err)) return err;
  const Plan plan = plan_bwd(dtype, B, T, C, NH);
  switch (dtype) {
    case kF32:
      return bwd_typed<float>(dqkv, dout, qkv, out, lse, B, T, C, NH, plan, workspace, stream);
    case kBF16:
      return bwd_typed<__nv_bfloat16>(dqkv, dout, qkv, out, lse, B, T, C, NH, plan, workspace,
                                      stream);
    default:
      return bwd_typed<__half>(dqkv, dout, qkv, out, lse, B, T, C, NH, plan, workspace, stream);
  }
}

}  // namespace zt::kernels::cuda
