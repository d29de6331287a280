#include "runtime/core/dtype.h"

namespace zt {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "fp32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "fp16";
  }
  return "?";
}

Result<DType> parse_dtype(std::string_view name) {
  if (name == "fp32" || name == "float32" || name == "F32") return DType::kF32;
  if (name == "bf16" || name == "bfloat16" || name == "BF16") return DType::kBF16;
  if (name == "fp16" || name == "float16" || name == "F16") return DType::kF16;
  return make_error(StatusCode::kInvalidArgument,
                    "unknown dtype '{}' (expected fp32, bf16 or fp16)", name);
}

void convert(const void* src, DType src_type, void* dst, DType dst_type, size_t n) {
  dispatch_dtype(src_type, [&]<typename S>() {
    dispatch_dtype(dst_type, [&]<typename D>() {
      const S* s = static_cast<const S*>(src);
      D* d = static_cast<D*>(dst);
#pragma omp parallel for schedule(static) if (n > (1u << 16))
      for (size_t i = 0; i < n; ++i) d[i] = from_f32<D>(to_f32(s[i]));
    });
  });
}

}  // namespace zt
