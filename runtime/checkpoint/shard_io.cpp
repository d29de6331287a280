#include "runtime/checkpoint/shard_io.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "runtime/checkpoint/safetensors.h"

namespace zt {

namespace fs = std::filesystem;

Result<ShardSnapshot> snapshot_shard(ZeroEngine& engine, Backend& backend, int64_t step,
                                     const std::vector<std::string>& state_names, bool copy,
                                     Buffer reuse) {
  ShardSnapshot s;
  s.rank = engine.rank();
  s.world_size = engine.world_size();
  s.step = step;
  s.state_names = state_names;
  ZT_CHECK(static_cast<int>(state_names.size()) == ZeroEngine::kNumStates,
           "{} state names for {} optimizer states", state_names.size(), ZeroEngine::kNumStates);
  const std::vector<PartitionPlan::ShardPiece>& pieces = engine.checkpoint_pieces();
  s.pieces = checkpoint_ranges(engine.plan(), engine.rank());
  int64_t elements = 0;
  for (const PartitionPlan::ShardPiece& p : pieces) elements += p.count;
  if (!copy) {
    for (int k = 0; k < ZeroEngine::kNumStates; ++k)
      for (const PartitionPlan::ShardPiece& p : pieces)
        s.sources.push_back(engine.state_data(k, p.param, p.param_begin));
    return s;
  }
  const size_t bytes = static_cast<size_t>(elements) * ZeroEngine::kNumStates * sizeof(float);
  if (!reuse.empty() && reuse.bytes() >= bytes) {
    s.data = std::move(reuse);
  } else {
    reuse = Buffer{};  // released before the new one: never two snapshots' worth
    ZT_ASSIGN_OR_RETURN(s.data,
                        backend.allocate(std::max<size_t>(bytes, 1), MemCategory::kWorkspace));
  }
  float* out = static_cast<float*>(s.data.data());
  for (int k = 0; k < ZeroEngine::kNumStates; ++k)
    for (const PartitionPlan::ShardPiece& p : pieces) {
      backend.copy(out, engine.state_data(k, p.param, p.param_begin),
                   static_cast<size_t>(p.count) * sizeof(float));
      s.sources.push_back(out);
      out += p.count;
    }
  backend.synchronize();
  return s;
}

Result<WrittenShard> write_shard(const ShardSnapshot& s, const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  WrittenShard w;
  w.file = shard_file_name(s.rank);
  std::vector<TensorSpec> specs;
  for (const std::string& state : s.state_names)
    for (const ParamRange& p : s.pieces)
      specs.push_back({shard_tensor_name(state, p.param), DType::kF32, {p.count}});
  std::map<std::string, std::string> meta = {
      {"format", "zerotrain-shard"},
      {"format_version", std::to_string(kCheckpointFormatVersion)},
      {"rank", std::to_string(s.rank)},
      {"world_size", std::to_string(s.world_size)},
      {"step", std::to_string(s.step)}};
  const std::string path = (fs::path(dir) / w.file).string();
  ZT_ASSIGN_OR_RETURN(SafetensorsWriter writer,
                      SafetensorsWriter::create(path, std::move(specs), std::move(meta)));
  ZT_CHECK(s.sources.size() == s.state_names.size() * s.pieces.size(), "snapshot of {} tensors",
           s.sources.size());
  for (size_t k = 0; k < s.state_names.size(); ++k)
    for (size_t i = 0; i < s.pieces.size(); ++i)
      ZT_RETURN_IF_ERROR(writer.write_tensor(shard_tensor_name(s.state_names[k], s.pieces[i].param),
                                             s.sources[k * s.pieces.size() + i], DType::kF32));
  ZT_RETURN_IF_ERROR(writer.finish());
  w.size = writer.bytes_written();
  w.xxh3 = writer.xxh3();
  w.write_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return w;
}

Result<const TensorInfo*> find_state_tensor(const SafetensorsReader& reader,
                                            const std::string& state, const std::string& param,
                                            int64_t count) {
  const std::string name = shard_tensor_name(state, param);
  const TensorInfo* t = reader.find(name);
  if (!t)
    return make_error(StatusCode::kDataError, "checkpoint file '{}' has no tensor '{}'",
                      reader.path(), name);
  if (t->dtype != DType::kF32 || t->shape != std::vector<int64_t>{count})
    return make_error(StatusCode::kDataError,
                      "checkpoint file '{}': tensor '{}' is {} [{}], the manifest says F32 [{}]",
                      reader.path(), name, t->dtype_name, t->shape.empty() ? 0 : t->shape[0],
                      count);
  return t;
}

namespace {

// Copies what this rank holds out of the shard files; not collective.
Status load_held_state(const std::string& dir, const Manifest& m, ZeroEngine& engine) {
  const ParamLayout& layout = engine.plan().layout;
  if (m.optimizer_states.size() != static_cast<size_t>(ZeroEngine::kNumStates))
    return make_error(StatusCode::kDataError,
                      "{}: the checkpoint stores {} optimizer states, this optimizer keeps {}", dir,
                      m.optimizer_states.size(), ZeroEngine::kNumStates);
  ZT_ASSIGN_OR_RETURN(const PieceIndex index, index_pieces(m, layout, dir));

  std::vector<std::optional<SafetensorsReader>> readers(m.shards.size());
  auto reader = [&](size_t s) -> Result<const SafetensorsReader*> {
    if (!readers[s]) {
      ZT_ASSIGN_OR_RETURN(const std::string path, check_shard_file(dir, m.shards[s]));
      ZT_ASSIGN_OR_RETURN(SafetensorsReader r, SafetensorsReader::open(path));
      readers[s].emplace(std::move(r));
    }
    return &*readers[s];
  };

  for (const PartitionPlan::ShardPiece& want : engine.held_pieces()) {
    const std::string& name = layout.entries[static_cast<size_t>(want.param)].spec.name;
    const int64_t lo = want.param_begin, hi = want.param_begin + want.count;
    for (int k = 0; k < ZeroEngine::kNumStates; ++k) {
      // The pieces tile the parameter (index_pieces), so their overlaps with [lo, hi) fill it.
      for (const PieceSource& src : index.at(name)) {
        const int64_t b = std::max(lo, src.begin), e = std::min(hi, src.begin + src.count);
        if (b >= e) continue;
        ZT_ASSIGN_OR_RETURN(const SafetensorsReader* r, reader(src.shard));
        ZT_ASSIGN_OR_RETURN(
            const TensorInfo* t,
            find_state_tensor(*r, m.optimizer_states[static_cast<size_t>(k)], name, src.count));
        std::memcpy(engine.state_data(k, want.param, b),
                    t->bytes.data() + (b - src.begin) * static_cast<int64_t>(sizeof(float)),
                    static_cast<size_t>(e - b) * sizeof(float));
      }
    }
  }
  return Status::ok();
}

}  // namespace

Status load_shards(const std::string& dir, const Manifest& m, ZeroEngine& engine) {
  return engine.state_loaded(load_held_state(dir, m, engine));
}

}  // namespace zt
