// LayerNorm over the last dimension, biased variance.
//   layernorm_fwd: inp (N,C), weight/bias (C) -> out (N,C) (=), mean/rstd (N) fp32 (=)
//   layernorm_bwd: dout (N,C) -> dinp (N,C) +=, dweight (C) +=, dbias (C) +=
//
// Note [deterministic LayerNorm parameter gradients]: rows are cut into fixed chunks of
// kRowsPerChunk; each chunk writes its fp32 partial dweight/dbias into its own scratch slot, and
// the slots are summed in chunk order afterwards. The chunking depends only on N, so the result is
// bit-identical for any thread count or schedule.
#include "kernels/layernorm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {
namespace {

constexpr int kRowsPerChunk = 32;

int num_chunks(int N) { return (N + kRowsPerChunk - 1) / kRowsPerChunk; }

}  // namespace

template <typename T>
void layernorm_fwd(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
                   int N, int C, float eps) {
  const float inv_c = 1.0f / static_cast<float>(C);
  const bool parallel = static_cast<size_t>(N) * C >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int n = 0; n < N; ++n) {
    const T* x = inp + static_cast<int64_t>(n) * C;
    T* o = out + static_cast<int64_t>(n) * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; ++c) sum += to_f32(x[c]);
    const float m0 = sum * inv_c;
    // Corrected two-pass algorithm (Chan, Golub, LeVeque): the second pass also sums the residuals
    // x - m0, which carry the rounding error of the first sum (large when the rows share an offset)
    // and correct both the mean and the variance.
    float sum_d = 0.0f;
    float sum_d2 = 0.0f;
#pragma omp simd reduction(+ : sum_d, sum_d2)
    for (int c = 0; c < C; ++c) {
      const float d = to_f32(x[c]) - m0;
      sum_d += d;
      sum_d2 += d * d;
    }
    const float m = m0 + sum_d * inv_c;
    const float var = std::max(0.0f, (sum_d2 - sum_d * sum_d * inv_c) * inv_c);
    const float s = 1.0f / std::sqrt(var + eps);
#pragma omp simd
    for (int c = 0; c < C; ++c) {
      o[c] = detail::store<T>((to_f32(x[c]) - m) * s * to_f32(weight[c]) + to_f32(bias[c]));
    }
    if (mean != nullptr) mean[n] = m;
    if (rstd != nullptr) rstd[n] = s;
  }
}

size_t layernorm_bwd_scratch_bytes(int N, int C) {
  return static_cast<size_t>(num_chunks(N)) * 2 * static_cast<size_t>(C) * sizeof(float);
}

template <typename T>
void layernorm_bwd(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                   const float* mean, const float* rstd, int N, int C, void* scratch) {
  if (N <= 0) return;
  const int chunks = num_chunks(N);
  float* partials = static_cast<float*>(scratch);  // chunk k: dweight at [2kC, 2kC+C), dbias after
  const float inv_c = 1.0f / static_cast<float>(C);

  const bool parallel = static_cast<size_t>(N) * C >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int k = 0; k < chunks; ++k) {
    float* dw = partials + static_cast<size_t>(k) * 2 * C;
    float* db = dw + C;
    std::fill(dw, dw + 2 * C, 0.0f);
    const int n_end = std::min(N, (k + 1) * kRowsPerChunk);
    for (int n = k * kRowsPerChunk; n < n_end; ++n) {
      const T* x = inp + static_cast<int64_t>(n) * C;
      const T* g = dout + static_cast<int64_t>(n) * C;
      T* dx = dinp + static_cast<int64_t>(n) * C;
      const float m = mean[n];
      const float s = rstd[n];
      float sum_dn = 0.0f;
      float sum_dn_norm = 0.0f;
#pragma omp simd reduction(+ : sum_dn, sum_dn_norm)
      for (int c = 0; c < C; ++c) {
        const float norm = (to_f32(x[c]) - m) * s;
        const float gc = to_f32(g[c]);
        const float dn = to_f32(weight[c]) * gc;
        sum_dn += dn;
        sum_dn_norm += dn * norm;
        dw[c] += gc * norm;
        db[c] += gc;
      }
      const float mean_dn = sum_dn * inv_c;
      const float mean_dn_norm = sum_dn_norm * inv_c;
#pragma omp simd
      for (int c = 0; c < C; ++c) {
        const float norm = (to_f32(x[c]) - m) * s;
        const float dn = to_f32(weight[c]) * to_f32(g[c]);
        const float v = (dn - mean_dn - norm * mean_dn_norm) * s;
        dx[c] = detail::store<T>(to_f32(dx[c]) + v);
      }
    }
  }

  // Fold the partials into slot 0 in chunk order (serial: 2*C*chunks adds, microseconds).
  float* acc = partials;
  for (int k = 1; k < chunks; ++k) {
    const float* p = partials + static_cast<size_t>(k) * 2 * C;
#pragma omp simd
    for (int j = 0; j < 2 * C; ++j) acc[j] += p[j];
  }
#pragma omp simd
  for (int c = 0; c < C; ++c) {
    dweight[c] = detail::store<T>(to_f32(dweight[c]) + acc[c]);
    dbias[c] = detail::store<T>(to_f32(dbias[c]) + acc[C + c]);
  }
}

#define ZT_INSTANTIATE_LAYERNORM(T)                                                          \
  template void layernorm_fwd<T>(T*, float*, float*, const T*, const T*, const T*, int, int, \
                                 float);                                                     \
  template void layernorm_bwd<T>(T*, T*, T*, const T*, const T*, const T*, const float*,     \
                                 const float*, int, int, void*);
ZT_INSTANTIATE_LAYERNORM(float)
ZT_INSTANTIATE_LAYERNORM(bf16)
ZT_INSTANTIATE_LAYERNORM(fp16)
#undef ZT_INSTANTIATE_LAYERNORM

}  // namespace zt::kernels::cpu
