// A CPU emulator of the CUDA execution model, so that the real kernels of kernels/cuda/*.cu run
// (slowly, but faithfully enough to find indexing, synchronisation and rounding bugs) on a machine
// without a GPU. transform_cuda.py rewrites a .cu into host C++ that includes this header (through
// the stub <cuda_runtime.h>, <cuda_bf16.h>, <cuda_fp16.h>, <cuda_pipeline.h>, <mma.h> of
// tests/emu/include): `k<<<grid, block, smem, stream>>>(args)` becomes a call of zt_emu::launch,
// `extern __shared__ T x[];` a pointer to the block's dynamic shared memory, and `__shared__ T
// x[N];` a reference to a per-block static shared variable. The runtime lives in cuda_emu.cpp.
//
// What it models:
//  - Launches are synchronous. The blocks of a grid run one after another (options().block_order:
//    forward, reverse or seeded random order); inside a block every CUDA thread is a fiber (a
//    user-mode context with its own stack) on the calling OS thread. A fiber runs until it blocks
//    in a synchronising operation (__syncthreads, a warp collective); then the emulator runs the
//    ready thread with the lowest index (options().thread_order kForward), the highest (kReverse)
//    or a random one (kRandom). Lowest-first runs warp 0 as far as its synchronisation allows
//    before warp 1 starts, and so on, which turns a missing __syncthreads into a wrong result;
//    highest-first does the same the other way round; random interleaves finely. Each execution
//    is one legal interleaving at the granularity of synchronisation points, repeatable for a
//    given order and seed, so running a kernel under several orders turns a missing
//    __syncthreads / __syncwarp / cp.async wait into a wrong or order-dependent result.
//  - __syncthreads (and _count / _and / _or): a block barrier. Reaching it after some thread of the
//    block has exited, exiting while others wait at it, or a deadlock (threads blocked in
//    different barriers or collectives) aborts with the kernel, block and thread.
//  - Warp collectives (__syncwarp, __shfl{,_up,_down,_xor}_sync, __ballot_sync, __any_sync,
//    __all_sync, __match_{any,all}_sync, __reduce_*_sync, and the wmma::*_sync operations)
//    complete when every live lane named in the mask has arrived with the same mask (exited lanes
//    are not waited for, as on sm_70+). A mask that leaves out the calling lane, lanes of one mask
//    meeting in different collectives, reading a lane that is outside the mask or has exited, and
//    a WMMA operation without all 32 lanes abort.
//  - Shared memory per block: dynamic (extern __shared__, 128-byte aligned) and static
//    (__shared__, each variable aligned exactly as its type requires, not more), both filled with
//    0xFF bytes (fp32 NaN, int -1) when the block starts; guard bytes after every variable are
//    checked when the block ends (and __shared__ arrays stay arrays, so UBSan builds check their
//    bounds). Static at most 48 KiB; dynamic at most 48 KiB unless raised by
//    cudaFuncSetAttribute, and static + dynamic at most the opt-in limit (options().smem_optin).
//  - Launch checks as the driver makes them (block <= 1024 threads and per-dimension limits, grid
//    limits, __launch_bounds__ maximum, dynamic shared memory attribute), reported through
//    cudaGetLastError; dimensions that do not fit the unsigned fields of dim3 abort.
//  - cp.async (__pipeline_memcpy_async / _commit / _wait_prior): 4, 8 or 16 bytes, both addresses
//    aligned to the size, global source, shared destination. Copied at issue, or with
//    options().late_async_copies only when a wait retires the group (so reading before the wait
//    sees the old bytes).
//  - WMMA m16n16k16 with bf16/fp16 inputs and fp32 accumulators: fragments map (lane, element) to
//    (row, column) by a deliberately scrambled fixed permutation (different for A, B and the
//    accumulator), so code that assumes a layout fails. load/store_matrix_sync and mma_sync are
//    warp-wide operations (all 32 lanes, "waits until all warp lanes have arrived"); the lanes
//    must pass the same pointer, ldm and layout, pointers 32-byte aligned, ldm a multiple of 16
//    bytes.
//  - Device properties from options(): compute capability (the attention launchers pick the
//    tensor-core path from it) and the opt-in shared memory per block.
//  - bf16/fp16 conversions round to nearest even (kernels/half.h, bit layouts as CUDA's). The
//    explicitly rounded intrinsics (__fmul_rn, __fadd_rn, __fmaf_rn, ...) are single IEEE
//    operations that the host compiler cannot fuse. __CUDA_ARCH__ is 900 in transformed code.
//
// ZT_EMU_VERBOSE=1 in the environment prints every launch (kernel, grid, block, dynamic shared
// memory) to stderr.
//
// What it does not model:
//  - Tensor-core rounding: mma_sync sums fp32 products in a fixed order; hardware accumulates with
//    its own (partly truncating) order, so WMMA results agree with a GPU only to fp32 rounding.
//  - Device math library accuracy (exp2f, logf, ... are the host's; device versions differ by a
//    few ulps) and nvcc's FMA contraction of plain expressions (the host compiler contracts its
//    own way).
//  - Memory ordering and races between blocks: blocks run one at a time to completion, so a kernel
//    that waits for another block spins forever; fences are no-ops, atomics trivially atomic.
//    Streams: every launch completes before it returns.
//  - Warp-synchronous code relying on implicit lockstep: a lane runs ahead of its warp until its
//    next collective (this is what the CUDA memory model allows since Volta).
//  - Timing, occupancy, registers, bank conflicts, coalescing, and the device/host memory split
//    (every pointer is host memory, so a host pointer passed to a kernel goes unnoticed;
//    out-of-bounds global accesses are found only by the tests' guard bytes or under ASan).
//  - Races inside a block are not reported as such, only through wrong or order-dependent results.
//  - Stricter than hardware: __syncthreads after some threads of the block exited aborts
//    (undefined behaviour per the programming guide, though current GPUs tolerate it).
//  - Grids are run block by block: huge grids are slow (a test keeps to a few hundred blocks);
//    dynamic parallelism, cooperative groups, clusters, TMA, thread-block-wide wgmma are absent.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/half.h"

// ---- CUDA keywords ----

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __constant__
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// transform_cuda.py rewrites every __shared__ declaration; one it missed does not compile.
#define __shared__ zt_emu_untransformed_shared_declaration

// ---- built-in vector types ----

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}  // NOLINT: implicit as in CUDA
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return {x, y, z, w};
}
inline double2 make_double2(double x, double y) { return {x, y}; }

// ---- bf16 / fp16 (bit layouts of kernels/half.h; conversions round to nearest even) ----

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(zt::to_bf16(f).bits) {}  // NOLINT: implicit as in cuda_bf16.h
  operator float() const { return zt::to_f32(zt::bf16{__x}); }
};
struct __half {
  unsigned short __x;
  __half() = default;
  __half(float f) : __x(zt::to_fp16(f).bits) {}  // NOLINT: implicit as in cuda_fp16.h
  operator float() const { return zt::to_f32(zt::fp16{__x}); }
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct alignas(4) __half2 {
  __half x, y;
};
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;
using half = __half;
using half2 = __half2;

inline float __bfloat162float(__nv_bfloat16 v) { return zt::to_f32(zt::bf16{v.__x}); }
inline float __half2float(__half v) { return zt::to_f32(zt::fp16{v.__x}); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  __nv_bfloat16 r;
  r.__x = zt::to_bf16(f).bits;
  return r;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline __half __float2half_rn(float f) {
  __half r;
  r.__x = zt::to_fp16(f).bits;
  return r;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
inline __half2 __floats2half2_rn(float a, float b) {
  return {__float2half_rn(a), __float2half_rn(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 v) {
  return {__bfloat162float(v.x), __bfloat162float(v.y)};
}
inline float2 __half22float2(__half2 v) { return {__half2float(v.x), __half2float(v.y)}; }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 v) { return v.__x; }
inline unsigned short __half_as_ushort(__half v) { return v.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 r;
  r.__x = u;
  return r;
}
inline __half __ushort_as_half(unsigned short u) {
  __half r;
  r.__x = u;
  return r;
}

// ---- runtime API types ----

enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorNotSupported = 801,
};
typedef enum cudaError cudaError_t;
typedef struct CUstream_st* cudaStream_t;
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

// ---- emulator controls and runtime interface ----

namespace zt_emu {

// Order in which runnable threads (or blocks) are scheduled.
enum class Order { kForward, kReverse, kRandom };

struct Options {
  int cc_major = 9;  // compute capability reported by cudaDeviceGetAttribute
  int cc_minor = 0;
  int smem_optin = 232448;  // opt-in shared memory per block (H100/H200: 227 KiB)
  int sm_count = 132;
  Order thread_order = Order::kForward;  // which ready thread runs next (see the file comment)
  Order block_order = Order::kForward;
  uint64_t seed = 1;  // for Order::kRandom
  bool late_async_copies = false;
};

// The options in force (tests change them; reset() restores the defaults).
Options& options();

struct Stats {
  long launches = 0;  // kernels run
  long blocks = 0;
  long threads = 0;
  long switches = 0;                 // fiber context switches
  std::vector<std::string> kernels;  // the kernels run, in order (as named at the launch site)
};
const Stats& stats();

// Restores the default options, clears the statistics, the sticky launch error and the kernel
// attributes set by cudaFuncSetAttribute.
void reset();

namespace detail {

// Prints the message with the current kernel, block and thread, and aborts.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

enum class Coll : int {
  kSyncwarp,
  kShfl,
  kShflUp,
  kShflDown,
  kShflXor,
  kBallot,
  kAny,
  kAll,
  kMatchAny,
  kMatchAll,
  kReduceAdd,
  kReduceMin,
  kReduceMax,
  kReduceAnd,
  kReduceOr,
  kReduceXor,
  kCustom,
};

// One lane's part in a warp collective (on the lane's stack while it waits).
struct LaneOp {
  unsigned mask = 0;
  Coll kind = Coll::kSyncwarp;
  int arg = 0;              // source lane, delta or lane mask of a shuffle
  int width = 32;           // shuffle segment width
  int size = 0;             // bytes of `in` used (shuffles, match)
  bool is_signed = false;   // reductions
  uint64_t in = 0;          // the lane's value (bits)
  uint64_t out = 0;         // its result (bits)
  unsigned pred_out = 0;    // __match_all_sync's predicate
  const void* ptr[3] = {};  // kCustom operands
  void* dst = nullptr;      // kCustom result
  // kCustom: called once, by the last lane to arrive, with the 32 lanes' ops (null where a lane
  // is not in the mask).
  void (*custom)(LaneOp* const* lanes) = nullptr;
};
// Blocks the calling lane until every lane of op.mask has arrived, then fills op.out.
void warp_collective(LaneOp& op);

// __syncthreads variants: kind 0 plain, 1 count, 2 and, 3 or; returns the reduced predicate.
int block_barrier(int kind, int pred);

// The block's dynamic shared memory (extern __shared__) and static shared variables.
void* dynamic_smem(size_t align);
void* static_shared(const void* key, size_t size, size_t align, const char* name);
bool in_shared(const void* p, size_t n);

// cp.async of the calling thread.
void async_copy(void* dst, const void* src, size_t n, size_t zfill);
void async_commit();
void async_wait_prior(size_t n);

// The dynamic shared memory limit set for a kernel (cudaFuncSetAttribute).
void set_max_dynamic_smem(const void* kernel, int bytes);
void set_error(cudaError_t e);
cudaError_t get_error(bool clear);

struct KernelLaunch {
  const char* name;  // the kernel expression as written at the launch site
  int max_threads;   // its __launch_bounds__ maximum (1024 without)
  const void* fn;
  dim3 grid, block;
  size_t smem;
  void (*invoke)(void* ctx);  // runs the kernel body for the current thread
  void* ctx;
};
void run(const KernelLaunch& launch);

template <class T>
unsigned to_dim(T v, const char* what) {
  static_assert(std::is_integral_v<T>, "launch dimensions are integers or dim3");
  if constexpr (std::is_signed_v<T>) {
    if (v < 0) fail("launch %s dimension %lld is negative", what, static_cast<long long>(v));
  }
  if (static_cast<unsigned long long>(v) > 0xFFFFFFFFull) {
    fail("launch %s dimension %llu does not fit dim3's unsigned int", what,
         static_cast<unsigned long long>(v));
  }
  return static_cast<unsigned>(v);
}
inline dim3 to_dim3(dim3 d, const char*) { return d; }
template <class T>
dim3 to_dim3(T v, const char* what) {
  return dim3(to_dim(v, what));
}

template <class... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<P...> args;
  // Each thread gets its own copies of the parameters (a kernel may modify them).
  static void invoke(void* self) {
    auto* call = static_cast<KernelCall*>(self);
    std::apply(call->kernel, call->args);
  }
};

template <class F, class... A>
struct DeducedCall {
  F body;  // calls the kernel, deducing its template arguments from the arguments
  std::tuple<A...> args;
  static void invoke(void* self) {
    auto* call = static_cast<DeducedCall*>(self);
    std::apply(call->body, call->args);
  }
};

}  // namespace detail

// <<<grid, block[, smem[, stream]]>>> as written at the launch site.
struct LaunchConfig {
  dim3 grid, block;
  size_t smem = 0;
  cudaStream_t stream = nullptr;
  template <class G, class B>
  LaunchConfig(G g, B b) : grid(detail::to_dim3(g, "grid")), block(detail::to_dim3(b, "block")) {}
  template <class G, class B, class S>
  LaunchConfig(G g, B b, S s) : LaunchConfig(g, b) {
    smem = static_cast<size_t>(s);
  }
  template <class G, class B, class S>
  LaunchConfig(G g, B b, S s, cudaStream_t st) : LaunchConfig(g, b, s) {
    stream = st;
  }
};

// kernel<<<cfg>>>(args...): runs the whole grid before returning; errors go to cudaGetLastError.
template <class... P, class... A>
void launch(const char* name, int max_threads, void (*kernel)(P...), const LaunchConfig& cfg,
            A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  detail::KernelCall<P...> call{kernel, std::tuple<P...>(std::forward<A>(args)...)};
  detail::run({name, max_threads, reinterpret_cast<const void*>(kernel), cfg.grid, cfg.block,
               cfg.smem, &detail::KernelCall<P...>::invoke, &call});
}

// The same for a template kernel launched without template arguments: `body` calls it with the
// arguments (copies per thread) so that they deduce its template arguments. Without the kernel's
// address, its dynamic shared memory is limited to the default 48 KiB.
template <class F, class... A>
void launch_deduced(const char* name, int max_threads, const LaunchConfig& cfg, F body,
                    A&&... args) {
  detail::DeducedCall<F, std::decay_t<A>...> call{body, {std::forward<A>(args)...}};
  detail::run({name, max_threads, nullptr, cfg.grid, cfg.block, cfg.smem,
               &detail::DeducedCall<F, std::decay_t<A>...>::invoke, &call});
}

// A static __shared__ variable of type T (an array type for arrays): one per block, per
// declaration (kId) and type.
template <class T, int kId, size_t kAlign = alignof(T)>
T& shared_var(const char* name) {
  static const char key = 0;
  return *static_cast<T*>(detail::static_shared(&key, sizeof(T), kAlign, name));
}

}  // namespace zt_emu

// ---- built-in variables ----

// Set by the emulator for the running thread (all threads run on one OS thread).
inline uint3 threadIdx;
inline uint3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

// ---- synchronisation and warp intrinsics ----

inline void __syncthreads() { zt_emu::detail::block_barrier(0, 0); }
inline int __syncthreads_count(int pred) { return zt_emu::detail::block_barrier(1, pred); }
inline int __syncthreads_and(int pred) { return zt_emu::detail::block_barrier(2, pred); }
inline int __syncthreads_or(int pred) { return zt_emu::detail::block_barrier(3, pred); }
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
[[noreturn]] inline void __trap() { zt_emu::detail::fail("__trap() called"); }

inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) {
  zt_emu::detail::LaneOp op;
  op.mask = mask;
  op.kind = zt_emu::detail::Coll::kSyncwarp;
  zt_emu::detail::warp_collective(op);
}

namespace zt_emu::detail {
template <class T>
T shuffle(Coll kind, unsigned mask, T var, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move <= 8 bytes");
  LaneOp op;
  op.mask = mask;
  op.kind = kind;
  op.arg = arg;
  op.width = width;
  op.size = sizeof(T);
  std::memcpy(&op.in, &var, sizeof(T));
  warp_collective(op);
  T r;
  std::memcpy(&r, &op.out, sizeof(T));
  return r;
}
template <class T>
uint64_t reduce_op(Coll kind, unsigned mask, T v) {
  static_assert(std::is_integral_v<T> && sizeof(T) == 4, "__reduce_*_sync: 32-bit integers");
  LaneOp op;
  op.mask = mask;
  op.kind = kind;
  op.size = 4;
  op.is_signed = std::is_signed_v<T>;
  op.in = static_cast<uint32_t>(v);
  warp_collective(op);
  return op.out;
}
}  // namespace zt_emu::detail

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return zt_emu::detail::shuffle(zt_emu::detail::Coll::kShfl, mask, var, src_lane, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return zt_emu::detail::shuffle(zt_emu::detail::Coll::kShflUp, mask, var, static_cast<int>(delta),
                                 width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return zt_emu::detail::shuffle(zt_emu::detail::Coll::kShflDown, mask, var,
                                 static_cast<int>(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return zt_emu::detail::shuffle(zt_emu::detail::Coll::kShflXor, mask, var, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(zt_emu::detail::shuffle(zt_emu::detail::Coll::kBallot, mask,
                                                       static_cast<unsigned>(pred != 0), 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(zt_emu::detail::shuffle(zt_emu::detail::Coll::kAny, mask,
                                                  static_cast<unsigned>(pred != 0), 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(zt_emu::detail::shuffle(zt_emu::detail::Coll::kAll, mask,
                                                  static_cast<unsigned>(pred != 0), 0, 32));
}
template <class T>
unsigned __match_any_sync(unsigned mask, T value) {
  static_assert(std::is_integral_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "32/64-bit values");
  return static_cast<unsigned>(
      zt_emu::detail::shuffle(zt_emu::detail::Coll::kMatchAny, mask, value, 0, 32));
}
template <class T>
unsigned __match_all_sync(unsigned mask, T value, int* pred) {
  static_assert(std::is_integral_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "32/64-bit values");
  zt_emu::detail::LaneOp op;
  op.mask = mask;
  op.kind = zt_emu::detail::Coll::kMatchAll;
  op.size = sizeof(T);
  std::memcpy(&op.in, &value, sizeof(T));
  zt_emu::detail::warp_collective(op);
  *pred = static_cast<int>(op.pred_out);
  return static_cast<unsigned>(op.out);
}
template <class T>
T __reduce_add_sync(unsigned mask, T v) {
  return static_cast<T>(zt_emu::detail::reduce_op(zt_emu::detail::Coll::kReduceAdd, mask, v));
}
template <class T>
T __reduce_min_sync(unsigned mask, T v) {
  return static_cast<T>(zt_emu::detail::reduce_op(zt_emu::detail::Coll::kReduceMin, mask, v));
}
template <class T>
T __reduce_max_sync(unsigned mask, T v) {
  return static_cast<T>(zt_emu::detail::reduce_op(zt_emu::detail::Coll::kReduceMax, mask, v));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v) {
  return static_cast<unsigned>(
      zt_emu::detail::reduce_op(zt_emu::detail::Coll::kReduceAnd, mask, v));
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v) {
  return static_cast<unsigned>(zt_emu::detail::reduce_op(zt_emu::detail::Coll::kReduceOr, mask, v));
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) {
  return static_cast<unsigned>(
      zt_emu::detail::reduce_op(zt_emu::detail::Coll::kReduceXor, mask, v));
}

// ---- atomics (blocks and threads never run concurrently: plain read-modify-write) ----

template <class T, class U>
T atomicAdd(T* p, U v) {
  const T old = *p;
  *p = static_cast<T>(old + static_cast<T>(v));
  return old;
}
template <class T, class U>
T atomicSub(T* p, U v) {
  const T old = *p;
  *p = static_cast<T>(old - static_cast<T>(v));
  return old;
}
template <class T, class U>
T atomicMax(T* p, U v) {
  const T old = *p;
  if (static_cast<T>(v) > old) *p = static_cast<T>(v);
  return old;
}
template <class T, class U>
T atomicMin(T* p, U v) {
  const T old = *p;
  if (static_cast<T>(v) < old) *p = static_cast<T>(v);
  return old;
}
template <class T, class U>
T atomicExch(T* p, U v) {
  const T old = *p;
  *p = static_cast<T>(v);
  return old;
}
template <class T, class U, class V>
T atomicCAS(T* p, U compare, V v) {
  const T old = *p;
  if (old == static_cast<T>(compare)) *p = static_cast<T>(v);
  return old;
}
template <class T, class U>
T atomicAnd(T* p, U v) {
  const T old = *p;
  *p = static_cast<T>(old & static_cast<T>(v));
  return old;
}
template <class T, class U>
T atomicOr(T* p, U v) {
  const T old = *p;
  *p = static_cast<T>(old | static_cast<T>(v));
  return old;
}
template <class T, class U>
T atomicXor(T* p, U v) {
  const T old = *p;
  *p = static_cast<T>(old ^ static_cast<T>(v));
  return old;
}

// ---- loads with cache hints ----

template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}
template <class T>
T __ldcg(const T* p) {
  return *p;
}
template <class T>
void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
void __stcg(T* p, T v) {
  *p = v;
}

// ---- integer and bit intrinsics ----

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) {
  return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x));
}
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (s & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (s & 31));
}

// CUDA's global min/max overloads (device code calls them unqualified, on mixed integer types).
template <class A, class B>
constexpr std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(b) < static_cast<C>(a) ? static_cast<C>(b) : static_cast<C>(a);
}
template <class A, class B>
constexpr std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(b) : static_cast<C>(a);
}
inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a < b ? b : a; }

// ---- bit casts and explicitly rounded arithmetic ----

namespace zt_emu::detail {
template <class To, class From>
To bits(From f) {
  static_assert(sizeof(To) == sizeof(From));
  To t;
  std::memcpy(&t, &f, sizeof(To));
  return t;
}
// An optimisation barrier: the value is opaque afterwards, so the host compiler can neither fuse
// the operation that produced it into an FMA nor reassociate across it.
template <class T>
T opaque(T v) {
  asm volatile("" : "+m"(v));
  return v;
}
}  // namespace zt_emu::detail

inline float __int_as_float(int x) { return zt_emu::detail::bits<float>(x); }
inline int __float_as_int(float x) { return zt_emu::detail::bits<int>(x); }
inline float __uint_as_float(unsigned x) { return zt_emu::detail::bits<float>(x); }
inline unsigned __float_as_uint(float x) { return zt_emu::detail::bits<unsigned>(x); }
inline double __longlong_as_double(long long x) { return zt_emu::detail::bits<double>(x); }
inline long long __double_as_longlong(double x) { return zt_emu::detail::bits<long long>(x); }

inline float __fadd_rn(float a, float b) { return zt_emu::detail::opaque(a + b); }
inline float __fsub_rn(float a, float b) { return zt_emu::detail::opaque(a - b); }
inline float __fmul_rn(float a, float b) { return zt_emu::detail::opaque(a * b); }
inline float __fdiv_rn(float a, float b) { return zt_emu::detail::opaque(a / b); }
inline float __fsqrt_rn(float a) { return zt_emu::detail::opaque(std::sqrt(a)); }
inline float __frcp_rn(float a) { return zt_emu::detail::opaque(1.0f / a); }
inline float __fmaf_rn(float a, float b, float c) {
  return zt_emu::detail::opaque(std::fma(a, b, c));
}
inline double __dadd_rn(double a, double b) { return zt_emu::detail::opaque(a + b); }
inline double __dsub_rn(double a, double b) { return zt_emu::detail::opaque(a - b); }
inline double __dmul_rn(double a, double b) { return zt_emu::detail::opaque(a * b); }
inline double __ddiv_rn(double a, double b) { return zt_emu::detail::opaque(a / b); }
inline double __dsqrt_rn(double a) { return zt_emu::detail::opaque(std::sqrt(a)); }
inline double __fma_rn(double a, double b, double c) {
  return zt_emu::detail::opaque(std::fma(a, b, c));
}
// Fast-math intrinsics: the host's accurate functions (the device's are approximations).
inline float __expf(float x) { return std::exp(x); }
inline float __exp2f(float x) { return std::exp2(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f));
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }

// ---- runtime API (synchronous; every pointer is host memory) ----

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  const zt_emu::Options& o = zt_emu::options();
  switch (attr) {
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = 48 * 1024;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = o.sm_count;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor:
      *value = o.cc_major;
      return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor:
      *value = o.cc_minor;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = o.smem_optin;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
inline cudaError_t cudaGetLastError() { return zt_emu::detail::get_error(true); }
inline cudaError_t cudaPeekAtLastError() { return zt_emu::detail::get_error(false); }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources:
      return "too many resources requested for launch";
    default:
      return "cuda error (emulated)";
  }
}
template <class F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  if (value < 0 || value > zt_emu::options().smem_optin) return cudaErrorInvalidValue;
  zt_emu::detail::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t n, cudaStream_t = nullptr) {
  if (n != 0) std::memset(p, value, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int value, size_t n) { return cudaMemsetAsync(p, value, n); }
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  if (n != 0) std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind k) {
  return cudaMemcpyAsync(dst, src, n, k);
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

// ---- cuda_pipeline.h primitives (cp.async) ----

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t size_and_align,
                                    size_t zfill = 0) {
  zt_emu::detail::async_copy(dst, src, size_and_align, zfill);
}
inline void __pipeline_commit() { zt_emu::detail::async_commit(); }
inline void __pipeline_wait_prior(size_t n) { zt_emu::detail::async_wait_prior(n); }

// ---- mma.h: WMMA m16n16k16, bf16/fp16 inputs, fp32 accumulators ----

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has m16n16k16 only");
  using element_type = T;
  enum { num_elements = 8 };  // 256 elements over 32 lanes
  T x[num_elements];
};

namespace detail {
// (lane, element) -> (row, column): bijections of [0, 256) that scatter each lane's elements over
// the tile, different for A, B and the accumulator.
inline void map_a(int lane, int i, int& r, int& c) {
  const int idx = ((lane * 8 + i) * 37 + 5) & 255;
  r = idx >> 4;
  c = idx & 15;
}
inline void map_b(int lane, int i, int& r, int& c) {
  const int idx = ((lane * 8 + i) * 53 + 11) & 255;
  r = idx >> 4;
  c = idx & 15;
}
inline void map_acc(int lane, int i, int& r, int& c) {
  const int idx = ((lane * 8 + i) * 101 + 7) & 255;
  r = idx >> 4;
  c = idx & 15;
}
inline void check(const void* p, unsigned ldm, size_t elem, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    zt_emu::detail::fail("wmma::%s: pointer %p not 32-byte aligned", what, p);
  if ((ldm * elem) % 16 != 0)
    zt_emu::detail::fail("wmma::%s: ldm %u is not a multiple of 16 bytes", what, ldm);
}
inline float f32(float v) { return v; }
inline float f32(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float f32(__half v) { return __half2float(v); }
template <class T>
constexpr bool kInput = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// A fragment load or store is one warp-wide operation ("waits until all warp lanes have arrived",
// as the CUDA programming guide puts it): the last lane to arrive moves the elements of all 32
// lanes, after checking that they passed the same pointer, ldm and layout. kMap: 0 matrix_a,
// 1 matrix_b, 2 accumulator.
template <class Frag, class T, int kMap, bool kStore>
void move_compute(zt_emu::detail::LaneOp* const* lanes) {
  const char* what = kStore ? "store_matrix_sync" : "load_matrix_sync";
  const zt_emu::detail::LaneOp& first = *lanes[0];
  for (int l = 1; l < 32; ++l) {
    const zt_emu::detail::LaneOp& op = *lanes[l];
    if (op.ptr[1] != first.ptr[1] || op.arg != first.arg || op.width != first.width) {
      zt_emu::detail::fail(
          "wmma::%s: lane %d passes (%p, ldm %d, layout %d), lane 0 (%p, ldm %d, "
          "layout %d): they must agree",
          what, l, op.ptr[1], op.arg, op.width, first.ptr[1], first.arg, first.width);
    }
  }
  const auto ldm = static_cast<unsigned>(first.arg);
  const bool row = first.width != 0;
  check(first.ptr[1], ldm, sizeof(T), what);
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < Frag::num_elements; ++i) {
      int r, c;
      (kMap == 0 ? map_a : kMap == 1 ? map_b : map_acc)(l, i, r, c);
      const size_t idx = row ? static_cast<size_t>(r) * ldm + c : r + static_cast<size_t>(c) * ldm;
      if constexpr (kStore) {
        static_cast<T*>(const_cast<void*>(first.ptr[1]))[idx] =
            static_cast<const Frag*>(lanes[l]->ptr[0])->x[i];
      } else {
        static_cast<Frag*>(lanes[l]->dst)->x[i] = static_cast<const T*>(first.ptr[1])[idx];
      }
    }
  }
}

template <int kMap, bool kStore, class Frag, class T>
void move(Frag& f, const T* p, unsigned ldm, bool row) {
  zt_emu::detail::LaneOp op;
  op.mask = 0xFFFFFFFFu;
  op.kind = zt_emu::detail::Coll::kCustom;
  op.ptr[0] = &f;
  op.dst = const_cast<std::remove_const_t<Frag>*>(&f);
  op.ptr[1] = p;
  op.arg = static_cast<int>(ldm);
  op.width = row ? 1 : 0;
  op.custom = &move_compute<std::remove_const_t<Frag>, T, kMap, kStore>;
  zt_emu::detail::warp_collective(op);
}

template <class FA, class FB>
void mma_compute(zt_emu::detail::LaneOp* const* lanes) {
  using FC = fragment<accumulator, 16, 16, 16, float>;
  float a[16][16], b[16][16], c[16][16];
  for (int l = 0; l < 32; ++l) {
    const auto* fa = static_cast<const FA*>(lanes[l]->ptr[0]);
    const auto* fb = static_cast<const FB*>(lanes[l]->ptr[1]);
    const auto* fc = static_cast<const FC*>(lanes[l]->ptr[2]);
    for (int i = 0; i < 8; ++i) {
      int r, col;
      map_a(l, i, r, col);
      a[r][col] = f32(fa->x[i]);
      map_b(l, i, r, col);
      b[r][col] = f32(fb->x[i]);
      map_acc(l, i, r, col);
      c[r][col] = fc->x[i];
    }
  }
  // Every lane's c is read before any d is written (d may be c).
  for (int l = 0; l < 32; ++l) {
    auto* fd = static_cast<FC*>(lanes[l]->dst);
    for (int i = 0; i < 8; ++i) {
      int r, col;
      map_acc(l, i, r, col);
      float s = c[r][col];
      for (int k = 0; k < 16; ++k) s += a[r][k] * b[k][col];
      fd->x[i] = s;
    }
  }
}
}  // namespace detail

template <class Use, class T, class L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
  for (auto& e : f.x) e = T(v);
}
template <class T, class L>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(detail::kInput<T>, "matrix_a of bf16 or fp16");
  detail::move<0, false>(f, p, ldm, std::is_same_v<L, row_major>);
}
template <class T, class L>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(detail::kInput<T>, "matrix_b of bf16 or fp16");
  detail::move<1, false>(f, p, ldm, std::is_same_v<L, row_major>);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
  detail::move<2, false>(f, p, ldm, layout == mem_row_major);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  detail::move<2, true>(f, p, ldm, layout == mem_row_major);
}
// d = a b + c over the warp (a warp collective: every lane must call it).
template <class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  static_assert(std::is_same_v<TA, TB> && detail::kInput<TA>, "bf16 x bf16 or fp16 x fp16");
  zt_emu::detail::LaneOp op;
  op.mask = 0xFFFFFFFFu;
  op.kind = zt_emu::detail::Coll::kCustom;
  op.ptr[0] = &a;
  op.ptr[1] = &b;
  op.ptr[2] = &c;
  op.dst = &d;
  op.custom = &detail::mma_compute<fragment<matrix_a, 16, 16, 16, TA, LA>,
                                   fragment<matrix_b, 16, 16, 16, TB, LB>>;
  zt_emu::detail::warp_collective(op);
}

}  // namespace nvcuda::wmma
