// `ztctl report`: one self-contained HTML page about a run, read from its run directory.
//
// load_run_report() parses the run directory into a RunReport (the model); render_report_html()
// turns it into the page (inline CSS, inline SVG charts from ctl/svg_chart.h, one small inline
// script that checks the charts and records the result on <body data-zt-check>);
// write_report_file() writes the page atomically (a temporary file renamed into place, so a
// failure never leaves half a report).
//
// What is read (README "The run directory"):
//   metrics.jsonl        required; one object per optimizer step. `step` and `loss` must be there;
//                        the other documented fields may be missing or null (a gap). Optional
//                        fields later work adds are drawn when present: `time_ms` /
//                        `time_ms_by_rank` (step time by phase), `comm_bytes` (bytes sent per
//                        step: a number, a list per rank, or a list of {rank, bytes}).
//   memory.jsonl         optional; {"step", "rank", "phase", "bytes": {category: bytes}} per line.
//   config.resolved.yaml optional; shown verbatim and summarised.
//   events.log           optional; "TIMESTAMP text" lines.
// A malformed line is an error naming the file and line, except the last line of a file that does
// not end in a newline: a writer was cut off mid-line (the job is running or was killed), so the
// line is skipped and the report says so.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/status.h"

namespace zt::ctl {

// The memory categories of metrics.jsonl and memory.jsonl, and the phases of time_ms, as
// documented.
extern const std::vector<std::string> kMemoryCategories;
extern const std::vector<std::string> kTimePhases;

// The names of one kind of part (memory categories, step-time phases): the documented names first,
// in their documented order, then any other name in the order it was first seen. Records store
// their values by position in it, so a hundred thousand steps of per-rank records do not each
// carry the names.
struct PartNames {
  std::vector<std::string> names;
  size_t index(const std::string& name);  // adds a name not seen before at the end
};

// Values by position in a PartNames; NaN where the record lacks the name. A record may be shorter
// than its PartNames (names first seen in later records).
using Parts = std::vector<double>;
double part_at(const Parts& parts, size_t i);

struct RankMemory {
  int rank = 0;
  double total = 0;  // `total` when written, else the sum of the categories
  Parts bytes;       // per category
};

struct RankParts {
  int rank = 0;
  Parts parts;
};

// One line of metrics.jsonl. Missing or null numbers are NaN.
struct StepRecord {
  int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double loss_scale = 0;
  bool skipped = false;
  double tokens = 0;
  double step_ms = 0;
  double tokens_per_s = 0;
  double checkpoint_ms = 0;
  std::vector<RankMemory> peak_memory;
  std::optional<Parts> time_ms;
  std::vector<RankParts> time_ms_by_rank;
  std::optional<double> comm_bytes;  // the job's total for the step
  std::vector<std::pair<int, double>> comm_bytes_by_rank;
};

// One line of memory.jsonl.
struct PhaseMemory {
  int64_t step = 0;
  int rank = 0;
  std::string phase;
  Parts bytes;
};

struct EventLine {
  std::string time;  // "2024-05-01T12:00:00Z"; empty when the line has no timestamp
  std::string text;
};

struct RunReport {
  std::string run_dir;
  std::vector<StepRecord> steps;  // by step, one record per step (the last written wins)
  std::vector<PhaseMemory> phase_memory;
  bool has_memory_jsonl = false;
  PartNames memory_categories{kMemoryCategories};  // of every peak_memory_bytes and memory.jsonl
  PartNames time_phases{kTimePhases};              // of every time_ms and time_ms_by_rank
  bool has_config = false;
  std::string config_text;  // config.resolved.yaml as written
  bool has_events = false;
  std::vector<EventLine> events;
  // Things the reader of the report should know about its input (a partial last line skipped,
  // repeated steps of a resumed run).
  std::vector<std::string> notes;
};

// RUN_DIR/metrics.jsonl, or an error saying what is missing (the folder, or the file: no step
// finished yet). Every reader of a run directory starts here.
Result<std::string> run_metrics_path(const std::string& run_dir);

// Reads DIR. Errors: no metrics.jsonl, an empty one, a malformed line (file:line: why), a
// required field missing or of the wrong type.
Result<RunReport> load_run_report(const std::string& run_dir);

// The run's key facts, from the config, events.log and the metrics; empty strings where unknown.
struct RunSummary {
  std::vector<std::pair<std::string, std::string>> rows;  // label, value (plain text)
};
RunSummary summarize(const RunReport& report);

// The whole page. `generated_at` is shown in the header (the caller's clock, so tests pin it).
std::string render_report_html(const RunReport& report, const std::string& generated_at);

// Writes `html` to `path` through `path`.tmp.PID and a rename: the file at `path` is either the
// old one or the complete new one.
Status write_file_atomically(const std::string& path, const std::string& html);

// `ztctl report`: load, render, write. Prints where the report went and its chart count on `out`;
// errors on `err`. 0 on success, 1 on any failure (nothing written).
int run_report(const std::string& run_dir, const std::string& out_path, std::ostream& out,
               std::ostream& err);

}  // namespace zt::ctl
