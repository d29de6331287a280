// The dtypes zerotrain stores: fp32 (master weights, optimizer states), bf16 and fp16 (working
// weights, activations and gradients under mixed precision). Arithmetic is always fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kernels/half.h"
#include "runtime/core/status.h"

namespace zt {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

inline size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : 2; }
const char* dtype_name(DType t);  // "fp32", "bf16", "fp16"
Result<DType> parse_dtype(std::string_view name);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::kBF16;
}
template <>
constexpr DType dtype_of<fp16>() {
  return DType::kF16;
}

// Calls fn.template operator()<T>() with T the C++ storage type of `t` (float, bf16 or fp16).
template <typename Fn>
decltype(auto) dispatch_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::kBF16:
      return fn.template operator()<bf16>();
    case DType::kF16:
      return fn.template operator()<fp16>();
    case DType::kF32:
      break;
  }
  return fn.template operator()<float>();
}

// Converts n elements between storage types (round to nearest even).
void convert(const void* src, DType src_type, void* dst, DType dst_type, size_t n);

}  // namespace zt
