// A communicator for a world of one process, without MPI: every collective is the identity (or a
// copy between distinct buffers) and completes at once. Single-process runs and unit tests use it;
// it follows the same contract as the MPI communicator, so the ZeRO engine runs unchanged on it.
#pragma once

#include <memory>

#include "runtime/comm/communicator.h"

namespace zt {

std::unique_ptr<Communicator> make_local_communicator();

}  // namespace zt
