// bench_train_step: tokens/s of zerotrain's training step (forward, backward, AdamW) on this
// machine, and peak activation memory, for a config and an activation-checkpointing policy.
// Prints one JSON object. Driven by tools/bench/run_bench.sh, which puts PyTorch beside it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "runtime/backend/backend.h"
#include "runtime/config/job_config.h"
#include "runtime/train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"bench_train_step"};
  std::string config, policy = "none", data;
  int steps = 5, warmup = 2, every_n = 2;
  int64_t micro = 0;
  app.add_option("--config", config)->required();
  app.add_option("--policy", policy, "none | layer | every_n | selective");
  app.add_option("--every-n", every_n);
  app.add_option("--steps", steps, "timed steps");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--micro-batch", micro, "override train_micro_batch_size_per_gpu");
  app.add_option("--data", data, "override data.path");
  CLI11_PARSE(app, argc, argv);

  auto cfg_or = zt::load_job_config(config);
  if (!cfg_or.is_ok()) {
    std::fprintf(stderr, "%s\n", cfg_or.status().to_string().c_str());
    return 1;
  }
  zt::JobConfig cfg = std::move(cfg_or).value();
  if (!data.empty()) cfg.data.path = data;
  if (micro > 0) {
    cfg.train_micro_batch_size_per_gpu = micro;
    cfg.train_batch_size = 0;
    cfg.gradient_accumulation_steps = 1;
  } else {
    cfg.train_batch_size = 0;  // one micro-batch per step: time the step, not the accumulation
    cfg.gradient_accumulation_steps = 1;
  }
  cfg.scheduler = zt::SchedulerConfig{};
  if (policy == "none") cfg.activation_checkpointing.policy = zt::CheckpointPolicy::kNone;
  else if (policy == "layer") cfg.activation_checkpointing.policy = zt::CheckpointPolicy::kLayer;
  else if (policy == "selective") cfg.activation_checkpointing.policy = zt::CheckpointPolicy::kSelective;
  else if (policy == "every_n") {
    cfg.activation_checkpointing.policy = zt::CheckpointPolicy::kEveryN;
    cfg.activation_checkpointing.every_n = every_n;
  } else {
    std::fprintf(stderr, "unknown policy %s\n", policy.c_str());
    return 1;
  }
  if (zt::Status st = zt::resolve_batch_sizes(cfg, 1); !st.is_ok()) {
    std::fprintf(stderr, "%s\n", st.to_string().c_str());
    return 1;
  }
  auto backend = zt::make_cpu_backend();
  auto tr = zt::Trainer::create(cfg, *backend);
  if (!tr.is_ok()) {
    std::fprintf(stderr, "%s\n", tr.status().to_string().c_str());
    return 1;
  }
  auto& trainer = *tr.value();
  std::vector<double> ms;
  int64_t act_peak = 0, total_peak = 0;
  double loss = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    auto r = trainer.step();
    if (!r.is_ok()) {
      std::fprintf(stderr, "%s\n", r.status().to_string().c_str());
      return 1;
    }
    if (i >= warmup) ms.push_back(r->step_ms);
    act_peak = std::max<int64_t>(act_peak, r->memory.peak[static_cast<size_t>(zt::MemCategory::kActivations)]);
    total_peak = std::max<int64_t>(total_peak, r->memory.total_peak);
    loss = r->loss;
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  const double tokens = static_cast<double>(cfg.train_batch_size) * cfg.model.block_size;
  nlohmann::ordered_json j;
  j["impl"] = "zerotrain";
  j["config"] = config;
  j["policy"] = policy == "every_n" ? "every_n=" + std::to_string(every_n) : policy;
  j["params"] = trainer.layout().num_parameters;
  j["micro_batch"] = cfg.train_micro_batch_size_per_gpu;
  j["seq_len"] = cfg.model.block_size;
  j["step_ms_median"] = median;
  j["step_ms_min"] = ms.front();
  j["tokens_per_s"] = tokens / (median / 1000.0);
  j["activation_peak_bytes"] = act_peak;
  j["total_peak_bytes"] = total_peak;
  j["last_loss"] = loss;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
