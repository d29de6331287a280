// The coordinator's Prometheus page: the exact text of a small snapshot, the format's escaping and
// special values, the rules promtool's linter enforces (checked here on every page shape, so a new
// family that breaks them fails without promtool), and the HTTP server on a real loopback socket.
#include "coordinator/metrics_exporter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "coordinator/metrics_server.h"

namespace zt {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

MetricsSnapshot small_snapshot() {
  MetricsSnapshot s;
  s.state = protocol::JobState::kRunning;
  s.run_dir = "runs/a";
  s.optimizer = "AdamW";
  s.backend = "cpu";
  s.world_size = 1;
  s.zero_stage = 2;
  s.steps_planned = 10;
  s.steps_completed = 3;
  s.last_step = StepFigures{3, 2.5, 0.001, 1.25, 1.0, 1000.0, 0.064};
  s.skipped_steps = 1;
  s.tokens = 192;
  s.workers_alive = 1;
  s.checkpoints_committed = 1;
  s.last_checkpoint_step = 2;
  RankFigures r;
  r.rank = 0;
  r.host = "h";
  r.pid = 42;
  r.heartbeat_age_seconds = 0.5;
  r.memory_current = {1, 2, 3, 4, 5, 6};
  r.memory_peak = {10, 20, 30, 40, 50, 60};
  r.memory_total_current = 21;
  r.memory_total_peak = 150;
  r.offload_resident_bytes = 7;
  r.offload_disk_bytes = 8;
  s.ranks.push_back(r);
  return s;
}

TEST(MetricsExporterTest, ExactTextOfASmallSnapshot) {
  const std::string want =
      R"(# HELP zerotrain_job_state State of the job: 1 for the current state, 0 for the others.
# TYPE zerotrain_job_state gauge
zerotrain_job_state{state="starting"} 0
zerotrain_job_state{state="running"} 1
zerotrain_job_state{state="checkpointing"} 0
zerotrain_job_state{state="stopping"} 0
zerotrain_job_state{state="finished"} 0
zerotrain_job_state{state="failed"} 0
# HELP zerotrain_job_info The job's run directory, optimizer and backend.
# TYPE zerotrain_job_info gauge
zerotrain_job_info{run_dir="runs/a",optimizer="AdamW",backend="cpu"} 1
# HELP zerotrain_world_size Number of workers (ranks) in the job; 0 until known.
# TYPE zerotrain_world_size gauge
zerotrain_world_size 1
# HELP zerotrain_zero_stage ZeRO stage (zero_optimization.stage).
# TYPE zerotrain_zero_stage gauge
zerotrain_zero_stage 2
# HELP zerotrain_steps_planned Optimizer steps the job runs to (train.steps).
# TYPE zerotrain_steps_planned gauge
zerotrain_steps_planned 10
# HELP zerotrain_steps_completed_total Optimizer steps completed (a resumed job counts from its checkpoint's step).
# TYPE zerotrain_steps_completed_total counter
zerotrain_steps_completed_total 3
# HELP zerotrain_loss Mean cross-entropy over the global batch of the latest completed step.
# TYPE zerotrain_loss gauge
zerotrain_loss 2.5
# HELP zerotrain_learning_rate Learning rate applied at the latest step.
# TYPE zerotrain_learning_rate gauge
zerotrain_learning_rate 0.001
# HELP zerotrain_grad_norm Global gradient L2 norm of the latest step, before clipping; +Inf when it was skipped on an fp16 overflow.
# TYPE zerotrain_grad_norm gauge
zerotrain_grad_norm 1.25
# HELP zerotrain_loss_scale fp16 dynamic loss scale after the latest step (1 without fp16).
# TYPE zerotrain_loss_scale gauge
zerotrain_loss_scale 1
# HELP zerotrain_tokens_per_second Training throughput of the latest step.
# TYPE zerotrain_tokens_per_second gauge
zerotrain_tokens_per_second 1000
# HELP zerotrain_step_duration_seconds Duration of the latest step on its slowest rank.
# TYPE zerotrain_step_duration_seconds gauge
zerotrain_step_duration_seconds 0.064
# HELP zerotrain_skipped_steps_total Steps skipped on an fp16 overflow since this coordinator started.
# TYPE zerotrain_skipped_steps_total counter
zerotrain_skipped_steps_total 1
# HELP zerotrain_tokens_total Target tokens trained on since this coordinator started.
# TYPE zerotrain_tokens_total counter
zerotrain_tokens_total 192
# HELP zerotrain_workers_alive Registered ranks that have not finished and were heard from within the heartbeat timeout.
# TYPE zerotrain_workers_alive gauge
zerotrain_workers_alive 1
# HELP zerotrain_checkpoints_committed_total Checkpoints committed (manifest written, directory renamed) by this coordinator.
# TYPE zerotrain_checkpoints_committed_total counter
zerotrain_checkpoints_committed_total 1
# HELP zerotrain_last_checkpoint_step Step of the newest checkpoint committed by this coordinator; 0: none yet.
# TYPE zerotrain_last_checkpoint_step gauge
zerotrain_last_checkpoint_step 2
# HELP zerotrain_rank_info Host and process id of each registered rank.
# TYPE zerotrain_rank_info gauge
zerotrain_rank_info{rank="0",host="h",pid="42"} 1
# HELP zerotrain_rank_heartbeat_age_seconds Seconds since the coordinator last heard from the rank (heartbeat or any other message).
# TYPE zerotrain_rank_heartbeat_age_seconds gauge
zerotrain_rank_heartbeat_age_seconds{rank="0"} 0.5
# HELP zerotrain_rank_memory_bytes Memory of the rank's backend by category at the end of its latest step.
# TYPE zerotrain_rank_memory_bytes gauge
zerotrain_rank_memory_bytes{rank="0",category="parameters"} 1
zerotrain_rank_memory_bytes{rank="0",category="gradients"} 2
zerotrain_rank_memory_bytes{rank="0",category="optimizer_states"} 3
zerotrain_rank_memory_bytes{rank="0",category="activations"} 4
zerotrain_rank_memory_bytes{rank="0",category="communication"} 5
zerotrain_rank_memory_bytes{rank="0",category="workspace"} 6
# HELP zerotrain_rank_memory_peak_bytes Peak memory of the rank's backend by category since the job started.
# TYPE zerotrain_rank_memory_peak_bytes gauge
zerotrain_rank_memory_peak_bytes{rank="0",category="parameters"} 10
zerotrain_rank_memory_peak_bytes{rank="0",category="gradients"} 20
zerotrain_rank_memory_peak_bytes{rank="0",category="optimizer_states"} 30
zerotrain_rank_memory_peak_bytes{rank="0",category="activations"} 40
zerotrain_rank_memory_peak_bytes{rank="0",category="communication"} 50
zerotrain_rank_memory_peak_bytes{rank="0",category="workspace"} 60
# HELP zerotrain_rank_memory_total_bytes Memory of the rank's backend, all categories, at the end of its latest step.
# TYPE zerotrain_rank_memory_total_bytes gauge
zerotrain_rank_memory_total_bytes{rank="0"} 21
# HELP zerotrain_rank_memory_total_peak_bytes Peak of the rank's backend memory, all categories together, since the job started.
# TYPE zerotrain_rank_memory_total_peak_bytes gauge
zerotrain_rank_memory_total_peak_bytes{rank="0"} 150
# HELP zerotrain_rank_offload_resident_bytes Offloaded optimizer state the rank keeps in host memory (arrays, or NVMe streaming buffers).
# TYPE zerotrain_rank_offload_resident_bytes gauge
zerotrain_rank_offload_resident_bytes{rank="0"} 7
# HELP zerotrain_rank_offload_disk_bytes Offloaded optimizer state the rank keeps on NVMe.
# TYPE zerotrain_rank_offload_disk_bytes gauge
zerotrain_rank_offload_disk_bytes{rank="0"} 8
)";
  EXPECT_EQ(format_metrics(small_snapshot()), want);
}

TEST(MetricsExporterTest, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(escape_label_value(R"(a"b\c)"
                               "\n"
                               "d"),
            R"(a\"b\\c\nd)");
  EXPECT_EQ(escape_label_value("plain/ü"), "plain/ü") << "UTF-8 passes through";
  EXPECT_EQ(escape_help("x\\y\nz\"q"), R"(x\\y\nz"q)") << "HELP escapes no quotes";

  MetricsSnapshot s = small_snapshot();
  s.run_dir = "runs/\"quoted\"\\dir\nnext";
  s.ranks[0].host = "host\"1";
  const std::string page = format_metrics(s);
  EXPECT_THAT(page, HasSubstr(R"(run_dir="runs/\"quoted\"\\dir\nnext")"));
  EXPECT_THAT(page, HasSubstr(R"(zerotrain_rank_info{rank="0",host="host\"1",pid="42"} 1)"));
  // Every sample stays on one line.
  std::istringstream in(page);
  for (std::string line; std::getline(in, line);)
    EXPECT_TRUE(line.rfind("zerotrain_", 0) == 0 || line.rfind("# ", 0) == 0) << line;
}

TEST(MetricsExporterTest, SpecialValuesRenderAsPrometheusReadsThem) {
  EXPECT_EQ(format_value(std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::quiet_NaN()), "NaN");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(0.0), "0");
  EXPECT_EQ(format_value(1e-5), "1e-05");
  EXPECT_EQ(format_value(3.0), "3");
  // Shortest text that reads back exactly: a scraped loss equals metrics.jsonl's.
  for (double v : {0.1, 2.0 / 3.0, 5.5569874573, 1e300, 6.02e-23, -123456.789})
    EXPECT_EQ(std::strtod(format_value(v).c_str(), nullptr), v) << format_value(v);

  MetricsSnapshot s = small_snapshot();
  s.last_step->grad_norm = std::numeric_limits<double>::infinity();  // an fp16 overflow
  s.last_step->loss = std::numeric_limits<double>::quiet_NaN();
  const std::string page = format_metrics(s);
  EXPECT_THAT(page, HasSubstr("\nzerotrain_grad_norm +Inf\n"));
  EXPECT_THAT(page, HasSubstr("\nzerotrain_loss NaN\n"));
}

TEST(MetricsExporterTest, StepFiguresAndRankFamiliesAreAbsentUntilKnown) {
  MetricsSnapshot s;  // a coordinator that has just started
  s.run_dir = "r";
  s.optimizer = "AdamW";
  s.backend = "cpu";
  const std::string page = format_metrics(s);
  EXPECT_THAT(page, HasSubstr("zerotrain_job_state{state=\"starting\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("zerotrain_steps_completed_total 0\n"));
  for (const char* absent :
       {"zerotrain_loss", "zerotrain_learning_rate", "zerotrain_grad_norm", "zerotrain_rank_"})
    EXPECT_THAT(page, Not(HasSubstr(absent))) << "no sample and no empty HELP/TYPE header";
}

// What `promtool check metrics` checks, and what the format requires, on every shape of page.
void check_page(const std::string& page) {
  std::set<std::string> families;
  std::map<std::string, std::string> type_of;
  std::string current;   // the family whose samples may follow
  std::string help_for;  // the family of the last HELP line
  std::set<std::string> series;
  std::istringstream in(page);
  for (std::string line; std::getline(in, line);) {
    SCOPED_TRACE(line);
    if (line.rfind("# HELP ", 0) == 0) {
      std::istringstream l(line.substr(7));
      l >> help_for;
      std::string rest;
      std::getline(l, rest);
      EXPECT_GT(rest.size(), 10u) << "a real HELP text";
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream l(line.substr(7));
      std::string name, type;
      l >> name >> type;
      EXPECT_EQ(name, help_for) << "HELP right before TYPE";
      EXPECT_TRUE(families.insert(name).second) << "family " << name << " twice";
      EXPECT_TRUE(type == "gauge" || type == "counter") << type;
      EXPECT_EQ(name.rfind("zerotrain_", 0), 0u);
      const bool total = name.size() > 6 && name.compare(name.size() - 6, 6, "_total") == 0;
      EXPECT_EQ(total, type == "counter") << "counters, and only counters, end in _total";
      for (const char* unit : {"_ms", "_milliseconds", "_kb", "_mb", "_mib", "_gib", "_minutes"})
        EXPECT_THAT(name, Not(HasSubstr(unit))) << "base units only";
      type_of[name] = type;
      current = name;
      continue;
    }
    ASSERT_NE(line.rfind("#", 0), 0u) << "no other comments";
    const std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_EQ(name, current) << "a sample outside its family's block";
    const std::string key = line.substr(0, line.rfind(' '));
    EXPECT_TRUE(series.insert(key).second) << "series twice: " << key;
    const std::string value = line.substr(line.rfind(' ') + 1);
    char* end = nullptr;
    std::strtod(value.c_str(), &end);
    EXPECT_TRUE(*end == '\0' || value == "NaN" || value == "+Inf" || value == "-Inf") << value;
  }
  EXPECT_FALSE(families.empty());
}

TEST(MetricsExporterTest, EveryPageShapeFollowsTheFormatAndLintRules) {
  MetricsSnapshot empty;
  check_page(format_metrics(empty));
  MetricsSnapshot s = small_snapshot();
  check_page(format_metrics(s));
  for (int r = 1; r < 4; ++r) {
    RankFigures f = s.ranks[0];
    f.rank = r;
    s.ranks.push_back(f);
  }
  s.world_size = 4;
  check_page(format_metrics(s));
}

// ---- the server, on a loopback socket
// -------------------------------------------------------------

struct HttpReply {
  int status = 0;
  std::string headers, body;
};

// One request with a plain socket: the test depends on nothing but what it checks.
HttpReply http_get(int port, const std::string& path) {
  HttpReply reply;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "connect to port " << port << " failed";
    close(fd);
    return reply;
  }
  const std::string req =
      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
  EXPECT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
  std::string raw;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) raw.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  EXPECT_NE(split, std::string::npos) << raw;
  if (split == std::string::npos) return reply;
  reply.headers = raw.substr(0, split);
  reply.body = raw.substr(split + 4);
  reply.status = std::atoi(raw.substr(raw.find(' ') + 1, 3).c_str());
  return reply;
}

TEST(MetricsServerTest, ServesTheSnapshotOnMetricsAndNothingElse) {
  int calls = 0;
  auto server = MetricsServer::start("127.0.0.1", 0, [&]() -> std::optional<MetricsSnapshot> {
    ++calls;
    return small_snapshot();
  });
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*server)->url(), "http://127.0.0.1:" + std::to_string(port) + "/metrics");

  HttpReply r = http_get(port, "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.headers, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_EQ(r.body, format_metrics(small_snapshot()));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(http_get(port, "/").status, 404);
  EXPECT_EQ(http_get(port, "/metrics/x").status, 404);
  EXPECT_EQ(http_get(port, "/metricsx").status, 404);
  EXPECT_EQ(calls, 1) << "only /metrics asks for a snapshot";
}

TEST(MetricsServerTest, NothingToShowYetIs503) {
  auto server = MetricsServer::start("127.0.0.1", 0, [] { return std::nullopt; });
  ASSERT_TRUE(server.is_ok()) << server.status().to_string();
  EXPECT_EQ(http_get((*server)->port(), "/metrics").status, 503);
}

TEST(MetricsServerTest, APortInUseIsAnErrorNamingIt) {
  auto first = MetricsServer::start("127.0.0.1", 0, [] { return std::nullopt; });
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  const int port = (*first)->port();
  // The same port twice: httplib's default SO_REUSEPORT would let this one bind as well.
  auto second = MetricsServer::start("127.0.0.1", port, [] { return std::nullopt; });
  ASSERT_FALSE(second.is_ok());
  EXPECT_THAT(second.status().message(), HasSubstr("port " + std::to_string(port)));
  EXPECT_THAT(second.status().message(), HasSubstr("already in use"));
  // The first still serves.
  EXPECT_EQ(http_get(port, "/metrics").status, 503);

  auto bad = MetricsServer::start("no.such.host.invalid", 9, [] { return std::nullopt; });
  EXPECT_FALSE(bad.is_ok());
}

}  // namespace
}  // namespace zt
