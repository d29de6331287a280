// main() of the MPI test executables: initialises MPI (MPI_THREAD_MULTIPLE), runs the GoogleTest
// suite on every rank, prints the full report on rank 0 and only failures elsewhere, and fails the whole run (non-zero exit from
// mpirun) when any rank fails.
#include <gtest/gtest.h>
#include <mpi.h>

#include "runtime/comm/mpi/mpi_communicator.h"

int main(int argc, char** argv) {
  auto env = zt::MpiEnvironment::init(&argc, &argv);
  if (!env.is_ok()) {
    std::fprintf(stderr, "%s\n", env.status().to_string().c_str());
    return 1;
  }
  // Other ranks print failures only. gtest picks its printer inside InitGoogleTest, so the flag is
  // set before it.
  if (env.value()->world_rank() != 0) GTEST_FLAG_SET(brief, true);
  ::testing::InitGoogleTest(&argc, argv);
  const int local = RUN_ALL_TESTS();
  int global = 0;
  MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (global != 0 && env.value()->world_rank() == 0)
    std::fprintf(stderr, "FAILED on at least one rank (rank-local failures print on that rank)\n");
  return global;
}
