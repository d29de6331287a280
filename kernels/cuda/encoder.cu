// CUDA twin of kernels/cpu/encoder.cpp (contract: encoder.cuh): token + position embedding.
//
// encoder_fwd: one grid-stride loop over the (B*T) x C output, 16 bytes per thread and step when
// out, wte and wpe are 16-byte aligned and C is a multiple of the vector width, scalar otherwise.
//
// encoder_bwd (deterministic, no float atomics):
//  1. Sort the positions 0..B*T-1 by token with a stable LSD radix sort (8-bit digits, as many
//     passes as V needs: 2 for GPT-2's 50257). Each pass is a counting sort over tiles of 1024
//     positions: per-tile digit histograms (integer shared-memory atomics: counts are exact),
//     one exclusive scan over (digit, tile) in digit-major order, and a stable scatter whose
//     in-tile ranks come from __match_any_sync within each warp and a per-digit prefix over the
//     warps. Stability makes each token's positions come out in ascending order, and the whole
//     permutation is a function of the tokens alone.
//  2. dwte: the sorted list is cut into fixed windows of kSegment entries; one block per window,
//     threads over the C columns (16-byte column groups where aligned). A window sums each of its
//     runs of equal tokens in fp32 in ascending position order. A run lying inside one window is
//     added to dwte right there; a run crossing window boundaries leaves one fp32 partial per
//     window in the workspace, and a second kernel (one block per window where such a run
//     starts) adds those partials in window order and adds the total to dwte once. So a
//     (token, column) sum is: ascending position order within each window, windows in ascending
//     order; it is bit-reproducible, and a frequent token (GPT-2's "the", "," or <|endoftext|>
//     appear thousands of times per batch) is spread over many blocks instead of serialising one.
//     No two blocks touch the same dwte row, so the 16-bit += needs no atomics.
//  3. dwpe: one thread per (t, column group) sums dout[b, t] over b in ascending order and adds
//     once.
#include <algorithm>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/encoder.cuh"

namespace zt::kernels::cuda {
namespace {

using detail::kVecN;
using detail::kWarpSize;

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = size_t{1} << 16;

// Radix sort: positions per tile (= threads per block, one position each), digit width.
constexpr int kSortTile = 1024;
constexpr int kRadixBits = 8;
constexpr int kBins = 1 << kRadixBits;
constexpr int kSortWarps = kSortTile / kWarpSize;

// Sorted entries per summation window.
constexpr int kSegment = 32;

int sort_tiles(int n) { return (n + kSortTile - 1) / kSortTile; }
int windows(int n) { return (n + kSegment - 1) / kSegment; }
int radix_passes(int V) {
  int bits = 0;
  while (bits < 31 && ((static_cast<uint32_t>(V) - 1u) >> bits) != 0) ++bits;
  return std::max(1, (bits + kRadixBits - 1) / kRadixBits);
}

// Workspace layout (each part 256-byte aligned): hist (kBins x tiles int32), keys[2] and vals[2]
// (ping-pong buffers of n int32 for the sort), slot_first and slot_last (windows x C fp32: the
// partial of the run a window continues, and of the run a window starts but does not finish).
struct Workspace {
  int* hist;
  int32_t* keys[2];
  int32_t* vals[2];
  float* slot_first;
  float* slot_last;
};

size_t workspace_layout(int n, int C, void* base, Workspace* ws) {
  const size_t hist = align_workspace(sizeof(int) * kBins * static_cast<size_t>(sort_tiles(n)));
  const size_t ints = align_workspace(sizeof(int32_t) * static_cast<size_t>(n));
  const size_t slots = align_workspace(sizeof(float) * static_cast<size_t>(windows(n)) * C);
  if (ws != nullptr) {
    char* p = static_cast<char*>(base);
    ws->hist = reinterpret_cast<int*>(p);
    p += hist;
    for (int i = 0; i < 2; ++i) {
      ws->keys[i] = reinterpret_cast<int32_t*>(p);
      p += ints;
      ws->vals[i] = reinterpret_cast<int32_t*>(p);
      p += ints;
    }
    ws->slot_first = reinterpret_cast<float*>(p);
    p += slots;
    ws->slot_last = reinterpret_cast<float*>(p);
  }
  return hist + 4 * ints + 2 * slots;
}

// ---- forward ----

template <typename T, int kN>
__global__ void __launch_bounds__(kThreads)
    encoder_fwd_kernel(T* out, const int32_t* tokens, const T* wte, const T* wpe, int T_, int C,
                       size_t total_groups) {
  const size_t groups = static_cast<size_t>(C / kN);  // column groups per row
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total_groups;
       i += stride) {
    const size_t row = i / groups;
    const size_t col = (i - row * groups) * kN;
    const size_t t = row % static_cast<size_t>(T_);
    float a[kN], b[kN];
    detail::load_n<T, kN>(wte + static_cast<size_t>(tokens[row]) * C + col, a);
    detail::load_n<T, kN>(wpe + t * C + col, b);
#pragma unroll
    for (int e = 0; e < kN; ++e) a[e] += b[e];
    detail::store_n<T, kN>(out + row * C + col, a);
  }
}

// ---- backward: radix sort of positions by token ----

// keys: the tokens for the first pass (vals == null: the values are the positions themselves).
__global__ void __launch_bounds__(kSortTile)
    radix_hist_kernel(const int32_t* keys, int n, int shift, int tiles, int* hist) {
  __shared__ int counts[kBins];
  for (int d = threadIdx.x; d < kBins; d += blockDim.x) counts[d] = 0;
  __syncthreads();
  const int i = blockIdx.x * kSortTile + threadIdx.x;
  if (i < n) atomicAdd(&counts[(keys[i] >> shift) & (kBins - 1)], 1);
  __syncthreads();
  for (int d = threadIdx.x; d < kBins; d += blockDim.x) hist[d * tiles + blockIdx.x] = counts[d];
}

// data[0..m) = exclusive prefix sums of data, in place; one block of kSortTile threads, each
// owning a contiguous run of elements.
__global__ void __launch_bounds__(kSortTile) exclusive_scan_kernel(int* data, int m) {
  __shared__ int warp_prefix[kSortWarps];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int per = (m + kSortTile - 1) / kSortTile;
  const int begin = min(m, static_cast<int>(threadIdx.x) * per);
  const int end = min(m, begin + per);
  int local = 0;
  for (int i = begin; i < end; ++i) local += data[i];
  int incl = local;  // inclusive scan over the warp
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset <<= 1) {
    const int y = __shfl_up_sync(detail::kFullMask, incl, offset);
    if (lane >= offset) incl += y;
  }
  if (lane == kWarpSize - 1) warp_prefix[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int total = warp_prefix[lane];  // kSortWarps == kWarpSize
    int w_incl = total;
#pragma unroll
    for (int offset = 1; offset < kWarpSize; offset <<= 1) {
      const int y = __shfl_up_sync(detail::kFullMask, w_incl, offset);
      if (lane >= offset) w_incl += y;
    }
    warp_prefix[lane] = w_incl - total;
  }
  __syncthreads();
  int run = warp_prefix[warp] + incl - local;
  for (int i = begin; i < end; ++i) {
    const int c = data[i];
    data[i] = run;
    run += c;
  }
}

// Stable scatter of one pass: element i of tile g with digit d goes to
// offsets[d * tiles + g] + (elements of digit d in earlier warps of the tile) + (in earlier lanes).
__global__ void __launch_bounds__(kSortTile)
    radix_scatter_kernel(const int32_t* keys_in, const int32_t* vals_in, int n, int shift,
                         int tiles, const int* offsets, int32_t* keys_out, int32_t* vals_out) {
  __shared__ int warp_counts[kSortWarps][kBins];  // 32 KiB
  int* flat = &warp_counts[0][0];
  for (int k = threadIdx.x; k < kSortWarps * kBins; k += blockDim.x) flat[k] = 0;
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int i = blockIdx.x * kSortTile + threadIdx.x;
  const bool valid = i < n;
  const int32_t key = valid ? keys_in[i] : 0;
  const int digit = valid ? (key >> shift) & (kBins - 1) : kBins;  // kBins: a group of its own
  const unsigned peers = __match_any_sync(detail::kFullMask, digit);
  const int rank = __popc(peers & ((1u << lane) - 1u));
  if (valid && rank == 0) warp_counts[warp][digit] = __popc(peers);
  __syncthreads();
  for (int d = threadIdx.x; d < kBins; d += blockDim.x) {  // exclusive prefix over the warps
    int run = 0;
    for (int w = 0; w < kSortWarps; ++w) {
      const int c = warp_counts[w][d];
      warp_counts[w][d] = run;
      run += c;
    }
  }
  __syncthreads();
  if (valid) {
    const int dst = offsets[digit * tiles + blockIdx.x] + warp_counts[warp][digit] + rank;
    keys_out[dst] = key;
    vals_out[dst] = vals_in != nullptr ? vals_in[i] : i;
  }
}

// ---- backward: sums ----

// One block per window of kSegment sorted entries; threads over column groups of kN columns.
template <typename T, int kN>
__global__ void __launch_bounds__(kThreads)
    encoder_bwd_window_kernel(T* dwte, float* slot_first, float* slot_last, const T* dout,
                              const int32_t* keys, const int32_t* pos, int n, int C) {
  __shared__ int32_t s_key[kSegment];
  __shared__ int32_t s_pos[kSegment];
  __shared__ int32_t s_prev, s_next;  // key before / after the window, -1 at either end
  const int w = blockIdx.x;
  const int begin = w * kSegment;
  const int len = min(kSegment, n - begin);
  for (int k = threadIdx.x; k < len; k += blockDim.x) {
    s_key[k] = keys[begin + k];
    s_pos[k] = pos[begin + k];
  }
  if (threadIdx.x == 0) {
    s_prev = begin > 0 ? keys[begin - 1] : -1;
    s_next = begin + len < n ? keys[begin + len] : -1;
  }
  __syncthreads();
  const int groups = C / kN;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    const size_t col = static_cast<size_t>(g) * kN;
    for (int a = 0; a < len;) {
      const int32_t v = s_key[a];
      int b = a + 1;
      while (b < len && s_key[b] == v) ++b;
      float acc[kN] = {};
#pragma unroll 4
      for (int j = a; j < b; ++j) {
        float x[kN];
        detail::load_n<T, kN>(dout + static_cast<size_t>(s_pos[j]) * C + col, x);
#pragma unroll
        for (int e = 0; e < kN; ++e) acc[e] += x[e];
      }
      const bool starts_here = a > 0 || s_prev != v;
      const bool ends_here = b < len || s_next != v;
      if (starts_here && ends_here) {
        detail::add_n<T, kN>(dwte + static_cast<size_t>(v) * C + col, acc);
      } else if (!starts_here) {  // continues a run from an earlier window: the window's first run
        detail::store_f32_n<kN>(slot_first + static_cast<size_t>(w) * C + col, acc);
      } else {  // starts a run that continues: the window's last run
        detail::store_f32_n<kN>(slot_last + static_cast<size_t>(w) * C + col, acc);
      }
      a = b;
    }
  }
}

// One block per window; works only where the window's last run starts in it and continues:
// dwte[v] += slot_last[w] + slot_first[w + 1] + ... (in window order, up to the run's end).
template <typename T, int kN>
__global__ void __launch_bounds__(kThreads)
    encoder_bwd_carry_kernel(T* dwte, const float* slot_first, const float* slot_last,
                             const int32_t* keys, int n, int C) {
  const int w = blockIdx.x;
  const int begin = w * kSegment;
  const int end = min(n, begin + kSegment);
  const int32_t v = keys[end - 1];
  const bool continues = end < n && keys[end] == v;
  const bool started_before = begin > 0 && keys[begin - 1] == v;
  if (!continues || started_before) return;  // uniform over the block; no barrier follows
  int last = w + 1;                          // the window where the run ends
  while (true) {
    const int e = min(n, (last + 1) * kSegment);
    if (e == n || keys[e] != v) break;
    ++last;
  }
  const int groups = C / kN;
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    const size_t col = static_cast<size_t>(g) * kN;
    float acc[kN] = {};
    detail::add_f32_n<kN>(slot_last + static_cast<size_t>(w) * C + col, acc);
#pragma unroll 4
    for (int w2 = w + 1; w2 <= last; ++w2) {
      detail::add_f32_n<kN>(slot_first + static_cast<size_t>(w2) * C + col, acc);
    }
    detail::add_n<T, kN>(dwte + static_cast<size_t>(v) * C + col, acc);
  }
}

// dwpe[t, :] += sum over b (ascending) of dout[b, t, :]; one thread per (t, column group).
template <typename T, int kN>
__global__ void __launch_bounds__(kThreads)
    encoder_bwd_wpe_kernel(T* dwpe, const T* dout, int B, int T_, int C) {
  const size_t groups = static_cast<size_t>(C / kN);
  const size_t total = static_cast<size_t>(T_) * groups;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += stride) {
    const size_t t = i / groups;
    const size_t col = (i - t * groups) * kN;
    float acc[kN] = {};
#pragma unroll 4
    for (int b = 0; b < B; ++b) {
      float x[kN];
      detail::load_n<T, kN>(dout + (static_cast<size_t>(b) * T_ + t) * C + col, x);
#pragma unroll
      for (int e = 0; e < kN; ++e) acc[e] += x[e];
    }
    detail::add_n<T, kN>(dwpe + t * C + col, acc);
  }
}

template <typename T, int kN>
cudaError_t launch_bwd_sums(T* dwte, T* dwpe, const T* dout, const Workspace& ws,
                            const int32_t* keys, const int32_t* pos, int B, int T_, int C,
                            cudaStream_t stream) {
  const int n = B * T_;
  const int groups = C / kN;
  const int threads = std::min(kThreads, detail::round_up_warp(groups));
  encoder_bwd_window_kernel<T, kN><<<windows(n), threads, 0, stream>>>(
      dwte, ws.slot_first, ws.slot_last, dout, keys, pos, n, C);
  encoder_bwd_carry_kernel<T, kN>
      <<<windows(n), threads, 0, stream>>>(dwte, ws.slot_first, ws.slot_last, keys, n, C);
  const size_t wpe_work = static_cast<size_t>(T_) * groups;
  encoder_bwd_wpe_kernel<T, kN>
      <<<detail::grid_blocks(wpe_work, kThreads, kMaxBlocks), kThreads, 0, stream>>>(dwpe, dout, B,
                                                                                     T_, C);
  return cudaGetLastError();
}

bool valid_sizes(int B, int T_, int C) {
  return B >= 0 && T_ >= 0 && C >= 0 &&
         static_cast<int64_t>(B) * T_ <= static_cast<int64_t>(INT32_MAX) - kSortTile;
}

}  // namespace

cudaError_t encoder_fwd(int dtype, void* out, const int32_t* tokens, const void* wte,
                        const void* wpe, int B, int T, int C, cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using Ty = typename decltype(tag)::type;
    if (!valid_sizes(B, T, C)) return cudaErrorInvalidValue;
    const size_t rows = static_cast<size_t>(B) * T;
    if (rows == 0 || C == 0) return cudaSuccess;
    constexpr int kN = kVecN<Ty>;
    const bool vec =
        C % kN == 0 && detail::aligned16(out) && detail::aligned16(wte) && detail::aligned16(wpe);
    auto* o = static_cast<Ty*>(out);
    const auto* te = static_cast<const Ty*>(wte);
    const auto* pe = static_cast<const Ty*>(wpe);
    if (vec) {
      const size_t total = rows * static_cast<size_t>(C / kN);
      encoder_fwd_kernel<Ty, kN>
          <<<detail::grid_blocks(total, kThreads, kMaxBlocks), kThreads, 0, stream>>>(
              o, tokens, te, pe, T, C, total);
    } else {
      const size_t total = rows * static_cast<size_t>(C);
      encoder_fwd_kernel<Ty, 1>
          <<<detail::grid_blocks(total, kThreads, kMaxBlocks), kThreads, 0, stream>>>(
              o, tokens, te, pe, T, C, total);
    }
    return cudaGetLastError();
  });
}

size_t encoder_bwd_workspace_bytes(int B, int T, int C, int V) {
  (void)V;
  if (!valid_sizes(B, T, C)) return 0;
  return workspace_layout(B * T, C, nullptr, nullptr);
}

cudaError_t encoder_bwd(int dtype, void* dwte, void* dwpe, const void* dout, const int32_t* tokens,
                        int B, int T, int C, int V, void* workspace, cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using Ty = typename decltype(tag)::type;
    if (!valid_sizes(B, T, C) || V < 0) return cudaErrorInvalidValue;
    const int n = B * T;
    if (n == 0 || C == 0) return cudaSuccess;
    if (V == 0) return cudaErrorInvalidValue;  // n > 0 tokens cannot lie in [0, 0)
    Workspace ws;
    workspace_layout(n, C, workspace, &ws);

    // 1. Stable LSD radix sort of the positions by token.
    const int tiles = sort_tiles(n);
    const int32_t* keys = tokens;
    const int32_t* vals = nullptr;  // null: the positions themselves
    const int passes = radix_passes(V);
    for (int p = 0; p < passes; ++p) {
      const int shift = p * kRadixBits;
      radix_hist_kernel<<<tiles, kSortTile, 0, stream>>>(keys, n, shift, tiles, ws.hist);
      exclusive_scan_kernel<<<1, kSortTile, 0, stream>>>(ws.hist, kBins * tiles);
      radix_scatter_kernel<<<tiles, kSortTile, 0, stream>>>(keys, vals, n, shift, tiles, ws.hist,
                                                            ws.keys[p & 1], ws.vals[p & 1]);
      keys = ws.keys[p & 1];
      vals = ws.vals[p & 1];
    }

    // 2-3. The sums.
    constexpr int kN = kVecN<Ty>;
    auto* te = static_cast<Ty*>(dwte);
    auto* pe = static_cast<Ty*>(dwpe);
    const auto* d = static_cast<const Ty*>(dout);
    const bool vec = C % kN == 0 && detail::aligned16(dwte) && detail::aligned16(dwpe) &&
                     detail::aligned16(dout);
    if (vec) return launch_bwd_sums<Ty, kN>(te, pe, d, ws, keys, vals, B, T, C, stream);
    return launch_bwd_sums<Ty, 1>(te, pe, d, ws, keys, vals, B, T, C, stream);
  });
}

}  // namespace zt::kernels::cuda
