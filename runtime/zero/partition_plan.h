// The partition plan: how a model's parameters are laid out in flat buffers and which rank owns
// which part. One function computes it — the coordinator will call it and send the result, and
// workers use exactly what they receive — so no two processes can disagree.
//
// Note [partition plan]
// Parameters are grouped into units — unit 0 holds the embeddings and the final LayerNorm (wte,
// wpe, ln_f.*), unit l+1 the parameters of block l — in the order the step uses them. A unit is cut
// into buckets of whole parameters of at most zero_optimization.reduce_bucket_size elements (a
// larger parameter gets a bucket of its own). Each bucket is padded to a multiple of
// world_size * kShardAlignment elements, so every rank owns one contiguous, equal slice of it:
// rank r owns [offset + r*shard, offset + (r+1)*shard). Concatenating a rank's slices of all
// buckets, in bucket order, gives its shard: shard_total elements, the same on every rank. Padding
// is never trained (its gradient is zero), and sizes that do not divide are padded, never rounded
// down. Collectives run per bucket with equal counts on every rank (reduce-scatter, all-gather),
// which MPI and NCCL both do natively.
// At stage 3 a bucket smaller than stage3_param_persistence_threshold elements stays whole on every
// rank (its gradient and optimizer state are still partitioned).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/job_config.h"
#include "runtime/core/status.h"
#include "runtime/model/gpt2_params.h"

namespace zt {

struct PlanBucket {
  int unit = 0;
  int first_param = 0, end_param = 0;  // [first, end) indices into PartitionPlan::layout.entries
  int64_t offset = 0;                  // global flat element offset of the bucket
  int64_t numel = 0;         // elements up to the end of its last parameter (inner padding incl.)
  int64_t padded = 0;        // bucket size in the flat buffer: a multiple of world * alignment
  int64_t shard = 0;         // padded / world_size: each rank's slice
  int64_t shard_offset = 0;  // where that slice starts in a rank's shard buffer
  bool persistent = false;   // stage 3: kept whole on every rank
};

struct PlanUnit {
  int first_bucket = 0, end_bucket = 0;  // [first, end) into PartitionPlan::buckets
  int64_t offset = 0;                    // global offset of its first bucket
  int64_t padded = 0;                    // sum of its buckets' padded sizes (contiguous)
};

struct PartitionPlan {
  static constexpr int64_t kShardAlignment = 16;  // elements: 64 bytes of fp32
  int world_size = 1;
  int stage = 0;
  ParamLayout layout;  // global flat offsets, bucket padding included
  std::vector<PlanBucket> buckets;
  std::vector<PlanUnit> units;
  int64_t total = 0;        // global flat elements
  int64_t shard_total = 0;  // elements of each rank's shard

  // The unit holding block l (-1: the embedding unit).
  static int unit_of_block(int l) { return l + 1; }

  // A rank's shard as ranges of parameters: [local_offset, local_offset + count) of the shard
  // buffer holds elements [param_begin, param_begin + count) of layout.entries[param]. Padding is
  // not listed.
  struct ShardPiece {
    int param;
    int64_t param_begin, local_offset, count;
  };
  std::vector<ShardPiece> shard_pieces(int rank) const;

  std::string summary() const;  // one line per unit, for logs and ztctl
};

// Builds the plan for a GPT-2 of `model` on `world_size` ranks at `zero.stage`.
Result<PartitionPlan> make_partition_plan(const ModelConfig& model, const ZeroConfig& zero,
                                          int world_size);

}  // namespace zt
