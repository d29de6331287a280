// CUDA optimizer kernels (the contract: optimizer.cuh; conventions: launch.cuh), the twins of
// kernels/cpu/optimizer.cpp, quantize.cpp and adafactor.cpp.
//
// What:
//   adamw_update, sgd_update, lion_update  one fused elementwise pass over master/state/grad
//   quantize_blocks, dequantize_blocks     8-bit block-wise dynamic quantisation (checkpoints)
//   adamw8bit_update                       dequantise m and v, AdamW, requantise, per block
//   adafactor_*                            Adafactor's row/column sums, its two fp64 reductions and
//                                          its elementwise update
// How:
//   - Elementwise kernels are grid-stride loops; where every pointer is suitably aligned (after a
//     head of at most 3 elements that brings `master` to 16 bytes) they move 4 elements per step
//     with 16-byte fp32 loads (8-byte loads of 16-bit gradients), the rest goes element by element
//     through the same per-element function.
//   - 8-bit kernels run one thread block of 256 threads per quantisation block (grid-stride over
//     the blocks), one element per thread. Each thread block first copies the code maps to shared
//     memory and computes their midpoints exactly as the CPU builds QuantMap::mid; the new absmax
//     is a block maximum over |x| as unsigned bit patterns; a code is #{k : y >= mid[k]}, found by
//     an 8-step binary search (Note [nearest code] in cpu/quantize.cpp).
//   - Adafactor's sums are fp64 in a fixed order: a row's sum is one thread block's fixed-shape
//     reduction; column sums run down fixed chunks of rows (one thread per column and chunk, rows
//     in order), then the chunks are added in order. The two scalar reductions write one fp64 per
//     thread block of a grid whose size depends only on n, then one block adds them in order.
//     Repeated runs give the same bits; the CPU sums in another order, so sums agree to rounding
//     (column sums exactly when the piece spans at most 32 rows: one chunk, the CPU's order).
// Why (bit-exactness with the CPU twin): every per-element formula is written with explicit,
// singly rounded operations (__fmaf_rn / __fmul_rn / __fadd_rn / __fsub_rn / __fdiv_rn /
// __fsqrt_rn, which nvcc never contracts into FMAs nor approximates) in the order of operations
// of the CPU code as compiled (Note [CPU rounding sequence]). The math lives in __host__ __device__
// functions, so a host harness can check it against the CPU kernels bit for bit; the results then
// agree exactly, NaN payloads aside (the GPU produces the canonical NaN). Denormals must not be
// flushed (no -ftz=true / --use_fast_math), as the CPU does not flush them.
//
// Note [CPU rounding sequence]: AdamW, AdamW8bit, SGD and Lion spell out every fma themselves
// (Note [one rounding sequence] in cpu/optimizer_simd.h), but a few roundings are left to GCC,
// whose C++ default is -ffp-contract=fast, and the project builds with -march=native (FMA):
//   - the host-side constant decay = 1 - lr * weight_decay (AdamW, AdamW8bit, Lion) is contracted
//     to fma(-lr, wd, 1);
//   - Adafactor (cpu/adafactor.cpp, plain C++) is contracted as follows (checked in the disassembly
//     of the -O3 -march=native build):
//       sq_sums:       s = (double) fma(g, g, eps1)
//       unfactored_v:  v = fma(beta2t, v, fma(g, g, eps1) * (1 - beta2t));  u = g / sqrt(v)
//       apply:         q = fma(p, decay, p);  with m: m = fma(beta1, m, (u * scale) * (1 - beta1)),
//                      p = q - m;  without m: p = fma(-u, scale, q) for fp32 and bf16 gradients
//                      but p = q - u * scale for fp16 ones (GCC lays that instantiation's loop
//                      out differently and leaves the product unfused)
//     with g = grad * grad_scale and u = g * (rfac[r] * cfac[c]) or g / sqrt(v).
// A CPU build without FMA (ZT_NATIVE=OFF on an old target) rounds these few places separately and
// then differs from this code by an ulp there.
#include "kernels/cuda/optimizer.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace zt::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Grid-stride kernels use at most this many thread blocks (several waves on an H100/H200).
constexpr size_t kMaxGrid = 4096;
constexpr size_t kQuantBlock = 256;  // = kernels::cpu::kQuantBlock
constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
// Adafactor: thread blocks of the scalar reductions (their partials live in the workspace), and
// the column-sum chunking (rows per chunk at least kMinChunkRows, at most kMaxChunks chunks).
constexpr size_t kRedBlocks = 512;
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunks = 512;

// ---- singly rounded fp32/fp64 operations (host versions for the harness) ----

__host__ __device__ __forceinline__ float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
__host__ __device__ __forceinline__ float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
__host__ __device__ __forceinline__ float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
__host__ __device__ __forceinline__ float div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
__host__ __device__ __forceinline__ float sqrt_rn(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}
__host__ __device__ __forceinline__ float fma_rn(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
__host__ __device__ __forceinline__ double dadd_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
__host__ __device__ __forceinline__ double ddiv_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
// The square of an fp32 value is exact in fp64, so this is one rounding (the add).
__host__ __device__ __forceinline__ double add_square(double acc, float u) {
  const double d = u;
#ifdef __CUDA_ARCH__
  return __fma_rn(d, d, acc);
#else
  return std::fma(d, d, acc);
#endif
}
__host__ __device__ __forceinline__ uint32_t bits_of(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}
__host__ __device__ __forceinline__ float float_of(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// ---- per-element math (the CPU twins' rounding sequences) ----

// AdamW's constants: cpu::detail::adamw_const, decay contracted (Note [CPU rounding sequence]).
struct AdamWParams {
  float b1, omb1, b2, omb2;  // beta1, 1 - beta1, beta2, 1 - beta2
  float bc2_sqrt, eps;       // sqrt(bias_corr2), eps
  float neg_step, decay;     // -(lr / bias_corr1), fma(-lr, weight_decay, 1)
  float grad_scale;
};

AdamWParams make_adamw_params(float lr, float beta1, float beta2, float eps, float weight_decay,
                              float bias_corr1, float bias_corr2, float grad_scale) {
  return {beta1,
          1.0f - beta1,
          beta2,
          1.0f - beta2,
          std::sqrt(bias_corr2),
          eps,
          -(lr / bias_corr1),
          std::fma(-lr, weight_decay, 1.0f),
          grad_scale};
}

//   g = g * s;  m = fma(1-b1, g, b1*m);  v = fma(1-b2, g*g, b2*v)
//   d = sqrt(v) / sqrt(bc2) + eps;  p = fma(-step, m / d, p * decay)
__host__ __device__ __forceinline__ void adamw_element(float& p, float& m, float& v, float g,
                                                       const AdamWParams& c) {
  g = mul_rn(g, c.grad_scale);
  const float mj = fma_rn(c.omb1, g, mul_rn(c.b1, m));
  const float vj = fma_rn(c.omb2, mul_rn(g, g), mul_rn(c.b2, v));
  const float d = add_rn(div_rn(sqrt_rn(vj), c.bc2_sqrt), c.eps);
  p = fma_rn(c.neg_step, div_rn(mj, d), mul_rn(p, c.decay));
  m = mj;
  v = vj;
}

struct SgdParams {
  float neg_lr, momentum, one_minus_dampening, weight_decay, grad_scale;
  bool use_momentum, nesterov, first_step;
};

SgdParams make_sgd_params(float lr, float momentum, float dampening, float weight_decay,
                          bool nesterov, bool first_step, float grad_scale) {
  return {-lr,        momentum,         1.0f - dampening, weight_decay,
          grad_scale, momentum != 0.0f, nesterov,         first_step};
}

//   g = fma(wd, p, g * s);  buf = first ? g : fma(1 - dampening, g, momentum * buf)
//   g = nesterov ? fma(momentum, buf, g) : buf;  p = fma(-lr, g, p)
// buf is read only when c.use_momentum && !c.first_step, written only when c.use_momentum.
__host__ __device__ __forceinline__ void sgd_element(float& p, float& buf, float g,
                                                     const SgdParams& c) {
  g = fma_rn(c.weight_decay, p, mul_rn(g, c.grad_scale));
  if (c.use_momentum) {
    const float b = c.first_step ? g : fma_rn(c.one_minus_dampening, g, mul_rn(c.momentum, buf));
    buf = b;
    g = c.nesterov ? fma_rn(c.momentum, b, g) : b;
  }
  p = fma_rn(c.neg_lr, g, p);
}

struct LionParams {
  float b1, omb1, b2, omb2, neg_lr, decay, grad_scale;
};

LionParams make_lion_params(float lr, float beta1, float beta2, float weight_decay,
                            float grad_scale) {
  return {beta1,     1.0f - beta1, beta2, 1.0f - beta2, -lr, std::fma(-lr, weight_decay, 1.0f),
          grad_scale};
}

// +-1, 0 for +-0, NaN for NaN (cpu lion_sign).
__host__ __device__ __forceinline__ float lion_sign(float u) {
  if (u > 0.0f) return 1.0f;
  if (u < 0.0f) return -1.0f;
  return u == 0.0f ? 0.0f : u;
}

//   g = g * s;  c = fma(1-b1, g, b1*m);  p = fma(-lr, sign(c), p * decay);  m = fma(1-b2, g, b2*m)
__host__ __device__ __forceinline__ void lion_element(float& p, float& m, float g,
                                                      const LionParams& c) {
  g = mul_rn(g, c.grad_scale);
  const float u = fma_rn(c.omb1, g, mul_rn(c.b1, m));
  p = fma_rn(c.neg_lr, lion_sign(u), mul_rn(p, c.decay));
  m = fma_rn(c.omb2, g, mul_rn(c.b2, m));
}

// Adafactor (Note [CPU rounding sequence]); g_raw is the widened, unscaled gradient.
__host__ __device__ __forceinline__ double adafactor_sq_term(float g_raw, float grad_scale,
                                                             float eps1) {
  const float g = mul_rn(g_raw, grad_scale);
  return static_cast<double>(fma_rn(g, g, eps1));
}

// u = (g * s) * (rfac[r] * cfac[c])
__host__ __device__ __forceinline__ float adafactor_factored_u(float g_raw, float grad_scale,
                                                               float rf, float cf) {
  return mul_rn(mul_rn(g_raw, grad_scale), mul_rn(rf, cf));
}

// v = fma(beta2t, v, fma(g, g, eps1) * (1 - beta2t)); returns u = g / sqrt(v).
__host__ __device__ __forceinline__ float adafactor_unfactored_u(float g_raw, float& v,
                                                                 float grad_scale, float beta2t,
                                                                 float one_minus_beta2t,
                                                                 float eps1) {
  const float g = mul_rn(g_raw, grad_scale);
  v = fma_rn(beta2t, v, mul_rn(fma_rn(g, g, eps1), one_minus_beta2t));
  return div_rn(g, sqrt_rn(v));
}

// Unfactored apply: u = (g * s) / sqrt(v).
__host__ __device__ __forceinline__ float adafactor_apply_u(float g_raw, float grad_scale,
                                                            float v) {
  return div_rn(mul_rn(g_raw, grad_scale), sqrt_rn(v));
}

struct AdafactorParams {
  float grad_scale, scale, beta1, one_minus_beta1, decay;  // decay = -weight_decay * lr
};

AdafactorParams make_adafactor_params(float grad_scale, float scale, float lr, float beta1,
                                      float weight_decay) {
  return {grad_scale, scale, beta1, 1.0f - beta1, -weight_decay * lr};
}

// Whether the CPU's adafactor_apply<T> without m fuses `u *= scale; master = q - u` into
// fma(-u, scale, q): GCC contracts it in the fp32 and bf16 instantiations but not in the fp16 one,
// whose loop it lays out differently (Note [CPU rounding sequence]).
template <typename T>
constexpr bool kAdafactorFusedScale = !std::is_same_v<T, __half>;

// The update after u (unscaled: g * (rfac cfac) or g / sqrt(v)) is known; kFusedScale:
// kAdafactorFusedScale of the gradient type.
template <bool kFusedScale>
__host__ __device__ __forceinline__ void adafactor_step(float& p, float& m, bool has_m, float u,
                                                        const AdafactorParams& c) {
  const float q = fma_rn(p, c.decay, p);
  if (has_m) {
    const float mj = fma_rn(c.beta1, m, mul_rn(mul_rn(u, c.scale), c.one_minus_beta1));
    m = mj;
    p = sub_rn(q, mj);
  } else if (kFusedScale) {
    p = fma_rn(-u, c.scale, q);
  } else {
    p = sub_rn(q, mul_rn(u, c.scale));
  }
}

// ---- 8-bit quantisation helpers ----

// The next float above t (t finite).
__host__ __device__ __forceinline__ float next_up(float t) {
  if (t == 0.0f) return float_of(1u);  // +-0: the smallest positive denormal
  const uint32_t u = bits_of(t);
  return float_of(t > 0.0f ? u + 1u : u - 1u);
}

// QuantMap::mid[k] from code[k - 1] and code[k]: the smallest float strictly above their exact
// (fp64) midpoint (build_map in cpu/quantize.cpp).
__host__ __device__ __forceinline__ float code_midpoint(float lo, float hi) {
  const double exact = ddiv_rn(dadd_rn(static_cast<double>(lo), static_cast<double>(hi)), 2.0);
  float t = static_cast<float>(exact);  // round to nearest even (cvt.rn.f32.f64 on the device)
  if (static_cast<double>(t) <= exact) t = next_up(t);
  return t;
}

// The nearest code to y: #{k in 1..255 : y >= mid[k]} (mid ascending; mid[0] is never read), by
// binary search. NaN gives the code of 0; values outside the map get the end codes, as clamping
// would give them.
__host__ __device__ __forceinline__ uint32_t nearest_code(const float* mid, float y) {
  if (!(y == y)) y = 0.0f;
  uint32_t c = 0;
  for (uint32_t s = 128; s > 0; s >>= 1) {  // a constant trip count: nvcc unrolls it
    if (y >= mid[c + s]) c += s;
  }
  return c;
}

// The code of x in a block whose absmax has bit pattern abs_bits (Note [absmax] in
// cpu/quantize.cpp): an all-zero block gets the code of 0 without dividing.
__host__ __device__ __forceinline__ uint32_t block_code(const float* mid, float x,
                                                        uint32_t abs_bits) {
  if (abs_bits == 0) return nearest_code(mid, 0.0f);
  return nearest_code(mid, div_rn(x, float_of(abs_bits)));
}

__host__ __device__ __forceinline__ size_t clamp_first_block(size_t first_block) {
  return first_block < 1 ? 1 : (first_block > kQuantBlock ? kQuantBlock : first_block);
}

// cpu::quant_block_count (fb already clamped).
__host__ __device__ __forceinline__ size_t quant_blocks(size_t n, size_t fb) {
  if (n == 0) return 0;
  if (n <= fb) return 1;
  return 1 + (n - fb + kQuantBlock - 1) / kQuantBlock;
}

// Block b covers [i0, i0 + len) (fb clamped, b < quant_blocks(n, fb)).
__host__ __device__ __forceinline__ void quant_block_range(size_t b, size_t n, size_t fb,
                                                           size_t& i0, size_t& len) {
  if (b == 0) {
    i0 = 0;
    len = fb < n ? fb : n;
  } else {
    i0 = fb + (b - 1) * kQuantBlock;
    len = n - i0 < kQuantBlock ? n - i0 : kQuantBlock;
  }
}

// The quantisation block holding element i.
__host__ __device__ __forceinline__ size_t quant_block_of(size_t i, size_t fb) {
  return i < fb ? 0 : 1 + (i - fb) / kQuantBlock;
}

// ---- Adafactor index helpers ----

// The rows a piece [first, first + n) of a (rows, cols) parameter touches: r_first .. r_first +
// nrows - 1 (n > 0, cols > 0).
__host__ __device__ __forceinline__ void piece_rows(size_t n, int64_t first, int64_t cols,
                                                    int64_t& r_first, int64_t& nrows) {
  r_first = first / cols;
  nrows = (first + static_cast<int64_t>(n) - 1) / cols - r_first + 1;
}

// Column-sum chunking of nrows rows: rows_per_chunk and the chunk count (at most kMaxChunks).
__host__ __device__ __forceinline__ void column_chunks(int64_t nrows, int64_t& rows_per_chunk,
                                                       int64_t& chunks) {
  rows_per_chunk = (nrows + kMaxChunks - 1) / kMaxChunks;
  if (rows_per_chunk < kMinChunkRows) rows_per_chunk = kMinChunkRows;
  chunks = (nrows + rows_per_chunk - 1) / rows_per_chunk;
}

// Thread blocks of the Adafactor scalar reductions for n elements (depends on n only).
__host__ __device__ __forceinline__ unsigned reduction_blocks(size_t n) {
  const size_t b = (n + 4 * kThreads - 1) / (4 * kThreads);
  return static_cast<unsigned>(b < 1 ? 1 : (b > kRedBlocks ? kRedBlocks : b));
}

// ---- device loads ----

__device__ __forceinline__ float widen(const float* p) { return *p; }
__device__ __forceinline__ float widen(const __nv_bfloat16* p) {
  return __uint_as_float(static_cast<uint32_t>(__bfloat16_as_ushort(*p)) << 16);
}
__device__ __forceinline__ float widen(const __half* p) { return __half2float(*p); }

// W consecutive floats (W = 4: one 16-byte load, p 16-byte aligned).
template <int W>
__device__ __forceinline__ void load_f32(const float* p, float (&x)[W]) {
  if constexpr (W == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    x[0] = v.x;
    x[1] = v.y;
    x[2] = v.z;
    x[3] = v.w;
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) x[k] = p[k];
  }
}

template <int W>
__device__ __forceinline__ void store_f32(float* p, const float (&x)[W]) {
  if constexpr (W == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) p[k] = x[k];
  }
}

__device__ __forceinline__ float bf16_low(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_high(uint32_t w) { return __uint_as_float(w & 0xFFFF0000u); }
__device__ __forceinline__ float fp16_low(uint32_t w) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xFFFFu)));
}
__device__ __forceinline__ float fp16_high(uint32_t w) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
}

// W consecutive gradients widened to fp32 (W = 4: one load of 4 * sizeof(T) bytes, aligned so).
template <int W, typename T>
__device__ __forceinline__ void load_grad(const T* p, float (&x)[W]) {
  if constexpr (W == 4 && std::is_same_v<T, float>) {
    load_f32<4>(p, x);
  } else if constexpr (W == 4) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);  // little endian: element 0 low
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      x[0] = bf16_low(v.x);
      x[1] = bf16_high(v.x);
      x[2] = bf16_low(v.y);
      x[3] = bf16_high(v.y);
    } else {
      x[0] = fp16_low(v.x);
      x[1] = fp16_high(v.x);
      x[2] = fp16_low(v.y);
      x[3] = fp16_high(v.y);
    }
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) x[k] = widen(p + k);
  }
}

inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// ---- elementwise ops: run<W>(i) updates elements [i, i + W); aligned(h): whether every pointer
// at element h allows the W = 4 loads ----

template <typename T>
struct AdamWOp {
  float* p;
  float* m;
  float* v;
  const T* g;
  AdamWParams c;

  bool aligned(size_t h) const {
    return aligned_to(p + h, 16) && aligned_to(m + h, 16) && aligned_to(v + h, 16) &&
           aligned_to(g + h, 4 * sizeof(T));
  }
  template <int W>
  __device__ __forceinline__ void run(size_t i) const {
    float pp[W], mm[W], vv[W], gg[W];
    load_f32<W>(p + i, pp);
    load_f32<W>(m + i, mm);
    load_f32<W>(v + i, vv);
    load_grad<W>(g + i, gg);
#pragma unroll
    for (int k = 0; k < W; ++k) adamw_element(pp[k], mm[k], vv[k], gg[k], c);
    store_f32<W>(p + i, pp);
    store_f32<W>(m + i, mm);
    store_f32<W>(v + i, vv);
  }
};

template <typename T>
struct SgdOp {
  float* p;
  float* buf;  // null unless c.use_momentum
  const T* g;
  SgdParams c;

  bool aligned(size_t h) const {
    return aligned_to(p + h, 16) && (buf == nullptr || aligned_to(buf + h, 16)) &&
           aligned_to(g + h, 4 * sizeof(T));
  }
  template <int W>
  __device__ __forceinline__ void run(size_t i) const {
    float pp[W], bb[W] = {}, gg[W];
    load_f32<W>(p + i, pp);
    if (c.use_momentum && !c.first_step) load_f32<W>(buf + i, bb);
    load_grad<W>(g + i, gg);
#pragma unroll
    for (int k = 0; k < W; ++k) sgd_element(pp[k], bb[k], gg[k], c);
    store_f32<W>(p + i, pp);
    if (c.use_momentum) store_f32<W>(buf + i, bb);
  }
};

template <typename T>
struct LionOp {
  float* p;
  float* m;
  const T* g;
  LionParams c;

  bool aligned(size_t h) const {
    return aligned_to(p + h, 16) && aligned_to(m + h, 16) && aligned_to(g + h, 4 * sizeof(T));
  }
  template <int W>
  __device__ __forceinline__ void run(size_t i) const {
    float pp[W], mm[W], gg[W];
    load_f32<W>(p + i, pp);
    load_f32<W>(m + i, mm);
    load_grad<W>(g + i, gg);
#pragma unroll
    for (int k = 0; k < W; ++k) lion_element(pp[k], mm[k], gg[k], c);
    store_f32<W>(p + i, pp);
    store_f32<W>(m + i, mm);
  }
};

template <typename T>
struct AdafactorApplyOp {
  float* p;
  float* m;  // may be null
  const T* g;
  const float* rfac;  // factored: rfac and cfac; unfactored: null, v given
  const float* cfac;
  const float* v;
  int64_t first, cols;
  AdafactorParams c;

  bool aligned(size_t h) const {
    return aligned_to(p + h, 16) && (m == nullptr || aligned_to(m + h, 16)) &&
           (rfac != nullptr || aligned_to(v + h, 16)) && aligned_to(g + h, 4 * sizeof(T));
  }
  template <int W>
  __device__ __forceinline__ void run(size_t i) const {
    float gg[W], u[W], pp[W], mm[W] = {};
    load_grad<W>(g + i, gg);
    if (rfac != nullptr) {
      const int64_t e = first + static_cast<int64_t>(i);
      int64_t r = e / cols, col = e - r * cols;
#pragma unroll
      for (int k = 0; k < W; ++k) {
        u[k] = adafactor_factored_u(gg[k], c.grad_scale, rfac[r], cfac[col]);
        if (++col == cols) {
          col = 0;
          ++r;
        }
      }
    } else {
      float vv[W];
      load_f32<W>(v + i, vv);
#pragma unroll
      for (int k = 0; k < W; ++k) u[k] = adafactor_apply_u(gg[k], c.grad_scale, vv[k]);
    }
    load_f32<W>(p + i, pp);
    if (m != nullptr) load_f32<W>(m + i, mm);
#pragma unroll
    for (int k = 0; k < W; ++k)
      adafactor_step<kAdafactorFusedScale<T>>(pp[k], mm[k], m != nullptr, u[k], c);
    store_f32<W>(p + i, pp);
    if (m != nullptr) store_f32<W>(m + i, mm);
  }
};

// ---- kernels ----

// Groups of 4 elements from `head` on (groups of them), single elements elsewhere: [0, head) and
// the tail [head + 4 groups, n).
template <typename Op>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(const Op op, size_t n, size_t head, size_t groups) {
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  const size_t tid = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  for (size_t k = tid; k < groups; k += stride) op.template run<4>(head + 4 * k);
  const size_t rest = n - 4 * groups;  // head + tail elements, each < 4
  for (size_t k = tid; k < rest; k += stride) op.template run<1>(k < head ? k : 4 * groups + k);
}

// Maximum of x over the warp (every lane active).
__device__ __forceinline__ uint32_t warp_max(uint32_t x) {
#if __CUDA_ARCH__ >= 800
  return __reduce_max_sync(0xFFFFFFFFu, x);
#else
  for (int o = 16; o > 0; o >>= 1) x = max(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
  return x;
#endif
}

// Sum of x over the thread block, in a fixed order (shuffle tree per warp, then warps in order);
// the result is valid in thread 0. Every thread must call it; the caller synchronises before
// `warp_sums` is used again.
__device__ __forceinline__ double block_sum(double x, double* warp_sums) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xFFFFFFFFu, x, o);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = x;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0) {
    for (int w = 0; w < kWarps; ++w) total += warp_sums[w];
  }
  return total;
}

// mid[1..255] of the map `code` (256 ascending floats), computed by kThreads threads.
__device__ __forceinline__ void load_midpoints(const float* code, float* mid) {
  const int t = threadIdx.x;
  mid[t] = t == 0 ? __uint_as_float(0xFF800000u) : code_midpoint(code[t - 1], code[t]);
}

__global__ void __launch_bounds__(kThreads)
    quantize_kernel(const float* code_map, const float* x, size_t n, size_t fb, size_t nblocks,
                    uint8_t* codes, float* absmax) {
  __shared__ float mid[256];
  __shared__ uint32_t red[kWarps];
  load_midpoints(code_map, mid);
  __syncthreads();
  const unsigned t = threadIdx.x;
  for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    size_t i0, len;
    quant_block_range(b, n, fb, i0, len);
    const bool active = t < len;
    const float xi = active ? x[i0 + t] : 0.0f;
    const uint32_t bits = warp_max(bits_of(xi) & kAbsMask);
    if ((t & 31) == 0) red[t >> 5] = bits;
    __syncthreads();
    uint32_t a = red[0];
    for (int w = 1; w < kWarps; ++w) a = max(a, red[w]);
    if (active) codes[i0 + t] = static_cast<uint8_t>(block_code(mid, xi, a));
    if (t == 0) absmax[b] = __uint_as_float(a);
    __syncthreads();  // red[] is rewritten by the next block
  }
}

__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const float* code_map, const uint8_t* codes, const float* absmax, size_t n,
                      size_t fb, float* out) {
  __shared__ float code[256];
  code[threadIdx.x] = code_map[threadIdx.x];
  __syncthreads();
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  for (size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    out[i] = mul_rn(code[codes[i]], absmax[quant_block_of(i, fb)]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    adamw8bit_kernel(const float* signed_map, const float* unsigned_map, float* master,
                     uint8_t* m_codes, float* m_absmax, uint8_t* v_codes, float* v_absmax,
                     const T* grad, size_t n, size_t fb, size_t nblocks, const AdamWParams c) {
  __shared__ float s_code[256], u_code[256], s_mid[256], u_mid[256];
  __shared__ uint32_t red_m[kWarps], red_v[kWarps];
  const unsigned t = threadIdx.x;
  s_code[t] = signed_map[t];
  u_code[t] = unsigned_map[t];
  load_midpoints(signed_map, s_mid);
  load_midpoints(unsigned_map, u_mid);
  __syncthreads();
  for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    size_t i0, len;
    quant_block_range(b, n, fb, i0, len);
    const bool active = t < len;
    const size_t i = i0 + t;
    const float am = m_absmax[b], av = v_absmax[b];  // read by all before thread 0 rewrites them
    float mj = 0.0f, vj = 0.0f;
    if (active) {
      mj = mul_rn(s_code[m_codes[i]], am);
      vj = mul_rn(u_code[v_codes[i]], av);
      float pj = master[i];
      adamw_element(pj, mj, vj, widen(grad + i), c);
      master[i] = pj;
    }
    const uint32_t bm = warp_max(bits_of(mj) & kAbsMask);
    const uint32_t bv = warp_max(bits_of(vj) & kAbsMask);
    if ((t & 31) == 0) {
      red_m[t >> 5] = bm;
      red_v[t >> 5] = bv;
    }
    __syncthreads();
    uint32_t new_m = red_m[0], new_v = red_v[0];
    for (int w = 1; w < kWarps; ++w) {
      new_m = max(new_m, red_m[w]);
      new_v = max(new_v, red_v[w]);
    }
    if (active) {
      m_codes[i] = static_cast<uint8_t>(block_code(s_mid, mj, new_m));
      v_codes[i] = static_cast<uint8_t>(block_code(u_mid, vj, new_v));
    }
    if (t == 0) {
      m_absmax[b] = __uint_as_float(new_m);
      v_absmax[b] = __uint_as_float(new_v);
    }
    __syncthreads();  // red_m/red_v are rewritten by the next block
  }
}

// row_sums[r] += sum over the piece's elements of row r, one thread block per row.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    adafactor_row_sums_kernel(const T* grad, size_t n, int64_t first, int64_t cols,
                              float grad_scale, float eps1, int64_t r_first, int64_t nrows,
                              double* row_sums) {
  __shared__ double warp_sums[kWarps];
  const int64_t end = first + static_cast<int64_t>(n);
  for (int64_t j = blockIdx.x; j < nrows; j += gridDim.x) {
    const int64_t r = r_first + j;
    const int64_t lo = max(r * cols, first) - first, hi = min((r + 1) * cols, end) - first;
    double acc = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads)
      acc += adafactor_sq_term(widen(grad + i), grad_scale, eps1);
    acc = block_sum(acc, warp_sums);
    if (threadIdx.x == 0) row_sums[r] += acc;
    __syncthreads();  // warp_sums is rewritten by the next row
  }
}

// Column sums over chunk blockIdx.y of rows_per_chunk rows, one thread per column, rows in order.
// Chunk 0 starts from col_sums[c]; with one chunk the result goes to col_sums, else to
// partials[chunk * cols + c] (adafactor_col_combine_kernel adds them up).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    adafactor_col_sums_kernel(const T* grad, size_t n, int64_t first, int64_t cols,
                              float grad_scale, float eps1, int64_t r_first, int64_t nrows,
                              int64_t rows_per_chunk, int64_t chunks, double* col_sums,
                              double* partials) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= cols) return;  // no block-wide synchronisation in this kernel
  const int64_t k = blockIdx.y;
  const int64_t end = first + static_cast<int64_t>(n);
  const int64_t j0 = k * rows_per_chunk, j1 = min(j0 + rows_per_chunk, nrows);
  double acc = k == 0 ? col_sums[c] : 0.0;
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t e = (r_first + j) * cols + c;
    if (e >= first && e < end)
      acc += adafactor_sq_term(widen(grad + (e - first)), grad_scale, eps1);
  }
  if (chunks == 1) {
    col_sums[c] = acc;
  } else {
    partials[k * cols + c] = acc;
  }
}

__global__ void __launch_bounds__(kThreads)
    adafactor_col_combine_kernel(const double* partials, int64_t cols, int64_t chunks,
                                 double* col_sums) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; c < cols;
       c += stride) {
    double acc = partials[c];
    for (int64_t k = 1; k < chunks; ++k) acc += partials[k * cols + c];
    col_sums[c] = acc;
  }
}

// partials[block] = sum over the block's grid-stride elements of (g rfac[r] cfac[c])^2.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    adafactor_factored_sq_kernel(const T* grad, size_t n, int64_t first, int64_t cols,
                                 float grad_scale, const float* rfac, const float* cfac,
                                 double* partials) {
  __shared__ double warp_sums[kWarps];
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  const size_t tid = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  // Row and column of element i, advanced by stride incrementally (no division per element).
  const int64_t e0 = first + static_cast<int64_t>(tid);
  int64_t r = e0 / cols, c = e0 - r * cols;
  const int64_t dr = static_cast<int64_t>(stride) / cols;
  const int64_t dc = static_cast<int64_t>(stride) - dr * cols;
  double acc = 0.0;
  for (size_t i = tid; i < n; i += stride) {
    acc = add_square(acc, adafactor_factored_u(widen(grad + i), grad_scale, rfac[r], cfac[c]));
    r += dr;
    c += dc;
    if (c >= cols) {
      c -= cols;
      ++r;
    }
  }
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// v updated; partials[block] = sum over the block's grid-stride elements of (g / sqrt(v))^2.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    adafactor_unfactored_v_kernel(const T* grad, float* v, size_t n, float grad_scale, float beta2t,
                                  float one_minus_beta2t, float eps1, double* partials) {
  __shared__ double warp_sums[kWarps];
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  double acc = 0.0;
  for (size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    float vi = v[i];
    const float u =
        adafactor_unfactored_u(widen(grad + i), vi, grad_scale, beta2t, one_minus_beta2t, eps1);
    v[i] = vi;
    acc = add_square(acc, u);
  }
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// *result = the count partials added in a fixed order.
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const double* partials, unsigned count, double* result) {
  __shared__ double warp_sums[kWarps];
  double acc = 0.0;
  for (unsigned i = threadIdx.x; i < count; i += kThreads) acc += partials[i];
  acc = block_sum(acc, warp_sums);
  if (threadIdx.x == 0) *result = acc;
}

// ---- launch helpers ----

unsigned grid_for(size_t work) {
  const size_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min(std::max<size_t>(blocks, 1), kMaxGrid));
}

// Runs op over [0, n): the vector path from the first element where `anchor` (master) is 16-byte
// aligned, when every pointer allows it there; else element by element.
template <typename Op>
cudaError_t launch_elementwise(const Op& op, const float* anchor, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  size_t head = 0, groups = 0;
  const uintptr_t a = reinterpret_cast<uintptr_t>(anchor);
  if (a % sizeof(float) == 0) {
    head = std::min(n, ((16 - a % 16) % 16) / sizeof(float));
    if (op.aligned(head)) groups = (n - head) / 4;
  }
  if (groups == 0) head = 0;
  elementwise_kernel<<<grid_for(std::max(groups, n - 4 * groups)), kThreads, 0, stream>>>(
      op, n, head, groups);
  return cudaGetLastError();
}

// Calls f(typed grad pointer) for the storage type grad_dtype.
template <typename F>
cudaError_t with_grad_type(int grad_dtype, const void* grad, F&& f) {
  switch (grad_dtype) {
    case kF32:
      return f(static_cast<const float*>(grad));
    case kBF16:
      return f(static_cast<const __nv_bfloat16*>(grad));
    case kF16:
      return f(static_cast<const __half*>(grad));
    default:
      return cudaErrorInvalidValue;
  }
}

template <typename P>
using elem_t = std::remove_cv_t<std::remove_pointer_t<P>>;

// Upper bound of the chunks adafactor_sq_sums uses (rows <= 0: unknown).
int64_t max_column_chunks(size_t n, int64_t rows, int64_t cols) {
  if (n == 0 || cols <= 0) return 0;
  int64_t bound = (static_cast<int64_t>(n) + cols - 1) / cols + 1;  // rows a piece can touch
  if (rows > 0) bound = std::min(bound, rows);
  return std::min((bound + kMinChunkRows - 1) / kMinChunkRows, kMaxChunks);
}

}  // namespace

cudaError_t adamw_update(int grad_dtype, float* master, float* m, float* v, const void* grad,
                         size_t n, float lr, float beta1, float beta2, float eps,
                         float weight_decay, float bias_corr1, float bias_corr2, float grad_scale,
                         cudaStream_t stream) {
  const AdamWParams c =
      make_adamw_params(lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale);
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    return launch_elementwise(AdamWOp<elem_t<decltype(g)>>{master, m, v, g, c}, master, n, stream);
  });
}

cudaError_t sgd_update(int grad_dtype, float* master, float* momentum_buf, const void* grad,
                       size_t n, float lr, float momentum, float dampening, float weight_decay,
                       bool nesterov, bool first_step, float grad_scale, cudaStream_t stream) {
  const SgdParams c =
      make_sgd_params(lr, momentum, dampening, weight_decay, nesterov, first_step, grad_scale);
  float* buf = c.use_momentum ? momentum_buf : nullptr;
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    return launch_elementwise(SgdOp<elem_t<decltype(g)>>{master, buf, g, c}, master, n, stream);
  });
}

cudaError_t lion_update(int grad_dtype, float* master, float* m, const void* grad, size_t n,
                        float lr, float beta1, float beta2, float weight_decay, float grad_scale,
                        cudaStream_t stream) {
  const LionParams c = make_lion_params(lr, beta1, beta2, weight_decay, grad_scale);
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    return launch_elementwise(LionOp<elem_t<decltype(g)>>{master, m, g, c}, master, n, stream);
  });
}

cudaError_t quantize_blocks(const float* code_map, const float* x, size_t n, size_t first_block,
                            uint8_t* codes, float* absmax, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const size_t fb = clamp_first_block(first_block);
  const size_t nblocks = quant_blocks(n, fb);
  const unsigned grid = static_cast<unsigned>(std::min(nblocks, kMaxGrid));
  quantize_kernel<<<grid, kThreads, 0, stream>>>(code_map, x, n, fb, nblocks, codes, absmax);
  return cudaGetLastError();
}

cudaError_t dequantize_blocks(const float* code_map, const uint8_t* codes, const float* absmax,
                              size_t n, size_t first_block, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  dequantize_kernel<<<grid_for(n), kThreads, 0, stream>>>(code_map, codes, absmax, n,
                                                          clamp_first_block(first_block), out);
  return cudaGetLastError();
}

cudaError_t adamw8bit_update(int grad_dtype, const float* signed_map, const float* unsigned_map,
                             float* master, uint8_t* m_codes, float* m_absmax, uint8_t* v_codes,
                             float* v_absmax, const void* grad, size_t n, size_t first_block,
                             float lr, float beta1, float beta2, float eps, float weight_decay,
                             float bias_corr1, float bias_corr2, float grad_scale,
                             cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const AdamWParams c =
      make_adamw_params(lr, beta1, beta2, eps, weight_decay, bias_corr1, bias_corr2, grad_scale);
  const size_t fb = clamp_first_block(first_block);
  const size_t nblocks = quant_blocks(n, fb);
  const unsigned grid = static_cast<unsigned>(std::min(nblocks, kMaxGrid));
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    adamw8bit_kernel<<<grid, kThreads, 0, stream>>>(signed_map, unsigned_map, master, m_codes,
                                                    m_absmax, v_codes, v_absmax, g, n, fb, nblocks,
                                                    c);
    return cudaGetLastError();
  });
}

size_t adafactor_workspace_bytes(size_t n, int64_t rows, int64_t cols) {
  const int64_t chunks = max_column_chunks(n, rows, cols);
  const size_t column_bytes =
      chunks > 1 ? static_cast<size_t>(chunks) * static_cast<size_t>(cols) * sizeof(double) : 0;
  return align_workspace(std::max(column_bytes, kRedBlocks * sizeof(double)));
}

cudaError_t adafactor_sq_sums(int grad_dtype, const void* grad, size_t n, int64_t first,
                              int64_t cols, float grad_scale, float eps1, double* row_sums,
                              double* col_sums, void* workspace, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (cols <= 0 || first < 0) return cudaErrorInvalidValue;
  int64_t r_first, nrows, rows_per_chunk, chunks;
  piece_rows(n, first, cols, r_first, nrows);
  column_chunks(nrows, rows_per_chunk, chunks);
  double* partials = static_cast<double*>(workspace);
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    using T = elem_t<decltype(g)>;
    adafactor_row_sums_kernel<T>
        <<<static_cast<unsigned>(std::min<int64_t>(nrows, static_cast<int64_t>(kMaxGrid))),
           kThreads, 0, stream>>>(g, n, first, cols, grad_scale, eps1, r_first, nrows, row_sums);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
                    static_cast<unsigned>(chunks));
    adafactor_col_sums_kernel<T><<<grid, kThreads, 0, stream>>>(g, n, first, cols, grad_scale, eps1,
                                                                r_first, nrows, rows_per_chunk,
                                                                chunks, col_sums, partials);
    err = cudaGetLastError();
    if (err != cudaSuccess || chunks == 1) return err;
    adafactor_col_combine_kernel<<<grid_for(static_cast<size_t>(cols)), kThreads, 0, stream>>>(
        partials, cols, chunks, col_sums);
    return cudaGetLastError();
  });
}

cudaError_t adafactor_factored_sq(int grad_dtype, const void* grad, size_t n, int64_t first,
                                  int64_t cols, float grad_scale, const float* rfac,
                                  const float* cfac, double* result, void* workspace,
                                  cudaStream_t stream) {
  if (n == 0) return cudaMemsetAsync(result, 0, sizeof(double), stream);
  if (cols <= 0 || first < 0) return cudaErrorInvalidValue;
  double* partials = static_cast<double*>(workspace);
  const unsigned blocks = reduction_blocks(n);
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    adafactor_factored_sq_kernel<<<blocks, kThreads, 0, stream>>>(g, n, first, cols, grad_scale,
                                                                  rfac, cfac, partials);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    sum_partials_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, result);
    return cudaGetLastError();
  });
}

cudaError_t adafactor_unfactored_v(int grad_dtype, const void* grad, float* v, size_t n,
                                   float grad_scale, float beta2t, float eps1, double* result,
                                   void* workspace, cudaStream_t stream) {
  if (n == 0) return cudaMemsetAsync(result, 0, sizeof(double), stream);
  double* partials = static_cast<double*>(workspace);
  const unsigned blocks = reduction_blocks(n);
  const float one_minus_beta2t = 1.0f - beta2t;
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    adafactor_unfactored_v_kernel<<<blocks, kThreads, 0, stream>>>(
        g, v, n, grad_scale, beta2t, one_minus_beta2t, eps1, partials);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    sum_partials_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, result);
    return cudaGetLastError();
  });
}

cudaError_t adafactor_apply(int grad_dtype, float* master, float* m, const void* grad, size_t n,
                            int64_t first, int64_t cols, const float* rfac, const float* cfac,
                            const float* v, float grad_scale, float scale, float lr, float beta1,
                            float weight_decay, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (rfac != nullptr && (cols <= 0 || first < 0 || cfac == nullptr)) return cudaErrorInvalidValue;
  if (rfac == nullptr && v == nullptr) return cudaErrorInvalidValue;
  const AdafactorParams c = make_adafactor_params(grad_scale, scale, lr, beta1, weight_decay);
  return with_grad_type(grad_dtype, grad, [&](auto g) {
    using Op = AdafactorApplyOp<elem_t<decltype(g)>>;
    return launch_elementwise(Op{master, m, g, rfac, cfac, v, first, cols, c}, master, n, stream);
  });
}

}  // namespace zt::kernels::cuda
