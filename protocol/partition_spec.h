// The partition plan as it travels in the Plan message. One conversion, used by the coordinator to
// send the plan and by each worker to check that the plan it computed itself is the one it got.
// (Header-only: only the coordinator and the worker, which both link the runtime, include it.)
#pragma once

#include "protocol/codec.h"
#include "runtime/zero/partition_plan.h"

namespace zt::protocol {

inline PartitionSpec to_partition_spec(const PartitionPlan& p) {
  PartitionSpec s;
  s.world_size = p.world_size;
  s.stage = p.stage;
  s.total = p.total;
  s.shard_total = p.shard_total;
  s.summary = p.summary();
  for (const PlanBucket& b : p.buckets)
    s.buckets.push_back({b.unit, b.first_param, b.end_param, b.offset, b.numel, b.padded, b.shard,
                         b.shard_offset, b.persistent});
  return s;
}

}  // namespace zt::protocol
