#include "runtime/comm/nccl/nccl_communicator.h"

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "runtime/core/check.h"

namespace zt {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

Status cuda_error(cudaError_t err, std::string_view call) {
  const StatusCode code =
      err == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kInternal;
  return make_error(code, "{} failed: {} ({})", call, cudaGetErrorString(err),
                    cudaGetErrorName(err));
}

// cudaEventQuery/cudaStreamQuery may leave "not ready" in the thread's last-error slot; clear it
// (only it: a real error there belongs to the caller) so that the caller's next
// cudaGetLastError() does not mistake it for a launch failure.
bool not_ready(cudaError_t err) {
  if (err != cudaErrorNotReady) return false;
  if (cudaPeekAtLastError() == cudaErrorNotReady) (void)cudaGetLastError();
  return true;
}

// `comm` only feeds ncclGetLastError (which may ignore it); pass nullptr once it is gone.
Status nccl_error(ncclResult_t r, std::string_view call, ncclComm_t comm) {
  const char* last = ncclGetLastError(comm);
  const bool has_last = last != nullptr && *last != '\0';
  const StatusCode code = r == ncclInvalidArgument || r == ncclInvalidUsage
                              ? StatusCode::kInvalidArgument
                              : StatusCode::kInternal;
  return make_error(code, "{} failed: {}{}{}", call, ncclGetErrorString(r), has_last ? ": " : "",
                    has_last ? last : "");
}

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, static_cast<size_t>(len));
}

// Makes `device` current for the scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    if (prev_ != device) {
      err_ = cudaSetDevice(device);
      switched_ = err_ == cudaSuccess && prev_ >= 0;
    }
  }
  ~DeviceGuard() {
    if (switched_) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  Status status() const {
    return err_ == cudaSuccess ? Status::ok()
                               : cuda_error(err_, fmt::format("cudaSetDevice({})", device_));
  }

 private:
  int device_;
  int prev_ = -1;
  cudaError_t err_ = cudaSuccess;
  bool switched_ = false;
};

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kF32:
      break;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kMax ? ncclMax : ncclSum; }

// Reusable CUDA events of the communicator's device: ordering events (no timing, cheap to record)
// and timing events (start/done of each collective). Grows to the most events in use at once.
class EventPool {
 public:
  EventPool() = default;
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;
  ~EventPool() {
    for (auto& v : free_)
      for (cudaEvent_t e : v) (void)cudaEventDestroy(e);
  }

  // The communicator's device must be current.
  Result<cudaEvent_t> get(bool timing) {
    {
      std::lock_guard<std::mutex> g(mu_);
      auto& v = free_[timing ? 1 : 0];
      if (!v.empty()) {
        cudaEvent_t e = v.back();
        v.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    const cudaError_t err =
        cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming);
    if (err != cudaSuccess) return cuda_error(err, "cudaEventCreateWithFlags");
    return e;
  }

  // A recorded event may come back before it completes: a later record supersedes the old one,
  // and a stream that already waits on it keeps waiting on the old record only.
  void put(cudaEvent_t e, bool timing) {
    if (e == nullptr) return;
    std::lock_guard<std::mutex> g(mu_);
    free_[timing ? 1 : 0].push_back(e);
  }

 private:
  std::mutex mu_;
  std::array<std::vector<cudaEvent_t>, 2> free_;
};

struct WorkState;

// What the communicator and its Work handles share: the NCCL communicator handle, the in-flight
// collectives, the failure state, stats and events. A Work may outlive the communicator; it then
// still reports its collective's outcome (the communicator drains or aborts everything first).
class Core {
 public:
  Core(int rank, int world, int device, cudaStream_t compute, ncclComm_t comm,
       std::chrono::milliseconds timeout)
      : rank_(rank),
        world_(world),
        device_(device),
        compute_(compute),
        timeout_ms_(timeout.count()),
        comm_(comm) {}
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  int device() const { return device_; }
  cudaStream_t compute() const { return compute_; }
  EventPool& events() { return events_; }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(timeout_ms_.load());
  }
  void set_timeout(std::chrono::milliseconds t) { timeout_ms_.store(t.count()); }

  CommStats stats() const {
    std::lock_guard<std::mutex> g(stats_mu_);
    return stats_;
  }
  void reset_stats() {
    std::lock_guard<std::mutex> g(stats_mu_);
    stats_ = CommStats{};
  }
  void add_call(CollectiveKind kind, int64_t bytes) {
    std::lock_guard<std::mutex> g(stats_mu_);
    stats_.bytes[static_cast<size_t>(kind)] += bytes;
    stats_.calls[static_cast<size_t>(kind)] += 1;
  }
  void add_busy(double ms) {
    std::lock_guard<std::mutex> g(stats_mu_);
    stats_.busy_ms += ms;
  }
  void add_blocked(double ms) {
    std::lock_guard<std::mutex> g(stats_mu_);
    stats_.blocked_ms += ms;
  }

  bool failed() const { return failed_.load(); }
  Status failure() {
    std::lock_guard<std::mutex> g(fail_mu_);
    return failure_;
  }
  // The error of a collective refused because the communicator failed earlier.
  Status not_issued(const std::string& what) {
    const Status root = failure();
    return Status(root.code(), fmt::format("{} was not issued: the NCCL communicator failed "
                                           "earlier: {}",
                                           what, root.message()));
  }

  // Runs `call` on the NCCL communicator under the NCCL lock; the communicator's failure once it
  // is gone.
  Status with_comm(const std::string& what, const std::function<Status(ncclComm_t)>& call) {
    {
      std::lock_guard<std::mutex> g(nccl_mu_);
      if (comm_ != nullptr) return call(comm_);
    }
    return not_issued(what);
  }

  // Ok while NCCL reports no asynchronous error (ncclInProgress is a call still being enqueued,
  // not an error); otherwise that error, naming `context`.
  Status async_status(const std::string& context) {
    ncclResult_t async = ncclSuccess, r = ncclSuccess;
    std::string last;
    {
      std::lock_guard<std::mutex> g(nccl_mu_);
      if (comm_ == nullptr)
        return failed() ? failure()
                        : make_error(StatusCode::kAborted, "the NCCL communicator is gone");
      r = ncclCommGetAsyncError(comm_, &async);
      if (r == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
        const char* l = ncclGetLastError(comm_);
        if (l != nullptr) last = l;
      }
    }
    if (r != ncclSuccess)
      return nccl_error(r, fmt::format("{}: ncclCommGetAsyncError", context), nullptr);
    if (async == ncclSuccess || async == ncclInProgress) return Status::ok();
    return make_error(StatusCode::kInternal,
                      "NCCL reported an asynchronous error on rank {} of {} (cuda:{}): {}{}{}{}; "
                      "the NCCL communicator was aborted",
                      rank_, world_, device_, ncclGetErrorString(async), last.empty() ? "" : ": ",
                      last, context.empty() ? "" : fmt::format(" ({})", context));
  }

  // Polls a non-blocking NCCL call that returned ncclInProgress until it is enqueued, within the
  // timeout; failing that the communicator is failed and aborted (the peers never came).
  Status finish_in_progress(const std::string& what) {
    const auto t0 = Clock::now();
    const auto limit = timeout();
    for (;;) {
      ncclResult_t state = ncclInProgress, r = ncclSuccess;
      {
        std::lock_guard<std::mutex> g(nccl_mu_);
        if (comm_ == nullptr) return not_issued(what);
        r = ncclCommGetAsyncError(comm_, &state);
      }
      Status st;
      if (r != ncclSuccess)
        st = nccl_error(r, fmt::format("{}: ncclCommGetAsyncError", what), nullptr);
      else if (state == ncclSuccess)
        return Status::ok();
      else if (state != ncclInProgress)
        st = nccl_error(state, fmt::format("{} (while connecting to the peers)", what), nullptr);
      else if (Clock::now() - t0 >= limit)
        st = make_error(StatusCode::kTimeout,
                        "{} could not be enqueued within {} ms: NCCL was still connecting to the "
                        "peers (one is gone or stuck, or never issued this collective); the NCCL "
                        "communicator was aborted",
                        what, limit.count());
      if (!st.is_ok()) {
        fail(st, nullptr);
        return st;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  // Tracks an issued collective until it is verified or aborted (see WorkState).
  void track(const std::shared_ptr<WorkState>& w);
  // `w`'s done event has completed: its results stand if NCCL still reports no asynchronous error
  // (a kernel that bails out on an NCCL error completes its event too); otherwise the
  // communicator fails. Returns whether `w` is verified.
  bool verify(WorkState& w);
  // Marks the communicator failed (the first reason wins), gives every unverified collective its
  // fate (`why` for `trigger`, "aborted with the communicator" for the others), and aborts the
  // NCCL communicator so that its kernels return and the streams drain.
  void fail(const Status& why, const WorkState* trigger);
  // One watchdog look: verify and retire completed collectives, time the running one, poll NCCL
  // for asynchronous errors.
  void watchdog_pass();
  // At destruction, after the communication stream drained: verifies everything in flight.
  void verify_all();
  // At destruction: finalises and destroys the NCCL communicator when healthy (bounded by the
  // timeout), aborts it otherwise, and drops the in-flight list.
  void close();

 private:
  void mark_aborted(WorkState& w, const Status* own);  // with inflight_mu_ held

  const int rank_, world_, device_;
  const cudaStream_t compute_;
  std::atomic<int64_t> timeout_ms_;
  EventPool events_;

  mutable std::mutex stats_mu_;
  CommStats stats_;

  std::mutex fail_mu_;
  Status failure_;  // the first failure; set before failed_
  std::atomic<bool> failed_{false};

  std::mutex nccl_mu_;  // every NCCL call on comm_ (communicators are not thread-safe)
  ncclComm_t comm_;     // nullptr once aborted or destroyed

  std::mutex inflight_mu_;
  std::list<std::shared_ptr<WorkState>> inflight_;  // issued, neither verified nor aborted
};

// One collective: its events and outcome, shared by its Work handle and the in-flight list.
//
// Outcome: kPending until either verified (its done event completed while NCCL was healthy: the
// results stand) or aborted (the communicator failed first: `fate` says why). The transition
// happens once (compare-exchange); `fate` is written, under the in-flight lock, just before the
// transition to kAborted, and read only after seeing kAborted.
struct WorkState {
  enum : int { kPending = 0, kVerified = 1, kAborted = 2 };

  WorkState(std::shared_ptr<Core> c, std::string w) : core(std::move(c)), what(std::move(w)) {}
  WorkState(const WorkState&) = delete;
  WorkState& operator=(const WorkState&) = delete;
  ~WorkState() {
    core->events().put(start, /*timing=*/true);
    core->events().put(done, /*timing=*/true);
  }

  int outcome() const { return state.load(std::memory_order_acquire); }

  // kPending -> kVerified, adding the collective's time on the communication stream to busy_ms.
  void set_verified() {
    int expected = kPending;
    if (!state.compare_exchange_strong(expected, kVerified, std::memory_order_acq_rel)) return;
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, start, done) == cudaSuccess)
      core->add_busy(static_cast<double>(ms));
    else if (cudaPeekAtLastError() != cudaSuccess)
      (void)cudaGetLastError();
  }

  std::shared_ptr<Core> core;
  std::string what;  // "all_reduce (sum) of 1048576 bf16 elements on rank 0 of 8"
  Clock::time_point issued = Clock::now();
  cudaEvent_t start = nullptr, done = nullptr;  // timing events on the communication stream
  Status issue_error;                           // non-ok: never issued
  std::atomic<int> state{kPending};
  Status fate;
  // Watchdog only (under the in-flight lock): when `start` was first seen complete.
  std::optional<Clock::time_point> started;
};

void Core::track(const std::shared_ptr<WorkState>& w) {
  std::lock_guard<std::mutex> g(inflight_mu_);
  inflight_.push_back(w);
  // fail() sets failed_ before it takes this lock to mark what is in flight: if it ran before
  // this push, `w` went to an aborting communicator.
  if (failed()) mark_aborted(*w, nullptr);
}

bool Core::verify(WorkState& w) {
  if (w.outcome() == WorkState::kPending) {
    const Status st = async_status(w.what);
    if (st.is_ok())
      w.set_verified();
    else
      fail(st, nullptr);
  }
  return w.outcome() == WorkState::kVerified;
}

void Core::mark_aborted(WorkState& w, const Status* own) {
  if (w.outcome() != WorkState::kPending) return;
  if (own != nullptr) {
    w.fate = *own;
  } else {
    const Status root = failure();
    w.fate = Status(root.code(), fmt::format("{} was aborted with the NCCL communicator: {}",
                                             w.what, root.message()));
  }
  int expected = WorkState::kPending;
  w.state.compare_exchange_strong(expected, WorkState::kAborted, std::memory_order_acq_rel);
}

void Core::fail(const Status& why, const WorkState* trigger) {
  bool first = false;
  {
    std::lock_guard<std::mutex> g(fail_mu_);
    if (!failed_.load()) {
      failure_ = why;
      failed_.store(true);
      first = true;
    }
  }
  // Nobody may be waiting: say it where the operator looks.
  if (first) fmt::print(stderr, "zerotrain: {}\n", why.message());
  {
    std::lock_guard<std::mutex> g(inflight_mu_);
    for (auto& w : inflight_) mark_aborted(*w, w.get() == trigger ? &why : nullptr);
  }
  std::lock_guard<std::mutex> g(nccl_mu_);
  if (comm_ != nullptr) {
    const ncclResult_t r = ncclCommAbort(comm_);
    if (r != ncclSuccess)
      fmt::print(stderr, "zerotrain: ncclCommAbort (rank {} of {}) failed: {}\n", rank_, world_,
                 ncclGetErrorString(r));
    comm_ = nullptr;
  }
}

void Core::watchdog_pass() {
  if (failed()) return;  // aborted already: nothing left to watch
  const auto now = Clock::now();
  const auto limit = timeout();
  std::vector<std::shared_ptr<WorkState>> finished;
  std::shared_ptr<WorkState> overdue;
  std::string oldest;  // the oldest collective still running or queued, for error messages
  Status cuda_failure;
  {
    std::lock_guard<std::mutex> g(inflight_mu_);
    for (auto& w : inflight_) {
      if (w->outcome() != WorkState::kPending) continue;
      const cudaError_t q = cudaEventQuery(w->done);
      if (q == cudaSuccess) {
        finished.push_back(w);
        continue;
      }
      if (!not_ready(q)) {
        cuda_failure = cuda_error(
            q, fmt::format("watchdog: cudaEventQuery on the completion event of {}", w->what));
        break;
      }
      if (oldest.empty()) oldest = w->what;
      // Only the first unfinished collective of the stream can be running; the rest wait on it.
      if (!w->started) {
        const cudaError_t qs = cudaEventQuery(w->start);
        if (qs == cudaSuccess)
          w->started = now;
        else
          (void)not_ready(qs);
      } else if (overdue == nullptr && now - *w->started > limit) {
        overdue = w;
      }
    }
  }
  if (!cuda_failure.is_ok()) {
    fail(cuda_failure, nullptr);
    return;
  }
  // After the event queries: a healthy answer vouches for the collectives seen complete.
  const Status async = async_status(
      oldest.empty() ? std::string("watchdog") : fmt::format("watchdog; in flight: {}", oldest));
  if (!async.is_ok()) {
    fail(async, nullptr);
    return;
  }
  for (auto& w : finished) w->set_verified();
  {
    std::lock_guard<std::mutex> g(inflight_mu_);
    inflight_.remove_if(
        [](const std::shared_ptr<WorkState>& w) { return w->outcome() != WorkState::kPending; });
  }
  if (overdue != nullptr) {
    const double ran = std::chrono::duration<double, std::milli>(now - *overdue->started).count();
    fail(make_error(StatusCode::kTimeout,
                    "{} did not finish within {} ms of starting on the communication stream "
                    "(running for at least {:.0f} ms, issued {:.0f} ms ago): a peer rank is gone "
                    "or stuck; the watchdog aborted the NCCL communicator",
                    overdue->what, limit.count(), ran, ms_since(overdue->issued)),
         overdue.get());
  }
}

void Core::verify_all() {
  const Status st = async_status("destroying the communicator");
  if (!st.is_ok()) {
    fail(st, nullptr);
    return;
  }
  std::lock_guard<std::mutex> g(inflight_mu_);
  for (auto& w : inflight_) w->set_verified();
}

void Core::close() {
  {
    std::lock_guard<std::mutex> g(nccl_mu_);
    if (comm_ != nullptr) {
      bool clean = false;
      const ncclResult_t r = ncclCommFinalize(comm_);
      if (r == ncclSuccess || r == ncclInProgress) {
        const auto deadline = Clock::now() + timeout();
        ncclResult_t state = ncclInProgress;
        while (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress &&
               Clock::now() < deadline)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        clean = state == ncclSuccess;
      }
      if (clean)
        (void)ncclCommDestroy(comm_);
      else
        (void)ncclCommAbort(comm_);
      comm_ = nullptr;
    }
  }
  // Every WorkState holds the Core: dropping the list breaks that cycle. Anything still pending
  // here was neither verified nor aborted (the communicator was destroyed while healthy and
  // drained, so that cannot happen), but make sure no handle waits on a dead communicator.
  std::lock_guard<std::mutex> g(inflight_mu_);
  for (auto& w : inflight_) {
    const Status gone = make_error(StatusCode::kAborted,
                                   "{} was cut off: the NCCL communicator was destroyed", w->what);
    mark_aborted(*w, &gone);
  }
  inflight_.clear();
}

class NcclWork final : public Work {
 public:
  explicit NcclWork(std::shared_ptr<WorkState> s) : s_(std::move(s)) {}

  Status wait() override {
    WorkState& w = *s_;
    if (!w.issue_error.is_ok()) return w.issue_error;
    Core& core = *w.core;
    const auto t0 = Clock::now();
    const auto limit = core.timeout();
    for (;;) {
      if (w.outcome() == WorkState::kAborted) return aborted(t0);
      const cudaError_t q = cudaEventQuery(w.done);
      if (q == cudaSuccess) {
        if (!core.verify(w)) return aborted(t0);
        const cudaError_t err = cudaStreamWaitEvent(core.compute(), w.done, 0);
        core.add_blocked(ms_since(t0));
        if (err != cudaSuccess)
          return cuda_error(err, fmt::format("ordering the compute stream after {} "
                                             "(cudaStreamWaitEvent)",
                                             w.what));
        return Status::ok();
      }
      if (!not_ready(q)) {
        core.add_blocked(ms_since(t0));
        return cuda_error(q, fmt::format("cudaEventQuery on the completion event of {}", w.what));
      }
      const auto waited = Clock::now() - t0;
      if (waited >= limit) {
        core.add_blocked(ms_since(t0));
        return make_error(StatusCode::kTimeout,
                          "{} did not finish within {} ms: a peer rank is gone or stuck, or this "
                          "rank's compute stream has not reached the collective; it stays pending",
                          w.what, limit.count());
      }
      // Short collectives finish within microseconds: yield first, then sleep lightly.
      if (waited < std::chrono::milliseconds(1))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  bool is_completed() const override {
    WorkState& w = *s_;
    if (!w.issue_error.is_ok() || w.outcome() != WorkState::kPending) return true;
    const cudaError_t q = cudaEventQuery(w.done);
    if (q == cudaSuccess) {
      (void)w.core->verify(w);
      return true;
    }
    return !not_ready(q);  // an error: wait() returns it at once
  }

 private:
  // The collective's fate (it is kAborted), with how long this wait() took.
  Status aborted(Clock::time_point t0) const {
    const double ms = ms_since(t0);
    s_->core->add_blocked(ms);
    return Status(s_->fate.code(),
                  fmt::format("{} (wait() returned after {:.0f} ms)", s_->fate.message(), ms));
  }

  std::shared_ptr<WorkState> s_;
};

using NcclCall = std::function<ncclResult_t(ncclComm_t, cudaStream_t)>;

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<Core> core, cudaStream_t stream, float* barrier_buf,
                   std::chrono::milliseconds watchdog_period)
      : core_(std::move(core)),
        stream_(stream),
        barrier_buf_(barrier_buf),
        period_(watchdog_period) {
    watchdog_ = std::thread([this] { watchdog_loop(); });
  }

  ~NcclCommunicator() override {
    DeviceGuard device(core_->device());
    // 1. Let the collectives in flight finish, within the timeout: ncclCommDestroy of a
    //    communicator whose collective waits on a lost peer would never return. (The watchdog
    //    keeps watching meanwhile.)
    const auto deadline = Clock::now() + core_->timeout();
    cudaError_t q = cudaErrorNotReady;
    while (!core_->failed()) {
      q = cudaStreamQuery(stream_);
      if (q == cudaSuccess || !not_ready(q) || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!core_->failed()) {
      if (q == cudaSuccess)
        core_->verify_all();
      else if (q == cudaErrorNotReady)
        core_->fail(make_error(StatusCode::kAborted,
                               "the NCCL communicator (rank {} of {}) was destroyed with "
                               "collectives still in flight after {} ms; it was aborted",
                               core_->rank(), core_->world(), core_->timeout().count()),
                    nullptr);
      else
        core_->fail(cuda_error(q, "destroying the NCCL communicator: cudaStreamQuery"), nullptr);
    }
    // 2. Stop the watchdog.
    {
      std::lock_guard<std::mutex> g(wd_mu_);
      stopping_ = true;
    }
    wd_cv_.notify_all();
    watchdog_.join();
    // 3. Destroy the NCCL communicator cleanly when idle and healthy; otherwise abort it.
    core_->close();
    // 4. Stream-ordered free (a plain cudaFree would sync the whole device, and hang if the
    //    caller's compute stream is wedged); the stream is released once its work has drained.
    (void)cudaFreeAsync(barrier_buf_, stream_);
    (void)cudaStreamDestroy(stream_);
  }

  int rank() const override { return core_->rank(); }
  int world_size() const override { return core_->world(); }
  std::string name() const override {
    return fmt::format("nccl(rank {}/{}, cuda:{})", core_->rank(), core_->world(), core_->device());
  }

  std::unique_ptr<Work> all_reduce_async(Tensor buf, ReduceOp op) override {
    const size_t n = static_cast<size_t>(buf.numel());
    return issue(CollectiveKind::kAllReduce,
                 ring_bytes_sent(CollectiveKind::kAllReduce, static_cast<int64_t>(buf.nbytes()),
                                 rank(), world_size()),
                 fmt::format("all_reduce ({}) of {} {} elements",
                             op == ReduceOp::kMax ? "max" : "sum", n, dtype_name(buf.dtype)),
                 {{buf, "the buffer"}}, [=](ncclComm_t c, cudaStream_t s) {
                   return ncclAllReduce(buf.data, buf.data, n, nccl_type(buf.dtype), nccl_op(op), c,
                                        s);
                 });
  }

  std::unique_ptr<Work> reduce_scatter_async(Tensor in, Tensor out) override {
    const int world = world_size();
    ZT_CHECK(in.dtype == out.dtype && in.numel() == out.numel() * world,
             "reduce_scatter: in {} x {} must be world_size {} x out {}", dtype_name(in.dtype),
             in.numel(), world, out.numel());
    const size_t n = static_cast<size_t>(out.numel());
    return issue(
        CollectiveKind::kReduceScatter,
        ring_bytes_sent(CollectiveKind::kReduceScatter, static_cast<int64_t>(in.nbytes()), rank(),
                        world),
        fmt::format("reduce_scatter of {} x {} {} elements", world, n, dtype_name(in.dtype)),
        {{in, "the input"}, {out, "the output"}}, [=](ncclComm_t c, cudaStream_t s) {
          return ncclReduceScatter(in.data, out.data, n, nccl_type(in.dtype), ncclSum, c, s);
        });
  }

  std::unique_ptr<Work> all_gather_async(Tensor in, Tensor out) override {
    const int world = world_size();
    ZT_CHECK(in.dtype == out.dtype && out.numel() == in.numel() * world,
             "all_gather: out {} must be world_size {} x in {}", out.numel(), world, in.numel());
    // In place only as NCCL defines it: `in` is exactly this rank's slot of `out`.
    const auto ib = reinterpret_cast<uintptr_t>(in.data);
    const auto ob = reinterpret_cast<uintptr_t>(out.data);
    const bool in_place = ib == ob + static_cast<uintptr_t>(rank()) * in.nbytes();
    const bool overlaps = ib < ob + out.nbytes() && ob < ib + in.nbytes();
    ZT_CHECK(in_place || !overlaps,
             "all_gather: in overlaps out but is not rank {}'s slot of it (in place means in == "
             "out + rank * n)",
             rank());
    const size_t n = static_cast<size_t>(in.numel());
    return issue(CollectiveKind::kAllGather,
                 ring_bytes_sent(CollectiveKind::kAllGather, static_cast<int64_t>(out.nbytes()),
                                 rank(), world),
                 fmt::format("all_gather of {} x {} {} elements", world, n, dtype_name(in.dtype)),
                 {{in, "the input"}, {out, "the output"}}, [=](ncclComm_t c, cudaStream_t s) {
                   return ncclAllGather(in.data, out.data, n, nccl_type(in.dtype), c, s);
                 });
  }

  std::unique_ptr<Work> broadcast_async(Tensor buf, int root) override {
    const int world = world_size();
    ZT_CHECK(root >= 0 && root < world, "broadcast: root {} is not a rank of a world of {}", root,
             world);
    const size_t n = static_cast<size_t>(buf.numel());
    return issue(
        CollectiveKind::kBroadcast,
        ring_bytes_sent(CollectiveKind::kBroadcast, static_cast<int64_t>(buf.nbytes()), rank(),
                        world, root),
        fmt::format("broadcast of {} {} elements from rank {}", n, dtype_name(buf.dtype), root),
        {{buf, "the buffer"}}, [=](ncclComm_t c, cudaStream_t s) {
          return ncclBroadcast(buf.data, buf.data, n, nccl_type(buf.dtype), root, c, s);
        });
  }

  std::unique_ptr<Work> barrier_async() override {
    // An all-reduce of one float (always zero) on a buffer of our own: it completes on a rank
    // once every rank has reached it.
    float* b = barrier_buf_;
    return issue(CollectiveKind::kBarrier, 0, "barrier", {}, [b](ncclComm_t c, cudaStream_t s) {
      return ncclAllReduce(b, b, 1, ncclFloat32, ncclSum, c, s);
    });
  }

  CommStats stats() const override { return core_->stats(); }
  void reset_stats() override { core_->reset_stats(); }
  void set_timeout(std::chrono::milliseconds t) override { core_->set_timeout(t); }

 private:
  struct Buffer {
    Tensor t;
    const char* role;
  };

  // NCCL reads and writes the buffers from the device: refuse pageable host memory (a CPU tensor
  // passed by mistake) with a Status rather than a crash on the GPU.
  static Status check_buffer(const Buffer& b, const std::string& what) {
    if (b.t.numel() == 0) return Status::ok();
    if (b.t.data == nullptr)
      return make_error(StatusCode::kInvalidArgument, "{}: {} is a null pointer", what, b.role);
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, b.t.data);
    if (err != cudaSuccess) {
      if (cudaPeekAtLastError() == err) (void)cudaGetLastError();
      return make_error(StatusCode::kInvalidArgument, "{}: {} at {} is not memory CUDA knows: {}",
                        what, b.role, fmt::ptr(b.t.data), cudaGetErrorString(err));
    }
    if (attr.type == cudaMemoryTypeUnregistered)
      return make_error(StatusCode::kInvalidArgument,
                        "{}: {} at {} is pageable host memory; NCCL needs device memory (or "
                        "managed or registered host memory)",
                        what, b.role, fmt::ptr(b.t.data));
    return Status::ok();
  }

  std::unique_ptr<Work> issue(CollectiveKind kind, int64_t bytes, const std::string& what,
                              std::initializer_list<Buffer> buffers, const NcclCall& call) {
    auto w = std::make_shared<WorkState>(
        core_, fmt::format("{} on rank {} of {}", what, rank(), world_size()));
    Status st = [&]() -> Status {
      if (core_->failed()) return core_->not_issued(w->what);
      for (const Buffer& b : buffers) ZT_RETURN_IF_ERROR(check_buffer(b, w->what));
      DeviceGuard device(core_->device());
      ZT_RETURN_IF_ERROR(device.status());
      std::lock_guard<std::mutex> g(issue_mu_);
      return enqueue(*w, call);
    }();
    if (!st.is_ok()) {
      w->issue_error = std::move(st);
      return std::make_unique<NcclWork>(std::move(w));
    }
    core_->add_call(kind, bytes);
    core_->track(w);
    return std::make_unique<NcclWork>(std::move(w));
  }

  // Orders the collective after the compute stream and enqueues it between its timing events.
  // Called with the device current and issue_mu_ held.
  Status enqueue(WorkState& w, const NcclCall& call) {
    EventPool& events = core_->events();
    ZT_ASSIGN_OR_RETURN(cudaEvent_t order, events.get(/*timing=*/false));
    cudaError_t err = cudaEventRecord(order, core_->compute());
    if (err == cudaSuccess) err = cudaStreamWaitEvent(stream_, order, 0);
    events.put(order, /*timing=*/false);
    if (err != cudaSuccess)
      return cuda_error(err, fmt::format("{}: ordering after the compute stream "
                                         "(cudaEventRecord + cudaStreamWaitEvent)",
                                         w.what));
    ZT_ASSIGN_OR_RETURN(w.start, events.get(/*timing=*/true));
    ZT_ASSIGN_OR_RETURN(w.done, events.get(/*timing=*/true));
    err = cudaEventRecord(w.start, stream_);
    if (err != cudaSuccess) return cuda_error(err, fmt::format("{}: cudaEventRecord", w.what));
    ncclResult_t r = ncclSuccess;
    ZT_RETURN_IF_ERROR(core_->with_comm(w.what, [&](ncclComm_t c) {
      r = call(c, stream_);
      return Status::ok();
    }));
    if (r == ncclInProgress) {
      // A non-blocking communicator still connecting to its peers (the first collectives).
      ZT_RETURN_IF_ERROR(core_->finish_in_progress(w.what));
    } else if (r != ncclSuccess) {
      Status st = nccl_error(r, w.what, nullptr);
      // Invalid arguments leave the communicator usable; anything else may not have.
      if (r != ncclInvalidArgument && r != ncclInvalidUsage) core_->fail(st, nullptr);
      return st;
    }
    err = cudaEventRecord(w.done, stream_);
    if (err != cudaSuccess) {
      // The collective is enqueued but cannot be tracked: its buffers may be in use forever.
      Status st = cuda_error(err, fmt::format("{}: cudaEventRecord after the collective", w.what));
      core_->fail(st, nullptr);
      return st;
    }
    return Status::ok();
  }

  void watchdog_loop() {
    DeviceGuard device(core_->device());
    std::unique_lock<std::mutex> lk(wd_mu_);
    while (!stopping_) {
      wd_cv_.wait_for(lk, period_, [this] { return stopping_; });
      if (stopping_) break;
      lk.unlock();
      core_->watchdog_pass();
      lk.lock();
    }
  }

  std::shared_ptr<Core> core_;
  cudaStream_t stream_;  // the communication stream (non-blocking)
  float* barrier_buf_;   // one float on the device, for barrier()
  std::mutex issue_mu_;  // one issue at a time: NCCL's order is the stream's order

  std::mutex wd_mu_;
  std::condition_variable wd_cv_;
  bool stopping_ = false;
  std::chrono::milliseconds period_;
  std::thread watchdog_;
};

}  // namespace

int64_t ring_bytes_sent(CollectiveKind kind, int64_t nbytes, int rank, int world_size, int root) {
  if (world_size <= 1) return 0;
  const int64_t w = world_size;
  switch (kind) {
    case CollectiveKind::kAllReduce:
      return 2 * nbytes * (w - 1) / w;
    case CollectiveKind::kReduceScatter:
    case CollectiveKind::kAllGather:
      return nbytes * (w - 1) / w;
    case CollectiveKind::kBroadcast:
      // Chain root -> root+1 -> ...: every rank but the last, root-1 mod N, forwards the buffer.
      return rank != (root + world_size - 1) % world_size ? nbytes : 0;
    case CollectiveKind::kBarrier:
    case CollectiveKind::kCount:
      break;
  }
  return 0;
}

Result<std::unique_ptr<Communicator>> make_nccl_communicator(const NcclOptions& o) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    return make_error(StatusCode::kInvalidArgument,
                      "NCCL communicator: rank {} is not a rank of a world of {}", o.rank,
                      o.world_size);
  if (o.world_size > 1 && !o.bootstrap)
    return make_error(StatusCode::kInvalidArgument,
                      "NCCL communicator: a world of {} needs a bootstrap to share the unique id",
                      o.world_size);
  if (o.timeout.count() <= 0 || o.watchdog_period.count() <= 0)
    return make_error(StatusCode::kInvalidArgument,
                      "NCCL communicator: timeout {} ms and watchdog period {} ms must be positive",
                      o.timeout.count(), o.watchdog_period.count());
  const std::string who = fmt::format("rank {} of {} on cuda:{}", o.rank, o.world_size, o.device);

  // Rank 0 creates the id; every rank takes part in the bootstrap even after a local failure, so
  // that no peer is left blocked in it.
  DeviceGuard device(o.device);
  Status local = device.status();
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (o.rank == 0 && local.is_ok()) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      local = nccl_error(r, "ncclGetUniqueId", nullptr);
      std::memset(&id, 0, sizeof(id));
    }
  }
  if (o.bootstrap) {
    const Status st = o.bootstrap(&id);
    if (!st.is_ok()) return st.with_context(fmt::format("sharing the NCCL unique id ({})", who));
  }
  if (!local.is_ok())
    return local.with_context(fmt::format("creating the NCCL communicator ({})", who));
  static const ncclUniqueId kZeroId{};
  if (std::memcmp(&id, &kZeroId, sizeof(id)) == 0)
    return make_error(StatusCode::kInternal,
                      "creating the NCCL communicator ({}): rank 0 could not create the unique id "
                      "(see rank 0's error)",
                      who);

  cudaStream_t stream = nullptr;
  float* barrier_buf = nullptr;
  ncclComm_t comm = nullptr;
  auto cleanup = [&] {
    if (comm != nullptr) (void)ncclCommAbort(comm);
    if (barrier_buf != nullptr) (void)cudaFreeAsync(barrier_buf, stream);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
    (void)cudaGetLastError();
  };
  auto cuda_fail = [&](cudaError_t err, std::string_view call) {
    cleanup();
    return cuda_error(err, call).with_context(
        fmt::format("creating the NCCL communicator ({})", who));
  };
  cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err != cudaSuccess) {
    stream = nullptr;
    return cuda_fail(err, "cudaStreamCreateWithFlags");
  }
  err = cudaMallocAsync(reinterpret_cast<void**>(&barrier_buf), sizeof(float), stream);
  if (err != cudaSuccess) {
    barrier_buf = nullptr;
    return cuda_fail(err, "cudaMallocAsync");
  }
  err = cudaMemsetAsync(barrier_buf, 0, sizeof(float), stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) return cuda_fail(err, "cudaMemsetAsync");

  // Non-blocking: the init below returns at once and is polled, so that a rank that never joins
  // costs a timeout instead of a hang, and so that ncclCommAbort works later.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t state = ncclCommInitRankConfig(&comm, o.world_size, id, o.rank, &config);
  const auto t0 = Clock::now();
  if (state == ncclSuccess || state == ncclInProgress) {
    if (comm == nullptr) state = ncclInternalError;
    for (;;) {
      if (state != ncclSuccess && state != ncclInProgress) break;
      const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
      if (r != ncclSuccess) state = r;
      if (state != ncclInProgress) break;
      if (Clock::now() - t0 >= o.timeout) {
        cleanup();
        return make_error(StatusCode::kTimeout,
                          "creating the NCCL communicator ({}) did not finish within {} ms: not "
                          "every rank joined (are all {} ranks running, each with rank 0's unique "
                          "id?)",
                          who, o.timeout.count(), o.world_size);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  if (state != ncclSuccess) {
    Status st = nccl_error(state, "ncclCommInitRankConfig", comm);
    cleanup();
    return st.with_context(fmt::format("creating the NCCL communicator ({})", who));
  }

  auto core =
      std::make_shared<Core>(o.rank, o.world_size, o.device, o.compute_stream, comm, o.timeout);
  return std::unique_ptr<Communicator>(
      new NcclCommunicator(std::move(core), stream, barrier_buf, o.watchdog_period));
}

Result<std::unique_ptr<Communicator>> make_nccl_communicator_mpi(
    MPI_Comm comm, int device, cudaStream_t compute, std::chrono::milliseconds timeout) {
  int rank = 0, size = 1;
  int rc = MPI_Comm_rank(comm, &rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(comm, &size);
  if (rc != MPI_SUCCESS)
    return make_error(StatusCode::kInternal, "NCCL communicator over MPI: {}",
                      mpi_error_string(rc));
  NcclOptions o;
  o.rank = rank;
  o.world_size = size;
  o.device = device;
  o.compute_stream = compute;
  o.timeout = timeout;
  o.bootstrap = [comm](ncclUniqueId* id) -> Status {
    const int rc = MPI_Bcast(id, static_cast<int>(sizeof(*id)), MPI_BYTE, 0, comm);
    if (rc != MPI_SUCCESS)
      return make_error(StatusCode::kInternal, "MPI_Bcast of the NCCL unique id failed: {}",
                        mpi_error_string(rc));
    return Status::ok();
  };
  return make_nccl_communicator(o);
}

}  // namespace zt
