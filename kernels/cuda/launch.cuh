// Conventions shared by every CUDA launcher in kernels/cuda/ (the twins of kernels/cpu/).
//
// - Host-callable functions in namespace zt::kernels::cuda; each enqueues its kernels on `stream`
//   and returns the launch error (cudaGetLastError after the launch), never synchronises, never
//   allocates: scratch comes from the caller as `workspace` of at least the size the matching
//   *_workspace_bytes() returns (256-byte aligned; contents on entry do not matter).
// - Storage dtypes are passed as `int dtype` with the values of zt::DType (kernels/ depends on
//   nothing in runtime/): 0 fp32, 1 bf16, 2 fp16. Arithmetic is fp32 (fp64 where the CPU twin uses
//   fp64); 16-bit results are rounded to nearest even once, on store.
// - Semantics (= or +=, what may alias, what may be null) are exactly the CPU twin's in
//   kernels/<op>.h; the CPU twin is the reference the CUDA tests compare against.
// - Reductions are deterministic (a fixed order independent of the launch timing: no float
//   atomics) wherever the CPU twin is deterministic.
// - Every pointer is device memory (or managed memory), except where a comment says otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace zt::kernels::cuda {

constexpr int kF32 = 0, kBF16 = 1, kF16 = 2;

// Rounds a workspace size up to the 256-byte alignment the launchers assume for each part.
constexpr size_t align_workspace(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace zt::kernels::cuda
