// How ztctl shows a job: the readable status block of `ztctl status` / `ztctl top` and the JSON
// object of `ztctl status --json`. Pure functions of a CtlReply, so tests pin the output exactly.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "protocol/codec.h"

namespace zt::ctl {

// Where a reply came from; both appear in the block and the JSON so a saved output says which job
// it describes. Either may be empty (an endpoint given with --coordinator and no run dir).
struct StatusSource {
  std::string run_dir;
  std::string endpoint;
};

// "12.3" (MiB, one decimal): the unit every memory column of the block uses.
std::string format_mib(int64_t bytes);
// "0:01:05", "27:00:00"; "unknown" for a negative or non-finite number of seconds.
std::string format_duration(double seconds);
// "12,345" (rounded to an integer, thousands separated).
std::string format_count(double value);
// "120/1000 (12.0%)"; "120" when the total is unknown (0).
std::string format_progress(int64_t step, int64_t total_steps);
// "0.3 s ago", "12 s ago", "5 min ago".
std::string format_age_ms(int64_t ms);

// The readable block, ending with a newline. At most 100 columns wide (host names are shortened
// to fit): one header with state, progress, loss, throughput, ETA and world size, then two rows
// (current, peak) of memory per category in MiB for each rank.
std::string format_status(const protocol::CtlReply& reply, const StatusSource& source);

// Every field of the reply plus the source and derived values (progress fraction, totals);
// numbers that are unknown (negative ETA, no loss before the first step) are null. Memory in
// bytes, keyed by category name (parameters, gradients, optimizer_states, activations,
// communication, workspace).
nlohmann::ordered_json status_json(const protocol::CtlReply& reply, const StatusSource& source);

// The category names in the order of protocol::MemBytes ("parameters", ...).
const char* mem_category_key(size_t category);

}  // namespace zt::ctl
