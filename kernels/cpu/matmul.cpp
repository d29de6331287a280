// Linear layer, weight in nn.Linear layout.
//   matmul_fwd: inp (N,C), weight (OC,C), bias (OC) -> out (N,OC) (=)
//   matmul_bwd: dout (N,OC) -> dinp (N,C) (=), dweight (OC,C) (+=), dbias (OC) (+=)
//
// Note [16-bit GEMM staging]: OpenBLAS has no bf16/fp16 sgemm, so 16-bit operands are widened into
// the scratch and the GEMM runs in fp32. The weight is widened once; rows of N are staged in blocks
// sized so a block of inp and out stays under kStageFloats (every layer of a small GPT-2 is one
// block; the LM head's N x V output is cut into a few). Few blocks also means few OpenMP regions
// around the sgemm calls, each a synchronisation point. dweight and dbias accumulate in fp32 in
// the scratch across blocks and are added into the 16-bit gradient once, so it is rounded once per
// call. The blocking depends only on (N, C, OC): results are deterministic.
// fp32 needs no scratch: bias is pre-filled into out and sgemm runs with beta = 1, and
// dweight += is sgemm with beta = 1 directly.
//
// Note [GEMM reproducibility]: OpenBLAS partitions a GEMM by its thread count, and the partitions
// sum in different orders (measured with the OpenMP build: 1 and 2 threads differ in the last bit
// for shapes such as 64x96x130). GEMM outputs are therefore bitwise reproducible run to run at a
// fixed thread count only. dbias is our own column reduction, independent of the thread count.
//
// cblas is never called inside an OpenMP region: OpenBLAS opens its own parallel region.
#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <type_traits>

#include "kernels/cpu/vec_math.h"
#include "kernels/half.h"

namespace zt::kernels::cpu {
namespace {

constexpr size_t kStageFloats = size_t{1} << 23;  // 32 MiB of staged rows
constexpr int kMinRowBlock = 64;
constexpr int kColBlock = 64;

// Rows per staging block of the 16-bit path (Note [16-bit GEMM staging]); at least 1 when N > 0.
int row_block(int N, int C, int OC) {
  const size_t per_row = static_cast<size_t>(C) + static_cast<size_t>(OC);
  const size_t fit = per_row == 0 ? kStageFloats : kStageFloats / per_row;
  const size_t nb = std::max(fit, static_cast<size_t>(kMinRowBlock));
  return static_cast<int>(std::min(nb, static_cast<size_t>(std::max(N, 1))));
}

// out (rows,OC) = bias broadcast over rows.
void fill_bias_rows(float* out, const float* bias, int rows, int OC) {
  const bool parallel = static_cast<size_t>(rows) * OC >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int n = 0; n < rows; ++n) {
    float* o = out + static_cast<int64_t>(n) * OC;
#pragma omp simd
    for (int j = 0; j < OC; ++j) o[j] = bias[j];
  }
}

// acc (OC) += sum over rows of g (rows,OC): each column is summed from zero in row order by one
// thread, then added once.
void column_sums(float* acc, const float* g, int rows, int OC) {
  const int blocks = (OC + kColBlock - 1) / kColBlock;
  const bool parallel = static_cast<size_t>(rows) * OC >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int blk = 0; blk < blocks; ++blk) {
    const int c0 = blk * kColBlock;
    const int cw = std::min(kColBlock, OC - c0);
    float a[kColBlock] = {};
    for (int n = 0; n < rows; ++n) {
      const float* r = g + static_cast<int64_t>(n) * OC + c0;
#pragma omp simd
      for (int j = 0; j < cw; ++j) a[j] += r[j];
    }
    for (int j = 0; j < cw; ++j) acc[c0 + j] += a[j];
  }
}

// out (rows,OC) T = o32 (rows,OC) + bias (OC), rounded once; bias may be null. o32 is clobbered.
template <typename T>
void narrow_rows_plus_bias(T* out, float* o32, const T* bias, int rows, int OC) {
  if (bias == nullptr) {
    detail::narrow(out, o32, static_cast<size_t>(rows) * OC);
    return;
  }
  const bool parallel = static_cast<size_t>(rows) * OC >= detail::kMinParallel;
#pragma omp parallel for schedule(static) if (parallel)
  for (int n = 0; n < rows; ++n) {
    float* o = o32 + static_cast<int64_t>(n) * OC;
#pragma omp simd
    for (int j = 0; j < OC; ++j) o[j] += to_f32(bias[j]);
    detail::narrow_serial(out + static_cast<int64_t>(n) * OC, o, static_cast<size_t>(OC));
  }
}

// dst (n) T += src (n) fp32, one rounding per element.
template <typename T>
void add_into(T* dst, const float* src, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= detail::kMinParallel)
  for (size_t i = 0; i < n; ++i) dst[i] = detail::store<T>(to_f32(dst[i]) + src[i]);
}

}  // namespace

size_t matmul_fwd_scratch_bytes(int N, int C, int OC, bool is_fp32) {
  if (is_fp32) return 0;
  // weight (OC,C) + one row block of inp (nb,C) and out (nb,OC).
  const size_t nb = static_cast<size_t>(row_block(N, C, OC));
  return (static_cast<size_t>(OC) * C + nb * (static_cast<size_t>(C) + OC)) * sizeof(float);
}

template <typename T>
void matmul_fwd(T* out, const T* inp, const T* weight, const T* bias, int N, int C, int OC,
                void* scratch) {
  if (N <= 0 || OC <= 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (bias != nullptr) fill_bias_rows(out, bias, N, OC);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C,
                bias != nullptr ? 1.0f : 0.0f, out, OC);
  } else {
    const int nb = row_block(N, C, OC);
    float* w32 = static_cast<float*>(scratch);
    float* x32 = w32 + static_cast<size_t>(OC) * C;
    float* o32 = x32 + static_cast<size_t>(nb) * C;
    detail::widen(w32, weight, static_cast<size_t>(OC) * C);
    for (int n0 = 0; n0 < N; n0 += nb) {
      const int rows = std::min(nb, N - n0);
      detail::widen(x32, inp + static_cast<int64_t>(n0) * C, static_cast<size_t>(rows) * C);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, OC, C, 1.0f, x32, C, w32, C, 0.0f,
                  o32, OC);
      narrow_rows_plus_bias(out + static_cast<int64_t>(n0) * OC, o32, bias, rows, OC);
    }
  }
}

size_t matmul_bwd_scratch_bytes(int N, int C, int OC, bool is_fp32) {
  if (is_fp32) return 0;
  // weight (OC,C) + dweight accumulator (OC,C) + dbias accumulator (OC) + one row block of
  // dout (nb,OC) and of inp/dinp (nb,C), which share a buffer.
  const size_t nb = static_cast<size_t>(row_block(N, C, OC));
  const size_t oc = static_cast<size_t>(OC);
  const size_t c = static_cast<size_t>(C);
  return (2 * oc * c + oc + nb * (oc + c)) * sizeof(float);
}

template <typename T>
void matmul_bwd(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight, int N,
                int C, int OC, void* scratch) {
  if (N <= 0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (dinp != nullptr) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C,
                  0.0f, dinp, C);
    }
    if (dweight != nullptr) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
                  dweight, C);
    }
    if (dbias != nullptr) column_sums(dbias, dout, N, OC);
  } else {
    const size_t oc = static_cast<size_t>(OC);
    const size_t c = static_cast<size_t>(C);
    const int nb = row_block(N, C, OC);
    float* w32 = static_cast<float*>(scratch);
    float* dw32 = w32 + oc * c;
    float* db32 = dw32 + oc * c;
    float* g32 = db32 + oc;
    // x32 holds a block of inp rows, or of dinp rows before they are rounded.
    float* x32 = g32 + static_cast<size_t>(nb) * oc;
    if (dinp != nullptr) detail::widen(w32, weight, oc * c);
    if (dbias != nullptr) std::fill(db32, db32 + oc, 0.0f);
    for (int n0 = 0; n0 < N; n0 += nb) {
      const int rows = std::min(nb, N - n0);
      detail::widen(g32, dout + static_cast<int64_t>(n0) * OC, static_cast<size_t>(rows) * oc);
      if (dinp != nullptr) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, C, OC, 1.0f, g32, OC, w32, C,
                    0.0f, x32, C);
        detail::narrow(dinp + static_cast<int64_t>(n0) * C, x32, static_cast<size_t>(rows) * c);
      }
      if (dweight != nullptr) {
        detail::widen(x32, inp + static_cast<int64_t>(n0) * C, static_cast<size_t>(rows) * c);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, rows, 1.0f, g32, OC, x32, C,
                    n0 == 0 ? 0.0f : 1.0f, dw32, C);
      }
      if (dbias != nullptr) column_sums(db32, g32, rows, OC);
    }
    if (dweight != nullptr) add_into(dweight, dw32, oc * c);
    if (dbias != nullptr) add_into(dbias, db32, oc);
  }
}

#define ZT_INSTANTIATE_MATMUL(T)                                                       \
  template void matmul_fwd<T>(T*, const T*, const T*, const T*, int, int, int, void*); \
  template void matmul_bwd<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int, void*);
ZT_INSTANTIATE_MATMUL(float)
ZT_INSTANTIATE_MATMUL(bf16)
ZT_INSTANTIATE_MATMUL(fp16)
#undef ZT_INSTANTIATE_MATMUL

}  // namespace zt::kernels::cpu
