// A communicator for a world of one process, without MPI: every collective is the identity (or a
// copy between distinct buffers) and completes at once. Single-process runs and unit tests use it;
// it follows the same contract as the MPI communicator, so the ZeRO engine runs unchanged on it.
#pragma once

#include <memory>

#include "runtime/comm/communicator.h"

namespace zt {

class Backend;

// `backend`: whose memory the collectives' buffers are; its copy() moves the bytes (the host may
// not dereference device memory). Null: host memory, copied with memmove.
std::unique_ptr<Communicator> make_local_communicator(Backend* backend = nullptr);

}  // namespace zt
