// The manifest of a sharded checkpoint: what a checkpoint directory holds and everything needed to
// continue the job from it, written last (Note [checkpoint commit] in commit.h) so that a directory
// with a manifest is complete.
//
// Note [checkpoint format]
// checkpoints/step_NNNNNNNN/ holds
//   manifest.json            this file's Manifest as JSON (format "zerotrain-checkpoint")
//   rank_RRRRR.safetensors   one per rank of the job that wrote it
// A rank's file holds, for every parameter range the rank owned, one 1-D F32 tensor per optimizer
// state, named "<state>/<parameter>" — e.g. "master/h.0.attn.c_attn.weight",
// "exp_avg/...", "exp_avg_sq/..." for AdamW — with the range in the manifest (`pieces`: parameter,
// first element, count, in the parameter's flattened internal layout, where linear weights are
// (out, in)). The file's __metadata__ repeats rank, world size and step so a lone file says what it
// is. Any safetensors reader (`safetensors.safe_open`) can inspect a shard.
// Ranges follow the partition plan: at ZeRO stage >= 1 each rank writes what it owns; at stage 0,
// where every rank holds everything, the ranks split the writing the same way. A resuming rank
// reads, from whichever files hold them, just the ranges it owns under its new plan, so a
// checkpoint resumes on any world size and stage without a conversion step.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/model/gpt2_params.h"
#include "runtime/optim/loss_scaler.h"
#include "runtime/zero/partition_plan.h"

namespace zt {

// Bumped whenever the manifest or shard layout changes meaning; a reader refuses newer versions.
constexpr int kCheckpointFormatVersion = 1;

// Where training stands after optimizer step `step`: everything besides the tensors.
struct TrainerState {
  int64_t step = 0;           // optimizer steps run, skipped ones included
  int64_t applied_steps = 0;  // optimizer steps applied: AdamW's t and the scheduler's position
  LossScaler::State scaler{1.0, 0, 0};
  // The data position: the next step reads global sequences next_sequence ... (DataLoader's
  // Note [sequence addressing]); step * train_batch_size unless the batch size changed on a resume.
  int64_t next_sequence = 0;
  bool operator==(const TrainerState& o) const {
    return step == o.step && applied_steps == o.applied_steps && scaler.scale == o.scaler.scale &&
           scaler.good_steps == o.scaler.good_steps &&
           scaler.hysteresis_left == o.scaler.hysteresis_left && next_sequence == o.next_sequence;
  }
};

// Elements [begin, begin + count) of a parameter (flattened internal layout).
struct ParamRange {
  std::string param;
  int64_t begin = 0, count = 0;
  bool operator==(const ParamRange&) const = default;
};

struct ShardFileEntry {
  int rank = 0;
  std::string file;  // relative to the checkpoint directory
  uint64_t size = 0;
  uint64_t xxh3 = 0;  // XXH3-64 of the whole file
  std::vector<ParamRange> pieces;
  bool operator==(const ShardFileEntry&) const = default;
};

struct Manifest {
  int format_version = kCheckpointFormatVersion;
  int64_t step = 0;
  int64_t created_unix_ms = 0;
  ModelConfig model;  // shape and family; init_from and seed are informational
  int64_t num_parameters = 0;
  std::string dtype;  // training precision: fp32, bf16, fp16
  int world_size = 0;
  int zero_stage = 0;
  std::string optimizer_type;
  OptimizerConfig optimizer;                  // hyperparameters when written
  std::vector<std::string> optimizer_states;  // tensor name prefixes, in file order
  std::string scheduler_type;
  double lr = 0.0;  // learning rate of the last step
  TrainerState trainer;
  int64_t train_batch_size = 0;  // sequences per step when written
  DataConfig data;
  std::string config_yaml;             // the resolved config of the job that wrote it
  std::vector<ShardFileEntry> shards;  // index = rank
};

// The shard file name of `rank`: "rank_00003.safetensors".
std::string shard_file_name(int rank);
// The optimizer states a checkpoint stores, in file order (AdamW: master, exp_avg, exp_avg_sq).
std::vector<std::string> optimizer_state_names(const OptimizerConfig& optimizer);

// The pieces rank `rank` writes under `plan` (its shard pieces; at stage 0 the same split).
std::vector<ParamRange> checkpoint_ranges(const PartitionPlan& plan, int rank);

// What a rank reports once its shard file is written and synced.
struct ShardAck {
  std::string file;
  uint64_t size = 0;
  uint64_t xxh3 = 0;
};

// The manifest of the checkpoint a job with `cfg` and `plan` (already resolved for its world)
// writes after `state.step`, from every rank's ack (index = rank).
Manifest make_manifest(const JobConfig& cfg, const PartitionPlan& plan, const TrainerState& state,
                       const std::vector<ShardAck>& acks);

std::string manifest_to_json(const Manifest& m);
// Parses and validates a manifest (`source` names it in errors): format, a version this build
// reads, every field present with its type, ranks 0..world-1 each with one file.
Result<Manifest> manifest_from_json(const std::string& text, const std::string& source);
// Reads DIR/manifest.json.
Result<Manifest> read_manifest(const std::string& checkpoint_dir);

// The path of shard file `s` in `dir` once it is there with the size the manifest records (cheap:
// no reading). Errors name the file.
Result<std::string> check_shard_file(const std::string& dir, const ShardFileEntry& s);

// Where the elements of each parameter are: the pieces of all shards, by parameter name, sorted
// by first element. Built only once the pieces tile every parameter of `layout` exactly — each
// element in one piece, no gap, no overlap, at most one piece per parameter and shard, no
// parameter the model lacks — so readers never need to check coverage. `source` names the
// checkpoint in errors.
struct PieceSource {
  size_t shard;  // index into Manifest::shards
  int64_t begin, count;
};
using PieceIndex = std::map<std::string, std::vector<PieceSource>>;
Result<PieceIndex> index_pieces(const Manifest& m, const ParamLayout& layout,
                                const std::string& source);

// The tensor name of state `state` of parameter `param` in a shard file: "<state>/<param>".
std::string shard_tensor_name(const std::string& state, const std::string& param);

// Checks every shard file of the checkpoint in `dir` against the manifest: present, the recorded
// size, the recorded XXH3-64 (reads every byte). Errors name the file and what is wrong.
Status verify_checkpoint_files(const std::string& dir, const Manifest& m);

// Whether a job with config `cfg` may continue from `m`: the model's shape and family and the
// optimizer must match (an error naming the key and both values). Differences that a resumed job
// may legitimately make (train.steps, the world size and ZeRO stage, batch split, learning rate,
// data, ...) are returned as readable lines for events.log.
Result<std::vector<std::string>> check_resume_compatible(const Manifest& m, const JobConfig& cfg);

}  // namespace zt
