// The NCCL communicator of the CUDA backend: the GPU twin of the MPI communicator (same Work
// handles, same byte accounting, same timeout contract; see communicator.h).
//
// Stream/event protocol. Collectives run in issue order on the communicator's own CUDA stream
// (created cudaStreamNonBlocking, so it never syncs implicitly with the legacy default stream),
// concurrently with the caller's compute stream:
//   issue:  record an ordering event on the compute stream and make the communication stream wait
//           on it, so the collective sees every write the caller's kernels made before the issue;
//           record a timing `start` event, enqueue the NCCL call, record a timing `done` event.
//   wait(): block the host until `done` has completed (polling cudaEventQuery, yielding, then
//           sleeping briefly), bounded by the timeout; check that NCCL reports no asynchronous
//           error (a kernel that bails out on an NCCL error completes its event too, with junk
//           results); then make the compute stream wait on `done` too, so kernels issued after
//           wait() are ordered after the collective on the device as well.
//   is_completed(): cudaEventQuery(done) (plus the same asynchronous-error check).
// The ordering event goes back to a small pool right after cudaStreamWaitEvent (CUDA captures the
// event's latest record at that call); `start` and `done` go back when the Work state dies.
// busy_ms adds up done - start of each collective once it is seen complete (so it leaves out the
// time the communication stream waited for compute); blocked_ms is the host time inside wait().
//
// Watchdog (why): a NCCL collective whose peer is gone or wedged spins on the GPU forever; a
// wait() that gives up (kTimeout) leaves it spinning, and the process then hangs in the next
// device sync or in ncclCommDestroy. A watchdog thread therefore looks at the in-flight
// collectives every `watchdog_period`: one that has been *running* on the communication stream
// (its `start` event completed) for longer than the timeout, or an asynchronous NCCL error
// (ncclCommGetAsyncError, e.g. a peer's connection dropped), makes it mark the communicator failed
// and call ncclCommAbort, which also makes the NCCL kernels return so the streams drain. Every
// wait() on a collective that was in flight then returns the failure (kTimeout naming the
// collective, rank, world size, element count, dtype and how long it ran and waited; kInternal
// with NCCL's error string for an asynchronous error), and every later collective returns an error
// Work at once. A collective still queued behind slow compute is not "running", so the watchdog
// leaves it alone; wait() on it still gives up after the timeout and leaves it pending, as the
// interface says. The job should treat either failure as fatal.
//
// The NCCL communicator is created non-blocking (ncclConfig_t::blocking = 0), so no NCCL call
// can block for ever: creation and the first collectives (which connect to the peers) return
// ncclInProgress and are polled with ncclCommGetAsyncError, bounded by the timeout (the issuing
// call waits for that), and ncclCommAbort can always run. All NCCL calls on the communicator are
// serialised by one mutex (communicators are not thread-safe), the watchdog's included.
//
// Destruction waits (within the timeout) for the collectives in flight, then finalises and
// destroys the communicator; if they do not finish, or the communicator failed, it aborts
// instead. Work handles may outlive the communicator (they report their collective's outcome),
// but the compute stream must outlive both.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include "runtime/comm/communicator.h"

namespace zt {

inline constexpr std::chrono::milliseconds kDefaultNcclTimeout{300'000};

// Hands rank 0's NCCL unique id to every rank. Called once on every rank, rank 0 included: on
// rank 0 `id` holds the id just created (all zero where ncclGetUniqueId failed, so the others
// learn of it instead of hanging), elsewhere its content is unspecified; on return every rank's
// `id` must hold rank 0's.
using NcclIdBootstrap = std::function<Status(ncclUniqueId* id)>;

struct NcclOptions {
  int rank = 0;
  int world_size = 1;
  int device = 0;  // CUDA device index of this rank
  // The stream the caller's kernels run on (see the protocol above); nullptr is the legacy
  // default stream. It must outlive the communicator and its Work handles.
  cudaStream_t compute_stream = nullptr;
  NcclIdBootstrap bootstrap;  // may be empty for a world of one
  // Bounds creation (every rank must join within it) and is the initial set_timeout().
  std::chrono::milliseconds timeout = kDefaultNcclTimeout;
  std::chrono::milliseconds watchdog_period{100};
};

// Creates this rank's communicator; every rank of the world must call it (the caller's current
// device is left as it was). Errors: kInvalidArgument (bad rank or world size, no bootstrap for a
// world of several), kTimeout (a rank did not join within the timeout), kInternal (CUDA or NCCL
// failed, e.g. a bad device index; the message names the call and NCCL's last error).
Result<std::unique_ptr<Communicator>> make_nccl_communicator(const NcclOptions& options);

// The same over the ranks of `comm`, rank 0 broadcasting the unique id with MPI_Bcast (MPI must be
// initialised, see MpiEnvironment). Collective over `comm`.
Result<std::unique_ptr<Communicator>> make_nccl_communicator_mpi(
    MPI_Comm comm, int device, cudaStream_t compute,
    std::chrono::milliseconds timeout = kDefaultNcclTimeout);

// The bytes this rank sends for one collective under the ring algorithm (communicator.h), the
// formulas both communicators account with; `nbytes` is the larger buffer for reduce-scatter and
// all-gather (the whole in resp. out). Exposed for tests.
int64_t ring_bytes_sent(CollectiveKind kind, int64_t nbytes, int rank, int world_size,
                        int root = 0);

}  // namespace zt
