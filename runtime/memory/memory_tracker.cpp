#include "runtime/memory/memory_tracker.h"

#include "runtime/core/check.h"

namespace zt {

const char* mem_category_name(MemCategory c) {
  switch (c) {
    case MemCategory::kParameters:
      return "parameters";
    case MemCategory::kGradients:
      return "gradients";
    case MemCategory::kOptimizerStates:
      return "optimizer_states";
    case MemCategory::kActivations:
      return "activations";
    case MemCategory::kCommunication:
      return "communication";
    case MemCategory::kWorkspace:
      return "workspace";
    case MemCategory::kCount:
      break;
  }
  return "?";
}

void MemoryTracker::raise(std::atomic<int64_t>& peak, int64_t value) {
  int64_t prev = peak.load(std::memory_order_relaxed);
  while (prev < value && !peak.compare_exchange_weak(prev, value, std::memory_order_relaxed)) {
  }
}

void MemoryTracker::charge(MemCategory c, size_t bytes) {
  const auto b = static_cast<int64_t>(bytes);
  raise(peak_[idx(c)], cur_[idx(c)].fetch_add(b, std::memory_order_relaxed) + b);
  raise(total_peak_, total_cur_.fetch_add(b, std::memory_order_relaxed) + b);
}

void MemoryTracker::release(MemCategory c, size_t bytes) {
  const auto b = static_cast<int64_t>(bytes);
  const int64_t before = cur_[idx(c)].fetch_sub(b, std::memory_order_relaxed);
  ZT_CHECK(before >= b, "memory accounting underflow in category {}: releasing {} of {} bytes",
           mem_category_name(c), b, before);
  total_cur_.fetch_sub(b, std::memory_order_relaxed);
}

MemorySnapshot MemoryTracker::snapshot() const {
  MemorySnapshot s;
  for (size_t i = 0; i < kNumMemCategories; ++i) {
    s.current[i] = cur_[i].load(std::memory_order_relaxed);
    s.peak[i] = peak_[i].load(std::memory_order_relaxed);
  }
  s.total_current = total_cur_.load(std::memory_order_relaxed);
  s.total_peak = total_peak_.load(std::memory_order_relaxed);
  return s;
}

void MemoryTracker::reset_peaks() {
  for (size_t i = 0; i < kNumMemCategories; ++i)
    peak_[i].store(cur_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  total_peak_.store(total_cur_.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace zt
