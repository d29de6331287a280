// CUDA twin of zt::convert (runtime/core/dtype.h): elementwise dtype conversion on the device with
// round to nearest even. Bit layouts of zt::bf16/zt::fp16 equal __nv_bfloat16/__half.
//   launch_convert: dst (n) = src (n) converted                                   (=)
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace zt::kernels::cuda {

// dtype codes as in zt::DType: 0 fp32, 1 bf16, 2 fp16. Returns the launch error, if any.
cudaError_t launch_convert(const void* src, int src_dtype, void* dst, int dst_dtype, size_t n,
                           cudaStream_t stream);

}  // namespace zt::kernels::cuda
