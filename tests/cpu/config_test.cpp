// JobConfig parsing: every kind of bad input names its key path and line; good YAML, DeepSpeed
// JSON and the shipped configs/*.yaml parse to the right values; resolve_batch_sizes follows
// DeepSpeed; to_yaml round-trips.

#include "runtime/config/job_config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

namespace zt {
namespace {

namespace fs = std::filesystem;

// A fresh directory from mkdtemp, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "zt_config_test_XXXXXX").string();
    const char* p = mkdtemp(tmpl.data());
    if (p == nullptr) ADD_FAILURE() << "mkdtemp failed for " << tmpl;
    path_ = p != nullptr ? p : "";
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

// One-line pieces of a valid config, so that a test's text has known line numbers: each $NAME
// expands to exactly one line, and $BASE to the four lines 1-4.
constexpr const char* kModelLine =
    "model: {family: gpt2, vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, n_embd: 128}";
constexpr const char* kDataLine = "data: {path: tokens.bin}";
constexpr const char* kTrainLine = "train: {steps: 10}";
constexpr const char* kBatchLine = "train_micro_batch_size_per_gpu: 4";

std::string expand(std::string text) {
  replace_all(text, "$BASE", "$MODEL\n$DATA\n$TRAIN\n$BATCH");
  replace_all(text, "$MODEL", kModelLine);
  replace_all(text, "$DATA", kDataLine);
  replace_all(text, "$TRAIN", kTrainLine);
  replace_all(text, "$BATCH", kBatchLine);
  return text;
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.write("tokens.bin", std::string(1024 + 64, '\0'));
    dir_.write("model.safetensors", "{}");
  }
  Result<JobConfig> parse(const std::string& text) {
    return parse_job_config(expand(text), "cfg.yaml", dir_.path().string());
  }
  JobConfig parse_ok(const std::string& text) {
    Result<JobConfig> r = parse(text);
    EXPECT_TRUE(r.is_ok()) << r.status().message() << "\n--- config ---\n" << expand(text);
    return r.is_ok() ? r.value() : JobConfig{};
  }

  TempDir dir_;
  std::string data_;
};

// ---- Bad inputs. ----

struct BadCase {
  const char* name;
  const char* text;
  const char* path;  // "" for file-level errors
  int line;          // 0: the message carries no line
  const char* gist;
  StatusCode code = StatusCode::kInvalidArgument;
};

const BadCase kBadCases[] = {
    {"UnknownKeySuggestsClosest",
     "$BASE\nzero_optimization:\n  stage: 3\n  stage3_prefetch_bucket_sise: 1000\n",
     "zero_optimization.stage3_prefetch_bucket_sise", 7,
     "unknown key (did you mean 'stage3_prefetch_bucket_size'?)"},
    {"UnknownKeyTruncatedName", "$MODEL\n$DATA\n$TRAIN\ntrain_micro_batch_size: 4\n",
     "train_micro_batch_size", 4, "did you mean 'train_micro_batch_size_per_gpu'?"},
    {"DeepSpeedKeyNotImplemented",
     "$BASE\nzero_optimization:\n  stage: 2\n  contiguous_gradients: true\n",
     "zero_optimization.contiguous_gradients", 7,
     "a DeepSpeed setting that zerotrain does not implement; remove it"},
    {"KeyInWrongSection", "$BASE\nlr: 0.1\n", "lr", 5, "'lr' belongs in optimizer.params"},
    {"CommTimeoutNotPositive", "$BASE\ncomm:\n  timeout_s: 0\n", "comm.timeout_s", 6,
     "must be > 0"},
    {"UnknownSectionListsKnownKeys", "$BASE\nlogging:\n  level: info\n", "logging", 5,
     "unknown key (known keys here: train_batch_size,"},
    {"DuplicateKey", "$BASE\ntrain: {steps: 5}\n", "train", 5,
     "duplicate key (first given on line 3)"},
    {"BoolWrongType", "$BASE\nfp16:\n  enabled: yes please\n", "fp16.enabled", 6,
     "expected a boolean (true or false), got 'yes please'"},
    {"BoolQuoted", "$BASE\nbf16: {enabled: \"true\"}\n", "bf16.enabled", 5,
     "got the quoted string \"true\""},
    {"IntegerGivenFraction", "$BASE\ntrain_batch_size: 2.5\n", "train_batch_size", 5,
     "expected an integer, got '2.5'"},
    {"IntegerGivenAuto", "$MODEL\n$DATA\n$TRAIN\n$BATCH\ngradient_accumulation_steps: auto\n",
     "gradient_accumulation_steps", 5, "'auto' is a placeholder"},
    {"AutoMicroBatchWithoutGlobalBatch",
     "$MODEL\n$DATA\n$TRAIN\ntrain_micro_batch_size_per_gpu: auto\n", "train_batch_size", 4,
     "required with train_micro_batch_size_per_gpu: auto"},
    {"AutoMicroBatchWithAccumulation",
     "$MODEL\n$DATA\n$TRAIN\ntrain_batch_size: 8\ntrain_micro_batch_size_per_gpu: auto\n"
     "gradient_accumulation_steps: 2\n",
     "gradient_accumulation_steps", 6, "cannot be given with train_micro_batch_size_per_gpu: auto"},
    {"SeqLenNotADivisor",
     "$MODEL\n$TRAIN\n$BATCH\ndata: {path: tokens.bin, seq_len_schedule: [{until_step: 5, "
     "seq_len: 24}]}\n",
     "data.seq_len_schedule[0].seq_len", 4,
     "must be shorter than model.block_size (64) and divide"},
    {"SeqLenScheduleNotIncreasing",
     "$MODEL\n$TRAIN\n$BATCH\ndata: {path: tokens.bin, seq_len_schedule: [{until_step: 5, "
     "seq_len: 16}, {until_step: 5, seq_len: 32}]}\n",
     "data.seq_len_schedule[1].until_step", 4, "must be after the previous entry's (5)"},
    {"SeqLenScheduleUnknownKey",
     "$MODEL\n$TRAIN\n$BATCH\ndata: {path: tokens.bin, seq_len_schedule: [{until_step: 5, "
     "seq_len: 16, steps: 5}]}\n",
     "data.seq_len_schedule[0].steps", 4, "unknown key"},
    {"MemoryBudgetNotASize", "$MODEL\n$DATA\n$TRAIN\n$BATCH\nmemory_budget: lots\n",
     "memory_budget", 5, "is not a size"},
    {"IntegerTooLargeForInt",
     "model:\n  vocab_size: 256\n  block_size: 64\n  n_layer: 5e10\n"
     "  n_head: 4\n  n_embd: 128\n$DATA\n$TRAIN\n$BATCH\n",
     "model.n_layer", 4, "must be <= 2147483647, got 50000000000"},
    {"NumberQuoted", "$BASE\noptimizer:\n  type: AdamW\n  params:\n    lr: \"1e-3\"\n",
     "optimizer.params.lr", 8, "expected a number, got the quoted string \"1e-3\" (remove the"},
    {"SectionNotMapping", "$BASE\nfp16: true\n", "fp16", 5,
     "expected a mapping of keys, got 'true'"},
    {"ZeroStageOutOfRange", "$BASE\nzero_optimization:\n  stage: 5\n", "zero_optimization.stage", 6,
     "must be between 0 and 3, got 5"},
    {"NegativeLr", "$BASE\noptimizer:\n  type: AdamW\n  params:\n    lr: -0.1\n",
     "optimizer.params.lr", 8, "must be >= 0, got -0.1"},
    {"NonPositiveEps", "$BASE\noptimizer: {type: Adam, params: {eps: 0}}\n", "optimizer.params.eps",
     5, "must be > 0, got 0"},
    {"BetaOutOfRange", "$BASE\noptimizer:\n  type: AdamW\n  params:\n    betas: [0.9, 1.0]\n",
     "optimizer.params.betas[1]", 8, "must be in [0, 1), got 1"},
    {"BetasNotAPair", "$BASE\noptimizer:\n  type: AdamW\n  params:\n    betas: [0.9]\n",
     "optimizer.params.betas", 8, "expected a list of two numbers, got a list"},
    {"OptimizerUnsupported", "$BASE\noptimizer:\n  type: RMSprop\n", "optimizer.type", 6,
     "'RMSprop' is not supported (supported: AdamW, Adam, AdamW8bit, Adam8bit, Adafactor, SGD, "
     "Lion)"},
    {"OptimizerKeyOfAnotherType",
     "$BASE\noptimizer:\n  type: AdamW\n  params:\n    momentum: 0.9\n",
     "optimizer.params.momentum", 8, "does not apply to optimizer.type AdamW"},
    {"AdafactorLrWithRelativeStep",
     "$BASE\noptimizer:\n  type: Adafactor\n  params:\n    lr: 0.01\n", "optimizer.params.lr", 8,
     "cannot be combined with relative_step: true"},
    {"AdafactorEpsNotAPair", "$BASE\noptimizer:\n  type: Adafactor\n  params:\n    eps: 0.001\n",
     "optimizer.params.eps", 8, "expected a list of two numbers"},
    {"SgdNesterovWithoutMomentum",
     "$BASE\noptimizer:\n  type: SGD\n  params:\n    nesterov: true\n", "optimizer.params.nesterov",
     8, "needs momentum > 0 and dampening 0"},
    {"OptimizerTypeMissing", "$BASE\noptimizer:\n  params: {lr: 0.1}\n", "optimizer.type", 5,
     "missing required key"},
    {"VocabSizeZero",
     "model:\n  vocab_size: 0\n  block_size: 64\n  n_layer: 2\n  n_head: 4\n  n_embd: 128\n"
     "$DATA\n$TRAIN\n$BATCH\n",
     "model.vocab_size", 2, "must be >= 1, got 0"},
    {"EmbdNotDivisibleByHeads",
     "model:\n  vocab_size: 256\n  block_size: 64\n  n_layer: 2\n  n_head: 5\n  n_embd: 128\n"
     "$DATA\n$TRAIN\n$BATCH\n",
     "model.n_embd", 6, "128 is not divisible by model.n_head (5)"},
    {"FamilyUnsupported",
     "model: {family: llama, vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, "
     "n_embd: 128, init_from: model.safetensors}\n$DATA\n$TRAIN\n$BATCH\n",
     "model.family", 1, "'llama' is not supported (supported: gpt2)"},
    {"ModelDimMissing",
     "\nmodel:\n  vocab_size: 256\n  block_size: 64\n  n_head: 4\n  n_embd: 128\n"
     "$DATA\n$TRAIN\n$BATCH\n",
     "model.n_layer", 2, "missing required key (number of transformer blocks)"},
    {"ModelSectionMissing", "$DATA\n$TRAIN\n$BATCH\n", "model", 0,
     "missing required section (it needs vocab_size, block_size, n_layer, n_head and n_embd)"},
    {"ModelSectionEmpty", "$DATA\n$TRAIN\n$BATCH\nmodel:\n", "model", 4,
     "missing required section"},
    {"DataPathMissing", "$MODEL\ndata: {format: llmc}\n$TRAIN\n$BATCH\n", "data.path", 2,
     "missing required key (the token file to train on)"},
    {"DataFileMissing", "$MODEL\ndata: {path: nope/tokens.bin}\n$TRAIN\n$BATCH\n", "data.path", 2,
     "token file not found: ", StatusCode::kNotFound},
    {"DataPathEmpty", "$MODEL\ndata: {path: \"\"}\n$TRAIN\n$BATCH\n", "data.path", 2,
     "must name the token file to train on, got an empty string"},
    {"BatchSizeBeyondInt", "$BASE\ntrain_batch_size: 1e12\n", "train_batch_size", 5,
     "must be <= 2147483647, got 1000000000000"},
    {"DataPathIsDirectory", "$MODEL\ndata: {path: .}\n$TRAIN\n$BATCH\n", "data.path", 2,
     "token file is not a regular file"},
    {"DataFormatTypo", "$MODEL\ndata: {path: tokens.bin, format: raw_u8}\n$TRAIN\n$BATCH\n",
     "data.format", 2, "'raw_u8' is not supported (supported: llmc, raw_u16); did you mean"},
    {"InitFromMissing",
     "model: {vocab_size: 256, block_size: 64, n_layer: 2, n_head: 4, n_embd: 128, "
     "init_from: gpt2.safetensors}\n$DATA\n$TRAIN\n$BATCH\n",
     "model.init_from", 1, "checkpoint file not found: ", StatusCode::kNotFound},
    {"TrainMissing", "$MODEL\n$DATA\n$BATCH\n", "train", 0,
     "missing required section (it needs steps)"},
    {"TrainStepsZero", "$MODEL\n$DATA\ntrain: {steps: 0}\n$BATCH\n", "train.steps", 3,
     "must be >= 1, got 0"},
    {"Fp16AndBf16", "$BASE\nfp16:\n  enabled: true\nbf16:\n  enabled: true\n", "bf16.enabled", 8,
     "cannot be true together with fp16.enabled (line 6)"},
    {"EveryNPolicyWithoutEveryN", "$BASE\nactivation_checkpointing:\n  policy: every_n\n",
     "activation_checkpointing.every_n", 6, "required when policy is every_n"},
    {"EveryNWithOtherPolicy", "$BASE\nactivation_checkpointing:\n  policy: layer\n  every_n: 2\n",
     "activation_checkpointing.every_n", 7, "applies only to policy every_n (policy is 'layer')"},
    {"EveryNZero", "$BASE\nactivation_checkpointing:\n  policy: every_n\n  every_n: 0\n",
     "activation_checkpointing.every_n", 7, "must be >= 1, got 0"},
    {"NvmeWithoutPath",
     "$BASE\nzero_optimization:\n  stage: 3\n  offload_optimizer:\n    device: nvme\n",
     "zero_optimization.offload_optimizer.nvme_path", 8, "required when device is nvme"},
    {"OffloadParamBelowStage3",
     "$BASE\nzero_optimization:\n  stage: 2\n  offload_param:\n    device: cpu\n",
     "zero_optimization.offload_param.device", 8,
     "'cpu' needs zero_optimization.stage 3 (stage is 2)"},
    {"OffloadOptimizerAtStage0", "$BASE\nzero_optimization: {offload_optimizer: {device: cpu}}\n",
     "zero_optimization.offload_optimizer.device", 5, "needs zero_optimization.stage >= 1"},
    {"OffloadDeviceUnknown", "$BASE\nzero_optimization: {stage: 3, offload_param: {device: gpu}}\n",
     "zero_optimization.offload_param.device", 5,
     "'gpu' is not supported (supported: none, cpu, nvme)"},
    {"BatchSizesDoNotMultiply",
     "$MODEL\n$DATA\n$TRAIN\ntrain_batch_size: 30\ntrain_micro_batch_size_per_gpu: 4\n"
     "gradient_accumulation_steps: 2\n",
     "train_batch_size", 4,
     "30 is not a multiple of train_micro_batch_size_per_gpu (4) x gradient_accumulation_steps "
     "(2) = 8"},
    {"BatchTotalNotMultipleOfMicro",
     "$MODEL\n$DATA\n$TRAIN\ntrain_batch_size: 30\ntrain_micro_batch_size_per_gpu: 4\n",
     "train_batch_size", 4, "30 is not a multiple of train_micro_batch_size_per_gpu (4)"},
    {"NoBatchSize", "$MODEL\n$DATA\n$TRAIN\n", "train_micro_batch_size_per_gpu", 0,
     "missing: give train_micro_batch_size_per_gpu"},
    {"OnlyAccumulationSteps", "$MODEL\n$DATA\n$TRAIN\ngradient_accumulation_steps: 4\n",
     "gradient_accumulation_steps", 4, "does not fix the batch on its own"},
    {"NegativeGradientClipping", "$BASE\ngradient_clipping: -1\n", "gradient_clipping", 5,
     "must be >= 0, got -1"},
    {"SchedulerUnsupported", "$BASE\nscheduler:\n  type: OneCycle\n", "scheduler.type", 6,
     "'OneCycle' is not supported (supported: WarmupLR, WarmupDecayLR, WarmupCosineLR)"},
    {"SchedulerTotalStepsMissing",
     "$BASE\nscheduler:\n  type: WarmupCosineLR\n  params:\n    warmup_num_steps: 10\n",
     "scheduler.params.total_num_steps", 7, "missing required key"},
    {"SchedulerParamsMissingEntirely", "$BASE\nscheduler: {type: WarmupDecayLR}\n",
     "scheduler.params.total_num_steps", 5, "missing required key"},
    {"SchedulerParamOfOtherType",
     "$BASE\nscheduler:\n  type: WarmupCosineLR\n  params:\n    total_num_steps: 100\n"
     "    warmup_num_steps: 10\n    warmup_max_lr: 0.1\n",
     "scheduler.params.warmup_max_lr", 10, "not a parameter of WarmupCosineLR (it takes: "},
    {"SchedulerWarmupTypeUnknown",
     "$BASE\nscheduler: {type: WarmupLR, params: {warmup_type: cosine}}\n",
     "scheduler.params.warmup_type", 5, "'cosine' is not supported (supported: log, linear)"},
    {"SchedulerTotalNotAfterWarmup",
     "$BASE\nscheduler:\n  type: WarmupDecayLR\n  params:\n    total_num_steps: 100\n",
     "scheduler.params.total_num_steps", 8,
     "100 must be greater than warmup_num_steps (1000, the default)"},
    {"SchedulerWarmupTooShort",
     "$BASE\nscheduler: {type: WarmupLR, params: {warmup_num_steps: 1}}\n",
     "scheduler.params.warmup_num_steps", 5, "must be >= 2, got 1"},
    {"SchedulerMinAboveMax",
     "$BASE\nscheduler:\n  type: WarmupLR\n  params:\n    warmup_min_lr: 0.1\n"
     "    warmup_max_lr: 0.01\n",
     "scheduler.params.warmup_min_lr", 8, "0.1 is greater than warmup_max_lr (0.01)"},
    {"CosRatioOutOfRange",
     "$BASE\nscheduler:\n  type: WarmupCosineLR\n  params:\n    total_num_steps: 100\n"
     "    warmup_num_steps: 10\n    cos_min_ratio: 1.5\n",
     "scheduler.params.cos_min_ratio", 10, "must be in [0, 1], got 1.5"},
    {"Fp16WindowZero", "$BASE\nfp16: {enabled: true, loss_scale_window: 0}\n",
     "fp16.loss_scale_window", 5, "must be >= 1, got 0"},
    {"BackendUnknown", "$BASE\nbackend: rocm\n", "backend", 5,
     "'rocm' is not supported (supported: cpu, cuda)"},
    {"JsonWrongType",
     "{\n  \"train_micro_batch_size_per_gpu\": 4,\n"
     "  \"model\": {\"vocab_size\": 256, \"block_size\": 64, \"n_layer\": 2, \"n_head\": 4,"
     " \"n_embd\": 128},\n"
     "  \"data\": {\"path\": \"tokens.bin\"},\n  \"train\": {\"steps\": 10},\n"
     "  \"fp16\": {\"enabled\": \"yes\"}\n}\n",
     "fp16.enabled", 6, "got the quoted string \"yes\""},
    {"YamlSyntaxError", "$BASE\noptimizer: [1, 2\nscheduler: {}\n", "", 6,
     "YAML syntax error: end of sequence flow not found"},
    {"TopLevelNotMapping", "- model\n- data\n", "", 1,
     "expected a mapping of keys at the top level, got a list"},
    {"EmptyConfig", "# nothing here\n", "", 0, "the config is empty"},
};

class BadConfigTest : public ConfigTest, public ::testing::WithParamInterface<BadCase> {};

TEST_P(BadConfigTest, NamesKeyLineAndProblem) {
  const BadCase& c = GetParam();
  Result<JobConfig> r = parse(c.text);
  ASSERT_FALSE(r.is_ok()) << "accepted:\n" << expand(c.text);
  const std::string& msg = r.status().message();
  EXPECT_EQ(r.status().code(), c.code) << msg;
  // "<source>:<line>: <key path>: <problem>", parts left out where there is no line or path.
  std::string prefix = c.line > 0 ? fmt::format("cfg.yaml:{}: ", c.line) : "cfg.yaml: ";
  if (*c.path != '\0') prefix += fmt::format("{}: ", c.path);
  EXPECT_EQ(msg.substr(0, prefix.size()), prefix) << msg;
  EXPECT_NE(msg.find(c.gist), std::string::npos) << "gist '" << c.gist << "' not in: " << msg;
  // One mistake, one message: no follow-on errors about the same thing.
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

INSTANTIATE_TEST_SUITE_P(Table, BadConfigTest, ::testing::ValuesIn(kBadCases),
                         [](const ::testing::TestParamInfo<BadCase>& info) {
                           return std::string(info.param.name);
                         });

TEST_F(ConfigTest, MissingFileMessageNamesResolvedPath) {
  Result<JobConfig> r = parse("$MODEL\ndata: {path: sub/../nope.bin}\n$TRAIN\n$BATCH\n");
  ASSERT_FALSE(r.is_ok());
  const std::string resolved = (dir_.path() / "nope.bin").string();
  EXPECT_NE(r.status().message().find(resolved), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("relative to the config's folder"), std::string::npos);
}

TEST_F(ConfigTest, ReportsEveryIndependentErrorInLineOrder) {
  Result<JobConfig> r = parse(
      "$BASE\nfp16: {enabled: maybe}\nzero_optimization: {stage: 9}\n"
      "steps_per_print: 0\n");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().message(),
            "cfg.yaml:5: fp16.enabled: expected a boolean (true or false), got 'maybe'\n"
            "cfg.yaml:6: zero_optimization.stage: must be between 0 and 3, got 9\n"
            "cfg.yaml:7: steps_per_print: must be >= 1, got 0");
}

TEST_F(ConfigTest, ValuesPrintAsWritten) {
  Result<JobConfig> r = parse("$BASE\noptimizer: {type: AdamW, params: {weight_decay: -0.1}}\n");
  EXPECT_EQ(r.status().message(),
            "cfg.yaml:5: optimizer.params.weight_decay: must be >= 0, got -0.1");
}

TEST_F(ConfigTest, NotFoundOnlyWhenEveryErrorIsAMissingFile) {
  Result<JobConfig> r = parse("$MODEL\ndata: {path: absent.bin}\n$TRAIN\n$BATCH\n");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  r = parse("$MODEL\ndata: {path: absent.bin}\n$TRAIN\n$BATCH\nbackend: tpu\n");
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ConfigTest, LoadMissingConfigFileIsNotFound) {
  Result<JobConfig> r = load_job_config((dir_.path() / "absent.yaml").string());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("absent.yaml"), std::string::npos);
}

// ---- Good inputs. ----

TEST_F(ConfigTest, MinimalConfigGetsDeepSpeedDefaults) {
  const JobConfig c = parse_ok("$BASE\n");
  EXPECT_EQ(c.model.family, "gpt2");
  EXPECT_EQ(c.model.vocab_size, 256);
  EXPECT_EQ(c.model.block_size, 64);
  EXPECT_EQ(c.model.n_layer, 2);
  EXPECT_EQ(c.model.n_head, 4);
  EXPECT_EQ(c.model.n_embd, 128);
  EXPECT_EQ(c.data.path, (dir_.path() / "tokens.bin").string());
  EXPECT_EQ(c.data.format, DataFormat::kLlmc);
  EXPECT_EQ(c.train.steps, 10);
  EXPECT_EQ(c.train_batch_size, 0);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c.gradient_accumulation_steps, 0);
  EXPECT_EQ(c.steps_per_print, 10);
  EXPECT_EQ(c.optimizer.type, "AdamW");
  EXPECT_FLOAT_EQ(c.optimizer.lr, 1e-3f);
  EXPECT_TRUE(c.scheduler.type.empty());
  EXPECT_FALSE(c.fp16.enabled);
  EXPECT_FALSE(c.bf16.enabled);
  EXPECT_EQ(c.zero.stage, 0);
  EXPECT_FALSE(c.zero.overlap_comm);
  EXPECT_EQ(c.zero.offload_optimizer.buffer_count, 4);
  EXPECT_EQ(c.zero.offload_param.buffer_count, 5);
  EXPECT_EQ(c.zero.reduce_bucket_size, 500'000'000);
  EXPECT_EQ(c.activation_checkpointing.policy, CheckpointPolicy::kNone);
  EXPECT_EQ(c.backend, BackendKind::kCpu);
  EXPECT_EQ(c.source_path, "cfg.yaml");
}

TEST_F(ConfigTest, FullYamlConfig) {
  const JobConfig c = parse_ok(R"(# every section
backend: cuda
train_batch_size: 64
train_micro_batch_size_per_gpu: 8
gradient_accumulation_steps: 2
gradient_clipping: 0.5
steps_per_print: 5
model:
  family: gpt2
  vocab_size: 50257
  block_size: 1024
  n_layer: 12
  n_head: 12
  n_embd: 768
  seed: 18446744073
  init_from: ./model.safetensors
data:
  path: tokens.bin
  format: raw_u16
  shuffle: yes
  seed: 7
train:
  steps: 1.5e3
optimizer:
  type: adamw
  params:
    lr: 6e-4
    betas: [0.9, 0.95]
    eps: 1e-6
    weight_decay: 0.1
scheduler:
  type: WarmupDecayLR
  params:
    warmup_min_lr: 0
    warmup_max_lr: 6e-4
    warmup_num_steps: 100
    warmup_type: linear
    total_num_steps: 1500
fp16:
  enabled: true
  loss_scale: 0
  initial_scale_power: 12
  loss_scale_window: 500
  hysteresis: 3
  min_loss_scale: 0.5
bf16:
  enabled: false
zero_optimization:
  stage: 3
  offload_optimizer: {device: cpu, pin_memory: true}
  offload_param: {device: nvme, nvme_path: scratch, buffer_count: 8}
  reduce_bucket_size: 5e8
  allgather_bucket_size: 2e8
  stage3_prefetch_bucket_size: 5.0e7
  stage3_param_persistence_threshold: 1e5
activation_checkpointing:
  policy: every_n
  every_n: 3
checkpoint:
  every_steps: 250
  keep_last: 4
)");
  EXPECT_EQ(c.backend, BackendKind::kCuda);
  EXPECT_EQ(c.train_batch_size, 64);
  EXPECT_EQ(c.gradient_accumulation_steps, 2);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 0.5);
  EXPECT_EQ(c.steps_per_print, 5);
  EXPECT_EQ(c.model.vocab_size, 50257);
  EXPECT_EQ(c.model.seed, 18446744073u);
  EXPECT_EQ(c.model.init_from, (dir_.path() / "model.safetensors").string());
  EXPECT_EQ(c.data.format, DataFormat::kRawU16);
  EXPECT_TRUE(c.data.shuffle);
  EXPECT_EQ(c.data.seed, 7u);
  EXPECT_EQ(c.train.steps, 1500);
  EXPECT_EQ(c.optimizer.type, "AdamW");
  EXPECT_FLOAT_EQ(c.optimizer.lr, 6e-4f);
  EXPECT_FLOAT_EQ(c.optimizer.beta1, 0.9f);
  EXPECT_FLOAT_EQ(c.optimizer.beta2, 0.95f);
  EXPECT_FLOAT_EQ(c.optimizer.eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.optimizer.weight_decay, 0.1f);
  EXPECT_EQ(c.scheduler.type, "WarmupDecayLR");
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 6e-4);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 100);
  EXPECT_EQ(c.scheduler.warmup_type, WarmupType::kLinear);
  EXPECT_EQ(c.scheduler.total_num_steps, 1500);
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_EQ(c.fp16.initial_scale_power, 12);
  EXPECT_EQ(c.fp16.loss_scale_window, 500);
  EXPECT_EQ(c.fp16.hysteresis, 3);
  EXPECT_DOUBLE_EQ(c.fp16.min_loss_scale, 0.5);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kNvme);
  EXPECT_EQ(c.zero.offload_param.nvme_path, (dir_.path() / "scratch").string());
  EXPECT_EQ(c.zero.offload_param.buffer_count, 8);
  EXPECT_EQ(c.zero.reduce_bucket_size, 500'000'000);
  EXPECT_EQ(c.zero.allgather_bucket_size, 200'000'000);
  EXPECT_TRUE(c.zero.overlap_comm);  // DeepSpeed's default at stage 3
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, 50'000'000);
  EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 100'000);
  EXPECT_EQ(c.activation_checkpointing.policy, CheckpointPolicy::kEveryN);
  EXPECT_EQ(c.activation_checkpointing.every_n, 3);
  EXPECT_EQ(c.checkpoint.every_steps, 250);
  EXPECT_EQ(c.checkpoint.keep_last, 4);
}

TEST_F(ConfigTest, SchedulerDefaultsPerType) {
  JobConfig c = parse_ok("$BASE\nscheduler: {type: WarmupLR}\n");
  EXPECT_EQ(c.scheduler.type, "WarmupLR");
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_min_lr, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 0.001);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 1000);
  EXPECT_EQ(c.scheduler.warmup_type, WarmupType::kLog);

  c = parse_ok("$BASE\nscheduler: {type: WarmupCosineLR, params: {total_num_steps: 5000}}\n");
  EXPECT_EQ(c.scheduler.total_num_steps, 5000);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_min_ratio, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.cos_min_ratio, 0.0001);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 1000);
}

TEST_F(ConfigTest, NullSectionCountsAsLeftOut) {
  const JobConfig c = parse_ok("$BASE\nscheduler:\n#  type: WarmupLR\nfp16:\n");
  EXPECT_TRUE(c.scheduler.type.empty());
  EXPECT_FALSE(c.fp16.enabled);
}

TEST_F(ConfigTest, DeepSpeedJsonConfig) {
  const std::string path = dir_.write("ds/ds_config.json", R"({
  "train_batch_size": 32,
  "train_micro_batch_size_per_gpu": 4,
  "gradient_accumulation_steps": 2,
  "gradient_clipping": 1.0,
  "steps_per_print": 100,
  "optimizer": {
    "type": "Adam",
    "params": {"lr": 3e-4, "betas": [0.8, 0.999], "eps": 1e-8, "weight_decay": 3e-7}
  },
  "scheduler": {
    "type": "WarmupDecayLR",
    "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-4, "warmup_num_steps": 100,
               "total_num_steps": 1000}
  },
  "fp16": {
    "enabled": true,
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1
  },
  "zero_optimization": {
    "stage": 3,
    "offload_optimizer": {"device": "cpu", "pin_memory": true},
    "offload_param": {"device": "nvme", "nvme_path": "/local_nvme", "buffer_count": 6},
    "overlap_comm": false,
    "reduce_bucket_size": 5e8,
    "allgather_bucket_size": 5e8,
    "stage3_prefetch_bucket_size": 5e7,
    "stage3_param_persistence_threshold": 1e5
  },
  "model": {"family": "gpt2", "vocab_size": 50257, "block_size": 1024, "n_layer": 12,
            "n_head": 12, "n_embd": 768},
  "data": {"path": "../tokens.bin", "format": "llmc"},
  "train": {"steps": 1000}
}
)");
  Result<JobConfig> r = load_job_config(path);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  const JobConfig& c = r.value();
  EXPECT_EQ(c.source_path, path);
  EXPECT_EQ(c.train_batch_size, 32);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c.gradient_accumulation_steps, 2);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_EQ(c.steps_per_print, 100);
  EXPECT_EQ(c.optimizer.type, "Adam");
  EXPECT_FLOAT_EQ(c.optimizer.lr, 3e-4f);
  EXPECT_FLOAT_EQ(c.optimizer.beta1, 0.8f);
  EXPECT_FLOAT_EQ(c.optimizer.beta2, 0.999f);
  EXPECT_FLOAT_EQ(c.optimizer.eps, 1e-8f);
  EXPECT_FLOAT_EQ(c.optimizer.weight_decay, 3e-7f);
  EXPECT_EQ(c.scheduler.type, "WarmupDecayLR");
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_min_lr, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 3e-4);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 100);
  EXPECT_EQ(c.scheduler.total_num_steps, 1000);
  EXPECT_EQ(c.scheduler.warmup_type, WarmupType::kLog);
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_DOUBLE_EQ(c.fp16.loss_scale, 0.0);
  EXPECT_EQ(c.fp16.initial_scale_power, 16);
  EXPECT_EQ(c.fp16.loss_scale_window, 1000);
  EXPECT_EQ(c.fp16.hysteresis, 2);
  EXPECT_DOUBLE_EQ(c.fp16.min_loss_scale, 1.0);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kNvme);
  EXPECT_EQ(c.zero.offload_param.nvme_path, "/local_nvme");
  EXPECT_EQ(c.zero.offload_param.buffer_count, 6);
  EXPECT_FALSE(c.zero.overlap_comm);  // given explicitly, overriding the stage-3 default
  EXPECT_EQ(c.zero.reduce_bucket_size, 500'000'000);
  EXPECT_EQ(c.zero.allgather_bucket_size, 500'000'000);
  EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, 50'000'000);
  EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 100'000);
  EXPECT_EQ(c.model.n_embd, 768);
  // Relative to the config file's folder (ds/), not to the working directory.
  EXPECT_EQ(c.data.path, data_);

  // 32 = 4 x 2 x world: only a world of 4 fits.
  JobConfig four = c;
  EXPECT_TRUE(resolve_batch_sizes(four, 4).is_ok());
  JobConfig two = c;
  const Status st = resolve_batch_sizes(two, 2);
  EXPECT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
}

// ---- The shipped configs. ----

int64_t gpt2_params(const ModelConfig& m) {
  const int64_t c = m.n_embd;
  return int64_t{m.vocab_size} * c + int64_t{m.block_size} * c + m.n_layer * (12 * c * c + 13 * c) +
         2 * c;
}

TEST_F(ConfigTest, ShippedConfigsParseAndRoundTrip) {
  const fs::path configs = fs::path(ZT_SOURCE_DIR) / "configs";
  int seen = 0;
  for (const auto& entry : fs::directory_iterator(configs)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    ++seen;
    // build/data/ may not exist yet: point the configs at this test's token file.
    std::string text = read_file(entry.path());
    const std::string shipped = "../build/data/corpus.tok";
    ASSERT_NE(text.find(shipped), std::string::npos);
    replace_all(text, shipped, data_);
    Result<JobConfig> r = parse_job_config(text, entry.path().string(), configs.string());
    ASSERT_TRUE(r.is_ok()) << r.status().message();
    JobConfig c = r.value();
    EXPECT_EQ(c.data.path, data_);

    const std::string name = entry.path().stem().string();
    const int64_t params = gpt2_params(c.model);
    if (name == "tiny") {
      EXPECT_EQ(c.model.vocab_size, 256);
      EXPECT_EQ(c.train_micro_batch_size_per_gpu, 8);
      EXPECT_EQ(c.train.steps, 600);
      EXPECT_EQ(c.scheduler.type, "WarmupCosineLR");
      EXPECT_EQ(c.optimizer.type, "AdamW");
      EXPECT_FLOAT_EQ(c.optimizer.lr, 1e-3f);
      EXPECT_FLOAT_EQ(c.optimizer.weight_decay, 0.1f);
      EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
      EXPECT_EQ(c.backend, BackendKind::kCpu);
      EXPECT_GT(params, 500'000);
      EXPECT_LT(params, 1'500'000);
    } else if (name == "small") {
      EXPECT_GT(params, 9'000'000);
      EXPECT_LT(params, 12'000'000);
    } else if (name == "gpt2-124m") {
      EXPECT_EQ(params, 124'439'808);  // GPT-2 small, tied LM head
      EXPECT_TRUE(c.bf16.enabled);
    }

    for (int world : {0, 2}) {  // 0: as parsed; 2: batch sizes resolved for two ranks
      if (world > 0) {
        ASSERT_TRUE(resolve_batch_sizes(c, world).is_ok());
      }
      const std::string yaml = to_yaml(c);
      Result<JobConfig> again = parse_job_config(yaml, entry.path().string(), "/");
      ASSERT_TRUE(again.is_ok()) << again.status().message() << "\n--- emitted ---\n" << yaml;
      EXPECT_EQ(again.value(), c) << "--- emitted ---\n" << yaml;
    }
  }
  EXPECT_GE(seen, 3);
}

TEST_F(ConfigTest, LoadResolvesRelativeToConfigFolder) {
  const std::string path = dir_.write("sub/dir/job.yaml",
                                      "model: {vocab_size: 8, block_size: 4, n_layer: 1, "
                                      "n_head: 1, n_embd: 4}\ndata: {path: ../../tokens.bin}\n"
                                      "train: {steps: 1}\ntrain_batch_size: 2\n");
  Result<JobConfig> r = load_job_config(path);
  ASSERT_TRUE(r.is_ok()) << r.status().message();
  EXPECT_EQ(r->data.path, data_);
}

// ---- resolve_batch_sizes. ----

struct BatchCase {
  int64_t tbs, micro, gas;
  int world;
  int64_t want_tbs, want_micro, want_gas;  // want_tbs 0: an error containing `error`
  const char* error;
};

TEST(ResolveBatchSizes, DeepSpeedSemantics) {
  const BatchCase cases[] = {
      // All three: must multiply out.
      {32, 4, 2, 4, 32, 4, 2, ""},
      {32, 4, 2, 2, 0, 0, 0, "do not multiply out"},
      // Two given: the third derived, exactly.
      {32, 4, 0, 2, 32, 4, 4, ""},
      {32, 4, 0, 3, 0, 0, 0, "gradient_accumulation_steps cannot be derived"},
      {32, 0, 4, 2, 32, 4, 4, ""},
      {30, 0, 4, 2, 0, 0, 0, "train_micro_batch_size_per_gpu cannot be derived"},
      {0, 4, 3, 2, 24, 4, 3, ""},
      // One given.
      {32, 0, 0, 4, 32, 8, 1, ""},
      {32, 0, 0, 3, 0, 0, 0, "not a multiple of the world size"},
      {0, 4, 0, 3, 12, 4, 1, ""},
      {0, 0, 4, 2, 0, 0, 0, "alone does not fix it"},
      {0, 0, 0, 1, 0, 0, 0, "no batch size"},
      {8, 8, 1, 0, 0, 0, 0, "world size must be >= 1"},
  };
  for (const BatchCase& c : cases) {
    JobConfig cfg;
    cfg.train_batch_size = c.tbs;
    cfg.train_micro_batch_size_per_gpu = c.micro;
    cfg.gradient_accumulation_steps = c.gas;
    const std::string what =
        fmt::format("tbs {} micro {} gas {} world {}", c.tbs, c.micro, c.gas, c.world);
    const Status st = resolve_batch_sizes(cfg, c.world);
    if (c.want_tbs != 0) {
      ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
      EXPECT_EQ(cfg.train_batch_size, c.want_tbs) << what;
      EXPECT_EQ(cfg.train_micro_batch_size_per_gpu, c.want_micro) << what;
      EXPECT_EQ(cfg.gradient_accumulation_steps, c.want_gas) << what;
    } else {
      ASSERT_FALSE(st.is_ok()) << what;
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(st.message().find(c.error), std::string::npos) << what << ": " << st.message();
      // A failed resolve leaves the config as it was.
      EXPECT_EQ(cfg.train_batch_size, c.tbs) << what;
      EXPECT_EQ(cfg.train_micro_batch_size_per_gpu, c.micro) << what;
      EXPECT_EQ(cfg.gradient_accumulation_steps, c.gas) << what;
    }
  }
}

TEST(ResolveBatchSizes, ErrorNamesTheNumbers) {
  JobConfig cfg;
  cfg.train_batch_size = 30;
  cfg.train_micro_batch_size_per_gpu = 4;
  const Status st = resolve_batch_sizes(cfg, 2);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("train_batch_size 30, train_micro_batch_size_per_gpu 4"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("world size 2"), std::string::npos) << st.message();
}

// ---- to_yaml. ----

TEST_F(ConfigTest, ToYamlRoundTripsEverySection) {
  const char* variants[] = {
      "$BASE\n",
      "$BASE\nscheduler: {type: WarmupLR, params: {warmup_min_lr: 1e-5, warmup_max_lr: 3e-3, "
      "warmup_num_steps: 7, warmup_type: linear}}\n",
      "$BASE\nscheduler: {type: WarmupDecayLR, params: {total_num_steps: 77, "
      "warmup_num_steps: 7}}\n",
      "$BASE\nscheduler: {type: WarmupCosineLR, params: {total_num_steps: 1001, "
      "warmup_min_ratio: 0.25, cos_min_ratio: 0.3333333333333333}}\n",
      "$MODEL\n$DATA\n$TRAIN\ntrain_batch_size: 48\ngradient_accumulation_steps: 3\n"
      "gradient_clipping: 0.1\noptimizer: {type: Adam, params: {lr: 0.0003, "
      "betas: [0.85, 0.9999], eps: 1.1e-7, weight_decay: 0}}\n"
      "fp16: {enabled: true, loss_scale: 128.5, initial_scale_power: 20, min_loss_scale: 2}\n"
      "zero_optimization: {stage: 3, overlap_comm: false, offload_optimizer: {device: nvme, "
      "nvme_path: \"/scratch/with \\\"quotes\\\" and: colon\"}, offload_param: {device: cpu}}\n"
      "activation_checkpointing: {policy: every_n, every_n: 2}\n"
      "checkpoint: {every_steps: 3, keep_last: 1}\nbackend: cuda\n",
      "$BASE\nbf16: {enabled: true}\nactivation_checkpointing: {policy: selective}\n"
      "data: {path: tokens.bin, format: raw_u16, shuffle: true, seed: 9223372036854775807}\n",
      // `auto` keys stay `auto` (and overlap_comm keeps following the stage) until the planner.
      "$MODEL\n$DATA\n$TRAIN\ntrain_batch_size: 32\ntrain_micro_batch_size_per_gpu: auto\n"
      "memory_budget: 1.5GiB\nzero_optimization: {stage: auto}\n"
      "activation_checkpointing: {policy: auto, every_n: 3}\n",
      "$MODEL\n$TRAIN\n$BATCH\ndata: {path: tokens.bin, seq_len_schedule: [{until_step: 10, "
      "seq_len: 16}, {until_step: 30, seq_len: 32}]}\n",
  };
  for (const char* v : variants) {
    std::string text = v;
    // The last variant gives its own data section.
    if (text.find("format: raw_u16") != std::string::npos) {
      replace_all(text, "$BASE", "$MODEL\n$TRAIN\n$BATCH");
    }
    SCOPED_TRACE(expand(text));
    const JobConfig a = parse_ok(text);
    const std::string yaml = to_yaml(a);
    // Paths are absolute in the output, so the base folder no longer matters.
    Result<JobConfig> b = parse_job_config(yaml, "cfg.yaml", "/nonexistent");
    ASSERT_TRUE(b.is_ok()) << b.status().message() << "\n--- emitted ---\n" << yaml;
    EXPECT_EQ(b.value(), a) << "--- emitted ---\n" << yaml;
    EXPECT_EQ(to_yaml(b.value()), yaml);
  }
}

TEST_F(ConfigTest, AutoKeysAndMemoryBudgetParse) {
  const JobConfig c = parse_ok(
      "$MODEL\n$DATA\n$TRAIN\ntrain_batch_size: 32\ntrain_micro_batch_size_per_gpu: auto\n"
      "memory_budget: 512MiB\nzero_optimization: {stage: auto, offload_param: {device: cpu}}\n"
      "activation_checkpointing: {policy: auto}\n");
  EXPECT_TRUE(c.autos.stage);
  EXPECT_TRUE(c.autos.micro_batch);
  EXPECT_TRUE(c.autos.checkpoint_policy);
  EXPECT_TRUE(c.autos.overlap_comm_follows_stage);
  EXPECT_EQ(c.memory_budget, int64_t{512} << 20);
  // With a stage left to the planner, an offload that needs stage 3 is not an error yet.
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
  JobConfig w = c;
  EXPECT_TRUE(resolve_batch_sizes(w, 4).is_ok());
  EXPECT_EQ(w.train_micro_batch_size_per_gpu, 0) << "the planner picks it, not resolve";
  EXPECT_FALSE(resolve_batch_sizes(w, 5).is_ok()) << "32 sequences do not split over 5 ranks";

  struct Size {
    const char* text;
    int64_t bytes;
  };
  for (const Size& s : {Size{"8GiB", int64_t{8} << 30}, Size{"2 GB", 2'000'000'000},
                        Size{"1.5kib", 1536}, Size{"4096", 4096}, Size{"3m", 3 << 20}}) {
    auto r = parse_byte_size(s.text, "x");
    ASSERT_TRUE(r.is_ok()) << s.text << ": " << r.status().message();
    EXPECT_EQ(*r, s.bytes) << s.text;
  }
  for (const char* bad : {"", "GiB", "-1GiB", "1e30", "ten", "1.2.3MB", "5 parsecs"})
    EXPECT_FALSE(parse_byte_size(bad, "x").is_ok()) << bad;
}

TEST_F(ConfigTest, ToYamlIsReadableAndPortable) {
  JobConfig c = parse_ok("$BASE\noptimizer: {type: AdamW, params: {eps: 1e-8}}\n");
  ASSERT_TRUE(resolve_batch_sizes(c, 2).is_ok());
  const std::string yaml = to_yaml(c);
  // Every key written out, defaults included.
  for (const char* key :
       {"train_batch_size: 8\n", "gradient_accumulation_steps: 1\n", "gradient_clipping: 0.0\n",
        "  family: gpt2\n", "  init_from: \"\"\n", "    betas: [0.9, 0.999]\n",
        "    eps: 1.0e-08\n", "  loss_scale_window: 1000\n", "  reduce_bucket_size: 500000000\n",
        "    buffer_count: 5\n", "  policy: none\n", "  keep_last: 0", "backend: cpu\n"}) {
    EXPECT_NE(yaml.find(key), std::string::npos) << "missing '" << key << "' in\n" << yaml;
  }
  // Unresolved batch keys are left out (0 would not parse back) and say why.
  JobConfig unresolved = parse_ok("$BASE\n");
  EXPECT_NE(to_yaml(unresolved).find("# train_batch_size: derived from the world size"),
            std::string::npos);
}

}  // namespace
}  // namespace zt
