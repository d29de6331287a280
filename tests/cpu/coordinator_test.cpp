// The coordinator with fake in-process workers: Coordinator::run() runs on a thread of the test,
// and the workers (and a ztctl) are protocol::ClientSocket clients driven from the test thread, so
// every message the real ControlClient would send, and every way a worker misbehaves (silence, a
// wrong world, a duplicate rank, an error, garbage, a wrong key), is scripted exactly.
//
// Every wait is bounded: a client only polls with a zero timeout inside wait_until(), and the
// coordinator thread is joined with a deadline (a coordinator that does not end fails the test and
// is asked to stop, then abandoned, rather than hang the suite).
#include "coordinator/coordinator.h"
#include "runtime/checkpoint/commit.h"
#include "runtime/checkpoint/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/codec.h"
#include "protocol/transport.h"
#include "runtime/config/job_config.h"
#include "runtime/memory/memory_tracker.h"
#include "runtime/profile/step_profile.h"
#include "runtime/zero/partition_plan.h"
#include "tests/cpu/test_util.h"

namespace zt {
namespace {

using protocol::CheckpointAck;
using protocol::Command;
using protocol::CtlReply;
using protocol::CtlRequest;
using protocol::ErrorReport;
using protocol::Heartbeat;
using protocol::JobState;
using protocol::Plan;
using protocol::StepReport;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

constexpr int kSteps = 3;
constexpr double kHeartbeatTimeoutS = 1.5;
constexpr double kHeartbeatIntervalS = 0.2;
// Generous bounds for things that take milliseconds on an idle machine.
constexpr double kWaitS = 5.0;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int count_of(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A fake worker (rank >= 0) or ztctl (rank -1): one ClientSocket, and an inbox holding what the
// coordinator sent until the test takes it.
class FakeClient {
 public:
  FakeClient(std::unique_ptr<protocol::ClientSocket> socket, int rank, int world)
      : socket_(std::move(socket)), rank_(rank), world_(world) {}

  int rank() const { return rank_; }
  protocol::ClientSocket& socket() { return *socket_; }

  void send(const protocol::Message& m) {
    Status st = socket_->send(m);
    EXPECT_TRUE(st.is_ok()) << "rank " << rank_ << ": " << st.to_string();
  }
  void send_raw(const std::string& frame) {
    Status st = socket_->send(frame);
    EXPECT_TRUE(st.is_ok()) << "rank " << rank_ << ": " << st.to_string();
  }
  void hello() { hello_as(rank_, world_); }
  void hello_as(int rank, int world) {
    protocol::WorkerHello h;
    h.rank = rank;
    h.world_size = world;
    h.host = "fakehost" + std::to_string(rank_);
    h.pid = 1000 + rank_;
    h.device_name = "cpu";
    h.host_memory_bytes = int64_t{8} << 30;
    send(h);
  }
  void beat(bool done = false) {
    send(Heartbeat{rank_, step_, unix_ms(), done});
    last_beat_ = Clock::now();
  }
  void report(const StepReport& r) {
    step_ = r.step;
    send(r);
  }
  // A heartbeat when the last one is older than the interval, as ControlClient sends them.
  void beat_if_due() {
    if (seconds_since(last_beat_) >= kHeartbeatIntervalS) beat();
  }
  // Moves whatever has arrived into the inbox (never waits).
  void drain() {
    for (;;) {
      auto m = socket_->recv(std::chrono::milliseconds(0));
      if (!m.is_ok()) {
        EXPECT_EQ(m.status().code(), StatusCode::kTimeout) << m.status().to_string();
        return;
      }
      inbox_.push_back(std::move(m->body));
    }
  }
  // Removes and returns the first message of type T in the inbox that `pred` accepts.
  template <typename T>
  std::optional<T> take(const std::function<bool(const T&)>& pred = {}) {
    for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
      const T* m = std::get_if<T>(&*it);
      if (m && (!pred || pred(*m))) {
        T out = *m;
        inbox_.erase(it);
        return out;
      }
    }
    return std::nullopt;
  }
  // Messages other than the coordinator's heartbeats.
  std::vector<protocol::Message> non_heartbeats() const {
    std::vector<protocol::Message> out;
    for (const auto& m : inbox_)
      if (!std::holds_alternative<Heartbeat>(m)) out.push_back(m);
    return out;
  }
  size_t inbox_size() const { return inbox_.size(); }

 private:
  std::unique_ptr<protocol::ClientSocket> socket_;
  int rank_, world_;
  int64_t step_ = 0;
  Clock::time_point last_beat_{};
  std::vector<protocol::Message> inbox_;
};

bool is_abort(const Command& c) { return c.type == Command::Type::kAbort; }
bool is_stop(const Command& c) { return c.type == Command::Type::kStop; }
bool is_checkpoint(const Command& c) { return c.type == Command::Type::kCheckpointNow; }

// One rank's part of step `step`: rank 0 carries the loss, token and norm sums, rank 1 zeros; the
// memory differs per rank so the metrics line shows which rank's numbers went where.
StepReport step_report(int rank, int64_t step) {
  StepReport r;
  r.rank = rank;
  r.step = step;
  if (rank == 0) {
    r.loss_sum = 41.5 * static_cast<double>(step);
    r.token_count = 64;
    r.grad_norm_sq_part = 2.25 * static_cast<double>(step);
  }
  r.step_ms = 10.0 + rank;
  r.lr = 1e-3;
  r.loss_scale = 1.0;
  for (size_t c = 0; c < protocol::kNumMemCategories; ++c) {
    r.memory_current[c] = (rank + 1) * 1000 * static_cast<int64_t>(c + 1);
    r.memory_peak[c] = r.memory_current[c] + 10 * step + static_cast<int64_t>(c);
  }
  r.memory_total_current = (rank + 1) * 100000;
  r.memory_total_peak = (rank + 1) * 100000 + step;
  for (size_t p = 0; p < protocol::kNumStepPhases; ++p)
    r.time_ms[p] = static_cast<double>((rank + 1) * static_cast<int>(p + 1));
  r.comm_bytes = {1000 * (rank + 1), 0, 10 * step, 0, 0};
  for (size_t c = 0; c < protocol::kNumMemCategories; ++c)
    r.peak_phase[c] = "part " + std::to_string(c) + " of rank " + std::to_string(rank);
  r.total_peak_phase = "backward block " + std::to_string(rank);
  // Odd steps carry a memory timeline (the workers sample; the coordinator writes what comes).
  if (step % 2 == 1)
    for (int part = 0; part < 3; ++part)
      r.memory_timeline.push_back({"part " + std::to_string(part),
                                   {rank, part, step, 0, 0, 0},
                                   {rank, part, step, 1, 1, 1}});
  return r;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    testing::write_llmc_tokens(tmp_.file("tokens.bin"), testing::patterned_tokens(4096, 64));
    run_dir_ = tmp_.file("run");
    config_path_ = tmp_.file("job.yaml");
    std::ofstream(config_path_) << R"(backend: cpu
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
model:
  family: gpt2
  vocab_size: 64
  block_size: 16
  n_layer: 2
  n_head: 2
  n_embd: 32
  seed: 7
data:
  path: tokens.bin
  format: llmc
train:
  steps: )" << kSteps << R"(
zero_optimization:
  stage: 2
  reduce_bucket_size: 4096
comm:
  heartbeat_timeout_s: )" << kHeartbeatTimeoutS
                                << "\n  heartbeat_interval_s: " << kHeartbeatIntervalS << "\n";
  }

  void TearDown() override {
    if (thread_.joinable()) {
      if (!wait_until([&] { return finished_.load(); }, 0.0)) {
        ADD_FAILURE() << "the coordinator was still running at the end of the test";
        coord_->request_stop();
        if (!wait_until([&] { return finished_.load(); }, kWaitS)) {
          // Never hang the suite: abandon the thread and the coordinator it uses.
          thread_.detach();
          (void)coord_.release();
          return;
        }
      }
      thread_.join();
    }
    coord_.reset();
    clients_.clear();
  }

  // Creates the coordinator and runs it on a thread. Call through ASSERT_NO_FATAL_FAILURE.
  void start(int world, double register_timeout_s = 20.0) {
    CoordinatorOptions o;
    o.config_path = config_path_;
    o.run_dir = run_dir_;
    o.world = world;
    o.register_timeout_s = register_timeout_s;
    o.quiet = true;
    auto c = Coordinator::create(o);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    coord_ = std::move(*c);
    auto address = protocol::read_endpoint_files(run_dir_);
    ASSERT_TRUE(address.is_ok()) << address.status().to_string();
    address_ = *address;
    EXPECT_EQ(address_.endpoint, coord_->endpoint());
    EXPECT_EQ(address_.public_key, coord_->public_key());
    thread_ = std::thread([this] {
      result_ = coord_->run();
      finished_.store(true);
    });
  }

  // A client of the running coordinator (nullptr, with a failure, when connecting fails).
  FakeClient* connect(int rank, int world, std::optional<std::string> key = std::nullopt) {
    protocol::CoordinatorAddress a = address_;
    if (key) a.public_key = *key;
    auto s = protocol::ClientSocket::connect(a);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    if (!s.is_ok()) return nullptr;
    clients_.push_back(std::make_unique<FakeClient>(std::move(*s), rank, world));
    return clients_.back().get();
  }

  // Polls until cond() holds or timeout_s passed; meanwhile every client drains its socket and the
  // `beating` ones send heartbeats on schedule. Returns cond()'s last value.
  bool wait_until(const std::function<bool()>& cond, double timeout_s,
                  const std::vector<FakeClient*>& beating = {}) {
    const auto start = Clock::now();
    for (;;) {
      for (auto& c : clients_) c->drain();
      for (FakeClient* c : beating) c->beat_if_due();
      if (cond()) return true;
      if (seconds_since(start) > timeout_s) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  template <typename T>
  std::optional<T> await(FakeClient* c, const std::vector<FakeClient*>& beating = {},
                         const std::function<bool(const T&)>& pred = {},
                         double timeout_s = kWaitS) {
    std::optional<T> got;
    wait_until([&] { return (got = c->take<T>(pred)).has_value(); }, timeout_s, beating);
    return got;
  }

  // A status request on `c`'s connection. ZeroMQ keeps one connection's frames in order, so the
  // reply also proves that everything `c` sent before was handled.
  std::optional<CtlReply> ctl(FakeClient* c, CtlRequest::Type type,
                              const std::vector<FakeClient*>& beating = {}) {
    c->send(CtlRequest{type});
    return await<CtlReply>(c, beating);
  }

  // run()'s result once the coordinator thread ended within timeout_s; nullopt when it did not.
  std::optional<int> finish(double timeout_s = kWaitS,
                            const std::vector<FakeClient*>& beating = {}) {
    if (!wait_until([&] { return finished_.load(); }, timeout_s, beating)) return std::nullopt;
    thread_.join();
    return result_;
  }
  bool running() const { return thread_.joinable() && !finished_.load(); }

  // Registers the workers (hellos in rank order) and returns their plans.
  std::vector<Plan> register_all(const std::vector<FakeClient*>& workers) {
    std::vector<Plan> plans;
    for (FakeClient* w : workers) w->hello();
    for (FakeClient* w : workers) {
      std::optional<Plan> p = await<Plan>(w);
      EXPECT_TRUE(p.has_value()) << "rank " << w->rank() << " received no plan";
      if (p) plans.push_back(*p);
    }
    return plans;
  }

  // Every rank says it is done (its last message); the job then ends.
  void all_done(const std::vector<FakeClient*>& workers) {
    for (FakeClient* w : workers) w->beat(/*done=*/true);
  }

  std::string events() const { return slurp(run_dir_ + "/events.log"); }
  bool wait_event(const std::string& needle, const std::vector<FakeClient*>& beating = {},
                  double timeout_s = kWaitS) {
    return wait_until([&] { return events().find(needle) != std::string::npos; }, timeout_s,
                      beating);
  }

  std::vector<nlohmann::json> metrics() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(slurp(run_dir_ + "/metrics.jsonl"));
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  // Waits until metrics.jsonl has `lines` lines.
  bool wait_metrics(int lines, const std::vector<FakeClient*>& beating) {
    return wait_until([&] { return metrics().size() == static_cast<size_t>(lines); }, kWaitS,
                      beating);
  }

  JobConfig load_config() {
    auto cfg = load_job_config(config_path_);
    EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
    return cfg.is_ok() ? *cfg : JobConfig{};
  }

  testing::TempDir tmp_;
  std::string run_dir_, config_path_;
  protocol::CoordinatorAddress address_;
  std::unique_ptr<Coordinator> coord_;
  std::thread thread_;
  std::atomic<bool> finished_{false};
  int result_ = -1;
  std::vector<std::unique_ptr<FakeClient>> clients_;
};

// 1. Both ranks get the plan the ZeRO engine would compute, and the resolved config.
TEST_F(CoordinatorTest, RegistrationSendsThePartitionPlanAndResolvedConfig) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  std::vector<Plan> plans = register_all({w0, w1});
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(plans[0], plans[1]);

  const JobConfig cfg = load_config();
  auto expected = make_partition_plan(cfg.model, cfg.zero, 2);
  ASSERT_TRUE(expected.is_ok()) << expected.status().to_string();
  const protocol::PartitionSpec& got = plans[0].partition;
  EXPECT_EQ(got.world_size, 2);
  EXPECT_EQ(got.stage, 2);
  EXPECT_EQ(got.total, expected->total);
  EXPECT_EQ(got.shard_total, expected->shard_total);
  EXPECT_EQ(got.summary, expected->summary());
  ASSERT_EQ(got.buckets.size(), expected->buckets.size());
  EXPECT_GT(got.buckets.size(), 3u) << "reduce_bucket_size 4096 should cut the model into buckets";
  for (size_t i = 0; i < got.buckets.size(); ++i) {
    const PlanBucket& e = expected->buckets[i];
    const protocol::BucketSpec want{e.unit,   e.first_param, e.end_param,    e.offset,    e.numel,
                                    e.padded, e.shard,       e.shard_offset, e.persistent};
    EXPECT_EQ(got.buckets[i], want) << "bucket " << i;
  }
  EXPECT_EQ(plans[0].run_dir, std::filesystem::absolute(run_dir_).string());
  EXPECT_EQ(plans[0].start_step, 0);
  EXPECT_TRUE(plans[0].resume_from.empty());

  // The config travels verbatim as config.resolved.yaml, batch sizes resolved for 2 ranks.
  auto sent = parse_job_config(plans[0].config_yaml, "plan", tmp_.path());
  ASSERT_TRUE(sent.is_ok()) << sent.status().to_string();
  EXPECT_EQ(sent->train_micro_batch_size_per_gpu, 2);
  EXPECT_EQ(sent->gradient_accumulation_steps, 1);
  EXPECT_EQ(sent->train_batch_size, 4);
  EXPECT_EQ(sent->model, cfg.model);
  EXPECT_EQ(sent->zero, cfg.zero);
  EXPECT_EQ(sent->train.steps, kSteps);
  EXPECT_DOUBLE_EQ(sent->comm.heartbeat_timeout_s, kHeartbeatTimeoutS);
  const std::string resolved = run_dir_ + "/config.resolved.yaml";
  ASSERT_TRUE(std::filesystem::exists(resolved));
  EXPECT_EQ(slurp(resolved), plans[0].config_yaml);

  const std::string ev = events();
  EXPECT_THAT(ev, HasSubstr("registered rank 0 of 2: host fakehost0, pid 1000"));
  EXPECT_THAT(ev, HasSubstr("registered rank 1 of 2: host fakehost1, pid 1001"));
  EXPECT_THAT(ev, HasSubstr("plan sent to 2 ranks"));
  EXPECT_LT(ev.find("registered rank 1"), ev.find("plan sent"));

  all_done({w0, w1});
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_THAT(events(), HasSubstr("finished 0 steps"));
}

// 2. One metrics line per step, written once every rank has reported it.
TEST_F(CoordinatorTest, StepReportsAggregateIntoMetricsOnceEveryRankReported) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  ASSERT_EQ(register_all({w0, w1}).size(), 2u);
  const std::vector<FakeClient*> both = {w0, w1};

  w0->report(step_report(0, 1));
  std::optional<CtlReply> st = ctl(w0, CtlRequest::Type::kStatus, both);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->step, 0) << "step 1 is complete with rank 0's report alone";
  EXPECT_TRUE(metrics().empty()) << "a metrics line before rank 1 reported step 1";

  w1->report(step_report(1, 1));
  ASSERT_TRUE(wait_metrics(1, both));
  for (int64_t step = 2; step <= kSteps; ++step) {
    w0->report(step_report(0, step));
    w1->report(step_report(1, step));
  }
  ASSERT_TRUE(wait_metrics(kSteps, both));
  all_done(both);
  ASSERT_EQ(finish(), std::optional<int>(0));

  const std::vector<nlohmann::json> lines = metrics();
  ASSERT_EQ(lines.size(), static_cast<size_t>(kSteps));
  for (int64_t step = 1; step <= kSteps; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const nlohmann::json& j = lines[static_cast<size_t>(step - 1)];
    EXPECT_EQ(j["step"].get<int64_t>(), step);
    EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 41.5 * static_cast<double>(step) / 64.0);
    EXPECT_DOUBLE_EQ(j["grad_norm"].get<double>(), std::sqrt(2.25 * static_cast<double>(step)));
    EXPECT_EQ(j["tokens"].get<int64_t>(), 64);
    EXPECT_DOUBLE_EQ(j["lr"].get<double>(), 1e-3);
    EXPECT_DOUBLE_EQ(j["loss_scale"].get<double>(), 1.0);
    EXPECT_FALSE(j["skipped"].get<bool>());
    EXPECT_DOUBLE_EQ(j["step_ms"].get<double>(), 11.0);  // the slowest rank
    EXPECT_DOUBLE_EQ(j["tokens_per_s"].get<double>(), 64.0 / 0.011);
    const nlohmann::json& mem = j["peak_memory_bytes"];
    ASSERT_EQ(mem.size(), 2u);
    for (int rank = 0; rank < 2; ++rank) {
      const StepReport want = step_report(rank, step);
      const nlohmann::json& m = mem[static_cast<size_t>(rank)];
      EXPECT_EQ(m["rank"].get<int>(), rank);
      for (size_t c = 0; c < kNumMemCategories; ++c) {
        const char* name = mem_category_name(static_cast<MemCategory>(c));
        EXPECT_EQ(m[name].get<int64_t>(), want.memory_peak[c]) << "rank " << rank << " " << name;
      }
      EXPECT_EQ(m["total"].get<int64_t>(), want.memory_total_peak) << "rank " << rank;
      // Note [step profile]: each rank's time by phase, bytes sent and peak phases.
      const nlohmann::json& t = j["time_ms_by_rank"][static_cast<size_t>(rank)];
      const nlohmann::json& ph = j["peak_phase"][static_cast<size_t>(rank)];
      EXPECT_EQ(t["rank"].get<int>(), rank);
      EXPECT_EQ(ph["rank"].get<int>(), rank);
      for (size_t p = 0; p < kNumStepPhases; ++p) {
        const char* name = step_phase_name(static_cast<StepPhase>(p));
        EXPECT_DOUBLE_EQ(t[name].get<double>(), want.time_ms[p]) << name;
        // The job's line: the mean over the ranks (1x and 2x the phase's number).
        EXPECT_DOUBLE_EQ(j["time_ms"][name].get<double>(), 1.5 * static_cast<double>(p + 1));
      }
      EXPECT_EQ(j["comm_bytes"][static_cast<size_t>(rank)]["rank"].get<int>(), rank);
      EXPECT_EQ(j["comm_bytes"][static_cast<size_t>(rank)]["bytes"].get<int64_t>(),
                1000 * (rank + 1) + 10 * step);
      for (size_t c = 0; c < kNumMemCategories; ++c) {
        const char* name = mem_category_name(static_cast<MemCategory>(c));
        EXPECT_EQ(ph[name].get<std::string>(), want.peak_phase[c]);
      }
      EXPECT_EQ(ph["total"].get<std::string>(), want.total_peak_phase);
    }
  }
  // memory.jsonl: the timelines of the steps that carried one, rank by rank, in the order sent.
  std::vector<nlohmann::json> mem;
  {
    std::istringstream in(slurp(run_dir_ + "/memory.jsonl"));
    for (std::string line; std::getline(in, line);) mem.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(mem.size(), 2u * 2u * 3u);  // steps 1 and 3, 2 ranks, 3 parts
  size_t i = 0;
  for (int64_t step : {1, 3})
    for (int rank = 0; rank < 2; ++rank)
      for (int part = 0; part < 3; ++part, ++i) {
        SCOPED_TRACE("memory.jsonl line " + std::to_string(i + 1));
        const nlohmann::json& m = mem[i];
        EXPECT_EQ(m["step"].get<int64_t>(), step);
        EXPECT_EQ(m["rank"].get<int>(), rank);
        EXPECT_EQ(m["phase"].get<std::string>(), "part " + std::to_string(part));
        EXPECT_EQ(m["bytes"]["parameters"].get<int64_t>(), rank);
        EXPECT_EQ(m["bytes"]["gradients"].get<int64_t>(), part);
        EXPECT_EQ(m["bytes"]["optimizer_states"].get<int64_t>(), step);
        EXPECT_EQ(m["peak_bytes"]["workspace"].get<int64_t>(), 1);
        EXPECT_EQ(m["bytes"].size(), kNumMemCategories);
      }
  EXPECT_THAT(events(), HasSubstr("finished 3 steps"));
}

// 3. Two workers claiming one rank fail the job; the registered one is told to abort.
TEST_F(CoordinatorTest, DuplicateRankFailsTheJob) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* first = connect(0, 2);
  FakeClient* second = connect(1, 2);  // claims rank 0 below
  ASSERT_TRUE(first && second);
  first->hello();
  ASSERT_TRUE(wait_event("registered rank 0"));
  second->hello_as(0, 2);
  EXPECT_EQ(finish(), std::optional<int>(1));
  EXPECT_THAT(events(), HasSubstr("rank 0 registered twice"));
  std::optional<Command> abort = await<Command>(first, {}, is_abort);
  ASSERT_TRUE(abort.has_value()) << "the registered rank 0 was not told to abort";
  EXPECT_THAT(abort->reason, HasSubstr("registered twice"));
  // The duplicate is not registered; it learns why from an ErrorReport.
  std::optional<ErrorReport> refused = await<ErrorReport>(second);
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(refused->message, HasSubstr("registered twice"));
  EXPECT_FALSE(first->take<Plan>().has_value());
}

// 4. A rank that never registers fails the job after register_timeout_s, naming it.
TEST_F(CoordinatorTest, MissingRankFailsAfterTheRegistrationTimeout) {
  ASSERT_NO_FATAL_FAILURE(start(2, /*register_timeout_s=*/0.5));
  FakeClient* w0 = connect(0, 2);
  ASSERT_TRUE(w0);
  w0->hello();
  EXPECT_EQ(finish(kWaitS), std::optional<int>(1));
  EXPECT_THAT(events(), HasSubstr("failed: ranks 1 of 2 did not register within 0.5 s"));
  std::optional<Command> abort = await<Command>(w0, {}, is_abort);
  ASSERT_TRUE(abort.has_value());
  EXPECT_THAT(abort->reason, HasSubstr("ranks 1 of 2"));
  EXPECT_FALSE(std::filesystem::exists(run_dir_ + "/config.resolved.yaml"));
}

// 4b. With no worker at all the message says how to start them.
TEST_F(CoordinatorTest, NoWorkerAtAllFailsWithAHint) {
  ASSERT_NO_FATAL_FAILURE(start(0, /*register_timeout_s=*/0.3));
  EXPECT_EQ(finish(kWaitS), std::optional<int>(1));
  EXPECT_THAT(events(), HasSubstr("no worker registered within 0.3 s"));
  EXPECT_THAT(events(), HasSubstr("zt-worker --coordinator " + address_.endpoint));
}

// 5. A hello with another world size than --world fails, naming both sizes.
TEST_F(CoordinatorTest, WrongWorldSizeFailsNamingBothSizes) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w = connect(0, 3);
  ASSERT_TRUE(w);
  w->hello();
  EXPECT_EQ(finish(), std::optional<int>(1));
  EXPECT_THAT(events(), HasSubstr("rank 0 on fakehost0 reports a world of 3 but the job has 2"));
  std::optional<ErrorReport> refused = await<ErrorReport>(w);
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(refused->message, HasSubstr("world of 3"));
}

// 5b. Without --world the first worker sets it; a later one that disagrees fails the job.
TEST_F(CoordinatorTest, WorldFromTheFirstWorkerMustMatchTheOthers) {
  ASSERT_NO_FATAL_FAILURE(start(0));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 4);
  ASSERT_TRUE(w0 && w1);
  w0->hello();
  ASSERT_TRUE(wait_event("registered rank 0 of 2"));
  w1->hello();
  EXPECT_EQ(finish(), std::optional<int>(1));
  EXPECT_THAT(events(), HasSubstr("reports a world of 4 but the job has 2 ranks"));
  std::optional<Command> abort = await<Command>(w0, {}, is_abort);
  ASSERT_TRUE(abort.has_value());
  EXPECT_THAT(abort->reason, HasSubstr("world of 4"));
}

// 6. A worker silent for heartbeat_timeout_s fails the job; the others are told to abort.
TEST_F(CoordinatorTest, SilentWorkerFailsTheJobAfterTheHeartbeatTimeout) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  ASSERT_EQ(register_all({w0, w1}).size(), 2u);
  // Its last word. The clock starts before the send, so the coordinator can only hear it later.
  const auto last_word = Clock::now();
  w1->beat();
  // Only rank 0 keeps beating.
  const std::optional<int> rc = finish(kHeartbeatTimeoutS + kWaitS, {w0});
  const double waited = seconds_since(last_word);
  ASSERT_EQ(rc, std::optional<int>(1));
  EXPECT_GE(waited, kHeartbeatTimeoutS) << "declared silent before the heartbeat timeout";
  const std::string ev = events();
  EXPECT_THAT(ev, HasSubstr("rank 1 on fakehost1 (pid 1001) has been silent for"));
  EXPECT_THAT(ev, Not(HasSubstr("rank 0 on fakehost0 (pid 1000) has been silent")));
  std::optional<Command> abort = await<Command>(w0, {}, is_abort);
  ASSERT_TRUE(abort.has_value());
  EXPECT_THAT(abort->reason, HasSubstr("rank 1"));
  EXPECT_THAT(abort->reason, HasSubstr("silent"));
}

// 6b. Waiting for the last rank to register is not silence: a worker sends nothing between its
// hello and the plan (ControlClient does not), however long registration takes.
TEST_F(CoordinatorTest, SlowRegistrationIsNotSilence) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  w0->hello();
  ASSERT_TRUE(wait_event("registered rank 0"));
  std::this_thread::sleep_for(std::chrono::duration<double>(kHeartbeatTimeoutS + 0.3));
  w1->hello();
  ASSERT_TRUE(await<Plan>(w0).has_value());
  ASSERT_TRUE(await<Plan>(w1).has_value());
  // Both beat from now on; the job must keep running past a few of the coordinator's checks.
  EXPECT_FALSE(wait_until([&] { return finished_.load(); }, 0.5, {w0, w1}))
      << "failed right after the plan: " << events();
  all_done({w0, w1});
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_THAT(events(), Not(HasSubstr("silent")));
}

// 7. A worker's ErrorReport fails the job with its message; the others are told to abort.
TEST_F(CoordinatorTest, WorkerErrorFailsTheJob) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  ASSERT_EQ(register_all({w0, w1}).size(), 2u);
  const std::string why = "out of memory allocating 12345 bytes of gradients";
  w1->send(ErrorReport{1, "fakehost1", why});
  EXPECT_EQ(finish(kWaitS, {w0}), std::optional<int>(1));
  EXPECT_THAT(events(), HasSubstr("rank 1 on fakehost1 (pid 1001) reported: " + why));
  std::optional<Command> abort = await<Command>(w0, {}, is_abort);
  ASSERT_TRUE(abort.has_value());
  EXPECT_THAT(abort->reason, HasSubstr(why));
}

// 8. ztctl: status, checkpoint (not available yet) and stop from a third client.
TEST_F(CoordinatorTest, CtlStatusCheckpointAndStop) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  FakeClient* ztctl = connect(-1, 0);
  ASSERT_TRUE(w0 && w1 && ztctl);

  // Before the workers: still starting.
  std::optional<CtlReply> st = ctl(ztctl, CtlRequest::Type::kStatus);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state, JobState::kStarting);
  EXPECT_TRUE(st->ranks.empty());

  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  w0->report(step_report(0, 1));
  w1->report(step_report(1, 1));
  ASSERT_TRUE(wait_metrics(1, both));

  st = ctl(ztctl, CtlRequest::Type::kStatus, both);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(st->ok);
  EXPECT_EQ(st->state, JobState::kRunning);
  EXPECT_EQ(st->world_size, 2);
  EXPECT_EQ(st->step, 1);
  EXPECT_EQ(st->total_steps, kSteps);
  EXPECT_DOUBLE_EQ(st->loss, 41.5 / 64.0);
  ASSERT_EQ(st->ranks.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(st->ranks[r].rank, r);
    EXPECT_EQ(st->ranks[r].host, "fakehost" + std::to_string(r));
    EXPECT_EQ(st->ranks[r].peak, step_report(r, 1).memory_peak);
    EXPECT_EQ(st->ranks[r].current, step_report(r, 1).memory_current);
  }

  std::optional<CtlReply> ck = ctl(ztctl, CtlRequest::Type::kCheckpoint, both);
  ASSERT_TRUE(ck.has_value());
  EXPECT_TRUE(ck->ok);
  EXPECT_THAT(ck->message, HasSubstr("checkpoint requested"));
  EXPECT_EQ(ck->state, JobState::kRunning);
  EXPECT_EQ(ck->last_checkpoint_step, 0);
  for (FakeClient* w : both) {
    std::optional<Command> c = await<Command>(w, both, is_checkpoint);
    ASSERT_TRUE(c.has_value()) << "rank " << w->rank() << " was not asked to checkpoint";
  }

  std::optional<CtlReply> stop = ctl(ztctl, CtlRequest::Type::kStop, both);
  ASSERT_TRUE(stop.has_value());
  EXPECT_TRUE(stop->ok);
  EXPECT_EQ(stop->state, JobState::kStopping);
  for (FakeClient* w : both) {
    std::optional<Command> c = await<Command>(w, both, is_stop);
    ASSERT_TRUE(c.has_value()) << "rank " << w->rank() << " was not told to stop";
    EXPECT_EQ(c->at_step, 1);
  }
  st = ctl(ztctl, CtlRequest::Type::kStatus, both);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state, JobState::kStopping);
  EXPECT_TRUE(running());

  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_THAT(events(), HasSubstr("stop requested by ztctl"));
  EXPECT_THAT(events(), HasSubstr("stopped after step 1"));
  EXPECT_EQ(metrics().size(), 1u);
}

// Checkpoint commit (Note [checkpoint commit]): the ranks' acks for a step are collected; only when
// the last arrives does the coordinator write the manifest (with every rank's file, size and
// checksum and the trainer state), publish the directory and point `latest` at it.
TEST_F(CoordinatorTest, CommitsACheckpointOnceEveryRankHasAcked) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  const std::string root = run_dir_ + "/checkpoints";
  ASSERT_TRUE(prepare_staging_dir(root, 3).is_ok());
  auto ack_of = [&](int rank, const std::string& contents) {
    const std::string file = shard_file_name(rank);
    std::ofstream(staging_dir(root, 3) + "/" + file) << contents;
    CheckpointAck a;
    a.rank = rank;
    a.step = 3;
    a.files = {{file, contents.size(), 0x1234000000000000ull + static_cast<uint64_t>(rank)}};
    a.applied_steps = 2;
    a.loss_scale = 1.0;
    a.next_sequence = 48;
    a.write_ms = 10.0 + rank;
    return a;
  };
  w0->send(ack_of(0, "rank zero bytes"));
  // One ack: nothing committed yet.
  (void)wait_until([] { return false; }, 0.3, both);  // give a premature commit time to happen
  EXPECT_FALSE(std::filesystem::exists(root + "/latest"));
  w1->send(ack_of(1, "rank one, more bytes"));
  ASSERT_TRUE(wait_event("checkpoint step 3 committed", both)) << events();
  EXPECT_EQ(slurp(root + "/latest"), "step_00000003\n");
  auto m = read_manifest(root + "/step_00000003");
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->step, 3);
  EXPECT_EQ(m->world_size, 2);
  EXPECT_EQ(m->trainer.applied_steps, 2);
  EXPECT_EQ(m->trainer.next_sequence, 48);
  ASSERT_EQ(m->shards.size(), 2u);
  EXPECT_EQ(m->shards[1].size, std::string("rank one, more bytes").size());
  EXPECT_EQ(m->shards[1].xxh3, 0x1234000000000001ull);
  EXPECT_FALSE(m->shards[0].pieces.empty());
  // The commit runs on the committer's thread; the loop picks its outcome up on its next turn.
  FakeClient* ztctl = connect(-1, 0);
  std::optional<CtlReply> st;
  ASSERT_TRUE(wait_until(
      [&] {
        st = ctl(ztctl, CtlRequest::Type::kStatus, both);
        return st.has_value() && st->last_checkpoint_step == 3;
      },
      kWaitS, both));
  EXPECT_EQ(st->last_checkpoint_dir, root + "/step_00000003");
  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
}

// Ranks that disagree on the trainer state, or whose file is not what they reported, fail the
// job; nothing is committed and `latest` is untouched.
TEST_F(CoordinatorTest, InconsistentCheckpointAcksFailTheJob) {
  for (const bool wrong_size : {false, true}) {
    SCOPED_TRACE(wrong_size ? "wrong size" : "disagreeing state");
    ASSERT_NO_FATAL_FAILURE(start(2));
    FakeClient* w0 = connect(0, 2);
    FakeClient* w1 = connect(1, 2);
    ASSERT_TRUE(w0 && w1);
    const std::vector<FakeClient*> both = {w0, w1};
    ASSERT_EQ(register_all(both).size(), 2u);
    const std::string root = run_dir_ + "/checkpoints";
    ASSERT_TRUE(prepare_staging_dir(root, 5).is_ok());
    for (int r = 0; r < 2; ++r) {
      const std::string file = shard_file_name(r);
      std::ofstream(staging_dir(root, 5) + "/" + file) << "0123456789";
      CheckpointAck a;
      a.rank = r;
      a.step = 5;
      a.files = {{file, wrong_size && r == 1 ? 11u : 10u, 7}};
      a.applied_steps = wrong_size ? 5 : 5 - r;
      a.next_sequence = 80;
      both[static_cast<size_t>(r)]->send(a);
    }
    EXPECT_EQ(finish(), std::optional<int>(1));
    EXPECT_THAT(events(), HasSubstr(wrong_size ? "not committing" : "disagrees with rank 0"));
    EXPECT_FALSE(std::filesystem::exists(root + "/latest"));
    EXPECT_FALSE(std::filesystem::exists(root + "/step_00000005"));
    std::filesystem::remove_all(run_dir_);
  }
}

// 9. request_stop() (SIGINT/SIGTERM) while running: the workers are told to stop.
TEST_F(CoordinatorTest, RequestStopWhileRunningStopsTheWorkers) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  coord_->request_stop();
  for (FakeClient* w : both) {
    std::optional<Command> c = await<Command>(w, both, is_stop);
    ASSERT_TRUE(c.has_value()) << "rank " << w->rank() << " was not told to stop";
    EXPECT_EQ(c->at_step, 0);
  }
  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_THAT(events(), HasSubstr("stop requested by signal"));
  EXPECT_THAT(events(), HasSubstr("stopped after step 0"));
}

// 9b. A stop before every rank registered ends the job; the registered ones are told (they would
// otherwise wait for a plan until their own registration timeout).
TEST_F(CoordinatorTest, RequestStopDuringRegistrationEndsTheJob) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  ASSERT_TRUE(w0);
  w0->hello();
  ASSERT_TRUE(wait_event("registered rank 0"));
  coord_->request_stop();
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_THAT(events(), HasSubstr("stopped before the job started"));
  std::optional<Command> c = await<Command>(w0, {}, is_abort);
  ASSERT_TRUE(c.has_value());
  EXPECT_THAT(c->reason, HasSubstr("stopped before it started"));
}

// 10. Without the coordinator's key a client gets nothing through, and changes nothing.
TEST_F(CoordinatorTest, ClientWithAWrongKeyIsIgnored) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  auto made_up = protocol::generate_keypair();
  ASSERT_TRUE(made_up.is_ok()) << made_up.status().to_string();
  FakeClient* impostor = connect(0, 2, made_up->public_key);
  ASSERT_TRUE(impostor);
  impostor->hello();
  impostor->send(CtlRequest{CtlRequest::Type::kStop});
  EXPECT_FALSE(wait_until([&] { return impostor->inbox_size() > 0; }, 1.0))
      << "the impostor received a message";
  EXPECT_FALSE(impostor->socket().handshake_completed());

  FakeClient* ztctl = connect(-1, 0);
  ASSERT_TRUE(ztctl);
  std::optional<CtlReply> st = ctl(ztctl, CtlRequest::Type::kStatus);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state, JobState::kStarting);
  EXPECT_EQ(st->world_size, 0);
  EXPECT_TRUE(st->ranks.empty());
  EXPECT_THAT(events(), Not(HasSubstr("registered rank")));
  EXPECT_THAT(events(), Not(HasSubstr("stop requested")));

  // Rank 0 is still free for the real worker.
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  ASSERT_EQ(register_all({w0, w1}).size(), 2u);
  all_done({w0, w1});
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_EQ(impostor->inbox_size(), 0u);
}

// Frames that are no message: lengths that are not whole 8-byte words never decode.
std::vector<std::string> garbage_frames(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string f(static_cast<size_t>(8 * (i % 20) + 1 + i % 7), '\0');
    for (char& c : f) c = static_cast<char>(rng() & 0xff);
    out.push_back(std::move(f));
  }
  return out;
}

// 11. Garbage from an authenticated client is dropped and counted; the job goes on.
TEST_F(CoordinatorTest, GarbageFramesAreDroppedAndTheJobContinues) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* noise = connect(-1, 0);
  ASSERT_TRUE(noise);
  for (const std::string& f : garbage_frames(5, 1)) noise->send_raw(f);
  // The reply on the same connection proves the five frames before it were handled.
  std::optional<CtlReply> st = ctl(noise, CtlRequest::Type::kStatus);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->state, JobState::kStarting);
  EXPECT_EQ(count_of(events(), "dropped a frame"), 5);
  EXPECT_THAT(events(), HasSubstr("dropped a frame (5 so far)"));
  EXPECT_TRUE(noise->non_heartbeats().empty());

  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  // A registered worker's garbage is dropped the same way.
  w0->send_raw(garbage_frames(1, 2)[0]);
  for (int64_t step = 1; step <= kSteps; ++step) {
    w0->report(step_report(0, step));
    w1->report(step_report(1, step));
  }
  ASSERT_TRUE(wait_metrics(kSteps, both));
  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_EQ(count_of(events(), "dropped a frame"), 6);
  EXPECT_THAT(events(), HasSubstr("finished 3 steps"));
}

// 11b. A flood of garbage cannot fill the disk: events.log gets the first 100 drops only.
TEST_F(CoordinatorTest, GarbageFloodIsLoggedRateLimited) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* noise = connect(-1, 0);
  ASSERT_TRUE(noise);
  for (const std::string& f : garbage_frames(150, 3)) noise->send_raw(f);
  std::optional<CtlReply> st = ctl(noise, CtlRequest::Type::kStatus);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(count_of(events(), "dropped a frame"), 100);
  coord_->request_stop();
  EXPECT_EQ(finish(), std::optional<int>(0));
}

// A step report naming another rank, or a step already written, is ignored (the report's rank
// indexes the coordinator's tables; it must be the sender's own).
TEST_F(CoordinatorTest, ForeignOrStaleStepReportsAreIgnored) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  w0->send(step_report(7, 1));   // outside the world
  w0->send(step_report(-1, 1));  // likewise
  w0->send(step_report(1, 1));   // rank 1's, from rank 0
  std::optional<CtlReply> st = ctl(w0, CtlRequest::Type::kStatus, both);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->step, 0);
  EXPECT_TRUE(metrics().empty());
  EXPECT_EQ(count_of(events(), "ignored a StepReport for rank"), 3);

  w0->report(step_report(0, 1));
  w1->report(step_report(1, 1));
  ASSERT_TRUE(wait_metrics(1, both));
  w1->report(step_report(1, 1));  // again: already written
  st = ctl(w1, CtlRequest::Type::kStatus, both);
  ASSERT_TRUE(st.has_value());
  EXPECT_THAT(events(), HasSubstr("ignored a StepReport of step 1 from rank 1"));
  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_EQ(metrics().size(), 1u);
}

// A hello once the job runs is refused with a reason; the job is unaffected.
TEST_F(CoordinatorTest, LateRegistrationIsRefused) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  FakeClient* late = connect(1, 2);
  ASSERT_TRUE(w0 && w1 && late);
  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  late->hello();
  std::optional<ErrorReport> refused = await<ErrorReport>(late, both);
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(refused->message, HasSubstr("already running"));
  EXPECT_TRUE(running());
  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
  EXPECT_THAT(events(), HasSubstr("refused a late registration of rank 1"));
}

// The snapshot behind --metrics-port follows the job: state, ranks, the latest step exactly as
// metrics.jsonl has it, running totals, memory peaks and the commits.
TEST_F(CoordinatorTest, MetricsSnapshotFollowsTheJob) {
  ASSERT_NO_FATAL_FAILURE(start(2));
  MetricsSnapshot s = coord_->metrics_snapshot();
  EXPECT_EQ(s.state, JobState::kStarting);
  EXPECT_EQ(s.run_dir, run_dir_);
  EXPECT_EQ(s.zero_stage, 2);
  EXPECT_EQ(s.steps_planned, kSteps);
  EXPECT_FALSE(s.last_step.has_value());
  EXPECT_TRUE(s.ranks.empty());

  FakeClient* w0 = connect(0, 2);
  FakeClient* w1 = connect(1, 2);
  ASSERT_TRUE(w0 && w1);
  const std::vector<FakeClient*> both = {w0, w1};
  ASSERT_EQ(register_all(both).size(), 2u);
  for (int64_t step = 1; step <= 2; ++step) {
    w0->report(step_report(0, step));
    StepReport r1 = step_report(1, step);
    r1.overflow = step == 2;
    w1->report(r1);
  }
  ASSERT_TRUE(wait_metrics(2, both));
  // The loop publishes on its next turn (at most its 100 ms poll).
  ASSERT_TRUE(
      wait_until([&] { return coord_->metrics_snapshot().steps_completed == 2; }, kWaitS, both));
  s = coord_->metrics_snapshot();
  EXPECT_EQ(s.state, JobState::kRunning);
  EXPECT_EQ(s.world_size, 2);
  ASSERT_TRUE(s.last_step.has_value());
  const nlohmann::json last = metrics().back();
  EXPECT_EQ(s.last_step->step, 2);
  EXPECT_EQ(s.last_step->loss, last["loss"].get<double>());
  EXPECT_EQ(s.last_step->lr, last["lr"].get<double>());
  EXPECT_TRUE(std::isinf(s.last_step->grad_norm)) << "step 2 overflowed";
  EXPECT_DOUBLE_EQ(s.last_step->duration_seconds, 0.011) << "the slowest rank's 11 ms";
  EXPECT_EQ(s.skipped_steps, 1);
  EXPECT_EQ(s.tokens, 128);
  EXPECT_EQ(s.workers_alive, 2);
  ASSERT_EQ(s.ranks.size(), 2u);
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    const RankFigures& f = s.ranks[static_cast<size_t>(rank)];
    EXPECT_EQ(f.rank, rank);
    EXPECT_EQ(f.host, "fakehost" + std::to_string(rank));
    EXPECT_EQ(f.pid, 1000 + rank);
    EXPECT_LT(f.heartbeat_age_seconds, kHeartbeatTimeoutS);
    const StepReport want = step_report(rank, 2);  // peaks grow with the step
    for (size_t c = 0; c < kNumMemCategories; ++c) {
      EXPECT_EQ(f.memory_peak[c], want.memory_peak[c]);
      EXPECT_EQ(f.memory_current[c], want.memory_current[c]);
    }
    EXPECT_EQ(f.memory_total_peak, want.memory_total_peak);
    EXPECT_EQ(f.memory_total_current, want.memory_total_current);
  }

  // A commit counts once the committer's outcome is collected.
  const std::string root = run_dir_ + "/checkpoints";
  ASSERT_TRUE(prepare_staging_dir(root, 2).is_ok());
  for (FakeClient* w : both) {
    const std::string file = shard_file_name(w->rank());
    std::ofstream(staging_dir(root, 2) + "/" + file) << "bytes";
    CheckpointAck a;
    a.rank = w->rank();
    a.step = 2;
    a.files = {{file, 5, 1}};
    a.applied_steps = 1;
    a.loss_scale = 1.0;
    a.next_sequence = 8;
    w->send(a);
  }
  ASSERT_TRUE(wait_until([&] { return coord_->metrics_snapshot().checkpoints_committed == 1; },
                         kWaitS, both))
      << events();
  EXPECT_EQ(coord_->metrics_snapshot().last_checkpoint_step, 2);

  all_done(both);
  EXPECT_EQ(finish(), std::optional<int>(0));
  s = coord_->metrics_snapshot();
  EXPECT_EQ(s.state, JobState::kFinished);
  EXPECT_EQ(s.workers_alive, 0) << "every rank said it was done";
}

}  // namespace
}  // namespace zt
