// The bodies of `ztctl status`, `top`, `stop` and `checkpoint`. Each returns the process exit code
// and writes results to `out` and diagnostics to `err`, so tests drive them in-process against a
// fake coordinator.
//
// Exit codes: 0 success (for top and stop: the job ended cleanly, or top was interrupted);
// 1 anything else: no coordinator found or answering, a request refused, the job failed, a stop
// not confirmed in time. Every message names the run dir and/or the endpoint.
#pragma once

#include <atomic>
#include <chrono>
#include <ostream>
#include <string>

#include "ctl/client.h"

namespace zt::ctl {

struct CtlOptions {
  std::string run_dir;        // --run-dir; may be empty when the endpoint and key come otherwise
  std::string endpoint_flag;  // --coordinator
  std::chrono::milliseconds reply_timeout = kDefaultReplyTimeout;
  // Counts SIGINT/SIGTERM (ztctl's handler increments it); a command that waits ends its wait when
  // it changes. Null: not interruptible.
  const std::atomic<int>* interrupts = nullptr;
};

// One status request; the readable block, or one JSON object (`json`) on a single line.
int run_status(const CtlOptions& options, bool json, std::ostream& out, std::ostream& err);

struct TopOptions {
  std::chrono::milliseconds interval{1000};
  bool clear_screen = false;  // stdout is a terminal: redraw in place with ANSI escapes
  int max_refreshes = 0;      // > 0: return 0 after this many blocks (tests)
};

// Status refreshed every interval until interrupted (0), or until the job ends: 0 when it
// finished or was stopped, 1 when it failed or the coordinator vanished without saying why.
int run_top(const CtlOptions& options, const TopOptions& top, std::ostream& out, std::ostream& err);

// Asks the coordinator to stop the job after the step in flight, then waits up to `wait_timeout`
// until the job has ended (a final state in a reply, or the coordinator gone with "stopped" /
// "finished" in the run dir's events.log). 0 when it stopped cleanly.
int run_stop(const CtlOptions& options, std::chrono::milliseconds wait_timeout, std::ostream& out,
             std::ostream& err);

// Asks for a checkpoint now; prints the coordinator's answer. With `wait_timeout` > 0, then waits
// until the coordinator reports a newer committed checkpoint and prints its step and directory.
// 0 only when it was accepted (and, when waiting, committed in time).
int run_checkpoint(const CtlOptions& options, std::chrono::milliseconds wait_timeout,
                   std::ostream& out, std::ostream& err);

// `ztctl export`: the checkpoint in `checkpoint_dir` as one Hugging Face GPT-2 safetensors file
// (runtime/checkpoint/export.h). No coordinator involved.
int run_export(const std::string& checkpoint_dir, const std::string& out_path,
               const std::string& dtype, std::ostream& out, std::ostream& err);

// `ztctl verify`: checks a checkpoint (the given directory, or the run directory's latest) against
// its manifest — every file present, its size and XXH3-64 — and prints what it holds.
int run_verify(const std::string& checkpoint_dir, const std::string& run_dir, std::ostream& out,
               std::ostream& err);

}  // namespace zt::ctl
