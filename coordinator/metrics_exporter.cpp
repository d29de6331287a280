#include "coordinator/metrics_exporter.h"

#include <cmath>
#include <initializer_list>
#include <utility>

#include <fmt/format.h>

namespace zt {

namespace {

using Labels = std::initializer_list<std::pair<std::string_view, std::string>>;

// Writes families one after the other. A family's HELP and TYPE lines are written with its first
// sample, so a family with nothing to say (no rank registered yet) leaves no empty header behind.
class Page {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    name_ = name;
    type_ = type;
    help_ = help;
    header_written_ = false;
  }
  void put(Labels labels, int64_t v) { line(labels, fmt::format("{}", v)); }
  void put_real(Labels labels, double v) { line(labels, format_value(v)); }
  std::string take() { return std::move(out_); }

 private:
  void line(Labels labels, const std::string& value) {
    if (!header_written_) {
      fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name_,
                     escape_help(help_), name_, type_);
      header_written_ = true;
    }
    out_ += name_;
    if (labels.size() > 0) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        if (!first) out_ += ',';
        first = false;
        fmt::format_to(std::back_inserter(out_), "{}=\"{}\"", k, escape_label_value(v));
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }

  std::string out_;
  std::string_view name_, type_, help_;
  bool header_written_ = false;
};

constexpr protocol::JobState kAllStates[] = {
    protocol::JobState::kStarting,      protocol::JobState::kRunning,
    protocol::JobState::kCheckpointing, protocol::JobState::kStopping,
    protocol::JobState::kFinished,      protocol::JobState::kFailed};

}  // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Shortest text that reads back as the same double, as metrics.jsonl writes it: a scraped loss
  // compares equal to the file's.
  return fmt::format("{}", v);
}

std::string format_metrics(const MetricsSnapshot& s) {
  Page p;
  p.family("zerotrain_job_state", "gauge",
           "State of the job: 1 for the current state, 0 for the others.");
  for (protocol::JobState st : kAllStates)
    p.put({{"state", protocol::job_state_name(st)}}, st == s.state ? 1 : 0);
  p.family("zerotrain_job_info", "gauge", "The job's run directory, optimizer and backend.");
  p.put({{"run_dir", s.run_dir}, {"optimizer", s.optimizer}, {"backend", s.backend}}, 1);
  p.family("zerotrain_world_size", "gauge", "Number of workers (ranks) in the job; 0 until known.");
  p.put({}, s.world_size);
  p.family("zerotrain_zero_stage", "gauge", "ZeRO stage (zero_optimization.stage).");
  p.put({}, s.zero_stage);
  p.family("zerotrain_steps_planned", "gauge", "Optimizer steps the job runs to (train.steps).");
  p.put({}, s.steps_planned);
  p.family("zerotrain_steps_completed_total", "counter",
           "Optimizer steps completed (a resumed job counts from its checkpoint's step).");
  p.put({}, s.steps_completed);

  if (s.last_step) {
    const StepFigures& l = *s.last_step;
    p.family("zerotrain_loss", "gauge",
             "Mean cross-entropy over the global batch of the latest completed step.");
    p.put_real({}, l.loss);
    p.family("zerotrain_learning_rate", "gauge", "Learning rate applied at the latest step.");
    p.put_real({}, l.lr);
    p.family("zerotrain_grad_norm", "gauge",
             "Global gradient L2 norm of the latest step, before clipping; +Inf when it was "
             "skipped on an fp16 overflow.");
    p.put_real({}, l.grad_norm);
    p.family("zerotrain_loss_scale", "gauge",
             "fp16 dynamic loss scale after the latest step (1 without fp16).");
    p.put_real({}, l.loss_scale);
    p.family("zerotrain_tokens_per_second", "gauge", "Training throughput of the latest step.");
    p.put_real({}, l.tokens_per_second);
    p.family("zerotrain_step_duration_seconds", "gauge",
             "Duration of the latest step on its slowest rank.");
    p.put_real({}, l.duration_seconds);
  }
  p.family("zerotrain_skipped_steps_total", "counter",
           "Steps skipped on an fp16 overflow since this coordinator started.");
  p.put({}, s.skipped_steps);
  p.family("zerotrain_tokens_total", "counter",
           "Target tokens trained on since this coordinator started.");
  p.put({}, s.tokens);

  p.family("zerotrain_workers_alive", "gauge",
           "Registered ranks that have not finished and were heard from within the heartbeat "
           "timeout.");
  p.put({}, s.workers_alive);
  p.family("zerotrain_checkpoints_committed_total", "counter",
           "Checkpoints committed (manifest written, directory renamed) by this coordinator.");
  p.put({}, s.checkpoints_committed);
  p.family("zerotrain_last_checkpoint_step", "gauge",
           "Step of the newest checkpoint committed by this coordinator; 0: none yet.");
  p.put({}, s.last_checkpoint_step);

  // Per-rank families: each family's samples together, as the format requires.
  p.family("zerotrain_rank_info", "gauge", "Host and process id of each registered rank.");
  for (const RankFigures& r : s.ranks)
    p.put({{"rank", std::to_string(r.rank)}, {"host", r.host}, {"pid", std::to_string(r.pid)}}, 1);
  p.family("zerotrain_rank_heartbeat_age_seconds", "gauge",
           "Seconds since the coordinator last heard from the rank (heartbeat or any other "
           "message).");
  for (const RankFigures& r : s.ranks)
    p.put_real({{"rank", std::to_string(r.rank)}}, r.heartbeat_age_seconds);
  p.family("zerotrain_rank_memory_bytes", "gauge",
           "Memory of the rank's backend by category at the end of its latest step.");
  for (const RankFigures& r : s.ranks)
    for (size_t c = 0; c < kNumMemCategories; ++c)
      p.put({{"rank", std::to_string(r.rank)},
             {"category", mem_category_name(static_cast<MemCategory>(c))}},
            r.memory_current[c]);
  p.family("zerotrain_rank_memory_peak_bytes", "gauge",
           "Peak memory of the rank's backend by category since the job started.");
  for (const RankFigures& r : s.ranks)
    for (size_t c = 0; c < kNumMemCategories; ++c)
      p.put({{"rank", std::to_string(r.rank)},
             {"category", mem_category_name(static_cast<MemCategory>(c))}},
            r.memory_peak[c]);
  // The all-category figures are families of their own: as a category beside the others, a sum()
  // over categories would count every byte twice.
  p.family("zerotrain_rank_memory_total_bytes", "gauge",
           "Memory of the rank's backend, all categories, at the end of its latest step.");
  for (const RankFigures& r : s.ranks)
    p.put({{"rank", std::to_string(r.rank)}}, r.memory_total_current);
  p.family("zerotrain_rank_memory_total_peak_bytes", "gauge",
           "Peak of the rank's backend memory, all categories together, since the job started.");
  for (const RankFigures& r : s.ranks)
    p.put({{"rank", std::to_string(r.rank)}}, r.memory_total_peak);
  p.family("zerotrain_rank_offload_resident_bytes", "gauge",
           "Offloaded optimizer state the rank keeps in host memory (arrays, or NVMe streaming "
           "buffers).");
  for (const RankFigures& r : s.ranks)
    p.put({{"rank", std::to_string(r.rank)}}, r.offload_resident_bytes);
  p.family("zerotrain_rank_offload_disk_bytes", "gauge",
           "Offloaded optimizer state the rank keeps on NVMe.");
  for (const RankFigures& r : s.ranks)
    p.put({{"rank", std::to_string(r.rank)}}, r.offload_disk_bytes);
  return p.take();
}

}  // namespace zt
