// Communicator: the collectives of the data plane, c10d-style. Every collective has an
// asynchronous form returning a Work handle; the synchronous form is `async(...)->wait()`.
//
// Stream contract: collectives issued on one communicator run one at a time in issue order on its
// communication stream (a dedicated thread for MPI, a CUDA stream for NCCL), concurrently with the
// caller's compute. The buffers of a collective belong to it from issue until its Work has been
// waited on: the caller must not read the output or write the input before then.
//
// Accounting: every collective counts the bytes this rank sends over the wire under the ring
// algorithm (all-reduce 2(N-1)/N of the buffer, reduce-scatter and all-gather (N-1)/N of the
// larger buffer, broadcast the buffer once per non-root hop of the chain root -> root+1 -> ...,
// i.e. every rank but (root-1) mod N sends it once), per kind, until reset_stats(). It also
// measures the time the communication stream was busy and the time callers spent blocked in
// wait(), so a benchmark can tell how much communication was hidden behind compute.
//
// Timeouts: wait() gives up after the communicator's timeout with kTimeout naming the collective,
// the rank and the sizes; the collective stays pending (a later wait() may still complete it), but
// a job should treat the timeout as fatal — a peer is gone or wedged.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/core/status.h"
#include "runtime/tensor/tensor.h"

namespace zt {

enum class CollectiveKind : uint8_t {
  kAllReduce = 0,
  kReduceScatter,
  kAllGather,
  kBroadcast,
  kBarrier,
  kCount,
};
constexpr size_t kNumCollectiveKinds = static_cast<size_t>(CollectiveKind::kCount);
const char* collective_name(CollectiveKind k);

enum class ReduceOp : uint8_t { kSum, kMax };

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective has finished (Ok), failed, or the timeout passed (kTimeout).
  virtual Status wait() = 0;
  virtual bool is_completed() const = 0;
};

struct CommStats {
  std::array<int64_t, kNumCollectiveKinds> bytes{};  // sent by this rank, per kind
  std::array<int64_t, kNumCollectiveKinds> calls{};
  double busy_ms = 0.0;     // time the communication stream spent inside collectives
  double blocked_ms = 0.0;  // time callers spent blocked in wait()
  int64_t total_bytes() const;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string name() const = 0;

  // buf (n) = reduction over ranks of buf (n), in place.
  virtual std::unique_ptr<Work> all_reduce_async(Tensor buf, ReduceOp op = ReduceOp::kSum) = 0;
  // out (n) = sum over ranks of in[rank*n, rank*n + n); in has world_size * n elements.
  virtual std::unique_ptr<Work> reduce_scatter_async(Tensor in, Tensor out) = 0;
  // out (world_size * n): rank r's in (n) lands at [r*n, r*n + n). in may alias its slot in out.
  virtual std::unique_ptr<Work> all_gather_async(Tensor in, Tensor out) = 0;
  virtual std::unique_ptr<Work> broadcast_async(Tensor buf, int root) = 0;
  virtual std::unique_ptr<Work> barrier_async() = 0;

  Status all_reduce(Tensor buf, ReduceOp op = ReduceOp::kSum) {
    return all_reduce_async(buf, op)->wait();
  }
  Status reduce_scatter(Tensor in, Tensor out) { return reduce_scatter_async(in, out)->wait(); }
  Status all_gather(Tensor in, Tensor out) { return all_gather_async(in, out)->wait(); }
  Status broadcast(Tensor buf, int root) { return broadcast_async(buf, root)->wait(); }
  Status barrier() { return barrier_async()->wait(); }

  virtual CommStats stats() const = 0;
  virtual void reset_stats() = 0;
  virtual void set_timeout(std::chrono::milliseconds timeout) = 0;
};

}  // namespace zt
