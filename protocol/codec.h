// The control messages as plain C++ values, and their wire form (protocol/zerotrain.capnp).
//
// Coordinator, worker and ztctl code build and read these structs only; encode() and decode() are
// the one place that touches Cap'n Proto. One encoded message is one ZeroMQ frame: a flat,
// unpacked, single-envelope Cap'n Proto message.
//
// decode() is the trust boundary. It never throws and never aborts on any byte string: a frame that
// is too large, not a Cap'n Proto message, of another protocol version, of an unknown type, or
// whose contents break the rules written next to the fields below comes back as a Status naming
// what was wrong. Cap'n Proto reads lazily and bounds-checks every access; decode() copies
// everything into the structs while the traversal limit is in force, so nothing decoded can reach
// outside the frame later.
//
// Thread safety: the functions are reentrant; no shared state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "runtime/core/status.h"

namespace zt::protocol {

// Must equal `protocolVersion` in zerotrain.capnp (checked where both are visible, in codec.cpp).
// See Note [protocol versioning] in the schema: bump it with every change of the schema.
inline constexpr uint32_t kProtocolVersion = 3;

// Frames larger than this are refused before parsing. The largest messages are a Plan (the
// resolved config plus ~64 bytes per bucket: tens of KiB for GPT-2 XL) and a CtlReply (~150 bytes
// per rank), so this leaves room for tens of thousands of ranks. Decoding a hostile frame can
// make the receiver allocate up to ~40x its size (Note [decode traversal limit] in codec.cpp).
inline constexpr size_t kDefaultMaxFrameBytes = size_t{8} << 20;

// Per-category arrays mirror zt::MemCategory / zt::CollectiveKind (same order, checked in
// codec.cpp) without making every user of the protocol include the runtime headers.
inline constexpr size_t kNumMemCategories = 6;
inline constexpr size_t kNumCollectives = 5;
inline constexpr size_t kNumStepPhases = 7;  // zt::StepPhase
using MemBytes = std::array<int64_t, kNumMemCategories>;
using CommCounts = std::array<int64_t, kNumCollectives>;
using PhaseMs = std::array<double, kNumStepPhases>;

enum class Backend : uint8_t { kCpu = 0, kCuda };
enum class Placement : uint8_t { kDevice = 0, kCpu, kNvme };
enum class JobState : uint8_t {
  kStarting = 0,
  kRunning,
  kCheckpointing,
  kStopping,
  kFinished,
  kFailed
};

const char* backend_name(Backend b);      // "cpu", "cuda"
const char* placement_name(Placement p);  // "device", "cpu", "nvme"
const char* job_state_name(JobState s);   // "starting", "running", ...

// ---- worker -> coordinator ----------------------------------------------------------------------

// First message of every worker. decode() requires protocol_version == kProtocolVersion,
// world_size >= 1 and 0 <= rank < world_size.
struct WorkerHello {
  uint32_t protocol_version = kProtocolVersion;
  int32_t rank = 0;
  int32_t world_size = 1;
  std::string host;
  int64_t pid = 0;
  Backend backend = Backend::kCpu;
  std::string device_name;          // "cpu" or the GPU's name
  int64_t device_memory_bytes = 0;  // total memory of the device
  int64_t host_memory_bytes = 0;    // available host memory
  int64_t nvme_free_bytes = -1;     // free space at the NVMe offload path; -1: none configured
  bool operator==(const WorkerHello&) const = default;
};

struct Heartbeat {
  int32_t rank = 0;
  int64_t step = 0;  // last completed optimizer step
  int64_t time_unix_ms = 0;
  bool done = false;  // the sender's last message: it finished (or stopped) and is exiting
  bool operator==(const Heartbeat&) const = default;
};

// One part of a step and the memory it held (zt::MemoryPhaseRecord).
struct MemoryPhase {
  std::string phase;  // "forward block 3", "optimizer", ...
  MemBytes bytes{};   // in use when the part ended
  MemBytes peak{};    // the most in use at once during it
  bool operator==(const MemoryPhase&) const = default;
};

// One rank's part of an optimizer step: sums, so the coordinator adds all ranks' parts and divides
// once (loss = sum(loss_sum) / sum(token_count), grad_norm = sqrt(sum(grad_norm_sq_part))).
// decode() requires time_ms and peak_phase whole and every timeline entry's lists whole.
struct StepReport {
  int32_t rank = 0;
  int64_t step = 0;  // 1-based
  double loss_sum = 0.0;
  int64_t token_count = 0;
  double grad_norm_sq_part = 0.0;
  bool overflow = false;  // fp16 overflow: the step was skipped
  double step_ms = 0.0;
  double lr = 0.0;
  double loss_scale = 1.0;
  MemBytes memory_current{};  // bytes per zt::MemCategory
  MemBytes memory_peak{};     // peak within the step
  int64_t memory_total_current = 0;
  int64_t memory_total_peak = 0;
  CommCounts comm_bytes{};  // bytes this rank sent, per zt::CollectiveKind
  CommCounts comm_calls{};
  double comm_busy_ms = 0.0;
  double comm_blocked_ms = 0.0;
  double checkpoint_ms = 0.0;          // training blocked by a checkpoint taken after this step
  int64_t offload_resident_bytes = 0;  // offloaded optimizer state in host memory
  int64_t offload_disk_bytes = 0;      // offloaded optimizer state on NVMe
  // Note [step profile] (runtime/profile/step_profile.h).
  PhaseMs time_ms{};                                      // step_ms per zt::StepPhase, exclusive
  std::array<std::string, kNumMemCategories> peak_phase;  // the part that set each memory_peak
  std::string total_peak_phase;
  // Sampled steps only (the schema's comment says which); empty otherwise.
  std::vector<MemoryPhase> memory_timeline;
  bool operator==(const StepReport&) const = default;
};

struct CheckpointFile {
  std::string path;  // relative to the checkpoint directory
  uint64_t size_bytes = 0;
  uint64_t xxh3 = 0;  // XXH3-64 of the contents
  bool operator==(const CheckpointFile&) const = default;
};

// The rank's part of checkpoint `step` is written and fsynced.
struct CheckpointAck {
  int32_t rank = 0;
  int64_t step = 0;
  std::vector<CheckpointFile> files;
  int64_t applied_steps = 0;
  double loss_scale = 1.0;
  int64_t loss_scale_good_steps = 0;
  int32_t loss_scale_hysteresis_left = 0;
  int64_t next_sequence = 0;
  double write_ms = 0.0;    // writing the file
  double blocked_ms = 0.0;  // training blocked (previous write + snapshot)
  bool operator==(const CheckpointAck&) const = default;
};

// A fatal failure of a worker; rank -1 when the coordinator refuses a peer.
struct ErrorReport {
  int32_t rank = -1;
  std::string host;
  std::string message;
  bool operator==(const ErrorReport&) const = default;
};

// ---- coordinator -> worker ----------------------------------------------------------------------

// Mirrors zt::PlanBucket (runtime/zero/partition_plan.h, Note [partition plan]).
struct BucketSpec {
  int32_t unit = 0;
  int32_t first_param = 0, end_param = 0;
  int64_t offset = 0;
  int64_t numel = 0;
  int64_t padded = 0;
  int64_t shard = 0;
  int64_t shard_offset = 0;
  bool persistent = false;
  bool operator==(const BucketSpec&) const = default;
};

// Mirrors zt::PartitionPlan minus the parameter layout, which every worker derives from the config.
struct PartitionSpec {
  int32_t world_size = 1;
  int32_t stage = 0;
  int64_t total = 0;
  int64_t shard_total = 0;
  std::vector<BucketSpec> buckets;
  std::string summary;
  bool operator==(const PartitionSpec&) const = default;
};

struct StatePlacement {
  Placement parameters = Placement::kDevice;
  Placement gradients = Placement::kDevice;
  Placement optimizer_states = Placement::kDevice;
  std::string nvme_path;  // set when any kind is on kNvme
  bool operator==(const StatePlacement&) const = default;
};

// The coordinator's answer to a hello.
struct Plan {
  std::string config_yaml;  // config.resolved.yaml, verbatim
  PartitionSpec partition;
  StatePlacement placement;
  std::string run_dir;
  int64_t start_step = 0;   // steps already done (resume)
  std::string resume_from;  // checkpoint directory to load first; empty: fresh start
  bool operator==(const Plan&) const = default;
};

// Every rank acts after step `at_step`, so all act at the same boundary.
struct Command {
  enum class Type : uint8_t { kCheckpointNow = 0, kStop, kAbort };
  Type type = Type::kStop;
  int64_t at_step = 0;
  std::string reason;  // kAbort only: encode() sends it for kAbort and drops it otherwise
  bool operator==(const Command&) const = default;
};

// ---- ztctl <-> coordinator ----------------------------------------------------------------------

struct CtlRequest {
  enum class Type : uint8_t { kStatus = 0, kStop, kCheckpoint };
  Type type = Type::kStatus;
  bool operator==(const CtlRequest&) const = default;
};

struct RankMemory {
  int32_t rank = 0;
  std::string host;
  MemBytes current{};
  MemBytes peak{};           // since the job started
  int64_t last_seen_ms = 0;  // since this rank's last message
  int64_t offload_resident_bytes = 0;
  int64_t offload_disk_bytes = 0;
  bool operator==(const RankMemory&) const = default;
};

struct CtlReply {
  bool ok = true;
  std::string message;
  JobState state = JobState::kStarting;
  int64_t step = 0;
  int64_t total_steps = 0;
  int32_t world_size = 0;
  double loss = 0.0;
  double tokens_per_sec = 0.0;
  double eta_seconds = -1.0;  // negative: unknown
  std::vector<RankMemory> ranks;
  int64_t last_checkpoint_step = 0;  // 0: none committed by this job
  std::string last_checkpoint_dir;
  StatePlacement placement;
  std::string optimizer_type;
  bool operator==(const CtlReply&) const = default;
};

// ---- envelope -----------------------------------------------------------------------------------

// The alternatives' order is MessageKind's.
using Message = std::variant<WorkerHello, Plan, Heartbeat, StepReport, Command, CheckpointAck,
                             ErrorReport, CtlRequest, CtlReply>;

enum class MessageKind : uint8_t {
  kWorkerHello = 0,
  kPlan,
  kHeartbeat,
  kStepReport,
  kCommand,
  kCheckpointAck,
  kError,
  kCtlRequest,
  kCtlReply,
};
inline constexpr size_t kNumMessageKinds = 9;
static_assert(std::variant_size_v<Message> == kNumMessageKinds);

const char* message_kind_name(MessageKind kind);  // "WorkerHello", "Plan", ...
inline MessageKind kind_of(const Message& m) { return static_cast<MessageKind>(m.index()); }

struct DecodedMessage {
  Message body;

  MessageKind kind() const { return kind_of(body); }
  // The body as T, or nullptr when it is another kind.
  template <typename T>
  const T* as() const {
    return std::get_if<T>(&body);
  }
};

// The frame for `msg` in the current protocol version. Never fails for messages built from these
// structs (a list of over 2^29 elements would break a Cap'n Proto limit: a bug, it throws).
std::string encode(const Message& msg);

// Parses one frame. Errors (the frame is never partially accepted):
//   kDataError    empty, larger than max_bytes, not a whole number of 8-byte words, not a valid
//                 Cap'n Proto message, trailing bytes, unknown message type or enum value, a
//                 per-category list of the wrong length, a hello with an impossible rank/world;
//   kUnsupported  a protocol version other than kProtocolVersion (the message names both).
// `data` need not be aligned; it is copied.
Result<DecodedMessage> decode(const void* data, size_t size,
                              size_t max_bytes = kDefaultMaxFrameBytes);
inline Result<DecodedMessage> decode(const std::string& frame,
                                     size_t max_bytes = kDefaultMaxFrameBytes) {
  return decode(frame.data(), frame.size(), max_bytes);
}

}  // namespace zt::protocol
