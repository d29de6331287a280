#include "runtime/zero/partition_plan.h"

#include <algorithm>

#include <fmt/format.h>

namespace zt {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Unit of a parameter by its GPT-2 name: "h.<l>." is block l, the rest is the embedding unit.
int unit_of(const std::string& name) {
  if (name.rfind("h.", 0) == 0) return std::stoi(name.substr(2)) + 1;
  return 0;
}

}  // namespace

Result<PartitionPlan> make_partition_plan(const ModelConfig& model, const ZeroConfig& zero,
                                          int world_size) {
  if (world_size < 1)
    return make_error(StatusCode::kInvalidArgument, "world size {} < 1", world_size);
  if (zero.stage < 0 || zero.stage > 3)
    return make_error(StatusCode::kInvalidArgument, "zero_optimization.stage {} not in 0..3",
                      zero.stage);
  const std::vector<ParamSpec> inventory = gpt2_param_inventory(model);
  const int n_units = model.n_layer + 1;
  // Stable order: by unit, then inventory order within the unit.
  std::vector<const ParamSpec*> ordered;
  for (int u = 0; u < n_units; ++u)
    for (const ParamSpec& s : inventory)
      if (unit_of(s.name) == u) ordered.push_back(&s);

  PartitionPlan plan;
  plan.world_size = world_size;
  plan.stage = zero.stage;
  const int64_t align = ParamLayout::kParamAlignment;
  const int64_t bucket_quantum = static_cast<int64_t>(world_size) * PartitionPlan::kShardAlignment;
  const int64_t max_bucket = std::max<int64_t>(1, zero.reduce_bucket_size);
  int64_t offset = 0, shard_offset = 0;
  size_t i = 0;
  for (int u = 0; u < n_units; ++u) {
    PlanUnit unit;
    unit.first_bucket = static_cast<int>(plan.buckets.size());
    unit.offset = offset;
    while (i < ordered.size() && unit_of(ordered[i]->name) == u) {
      PlanBucket b;
      b.unit = u;
      b.offset = offset;
      b.first_param = static_cast<int>(plan.layout.entries.size());
      int64_t used = 0;
      while (i < ordered.size() && unit_of(ordered[i]->name) == u) {
        const int64_t n = ordered[i]->numel();
        if (used > 0 && used + n > max_bucket) break;  // a new bucket for this parameter
        plan.layout.entries.push_back({*ordered[i], offset + used});
        plan.layout.num_parameters += n;
        used = round_up(used + n, align);
        b.numel = used;
        ++i;
      }
      b.end_param = static_cast<int>(plan.layout.entries.size());
      b.padded = round_up(b.numel, bucket_quantum);
      b.shard = b.padded / world_size;
      b.shard_offset = shard_offset;
      b.persistent = zero.stage == 3 && b.numel < zero.stage3_param_persistence_threshold;
      offset += b.padded;
      shard_offset += b.shard;
      plan.buckets.push_back(b);
    }
    unit.end_bucket = static_cast<int>(plan.buckets.size());
    unit.padded = offset - unit.offset;
    if (unit.end_bucket == unit.first_bucket)
      return make_error(StatusCode::kInternal, "unit {} of the model has no parameters", u);
    plan.units.push_back(unit);
  }
  plan.layout.total = offset;
  plan.total = offset;
  plan.shard_total = shard_offset;
  return plan;
}

std::vector<PartitionPlan::ShardPiece> PartitionPlan::shard_pieces(int rank) const {
  std::vector<ShardPiece> out;
  for (const PlanBucket& b : buckets) {
    const int64_t lo = b.offset + rank * b.shard, hi = lo + b.shard;
    for (int p = b.first_param; p < b.end_param; ++p) {
      const ParamEntry& e = layout.entries[static_cast<size_t>(p)];
      const int64_t begin = std::max(lo, e.offset), end = std::min(hi, e.offset + e.spec.numel());
      if (begin < end)
        out.push_back({p, begin - e.offset, b.shard_offset + (begin - lo), end - begin});
    }
  }
  return out;
}

std::string PartitionPlan::summary() const {
  std::string s = fmt::format(
      "partition plan: stage {}, world {}, {} parameters in {} elements "
      "({} buckets), {} elements per rank shard\n",
      stage, world_size, layout.num_parameters, total, buckets.size(), shard_total);
  for (size_t u = 0; u < units.size(); ++u) {
    const PlanUnit& un = units[u];
    s += fmt::format("  unit {:>3} ({}): {} buckets, {} elements\n", u,
                     u == 0 ? "embeddings" : fmt::format("block {}", u - 1),
                     un.end_bucket - un.first_bucket, un.padded);
  }
  return s;
}

}  // namespace zt
