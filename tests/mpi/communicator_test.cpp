// The MPI communicator under `mpirun -np 2` and `-np 4`: every collective in fp32, bf16 and fp16 on
// odd and large sizes, asynchronous issue and issue order, compute overlapping a collective, byte
// accounting against the ring formulas of communicator.h, timeouts, and an MPI_COMM_SELF
// communicator alive beside the world one. Every rank runs the same tests in the same order.
//
// Inputs are multiples of 1/4 in [-2, 2], so every partial sum over up to 4 ranks is exact in bf16
// and fp16: results are compared bit-exactly, whatever order MPI sums in.
//
// Note [no hanging tests]: every communicator gets a 60 s timeout, so a rank whose peers took
// another path fails its wait() instead of blocking forever. Buffers belong to the fixture and
// outlive the test body, so a collective still in flight after a failed ASSERT never writes freed
// memory. TearDown then checks on every rank that the communicator is still in step (a barrier
// under a timeout); where it is not on some rank, the job aborts rather than hang in a destructor
// that would join a communication thread stuck in MPI.

#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "kernels/half.h"
#include "runtime/comm/communicator.h"
#include "runtime/comm/mpi/mpi_communicator.h"
#include "runtime/core/dtype.h"
#include "runtime/tensor/tensor.h"

namespace zt {
namespace {

using namespace std::chrono_literals;

constexpr std::chrono::milliseconds kTestTimeout = 60s;
constexpr int64_t kOddSizes[] = {1, 7, 33, 4097};
constexpr int64_t kLarge = 3 * 1024 * 1024;
constexpr float kSentinel = 777.0f;  // guard value around every buffer, never a result

#define ZT_ASSERT_OK(expr)                                       \
  do {                                                           \
    const ::zt::Status zt_test_st_ = (expr);                     \
    ASSERT_TRUE(zt_test_st_.is_ok()) << zt_test_st_.to_string(); \
  } while (0)

// Rank r's input at index i: a multiple of 1/4 in [-2, 2] that differs between ranks.
float val(int r, int64_t i) { return static_cast<float>((i * 5 + r * 3) % 17 - 8) * 0.25f; }

float sum_over_ranks(int world, int64_t i) {
  float s = 0.0f;
  for (int r = 0; r < world; ++r) s += val(r, i);
  return s;
}

float max_over_ranks(int world, int64_t i) {
  float m = val(0, i);
  for (int r = 1; r < world; ++r) m = std::max(m, val(r, i));
  return m;
}

// A buffer of n elements of T with kGuard sentinel elements on each side; the tensor views the
// middle, so a collective that writes past either end is caught.
struct GuardedBase {
  virtual ~GuardedBase() = default;
};

template <typename T>
struct Guarded final : GuardedBase {
  static constexpr int64_t kGuard = 5;
  std::vector<T> v;
  int64_t n;

  explicit Guarded(int64_t count)
      : v(static_cast<size_t>(count + 2 * kGuard), from_f32<T>(kSentinel)), n(count) {}
  T* data() { return v.data() + kGuard; }
  Tensor tensor() { return Tensor(data(), dtype_of<T>(), Shape{n}); }
  float at(int64_t i) const { return to_f32(v[static_cast<size_t>(kGuard + i)]); }
  void set(int64_t i, float x) { v[static_cast<size_t>(kGuard + i)] = from_f32<T>(x); }
  template <typename F>
  void fill(F f) {
    for (int64_t i = 0; i < n; ++i) set(i, f(i));
  }
  bool guards_intact() const {
    const float s = to_f32(from_f32<T>(kSentinel));
    for (int64_t g = 0; g < kGuard; ++g) {
      if (to_f32(v[static_cast<size_t>(g)]) != s) return false;
      if (to_f32(v[static_cast<size_t>(kGuard + n + g)]) != s) return false;
    }
    return true;
  }
};

// Bit-exact comparison (every expected value is representable in T); names the first mismatches.
template <typename T, typename F>
::testing::AssertionResult matches(const Guarded<T>& b, F expected) {
  int64_t bad = 0;
  std::string first;
  for (int64_t i = 0; i < b.n; ++i) {
    const float got = b.at(i), want = expected(i);
    if (got != want) {
      if (bad < 5) first += fmt::format(" [{}] got {} want {};", i, got, want);
      ++bad;
    }
  }
  if (!b.guards_intact())
    return ::testing::AssertionFailure()
           << dtype_name(dtype_of<T>()) << " buffer of " << b.n << ": written outside its bounds";
  if (bad)
    return ::testing::AssertionFailure() << bad << " of " << b.n << " " << dtype_name(dtype_of<T>())
                                         << " elements wrong:" << first;
  return ::testing::AssertionSuccess();
}

// Any rank's flag, agreed on by all ranks (MPI_COMM_WORLD directly, from the main thread).
bool any_rank(bool flag) {
  int local = flag ? 1 : 0, any = 0;
  MPI_Allreduce(&local, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return any != 0;
}

// Plain point-to-point on MPI_COMM_WORLD, used to hold ranks back deterministically.
void send_token(int to) {
  int token = 1;
  MPI_Send(&token, 1, MPI_INT, to, /*tag=*/77, MPI_COMM_WORLD);
}
void recv_token(int from) {
  int token = 0;
  MPI_Recv(&token, 1, MPI_INT, from, /*tag=*/77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}

int64_t kind_index(CollectiveKind k) { return static_cast<int64_t>(k); }

class CommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = make_mpi_communicator(MPI_COMM_WORLD);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    comm_ = std::move(c).value();
    comm_->set_timeout(kTestTimeout);
    rank_ = comm_->rank();
    world_ = comm_->world_size();
  }

  // See Note [no hanging tests].
  void TearDown() override {
    Status st = make_error(StatusCode::kInternal, "no world communicator");
    if (comm_) {
      comm_->set_timeout(10s);
      st = comm_->barrier();
    }
    if (any_rank(!st.is_ok())) {
      std::fprintf(stderr,
                   "[rank %d] the world communicator is out of step after a failed test (%s); "
                   "aborting the MPI job instead of hanging\n",
                   rank_, st.is_ok() ? "this rank is fine" : st.to_string().c_str());
      std::fflush(stderr);
      mpi_abort(1);
    }
    comm_.reset();
    buffers_.clear();
  }

  // A fixture-owned buffer (see Note [no hanging tests]).
  template <typename T>
  Guarded<T>& buf(int64_t n) {
    auto b = std::make_unique<Guarded<T>>(n);
    Guarded<T>& ref = *b;
    buffers_.push_back(std::move(b));
    return ref;
  }

  template <typename T>
  void check_all_reduce(Communicator& c, int64_t n, ReduceOp op) {
    SCOPED_TRACE(fmt::format("all_reduce {} of {} {}", op == ReduceOp::kSum ? "sum" : "max", n,
                             dtype_name(dtype_of<T>())));
    const int r = c.rank(), world = c.world_size();
    Guarded<T>& b = buf<T>(n);
    b.fill([&](int64_t i) { return val(r, i); });
    ZT_ASSERT_OK(c.all_reduce(b.tensor(), op));
    if (op == ReduceOp::kSum)
      EXPECT_TRUE(matches(b, [&](int64_t i) { return sum_over_ranks(world, i); }));
    else
      EXPECT_TRUE(matches(b, [&](int64_t i) { return max_over_ranks(world, i); }));
  }

  template <typename T>
  void check_reduce_scatter(Communicator& c, int64_t n) {
    SCOPED_TRACE(fmt::format("reduce_scatter of {} {} per rank", n, dtype_name(dtype_of<T>())));
    const int r = c.rank(), world = c.world_size();
    Guarded<T>& in = buf<T>(world * n);
    Guarded<T>& out = buf<T>(n);
    in.fill([&](int64_t i) { return val(r, i); });
    out.fill([](int64_t) { return -3.0f; });
    ZT_ASSERT_OK(c.reduce_scatter(in.tensor(), out.tensor()));
    EXPECT_TRUE(matches(out, [&](int64_t i) { return sum_over_ranks(world, r * n + i); }));
    EXPECT_TRUE(matches(in, [&](int64_t i) { return val(r, i); })) << "input modified";
  }

  template <typename T>
  void check_all_gather(Communicator& c, int64_t n, bool in_place) {
    SCOPED_TRACE(fmt::format("all_gather{} of {} {} per rank", in_place ? " (in place)" : "", n,
                             dtype_name(dtype_of<T>())));
    const int r = c.rank(), world = c.world_size();
    Guarded<T>& out = buf<T>(world * n);
    out.fill([](int64_t) { return -3.0f; });
    Tensor in_t;
    if (in_place) {
      for (int64_t i = 0; i < n; ++i) out.set(r * n + i, val(r, i));
      in_t = out.tensor().slice(r * n, r * n + n);
    } else {
      Guarded<T>& in = buf<T>(n);
      in.fill([&](int64_t i) { return val(r, i); });
      in_t = in.tensor();
    }
    ZT_ASSERT_OK(c.all_gather(in_t, out.tensor()));
    EXPECT_TRUE(matches(out, [&](int64_t j) { return val(static_cast<int>(j / n), j % n); }));
  }

  template <typename T>
  void check_broadcast(Communicator& c, int64_t n, int root) {
    SCOPED_TRACE(
        fmt::format("broadcast of {} {} from rank {}", n, dtype_name(dtype_of<T>()), root));
    Guarded<T>& b = buf<T>(n);
    if (c.rank() == root)
      b.fill([&](int64_t i) { return val(root, i); });
    else
      b.fill([](int64_t) { return -7.0f; });
    ZT_ASSERT_OK(c.broadcast(b.tensor(), root));
    EXPECT_TRUE(matches(b, [&](int64_t i) { return val(root, i); }));
  }

  std::unique_ptr<Communicator> comm_;
  int rank_ = 0, world_ = 1;
  std::vector<std::unique_ptr<GuardedBase>> buffers_;
};

TEST_F(CommTest, ReportsRankAndWorldOfMpiCommWorld) {
  int r = -1, n = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  EXPECT_EQ(comm_->rank(), r);
  EXPECT_EQ(comm_->world_size(), n);
  EXPECT_GE(n, 2) << "run this suite under mpirun -np 2 or more";
  EXPECT_NE(comm_->name().find(fmt::format("rank {}/{}", r, n)), std::string::npos)
      << comm_->name();
}

TEST_F(CommTest, AllReduceSumAndMaxOddSizesEveryDtype) {
  for (const int64_t n : kOddSizes) {
    for (const ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      ASSERT_NO_FATAL_FAILURE(check_all_reduce<float>(*comm_, n, op));
      ASSERT_NO_FATAL_FAILURE(check_all_reduce<bf16>(*comm_, n, op));
      ASSERT_NO_FATAL_FAILURE(check_all_reduce<fp16>(*comm_, n, op));
    }
  }
}

TEST_F(CommTest, AllReduceLargeEveryDtype) {
  ASSERT_NO_FATAL_FAILURE(check_all_reduce<float>(*comm_, kLarge, ReduceOp::kSum));
  ASSERT_NO_FATAL_FAILURE(check_all_reduce<float>(*comm_, kLarge, ReduceOp::kMax));
  ASSERT_NO_FATAL_FAILURE(check_all_reduce<bf16>(*comm_, kLarge, ReduceOp::kSum));
  ASSERT_NO_FATAL_FAILURE(check_all_reduce<fp16>(*comm_, kLarge, ReduceOp::kSum));
  ASSERT_NO_FATAL_FAILURE(check_all_reduce<bf16>(*comm_, kLarge + 1, ReduceOp::kMax));
}

TEST_F(CommTest, ReduceScatterOddSizesEveryDtype) {
  for (const int64_t n : kOddSizes) {
    ASSERT_NO_FATAL_FAILURE(check_reduce_scatter<float>(*comm_, n));
    ASSERT_NO_FATAL_FAILURE(check_reduce_scatter<bf16>(*comm_, n));
    ASSERT_NO_FATAL_FAILURE(check_reduce_scatter<fp16>(*comm_, n));
  }
  ASSERT_NO_FATAL_FAILURE(check_reduce_scatter<bf16>(*comm_, kLarge / world_ + 3));
}

TEST_F(CommTest, AllGatherOddSizesEveryDtypeOutOfPlaceAndInPlace) {
  for (const int64_t n : kOddSizes) {
    for (const bool in_place : {false, true}) {
      ASSERT_NO_FATAL_FAILURE(check_all_gather<float>(*comm_, n, in_place));
      ASSERT_NO_FATAL_FAILURE(check_all_gather<bf16>(*comm_, n, in_place));
      ASSERT_NO_FATAL_FAILURE(check_all_gather<fp16>(*comm_, n, in_place));
    }
  }
  ASSERT_NO_FATAL_FAILURE(check_all_gather<fp16>(*comm_, kLarge / world_ + 1, true));
}

TEST_F(CommTest, BroadcastFromNonZeroRoots) {
  for (const int root : {world_ - 1, 1}) {
    for (const int64_t n : kOddSizes) {
      ASSERT_NO_FATAL_FAILURE(check_broadcast<float>(*comm_, n, root));
      ASSERT_NO_FATAL_FAILURE(check_broadcast<bf16>(*comm_, n, root));
      ASSERT_NO_FATAL_FAILURE(check_broadcast<fp16>(*comm_, n, root));
    }
  }
}

TEST_F(CommTest, MismatchedShapesAndBadRootAreCaughtBeforeIssue) {
  // Every rank makes the same mistake, so nothing is issued anywhere and the communicator stays
  // in step.
  Guarded<float>& a = buf<float>(world_ * 4 + 1);
  Guarded<float>& b = buf<float>(4);
  Guarded<bf16>& h = buf<bf16>(4);
  EXPECT_THROW((void)comm_->reduce_scatter_async(a.tensor(), b.tensor()), CheckError);
  EXPECT_THROW((void)comm_->all_gather_async(b.tensor(), a.tensor()), CheckError);
  EXPECT_THROW((void)comm_->all_gather_async(h.tensor(), buf<float>(world_ * 4).tensor()),
               CheckError);
  EXPECT_THROW((void)comm_->broadcast_async(b.tensor(), world_), CheckError);
  EXPECT_THROW((void)comm_->broadcast_async(b.tensor(), -1), CheckError);
  EXPECT_EQ(comm_->stats().total_bytes(), 0);
  ZT_ASSERT_OK(comm_->barrier());
}

// A barrier cannot complete on rank 0 before every rank has joined: the others join only after
// rank 0 has looked, so the check does not depend on timing.
TEST_F(CommTest, BarrierWaitsForEveryRank) {
  if (rank_ == 0) {
    auto w = comm_->barrier_async();
    EXPECT_FALSE(w->is_completed());
    for (int r = 1; r < world_; ++r) send_token(r);
    ZT_ASSERT_OK(w->wait());
    EXPECT_TRUE(w->is_completed());
  } else {
    recv_token(0);
    auto w = comm_->barrier_async();
    ZT_ASSERT_OK(w->wait());
    EXPECT_TRUE(w->is_completed());
  }
  ZT_ASSERT_OK(comm_->barrier());
}

// Several collectives issued back to back return at once; they complete in issue order (whenever
// one is seen complete, every earlier one is too), and each result is right.
TEST_F(CommTest, AsyncBackToBackCompleteInIssueOrder) {
  const int r = rank_, world = world_;
  const int root = world - 1;
  Guarded<float>& ar = buf<float>(4097);
  Guarded<bf16>& ag_in = buf<bf16>(33);
  Guarded<bf16>& ag_out = buf<bf16>(world * 33);
  Guarded<fp16>& rs_in = buf<fp16>(world * 7);
  Guarded<fp16>& rs_out = buf<fp16>(7);
  Guarded<float>& bc = buf<float>(33);
  Guarded<bf16>& mx = buf<bf16>(7);
  Guarded<float>& big = buf<float>(kLarge);
  ar.fill([&](int64_t i) { return val(r, i); });
  ag_in.fill([&](int64_t i) { return val(r, i); });
  rs_in.fill([&](int64_t i) { return val(r, i); });
  if (r == root)
    bc.fill([&](int64_t i) { return val(root, i); });
  else
    bc.fill([](int64_t) { return -7.0f; });
  mx.fill([&](int64_t i) { return val(r, i); });
  big.fill([&](int64_t i) { return val(r, i); });

  // Rank 0 issues everything while the others are held back, so none of it can have completed
  // when it looks.
  if (r != 0) recv_token(0);
  std::vector<std::unique_ptr<Work>> works;
  works.push_back(comm_->all_reduce_async(ar.tensor()));
  works.push_back(comm_->all_gather_async(ag_in.tensor(), ag_out.tensor()));
  works.push_back(comm_->reduce_scatter_async(rs_in.tensor(), rs_out.tensor()));
  works.push_back(comm_->broadcast_async(bc.tensor(), root));
  works.push_back(comm_->all_reduce_async(mx.tensor(), ReduceOp::kMax));
  works.push_back(comm_->all_reduce_async(big.tensor()));
  works.push_back(comm_->barrier_async());
  if (r == 0) {
    for (size_t k = 0; k < works.size(); ++k)
      EXPECT_FALSE(works[k]->is_completed()) << "collective " << k << " before peers joined";
    for (int p = 1; p < world; ++p) send_token(p);
  }

  // Read the flags from the last to the first: if a later one was complete, an earlier one
  // finished before it, so must read complete too.
  const auto deadline = std::chrono::steady_clock::now() + kTestTimeout;
  bool in_order = true;
  for (;;) {
    bool later_done = false;
    for (size_t k = works.size(); k-- > 0;) {
      const bool done = works[k]->is_completed();
      if (later_done && !done) in_order = false;
      later_done = later_done || done;
    }
    if (works.back()->is_completed()) break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "collectives never completed";
    std::this_thread::sleep_for(200us);
  }
  EXPECT_TRUE(in_order) << "a collective completed before one issued earlier";
  for (auto& w : works) EXPECT_TRUE(w->is_completed());
  for (size_t k = 0; k < works.size(); ++k) ZT_ASSERT_OK(works[k]->wait());

  EXPECT_TRUE(matches(ar, [&](int64_t i) { return sum_over_ranks(world, i); }));
  EXPECT_TRUE(matches(ag_out, [&](int64_t j) { return val(static_cast<int>(j / 33), j % 33); }));
  EXPECT_TRUE(matches(rs_out, [&](int64_t i) { return sum_over_ranks(world, r * 7 + i); }));
  EXPECT_TRUE(matches(bc, [&](int64_t i) { return val(root, i); }));
  EXPECT_TRUE(matches(mx, [&](int64_t i) { return max_over_ranks(world, i); }));
  EXPECT_TRUE(matches(big, [&](int64_t i) { return sum_over_ranks(world, i); }));
}

// While a large all-reduce is in flight on the communication thread the caller computes; both
// results are right (no timing is asserted).
TEST_F(CommTest, CallerComputesWhileLargeAllReduceInFlight) {
  Guarded<float>& big = buf<float>(kLarge);
  big.fill([&](int64_t i) { return val(rank_, i); });
  auto w = comm_->all_reduce_async(big.tensor(), ReduceOp::kSum);

  std::vector<double> x(1 << 20);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i % 1000);
  const double per_round = std::accumulate(x.begin(), x.end(), 0.0);
  double acc = 0.0;
  int rounds = 0;
  do {
    for (double v : x) acc += v;  // integers below 2^53: exact
    ++rounds;
  } while (!w->is_completed() && rounds < 1000);
  EXPECT_EQ(acc, per_round * rounds);

  ZT_ASSERT_OK(w->wait());
  EXPECT_TRUE(matches(big, [&](int64_t i) { return sum_over_ranks(world_, i); }));
  const CommStats s = comm_->stats();
  EXPECT_GE(s.busy_ms, 0.0);
  EXPECT_GE(s.blocked_ms, 0.0);
}

int64_t ring_share(int64_t bytes, int64_t num, int64_t den) {
  EXPECT_EQ(bytes * num % den, 0) << "pick sizes for which the ring formula is a whole number";
  return bytes * num / den;
}

TEST_F(CommTest, ByteAccountingFollowsTheRingFormulas) {
  const int64_t N = world_;
  CommStats fresh = comm_->stats();
  EXPECT_EQ(fresh.total_bytes(), 0);
  for (size_t k = 0; k < kNumCollectiveKinds; ++k) EXPECT_EQ(fresh.calls[k], 0) << k;

  std::array<int64_t, kNumCollectiveKinds> bytes{}, calls{};
  auto count = [&](CollectiveKind k, int64_t b) {
    bytes[static_cast<size_t>(kind_index(k))] += b;
    calls[static_cast<size_t>(kind_index(k))] += 1;
  };

  // all_reduce: 2(N-1)/N of the buffer.
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{4097}}) {
    Guarded<float>& f = buf<float>(n);
    f.fill([&](int64_t i) { return val(rank_, i); });
    ZT_ASSERT_OK(comm_->all_reduce(f.tensor()));
    count(CollectiveKind::kAllReduce, ring_share(4 * n, 2 * (N - 1), N));
    Guarded<bf16>& h = buf<bf16>(n);
    h.fill([&](int64_t i) { return val(rank_, i); });
    ZT_ASSERT_OK(comm_->all_reduce(h.tensor(), ReduceOp::kMax));
    count(CollectiveKind::kAllReduce, ring_share(2 * n, 2 * (N - 1), N));
  }
  // reduce_scatter: (N-1)/N of the input (N x n).
  for (const int64_t n : {int64_t{1}, int64_t{33}}) {
    Guarded<float>& in = buf<float>(N * n);
    Guarded<float>& out = buf<float>(n);
    in.fill([&](int64_t i) { return val(rank_, i); });
    ZT_ASSERT_OK(comm_->reduce_scatter(in.tensor(), out.tensor()));
    count(CollectiveKind::kReduceScatter, ring_share(4 * N * n, N - 1, N));
    Guarded<fp16>& hin = buf<fp16>(N * n);
    Guarded<fp16>& hout = buf<fp16>(n);
    hin.fill([&](int64_t i) { return val(rank_, i); });
    ZT_ASSERT_OK(comm_->reduce_scatter(hin.tensor(), hout.tensor()));
    count(CollectiveKind::kReduceScatter, ring_share(2 * N * n, N - 1, N));
  }
  // all_gather: (N-1)/N of the output (N x n), in place or not.
  for (const int64_t n : {int64_t{7}, int64_t{4097}}) {
    Guarded<float>& in = buf<float>(n);
    Guarded<float>& out = buf<float>(N * n);
    ZT_ASSERT_OK(comm_->all_gather(in.tensor(), out.tensor()));
    count(CollectiveKind::kAllGather, ring_share(4 * N * n, N - 1, N));
    Guarded<bf16>& hout = buf<bf16>(N * n);
    ZT_ASSERT_OK(comm_->all_gather(hout.tensor().slice(rank_ * n, rank_ * n + n), hout.tensor()));
    count(CollectiveKind::kAllGather, ring_share(2 * N * n, N - 1, N));
  }
  // broadcast: once per hop of the chain root -> root+1 -> ...; the chain's last rank,
  // (root-1) mod N, sends nothing.
  for (const int root : {0, static_cast<int>(N) - 1, 1}) {
    const int64_t n = 33;
    Guarded<fp16>& b = buf<fp16>(n);
    ZT_ASSERT_OK(comm_->broadcast(b.tensor(), root));
    const bool last_of_chain = rank_ == (root + N - 1) % N;
    count(CollectiveKind::kBroadcast, last_of_chain ? 0 : 2 * n);
  }
  // barrier: no payload.
  ZT_ASSERT_OK(comm_->barrier());
  ZT_ASSERT_OK(comm_->barrier());
  count(CollectiveKind::kBarrier, 0);
  count(CollectiveKind::kBarrier, 0);

  const CommStats s = comm_->stats();
  int64_t total = 0;
  for (size_t k = 0; k < kNumCollectiveKinds; ++k) {
    const char* name = collective_name(static_cast<CollectiveKind>(k));
    EXPECT_EQ(s.bytes[k], bytes[k]) << name << " bytes on rank " << rank_ << " of " << N;
    EXPECT_EQ(s.calls[k], calls[k]) << name << " calls";
    total += bytes[k];
  }
  EXPECT_EQ(s.total_bytes(), total);
  EXPECT_GT(s.total_bytes(), 0);
  EXPECT_GE(s.busy_ms, 0.0);
  EXPECT_GE(s.blocked_ms, 0.0);

  comm_->reset_stats();
  const CommStats z = comm_->stats();
  EXPECT_EQ(z.total_bytes(), 0);
  for (size_t k = 0; k < kNumCollectiveKinds; ++k) {
    EXPECT_EQ(z.bytes[k], 0) << k;
    EXPECT_EQ(z.calls[k], 0) << k;
  }
  EXPECT_EQ(z.busy_ms, 0.0);
  EXPECT_EQ(z.blocked_ms, 0.0);

  // Counting starts again from zero.
  Guarded<float>& f = buf<float>(4097);
  ZT_ASSERT_OK(comm_->all_reduce(f.tensor()));
  const CommStats after = comm_->stats();
  EXPECT_EQ(after.bytes[static_cast<size_t>(CollectiveKind::kAllReduce)],
            ring_share(4 * 4097, 2 * (N - 1), N));
  EXPECT_EQ(after.calls[static_cast<size_t>(CollectiveKind::kAllReduce)], 1);
  EXPECT_EQ(after.total_bytes(), ring_share(4 * 4097, 2 * (N - 1), N));
}

// Rank 1 joins an all-reduce ~3 s late; rank 0, waiting with a 1 s timeout, gets kTimeout naming
// the collective, its rank and the element count, then waits again and the collective completes
// once rank 1 joins: the job goes on.
TEST_F(CommTest, TimeoutNamesTheCollectiveAndALaterWaitCompletesIt) {
  constexpr int64_t n = 4097;
  Guarded<float>& b = buf<float>(n);
  b.fill([&](int64_t i) { return val(rank_, i); });
  ZT_ASSERT_OK(comm_->barrier());  // start together, so the 2 s margin is real

  if (rank_ == 1) std::this_thread::sleep_for(3s);
  if (rank_ == 0) comm_->set_timeout(1s);
  auto w = comm_->all_reduce_async(b.tensor());
  if (rank_ == 0) {
    const Status st = w->wait();
    EXPECT_EQ(st.code(), StatusCode::kTimeout) << st.to_string();
    const std::string& msg = st.message();
    EXPECT_NE(msg.find("all_reduce"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(n)), std::string::npos) << msg;
    EXPECT_FALSE(w->is_completed());
    EXPECT_GT(comm_->stats().blocked_ms, 0.0);
    comm_->set_timeout(kTestTimeout);
  }
  ZT_ASSERT_OK(w->wait());
  EXPECT_TRUE(w->is_completed());
  EXPECT_TRUE(matches(b, [&](int64_t i) { return sum_over_ranks(world_, i); }));
  ZT_ASSERT_OK(w->wait());  // waiting on a finished collective again is fine

  // The communicator is still in step.
  Guarded<bf16>& h = buf<bf16>(33);
  h.fill([&](int64_t i) { return val(rank_, i); });
  ZT_ASSERT_OK(comm_->all_reduce(h.tensor(), ReduceOp::kMax));
  EXPECT_TRUE(matches(h, [&](int64_t i) { return max_over_ranks(world_, i); }));
}

// A communicator over MPI_COMM_SELF (world of one: every collective is the identity) works on its
// own thread while a large all-reduce is in flight on the world communicator.
TEST_F(CommTest, SelfCommunicatorIsIdentityBesideTheWorld) {
  auto self_or = make_mpi_communicator(MPI_COMM_SELF);
  ASSERT_TRUE(self_or.is_ok()) << self_or.status().to_string();
  std::unique_ptr<Communicator> self = std::move(self_or).value();
  self->set_timeout(kTestTimeout);
  EXPECT_EQ(self->rank(), 0);
  EXPECT_EQ(self->world_size(), 1);

  Guarded<float>& big = buf<float>(kLarge);
  big.fill([&](int64_t i) { return val(rank_, i); });
  auto world_work = comm_->all_reduce_async(big.tensor());

  for (const int64_t n : kOddSizes) {
    // check_* compute expectations from self's rank and world (0 and 1): the identity.
    ASSERT_NO_FATAL_FAILURE(check_all_reduce<float>(*self, n, ReduceOp::kSum));
    ASSERT_NO_FATAL_FAILURE(check_all_reduce<bf16>(*self, n, ReduceOp::kMax));
    ASSERT_NO_FATAL_FAILURE(check_all_reduce<fp16>(*self, n, ReduceOp::kSum));
    ASSERT_NO_FATAL_FAILURE(check_reduce_scatter<bf16>(*self, n));
    ASSERT_NO_FATAL_FAILURE(check_all_gather<fp16>(*self, n, false));
    ASSERT_NO_FATAL_FAILURE(check_all_gather<float>(*self, n, true));
    ASSERT_NO_FATAL_FAILURE(check_broadcast<bf16>(*self, n, 0));
  }
  // An async self collective completes while the world one may still be running.
  Guarded<float>& s = buf<float>(4097);
  s.fill([&](int64_t i) { return val(rank_, i); });
  auto self_work = self->all_reduce_async(s.tensor());
  ZT_ASSERT_OK(self_work->wait());
  EXPECT_TRUE(matches(s, [&](int64_t i) { return val(rank_, i); }));
  ZT_ASSERT_OK(self->barrier());

  const CommStats st = self->stats();
  EXPECT_EQ(st.total_bytes(), 0) << "a world of one sends nothing";
  EXPECT_EQ(st.calls[static_cast<size_t>(CollectiveKind::kAllReduce)], 3 * 4 + 1);
  EXPECT_EQ(st.calls[static_cast<size_t>(CollectiveKind::kBarrier)], 1);

  ZT_ASSERT_OK(world_work->wait());
  EXPECT_TRUE(matches(big, [&](int64_t i) { return sum_over_ranks(world_, i); }));
  EXPECT_EQ(comm_->stats().calls[static_cast<size_t>(CollectiveKind::kAllReduce)], 1);
  self.reset();  // freed before the world one, while the world stays usable
  ZT_ASSERT_OK(comm_->barrier());
}

}  // namespace
}  // namespace zt
