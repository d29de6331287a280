// Helpers shared by the MPI tests: the world's rank and size, and "must" wrappers that abort the
// whole MPI job on a failure — a failed step or create on one rank leaves the others blocked in a
// collective that will never complete, so reporting and aborting beats hanging until ctest's
// timeout.
#pragma once

#include <cstdio>
#include <string>
#include <utility>

#include <mpi.h>

#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/core/status.h"

namespace zt::testing {

inline int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline void must_ok(const Status& st, const std::string& what) {
  if (st.is_ok()) return;
  std::fprintf(stderr, "[rank %d] %s failed: %s -- aborting the MPI job\n", world_rank(),
               what.c_str(), st.to_string().c_str());
  std::fflush(stderr);
  mpi_abort(1);
}

template <typename T>
T must(Result<T> r, const std::string& what) {
  must_ok(r.status(), what);
  return std::move(r).value();
}

}  // namespace zt::testing
