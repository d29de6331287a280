#include "coordinator/metrics_server.h"

#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <httplib.h>

namespace zt {

namespace {

// httplib's default options add SO_REUSEPORT, which lets a second process bind the same port and
// take half the scrapes. SO_REUSEADDR alone still allows a restart while old connections linger
// in TIME_WAIT.
void exclusive_socket_options(int sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

}  // namespace

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& address, int port,
                                                            Source source) {
  if (port < 0 || port > 65535)
    return make_error(StatusCode::kInvalidArgument, "--metrics-port {}: not a TCP port", port);
  std::unique_ptr<MetricsServer> m(new MetricsServer());
  m->address_ = address;
  m->server_ = std::make_unique<httplib::Server>();
  httplib::Server& svr = *m->server_;
  svr.set_socket_options(exclusive_socket_options);
  // One request per connection and short timeouts: no idle connection holds a thread, and
  // shutdown waits for at most one slow client's timeout, not a keep-alive period.
  svr.set_keep_alive_max_count(1);
  svr.set_read_timeout(2, 0);
  svr.set_write_timeout(2, 0);
  svr.set_payload_max_length(4096);
  // A scrape is cheap: two threads serve any sane number of scrapers, where httplib's default
  // pool would start one per core.
  svr.new_task_queue = [] { return new httplib::ThreadPool(2); };
  svr.Get("/metrics",
          [source = std::move(source)](const httplib::Request&, httplib::Response& res) {
            std::optional<MetricsSnapshot> s = source();
            if (!s) {
              res.status = 503;
              res.set_content("zerotrain: the coordinator is starting\n", "text/plain");
              return;
            }
            res.set_content(format_metrics(*s), "text/plain; version=0.0.4; charset=utf-8");
          });

  errno = 0;
  const int requested = port;
  if (requested == 0)
    port = svr.bind_to_any_port(address);
  else
    port = svr.bind_to_port(address, requested) ? requested : -1;
  if (port <= 0) {
    const int err = errno;
    if (err == EADDRINUSE)
      return make_error(StatusCode::kInvalidArgument,
                        "--metrics-port {}: port {} is already in use on {} (pick another port)",
                        requested, requested, address);
    return make_error(StatusCode::kInvalidArgument, "--metrics-port {}: cannot listen on {}: {}",
                      requested, address, err != 0 ? std::strerror(err) : "unknown address");
  }
  m->port_ = port;
  m->thread_ = std::thread([&svr] { svr.listen_after_bind(); });
  // stop() before the thread has entered its accept loop would be lost and the join would hang:
  // wait until it runs (microseconds).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!svr.is_running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return m;
}

MetricsServer::~MetricsServer() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

std::string MetricsServer::url() const {
  const bool v6 = address_.find(':') != std::string::npos;
  return fmt::format("http://{}{}{}:{}/metrics", v6 ? "[" : "", address_, v6 ? "]" : "", port_);
}

}  // namespace zt
