#include "protocol/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <exception>
#include <type_traits>

#include "protocol/zerotrain.capnp.h"
#include "runtime/comm/communicator.h"
#include "runtime/memory/memory_tracker.h"
#include "runtime/profile/step_profile.h"

namespace zt::protocol {
namespace {

static_assert(kProtocolVersion == wire::PROTOCOL_VERSION,
              "kProtocolVersion (codec.h) and protocolVersion (zerotrain.capnp) differ");
// The per-category arrays travel as lists indexed by the runtime's enum ordinals; these keep the
// three definitions (runtime enum, schema enum, array size) from drifting apart.
static_assert(kNumMemCategories == zt::kNumMemCategories);
static_assert(kNumCollectives == zt::kNumCollectiveKinds);
static_assert(kNumStepPhases == zt::kNumStepPhases);
static_assert(static_cast<int>(zt::StepPhase::kCommWait) ==
              static_cast<int>(wire::StepPhase::COMM_WAIT));
static_assert(static_cast<int>(zt::StepPhase::kOther) == static_cast<int>(wire::StepPhase::OTHER));
static_assert(static_cast<int>(zt::MemCategory::kOptimizerStates) ==
              static_cast<int>(wire::MemCategory::OPTIMIZER_STATES));
static_assert(static_cast<int>(zt::MemCategory::kWorkspace) ==
              static_cast<int>(wire::MemCategory::WORKSPACE));
static_assert(static_cast<int>(zt::CollectiveKind::kAllGather) ==
              static_cast<int>(wire::Collective::ALL_GATHER));
static_assert(static_cast<int>(zt::CollectiveKind::kBarrier) ==
              static_cast<int>(wire::Collective::BARRIER));

// Note [decode traversal limit]
// Cap'n Proto charges every struct, list and text it hands out against the reader's traversal
// limit. decode() obtains each object of a frame exactly once (the from_wire functions read every
// field once), so a legitimate message is charged at most its own size; the limit of twice the
// frame plus slack never refuses one. What it bounds is a hostile frame: far pointers aimed at
// the same data again and again, or a list of zero-sized structs (charged one word per element,
// though it takes no space). Such a list yields at most 2 elements per frame word, and the largest
// element we copy into (RankMemory, ~150 bytes) makes that ~40x the frame in memory; max_bytes
// bounds the rest.
constexpr uint64_t kTraversalSlackWords = 1024;
// The deepest legitimate path is Envelope -> Plan -> PartitionPlan -> List(PlanBucket) -> bucket.
constexpr int kNestingLimit = 16;

Status data_error(const std::string& what) { return Status(StatusCode::kDataError, what); }

capnp::Text::Reader text(const std::string& s) { return capnp::Text::Reader(s.data(), s.size()); }
std::string str(capnp::Text::Reader t) { return std::string(t.begin(), t.size()); }

// Enums cross the wire by ordinal; the C++ and schema enums list their values in the same order.
static_assert(static_cast<int>(Backend::kCuda) == static_cast<int>(wire::Backend::CUDA));
static_assert(static_cast<int>(Placement::kNvme) == static_cast<int>(wire::Placement::NVME));
static_assert(static_cast<int>(JobState::kFailed) == static_cast<int>(wire::JobState::FAILED));
template <typename To, typename From>
To cast_enum(From v) {
  return static_cast<To>(static_cast<std::underlying_type_t<From>>(v));
}

// A wire enum value beyond the last known one (Cap'n Proto hands unknown values through) is an
// error, not a silently out-of-range C++ enum.
template <typename To, typename From>
Result<To> enum_from_wire(From v, To last, const char* field) {
  const auto raw = static_cast<std::underlying_type_t<From>>(v);
  if (raw > static_cast<std::underlying_type_t<To>>(last)) {
    return data_error(fmt::format("{}: unknown value {}", field, raw));
  }
  return static_cast<To>(raw);
}

void placement_to_wire(const StatePlacement& m, wire::StatePlacement::Builder b) {
  b.setParameters(cast_enum<wire::Placement>(m.parameters));
  b.setGradients(cast_enum<wire::Placement>(m.gradients));
  b.setOptimizerStates(cast_enum<wire::Placement>(m.optimizer_states));
  b.setNvmePath(text(m.nvme_path));
}

Result<StatePlacement> placement_from_wire(wire::StatePlacement::Reader r, std::string_view where) {
  StatePlacement m;
  const std::string p(where);
  ZT_ASSIGN_OR_RETURN(m.parameters, enum_from_wire(r.getParameters(), Placement::kNvme,
                                                   (p + ".parameters").c_str()));
  ZT_ASSIGN_OR_RETURN(
      m.gradients, enum_from_wire(r.getGradients(), Placement::kNvme, (p + ".gradients").c_str()));
  ZT_ASSIGN_OR_RETURN(m.optimizer_states, enum_from_wire(r.getOptimizerStates(), Placement::kNvme,
                                                         (p + ".optimizerStates").c_str()));
  m.nvme_path = str(r.getNvmePath());
  return m;
}

// Per-category (per-phase) arrays as lists of their length: `List` is a capnp list builder or
// reader of T.
template <typename List, typename T, size_t N>
void array_to_wire(List list, const std::array<T, N>& a) {
  for (size_t i = 0; i < N; ++i) list.set(static_cast<unsigned>(i), a[i]);
}

template <typename List, typename T, size_t N>
Status array_from_wire(List list, std::array<T, N>& out, const char* field) {
  if (list.size() != N) {
    return data_error(fmt::format("{} has {} entries, expected {}", field, list.size(), N));
  }
  for (size_t i = 0; i < N; ++i) out[i] = list[static_cast<unsigned>(i)];
  return Status::ok();
}

// ---- C++ -> wire --------------------------------------------------------------------------------

void to_wire(const WorkerHello& m, wire::WorkerHello::Builder b) {
  b.setProtocolVersion(m.protocol_version);
  b.setRank(m.rank);
  b.setWorldSize(m.world_size);
  b.setHost(text(m.host));
  b.setPid(m.pid);
  b.setBackend(cast_enum<wire::Backend>(m.backend));
  b.setDeviceName(text(m.device_name));
  b.setDeviceMemoryBytes(m.device_memory_bytes);
  b.setHostMemoryBytes(m.host_memory_bytes);
  b.setNvmeFreeBytes(m.nvme_free_bytes);
}

void to_wire(const Plan& m, wire::Plan::Builder b) {
  b.setConfigYaml(text(m.config_yaml));
  auto p = b.initPartition();
  p.setWorldSize(m.partition.world_size);
  p.setStage(m.partition.stage);
  p.setTotal(m.partition.total);
  p.setShardTotal(m.partition.shard_total);
  auto buckets = p.initBuckets(static_cast<unsigned>(m.partition.buckets.size()));
  for (size_t i = 0; i < m.partition.buckets.size(); ++i) {
    const BucketSpec& s = m.partition.buckets[i];
    auto w = buckets[static_cast<unsigned>(i)];
    w.setUnit(s.unit);
    w.setFirstParam(s.first_param);
    w.setEndParam(s.end_param);
    w.setOffset(s.offset);
    w.setNumel(s.numel);
    w.setPadded(s.padded);
    w.setShard(s.shard);
    w.setShardOffset(s.shard_offset);
    w.setPersistent(s.persistent);
  }
  p.setSummary(text(m.partition.summary));
  placement_to_wire(m.placement, b.initPlacement());
  b.setRunDir(text(m.run_dir));
  b.setStartStep(m.start_step);
  b.setResumeFrom(text(m.resume_from));
}

void to_wire(const Heartbeat& m, wire::Heartbeat::Builder b) {
  b.setRank(m.rank);
  b.setStep(m.step);
  b.setTimeUnixMs(m.time_unix_ms);
  b.setDone(m.done);
}

void to_wire(const StepReport& m, wire::StepReport::Builder b) {
  b.setRank(m.rank);
  b.setStep(m.step);
  b.setLossSum(m.loss_sum);
  b.setTokenCount(m.token_count);
  b.setGradNormSqPart(m.grad_norm_sq_part);
  b.setOverflow(m.overflow);
  b.setStepMs(m.step_ms);
  b.setLr(m.lr);
  b.setLossScale(m.loss_scale);
  array_to_wire(b.initMemoryCurrent(kNumMemCategories), m.memory_current);
  array_to_wire(b.initMemoryPeak(kNumMemCategories), m.memory_peak);
  b.setMemoryTotalCurrent(m.memory_total_current);
  b.setMemoryTotalPeak(m.memory_total_peak);
  array_to_wire(b.initCommBytes(kNumCollectives), m.comm_bytes);
  array_to_wire(b.initCommCalls(kNumCollectives), m.comm_calls);
  b.setCommBusyMs(m.comm_busy_ms);
  b.setCommBlockedMs(m.comm_blocked_ms);
  b.setCheckpointMs(m.checkpoint_ms);
  b.setOffloadResidentBytes(m.offload_resident_bytes);
  b.setOffloadDiskBytes(m.offload_disk_bytes);
  array_to_wire(b.initTimeMs(kNumStepPhases), m.time_ms);
  auto phases = b.initPeakPhase(kNumMemCategories);
  for (size_t c = 0; c < kNumMemCategories; ++c)
    phases.set(static_cast<unsigned>(c), text(m.peak_phase[c]));
  b.setTotalPeakPhase(text(m.total_peak_phase));
  auto timeline = b.initMemoryTimeline(static_cast<unsigned>(m.memory_timeline.size()));
  for (size_t i = 0; i < m.memory_timeline.size(); ++i) {
    const MemoryPhase& p = m.memory_timeline[i];
    auto w = timeline[static_cast<unsigned>(i)];
    w.setPhase(text(p.phase));
    array_to_wire(w.initBytes(kNumMemCategories), p.bytes);
    array_to_wire(w.initPeakBytes(kNumMemCategories), p.peak);
  }
}

void to_wire(const Command& m, wire::Command::Builder b) {
  switch (m.type) {
    case Command::Type::kCheckpointNow:
      b.setCheckpointNow();
      break;
    case Command::Type::kStop:
      b.setStop();
      break;
    case Command::Type::kAbort:
      b.setAbort(text(m.reason));
      break;
  }
  b.setAtStep(m.at_step);
}

void to_wire(const CheckpointAck& m, wire::CheckpointAck::Builder b) {
  b.setRank(m.rank);
  b.setStep(m.step);
  auto files = b.initFiles(static_cast<unsigned>(m.files.size()));
  for (size_t i = 0; i < m.files.size(); ++i) {
    auto f = files[static_cast<unsigned>(i)];
    f.setPath(text(m.files[i].path));
    f.setSizeBytes(m.files[i].size_bytes);
    f.setXxh3(m.files[i].xxh3);
  }
  b.setAppliedSteps(m.applied_steps);
  b.setLossScale(m.loss_scale);
  b.setLossScaleGoodSteps(m.loss_scale_good_steps);
  b.setLossScaleHysteresisLeft(m.loss_scale_hysteresis_left);
  b.setNextSequence(m.next_sequence);
  b.setWriteMs(m.write_ms);
  b.setBlockedMs(m.blocked_ms);
}

void to_wire(const ErrorReport& m, wire::Error::Builder b) {
  b.setRank(m.rank);
  b.setHost(text(m.host));
  b.setMessage(text(m.message));
}

void to_wire(const CtlRequest& m, wire::CtlRequest::Builder b) {
  switch (m.type) {
    case CtlRequest::Type::kStatus:
      b.setStatus();
      break;
    case CtlRequest::Type::kStop:
      b.setStop();
      break;
    case CtlRequest::Type::kCheckpoint:
      b.setCheckpoint();
      break;
  }
}

void to_wire(const CtlReply& m, wire::CtlReply::Builder b) {
  b.setOk(m.ok);
  b.setMessage(text(m.message));
  b.setState(cast_enum<wire::JobState>(m.state));
  b.setStep(m.step);
  b.setTotalSteps(m.total_steps);
  b.setWorldSize(m.world_size);
  b.setLoss(m.loss);
  b.setTokensPerSec(m.tokens_per_sec);
  b.setEtaSeconds(m.eta_seconds);
  auto ranks = b.initRanks(static_cast<unsigned>(m.ranks.size()));
  for (size_t i = 0; i < m.ranks.size(); ++i) {
    const RankMemory& r = m.ranks[i];
    auto w = ranks[static_cast<unsigned>(i)];
    w.setRank(r.rank);
    w.setHost(text(r.host));
    array_to_wire(w.initCurrent(kNumMemCategories), r.current);
    array_to_wire(w.initPeak(kNumMemCategories), r.peak);
    w.setLastSeenMs(r.last_seen_ms);
    w.setOffloadResidentBytes(r.offload_resident_bytes);
    w.setOffloadDiskBytes(r.offload_disk_bytes);
  }
  b.setLastCheckpointStep(m.last_checkpoint_step);
  b.setLastCheckpointDir(text(m.last_checkpoint_dir));
  placement_to_wire(m.placement, b.initPlacement());
  b.setOptimizerType(text(m.optimizer_type));
}

// ---- wire -> C++ --------------------------------------------------------------------------------
// Each function reads every field of its reader exactly once (see kTraversalSlackWords).

Status version_error(const char* what, uint32_t theirs) {
  return make_error(StatusCode::kUnsupported,
                    "protocol version mismatch: {} speaks protocol version {}, this build speaks "
                    "version {}; run the coordinator, the workers and ztctl from the same "
                    "zerotrain build",
                    what, theirs, kProtocolVersion);
}

Result<Message> from_wire(wire::WorkerHello::Reader r) {
  WorkerHello m;
  m.protocol_version = r.getProtocolVersion();
  if (m.protocol_version != kProtocolVersion) {
    return version_error("the worker's hello", m.protocol_version);
  }
  m.rank = r.getRank();
  m.world_size = r.getWorldSize();
  if (m.world_size < 1 || m.rank < 0 || m.rank >= m.world_size) {
    return data_error(
        fmt::format("WorkerHello: rank {} of world size {} is impossible", m.rank, m.world_size));
  }
  m.host = str(r.getHost());
  m.pid = r.getPid();
  ZT_ASSIGN_OR_RETURN(m.backend,
                      enum_from_wire(r.getBackend(), Backend::kCuda, "WorkerHello.backend"));
  m.device_name = str(r.getDeviceName());
  m.device_memory_bytes = r.getDeviceMemoryBytes();
  m.host_memory_bytes = r.getHostMemoryBytes();
  m.nvme_free_bytes = r.getNvmeFreeBytes();
  return Message(std::move(m));
}

Result<Message> from_wire(wire::Plan::Reader r) {
  Plan m;
  m.config_yaml = str(r.getConfigYaml());
  auto p = r.getPartition();
  m.partition.world_size = p.getWorldSize();
  m.partition.stage = p.getStage();
  m.partition.total = p.getTotal();
  m.partition.shard_total = p.getShardTotal();
  auto buckets = p.getBuckets();
  m.partition.buckets.reserve(buckets.size());
  for (auto w : buckets) {
    BucketSpec s;
    s.unit = w.getUnit();
    s.first_param = w.getFirstParam();
    s.end_param = w.getEndParam();
    s.offset = w.getOffset();
    s.numel = w.getNumel();
    s.padded = w.getPadded();
    s.shard = w.getShard();
    s.shard_offset = w.getShardOffset();
    s.persistent = w.getPersistent();
    m.partition.buckets.push_back(s);
  }
  m.partition.summary = str(p.getSummary());
  ZT_ASSIGN_OR_RETURN(m.placement, placement_from_wire(r.getPlacement(), "Plan.placement"));
  m.run_dir = str(r.getRunDir());
  m.start_step = r.getStartStep();
  m.resume_from = str(r.getResumeFrom());
  return Message(std::move(m));
}

Result<Message> from_wire(wire::Heartbeat::Reader r) {
  Heartbeat m;
  m.rank = r.getRank();
  m.step = r.getStep();
  m.time_unix_ms = r.getTimeUnixMs();
  m.done = r.getDone();
  return Message(m);
}

Result<Message> from_wire(wire::StepReport::Reader r) {
  StepReport m;
  m.rank = r.getRank();
  m.step = r.getStep();
  m.loss_sum = r.getLossSum();
  m.token_count = r.getTokenCount();
  m.grad_norm_sq_part = r.getGradNormSqPart();
  m.overflow = r.getOverflow();
  m.step_ms = r.getStepMs();
  m.lr = r.getLr();
  m.loss_scale = r.getLossScale();
  ZT_RETURN_IF_ERROR(
      array_from_wire(r.getMemoryCurrent(), m.memory_current, "StepReport.memoryCurrent"));
  ZT_RETURN_IF_ERROR(array_from_wire(r.getMemoryPeak(), m.memory_peak, "StepReport.memoryPeak"));
  m.memory_total_current = r.getMemoryTotalCurrent();
  m.memory_total_peak = r.getMemoryTotalPeak();
  ZT_RETURN_IF_ERROR(array_from_wire(r.getCommBytes(), m.comm_bytes, "StepReport.commBytes"));
  ZT_RETURN_IF_ERROR(array_from_wire(r.getCommCalls(), m.comm_calls, "StepReport.commCalls"));
  m.comm_busy_ms = r.getCommBusyMs();
  m.comm_blocked_ms = r.getCommBlockedMs();
  m.checkpoint_ms = r.getCheckpointMs();
  m.offload_resident_bytes = r.getOffloadResidentBytes();
  m.offload_disk_bytes = r.getOffloadDiskBytes();
  ZT_RETURN_IF_ERROR(array_from_wire(r.getTimeMs(), m.time_ms, "StepReport.timeMs"));
  auto phases = r.getPeakPhase();
  if (phases.size() != kNumMemCategories) {
    return data_error(fmt::format("StepReport.peakPhase has {} entries, expected {}", phases.size(),
                                  kNumMemCategories));
  }
  for (size_t c = 0; c < kNumMemCategories; ++c)
    m.peak_phase[c] = str(phases[static_cast<unsigned>(c)]);
  m.total_peak_phase = str(r.getTotalPeakPhase());
  auto timeline = r.getMemoryTimeline();
  m.memory_timeline.reserve(timeline.size());
  for (auto w : timeline) {
    MemoryPhase p;
    p.phase = str(w.getPhase());
    ZT_RETURN_IF_ERROR(array_from_wire(w.getBytes(), p.bytes, "StepReport.memoryTimeline.bytes"));
    ZT_RETURN_IF_ERROR(
        array_from_wire(w.getPeakBytes(), p.peak, "StepReport.memoryTimeline.peakBytes"));
    m.memory_timeline.push_back(std::move(p));
  }
  return Message(std::move(m));
}

Result<Message> from_wire(wire::Command::Reader r) {
  Command m;
  switch (r.which()) {
    case wire::Command::CHECKPOINT_NOW:
      m.type = Command::Type::kCheckpointNow;
      break;
    case wire::Command::STOP:
      m.type = Command::Type::kStop;
      break;
    case wire::Command::ABORT:
      m.type = Command::Type::kAbort;
      m.reason = str(r.getAbort());
      break;
    default:
      return data_error(
          fmt::format("Command: unknown kind (union tag {})", static_cast<unsigned>(r.which())));
  }
  m.at_step = r.getAtStep();
  return Message(std::move(m));
}

Result<Message> from_wire(wire::CheckpointAck::Reader r) {
  CheckpointAck m;
  m.rank = r.getRank();
  m.step = r.getStep();
  auto files = r.getFiles();
  m.files.reserve(files.size());
  for (auto f : files) {
    m.files.push_back(CheckpointFile{str(f.getPath()), f.getSizeBytes(), f.getXxh3()});
  }
  m.applied_steps = r.getAppliedSteps();
  m.loss_scale = r.getLossScale();
  m.loss_scale_good_steps = r.getLossScaleGoodSteps();
  m.loss_scale_hysteresis_left = r.getLossScaleHysteresisLeft();
  m.next_sequence = r.getNextSequence();
  m.write_ms = r.getWriteMs();
  m.blocked_ms = r.getBlockedMs();
  return Message(std::move(m));
}

Result<Message> from_wire(wire::Error::Reader r) {
  ErrorReport m;
  m.rank = r.getRank();
  m.host = str(r.getHost());
  m.message = str(r.getMessage());
  return Message(std::move(m));
}

Result<Message> from_wire(wire::CtlRequest::Reader r) {
  CtlRequest m;
  switch (r.which()) {
    case wire::CtlRequest::STATUS:
      m.type = CtlRequest::Type::kStatus;
      break;
    case wire::CtlRequest::STOP:
      m.type = CtlRequest::Type::kStop;
      break;
    case wire::CtlRequest::CHECKPOINT:
      m.type = CtlRequest::Type::kCheckpoint;
      break;
    default:
      return data_error(
          fmt::format("CtlRequest: unknown kind (union tag {})", static_cast<unsigned>(r.which())));
  }
  return Message(m);
}

Result<Message> from_wire(wire::CtlReply::Reader r) {
  CtlReply m;
  m.ok = r.getOk();
  m.message = str(r.getMessage());
  ZT_ASSIGN_OR_RETURN(m.state, enum_from_wire(r.getState(), JobState::kFailed, "CtlReply.state"));
  m.step = r.getStep();
  m.total_steps = r.getTotalSteps();
  m.world_size = r.getWorldSize();
  m.loss = r.getLoss();
  m.tokens_per_sec = r.getTokensPerSec();
  m.eta_seconds = r.getEtaSeconds();
  auto ranks = r.getRanks();
  m.ranks.reserve(ranks.size());
  for (auto w : ranks) {
    RankMemory rm;
    rm.rank = w.getRank();
    rm.host = str(w.getHost());
    ZT_RETURN_IF_ERROR(array_from_wire(w.getCurrent(), rm.current, "CtlReply.ranks.current"));
    ZT_RETURN_IF_ERROR(array_from_wire(w.getPeak(), rm.peak, "CtlReply.ranks.peak"));
    rm.last_seen_ms = w.getLastSeenMs();
    rm.offload_resident_bytes = w.getOffloadResidentBytes();
    rm.offload_disk_bytes = w.getOffloadDiskBytes();
    m.ranks.push_back(std::move(rm));
  }
  m.last_checkpoint_step = r.getLastCheckpointStep();
  m.last_checkpoint_dir = str(r.getLastCheckpointDir());
  ZT_ASSIGN_OR_RETURN(m.placement, placement_from_wire(r.getPlacement(), "CtlReply.placement"));
  m.optimizer_type = str(r.getOptimizerType());
  return Message(std::move(m));
}

Result<Message> body_from_wire(wire::Envelope::Body::Reader body) {
  switch (body.which()) {
    case wire::Envelope::Body::WORKER_HELLO:
      return from_wire(body.getWorkerHello());
    case wire::Envelope::Body::PLAN:
      return from_wire(body.getPlan());
    case wire::Envelope::Body::HEARTBEAT:
      return from_wire(body.getHeartbeat());
    case wire::Envelope::Body::STEP_REPORT:
      return from_wire(body.getStepReport());
    case wire::Envelope::Body::COMMAND:
      return from_wire(body.getCommand());
    case wire::Envelope::Body::CHECKPOINT_ACK:
      return from_wire(body.getCheckpointAck());
    case wire::Envelope::Body::ERROR:
      return from_wire(body.getError());
    case wire::Envelope::Body::CTL_REQUEST:
      return from_wire(body.getCtlRequest());
    case wire::Envelope::Body::CTL_REPLY:
      return from_wire(body.getCtlReply());
  }
  return data_error(fmt::format("unknown message type (Envelope union tag {})",
                                static_cast<unsigned>(body.which())));
}

}  // namespace

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::kCpu:
      return "cpu";
    case Backend::kCuda:
      return "cuda";
  }
  return "unknown";
}

const char* placement_name(Placement p) {
  switch (p) {
    case Placement::kDevice:
      return "device";
    case Placement::kCpu:
      return "cpu";
    case Placement::kNvme:
      return "nvme";
  }
  return "unknown";
}

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kStarting:
      return "starting";
    case JobState::kRunning:
      return "running";
    case JobState::kCheckpointing:
      return "checkpointing";
    case JobState::kStopping:
      return "stopping";
    case JobState::kFinished:
      return "finished";
    case JobState::kFailed:
      return "failed";
  }
  return "unknown";
}

const char* message_kind_name(MessageKind kind) {
  switch (kind) {
    case MessageKind::kWorkerHello:
      return "WorkerHello";
    case MessageKind::kPlan:
      return "Plan";
    case MessageKind::kHeartbeat:
      return "Heartbeat";
    case MessageKind::kStepReport:
      return "StepReport";
    case MessageKind::kCommand:
      return "Command";
    case MessageKind::kCheckpointAck:
      return "CheckpointAck";
    case MessageKind::kError:
      return "Error";
    case MessageKind::kCtlRequest:
      return "CtlRequest";
    case MessageKind::kCtlReply:
      return "CtlReply";
  }
  return "unknown";
}

std::string encode(const Message& msg) {
  capnp::MallocMessageBuilder builder;
  auto env = builder.initRoot<wire::Envelope>();
  env.setVersion(kProtocolVersion);
  auto body = env.initBody();
  std::visit(
      [&body](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, WorkerHello>) to_wire(m, body.initWorkerHello());
        if constexpr (std::is_same_v<T, Plan>) to_wire(m, body.initPlan());
        if constexpr (std::is_same_v<T, Heartbeat>) to_wire(m, body.initHeartbeat());
        if constexpr (std::is_same_v<T, StepReport>) to_wire(m, body.initStepReport());
        if constexpr (std::is_same_v<T, Command>) to_wire(m, body.initCommand());
        if constexpr (std::is_same_v<T, CheckpointAck>) to_wire(m, body.initCheckpointAck());
        if constexpr (std::is_same_v<T, ErrorReport>) to_wire(m, body.initError());
        if constexpr (std::is_same_v<T, CtlRequest>) to_wire(m, body.initCtlRequest());
        if constexpr (std::is_same_v<T, CtlReply>) to_wire(m, body.initCtlReply());
      },
      msg);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

Result<DecodedMessage> decode(const void* data, size_t size, size_t max_bytes) {
  if (size == 0) return data_error("empty frame");
  if (size > max_bytes) {
    return data_error(
        fmt::format("frame of {} bytes exceeds the limit of {} bytes", size, max_bytes));
  }
  if (size % sizeof(capnp::word) != 0) {
    return data_error(
        fmt::format("frame of {} bytes is not a whole number of 8-byte words (truncated?)", size));
  }
  // Cap'n Proto reads words in place and requires them aligned; a ZeroMQ frame is not, so copy.
  const size_t n_words = size / sizeof(capnp::word);
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(n_words);
  std::memcpy(words.begin(), data, size);

  capnp::ReaderOptions options;
  options.traversalLimitInWords = 2 * static_cast<uint64_t>(n_words) + kTraversalSlackWords;
  options.nestingLimit = kNestingLimit;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr(), options);
    // Exactly one message per frame: trailing bytes mean a framing bug or a forged frame.
    if (reader.getEnd() != words.end()) {
      const size_t used = static_cast<size_t>(reader.getEnd() - words.begin());
      return data_error(
          fmt::format("frame of {} bytes holds a message of {} bytes and {} "
                      "trailing bytes",
                      size, used * sizeof(capnp::word), (n_words - used) * sizeof(capnp::word)));
    }
    auto env = reader.getRoot<wire::Envelope>();
    const uint32_t version = env.getVersion();
    if (version != kProtocolVersion) return version_error("the peer", version);
    ZT_ASSIGN_OR_RETURN(Message body, body_from_wire(env.getBody()));
    return DecodedMessage{std::move(body)};
  } catch (const kj::Exception& e) {
    return data_error(fmt::format("malformed message: {}", e.getDescription().cStr()));
  } catch (const std::exception& e) {
    // std::bad_alloc from a list the traversal limit still allowed, or a kj exception thrown as
    // std::exception only.
    return data_error(fmt::format("malformed message: {}", e.what()));
  }
}

}  // namespace zt::protocol
