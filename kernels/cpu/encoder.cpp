// Token + position embedding.
//   encoder_fwd: tokens (B,T), wte (V,C), wpe (maxT,C) -> out (B,T,C) = wte[tok] + wpe[t]   (=)
//   encoder_bwd: dout (B,T,C) -> dwte (V,C) +=, dwpe rows 0..T-1 of (maxT,C) +=
//
// Note [deterministic embedding backward]: positions are grouped by token with a stable counting
// sort (scratch), then every (token, column) sum is formed by one thread, in fp32, in ascending
// position order, and added to dwte once. Nothing depends on the thread count and no two threads
// write the same row, so there are no atomics and no races. dwpe sums over b in order the same way.
#include "kernels/encoder.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {
namespace {

// Columns per accumulator block: 64 fp32 lanes live in registers while a token's rows stream by.
constexpr int kColBlock = 64;

}  // namespace

template <typename T>
void encoder_fwd(T* out, const int32_t* tokens, const T* wte, const T* wpe, int B, int T_, int C) {
  const int64_t rows = static_cast<int64_t>(B) * T_;
  const bool parallel = static_cast<size_t>(rows) * C >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const T* we = wte + static_cast<int64_t>(tokens[r]) * C;
    const T* pe = wpe + (r % T_) * C;
    T* o = out + r * C;
#pragma omp simd
    for (int c = 0; c < C; ++c) o[c] = detail::store<T>(to_f32(we[c]) + to_f32(pe[c]));
  }
}

size_t encoder_bwd_scratch_bytes(int B, int T_, int C, int V) {
  // end[V] (bucket ends after the sort), order[B*T] (positions by token), uniq[min(V, B*T)].
  const size_t bt = static_cast<size_t>(B) * T_;
  return (static_cast<size_t>(V) + bt + std::min(static_cast<size_t>(V), bt)) * sizeof(int32_t);
}

template <typename T>
void encoder_bwd(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int B, int T_, int C,
                 int V, void* scratch) {
  const int32_t bt = B * T_;
  int32_t* end = static_cast<int32_t*>(scratch);
  int32_t* order = end + V;
  int32_t* uniq = order + bt;

  // Stable counting sort of positions by token; serial, O(B*T + V), small next to the sums.
  std::memset(end, 0, sizeof(int32_t) * static_cast<size_t>(V));
  for (int32_t p = 0; p < bt; ++p) ++end[tokens[p]];
  int32_t n_uniq = 0;
  int32_t start = 0;
  for (int32_t v = 0; v < V; ++v) {
    const int32_t count = end[v];
    if (count > 0) uniq[n_uniq++] = v;
    end[v] = start;  // becomes the bucket's write cursor, and its end after the fill below
    start += count;
  }
  for (int32_t p = 0; p < bt; ++p) order[end[tokens[p]]++] = p;

  const size_t work = static_cast<size_t>(bt) * C;
#pragma omp parallel for schedule(static) if (work >= detail::kMinParallel)
  for (int32_t u = 0; u < n_uniq; ++u) {
    const int32_t v = uniq[u];
    const int32_t first = v == 0 ? 0 : end[v - 1];
    const int32_t last = end[v];
    T* dw = dwte + static_cast<int64_t>(v) * C;
    for (int c0 = 0; c0 < C; c0 += kColBlock) {
      const int cw = std::min(kColBlock, C - c0);
      float acc[kColBlock] = {};
      for (int32_t k = first; k < last; ++k) {
        const T* d = dout + static_cast<int64_t>(order[k]) * C + c0;
#pragma omp simd
        for (int j = 0; j < cw; ++j) acc[j] += to_f32(d[j]);
      }
#pragma omp simd
      for (int j = 0; j < cw; ++j) dw[c0 + j] = detail::store<T>(to_f32(dw[c0 + j]) + acc[j]);
    }
  }

#pragma omp parallel for schedule(static) if (work >= detail::kMinParallel)
  for (int t = 0; t < T_; ++t) {
    T* dp = dwpe + static_cast<int64_t>(t) * C;
    for (int c0 = 0; c0 < C; c0 += kColBlock) {
      const int cw = std::min(kColBlock, C - c0);
      float acc[kColBlock] = {};
      for (int b = 0; b < B; ++b) {
        const T* d = dout + (static_cast<int64_t>(b) * T_ + t) * C + c0;
#pragma omp simd
        for (int j = 0; j < cw; ++j) acc[j] += to_f32(d[j]);
      }
#pragma omp simd
      for (int j = 0; j < cw; ++j) dp[c0 + j] = detail::store<T>(to_f32(dp[c0 + j]) + acc[j]);
    }
  }
}

#define ZT_INSTANTIATE_ENCODER(T)                                                      \
  template void encoder_fwd<T>(T*, const int32_t*, const T*, const T*, int, int, int); \
  template void encoder_bwd<T>(T*, T*, const T*, const int32_t*, int, int, int, int, void*);
ZT_INSTANTIATE_ENCODER(float)
ZT_INSTANTIATE_ENCODER(bf16)
ZT_INSTANTIATE_ENCODER(fp16)
#undef ZT_INSTANTIATE_ENCODER

}  // namespace zt::kernels::cpu
