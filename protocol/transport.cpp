#include "protocol/transport.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

namespace zt::protocol {
namespace {

using Clock = std::chrono::steady_clock;

// Endpoint and key files are a line each; anything bigger is not ours.
constexpr size_t kMaxAddressFileBytes = 4096;
// A bad server (wrong key, not yet up) is retried with a growing interval instead of at 10 Hz.
constexpr int kReconnectIvlMs = 100;
constexpr int kReconnectIvlMaxMs = 2000;
// Default drop logging: the first few, then a sample.
constexpr int64_t kDropLogFirst = 10;
constexpr int64_t kDropLogEvery = 1000;

std::string errno_text(int err) { return std::strerror(err); }
std::string zmq_text() { return zmq_strerror(zmq_errno()); }

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

bool valid_endpoint(const std::string& e) {
  return e.find("://") != std::string::npos && e.find_first_of(" \t\r\n") == std::string::npos;
}

Status set_option(void* socket, int option, const void* value, size_t size, const char* name) {
  if (zmq_setsockopt(socket, option, value, size) != 0) {
    return make_error(StatusCode::kInvalidArgument, "setting ZeroMQ option {}: {}", name,
                      zmq_text());
  }
  return Status::ok();
}
Status set_int(void* socket, int option, int value, const char* name) {
  return set_option(socket, option, &value, sizeof(value), name);
}
Status set_key(void* socket, int option, const std::string& z85, const char* name) {
  return set_option(socket, option, z85.data(), z85.size(), name);
}

// Closes a socket and then its context; ZMQ_BLOCKY off and linger 0 make this immediate.
void close_all(void*& socket, void*& ctx) {
  if (socket) zmq_close(socket);
  if (ctx) zmq_ctx_term(ctx);
  socket = nullptr;
  ctx = nullptr;
}

// Creates `ctx` and a socket of `type` in it; on failure whatever was created is left in
// `ctx`/`socket` for close_all().
Status new_socket(void*& ctx, void*& socket, int type) {
  ctx = zmq_ctx_new();
  if (!ctx) return make_error(StatusCode::kInternal, "creating a ZeroMQ context: {}", zmq_text());
  zmq_ctx_set(ctx, ZMQ_BLOCKY, 0);
  socket = zmq_socket(ctx, type);
  if (!socket) return make_error(StatusCode::kInternal, "creating a ZeroMQ socket: {}", zmq_text());
  return set_int(socket, ZMQ_LINGER, 0, "ZMQ_LINGER");
}

// Waits for input on `socket` up to `timeout_ms` (-1: forever). 1 ready, 0 not, -1 error/EINTR.
int wait_readable(void* socket, long timeout_ms) {
  zmq_pollitem_t item{socket, 0, ZMQ_POLLIN, 0};
  return zmq_poll(&item, 1, timeout_ms);
}

long remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max<long>(0, static_cast<long>(left.count()));
}

// One part of a multi-part message, as bytes; `more` says whether parts follow.
Result<std::string> recv_part(void* socket, bool* more) {
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  if (zmq_msg_recv(&msg, socket, ZMQ_DONTWAIT) < 0) {
    const int err = zmq_errno();
    zmq_msg_close(&msg);
    return make_error(err == EAGAIN ? StatusCode::kTimeout : StatusCode::kIoError,
                      "receiving from ZeroMQ: {}", zmq_strerror(err));
  }
  std::string out(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
  *more = zmq_msg_more(&msg) != 0;
  zmq_msg_close(&msg);
  return out;
}

// Discards the rest of a multi-part message (a DEALER peer may send any number of parts).
int discard_parts(void* socket) {
  int parts = 0;
  for (bool more = true; more; ++parts) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, socket, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&msg);
      break;
    }
    more = zmq_msg_more(&msg) != 0;
    zmq_msg_close(&msg);
  }
  return parts;
}

// ---- files --------------------------------------------------------------------------------------

Status write_file_atomic(const std::string& dir, const std::string& name,
                         const std::string& content) {
  const std::string path = dir + "/" + name;
  const std::string tmp = fmt::format("{}/.{}.tmp.{}", dir, name, ::getpid());
  // O_NOFOLLOW: a planted symlink must not redirect the write.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return make_error(StatusCode::kIoError, "creating {}: {}", tmp, errno_text(errno));
  // open() narrows the mode by the umask and O_TRUNC keeps a stale file's mode: set it exactly.
  bool ok = ::fchmod(fd, 0600) == 0;
  int err = ok ? 0 : errno;
  for (size_t done = 0; ok && done < content.size();) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      err = errno;
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = errno;
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    return make_error(StatusCode::kIoError, "writing {}: {}", path, errno_text(err));
  }
  // The rename is durable only once the directory is synced.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok();
}

Result<std::string> read_small_file(const std::string& path, const std::string& run_dir) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) {
      return make_error(StatusCode::kNotFound,
                        "{} not found: is a coordinator running with --run-dir {}? (or set {} "
                        "and {})",
                        path, run_dir, kEndpointEnv, kKeyEnv);
    }
    return make_error(StatusCode::kIoError, "opening {}: {}", path, errno_text(err));
  }
  std::string out;
  char buf[1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return make_error(StatusCode::kIoError, "reading {}: {}", path, errno_text(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxAddressFileBytes) {
      ::close(fd);
      return make_error(StatusCode::kDataError,
                        "{} is over {} bytes: not a coordinator address file", path,
                        kMaxAddressFileBytes);
    }
  }
  ::close(fd);
  return trim(out);
}

Result<std::string> read_endpoint_file(const std::string& run_dir) {
  const std::string path = run_dir + "/" + kEndpointFileName;
  ZT_ASSIGN_OR_RETURN(std::string endpoint, read_small_file(path, run_dir));
  if (!valid_endpoint(endpoint)) {
    return make_error(StatusCode::kDataError, "{}: '{}' is not a ZeroMQ endpoint", path, endpoint);
  }
  return endpoint;
}

Result<std::string> read_key_file(const std::string& run_dir) {
  const std::string path = run_dir + "/" + kKeyFileName;
  ZT_ASSIGN_OR_RETURN(std::string key, read_small_file(path, run_dir));
  if (!is_valid_curve_key(key)) {
    return make_error(StatusCode::kDataError,
                      "{}: not a CURVE public key (expected 40 Z85 characters)", path);
  }
  return key;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? trim(v) : std::string();
}

}  // namespace

// ---- keys and the run directory -----------------------------------------------------------------

Result<CurveKeyPair> generate_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) {
    return make_error(StatusCode::kUnsupported,
                      "generating a CURVE key pair: {} (libzmq built without CURVE/libsodium?)",
                      zmq_text());
  }
  return CurveKeyPair{std::string(pub, 40), std::string(sec, 40)};
}

bool is_valid_curve_key(const std::string& z85) {
  if (z85.size() != 40) return false;
  uint8_t raw[32];
  return zmq_z85_decode(raw, z85.c_str()) != nullptr;
}

Status write_endpoint_files(const std::string& run_dir, const std::string& endpoint,
                            const std::string& public_key) {
  if (!valid_endpoint(endpoint)) {
    return make_error(StatusCode::kInvalidArgument, "'{}' is not a ZeroMQ endpoint", endpoint);
  }
  if (!is_valid_curve_key(public_key)) {
    return make_error(StatusCode::kInvalidArgument,
                      "not a CURVE public key (expected 40 Z85 characters)");
  }
  struct stat st;
  if (::stat(run_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return make_error(StatusCode::kNotFound, "run directory {} does not exist", run_dir);
  }
  // Key first: a reader that sees the endpoint (the file it waits for) finds the key in place.
  ZT_RETURN_IF_ERROR(write_file_atomic(run_dir, kKeyFileName, public_key + "\n"));
  return write_file_atomic(run_dir, kEndpointFileName, endpoint + "\n");
}

Result<CoordinatorAddress> read_endpoint_files(const std::string& run_dir) {
  CoordinatorAddress a;
  ZT_ASSIGN_OR_RETURN(a.endpoint, read_endpoint_file(run_dir));
  ZT_ASSIGN_OR_RETURN(a.public_key, read_key_file(run_dir));
  return a;
}

Result<CoordinatorAddress> find_coordinator(const std::string& run_dir,
                                            const std::string& endpoint_flag) {
  CoordinatorAddress a;
  a.endpoint = trim(endpoint_flag);
  if (a.endpoint.empty()) a.endpoint = env_or_empty(kEndpointEnv);
  a.public_key = env_or_empty(kKeyEnv);
  if (!a.public_key.empty() && !is_valid_curve_key(a.public_key)) {
    return make_error(StatusCode::kInvalidArgument,
                      "{} is not a CURVE public key (expected 40 Z85 characters, as in the run "
                      "dir's {})",
                      kKeyEnv, kKeyFileName);
  }
  if (!a.endpoint.empty() && !valid_endpoint(a.endpoint)) {
    return make_error(StatusCode::kInvalidArgument,
                      "coordinator endpoint '{}' is not a ZeroMQ endpoint (tcp://HOST:PORT)",
                      a.endpoint);
  }
  if ((a.endpoint.empty() || a.public_key.empty()) && run_dir.empty()) {
    return make_error(StatusCode::kNotFound,
                      "no coordinator address: pass --run-dir DIR of the running job, or set {} "
                      "and {}",
                      kEndpointEnv, kKeyEnv);
  }
  if (a.endpoint.empty()) {
    ZT_ASSIGN_OR_RETURN(a.endpoint, read_endpoint_file(run_dir));
  }
  if (a.public_key.empty()) {
    ZT_ASSIGN_OR_RETURN(a.public_key, read_key_file(run_dir));
  }
  return a;
}

// ---- ServerSocket -------------------------------------------------------------------------------

Result<std::unique_ptr<ServerSocket>> ServerSocket::bind(const CurveKeyPair& keys,
                                                         const ServerOptions& options) {
  if (!is_valid_curve_key(keys.secret_key)) {
    return make_error(StatusCode::kInvalidArgument,
                      "server secret key is not a CURVE key (expected 40 Z85 characters)");
  }
  std::unique_ptr<ServerSocket> s(new ServerSocket());
  s->max_frame_bytes_ = options.max_frame_bytes;
  ZT_RETURN_IF_ERROR(new_socket(s->ctx_, s->socket_, ZMQ_ROUTER));
  void* sock = s->socket_;
  // Unroutable sends fail (EHOSTUNREACH) instead of vanishing, so a reply to a gone worker shows.
  ZT_RETURN_IF_ERROR(set_int(sock, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY"));
  ZT_RETURN_IF_ERROR(set_int(sock, ZMQ_CURVE_SERVER, 1, "ZMQ_CURVE_SERVER"));
  ZT_RETURN_IF_ERROR(set_key(sock, ZMQ_CURVE_SECRETKEY, keys.secret_key, "ZMQ_CURVE_SECRETKEY"));
  ZT_RETURN_IF_ERROR(set_int(sock, ZMQ_SNDHWM, options.send_queue_frames, "ZMQ_SNDHWM"));
  // Two limits: frames up to twice max_frame_bytes arrive and are dropped and counted here (so
  // an operator sees them); beyond that libzmq cuts the connection before buffering the frame,
  // so a peer cannot make the coordinator allocate arbitrary memory.
  const int64_t hard_limit = static_cast<int64_t>(2 * options.max_frame_bytes + 4096);
  ZT_RETURN_IF_ERROR(
      set_option(sock, ZMQ_MAXMSGSIZE, &hard_limit, sizeof(hard_limit), "ZMQ_MAXMSGSIZE"));
  if (zmq_bind(sock, options.bind_endpoint.c_str()) != 0) {
    const int err = zmq_errno();
    return make_error(err == EADDRINUSE || err == EADDRNOTAVAIL ? StatusCode::kIoError
                                                                : StatusCode::kInvalidArgument,
                      "binding the coordinator socket to {}: {}", options.bind_endpoint,
                      zmq_strerror(err));
  }
  char last[256] = {};
  size_t len = sizeof(last);
  if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, last, &len) != 0) {
    return make_error(StatusCode::kInternal, "reading the bound endpoint: {}", zmq_text());
  }
  s->endpoint_ = last;
  return s;
}

ServerSocket::~ServerSocket() { close_all(socket_, ctx_); }

bool ServerSocket::poll(std::chrono::milliseconds timeout) {
  return wait_readable(socket_, static_cast<long>(timeout.count())) > 0;
}

void ServerSocket::drop(const PeerId& peer, const Status& why) {
  if (drop_handler_) {
    drop_handler_(peer, why);
    return;
  }
  const int64_t n = stats_.dropped();
  if (n <= kDropLogFirst || n % kDropLogEvery == 0) {
    std::fprintf(stderr, "zt-protocol: %s dropped frame #%lld from peer %s: %s\n",
                 endpoint_.c_str(), static_cast<long long>(n), hex(peer).c_str(),
                 why.message().c_str());
  }
}

Result<Incoming> ServerSocket::recv(std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const int ready = wait_readable(socket_, remaining_ms(deadline));
    if (ready < 0 && zmq_errno() != EINTR) {
      return make_error(StatusCode::kIoError, "polling the coordinator socket: {}", zmq_text());
    }
    if (ready <= 0) {
      // Also on EINTR: the caller gets control back to look at its signal flags.
      return make_error(StatusCode::kTimeout, "no message within {} ms", timeout.count());
    }
    bool more = false;
    Result<std::string> peer = recv_part(socket_, &more);
    if (!peer.is_ok()) {
      if (peer.status().code() == StatusCode::kTimeout) continue;
      return peer.status();
    }
    if (!more) {  // ROUTER always prefixes the identity; kept for robustness
      ++stats_.dropped_malformed;
      drop(*peer, Status(StatusCode::kDataError, "message without payload"));
      continue;
    }
    Result<std::string> frame = recv_part(socket_, &more);
    if (!frame.is_ok()) return frame.status();
    if (more) {
      const int extra = discard_parts(socket_);
      ++stats_.dropped_malformed;
      drop(*peer,
           make_error(StatusCode::kDataError,
                      "multi-part message ({} parts); one frame per message expected", extra + 1));
      continue;
    }
    if (frame->size() > max_frame_bytes_) {
      ++stats_.dropped_oversized;
      drop(*peer, make_error(StatusCode::kDataError, "frame of {} bytes exceeds the limit of {}",
                             frame->size(), max_frame_bytes_));
      continue;
    }
    Result<DecodedMessage> msg = decode(frame->data(), frame->size(), max_frame_bytes_);
    if (!msg.is_ok()) {
      if (msg.status().code() == StatusCode::kUnsupported) {
        ++stats_.dropped_version;
      } else {
        ++stats_.dropped_malformed;
      }
      drop(*peer, msg.status());
      continue;
    }
    ++stats_.received;
    return Incoming{std::move(*peer), std::move(*msg)};
  }
}

Status ServerSocket::send(const PeerId& peer, const std::string& frame) {
  if (zmq_send(socket_, peer.data(), peer.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
    const int err = zmq_errno();
    ++stats_.send_failed;
    if (err == EHOSTUNREACH) {
      return make_error(StatusCode::kNotFound, "peer {} is not connected", hex(peer));
    }
    if (err == EAGAIN) {
      return make_error(StatusCode::kTimeout, "send queue of peer {} is full: it stopped reading",
                        hex(peer));
    }
    return make_error(StatusCode::kIoError, "sending to peer {}: {}", hex(peer), zmq_strerror(err));
  }
  // With the routing frame accepted, libzmq takes the remaining part unconditionally.
  if (zmq_send(socket_, frame.data(), frame.size(), ZMQ_DONTWAIT) < 0) {
    ++stats_.send_failed;
    return make_error(StatusCode::kIoError, "sending to peer {}: {}", hex(peer), zmq_text());
  }
  ++stats_.sent;
  return Status::ok();
}

// ---- ClientSocket -------------------------------------------------------------------------------

Result<std::unique_ptr<ClientSocket>> ClientSocket::connect(const CoordinatorAddress& address,
                                                            const ClientOptions& options) {
  if (!is_valid_curve_key(address.public_key)) {
    return make_error(StatusCode::kInvalidArgument,
                      "coordinator public key is not a CURVE key (expected 40 Z85 characters)");
  }
  if (!valid_endpoint(address.endpoint)) {
    return make_error(StatusCode::kInvalidArgument, "'{}' is not a ZeroMQ endpoint",
                      address.endpoint);
  }
  // An ephemeral identity: the server authenticates no clients (Note [control plane
  // authentication]), so a fresh key per connection leaks nothing and needs no storage.
  ZT_ASSIGN_OR_RETURN(CurveKeyPair mine, generate_keypair());

  std::unique_ptr<ClientSocket> c(new ClientSocket());
  c->endpoint_ = address.endpoint;
  c->max_frame_bytes_ = options.max_frame_bytes;
  ZT_RETURN_IF_ERROR(new_socket(c->ctx_, c->socket_, ZMQ_DEALER));
  void* sock = c->socket_;
  ZT_RETURN_IF_ERROR(set_key(sock, ZMQ_CURVE_SERVERKEY, address.public_key, "ZMQ_CURVE_SERVERKEY"));
  ZT_RETURN_IF_ERROR(set_key(sock, ZMQ_CURVE_PUBLICKEY, mine.public_key, "ZMQ_CURVE_PUBLICKEY"));
  ZT_RETURN_IF_ERROR(set_key(sock, ZMQ_CURVE_SECRETKEY, mine.secret_key, "ZMQ_CURVE_SECRETKEY"));
  ZT_RETURN_IF_ERROR(set_int(sock, ZMQ_SNDHWM, options.send_queue_frames, "ZMQ_SNDHWM"));
  ZT_RETURN_IF_ERROR(set_int(sock, ZMQ_RECONNECT_IVL, kReconnectIvlMs, "ZMQ_RECONNECT_IVL"));
  ZT_RETURN_IF_ERROR(
      set_int(sock, ZMQ_RECONNECT_IVL_MAX, kReconnectIvlMaxMs, "ZMQ_RECONNECT_IVL_MAX"));
  const int64_t hard_limit = static_cast<int64_t>(2 * options.max_frame_bytes + 4096);
  ZT_RETURN_IF_ERROR(
      set_option(sock, ZMQ_MAXMSGSIZE, &hard_limit, sizeof(hard_limit), "ZMQ_MAXMSGSIZE"));

  // Note [handshake monitor]
  // Watching the handshake lets a timeout say "wrong key" or "no server" instead of just
  // "timeout". Two libzmq traps: the monitor's PAIR drops events while nobody is connected (so
  // attach before connecting), and it sends them blocking, so a full queue would wedge the I/O
  // thread (libzmq#3575). Our end therefore has no receive limit (RCVHWM 0 makes the inproc
  // pipe unbounded) and every send() and recv() drains it, which keeps it a few events long.
  const char* monitor_addr = "inproc://zt-client-monitor";
  if (zmq_socket_monitor(sock, monitor_addr,
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0) {
    c->monitor_ = zmq_socket(c->ctx_, ZMQ_PAIR);
    const bool attached = c->monitor_ != nullptr &&
                          set_int(c->monitor_, ZMQ_LINGER, 0, "ZMQ_LINGER").is_ok() &&
                          set_int(c->monitor_, ZMQ_RCVHWM, 0, "ZMQ_RCVHWM").is_ok() &&
                          zmq_connect(c->monitor_, monitor_addr) == 0;
    if (!attached) {
      // Without our end attached the monitor would block on its first event: stop it.
      zmq_socket_monitor(sock, nullptr, 0);
      if (c->monitor_) zmq_close(c->monitor_);
      c->monitor_ = nullptr;
    }
  }
  if (zmq_connect(sock, address.endpoint.c_str()) != 0) {
    return make_error(StatusCode::kInvalidArgument, "connecting to the coordinator at {}: {}",
                      address.endpoint, zmq_text());
  }
  return c;
}

Status ServerSocket::set_linger(std::chrono::milliseconds linger) {
  return set_int(socket_, ZMQ_LINGER, static_cast<int>(linger.count()), "ZMQ_LINGER");
}

Status ClientSocket::set_linger(std::chrono::milliseconds linger) {
  return set_int(socket_, ZMQ_LINGER, static_cast<int>(linger.count()), "ZMQ_LINGER");
}

ClientSocket::~ClientSocket() {
  if (monitor_) {
    zmq_socket_monitor(socket_, nullptr, 0);
    zmq_close(monitor_);
    monitor_ = nullptr;
  }
  close_all(socket_, ctx_);
}

void ClientSocket::drain_monitor() {
  if (!monitor_) return;
  for (;;) {
    // Each event is two parts: 6 bytes (uint16 event, uint32 value), then the endpoint.
    bool more = false;
    Result<std::string> head = recv_part(monitor_, &more);
    if (!head.is_ok()) return;
    if (more) discard_parts(monitor_);
    if (head->size() < sizeof(uint16_t)) continue;
    uint16_t event = 0;
    std::memcpy(&event, head->data(), sizeof(event));
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      handshake_ok_ = true;
      handshake_failures_ = 0;  // only failures after the last success say something now
    } else {
      ++handshake_failures_;
    }
  }
}

bool ClientSocket::handshake_completed() {
  drain_monitor();
  return handshake_ok_;
}

Status ClientSocket::send(const std::string& frame) {
  drain_monitor();  // Note [handshake monitor]
  if (zmq_send(socket_, frame.data(), frame.size(), ZMQ_DONTWAIT) < 0) {
    const int err = zmq_errno();
    if (err == EAGAIN) {
      return make_error(StatusCode::kTimeout,
                        "send queue to the coordinator at {} is full: it is not reading (or not "
                        "reachable)",
                        endpoint_);
    }
    return make_error(StatusCode::kIoError, "sending to the coordinator at {}: {}", endpoint_,
                      zmq_strerror(err));
  }
  return Status::ok();
}

Result<DecodedMessage> ClientSocket::recv(std::chrono::milliseconds timeout) {
  drain_monitor();  // Note [handshake monitor]
  const Clock::time_point deadline = Clock::now() + timeout;
  for (;;) {
    const int ready = wait_readable(socket_, remaining_ms(deadline));
    if (ready < 0 && zmq_errno() != EINTR) {
      return make_error(StatusCode::kIoError, "polling the socket to {}: {}", endpoint_,
                        zmq_text());
    }
    if (ready <= 0) {
      drain_monitor();
      if (handshake_failures_ > 0) {
        return make_error(StatusCode::kTimeout,
                          "no message from the coordinator at {} within {} ms: the CURVE "
                          "handshake failed {} times, so the server there does not hold the key "
                          "this client was given; check {} in the run dir or {}",
                          endpoint_, timeout.count(), handshake_failures_, kKeyFileName, kKeyEnv);
      }
      if (handshake_ok_) {
        return make_error(StatusCode::kTimeout,
                          "no message from the coordinator at {} within {} ms", endpoint_,
                          timeout.count());
      }
      return make_error(StatusCode::kTimeout,
                        "no message from the coordinator at {} within {} ms, and no CURVE "
                        "handshake completed: is the coordinator running and reachable there "
                        "(and is its key, {} in the run dir or {}, the right one)?",
                        endpoint_, timeout.count(), kKeyFileName, kKeyEnv);
    }
    bool more = false;
    Result<std::string> frame = recv_part(socket_, &more);
    if (!frame.is_ok()) {
      if (frame.status().code() == StatusCode::kTimeout) continue;
      return frame.status();
    }
    if (more) {
      const int extra = discard_parts(socket_);
      return make_error(StatusCode::kDataError,
                        "multi-part message ({} parts) from the coordinator at {}", extra + 1,
                        endpoint_);
    }
    Result<DecodedMessage> msg = decode(frame->data(), frame->size(), max_frame_bytes_);
    if (!msg.is_ok()) {
      return Status(msg.status().code(), fmt::format("message from the coordinator at {}: {}",
                                                     endpoint_, msg.status().message()));
    }
    return msg;
  }
}

}  // namespace zt::protocol
