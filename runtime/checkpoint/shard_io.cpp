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

// Elements read from an NVMe store per write while checkpointing (4 MiB of fp32).
constexpr size_t kStreamChunk = size_t{1} << 20;

Result<ShardSnapshot> snapshot_shard(ZeroEngine& engine, Backend& backend, int64_t step, bool copy,
                                     Buffer reuse) {
  ZT_CHECK(backend.host_accessible(), "snapshot_shard: backend {} is not host memory",
           backend.name());
  ShardSnapshot s;
  s.rank = engine.rank();
  s.world_size = engine.world_size();
  s.step = step;
  s.pieces = checkpoint_ranges(engine.plan(), engine.rank());
  const ParamLayout& layout = engine.plan().layout;
  const std::vector<CheckpointStateInfo>& states = engine.checkpoint_states();
  const std::vector<PartitionPlan::ShardPiece>& pieces = engine.checkpoint_pieces();

  // What to write, and which tensors need a copy: (state, piece) pairs.
  struct Item {
    int k;
    const PartitionPlan::ShardPiece* piece;
    bool copied;  // into the snapshot's buffer
  };
  std::vector<Item> items;
  int64_t copy_elems = 0;
  for (int k = 0; k < static_cast<int>(states.size()); ++k) {
    const CheckpointStateInfo& st = states[static_cast<size_t>(k)];
    for (const PartitionPlan::ShardPiece& p : pieces) {
      const ParamSpec& spec = layout.entries[static_cast<size_t>(p.param)].spec;
      if (!state_applies(st, spec) || (st.whole && p.param_begin != 0)) continue;
      SnapshotTensor t{shard_tensor_name(st.name, spec.name),
                       st.whole ? state_numel(st, spec) : p.count,
                       nullptr,
                       {}};
      if (!st.whole && !engine.state_in_memory()) {
        // On NVMe: read while writing, a chunk at a time.
        const int state = k, param = p.param;
        const int64_t begin = p.param_begin;
        t.read = [&engine, state, param, begin](int64_t off, int64_t n, float* out) {
          return engine.read_state(state, param, begin + off, n, out);
        };
        s.reads_engine = true;
      } else if (!copy && !st.whole) {
        t.src = engine.state_view(k, p.param, p.param_begin);  // nullptr: not plain fp32 there
      }
      const bool copied = !t.read && !t.src;
      if (copied) copy_elems += t.count;
      items.push_back({k, &p, copied});
      s.tensors.push_back(std::move(t));
    }
  }
  const size_t bytes = static_cast<size_t>(copy_elems) * sizeof(float);
  if (bytes > 0) {
    if (!reuse.empty() && reuse.bytes() >= bytes) {
      s.data = std::move(reuse);
    } else {
      reuse = Buffer{};  // released before the new one: never two snapshots' worth
      ZT_ASSIGN_OR_RETURN(s.data, backend.allocate(bytes, MemCategory::kWorkspace));
    }
  }
  float* out = static_cast<float*>(s.data.data());
  for (size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    if (!it.copied) continue;
    const CheckpointStateInfo& st = states[static_cast<size_t>(it.k)];
    if (st.whole)
      engine.read_whole(it.k, it.piece->param, out);
    else
      ZT_RETURN_IF_ERROR(
          engine.read_state(it.k, it.piece->param, it.piece->param_begin, it.piece->count, out));
    s.tensors[i].src = out;
    out += s.tensors[i].count;
  }
  backend.synchronize();
  return s;
}

Result<WrittenShard> write_shard(const ShardSnapshot& s, const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  WrittenShard w;
  w.file = shard_file_name(s.rank);
  std::vector<TensorSpec> specs;
  for (const SnapshotTensor& t : s.tensors) specs.push_back({t.name, DType::kF32, {t.count}});
  std::map<std::string, std::string> meta = {
      {"format", "zerotrain-shard"},
      {"format_version", std::to_string(kCheckpointFormatVersion)},
      {"rank", std::to_string(s.rank)},
      {"world_size", std::to_string(s.world_size)},
      {"step", std::to_string(s.step)}};
  const std::string path = (fs::path(dir) / w.file).string();
  ZT_ASSIGN_OR_RETURN(SafetensorsWriter writer,
                      SafetensorsWriter::create(path, std::move(specs), std::move(meta)));
  for (const SnapshotTensor& t : s.tensors) {
    if (t.read) {
      ZT_RETURN_IF_ERROR(writer.write_tensor_from(
          t.name,
          [&](size_t off, size_t n, void* out) {
            return t.read(static_cast<int64_t>(off), static_cast<int64_t>(n),
                          static_cast<float*>(out));
          },
          kStreamChunk));
    } else {
      ZT_RETURN_IF_ERROR(writer.write_tensor(t.name, t.src, DType::kF32));
    }
  }
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
  const std::vector<CheckpointStateInfo>& states = engine.checkpoint_states();
  std::vector<std::string> names;
  for (const CheckpointStateInfo& st : states) names.push_back(st.name);
  if (m.optimizer_states != names)
    return make_error(
        StatusCode::kDataError,
        "{}: the checkpoint stores the optimizer states [{}], this optimizer keeps [{}]", dir,
        fmt::join(m.optimizer_states, ", "), fmt::join(names, ", "));
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

  const std::vector<PartitionPlan::ShardPiece> held = engine.held_pieces();
  std::vector<float> staging;
  for (size_t h = 0; h < held.size(); ++h) {
    const PartitionPlan::ShardPiece& want = held[h];
    const ParamSpec& spec = layout.entries[static_cast<size_t>(want.param)].spec;
    const std::vector<PieceSource>& sources = index.at(spec.name);
    const int64_t lo = want.param_begin, hi = want.param_begin + want.count;
    for (int k = 0; k < static_cast<int>(states.size()); ++k) {
      const CheckpointStateInfo& st = states[static_cast<size_t>(k)];
      if (!state_applies(st, spec)) continue;
      if (st.whole) {
        // Written once, by the rank whose piece starts the parameter.
        const PieceSource& src = sources.front();
        ZT_ASSIGN_OR_RETURN(const SafetensorsReader* r, reader(src.shard));
        ZT_ASSIGN_OR_RETURN(const TensorInfo* t,
                            find_state_tensor(*r, st.name, spec.name, state_numel(st, spec)));
        staging.resize(static_cast<size_t>(state_numel(st, spec)));
        std::memcpy(staging.data(), t->bytes.data(), staging.size() * sizeof(float));
        engine.write_whole(k, want.param, staging.data());
        continue;
      }
      // Straight into the engine's memory where the state is plain fp32 there; else staged.
      float* dst = engine.state_view(k, want.param, lo);
      if (!dst) {
        staging.resize(static_cast<size_t>(want.count));
        dst = staging.data();
      }
      // The pieces tile the parameter (index_pieces), so their overlaps with [lo, hi) fill it.
      for (const PieceSource& src : sources) {
        const int64_t b = std::max(lo, src.begin), e = std::min(hi, src.begin + src.count);
        if (b >= e) continue;
        ZT_ASSIGN_OR_RETURN(const SafetensorsReader* r, reader(src.shard));
        ZT_ASSIGN_OR_RETURN(const TensorInfo* t,
                            find_state_tensor(*r, st.name, spec.name, src.count));
        std::memcpy(dst + (b - lo),
                    t->bytes.data() + (b - src.begin) * static_cast<int64_t>(sizeof(float)),
                    static_cast<size_t>(e - b) * sizeof(float));
      }
      if (dst == staging.data()) ZT_RETURN_IF_ERROR(engine.write_state(k, h, dst));
    }
  }
  return Status::ok();
}

}  // namespace

Status load_shards(const std::string& dir, const Manifest& m, ZeroEngine& engine) {
  return engine.state_loaded(load_held_state(dir, m, engine));
}

}  // namespace zt
