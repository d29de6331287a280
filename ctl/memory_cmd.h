// `ztctl memory`: where a run's memory went, read from its run directory (no coordinator needed).
//
//   ztctl memory --run-dir DIR [--step N] [--json]
//
// For one step (the last in metrics.jsonl, or --step N) it shows each rank's peak bytes per
// category and in total, with the part of the step that set each peak (metrics.jsonl's
// `peak_memory_bytes` and `peak_phase`); then, from memory.jsonl, a summary of that step's memory
// timeline per rank (the latest sampled step at or before it: the workers record the timeline only
// for some steps): how many parts it has, the part with the highest total in use and the part with
// the highest total high-water mark.
//
// Input rules follow `ztctl report` (ctl/report.h): a malformed line is an error naming the file
// and line, except a last line without a newline (a writer cut off mid-line), which is skipped
// with a note. A missing metrics.jsonl is an error; a missing memory.jsonl is not (older runs and
// runs without sampled steps have none): the output says so.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"

namespace zt::ctl {

// One rank's peaks at the chosen step. Categories in the order of metrics.jsonl's documented
// names; a category missing from the line is -1 and its phase empty.
struct RankPeaks {
  int rank = 0;
  std::vector<int64_t> bytes;      // per category (kMemoryCategories)
  std::vector<std::string> phase;  // per category: the part of the step that set the peak
  int64_t total = -1;
  std::string total_phase;
};

// One part of the step in memory.jsonl, summed over the categories.
struct PhaseTotal {
  std::string phase;
  int64_t total = 0;       // bytes in use when the part ended
  int64_t peak_total = 0;  // sum of the per-category high-water marks in the part (0: unknown)
};

struct RankTimeline {
  int rank = 0;
  size_t parts = 0;
  PhaseTotal highest;       // the part with the most bytes in use at its end
  PhaseTotal highest_peak;  // the part with the highest high-water marks (empty phase: unknown)
};

struct MemoryView {
  std::string run_dir;
  int64_t step = 0;  // of metrics.jsonl
  std::vector<RankPeaks> ranks;
  bool has_memory_jsonl = false;
  int64_t timeline_step = 0;  // 0: no timeline at or before `step`
  std::vector<RankTimeline> timelines;
  std::vector<std::string> notes;  // e.g. a cut-off last line that was skipped
};

// Reads DIR/metrics.jsonl and DIR/memory.jsonl. Errors: no run dir or metrics.jsonl, no complete
// line, a malformed line (file:line: why), `step` not in metrics.jsonl, the step's line without
// peak_memory_bytes.
Result<MemoryView> load_memory_view(const std::string& run_dir, std::optional<int64_t> step);

// The readable form (ends with a newline) and the --json form.
std::string format_memory_view(const MemoryView& view);
nlohmann::ordered_json memory_view_json(const MemoryView& view);

// Load and print; errors on `err` as "ztctl memory: error: ...". 0 on success, 1 on failure.
int run_memory(const std::string& run_dir, std::optional<int64_t> step, bool json,
               std::ostream& out, std::ostream& err);

}  // namespace zt::ctl
