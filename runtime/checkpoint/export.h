// Consolidating a sharded checkpoint into one Hugging Face GPT-2 safetensors file (`ztctl export`).
#pragma once

#include <string>

#include "runtime/core/dtype.h"
#include "runtime/core/status.h"

namespace zt {

struct ExportStats {
  int64_t tensors = 0;
  int64_t parameters = 0;
  int64_t largest_tensor_bytes = 0;  // fp32 bytes of the largest parameter
  uint64_t file_bytes = 0;
};

// Verifies the checkpoint in `dir` (every shard file's size and XXH3-64 against its manifest),
// then writes its fp32 master weights as `out` in `dtype`, one tensor at a time: each parameter is
// assembled from the shard pieces that hold it with positioned reads (no mapping of the shards, so
// resident memory stays near twice the largest tensor, not the model), transposed where Hugging
// Face's Conv1D layout wants it, and converted. `out` appears only when complete. The result loads
// with model.init_from and in PyTorch.
Result<ExportStats> export_checkpoint(const std::string& dir, const std::string& out, DType dtype);

}  // namespace zt
