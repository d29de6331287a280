// Parsing, validation and emission of JobConfig. See job_config.h for the contract.
//
// Note [config errors]
// Parsing runs in two phases. Phase 1 walks every section and reports each bad key on its own:
// unknown keys, wrong types, out-of-range values, missing required keys, missing files. All of
// these are collected (sorted by line) so that a user fixes a config in one round trip rather than
// one error at a time. Phase 2 checks combinations of keys (n_embd vs n_head, fp16 vs bf16, offload
// vs stage, ...) and runs only when phase 1 found nothing, because a combination check on a value
// that already failed would only add a confusing second message about the same mistake.
// Every message reads "<source>:<line>: <key path>: <problem>"; the line is that of the key (a null
// value has no position of its own in yaml-cpp), or of the enclosing section for a missing key.

#include "runtime/config/job_config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <concepts>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

namespace zt {

OptimizerConfig OptimizerConfig::defaults_for(const std::string& type) {
  OptimizerConfig c;
  c.type = type;
  if (type == "Adafactor") {
    c.lr = 0.0f;  // unused while relative_step
    c.eps = 1e-30f;
    c.weight_decay = 0.0f;
  } else if (type == "SGD") {
    c.weight_decay = 0.0f;
  } else if (type == "Lion") {
    c.lr = 1e-4f;
    c.beta2 = 0.99f;
    c.weight_decay = 0.0f;
  } else if (type == "Adam8bit") {
    c.weight_decay = 0.0f;  // bitsandbytes' Adam8bit default
  }
  return c;
}
namespace {

namespace fs = std::filesystem;

using KeyList = std::span<const std::string_view>;

constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// ---- Schema: the keys each section accepts. ----

constexpr std::string_view kTopKeys[] = {"train_batch_size",
                                         "train_micro_batch_size_per_gpu",
                                         "gradient_accumulation_steps",
                                         "gradient_clipping",
                                         "steps_per_print",
                                         "optimizer",
                                         "scheduler",
                                         "fp16",
                                         "bf16",
                                         "zero_optimization",
                                         "model",
                                         "data",
                                         "train",
                                         "activation_checkpointing",
                                         "checkpoint",
                                         "comm",
                                         "backend",
                                         "memory_budget"};
constexpr std::string_view kModelKeys[] = {"family", "vocab_size", "block_size", "n_layer",
                                           "n_head", "n_embd",     "seed",       "init_from"};
constexpr std::string_view kDataKeys[] = {"path", "format", "shuffle", "seed", "seq_len_schedule"};
constexpr std::string_view kSeqLenStageKeys[] = {"until_step", "seq_len"};
constexpr std::string_view kTrainKeys[] = {"steps"};
constexpr std::string_view kOptimizerKeys[] = {"type", "params"};
constexpr std::string_view kOptimizerTypes[] = {"AdamW",     "Adam", "AdamW8bit", "Adam8bit",
                                                "Adafactor", "SGD",  "Lion"};
constexpr const char* kOptimizerTypeList = "AdamW, Adam, AdamW8bit, Adam8bit, Adafactor, SGD, Lion";
constexpr std::string_view kOptimizerParamKeys[] = {
    "lr",      "betas",           "eps",           "weight_decay", "clip_threshold", "decay_rate",
    "beta1",   "scale_parameter", "relative_step", "warmup_init",  "momentum",       "dampening",
    "nesterov"};
constexpr std::string_view kSchedulerKeys[] = {"type", "params"};
// DeepSpeed's scheduler classes take different parameters; each type accepts only its own.
constexpr std::string_view kWarmupLRKeys[] = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps",
                                              "warmup_type"};
constexpr std::string_view kWarmupDecayLRKeys[] = {
    "warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "total_num_steps"};
constexpr std::string_view kWarmupCosineLRKeys[] = {
    "total_num_steps", "warmup_min_ratio", "warmup_num_steps", "cos_min_ratio", "warmup_type"};
constexpr std::string_view kAllSchedulerParamKeys[] = {
    "warmup_min_lr",   "warmup_max_lr",    "warmup_num_steps", "warmup_type",
    "total_num_steps", "warmup_min_ratio", "cos_min_ratio"};
constexpr std::string_view kFp16Keys[] = {"enabled",           "loss_scale", "initial_scale_power",
                                          "loss_scale_window", "hysteresis", "min_loss_scale"};
constexpr std::string_view kBf16Keys[] = {"enabled"};
constexpr std::string_view kZeroKeys[] = {"stage",
                                          "offload_optimizer",
                                          "offload_param",
                                          "reduce_bucket_size",
                                          "allgather_bucket_size",
                                          "overlap_comm",
                                          "stage3_prefetch_bucket_size",
                                          "stage3_param_persistence_threshold"};
constexpr std::string_view kOffloadKeys[] = {"device", "nvme_path", "buffer_count", "pin_memory",
                                             "buffer_size"};
constexpr std::string_view kActivationCheckpointingKeys[] = {"policy", "every_n"};
constexpr std::string_view kCheckpointKeys[] = {"every_steps", "keep_last", "async", "on_stop",
                                                "at_end"};
constexpr std::string_view kCommKeys[] = {"timeout_s", "heartbeat_timeout_s",
                                          "heartbeat_interval_s"};

// DeepSpeed settings often found in a ds_config.json that zerotrain does not implement. They are
// errors like any unknown key (nothing is ignored silently), but the message says what they are.
constexpr std::string_view kDeepSpeedOnlyKeys[] = {"allgather_partitions",
                                                   "amp",
                                                   "autotuning",
                                                   "comms_logger",
                                                   "communication_data_type",
                                                   "compression_training",
                                                   "contiguous_gradients",
                                                   "contiguous_memory_optimization",
                                                   "cpu_checkpointing",
                                                   "csv_monitor",
                                                   "data_efficiency",
                                                   "elasticity",
                                                   "flops_profiler",
                                                   "gradient_predivide_factor",
                                                   "number_checkpoints",
                                                   "partition_activations",
                                                   "pipeline",
                                                   "prescale_gradients",
                                                   "profile",
                                                   "reduce_scatter",
                                                   "round_robin_gradients",
                                                   "stage3_gather_16bit_weights_on_model_save",
                                                   "stage3_max_live_parameters",
                                                   "stage3_max_reuse_distance",
                                                   "sub_group_size",
                                                   "synchronize_checkpoint_boundary",
                                                   "tensorboard",
                                                   "wall_clock_breakdown",
                                                   "wandb",
                                                   "zero_allow_untested_optimizer"};

struct SectionKeys {
  std::string_view path;
  KeyList keys;
};

// Every section, so that a key written in the wrong section ("lr" at the top) can be pointed to
// where it belongs.
constexpr SectionKeys kSchema[] = {
    {"", kTopKeys},
    {"model", kModelKeys},
    {"data", kDataKeys},
    {"train", kTrainKeys},
    {"optimizer", kOptimizerKeys},
    {"optimizer.params", kOptimizerParamKeys},
    {"scheduler", kSchedulerKeys},
    {"scheduler.params", kAllSchedulerParamKeys},
    {"fp16", kFp16Keys},
    {"bf16", kBf16Keys},
    {"zero_optimization", kZeroKeys},
    {"zero_optimization.offload_optimizer", kOffloadKeys},
    {"zero_optimization.offload_param", kOffloadKeys},
    {"activation_checkpointing", kActivationCheckpointingKeys},
    {"checkpoint", kCheckpointKeys},
    {"comm", kCommKeys},
};

// ---- Small helpers. ----

std::string join(std::string_view section, std::string_view key) {
  if (section.empty()) return std::string(key);
  return fmt::format("{}.{}", section, key);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The closest of `candidates` to `word` if it is close enough to be a likely typo.
std::optional<std::string_view> closest(std::string_view word, KeyList candidates) {
  const size_t limit = word.size() <= 4 ? 1 : word.size() <= 10 ? 2 : 3;
  std::optional<std::string_view> best;
  size_t best_d = limit + 1;
  for (std::string_view c : candidates) {
    size_t d = edit_distance(lower(word), lower(c));
    // A truncated or over-long name ("train_micro_batch_size") is a typo too.
    if (d > limit && word.size() >= 5 && (c.starts_with(word) || word.starts_with(c))) d = limit;
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best;
}

std::string list_names(KeyList names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// What a node holds, for "expected X, got Y" messages.
std::string describe(const YAML::Node& v) {
  if (!v.IsDefined() || v.IsNull()) return "an empty value";
  if (v.IsSequence()) return "a list";
  if (v.IsMap()) return "a mapping";
  if (v.Tag() == "!") return fmt::format("the quoted string \"{}\"", v.Scalar());
  return fmt::format("'{}'", v.Scalar());
}

bool is_plain_scalar(const YAML::Node& v) { return v.IsScalar() && v.Tag() != "!"; }

int line_of_node(const YAML::Node& v) { return v.Mark().is_null() ? 0 : v.Mark().line + 1; }

template <std::floating_point T>
bool parse_real(std::string_view s, T* out) {
  // from_chars takes no leading '+', which YAML and JSON writers do emit ("1e+20").
  if (s.size() > 1 && s[0] == '+' && s[1] != '-') s.remove_prefix(1);
  T v{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

enum class IntParse { kOk, kNotNumber, kFraction, kTooLarge };

// Integers may be written in exponent form ("5e8"), as DeepSpeed configs commonly do; the value
// must still be whole.
IntParse parse_integer(std::string_view s, int64_t* out) {
  std::string_view t = s;
  if (t.size() > 1 && t[0] == '+' && t[1] != '-') t.remove_prefix(1);
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (end == t.data() + t.size()) {
    if (ec == std::errc()) {
      *out = v;
      return IntParse::kOk;
    }
    if (ec == std::errc::result_out_of_range) return IntParse::kTooLarge;
  }
  double d = 0;
  if (!parse_real(s, &d)) return IntParse::kNotNumber;
  if (d != std::trunc(d)) return IntParse::kFraction;
  if (std::fabs(d) >= 9.2e18) return IntParse::kTooLarge;
  *out = static_cast<int64_t>(d);
  return IntParse::kOk;
}

// A bound at the limit of the field's type is no part of the rule the user needs to read.
std::string range_text(int64_t lo, int64_t hi, int64_t x) {
  if (hi < kIntMax) return fmt::format("must be between {} and {}", lo, hi);
  if (x < lo) return fmt::format("must be >= {}", lo);
  return fmt::format("must be <= {}", hi);
}

struct ConfigError {
  int line;  // 0: none
  std::string text;
  StatusCode code;
};

template <typename E>
struct Choice {
  std::string_view name;
  E value;
};

constexpr Choice<DataFormat> kDataFormats[] = {{"llmc", DataFormat::kLlmc},
                                               {"raw_u16", DataFormat::kRawU16}};
constexpr Choice<WarmupType> kWarmupTypes[] = {{"log", WarmupType::kLog},
                                               {"linear", WarmupType::kLinear}};
constexpr Choice<OffloadDevice> kOffloadDevices[] = {
    {"none", OffloadDevice::kNone}, {"cpu", OffloadDevice::kCpu}, {"nvme", OffloadDevice::kNvme}};
constexpr Choice<CheckpointPolicy> kPolicies[] = {{"none", CheckpointPolicy::kNone},
                                                  {"layer", CheckpointPolicy::kLayer},
                                                  {"every_n", CheckpointPolicy::kEveryN},
                                                  {"selective", CheckpointPolicy::kSelective}};
constexpr Choice<BackendKind> kBackends[] = {{"cpu", BackendKind::kCpu},
                                             {"cuda", BackendKind::kCuda}};

template <typename E, size_t N>
std::string_view choice_name(const Choice<E> (&choices)[N], E value) {
  for (const auto& c : choices) {
    if (c.value == value) return c.name;
  }
  return "?";
}

// ---- The parser. ----

class Parser {
 public:
  Parser(std::string source, const std::string& base_dir) : source_(std::move(source)) {
    std::error_code ec;
    base_dir_ = base_dir.empty() ? fs::current_path(ec) : fs::absolute(base_dir, ec);
    base_dir_ = base_dir_.lexically_normal();
  }

  Result<JobConfig> parse(const std::string& text);

 private:
  // kOptional: may be left out. kDefaulted: left out reads as an empty mapping (its keys then take
  // their defaults or report themselves missing). kRequired: left out is one error.
  enum class Need { kOptional, kDefaulted, kRequired };

  // Errors.
  void fail_at(int line, const std::string& path, std::string problem,
               StatusCode code = StatusCode::kInvalidArgument);
  void fail(const std::string& path, std::string problem,
            StatusCode code = StatusCode::kInvalidArgument) {
    fail_at(line_of(path), path, std::move(problem), code);
  }
  void type_error(const std::string& path, const YAML::Node& v, std::string_view expected);
  Status status() const;
  int line_of(const std::string& path) const {
    auto it = lines_.find(path);
    return it == lines_.end() ? 0 : it->second;
  }
  bool given(const std::string& path) const { return lines_.contains(path); }

  // Structure.
  // Records the line of every known key of `map`; reports unknown and duplicate keys.
  void check_keys(const YAML::Node& map, const std::string& path, KeyList known);
  std::string unknown_key_problem(std::string_view key, const std::string& section,
                                  KeyList known) const;
  std::optional<YAML::Node> section(const YAML::Node& parent, const std::string& parent_path,
                                    std::string_view key, KeyList known, Need need,
                                    std::string_view needs = "");
  bool require(const YAML::Node& map, const std::string& sec, std::string_view key,
               std::string_view what);

  // Typed values: each returns true when the key is present and valid, and fails (recording an
  // error) when it is present and invalid.
  template <std::integral T>
  bool get_int(const YAML::Node& map, const std::string& sec, std::string_view key, int64_t lo,
               int64_t hi, T* out);
  template <std::floating_point T>
  bool get_real(const YAML::Node& map, const std::string& sec, std::string_view key, T* out);
  bool get_bool(const YAML::Node& map, const std::string& sec, std::string_view key, bool* out);
  // The key is present with the value `auto` (the planner chooses it: JobConfig::autos).
  bool is_auto(const YAML::Node& map, std::string_view key) const;
  bool get_string(const YAML::Node& map, const std::string& sec, std::string_view key,
                  std::string* out);
  template <typename E, size_t N>
  bool get_choice(const YAML::Node& map, const std::string& sec, std::string_view key,
                  const Choice<E> (&choices)[N], E* out);
  // A path resolved against base_dir_; `must_exist` checks it names a regular file.
  bool get_path(const YAML::Node& map, const std::string& sec, std::string_view key,
                bool must_exist, std::string_view what, std::string* out);

  // Real-number range checks on a value just read from `path`.
  template <std::floating_point T>
  void check_min(const std::string& path, T v, double lo, bool inclusive);
  template <std::floating_point T>
  void check_unit(const std::string& path, T v, bool hi_inclusive);

  // Sections (phase 1).
  void parse_top(const YAML::Node& root);
  void parse_model(const YAML::Node& root);
  void parse_data(const YAML::Node& root);
  void parse_train(const YAML::Node& root);
  void parse_optimizer(const YAML::Node& root);
  void parse_scheduler(const YAML::Node& root);
  void parse_precision(const YAML::Node& root);
  void parse_zero(const YAML::Node& root);
  void parse_offload(const YAML::Node& zero, std::string_view key, OffloadConfig* out);
  void parse_activation_checkpointing(const YAML::Node& root);
  void parse_checkpoint(const YAML::Node& root);
  void parse_comm(const YAML::Node& root);

  // Combinations (phase 2).
  void check_combinations();

  std::string source_;
  fs::path base_dir_;
  std::vector<ConfigError> errors_;
  std::unordered_map<std::string, int> lines_;  // key path -> 1-based line of the key
  JobConfig cfg_;
};

void Parser::fail_at(int line, const std::string& path, std::string problem, StatusCode code) {
  std::string where = line > 0 ? fmt::format("{}:{}", source_, line) : source_;
  std::string text = path.empty() ? fmt::format("{}: {}", where, problem)
                                  : fmt::format("{}: {}: {}", where, path, problem);
  errors_.push_back({line, std::move(text), code});
}

void Parser::type_error(const std::string& path, const YAML::Node& v, std::string_view expected) {
  std::string problem = fmt::format("expected {}, got {}", expected, describe(v));
  if (v.IsScalar() && v.Scalar() == "auto") {
    problem += " ('auto' is a placeholder the Hugging Face Trainer fills in; write the value)";
  } else if (v.IsScalar() && v.Tag() == "!" && expected != "a string") {
    problem += " (remove the quotes)";
  }
  fail(path, std::move(problem));
}

Status Parser::status() const {
  if (errors_.empty()) return Status::ok();
  std::vector<ConfigError> sorted = errors_;
  // Keyed errors in file order; those without a line (missing sections) after them.
  std::stable_sort(sorted.begin(), sorted.end(), [](const ConfigError& a, const ConfigError& b) {
    const int la = a.line > 0 ? a.line : std::numeric_limits<int>::max();
    const int lb = b.line > 0 ? b.line : std::numeric_limits<int>::max();
    return la < lb;
  });
  std::string text;
  for (const ConfigError& e : sorted) {
    if (!text.empty()) text += '\n';
    text += e.text;
  }
  // "Not found" only when that is the whole story; anything else needs the config edited.
  auto edit = std::find_if(sorted.begin(), sorted.end(),
                           [](const ConfigError& e) { return e.code != StatusCode::kNotFound; });
  return Status(edit == sorted.end() ? StatusCode::kNotFound : edit->code, std::move(text));
}

void Parser::check_keys(const YAML::Node& map, const std::string& path, KeyList known) {
  std::unordered_map<std::string, int> seen;
  for (const auto& entry : map) {
    // A copy: yaml-cpp's iterator hands out a temporary, so a reference to its key would dangle.
    const YAML::Node k = entry.first;
    const int line = line_of_node(k);
    if (!k.IsScalar()) {
      fail_at(line, path, fmt::format("keys must be names, got {}", describe(k)));
      continue;
    }
    const std::string& name = k.Scalar();
    const std::string full = join(path, name);
    if (auto [pos, inserted] = seen.emplace(name, line); !inserted) {
      fail_at(line, full, fmt::format("duplicate key (first given on line {})", pos->second));
      continue;
    }
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      fail_at(line, full, unknown_key_problem(name, path, known));
      continue;
    }
    lines_[full] = line;
  }
}

std::string Parser::unknown_key_problem(std::string_view key, const std::string& section,
                                        KeyList known) const {
  // A parameter of a sibling scheduler is the likely mix-up there; say so rather than "unknown".
  if (section == "scheduler.params" &&
      std::find(std::begin(kAllSchedulerParamKeys), std::end(kAllSchedulerParamKeys), key) !=
          std::end(kAllSchedulerParamKeys)) {
    return fmt::format("not a parameter of {} (it takes: {})", cfg_.scheduler.type,
                       list_names(known));
  }
  if (std::find(std::begin(kDeepSpeedOnlyKeys), std::end(kDeepSpeedOnlyKeys), key) !=
      std::end(kDeepSpeedOnlyKeys)) {
    return "unknown key: a DeepSpeed setting that zerotrain does not implement; remove it";
  }
  if (auto near = closest(key, known)) {
    return fmt::format("unknown key (did you mean '{}'?)", *near);
  }
  for (const SectionKeys& s : kSchema) {
    if (s.path == section) continue;
    if (std::find(s.keys.begin(), s.keys.end(), key) != s.keys.end()) {
      return fmt::format("unknown key ('{}' belongs in {})", key,
                         s.path.empty() ? "the top level" : s.path);
    }
  }
  return fmt::format("unknown key (known keys here: {})", list_names(known));
}

std::optional<YAML::Node> Parser::section(const YAML::Node& parent, const std::string& parent_path,
                                          std::string_view key, KeyList known, Need need,
                                          std::string_view needs) {
  const std::string path = join(parent_path, key);
  YAML::Node v = parent[std::string(key)];
  // A section whose keys are all commented out is null; treat it as left out.
  if (!v.IsDefined() || v.IsNull()) {
    if (need == Need::kDefaulted) return YAML::Node(YAML::NodeType::Map);
    if (need == Need::kRequired) {
      fail(path, fmt::format("missing required section (it needs {})", needs));
    }
    return std::nullopt;
  }
  if (!v.IsMap()) {
    type_error(path, v, "a mapping of keys");
    return std::nullopt;
  }
  check_keys(v, path, known);
  return v;
}

bool Parser::require(const YAML::Node& map, const std::string& sec, std::string_view key,
                     std::string_view what) {
  if (map[std::string(key)].IsDefined()) return true;
  // Point at the innermost enclosing section that was written, if any.
  std::string outer = sec;
  int line = line_of(outer);
  while (line == 0 && outer.find('.') != std::string::npos) {
    outer.resize(outer.rfind('.'));
    line = line_of(outer);
  }
  fail_at(line, join(sec, key), fmt::format("missing required key ({})", what));
  return false;
}

template <std::integral T>
bool Parser::get_int(const YAML::Node& map, const std::string& sec, std::string_view key,
                     int64_t lo, int64_t hi, T* out) {
  const YAML::Node v = map[std::string(key)];
  if (!v.IsDefined()) return false;
  const std::string path = join(sec, key);
  if (!is_plain_scalar(v)) {
    type_error(path, v, "an integer");
    return false;
  }
  int64_t x = 0;
  switch (parse_integer(v.Scalar(), &x)) {
    case IntParse::kOk:
      break;
    case IntParse::kNotNumber:
      type_error(path, v, "an integer");
      return false;
    case IntParse::kFraction:
      fail(path, fmt::format("expected an integer, got '{}' (a fraction)", v.Scalar()));
      return false;
    case IntParse::kTooLarge:
      fail(path, fmt::format("'{}' is out of range ({})", v.Scalar(),
                             range_text(lo, hi, v.Scalar()[0] == '-' ? lo - 1 : hi)));
      return false;
  }
  if (x < lo || x > hi) {
    fail(path, fmt::format("{}, got {}", range_text(lo, hi, x), x));
    return false;
  }
  *out = static_cast<T>(x);
  return true;
}

template <std::floating_point T>
bool Parser::get_real(const YAML::Node& map, const std::string& sec, std::string_view key, T* out) {
  const YAML::Node v = map[std::string(key)];
  if (!v.IsDefined()) return false;
  const std::string path = join(sec, key);
  if (!is_plain_scalar(v) || !parse_real(v.Scalar(), out)) {
    type_error(path, v, "a number");
    return false;
  }
  return true;
}

bool Parser::get_bool(const YAML::Node& map, const std::string& sec, std::string_view key,
                      bool* out) {
  const YAML::Node v = map[std::string(key)];
  if (!v.IsDefined()) return false;
  if (is_plain_scalar(v)) {
    // YAML 1.1's yes/no/on/off too: yaml-cpp and older configs use them.
    const std::string s = lower(v.Scalar());
    if (s == "true" || s == "yes" || s == "on") {
      *out = true;
      return true;
    }
    if (s == "false" || s == "no" || s == "off") {
      *out = false;
      return true;
    }
  }
  type_error(join(sec, key), v, "a boolean (true or false)");
  return false;
}

bool Parser::get_string(const YAML::Node& map, const std::string& sec, std::string_view key,
                        std::string* out) {
  const YAML::Node v = map[std::string(key)];
  if (!v.IsDefined()) return false;
  if (!v.IsScalar()) {
    type_error(join(sec, key), v, "a string");
    return false;
  }
  *out = v.Scalar();
  return true;
}

template <typename E, size_t N>
bool Parser::get_choice(const YAML::Node& map, const std::string& sec, std::string_view key,
                        const Choice<E> (&choices)[N], E* out) {
  std::string s;
  if (!get_string(map, sec, key, &s)) return false;
  std::vector<std::string_view> names;
  for (const auto& c : choices) {
    if (c.name == s) {
      *out = c.value;
      return true;
    }
    names.push_back(c.name);
  }
  std::string problem = fmt::format("'{}' is not supported (supported: {})", s, list_names(names));
  if (auto near = closest(s, names)) problem += fmt::format("; did you mean '{}'?", *near);
  fail(join(sec, key), std::move(problem));
  return false;
}

bool Parser::get_path(const YAML::Node& map, const std::string& sec, std::string_view key,
                      bool must_exist, std::string_view what, std::string* out) {
  std::string raw;
  if (!get_string(map, sec, key, &raw)) return false;
  // An empty path means "not set"; to_yaml writes unset paths that way.
  if (raw.empty()) {
    out->clear();
    return true;
  }
  const std::string path = join(sec, key);
  const fs::path given_path(raw);
  const fs::path resolved =
      (given_path.is_relative() ? base_dir_ / given_path : given_path).lexically_normal();
  *out = resolved.string();
  if (!must_exist) return true;
  const std::string relative_note =
      given_path.is_relative()
          ? fmt::format(" ('{}' is relative to the config's folder {})", raw, base_dir_.string())
          : "";
  std::error_code ec;
  const fs::file_status st = fs::status(resolved, ec);
  if (!fs::exists(st)) {
    fail(path, fmt::format("{} not found: {}{}", what, *out, relative_note), StatusCode::kNotFound);
    return false;
  }
  if (!fs::is_regular_file(st)) {
    fail(path, fmt::format("{} is not a regular file: {}{}", what, *out, relative_note));
    return false;
  }
  return true;
}

// Templates so that a float prints as written ("-0.1"), not widened ("-0.10000000149011612").
template <std::floating_point T>
void Parser::check_min(const std::string& path, T v, double lo, bool inclusive) {
  if (inclusive ? v >= lo : v > lo) return;
  fail(path, fmt::format("must be {} {}, got {}", inclusive ? ">=" : ">", lo, v));
}

template <std::floating_point T>
void Parser::check_unit(const std::string& path, T v, bool hi_inclusive) {
  if (v >= 0 && (hi_inclusive ? v <= 1 : v < 1)) return;
  fail(path, fmt::format("must be in [0, 1{}, got {}", hi_inclusive ? "]" : ")", v));
}

bool Parser::is_auto(const YAML::Node& map, std::string_view key) const {
  const YAML::Node v = map[std::string(key)];
  return v.IsDefined() && is_plain_scalar(v) && v.Scalar() == "auto";
}

void Parser::parse_top(const YAML::Node& root) {
  // Batch sizes fit an int so that products of two of them cannot overflow.
  get_int(root, "", "train_batch_size", 1, kIntMax, &cfg_.train_batch_size);
  if (is_auto(root, "train_micro_batch_size_per_gpu")) {
    cfg_.autos.micro_batch = true;
  } else {
    get_int(root, "", "train_micro_batch_size_per_gpu", 1, kIntMax,
            &cfg_.train_micro_batch_size_per_gpu);
  }
  std::string budget;
  if (get_string(root, "", "memory_budget", &budget)) {
    auto bytes = parse_byte_size(budget, "memory_budget");
    if (!bytes.is_ok())
      fail("memory_budget", bytes.status().message());
    else if (*bytes <= 0)
      fail("memory_budget", fmt::format("must be positive, got '{}'", budget));
    else
      cfg_.memory_budget = *bytes;
  }
  get_int(root, "", "gradient_accumulation_steps", 1, kIntMax, &cfg_.gradient_accumulation_steps);
  if (get_real(root, "", "gradient_clipping", &cfg_.gradient_clipping)) {
    check_min("gradient_clipping", cfg_.gradient_clipping, 0, true);
  }
  get_int(root, "", "steps_per_print", 1, kInt64Max, &cfg_.steps_per_print);
  get_choice(root, "", "backend", kBackends, &cfg_.backend);
}

void Parser::parse_model(const YAML::Node& root) {
  auto m = section(root, "", "model", kModelKeys, Need::kRequired,
                   "vocab_size, block_size, n_layer, n_head and n_embd");
  if (!m) return;
  ModelConfig& mc = cfg_.model;
  if (get_string(*m, "model", "family", &mc.family) && mc.family != "gpt2") {
    // init_from loads Hugging Face GPT-2 tensors, so a family check also covers it.
    fail("model.family", fmt::format("'{}' is not supported (supported: gpt2)", mc.family));
  }
  struct Dim {
    std::string_view key;
    int* out;
    std::string_view what;
  };
  const Dim dims[] = {{"vocab_size", &mc.vocab_size, "number of token ids"},
                      {"block_size", &mc.block_size, "maximum sequence length"},
                      {"n_layer", &mc.n_layer, "number of transformer blocks"},
                      {"n_head", &mc.n_head, "attention heads per block"},
                      {"n_embd", &mc.n_embd, "embedding width"}};
  for (const Dim& d : dims) {
    if (require(*m, "model", d.key, d.what)) get_int(*m, "model", d.key, 1, kIntMax, d.out);
  }
  get_int(*m, "model", "seed", 0, kInt64Max, &mc.seed);
  get_path(*m, "model", "init_from", /*must_exist=*/true, "checkpoint file", &mc.init_from);
}

void Parser::parse_data(const YAML::Node& root) {
  auto d = section(root, "", "data", kDataKeys, Need::kRequired, "path: the token file");
  if (!d) return;
  if (require(*d, "data", "path", "the token file to train on")) {
    if (get_path(*d, "data", "path", /*must_exist=*/true, "token file", &cfg_.data.path) &&
        cfg_.data.path.empty()) {
      fail("data.path", "must name the token file to train on, got an empty string");
    }
  }
  get_choice(*d, "data", "format", kDataFormats, &cfg_.data.format);
  get_bool(*d, "data", "shuffle", &cfg_.data.shuffle);
  get_int(*d, "data", "seed", 0, kInt64Max, &cfg_.data.seed);
  const YAML::Node sched = (*d)["seq_len_schedule"];
  if (!sched.IsDefined() || sched.IsNull()) return;
  const std::string key = "data.seq_len_schedule";
  if (!sched.IsSequence()) {
    type_error(key, sched, "a list of {until_step, seq_len}");
    return;
  }
  for (size_t i = 0; i < sched.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", key, i);
    if (!sched[i].IsMap()) {
      type_error(at, sched[i], "a mapping {until_step, seq_len}");
      continue;
    }
    check_keys(sched[i], at, kSeqLenStageKeys);
    SeqLenStage st;
    if (require(sched[i], at, "until_step", "the last step at this length"))
      get_int(sched[i], at, "until_step", 1, kInt64Max, &st.until_step);
    if (require(sched[i], at, "seq_len", "the sequence length of these steps"))
      get_int(sched[i], at, "seq_len", 1, kIntMax, &st.seq_len);
    cfg_.data.seq_len_schedule.push_back(st);
  }
}

void Parser::parse_train(const YAML::Node& root) {
  auto t = section(root, "", "train", kTrainKeys, Need::kRequired, "steps");
  if (!t) return;
  if (require(*t, "train", "steps", "number of optimizer steps")) {
    get_int(*t, "train", "steps", 1, kInt64Max, &cfg_.train.steps);
  }
}

void Parser::parse_optimizer(const YAML::Node& root) {
  auto o = section(root, "", "optimizer", kOptimizerKeys, Need::kOptional);
  if (!o) return;
  OptimizerConfig& oc = cfg_.optimizer;
  std::string type;
  if (require(*o, "optimizer", "type", kOptimizerTypeList) &&
      get_string(*o, "optimizer", "type", &type)) {
    // DeepSpeed matches optimizer names case-insensitively ("adamw", "AdamW").
    const std::string t = lower(type);
    bool known = false;
    for (std::string_view name : kOptimizerTypes) {
      if (lower(std::string(name)) == t) {
        oc = OptimizerConfig::defaults_for(std::string(name));
        known = true;
      }
    }
    if (!known)
      fail("optimizer.type",
           fmt::format("'{}' is not supported (supported: {})", type, kOptimizerTypeList));
  }
  auto p = section(*o, "optimizer", "params", kOptimizerParamKeys, Need::kOptional);
  if (!p) return;
  const std::string sec = "optimizer.params";
  // Keys of another optimizer are errors, not ignored: "momentum" on AdamW would silently do
  // nothing.
  const bool adafactor = oc.type == "Adafactor", sgd = oc.type == "SGD", lion = oc.type == "Lion";
  auto applies = [&](std::string_view key) {
    if (key == "lr" || key == "weight_decay") return true;
    if (key == "betas") return oc.is_adam() || lion;
    if (key == "eps") return oc.is_adam() || adafactor;
    if (key == "momentum" || key == "dampening" || key == "nesterov") return sgd;
    return adafactor;  // clip_threshold, decay_rate, beta1, scale_parameter, relative_step, ...
  };
  for (const auto& kv : *p) {
    const std::string key = kv.first.Scalar();
    if (!applies(key))
      fail(join(sec, key), fmt::format("does not apply to optimizer.type {}", oc.type));
  }
  if (get_real(*p, sec, "lr", &oc.lr)) check_min(sec + ".lr", oc.lr, 0, true);
  if (get_real(*p, sec, "weight_decay", &oc.weight_decay)) {
    check_min(sec + ".weight_decay", oc.weight_decay, 0, true);
  }
  auto get_pair = [&](std::string_view key, float* a, float* b, bool unit_interval) {
    const YAML::Node v = (*p)[std::string(key)];
    if (!v.IsDefined()) return;
    const std::string path = join(sec, key);
    if (!v.IsSequence() || v.size() != 2) {
      type_error(path, v, "a list of two numbers");
      return;
    }
    float x[2] = {0, 0};
    for (size_t i = 0; i < 2; ++i) {
      const YAML::Node e = v[i];
      const std::string elem = fmt::format("{}[{}]", path, i);
      if (!is_plain_scalar(e) || !parse_real(e.Scalar(), &x[i])) {
        fail_at(line_of_node(e), elem, fmt::format("expected a number, got {}", describe(e)));
      } else if (unit_interval && !(x[i] >= 0 && x[i] < 1)) {
        fail_at(line_of_node(e), elem, fmt::format("must be in [0, 1), got {}", x[i]));
      } else if (!unit_interval && !(x[i] >= 0)) {
        fail_at(line_of_node(e), elem, fmt::format("must be >= 0, got {}", x[i]));
      }
    }
    *a = x[0];
    *b = x[1];
  };
  get_pair("betas", &oc.beta1, &oc.beta2, true);
  if (adafactor) {
    get_pair("eps", &oc.eps, &oc.eps2, false);
    if (get_real(*p, sec, "clip_threshold", &oc.clip_threshold))
      check_min(sec + ".clip_threshold", oc.clip_threshold, 0, false);
    if (get_real(*p, sec, "decay_rate", &oc.decay_rate) && !(oc.decay_rate < 0))
      fail(sec + ".decay_rate", fmt::format("must be < 0, got {}", oc.decay_rate));
    const YAML::Node b1 = (*p)["beta1"];
    if (b1.IsDefined() && !b1.IsNull() && !(is_plain_scalar(b1) && lower(b1.Scalar()) == "null")) {
      if (get_real(*p, sec, "beta1", &oc.beta1)) {
        oc.use_first_moment = true;
        if (!(oc.beta1 >= 0 && oc.beta1 < 1))
          fail(sec + ".beta1", fmt::format("must be in [0, 1) or null, got {}", oc.beta1));
      }
    }
    get_bool(*p, sec, "scale_parameter", &oc.scale_parameter);
    get_bool(*p, sec, "relative_step", &oc.relative_step);
    get_bool(*p, sec, "warmup_init", &oc.warmup_init);
    // Hugging Face refuses the same combinations.
    if (oc.relative_step && given(sec + ".lr"))
      fail(sec + ".lr",
           "cannot be combined with relative_step: true (the step size is "
           "min(1e-2, 1/sqrt(t))); set relative_step: false to use lr");
    if (!oc.relative_step && !given(sec + ".lr"))
      fail(sec + ".relative_step", "false needs optimizer.params.lr (the step size to use)");
    if (oc.warmup_init && !oc.relative_step)
      fail(sec + ".warmup_init", "needs relative_step: true");
  } else if (get_real(*p, sec, "eps", &oc.eps)) {
    check_min(sec + ".eps", oc.eps, 0, false);
  }
  if (sgd) {
    if (get_real(*p, sec, "momentum", &oc.momentum))
      check_min(sec + ".momentum", oc.momentum, 0, true);
    if (get_real(*p, sec, "dampening", &oc.dampening))
      check_min(sec + ".dampening", oc.dampening, 0, true);
    get_bool(*p, sec, "nesterov", &oc.nesterov);
    if (oc.nesterov && (oc.momentum <= 0 || oc.dampening != 0))
      fail(sec + ".nesterov", "needs momentum > 0 and dampening 0 (as torch.optim.SGD)");
  }
}

void Parser::parse_scheduler(const YAML::Node& root) {
  auto s = section(root, "", "scheduler", kSchedulerKeys, Need::kOptional);
  if (!s) return;
  SchedulerConfig& sc = cfg_.scheduler;
  if (!require(*s, "scheduler", "type",
               "WarmupLR, WarmupDecayLR or WarmupCosineLR; leave the "
               "scheduler out for a constant optimizer.params.lr")) {
    return;
  }
  std::string type;
  if (!get_string(*s, "scheduler", "type", &type)) return;
  KeyList keys;
  if (type == "WarmupLR") {
    keys = kWarmupLRKeys;
  } else if (type == "WarmupDecayLR") {
    keys = kWarmupDecayLRKeys;
  } else if (type == "WarmupCosineLR") {
    keys = kWarmupCosineLRKeys;
  } else {
    fail("scheduler.type",
         fmt::format("'{}' is not supported (supported: WarmupLR, WarmupDecayLR, WarmupCosineLR)",
                     type));
    return;
  }
  sc.type = type;
  const std::string sec = "scheduler.params";
  auto p = section(*s, "scheduler", "params", keys, Need::kDefaulted);
  if (!p) return;
  const bool decays = type != "WarmupLR";
  if (decays) {
    if (require(*p, sec, "total_num_steps", "the step at which the schedule ends")) {
      get_int(*p, sec, "total_num_steps", 1, kInt64Max, &sc.total_num_steps);
    }
  }
  get_int(*p, sec, "warmup_num_steps", 0, kInt64Max, &sc.warmup_num_steps);
  get_choice(*p, sec, "warmup_type", kWarmupTypes, &sc.warmup_type);
  if (type == "WarmupCosineLR") {
    if (get_real(*p, sec, "warmup_min_ratio", &sc.warmup_min_ratio)) {
      check_unit(sec + ".warmup_min_ratio", sc.warmup_min_ratio, true);
    }
    if (get_real(*p, sec, "cos_min_ratio", &sc.cos_min_ratio)) {
      check_unit(sec + ".cos_min_ratio", sc.cos_min_ratio, true);
    }
  } else {
    if (get_real(*p, sec, "warmup_min_lr", &sc.warmup_min_lr)) {
      check_min(sec + ".warmup_min_lr", sc.warmup_min_lr, 0, true);
    }
    if (get_real(*p, sec, "warmup_max_lr", &sc.warmup_max_lr)) {
      check_min(sec + ".warmup_max_lr", sc.warmup_max_lr, 0, true);
    }
  }
}

void Parser::parse_precision(const YAML::Node& root) {
  if (auto f = section(root, "", "fp16", kFp16Keys, Need::kOptional)) {
    Fp16Config& fc = cfg_.fp16;
    get_bool(*f, "fp16", "enabled", &fc.enabled);
    if (get_real(*f, "fp16", "loss_scale", &fc.loss_scale)) {
      check_min("fp16.loss_scale", fc.loss_scale, 0, true);
    }
    get_int(*f, "fp16", "initial_scale_power", 0, 64, &fc.initial_scale_power);
    get_int(*f, "fp16", "loss_scale_window", 1, kIntMax, &fc.loss_scale_window);
    get_int(*f, "fp16", "hysteresis", 1, kIntMax, &fc.hysteresis);
    if (get_real(*f, "fp16", "min_loss_scale", &fc.min_loss_scale)) {
      check_min("fp16.min_loss_scale", fc.min_loss_scale, 0, false);
    }
  }
  if (auto b = section(root, "", "bf16", kBf16Keys, Need::kOptional)) {
    get_bool(*b, "bf16", "enabled", &cfg_.bf16.enabled);
  }
}

void Parser::parse_offload(const YAML::Node& zero, std::string_view key, OffloadConfig* out) {
  auto o = section(zero, "zero_optimization", key, kOffloadKeys, Need::kOptional);
  if (!o) return;
  const std::string sec = join("zero_optimization", key);
  get_choice(*o, sec, "device", kOffloadDevices, &out->device);
  // Checked when the state file is created (by the worker, on its own machine): it must exist
  // there and be writable.
  get_path(*o, sec, "nvme_path", /*must_exist=*/false, "", &out->nvme_path);
  get_int(*o, sec, "buffer_count", 1, 1024, &out->buffer_count);
  get_bool(*o, sec, "pin_memory", &out->pin_memory);
  get_int(*o, sec, "buffer_size", 4096, kInt64Max, &out->buffer_size);
}

void Parser::parse_zero(const YAML::Node& root) {
  auto z = section(root, "", "zero_optimization", kZeroKeys, Need::kOptional);
  if (!z) return;
  ZeroConfig& zc = cfg_.zero;
  const std::string sec = "zero_optimization";
  if (is_auto(*z, "stage"))
    cfg_.autos.stage = true;
  else
    get_int(*z, sec, "stage", 0, 3, &zc.stage);
  parse_offload(*z, "offload_optimizer", &zc.offload_optimizer);
  parse_offload(*z, "offload_param", &zc.offload_param);
  get_int(*z, sec, "reduce_bucket_size", 1, kInt64Max, &zc.reduce_bucket_size);
  get_int(*z, sec, "allgather_bucket_size", 1, kInt64Max, &zc.allgather_bucket_size);
  // DeepSpeed's default: overlap at stage 3, where the prefetching depends on it; off otherwise.
  if (!get_bool(*z, sec, "overlap_comm", &zc.overlap_comm)) {
    zc.overlap_comm = zc.stage == 3;
    cfg_.autos.overlap_comm_follows_stage = cfg_.autos.stage;
  }
  get_int(*z, sec, "stage3_prefetch_bucket_size", 0, kInt64Max, &zc.stage3_prefetch_bucket_size);
  get_int(*z, sec, "stage3_param_persistence_threshold", 0, kInt64Max,
          &zc.stage3_param_persistence_threshold);
}

void Parser::parse_activation_checkpointing(const YAML::Node& root) {
  auto a =
      section(root, "", "activation_checkpointing", kActivationCheckpointingKeys, Need::kOptional);
  if (!a) return;
  const std::string sec = "activation_checkpointing";
  if (is_auto(*a, "policy"))
    cfg_.autos.checkpoint_policy = true;
  else
    get_choice(*a, sec, "policy", kPolicies, &cfg_.activation_checkpointing.policy);
  get_int(*a, sec, "every_n", 1, kIntMax, &cfg_.activation_checkpointing.every_n);
}

void Parser::parse_comm(const YAML::Node& root) {
  auto c = section(root, "", "comm", kCommKeys, Need::kOptional);
  if (!c) return;
  if (get_real(*c, "comm", "timeout_s", &cfg_.comm.timeout_s))
    check_min("comm.timeout_s", cfg_.comm.timeout_s, 0, false);
  if (get_real(*c, "comm", "heartbeat_timeout_s", &cfg_.comm.heartbeat_timeout_s))
    check_min("comm.heartbeat_timeout_s", cfg_.comm.heartbeat_timeout_s, 0, false);
  if (get_real(*c, "comm", "heartbeat_interval_s", &cfg_.comm.heartbeat_interval_s))
    check_min("comm.heartbeat_interval_s", cfg_.comm.heartbeat_interval_s, 0, false);
  if (cfg_.comm.heartbeat_interval_s >= cfg_.comm.heartbeat_timeout_s)
    fail("comm.heartbeat_interval_s",
         fmt::format("{} must be shorter than comm.heartbeat_timeout_s ({})",
                     cfg_.comm.heartbeat_interval_s, cfg_.comm.heartbeat_timeout_s));
}

void Parser::parse_checkpoint(const YAML::Node& root) {
  auto c = section(root, "", "checkpoint", kCheckpointKeys, Need::kOptional);
  if (!c) return;
  get_int(*c, "checkpoint", "every_steps", 0, kInt64Max, &cfg_.checkpoint.every_steps);
  get_int(*c, "checkpoint", "keep_last", 0, kIntMax, &cfg_.checkpoint.keep_last);
  get_bool(*c, "checkpoint", "async", &cfg_.checkpoint.async);
  get_bool(*c, "checkpoint", "on_stop", &cfg_.checkpoint.on_stop);
  get_bool(*c, "checkpoint", "at_end", &cfg_.checkpoint.at_end);
}

void Parser::check_combinations() {
  const ModelConfig& m = cfg_.model;
  if (m.n_embd % m.n_head != 0) {
    fail("model.n_embd", fmt::format("{} is not divisible by model.n_head ({}); each head gets "
                                     "n_embd / n_head channels",
                                     m.n_embd, m.n_head));
  }

  // Batch sizes: the world size is not known yet, but the given ones must be able to multiply out
  // (DeepSpeed: train_batch_size = micro * gradient_accumulation_steps * world).
  const int64_t tbs = cfg_.train_batch_size;
  const int64_t micro = cfg_.train_micro_batch_size_per_gpu;
  const int64_t gas = cfg_.gradient_accumulation_steps;
  if (cfg_.autos.micro_batch) {
    // The planner keeps train_batch_size and derives the accumulation from its micro-batch.
    if (tbs == 0)
      fail_at(line_of("train_micro_batch_size_per_gpu"), "train_batch_size",
              "required with train_micro_batch_size_per_gpu: auto (the planner keeps the global "
              "batch fixed and derives gradient_accumulation_steps)");
    if (gas != 0)
      fail("gradient_accumulation_steps",
           "cannot be given with train_micro_batch_size_per_gpu: auto (it is derived: "
           "train_batch_size / (micro-batch x world size))");
  } else if (tbs == 0 && micro == 0) {
    if (gas != 0) {
      fail("gradient_accumulation_steps",
           "does not fix the batch on its own; also give train_micro_batch_size_per_gpu or "
           "train_batch_size");
    } else {
      fail("train_micro_batch_size_per_gpu",
           "missing: give train_micro_batch_size_per_gpu (sequences per rank per micro-step) "
           "and/or train_batch_size (sequences per optimizer step)");
    }
  } else if (tbs != 0 && micro != 0 && gas != 0) {
    if (tbs % (micro * gas) != 0) {
      fail("train_batch_size",
           fmt::format("{} is not a multiple of train_micro_batch_size_per_gpu ({}) x "
                       "gradient_accumulation_steps ({}) = {}; it must equal micro x gas x "
                       "world size",
                       tbs, micro, gas, micro * gas));
    }
  } else if (tbs != 0 && (micro != 0 || gas != 0)) {
    const int64_t other = micro != 0 ? micro : gas;
    if (tbs % other != 0) {
      fail("train_batch_size",
           fmt::format(
               "{} is not a multiple of {} ({}); it must equal micro x gas x world size", tbs,
               micro != 0 ? "train_micro_batch_size_per_gpu" : "gradient_accumulation_steps",
               other));
    }
  }

  // Sequence-length warm-up: increasing steps and lengths, each dividing block_size (the
  // micro-batch grows by block_size / seq_len, so tokens per step stay the same).
  const auto& sched = cfg_.data.seq_len_schedule;
  for (size_t i = 0; i < sched.size(); ++i) {
    const std::string at = fmt::format("data.seq_len_schedule[{}]", i);
    const SeqLenStage& st = sched[i];
    if (st.seq_len <= 0 || st.until_step <= 0) continue;  // already reported
    if (st.seq_len >= m.block_size || m.block_size % st.seq_len != 0)
      fail(at + ".seq_len",
           fmt::format("{} must be shorter than model.block_size ({}) and divide it: the "
                       "micro-batch grows by block_size / seq_len to keep the tokens per step",
                       st.seq_len, m.block_size));
    if (i > 0 && st.until_step <= sched[i - 1].until_step)
      fail(at + ".until_step", fmt::format("{} must be after the previous entry's ({})",
                                           st.until_step, sched[i - 1].until_step));
    if (i > 0 && st.seq_len <= sched[i - 1].seq_len)
      fail(at + ".seq_len", fmt::format("{} must be longer than the previous entry's ({}): a "
                                        "warm-up goes from short to long sequences",
                                        st.seq_len, sched[i - 1].seq_len));
  }

  if (cfg_.fp16.enabled && cfg_.bf16.enabled) {
    fail("bf16.enabled", fmt::format("cannot be true together with fp16.enabled (line {}); choose "
                                     "one mixed-precision mode",
                                     line_of("fp16.enabled")));
  }

  const auto& ac = cfg_.activation_checkpointing;
  const std::string ac_n = "activation_checkpointing.every_n";
  if (cfg_.autos.checkpoint_policy) {
    // every_n may be given: it is the n the planner tries for every_n.
  } else if (ac.policy == CheckpointPolicy::kEveryN && !given(ac_n)) {
    fail_at(line_of("activation_checkpointing.policy"), ac_n,
            "required when policy is every_n (checkpoint every n-th block; n >= 1)");
  } else if (ac.policy != CheckpointPolicy::kEveryN && given(ac_n)) {
    fail(ac_n, fmt::format("applies only to policy every_n (policy is '{}')",
                           choice_name(kPolicies, ac.policy)));
  }

  const ZeroConfig& z = cfg_.zero;
  const std::pair<std::string_view, const OffloadConfig*> offloads[] = {
      {"offload_optimizer", &z.offload_optimizer}, {"offload_param", &z.offload_param}};
  for (const auto& [name, off] : offloads) {
    const std::string sec = join("zero_optimization", name);
    if (off->device == OffloadDevice::kNvme && off->nvme_path.empty()) {
      fail_at(line_of(sec + ".device"), sec + ".nvme_path",
              "required when device is nvme (a folder on a fast local disk)");
    }
    if (off->device == OffloadDevice::kNvme && off->buffer_count < 3) {
      fail(sec + ".buffer_count",
           fmt::format("must be >= 3 with device nvme, got {} (one chunk is read ahead and one "
                       "written back while one is updated)",
                       off->buffer_count));
    }
  }
  // With stage: auto the planner only picks stages the offloads allow.
  if (z.offload_param.device != OffloadDevice::kNone && z.stage < 3 && !cfg_.autos.stage) {
    fail("zero_optimization.offload_param.device",
         fmt::format("'{}' needs zero_optimization.stage 3 (stage is {}): parameters are "
                     "partitioned, and so can be offloaded, only at stage 3",
                     choice_name(kOffloadDevices, z.offload_param.device), z.stage));
  }
  if (z.offload_optimizer.device != OffloadDevice::kNone && z.stage < 1 && !cfg_.autos.stage) {
    fail("zero_optimization.offload_optimizer.device",
         fmt::format("'{}' needs zero_optimization.stage >= 1 (stage is 0): optimizer states are "
                     "partitioned, and so can be offloaded, from stage 1 on",
                     choice_name(kOffloadDevices, z.offload_optimizer.device)));
  }

  if (cfg_.optimizer.type == "Adafactor" && cfg_.optimizer.relative_step &&
      !cfg_.scheduler.type.empty())
    fail("scheduler.type",
         "has no effect: Adafactor with relative_step: true sets its own step "
         "size; remove the scheduler or set optimizer.params.relative_step: false");

  const SchedulerConfig& s = cfg_.scheduler;
  const std::string sp = "scheduler.params";
  if (!s.type.empty()) {
    // DeepSpeed silently raises warmup_num_steps below 2 to 2 (log warmup divides by
    // log(warmup_num_steps)); zerotrain asks for the value it will use instead.
    const std::string warm = sp + ".warmup_num_steps";
    const std::string warm_note = given(warm) ? "" : ", the default";
    if (s.warmup_num_steps < 2) {
      fail(warm, fmt::format("must be >= 2, got {} (DeepSpeed's schedulers warm up for at least "
                             "2 steps)",
                             s.warmup_num_steps));
    } else if (s.type != "WarmupLR" && s.total_num_steps <= s.warmup_num_steps) {
      // The decay phase divides by total_num_steps - warmup_num_steps.
      fail(sp + ".total_num_steps",
           fmt::format("{} must be greater than warmup_num_steps ({}{}); the schedule decays "
                       "after its warmup",
                       s.total_num_steps, s.warmup_num_steps, warm_note));
    }
    if (s.type != "WarmupCosineLR" && s.warmup_min_lr > s.warmup_max_lr) {
      fail(sp + ".warmup_min_lr",
           fmt::format("{} is greater than warmup_max_lr ({})", s.warmup_min_lr, s.warmup_max_lr));
    }
  }
}

Result<JobConfig> Parser::parse(const std::string& text) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    const int line = e.mark.is_null() ? 0 : e.mark.line + 1;
    fail_at(line, "", fmt::format("YAML syntax error: {}", e.msg));
    return status();
  }
  if (docs.empty() || docs[0].IsNull()) {
    fail_at(0, "", "the config is empty (it needs at least model, data, train and a batch size)");
    return status();
  }
  if (docs.size() > 1) {
    fail_at(line_of_node(docs[1]), "",
            fmt::format("{} YAML documents; a config is one document", docs.size()));
    return status();
  }
  const YAML::Node& root = docs[0];
  if (!root.IsMap()) {
    fail_at(line_of_node(root), "",
            fmt::format("expected a mapping of keys at the top level, got {}", describe(root)));
    return status();
  }
  try {
    check_keys(root, "", kTopKeys);
    parse_top(root);
    parse_model(root);
    parse_data(root);
    parse_train(root);
    parse_optimizer(root);
    parse_scheduler(root);
    parse_precision(root);
    parse_zero(root);
    parse_activation_checkpointing(root);
    parse_checkpoint(root);
    parse_comm(root);
    if (errors_.empty()) check_combinations();
  } catch (const YAML::Exception& e) {
    // The walk checks node kinds before using them; reaching here is a bug, but the user still
    // deserves to know which file tripped it.
    fail_at(e.mark.is_null() ? 0 : e.mark.line + 1, "",
            fmt::format("internal error while reading the config: {}", e.what()),
            StatusCode::kInternal);
  }
  if (!errors_.empty()) return status();
  cfg_.source_path = source_;
  return std::move(cfg_);
}

// ---- Emission. ----

// Shortest text that reads back to the same value, always with a '.' so that YAML 1.1 readers
// (PyYAML) see a float rather than a string ("1e-08" is a string there, "1.0e-08" a float).
template <std::floating_point T>
std::string real_text(T v) {
  std::string s = fmt::format("{}", v);
  const size_t e = s.find_first_of("eE");
  if (s.find('.') == std::string::npos) {
    if (e == std::string::npos) {
      s += ".0";
    } else {
      s.insert(e, ".0");
    }
  }
  return s;
}

std::string yaml_quoted(std::string_view s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

std::string_view bool_text(bool b) { return b ? "true" : "false"; }

void emit_offload(std::string& y, std::string_view name, const OffloadConfig& o) {
  auto out = std::back_inserter(y);
  fmt::format_to(out, "  {}:\n", name);
  fmt::format_to(out, "    device: {}\n", choice_name(kOffloadDevices, o.device));
  fmt::format_to(out, "    nvme_path: {}\n", yaml_quoted(o.nvme_path));
  fmt::format_to(out, "    buffer_count: {}\n", o.buffer_count);
  fmt::format_to(out, "    pin_memory: {}\n", bool_text(o.pin_memory));
  fmt::format_to(out, "    buffer_size: {}\n", o.buffer_size);
}

}  // namespace

Result<JobConfig> parse_job_config(const std::string& text, const std::string& source_name,
                                   const std::string& base_dir) {
  return Parser(source_name, base_dir).parse(text);
}

Result<JobConfig> load_job_config(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    return make_error(StatusCode::kNotFound, "config file not found: {}", path);
  }
  if (fs::is_directory(path, ec)) {
    return make_error(StatusCode::kInvalidArgument, "config path is a directory: {}", path);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return make_error(StatusCode::kIoError, "cannot open config file: {}", path);
  std::stringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return make_error(StatusCode::kIoError, "cannot read config file: {}", path);
  const fs::path base = fs::absolute(path, ec).parent_path();
  return parse_job_config(buf.str(), path, base.string());
}

Status resolve_batch_sizes(JobConfig& cfg, int world_size) {
  const std::string where = cfg.source_path.empty() ? "" : cfg.source_path + ": ";
  if (world_size < 1) {
    return make_error(StatusCode::kInvalidArgument, "{}world size must be >= 1, got {}", where,
                      world_size);
  }
  const int64_t world = world_size;
  int64_t tbs = cfg.train_batch_size;
  int64_t micro = cfg.train_micro_batch_size_per_gpu;
  int64_t gas = cfg.gradient_accumulation_steps;
  if (tbs < 0 || micro < 0 || gas < 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "{}batch sizes must be positive (train_batch_size {}, "
                      "train_micro_batch_size_per_gpu {}, gradient_accumulation_steps {})",
                      where, tbs, micro, gas);
  }
  // Products are checked for overflow so that absurd inputs get a message, not a wrapped number.
  auto mul = [](int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); };
  const auto numbers = [&] {
    return fmt::format(
        "train_batch_size {}, train_micro_batch_size_per_gpu {}, "
        "gradient_accumulation_steps {}, world size {}",
        tbs, micro, gas, world);
  };
  int64_t per_step = 0;  // micro * world or gas * world
  if (cfg.autos.micro_batch) {
    if (tbs == 0 || tbs % world != 0)
      return make_error(StatusCode::kInvalidArgument,
                        "{}train_micro_batch_size_per_gpu: auto needs train_batch_size to be a "
                        "multiple of the world size ({})",
                        where, numbers());
    return Status::ok();
  }
  if (tbs == 0 && micro == 0) {
    return make_error(StatusCode::kInvalidArgument,
                      "{}no batch size: give train_micro_batch_size_per_gpu and/or "
                      "train_batch_size (gradient_accumulation_steps {} alone does not fix it)",
                      where, gas);
  }
  if (tbs != 0 && micro != 0 && gas != 0) {
    int64_t product = 0;
    if (!mul(micro, gas, &product) || !mul(product, world, &product) || product != tbs) {
      return make_error(StatusCode::kInvalidArgument,
                        "{}batch sizes do not multiply out: train_batch_size must equal "
                        "train_micro_batch_size_per_gpu x gradient_accumulation_steps x world "
                        "size ({})",
                        where, numbers());
    }
  } else if (tbs != 0 && micro != 0) {
    if (!mul(micro, world, &per_step) || tbs % per_step != 0) {
      return make_error(StatusCode::kInvalidArgument,
                        "{}train_batch_size is not a multiple of train_micro_batch_size_per_gpu x "
                        "world size, so gradient_accumulation_steps cannot be derived ({})",
                        where, numbers());
    }
    gas = tbs / per_step;
  } else if (tbs != 0 && gas != 0) {
    if (!mul(gas, world, &per_step) || tbs % per_step != 0) {
      return make_error(StatusCode::kInvalidArgument,
                        "{}train_batch_size is not a multiple of gradient_accumulation_steps x "
                        "world size, so train_micro_batch_size_per_gpu cannot be derived ({})",
                        where, numbers());
    }
    micro = tbs / per_step;
  } else if (tbs != 0) {
    if (tbs % world != 0) {
      return make_error(StatusCode::kInvalidArgument,
                        "{}train_batch_size is not a multiple of the world size, so "
                        "train_micro_batch_size_per_gpu cannot be derived ({})",
                        where, numbers());
    }
    gas = 1;
    micro = tbs / world;
  } else {  // micro given, with or without gas
    if (gas == 0) gas = 1;
    if (!mul(micro, gas, &tbs) || !mul(tbs, world, &tbs)) {
      return make_error(StatusCode::kInvalidArgument, "{}train_batch_size overflows ({})", where,
                        numbers());
    }
  }
  cfg.train_batch_size = tbs;
  cfg.train_micro_batch_size_per_gpu = micro;
  cfg.gradient_accumulation_steps = gas;
  return Status::ok();
}

std::string to_yaml(const JobConfig& c) {
  std::string y;
  auto out = std::back_inserter(y);
  y += "# zerotrain job config, resolved: every key with its default filled in.\n";
  if (!c.source_path.empty()) fmt::format_to(out, "# from {}\n", c.source_path);
  fmt::format_to(out, "backend: {}\n\n", choice_name(kBackends, c.backend));

  // 0 means "not given, derived from the world size"; writing 0 would not parse back.
  const std::pair<std::string_view, int64_t> batch[] = {
      {"train_batch_size", c.train_batch_size},
      {"train_micro_batch_size_per_gpu", c.train_micro_batch_size_per_gpu},
      {"gradient_accumulation_steps", c.gradient_accumulation_steps}};
  for (const auto& [key, value] : batch) {
    if (key == "train_micro_batch_size_per_gpu" && c.autos.micro_batch) {
      y += "train_micro_batch_size_per_gpu: auto\n";
    } else if (value > 0) {
      fmt::format_to(out, "{}: {}\n", key, value);
    } else {
      fmt::format_to(out, "# {}: derived from the world size\n", key);
    }
  }
  fmt::format_to(out, "gradient_clipping: {}\n", real_text(c.gradient_clipping));
  fmt::format_to(out, "steps_per_print: {}\n", c.steps_per_print);
  if (c.memory_budget > 0) fmt::format_to(out, "memory_budget: {}\n", c.memory_budget);
  y += '\n';

  const ModelConfig& m = c.model;
  y += "model:\n";
  fmt::format_to(out, "  family: {}\n", m.family);
  fmt::format_to(out, "  vocab_size: {}\n", m.vocab_size);
  fmt::format_to(out, "  block_size: {}\n", m.block_size);
  fmt::format_to(out, "  n_layer: {}\n", m.n_layer);
  fmt::format_to(out, "  n_head: {}\n", m.n_head);
  fmt::format_to(out, "  n_embd: {}\n", m.n_embd);
  fmt::format_to(out, "  seed: {}\n", m.seed);
  fmt::format_to(out, "  init_from: {}\n\n", yaml_quoted(m.init_from));

  y += "data:\n";
  fmt::format_to(out, "  path: {}\n", yaml_quoted(c.data.path));
  fmt::format_to(out, "  format: {}\n", choice_name(kDataFormats, c.data.format));
  fmt::format_to(out, "  shuffle: {}\n", bool_text(c.data.shuffle));
  fmt::format_to(out, "  seed: {}\n", c.data.seed);
  if (!c.data.seq_len_schedule.empty()) {
    y += "  seq_len_schedule:\n";
    for (const SeqLenStage& st : c.data.seq_len_schedule)
      fmt::format_to(out, "    - {{until_step: {}, seq_len: {}}}\n", st.until_step, st.seq_len);
  }
  y += '\n';

  fmt::format_to(out, "train:\n  steps: {}\n\n", c.train.steps);

  const OptimizerConfig& o = c.optimizer;
  fmt::format_to(out, "optimizer:\n  type: {}\n  params:\n", o.type);
  if (o.type != "Adafactor" || !o.relative_step)
    fmt::format_to(out, "    lr: {}\n", real_text(o.lr));
  if (o.is_adam() || o.type == "Lion")
    fmt::format_to(out, "    betas: [{}, {}]\n", real_text(o.beta1), real_text(o.beta2));
  if (o.is_adam()) fmt::format_to(out, "    eps: {}\n", real_text(o.eps));
  if (o.type == "Adafactor") {
    fmt::format_to(out, "    eps: [{}, {}]\n", real_text(o.eps), real_text(o.eps2));
    fmt::format_to(out, "    clip_threshold: {}\n", real_text(o.clip_threshold));
    fmt::format_to(out, "    decay_rate: {}\n", real_text(o.decay_rate));
    fmt::format_to(out, "    beta1: {}\n", o.use_first_moment ? real_text(o.beta1) : "null");
    fmt::format_to(out, "    scale_parameter: {}\n", bool_text(o.scale_parameter));
    fmt::format_to(out, "    relative_step: {}\n", bool_text(o.relative_step));
    fmt::format_to(out, "    warmup_init: {}\n", bool_text(o.warmup_init));
  }
  if (o.type == "SGD") {
    fmt::format_to(out, "    momentum: {}\n", real_text(o.momentum));
    fmt::format_to(out, "    dampening: {}\n", real_text(o.dampening));
    fmt::format_to(out, "    nesterov: {}\n", bool_text(o.nesterov));
  }
  fmt::format_to(out, "    weight_decay: {}\n\n", real_text(o.weight_decay));

  const SchedulerConfig& s = c.scheduler;
  if (s.type.empty()) {
    y += "# scheduler: none (constant optimizer.params.lr)\n\n";
  } else {
    fmt::format_to(out, "scheduler:\n  type: {}\n  params:\n", s.type);
    if (s.type != "WarmupLR") fmt::format_to(out, "    total_num_steps: {}\n", s.total_num_steps);
    if (s.type != "WarmupCosineLR") {
      fmt::format_to(out, "    warmup_min_lr: {}\n", real_text(s.warmup_min_lr));
      fmt::format_to(out, "    warmup_max_lr: {}\n", real_text(s.warmup_max_lr));
    } else {
      fmt::format_to(out, "    warmup_min_ratio: {}\n", real_text(s.warmup_min_ratio));
      fmt::format_to(out, "    cos_min_ratio: {}\n", real_text(s.cos_min_ratio));
    }
    fmt::format_to(out, "    warmup_num_steps: {}\n", s.warmup_num_steps);
    fmt::format_to(out, "    warmup_type: {}\n\n", choice_name(kWarmupTypes, s.warmup_type));
  }

  const Fp16Config& f = c.fp16;
  y += "fp16:\n";
  fmt::format_to(out, "  enabled: {}\n", bool_text(f.enabled));
  fmt::format_to(out, "  loss_scale: {}  # 0: dynamic\n", real_text(f.loss_scale));
  fmt::format_to(out, "  initial_scale_power: {}\n", f.initial_scale_power);
  fmt::format_to(out, "  loss_scale_window: {}\n", f.loss_scale_window);
  fmt::format_to(out, "  hysteresis: {}\n", f.hysteresis);
  fmt::format_to(out, "  min_loss_scale: {}\n", real_text(f.min_loss_scale));
  fmt::format_to(out, "bf16:\n  enabled: {}\n\n", bool_text(c.bf16.enabled));

  const ZeroConfig& z = c.zero;
  if (c.autos.stage)
    y += "zero_optimization:\n  stage: auto\n";
  else
    fmt::format_to(out, "zero_optimization:\n  stage: {}\n", z.stage);
  emit_offload(y, "offload_optimizer", z.offload_optimizer);
  emit_offload(y, "offload_param", z.offload_param);
  fmt::format_to(out, "  reduce_bucket_size: {}\n", z.reduce_bucket_size);
  fmt::format_to(out, "  allgather_bucket_size: {}\n", z.allgather_bucket_size);
  // Left out while it follows an `auto` stage, so that it still does when read back.
  if (!c.autos.overlap_comm_follows_stage)
    fmt::format_to(out, "  overlap_comm: {}\n", bool_text(z.overlap_comm));
  fmt::format_to(out, "  stage3_prefetch_bucket_size: {}\n", z.stage3_prefetch_bucket_size);
  fmt::format_to(out, "  stage3_param_persistence_threshold: {}\n\n",
                 z.stage3_param_persistence_threshold);

  const ActivationCheckpointingConfig& a = c.activation_checkpointing;
  if (c.autos.checkpoint_policy) {
    fmt::format_to(out, "activation_checkpointing:\n  policy: auto\n  every_n: {}\n", a.every_n);
  } else {
    fmt::format_to(out, "activation_checkpointing:\n  policy: {}\n",
                   choice_name(kPolicies, a.policy));
    // every_n is accepted only with policy every_n (see check_combinations).
    if (a.policy == CheckpointPolicy::kEveryN) fmt::format_to(out, "  every_n: {}\n", a.every_n);
  }
  y += '\n';

  fmt::format_to(out, "checkpoint:\n  every_steps: {}  # 0: only on request\n",
                 c.checkpoint.every_steps);
  fmt::format_to(out, "  keep_last: {}  # 0: keep all\n", c.checkpoint.keep_last);
  fmt::format_to(out, "  async: {}  # write in the background while training goes on\n",
                 c.checkpoint.async);
  fmt::format_to(out, "  on_stop: {}  # checkpoint when stopped (ztctl stop, SIGTERM)\n",
                 c.checkpoint.on_stop);
  fmt::format_to(out, "  at_end: {}  # checkpoint after the last step\n\n", c.checkpoint.at_end);
  fmt::format_to(out, "comm:\n  timeout_s: {}  # a collective slower than this fails the job\n",
                 real_text(c.comm.timeout_s));
  fmt::format_to(out, "  heartbeat_timeout_s: {}  # a process silent this long is dead\n",
                 real_text(c.comm.heartbeat_timeout_s));
  fmt::format_to(out, "  heartbeat_interval_s: {}\n", real_text(c.comm.heartbeat_interval_s));
  return y;
}

std::string_view offload_device_name(OffloadDevice d) { return choice_name(kOffloadDevices, d); }
std::string_view checkpoint_policy_name(CheckpointPolicy p) { return choice_name(kPolicies, p); }

int seq_len_at(const JobConfig& cfg, int64_t step) {
  for (const SeqLenStage& st : cfg.data.seq_len_schedule)
    if (step <= st.until_step) return st.seq_len;
  return cfg.model.block_size;
}

Result<int64_t> parse_byte_size(const std::string& text, const std::string& what) {
  // Binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) units, case-insensitive; B or none.
  static const std::pair<std::string_view, double> kUnits[] = {{"tib", 1099511627776.0},
                                                               {"gib", 1073741824.0},
                                                               {"mib", 1048576.0},
                                                               {"kib", 1024.0},
                                                               {"tb", 1e12},
                                                               {"gb", 1e9},
                                                               {"mb", 1e6},
                                                               {"kb", 1e3},
                                                               {"t", 1099511627776.0},
                                                               {"g", 1073741824.0},
                                                               {"m", 1048576.0},
                                                               {"k", 1024.0},
                                                               {"b", 1.0}};
  std::string s;
  for (char ch : text)
    if (ch != ' ' && ch != '_')
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  double scale = 1.0;
  for (const auto& [unit, factor] : kUnits) {
    if (s.size() > unit.size() && s.ends_with(unit)) {
      s.resize(s.size() - unit.size());
      scale = factor;
      break;
    }
  }
  double value = 0.0;
  const char* end = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), end, value);
  if (s.empty() || ec != std::errc() || ptr != end || !(value >= 0.0) || value * scale > 9.0e18)
    return make_error(StatusCode::kInvalidArgument,
                      "{}: '{}' is not a size (expected e.g. 8GiB, 512MiB, 2GB or a number of "
                      "bytes)",
                      what, text);
  return static_cast<int64_t>(value * scale);
}

std::string bytes_text(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30)) return fmt::format("{:.2f} GiB", b / 1073741824.0);
  if (bytes >= (int64_t{1} << 20)) return fmt::format("{:.1f} MiB", b / 1048576.0);
  if (bytes >= 1024) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

}  // namespace zt
