// JobConfig: the validated, typed form of a job's YAML/JSON config. Key names and meanings follow
// DeepSpeed's where DeepSpeed has the thing (train_batch_size, optimizer{type,params}, fp16{...},
// zero_optimization{...}); zerotrain's own sections are model, data, train,
// activation_checkpointing, checkpoint and backend. Parsing rejects unknown keys, wrong types,
// out-of-range values and impossible combinations with a message naming the key path and the source
// line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace zt {

struct ModelConfig {
  std::string family = "gpt2";
  int vocab_size = 0;
  int block_size = 0;  // maximum sequence length (rows of wpe); also the training sequence length
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  uint64_t seed = 0;
  std::string init_from;  // optional .safetensors in Hugging Face GPT-2 layout

  bool operator==(const ModelConfig&) const = default;
};

enum class DataFormat { kLlmc, kRawU16 };

// Sequence-length warm-up: optimizer steps up to `until_step` (1-based, inclusive; after the
// previous entry's) train on sequences of `seq_len` tokens, and the micro-batch grows by
// block_size / seq_len so that every step still has the same tokens (Note [sequence-length
// warm-up] in runtime/data/data_loader.h).
struct SeqLenStage {
  int64_t until_step = 0;
  int seq_len = 0;
  bool operator==(const SeqLenStage&) const = default;
};

struct DataConfig {
  std::string path;
  DataFormat format = DataFormat::kLlmc;
  bool shuffle = false;
  uint64_t seed = 0;
  std::vector<SeqLenStage> seq_len_schedule;  // empty: block_size throughout

  bool operator==(const DataConfig&) const = default;
};

// optimizer.type and its hyperparameters (optimizer.params). Which keys apply depends on the type;
// defaults are the type's own (OptimizerConfig::defaults_for), as in the reference implementations:
//   AdamW, Adam            lr 1e-3, betas [0.9, 0.999], eps 1e-8, weight_decay 0.01 (decoupled;
//                          DeepSpeed's Adam defaults to adam_w_mode)
//   AdamW8bit, Adam8bit    as AdamW (bitsandbytes' 8-bit Adam/AdamW both decay decoupled)
//   Adafactor              Hugging Face's defaults: lr none (relative_step), eps [1e-30, 1e-3],
//                          clip_threshold 1.0, decay_rate -0.8, beta1 none, weight_decay 0,
//                          scale_parameter, relative_step true, warmup_init false
//   SGD                    lr 1e-3, momentum 0, dampening 0, weight_decay 0 (L2), nesterov false
//   Lion                   lr 1e-4, betas [0.9, 0.99], weight_decay 0 (decoupled)
struct OptimizerConfig {
  std::string type =
      "AdamW";  // canonical spelling: AdamW Adam AdamW8bit Adam8bit Adafactor SGD Lion
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;  // Adafactor: eps[0], added to the squared gradient
  float weight_decay = 0.01f;
  // Adafactor
  float eps2 = 1e-3f;  // eps[1]: the floor of the parameter scale
  float clip_threshold = 1.0f;
  float decay_rate = -0.8f;
  bool use_first_moment = false;  // beta1 given (not null)
  bool scale_parameter = true;
  bool relative_step = true;
  bool warmup_init = false;
  // SGD
  float momentum = 0.0f;
  float dampening = 0.0f;
  bool nesterov = false;

  static OptimizerConfig defaults_for(const std::string& type);
  bool is_8bit() const { return type == "AdamW8bit" || type == "Adam8bit"; }
  bool is_adam() const { return type == "AdamW" || type == "Adam" || is_8bit(); }
  bool operator==(const OptimizerConfig&) const = default;
};

enum class WarmupType { kLog, kLinear };

// DeepSpeed's scheduler families. `type` empty: constant optimizer.lr.
struct SchedulerConfig {
  std::string type;  // "", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR"
  double warmup_min_lr = 0.0;
  double warmup_max_lr = 0.001;
  int64_t warmup_num_steps = 1000;
  WarmupType warmup_type = WarmupType::kLog;
  int64_t total_num_steps = 0;    // WarmupDecayLR, WarmupCosineLR (required there)
  double warmup_min_ratio = 0.0;  // WarmupCosineLR
  double cos_min_ratio = 0.0001;  // WarmupCosineLR

  bool operator==(const SchedulerConfig&) const = default;
};

struct Fp16Config {
  bool enabled = false;
  double loss_scale = 0.0;  // 0: dynamic
  int initial_scale_power = 16;
  int loss_scale_window = 1000;
  int hysteresis = 2;
  double min_loss_scale = 1.0;

  bool operator==(const Fp16Config&) const = default;
};

struct Bf16Config {
  bool enabled = false;

  bool operator==(const Bf16Config&) const = default;
};

enum class OffloadDevice { kNone, kCpu, kNvme };

struct OffloadConfig {
  OffloadDevice device = OffloadDevice::kNone;
  std::string nvme_path;
  int buffer_count = 4;
  bool pin_memory = false;
  // Elements per array in each streaming buffer (nvme): the I/O block of the optimizer step.
  int64_t buffer_size = 1 << 20;

  bool operator==(const OffloadConfig&) const = default;
};

struct ZeroConfig {
  int stage = 0;
  OffloadConfig offload_optimizer;
  // DeepSpeed keeps one more buffer for parameters (5) than for optimizer states (4).
  OffloadConfig offload_param = {OffloadDevice::kNone, "", 5, false, 100'000'000};
  int64_t reduce_bucket_size = 500'000'000;
  int64_t allgather_bucket_size = 500'000'000;
  bool overlap_comm = false;
  int64_t stage3_prefetch_bucket_size = 50'000'000;
  int64_t stage3_param_persistence_threshold = 100'000;

  bool operator==(const ZeroConfig&) const = default;
};

enum class CheckpointPolicy { kNone, kLayer, kEveryN, kSelective };

struct ActivationCheckpointingConfig {
  CheckpointPolicy policy = CheckpointPolicy::kNone;
  int every_n = 1;  // used by kEveryN

  bool operator==(const ActivationCheckpointingConfig&) const = default;
};

struct CheckpointConfig {
  int64_t every_steps = 0;  // 0: only on request
  int keep_last = 0;        // 0: keep all
  bool async = true;        // snapshot to host memory, write in the background
  bool on_stop = true;      // a stop (ztctl stop, SIGINT/SIGTERM) checkpoints first
  bool at_end = true;       // checkpoint after the last step of train.steps

  bool operator==(const CheckpointConfig&) const = default;
};

struct TrainConfig {
  int64_t steps = 0;

  bool operator==(const TrainConfig&) const = default;
};

// zerotrain's own: how long a collective may take before the job fails (a peer gone or wedged),
// and the control plane's liveness: a worker (or the coordinator) silent for heartbeat_timeout_s
// is declared dead; everyone sends a heartbeat every heartbeat_interval_s.
struct CommConfig {
  double timeout_s = 300.0;
  double heartbeat_timeout_s = 30.0;
  double heartbeat_interval_s = 1.0;
  bool operator==(const CommConfig&) const = default;
};

enum class BackendKind { kCpu, kCuda };

// Keys given as `auto`: the coordinator chooses them when the workers have registered, from the
// memory they report (or memory_budget), with the memory estimator (runtime/plan/auto_plan.h).
// The resolved config (config.resolved.yaml, the plan's configYaml) never holds an `auto`.
struct AutoKeys {
  bool stage = false;              // zero_optimization.stage (may add CPU offload too)
  bool micro_batch = false;        // train_micro_batch_size_per_gpu (accumulation follows)
  bool checkpoint_policy = false;  // activation_checkpointing.policy
  // overlap_comm not given: it follows the chosen stage (on at stage 3, DeepSpeed's default).
  bool overlap_comm_follows_stage = false;

  bool any() const { return stage || micro_batch || checkpoint_policy; }
  bool operator==(const AutoKeys&) const = default;
};

struct JobConfig {
  // Batch: train_batch_size = micro * gradient_accumulation_steps * world. Any two determine the
  // third; resolve_batch_sizes fills the missing one once the world size is known (0 = not given).
  int64_t train_batch_size = 0;
  int64_t train_micro_batch_size_per_gpu = 0;
  int64_t gradient_accumulation_steps = 0;
  double gradient_clipping = 0.0;  // 0: no clipping
  int64_t steps_per_print = 10;
  // Bytes of memory one rank may use (device memory on CUDA, host memory on the CPU backend);
  // 0: what the workers report. Only `auto` keys read it.
  int64_t memory_budget = 0;
  AutoKeys autos;

  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  Fp16Config fp16;
  Bf16Config bf16;
  ZeroConfig zero;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  ActivationCheckpointingConfig activation_checkpointing;
  CheckpointConfig checkpoint;
  CommConfig comm;
  BackendKind backend = BackendKind::kCpu;

  // Where relative paths (data.path, model.init_from, nvme_path) were resolved from.
  std::string source_path;

  // Field-wise (source_path included): checks that to_yaml round-trips and that a resumed job's
  // config is the one it was checkpointed with.
  bool operator==(const JobConfig&) const = default;
};

// Parses and validates YAML or JSON text. `source_name` names the file in messages. Relative paths
// are resolved against `base_dir` (the config file's folder). Data files must exist.
Result<JobConfig> parse_job_config(const std::string& text, const std::string& source_name,
                                   const std::string& base_dir);
// Reads and parses a config file.
Result<JobConfig> load_job_config(const std::string& path);

// "8GiB", "512MiB", "2GB", "1.5TiB" or a plain number of bytes; kInvalidArgument naming `what`.
Result<int64_t> parse_byte_size(const std::string& text, const std::string& what);
// 1.50 GiB, 12.0 MiB, 512 B: for tables and messages.
std::string bytes_text(int64_t bytes);

// The config's own spellings ("none", "cpu", "nvme"; "none", "layer", "every_n", "selective"), for
// messages and tables that should read like the config.
std::string_view offload_device_name(OffloadDevice d);
std::string_view checkpoint_policy_name(CheckpointPolicy p);

// The sequence length optimizer step `step` (1-based) trains on: data.seq_len_schedule's, else
// model.block_size.
int seq_len_at(const JobConfig& cfg, int64_t step);

// Fills in the batch-size key left out (or checks all three) for `world_size` ranks. With
// train_micro_batch_size_per_gpu: auto it only checks that train_batch_size splits over the world
// (the planner picks the micro-batch and the accumulation later).
Status resolve_batch_sizes(JobConfig& cfg, int world_size);

// The resolved config as YAML (every key, defaults filled in), for config.resolved.yaml.
std::string to_yaml(const JobConfig& cfg);

}  // namespace zt
