// Control protocol: every message round-trips through encode/decode; every kind of bad frame
// (other version, oversized, truncated, trailing bytes, unknown type or enum, wrong list length,
// random and mutated bytes) is an error and never a crash; real CURVE sockets on loopback carry
// messages both ways, drop bad frames with a count, and give a client with the wrong server key
// nothing at all; the run-dir address files are 0600, atomic and overridable from the environment.

#include "protocol/codec.h"
#include "protocol/transport.h"

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "protocol/zerotrain.capnp.h"
#include "tests/cpu/test_util.h"
#include "tests/fuzz/message_gen.h"

namespace zt::protocol {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using zt::protocol::testing::MessageGen;
using zt::testing::TempDir;

constexpr milliseconds kReplyTimeout{5000};   // generous: a loaded CI machine, not a speed check
constexpr milliseconds kSilenceTimeout{700};  // how long "gets nothing" waits

// One hand-written message of every kind with no field at its default, so a field the codec
// forgets shows up as a mismatch.
std::vector<Message> sample_messages() {
  WorkerHello hello;
  hello.rank = 2;
  hello.world_size = 4;
  hello.host = "node-7";
  hello.pid = 4242;
  hello.backend = Backend::kCuda;
  hello.device_name = "NVIDIA H100";
  hello.device_memory_bytes = int64_t{80} << 30;
  hello.host_memory_bytes = int64_t{512} << 30;
  hello.nvme_free_bytes = int64_t{3} << 40;

  Plan plan;
  plan.config_yaml = "model:\n  family: gpt2\n  n_layer: 2\ntrain:\n  steps: 10\n";
  plan.partition.world_size = 4;
  plan.partition.stage = 3;
  plan.partition.total = 4096;
  plan.partition.shard_total = 1024;
  plan.partition.buckets = {BucketSpec{0, 0, 3, 0, 1000, 1024, 256, 0, false},
                            BucketSpec{1, 3, 9, 1024, 3000, 3072, 768, 256, true}};
  plan.partition.summary = "unit 0: 1 bucket\nunit 1: 1 bucket\n";
  plan.placement =
      StatePlacement{Placement::kDevice, Placement::kCpu, Placement::kNvme, "/mnt/nvme/zt"};
  plan.run_dir = "/runs/job-1";
  plan.start_step = 40;
  plan.resume_from = "/runs/job-1/checkpoints/step_00000040";

  StepReport report;
  report.rank = 1;
  report.step = 41;
  report.loss_sum = 1234.5;
  report.token_count = 4096;
  report.grad_norm_sq_part = 0.25;
  report.overflow = true;
  report.step_ms = 812.5;
  report.lr = 3e-4;
  report.loss_scale = 65536.0;
  report.memory_current = {1, 2, 3, 4, 5, 6};
  report.memory_peak = {11, 12, 13, 14, 15, 16};
  report.memory_total_current = 21;
  report.memory_total_peak = 81;
  report.comm_bytes = {100, 200, 300, 400, 0};
  report.comm_calls = {1, 2, 3, 4, 5};
  report.comm_busy_ms = 12.5;
  report.comm_blocked_ms = 0.5;
  report.checkpoint_ms = 3.75;
  report.offload_resident_bytes = 12 << 20;
  report.offload_disk_bytes = int64_t{3} << 30;
  report.time_ms = {300.25, 400.5, 50.0, 30.0, 20.0, 10.0, 1.75};
  report.peak_phase = {"start of step", "backward block 1",   "optimizer",
                       "start of step", "gradient reduction", "forward block 0"};
  report.total_peak_phase = "backward block 0 (micro-batch 2)";
  report.memory_timeline = {
      MemoryPhase{"forward block 0", {1, 2, 3, 4, 5, 6}, {2, 3, 4, 5, 6, 7}},
      MemoryPhase{"backward block 0", {6, 5, 4, 3, 2, 1}, {7, 6, 5, 4, 3, 2}}};

  CheckpointAck ack;
  ack.rank = 3;
  ack.step = 40;
  ack.files = {CheckpointFile{"rank_00003/optim.bin", 123456789, 0xdeadbeefcafef00dull},
               CheckpointFile{"rank_00003/params.bin", 42, 7}};
  ack.applied_steps = 38;
  ack.loss_scale = 32768.0;
  ack.loss_scale_good_steps = 17;
  ack.loss_scale_hysteresis_left = 1;
  ack.next_sequence = 640;
  ack.write_ms = 81.5;
  ack.blocked_ms = 2.25;

  CtlReply reply;
  reply.ok = true;
  reply.message = "running";
  reply.state = JobState::kCheckpointing;
  reply.step = 40;
  reply.total_steps = 100;
  reply.world_size = 2;
  reply.loss = 3.25;
  reply.tokens_per_sec = 15000.0;
  reply.eta_seconds = 120.0;
  reply.ranks = {RankMemory{0, "node-1", {1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}, 150, 5, 6},
                 RankMemory{1, "node-2", {6, 5, 4, 3, 2, 1}, {12, 11, 10, 9, 8, 7}, 90, 0, 0}};
  reply.last_checkpoint_step = 40;
  reply.last_checkpoint_dir = "/runs/x/checkpoints/step_00000040";
  reply.placement = {Placement::kDevice, Placement::kDevice, Placement::kNvme, "/nvme/zt"};
  reply.optimizer_type = "AdamW8bit";

  return {hello,
          plan,
          Heartbeat{1, 40, 1700000000123},
          report,
          Command{Command::Type::kCheckpointNow, 50, ""},
          Command{Command::Type::kStop, 60, ""},
          Command{Command::Type::kAbort, 0, "rank 3 lost its GPU"},
          ack,
          ErrorReport{3, "node-4", "CUDA error: out of memory allocating 2 GiB"},
          CtlRequest{CtlRequest::Type::kStatus},
          CtlRequest{CtlRequest::Type::kStop},
          CtlRequest{CtlRequest::Type::kCheckpoint},
          reply};
}

// Byte offset of the Envelope's data section in a single-segment frame from encode(): word 0 is
// the segment table, word 1 the root pointer, whose offset field says where the struct starts.
size_t envelope_data_offset(const std::string& frame) {
  uint32_t segments_minus_one = 0;
  std::memcpy(&segments_minus_one, frame.data(), 4);
  EXPECT_EQ(segments_minus_one, 0u) << "test frames are expected to be single-segment";
  uint32_t pointer_lo = 0;
  std::memcpy(&pointer_lo, frame.data() + 8, 4);
  const int32_t offset_words = static_cast<int32_t>(pointer_lo) >> 2;
  return 8 * static_cast<size_t>(2 + offset_words);
}

// A frame whose Envelope version field says `version`.
std::string with_envelope_version(std::string frame, uint32_t version) {
  const auto field = capnp::Schema::from<wire::Envelope>().getFieldByName("version");
  const size_t at = envelope_data_offset(frame) + 4 * field.getProto().getSlot().getOffset();
  std::memcpy(frame.data() + at, &version, sizeof(version));
  return frame;
}

// A frame whose Envelope union tag is `tag`.
std::string with_envelope_tag(std::string frame, uint16_t tag) {
  const auto body = capnp::Schema::from<wire::Envelope::Body>().getProto().getStruct();
  const size_t at = envelope_data_offset(frame) + 2 * body.getDiscriminantOffset();
  std::memcpy(frame.data() + at, &tag, sizeof(tag));
  return frame;
}

std::string to_frame(capnp::MessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// ---- codec --------------------------------------------------------------------------------------

TEST(ProtocolCodec, EveryMessageKindRoundTrips) {
  std::vector<bool> seen(kNumMessageKinds, false);
  for (const Message& m : sample_messages()) {
    SCOPED_TRACE(message_kind_name(kind_of(m)));
    const std::string frame = encode(m);
    EXPECT_EQ(frame.size() % 8, 0u);
    Result<DecodedMessage> d = decode(frame);
    ASSERT_TRUE(d.is_ok()) << d.status().to_string();
    EXPECT_EQ(d->kind(), kind_of(m));
    EXPECT_TRUE(d->body == m);
    seen[static_cast<size_t>(kind_of(m))] = true;
  }
  for (size_t k = 0; k < kNumMessageKinds; ++k) {
    EXPECT_TRUE(seen[k]) << "no sample of " << message_kind_name(static_cast<MessageKind>(k));
  }
}

TEST(ProtocolCodec, TypedAccess) {
  Result<DecodedMessage> d = decode(encode(Heartbeat{5, 6, 7}));
  ASSERT_TRUE(d.is_ok());
  ASSERT_NE(d->as<Heartbeat>(), nullptr);
  EXPECT_EQ(d->as<Heartbeat>()->step, 6);
  EXPECT_EQ(d->as<StepReport>(), nullptr);
  EXPECT_STREQ(message_kind_name(d->kind()), "Heartbeat");
}

TEST(ProtocolCodec, RandomMessagesRoundTrip) {
  MessageGen gen(7);
  for (int i = 0; i < 3000; ++i) {
    const Message m = gen.any();
    Result<DecodedMessage> d = decode(encode(m));
    ASSERT_TRUE(d.is_ok()) << message_kind_name(kind_of(m)) << ": " << d.status().to_string();
    ASSERT_TRUE(d->body == m) << "message " << i << " (" << message_kind_name(kind_of(m)) << ")";
  }
}

TEST(ProtocolCodec, AbortReasonTravelsOnlyWithAbort) {
  Result<DecodedMessage> d = decode(encode(Command{Command::Type::kStop, 9, "ignored"}));
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d->as<Command>()->reason, "");
  EXPECT_EQ(d->as<Command>()->at_step, 9);
}

TEST(ProtocolCodec, UnalignedInputDecodes) {
  const std::string frame = encode(sample_messages()[1]);
  std::string shifted = "x" + frame;
  Result<DecodedMessage> d = decode(shifted.data() + 1, frame.size());
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->body == sample_messages()[1]);
}

TEST(ProtocolCodec, VersionMismatchNamesBothVersions) {
  const std::string frame = with_envelope_version(encode(Heartbeat{1, 2, 3}), 7);
  Result<DecodedMessage> d = decode(frame);
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(d.status().message(), HasSubstr("protocol version 7"));
  EXPECT_THAT(d.status().message(),
              HasSubstr(fmt::format("this build speaks version {}", kProtocolVersion)));
  // The patch helper itself is right: writing our own version back gives a valid frame.
  EXPECT_TRUE(decode(with_envelope_version(frame, kProtocolVersion)).is_ok());
}

TEST(ProtocolCodec, HelloVersionMismatchNamesBothVersions) {
  WorkerHello hello;
  hello.protocol_version = 99;
  Result<DecodedMessage> d = decode(encode(hello));
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnsupported);
  EXPECT_THAT(d.status().message(), HasSubstr("hello speaks protocol version 99"));
  EXPECT_THAT(d.status().message(),
              HasSubstr(fmt::format("this build speaks version {}", kProtocolVersion)));
}

TEST(ProtocolCodec, ImpossibleRankInHelloRejected) {
  for (auto [rank, world] : {std::pair{4, 4}, std::pair{-1, 4}, std::pair{0, 0}}) {
    WorkerHello hello;
    hello.rank = rank;
    hello.world_size = world;
    Result<DecodedMessage> d = decode(encode(hello));
    ASSERT_FALSE(d.is_ok()) << rank << "/" << world;
    EXPECT_EQ(d.status().code(), StatusCode::kDataError);
    EXPECT_THAT(d.status().message(), HasSubstr("impossible"));
  }
}

TEST(ProtocolCodec, OversizedFrameRejected) {
  Plan plan;
  plan.config_yaml = std::string(100000, 'y');
  const std::string frame = encode(plan);
  Result<DecodedMessage> d = decode(frame, 64 * 1024);
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kDataError);
  EXPECT_THAT(d.status().message(), HasSubstr("exceeds the limit of 65536 bytes"));
  EXPECT_TRUE(decode(frame).is_ok());  // the default limit takes it
}

// The traversal limit (twice the frame) must never refuse a legitimate message, however it is
// shaped: many small objects are where Cap'n Proto's accounting is most expensive.
TEST(ProtocolCodec, LargeLegitimateMessagesDecode) {
  Plan plan;
  plan.config_yaml = std::string(300000, 'c');
  plan.partition.buckets.resize(50000);
  for (size_t i = 0; i < plan.partition.buckets.size(); ++i) {
    plan.partition.buckets[i].offset = static_cast<int64_t>(i) * 1024;
  }
  Result<DecodedMessage> d = decode(encode(plan));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->body == Message(plan));

  CtlReply reply;
  reply.ranks.resize(20000);
  for (size_t i = 0; i < reply.ranks.size(); ++i) {
    reply.ranks[i].rank = static_cast<int32_t>(i);
    reply.ranks[i].host = std::string(1, 'h');  // not = "h": GCC 12 -Wrestrict false positive
  }
  d = decode(encode(reply));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->body == Message(reply));

  CheckpointAck ack;
  ack.files.resize(30000, CheckpointFile{"", 1, 2});
  d = decode(encode(ack));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->body == Message(ack));

  // The memory timeline of a sampled step of a deep model with accumulation: two micro-batches
  // of forward, recompute and backward for 96 blocks.
  StepReport report;
  for (int m = 1; m <= 2; ++m)
    for (const char* part : {"forward", "recompute", "backward"})
      for (int l = 0; l < 96; ++l)
        report.memory_timeline.push_back(
            MemoryPhase{fmt::format("{} block {} (micro-batch {})", part, l, m), {1}, {2}});
  d = decode(encode(report));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->body == Message(report));
}

TEST(ProtocolCodec, EmptyTrailingAndRaggedFramesRejected) {
  const std::string frame = encode(Heartbeat{1, 2, 3});
  Result<DecodedMessage> empty = decode(frame.data(), 0);
  ASSERT_FALSE(empty.is_ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("empty"));

  Result<DecodedMessage> trailing = decode(frame + std::string(8, '\0'));
  ASSERT_FALSE(trailing.is_ok());
  EXPECT_THAT(trailing.status().message(), HasSubstr("trailing"));

  Result<DecodedMessage> ragged = decode(frame + "abc");
  ASSERT_FALSE(ragged.is_ok());
  EXPECT_THAT(ragged.status().message(), HasSubstr("8-byte words"));
}

TEST(ProtocolCodec, UnknownUnionTagRejected) {
  Result<DecodedMessage> d = decode(with_envelope_tag(encode(Heartbeat{1, 2, 3}), 200));
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kDataError);
  EXPECT_THAT(d.status().message(), HasSubstr("unknown message type (Envelope union tag 200)"));
}

TEST(ProtocolCodec, UnknownEnumValueRejected) {
  WorkerHello hello;
  hello.backend = static_cast<Backend>(7);
  Result<DecodedMessage> d = decode(encode(hello));
  ASSERT_FALSE(d.is_ok());
  EXPECT_THAT(d.status().message(), HasSubstr("WorkerHello.backend: unknown value 7"));

  CtlReply reply;
  reply.state = static_cast<JobState>(42);
  d = decode(encode(reply));
  ASSERT_FALSE(d.is_ok());
  EXPECT_THAT(d.status().message(), HasSubstr("CtlReply.state: unknown value 42"));
}

TEST(ProtocolCodec, WrongCategoryListLengthRejected) {
  // Only a foreign encoder can produce this, so build the envelope by hand.
  capnp::MallocMessageBuilder builder;
  auto env = builder.initRoot<wire::Envelope>();
  env.setVersion(kProtocolVersion);
  auto report = env.initBody().initStepReport();
  report.initMemoryCurrent(3);
  report.initMemoryPeak(kNumMemCategories);
  report.initCommBytes(kNumCollectives);
  report.initCommCalls(kNumCollectives);
  Result<DecodedMessage> d = decode(to_frame(builder));
  ASSERT_FALSE(d.is_ok());
  EXPECT_THAT(d.status().message(),
              HasSubstr("StepReport.memoryCurrent has 3 entries, expected 6"));

  // A list that is missing altogether (null pointer) is just as wrong.
  capnp::MallocMessageBuilder builder2;
  auto env2 = builder2.initRoot<wire::Envelope>();
  env2.setVersion(kProtocolVersion);
  env2.initBody().initStepReport();
  d = decode(to_frame(builder2));
  ASSERT_FALSE(d.is_ok());
  EXPECT_THAT(d.status().message(), HasSubstr("has 0 entries"));
}

// A StepReport built by hand with every per-category and per-phase list whole, except the one
// `broken` names, which gets 2 entries.
std::string step_report_frame(const std::string& broken) {
  capnp::MallocMessageBuilder builder;
  auto env = builder.initRoot<wire::Envelope>();
  env.setVersion(kProtocolVersion);
  auto report = env.initBody().initStepReport();
  report.initMemoryCurrent(kNumMemCategories);
  report.initMemoryPeak(kNumMemCategories);
  report.initCommBytes(kNumCollectives);
  report.initCommCalls(kNumCollectives);
  report.initTimeMs(broken == "timeMs" ? 2 : kNumStepPhases);
  report.initPeakPhase(broken == "peakPhase" ? 2 : kNumMemCategories);
  auto part = report.initMemoryTimeline(1)[0];
  part.setPhase("loss");
  part.initBytes(broken == "bytes" ? 2 : kNumMemCategories);
  part.initPeakBytes(broken == "peakBytes" ? 2 : kNumMemCategories);
  return to_frame(builder);
}

TEST(ProtocolCodec, WrongStepProfileListLengthRejected) {
  Result<DecodedMessage> d = decode(step_report_frame(""));
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  ASSERT_EQ(d->as<StepReport>()->memory_timeline.size(), 1u);
  EXPECT_EQ(d->as<StepReport>()->memory_timeline[0].phase, "loss");
  for (const auto& [broken, message] : std::vector<std::pair<std::string, std::string>>{
           {"timeMs", "StepReport.timeMs has 2 entries, expected 7"},
           {"peakPhase", "StepReport.peakPhase has 2 entries, expected 6"},
           {"bytes", "StepReport.memoryTimeline.bytes has 2 entries, expected 6"},
           {"peakBytes", "StepReport.memoryTimeline.peakBytes has 2 entries, expected 6"}}) {
    d = decode(step_report_frame(broken));
    ASSERT_FALSE(d.is_ok()) << broken;
    EXPECT_EQ(d.status().code(), StatusCode::kDataError);
    EXPECT_THAT(d.status().message(), HasSubstr(message));
  }
}

TEST(ProtocolCodec, EveryTruncationIsAnError) {
  for (const Message& m : sample_messages()) {
    const std::string frame = encode(m);
    for (size_t n = 0; n < frame.size(); ++n) {
      Result<DecodedMessage> d = decode(frame.data(), n);
      ASSERT_FALSE(d.is_ok()) << message_kind_name(kind_of(m)) << " cut at " << n;
      EXPECT_EQ(d.status().code(), StatusCode::kDataError);
      EXPECT_FALSE(d.status().message().empty());
    }
  }
}

// Whatever decode() accepts must survive a re-encode unchanged; everything else is an error with a
// message. Crashes would end the test binary, which is the other half of the check.
void expect_safe(const std::string& bytes, size_t* accepted) {
  Result<DecodedMessage> d = decode(bytes);
  if (!d.is_ok()) {
    EXPECT_FALSE(d.status().message().empty());
    EXPECT_TRUE(d.status().code() == StatusCode::kDataError ||
                d.status().code() == StatusCode::kUnsupported)
        << d.status().to_string();
    return;
  }
  ++*accepted;
  const std::string again = encode(d->body);
  Result<DecodedMessage> d2 = decode(again);
  ASSERT_TRUE(d2.is_ok()) << d2.status().to_string();
  EXPECT_EQ(encode(d2->body), again);
}

TEST(ProtocolCodec, RandomBytesNeverCrash) {
  MessageGen gen(20240520);
  size_t accepted = 0;
  for (int i = 0; i < 5000; ++i) expect_safe(gen.random_frame(), &accepted);
  // A random frame would have to hit a valid root pointer and the exact version to pass.
  EXPECT_LT(accepted, 5u);
}

TEST(ProtocolCodec, MutatedFramesNeverCrash) {
  MessageGen gen(99);
  size_t accepted = 0;
  for (int i = 0; i < 5000; ++i) expect_safe(gen.mutate(encode(gen.any())), &accepted);
  // Flips inside data fields legitimately decode; most edits break the frame.
  EXPECT_LT(accepted, 5000u);
}

// ---- sockets ------------------------------------------------------------------------------------

struct Loopback {
  CurveKeyPair keys;
  std::unique_ptr<ServerSocket> server;
};

Loopback make_server(ServerOptions options = {}) {
  Loopback lb;
  Result<CurveKeyPair> keys = generate_keypair();
  EXPECT_TRUE(keys.is_ok()) << keys.status().to_string();
  if (!keys.is_ok()) return lb;
  lb.keys = *keys;
  Result<std::unique_ptr<ServerSocket>> server = ServerSocket::bind(lb.keys, options);
  EXPECT_TRUE(server.is_ok()) << server.status().to_string();
  if (server.is_ok()) lb.server = std::move(*server);
  return lb;
}

std::unique_ptr<ClientSocket> make_client(const std::string& endpoint, const std::string& key) {
  Result<std::unique_ptr<ClientSocket>> c = ClientSocket::connect({endpoint, key});
  EXPECT_TRUE(c.is_ok()) << c.status().to_string();
  return c.is_ok() ? std::move(*c) : nullptr;
}

TEST(ProtocolTransport, KeyPairsAreZ85AndFresh) {
  Result<CurveKeyPair> a = generate_keypair();
  Result<CurveKeyPair> b = generate_keypair();
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_TRUE(is_valid_curve_key(a->public_key));
  EXPECT_TRUE(is_valid_curve_key(a->secret_key));
  EXPECT_NE(a->public_key, b->public_key);
  EXPECT_FALSE(is_valid_curve_key("short"));
  EXPECT_FALSE(is_valid_curve_key(std::string(40, '"')));  // '"' is not a Z85 character
}

TEST(ProtocolTransport, ServerReportsTheBoundPort) {
  Loopback lb = make_server();
  ASSERT_NE(lb.server, nullptr);
  EXPECT_THAT(lb.server->endpoint(), HasSubstr("tcp://127.0.0.1:"));
  EXPECT_NE(lb.server->endpoint(), "tcp://127.0.0.1:0");
}

TEST(ProtocolTransport, MessagesFlowBothWays) {
  Loopback lb = make_server();
  ASSERT_NE(lb.server, nullptr);
  std::unique_ptr<ClientSocket> client = make_client(lb.server->endpoint(), lb.keys.public_key);
  ASSERT_NE(client, nullptr);
  const std::vector<Message> samples = sample_messages();

  ASSERT_TRUE(client->send(samples[0]).is_ok());
  Result<Incoming> in = lb.server->recv(kReplyTimeout);
  ASSERT_TRUE(in.is_ok()) << in.status().to_string();
  EXPECT_TRUE(in->message.body == samples[0]);
  EXPECT_TRUE(client->handshake_completed());

  // The server answers the peer it heard from; every sample goes each way.
  for (const Message& m : samples) {
    ASSERT_TRUE(lb.server->send(in->peer, m).is_ok());
    Result<DecodedMessage> back = client->recv(kReplyTimeout);
    ASSERT_TRUE(back.is_ok()) << back.status().to_string();
    EXPECT_TRUE(back->body == m) << message_kind_name(kind_of(m));

    ASSERT_TRUE(client->send(m).is_ok());
    Result<Incoming> got = lb.server->recv(kReplyTimeout);
    ASSERT_TRUE(got.is_ok()) << got.status().to_string();
    EXPECT_TRUE(got->message.body == m) << message_kind_name(kind_of(m));
    EXPECT_EQ(got->peer, in->peer);
  }
  EXPECT_EQ(lb.server->stats().received, static_cast<int64_t>(samples.size() + 1));
  EXPECT_EQ(lb.server->stats().sent, static_cast<int64_t>(samples.size()));
  EXPECT_EQ(lb.server->stats().dropped(), 0);

  // Two clients are told apart by their peer ids.
  std::unique_ptr<ClientSocket> other = make_client(lb.server->endpoint(), lb.keys.public_key);
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->send(Heartbeat{9, 0, 0}).is_ok());
  Result<Incoming> from_other = lb.server->recv(kReplyTimeout);
  ASSERT_TRUE(from_other.is_ok()) << from_other.status().to_string();
  EXPECT_NE(from_other->peer, in->peer);
  ASSERT_TRUE(lb.server->send(from_other->peer, Heartbeat{0, 1, 2}).is_ok());
  Result<DecodedMessage> to_other = other->recv(kReplyTimeout);
  ASSERT_TRUE(to_other.is_ok()) << to_other.status().to_string();
  EXPECT_TRUE(to_other->body == Message(Heartbeat{0, 1, 2}));
  EXPECT_FALSE(client->recv(milliseconds(100)).is_ok());  // nothing leaked to the first client
}

TEST(ProtocolTransport, BadFramesAreDroppedAndCounted) {
  ServerOptions options;
  options.max_frame_bytes = 4096;
  Loopback lb = make_server(options);
  ASSERT_NE(lb.server, nullptr);
  std::vector<Status> drops;
  lb.server->set_drop_handler([&](const PeerId&, const Status& why) { drops.push_back(why); });
  std::unique_ptr<ClientSocket> client = make_client(lb.server->endpoint(), lb.keys.public_key);
  ASSERT_NE(client, nullptr);

  ASSERT_TRUE(client->send(std::string("not a capnp message")).is_ok());
  ASSERT_TRUE(client->send(std::string(8192, '\0')).is_ok());
  ASSERT_TRUE(client->send(with_envelope_version(encode(Heartbeat{1, 2, 3}), 5)).is_ok());
  ASSERT_TRUE(client->send(Heartbeat{1, 2, 3}).is_ok());

  // The three bad frames are skipped on the way to the good one.
  Result<Incoming> in = lb.server->recv(kReplyTimeout);
  ASSERT_TRUE(in.is_ok()) << in.status().to_string();
  EXPECT_TRUE(in->message.body == Message(Heartbeat{1, 2, 3}));
  EXPECT_EQ(lb.server->stats().dropped_malformed, 1);
  EXPECT_EQ(lb.server->stats().dropped_oversized, 1);
  EXPECT_EQ(lb.server->stats().dropped_version, 1);
  EXPECT_EQ(lb.server->stats().received, 1);
  ASSERT_EQ(drops.size(), 3u);
  EXPECT_THAT(drops[1].message(), HasSubstr("exceeds the limit of 4096"));
  EXPECT_THAT(drops[2].message(), HasSubstr("protocol version 5"));

  // Replying to a peer that is not connected is an error, not a silent drop.
  Status st = lb.server->send(PeerId("no-such-peer"), Heartbeat{});
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_EQ(lb.server->stats().send_failed, 1);
}

TEST(ProtocolTransport, WrongServerKeyGetsNothing) {
  Loopback lb = make_server();
  ASSERT_NE(lb.server, nullptr);
  Result<CurveKeyPair> impostor = generate_keypair();
  ASSERT_TRUE(impostor.is_ok());
  std::unique_ptr<ClientSocket> client = make_client(lb.server->endpoint(), impostor->public_key);
  ASSERT_NE(client, nullptr);

  // Queued locally; the CURVE handshake fails, so it never reaches the server.
  ASSERT_TRUE(client->send(sample_messages()[0]).is_ok());
  Result<Incoming> at_server = lb.server->recv(kSilenceTimeout);
  ASSERT_FALSE(at_server.is_ok());
  EXPECT_EQ(at_server.status().code(), StatusCode::kTimeout);
  EXPECT_EQ(lb.server->stats().received, 0);
  EXPECT_EQ(lb.server->stats().dropped(), 0);

  Result<DecodedMessage> reply = client->recv(kSilenceTimeout);
  ASSERT_FALSE(reply.is_ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kTimeout);
  // Usually "the CURVE handshake failed N times" (the client saw the server refuse it); on a slow
  // machine possibly "no CURVE handshake completed". Either way it points at the key.
  EXPECT_THAT(reply.status().message(), HasSubstr("CURVE handshake"));
  EXPECT_THAT(reply.status().message(), HasSubstr(kKeyEnv));
  EXPECT_FALSE(client->handshake_completed());

  // The server is fine for clients with the right key meanwhile.
  std::unique_ptr<ClientSocket> good = make_client(lb.server->endpoint(), lb.keys.public_key);
  ASSERT_NE(good, nullptr);
  ASSERT_TRUE(good->send(Heartbeat{0, 1, 1}).is_ok());
  Result<Incoming> in = lb.server->recv(kReplyTimeout);
  ASSERT_TRUE(in.is_ok()) << in.status().to_string();
  EXPECT_TRUE(in->message.body == Message(Heartbeat{0, 1, 1}));
}

TEST(ProtocolTransport, NoServerTimesOutWithAHint) {
  Result<CurveKeyPair> keys = generate_keypair();
  ASSERT_TRUE(keys.is_ok());
  // Bind and drop a server to get a port that is (very likely) free.
  std::string endpoint;
  {
    Loopback lb = make_server();
    ASSERT_NE(lb.server, nullptr);
    endpoint = lb.server->endpoint();
  }
  std::unique_ptr<ClientSocket> client = make_client(endpoint, keys->public_key);
  ASSERT_NE(client, nullptr);
  Result<DecodedMessage> reply = client->recv(milliseconds(200));
  ASSERT_FALSE(reply.is_ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kTimeout);
  EXPECT_THAT(reply.status().message(), HasSubstr(endpoint));
  EXPECT_THAT(reply.status().message(), HasSubstr("no CURVE handshake completed"));
}

TEST(ProtocolTransport, BadArgumentsAreErrors) {
  Result<CurveKeyPair> keys = generate_keypair();
  ASSERT_TRUE(keys.is_ok());
  EXPECT_EQ(ServerSocket::bind(CurveKeyPair{keys->public_key, "nope"}).status().code(),
            StatusCode::kInvalidArgument);
  ServerOptions bad_endpoint;
  bad_endpoint.bind_endpoint = "carrier-pigeon://x";
  EXPECT_FALSE(ServerSocket::bind(*keys, bad_endpoint).is_ok());
  EXPECT_EQ(ClientSocket::connect({"tcp://127.0.0.1:1", "bad key"}).status().code(),
            StatusCode::kInvalidArgument);

  // A second server on a taken port is an I/O error naming the endpoint.
  Loopback lb = make_server();
  ASSERT_NE(lb.server, nullptr);
  ServerOptions same;
  same.bind_endpoint = lb.server->endpoint();
  Result<std::unique_ptr<ServerSocket>> second = ServerSocket::bind(*keys, same);
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().code(), StatusCode::kIoError);
  EXPECT_THAT(second.status().message(), HasSubstr(lb.server->endpoint()));
}

// ---- run-dir files and environment --------------------------------------------------------------

int file_mode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

// Sets (or unsets, with nullopt) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(ProtocolRunDir, EndpointFilesAre0600AndRoundTrip) {
  TempDir dir;
  Result<CurveKeyPair> keys = generate_keypair();
  ASSERT_TRUE(keys.is_ok());
  ASSERT_TRUE(write_endpoint_files(dir.path(), "tcp://127.0.0.1:5555", keys->public_key).is_ok());
  EXPECT_EQ(file_mode(dir.file(kEndpointFileName)), 0600);
  EXPECT_EQ(file_mode(dir.file(kKeyFileName)), 0600);

  Result<CoordinatorAddress> a = read_endpoint_files(dir.path());
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:5555");
  EXPECT_EQ(a->public_key, keys->public_key);

  // Rewriting replaces both (a restarted coordinator) and fixes a loosened mode.
  ::chmod(dir.file(kKeyFileName).c_str(), 0644);
  Result<CurveKeyPair> keys2 = generate_keypair();
  ASSERT_TRUE(keys2.is_ok());
  ASSERT_TRUE(write_endpoint_files(dir.path(), "tcp://10.0.0.1:6000", keys2->public_key).is_ok());
  EXPECT_EQ(file_mode(dir.file(kKeyFileName)), 0600);
  a = read_endpoint_files(dir.path());
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(a->endpoint, "tcp://10.0.0.1:6000");
  EXPECT_EQ(a->public_key, keys2->public_key);

  // Nothing but the two files is left behind (no temp files).
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{kEndpointFileName, kKeyFileName}));
}

TEST(ProtocolRunDir, MissingAndCorruptFilesAreClearErrors) {
  TempDir dir;
  Result<CoordinatorAddress> a = read_endpoint_files(dir.path());
  ASSERT_FALSE(a.is_ok());
  EXPECT_EQ(a.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(a.status().message(), HasSubstr(kEndpointFileName));
  EXPECT_THAT(a.status().message(), HasSubstr("--run-dir"));

  Result<CurveKeyPair> keys = generate_keypair();
  ASSERT_TRUE(keys.is_ok());
  ASSERT_TRUE(write_endpoint_files(dir.path(), "tcp://127.0.0.1:5555", keys->public_key).is_ok());
  std::ofstream(dir.file(kKeyFileName)) << "garbage\n";
  a = read_endpoint_files(dir.path());
  ASSERT_FALSE(a.is_ok());
  EXPECT_EQ(a.status().code(), StatusCode::kDataError);
  EXPECT_THAT(a.status().message(), HasSubstr(kKeyFileName));

  EXPECT_EQ(write_endpoint_files(dir.file("no/such/dir"), "tcp://h:1", keys->public_key).code(),
            StatusCode::kNotFound);
  EXPECT_EQ(write_endpoint_files(dir.path(), "not an endpoint", keys->public_key).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(write_endpoint_files(dir.path(), "tcp://h:1", "bad key").code(),
            StatusCode::kInvalidArgument);
}

TEST(ProtocolRunDir, EnvironmentOverridesFiles) {
  TempDir dir;
  Result<CurveKeyPair> file_keys = generate_keypair();
  Result<CurveKeyPair> env_keys = generate_keypair();
  ASSERT_TRUE(file_keys.is_ok() && env_keys.is_ok());
  ASSERT_TRUE(
      write_endpoint_files(dir.path(), "tcp://127.0.0.1:1111", file_keys->public_key).is_ok());

  {  // nothing set: the files
    ScopedEnv e1(kEndpointEnv, std::nullopt), e2(kKeyEnv, std::nullopt);
    Result<CoordinatorAddress> a = find_coordinator(dir.path());
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:1111");
    EXPECT_EQ(a->public_key, file_keys->public_key);
    // --coordinator beats the file.
    a = find_coordinator(dir.path(), "tcp://127.0.0.1:3333");
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:3333");
  }
  {  // both set: no run dir needed at all
    ScopedEnv e1(kEndpointEnv, "tcp://127.0.0.1:2222"), e2(kKeyEnv, env_keys->public_key);
    Result<CoordinatorAddress> a = find_coordinator("");
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:2222");
    EXPECT_EQ(a->public_key, env_keys->public_key);
    a = find_coordinator(dir.path());
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:2222");
    EXPECT_EQ(a->public_key, env_keys->public_key);
    // The flag still beats the environment.
    a = find_coordinator(dir.path(), "tcp://127.0.0.1:3333");
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:3333");
  }
  {  // only the key from the environment (zt-worker --coordinator with ZT_COORDINATOR_KEY)
    ScopedEnv e1(kEndpointEnv, std::nullopt), e2(kKeyEnv, env_keys->public_key);
    Result<CoordinatorAddress> a = find_coordinator("", "tcp://127.0.0.1:4444");
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    EXPECT_EQ(a->public_key, env_keys->public_key);
    a = find_coordinator(dir.path());
    ASSERT_TRUE(a.is_ok());
    EXPECT_EQ(a->endpoint, "tcp://127.0.0.1:1111");
    EXPECT_EQ(a->public_key, env_keys->public_key);
  }
  {  // errors
    ScopedEnv e1(kEndpointEnv, std::nullopt), e2(kKeyEnv, "not-a-key");
    Result<CoordinatorAddress> a = find_coordinator(dir.path());
    ASSERT_FALSE(a.is_ok());
    EXPECT_EQ(a.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(a.status().message(), HasSubstr(kKeyEnv));
  }
  {
    ScopedEnv e1(kEndpointEnv, std::nullopt), e2(kKeyEnv, std::nullopt);
    Result<CoordinatorAddress> a = find_coordinator("");
    ASSERT_FALSE(a.is_ok());
    EXPECT_EQ(a.status().code(), StatusCode::kNotFound);
    EXPECT_THAT(a.status().message(), HasSubstr(kEndpointEnv));
  }
}

TEST(ProtocolRunDir, ClientFindsTheServerThroughTheRunDir) {
  TempDir dir;
  Loopback lb = make_server();
  ASSERT_NE(lb.server, nullptr);
  ASSERT_TRUE(write_endpoint_files(dir.path(), lb.server->endpoint(), lb.keys.public_key).is_ok());
  ScopedEnv e1(kEndpointEnv, std::nullopt), e2(kKeyEnv, std::nullopt);
  Result<CoordinatorAddress> a = find_coordinator(dir.path());
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  Result<std::unique_ptr<ClientSocket>> client = ClientSocket::connect(*a);
  ASSERT_TRUE(client.is_ok());
  ASSERT_TRUE((*client)->send(CtlRequest{CtlRequest::Type::kStatus}).is_ok());
  Result<Incoming> in = lb.server->recv(kReplyTimeout);
  ASSERT_TRUE(in.is_ok()) << in.status().to_string();
  EXPECT_EQ(in->message.kind(), MessageKind::kCtlRequest);
}

}  // namespace
}  // namespace zt::protocol
