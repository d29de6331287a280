// The CUDA backend's caching allocator: the size-class rule (runs everywhere: no device needed),
// and on a device, reuse on the same stream, deferred reuse across streams, the out-of-memory
// path (nullptr, then the backend's error naming the categories) and the accounting.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include "runtime/backend/cuda/caching_allocator.h"
#include "tests/cuda/cuda_test_util.h"

namespace zt {
namespace {

using cuda::CachingAllocator;

TEST(CachingAllocatorSizeClass, RoundsUpWithBoundedWaste) {
  size_t prev = 0;
  for (size_t bytes = 1; bytes < (size_t{1} << 31); bytes = bytes * 17 / 16 + 1) {
    const size_t c = CachingAllocator::size_class(bytes);
    EXPECT_GE(c, bytes);
    EXPECT_EQ(c % 512, 0u) << bytes;
    EXPECT_GE(c, prev) << "size classes must not decrease with the request: " << bytes;
    if (bytes > 4096) {
      EXPECT_LE(c - bytes, bytes / 4) << "over 25% waste at " << bytes;
    }
    // A class is its own class: a cached block fits exactly the requests that map to it.
    EXPECT_EQ(CachingAllocator::size_class(c), c) << bytes;
    prev = c;
  }
  EXPECT_EQ(CachingAllocator::size_class(0), 512u);
  EXPECT_EQ(CachingAllocator::size_class(5000), 5120u);  // 4096 + 1024: steps of 1024 up to 8192
  EXPECT_EQ(CachingAllocator::size_class(size_t{1} << 30), size_t{1} << 30);
}

TEST(CachingAllocatorDevice, ReusesOnTheSameStreamAndDefersAcrossStreams) {
  ZT_REQUIRE_CUDA_DEVICE();
  CachingAllocator alloc(0);
  cudaStream_t s1, s2;
  ASSERT_EQ(cudaStreamCreate(&s1), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&s2), cudaSuccess);
  void* a = alloc.allocate(1 << 20, s1);
  ASSERT_NE(a, nullptr);
  alloc.free(a);
  EXPECT_EQ(alloc.allocate(1 << 20, s1), a) << "a freed block is reused on its stream at once";
  EXPECT_NE(alloc.allocate(1 << 20, s2), a) << "another stream must not get it";
  // Used on s2 too: after the free it comes back only once s2 has passed the free point.
  alloc.record_stream(a, s2);
  alloc.free(a);
  cudaStreamSynchronize(s2);
  EXPECT_EQ(alloc.allocate(1 << 20, s1), a);
  const CachingAllocator::Stats st = alloc.stats();
  EXPECT_EQ(st.device_allocations, 2);
  EXPECT_EQ(st.reserved_bytes, 2 << 20);
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
}

TEST(CachingAllocatorDevice, OutOfMemoryIsAnErrorNamingTheCategories) {
  ZT_REQUIRE_CUDA_DEVICE();
  auto be = CudaBackend::create(CudaBackendOptions{});
  ASSERT_TRUE(be.is_ok()) << be.status().to_string();
  auto ok = (*be)->allocate(64 << 20, MemCategory::kParameters);
  ASSERT_TRUE(ok.is_ok());
  auto r = (*be)->allocate(size_t{1} << 50, MemCategory::kActivations);  // 1 PiB
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(r.status().message().find("activations"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("parameters=64.0MiB"), std::string::npos)
      << r.status().message();
  // The backend still works after the refusal.
  auto again = (*be)->allocate(1 << 20, MemCategory::kActivations);
  EXPECT_TRUE(again.is_ok());
  EXPECT_EQ((*be)->memory().current(MemCategory::kParameters), 64 << 20);
}

}  // namespace
}  // namespace zt
