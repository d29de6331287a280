// The coordinator's live figures as Prometheus text (exposition format 0.0.4), built from a plain
// snapshot so the formatting is tested without sockets (tests/cpu/metrics_exporter_test.cpp);
// coordinator/metrics_server.h serves it on --metrics-port.
//
// Every family gets `# HELP` and `# TYPE`, names start with `zerotrain_`, values are in base
// units (seconds, bytes), counters end in `_total`. Figures of the latest step are absent until a
// step has completed: an absent series is how Prometheus says "unknown", where a 0 would be read
// as a real loss or learning rate.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/codec.h"
#include "runtime/memory/memory_tracker.h"

namespace zt {

// One completed optimizer step, as metrics.jsonl has it.
struct StepFigures {
  int64_t step = 0;
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;  // +Inf for a step skipped on an fp16 overflow
  double loss_scale = 1.0;
  double tokens_per_second = 0.0;
  double duration_seconds = 0.0;  // the slowest rank's
};

struct RankFigures {
  int rank = 0;
  std::string host;
  int64_t pid = 0;
  double heartbeat_age_seconds = 0.0;  // since the rank's last message of any kind
  std::array<int64_t, kNumMemCategories> memory_current{};  // latest step report
  std::array<int64_t, kNumMemCategories> memory_peak{};     // since the job started
  int64_t memory_total_current = 0;
  int64_t memory_total_peak = 0;  // peak of the sum, not the sum of the category peaks
  int64_t offload_resident_bytes = 0, offload_disk_bytes = 0;
};

struct MetricsSnapshot {
  protocol::JobState state = protocol::JobState::kStarting;
  std::string run_dir;
  std::string optimizer;
  std::string backend;
  int world_size = 0;  // 0 until known (--world or the first worker)
  int zero_stage = 0;
  int64_t steps_planned = 0;
  int64_t steps_completed = 0;  // counts from the checkpoint's step on a resumed job
  std::optional<StepFigures> last_step;
  int64_t skipped_steps = 0;  // by this coordinator
  int64_t tokens = 0;         // trained by this coordinator
  int workers_alive = 0;
  int64_t checkpoints_committed = 0;
  int64_t last_checkpoint_step = 0;  // 0: none committed by this job
  std::vector<RankFigures> ranks;    // registered ranks, by rank
};

// The whole /metrics page.
std::string format_metrics(const MetricsSnapshot& s);

// The pieces the format is strict about, for the tests.
std::string escape_label_value(std::string_view v);  // \ " and newline escaped
std::string escape_help(std::string_view v);         // \ and newline escaped
std::string format_value(double v);                  // NaN, +Inf, -Inf, else shortest round trip

}  // namespace zt
