// The host backend paired with the CUDA backend: host memory allocated pinned (page-locked,
// cudaHostAlloc), so copies between it and the device run by DMA at full bus speed and
// asynchronously; the ops and optimizer ops are the CPU backend's. Offloaded optimizer state,
// offloaded parameters and checkpoint staging live here when the compute backend is CUDA.
#pragma once

#include <memory>

#include "runtime/backend/backend.h"

namespace zt {

std::unique_ptr<Backend> make_pinned_host_backend(int device);

}  // namespace zt
