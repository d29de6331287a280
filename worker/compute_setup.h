// The worker's compute: the backend and the data-plane communicator its config asks for.
//   backend: cpu   the CPU backend and the MPI communicator over MPI_COMM_WORLD;
//   backend: cuda  one GPU per rank (the rank's index among the ranks on its node, modulo the
//                  visible devices), the CUDA backend, and an NCCL communicator whose unique id
//                  is broadcast over MPI.
// A zt-worker built without CUDA refuses backend: cuda with an error saying so: nothing falls
// back to the CPU quietly.
#pragma once

#include <memory>
#include <string>

#include "runtime/backend/backend.h"
#include "runtime/comm/communicator.h"
#include "runtime/config/job_config.h"

namespace zt {

struct Compute {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
};

Result<Compute> make_compute(const JobConfig& cfg);

// What the worker tells the coordinator at registration: its device (the first GPU it would use,
// when this build has CUDA and one is visible; else the CPU).
struct LocalDevice {
  bool cuda = false;
  std::string name = "cpu";
  int64_t memory_bytes = 0;
};
LocalDevice probe_local_device();

}  // namespace zt
