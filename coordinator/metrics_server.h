// Serves coordinator/metrics_exporter.h's text over HTTP for Prometheus: GET /metrics on a thread
// of its own (cpp-httplib), every other path 404. Each scrape asks the source for a snapshot (the
// coordinator's metrics_snapshot(), which only copies what the main loop last published) and
// formats it on the server's thread, so a slow or stuck scraper costs the training job nothing.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "coordinator/metrics_exporter.h"
#include "runtime/core/status.h"

namespace httplib {
class Server;
}

namespace zt {

class MetricsServer {
 public:
  // nullopt: nothing to show yet (the page answers 503).
  using Source = std::function<std::optional<MetricsSnapshot>()>;

  // Listens on address:port (0: any free port) and serves from `source` until destroyed. A port
  // that is taken is an error naming it; the port is exclusively this process's (no SO_REUSEPORT),
  // so a second coordinator on the same port fails instead of silently sharing it.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& address, int port,
                                                      Source source);
  // Stops listening and waits for the requests in flight (each bounded by a short timeout).
  ~MetricsServer();

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  // "http://ADDR:PORT/metrics", for messages.
  std::string url() const;

 private:
  MetricsServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  int port_ = 0;
};

}  // namespace zt
