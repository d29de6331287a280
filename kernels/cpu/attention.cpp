// CPU causal self-attention (see kernels/attention.h), flash-attention style with fp32 arithmetic.
//
// Note [attention tiling on CPU]
// Work is cut into tiles of kAttentionTile query rows and kAttentionTile key rows. Query and key
// tiles start at the same multiples of the tile size, so a key tile is either entirely in the past
// of a query tile, or it is the diagonal tile, where query row i may see key rows 0..i. Loops run
// exactly to each row's causal limit, so masked scores are never computed (no -inf sentinels).
// Inputs of one tile are widened to fp32 into per-thread scratch, K (and in the backward V)
// transposed so that the innermost loop is a contiguous, non-reducing axpy that the compiler
// vectorises without -ffast-math (fp32 sum reductions are not reassociated by the compiler, so the
// few we need are written with kLanes explicit partial sums, combined in a fixed order).
//
// Note [attention determinism]
// Forward: one task per (b, head, query tile); backward: one task per (b, head). A task writes
// only its own outputs and accumulates in a fixed order in its own thread's scratch, so results
// are bitwise independent of the thread count and of the schedule.
#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "kernels/half.h"

namespace zt::kernels::cpu {
namespace {

constexpr int kTile = kAttentionTile;
constexpr int kLanes = 16;  // partial sums per reduction: one 512-bit register of fp32

// Buffers are padded to whole 64-byte lines so that each starts line-aligned when the scratch does.
constexpr size_t padded(size_t n_floats) { return (n_floats + 15) / 16 * 16; }

// Carves consecutive fp32 buffers out of one region; the same sequence of take() calls, run on a
// null base, gives the region's size, so the size functions and the kernels cannot disagree.
class Carver {
 public:
  explicit Carver(float* base) : p_(base) {}
  float* take(size_t n_floats) {
    float* r = p_ ? p_ + used_ : nullptr;
    used_ += padded(n_floats);
    return r;
  }
  size_t used() const { return used_; }

 private:
  float* p_;
  size_t used_ = 0;
};

struct FwdBuffers {
  float* q;   // (kTile, HS) queries of the tile, pre-multiplied by the score scale
  float* kt;  // (HS, kTile) keys of the current key tile, transposed
  float* v;   // (kTile, HS) values of the current key tile
  float* o;   // (kTile, HS) unnormalised output accumulator
  float* s;   // (kTile) scores / probabilities of one query row
  float* m;   // (kTile) running max of each row
  float* l;   // (kTile) running sum of exp(score - max) of each row
};

FwdBuffers carve_fwd(Carver& c, int HS) {
  FwdBuffers f;
  f.q = c.take(static_cast<size_t>(kTile) * HS);
  f.kt = c.take(static_cast<size_t>(kTile) * HS);
  f.v = c.take(static_cast<size_t>(kTile) * HS);
  f.o = c.take(static_cast<size_t>(kTile) * HS);
  f.s = c.take(kTile);
  f.m = c.take(kTile);
  f.l = c.take(kTile);
  return f;
}

struct BwdBuffers {
  float* q;     // (T, HS) queries of the head, pre-multiplied by the score scale
  float* dout;  // (T, HS) output gradient of the head
  float* dq;    // (T, HS) query-gradient accumulator (unscaled)
  float* dd;    // (T) D_i = rowsum(dout_i * out_i)
  float* k;     // (kTile, HS) keys of the current key tile
  float* kt;    // (HS, kTile) the same, transposed
  float* vt;    // (HS, kTile) values of the current key tile, transposed
  float* dk;    // (kTile, HS) key-gradient accumulator
  float* dv;    // (kTile, HS) value-gradient accumulator
  float* p;     // (kTile) probabilities of one query row
  float* ds;    // (kTile) dP, then dS, of one query row
};

BwdBuffers carve_bwd(Carver& c, int T, int HS) {
  BwdBuffers w;
  const size_t th = static_cast<size_t>(T) * HS;
  const size_t kh = static_cast<size_t>(kTile) * HS;
  w.q = c.take(th);
  w.dout = c.take(th);
  w.dq = c.take(th);
  w.dd = c.take(T);
  w.k = c.take(kh);
  w.kt = c.take(kh);
  w.vt = c.take(kh);
  w.dk = c.take(kh);
  w.dv = c.take(kh);
  w.p = c.take(kTile);
  w.ds = c.take(kTile);
  return w;
}

size_t fwd_thread_floats(int HS) {
  Carver c(nullptr);
  carve_fwd(c, HS);
  return c.used();
}

size_t bwd_thread_floats(int T, int HS) {
  Carver c(nullptr);
  carve_bwd(c, T, HS);
  return c.used();
}

// exp(x) for the softmax, written so that loops over it vectorise (libm's expf does not without
// -ffast-math, and would then dominate the tile). Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2,
// degree-6 Taylor polynomial for e^r (truncation error < 2e-7 relative), 2^n built from its bits.
// Inputs below -87 (including -inf) give 0: softmax arguments are <= 0, so this only flushes
// probabilities under 1.6e-38.
inline float exp_f32(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (xc * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float two_n = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x < -87.0f ? 0.0f : p * two_n;
}

inline float row_max(const float* x, int n) {
  float lanes[kLanes];
  for (int u = 0; u < kLanes; ++u) lanes[u] = -INFINITY;
  int j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int u = 0; u < kLanes; ++u) lanes[u] = std::max(lanes[u], x[j + u]);
  }
  float m = -INFINITY;
  for (int u = 0; u < kLanes; ++u) m = std::max(m, lanes[u]);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// x[j] = exp(x[j] - shift) for j < n; returns their sum (fixed-order partial sums).
inline float exp_shift_sum(float* x, float shift, int n) {
  float lanes[kLanes] = {};
  int j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int u = 0; u < kLanes; ++u) {
      x[j + u] = exp_f32(x[j + u] - shift);
      lanes[u] += x[j + u];
    }
  }
  float s = 0.0f;
  for (; j < n; ++j) {
    x[j] = exp_f32(x[j] - shift);
    s += x[j];
  }
  for (int u = 0; u < kLanes; ++u) s += lanes[u];
  return s;
}

// s[j] = sum_d q[d] * kt[d*kTile + j] for j < n: the d-outer order keeps the inner loop an axpy.
inline void row_times_tile_t(float* __restrict s, const float* __restrict q,
                             const float* __restrict kt, int HS, int n) {
  for (int j = 0; j < n; ++j) s[j] = 0.0f;
  for (int d = 0; d < HS; ++d) {
    const float qd = q[d];
    const float* __restrict kr = kt + static_cast<size_t>(d) * kTile;
    for (int j = 0; j < n; ++j) s[j] += qd * kr[j];
  }
}

// y[d] += a * x[d] for d < HS.
inline void axpy(float* __restrict y, float a, const float* __restrict x, int HS) {
  for (int d = 0; d < HS; ++d) y[d] += a * x[d];
}

// Storage -> fp32, bit-identical to half.h's to_f32. The fp16 version is branch-free so that the
// tile loads vectorise (to_f32(fp16) normalises denormals in a loop): shifting the exponent and
// mantissa into fp32 position and multiplying by 2^112 rebias the exponent and turns fp16
// denormals into the right fp32 normals exactly (this relies on fp32 denormals not being flushed,
// i.e. DAZ off, the default); Inf and NaN are patched with a select.
inline float widen(float x) { return x; }
inline float widen(bf16 x) { return to_f32(x); }
inline float widen(fp16 x) {
  const uint32_t h = x.bits;
  const uint32_t em = (h & 0x7FFFu) << 13;
  float mag = std::bit_cast<float>(em) * 0x1p112f;
  if (em >= (0x7C00u << 13)) mag = std::bit_cast<float>(em | 0x7F800000u);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | ((h & 0x8000u) << 16));
}

// Loads rows [t0, t0+n) of one head's q, k or v (stride C3 in qkv) into fp32.
template <typename T>
void load_rows(float* __restrict dst, const T* __restrict src, size_t C3, int n, int HS,
               float mul) {
  for (int i = 0; i < n; ++i) {
    const T* __restrict r = src + i * C3;
    float* __restrict o = dst + static_cast<size_t>(i) * HS;
    for (int d = 0; d < HS; ++d) o[d] = widen(r[d]) * mul;
  }
}

// Transposed: dst[d*kTile + i] = src row i, column d.
template <typename T>
void load_rows_t(float* __restrict dst, const T* __restrict src, size_t C3, int n, int HS) {
  for (int i = 0; i < n; ++i) {
    const T* __restrict r = src + i * C3;
    for (int d = 0; d < HS; ++d) dst[static_cast<size_t>(d) * kTile + i] = widen(r[d]);
  }
}

// One (b, head, query tile) of the forward pass.
template <typename T>
void fwd_tile(T* out, float* lse, const T* qkv, int T_, int C, int NH, int b, int h, int qt,
              const FwdBuffers& w) {
  const int HS = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + static_cast<size_t>(h) * HS;
  const int q0 = qt * kTile;
  const int nq = std::min(kTile, T_ - q0);

  load_rows(w.q, head + q0 * C3, C3, nq, HS, scale);
  std::fill(w.o, w.o + static_cast<size_t>(nq) * HS, 0.0f);
  std::fill(w.m, w.m + nq, -INFINITY);
  std::fill(w.l, w.l + nq, 0.0f);

  for (int kt = 0; kt <= qt; ++kt) {
    const int k0 = kt * kTile;
    const int nk = std::min(kTile, T_ - k0);
    load_rows_t(w.kt, head + k0 * C3 + C, C3, nk, HS);
    load_rows(w.v, head + k0 * C3 + 2 * C, C3, nk, HS, 1.0f);
    for (int i = 0; i < nq; ++i) {
      const int n = kt == qt ? std::min(nk, i + 1) : nk;  // causal limit of this row
      float* o = w.o + static_cast<size_t>(i) * HS;
      row_times_tile_t(w.s, w.q + static_cast<size_t>(i) * HS, w.kt, HS, n);
      const float m_new = std::max(w.m[i], row_max(w.s, n));
      // Rescale what was accumulated under the old max; exp_f32(-inf) = 0 on the first tile.
      const float corr = exp_f32(w.m[i] - m_new);
      w.l[i] = w.l[i] * corr + exp_shift_sum(w.s, m_new, n);
      w.m[i] = m_new;
      for (int d = 0; d < HS; ++d) o[d] *= corr;
      for (int j = 0; j < n; ++j) axpy(o, w.s[j], w.v + static_cast<size_t>(j) * HS, HS);
    }
  }

  float* lse_row = lse + (static_cast<size_t>(b) * NH + h) * T_ + q0;
  for (int i = 0; i < nq; ++i) {
    // l >= 1: the row's max term contributes exp(0).
    const float inv = 1.0f / w.l[i];
    const float* o = w.o + static_cast<size_t>(i) * HS;
    T* dst = out + (static_cast<size_t>(b) * T_ + q0 + i) * C + static_cast<size_t>(h) * HS;
    for (int d = 0; d < HS; ++d) dst[d] = from_f32<T>(o[d] * inv);
    lse_row[i] = w.m[i] + std::log(w.l[i]);
  }
}

// One (b, head) of the backward pass (FlashAttention-2 order: key tiles outer, so dK and dV of a
// key tile are finished in one sweep; dQ for the whole head stays in this thread's scratch).
template <typename T>
void bwd_head(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int T_, int C,
              int NH, int b, int h, const BwdBuffers& w) {
  const int HS = C / NH;
  const size_t C3 = 3 * static_cast<size_t>(C);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const size_t hoff = static_cast<size_t>(h) * HS;
  const T* head = qkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  T* dhead = dqkv + static_cast<size_t>(b) * T_ * C3 + hoff;
  const T* dout_h = dout + static_cast<size_t>(b) * T_ * C + hoff;
  const T* out_h = out + static_cast<size_t>(b) * T_ * C + hoff;
  const float* lse_h = lse + (static_cast<size_t>(b) * NH + h) * T_;
  const int ntiles = (T_ + kTile - 1) / kTile;

  // With q pre-scaled, S = q k^T and dK = dS^T q already carry the scale; only dQ needs it.
  load_rows(w.q, head, C3, T_, HS, scale);
  load_rows(w.dout, dout_h, C, T_, HS, 1.0f);
  std::fill(w.dq, w.dq + static_cast<size_t>(T_) * HS, 0.0f);
  for (int i = 0; i < T_; ++i) {
    const float* g = w.dout + static_cast<size_t>(i) * HS;
    const T* o = out_h + static_cast<size_t>(i) * C;
    float lanes[kLanes] = {};
    int d = 0;
    for (; d + kLanes <= HS; d += kLanes) {
      for (int u = 0; u < kLanes; ++u) lanes[u] += g[d + u] * widen(o[d + u]);
    }
    float s = 0.0f;
    for (; d < HS; ++d) s += g[d] * widen(o[d]);
    for (int u = 0; u < kLanes; ++u) s += lanes[u];
    w.dd[i] = s;
  }

  for (int kt = 0; kt < ntiles; ++kt) {
    const int k0 = kt * kTile;
    const int nk = std::min(kTile, T_ - k0);
    load_rows(w.k, head + k0 * C3 + C, C3, nk, HS, 1.0f);
    load_rows_t(w.kt, head + k0 * C3 + C, C3, nk, HS);
    load_rows_t(w.vt, head + k0 * C3 + 2 * C, C3, nk, HS);
    std::fill(w.dk, w.dk + static_cast<size_t>(nk) * HS, 0.0f);
    std::fill(w.dv, w.dv + static_cast<size_t>(nk) * HS, 0.0f);
    for (int i = k0; i < T_; ++i) {
      const int n = std::min(nk, i - k0 + 1);  // causal limit of query row i in this key tile
      const float* q = w.q + static_cast<size_t>(i) * HS;
      const float* g = w.dout + static_cast<size_t>(i) * HS;
      float* dq = w.dq + static_cast<size_t>(i) * HS;
      row_times_tile_t(w.p, q, w.kt, HS, n);
      const float row_lse = lse_h[i];
      for (int j = 0; j < n; ++j) w.p[j] = exp_f32(w.p[j] - row_lse);
      row_times_tile_t(w.ds, g, w.vt, HS, n);
      const float row_d = w.dd[i];
      for (int j = 0; j < n; ++j) w.ds[j] = w.p[j] * (w.ds[j] - row_d);
      for (int j = 0; j < n; ++j) {
        const size_t jr = static_cast<size_t>(j) * HS;
        axpy(w.dv + jr, w.p[j], g, HS);
        axpy(w.dk + jr, w.ds[j], q, HS);
        axpy(dq, w.ds[j], w.k + jr, HS);
      }
    }
    for (int j = 0; j < nk; ++j) {
      T* dk = dhead + (k0 + j) * C3 + C;
      T* dv = dk + C;
      const float* sk = w.dk + static_cast<size_t>(j) * HS;
      const float* sv = w.dv + static_cast<size_t>(j) * HS;
      for (int d = 0; d < HS; ++d) dk[d] = from_f32<T>(sk[d]);
      for (int d = 0; d < HS; ++d) dv[d] = from_f32<T>(sv[d]);
    }
  }

  for (int i = 0; i < T_; ++i) {
    T* dq = dhead + i * C3;
    const float* s = w.dq + static_cast<size_t>(i) * HS;
    for (int d = 0; d < HS; ++d) dq[d] = from_f32<T>(s[d] * scale);
  }
}

}  // namespace

size_t attention_fwd_scratch_bytes(int B, int T, int C, int NH) {
  return static_cast<size_t>(omp_get_max_threads()) * fwd_thread_floats(C / NH) * sizeof(float);
}

template <typename T>
void attention_fwd(T* out, float* lse, const T* qkv, int B, int T_, int C, int NH, void* scratch) {
  const int nthreads = omp_get_max_threads();
  const size_t per_thread = fwd_thread_floats(C / NH);
  const int ntiles = (T_ + kTile - 1) / kTile;
  const int64_t heads = static_cast<int64_t>(B) * NH;
  const int64_t tasks = heads * ntiles;
  if (tasks == 0) return;
  // No idle threads for tiny problems (they would only add barrier latency); slot ids stay below
  // omp_get_max_threads(), which sized the scratch.
  const int team = static_cast<int>(std::min<int64_t>(nthreads, tasks));
#pragma omp parallel num_threads(team)
  {
    Carver carver(static_cast<float*>(scratch) + omp_get_thread_num() * per_thread);
    const FwdBuffers w = carve_fwd(carver, C / NH);
    // Later query tiles see more keys: hand them out first so the tail of the schedule is short.
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int qt = ntiles - 1 - static_cast<int>(task / heads);
      const int64_t bh = task % heads;
      fwd_tile(out, lse, qkv, T_, C, NH, static_cast<int>(bh / NH), static_cast<int>(bh % NH), qt,
               w);
    }
  }
}

size_t attention_bwd_scratch_bytes(int B, int T, int C, int NH) {
  return static_cast<size_t>(omp_get_max_threads()) * bwd_thread_floats(T, C / NH) * sizeof(float);
}

template <typename T>
void attention_bwd(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B,
                   int T_, int C, int NH, void* scratch) {
  const int nthreads = omp_get_max_threads();
  const size_t per_thread = bwd_thread_floats(T_, C / NH);
  const int64_t heads = static_cast<int64_t>(B) * NH;
  if (heads == 0 || T_ == 0) return;
  const int team = static_cast<int>(std::min<int64_t>(nthreads, heads));
#pragma omp parallel num_threads(team)
  {
    Carver carver(static_cast<float*>(scratch) + omp_get_thread_num() * per_thread);
    const BwdBuffers w = carve_bwd(carver, T_, C / NH);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < heads; ++bh) {
      bwd_head(dqkv, dout, qkv, out, lse, T_, C, NH, static_cast<int>(bh / NH),
               static_cast<int>(bh % NH), w);
    }
  }
}

#define ZT_INSTANTIATE_ATTENTION(T)                                                             \
  template void attention_fwd<T>(T*, float*, const T*, int, int, int, int, void*);              \
  template void attention_bwd<T>(T*, const T*, const T*, const T*, const float*, int, int, int, \
                                 int, void*);
ZT_INSTANTIATE_ATTENTION(float)
ZT_INSTANTIATE_ATTENTION(bf16)
ZT_INSTANTIATE_ATTENTION(fp16)
#undef ZT_INSTANTIATE_ATTENTION

}  // namespace zt::kernels::cpu
