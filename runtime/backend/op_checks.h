// The argument checks every backend's Ops share (a wrong call is a bug: ZT_CHECK), and the views
// of a tensor as a matrix of rows over its last dimension.
#pragma once

#include "runtime/core/check.h"
#include "runtime/tensor/tensor.h"

namespace zt::op_checks {

inline void check_same(const Tensor& a, const Tensor& b, const char* op) {
  ZT_CHECK(a.dtype == b.dtype, "{}: dtype mismatch {} vs {}", op, dtype_name(a.dtype),
           dtype_name(b.dtype));
}
inline void check_f32(const Tensor& t, const char* op, const char* what) {
  ZT_CHECK(t.dtype == DType::kF32, "{}: {} must be fp32, got {}", op, what, dtype_name(t.dtype));
}
// Rows and columns of a tensor viewed as (numel / last dim, last dim).
inline int rows(const Tensor& t) {
  return static_cast<int>(t.numel() / t.shape[t.shape.rank() - 1]);
}
inline int cols(const Tensor& t) { return static_cast<int>(t.shape[t.shape.rank() - 1]); }

}  // namespace zt::op_checks
