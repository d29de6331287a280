// Tensor: a non-owning, contiguous, row-major view (pointer, dtype, shape) into memory that a
// Buffer owns. Views are cheap to copy; slicing along the first dimension gives another view.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "runtime/core/check.h"
#include "runtime/core/dtype.h"

namespace zt {

constexpr int kMaxDims = 4;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  std::string to_string() const;  // "(4, 64, 768)"

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  Tensor() = default;
  Tensor(void* d, DType t, Shape s) : data(d), dtype(t), shape(s) {}

  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool defined() const { return data != nullptr; }

  template <typename T>
  T* ptr() const {
    ZT_CHECK(dtype_of<T>() == dtype, "tensor is {}, accessed as {}", dtype_name(dtype),
             dtype_name(dtype_of<T>()));
    return static_cast<T*>(data);
  }
  // Same memory, new shape of the same element count.
  Tensor view(Shape s) const;
  // Rows [begin, end) of the first dimension.
  Tensor slice(int64_t begin, int64_t end) const;
};

}  // namespace zt
