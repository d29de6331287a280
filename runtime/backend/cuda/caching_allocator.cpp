#include "runtime/backend/cuda/caching_allocator.h"

#include <algorithm>
#include <bit>

#include "runtime/core/check.h"

namespace zt::cuda {

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes <= 4096) return (bytes + 511) / 512 * 512;
  // Four steps per power of two: the step is a quarter of the largest power of two <= bytes.
  const size_t top = std::bit_floor(bytes);
  const size_t step = top / 4;
  return (bytes + step - 1) / step * step;
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  cudaSetDevice(device_);
  cudaDeviceSynchronize();
  for (PendingFree& p : pending_) {
    for (cudaEvent_t e : p.events) event_pool_.push_back(e);
    cudaFree(p.block.ptr);
  }
  pending_.clear();
  for (auto& [key, ptrs] : free_)
    for (void* p : ptrs) cudaFree(p);
  free_.clear();
  // Live blocks at destruction belong to Buffers that outlived the backend: a bug elsewhere, but
  // the memory goes back to the device with the context anyway.
  for (auto& [ptr, b] : live_) cudaFree(ptr);
  live_.clear();
  for (cudaEvent_t e : event_pool_) cudaEventDestroy(e);
}

void CachingAllocator::reap_pending_locked() {
  for (size_t i = 0; i < pending_.size();) {
    PendingFree& p = pending_[i];
    bool done = true;
    for (cudaEvent_t e : p.events) {
      const cudaError_t st = cudaEventQuery(e);
      if (st == cudaErrorNotReady) {
        done = false;
        break;
      }
      (void)cudaGetLastError();  // a sticky error shows at the next synchronising call
    }
    if (!done) {
      ++i;
      continue;
    }
    for (cudaEvent_t e : p.events) event_pool_.push_back(e);
    free_[{p.block.stream, p.block.size}].push_back(p.block.ptr);
    pending_[i] = std::move(pending_.back());
    pending_.pop_back();
  }
}

void* CachingAllocator::allocate(size_t bytes, cudaStream_t stream) {
  const size_t size = size_class(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  if (!pending_.empty()) reap_pending_locked();
  auto it = free_.find({stream, size});
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    live_[p] = Block{p, size, stream, {}};
    stats_.live_bytes += static_cast<int64_t>(size);
    ++stats_.cache_hits;
    return p;
  }
  void* p = nullptr;
  cudaError_t st = cudaMalloc(&p, size);
  if (st != cudaSuccess) {
    (void)cudaGetLastError();  // clear the (non-sticky) allocation error
    release_cached_locked();
    st = cudaMalloc(&p, size);
    if (st != cudaSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
  }
  ++stats_.device_allocations;
  stats_.reserved_bytes += static_cast<int64_t>(size);
  stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
  stats_.live_bytes += static_cast<int64_t>(size);
  live_[p] = Block{p, size, stream, {}};
  return p;
}

void CachingAllocator::record_stream(void* p, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  ZT_CHECK(it != live_.end(), "record_stream of a pointer this allocator does not own");
  Block& b = it->second;
  if (stream == b.stream) return;
  if (std::find(b.other_streams.begin(), b.other_streams.end(), stream) == b.other_streams.end())
    b.other_streams.push_back(stream);
}

void CachingAllocator::free(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  ZT_CHECK(it != live_.end(), "free of a pointer this allocator does not own");
  Block b = std::move(it->second);
  live_.erase(it);
  stats_.live_bytes -= static_cast<int64_t>(b.size);
  if (b.other_streams.empty()) {
    free_[{b.stream, b.size}].push_back(b.ptr);
    return;
  }
  PendingFree pf;
  for (cudaStream_t s : b.other_streams) {
    cudaEvent_t e = nullptr;
    if (!event_pool_.empty()) {
      e = event_pool_.back();
      event_pool_.pop_back();
    } else if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
      // Cannot track the other stream: wait for it now rather than risk reuse under it.
      (void)cudaGetLastError();
      cudaStreamSynchronize(s);
      continue;
    }
    cudaEventRecord(e, s);
    pf.events.push_back(e);
  }
  b.other_streams.clear();
  pf.block = std::move(b);
  pending_.push_back(std::move(pf));
}

void CachingAllocator::release_cached_locked() {
  cudaSetDevice(device_);
  cudaDeviceSynchronize();
  reap_pending_locked();
  for (auto& [key, ptrs] : free_) {
    for (void* p : ptrs) {
      cudaFree(p);
      stats_.reserved_bytes -= static_cast<int64_t>(key.second);
    }
  }
  free_.clear();
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace zt::cuda
