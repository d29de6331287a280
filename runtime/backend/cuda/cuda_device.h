// CUDA device discovery and the library handles the CUDA backend is built on (cuBLAS, cuBLASLt,
// NCCL). The full CUDA backend (allocator, kernels, NCCL communicator) lands with the CUDA issue;
// this is the part every later piece needs, and what the build proves links.
#pragma once

#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace zt::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  size_t total_memory = 0, free_memory = 0;
};

// The visible devices. No driver or no device is an error that says so (callers that can run
// without a GPU, such as tests, turn it into a skip).
Result<std::vector<DeviceInfo>> list_devices();

// Versions of the linked libraries, e.g. "CUDA runtime 13000, cuBLAS 130100, NCCL 22800".
std::string library_versions();

}  // namespace zt::cuda
