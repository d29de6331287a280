#include "runtime/comm/mpi/mpi_communicator.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "kernels/half.h"
#include "runtime/core/check.h"

namespace zt {
namespace {

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, static_cast<size_t>(len));
}

// 16-bit float datatypes and their sum ops, created once (after MPI_Init) and never freed.
struct HalfTypes {
  MPI_Datatype bf16 = MPI_DATATYPE_NULL, fp16 = MPI_DATATYPE_NULL;
  MPI_Op sum = MPI_OP_NULL, max = MPI_OP_NULL;
};

template <typename T, bool kMax>
void reduce_half(void* in, void* inout, int* len, MPI_Datatype*) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = to_f32(a[i]), y = to_f32(b[i]);
    b[i] = from_f32<T>(kMax ? (x > y ? x : y) : x + y);
  }
}

void half_sum(void* in, void* inout, int* len, MPI_Datatype* dt);
void half_max(void* in, void* inout, int* len, MPI_Datatype* dt);

// Thread-safe one-time creation (a function-local static): several communication threads may
// reach it, and the ops read it from inside MPI, at the same time.
const HalfTypes& half_types() {
  static const HalfTypes t = [] {
    HalfTypes h;
    MPI_Type_contiguous(2, MPI_BYTE, &h.bf16);
    MPI_Type_commit(&h.bf16);
    MPI_Type_contiguous(2, MPI_BYTE, &h.fp16);
    MPI_Type_commit(&h.fp16);
    MPI_Op_create(&half_sum, 1, &h.sum);
    MPI_Op_create(&half_max, 1, &h.max);
    return h;
  }();
  return t;
}

// One op serves both 16-bit types: it tells them apart by the datatype handle.
void half_sum(void* in, void* inout, int* len, MPI_Datatype* dt) {
  if (*dt == half_types().bf16)
    reduce_half<bf16, false>(in, inout, len, dt);
  else
    reduce_half<fp16, false>(in, inout, len, dt);
}
void half_max(void* in, void* inout, int* len, MPI_Datatype* dt) {
  if (*dt == half_types().bf16)
    reduce_half<bf16, true>(in, inout, len, dt);
  else
    reduce_half<fp16, true>(in, inout, len, dt);
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kBF16:
      return half_types().bf16;
    case DType::kF16:
      return half_types().fp16;
  }
  return MPI_FLOAT;
}

MPI_Op mpi_op(DType t, ReduceOp op) {
  if (t == DType::kF32) return op == ReduceOp::kSum ? MPI_SUM : MPI_MAX;
  return op == ReduceOp::kSum ? half_types().sum : half_types().max;
}

int as_count(int64_t n, const char* what) {
  ZT_CHECK(n >= 0 && n <= INT32_MAX, "{}: {} elements exceed MPI's int count", what, n);
  return static_cast<int>(n);
}

// Completion state shared by a Work handle and the task that runs its collective.
struct WorkState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status status;
  std::string what;  // "all_reduce of 1048576 bf16 elements" for timeout messages
};

class MpiCommunicator;

class MpiWork final : public Work {
 public:
  MpiWork(std::shared_ptr<WorkState> s, MpiCommunicator* comm) : s_(std::move(s)), comm_(comm) {}
  Status wait() override;
  bool is_completed() const override {
    std::lock_guard<std::mutex> g(s_->mu);
    return s_->done;
  }

 private:
  std::shared_ptr<WorkState> s_;
  MpiCommunicator* comm_;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    (void)half_types();
    thread_ = std::thread([this] { run(); });
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    // A wedged collective never returns; then the thread is still inside MPI and the job aborts
    // before getting here. Otherwise every queued collective has run.
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string name() const override { return fmt::format("mpi(rank {}/{})", rank_, size_); }

  std::unique_ptr<Work> all_reduce_async(Tensor buf, ReduceOp op) override {
    const int n = as_count(buf.numel(), "all_reduce");
    const int64_t bytes =
        size_ > 1 ? 2 * static_cast<int64_t>(buf.nbytes()) * (size_ - 1) / size_ : 0;
    return enqueue(CollectiveKind::kAllReduce, bytes,
                   fmt::format("all_reduce of {} {} elements", n, dtype_name(buf.dtype)),
                   [=, this] {
                     return MPI_Allreduce(MPI_IN_PLACE, buf.data, n, mpi_type(buf.dtype),
                                          mpi_op(buf.dtype, op), comm_);
                   });
  }

  std::unique_ptr<Work> reduce_scatter_async(Tensor in, Tensor out) override {
    ZT_CHECK(in.dtype == out.dtype && in.numel() == out.numel() * size_,
             "reduce_scatter: in {} x {} must be world_size {} x out {}", dtype_name(in.dtype),
             in.numel(), size_, out.numel());
    const int n = as_count(out.numel(), "reduce_scatter");
    const int64_t bytes = static_cast<int64_t>(out.nbytes()) * (size_ - 1);
    return enqueue(
        CollectiveKind::kReduceScatter, bytes,
        fmt::format("reduce_scatter of {} x {} {} elements", size_, n, dtype_name(in.dtype)),
        [=, this] {
          return MPI_Reduce_scatter_block(in.data, out.data, n, mpi_type(in.dtype),
                                          mpi_op(in.dtype, ReduceOp::kSum), comm_);
        });
  }

  std::unique_ptr<Work> all_gather_async(Tensor in, Tensor out) override {
    ZT_CHECK(in.dtype == out.dtype && out.numel() == in.numel() * size_,
             "all_gather: out {} must be world_size {} x in {}", out.numel(), size_, in.numel());
    const int n = as_count(in.numel(), "all_gather");
    const int64_t bytes = static_cast<int64_t>(in.nbytes()) * (size_ - 1);
    const bool in_place = static_cast<char*>(in.data) ==
                          static_cast<char*>(out.data) + static_cast<size_t>(rank_) * in.nbytes();
    return enqueue(CollectiveKind::kAllGather, bytes,
                   fmt::format("all_gather of {} x {} {} elements", size_, n, dtype_name(in.dtype)),
                   [=, this] {
                     const MPI_Datatype t = mpi_type(in.dtype);
                     return MPI_Allgather(in_place ? MPI_IN_PLACE : in.data, n, t, out.data, n, t,
                                          comm_);
                   });
  }

  std::unique_ptr<Work> broadcast_async(Tensor buf, int root) override {
    ZT_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of a world of {}", root,
             size_);
    const int n = as_count(buf.numel(), "broadcast");
    // Ring (chain) broadcast root -> root+1 -> ... : every rank but the chain's last, root-1 mod N,
    // forwards the buffer once, so the job sends it N-1 times in all.
    const int last = (root + size_ - 1) % size_;
    const int64_t bytes = size_ > 1 && rank_ != last ? static_cast<int64_t>(buf.nbytes()) : 0;
    return enqueue(
        CollectiveKind::kBroadcast, bytes,
        fmt::format("broadcast of {} {} elements from rank {}", n, dtype_name(buf.dtype), root),
        [=, this] { return MPI_Bcast(buf.data, n, mpi_type(buf.dtype), root, comm_); });
  }

  std::unique_ptr<Work> barrier_async() override {
    return enqueue(CollectiveKind::kBarrier, 0, "barrier", [this] { return MPI_Barrier(comm_); });
  }

  CommStats stats() const override {
    std::lock_guard<std::mutex> g(stats_mu_);
    return stats_;
  }
  void reset_stats() override {
    std::lock_guard<std::mutex> g(stats_mu_);
    stats_ = CommStats{};
  }
  void set_timeout(std::chrono::milliseconds t) override { timeout_ms_.store(t.count()); }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds(timeout_ms_.load());
  }
  void add_blocked(double ms) {
    std::lock_guard<std::mutex> g(stats_mu_);
    stats_.blocked_ms += ms;
  }

 private:
  using Task = std::function<void()>;

  std::unique_ptr<Work> enqueue(CollectiveKind kind, int64_t bytes, std::string what,
                                std::function<int()> call) {
    auto state = std::make_shared<WorkState>();
    state->what = fmt::format("{} on rank {} of {}", what, rank_, size_);
    {
      std::lock_guard<std::mutex> g(stats_mu_);
      stats_.bytes[static_cast<size_t>(kind)] += bytes;
      stats_.calls[static_cast<size_t>(kind)] += 1;
    }
    Task task = [this, state, call = std::move(call)] {
      const auto t0 = std::chrono::steady_clock::now();
      const int rc = call();
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      {
        std::lock_guard<std::mutex> g(stats_mu_);
        stats_.busy_ms += ms;
      }
      std::lock_guard<std::mutex> g(state->mu);
      if (rc != MPI_SUCCESS)
        state->status =
            make_error(StatusCode::kInternal, "{} failed: {}", state->what, mpi_error_string(rc));
      state->done = true;
      state->cv.notify_all();
    };
    {
      std::lock_guard<std::mutex> g(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    return std::make_unique<MpiWork>(state, this);
  }

  void run() {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and drained
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  mutable std::mutex stats_mu_;
  CommStats stats_;
  std::atomic<int64_t> timeout_ms_{300'000};
};

Status MpiWork::wait() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lk(s_->mu);
  const bool ok = s_->cv.wait_for(lk, comm_->timeout(), [this] { return s_->done; });
  lk.unlock();
  comm_->add_blocked(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  if (!ok)
    return make_error(StatusCode::kTimeout,
                      "{} did not finish within {} ms: a peer rank is gone or stuck", s_->what,
                      comm_->timeout().count());
  return s_->status;
}

}  // namespace

Result<std::unique_ptr<MpiEnvironment>> MpiEnvironment::init(int* argc, char*** argv) {
  std::unique_ptr<MpiEnvironment> env(new MpiEnvironment());
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    // Our communication thread sits in blocking MPI calls while compute runs on the same cores:
    // Open MPI's default busy-polling there steals them from the kernels (measured ~1.5x slower
    // steps at 4 ranks on 2 cores). Yield instead, unless the user chose otherwise.
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", /*overwrite=*/0);
    int provided = 0;
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS)
      return make_error(StatusCode::kInternal, "MPI_Init_thread failed: {}", mpi_error_string(rc));
    env->owns_ = true;
    if (provided < MPI_THREAD_MULTIPLE) {
      return make_error(StatusCode::kUnsupported,
                        "this MPI library provides thread level {} but zerotrain needs "
                        "MPI_THREAD_MULTIPLE ({}); use an Open MPI built with thread support",
                        provided, MPI_THREAD_MULTIPLE);
    }
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &env->rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &env->size_);
  return env;
}

MpiEnvironment::~MpiEnvironment() {
  if (owns_) MPI_Finalize();
}

Result<std::unique_ptr<Communicator>> make_mpi_communicator(MPI_Comm comm) {
  MPI_Comm dup;
  const int rc = MPI_Comm_dup(comm, &dup);
  if (rc != MPI_SUCCESS)
    return make_error(StatusCode::kInternal, "MPI_Comm_dup failed: {}", mpi_error_string(rc));
  return std::unique_ptr<Communicator>(new MpiCommunicator(dup));
}

void mpi_abort(int exit_code) {
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::abort();
}

}  // namespace zt
