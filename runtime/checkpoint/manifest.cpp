#include "runtime/checkpoint/manifest.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/checkpoint/safetensors.h"
#include "runtime/optim/lr_schedule.h"
#include "runtime/optim/optimizer.h"

namespace zt {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr const char* kFormatName = "zerotrain-checkpoint";

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

const char* data_format_name(DataFormat f) { return f == DataFormat::kLlmc ? "llmc" : "raw_u16"; }

// Typed access to a manifest field; a missing key or a wrong type is a kDataError naming the
// field's path, thrown as StatusError and caught in manifest_from_json.
struct Fields {
  const std::string& source;
  [[noreturn]] void bad(const std::string& path, const std::string& what) const {
    throw StatusError(make_error(StatusCode::kDataError, "{}: {}: {}", source, path, what));
  }
  const json& at(const json& obj, const std::string& path, const char* key) const {
    if (!obj.is_object()) bad(path.empty() ? "(top level)" : path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) bad(path.empty() ? key : path + "." + key, "missing");
    return *it;
  }
  template <typename T>
  T get(const json& obj, const std::string& path, const char* key) const {
    const json& v = at(obj, path, key);
    const std::string p = path.empty() ? key : path + "." + key;
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) bad(p, "expected true or false");
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) bad(p, "expected an integer");
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) bad(p, "expected a number");
    } else {
      if (!v.is_string()) bad(p, "expected a string");
    }
    return v.get<T>();
  }
};

}  // namespace

std::string shard_file_name(int rank) { return fmt::format("rank_{:05d}.safetensors", rank); }

std::vector<std::string> optimizer_state_names(const OptimizerConfig& optimizer) {
  std::vector<std::string> names = {"master"};
  for (const CheckpointStateInfo& s : optimizer_checkpoint_states(optimizer))
    names.push_back(s.name);
  return names;
}

std::vector<ParamRange> checkpoint_ranges(const PartitionPlan& plan, int rank) {
  std::vector<ParamRange> out;
  for (const PartitionPlan::ShardPiece& p : plan.shard_pieces(rank))
    out.push_back(
        {plan.layout.entries[static_cast<size_t>(p.param)].spec.name, p.param_begin, p.count});
  return out;
}

Manifest make_manifest(const JobConfig& cfg, const PartitionPlan& plan, const TrainerState& state,
                       const std::vector<ShardAck>& acks) {
  Manifest m;
  m.step = state.step;
  m.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  m.model = cfg.model;
  m.num_parameters = plan.layout.num_parameters;
  m.dtype = cfg.bf16.enabled ? "bf16" : cfg.fp16.enabled ? "fp16" : "fp32";
  m.world_size = plan.world_size;
  m.zero_stage = plan.stage;
  m.optimizer_type = cfg.optimizer.type;
  m.optimizer = cfg.optimizer;
  m.optimizer_states = optimizer_state_names(cfg.optimizer);
  m.scheduler_type = cfg.scheduler.type;
  m.lr = state.applied_steps > 0
             ? learning_rate(cfg.scheduler, cfg.optimizer.lr, state.applied_steps - 1)
             : 0.0;
  m.trainer = state;
  m.train_batch_size = cfg.train_batch_size;
  m.data = cfg.data;
  m.config_yaml = to_yaml(cfg);
  for (int r = 0; r < plan.world_size; ++r) {
    ShardFileEntry e;
    e.rank = r;
    const ShardAck& a = acks.at(static_cast<size_t>(r));
    e.file = a.file;
    e.size = a.size;
    e.xxh3 = a.xxh3;
    e.pieces = checkpoint_ranges(plan, r);
    m.shards.push_back(std::move(e));
  }
  return m;
}

std::string manifest_to_json(const Manifest& m) {
  json j;
  j["format"] = kFormatName;
  j["format_version"] = m.format_version;
  j["step"] = m.step;
  j["created_unix_ms"] = m.created_unix_ms;
  j["model"] = {{"family", m.model.family},
                {"vocab_size", m.model.vocab_size},
                {"block_size", m.model.block_size},
                {"n_layer", m.model.n_layer},
                {"n_head", m.model.n_head},
                {"n_embd", m.model.n_embd},
                {"seed", m.model.seed},
                {"init_from", m.model.init_from}};
  j["num_parameters"] = m.num_parameters;
  j["dtype"] = m.dtype;
  j["world_size"] = m.world_size;
  j["zero_stage"] = m.zero_stage;
  const OptimizerConfig& o = m.optimizer;
  j["optimizer"] = {{"type", m.optimizer_type},
                    {"states", m.optimizer_states},
                    {"lr", o.lr},
                    {"betas", {o.beta1, o.beta2}},
                    {"eps", o.eps},
                    {"weight_decay", o.weight_decay},
                    {"eps2", o.eps2},
                    {"clip_threshold", o.clip_threshold},
                    {"decay_rate", o.decay_rate},
                    {"use_first_moment", o.use_first_moment},
                    {"scale_parameter", o.scale_parameter},
                    {"relative_step", o.relative_step},
                    {"warmup_init", o.warmup_init},
                    {"momentum", o.momentum},
                    {"dampening", o.dampening},
                    {"nesterov", o.nesterov}};
  j["scheduler"] = {{"type", m.scheduler_type},
                    {"last_batch_iteration", m.trainer.applied_steps - 1},
                    {"lr", m.lr}};
  j["trainer"] = {{"step", m.trainer.step}, {"applied_steps", m.trainer.applied_steps}};
  j["loss_scaler"] = {{"scale", m.trainer.scaler.scale},
                      {"good_steps", m.trainer.scaler.good_steps},
                      {"hysteresis_left", m.trainer.scaler.hysteresis_left}};
  j["data"] = {{"path", m.data.path},
               {"format", data_format_name(m.data.format)},
               {"shuffle", m.data.shuffle},
               {"seed", m.data.seed},
               {"train_batch_size", m.train_batch_size},
               {"next_sequence", m.trainer.next_sequence}};
  json shards = json::array();
  for (const ShardFileEntry& s : m.shards) {
    json pieces = json::array();
    for (const ParamRange& p : s.pieces) pieces.push_back({p.param, p.begin, p.count});
    shards.push_back({{"rank", s.rank},
                      {"file", s.file},
                      {"size", s.size},
                      {"xxh3", hex64(s.xxh3)},
                      {"pieces", std::move(pieces)}});
  }
  j["shards"] = std::move(shards);
  j["config"] = m.config_yaml;
  return j.dump(1) + "\n";
}

Result<Manifest> manifest_from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return make_error(StatusCode::kDataError, "{}: not valid JSON ({}); the checkpoint is damaged",
                      source, e.what());
  }
  Manifest m;
  try {
    Fields f{source};
    if (f.get<std::string>(j, "", "format") != kFormatName)
      f.bad("format", fmt::format("'{}' is not '{}'", j["format"].get<std::string>(), kFormatName));
    m.format_version = f.get<int>(j, "", "format_version");
    if (m.format_version > kCheckpointFormatVersion)
      return make_error(StatusCode::kUnsupported,
                        "{}: checkpoint format version {} is newer than this build reads ({}); use "
                        "the zerotrain that wrote it, or a newer one",
                        source, m.format_version, kCheckpointFormatVersion);
    if (m.format_version < 1) f.bad("format_version", "must be at least 1");
    m.step = f.get<int64_t>(j, "", "step");
    m.created_unix_ms = f.get<int64_t>(j, "", "created_unix_ms");
    const json& model = f.at(j, "", "model");
    m.model.family = f.get<std::string>(model, "model", "family");
    m.model.vocab_size = f.get<int>(model, "model", "vocab_size");
    m.model.block_size = f.get<int>(model, "model", "block_size");
    m.model.n_layer = f.get<int>(model, "model", "n_layer");
    m.model.n_head = f.get<int>(model, "model", "n_head");
    m.model.n_embd = f.get<int>(model, "model", "n_embd");
    m.model.seed = f.get<uint64_t>(model, "model", "seed");
    m.model.init_from = f.get<std::string>(model, "model", "init_from");
    // Bounds far above any GPT-2 a machine trains, so a damaged manifest cannot make a reader
    // build an absurd layout before anything else is checked.
    auto bounded = [&](const char* key, int v, int hi) {
      if (v < 1 || v > hi)
        f.bad(std::string("model.") + key, fmt::format("{} is not in 1..{}", v, hi));
    };
    bounded("vocab_size", m.model.vocab_size, 1 << 24);
    bounded("block_size", m.model.block_size, 1 << 24);
    bounded("n_layer", m.model.n_layer, 4096);
    bounded("n_head", m.model.n_head, 4096);
    bounded("n_embd", m.model.n_embd, 1 << 18);
    m.num_parameters = f.get<int64_t>(j, "", "num_parameters");
    m.dtype = f.get<std::string>(j, "", "dtype");
    m.world_size = f.get<int>(j, "", "world_size");
    m.zero_stage = f.get<int>(j, "", "zero_stage");
    const json& opt = f.at(j, "", "optimizer");
    m.optimizer_type = f.get<std::string>(opt, "optimizer", "type");
    const json& states = f.at(opt, "optimizer", "states");
    if (!states.is_array() || states.empty()) f.bad("optimizer.states", "expected a list of names");
    for (const json& s : states) {
      if (!s.is_string()) f.bad("optimizer.states", "expected strings");
      m.optimizer_states.push_back(s.get<std::string>());
    }
    m.optimizer = OptimizerConfig::defaults_for(m.optimizer_type);
    m.optimizer.lr = f.get<float>(opt, "optimizer", "lr");
    const json& betas = f.at(opt, "optimizer", "betas");
    if (!betas.is_array() || betas.size() != 2 || !betas[0].is_number() || !betas[1].is_number())
      f.bad("optimizer.betas", "expected two numbers");
    m.optimizer.beta1 = betas[0].get<float>();
    m.optimizer.beta2 = betas[1].get<float>();
    m.optimizer.eps = f.get<float>(opt, "optimizer", "eps");
    m.optimizer.weight_decay = f.get<float>(opt, "optimizer", "weight_decay");
    // Hyperparameters of the other optimizers (absent from manifests written before they were).
    auto opt_real = [&](const char* key, float* out) {
      if (opt.contains(key)) *out = f.get<float>(opt, "optimizer", key);
    };
    auto opt_bool = [&](const char* key, bool* out) {
      if (opt.contains(key)) *out = f.get<bool>(opt, "optimizer", key);
    };
    opt_real("eps2", &m.optimizer.eps2);
    opt_real("clip_threshold", &m.optimizer.clip_threshold);
    opt_real("decay_rate", &m.optimizer.decay_rate);
    opt_bool("use_first_moment", &m.optimizer.use_first_moment);
    opt_bool("scale_parameter", &m.optimizer.scale_parameter);
    opt_bool("relative_step", &m.optimizer.relative_step);
    opt_bool("warmup_init", &m.optimizer.warmup_init);
    opt_real("momentum", &m.optimizer.momentum);
    opt_real("dampening", &m.optimizer.dampening);
    opt_bool("nesterov", &m.optimizer.nesterov);
    const json& sched = f.at(j, "", "scheduler");
    m.scheduler_type = f.get<std::string>(sched, "scheduler", "type");
    m.lr = f.get<double>(sched, "scheduler", "lr");
    const json& tr = f.at(j, "", "trainer");
    m.trainer.step = f.get<int64_t>(tr, "trainer", "step");
    m.trainer.applied_steps = f.get<int64_t>(tr, "trainer", "applied_steps");
    const json& ls = f.at(j, "", "loss_scaler");
    m.trainer.scaler.scale = f.get<double>(ls, "loss_scaler", "scale");
    m.trainer.scaler.good_steps = f.get<int64_t>(ls, "loss_scaler", "good_steps");
    m.trainer.scaler.hysteresis_left = f.get<int>(ls, "loss_scaler", "hysteresis_left");
    const json& data = f.at(j, "", "data");
    m.data.path = f.get<std::string>(data, "data", "path");
    const std::string fmt_name = f.get<std::string>(data, "data", "format");
    if (fmt_name == "llmc")
      m.data.format = DataFormat::kLlmc;
    else if (fmt_name == "raw_u16")
      m.data.format = DataFormat::kRawU16;
    else
      f.bad("data.format", fmt::format("unknown format '{}'", fmt_name));
    m.data.shuffle = f.get<bool>(data, "data", "shuffle");
    m.data.seed = f.get<uint64_t>(data, "data", "seed");
    m.train_batch_size = f.get<int64_t>(data, "data", "train_batch_size");
    m.trainer.next_sequence = f.get<int64_t>(data, "data", "next_sequence");
    m.config_yaml = f.get<std::string>(j, "", "config");

    if (m.step < 0 || m.trainer.step != m.step) f.bad("trainer.step", "does not match step");
    if (m.trainer.applied_steps < 0 || m.trainer.applied_steps > m.step)
      f.bad("trainer.applied_steps", "outside 0..step");
    if (m.world_size < 1) f.bad("world_size", "must be at least 1");
    if (m.zero_stage < 0 || m.zero_stage > 3) f.bad("zero_stage", "not in 0..3");
    if (m.trainer.next_sequence < 0) f.bad("data.next_sequence", "negative");
    const json& shards = f.at(j, "", "shards");
    if (!shards.is_array() || shards.size() != static_cast<size_t>(m.world_size))
      f.bad("shards", fmt::format("expected one entry per rank ({})", m.world_size));
    for (size_t r = 0; r < shards.size(); ++r) {
      const std::string p = fmt::format("shards[{}]", r);
      ShardFileEntry s;
      s.rank = f.get<int>(shards[r], p, "rank");
      if (s.rank != static_cast<int>(r)) f.bad(p + ".rank", fmt::format("expected {}", r));
      s.file = f.get<std::string>(shards[r], p, "file");
      if (s.file.empty() || s.file.find('/') != std::string::npos || s.file[0] == '.')
        f.bad(p + ".file", fmt::format("'{}' is not a file name inside the checkpoint", s.file));
      s.size = f.get<uint64_t>(shards[r], p, "size");
      const std::string hex = f.get<std::string>(shards[r], p, "xxh3");
      if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
        f.bad(p + ".xxh3", "expected 16 hex digits");
      s.xxh3 = std::stoull(hex, nullptr, 16);
      const json& pieces = f.at(shards[r], p, "pieces");
      if (!pieces.is_array()) f.bad(p + ".pieces", "expected a list");
      for (const json& pc : pieces) {
        if (!pc.is_array() || pc.size() != 3 || !pc[0].is_string() || !pc[1].is_number_integer() ||
            !pc[2].is_number_integer() || pc[1].get<int64_t>() < 0 || pc[2].get<int64_t>() <= 0)
          f.bad(p + ".pieces", "each piece is [parameter, first element >= 0, count > 0]");
        s.pieces.push_back({pc[0].get<std::string>(), pc[1].get<int64_t>(), pc[2].get<int64_t>()});
      }
      m.shards.push_back(std::move(s));
    }
  } catch (const StatusError& e) {
    return e.status();
  } catch (const json::exception& e) {
    return make_error(StatusCode::kDataError, "{}: {}", source, e.what());
  }
  return m;
}

Result<Manifest> read_manifest(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / "manifest.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::is_directory(checkpoint_dir, ec))
      return make_error(StatusCode::kNotFound, "checkpoint directory '{}' does not exist",
                        checkpoint_dir);
    return make_error(StatusCode::kNotFound,
                      "'{}' is missing: '{}' is not a complete checkpoint (a checkpoint is "
                      "complete once its manifest is written)",
                      path, checkpoint_dir);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return make_error(StatusCode::kIoError, "reading '{}' failed", path);
  return manifest_from_json(ss.str(), path);
}

Result<std::string> check_shard_file(const std::string& dir, const ShardFileEntry& s) {
  const std::string path = (fs::path(dir) / s.file).string();
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec)
    return make_error(StatusCode::kNotFound,
                      "checkpoint file '{}' (rank {}) is missing: {}; the checkpoint cannot be "
                      "used",
                      path, s.rank, ec.message());
  if (size != s.size)
    return make_error(StatusCode::kDataError,
                      "checkpoint file '{}' (rank {}) has {} bytes but the manifest says {}: it "
                      "was truncated or replaced",
                      path, s.rank, size, s.size);
  return path;
}

std::string shard_tensor_name(const std::string& state, const std::string& param) {
  return state + "/" + param;
}

Result<PieceIndex> index_pieces(const Manifest& m, const ParamLayout& layout,
                                const std::string& source) {
  PieceIndex index;
  for (size_t shard = 0; shard < m.shards.size(); ++shard) {
    const ShardFileEntry& s = m.shards[shard];
    // A shard file holds one tensor per parameter and state, so one piece per parameter.
    std::set<std::string> seen;
    for (const ParamRange& p : s.pieces) {
      if (!seen.insert(p.param).second)
        return make_error(StatusCode::kDataError,
                          "{}: rank {} lists two pieces of '{}' (its file holds one): the manifest "
                          "is inconsistent",
                          source, s.rank, p.param);
      const ParamEntry* e = layout.find(p.param);
      if (!e)
        return make_error(StatusCode::kDataError,
                          "{}: the manifest lists parameter '{}' (rank {}), which this model does "
                          "not have",
                          source, p.param, s.rank);
      if (p.begin < 0 || p.count <= 0 || p.begin > e->spec.numel() - p.count)
        return make_error(StatusCode::kDataError,
                          "{}: rank {}'s piece [{}, +{}) of '{}' lies outside its {} elements",
                          source, s.rank, p.begin, p.count, p.param, e->spec.numel());
      index[p.param].push_back({shard, p.begin, p.count});
    }
  }
  for (const ParamEntry& e : layout.entries) {
    std::vector<PieceSource>& pieces = index[e.spec.name];
    std::sort(pieces.begin(), pieces.end(),
              [](const PieceSource& a, const PieceSource& b) { return a.begin < b.begin; });
    int64_t next = 0;
    for (const PieceSource& p : pieces) {
      if (p.begin != next)
        return make_error(StatusCode::kDataError,
                          "{}: the pieces of '{}' {} at element {}: the manifest is inconsistent",
                          source, e.spec.name, p.begin < next ? "overlap" : "leave a gap",
                          std::min(p.begin, next));
      next = p.begin + p.count;
    }
    if (next != e.spec.numel())
      return make_error(StatusCode::kDataError,
                        "{}: the pieces of '{}' cover {} of its {} elements: the manifest is "
                        "inconsistent",
                        source, e.spec.name, next, e.spec.numel());
  }
  return index;
}

Status verify_checkpoint_files(const std::string& dir, const Manifest& m) {
  for (const ShardFileEntry& s : m.shards) {
    ZT_ASSIGN_OR_RETURN(const std::string path, check_shard_file(dir, s));
    ZT_ASSIGN_OR_RETURN(uint64_t sum, xxh3_file(path));
    if (sum != s.xxh3)
      return make_error(StatusCode::kDataError,
                        "checkpoint file '{}' (rank {}) fails its checksum (xxh3 {} but the "
                        "manifest says {}): the file is corrupt",
                        path, s.rank, hex64(sum), hex64(s.xxh3));
  }
  return Status::ok();
}

Result<std::vector<std::string>> check_resume_compatible(const Manifest& m, const JobConfig& cfg) {
  auto mismatch = [&](const char* key, const auto& have, const auto& want) {
    return make_error(StatusCode::kInvalidArgument,
                      "the checkpoint at step {} was written for {}: {} but the config has {}; a "
                      "checkpoint resumes only the model it was written for",
                      m.step, key, have, want);
  };
  const ModelConfig& a = m.model;
  const ModelConfig& b = cfg.model;
  if (a.family != b.family) return mismatch("model.family", a.family, b.family);
  if (a.vocab_size != b.vocab_size) return mismatch("model.vocab_size", a.vocab_size, b.vocab_size);
  if (a.block_size != b.block_size) return mismatch("model.block_size", a.block_size, b.block_size);
  if (a.n_layer != b.n_layer) return mismatch("model.n_layer", a.n_layer, b.n_layer);
  if (a.n_head != b.n_head) return mismatch("model.n_head", a.n_head, b.n_head);
  if (a.n_embd != b.n_embd) return mismatch("model.n_embd", a.n_embd, b.n_embd);
  // AdamW and Adam (decoupled either way) continue each other; other types do not, even where
  // their states share names (AdamW and AdamW8bit).
  auto family = [](const std::string& type) {
    const OptimizerConfig c = OptimizerConfig::defaults_for(type);
    return c.is_8bit() ? std::string("8bit") : c.is_adam() ? std::string("adam") : type;
  };
  if (family(m.optimizer_type) != family(cfg.optimizer.type) ||
      m.optimizer_states != optimizer_state_names(cfg.optimizer))
    return mismatch("optimizer.type", m.optimizer_type, cfg.optimizer.type);

  std::vector<std::string> notes;
  auto note = [&](const char* key, const auto& was, const auto& now) {
    if (was != now) notes.push_back(fmt::format("{}: {} -> {}", key, was, now));
  };
  note("optimizer.type", m.optimizer_type, cfg.optimizer.type);
  note("optimizer.params.lr", m.optimizer.lr, cfg.optimizer.lr);
  note("optimizer.params.betas[0]", m.optimizer.beta1, cfg.optimizer.beta1);
  note("optimizer.params.betas[1]", m.optimizer.beta2, cfg.optimizer.beta2);
  note("optimizer.params.eps", m.optimizer.eps, cfg.optimizer.eps);
  note("optimizer.params.weight_decay", m.optimizer.weight_decay, cfg.optimizer.weight_decay);
  note("scheduler.type", m.scheduler_type.empty() ? "(none)" : m.scheduler_type,
       cfg.scheduler.type.empty() ? "(none)" : cfg.scheduler.type);
  const char* dtype = cfg.bf16.enabled ? "bf16" : cfg.fp16.enabled ? "fp16" : "fp32";
  note("precision", m.dtype, dtype);
  // A stage left `auto` is chosen later, when the workers have registered.
  if (!cfg.autos.stage) note("zero_optimization.stage", m.zero_stage, cfg.zero.stage);
  if (cfg.train_batch_size > 0) note("train_batch_size", m.train_batch_size, cfg.train_batch_size);
  note("data.path", m.data.path, cfg.data.path);
  note("data.shuffle", m.data.shuffle, cfg.data.shuffle);
  note("data.seed", m.data.seed, cfg.data.seed);
  return notes;
}

}  // namespace zt
