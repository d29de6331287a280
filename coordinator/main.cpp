// zt-coordinator: owns a job (see coordinator.h). Start it, then the workers:
//   zt-coordinator --config job.yaml --run-dir runs/x --world 4 &
//   mpirun -np 4 zt-worker --coordinator $(cat runs/x/coordinator.endpoint)   # key from the run
//   dir
// or let `ztctl launch` do both. SIGINT/SIGTERM stop the job after the step in flight.
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "coordinator/coordinator.h"

namespace {
zt::Coordinator* g_coordinator = nullptr;
void on_signal(int) {
  if (g_coordinator) g_coordinator->request_stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "zt-coordinator: owns a zerotrain job: plans it, watches it, writes its run directory"};
  zt::CoordinatorOptions o;
  app.add_option("--config", o.config_path, "job config (YAML or DeepSpeed-style JSON)")
      ->required();
  app.add_option("--run-dir", o.run_dir, "run directory (created if missing)")->required();
  app.add_option("--listen", o.listen, "endpoint to bind (default tcp://127.0.0.1:<free port>)");
  app.add_option("--world", o.world, "number of workers (default: what the first one reports)");
  app.add_option("--register-timeout", o.register_timeout_s,
                 "seconds to wait for every worker to register");
  app.add_option("--steps", o.steps, "override train.steps")->check(CLI::PositiveNumber);
  app.add_flag("--resume", o.resume, "resume from the run directory's latest checkpoint");
  app.add_option("--resume-from", o.resume_from, "resume from this checkpoint directory");
  CLI11_PARSE(app, argc, argv);
  if (o.resume && !o.resume_from.empty()) {
    std::fprintf(stderr, "zt-coordinator: error: give --resume or --resume-from, not both\n");
    return 2;
  }
  try {
    auto c = zt::Coordinator::create(o);
    if (!c.is_ok()) {
      std::fprintf(stderr, "zt-coordinator: error: %s\n", c.status().to_string().c_str());
      return 1;
    }
    g_coordinator = c->get();
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const int rc = (*c)->run();
    g_coordinator = nullptr;
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zt-coordinator: internal error: %s\n", e.what());
    return 2;
  }
}
