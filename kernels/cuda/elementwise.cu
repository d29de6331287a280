// CUDA twins of kernels/cpu/gelu.cpp and kernels/cpu/residual.cpp (contract: elementwise.cuh).
//
// One grid-stride kernel template serves the four ops. These are purely memory-bound, so the
// design goal is full bandwidth with few instructions: a thread loads 16 bytes from each input
// (4 fp32 or 8 bf16/fp16 values), applies the op in fp32 and stores 16 bytes. A flat range is cut
// into a scalar head (up to the first 16-byte boundary), 16-byte vectors and a scalar tail
// (plan_vec16), so a slice starting at any element still vectorises as long as all pointers share
// the same address modulo 16; if they do not, the whole range runs scalar. out may alias an input:
// each element is read and then written by the same thread, so plain (coherent) loads are used.
//
// GELU uses the CPU twin's formulation (Note [GELU through the logistic] in cpu/gelu.cpp):
// 0.5 (1 + tanh(u)) = 1 / (1 + e), e = exp(-2u), and 1 - tanh(u)^2 = 4 s (1 - s) with
// 1 - s = e s. e is computed as exp2(-2 log2(e) u) (one MUFU.EX2 instead of expf's range
// reduction, a few ulp) with the exponent capped at 126, so that for very negative x (e would
// overflow) 1 + e, s and e * s stay finite and the results go smoothly to 0 instead of NaN.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/device_util.cuh"
#include "kernels/cuda/elementwise.cuh"

namespace zt::kernels::cuda {
namespace {

using detail::kVecN;

constexpr int kThreads = 256;
constexpr size_t kMaxBlocks = size_t{1} << 16;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
constexpr float kMinus2Log2e = -2.0f * 1.4426950408889634f;

// e = exp(-2u), capped at 2^126 (see the file comment).
__device__ __forceinline__ float gelu_exp(float u) {
  return exp2f(fminf(kMinus2Log2e * u, 126.0f));
}

struct GeluFwd {
  __device__ __forceinline__ float operator()(float x, float /*unused*/) const {
    const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    return x / (1.0f + gelu_exp(u));
  }
};

// (inp, dout) -> dout * gelu'(inp)
struct GeluBwd {
  __device__ __forceinline__ float operator()(float x, float dout) const {
    const float x2 = x * x;
    const float u = kSqrt2OverPi * (x + kCubic * x2 * x);
    const float e = gelu_exp(u);
    const float s = 1.0f / (1.0f + e);
    const float du_dx = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x2);
    // d/dx [x s(u)] = s + 2 x s (1 - s) du/dx, 1 - s = e s.
    const float grad = s + 2.0f * x * s * (e * s) * du_dx;
    return dout * grad;
  }
};

struct Add {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

// out[i] = op(a[i], b[i]) (b unused and unread when !kBinary) for i in [0, n): elements [0, head)
// and [head + nvec * kVecN, n) one by one, the nvec vectors in between 16 bytes at a time.
template <typename T, typename Op, bool kBinary>
__global__ void __launch_bounds__(kThreads)
    elementwise_kernel(T* out, const T* a, const T* b, size_t n, size_t head, size_t nvec, Op op) {
  constexpr int kN = kVecN<T>;
  const size_t tid = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t v = tid; v < nvec; v += stride) {
    const size_t i = head + v * kN;
    float fa[kN], fb[kN];
    detail::unpack16<T>(detail::load_raw16(a + i), fa);
    if constexpr (kBinary) {
      detail::unpack16<T>(detail::load_raw16(b + i), fb);
    }
#pragma unroll
    for (int e = 0; e < kN; ++e) fa[e] = op(fa[e], kBinary ? fb[e] : 0.0f);
    detail::store_raw16(out + i, detail::pack16<T>(fa));
  }
  // Head and tail: fewer than 2 * kN elements, or all n when the pointers do not vectorise.
  const size_t tail = head + nvec * kN;
  const size_t scalars = head + (n - tail);
  for (size_t s = tid; s < scalars; s += stride) {
    const size_t i = s < head ? s : tail + (s - head);
    const float fb = kBinary ? detail::load_f32(b, i) : 0.0f;
    detail::store_f32(out, i, op(detail::load_f32(a, i), fb));
  }
}

template <typename Op, bool kBinary>
cudaError_t launch(int dtype, void* out, const void* a, const void* b, size_t n,
                   cudaStream_t stream) {
  return detail::dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    if (n == 0) return cudaSuccess;
    detail::VecPlan plan;
    if constexpr (kBinary) {
      plan = detail::plan_vec16(n, sizeof(T), {out, a, b});
    } else {
      plan = detail::plan_vec16(n, sizeof(T), {out, a});
    }
    const size_t scalars = n - plan.nvec * kVecN<T>;
    const size_t work = plan.nvec > scalars ? plan.nvec : scalars;
    const unsigned blocks = detail::grid_blocks(work, kThreads, kMaxBlocks);
    elementwise_kernel<T, Op, kBinary>
        <<<blocks, kThreads, 0, stream>>>(static_cast<T*>(out), static_cast<const T*>(a),
                                          static_cast<const T*>(b), n, plan.head, plan.nvec, Op{});
    return cudaGetLastError();
  });
}

}  // namespace

cudaError_t gelu_fwd(int dtype, void* out, const void* inp, size_t n, cudaStream_t stream) {
  return launch<GeluFwd, false>(dtype, out, inp, nullptr, n, stream);
}

cudaError_t gelu_bwd(int dtype, void* dinp, const void* inp, const void* dout, size_t n,
                     cudaStream_t stream) {
  return launch<GeluBwd, true>(dtype, dinp, inp, dout, n, stream);
}

cudaError_t residual_fwd(int dtype, void* out, const void* a, const void* b, size_t n,
                         cudaStream_t stream) {
  return launch<Add, true>(dtype, out, a, b, n, stream);
}

cudaError_t add_inplace(int dtype, void* dst, const void* src, size_t n, cudaStream_t stream) {
  return launch<Add, true>(dtype, dst, dst, src, n, stream);
}

}  // namespace zt::kernels::cuda
