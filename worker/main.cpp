// zt-worker: executes a training job on one rank.
//
// Until the coordinator lands (control-plane issue), the worker runs a job on its own: it reads
// the config, trains for train.steps, and writes the run directory itself
// (config.resolved.yaml, metrics.jsonl, events.log). SIGINT/SIGTERM stop it after the step in
// flight with everything written so far intact.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "runtime/backend/backend.h"
#include "runtime/config/job_config.h"
#include "runtime/core/check.h"
#include "runtime/train/run_dir.h"
#include "runtime/train/trainer.h"

namespace {

std::atomic<int> g_stop_signal{0};
void on_signal(int sig) { g_stop_signal.store(sig); }

std::string format_eta(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

int fail(const zt::Status& st, zt::RunDir* run_dir) {
  std::fprintf(stderr, "zt-worker: error: %s\n", st.to_string().c_str());
  if (run_dir) (void)run_dir->event("failed: " + st.to_string());
  return 1;
}

int run(int argc, char** argv) {
  CLI::App app{"zt-worker: trains a GPT-2 model on one rank (standalone until the coordinator lands)"};
  std::string config_path, run_dir_path, export_path, export_dtype = "fp32";
  int64_t steps_override = 0;
  app.add_option("--config", config_path, "job config (YAML or DeepSpeed-style JSON)")->required();
  app.add_option("--run-dir", run_dir_path, "run directory (created if missing)")->required();
  app.add_option("--steps", steps_override, "override train.steps");
  app.add_option("--export", export_path,
                 "after training, write the weights as a Hugging Face GPT-2 .safetensors file");
  app.add_option("--export-dtype", export_dtype, "dtype of the export: fp32, bf16 or fp16");
  CLI11_PARSE(app, argc, argv);

  auto cfg_or = zt::load_job_config(config_path);
  if (!cfg_or.is_ok()) return fail(cfg_or.status(), nullptr);
  zt::JobConfig cfg = std::move(cfg_or).value();
  if (steps_override > 0) cfg.train.steps = steps_override;
  if (zt::Status st = zt::resolve_batch_sizes(cfg, 1); !st.is_ok()) return fail(st, nullptr);
  auto export_type = zt::parse_dtype(export_dtype);
  if (!export_type.is_ok()) return fail(export_type.status().with_context("--export-dtype"), nullptr);
  if (cfg.backend != zt::BackendKind::kCpu)
    return fail(zt::make_error(zt::StatusCode::kUnsupported,
                               "backend: cuda is not available in this build's worker yet; use "
                               "backend: cpu"),
                nullptr);

  auto rd = zt::RunDir::open(run_dir_path);
  if (!rd.is_ok()) return fail(rd.status(), nullptr);
  zt::RunDir run_dir = std::move(rd).value();
  if (zt::Status st = run_dir.write_resolved_config(cfg); !st.is_ok()) return fail(st, &run_dir);

  auto backend = zt::make_cpu_backend();
  auto trainer_or = zt::Trainer::create(cfg, *backend);
  if (!trainer_or.is_ok()) return fail(trainer_or.status(), &run_dir);
  auto trainer = std::move(trainer_or).value();
  const auto& layout = trainer->layout();
  (void)run_dir.event(fmt::format("started: {} parameters, world 1, {} steps, dtype {}",
                                  layout.num_parameters, cfg.train.steps,
                                  zt::dtype_name(trainer->dtype())));
  std::printf("zt-worker: GPT-2 %.2fM parameters, %s, micro-batch %lld x %lld accumulation, "
              "%lld steps; run dir %s\n",
              layout.num_parameters / 1e6, zt::dtype_name(trainer->dtype()),
              static_cast<long long>(cfg.train_micro_batch_size_per_gpu),
              static_cast<long long>(cfg.gradient_accumulation_steps),
              static_cast<long long>(cfg.train.steps), run_dir_path.c_str());
  std::fflush(stdout);

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  double elapsed_ms = 0.0;
  const int64_t print_every = std::max<int64_t>(1, cfg.steps_per_print);
  while (trainer->completed_steps() < cfg.train.steps) {
    auto r = trainer->step();
    if (!r.is_ok()) return fail(r.status(), &run_dir);
    if (zt::Status st = run_dir.append_metrics(*r, {r->memory}); !st.is_ok())
      return fail(st, &run_dir);
    elapsed_ms += r->step_ms;
    const int64_t done = r->step;
    if (done % print_every == 0 || done == cfg.train.steps || done == 1) {
      const double eta = elapsed_ms / 1000.0 / static_cast<double>(done) *
                         static_cast<double>(cfg.train.steps - done);
      std::printf("step %lld/%lld | loss %.4f | lr %.3e | grad norm %.3f%s | %.0f tok/s | ETA %s\n",
                  static_cast<long long>(done), static_cast<long long>(cfg.train.steps), r->loss,
                  r->lr, r->grad_norm, r->skipped ? " (skipped: fp16 overflow)" : "",
                  r->tokens_per_s, format_eta(eta).c_str());
      std::fflush(stdout);
    }
    if (int sig = g_stop_signal.load()) {
      (void)run_dir.event(fmt::format("stopped by signal {} after step {}", sig, done));
      std::printf("zt-worker: stopped by signal %d after step %lld\n", sig,
                  static_cast<long long>(done));
      return 0;
    }
  }
  if (!export_path.empty()) {
    if (zt::Status st = trainer->export_safetensors(export_path, export_type.value()); !st.is_ok())
      return fail(st, &run_dir);
    (void)run_dir.event("exported " + export_path);
    std::printf("zt-worker: exported %s\n", export_path.c_str());
  }
  (void)run_dir.event(fmt::format("finished {} steps", trainer->completed_steps()));
  std::printf("zt-worker: done; run dir: %s\n", run_dir_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zt-worker: internal error: %s\n", e.what());
    return 2;
  }
}
