// The MPI communicator of the CPU backend. Collectives run on a dedicated communication thread
// (the CPU backend's "communication stream") in issue order, as blocking MPI calls, so they
// progress while the caller computes; Work handles wait on their completion.
//
// MPI is initialised with MPI_THREAD_MULTIPLE (several communicators, each with its own thread,
// may be live at once, e.g. the world and a per-rank MPI_COMM_SELF in tests). 16-bit floats are
// summed with user-defined MPI ops that widen to fp32 for each pairwise add.
#pragma once

#include <memory>

#include <mpi.h>

#include "runtime/comm/communicator.h"

namespace zt {

// RAII for MPI_Init_thread / MPI_Finalize. Safe to construct where MPI is already initialised
// (then it does not finalise). Without mpirun, Open MPI starts a singleton world of one.
class MpiEnvironment {
 public:
  static Result<std::unique_ptr<MpiEnvironment>> init(int* argc, char*** argv);
  ~MpiEnvironment();
  int world_rank() const { return rank_; }
  int world_size() const { return size_; }

 private:
  MpiEnvironment() = default;
  bool owns_ = false;
  int rank_ = 0, size_ = 1;
};

// A communicator over a duplicate of `comm` (MPI_COMM_WORLD, MPI_COMM_SELF, ...).
Result<std::unique_ptr<Communicator>> make_mpi_communicator(MPI_Comm comm);

// Aborts every rank of MPI_COMM_WORLD (when a collective is wedged there is no clean way out).
[[noreturn]] void mpi_abort(int exit_code);

}  // namespace zt
