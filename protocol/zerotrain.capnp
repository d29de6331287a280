# zerotrain control plane: every message the coordinator, the workers and ztctl exchange over
# ZeroMQ. Each ZeroMQ frame holds exactly one `Envelope`, serialised flat (single segment, no
# packing). C++ code never touches these types directly: protocol/codec.h mirrors them as plain
# structs and converts.
#
# Note [protocol versioning]
# Every envelope carries `version`, and a worker's hello repeats it. A peer built from a different
# tree is refused with an error naming both versions instead of being parsed leniently: the
# coordinator and the workers must agree on the plan bit for bit, and a silently defaulted field
# (Cap'n Proto reads a field missing from an older writer as zero) would make them disagree.
# Bump `protocolVersion` whenever a field is added, removed or changes meaning; ordinals are
# still only ever appended, so old captures stay readable by tools that want to try.

@0xa8db2e594cba752f;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zt::protocol::wire");

const protocolVersion :UInt32 = 3;

# Mirrors zt::BackendKind.
enum Backend {
  cpu @0;
  cuda @1;
}

# Mirrors zt::MemCategory: lists of per-category values are indexed by these ordinals.
enum MemCategory {
  parameters @0;
  gradients @1;
  optimizerStates @2;
  activations @3;
  communication @4;
  workspace @5;
}

# Mirrors zt::CollectiveKind: lists of per-collective values are indexed by these ordinals.
enum Collective {
  allReduce @0;
  reduceScatter @1;
  allGather @2;
  broadcast @3;
  barrier @4;
}

# Mirrors zt::StepPhase (runtime/profile/step_profile.h): lists of per-phase values are indexed by
# these ordinals.
enum StepPhase {
  forward @0;
  backward @1;
  recompute @2;
  commWait @3;
  optimizer @4;
  offloadIo @5;
  other @6;
}

# Where a kind of model state lives between uses.
enum Placement {
  device @0;
  cpu @1;
  nvme @2;
}

# ---------------------------------------------------------------------------------------------
# Worker -> coordinator

# First message of every worker: who it is and what it has, so the coordinator can check the
# world and plan placement (offload needs host memory / NVMe space it can see here).
struct WorkerHello {
  protocolVersion @0 :UInt32;
  rank @1 :Int32;
  worldSize @2 :Int32;
  host @3 :Text;
  pid @4 :Int64;
  backend @5 :Backend;
  deviceName @6 :Text;         # "cpu" or the GPU's name
  deviceMemoryBytes @7 :Int64;  # total memory of the worker's device
  hostMemoryBytes @8 :Int64;    # available host memory
  nvmeFreeBytes @9 :Int64;      # free space at the configured NVMe offload path; -1: none set
}

struct Heartbeat {
  rank @0 :Int32;
  step @1 :Int64;        # last completed optimizer step (0: none yet)
  timeUnixMs @2 :Int64;  # sender's wall clock, for spotting wedged ranks and clock skew
  done @3 :Bool;         # the sender's last message: it finished (or stopped) and is exiting
}

# One rank's share of an optimizer step. Sums, not means: the coordinator adds the parts of all
# ranks and divides once, so the reported loss is exact whatever the split of the batch.
struct StepReport {
  rank @0 :Int32;
  step @1 :Int64;             # 1-based optimizer step this report closes
  lossSum @2 :Float64;        # sum of cross-entropy over this rank's target tokens
  tokenCount @3 :Int64;       # target tokens behind lossSum
  gradNormSqPart @4 :Float64; # this rank's part of the squared global grad norm (before clipping)
  overflow @5 :Bool;          # fp16: inf/nan gradients, the step was skipped
  stepMs @6 :Float64;
  lr @7 :Float64;             # learning rate applied at this step
  lossScale @8 :Float64;      # fp16 dynamic loss scale after this step (1 otherwise)
  memoryCurrent @9 :List(Int64);  # bytes, indexed by MemCategory
  memoryPeak @10 :List(Int64);    # bytes, indexed by MemCategory, peak within the step
  memoryTotalCurrent @11 :Int64;
  memoryTotalPeak @12 :Int64;
  commBytes @13 :List(Int64);     # bytes sent by this rank, indexed by Collective
  commCalls @14 :List(Int64);     # collectives issued, indexed by Collective
  commBusyMs @15 :Float64;        # communication stream inside collectives
  commBlockedMs @16 :Float64;     # compute blocked waiting for collectives
  checkpointMs @17 :Float64;      # training blocked by a checkpoint taken after this step
  offloadResidentBytes @18 :Int64; # offloaded optimizer state in host memory (arrays or buffers)
  offloadDiskBytes @19 :Int64;     # offloaded optimizer state on NVMe
  # Note [step profile] (runtime/profile/step_profile.h). Added in protocol version 3.
  timeMs @20 :List(Float64);       # stepMs split exclusively, indexed by StepPhase
  peakPhase @21 :List(Text);       # the part of the step that set each memoryPeak, by MemCategory
  totalPeakPhase @22 :Text;        # ... and memoryTotalPeak
  # The memory timeline, in the order the parts ended. To bound the volume a worker sends it only
  # for steps 1 and 2, every steps_per_print-th step and the last step (the steps that also get a
  # progress line, plus step 2: the first whose pools have settled); empty otherwise.
  memoryTimeline @23 :List(MemoryPhase);
}

# One part of a step ("forward block 3", "optimizer") and the memory it held.
struct MemoryPhase {
  phase @0 :Text;
  bytes @1 :List(Int64);      # in use when the part ended, indexed by MemCategory
  peakBytes @2 :List(Int64);  # the most in use at once during the part, indexed by MemCategory
}

struct CheckpointFile {
  path @0 :Text;       # relative to the checkpoint directory
  sizeBytes @1 :UInt64;
  xxh3 @2 :UInt64;     # XXH3-64 of the file's contents
}

# A rank has written (and fsynced) its part of checkpoint `step`; the coordinator commits the
# checkpoint (manifest, `latest`) only when every rank has acked. The trainer state is the same on
# every rank (the coordinator checks that it is).
struct CheckpointAck {
  rank @0 :Int32;
  step @1 :Int64;
  files @2 :List(CheckpointFile);
  appliedSteps @3 :Int64;          # optimizer steps applied (AdamW's t, the scheduler's position)
  lossScale @4 :Float64;           # fp16 loss scaler state
  lossScaleGoodSteps @5 :Int64;
  lossScaleHysteresisLeft @6 :Int32;
  nextSequence @7 :Int64;          # global sequence the next step starts at
  writeMs @8 :Float64;             # writing the file (in the background when asynchronous)
  blockedMs @9 :Float64;           # training blocked: waiting for the previous write + snapshot
}

# A fatal failure on a worker (or the coordinator refusing a worker: rank -1).
struct Error {
  rank @0 :Int32;
  host @1 :Text;
  message @2 :Text;
}

# ---------------------------------------------------------------------------------------------
# Coordinator -> worker

struct PlanBucket {
  unit @0 :Int32;
  firstParam @1 :Int32;   # [firstParam, endParam) index the parameter inventory
  endParam @2 :Int32;
  offset @3 :Int64;       # global flat element offset
  numel @4 :Int64;        # elements up to the end of its last parameter
  padded @5 :Int64;       # size in the flat buffer: multiple of worldSize * alignment
  shard @6 :Int64;        # padded / worldSize
  shardOffset @7 :Int64;  # start of each rank's slice in its shard buffer
  persistent @8 :Bool;    # stage 3: kept whole on every rank
}

# The partition plan (runtime/zero/partition_plan.h, Note [partition plan]). Workers recompute
# it from the config and refuse to start unless theirs equals this one field for field, so a
# worker can never run a different layout than the coordinator planned.
struct PartitionPlan {
  worldSize @0 :Int32;
  stage @1 :Int32;
  total @2 :Int64;
  shardTotal @3 :Int64;
  buckets @4 :List(PlanBucket);
  summary @5 :Text;       # human-readable, for logs
}

struct StatePlacement {
  parameters @0 :Placement;
  gradients @1 :Placement;
  optimizerStates @2 :Placement;
  nvmePath @3 :Text;      # set when any kind is on nvme
}

# The coordinator's answer to a hello: everything a worker needs to run the job.
struct Plan {
  configYaml @0 :Text;      # the resolved config (config.resolved.yaml), verbatim
  partition @1 :PartitionPlan;
  placement @2 :StatePlacement;
  runDir @3 :Text;          # where checkpoints go (shared with the coordinator)
  startStep @4 :Int64;      # optimizer steps already done (resume), 0 for a fresh job
  resumeFrom @5 :Text;      # checkpoint directory to load before step startStep+1; empty: none
}

# Instructions at a step boundary. `atStep` is chosen by the coordinator so that every rank acts
# after the same step: ranks are never more than one step apart, and a collective-synchronous
# job cannot act on different steps.
struct Command {
  union {
    checkpointNow @0 :Void;
    stop @1 :Void;            # finish after atStep (checkpointNow first if one is wanted)
    abort @2 :Text;           # reason; stop now without waiting for a step boundary
  }
  atStep @3 :Int64;
}

# ---------------------------------------------------------------------------------------------
# ztctl <-> coordinator

struct CtlRequest {
  union {
    status @0 :Void;
    stop @1 :Void;
    checkpoint @2 :Void;
  }
}

enum JobState {
  starting @0;          # waiting for every worker's hello
  running @1;
  checkpointing @2;
  stopping @3;
  finished @4;
  failed @5;
}

struct RankMemory {
  rank @0 :Int32;
  host @1 :Text;
  current @2 :List(Int64);   # indexed by MemCategory
  peak @3 :List(Int64);      # indexed by MemCategory, peak since the job started
  lastSeenMs @4 :Int64;      # milliseconds since this rank's last message
  offloadResidentBytes @5 :Int64;  # offloaded optimizer state in host memory, latest report
  offloadDiskBytes @6 :Int64;      # offloaded optimizer state on NVMe, latest report
}

struct CtlReply {
  ok @0 :Bool;
  message @1 :Text;          # what happened, or why not
  state @2 :JobState;
  step @3 :Int64;
  totalSteps @4 :Int64;
  worldSize @5 :Int32;
  loss @6 :Float64;          # of the last step
  tokensPerSec @7 :Float64;
  etaSeconds @8 :Float64;    # negative: unknown
  ranks @9 :List(RankMemory);
  lastCheckpointStep @10 :Int64;  # 0: none committed by this job
  lastCheckpointDir @11 :Text;
  placement @12 :StatePlacement;  # where the plan put the model state
  optimizerType @13 :Text;
}

# ---------------------------------------------------------------------------------------------

struct Envelope {
  version @0 :UInt32;
  body :union {
    workerHello @1 :WorkerHello;
    plan @2 :Plan;
    heartbeat @3 :Heartbeat;
    stepReport @4 :StepReport;
    command @5 :Command;
    checkpointAck @6 :CheckpointAck;
    error @7 :Error;
    ctlRequest @8 :CtlRequest;
    ctlReply @9 :CtlReply;
  }
}
