// ZeroMQ transport of the control plane, CURVE-encrypted.
//
// The coordinator owns one ServerSocket (ROUTER); workers and ztctl each own a ClientSocket
// (DEALER). Every ZeroMQ frame carries one encoded Envelope (protocol/codec.h).
//
// Note [control plane authentication]
// The coordinator generates a CURVE key pair per job and writes its public key, next to its
// endpoint, into the run directory with mode 0600 (or hands it over in ZT_COORDINATOR_KEY). A
// CURVE client must know the server's public key to complete the handshake, so knowing the key is
// the capability to talk to the job: a peer that cannot read the run dir (another user) or was
// given a wrong key never gets a single message through, and the server never sees one from it.
// There is no per-client allow list (no ZAP handler); clients use fresh ephemeral keys. All
// traffic after the handshake is encrypted and authenticated, so frames cannot be forged or
// replayed by someone on the wire.
//
// Threading: a socket belongs to one thread at a time (ZeroMQ sockets are not thread-safe). Each
// socket owns its own ZeroMQ context, so sockets are independent and destroying one never blocks
// (linger 0: unsent frames are dropped on close).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "protocol/codec.h"
#include "runtime/core/status.h"

namespace zt::protocol {

// ---- keys and the run directory -----------------------------------------------------------------

// Z85 text, 40 characters each (the form ZeroMQ's CURVE options take).
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

// A fresh key pair; kUnsupported when libzmq was built without CURVE.
Result<CurveKeyPair> generate_keypair();

// True for 40 characters of valid Z85.
bool is_valid_curve_key(const std::string& z85);

inline constexpr const char* kEndpointFileName = "coordinator.endpoint";
inline constexpr const char* kKeyFileName = "coordinator.key";
inline constexpr const char* kEndpointEnv = "ZT_COORDINATOR";
inline constexpr const char* kKeyEnv = "ZT_COORDINATOR_KEY";

struct CoordinatorAddress {
  std::string endpoint;    // e.g. tcp://10.0.0.5:41234
  std::string public_key;  // Z85
};

// Writes <run_dir>/coordinator.key and then <run_dir>/coordinator.endpoint, each atomically
// (temp file, fsync, rename) with mode 0600. The key goes first so that whoever sees the
// endpoint file can rely on the key being there. run_dir must exist.
Status write_endpoint_files(const std::string& run_dir, const std::string& endpoint,
                            const std::string& public_key);

// Reads and validates both files (whitespace around the contents ignored). kNotFound names the
// missing file; kDataError a malformed endpoint or key.
Result<CoordinatorAddress> read_endpoint_files(const std::string& run_dir);

// Where to reach the coordinator, first found wins: `endpoint_flag` (a command-line --coordinator)
// and ZT_COORDINATOR for the endpoint, ZT_COORDINATOR_KEY for the key, else the run-dir files.
// run_dir may be empty when the flag/environment give both.
Result<CoordinatorAddress> find_coordinator(const std::string& run_dir,
                                            const std::string& endpoint_flag = "");

// ---- sockets ------------------------------------------------------------------------------------

// ROUTER-assigned identity of a connected client (opaque bytes); valid for one connection.
using PeerId = std::string;

struct Incoming {
  PeerId peer;
  DecodedMessage message;
};

struct ServerOptions {
  // tcp://127.0.0.1:0 picks a free port on loopback; endpoint() tells which. Bind to
  // tcp://0.0.0.0:PORT (or an interface address) for workers on other hosts.
  std::string bind_endpoint = "tcp://127.0.0.1:0";
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  int send_queue_frames = 1000;  // per peer; beyond it send() fails instead of blocking
};

struct ServerStats {
  int64_t received = 0;  // well-formed messages handed out by recv()
  int64_t sent = 0;
  int64_t send_failed = 0;        // peer gone or its queue full
  int64_t dropped_oversized = 0;  // frames over max_frame_bytes
  int64_t dropped_malformed = 0;  // frames decode() refused, multi-part messages
  int64_t dropped_version = 0;    // frames of another protocol version
  int64_t dropped() const { return dropped_oversized + dropped_malformed + dropped_version; }
};

// The coordinator's socket: many clients, replies addressed by PeerId.
class ServerSocket {
 public:
  // Called for every dropped frame with the sender and the reason (the decode error, naming both
  // versions on a mismatch), e.g. to log it or answer with an ErrorReport. The default writes one
  // line to stderr for the first drops and then only every 1000th, so a flood cannot fill a disk.
  using DropHandler = std::function<void(const PeerId& peer, const Status& why)>;

  // Creates the CURVE server with `keys` and binds it. kInvalidArgument for a bad key or
  // endpoint, kIoError when the address is taken.
  static Result<std::unique_ptr<ServerSocket>> bind(const CurveKeyPair& keys,
                                                    const ServerOptions& options = {});
  ~ServerSocket();
  ServerSocket(const ServerSocket&) = delete;
  ServerSocket& operator=(const ServerSocket&) = delete;

  // The bound endpoint with the real port, e.g. tcp://127.0.0.1:41234.
  const std::string& endpoint() const { return endpoint_; }

  // True when a frame is waiting (it may still turn out malformed), after at most `timeout`.
  bool poll(std::chrono::milliseconds timeout);

  // The next well-formed message that arrives within `timeout` (0: only what is already queued).
  // Malformed, oversized and wrong-version frames on the way are dropped, counted and passed to
  // the drop handler. kTimeout when none arrived (or a signal interrupted the wait, so the
  // caller can look at its flags); kIoError when the socket itself failed.
  Result<Incoming> recv(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  // Queues `frame` for `peer` without blocking. kNotFound when the peer is not connected (any
  // more), kTimeout when its queue is full (it stopped reading).
  Status send(const PeerId& peer, const std::string& frame);
  Status send(const PeerId& peer, const Message& msg) { return send(peer, encode(msg)); }

  const ServerStats& stats() const { return stats_; }
  // How long closing the socket may wait to deliver frames still queued (default 0: drop them).
  // Set it before the last messages of a process (aborts, goodbyes) so they are not lost.
  Status set_linger(std::chrono::milliseconds linger);
  void set_drop_handler(DropHandler handler) { drop_handler_ = std::move(handler); }

 private:
  ServerSocket() = default;
  void drop(const PeerId& peer, const Status& why);

  void* ctx_ = nullptr;
  void* socket_ = nullptr;
  std::string endpoint_;
  size_t max_frame_bytes_ = kDefaultMaxFrameBytes;
  ServerStats stats_;
  DropHandler drop_handler_;
};

struct ClientOptions {
  size_t max_frame_bytes = kDefaultMaxFrameBytes;
  int send_queue_frames = 1000;
};

// A worker's or ztctl's socket to the coordinator. Connecting never fails on an unreachable or
// wrong-key server (ZeroMQ connects in the background and retries); that shows as recv() timing
// out, and its message then says whether the CURVE handshake ever completed.
class ClientSocket {
 public:
  static Result<std::unique_ptr<ClientSocket>> connect(const CoordinatorAddress& address,
                                                       const ClientOptions& options = {});
  ~ClientSocket();
  ClientSocket(const ClientSocket&) = delete;
  ClientSocket& operator=(const ClientSocket&) = delete;

  const std::string& endpoint() const { return endpoint_; }

  // Queues a frame without blocking; it is sent once the connection is up. kTimeout when the
  // queue is full.
  Status send(const std::string& frame);
  Status send(const Message& msg) { return send(encode(msg)); }

  // The next message from the coordinator within `timeout`. kTimeout when none came, saying
  // whether the CURVE handshake failed (a key mismatch), never happened (no server there) or
  // completed (the coordinator is just quiet); kDataError for a frame that does not decode.
  Result<DecodedMessage> recv(std::chrono::milliseconds timeout);
  // As ServerSocket::set_linger.
  Status set_linger(std::chrono::milliseconds linger);

  // Whether a CURVE handshake with the server has succeeded so far on this socket.
  bool handshake_completed();

 private:
  ClientSocket() = default;
  void drain_monitor();

  void* ctx_ = nullptr;
  void* socket_ = nullptr;
  void* monitor_ = nullptr;  // PAIR receiving the socket's connection events
  std::string endpoint_;
  size_t max_frame_bytes_ = kDefaultMaxFrameBytes;
  bool handshake_ok_ = false;
  int handshake_failures_ = 0;  // since the last successful handshake
};

}  // namespace zt::protocol
