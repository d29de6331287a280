// ztctl: watches and steers a zerotrain job through its coordinator, and launches one-machine jobs.
//   ztctl status --run-dir DIR [--json]     one look at the job
//   ztctl top --run-dir DIR [--interval S]  the same, refreshed until Ctrl-C or the job's end
//   ztctl stop --run-dir DIR                stop after the step in flight; waits for the end
//   ztctl checkpoint --run-dir DIR          checkpoint after the step in flight; waits for the
//   commit ztctl export --checkpoint D --out F     a checkpoint as one Hugging Face safetensors
//   file ztctl verify --checkpoint D | --run-dir DIR   check a checkpoint's files and checksums
//   ztctl launch --config F --np N --run-dir DIR [-- mpirun args]
//   ztctl report --run-dir DIR [-o FILE]     one self-contained HTML page about a run
//   ztctl memory --run-dir DIR [--step N] [--json]  each rank's peaks, the parts of the step that
//                                            set them, and the memory timeline's summary
// The coordinator is found through the run dir (coordinator.endpoint and coordinator.key, which it
// writes), or --coordinator / ZT_COORDINATOR with ZT_COORDINATOR_KEY.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "ctl/commands.h"
#include "ctl/estimate_cmd.h"
#include "ctl/launch.h"
#include "ctl/memory_cmd.h"
#include "ctl/report.h"

namespace {

std::atomic<int> g_interrupts{0};
std::atomic<int> g_last_signal{0};

void on_signal(int sig) {
  g_last_signal.store(sig);
  g_interrupts.fetch_add(1);
}

// Without SA_RESTART, so a blocking wait returns (EINTR) and the command sees the signal at once.
void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(seconds * 1000.0)));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ztctl: watch and steer a zerotrain job through its coordinator, or launch one on this "
      "machine.\nThe coordinator is found through --run-dir DIR (it writes coordinator.endpoint "
      "and coordinator.key there), or --coordinator / ZT_COORDINATOR with ZT_COORDINATOR_KEY.\n"
      "Exit codes: 0 success, 1 failure (message on stderr), 2 bad usage, 130 interrupted."};
  app.require_subcommand(1);

  zt::ctl::CtlOptions ctl;
  double reply_timeout_s = 5.0;
  auto add_target = [&](CLI::App* sub) {
    sub->add_option("--run-dir", ctl.run_dir, "run directory of the job");
    sub->add_option("--coordinator", ctl.endpoint_flag,
                    "coordinator endpoint (tcp://HOST:PORT) instead of the run dir's");
    sub->add_option("--reply-timeout", reply_timeout_s,
                    "seconds to wait for the coordinator's answer")
        ->default_val(5.0)
        ->check(CLI::PositiveNumber);
  };

  CLI::App* status = app.add_subcommand("status", "show the job's state, progress and memory");
  add_target(status);
  bool json = false;
  status->add_flag("--json", json, "one JSON object with every field instead of the table");

  CLI::App* top = app.add_subcommand("top", "the status, refreshed until Ctrl-C or the job ends");
  add_target(top);
  double interval_s = 1.0;
  top->add_option("--interval", interval_s, "seconds between refreshes")
      ->default_val(1.0)
      ->check(CLI::PositiveNumber);

  CLI::App* stop = app.add_subcommand(
      "stop", "stop the job after the step in flight and wait until it has ended");
  add_target(stop);
  double stop_timeout_s = 300.0;
  stop->add_option("--timeout", stop_timeout_s, "seconds to wait for the job to end")
      ->default_val(300.0)
      ->check(CLI::PositiveNumber);

  CLI::App* checkpoint = app.add_subcommand(
      "checkpoint", "ask for a checkpoint after the step in flight and wait until it is committed");
  add_target(checkpoint);
  double checkpoint_timeout_s = 600.0;
  bool checkpoint_no_wait = false;
  checkpoint->add_option("--timeout", checkpoint_timeout_s, "seconds to wait for the commit")
      ->default_val(600.0)
      ->check(CLI::PositiveNumber);
  checkpoint->add_flag("--no-wait", checkpoint_no_wait, "return once the request is accepted");

  std::string export_checkpoint, export_out, export_dtype = "fp32";
  CLI::App* export_cmd = app.add_subcommand(
      "export",
      "write a checkpoint's weights as one Hugging Face GPT-2 .safetensors file (streamed one "
      "tensor at a time; loadable with model.init_from and PyTorch)");
  export_cmd->add_option("--checkpoint", export_checkpoint, "checkpoint directory")->required();
  export_cmd->add_option("--out", export_out, "output .safetensors file")->required();
  export_cmd->add_option("--dtype", export_dtype, "fp32, bf16 or fp16")->default_val("fp32");

  std::string verify_checkpoint, verify_run_dir;
  CLI::App* verify_cmd = app.add_subcommand(
      "verify", "check a checkpoint's files against its manifest (sizes and xxh3 checksums)");
  verify_cmd->add_option("--checkpoint", verify_checkpoint, "checkpoint directory");
  verify_cmd->add_option("--run-dir", verify_run_dir, "use the run directory's latest checkpoint");

  zt::ctl::LaunchOptions launch;
  double start_timeout_s = 60.0, grace_s = 60.0;
  CLI::App* launch_cmd = app.add_subcommand(
      "launch",
      "run a job on this machine: zt-coordinator plus `mpirun -np N zt-worker`, supervised until "
      "both exit; Ctrl-C stops the job after the step in flight. Arguments after `--` go to "
      "mpirun.");
  launch_cmd->add_option("--config", launch.config, "job config (YAML or ds_config.json)")
      ->required();
  launch_cmd->add_option("--np", launch.np, "number of workers")
      ->required()
      ->check(CLI::PositiveNumber);
  launch_cmd->add_option("--run-dir", launch.run_dir, "run directory (created if missing)")
      ->required();
  launch_cmd->add_option("--listen", launch.listen,
                         "endpoint the coordinator binds (default: loopback, a free port)");
  launch_cmd->add_flag("--resume", launch.resume,
                       "continue from the run directory's latest checkpoint");
  launch_cmd->add_option("--resume-from", launch.resume_from,
                         "continue from this checkpoint directory (any world size and stage)");
  launch_cmd
      ->add_option("--metrics-port", launch.metrics_port,
                   "serve Prometheus metrics from the coordinator on this port (off by default)")
      ->check(CLI::Range(1, 65535));
  launch_cmd->add_option("--metrics-listen", launch.metrics_listen,
                         "address of the metrics endpoint (127.0.0.1)");
  launch_cmd->add_option("--steps", launch.steps, "override train.steps")
      ->check(CLI::PositiveNumber);
  launch_cmd->add_option("--coordinator-bin", launch.coordinator_bin,
                         "zt-coordinator to run (default: next to ztctl)");
  launch_cmd->add_option("--worker-bin", launch.worker_bin,
                         "zt-worker to run (default: next to ztctl)");
  launch_cmd->add_option("--mpirun", launch.mpirun, "mpirun to use (default: from PATH)");
  launch_cmd
      ->add_option("--start-timeout", start_timeout_s, "seconds for the coordinator to come up")
      ->default_val(60.0)
      ->check(CLI::PositiveNumber);
  launch_cmd
      ->add_option("--grace", grace_s,
                   "seconds one side (coordinator or workers) may outlive the other "
                   "before it is ended")
      ->default_val(60.0)
      ->check(CLI::PositiveNumber);
  launch_cmd->add_option("mpirun-args", launch.mpirun_args, "extra mpirun arguments (after --)");

  std::string report_run_dir, report_out;
  CLI::App* report_cmd = app.add_subcommand(
      "report",
      "write one self-contained HTML page about a run (charts of loss, learning rate, gradient "
      "norm, throughput and memory; the summary, events and config) from its run directory; "
      "no coordinator needed");
  report_cmd->add_option("--run-dir", report_run_dir, "run directory")->required();
  report_cmd->add_option("-o,--out", report_out, "output file (default: RUN_DIR/report.html)");

  std::string memory_run_dir;
  int64_t memory_step = 0;
  bool memory_json = false;
  CLI::App* memory_cmd = app.add_subcommand(
      "memory",
      "each rank's peak memory by category at a step, the part of the step that set each peak, "
      "and a summary of the step's memory timeline (metrics.jsonl, memory.jsonl); no coordinator "
      "needed");
  memory_cmd->add_option("--run-dir", memory_run_dir, "run directory")->required();
  memory_cmd->add_option("--step", memory_step, "the step (default: the last in metrics.jsonl)")
      ->check(CLI::PositiveNumber);
  memory_cmd->add_flag("--json", memory_json, "one JSON object instead of the table");

  zt::ctl::EstimateArgs estimate;
  CLI::App* estimate_cmd = app.add_subcommand(
      "estimate",
      "will it fit? per-rank memory by category for every ZeRO stage x offload x activation "
      "checkpointing policy, which combinations fit a budget, and what `auto` would choose; reads "
      "only the config");
  estimate_cmd->add_option("--config", estimate.config_path, "job config (YAML)")->required();
  estimate_cmd->add_option("--world", estimate.world, "number of ranks")
      ->required()
      ->check(CLI::PositiveNumber);
  estimate_cmd->add_option("--device-mem", estimate.device_mem,
                           "memory per rank (e.g. 80GiB; on the CPU backend the host memory per "
                           "rank); default: memory_budget in the config");
  estimate_cmd->add_option("--host-mem", estimate.host_mem,
                           "host memory per rank beside each GPU (CUDA; offloaded state)");
  estimate_cmd->add_option("--threads", estimate.cpu_threads,
                           "OpenMP threads per worker (CPU kernels' scratch); default: this "
                           "process's");
  estimate_cmd->add_flag("--json", estimate.json, "every combination as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  install_signal_handlers();
  ctl.reply_timeout = to_ms(reply_timeout_s);
  ctl.interrupts = &g_interrupts;
  try {
    if (status->parsed()) return zt::ctl::run_status(ctl, json, std::cout, std::cerr);
    if (estimate_cmd->parsed()) return zt::ctl::run_estimate(estimate, std::cout, std::cerr);
    if (top->parsed()) {
      zt::ctl::TopOptions t;
      t.interval = to_ms(interval_s);
      t.clear_screen = ::isatty(STDOUT_FILENO) == 1;
      return zt::ctl::run_top(ctl, t, std::cout, std::cerr);
    }
    if (stop->parsed()) return zt::ctl::run_stop(ctl, to_ms(stop_timeout_s), std::cout, std::cerr);
    if (checkpoint->parsed())
      return zt::ctl::run_checkpoint(
          ctl, checkpoint_no_wait ? std::chrono::milliseconds(0) : to_ms(checkpoint_timeout_s),
          std::cout, std::cerr);
    if (export_cmd->parsed())
      return zt::ctl::run_export(export_checkpoint, export_out, export_dtype, std::cout, std::cerr);
    if (verify_cmd->parsed()) {
      if (verify_checkpoint.empty() == verify_run_dir.empty()) {
        std::cerr << "ztctl verify: give --checkpoint DIR or --run-dir DIR\n";
        return 2;
      }
      return zt::ctl::run_verify(verify_checkpoint, verify_run_dir, std::cout, std::cerr);
    }
    if (report_cmd->parsed())
      return zt::ctl::run_report(report_run_dir,
                                 report_out.empty() ? report_run_dir + "/report.html" : report_out,
                                 std::cout, std::cerr);
    if (memory_cmd->parsed())
      return zt::ctl::run_memory(
          memory_run_dir, memory_step > 0 ? std::optional<int64_t>(memory_step) : std::nullopt,
          memory_json, std::cout, std::cerr);
    if (launch_cmd->parsed()) {
      launch.start_timeout = to_ms(start_timeout_s);
      launch.grace = to_ms(grace_s);
      launch.interrupts = &g_interrupts;
      launch.last_signal = &g_last_signal;
      return zt::ctl::run_launch(launch, std::cerr);
    }
  } catch (const std::exception& e) {
    std::cerr << "ztctl: internal error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
