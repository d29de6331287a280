// Memory accounting: every allocation belongs to one category, and each rank keeps current and peak
// bytes per category plus the peak of the total. Thread-safe. Backends charge and release through
// it; nothing allocates tracked memory behind its back.
//
// Note [peak phase]
// The tracker also remembers *when* each peak was set: whoever drives the process (the step
// profile, runtime/profile/step_profile.h) sets an opaque phase id with set_phase(), and a charge
// that raises a peak stores the id current at that moment next to it. reset_peaks() gives every
// peak the current id: a peak that is never raised afterwards was already held when the window
// began. The id is one relaxed atomic, so charges stay cheap; under concurrent charges from several
// threads the id stored with a peak may be that of a racing charge, i.e. of the same moment.
// A second, shorter window (reset_window()) gives the high-water mark within one phase.
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
  // The phase ids (Note [peak phase]) current when each peak was set.
  std::array<int64_t, kNumMemCategories> peak_phase{};
  int64_t total_peak_phase = 0;
};

// High-water marks since MemoryTracker::reset_window().
struct MemoryWindow {
  std::array<int64_t, kNumMemCategories> peak{};
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

  // Starts a new peak window (e.g. per step): peaks restart from the current values, and their
  // phase is the current one.
  void reset_peaks();

  // Note [peak phase]: the id stored with the peaks raised from now on (0 when never set).
  void set_phase(int64_t id) { phase_.store(id, std::memory_order_relaxed); }
  int64_t phase() const { return phase_.load(std::memory_order_relaxed); }
  int64_t peak_phase(MemCategory c) const {
    return peak_phase_[idx(c)].load(std::memory_order_relaxed);
  }
  int64_t total_peak_phase() const { return total_peak_phase_.load(std::memory_order_relaxed); }

  // The short window (one phase): its high-water marks restart from the current values; window()
  // reads them; raise_window() folds in marks read earlier (a phase nested in another resets the
  // window, and gives the outer phase its marks back when it ends).
  void reset_window();
  MemoryWindow window() const;
  void raise_window(const MemoryWindow& w);

 private:
  static size_t idx(MemCategory c) { return static_cast<size_t>(c); }
  // Raises `peak` to `value`; whether this call raised it.
  static bool raise(std::atomic<int64_t>& peak, int64_t value);

  std::array<std::atomic<int64_t>, kNumMemCategories> cur_{};
  std::array<std::atomic<int64_t>, kNumMemCategories> peak_{};
  std::atomic<int64_t> total_cur_{0};
  std::atomic<int64_t> total_peak_{0};
  std::atomic<int64_t> phase_{0};
  std::array<std::atomic<int64_t>, kNumMemCategories> peak_phase_{};
  std::atomic<int64_t> total_peak_phase_{0};
  std::array<std::atomic<int64_t>, kNumMemCategories> window_peak_{};
  std::atomic<int64_t> window_total_peak_{0};
};

}  // namespace zt
