// Helpers of the CUDA tests: a skip when there is no device, and "twin" tensors — the same values
// in a CPU-backend buffer and a CUDA-backend buffer — so each op runs on both backends from the
// same inputs and the CPU backend (the reference, itself checked against fp64 loops in
// tests/cpu) judges the CUDA result, with one per-dtype tolerance table.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/cuda_device.h"
#include "runtime/core/dtype.h"

namespace zt {
// gtest names parameters with PrintTo (found by ADL) in test names and failure messages.
inline void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
}  // namespace zt

namespace zt::cudatest {

// Skips the calling test when no CUDA device is usable, saying why.
#define ZT_REQUIRE_CUDA_DEVICE()                                                              \
  do {                                                                                        \
    auto zt_devs_ = ::zt::cuda::list_devices();                                               \
    if (!zt_devs_.is_ok())                                                                    \
      GTEST_SKIP() << "skipped: needs a CUDA device: " << zt_devs_.status().message() << " (" \
                   << ::zt::cuda::library_versions() << ")";                                  \
  } while (0)

// Tolerances, |cuda - cpu| <= atol + rtol |cpu|. Elementwise ops differ only by the rounding of
// fp32 math (and a 16-bit store: at most one ulp of the dtype); reductions (GEMMs, norms,
// attention, parameter gradients) also by their summation order.
struct Tolerance {
  double rtol, atol;
};
enum class OpKind { kElementwise, kReduction };
inline Tolerance tolerance(DType t, OpKind k) {
  switch (t) {
    case DType::kF32:
      return k == OpKind::kElementwise ? Tolerance{2e-6, 1e-6} : Tolerance{2e-4, 2e-4};
    case DType::kBF16:  // one bf16 ulp is 2^-8 relative; two ulps allowed
      return k == OpKind::kElementwise ? Tolerance{8e-3, 1e-3} : Tolerance{1.6e-2, 1.6e-2};
    case DType::kF16:  // one fp16 ulp is 2^-11 relative
      return k == OpKind::kElementwise ? Tolerance{1e-3, 1e-4} : Tolerance{4e-3, 4e-3};
  }
  return {0, 0};
}

inline std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// The same tensor on both backends.
class Twin {
 public:
  Twin() = default;
  Twin(Backend& cpu, Backend& gpu, DType dtype, Shape shape, const std::vector<float>& values)
      : cpu_be_(&cpu), gpu_be_(&gpu), dtype_(dtype), shape_(shape) {
    const size_t n = static_cast<size_t>(shape.numel());
    cpu_buf_ = std::move(cpu.allocate(n * dtype_size(dtype) + 64, MemCategory::kWorkspace)).value();
    gpu_buf_ = std::move(gpu.allocate(n * dtype_size(dtype) + 64, MemCategory::kWorkspace)).value();
    if (!values.empty()) set(values);
  }
  void set(const std::vector<float>& values) {
    const size_t n = static_cast<size_t>(shape_.numel());
    std::vector<uint8_t> bytes(n * dtype_size(dtype_));
    convert(values.data(), DType::kF32, bytes.data(), dtype_, n);
    std::memcpy(cpu_buf_.data(), bytes.data(), bytes.size());
    gpu_be_->copy(gpu_buf_.data(), bytes.data(), bytes.size());
  }
  Tensor cpu() const { return cpu_buf_.as(dtype_, shape_); }
  Tensor gpu() const { return gpu_buf_.as(dtype_, shape_); }
  std::vector<float> cpu_values() const { return to_f32(cpu_buf_.data(), false); }
  std::vector<float> gpu_values() const { return to_f32(gpu_buf_.data(), true); }
  std::vector<uint8_t> gpu_bytes() const {
    std::vector<uint8_t> b(static_cast<size_t>(shape_.numel()) * dtype_size(dtype_));
    gpu_be_->copy(b.data(), gpu_buf_.data(), b.size());
    return b;
  }
  DType dtype() const { return dtype_; }

 private:
  std::vector<float> to_f32(const void* src, bool device) const {
    const size_t n = static_cast<size_t>(shape_.numel());
    std::vector<uint8_t> bytes(n * dtype_size(dtype_));
    if (device)
      gpu_be_->copy(bytes.data(), src, bytes.size());
    else
      std::memcpy(bytes.data(), src, bytes.size());
    std::vector<float> out(n);
    convert(bytes.data(), dtype_, out.data(), DType::kF32, n);
    return out;
  }

  Backend* cpu_be_ = nullptr;
  Backend* gpu_be_ = nullptr;
  DType dtype_ = DType::kF32;
  Shape shape_;
  Buffer cpu_buf_, gpu_buf_;
};

// Compares the CUDA result with the CPU one: the number of elements out of tolerance must be 0;
// the message names the worst element.
inline ::testing::AssertionResult close(const std::string& what, const std::vector<float>& cpu,
                                        const std::vector<float>& gpu, Tolerance tol) {
  if (cpu.size() != gpu.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  size_t bad = 0, worst = 0;
  double worst_excess = -1.0, max_abs = 0.0;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double a = cpu[i], b = gpu[i];
    if (std::isnan(a) || std::isnan(b)) {
      if (std::isnan(a) != std::isnan(b)) ++bad, worst = i, worst_excess = INFINITY;
      continue;
    }
    if (std::isinf(a) || std::isinf(b)) {
      if (a != b) ++bad, worst = i, worst_excess = INFINITY;
      continue;
    }
    const double err = std::fabs(a - b), allowed = tol.atol + tol.rtol * std::fabs(a);
    max_abs = std::max(max_abs, err);
    if (err > allowed) {
      ++bad;
      if (err - allowed > worst_excess) worst_excess = err - allowed, worst = i;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess() << what << ": max |err| " << max_abs;
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << cpu.size() << " elements out of tolerance (rtol "
         << tol.rtol << ", atol " << tol.atol << "); worst at " << worst << ": cpu " << cpu[worst]
         << " cuda " << gpu[worst] << "; max |err| " << max_abs;
}

struct Backends {
  std::unique_ptr<Backend> cpu;
  std::unique_ptr<CudaBackend> gpu;
};
inline Backends make_backends() {
  Backends b;
  b.cpu = make_cpu_backend();
  auto g = CudaBackend::create(CudaBackendOptions{});
  if (!g.is_ok()) throw StatusError(g.status());
  b.gpu = std::move(g).value();
  return b;
}

// int32 tokens in device memory.
inline Buffer device_tokens(Backend& gpu, const std::vector<int32_t>& tokens) {
  Buffer b = std::move(gpu.allocate(tokens.size() * 4, MemCategory::kActivations)).value();
  gpu.copy(b.data(), tokens.data(), tokens.size() * 4);
  return b;
}

}  // namespace zt::cudatest
