// Self-test kernels of the CUDA emulator (launchers: emu_selftest_kernels.h). CUDA source, built
// only for the emulator (transform_cuda.py), by emu_selftest_emu_test.
#include "tests/emu/emu_selftest_kernels.h"

#include <cuda_bf16.h>
#include <cuda_pipeline.h>
#include <mma.h>

namespace zt_emu_selftest {
namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;

__global__ void warp_kernel(uint32_t* out) {
  const unsigned lane = threadIdx.x;
  uint32_t r[kWarpResults];
  r[0] = __shfl_sync(kFull, lane * 10, 3);
  r[1] = __shfl_sync(kFull, lane, 5, 8);
  r[2] = __shfl_up_sync(kFull, lane, 3);
  r[3] = __shfl_up_sync(kFull, lane, 2, 16);
  r[4] = __shfl_down_sync(kFull, lane, 5);
  r[5] = __shfl_down_sync(kFull, lane, 1, 4);
  r[6] = __shfl_xor_sync(kFull, lane, 9);
  r[7] = __ballot_sync(kFull, lane % 3 == 0);
  r[8] = static_cast<uint32_t>(__any_sync(kFull, lane == 31));
  r[9] = static_cast<uint32_t>(__all_sync(kFull, lane < 31));
  r[10] = __match_any_sync(kFull, static_cast<int>(lane % 3));
  r[11] = __reduce_add_sync(kFull, lane);
  r[12] = __reduce_max_sync(kFull, lane * 7 % 32);
  // Two halves of the warp in separate collectives at the same time.
  if (lane < 16) {
    r[13] = __shfl_xor_sync(0x0000FFFFu, lane, 1);
  } else {
    r[13] = __shfl_xor_sync(0xFFFF0000u, lane, 2);
  }
  for (int k = 0; k < kWarpResults; ++k) out[k * 32 + lane] = r[k];
}

__global__ void votes_kernel(int* out) {
  const int pred = threadIdx.x % 3 == 0;
  const int count = __syncthreads_count(pred);
  const int all = __syncthreads_and(pred);
  const int any = __syncthreads_or(pred);
  if (threadIdx.x == 0) {
    out[0] = count;
    out[1] = all;
    out[2] = any;
  }
}

__global__ void static_shared_kernel(uint32_t* out) {
  __shared__ float buf[64];
  __shared__ int total;
  if (threadIdx.x == 0) {
    out[2 * blockIdx.x] = __float_as_uint(buf[5]);  // before anyone wrote it
    total = 0;
  }
  __syncthreads();
  buf[threadIdx.x] = static_cast<float>(blockIdx.x + threadIdx.x);
  atomicAdd(&total, static_cast<int>(threadIdx.x));
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.0f;
    for (int i = 0; i < 64; ++i) s += buf[i];
    out[2 * blockIdx.x + 1] = static_cast<uint32_t>(s) + static_cast<uint32_t>(total);
  }
}

__global__ void dynamic_kernel(size_t n, int* ok) {
  extern __shared__ float dyn[];
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = static_cast<float>(i);
  __syncthreads();
  int good = 1;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x)
    good &= dyn[n - 1 - i] == static_cast<float>(n - 1 - i);
  good = __syncthreads_and(good);
  if (threadIdx.x == 0) *ok = good;
}

__global__ void __launch_bounds__(64) bounded_kernel(int* unused) {
  if (unused != nullptr) *unused = 1;
}

__global__ void async_kernel(const float* src, float* before, float* after) {
  __shared__ float s[32];
  const int t = threadIdx.x;
  s[t] = -1.0f;
  __pipeline_memcpy_async(&s[t], src + t, sizeof(float));
  __pipeline_commit();
  before[t] = s[t];
  __pipeline_wait_prior(0);
  after[t] = s[t];
}

__global__ void order_kernel(int* counter, int* order, int* first_thread) {
  const int b = static_cast<int>(blockIdx.x);
  atomicCAS(&first_thread[b], -1, static_cast<int>(threadIdx.x));
  if (threadIdx.x == 0) order[atomicAdd(counter, 1)] = b;
}

__global__ void wmma_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c,
                            float* d) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

// ---- bugs ----

__global__ void skipped_barrier_kernel() {
  if (threadIdx.x < 32) __syncthreads();
}

__global__ void barrier_after_return_kernel(int* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_exited_kernel(int* out) {
  const int lane = threadIdx.x;
  if (lane >= 16) return;
  out[lane] = __shfl_sync(kFull, lane, lane + 16);
}

__global__ void mask_without_caller_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, static_cast<int>(threadIdx.x), 0);
}

__global__ void misaligned_async_kernel(const float* src) {
  __shared__ float s[64];
  __pipeline_memcpy_async(&s[1 + 4 * threadIdx.x], src, 16);
  __pipeline_commit();
  __pipeline_wait_prior(0);
}

__global__ void shared_overflow_kernel(int* out) {
  __shared__ int a[8];
  a[threadIdx.x] = 1;  // 32 threads
  __syncthreads();
  out[threadIdx.x] = a[threadIdx.x % 8];
}

__global__ void warp_block_deadlock_kernel() {
  if (threadIdx.x < 16) {
    __syncwarp();
    __syncthreads();
  } else {
    __syncthreads();
    __syncwarp();
  }
}

__global__ void wmma_divergent_kernel(const __nv_bfloat16* a) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a + (threadIdx.x == 3 ? 16 : 0), 16);
}

__global__ void empty_kernel() {}

}  // namespace

cudaError_t warp_intrinsics(uint32_t* out) {
  warp_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}

cudaError_t block_votes(int n, int* out3) {
  votes_kernel<<<1, n>>>(out3);
  return cudaGetLastError();
}

cudaError_t static_shared(int blocks, uint32_t* out) {
  static_shared_kernel<<<blocks, 64>>>(out);
  return cudaGetLastError();
}

cudaError_t dynamic_shared(size_t bytes, bool opt_in, int* ok) {
  if (opt_in) {
    const cudaError_t e = cudaFuncSetAttribute(
        dynamic_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
    if (e != cudaSuccess) return e;
  }
  dynamic_kernel<<<2, 128, bytes>>>(bytes / sizeof(float), ok);
  return cudaGetLastError();
}

cudaError_t bounded(dim3 grid, dim3 block) {
  bounded_kernel<<<grid, block>>>(nullptr);
  return cudaGetLastError();
}

cudaError_t async_copy(const float* src, float* before, float* after) {
  async_kernel<<<1, 32>>>(src, before, after);
  return cudaGetLastError();
}

cudaError_t run_order(int blocks, int threads, int* order, int* first_thread) {
  int counter = 0;
  order_kernel<<<blocks, threads>>>(&counter, order, first_thread);
  return cudaGetLastError();
}

cudaError_t wmma_product(const void* a, const void* b, const float* c, float* d) {
  wmma_kernel<<<1, 32>>>(static_cast<const __nv_bfloat16*>(a), static_cast<const __nv_bfloat16*>(b),
                         c, d);
  return cudaGetLastError();
}

cudaError_t buggy(int which) {
  static int out[64];
  static float src[64];
  alignas(32) static __nv_bfloat16 a[512];
  switch (which) {
    case 0:
      skipped_barrier_kernel<<<1, 64>>>();
      break;
    case 1:
      barrier_after_return_kernel<<<1, 64>>>(out);
      break;
    case 2:
      shuffle_exited_kernel<<<1, 32>>>(out);
      break;
    case 3:
      mask_without_caller_kernel<<<1, 32>>>(out);
      break;
    case 4:
      misaligned_async_kernel<<<1, 4>>>(src);
      break;
    case 5:
      shared_overflow_kernel<<<1, 32>>>(out);
      break;
    case 6:
      warp_block_deadlock_kernel<<<1, 32>>>();
      break;
    case 7:
      wmma_divergent_kernel<<<1, 32>>>(a);
      break;
    default:
      empty_kernel<<<size_t{1} << 33, 32>>>();
      break;
  }
  return cudaGetLastError();
}

}  // namespace zt_emu_selftest
