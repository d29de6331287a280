#include "runtime/tensor/tensor.h"

#include <fmt/format.h>

namespace zt {

Shape::Shape(std::initializer_list<int64_t> dims) {
  ZT_CHECK(dims.size() <= kMaxDims, "shape of rank {} exceeds {}", dims.size(), kMaxDims);
  for (int64_t d : dims) {
    ZT_CHECK(d >= 0, "negative dimension {}", d);
    dims_[static_cast<size_t>(rank_++)] = d;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[static_cast<size_t>(i)] != o.dims_[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::to_string() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i)
    s += fmt::format("{}{}", i ? ", " : "", dims_[static_cast<size_t>(i)]);
  return s + ")";
}

Tensor Tensor::view(Shape s) const {
  ZT_CHECK(s.numel() == numel(), "view {} of tensor {} changes the element count", s.to_string(),
           shape.to_string());
  return Tensor(data, dtype, s);
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  ZT_CHECK(shape.rank() >= 1 && 0 <= begin && begin <= end && end <= shape[0],
           "slice [{}, {}) of tensor {}", begin, end, shape.to_string());
  const int64_t row = shape[0] ? numel() / shape[0] : 0;
  Shape s = shape;
  Tensor t(static_cast<char*>(data) + static_cast<size_t>(begin * row) * dtype_size(dtype), dtype,
           s);
  // Rebuild the shape with the new first dimension.
  switch (shape.rank()) {
    case 1:
      t.shape = Shape{end - begin};
      break;
    case 2:
      t.shape = Shape{end - begin, shape[1]};
      break;
    case 3:
      t.shape = Shape{end - begin, shape[1], shape[2]};
      break;
    default:
      t.shape = Shape{end - begin, shape[1], shape[2], shape[3]};
      break;
  }
  return t;
}

}  // namespace zt
