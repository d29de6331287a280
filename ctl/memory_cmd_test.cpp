// `ztctl memory` on handcrafted run directories: the peaks and their phases of the last or a chosen
// step, the timeline summary of the latest sampled step at or before it, what the runtime's writer
// (RunDir) produces being read back by it and by `ztctl report`, and every kind of bad input — a
// malformed line anywhere, a wrong type, a missing file or step — is an error naming the file (and
// line), never a crash; a cut-off last line is skipped with a note.

#include "ctl/memory_cmd.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "ctl/report.h"
#include "runtime/train/run_dir.h"

namespace zt::ctl {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class TempRunDir {
 public:
  TempRunDir() {
    char tmpl[] = "/tmp/zt_memory_cmd_XXXXXX";
    const char* p = mkdtemp(tmpl);
    path_ = p ? p : "";
  }
  ~TempRunDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ + "/" + name, std::ios::binary) << text;
  }

 private:
  std::string path_;
};

// One metrics line of two ranks: rank r's peak of category c is (r + 1) * 1000 + 10 * c + step.
std::string metrics_line(int64_t step, bool with_phases = true) {
  std::string peaks, phases;
  for (int r = 0; r < 2; ++r) {
    std::string p = "{\"rank\":" + std::to_string(r), q = p;
    int64_t total = 0;
    for (size_t c = 0; c < kMemoryCategories.size(); ++c) {
      const int64_t b = (r + 1) * 1000 + 10 * static_cast<int64_t>(c) + step;
      total += b;
      p += ",\"" + kMemoryCategories[c] + "\":" + std::to_string(b);
      q += ",\"" + kMemoryCategories[c] + "\":\"phase " + std::to_string(c) + " of rank " +
           std::to_string(r) + "\"";
    }
    p += ",\"total\":" + std::to_string(total) + "}";
    q += ",\"total\":\"backward block " + std::to_string(r) + "\"}";
    peaks += (r ? "," : "") + p;
    phases += (r ? "," : "") + q;
  }
  std::string line =
      "{\"step\":" + std::to_string(step) + ",\"loss\":4.5,\"peak_memory_bytes\":[" + peaks + "]";
  if (with_phases) line += ",\"peak_phase\":[" + phases + "]";
  return line + "}\n";
}

std::string memory_line(int64_t step, int rank, const std::string& phase, int64_t bytes,
                        int64_t peak) {
  return "{\"step\":" + std::to_string(step) + ",\"rank\":" + std::to_string(rank) +
         ",\"phase\":\"" + phase + "\",\"bytes\":{\"parameters\":" + std::to_string(bytes) +
         ",\"activations\":1},\"peak_bytes\":{\"parameters\":" + std::to_string(peak) +
         ",\"activations\":1}}\n";
}

// Steps 1-3 in metrics.jsonl; a timeline for steps 1 and 2 (step 3 not sampled).
void write_run(const TempRunDir& d) {
  d.write("metrics.jsonl", metrics_line(1) + metrics_line(2) + metrics_line(3));
  std::string mem;
  for (int64_t step = 1; step <= 2; ++step)
    for (int r = 0; r < 2; ++r) {
      // The most in use after "backward block 1"; the highest high-water in "loss" (rank 0) or
      // "forward block 0" (rank 1). Step 2 holds 100 more everywhere.
      const int64_t base = 100 * (step - 1) + 10 * r;
      mem += memory_line(step, r, "forward block 0", base + 50, base + (r ? 900 : 60));
      mem += memory_line(step, r, "loss", base + 70, base + (r ? 80 : 950));
      mem += memory_line(step, r, "backward block 1", base + 90, base + 95);
    }
  d.write("memory.jsonl", mem);
}

TEST(ZtctlMemory, LastStepPeaksPhasesAndTimeline) {
  TempRunDir d;
  write_run(d);
  Result<MemoryView> v = load_memory_view(d.path(), std::nullopt);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->step, 3);
  ASSERT_EQ(v->ranks.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    const RankPeaks& p = v->ranks[static_cast<size_t>(r)];
    EXPECT_EQ(p.rank, r);
    int64_t total = 0;
    for (size_t c = 0; c < kMemoryCategories.size(); ++c) {
      EXPECT_EQ(p.bytes[c], (r + 1) * 1000 + 10 * static_cast<int64_t>(c) + 3);
      EXPECT_EQ(p.phase[c], "phase " + std::to_string(c) + " of rank " + std::to_string(r));
      total += p.bytes[c];
    }
    EXPECT_EQ(p.total, total);
    EXPECT_EQ(p.total_phase, "backward block " + std::to_string(r));
  }
  // Step 3 has no timeline: the latest before it, step 2's, is summarised.
  EXPECT_TRUE(v->has_memory_jsonl);
  EXPECT_EQ(v->timeline_step, 2);
  ASSERT_EQ(v->timelines.size(), 2u);
  for (const RankTimeline& t : v->timelines) {
    SCOPED_TRACE("rank " + std::to_string(t.rank));
    EXPECT_EQ(t.parts, 3u);  // step 1's parts are not counted again
    EXPECT_EQ(t.highest.phase, "backward block 1");
    EXPECT_EQ(t.highest.total, 100 + 10 * t.rank + 90 + 1);
    EXPECT_EQ(t.highest_peak.phase, t.rank == 0 ? "loss" : "forward block 0");
  }

  const std::string text = format_memory_view(*v);
  EXPECT_THAT(text, HasSubstr("step 3"));
  EXPECT_THAT(text, HasSubstr("phase 3 of rank 1"));
  EXPECT_THAT(text, HasSubstr("Memory timeline (memory.jsonl, step 2)"));
  EXPECT_THAT(text, HasSubstr("rank 0: 3 parts; most in use after \"backward block 1\""));

  const nlohmann::ordered_json j = memory_view_json(*v);
  EXPECT_EQ(j["step"], 3);
  EXPECT_EQ(j["ranks"][1]["peak_phase"]["total"], "backward block 1");
  EXPECT_EQ(j["ranks"][1]["peak_bytes"]["gradients"], 2000 + 10 + 3);
  EXPECT_EQ(j["timeline"]["step"], 2);
  EXPECT_EQ(j["timeline"]["ranks"][0]["highest_peak"]["phase"], "loss");
}

TEST(ZtctlMemory, ChosenStep) {
  TempRunDir d;
  write_run(d);
  Result<MemoryView> v = load_memory_view(d.path(), 1);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->step, 1);
  EXPECT_EQ(v->ranks[0].bytes[0], 1000 + 1);
  EXPECT_EQ(v->timeline_step, 1);
  ASSERT_EQ(v->timelines.size(), 2u);
  EXPECT_EQ(v->timelines[0].highest.total, 90 + 1);

  v = load_memory_view(d.path(), 7);
  ASSERT_FALSE(v.is_ok());
  EXPECT_THAT(v.status().message(), HasSubstr("metrics.jsonl has no step 7"));
}

TEST(ZtctlMemory, RunsWithoutPhasesOrTimeline) {
  TempRunDir d;
  d.write("metrics.jsonl", metrics_line(1, /*with_phases=*/false));
  Result<MemoryView> v = load_memory_view(d.path(), std::nullopt);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_FALSE(v->has_memory_jsonl);
  EXPECT_EQ(v->ranks[1].phase[0], "");
  const std::string text = format_memory_view(*v);
  EXPECT_THAT(text, HasSubstr("(not recorded)"));
  EXPECT_THAT(text, HasSubstr("No memory.jsonl"));
}

TEST(ZtctlMemory, MalformedInputNamesFileAndLine) {
  struct Case {
    std::string metrics, memory, want;
  };
  const std::string good = metrics_line(1) + metrics_line(2);
  const std::string good_mem = memory_line(1, 0, "loss", 1, 2);
  const std::vector<Case> cases = {
      {metrics_line(1) + "{\"step\": 2, \"loss\": \n" + metrics_line(3), good_mem,
       "metrics.jsonl:2: not valid JSON"},
      {metrics_line(1) + "\n" + metrics_line(2), good_mem, "metrics.jsonl:2: empty line"},
      {metrics_line(1) + "[1, 2]\n", good_mem, "metrics.jsonl:2: expected one JSON object"},
      {"{\"loss\": 1}\n", good_mem, "metrics.jsonl:1: no 'step'"},
      {"{\"step\": \"one\"}\n", good_mem, "metrics.jsonl:1: 'step' is not an integer"},
      {"{\"step\": 1}\n", good_mem, "metrics.jsonl:1: no 'peak_memory_bytes'"},
      {"{\"step\": 1, \"peak_memory_bytes\": [{\"rank\": 0, \"parameters\": \"big\"}]}\n", good_mem,
       "metrics.jsonl:1: 'peak_memory_bytes[0].parameters' is not a number"},
      {"{\"step\": 1, \"peak_memory_bytes\": [{\"rank\": 0}], \"peak_phase\": [{\"rank\": 0, "
       "\"gradients\": 3}]}\n",
       good_mem, "metrics.jsonl:1: 'peak_phase[0].gradients' is not a string"},
      {"{\"step\": 1, \"peak_memory_bytes\": [{\"rank\": 0}], \"peak_phase\": [{\"rank\": 5}]}\n",
       good_mem, "metrics.jsonl:1: peak_phase[0] is for rank 5, which has no peaks"},
      {good, good_mem + "not json\n" + good_mem, "memory.jsonl:2: not valid JSON"},
      {good, "{\"step\": 1, \"rank\": 0, \"phase\": 7, \"bytes\": {}}\n",
       "memory.jsonl:1: no 'phase' string"},
      {good, "{\"step\": 1, \"rank\": 0, \"phase\": \"loss\"}\n", "memory.jsonl:1: no 'bytes'"},
      {good, "{\"step\": 1, \"rank\": 0, \"phase\": \"loss\", \"bytes\": {\"parameters\": []}}\n",
       "memory.jsonl:1: 'bytes.parameters' is not a number"},
      {good, "{\"step\": 1, \"phase\": \"loss\", \"bytes\": {}}\n", "memory.jsonl:1: no 'rank'"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.want);
    TempRunDir d;
    d.write("metrics.jsonl", c.metrics);
    d.write("memory.jsonl", c.memory);
    Result<MemoryView> v = load_memory_view(d.path(), std::nullopt);
    ASSERT_FALSE(v.is_ok());
    EXPECT_EQ(v.status().code(), StatusCode::kDataError);
    EXPECT_THAT(v.status().message(), HasSubstr(d.path() + "/" + c.want));
    std::ostringstream out, err;
    EXPECT_EQ(run_memory(d.path(), std::nullopt, false, out, err), 1);
    EXPECT_THAT(err.str(), HasSubstr("ztctl memory: error: "));
    EXPECT_THAT(err.str(), HasSubstr(c.want));
    EXPECT_EQ(out.str(), "");
  }
}

TEST(ZtctlMemory, MissingFilesAndCutOffLines) {
  TempRunDir d;
  std::ostringstream out, err;
  EXPECT_EQ(run_memory(d.path() + "/nope", std::nullopt, false, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("run directory '" + d.path() + "/nope' does not exist"));

  Result<MemoryView> v = load_memory_view(d.path(), std::nullopt);
  ASSERT_FALSE(v.is_ok());
  EXPECT_THAT(v.status().message(), HasSubstr(d.path() + "/metrics.jsonl not found"));

  d.write("metrics.jsonl", "");
  v = load_memory_view(d.path(), std::nullopt);
  ASSERT_FALSE(v.is_ok());
  EXPECT_THAT(v.status().message(), HasSubstr("has no complete step"));

  // A writer cut off mid-line: the last line of each file has no newline and is skipped.
  std::string partial_metrics = metrics_line(2);
  partial_metrics.resize(partial_metrics.size() / 2);
  d.write("metrics.jsonl", metrics_line(1) + partial_metrics);
  std::string partial_memory = memory_line(1, 0, "loss", 5, 6);
  partial_memory.pop_back();
  partial_memory.pop_back();
  d.write("memory.jsonl", memory_line(1, 0, "forward block 0", 3, 4) + partial_memory);
  v = load_memory_view(d.path(), std::nullopt);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->step, 1);
  ASSERT_EQ(v->timelines.size(), 1u);
  EXPECT_EQ(v->timelines[0].parts, 1u);
  ASSERT_EQ(v->notes.size(), 2u);
  EXPECT_THAT(v->notes[0], HasSubstr("metrics.jsonl"));
  EXPECT_THAT(v->notes[1], HasSubstr("memory.jsonl"));
}

// What the runtime writes (RunDir) is what `ztctl memory` and `ztctl report` read.
TEST(ZtctlMemory, ReadsWhatTheRunDirWrites) {
  TempRunDir d;
  {
    Result<RunDir> rd = RunDir::open(d.path());
    ASSERT_TRUE(rd.is_ok()) << rd.status().to_string();
    for (int64_t step = 1; step <= 2; ++step) {
      StepResult r;
      r.step = step;
      r.loss = 3.0;
      std::vector<RankStepMetrics> ranks(2);
      for (int k = 0; k < 2; ++k) {
        RankStepMetrics& m = ranks[static_cast<size_t>(k)];
        for (size_t c = 0; c < kNumMemCategories; ++c) {
          m.memory.peak[c] = 100 * (k + 1) + static_cast<int64_t>(c);
          m.peak_phase[c] = c % 2 ? "start of step" : "backward block " + std::to_string(k);
        }
        m.memory.total_peak = 1000 * (k + 1);
        m.total_peak_phase = "loss";
        for (size_t p = 0; p < kNumStepPhases; ++p)
          m.time_ms[p] = static_cast<double>(p + 1) * (k + 1);
        m.comm_bytes = 4096 * (k + 1);
        std::vector<MemoryPhaseRecord> timeline = {
            {"forward block 0", {1, 2, 3, 4, 5, 6}, {2, 3, 4, 5, 6, 7}},
            {"loss", {10, 20, 30, 40, 50, 60}, {11, 21, 31, 41, 51, 61}},
            {"optimizer", {1, 1, 1, 1, 1, 1}, {99, 1, 1, 1, 1, 1}}};
        ASSERT_TRUE(rd->append_memory(step, k, timeline).is_ok());
      }
      ASSERT_TRUE(rd->append_metrics(r, ranks).is_ok());
    }
  }
  Result<MemoryView> v = load_memory_view(d.path(), std::nullopt);
  ASSERT_TRUE(v.is_ok()) << v.status().to_string();
  EXPECT_EQ(v->step, 2);
  ASSERT_EQ(v->ranks.size(), 2u);
  EXPECT_EQ(v->ranks[1].bytes[2], 202);
  EXPECT_EQ(v->ranks[1].phase[0], "backward block 1");
  EXPECT_EQ(v->ranks[1].phase[1], "start of step");
  EXPECT_EQ(v->ranks[1].total, 2000);
  EXPECT_EQ(v->ranks[1].total_phase, "loss");
  EXPECT_EQ(v->timeline_step, 2);
  ASSERT_EQ(v->timelines.size(), 2u);
  EXPECT_EQ(v->timelines[0].parts, 3u);
  EXPECT_EQ(v->timelines[0].highest.phase, "loss");
  EXPECT_EQ(v->timelines[0].highest.total, 210);
  EXPECT_EQ(v->timelines[0].highest_peak.phase, "loss");
  EXPECT_EQ(v->timelines[0].highest_peak.peak_total, 216);

  // `ztctl report` finds the step time by phase, the bytes per rank and the timeline.
  Result<RunReport> rep = load_run_report(d.path());
  ASSERT_TRUE(rep.is_ok()) << rep.status().to_string();
  ASSERT_EQ(rep->steps.size(), 2u);
  const StepRecord& s = rep->steps.back();
  ASSERT_TRUE(s.time_ms.has_value());
  ASSERT_EQ(s.time_ms_by_rank.size(), 2u);
  EXPECT_EQ(s.time_ms_by_rank[1].rank, 1);
  for (size_t p = 0; p < kNumStepPhases; ++p) {
    const std::string name = step_phase_name(static_cast<StepPhase>(p));
    const size_t at = rep->time_phases.index(name);
    // The documented phases keep their documented positions; `other` comes after them.
    if (p < kTimePhases.size()) {
      EXPECT_EQ(at, p) << name;
    }
    EXPECT_DOUBLE_EQ(part_at(s.time_ms_by_rank[1].parts, at), static_cast<double>(p + 1) * 2);
    EXPECT_DOUBLE_EQ(part_at(*s.time_ms, at), static_cast<double>(p + 1) * 1.5);  // the mean
  }
  ASSERT_EQ(s.comm_bytes_by_rank.size(), 2u);
  EXPECT_EQ(s.comm_bytes_by_rank[1], std::make_pair(1, 8192.0));
  EXPECT_DOUBLE_EQ(*s.comm_bytes, 4096.0 + 8192.0);
  ASSERT_EQ(rep->phase_memory.size(), 12u);
  EXPECT_EQ(rep->phase_memory[5].rank, 1);
  EXPECT_EQ(rep->phase_memory[5].phase, "optimizer");
  // memory.jsonl's categories are the documented ones, nothing more.
  EXPECT_EQ(rep->memory_categories.names, kMemoryCategories);
}

}  // namespace
}  // namespace zt::ctl
