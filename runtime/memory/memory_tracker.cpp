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

bool MemoryTracker::raise(std::atomic<int64_t>& peak, int64_t value) {
  int64_t prev = peak.load(std::memory_order_relaxed);
  while (prev < value) {
    if (peak.compare_exchange_weak(prev, value, std::memory_order_relaxed)) return true;
  }
  return false;
}

void MemoryTracker::charge(MemCategory c, size_t bytes) {
  const auto b = static_cast<int64_t>(bytes);
  const size_t i = idx(c);
  const int64_t now = cur_[i].fetch_add(b, std::memory_order_relaxed) + b;
  if (raise(peak_[i], now)) peak_phase_[i].store(phase(), std::memory_order_relaxed);
  raise(window_peak_[i], now);
  const int64_t total = total_cur_.fetch_add(b, std::memory_order_relaxed) + b;
  if (raise(total_peak_, total)) total_peak_phase_.store(phase(), std::memory_order_relaxed);
  raise(window_total_peak_, total);
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
    s.peak_phase[i] = peak_phase_[i].load(std::memory_order_relaxed);
  }
  s.total_current = total_cur_.load(std::memory_order_relaxed);
  s.total_peak = total_peak_.load(std::memory_order_relaxed);
  s.total_peak_phase = total_peak_phase_.load(std::memory_order_relaxed);
  return s;
}

void MemoryTracker::reset_peaks() {
  const int64_t id = phase();
  for (size_t i = 0; i < kNumMemCategories; ++i) {
    peak_[i].store(cur_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
    peak_phase_[i].store(id, std::memory_order_relaxed);
  }
  total_peak_.store(total_cur_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  total_peak_phase_.store(id, std::memory_order_relaxed);
}

void MemoryTracker::reset_window() {
  for (size_t i = 0; i < kNumMemCategories; ++i)
    window_peak_[i].store(cur_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  window_total_peak_.store(total_cur_.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

MemoryWindow MemoryTracker::window() const {
  MemoryWindow w;
  for (size_t i = 0; i < kNumMemCategories; ++i)
    w.peak[i] = window_peak_[i].load(std::memory_order_relaxed);
  w.total_peak = window_total_peak_.load(std::memory_order_relaxed);
  return w;
}

void MemoryTracker::raise_window(const MemoryWindow& w) {
  for (size_t i = 0; i < kNumMemCategories; ++i) raise(window_peak_[i], w.peak[i]);
  raise(window_total_peak_, w.total_peak);
}

}  // namespace zt
