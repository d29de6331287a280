// Seeded generators of control messages and of byte-level mutations of their frames, shared by
// tests/cpu/protocol_test.cpp and the fuzz replay driver. Deterministic for a given seed.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "protocol/codec.h"

namespace zt::protocol::testing {

class MessageGen {
 public:
  explicit MessageGen(uint64_t seed) : rng_(seed) {}

  std::mt19937_64& rng() { return rng_; }
  uint64_t u64() { return rng_(); }
  // Uniform in [0, n).
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }
  bool coin() { return (rng_() & 1) != 0; }

  // Values biased to the edges, where encoders go wrong.
  int64_t i64() {
    switch (below(6)) {
      case 0:
        return 0;
      case 1:
        return std::numeric_limits<int64_t>::max();
      case 2:
        return std::numeric_limits<int64_t>::min();
      case 3:
        return -1;
      case 4:
        return static_cast<int64_t>(below(1000));
      default:
        return static_cast<int64_t>(rng_());
    }
  }
  int32_t i32() { return static_cast<int32_t>(i64()); }
  // Never NaN: the round-trip tests compare with ==, which NaN would fail.
  double f64() {
    switch (below(6)) {
      case 0:
        return 0.0;
      case 1:
        return -0.0;
      case 2:
        return std::numeric_limits<double>::denorm_min();
      case 3:
        return std::numeric_limits<double>::max();
      case 4:
        return std::numeric_limits<double>::infinity();
      default: {
        double d;
        do {
          const uint64_t bits = rng_();
          std::memcpy(&d, &bits, sizeof(d));
        } while (!std::isfinite(d));
        return d;
      }
    }
  }
  // Arbitrary bytes, NUL included: Text must carry them unchanged.
  std::string text(size_t max_len = 40) {
    std::string s(below(max_len + 1), '\0');
    for (char& c : s) c = coin() ? static_cast<char>('a' + below(26)) : static_cast<char>(rng_());
    return s;
  }
  MemBytes mem() {
    MemBytes a;
    for (auto& v : a) v = i64();
    return a;
  }
  CommCounts comm() {
    CommCounts a;
    for (auto& v : a) v = i64();
    return a;
  }

  WorkerHello hello() {
    WorkerHello m;
    m.world_size = 1 + static_cast<int32_t>(below(1024));
    m.rank = static_cast<int32_t>(below(static_cast<size_t>(m.world_size)));
    m.host = text();
    m.pid = i64();
    m.backend = static_cast<Backend>(below(2));
    m.device_name = text();
    m.device_memory_bytes = i64();
    m.host_memory_bytes = i64();
    m.nvme_free_bytes = i64();
    return m;
  }
  Plan plan() {
    Plan m;
    m.config_yaml = text(2000);
    m.partition.world_size = i32();
    m.partition.stage = i32();
    m.partition.total = i64();
    m.partition.shard_total = i64();
    m.partition.buckets.resize(below(40));
    for (auto& b : m.partition.buckets) {
      b = BucketSpec{i32(), i32(), i32(), i64(), i64(), i64(), i64(), i64(), coin()};
    }
    m.partition.summary = text(200);
    m.placement.parameters = static_cast<Placement>(below(3));
    m.placement.gradients = static_cast<Placement>(below(3));
    m.placement.optimizer_states = static_cast<Placement>(below(3));
    m.placement.nvme_path = text();
    m.run_dir = text();
    m.start_step = i64();
    m.resume_from = text();
    return m;
  }
  Heartbeat heartbeat() { return Heartbeat{i32(), i64(), i64(), (i32() & 1) != 0}; }
  StepReport step_report() {
    StepReport m;
    m.rank = i32();
    m.step = i64();
    m.loss_sum = f64();
    m.token_count = i64();
    m.grad_norm_sq_part = f64();
    m.overflow = coin();
    m.step_ms = f64();
    m.lr = f64();
    m.loss_scale = f64();
    m.memory_current = mem();
    m.memory_peak = mem();
    m.memory_total_current = i64();
    m.memory_total_peak = i64();
    m.comm_bytes = comm();
    m.comm_calls = comm();
    m.comm_busy_ms = f64();
    m.comm_blocked_ms = f64();
    m.checkpoint_ms = f64();
    for (auto& t : m.time_ms) t = f64();
    for (auto& p : m.peak_phase) p = text();
    m.total_peak_phase = text();
    m.memory_timeline.resize(below(8));
    for (auto& p : m.memory_timeline) p = MemoryPhase{text(), mem(), mem()};
    return m;
  }
  Command command() {
    Command m;
    m.type = static_cast<Command::Type>(below(3));
    m.at_step = i64();
    if (m.type == Command::Type::kAbort) m.reason = text();  // only aborts carry a reason
    return m;
  }
  CheckpointAck checkpoint_ack() {
    CheckpointAck m;
    m.rank = i32();
    m.step = i64();
    m.files.resize(below(10));
    for (auto& f : m.files) f = CheckpointFile{text(), u64(), u64()};
    m.applied_steps = i64();
    m.loss_scale = f64();
    m.loss_scale_good_steps = i64();
    m.loss_scale_hysteresis_left = i32();
    m.next_sequence = i64();
    m.write_ms = f64();
    m.blocked_ms = f64();
    return m;
  }
  ErrorReport error() { return ErrorReport{i32(), text(), text(500)}; }
  CtlRequest ctl_request() { return CtlRequest{static_cast<CtlRequest::Type>(below(3))}; }
  CtlReply ctl_reply() {
    CtlReply m;
    m.ok = coin();
    m.message = text(100);
    m.state = static_cast<JobState>(below(6));
    m.step = i64();
    m.total_steps = i64();
    m.world_size = i32();
    m.loss = f64();
    m.tokens_per_sec = f64();
    m.eta_seconds = f64();
    m.ranks.resize(below(9));
    for (auto& r : m.ranks) r = RankMemory{i32(), text(), mem(), mem(), i64()};
    m.last_checkpoint_step = i64();
    m.last_checkpoint_dir = text();
    return m;
  }

  Message of_kind(MessageKind k) {
    switch (k) {
      case MessageKind::kWorkerHello:
        return hello();
      case MessageKind::kPlan:
        return plan();
      case MessageKind::kHeartbeat:
        return heartbeat();
      case MessageKind::kStepReport:
        return step_report();
      case MessageKind::kCommand:
        return command();
      case MessageKind::kCheckpointAck:
        return checkpoint_ack();
      case MessageKind::kError:
        return error();
      case MessageKind::kCtlRequest:
        return ctl_request();
      case MessageKind::kCtlReply:
        return ctl_reply();
    }
    return heartbeat();
  }
  Message any() { return of_kind(static_cast<MessageKind>(below(kNumMessageKinds))); }

  // One to four byte-level edits of `frame`, of the kinds that find decoder bugs: bit flips,
  // "interesting" words over pointers and sizes, truncation, extension, splicing.
  std::string mutate(std::string frame) {
    const size_t edits = 1 + below(4);
    for (size_t e = 0; e < edits; ++e) {
      switch (below(7)) {
        case 0:  // flip a bit
          if (!frame.empty()) frame[below(frame.size())] ^= static_cast<char>(1u << below(8));
          break;
        case 1:  // random byte
          if (!frame.empty()) frame[below(frame.size())] = static_cast<char>(rng_());
          break;
        case 2: {  // an interesting 32-bit value at a 4-byte boundary (sizes, offsets, counts)
          static constexpr uint32_t kInteresting[] = {
              0u, 1u, 0x7fffffffu, 0x80000000u, 0xffffffffu, 0xfffffffcu, 0x10000u, 0x1fffffffu};
          if (frame.size() >= 4) {
            const size_t at = below(frame.size() / 4) * 4;
            const uint32_t v = kInteresting[below(std::size(kInteresting))];
            std::memcpy(frame.data() + at, &v, sizeof(v));
          }
          break;
        }
        case 3:  // truncate (often at a word boundary)
          if (!frame.empty()) {
            size_t n = below(frame.size());
            if (coin()) n &= ~size_t{7};
            frame.resize(n);
          }
          break;
        case 4: {  // append junk words
          const size_t n = 8 * (1 + below(4));
          for (size_t i = 0; i < n; ++i) frame.push_back(static_cast<char>(rng_()));
          break;
        }
        case 5: {  // copy one word over another (pointer confusion)
          if (frame.size() >= 16) {
            const size_t words = frame.size() / 8;
            std::memmove(frame.data() + 8 * below(words), frame.data() + 8 * below(words), 8);
          }
          break;
        }
        default: {  // splice in a piece of another message
          const std::string other = encode(any());
          const size_t from = below(other.size());
          const size_t len = below(other.size() - from + 1);
          const size_t at = below(frame.size() + 1);
          frame.insert(at, other, from, len);
          break;
        }
      }
    }
    return frame;
  }

  // Random bytes; half the time behind a plausible one-segment table, so the input gets past
  // the framing check into pointer validation.
  std::string random_frame(size_t max_words = 64) {
    const size_t words = below(max_words + 1);
    std::string frame(8 * words + (coin() ? 0 : below(8)), '\0');
    for (char& c : frame) c = static_cast<char>(rng_());
    if (words >= 2 && coin()) {
      const uint32_t header[2] = {0, static_cast<uint32_t>(words - 1)};
      std::memcpy(frame.data(), header, sizeof(header));
    }
    return frame;
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace zt::protocol::testing
