// The NCCL communicator. On one GPU (a world of one): every collective in fp32, bf16 and fp16
// (in-place all-gather included), the stream protocol (a collective waits for the compute stream's
// earlier writes; busy_ms leaves that wait out, blocked_ms counts it), call and byte accounting,
// wait() giving up on a collective stuck behind compute and completing it later, argument errors,
// destruction with work in flight, creation timing out when a peer never joins, and the MPI
// factory over MPI_COMM_SELF. On two GPUs (two ranks, one thread each, in this process): the same
// collectives with real reductions and non-zero byte counts, and the watchdog aborting a
// collective whose peer never joins it. Without a device every test but the two that need none
// (the ring formulas, option checks) skips, saying why; with one device the two-GPU tests skip.
// Reviewers: run bin/nccl_communicator_test on a GPU machine (one GPU covers all but the last two
// tests; two GPUs cover everything).
//
// Values are multiples of 1/4 in [-2, 2], so sums over two ranks are exact in bf16 and fp16 and
// results are compared bit-exactly. Every buffer has guard elements on both sides.
//
// Note [no hanging tests]: a hang here is the bug under test, so the tests that could hang (the
// timeout paths, destruction, multi-rank runs) run under run_with_deadline, which ends the process
// with a message instead of stalling CI. Compute streams blocked on purpose (StreamGate) are
// always opened before buffers are freed (cudaFree syncs the device).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <mpi.h>

#include "kernels/half.h"
#include "runtime/backend/cuda/cuda_device.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/comm/nccl/nccl_communicator.h"
#include "runtime/core/dtype.h"
#include "runtime/tensor/tensor.h"

namespace zt {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kTestTimeout = 60s;
constexpr float kSentinel = 777.0f;
constexpr int64_t kSizes[] = {1, 7, 4097, 1 << 20};

#define ZT_ASSERT_OK(expr)                                       \
  do {                                                           \
    const ::zt::Status zt_test_st_ = (expr);                     \
    ASSERT_TRUE(zt_test_st_.is_ok()) << zt_test_st_.to_string(); \
  } while (0)

#define ZT_ASSERT_CUDA(expr)                                                                   \
  do {                                                                                         \
    const cudaError_t zt_test_err_ = (expr);                                                   \
    ASSERT_EQ(zt_test_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(zt_test_err_); \
  } while (0)

// Runs `body` on a thread; if it has not returned within `limit` the process exits with a message
// (see Note [no hanging tests]).
void run_with_deadline(std::chrono::seconds limit, const std::string& what,
                       const std::function<void()>& body) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  std::thread t([done, &body] {
    body();
    done->set_value();
  });
  if (finished.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: %s still running after %lld s: it hangs\n", what.c_str(),
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::_Exit(1);
  }
  t.join();
}

// Runs f when the scope ends.
class OnExit {
 public:
  explicit OnExit(std::function<void()> f) : f_(std::move(f)) {}
  ~OnExit() { f_(); }
  OnExit(const OnExit&) = delete;
  OnExit& operator=(const OnExit&) = delete;

 private:
  std::function<void()> f_;
};

int device_count() {
  auto devs = cuda::list_devices();
  return devs.is_ok() ? static_cast<int>(devs.value().size()) : 0;
}

std::string no_device_reason() {
  auto devs = cuda::list_devices();
  return devs.is_ok() ? std::string() : devs.status().message();
}

// Rank r's input at index i: a multiple of 1/4 in [-2, 2] that differs between ranks.
float val(int r, int64_t i) { return static_cast<float>((i * 5 + r * 3) % 17 - 8) * 0.25f; }

float sum_over(int world, int64_t i) {
  float s = 0.0f;
  for (int r = 0; r < world; ++r) s += val(r, i);
  return s;
}

float max_over(int world, int64_t i) {
  float m = val(0, i);
  for (int r = 1; r < world; ++r) m = std::max(m, val(r, i));
  return m;
}

// n elements of T on the current device, with kGuard sentinel elements on each side, mirrored in
// pinned host memory so that copies are truly asynchronous and ordered on the given stream.
template <typename T>
class DeviceBuffer {
 public:
  static constexpr int64_t kGuard = 8;

  explicit DeviceBuffer(int64_t n) : n_(n) {
    const size_t bytes = static_cast<size_t>(n + 2 * kGuard) * sizeof(T);
    ok_ = cudaMalloc(reinterpret_cast<void**>(&dev_), bytes) == cudaSuccess &&
          cudaMallocHost(reinterpret_cast<void**>(&host_), bytes) == cudaSuccess;
    if (ok_)
      for (int64_t i = 0; i < n + 2 * kGuard; ++i) host_[i] = from_f32<T>(kSentinel);
  }
  ~DeviceBuffer() {
    if (dev_ != nullptr) cudaFree(dev_);
    if (host_ != nullptr) cudaFreeHost(host_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  bool ok() const { return ok_; }
  int64_t size() const { return n_; }
  T* data() const { return dev_ + kGuard; }
  Tensor tensor() const { return Tensor(data(), dtype_of<T>(), Shape{n_}); }
  // Elements [begin, begin + count) as a tensor.
  Tensor part(int64_t begin, int64_t count) const {
    return Tensor(data() + begin, dtype_of<T>(), Shape{count});
  }

  void set(int64_t i, float x) { host_[kGuard + i] = from_f32<T>(x); }
  float at(int64_t i) const { return to_f32(host_[kGuard + i]); }
  template <typename F>
  void fill(F f) {
    for (int64_t i = 0; i < n_; ++i) set(i, f(i));
  }
  // Host mirror -> device, guards included, ordered on `s`. The mirror must not change until the
  // copy has run (every test pulls or syncs before it touches the mirror again).
  cudaError_t push(cudaStream_t s) {
    return cudaMemcpyAsync(dev_, host_, bytes(), cudaMemcpyHostToDevice, s);
  }
  // Device -> host mirror, ordered on `s`, then waits for it.
  cudaError_t pull(cudaStream_t s) {
    const cudaError_t err = cudaMemcpyAsync(host_, dev_, bytes(), cudaMemcpyDeviceToHost, s);
    return err != cudaSuccess ? err : cudaStreamSynchronize(s);
  }
  bool guards_intact() const {
    const float s = to_f32(from_f32<T>(kSentinel));
    for (int64_t g = 0; g < kGuard; ++g)
      if (to_f32(host_[g]) != s || to_f32(host_[kGuard + n_ + g]) != s) return false;
    return true;
  }

 private:
  size_t bytes() const { return static_cast<size_t>(n_ + 2 * kGuard) * sizeof(T); }
  int64_t n_;
  T* dev_ = nullptr;
  T* host_ = nullptr;
  bool ok_ = false;
};

// Bit-exact comparison of a pulled buffer with expected(i); names the first mismatches.
template <typename T, typename F>
::testing::AssertionResult matches(const DeviceBuffer<T>& b, F expected) {
  int64_t bad = 0;
  std::string first;
  for (int64_t i = 0; i < b.size(); ++i) {
    const float got = b.at(i), want = to_f32(from_f32<T>(expected(i)));
    if (got != want) {
      if (bad < 5) first += fmt::format(" [{}] got {} want {};", i, got, want);
      ++bad;
    }
  }
  if (!b.guards_intact())
    return ::testing::AssertionFailure() << dtype_name(dtype_of<T>()) << " buffer of " << b.size()
                                         << ": written outside its bounds";
  if (bad)
    return ::testing::AssertionFailure()
           << bad << " of " << b.size() << " " << dtype_name(dtype_of<T>())
           << " elements wrong:" << first;
  return ::testing::AssertionSuccess();
}

// Holds a stream at a host function until opened: stands in for compute that has not reached the
// collective yet. Opens on destruction; declare it after the buffers the stream uses.
class StreamGate {
 public:
  explicit StreamGate(cudaStream_t s) : state_(std::make_shared<State>()) {
    auto* arg = new std::shared_ptr<State>(state_);
    err_ = cudaLaunchHostFunc(
        s,
        [](void* p) {
          std::unique_ptr<std::shared_ptr<State>> st(static_cast<std::shared_ptr<State>*>(p));
          State& state = **st;
          std::unique_lock<std::mutex> lk(state.mu);
          state.cv.wait(lk, [&] { return state.open; });
        },
        arg);
    if (err_ != cudaSuccess) delete arg;
  }
  ~StreamGate() { open(); }
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;

  cudaError_t error() const { return err_; }
  void open() {
    {
      std::lock_guard<std::mutex> g(state_->mu);
      state_->open = true;
    }
    state_->cv.notify_all();
  }
  // Opens from another thread after `delay`; the returned thread must be joined.
  std::thread open_after(std::chrono::milliseconds delay) {
    return std::thread([state = state_, delay] {
      std::this_thread::sleep_for(delay);
      {
        std::lock_guard<std::mutex> g(state->mu);
        state->open = true;
      }
      state->cv.notify_all();
    });
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
  };
  std::shared_ptr<State> state_;
  cudaError_t err_ = cudaSuccess;
};

size_t kind_index(CollectiveKind k) { return static_cast<size_t>(k); }

// Every collective in dtype T on sizes kSizes; works for any world size, every rank calling it.
// Adds the bytes this rank should have been charged, per kind, to `want_bytes`.
template <typename T>
void check_collectives(Communicator& comm, cudaStream_t compute,
                       std::array<int64_t, kNumCollectiveKinds>& want_bytes) {
  const int r = comm.rank(), w = comm.world_size();
  const char* tn = dtype_name(dtype_of<T>());
  for (int64_t n : kSizes) {
    SCOPED_TRACE(fmt::format("{} x {} on rank {} of {}", n, tn, r, w));
    const int64_t nb = n * static_cast<int64_t>(sizeof(T));
    // all_reduce, sum and max, in place.
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      DeviceBuffer<T> b(n);
      ASSERT_TRUE(b.ok());
      b.fill([&](int64_t i) { return val(r, i); });
      ZT_ASSERT_CUDA(b.push(compute));
      ZT_ASSERT_OK(comm.all_reduce(b.tensor(), op));
      ZT_ASSERT_CUDA(b.pull(compute));
      if (op == ReduceOp::kSum)
        EXPECT_TRUE(matches(b, [&](int64_t i) { return sum_over(w, i); }));
      else
        EXPECT_TRUE(matches(b, [&](int64_t i) { return max_over(w, i); }));
      want_bytes[kind_index(CollectiveKind::kAllReduce)] +=
          ring_bytes_sent(CollectiveKind::kAllReduce, nb, r, w);
    }
    // reduce_scatter: in (w * n) -> out (n) = sum over ranks of in[r*n, r*n + n).
    {
      DeviceBuffer<T> in(w * n), out(n);
      ASSERT_TRUE(in.ok() && out.ok());
      in.fill([&](int64_t i) { return val(r, i); });
      out.fill([](int64_t) { return 0.0f; });
      ZT_ASSERT_CUDA(in.push(compute));
      ZT_ASSERT_CUDA(out.push(compute));
      ZT_ASSERT_OK(comm.reduce_scatter(in.tensor(), out.tensor()));
      ZT_ASSERT_CUDA(out.pull(compute));
      EXPECT_TRUE(matches(out, [&](int64_t i) { return sum_over(w, r * n + i); }));
      want_bytes[kind_index(CollectiveKind::kReduceScatter)] +=
          ring_bytes_sent(CollectiveKind::kReduceScatter, w * nb, r, w);
    }
    // all_gather, out of place and in place (in = this rank's slot of out).
    for (bool in_place : {false, true}) {
      DeviceBuffer<T> in(n), out(w * n);
      ASSERT_TRUE(in.ok() && out.ok());
      in.fill([&](int64_t i) { return val(r, i); });
      out.fill([&](int64_t i) { return in_place && i / n == r ? val(r, i % n) : 0.0f; });
      ZT_ASSERT_CUDA(in.push(compute));
      ZT_ASSERT_CUDA(out.push(compute));
      ZT_ASSERT_OK(comm.all_gather(in_place ? out.part(r * n, n) : in.tensor(), out.tensor()));
      ZT_ASSERT_CUDA(out.pull(compute));
      EXPECT_TRUE(matches(out, [&](int64_t i) { return val(static_cast<int>(i / n), i % n); }))
          << (in_place ? "in place" : "out of place");
      want_bytes[kind_index(CollectiveKind::kAllGather)] +=
          ring_bytes_sent(CollectiveKind::kAllGather, w * nb, r, w);
    }
    // broadcast from the last rank.
    {
      const int root = w - 1;
      DeviceBuffer<T> b(n);
      ASSERT_TRUE(b.ok());
      b.fill([&](int64_t i) { return val(r, i); });
      ZT_ASSERT_CUDA(b.push(compute));
      ZT_ASSERT_OK(comm.broadcast(b.tensor(), root));
      ZT_ASSERT_CUDA(b.pull(compute));
      EXPECT_TRUE(matches(b, [&](int64_t i) { return val(root, i); }));
      want_bytes[kind_index(CollectiveKind::kBroadcast)] +=
          ring_bytes_sent(CollectiveKind::kBroadcast, nb, r, w, root);
    }
  }
  ZT_ASSERT_OK(comm.barrier());
}

// All collectives in all dtypes, then the stats against the ring formulas.
void check_all_dtypes(Communicator& comm, cudaStream_t compute) {
  comm.reset_stats();
  std::array<int64_t, kNumCollectiveKinds> want{};
  check_collectives<float>(comm, compute, want);
  check_collectives<bf16>(comm, compute, want);
  check_collectives<fp16>(comm, compute, want);
  const CommStats s = comm.stats();
  const int64_t per_dtype = static_cast<int64_t>(std::size(kSizes));
  EXPECT_EQ(s.calls[kind_index(CollectiveKind::kAllReduce)], 3 * 2 * per_dtype);
  EXPECT_EQ(s.calls[kind_index(CollectiveKind::kReduceScatter)], 3 * per_dtype);
  EXPECT_EQ(s.calls[kind_index(CollectiveKind::kAllGather)], 3 * 2 * per_dtype);
  EXPECT_EQ(s.calls[kind_index(CollectiveKind::kBroadcast)], 3 * per_dtype);
  EXPECT_EQ(s.calls[kind_index(CollectiveKind::kBarrier)], 3);
  for (size_t k = 0; k < kNumCollectiveKinds; ++k)
    EXPECT_EQ(s.bytes[k], want[k]) << collective_name(static_cast<CollectiveKind>(k));
  if (comm.world_size() > 1) {
    EXPECT_GT(s.total_bytes(), 0);
    EXPECT_GT(s.busy_ms, 0.0);
  }
  EXPECT_GE(s.blocked_ms, 0.0);
  comm.reset_stats();
  EXPECT_EQ(comm.stats().total_bytes(), 0);
  EXPECT_EQ(comm.stats().calls[kind_index(CollectiveKind::kAllReduce)], 0);
}

TEST(NcclRingBytes, MatchTheInterfaceFormulas) {
  // all-reduce 2(N-1)/N of the buffer.
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kAllReduce, 4096, 0, 4), 6144);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kAllReduce, 4096, 3, 2), 4096);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kAllReduce, 4096, 0, 1), 0);
  // reduce-scatter and all-gather (N-1)/N of the larger buffer (= the smaller times N-1).
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kReduceScatter, 4 * 1000, 2, 4), 3 * 1000);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kAllGather, 4 * 1000, 0, 4), 3 * 1000);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kAllGather, 1000, 0, 1), 0);
  // broadcast: every rank but (root-1) mod N sends the buffer once: N-1 copies in all.
  int64_t total = 0;
  for (int r = 0; r < 4; ++r) total += ring_bytes_sent(CollectiveKind::kBroadcast, 100, r, 4, 1);
  EXPECT_EQ(total, 300);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kBroadcast, 100, 0, 4, 1), 0);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kBroadcast, 100, 3, 4, 0), 0);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kBroadcast, 100, 0, 1, 0), 0);
  EXPECT_EQ(ring_bytes_sent(CollectiveKind::kBarrier, 100, 0, 4), 0);
}

TEST(NcclOptionsTest, BadArgumentsAreRefusedBeforeAnyDeviceWork) {
  NcclOptions o;
  o.rank = 2;
  o.world_size = 2;
  auto c = make_nccl_communicator(o);
  ASSERT_FALSE(c.is_ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  o.rank = 1;  // a world of two without a bootstrap
  c = make_nccl_communicator(o);
  ASSERT_FALSE(c.is_ok());
  EXPECT_NE(c.status().message().find("bootstrap"), std::string::npos) << c.status().to_string();
}

// A world of one on device 0, its compute stream non-blocking like a trainer's.
class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = no_device_reason();
    if (!why.empty()) GTEST_SKIP() << "skipped: " << why << " (" << cuda::library_versions() << ")";
    ZT_ASSERT_CUDA(cudaSetDevice(0));
    ZT_ASSERT_CUDA(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    NcclOptions o;
    o.compute_stream = compute_;
    o.timeout = kTestTimeout;
    auto c = make_nccl_communicator(o);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    comm_ = std::move(c).value();
  }
  void TearDown() override {
    if (comm_ != nullptr)
      run_with_deadline(120s, "destroying the communicator", [this] { comm_.reset(); });
    if (compute_ != nullptr) {
      cudaStreamSynchronize(compute_);
      cudaStreamDestroy(compute_);
    }
  }

  cudaStream_t compute_ = nullptr;
  std::unique_ptr<Communicator> comm_;
};

TEST_F(NcclTest, NameRankAndWorld) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->world_size(), 1);
  EXPECT_NE(comm_->name().find("nccl"), std::string::npos) << comm_->name();
}

TEST_F(NcclTest, EveryCollectiveEveryDtype) { check_all_dtypes(*comm_, compute_); }

// The collective must see writes the compute stream makes after the issue call returns but
// before (in stream order) the collective: here the input lands behind a gate that opens 200 ms
// later. busy_ms must leave that wait out; blocked_ms must include it.
TEST_F(NcclTest, CollectiveWaitsForComputeStream) {
  constexpr int64_t n = 1 << 22;
  DeviceBuffer<float> in(n), out(n);
  ASSERT_TRUE(in.ok() && out.ok());
  in.fill([](int64_t) { return 0.0f; });
  out.fill([](int64_t) { return 0.0f; });
  ZT_ASSERT_CUDA(in.push(compute_));
  ZT_ASSERT_CUDA(out.push(compute_));
  ZT_ASSERT_CUDA(cudaStreamSynchronize(compute_));
  comm_->reset_stats();
  StreamGate gate(compute_);
  ZT_ASSERT_CUDA(gate.error());
  in.fill([](int64_t i) { return val(0, i); });
  ZT_ASSERT_CUDA(in.push(compute_));  // behind the gate
  auto work = comm_->all_gather_async(in.tensor(), out.tensor());
  EXPECT_FALSE(work->is_completed());
  std::thread opener = gate.open_after(200ms);
  const Status st = work->wait();
  opener.join();
  ZT_ASSERT_OK(st);
  EXPECT_TRUE(work->is_completed());
  ZT_ASSERT_CUDA(out.pull(compute_));  // ordered after the collective by wait()
  EXPECT_TRUE(matches(out, [](int64_t i) { return val(0, i); }));
  const CommStats s = comm_->stats();
  EXPECT_GE(s.blocked_ms, 100.0);
  EXPECT_GT(s.busy_ms, 0.0);  // a 16 MB device copy
  EXPECT_LT(s.busy_ms, 100.0) << "busy_ms counted the wait for the compute stream";
  EXPECT_EQ(s.calls[kind_index(CollectiveKind::kAllGather)], 1);
}

// Kernels issued on the compute stream after wait() see the results, even for collectives issued
// back to back and waited in order.
TEST_F(NcclTest, ComputeAfterWaitSeesResults) {
  constexpr int64_t n = 1 << 20;
  constexpr int kCount = 8;
  std::vector<std::unique_ptr<DeviceBuffer<float>>> ins, outs;
  std::vector<std::unique_ptr<Work>> works;
  for (int k = 0; k < kCount; ++k) {
    ins.push_back(std::make_unique<DeviceBuffer<float>>(n));
    outs.push_back(std::make_unique<DeviceBuffer<float>>(n));
    ASSERT_TRUE(ins.back()->ok() && outs.back()->ok());
    ins.back()->fill([k](int64_t i) { return val(k, i); });
    outs.back()->fill([](int64_t) { return 0.0f; });
    ZT_ASSERT_CUDA(ins.back()->push(compute_));
    ZT_ASSERT_CUDA(outs.back()->push(compute_));
    works.push_back(comm_->reduce_scatter_async(ins.back()->tensor(), outs.back()->tensor()));
  }
  for (int k = 0; k < kCount; ++k) {
    ZT_ASSERT_OK(works[static_cast<size_t>(k)]->wait());
    ZT_ASSERT_CUDA(outs[static_cast<size_t>(k)]->pull(compute_));
    EXPECT_TRUE(matches(*outs[static_cast<size_t>(k)], [k](int64_t i) { return val(k, i); }));
  }
}

// wait() gives up after the timeout on a collective that cannot start (its compute stream is
// held), names it, and leaves it pending: the watchdog leaves it alone (it never ran), and a
// later wait() completes it.
TEST_F(NcclTest, WaitTimesOutAndTheCollectiveStaysPending) {
  run_with_deadline(120s, "WaitTimesOutAndTheCollectiveStaysPending", [this] {
    constexpr int64_t n = 1024;
    DeviceBuffer<float> in(n), out(n);
    ASSERT_TRUE(in.ok() && out.ok());
    in.fill([](int64_t i) { return val(0, i); });
    out.fill([](int64_t) { return 0.0f; });
    ZT_ASSERT_CUDA(out.push(compute_));
    StreamGate gate(compute_);
    ZT_ASSERT_CUDA(gate.error());
    ZT_ASSERT_CUDA(in.push(compute_));
    comm_->set_timeout(300ms);
    auto work = comm_->reduce_scatter_async(in.tensor(), out.tensor());
    const auto t0 = std::chrono::steady_clock::now();
    const Status st = work->wait();
    const auto waited = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.to_string();
    for (const char* part : {"reduce_scatter", "rank 0 of 1", "1024", "fp32", "300 ms"})
      EXPECT_NE(st.message().find(part), std::string::npos) << part << " in " << st.message();
    EXPECT_GE(waited, 300ms);
    EXPECT_LT(waited, 5s);
    EXPECT_FALSE(work->is_completed());
    // Longer than the timeout: the watchdog must not abort a collective that never started.
    std::this_thread::sleep_for(600ms);
    gate.open();
    comm_->set_timeout(kTestTimeout);
    ZT_ASSERT_OK(work->wait());
    ZT_ASSERT_CUDA(out.pull(compute_));
    EXPECT_TRUE(matches(out, [](int64_t i) { return val(0, i); }));
    ZT_ASSERT_OK(comm_->barrier());
  });
}

TEST_F(NcclTest, BadBuffersAreErrorsNotCrashes) {
  std::vector<float> host(64, 1.0f);
  auto work = comm_->all_reduce_async(Tensor(host.data(), DType::kF32, Shape{64}));
  EXPECT_TRUE(work->is_completed());
  const Status st = work->wait();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  EXPECT_NE(st.message().find("pageable host memory"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("all_reduce"), std::string::npos) << st.message();
  EXPECT_EQ(comm_->stats().calls[kind_index(CollectiveKind::kAllReduce)], 0);
  // Shape mismatches and bad roots are bugs: they throw, as with the MPI communicator.
  DeviceBuffer<float> a(8), b(3);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THROW(comm_->reduce_scatter_async(a.tensor(), b.tensor()), CheckError);
  EXPECT_THROW(comm_->all_gather_async(a.tensor(), b.tensor()), CheckError);
  EXPECT_THROW(comm_->broadcast_async(a.tensor(), 1), CheckError);
  // The communicator is still fine.
  ZT_ASSERT_OK(comm_->barrier());
}

TEST_F(NcclTest, DestroyingWithUnwaitedWorkDrainsIt) {
  constexpr int64_t n = 1 << 20;
  DeviceBuffer<float> in(n), out(n);
  ASSERT_TRUE(in.ok() && out.ok());
  in.fill([](int64_t i) { return val(0, i); });
  ZT_ASSERT_CUDA(in.push(compute_));
  std::unique_ptr<Work> kept;
  for (int k = 0; k < 4; ++k) kept = comm_->reduce_scatter_async(in.tensor(), out.tensor());
  run_with_deadline(60s, "destroying with unwaited work", [this] { comm_.reset(); });
  // A handle that outlives its communicator still reports its collective's outcome.
  EXPECT_TRUE(kept->is_completed());
  ZT_ASSERT_OK(kept->wait());
}

// A world of two where rank 1 never comes: creation gives up after the timeout with kTimeout.
TEST_F(NcclTest, CreationTimesOutWhenAPeerNeverJoins) {
  run_with_deadline(120s, "CreationTimesOutWhenAPeerNeverJoins", [this] {
    NcclOptions o;
    o.rank = 0;
    o.world_size = 2;
    o.compute_stream = compute_;
    o.timeout = 2s;
    o.bootstrap = [](ncclUniqueId*) { return Status::ok(); };  // rank 1 would get it here
    const auto t0 = std::chrono::steady_clock::now();
    auto c = make_nccl_communicator(o);
    const auto took = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(c.is_ok());
    EXPECT_EQ(c.status().code(), StatusCode::kTimeout) << c.status().to_string();
    EXPECT_NE(c.status().message().find("rank 0 of 2"), std::string::npos) << c.status().message();
    EXPECT_GE(took, 2s);
    EXPECT_LT(took, 60s);
  });
}

TEST_F(NcclTest, MpiFactoryOverCommSelf) {
  // Singleton MPI (no mpirun); allowed as root, as in the MPI tests' environment.
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  static auto env = MpiEnvironment::init(nullptr, nullptr);
  if (!env.is_ok()) GTEST_SKIP() << "skipped: no MPI: " << env.status().to_string();
  run_with_deadline(120s, "MpiFactoryOverCommSelf", [this] {
    auto c = make_nccl_communicator_mpi(MPI_COMM_SELF, 0, compute_, kTestTimeout);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    EXPECT_EQ(c.value()->world_size(), 1);
    DeviceBuffer<bf16> b(33);
    ASSERT_TRUE(b.ok());
    b.fill([](int64_t i) { return val(0, i); });
    ZT_ASSERT_CUDA(b.push(compute_));
    ZT_ASSERT_OK(c.value()->all_reduce(b.tensor()));
    ZT_ASSERT_CUDA(b.pull(compute_));
    EXPECT_TRUE(matches(b, [](int64_t i) { return val(0, i); }));
  });
}

// Destroying a communicator whose collective cannot start (compute held) must not hang: after the
// timeout it aborts, and the collective's handle reports kAborted. Last of this suite: it aborts
// NCCL with a collective still queued (NCCL only enqueues a device copy for it in a world of one).
TEST_F(NcclTest, DestroyingWithStuckWorkAborts) {
  constexpr int64_t n = 4096;
  DeviceBuffer<float> in(n), out(n);
  ASSERT_TRUE(in.ok() && out.ok());
  StreamGate gate(compute_);
  ZT_ASSERT_CUDA(gate.error());
  comm_->set_timeout(500ms);
  auto work = comm_->reduce_scatter_async(in.tensor(), out.tensor());
  // Open the gate late in any case, so that nothing below can wait on it for ever.
  std::thread opener = gate.open_after(5s);
  run_with_deadline(60s, "destroying with stuck work", [this] { comm_.reset(); });
  const Status st = work->wait();
  EXPECT_EQ(st.code(), StatusCode::kAborted) << st.to_string();
  EXPECT_NE(st.message().find("reduce_scatter"), std::string::npos) << st.message();
  opener.join();
  ZT_ASSERT_CUDA(cudaStreamSynchronize(compute_));
}

// ---- Two GPUs: two ranks in this process, one thread and one device each. ----

// Hands rank 0's unique id to rank 1 in memory.
struct IdExchange {
  std::promise<ncclUniqueId> promise;
  std::shared_future<ncclUniqueId> future = promise.get_future().share();

  NcclIdBootstrap bootstrap(int rank) {
    return [this, rank](ncclUniqueId* id) -> Status {
      if (rank == 0) {
        promise.set_value(*id);
        return Status::ok();
      }
      if (future.wait_for(kTestTimeout) != std::future_status::ready)
        return make_error(StatusCode::kTimeout, "rank 0 never published the unique id");
      *id = future.get();
      return Status::ok();
    };
  }
};

struct RankEnv {
  int rank = 0;
  cudaStream_t compute = nullptr;
  std::unique_ptr<Communicator> comm;
};

// Runs body(rank) for ranks 0 and 1 on devices 0 and 1, each with its own compute stream and
// communicator (timeout `timeout`), under a deadline.
void run_two_ranks(const std::string& what, std::chrono::milliseconds timeout,
                   const std::function<void(RankEnv&)>& body) {
  IdExchange ids;
  run_with_deadline(300s, what, [&] {
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        RankEnv env;
        env.rank = r;
        ZT_ASSERT_CUDA(cudaSetDevice(r));
        ZT_ASSERT_CUDA(cudaStreamCreateWithFlags(&env.compute, cudaStreamNonBlocking));
        NcclOptions o;
        o.rank = r;
        o.world_size = 2;
        o.device = r;
        o.compute_stream = env.compute;
        o.timeout = timeout;
        o.bootstrap = ids.bootstrap(r);
        auto c = make_nccl_communicator(o);
        if (c.is_ok()) {
          env.comm = std::move(c).value();
          body(env);
        } else {
          ADD_FAILURE() << "rank " << r << ": " << c.status().to_string();
        }
        env.comm.reset();
        cudaStreamSynchronize(env.compute);
        cudaStreamDestroy(env.compute);
      });
    }
    for (auto& t : threads) t.join();
  });
}

class NcclTwoGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = no_device_reason();
    if (!why.empty()) GTEST_SKIP() << "skipped: " << why;
    if (device_count() < 2)
      GTEST_SKIP() << "skipped: needs two GPUs, " << device_count() << " visible";
  }
};

TEST_F(NcclTwoGpuTest, EveryCollectiveEveryDtype) {
  run_two_ranks("two-rank collectives", kTestTimeout,
                [](RankEnv& env) { check_all_dtypes(*env.comm, env.compute); });
}

// Rank 1 joins the first all-reduce (so the connections are up) but not the second: rank 0's
// second all-reduce spins on the GPU until the watchdog aborts the communicator, and wait()
// returns kTimeout naming it; later collectives fail at once.
TEST_F(NcclTwoGpuTest, WatchdogAbortsACollectiveWhosePeerNeverComes) {
  std::promise<void> rank0_done;
  std::shared_future<void> rank0_done_f = rank0_done.get_future().share();
  run_two_ranks("watchdog test", kTestTimeout, [&](RankEnv& env) {
    // Rank 0 releases rank 1 however its part ends (an ASSERT returns early).
    OnExit release([&] {
      if (env.rank == 0) rank0_done.set_value();
    });
    constexpr int64_t n = 1 << 20;
    DeviceBuffer<float> b(n);
    ASSERT_TRUE(b.ok());
    b.fill([&](int64_t i) { return val(env.rank, i); });
    ZT_ASSERT_CUDA(b.push(env.compute));
    ZT_ASSERT_OK(env.comm->all_reduce(b.tensor()));
    if (env.rank == 1) {
      rank0_done_f.wait();        // and never joins rank 0's second all-reduce
      env.comm->set_timeout(5s);  // bounds its own (clean or aborting) destruction
      return;
    }
    env.comm->set_timeout(1s);
    const auto t0 = std::chrono::steady_clock::now();
    auto work = env.comm->all_reduce_async(b.tensor());
    const Status st = work->wait();
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.to_string();
    for (const char* part : {"all_reduce", "rank 0 of 2", "1048576", "fp32", "aborted"})
      EXPECT_NE(st.message().find(part), std::string::npos) << part << " in " << st.message();
    EXPECT_GE(took, 1s);
    EXPECT_LT(took, 30s);
    EXPECT_TRUE(work->is_completed());
    // The communicator is failed: new collectives return an error at once.
    auto later = env.comm->barrier_async();
    EXPECT_TRUE(later->is_completed());
    const Status st2 = later->wait();
    EXPECT_EQ(st2.code(), StatusCode::kTimeout) << st2.to_string();
    EXPECT_NE(st2.message().find("not issued"), std::string::npos) << st2.message();
  });
}

}  // namespace
}  // namespace zt
