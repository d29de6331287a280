#include "worker/compute_setup.h"

#include <cstdlib>

#include <mpi.h>

#include "runtime/comm/mpi/mpi_communicator.h"

#if ZT_HAVE_CUDA
#include <cuda_runtime.h>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/comm/nccl/nccl_communicator.h"
#endif

namespace zt {

#if ZT_HAVE_CUDA
namespace {

// The rank's index among the ranks of its node (Open MPI, then MPICH/Slurm conventions).
int local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* v = std::getenv(var)) return std::max(0, std::atoi(v));
  return 0;
}

// This rank's GPU: its index among the node's ranks modulo the visible devices; -1 when none is
// usable (no driver, no GPU, or CUDA_VISIBLE_DEVICES hides them).
int rank_device() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    return -1;
  }
  return local_rank() % count;
}

}  // namespace
#endif

Result<Compute> make_compute(const JobConfig& cfg) {
  Compute c;
  if (cfg.backend == BackendKind::kCpu) {
    ZT_ASSIGN_OR_RETURN(c.comm, make_mpi_communicator(MPI_COMM_WORLD));
    c.backend = make_cpu_backend();
    return c;
  }
#if ZT_HAVE_CUDA
  const int device = rank_device();
  if (device < 0)
    return make_error(StatusCode::kUnsupported,
                      "backend: cuda, but this machine shows no usable CUDA device (no driver, no "
                      "GPU, or CUDA_VISIBLE_DEVICES hides them); use backend: cpu");
  CudaBackendOptions opt;
  opt.device = device;
  ZT_ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> cuda, CudaBackend::create(opt));
  ZT_ASSIGN_OR_RETURN(c.comm, make_nccl_communicator_mpi(MPI_COMM_WORLD, device, cuda->stream()));
  c.backend = std::move(cuda);
  return c;
#else
  return make_error(StatusCode::kUnsupported,
                    "backend: cuda, but this zt-worker was built without CUDA (nvcc was not found "
                    "when it was built); rebuild where the CUDA toolkit is installed, or use "
                    "backend: cpu");
#endif
}

LocalDevice probe_local_device() {
  LocalDevice d;
#if ZT_HAVE_CUDA
  const int device = rank_device();
  if (device < 0) return d;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return d;
  }
  d.cuda = true;
  d.name = prop.name;
  d.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
#endif
  return d;
}

}  // namespace zt
