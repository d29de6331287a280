// Host launchers of the emulator's self-test kernels (emu_selftest_kernels.cu, rewritten by
// transform_cuda.py like kernels/cuda/*.cu). Each returns the launch error (cudaGetLastError).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace zt_emu_selftest {

// Warp intrinsics: one warp; out[k * 32 + lane] = result k of lane (see the .cu for the list).
constexpr int kWarpResults = 14;
cudaError_t warp_intrinsics(uint32_t* out);

// __syncthreads_count / _and / _or over a block of n threads, pred = threadIdx.x % 3 == 0.
cudaError_t block_votes(int n, int* out3);

// Static shared memory: out[2 * b] = the bits of element 5 of a __shared__ float array as block b
// first finds it, out[2 * b + 1] = the sum written and read back through shared memory.
cudaError_t static_shared(int blocks, uint32_t* out);

// Dynamic shared memory of `bytes`: every thread writes and reads back its part; *ok = 1 when
// the block saw its own data. `opt_in`: raise the kernel's limit first.
cudaError_t dynamic_shared(size_t bytes, bool opt_in, int* ok);

// A kernel with __launch_bounds__(64) launched with `grid` x `block` threads.
cudaError_t bounded(dim3 grid, dim3 block);

// cp.async of one float per thread into shared memory: before[t] = what thread t reads at the
// destination before waiting, after[t] = after waiting.
cudaError_t async_copy(const float* src, float* before, float* after);

// order[k] = linear index of the k-th block to run (blocks of `threads` threads), and
// first_thread[b] = threadIdx.x of the first thread of block b to take a ticket.
cudaError_t run_order(int blocks, int threads, int* order, int* first_thread);

// WMMA: d (16x16 fp32, row major) = a (16x16 bf16, row major) b (16x16 bf16, column major) + c.
cudaError_t wmma_product(const void* a, const void* b, const float* c, float* d);

// Programs with a bug the emulator must report (it aborts): 0 a barrier that some threads skip,
// 1 __syncthreads after an early return, 2 a shuffle reading an exited lane, 3 a mask without the
// calling lane, 4 a misaligned cp.async, 5 a write past a __shared__ array, 6 a deadlock between a
// warp collective and a block barrier, 7 WMMA lanes passing different pointers, 8 a grid
// dimension that does not fit dim3.
cudaError_t buggy(int which);

}  // namespace zt_emu_selftest
