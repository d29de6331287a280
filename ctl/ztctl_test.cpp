// ztctl's commands against an in-process fake coordinator (a real CURVE ServerSocket answering
// CtlRequests from a script), its formatting, and `ztctl launch` supervising fake coordinator and
// mpirun scripts: signal forwarding, startup failures, one side outliving the other.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ctl/client.h"
#include "ctl/commands.h"
#include "ctl/format.h"
#include "ctl/launch.h"
#include "protocol/transport.h"
#include "tests/cpu/test_util.h"

namespace zt::ctl {
namespace {

using protocol::CtlReply;
using protocol::CtlRequest;
using protocol::JobState;
using std::chrono::milliseconds;
using zt::testing::TempDir;

constexpr int64_t kMiB = 1024 * 1024;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void append_event(const std::string& run_dir, const std::string& event) {
  std::ofstream(run_dir + "/events.log", std::ios::app) << "2024-05-01T12:00:00Z " << event << "\n";
}

CtlReply running_reply(int64_t step) {
  CtlReply r;
  r.state = JobState::kRunning;
  r.step = step;
  r.total_steps = 100;
  r.world_size = 2;
  r.loss = 4.25;
  r.tokens_per_sec = 12345.4;
  r.eta_seconds = 65;
  for (int32_t rank = 0; rank < 2; ++rank) {
    protocol::RankMemory m;
    m.rank = rank;
    m.host = rank == 0 ? "node-a" : "a-very-long-host-name.example.org";
    for (size_t c = 0; c < protocol::kNumMemCategories; ++c) {
      m.current[c] = static_cast<int64_t>(c + 1) * kMiB;
      m.peak[c] = static_cast<int64_t>(c + 1) * 2 * kMiB;
    }
    m.last_seen_ms = 300;
    r.ranks.push_back(m);
  }
  return r;
}

// ---- the fake coordinator -----------------------------------------------------------------------

// What the fake does with one request: answer (or stay silent), then maybe exit as a real
// coordinator does at the end of a job (write the end to events.log, close the socket).
struct Action {
  std::optional<CtlReply> reply;
  bool exit_after = false;
  std::string final_event;  // appended to events.log when exiting; empty: none
};

Action answer(const CtlReply& r) {
  Action a;
  a.reply = r;
  return a;
}
Action silence() { return Action(); }
Action answer_then_exit(const CtlReply& r, const std::string& final_event) {
  Action a = answer(r);
  a.exit_after = true;
  a.final_event = final_event;
  return a;
}

class FakeCoordinator {
 public:
  using Handler = std::function<Action(const CtlRequest&, int index)>;

  FakeCoordinator(const std::string& run_dir, Handler handler)
      : run_dir_(run_dir), handler_(std::move(handler)) {
    Result<protocol::CurveKeyPair> keys = protocol::generate_keypair();
    EXPECT_TRUE(keys.is_ok()) << keys.status().to_string();
    keys_ = *keys;
    Result<std::unique_ptr<protocol::ServerSocket>> server = protocol::ServerSocket::bind(keys_);
    EXPECT_TRUE(server.is_ok()) << server.status().to_string();
    server_ = std::move(*server);
    endpoint_ = server_->endpoint();
    EXPECT_TRUE(protocol::write_endpoint_files(run_dir, endpoint_, keys_.public_key).is_ok());
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeCoordinator() { shut_down(); }

  // Closes the socket: afterwards nothing listens at the endpoint.
  void shut_down() {
    quit_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  const protocol::CurveKeyPair& keys() const { return keys_; }
  int requests() const { return count_.load(); }
  std::vector<CtlRequest::Type> types() {
    std::lock_guard<std::mutex> lock(mu_);
    return types_;
  }

 private:
  void loop() {
    while (!quit_) {
      Result<protocol::Incoming> in = server_->recv(milliseconds(20));
      if (!in.is_ok()) continue;
      const auto* req = in->message.as<CtlRequest>();
      if (!req) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        types_.push_back(req->type);
      }
      const Action action = handler_(*req, count_.fetch_add(1));
      if (action.reply) (void)server_->send(in->peer, *action.reply);
      if (action.exit_after) {
        // Let the reply leave before the socket closes, as the real one does with its linger.
        std::this_thread::sleep_for(milliseconds(100));
        if (!action.final_event.empty()) append_event(run_dir_, action.final_event);
        break;
      }
    }
    server_.reset();
  }

  std::string run_dir_;
  Handler handler_;
  protocol::CurveKeyPair keys_;
  std::unique_ptr<protocol::ServerSocket> server_;
  std::string endpoint_;
  std::thread thread_;
  std::atomic<bool> quit_{false};
  std::atomic<int> count_{0};
  std::mutex mu_;
  std::vector<CtlRequest::Type> types_;
};

CtlOptions options_for(const TempDir& dir, milliseconds reply_timeout = milliseconds(3000)) {
  CtlOptions o;
  o.run_dir = dir.path();
  o.reply_timeout = reply_timeout;
  return o;
}

// ---- formatting ---------------------------------------------------------------------------------

TEST(ZtctlFormat, Numbers) {
  EXPECT_EQ(format_mib(0), "0.0");
  EXPECT_EQ(format_mib(3 * kMiB / 2), "1.5");
  EXPECT_EQ(format_duration(-1), "unknown");
  EXPECT_EQ(format_duration(65), "0:01:05");
  EXPECT_EQ(format_duration(27 * 3600), "27:00:00");
  EXPECT_EQ(format_count(0), "0");
  EXPECT_EQ(format_count(999), "999");
  EXPECT_EQ(format_count(1234567.4), "1,234,567");
  EXPECT_EQ(format_count(-1000), "-1,000");
  EXPECT_EQ(format_progress(12, 100), "12/100 (12.0%)");
  EXPECT_EQ(format_progress(5, 0), "5");
  EXPECT_EQ(format_age_ms(300), "0.3 s ago");
  EXPECT_EQ(format_age_ms(45'000), "45 s ago");
  EXPECT_EQ(format_age_ms(600'000), "10 min ago");
}

TEST(ZtctlFormat, StatusBlock) {
  const std::string block =
      format_status(running_reply(12), StatusSource{"/runs/x", "tcp://127.0.0.1:5555"});
  EXPECT_NE(block.find("job       running, step 12/100 (12.0%), world 2\n"), std::string::npos)
      << block;
  EXPECT_NE(block.find("loss      4.2500   tokens/s 12,345   ETA 0:01:05\n"), std::string::npos)
      << block;
  EXPECT_NE(block.find("run dir   /runs/x (coordinator tcp://127.0.0.1:5555)"), std::string::npos);
  EXPECT_NE(block.find("node-a"), std::string::npos);
  EXPECT_NE(block.find("a-very-long~"), std::string::npos) << "long host names are shortened";
  EXPECT_NE(block.find("0.3 s ago"), std::string::npos);
  // rank 0 current: 1..6 MiB per category, 21 MiB in all.
  EXPECT_NE(block.find("1.0       2.0       3.0       4.0       5.0       6.0      21.0"),
            std::string::npos)
      << block;
  std::istringstream lines(block);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_LE(line.size(), 100u) << "line wider than 100 columns: " << line;
  }
}

TEST(ZtctlFormat, StatusShowsWhereTheStateLives) {
  CtlReply r = running_reply(12);
  r.optimizer_type = "AdamW8bit";
  r.placement.optimizer_states = protocol::Placement::kNvme;
  r.placement.nvme_path = "/nvme/zt";
  r.ranks[1].offload_resident_bytes = 48 * kMiB;
  r.ranks[1].offload_disk_bytes = 1024 * kMiB;
  const std::string block = format_status(r, StatusSource{"/runs/x", ""});
  EXPECT_NE(block.find("state     optimizer AdamW8bit on nvme (/nvme/zt); parameters on device, "
                       "gradients on device\n"),
            std::string::npos)
      << block;
  EXPECT_NE(block.find("rank 1: offloaded 48.0 MiB in host memory, 1024.0 MiB on disk"),
            std::string::npos)
      << block;
  EXPECT_EQ(block.find("rank 0: offloaded"), std::string::npos) << "rank 0 offloads nothing";
  const nlohmann::ordered_json j = status_json(r, StatusSource{"/runs/x", ""});
  EXPECT_EQ(j["optimizer"], "AdamW8bit");
  EXPECT_EQ(j["placement"]["optimizer_states"], "nvme");
  EXPECT_EQ(j["placement"]["nvme_path"], "/nvme/zt");
  EXPECT_EQ(j["ranks"][1]["offload_disk_bytes"], 1024 * kMiB);
}

TEST(ZtctlFormat, StatusBlockBeforeTheFirstStep) {
  CtlReply r;
  r.state = JobState::kStarting;
  r.world_size = 4;
  r.message = "partition plan: stage 2\n  unit 0: 1 bucket\n";
  const std::string block = format_status(r, StatusSource{"/runs/y", ""});
  // A multi-line message continues indented under its first line.
  EXPECT_NE(block.find("message   partition plan: stage 2\n            unit 0: 1 bucket\nranks"),
            std::string::npos)
      << block;
  EXPECT_NE(block.find("job       starting, step 0, world 4\n"), std::string::npos) << block;
  EXPECT_NE(block.find("loss      -   tokens/s -   ETA unknown"), std::string::npos) << block;
  EXPECT_NE(block.find("none registered yet (expecting 4)"), std::string::npos) << block;
}

TEST(ZtctlFormat, StatusJson) {
  const nlohmann::ordered_json j =
      status_json(running_reply(25), StatusSource{"/runs/x", "tcp://h:1"});
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["step"], 25);
  EXPECT_EQ(j["total_steps"], 100);
  EXPECT_DOUBLE_EQ(j["progress"].get<double>(), 0.25);
  EXPECT_EQ(j["world_size"], 2);
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 4.25);
  EXPECT_DOUBLE_EQ(j["eta_seconds"].get<double>(), 65.0);
  EXPECT_EQ(j["run_dir"], "/runs/x");
  EXPECT_EQ(j["endpoint"], "tcp://h:1");
  ASSERT_EQ(j["ranks"].size(), 2u);
  EXPECT_EQ(j["ranks"][1]["host"], "a-very-long-host-name.example.org");
  EXPECT_EQ(j["ranks"][0]["memory_current_bytes"]["optimizer_states"], 3 * kMiB);
  EXPECT_EQ(j["ranks"][0]["memory_peak_bytes"]["workspace"], 12 * kMiB);
  EXPECT_EQ(j["ranks"][0]["memory_current_total_bytes"], 21 * kMiB);

  CtlReply fresh;  // unknowns are null, not made-up zeros
  const nlohmann::ordered_json k = status_json(fresh, {});
  EXPECT_TRUE(k["loss"].is_null());
  EXPECT_TRUE(k["eta_seconds"].is_null());
  EXPECT_TRUE(k["progress"].is_null());
}

TEST(ZtctlEvents, FindsTheEndOfTheJobAfterAnOffset) {
  TempDir dir;
  append_event(dir.path(), "coordinator listening on tcp://127.0.0.1:1");
  append_event(dir.path(), "stopped after step 3");  // an earlier run in the same directory
  const uint64_t offset = events_log_size(dir.path());
  EXPECT_EQ(find_job_end(dir.path(), 0).end, JobEnd::kClean);
  EXPECT_EQ(find_job_end(dir.path(), offset).end, JobEnd::kNone);
  append_event(dir.path(), "stop requested by ztctl");
  EXPECT_EQ(find_job_end(dir.path(), offset).end, JobEnd::kNone);
  append_event(dir.path(), "failed: rank 1 on node-b (pid 7) reported: out of memory");
  const JobEndEvent end = find_job_end(dir.path(), offset);
  EXPECT_EQ(end.end, JobEnd::kFailed);
  EXPECT_EQ(end.line, "failed: rank 1 on node-b (pid 7) reported: out of memory");
  EXPECT_EQ(last_event(dir.path()), end.line);
  EXPECT_EQ(strip_event_timestamp("no stamp here"), "no stamp here");
  EXPECT_EQ(find_job_end("", 0).end, JobEnd::kNone);
}

TEST(ZtctlProbe, TellsAListeningPortFromAClosedOne) {
  TempDir dir;
  std::string endpoint;
  {
    FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return silence(); });
    endpoint = fake.endpoint();
    EXPECT_EQ(probe_endpoint(endpoint), EndpointProbe::kListening);
  }
  EXPECT_EQ(probe_endpoint(endpoint), EndpointProbe::kClosed);
  EXPECT_EQ(probe_endpoint("inproc://x"), EndpointProbe::kUnknown);
}

// ---- status -------------------------------------------------------------------------------------

TEST(ZtctlStatus, PrintsTheBlock) {
  TempDir dir;
  FakeCoordinator fake(dir.path(),
                       [](const CtlRequest&, int) { return answer(running_reply(12)); });
  std::ostringstream out, err;
  EXPECT_EQ(run_status(options_for(dir), false, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("running, step 12/100 (12.0%)"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find(fake.endpoint()), std::string::npos);
  ASSERT_EQ(fake.types().size(), 1u);
  EXPECT_EQ(fake.types()[0], CtlRequest::Type::kStatus);
}

TEST(ZtctlStatus, Json) {
  TempDir dir;
  FakeCoordinator fake(dir.path(),
                       [](const CtlRequest&, int) { return answer(running_reply(40)); });
  std::ostringstream out, err;
  EXPECT_EQ(run_status(options_for(dir), true, out, err), 0) << err.str();
  const nlohmann::json j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["world_size"], 2);
  EXPECT_EQ(j["step"], 40);
  EXPECT_EQ(j["endpoint"], fake.endpoint());
  EXPECT_EQ(j["ranks"].size(), 2u);
}

TEST(ZtctlStatus, NoAnswerNamesEndpointAndRunDir) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return silence(); });  // silent
  std::ostringstream out, err;
  EXPECT_EQ(run_status(options_for(dir, milliseconds(800)), false, out, err), 1);
  EXPECT_NE(err.str().find("no answer from the coordinator at " + fake.endpoint() +
                           " within 0.8 s: is the job running? (run dir " + dir.path() + ")"),
            std::string::npos)
      << err.str();
  EXPECT_TRUE(out.str().empty());
}

TEST(ZtctlStatus, WrongKeySaysSo) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return answer(running_reply(1)); });
  Result<protocol::CurveKeyPair> other = protocol::generate_keypair();
  ASSERT_TRUE(other.is_ok());
  ASSERT_TRUE(
      protocol::write_endpoint_files(dir.path(), fake.endpoint(), other->public_key).is_ok());
  std::ostringstream out, err;
  EXPECT_EQ(run_status(options_for(dir, milliseconds(1500)), false, out, err), 1);
  EXPECT_NE(err.str().find("no CURVE handshake completed"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find(dir.path() + "/coordinator.key"), std::string::npos) << err.str();
}

TEST(ZtctlStatus, CoordinatorGoneShowsTheLastEvent) {
  TempDir dir;
  {
    FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return silence(); });
  }
  append_event(dir.path(), "stopped after step 7");
  std::ostringstream out, err;
  EXPECT_EQ(run_status(options_for(dir, milliseconds(10'000)), false, out, err), 1);
  EXPECT_NE(err.str().find("nothing listens there any more"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("last event in " + dir.path() + "/events.log: stopped after step 7"),
            std::string::npos)
      << err.str();
}

TEST(ZtctlStatus, NoRunDirFiles) {
  TempDir dir;
  std::ostringstream out, err;
  EXPECT_EQ(run_status(options_for(dir), false, out, err), 1);
  EXPECT_NE(err.str().find("coordinator.endpoint not found"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find(dir.path()), std::string::npos) << err.str();
}

TEST(ZtctlStatus, EndpointFlagOverridesTheRunDir) {
  TempDir dir, other;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return answer(running_reply(3)); });
  // The key comes from `other` (a copy of the key file); the endpoint only from the flag.
  ASSERT_TRUE(
      protocol::write_endpoint_files(other.path(), "tcp://127.0.0.1:1", fake.keys().public_key)
          .is_ok());
  CtlOptions o = options_for(other);
  o.endpoint_flag = fake.endpoint();
  std::ostringstream out, err;
  EXPECT_EQ(run_status(o, false, out, err), 0) << err.str();
}

// ---- checkpoint ---------------------------------------------------------------------------------

TEST(ZtctlCheckpoint, RefusalIsAnError) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) {
    CtlReply r = running_reply(5);
    r.ok = false;
    r.message = "the job is stopping";
    return answer(r);
  });
  std::ostringstream out, err;
  EXPECT_EQ(run_checkpoint(options_for(dir), std::chrono::milliseconds(0), out, err), 1);
  EXPECT_NE(
      err.str().find("did not take a checkpoint: the job is stopping (run dir " + dir.path() + ")"),
      std::string::npos)
      << err.str();
  EXPECT_EQ(fake.types().at(0), CtlRequest::Type::kCheckpoint);
}

TEST(ZtctlCheckpoint, Accepted) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) {
    CtlReply r = running_reply(5);
    r.message = "checkpoint after step 6";
    return answer(r);
  });
  std::ostringstream out, err;
  EXPECT_EQ(run_checkpoint(options_for(dir), std::chrono::milliseconds(0), out, err), 0)
      << err.str();
  EXPECT_NE(out.str().find("checkpoint after step 6"), std::string::npos) << out.str();
}

// Waiting: the command returns once a status reply shows a newer committed checkpoint.
TEST(ZtctlCheckpoint, WaitsForTheCommit) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int call) {
    CtlReply r = running_reply(5);
    r.last_checkpoint_step = call >= 3 ? 6 : 0;
    r.last_checkpoint_dir = call >= 3 ? "/runs/x/checkpoints/step_00000006" : "";
    return answer(r);
  });
  std::ostringstream out, err;
  EXPECT_EQ(run_checkpoint(options_for(dir), std::chrono::milliseconds(10'000), out, err), 0)
      << err.str();
  EXPECT_NE(out.str().find("committed step 6: /runs/x/checkpoints/step_00000006"),
            std::string::npos)
      << out.str();
  EXPECT_GE(fake.types().size(), 4u);
}

TEST(ZtctlCheckpoint, NoCommitInTimeIsAnError) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return answer(running_reply(5)); });
  std::ostringstream out, err;
  EXPECT_EQ(run_checkpoint(options_for(dir), std::chrono::milliseconds(600), out, err), 1);
  EXPECT_NE(err.str().find("no checkpoint was committed within"), std::string::npos) << err.str();
}

// ---- stop ---------------------------------------------------------------------------------------

// Accepts the stop, reports `stopping` for a few polls, then exits with `final_event` as the real
// coordinator does once every worker is done.
FakeCoordinator::Handler stopping_then_exit(std::string final_event) {
  return [final_event](const CtlRequest& req, int index) {
    CtlReply r = running_reply(12);
    if (req.type == CtlRequest::Type::kStop) {
      r.state = JobState::kStopping;
      r.message = "stopping after the step in flight";
      return answer(r);
    }
    r.state = JobState::kStopping;
    if (index >= 3) return answer_then_exit(r, final_event);
    return answer(r);
  };
}

TEST(ZtctlStop, WaitsForTheCleanEnd) {
  TempDir dir;
  append_event(dir.path(), "stopped after step 2");  // an earlier run: must not end the wait
  FakeCoordinator fake(dir.path(), stopping_then_exit("stopped after step 13"));
  std::ostringstream out, err;
  EXPECT_EQ(run_stop(options_for(dir), milliseconds(30'000), out, err), 0) << err.str();
  EXPECT_NE(out.str().find("stopping after the step in flight"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("the job has ended: stopped after step 13"), std::string::npos)
      << out.str();
  EXPECT_EQ(fake.types().at(0), CtlRequest::Type::kStop);
}

TEST(ZtctlStop, FailureWhileStopping) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), stopping_then_exit("failed: rank 1 on node-b has been silent"));
  std::ostringstream out, err;
  EXPECT_EQ(run_stop(options_for(dir), milliseconds(30'000), out, err), 1);
  EXPECT_NE(err.str().find("failed: rank 1 on node-b"), std::string::npos) << err.str();
}

TEST(ZtctlStop, GoneWithoutAnEndIsAnError) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), stopping_then_exit(""));
  std::ostringstream out, err;
  EXPECT_EQ(run_stop(options_for(dir), milliseconds(30'000), out, err), 1);
  EXPECT_NE(err.str().find("records no end of the job: it may have crashed"), std::string::npos)
      << err.str();
}

TEST(ZtctlStop, FinalStateInAReply) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest& req, int) {
    CtlReply r = running_reply(20);
    r.state = req.type == CtlRequest::Type::kStop ? JobState::kStopping : JobState::kFinished;
    return answer(r);
  });
  std::ostringstream out, err;
  EXPECT_EQ(run_stop(options_for(dir), milliseconds(30'000), out, err), 0) << err.str();
  EXPECT_NE(out.str().find("the job has ended after step 20"), std::string::npos) << out.str();
}

TEST(ZtctlStop, RefusedAndTimedOut) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) {
    CtlReply r = running_reply(20);
    r.state = JobState::kStopping;
    return answer(r);
  });
  std::ostringstream out, err;
  // Never ends: the wait gives up and says how to check.
  EXPECT_EQ(run_stop(options_for(dir), milliseconds(700), out, err), 1);
  EXPECT_NE(err.str().find("has not ended within 0.7 s"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("ztctl status --run-dir " + dir.path()), std::string::npos);

  TempDir dir2;
  FakeCoordinator refusing(dir2.path(), [](const CtlRequest&, int) {
    CtlReply r = running_reply(1);
    r.ok = false;
    r.message = "job already failed";
    return answer(r);
  });
  std::ostringstream out2, err2;
  EXPECT_EQ(run_stop(options_for(dir2), milliseconds(5'000), out2, err2), 1);
  EXPECT_NE(err2.str().find("refused to stop the job: job already failed"), std::string::npos)
      << err2.str();
}

// ---- top ----------------------------------------------------------------------------------------

TEST(ZtctlTop, RefreshesUntilTheJobFinishes) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int index) {
    CtlReply r = running_reply(10 + index);
    if (index == 2) r.state = JobState::kFinished;
    return answer(r);
  });
  TopOptions top;
  top.interval = milliseconds(50);
  std::ostringstream out, err;
  EXPECT_EQ(run_top(options_for(dir), top, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("step 10/100"), std::string::npos);
  EXPECT_NE(out.str().find("step 12/100"), std::string::npos);
  EXPECT_NE(out.str().find("the job has ended: finished at step 12"), std::string::npos)
      << out.str();
  EXPECT_EQ(out.str().find("\x1b["), std::string::npos) << "no ANSI escapes when not a terminal";
}

TEST(ZtctlTop, ClearsTheScreenOnATerminal) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return answer(running_reply(3)); });
  TopOptions top;
  top.interval = milliseconds(20);
  top.clear_screen = true;
  top.max_refreshes = 2;
  std::ostringstream out, err;
  EXPECT_EQ(run_top(options_for(dir), top, out, err), 0) << err.str();
  EXPECT_EQ(out.str().rfind("\x1b[H\x1b[2J", 0), 0u);
}

TEST(ZtctlTop, CoordinatorExitsAfterTheJob) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int index) {
    return index == 1 ? answer_then_exit(running_reply(index), "finished 100 steps")
                      : answer(running_reply(index));
  });
  TopOptions top;
  top.interval = milliseconds(50);
  std::ostringstream out, err;
  EXPECT_EQ(run_top(options_for(dir), top, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("the job has ended: finished 100 steps"), std::string::npos)
      << out.str();
}

TEST(ZtctlTop, FailedJob) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) {
    CtlReply r = running_reply(4);
    r.state = JobState::kFailed;
    r.message = "rank 0 reported: NaN loss";
    return answer(r);
  });
  std::ostringstream out, err;
  EXPECT_EQ(run_top(options_for(dir), TopOptions{}, out, err), 1);
  EXPECT_NE(err.str().find("the job failed: rank 0 reported: NaN loss"), std::string::npos)
      << err.str();
}

TEST(ZtctlTop, InterruptEndsItWithSuccess) {
  TempDir dir;
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int) { return answer(running_reply(3)); });
  std::atomic<int> interrupts{0};
  CtlOptions o = options_for(dir);
  o.interrupts = &interrupts;
  TopOptions top;
  top.interval = milliseconds(60'000);  // only the interrupt can end the wait
  std::thread ctrl_c([&] {
    while (fake.requests() == 0) std::this_thread::sleep_for(milliseconds(10));
    interrupts.fetch_add(1);
  });
  std::ostringstream out, err;
  EXPECT_EQ(run_top(o, top, out, err), 0) << err.str();
  ctrl_c.join();
}

TEST(ZtctlTop, AnOlderRunsEndDoesNotCount) {
  TempDir dir;
  append_event(dir.path(), "finished 5 steps");
  FakeCoordinator fake(dir.path(), [](const CtlRequest&, int index) {
    return index == 1 ? answer_then_exit(running_reply(index), "")
                      : answer(running_reply(index));  // vanishes without a word
  });
  TopOptions top;
  top.interval = milliseconds(50);
  std::ostringstream out, err;
  EXPECT_EQ(run_top(options_for(dir), top, out, err), 1);
  EXPECT_NE(err.str().find("it may have crashed"), std::string::npos) << err.str();
}

// ---- launch: the pieces -------------------------------------------------------------------------

TEST(ZtctlLaunch, MpirunCommand) {
  using V = std::vector<std::string>;
  EXPECT_EQ(mpirun_command("/usr/bin/mpirun", 2, {}, "/b/zt-worker", "tcp://127.0.0.1:9", 4),
            (V{"/usr/bin/mpirun", "-np", "2", "-x", "ZT_COORDINATOR_KEY", "/b/zt-worker",
               "--coordinator", "tcp://127.0.0.1:9"}));
  EXPECT_EQ(mpirun_command("mpirun", 4, {"--bind-to", "none"}, "w", "tcp://h:1", 2),
            (V{"mpirun", "-np", "4", "--oversubscribe", "--bind-to", "none", "-x",
               "ZT_COORDINATOR_KEY", "w", "--coordinator", "tcp://h:1"}));
  // The caller already chose how to oversubscribe.
  EXPECT_EQ(mpirun_command("mpirun", 4, {"--map-by", ":OVERSUBSCRIBE"}, "w", "tcp://h:1", 2),
            (V{"mpirun", "-np", "4", "--map-by", ":OVERSUBSCRIBE", "-x", "ZT_COORDINATOR_KEY", "w",
               "--coordinator", "tcp://h:1"}));
}

TEST(ZtctlLaunch, WorkerEnvironment) {
  using V = std::vector<std::string>;
  EXPECT_EQ(worker_environment({"PATH=/bin", "ZT_COORDINATOR_KEY=old"}, "new", false),
            (V{"PATH=/bin", "ZT_COORDINATOR_KEY=new"}));
  EXPECT_EQ(worker_environment({"PATH=/bin"}, "k", true),
            (V{"PATH=/bin", "ZT_COORDINATOR_KEY=k", "OMPI_ALLOW_RUN_AS_ROOT=1",
               "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"}));
  // The user's own setting stands.
  EXPECT_EQ(
      worker_environment({"OMPI_ALLOW_RUN_AS_ROOT=0"}, "k", true),
      (V{"OMPI_ALLOW_RUN_AS_ROOT=0", "ZT_COORDINATOR_KEY=k", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"}));
}

TEST(ZtctlLaunch, SmallPieces) {
  EXPECT_GE(default_mpi_slots(), 1);
  EXPECT_FALSE(executable_dir().empty());
  EXPECT_TRUE(find_executable("sh").is_ok());
  EXPECT_FALSE(find_executable("zt-no-such-program").is_ok());
  EXPECT_FALSE(find_executable("/nonexistent/mpirun").is_ok());
  EXPECT_EQ(describe_wait_status(3 << 8), "exit 3");
  EXPECT_EQ(exit_code_of(3 << 8), 3);
  EXPECT_EQ(exit_code_of(SIGKILL), 128 + SIGKILL);
  EXPECT_NE(describe_wait_status(SIGKILL).find("killed by signal 9"), std::string::npos);
}

// ---- launch: supervising fake processes ---------------------------------------------------------

// Scripts standing in for zt-coordinator and mpirun; FAKE_COORD / FAKE_MPIRUN pick a behaviour.
// The coordinator writes its pid and the endpoint files like the real one, and on SIGTERM/SIGINT
// records a stop and creates `done`, which the fake workers (mpirun) wait for.
constexpr const char* kFakeCoordinator = R"(#!/bin/bash
args="$*"
while [[ $# -gt 0 ]]; do case $1 in --run-dir) RUN=$2; shift 2;; *) shift;; esac; done
mkdir -p "$RUN"
echo "$args" > "$RUN/coordinator.args"
echo $$ > "$RUN/coordinator.pid"
case $FAKE_COORD in
  exit3) echo "fake coordinator: config error" >&2; exit 3;;
  silent) while true; do sleep 0.05; done;;
esac
stop() {
  echo "2024-05-01T12:00:00Z stopped after step 5" >> "$RUN/events.log"
  touch "$RUN/done"
  exit 0
}
trap stop TERM INT
[[ $FAKE_COORD == deaf ]] && trap '' TERM INT
echo "$FAKE_KEY" > "$RUN/coordinator.key"
echo "tcp://127.0.0.1:1" > "$RUN/coordinator.endpoint"
while true; do sleep 0.05; done
)";

constexpr const char* kFakeMpirun = R"(#!/bin/bash
RUN=$FAKE_RUN_DIR
echo $$ > "$RUN/mpirun.pid"
printf '%s\n' "$@" > "$RUN/mpirun.args"
echo "$ZT_COORDINATOR_KEY" > "$RUN/mpirun.key"
trap 'echo TERM >> "$RUN/mpirun.signals"; exit 143' TERM
trap 'echo INT >> "$RUN/mpirun.signals"; exit 130' INT
case $FAKE_MPIRUN in
  fail) exit 1;;
  forever) while true; do sleep 0.05; done;;
esac
while [[ ! -e $RUN/done ]]; do sleep 0.05; done
exit 0
)";

class LaunchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_script(bin_.file("zt-coordinator"), kFakeCoordinator);
    write_script(bin_.file("mpirun"), kFakeMpirun);
    write_script(bin_.file("zt-worker"), "#!/bin/sh\nexit 0\n");
    std::ofstream(bin_.file("job.yaml")) << "train: {steps: 10}\n";
    Result<protocol::CurveKeyPair> keys = protocol::generate_keypair();
    ASSERT_TRUE(keys.is_ok());
    key_ = keys->public_key;
    run_dir_ = run_.path() + "/run";
    // Before any thread of this test starts: the children inherit these.
    setenv("FAKE_KEY", key_.c_str(), 1);
    setenv("FAKE_RUN_DIR", run_dir_.c_str(), 1);
    setenv("FAKE_COORD", "normal", 1);
    setenv("FAKE_MPIRUN", "normal", 1);
    options_.config = bin_.file("job.yaml");
    options_.run_dir = run_dir_;
    options_.np = 2;
    options_.coordinator_bin = bin_.file("zt-coordinator");
    options_.worker_bin = bin_.file("zt-worker");
    options_.mpirun = bin_.file("mpirun");
    options_.start_timeout = milliseconds(10'000);
    options_.grace = milliseconds(500);
    options_.kill_grace = milliseconds(2'000);
    options_.interrupts = &interrupts_;
    options_.last_signal = &last_signal_;
  }

  static void write_script(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    ::chmod(path.c_str(), 0755);
  }

  // Runs the launch on a thread (as ztctl's main thread would) and returns its exit code; `during`
  // runs meanwhile, e.g. to send signals.
  int launch(const std::function<void()>& during = {}) {
    int rc = -1;
    std::thread t([&] { rc = run_launch(options_, err_); });
    if (during) during();
    t.join();
    return rc;
  }

  bool wait_for_file(const std::string& path, milliseconds timeout = milliseconds(10'000)) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      struct stat st;
      if (::stat(path.c_str(), &st) == 0 && st.st_size > 0) return true;
      std::this_thread::sleep_for(milliseconds(20));
    }
    return false;
  }

  void interrupt(int sig) {
    last_signal_.store(sig);
    interrupts_.fetch_add(1);
  }

  // True when the process whose pid the fake wrote into `file` no longer exists.
  bool gone(const std::string& file) {
    const std::string text = read_file(file);
    if (text.empty()) return true;
    const pid_t pid = static_cast<pid_t>(std::stol(text));
    return ::kill(pid, 0) != 0 && errno == ESRCH;
  }

  TempDir bin_, run_;
  std::string key_, run_dir_;
  LaunchOptions options_;
  std::atomic<int> interrupts_{0}, last_signal_{0};
  std::ostringstream err_;
};

TEST_F(LaunchTest, FirstSignalGoesToTheCoordinatorOnly) {
  const int rc = launch([&] {
    ASSERT_TRUE(wait_for_file(run_dir_ + "/mpirun.args"));
    interrupt(SIGINT);
  });
  EXPECT_EQ(rc, 0) << err_.str();
  EXPECT_EQ(read_file(run_dir_ + "/coordinator.args"),
            "--config " + options_.config + " --run-dir " + run_dir_ + " --world 2\n");
  EXPECT_EQ(read_file(run_dir_ + "/mpirun.args"),
            "-np\n2\n" + std::string(default_mpi_slots() < 2 ? "--oversubscribe\n" : "") +
                "-x\nZT_COORDINATOR_KEY\n" + options_.worker_bin +
                "\n--coordinator\ntcp://127.0.0.1:1\n");
  EXPECT_EQ(read_file(run_dir_ + "/mpirun.key"), key_ + "\n");
  EXPECT_EQ(read_file(run_dir_ + "/mpirun.signals"), "") << "mpirun must not be signalled";
  EXPECT_NE(err_.str().find("SIGINT: asking the coordinator to stop"), std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("the job has ended: zt-coordinator exit 0, mpirun exit 0; run dir " +
                            run_dir_ + "; last event: stopped after step 5"),
            std::string::npos)
      << err_.str();
}

TEST_F(LaunchTest, StaleEndpointIsNotTakenForANewOne) {
  ASSERT_EQ(::mkdir(run_dir_.c_str(), 0755), 0);
  ASSERT_TRUE(protocol::write_endpoint_files(run_dir_, "tcp://127.0.0.1:2", key_).is_ok());
  setenv("FAKE_COORD", "exit3", 1);
  const int rc = launch();
  EXPECT_EQ(rc, 3);
  EXPECT_NE(err_.str().find("zt-coordinator exited (exit 3) before it wrote " + run_dir_ +
                            "/coordinator.endpoint"),
            std::string::npos)
      << err_.str();
  struct stat st;
  EXPECT_NE(::stat((run_dir_ + "/mpirun.args").c_str(), &st), 0) << "mpirun must not start";
}

TEST_F(LaunchTest, CoordinatorThatNeverComesUpIsEnded) {
  setenv("FAKE_COORD", "silent", 1);
  options_.start_timeout = milliseconds(600);
  const int rc = launch();
  EXPECT_EQ(rc, 1);
  EXPECT_NE(err_.str().find("did not write " + run_dir_ + "/coordinator.endpoint within 0.6 s"),
            std::string::npos)
      << err_.str();
  EXPECT_TRUE(gone(run_dir_ + "/coordinator.pid"));
}

TEST_F(LaunchTest, MpirunFailureEndsTheCoordinatorAndTheJobFails) {
  setenv("FAKE_MPIRUN", "fail", 1);
  const int rc = launch();
  EXPECT_EQ(rc, 1) << err_.str();
  EXPECT_NE(err_.str().find("still running 0.5 s after mpirun exited (exit 1)"), std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("mpirun failed"), std::string::npos) << err_.str();
  EXPECT_TRUE(gone(run_dir_ + "/coordinator.pid"));
}

TEST_F(LaunchTest, SecondSignalEndsEverything) {
  setenv("FAKE_COORD", "deaf", 1);  // ignores SIGTERM: only SIGKILL ends it
  setenv("FAKE_MPIRUN", "forever", 1);
  options_.kill_grace = milliseconds(500);
  const int rc = launch([&] {
    ASSERT_TRUE(wait_for_file(run_dir_ + "/mpirun.args"));
    interrupt(SIGTERM);
    std::this_thread::sleep_for(milliseconds(200));
    interrupt(SIGTERM);
  });
  EXPECT_EQ(rc, 128 + SIGKILL) << err_.str();
  EXPECT_NE(err_.str().find("ending the job now"), std::string::npos) << err_.str();
  EXPECT_EQ(read_file(run_dir_ + "/mpirun.signals"), "TERM\n");
  EXPECT_TRUE(gone(run_dir_ + "/coordinator.pid"));
  EXPECT_TRUE(gone(run_dir_ + "/mpirun.pid"));
}

TEST_F(LaunchTest, MissingBinariesAreNamed) {
  options_.coordinator_bin = bin_.file("nope");
  EXPECT_EQ(launch(), 1);
  EXPECT_NE(err_.str().find("no zt-coordinator at " + bin_.file("nope")), std::string::npos)
      << err_.str();
  EXPECT_NE(err_.str().find("--coordinator-bin"), std::string::npos);

  options_.coordinator_bin = bin_.file("zt-coordinator");
  options_.mpirun = "zt-no-such-mpirun";
  err_.str("");
  EXPECT_EQ(launch(), 1);
  EXPECT_NE(err_.str().find("zt-no-such-mpirun not found in PATH"), std::string::npos)
      << err_.str();
}

}  // namespace
}  // namespace zt::ctl
