// ztctl's side of the control plane: one CURVE connection to a job's coordinator that sends
// CtlRequests and waits for their CtlReplies, and the two ways ztctl tells that a job has ended
// when the coordinator no longer answers: the end line in the run dir's events.log, and nobody
// listening at the endpoint any more.
//
// Not thread-safe (it owns a ZeroMQ socket); one per command.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "protocol/codec.h"
#include "protocol/transport.h"
#include "runtime/core/status.h"

namespace zt::ctl {

inline constexpr std::chrono::milliseconds kDefaultReplyTimeout{5000};

enum class EndpointProbe {
  kListening,  // something accepts TCP connections there (the coordinator, presumably)
  kClosed,     // connection refused / no socket file: the coordinator's process is gone
  kUnknown,    // unreachable, slow or an endpoint kind that cannot be probed
};

// One plain TCP connection attempt to `endpoint` (tcp://HOST:PORT; ipc://PATH is checked too).
// Cheap and quiet: ZeroMQ sees a peer that closes before the handshake and forgets it.
EndpointProbe probe_endpoint(const std::string& endpoint,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

class CtlClient {
 public:
  // Finds the coordinator as protocol::find_coordinator does (--coordinator flag, ZT_COORDINATOR /
  // ZT_COORDINATOR_KEY, else the run dir's coordinator.endpoint and coordinator.key) and connects.
  // Errors name the run dir and say what to check.
  static Result<std::unique_ptr<CtlClient>> open(const std::string& run_dir,
                                                 const std::string& endpoint_flag);

  const std::string& endpoint() const { return endpoint_; }
  const std::string& run_dir() const { return run_dir_; }

  // Sends one request and waits up to `timeout` for its reply. `give_up` (may be empty) is asked
  // about every 250 ms and ends the wait early when it returns true (a signal). The wait also
  // ends early when nothing listens at the endpoint any more. Errors:
  //   kTimeout   no reply within `timeout` ("no answer from the coordinator at E within 5 s: is
  //              the job running? (run dir D)") plus the transport's reason (key mismatch, ...);
  //   kNotFound  nobody listens at the endpoint: the job is not running;
  //   kAborted   give_up returned true;
  //   kDataError the coordinator answered with something else than a CtlReply.
  Result<protocol::CtlReply> request(protocol::CtlRequest::Type type,
                                     std::chrono::milliseconds timeout,
                                     const std::function<bool()>& give_up = {});

 private:
  CtlClient() = default;

  std::unique_ptr<protocol::ClientSocket> socket_;
  std::string endpoint_;
  std::string run_dir_;
};

// ---- the end of a job as events.log records it --------------------------------------------------

enum class JobEnd { kNone, kClean, kFailed };

struct JobEndEvent {
  JobEnd end = JobEnd::kNone;
  std::string line;  // the events.log line without its timestamp, e.g. "stopped after step 12"
};

// Size of <run_dir>/events.log in bytes; 0 when it does not exist (yet). Taken before a command so
// that find_job_end looks only at what the job wrote after it (a run dir may hold earlier runs).
uint64_t events_log_size(const std::string& run_dir);

// The last line from byte `offset` on whose event (after the UTC timestamp) starts with "stopped"
// or "finished" (kClean) or "failed" (kFailed): what the coordinator (and a worker running without
// one) write when a job ends. kNone when there is no such line or no events.log.
JobEndEvent find_job_end(const std::string& run_dir, uint64_t offset);

// The event of one events.log line: the text after a leading "YYYY-MM-DDTHH:MM:SSZ ".
std::string strip_event_timestamp(const std::string& line);

// The last line of events.log (without its timestamp); empty when there is none. Error messages
// quote it so "no answer" comes with what the job last did.
std::string last_event(const std::string& run_dir);

}  // namespace zt::ctl
