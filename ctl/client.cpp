#include "ctl/client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace zt::ctl {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Slices of a reply wait: how soon a signal or a vanished coordinator ends it.
constexpr milliseconds kWaitSlice{250};
// How often a wait checks whether anyone still listens at the endpoint.
constexpr milliseconds kProbeEvery{1000};

std::string seconds_text(milliseconds ms) {
  if (ms.count() % 1000 == 0) return fmt::format("{} s", ms.count() / 1000);
  return fmt::format("{:.1f} s", static_cast<double>(ms.count()) / 1000.0);
}

// "(run dir D)", or where the address came from when there is no run dir.
std::string where(const std::string& run_dir) {
  if (run_dir.empty()) return "(no run dir)";
  return fmt::format("(run dir {})", run_dir);
}

// Non-blocking connect to one address; the outcome after at most `timeout`.
EndpointProbe probe_address(const sockaddr* addr, socklen_t len, int family, milliseconds timeout) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return EndpointProbe::kUnknown;
  EndpointProbe result = EndpointProbe::kUnknown;
  if (::connect(fd, addr, len) == 0) {
    result = EndpointProbe::kListening;
  } else if (errno == ECONNREFUSED || errno == ENOENT) {
    result = EndpointProbe::kClosed;
  } else if (errno == EINPROGRESS || errno == EAGAIN) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t err_len = sizeof(err);
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) == 0) {
        if (err == 0) result = EndpointProbe::kListening;
        if (err == ECONNREFUSED) result = EndpointProbe::kClosed;
      }
    }
  }
  ::close(fd);
  return result;
}

EndpointProbe probe_tcp(const std::string& address, milliseconds timeout) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return EndpointProbe::kUnknown;
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  // A wildcard bind is reachable on loopback from this machine.
  if (host == "*" || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &list) != 0) return EndpointProbe::kUnknown;
  EndpointProbe result = EndpointProbe::kUnknown;
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    result = probe_address(a->ai_addr, a->ai_addrlen, a->ai_family, timeout);
    if (result == EndpointProbe::kListening) break;
  }
  ::freeaddrinfo(list);
  return result;
}

EndpointProbe probe_ipc(const std::string& path, milliseconds timeout) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? EndpointProbe::kClosed : EndpointProbe::kUnknown;
  }
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return EndpointProbe::kUnknown;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return probe_address(reinterpret_cast<const sockaddr*>(&addr), sizeof(addr), AF_UNIX, timeout);
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

EndpointProbe probe_endpoint(const std::string& endpoint, milliseconds timeout) {
  if (starts_with(endpoint, "tcp://")) return probe_tcp(endpoint.substr(6), timeout);
  if (starts_with(endpoint, "ipc://")) return probe_ipc(endpoint.substr(6), timeout);
  return EndpointProbe::kUnknown;
}

Result<std::unique_ptr<CtlClient>> CtlClient::open(const std::string& run_dir,
                                                   const std::string& endpoint_flag) {
  Result<protocol::CoordinatorAddress> address = protocol::find_coordinator(run_dir, endpoint_flag);
  if (!address.is_ok()) {
    return Status(address.status().code(), fmt::format("cannot find the coordinator {}: {}",
                                                       where(run_dir), address.status().message()));
  }
  Result<std::unique_ptr<protocol::ClientSocket>> socket =
      protocol::ClientSocket::connect(*address);
  if (!socket.is_ok()) {
    return Status(socket.status().code(),
                  fmt::format("cannot connect to the coordinator at {} {}: {}", address->endpoint,
                              where(run_dir), socket.status().message()));
  }
  std::unique_ptr<CtlClient> client(new CtlClient());
  client->socket_ = std::move(*socket);
  client->endpoint_ = address->endpoint;
  client->run_dir_ = run_dir;
  return client;
}

Result<protocol::CtlReply> CtlClient::request(protocol::CtlRequest::Type type, milliseconds timeout,
                                              const std::function<bool()>& give_up) {
  // A reply that came after an earlier request gave up would otherwise answer this one.
  while (socket_->recv(milliseconds(0)).is_ok()) {
  }
  Status sent = socket_->send(protocol::CtlRequest{type});
  if (!sent.is_ok()) return Status(sent.code(), sent.message() + " " + where(run_dir_));

  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + timeout;
  Clock::time_point next_probe = start + kProbeEvery;
  for (;;) {
    const Clock::time_point now = Clock::now();
    if (now >= deadline) break;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - now);
    Result<protocol::DecodedMessage> in = socket_->recv(std::min(left, kWaitSlice));
    if (in.is_ok()) {
      if (const auto* reply = in->as<protocol::CtlReply>()) return *reply;
      // Only CtlReplies are addressed to a control client; anything else is not for us.
      continue;
    }
    if (in.status().code() != StatusCode::kTimeout) {
      return Status(in.status().code(), in.status().message() + " " + where(run_dir_));
    }
    if (give_up && give_up()) {
      return make_error(StatusCode::kAborted, "interrupted while waiting for the coordinator at {}",
                        endpoint_);
    }
    if (Clock::now() >= next_probe) {
      next_probe = Clock::now() + kProbeEvery;
      if (probe_endpoint(endpoint_, milliseconds(200)) == EndpointProbe::kClosed) {
        return make_error(StatusCode::kNotFound,
                          "no answer from the coordinator at {}: nothing listens there any more, "
                          "so the job is not running {}",
                          endpoint_, where(run_dir_));
      }
    }
  }
  const std::string key_source =
      run_dir_.empty()
          ? std::string(protocol::kKeyEnv)
          : fmt::format("{}/{} or {}", run_dir_, protocol::kKeyFileName, protocol::kKeyEnv);
  return make_error(
      StatusCode::kTimeout,
      "no answer from the coordinator at {} within {}: is the job running? {}\n"
      "  {}",
      endpoint_, seconds_text(timeout), where(run_dir_),
      socket_->handshake_completed()
          ? "the connection is up but the coordinator did not reply: it may be overloaded or hung"
          : fmt::format("no CURVE handshake completed: nothing answers there, or the key ({}) "
                        "is not this coordinator's",
                        key_source));
}

// ---- events.log ---------------------------------------------------------------------------------

uint64_t events_log_size(const std::string& run_dir) {
  if (run_dir.empty()) return 0;
  struct stat st;
  if (::stat((run_dir + "/events.log").c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size);
}

std::string strip_event_timestamp(const std::string& line) {
  const size_t space = line.find(' ');
  if (space == std::string::npos || space == 0) return line;
  const std::string stamp = line.substr(0, space);
  if (stamp.back() != 'Z' || stamp.find('T') == std::string::npos) return line;
  return line.substr(space + 1);
}

JobEndEvent find_job_end(const std::string& run_dir, uint64_t offset) {
  JobEndEvent found;
  if (run_dir.empty()) return found;
  std::ifstream in(run_dir + "/events.log");
  if (!in) return found;
  // A shorter file than before was replaced: everything in it is new.
  if (events_log_size(run_dir) >= offset) in.seekg(static_cast<std::streamoff>(offset));
  std::string line;
  while (std::getline(in, line)) {
    const std::string event = strip_event_timestamp(line);
    if (starts_with(event, "stopped") || starts_with(event, "finished")) {
      found = {JobEnd::kClean, event};
    } else if (starts_with(event, "failed")) {
      found = {JobEnd::kFailed, event};
    }
  }
  return found;
}

std::string last_event(const std::string& run_dir) {
  if (run_dir.empty()) return "";
  std::ifstream in(run_dir + "/events.log");
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return strip_event_timestamp(last);
}

}  // namespace zt::ctl
