// CachingAllocator: device memory for the CUDA backend without a cudaMalloc/cudaFree per tensor.
//
// cudaMalloc is slow (hundreds of microseconds) and cudaFree synchronises the whole device, while
// the engine allocates and frees pooled buffers every micro-batch. Freed blocks go back to a cache
// and are handed out again. Rules:
//   - Size classes: requests round up to 512 bytes below 4 KiB, otherwise to one of four steps
//     per power of two (1, 1.25, 1.5, 1.75 x 2^k), so waste is under 25% (12.5% on average) and a
//     freed block fits every later request of its class exactly.
//   - Stream-aware reuse: a block belongs to the stream it was allocated on. Work on that stream
//     is ordered, so a freed block may be reused by the next allocation on the same stream at once
//     (the kernels that used it were issued before the kernels of the new owner). A block also
//     used on another stream (record_stream, e.g. a collective's buffer on the NCCL stream) is
//     reused only after an event recorded on that stream at free time has completed.
//   - Out of memory: when cudaMalloc fails, every idle cached block is released (after a device
//     synchronise) and the allocation is tried once more; then nullptr, and the backend reports
//     the breakdown by category.
// Thread-safe. Accounting of what the blocks hold (categories) is the MemoryTracker's; this class
// reports what it reserves from the device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

namespace zt::cuda {

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` for use on `stream`; nullptr when the device is out of memory.
  void* allocate(size_t bytes, cudaStream_t stream);
  // Returns the block to the cache (never to the device).
  void free(void* p);
  // Marks the block as used on `stream` too, until it is freed.
  void record_stream(void* p, cudaStream_t stream);
  // Synchronises the device and cudaFree's every idle cached block.
  void release_cached();

  struct Stats {
    int64_t reserved_bytes = 0;  // held from the device: live + cached
    int64_t peak_reserved_bytes = 0;
    int64_t live_bytes = 0;          // handed out (size classes)
    int64_t device_allocations = 0;  // cudaMalloc calls
    int64_t cache_hits = 0;
  };
  Stats stats() const;

  static size_t size_class(size_t bytes);

 private:
  struct Block {
    void* ptr = nullptr;
    size_t size = 0;
    cudaStream_t stream = nullptr;
    std::vector<cudaStream_t> other_streams;
  };
  struct PendingFree {
    Block block;
    std::vector<cudaEvent_t> events;
  };
  using FreeKey = std::pair<cudaStream_t, size_t>;

  void reap_pending_locked();
  void release_cached_locked();

  int device_;
  mutable std::mutex mu_;
  std::unordered_map<void*, Block> live_;
  std::map<FreeKey, std::vector<void*>> free_;
  std::vector<PendingFree> pending_;
  std::vector<cudaEvent_t> event_pool_;
  Stats stats_;
};

}  // namespace zt::cuda
