// zt-coordinator: owns a job (see coordinator.h). Start it, then the workers:
//   zt-coordinator --config job.yaml --run-dir runs/x --world 4 &
//   mpirun -np 4 zt-worker --coordinator $(cat runs/x/coordinator.endpoint)   # key from the run
//   dir
// or let `ztctl launch` do both. SIGINT/SIGTERM stop the job after the step in flight.
// --metrics-port PORT serves the job's live figures to Prometheus on http://127.0.0.1:PORT/metrics.
#include <atomic>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>

#include <CLI/CLI.hpp>

#include "coordinator/coordinator.h"
#include "coordinator/metrics_server.h"

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
  int metrics_port = 0;
  std::string metrics_listen = "127.0.0.1";
  CLI::Option* port_opt =
      app.add_option("--metrics-port", metrics_port,
                     "serve Prometheus metrics on http://ADDR:PORT/metrics (default: off)")
          ->check(CLI::Range(1, 65535));
  app.add_option("--metrics-listen", metrics_listen,
                 "address ADDR for --metrics-port (default 127.0.0.1; 0.0.0.0: every interface)")
      ->needs(port_opt);
  CLI11_PARSE(app, argc, argv);
  if (o.resume && !o.resume_from.empty()) {
    std::fprintf(stderr, "zt-coordinator: error: give --resume or --resume-from, not both\n");
    return 2;
  }
  try {
    // Declaration order is destruction order reversed: the server (and any scrape in flight) is
    // gone before the coordinator it reads.
    std::unique_ptr<zt::Coordinator> coordinator;
    std::atomic<zt::Coordinator*> source{nullptr};
    std::unique_ptr<zt::MetricsServer> metrics;
    if (metrics_port > 0) {
      // Bound before the coordinator opens the run directory: a port that is taken fails the start
      // with nothing written there.
      auto m = zt::MetricsServer::start(metrics_listen, metrics_port,
                                        [&source]() -> std::optional<zt::MetricsSnapshot> {
                                          const zt::Coordinator* c = source.load();
                                          if (c == nullptr) return std::nullopt;
                                          return c->metrics_snapshot();
                                        });
      if (!m.is_ok()) {
        std::fprintf(stderr, "zt-coordinator: error: %s\n", m.status().to_string().c_str());
        return 1;
      }
      metrics = std::move(*m);
    }
    auto c = zt::Coordinator::create(o);
    if (!c.is_ok()) {
      std::fprintf(stderr, "zt-coordinator: error: %s\n", c.status().to_string().c_str());
      return 1;
    }
    coordinator = std::move(*c);
    source.store(coordinator.get());
    if (metrics) {
      std::printf("zt-coordinator: metrics on %s\n", metrics->url().c_str());
      std::fflush(stdout);
    }
    g_coordinator = coordinator.get();
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const int rc = coordinator->run();
    g_coordinator = nullptr;
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zt-coordinator: internal error: %s\n", e.what());
    return 2;
  }
}
