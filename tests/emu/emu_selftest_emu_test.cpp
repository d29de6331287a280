// The CUDA emulator itself (cuda_emu.h) on small kernels of its own (emu_selftest_kernels.cu):
// the results of the warp intrinsics, block votes, static and dynamic shared memory (garbage at
// block start, per-block instances, the opt-in limit), the driver's launch checks, cp.async timing,
// the block and thread orders, WMMA; and that it aborts, naming the problem, on the bugs it exists
// to find (death tests).
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/emu/emu_selftest_kernels.h"
#include "tests/emu/emu_test_util.h"

namespace zt::emu_test {
namespace {

namespace st = zt_emu_selftest;

class EmuSelfTest : public EmuTest {};

TEST_F(EmuSelfTest, WarpIntrinsics) {
  std::vector<uint32_t> out(st::kWarpResults * 32, 0xDEADBEEF);
  ASSERT_EQ(st::warp_intrinsics(out.data()), cudaSuccess);
  for (uint32_t l = 0; l < 32; ++l) {
    const uint32_t want[st::kWarpResults] = {
        30,
        (l & ~7u) + 5,
        l >= 3 ? l - 3 : l,
        (l & 15) >= 2 ? l - 2 : l,
        l + 5 < 32 ? l + 5 : l,
        (l & 3) + 1 < 4 ? l + 1 : l,
        l ^ 9,
        0x49249249u,
        1,
        0,
        l % 3 == 0   ? 0x49249249u
        : l % 3 == 1 ? 0x92492492u
                     : 0x24924924u,
        496,
        31,
        l < 16 ? l ^ 1 : l ^ 2,
    };
    for (int k = 0; k < st::kWarpResults; ++k) {
      EXPECT_EQ(out[k * 32 + l], want[k]) << "result " << k << " of lane " << l;
    }
  }
}

TEST_F(EmuSelfTest, BlockVotes) {
  for (int n : {32, 100, 1024}) {
    int out[3] = {-1, -1, -1};
    ASSERT_EQ(st::block_votes(n, out), cudaSuccess);
    EXPECT_EQ(out[0], (n + 2) / 3) << n;
    EXPECT_EQ(out[1], 0) << n;
    EXPECT_EQ(out[2], 1) << n;
  }
}

TEST_F(EmuSelfTest, StaticSharedIsPerBlockAndStartsAsGarbage) {
  std::vector<uint32_t> out(2 * 3);
  ASSERT_EQ(st::static_shared(3, out.data()), cudaSuccess);
  for (uint32_t b = 0; b < 3; ++b) {
    EXPECT_EQ(out[2 * b], 0xFFFFFFFFu) << "shared memory at the start of block " << b;
    EXPECT_EQ(out[2 * b + 1], 64 * b + 2016 + 2016) << "block " << b;
  }
}

TEST_F(EmuSelfTest, DynamicSharedNeedsTheAttributeAbove48KiB) {
  int ok = -1;
  ASSERT_EQ(st::dynamic_shared(48 * 1024, false, &ok), cudaSuccess);
  EXPECT_EQ(ok, 1);
  ok = -1;
  EXPECT_EQ(st::dynamic_shared(100 * 1024, false, &ok), cudaErrorInvalidValue);
  EXPECT_EQ(ok, -1);
  ASSERT_EQ(st::dynamic_shared(100 * 1024, true, &ok), cudaSuccess);
  EXPECT_EQ(ok, 1);
  zt_emu::options().smem_optin = 64 * 1024;
  EXPECT_EQ(st::dynamic_shared(100 * 1024, true, &ok), cudaErrorInvalidValue);
}

TEST_F(EmuSelfTest, LaunchChecks) {
  EXPECT_EQ(st::bounded(dim3(2), dim3(64)), cudaSuccess);
  EXPECT_EQ(st::bounded(dim3(2), dim3(65)), cudaErrorLaunchOutOfResources);  // > bounds
  EXPECT_EQ(st::bounded(dim3(2), dim3(1025)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::bounded(dim3(2), dim3(1, 1, 65)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::bounded(dim3(0), dim3(32)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::bounded(dim3(1, 65536), dim3(32)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // read and cleared by the launcher
  EXPECT_EQ(zt_emu::stats().launches, 1);
}

TEST_F(EmuSelfTest, AsyncCopiesEarlyOrLate) {
  std::vector<float> src(32), before(32), after(32);
  for (int i = 0; i < 32; ++i) src[i] = static_cast<float>(i);
  ASSERT_EQ(st::async_copy(src.data(), before.data(), after.data()), cudaSuccess);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(before[i], src[i]);
    EXPECT_EQ(after[i], src[i]);
  }
  zt_emu::options().late_async_copies = true;
  ASSERT_EQ(st::async_copy(src.data(), before.data(), after.data()), cudaSuccess);
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(before[i], -1.0f) << "read before the wait sees the old value";
    EXPECT_EQ(after[i], src[i]);
  }
}

TEST_F(EmuSelfTest, BlockAndThreadOrders) {
  const int n = 5, threads = 70;
  std::vector<int> order(n), first(n, -1);
  ASSERT_EQ(st::run_order(n, threads, order.data(), first.data()), cudaSuccess);
  for (int b = 0; b < n; ++b) {
    EXPECT_EQ(order[b], b);
    EXPECT_EQ(first[b], 0);
  }
  zt_emu::options().block_order = zt_emu::Order::kReverse;
  zt_emu::options().thread_order = zt_emu::Order::kReverse;
  std::fill(first.begin(), first.end(), -1);
  ASSERT_EQ(st::run_order(n, threads, order.data(), first.data()), cudaSuccess);
  for (int b = 0; b < n; ++b) {
    EXPECT_EQ(order[b], n - 1 - b);
    EXPECT_EQ(first[b], threads - 1);
  }
  zt_emu::options().block_order = zt_emu::Order::kRandom;
  zt_emu::options().seed = 11;
  ASSERT_EQ(st::run_order(n, threads, order.data(), first.data()), cudaSuccess);
  std::vector<int> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int b = 0; b < n; ++b) EXPECT_EQ(sorted[b], b) << "a permutation";
}

TEST_F(EmuSelfTest, WmmaProduct) {
  Buf a(kBF16, 256), b(kBF16, 256), c(kF32, 256), d(kF32, 256);
  Rng rng(3);
  a.fill_uniform(rng, -1.0, 1.0);
  b.fill_uniform(rng, -1.0, 1.0);
  c.fill_uniform(rng, -1.0, 1.0);
  ASSERT_EQ(st::wmma_product(a.data(), b.data(), c.as<float>(), d.as<float>()), cudaSuccess);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      double s = c.get(size_t(i) * 16 + j);
      for (int k = 0; k < 16; ++k)
        s += double(a.get(size_t(i) * 16 + k)) * b.get(size_t(j) * 16 + k);
      EXPECT_NEAR(d.get(size_t(i) * 16 + j), s, 1e-5) << i << "," << j;
    }
  }
}

// The bugs the emulator exists to find: it aborts and says what happened.
class EmuSelfDeathTest : public EmuTest {
 protected:
  void SetUp() override {
    EmuTest::SetUp();
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

TEST_F(EmuSelfDeathTest, ReportsBugs) {
  EXPECT_DEATH(st::buggy(0), "exits while 32 thread\\(s\\) of the block wait at __syncthreads");
  EXPECT_DEATH(st::buggy(1), "exits while|reached after");
  EXPECT_DEATH(st::buggy(2), "reads lane 1[6-9]|reads lane 2|reads lane 3");
  EXPECT_DEATH(st::buggy(3), "leaves out the calling lane");
  EXPECT_DEATH(st::buggy(4), "not aligned to the size");
  // UBSan (ZT_UBSAN builds) sees the __shared__ array's bound first.
  EXPECT_DEATH(st::buggy(5), "past the end of __shared__ a|index 8 out of bounds");
  EXPECT_DEATH(st::buggy(6), "deadlock");
  EXPECT_DEATH(st::buggy(7), "they must agree");
  EXPECT_DEATH(st::buggy(8), "does not fit dim3");
}

}  // namespace
}  // namespace zt::emu_test
