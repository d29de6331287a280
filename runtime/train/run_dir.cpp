#include "runtime/train/run_dir.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace zt {

namespace fs = std::filesystem;

Result<RunDir> RunDir::open(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec)
    return make_error(StatusCode::kIoError, "cannot create run directory '{}': {}", path,
                      ec.message());
  RunDir d;
  d.path_ = path;
  d.metrics_ = std::fopen((fs::path(path) / "metrics.jsonl").c_str(), "a");
  d.events_ = std::fopen((fs::path(path) / "events.log").c_str(), "a");
  if (!d.metrics_ || !d.events_)
    return make_error(StatusCode::kIoError, "cannot open files in run directory '{}': {}", path,
                      std::strerror(errno));
  return d;
}

RunDir::RunDir(RunDir&& o) noexcept
    : path_(std::move(o.path_)), metrics_(o.metrics_), memory_(o.memory_), events_(o.events_) {
  o.metrics_ = nullptr;
  o.memory_ = nullptr;
  o.events_ = nullptr;
}

RunDir::~RunDir() {
  if (metrics_) std::fclose(metrics_);
  if (memory_) std::fclose(memory_);
  if (events_) std::fclose(events_);
}

Status RunDir::write_resolved_config(const JobConfig& cfg) {
  const fs::path final_path = fs::path(path_) / "config.resolved.yaml";
  const fs::path tmp = final_path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << to_yaml(cfg);
    if (!out.good()) return make_error(StatusCode::kIoError, "cannot write '{}'", tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, final_path, ec);
  if (ec)
    return make_error(StatusCode::kIoError, "cannot rename '{}': {}", tmp.string(), ec.message());
  return Status::ok();
}

std::string format_eta(double seconds) {
  if (!(seconds >= 0)) return "?";
  const long s = static_cast<long>(seconds + 0.5);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

std::string progress_line(const StepResult& r, int64_t total_steps, double eta_seconds) {
  return fmt::format(
      "step {}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f}{} | {:.0f} tok/s | ETA {}", r.step,
      total_steps, r.loss, r.lr, r.grad_norm, r.skipped ? " (skipped: fp16 overflow)" : "",
      r.tokens_per_s, format_eta(eta_seconds));
}

bool progress_due(int64_t step, int64_t total, int64_t steps_per_print) {
  return step == 1 || step == total || step % std::max<int64_t>(1, steps_per_print) == 0;
}

bool memory_timeline_due(int64_t step, int64_t total, int64_t steps_per_print) {
  return step == 2 || progress_due(step, total, steps_per_print);
}

namespace {

nlohmann::ordered_json phase_times(const StepTimes& ms) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (size_t p = 0; p < kNumStepPhases; ++p) j[step_phase_name(static_cast<StepPhase>(p))] = ms[p];
  return j;
}

nlohmann::ordered_json category_bytes(const std::array<int64_t, kNumMemCategories>& bytes) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (size_t c = 0; c < kNumMemCategories; ++c)
    j[mem_category_name(static_cast<MemCategory>(c))] = bytes[c];
  return j;
}

}  // namespace

std::string metrics_json(const StepResult& r, const std::vector<RankStepMetrics>& per_rank) {
  nlohmann::ordered_json j;
  j["step"] = r.step;
  j["loss"] = r.loss;
  j["lr"] = r.lr;
  // JSON has no Infinity: an overflowed (skipped) step's norm is written as null.
  if (std::isfinite(r.grad_norm))
    j["grad_norm"] = r.grad_norm;
  else
    j["grad_norm"] = nullptr;
  j["loss_scale"] = r.loss_scale;
  j["skipped"] = r.skipped;
  j["tokens"] = r.tokens;
  j["step_ms"] = r.step_ms;
  j["tokens_per_s"] = r.tokens_per_s;
  // Time training was blocked by a checkpoint taken after this step (0 when none was).
  j["checkpoint_ms"] = r.checkpoint_ms;
  nlohmann::ordered_json mem = nlohmann::ordered_json::array();
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    nlohmann::ordered_json m;
    m["rank"] = rank;
    for (size_t c = 0; c < kNumMemCategories; ++c)
      m[mem_category_name(static_cast<MemCategory>(c))] = per_rank[rank].memory.peak[c];
    m["total"] = per_rank[rank].memory.total_peak;
    mem.push_back(m);
  }
  j["peak_memory_bytes"] = mem;
  // Note [step profile]: the step's time by phase (the ranks' mean, and each rank's), the bytes
  // each rank sent and which part of the step set each of its peaks.
  StepTimes mean{};
  nlohmann::ordered_json by_rank = nlohmann::ordered_json::array();
  nlohmann::ordered_json comm = nlohmann::ordered_json::array();
  nlohmann::ordered_json phases = nlohmann::ordered_json::array();
  for (size_t rank = 0; rank < per_rank.size(); ++rank) {
    const RankStepMetrics& m = per_rank[rank];
    for (size_t p = 0; p < kNumStepPhases; ++p)
      mean[p] += m.time_ms[p] / static_cast<double>(per_rank.size());
    nlohmann::ordered_json t;
    t["rank"] = rank;
    t.update(phase_times(m.time_ms));
    by_rank.push_back(t);
    comm.push_back({{"rank", rank}, {"bytes", m.comm_bytes}});
    nlohmann::ordered_json ph;
    ph["rank"] = rank;
    for (size_t c = 0; c < kNumMemCategories; ++c)
      ph[mem_category_name(static_cast<MemCategory>(c))] = m.peak_phase[c];
    ph["total"] = m.total_peak_phase;
    phases.push_back(ph);
  }
  j["time_ms"] = phase_times(mean);
  j["time_ms_by_rank"] = by_rank;
  j["comm_bytes"] = comm;
  j["peak_phase"] = phases;
  // Offloaded optimizer state and parameters (offload cpu/nvme): host memory and NVMe file bytes.
  nlohmann::ordered_json offload = nlohmann::ordered_json::array();
  for (size_t rank = 0; rank < per_rank.size(); ++rank)
    offload.push_back({{"rank", rank},
                       {"resident", per_rank[rank].offload_resident_bytes},
                       {"disk", per_rank[rank].offload_disk_bytes}});
  j["offload_bytes"] = offload;
  return j.dump();
}

std::string memory_json(int64_t step, int rank, const MemoryPhaseRecord& record) {
  nlohmann::ordered_json j;
  j["step"] = step;
  j["rank"] = rank;
  j["phase"] = record.phase;
  j["bytes"] = category_bytes(record.bytes);
  j["peak_bytes"] = category_bytes(record.peak);
  return j.dump();
}

Status RunDir::append_metrics(const StepResult& r, const std::vector<RankStepMetrics>& per_rank) {
  const std::string line = metrics_json(r, per_rank) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), metrics_) != line.size() || std::fflush(metrics_))
    return make_error(StatusCode::kIoError, "writing {}/metrics.jsonl: {}", path_,
                      std::strerror(errno));
  return Status::ok();
}

Status RunDir::append_memory(int64_t step, int rank,
                             const std::vector<MemoryPhaseRecord>& timeline) {
  if (timeline.empty()) return Status::ok();
  const std::string path = (fs::path(path_) / "memory.jsonl").string();
  if (!memory_) {
    memory_ = std::fopen(path.c_str(), "a");
    if (!memory_)
      return make_error(StatusCode::kIoError, "cannot open {}: {}", path, std::strerror(errno));
  }
  // Flushed per rank and step, like metrics.jsonl's lines.
  std::string lines;
  for (const MemoryPhaseRecord& rec : timeline) lines += memory_json(step, rank, rec) + "\n";
  if (std::fwrite(lines.data(), 1, lines.size(), memory_) != lines.size() || std::fflush(memory_))
    return make_error(StatusCode::kIoError, "writing {}: {}", path, std::strerror(errno));
  return Status::ok();
}

Status RunDir::event(const std::string& line) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (std::fprintf(events_, "%s %s\n", stamp, line.c_str()) < 0 || std::fflush(events_))
    return make_error(StatusCode::kIoError, "writing {}/events.log: {}", path_,
                      std::strerror(errno));
  return Status::ok();
}

}  // namespace zt
