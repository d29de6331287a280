// Memory accounting: every allocation belongs to one category, and each rank keeps current and peak
// bytes per category plus the peak of the total. Thread-safe. Backends charge and release through
// it; nothing allocates tracked memory behind its back.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace zt {

enum class MemCategory : uint8_t {
  kParameters = 0,   // working weights (16-bit under mixed precision)
  kGradients,        // parameter gradients
  kOptimizerStates,  // fp32 master weights and optimizer moments
  kActivations,      // tensors saved for backward and live activation gradients
  kCommunication,    // collective buffers and buckets
  kWorkspace,        // scratch of the kernels (dtype staging, attention tiles)
  kCount,
};
constexpr size_t kNumMemCategories = static_cast<size_t>(MemCategory::kCount);

const char* mem_category_name(MemCategory c);  // "parameters", "gradients", ...

struct MemorySnapshot {
  std::array<int64_t, kNumMemCategories> current{};
  std::array<int64_t, kNumMemCategories> peak{};
  int64_t total_current = 0;
  int64_t total_peak = 0;
};

class MemoryTracker {
 public:
  void charge(MemCategory c, size_t bytes);
  void release(MemCategory c, size_t bytes);

  int64_t current(MemCategory c) const { return cur_[idx(c)].load(std::memory_order_relaxed); }
  int64_t peak(MemCategory c) const { return peak_[idx(c)].load(std::memory_order_relaxed); }
  int64_t total_current() const { return total_cur_.load(std::memory_order_relaxed); }
  int64_t total_peak() const { return total_peak_.load(std::memory_order_relaxed); }
  MemorySnapshot snapshot() const;

  // Starts a new peak window (e.g. per step): peaks restart from the current values.
  void reset_peaks();

 private:
  static size_t idx(MemCategory c) { return static_cast<size_t>(c); }
  static void raise(std::atomic<int64_t>& peak, int64_t value);

  std::array<std::atomic<int64_t>, kNumMemCategories> cur_{};
  std::array<std::atomic<int64_t>, kNumMemCategories> peak_{};
  std::atomic<int64_t> total_cur_{0};
  std::atomic<int64_t> total_peak_{0};
};

}  // namespace zt
