// Tests of the sharded-checkpoint subsystem (runtime/checkpoint/): the manifest's JSON form and
// every refusal of a damaged or foreign one, the XXH3-64 the writer computes while writing, the
// commit protocol of Note [checkpoint commit] (staging, `latest`, retention, same-step replacement,
// refusals that leave everything as it was), file verification, resume compatibility, and one
// single-process save -> restore -> continue round trip through a real Trainer.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <xxhash.h>
#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/manifest.h"
#include "runtime/checkpoint/resume.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/shard_io.h"
#include "runtime/train/trainer.h"
#include "runtime/zero/partition_plan.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using testing::TempDir;

// ---- helpers ----

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Every regular file under `dir` with its contents: lets a test prove that a refusal wrote,
// renamed or removed nothing.
std::map<std::string, std::string> snapshot_tree(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    out[rel] = e.is_regular_file() ? read_bytes(e.path().string()) : std::string("<dir>");
  }
  return out;
}

// Asserts the error code and that the message contains every fragment (printed when it does not).
void expect_error(const Status& st, StatusCode code, const std::vector<std::string>& fragments) {
  ASSERT_FALSE(st.is_ok()) << "expected an error containing '" << fragments.front() << "'";
  EXPECT_EQ(st.code(), code) << st.message();
  for (const std::string& f : fragments)
    EXPECT_NE(st.message().find(f), std::string::npos)
        << "message lacks '" << f << "': " << st.message();
}

// A manifest in which every field differs from its default, so a round trip that drops or mangles
// any field is caught. Values are chosen to stress the encoding: a seed above INT64_MAX, an lr
// with no short decimal form, xxh3 values with leading zero digits and the top bit set.
Manifest full_manifest() {
  Manifest m;
  m.format_version = kCheckpointFormatVersion;
  m.step = 42;
  m.created_unix_ms = 1'700'000'000'123;
  m.model = {"gpt2", 64, 16, 3, 2, 32, 0xFFFF'FFFF'FFFF'FFF0ull, "/weights/init.safetensors"};
  m.num_parameters = 123'457;
  m.dtype = "bf16";
  m.world_size = 2;
  m.zero_stage = 2;
  m.optimizer_type = "Adam";
  m.optimizer.type = "Adam";
  m.optimizer.lr = 3e-4f;
  m.optimizer.beta1 = 0.85f;
  m.optimizer.beta2 = 0.97f;
  m.optimizer.eps = 1e-7f;
  m.optimizer.weight_decay = 0.05f;
  m.optimizer_states = {"master", "exp_avg", "exp_avg_sq"};
  m.scheduler_type = "WarmupCosineLR";
  m.lr = 1.0 / 3.0 * 1e-3;
  m.trainer.step = 42;
  m.trainer.applied_steps = 40;
  m.trainer.scaler = {32768.0, 17, 1};
  m.trainer.next_sequence = 999;
  m.train_batch_size = 24;
  m.data = {"/data/train.bin", DataFormat::kRawU16, true, 0x8000'0000'0000'0001ull, {}};
  m.config_yaml = "model:\n  n_layer: 3\nquote: \"a\\\"b\"\n";
  m.shards = {
      {0,
       "rank_00000.safetensors",
       1'234'567,
       0x00000000'0000'00abull,
       {{"wte.weight", 0, 1024}, {"h.0.attn.c_attn.weight", 16, 3072}}},
      {1, "rank_00001.safetensors", 7, 0xdeadbeef'00c0ffeeull, {{"wte.weight", 1024, 1024}}}};
  return m;
}

void expect_manifest_eq(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.format_version, b.format_version);
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.created_unix_ms, b.created_unix_ms);
  EXPECT_EQ(a.model.family, b.model.family);
  EXPECT_EQ(a.model.vocab_size, b.model.vocab_size);
  EXPECT_EQ(a.model.block_size, b.model.block_size);
  EXPECT_EQ(a.model.n_layer, b.model.n_layer);
  EXPECT_EQ(a.model.n_head, b.model.n_head);
  EXPECT_EQ(a.model.n_embd, b.model.n_embd);
  EXPECT_EQ(a.model.seed, b.model.seed);
  EXPECT_EQ(a.model.init_from, b.model.init_from);
  EXPECT_EQ(a.num_parameters, b.num_parameters);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.world_size, b.world_size);
  EXPECT_EQ(a.zero_stage, b.zero_stage);
  EXPECT_EQ(a.optimizer_type, b.optimizer_type);
  EXPECT_EQ(a.optimizer, b.optimizer);
  EXPECT_EQ(a.optimizer_states, b.optimizer_states);
  EXPECT_EQ(a.scheduler_type, b.scheduler_type);
  EXPECT_EQ(a.lr, b.lr);  // exact: the JSON must carry a double losslessly
  EXPECT_EQ(a.trainer.step, b.trainer.step);
  EXPECT_EQ(a.trainer.applied_steps, b.trainer.applied_steps);
  EXPECT_EQ(a.trainer.scaler.scale, b.trainer.scaler.scale);
  EXPECT_EQ(a.trainer.scaler.good_steps, b.trainer.scaler.good_steps);
  EXPECT_EQ(a.trainer.scaler.hysteresis_left, b.trainer.scaler.hysteresis_left);
  EXPECT_EQ(a.trainer.next_sequence, b.trainer.next_sequence);
  EXPECT_EQ(a.train_batch_size, b.train_batch_size);
  EXPECT_EQ(a.data.path, b.data.path);
  EXPECT_EQ(a.data.format, b.data.format);
  EXPECT_EQ(a.data.shuffle, b.data.shuffle);
  EXPECT_EQ(a.data.seed, b.data.seed);
  EXPECT_EQ(a.config_yaml, b.config_yaml);
  ASSERT_EQ(a.shards.size(), b.shards.size());
  for (size_t r = 0; r < a.shards.size(); ++r) {
    SCOPED_TRACE("shard " + std::to_string(r));
    EXPECT_EQ(a.shards[r].rank, b.shards[r].rank);
    EXPECT_EQ(a.shards[r].file, b.shards[r].file);
    EXPECT_EQ(a.shards[r].size, b.shards[r].size);
    EXPECT_EQ(a.shards[r].xxh3, b.shards[r].xxh3);
    EXPECT_TRUE(a.shards[r].pieces == b.shards[r].pieces);
  }
}

// ---- 1. manifest JSON ----

TEST(ManifestJson, RoundTripKeepsEveryField) {
  const Manifest m = full_manifest();
  const std::string text = manifest_to_json(m);
  auto back = manifest_from_json(text, "m.json");
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  expect_manifest_eq(*back, m);
  // The on-disk spelling other tools rely on (Note [checkpoint format]).
  const json j = json::parse(text);
  EXPECT_EQ(j["format"], "zerotrain-checkpoint");
  EXPECT_EQ(j["shards"][0]["xxh3"], "00000000000000ab");
  EXPECT_EQ(j["shards"][1]["xxh3"], "deadbeef00c0ffee");
  EXPECT_EQ(j["shards"][0]["pieces"][1], json::parse(R"(["h.0.attn.c_attn.weight", 16, 3072])"));
  EXPECT_EQ(j["data"]["format"], "raw_u16");
  // Serialising again gives the same text: nothing is lost or reordered.
  EXPECT_EQ(manifest_to_json(*back), text);
}

// Parses the full manifest's JSON after `edit`: it must be refused with `code`, in a message
// naming the manifest and containing each fragment.
void expect_refused(const std::function<void(json&)>& edit,
                    const std::vector<std::string>& fragments,
                    StatusCode code = StatusCode::kDataError) {
  json j = json::parse(manifest_to_json(full_manifest()));
  edit(j);
  auto r = manifest_from_json(j.dump(), "ckpt/manifest.json");
  ASSERT_FALSE(r.is_ok()) << "accepted although edited";
  std::vector<std::string> all = {"ckpt/manifest.json"};
  all.insert(all.end(), fragments.begin(), fragments.end());
  expect_error(r.status(), code, all);
}

TEST(ManifestJson, RefusesInvalidJson) {
  auto r = manifest_from_json("{\"format\": \"zerotrain-checkpoint\", ", "ckpt/manifest.json");
  ASSERT_FALSE(r.is_ok());
  expect_error(r.status(), StatusCode::kDataError, {"ckpt/manifest.json", "not valid JSON"});
  auto e = manifest_from_json("", "empty.json");
  ASSERT_FALSE(e.is_ok());
  expect_error(e.status(), StatusCode::kDataError, {"empty.json", "not valid JSON"});
}

TEST(ManifestJson, RefusesWrongFormat) {
  expect_refused([](json& j) { j["format"] = "safetensors"; },
                 {"format: 'safetensors' is not 'zerotrain-checkpoint'"});
  expect_refused([](json& j) { j["format"] = 1; }, {"format: expected a string"});
  expect_refused([](json& j) { j.erase("format"); }, {"format: missing"});
}

TEST(ManifestJson, RefusesMissingFields) {
  expect_refused([](json& j) { j["model"].erase("n_embd"); }, {"model.n_embd: missing"});
  expect_refused([](json& j) { j.erase("model"); }, {"model: missing"});
  expect_refused([](json& j) { j["data"].erase("next_sequence"); },
                 {"data.next_sequence: missing"});
  expect_refused([](json& j) { j["loss_scaler"].erase("scale"); }, {"loss_scaler.scale: missing"});
  expect_refused([](json& j) { j["shards"][1].erase("xxh3"); }, {"shards[1].xxh3: missing"});
  expect_refused([](json& j) { j.erase("config"); }, {"config: missing"});
}

TEST(ManifestJson, RefusesWrongTypes) {
  expect_refused([](json& j) { j["step"] = "42"; }, {"step: expected an integer"});
  expect_refused([](json& j) { j["model"]["n_layer"] = 3.5; },
                 {"model.n_layer: expected an integer"});
  expect_refused([](json& j) { j["model"]["family"] = 2; }, {"model.family: expected a string"});
  expect_refused([](json& j) { j["data"]["shuffle"] = 1; },
                 {"data.shuffle: expected true or false"});
  expect_refused([](json& j) { j["scheduler"]["lr"] = "0.1"; },
                 {"scheduler.lr: expected a number"});
  expect_refused([](json& j) { j["model"] = json::array(); }, {"model", "expected an object"});
  expect_refused([](json& j) { j["optimizer"]["states"] = "master"; },
                 {"optimizer.states: expected a list of names"});
  expect_refused([](json& j) { j["data"]["format"] = "npy"; },
                 {"data.format: unknown format 'npy'"});
}

TEST(ManifestJson, RefusesShardListThatDoesNotMatchWorldSize) {
  expect_refused([](json& j) { j["world_size"] = 3; }, {"shards: expected one entry per rank (3)"});
  expect_refused([](json& j) { j["shards"].erase(1); },
                 {"shards: expected one entry per rank (2)"});
  expect_refused([](json& j) { j["shards"] = json::object(); },
                 {"shards: expected one entry per rank (2)"});
}

TEST(ManifestJson, RefusesShardRanksOutOfOrder) {
  expect_refused([](json& j) { std::swap(j["shards"][0], j["shards"][1]); },
                 {"shards[0].rank: expected 0"});
  expect_refused([](json& j) { j["shards"][1]["rank"] = 0; }, {"shards[1].rank: expected 1"});
}

TEST(ManifestJson, RefusesFileNamesOutsideTheCheckpoint) {
  for (const std::string& bad :
       {std::string("sub/rank_00001.safetensors"), std::string("/etc/passwd"),
        std::string("../rank_00001.safetensors"), std::string(".hidden"), std::string("")}) {
    SCOPED_TRACE(bad);
    expect_refused([&](json& j) { j["shards"][1]["file"] = bad; },
                   {"shards[1].file: '" + bad + "' is not a file name inside the checkpoint"});
  }
}

TEST(ManifestJson, RefusesBadXxh3Hex) {
  for (const std::string& bad :
       {std::string("deadbeef"), std::string("deadbeef00c0ffee0"), std::string("deadbeef00c0ffeg"),
        std::string("not hex at all!!"), std::string("")}) {
    SCOPED_TRACE(bad);
    expect_refused([&](json& j) { j["shards"][1]["xxh3"] = bad; },
                   {"shards[1].xxh3: expected 16 hex digits"});
  }
  expect_refused([](json& j) { j["shards"][1]["xxh3"] = 12345; },
                 {"shards[1].xxh3: expected a string"});
}

// Exactly 16 hex digits: strtoull-style parsing would take a "0x" prefix, leading whitespace and a
// sign, and "-..." would wrap around to another checksum.
TEST(ManifestJson, RefusesXxh3WithPrefixSignOrSpace) {
  for (const std::string& bad :
       {std::string("0x000000000000ab"), std::string(" 00000000000000a"),
        std::string("-000000000000001"), std::string("+00000000000000a")}) {
    SCOPED_TRACE(bad);
    expect_refused([&](json& j) { j["shards"][1]["xxh3"] = bad; },
                   {"shards[1].xxh3: expected 16 hex digits"});
  }
}

TEST(ManifestJson, RefusesBadPieces) {
  const std::string what =
      "shards[0].pieces: each piece is [parameter, first element >= 0, count > 0]";
  const std::vector<json> bad = {
      json::parse(R"(["wte.weight", -1, 5])"),  json::parse(R"(["wte.weight", 0, 0])"),
      json::parse(R"(["wte.weight", 0])"),      json::parse(R"([7, 0, 5])"),
      json::parse(R"(["wte.weight", 0, 2.5])"), json::parse(R"({"param": "wte.weight"})")};
  for (const json& piece : bad) {
    SCOPED_TRACE(piece.dump());
    expect_refused([&](json& j) { j["shards"][0]["pieces"][1] = piece; }, {what});
  }
  expect_refused([](json& j) { j["shards"][0]["pieces"] = "wte.weight"; },
                 {"shards[0].pieces: expected a list"});
}

TEST(ManifestJson, RefusesInconsistentCounters) {
  expect_refused([](json& j) { j["trainer"]["step"] = 41; }, {"trainer.step: does not match step"});
  expect_refused([](json& j) { j["trainer"]["applied_steps"] = 43; },
                 {"trainer.applied_steps: outside 0..step"});
  expect_refused([](json& j) { j["zero_stage"] = 4; }, {"zero_stage: not in 0..3"});
  expect_refused([](json& j) { j["format_version"] = 0; }, {"format_version: must be at least 1"});
}

TEST(ManifestJson, NewerFormatVersionIsUnsupported) {
  // Checked before the other fields: a newer format may legitimately have changed them.
  json j = json::parse(manifest_to_json(full_manifest()));
  j["format_version"] = kCheckpointFormatVersion + 1;
  j.erase("model");
  auto r = manifest_from_json(j.dump(), "ckpt/manifest.json");
  ASSERT_FALSE(r.is_ok());
  expect_error(
      r.status(), StatusCode::kUnsupported,
      {"ckpt/manifest.json",
       "checkpoint format version " + std::to_string(kCheckpointFormatVersion + 1) +
           " is newer than this build reads (" + std::to_string(kCheckpointFormatVersion) + ")"});
}

// ---- 2. XXH3 computed while writing ----

TEST(Xxh3, WriterHashEqualsFileHash) {
  TempDir tmp;
  const std::string path = tmp.file("t.safetensors");
  std::vector<float> a(1000), b(77);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.25f - 3.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i * i) / 7.0f;
  auto w = SafetensorsWriter::create(
      path, {{"a", DType::kF32, {10, 100}}, {"b", DType::kBF16, {77}}, {"empty", DType::kF32, {0}}},
      {{"step", "3"}});
  ASSERT_TRUE(w.is_ok()) << w.status().message();
  ASSERT_TRUE(w->write_tensor("a", a.data(), DType::kF32).is_ok());
  ASSERT_TRUE(w->write_tensor("b", b.data(), DType::kF32).is_ok());
  ASSERT_TRUE(w->write_tensor("empty", nullptr, DType::kF32).is_ok());
  ASSERT_TRUE(w->finish().is_ok());

  const std::string bytes = read_bytes(path);
  ASSERT_GT(bytes.size(), 1000u * 4 + 77 * 2);
  EXPECT_EQ(w->bytes_written(), bytes.size());
  EXPECT_EQ(w->bytes_written(), fs::file_size(path));
  uint64_t size = 0;
  auto file_hash = xxh3_file(path, &size);
  ASSERT_TRUE(file_hash.is_ok()) << file_hash.status().message();
  EXPECT_EQ(size, bytes.size());
  EXPECT_EQ(w->xxh3(), *file_hash);
  // An independent reference: the one-shot XXH3 of the bytes as std::ifstream reads them.
  EXPECT_EQ(*file_hash, XXH3_64bits(bytes.data(), bytes.size()));

  // The hash depends on every byte: flip one in the header and one in the data.
  for (size_t at : {size_t{9}, bytes.size() - 1}) {
    std::string changed = bytes;
    changed[at] = static_cast<char>(changed[at] ^ 0x01);
    write_bytes(tmp.file("changed"), changed);
    auto h = xxh3_file(tmp.file("changed"));
    ASSERT_TRUE(h.is_ok());
    EXPECT_NE(*h, *file_hash) << "flip at " << at;
    EXPECT_EQ(*h, XXH3_64bits(changed.data(), changed.size()));
  }
}

TEST(Xxh3, FileLargerThanOneReadChunk) {
  // xxh3_file reads in 4 MiB chunks: a file spanning several must hash like the one-shot call.
  TempDir tmp;
  std::string bytes(9u << 20, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>((i * 2654435761u) >> 13);
  write_bytes(tmp.file("big"), bytes);
  uint64_t size = 0;
  auto h = xxh3_file(tmp.file("big"), &size);
  ASSERT_TRUE(h.is_ok());
  EXPECT_EQ(size, bytes.size());
  EXPECT_EQ(*h, XXH3_64bits(bytes.data(), bytes.size()));
}

TEST(Xxh3, MissingFileIsNotFound) {
  TempDir tmp;
  auto h = xxh3_file(tmp.file("nope.safetensors"));
  ASSERT_FALSE(h.is_ok());
  expect_error(h.status(), StatusCode::kNotFound, {tmp.file("nope.safetensors")});
}

// ---- 3./4./5. commit protocol, verification, resume checks (no Trainer) ----

class CheckpointDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run_dir_ = tmp_.path();
    root_ = checkpoints_root(run_dir_);
    // The data file is never opened here; the manifest only records its path.
    cfg_ = testing::small_job(tmp_.file("data.bin"));
    cfg_.zero.stage = 1;
    auto plan = make_partition_plan(cfg_.model, cfg_.zero, kWorld);
    ASSERT_TRUE(plan.is_ok()) << plan.status().message();
    plan_ = std::move(plan).value();
  }

  std::string dir_of(int64_t step) const { return root_ + "/" + checkpoint_dir_name(step); }
  std::string shard_path(int64_t step, int rank) const {
    return dir_of(step) + "/" + shard_file_name(rank);
  }

  // Stages a checkpoint of `step` the way ranks do (step 1 of the Note): a shard file per rank,
  // contents depending on (step, rank, salt) so two stagings of one step differ. Returns the
  // committer's manifest built from the ranks' acks.
  Manifest stage(int64_t step, int salt = 0) {
    EXPECT_TRUE(prepare_staging_dir(root_, step).is_ok());
    std::vector<ShardAck> acks;
    for (int r = 0; r < kWorld; ++r) {
      std::vector<float> v(100 + 16 * static_cast<size_t>(r));
      for (size_t i = 0; i < v.size(); ++i)
        v[i] = static_cast<float>(step * 1000 + r * 100 + salt) + static_cast<float>(i) / 8.0f;
      const std::string path = staging_dir(root_, step) + "/" + shard_file_name(r);
      auto w = SafetensorsWriter::create(path, {{"master/x", DType::kF32, {int64_t(v.size())}}},
                                         {{"rank", std::to_string(r)}});
      EXPECT_TRUE(w.is_ok());
      EXPECT_TRUE(w->write_tensor("master/x", v.data(), DType::kF32).is_ok());
      EXPECT_TRUE(w->finish().is_ok());
      acks.push_back({shard_file_name(r), w->bytes_written(), w->xxh3()});
    }
    TrainerState st;
    st.step = step;
    st.applied_steps = step;
    st.next_sequence = step * cfg_.train_batch_size;
    return make_manifest(cfg_, plan_, st, acks);
  }

  CommitResult commit(int64_t step, int keep_last = 0, int salt = 0) {
    auto r = commit_checkpoint(root_, stage(step, salt), keep_last);
    EXPECT_TRUE(r.is_ok()) << r.status().message();
    return r.is_ok() ? *r : CommitResult{};
  }

  std::string latest_text() const { return read_bytes(root_ + "/latest"); }

  static constexpr int kWorld = 2;
  TempDir tmp_;
  std::string run_dir_, root_;
  JobConfig cfg_;
  PartitionPlan plan_;
};

TEST_F(CheckpointDirTest, NamesAndPaths) {
  EXPECT_EQ(checkpoints_root("/runs/a"), "/runs/a/checkpoints");
  EXPECT_EQ(checkpoint_dir_name(100), "step_00000100");
  EXPECT_EQ(staging_dir("/r", 7), "/r/step_00000007.tmp");
  EXPECT_EQ(shard_file_name(3), "rank_00003.safetensors");
  EXPECT_EQ(optimizer_state_names(cfg_.optimizer),
            (std::vector<std::string>{"master", "exp_avg", "exp_avg_sq"}));
}

TEST_F(CheckpointDirTest, CheckpointRangesCoverEveryParameterOnce) {
  // Whatever the stage, the ranks' pieces together cover each parameter exactly once, so a
  // checkpoint written by any world holds every element.
  for (int stage : {0, 1, 3}) {
    SCOPED_TRACE("stage " + std::to_string(stage));
    ZeroConfig z = cfg_.zero;
    z.stage = stage;
    for (int world : {1, 3}) {
      auto plan = make_partition_plan(cfg_.model, z, world);
      ASSERT_TRUE(plan.is_ok());
      std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> seen;
      for (int r = 0; r < world; ++r)
        for (const ParamRange& p : checkpoint_ranges(*plan, r))
          seen[p.param].push_back({p.begin, p.begin + p.count});
      ASSERT_EQ(seen.size(), plan->layout.entries.size());
      for (const ParamEntry& e : plan->layout.entries) {
        auto& ranges = seen[e.spec.name];
        std::sort(ranges.begin(), ranges.end());
        int64_t next = 0;
        for (auto [b, end] : ranges) {
          EXPECT_EQ(b, next) << e.spec.name;
          next = end;
        }
        EXPECT_EQ(next, e.spec.numel()) << e.spec.name;
      }
    }
  }
}

TEST_F(CheckpointDirTest, MakeManifestRecordsTheJob) {
  cfg_.optimizer.lr = 0.25f;  // exactly representable: the manifest's lr is a double
  TrainerState st{5, 4, {1.0, 0, 0}, 20};
  const Manifest m =
      make_manifest(cfg_, plan_, st,
                    {{"rank_00000.safetensors", 10, 0xabc}, {"rank_00001.safetensors", 11, 0xdef}});
  EXPECT_EQ(m.format_version, kCheckpointFormatVersion);
  EXPECT_EQ(m.step, 5);
  EXPECT_TRUE(m.trainer == st);
  EXPECT_EQ(m.model, cfg_.model);
  EXPECT_EQ(m.num_parameters, plan_.layout.num_parameters);
  EXPECT_EQ(m.dtype, "fp32");
  EXPECT_EQ(m.world_size, kWorld);
  EXPECT_EQ(m.zero_stage, 1);
  EXPECT_EQ(m.optimizer_type, "AdamW");
  EXPECT_EQ(m.lr, 0.25);  // no scheduler: the constant optimizer.lr
  EXPECT_EQ(m.train_batch_size, cfg_.train_batch_size);
  EXPECT_EQ(m.data, cfg_.data);
  EXPECT_EQ(m.config_yaml, to_yaml(cfg_));
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  EXPECT_LE(m.created_unix_ms, now);
  EXPECT_GT(m.created_unix_ms, now - 60'000);
  ASSERT_EQ(m.shards.size(), 2u);
  EXPECT_EQ(m.shards[1].rank, 1);
  EXPECT_EQ(m.shards[1].file, "rank_00001.safetensors");
  EXPECT_EQ(m.shards[1].size, 11u);
  EXPECT_EQ(m.shards[1].xxh3, 0xdefu);
  EXPECT_TRUE(m.shards[1].pieces == checkpoint_ranges(plan_, 1));
  // What make_manifest writes, manifest_from_json accepts.
  auto back = manifest_from_json(manifest_to_json(m), "x");
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  expect_manifest_eq(*back, m);
}

TEST_F(CheckpointDirTest, CommitPublishesDirectoryManifestAndLatest) {
  const Manifest m = stage(4);
  auto r = commit_checkpoint(root_, m, 0);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->dir, dir_of(4));
  EXPECT_EQ(r->replaced, "");
  EXPECT_TRUE(r->removed.empty());
  EXPECT_TRUE(fs::is_regular_file(dir_of(4) + "/manifest.json"));
  EXPECT_TRUE(fs::is_regular_file(shard_path(4, 0)));
  EXPECT_TRUE(fs::is_regular_file(shard_path(4, 1)));
  EXPECT_FALSE(fs::exists(staging_dir(root_, 4)));
  EXPECT_FALSE(fs::exists(root_ + "/latest.tmp"));
  EXPECT_EQ(latest_text(), "step_00000004\n");
  auto latest = latest_checkpoint(root_);
  ASSERT_TRUE(latest.is_ok()) << latest.status().message();
  EXPECT_EQ(*latest, dir_of(4));
  auto back = read_manifest(dir_of(4));
  ASSERT_TRUE(back.is_ok()) << back.status().message();
  expect_manifest_eq(*back, m);
  EXPECT_EQ(list_checkpoints(root_), std::vector<int64_t>{4});
  EXPECT_TRUE(verify_checkpoint_files(dir_of(4), *back).is_ok());

  // A later commit moves `latest` on and keeps the earlier checkpoint (keep_last 0: keep all).
  commit(9);
  EXPECT_EQ(latest_text(), "step_00000009\n");
  EXPECT_EQ(list_checkpoints(root_), (std::vector<int64_t>{4, 9}));
}

TEST_F(CheckpointDirTest, RetentionKeepsTheNewest) {
  EXPECT_TRUE(commit(1, 2).removed.empty());
  EXPECT_TRUE(commit(2, 2).removed.empty());
  EXPECT_EQ(commit(3, 2).removed, std::vector<std::string>{dir_of(1)});
  EXPECT_EQ(commit(4, 2).removed, std::vector<std::string>{dir_of(2)});
  EXPECT_EQ(list_checkpoints(root_), (std::vector<int64_t>{3, 4}));
  EXPECT_FALSE(fs::exists(dir_of(1)));
  EXPECT_FALSE(fs::exists(dir_of(2)));
  EXPECT_EQ(latest_text(), "step_00000004\n");

  // A job resumed from an older checkpoint commits a step below the newest: the one `latest`
  // now names survives although it is the oldest; keep_last counts it, and the newest of the
  // others fill the remaining places.
  const CommitResult r = commit(2, 2);
  EXPECT_EQ(r.removed, std::vector<std::string>{dir_of(3)});
  EXPECT_EQ(latest_text(), "step_00000002\n");
  EXPECT_EQ(list_checkpoints(root_), (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(fs::is_regular_file(dir_of(2) + "/manifest.json"));

  // keep_last 1 leaves exactly the one just committed.
  commit(5, 1);
  EXPECT_EQ(list_checkpoints(root_), std::vector<int64_t>{5});
  EXPECT_EQ(latest_text(), "step_00000005\n");
}

TEST_F(CheckpointDirTest, SameStepTwiceMovesTheOldOneAside) {
  commit(5, 0, /*salt=*/1);
  const std::string old_shard = read_bytes(shard_path(5, 0));
  const std::string old_manifest = read_bytes(dir_of(5) + "/manifest.json");
  const auto before = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const CommitResult r = commit(5, /*keep_last=*/0, /*salt=*/2);
  const auto after = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  std::smatch match;
  ASSERT_TRUE(std::regex_match(
      r.replaced, match,
      std::regex(std::regex_replace(dir_of(5), std::regex("[.]"), "\\.") + "\\.replaced-([0-9]+)")))
      << r.replaced;
  const int64_t ms = std::stoll(match[1].str());
  EXPECT_GE(ms, before);
  EXPECT_LE(ms, after);
  // Moved whole (keep_last 0 keeps it).
  EXPECT_EQ(read_bytes(r.replaced + "/" + shard_file_name(0)), old_shard);
  EXPECT_EQ(read_bytes(r.replaced + "/manifest.json"), old_manifest);
  EXPECT_TRUE(r.removed.empty());
  EXPECT_NE(read_bytes(shard_path(5, 0)), old_shard);
  EXPECT_EQ(latest_text(), "step_00000005\n");
  EXPECT_EQ(list_checkpoints(root_), std::vector<int64_t>{5});
  auto m = read_manifest(dir_of(5));
  ASSERT_TRUE(m.is_ok());
  EXPECT_TRUE(verify_checkpoint_files(dir_of(5), *m).is_ok());
  // With retention the superseded copy goes at the next commit.
  const CommitResult next = commit(6, /*keep_last=*/2);
  EXPECT_FALSE(fs::exists(r.replaced));
  EXPECT_NE(std::find(next.removed.begin(), next.removed.end(), r.replaced), next.removed.end());
  EXPECT_EQ(list_checkpoints(root_), (std::vector<int64_t>{5, 6}));
}

TEST_F(CheckpointDirTest, CommitRefusesShardOfWrongSize) {
  commit(6);
  const Manifest m = stage(7);
  const std::string shard = staging_dir(root_, 7) + "/" + shard_file_name(1);
  const uint64_t size = fs::file_size(shard);
  fs::resize_file(shard, size - 1);
  const auto staged_before = snapshot_tree(staging_dir(root_, 7));
  auto r = commit_checkpoint(root_, m, 1);
  ASSERT_FALSE(r.is_ok());
  // The exact wording is checked in CommitRefusalNamesRankAndSizes.
  expect_error(r.status(), StatusCode::kDataError,
               {"checkpoint step 7: '" + shard + "'", "the rank reported " + std::to_string(size),
                "not committing"});
  // Nothing moved: `latest` and the older checkpoint as they were, the staging directory (the
  // evidence) still there and still without a manifest.
  EXPECT_EQ(latest_text(), "step_00000006\n");
  EXPECT_EQ(list_checkpoints(root_), std::vector<int64_t>{6});
  EXPECT_FALSE(fs::exists(dir_of(7)));
  EXPECT_EQ(snapshot_tree(staging_dir(root_, 7)), staged_before);
  EXPECT_FALSE(fs::exists(staging_dir(root_, 7) + "/manifest.json"));
}

TEST_F(CheckpointDirTest, CommitRefusesMissingShard) {
  commit(6);
  const Manifest m = stage(7);
  const std::string shard = staging_dir(root_, 7) + "/" + shard_file_name(0);
  fs::remove(shard);
  auto r = commit_checkpoint(root_, m, 0);
  ASSERT_FALSE(r.is_ok());
  expect_error(r.status(), StatusCode::kDataError,
               {"checkpoint step 7: '" + shard + "'", "missing", "not committing"});
  EXPECT_EQ(latest_text(), "step_00000006\n");
  EXPECT_TRUE(fs::is_directory(staging_dir(root_, 7)));
  EXPECT_TRUE(fs::is_regular_file(staging_dir(root_, 7) + "/" + shard_file_name(1)));
  EXPECT_FALSE(fs::exists(dir_of(7)));
}

// The refusal names the file, the rank, what is there and what the rank reported.
TEST_F(CheckpointDirTest, CommitRefusalNamesRankAndSizes) {
  const Manifest m = stage(7);
  const std::string shard1 = staging_dir(root_, 7) + "/" + shard_file_name(1);
  const uint64_t size = fs::file_size(shard1);
  fs::resize_file(shard1, size - 1);
  auto r = commit_checkpoint(root_, m, 0);
  ASSERT_FALSE(r.is_ok());
  expect_error(r.status(), StatusCode::kDataError,
               {"'" + shard1 + "' of rank 1 is " + std::to_string(size - 1) +
                " bytes but the rank reported " + std::to_string(size) + " bytes"});
  const std::string shard0 = staging_dir(root_, 7) + "/" + shard_file_name(0);
  fs::remove(shard0);
  r = commit_checkpoint(root_, m, 0);
  ASSERT_FALSE(r.is_ok());
  expect_error(r.status(), StatusCode::kDataError, {"'" + shard0 + "' of rank 0 is missing"});
}

TEST_F(CheckpointDirTest, CommitRefusesWithoutStagingDirectory) {
  Manifest m = stage(3);
  fs::remove_all(staging_dir(root_, 3));
  auto r = commit_checkpoint(root_, m, 0);
  ASSERT_FALSE(r.is_ok());
  expect_error(r.status(), StatusCode::kNotFound,
               {"staging directory '" + staging_dir(root_, 3) + "' is missing"});
  EXPECT_FALSE(fs::exists(root_ + "/latest"));
}

TEST_F(CheckpointDirTest, RemoveCrashLeftoversRemovesStagingAndManifestlessStepDirs) {
  commit(2);
  for (const char* d : {"step_00000003.tmp", "step_00000004.tmp", "step_3.tmp", "foo.tmp",
                        "step_00000005.tmpx", "step_0000000a.tmp", "step_00000006"})
    fs::create_directories(root_ + "/" + d);
  write_bytes(root_ + "/step_00000004.tmp/rank_00000.safetensors", "partial");
  write_bytes(root_ + "/latest.tmp", "step_00000002\n");
  std::vector<std::string> removed = remove_crash_leftovers(root_);
  std::sort(removed.begin(), removed.end());
  // step_00000006 has no manifest: a retention removal a crash cut short.
  EXPECT_EQ(removed,
            (std::vector<std::string>{"step_00000003.tmp", "step_00000004.tmp", "step_00000006"}));
  EXPECT_FALSE(fs::exists(root_ + "/step_00000003.tmp"));
  EXPECT_FALSE(fs::exists(root_ + "/step_00000004.tmp"));
  EXPECT_FALSE(fs::exists(root_ + "/step_00000006"));
  for (const char* kept : {"step_3.tmp", "foo.tmp", "step_00000005.tmpx", "step_0000000a.tmp",
                           "step_00000002", "latest.tmp", "latest"})
    EXPECT_TRUE(fs::exists(root_ + "/" + kept)) << kept;
  EXPECT_TRUE(fs::is_regular_file(dir_of(2) + "/manifest.json"));
  EXPECT_TRUE(remove_crash_leftovers(root_).empty());
  EXPECT_TRUE(remove_crash_leftovers(tmp_.file("no-such-root")).empty());
}

TEST_F(CheckpointDirTest, ListCheckpointsNeedsNameAndManifest) {
  commit(1);
  commit(10);
  const std::string manifest = read_bytes(dir_of(1) + "/manifest.json");
  // Each of these has a manifest but a name that is not step_ + 8 digits.
  for (const char* d : {"step_3", "step_000000004", "step_0000000a", "step_00000005.tmp",
                        "step_00000006.replaced-123", "xstep_0000007"}) {
    fs::create_directories(root_ + "/" + d);
    write_bytes(root_ + "/" + d + "/manifest.json", manifest);
  }
  fs::create_directories(dir_of(2));  // right name, no manifest: incomplete
  write_bytes(dir_of(2) + "/rank_00000.safetensors", "x");
  write_bytes(root_ + "/step_00000008", "a file, not a directory");
  EXPECT_EQ(list_checkpoints(root_), (std::vector<int64_t>{1, 10}));
  EXPECT_TRUE(list_checkpoints(tmp_.file("no-such-root")).empty());
}

// A fresh job refuses a run directory that holds a committed checkpoint (and says what to do);
// one without, or with only crash leftovers, is fine.
TEST_F(CheckpointDirTest, FreshJobRefusesARunDirWithCheckpoints) {
  EXPECT_TRUE(check_fresh_run_dir(run_dir_).is_ok());
  ASSERT_TRUE(prepare_staging_dir(root_, 2).is_ok());
  EXPECT_TRUE(check_fresh_run_dir(run_dir_).is_ok());
  commit(4);
  const Status st = check_fresh_run_dir(run_dir_);
  expect_error(st, StatusCode::kInvalidArgument,
               {"run directory '" + run_dir_ + "' already holds a job's checkpoints",
                "latest: " + dir_of(4), "--resume"});
}

// Past 99,999,999 steps the name grows a digit; it stays a checkpoint (listed, resumable).
TEST_F(CheckpointDirTest, StepsBeyondEightDigits) {
  commit(100000000);
  EXPECT_EQ(checkpoint_dir_name(100000000), "step_100000000");
  EXPECT_EQ(list_checkpoints(root_), std::vector<int64_t>{100000000});
  auto latest = latest_checkpoint(root_);
  ASSERT_TRUE(latest.is_ok()) << latest.status().message();
  EXPECT_EQ(*latest, dir_of(100000000));
}

TEST_F(CheckpointDirTest, ResolveResumeDir) {
  auto none = resolve_resume_dir(run_dir_, "");
  ASSERT_FALSE(none.is_ok());
  expect_error(none.status(), StatusCode::kNotFound,
               {"no checkpoint to resume from", "'" + root_ + "/latest' does not exist"});

  commit(4);
  auto ok = resolve_resume_dir(run_dir_, "");
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_EQ(*ok, dir_of(4));
  // An explicit directory wins over `latest`, normalised.
  auto explicit_dir = resolve_resume_dir(run_dir_, root_ + "/../checkpoints/./step_00000004");
  ASSERT_TRUE(explicit_dir.is_ok());
  EXPECT_EQ(*explicit_dir, dir_of(4));
  auto missing_explicit = resolve_resume_dir(run_dir_, tmp_.file("nowhere"));
  ASSERT_FALSE(missing_explicit.is_ok());
  expect_error(missing_explicit.status(), StatusCode::kNotFound,
               {"--resume-from '" + tmp_.file("nowhere") + "': no such directory"});

  // `latest` naming a directory that is gone.
  write_bytes(root_ + "/latest", "step_00000009\n");
  auto gone = resolve_resume_dir(run_dir_, "");
  ASSERT_FALSE(gone.is_ok());
  expect_error(gone.status(), StatusCode::kNotFound,
               {"'" + root_ + "/latest' names '" + dir_of(9) + "', which does not exist"});
  // `latest` holding something that is not a checkpoint name.
  write_bytes(root_ + "/latest", "../../etc\n");
  auto junk = latest_checkpoint(root_);
  ASSERT_FALSE(junk.is_ok());
  expect_error(junk.status(), StatusCode::kDataError, {"holds '../../etc', not a checkpoint name"});
}

TEST_F(CheckpointDirTest, ReadManifestErrorsNameWhatIsMissing) {
  auto nodir = read_manifest(dir_of(3));
  ASSERT_FALSE(nodir.is_ok());
  expect_error(nodir.status(), StatusCode::kNotFound,
               {"checkpoint directory '" + dir_of(3) + "' does not exist"});
  fs::create_directories(dir_of(3));
  auto nomanifest = read_manifest(dir_of(3));
  ASSERT_FALSE(nomanifest.is_ok());
  expect_error(nomanifest.status(), StatusCode::kNotFound,
               {"'" + dir_of(3) + "/manifest.json' is missing", "not a complete checkpoint"});
}

// ---- 4. verify_checkpoint_files ----

TEST_F(CheckpointDirTest, VerifyDetectsFlippedBytesAnywhere) {
  const Manifest m = stage(3);
  ASSERT_TRUE(commit_checkpoint(root_, m, 0).is_ok());
  ASSERT_TRUE(verify_checkpoint_files(dir_of(3), m).is_ok());
  for (int rank : {0, 1}) {
    const std::string path = shard_path(3, rank);
    const std::string good = read_bytes(path);
    // In the 8-byte header length, in the JSON header, in the first and the last data byte.
    const uint64_t header_len = [&] {
      uint64_t n = 0;
      std::memcpy(&n, good.data(), 8);
      return n;
    }();
    for (size_t at : {size_t{2}, size_t{8 + 5}, size_t(8 + header_len), good.size() - 1}) {
      SCOPED_TRACE("rank " + std::to_string(rank) + " byte " + std::to_string(at));
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ 0x40);
      write_bytes(path, bad);
      const auto before = snapshot_tree(root_);
      const Status st = verify_checkpoint_files(dir_of(3), m);
      expect_error(st, StatusCode::kDataError,
                   {"checkpoint file '" + path + "' (rank " + std::to_string(rank) + ")",
                    "fails its checksum", "the file is corrupt"});
      EXPECT_EQ(snapshot_tree(root_), before) << "verification must not touch the files";
    }
    write_bytes(path, good);
  }
  EXPECT_TRUE(verify_checkpoint_files(dir_of(3), m).is_ok());
}

TEST_F(CheckpointDirTest, VerifyDetectsTruncatedAndMissingFiles) {
  const Manifest m = stage(3);
  ASSERT_TRUE(commit_checkpoint(root_, m, 0).is_ok());
  const std::string path = shard_path(3, 1);
  const uint64_t size = fs::file_size(path);
  fs::resize_file(path, size - 3);
  auto before = snapshot_tree(root_);
  expect_error(verify_checkpoint_files(dir_of(3), m), StatusCode::kDataError,
               {"checkpoint file '" + path + "' (rank 1) has " + std::to_string(size - 3) +
                    " bytes but the manifest says " + std::to_string(size),
                "truncated"});
  EXPECT_EQ(snapshot_tree(root_), before);

  fs::remove(path);
  before = snapshot_tree(root_);
  expect_error(verify_checkpoint_files(dir_of(3), m), StatusCode::kNotFound,
               {"checkpoint file '" + path + "' (rank 1) is missing"});
  EXPECT_EQ(snapshot_tree(root_), before);
}

// ---- 5. resume compatibility ----

TEST_F(CheckpointDirTest, ResumeCompatibleWithIdenticalConfigHasNoNotes) {
  const Manifest m = stage(3);
  auto r = check_resume_compatible(m, cfg_);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_TRUE(r->empty()) << (*r)[0];
}

TEST_F(CheckpointDirTest, ResumeRefusesAnotherModelShape) {
  const Manifest m = stage(3);
  struct Case {
    std::function<void(JobConfig&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {[](JobConfig& c) { c.model.n_layer = 4; }, "model.n_layer: 3 but the config has 4"},
      {[](JobConfig& c) { c.model.n_embd = 48; }, "model.n_embd: 32 but the config has 48"},
      {[](JobConfig& c) { c.model.vocab_size = 65; }, "model.vocab_size: 64 but the config has 65"},
      {[](JobConfig& c) { c.model.block_size = 32; }, "model.block_size: 16 but the config has 32"},
      {[](JobConfig& c) { c.model.n_head = 4; }, "model.n_head: 2 but the config has 4"},
      {[](JobConfig& c) { c.model.family = "llama"; },
       "model.family: gpt2 but the config has llama"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.expected);
    JobConfig cfg = cfg_;
    c.edit(cfg);
    auto r = check_resume_compatible(m, cfg);
    ASSERT_FALSE(r.is_ok());
    expect_error(r.status(), StatusCode::kInvalidArgument,
                 {"the checkpoint at step 3 was written for " + c.expected});
  }
}

TEST_F(CheckpointDirTest, ResumeNotesLegitimateChanges) {
  const Manifest m = stage(3);
  JobConfig cfg = cfg_;
  cfg.zero.stage = 3;
  cfg.data.seed = 7;
  auto r = check_resume_compatible(m, cfg);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(*r, (std::vector<std::string>{"zero_optimization.stage: 1 -> 3", "data.seed: 0 -> 7"}));

  cfg = cfg_;
  cfg.train.steps = 1000;  // a longer run is the point of resuming: not even a note
  r = check_resume_compatible(m, cfg);
  ASSERT_TRUE(r.is_ok());
  EXPECT_TRUE(r->empty());
}

// A changed learning rate is legitimate on a resume, but it must be said (events.log).
TEST_F(CheckpointDirTest, ResumeNotesChangedLearningRate) {
  const Manifest m = stage(3);
  JobConfig cfg = cfg_;
  cfg.optimizer.lr = 1e-4f;
  auto r = check_resume_compatible(m, cfg);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_NE((*r)[0].find("optimizer.params.lr"), std::string::npos) << (*r)[0];
}

TEST_F(CheckpointDirTest, PrepareResume) {
  cfg_.train.steps = 10;
  commit(4);
  auto p = prepare_resume(run_dir_, "", cfg_, kWorld);
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  EXPECT_EQ(p->dir, dir_of(4));
  EXPECT_EQ(p->manifest.step, 4);
  EXPECT_TRUE(p->notes.empty());
  auto other_world = prepare_resume(run_dir_, "", cfg_, 3);
  ASSERT_TRUE(other_world.is_ok());
  EXPECT_EQ(other_world->notes, std::vector<std::string>{"world size: 2 -> 3"});

  const auto before = snapshot_tree(root_);
  for (int64_t steps : {4, 2}) {
    JobConfig cfg = cfg_;
    cfg.train.steps = steps;
    auto r = prepare_resume(run_dir_, "", cfg, kWorld);
    ASSERT_FALSE(r.is_ok());
    expect_error(
        r.status(), StatusCode::kInvalidArgument,
        {dir_of(4), "the checkpoint is at step 4 and train.steps is " + std::to_string(steps)});
  }
  JobConfig wider = cfg_;
  wider.model.n_embd = 64;
  auto incompatible = prepare_resume(run_dir_, "", wider, kWorld);
  ASSERT_FALSE(incompatible.is_ok());
  expect_error(incompatible.status(), StatusCode::kInvalidArgument,
               {dir_of(4) + ": ", "model.n_embd: 32 but the config has 64"});

  EXPECT_EQ(snapshot_tree(root_), before) << "a refused resume must write nothing";

  // A corrupt shard: refused by its checksum, nothing rewritten.
  const std::string path = shard_path(4, 1);
  std::string bytes = read_bytes(path);
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x01);
  write_bytes(path, bytes);
  const auto corrupt_before = snapshot_tree(root_);
  auto corrupt = prepare_resume(run_dir_, "", cfg_, kWorld);
  ASSERT_FALSE(corrupt.is_ok());
  expect_error(corrupt.status(), StatusCode::kDataError, {"'" + path + "'", "fails its checksum"});
  EXPECT_EQ(snapshot_tree(root_), corrupt_before);

  // A manifest from a newer zerotrain.
  json j = json::parse(read_bytes(dir_of(4) + "/manifest.json"));
  j["format_version"] = kCheckpointFormatVersion + 1;
  write_bytes(dir_of(4) + "/manifest.json", j.dump());
  auto newer = prepare_resume(run_dir_, "", cfg_, kWorld);
  ASSERT_FALSE(newer.is_ok());
  expect_error(newer.status(), StatusCode::kUnsupported,
               {dir_of(4) + "/manifest.json", "is newer than this build reads"});
}

// ---- 6. shard_io end to end with a real Trainer (a world of one) ----

class ShardIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string data = tmp_.file("data.bin");
    testing::write_llmc_tokens(data, testing::patterned_tokens(4096, 64));
    cfg_ = testing::small_job(data, /*n_layer=*/2);
    backend_ = make_cpu_backend();
    run_dir_ = tmp_.path();
    root_ = checkpoints_root(run_dir_);
  }

  std::unique_ptr<Trainer> make_trainer(const JobConfig& cfg) {
    auto t = Trainer::create(cfg, *backend_);
    EXPECT_TRUE(t.is_ok()) << t.status().message();
    return t.is_ok() ? std::move(t).value() : nullptr;
  }

  // Trains `steps` steps and commits a checkpoint of the trainer the way a job does.
  Manifest train_and_checkpoint(Trainer& t, int steps) {
    for (int i = 0; i < steps; ++i) EXPECT_TRUE(t.step().is_ok());
    auto snap = t.snapshot_shard();
    EXPECT_TRUE(snap.is_ok()) << snap.status().message();
    EXPECT_TRUE(prepare_staging_dir(root_, steps).is_ok());
    auto w = write_shard(*snap, staging_dir(root_, steps));
    EXPECT_TRUE(w.is_ok()) << w.status().message();
    EXPECT_EQ(w->file, "rank_00000.safetensors");
    uint64_t size = 0;
    auto h = xxh3_file(staging_dir(root_, steps) + "/" + w->file, &size);
    EXPECT_TRUE(h.is_ok());
    EXPECT_EQ(w->size, size);
    EXPECT_EQ(w->xxh3, *h);
    const Manifest m = make_manifest(cfg_, t.plan(), t.state(), {{w->file, w->size, w->xxh3}});
    auto c = commit_checkpoint(root_, m, 0);
    EXPECT_TRUE(c.is_ok()) << c.status().message();
    return m;
  }

  TempDir tmp_;
  JobConfig cfg_;
  std::unique_ptr<Backend> backend_;
  std::string run_dir_, root_;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST_F(ShardIoTest, SaveRestoreContinuesBitForBit) {
  auto a = make_trainer(cfg_);
  ASSERT_TRUE(a);
  const Manifest m = train_and_checkpoint(*a, 3);
  const TrainerState state_at_3 = a->state();
  EXPECT_EQ(state_at_3.step, 3);
  EXPECT_EQ(state_at_3.next_sequence, 3 * cfg_.train_batch_size);
  auto weights_at_3 = a->master_weights();
  ASSERT_TRUE(weights_at_3.is_ok());

  // The shard says what it is and holds the master weights where the layout puts them.
  {
    auto rd =
        SafetensorsReader::open(root_ + "/" + checkpoint_dir_name(3) + "/" + shard_file_name(0));
    ASSERT_TRUE(rd.is_ok()) << rd.status().message();
    EXPECT_EQ(rd->metadata().at("format"), "zerotrain-shard");
    EXPECT_EQ(rd->metadata().at("rank"), "0");
    EXPECT_EQ(rd->metadata().at("world_size"), "1");
    EXPECT_EQ(rd->metadata().at("step"), "3");
    EXPECT_EQ(rd->names().size(), 3 * a->layout().entries.size());
    const ParamEntry* wte = a->layout().find("wte.weight");
    ASSERT_NE(wte, nullptr);
    std::vector<float> v(static_cast<size_t>(wte->spec.numel()));
    ASSERT_TRUE(rd->read_as("master/wte.weight", DType::kF32, v.data(), v.size()).is_ok());
    EXPECT_EQ(0, std::memcmp(v.data(), weights_at_3->data() + wte->offset, v.size() * 4));
    ASSERT_NE(rd->find("exp_avg_sq/ln_f.bias"), nullptr);
  }

  auto a4 = a->step();
  ASSERT_TRUE(a4.is_ok());
  auto a_weights_at_4 = a->master_weights();
  ASSERT_TRUE(a_weights_at_4.is_ok());

  auto b = make_trainer(cfg_);
  ASSERT_TRUE(b);
  auto fresh = b->master_weights();
  ASSERT_TRUE(fresh.is_ok());
  ASSERT_FALSE(same_bits(*fresh, *weights_at_3)) << "training changed nothing: the test is void";
  auto p = prepare_resume(run_dir_, "", cfg_, 1);
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  expect_manifest_eq(p->manifest, m);
  ASSERT_TRUE(b->restore(p->dir, p->manifest).is_ok());
  EXPECT_EQ(b->completed_steps(), 3);
  EXPECT_TRUE(b->state() == state_at_3);
  auto restored = b->master_weights();
  ASSERT_TRUE(restored.is_ok());
  EXPECT_TRUE(same_bits(*restored, *weights_at_3));

  // The next step sees the same batch and weights (same loss) and the same Adam moments (same
  // update).
  auto b4 = b->step();
  ASSERT_TRUE(b4.is_ok());
  EXPECT_EQ(b4->step, 4);
  EXPECT_EQ(b4->loss, a4->loss);
  EXPECT_EQ(b4->grad_norm, a4->grad_norm);
  auto b_weights_at_4 = b->master_weights();
  ASSERT_TRUE(b_weights_at_4.is_ok());
  EXPECT_TRUE(same_bits(*b_weights_at_4, *a_weights_at_4));
}

TEST_F(ShardIoTest, RestoreIntoAnotherStage) {
  // The stage-0 checkpoint restores into a stage-3 engine (which holds only its shard): the
  // layout is the same, so the weights must come back bit for bit.
  auto a = make_trainer(cfg_);
  ASSERT_TRUE(a);
  const Manifest m = train_and_checkpoint(*a, 2);
  auto weights = a->master_weights();
  ASSERT_TRUE(weights.is_ok());
  JobConfig cfg3 = cfg_;
  cfg3.zero.stage = 3;
  auto b = make_trainer(cfg3);
  ASSERT_TRUE(b);
  auto p = prepare_resume(run_dir_, "", cfg3, 1);
  ASSERT_TRUE(p.is_ok()) << p.status().message();
  EXPECT_EQ(p->notes, std::vector<std::string>{"zero_optimization.stage: 0 -> 3"});
  ASSERT_TRUE(b->restore(p->dir, p->manifest).is_ok());
  auto restored = b->master_weights();
  ASSERT_TRUE(restored.is_ok());
  EXPECT_TRUE(same_bits(*restored, *weights));
}

// Rewrites `src` (a shard) as `dst`, passing each tensor through `edit` (name, dtype, values);
// returns the manifest entry's new size and checksum.
struct Rewritten {
  uint64_t size, xxh3;
};
Rewritten rewrite_shard(const std::string& src, const std::string& dst,
                        const std::function<void(TensorSpec&, std::vector<float>&)>& edit) {
  auto rd = SafetensorsReader::open(src);
  EXPECT_TRUE(rd.is_ok());
  std::vector<TensorSpec> specs;
  std::vector<std::vector<float>> values;
  for (const std::string& name : rd->names()) {
    const TensorInfo* t = rd->find(name);
    std::vector<float> v(static_cast<size_t>(t->numel));
    EXPECT_TRUE(rd->read_as(name, DType::kF32, v.data(), v.size()).is_ok());
    TensorSpec spec{name, DType::kF32, t->shape};
    edit(spec, v);
    specs.push_back(spec);
    values.push_back(std::move(v));
  }
  auto w = SafetensorsWriter::create(dst, specs, rd->metadata());
  EXPECT_TRUE(w.is_ok()) << w.status().message();
  for (size_t i = 0; i < specs.size(); ++i)
    EXPECT_TRUE(w->write_tensor(specs[i].name, values[i].data(), DType::kF32).is_ok());
  EXPECT_TRUE(w->finish().is_ok());
  return {w->bytes_written(), w->xxh3()};
}

TEST_F(ShardIoTest, LoadShardsRefusesBadShardsAndManifests) {
  auto a = make_trainer(cfg_);
  ASSERT_TRUE(a);
  const Manifest m = train_and_checkpoint(*a, 1);
  const std::string good_dir = root_ + "/" + checkpoint_dir_name(1);
  auto b = make_trainer(cfg_);
  ASSERT_TRUE(b);

  const std::string crafted = tmp_.file("crafted");
  fs::create_directories(crafted);
  const std::string file = crafted + "/rank_00000.safetensors";
  auto with = [&](const std::function<void(TensorSpec&, std::vector<float>&)>& edit) {
    const Rewritten r = rewrite_shard(good_dir + "/rank_00000.safetensors", file, edit);
    Manifest mm = m;
    mm.shards[0].size = r.size;
    mm.shards[0].xxh3 = r.xxh3;
    return mm;
  };

  // A renamed tensor: the one the manifest needs is not there.
  Manifest renamed = with([](TensorSpec& s, std::vector<float>&) {
    if (s.name == "exp_avg/wte.weight") s.name = "exp_avg/wte.weight.old";
  });
  expect_error(load_shards(crafted, renamed, b->engine()), StatusCode::kDataError,
               {"checkpoint file '" + file + "' has no tensor 'exp_avg/wte.weight'"});

  // A tensor with one element too few.
  const int64_t n_wpe = a->layout().find("wpe.weight")->spec.numel();
  Manifest shorter = with([](TensorSpec& s, std::vector<float>& v) {
    if (s.name == "exp_avg_sq/wpe.weight") {
      v.pop_back();
      s.shape = {static_cast<int64_t>(v.size())};
    }
  });
  expect_error(
      load_shards(crafted, shorter, b->engine()), StatusCode::kDataError,
      {"checkpoint file '" + file + "': tensor 'exp_avg_sq/wpe.weight' is F32 [" +
       std::to_string(n_wpe - 1) + "], the manifest says F32 [" + std::to_string(n_wpe) + "]"});

  // A file that is not the one the manifest describes.
  Manifest wrong_size = m;
  wrong_size.shards[0].size += 1;
  expect_error(load_shards(good_dir, wrong_size, b->engine()), StatusCode::kDataError,
               {"checkpoint file '" + good_dir + "/rank_00000.safetensors' (rank 0) has " +
                std::to_string(m.shards[0].size) + " bytes but the manifest says " +
                std::to_string(m.shards[0].size + 1)});

  // A manifest whose pieces leave a parameter uncovered.
  Manifest uncovered = m;
  auto& pieces = uncovered.shards[0].pieces;
  const int64_t n_ln_f = a->layout().find("ln_f.bias")->spec.numel();
  const size_t before = pieces.size();
  pieces.erase(std::remove_if(pieces.begin(), pieces.end(),
                              [](const ParamRange& p) { return p.param == "ln_f.bias"; }),
               pieces.end());
  ASSERT_EQ(pieces.size() + 1, before);
  expect_error(
      load_shards(good_dir, uncovered, b->engine()), StatusCode::kDataError,
      {good_dir, "the pieces of 'ln_f.bias' cover 0 of its " + std::to_string(n_ln_f) + " elements",
       "the manifest is inconsistent"});

  // Overlapping pieces whose counts still add up, a piece past the end, and two pieces of one
  // parameter in one file (which holds one tensor per parameter) are refused before any read.
  Manifest overlap = m;
  for (ShardFileEntry& s : overlap.shards)
    for (ParamRange& p : s.pieces)
      if (p.param == "wte.weight" && p.count > 8) {
        p.begin += 4;  // now overlaps the next piece (or runs past the end) and leaves a gap
        break;
      }
  expect_error(load_shards(good_dir, overlap, b->engine()), StatusCode::kDataError,
               {"'wte.weight'"});
  Manifest past_end = m;
  past_end.shards[0].pieces[0].begin = INT64_MAX - 1;
  expect_error(load_shards(good_dir, past_end, b->engine()), StatusCode::kDataError,
               {"lies outside its"});
  Manifest twice = m;
  {
    ParamRange p = twice.shards[0].pieces[0];
    ASSERT_GE(p.count, 2);
    twice.shards[0].pieces[0].count = p.count / 2;
    twice.shards[0].pieces.push_back({p.param, p.begin + p.count / 2, p.count - p.count / 2});
  }
  expect_error(load_shards(good_dir, twice, b->engine()), StatusCode::kDataError,
               {"lists two pieces of '"});

  // A manifest naming a parameter this model does not have.
  Manifest foreign = m;
  foreign.shards[0].pieces.push_back({"h.7.attn.c_proj.bias", 0, 4});
  expect_error(load_shards(good_dir, foreign, b->engine()), StatusCode::kDataError,
               {"parameter 'h.7.attn.c_proj.bias' (rank 0), which this model does not have"});

  // After all those refusals the intact checkpoint still loads.
  EXPECT_TRUE(load_shards(good_dir, m, b->engine()).is_ok());
  auto wa = a->master_weights(), wb = b->master_weights();
  ASSERT_TRUE(wa.is_ok() && wb.is_ok());
  EXPECT_TRUE(same_bits(*wa, *wb));
}

}  // namespace
}  // namespace zt
