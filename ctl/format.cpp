#include "ctl/format.h"

#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace zt::ctl {

namespace {

constexpr const char* kCategoryKeys[] = {"parameters",  "gradients",     "optimizer_states",
                                         "activations", "communication", "workspace"};
constexpr const char* kCategoryColumns[] = {"params", "grads", "optim", "activ", "comm", "work"};
static_assert(std::size(kCategoryKeys) == protocol::kNumMemCategories);
static_assert(std::size(kCategoryColumns) == protocol::kNumMemCategories);

// The host column is this wide; a longer name keeps its start and a '~', so the table stays
// within 100 columns whatever the cluster calls its machines.
constexpr size_t kHostWidth = 12;

std::string fit_host(const std::string& host) {
  if (host.size() <= kHostWidth) return host;
  return host.substr(0, kHostWidth - 1) + "~";
}

// Before the first step the coordinator has no loss yet (it sends 0), so 0 at step 0 is unknown.
bool loss_known(const protocol::CtlReply& r) { return r.step > 0 && std::isfinite(r.loss); }

int64_t total_of(const protocol::MemBytes& bytes) {
  int64_t sum = 0;
  for (int64_t b : bytes) sum += b;
  return sum;
}

nlohmann::ordered_json memory_json(const protocol::MemBytes& bytes) {
  nlohmann::ordered_json j;
  for (size_t c = 0; c < protocol::kNumMemCategories; ++c) j[kCategoryKeys[c]] = bytes[c];
  return j;
}

// A multi-line message (the coordinator sends its plan summary) continues under its first line.
std::string indent_continuation(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += "          ";
  }
  return out;
}

}  // namespace

const char* mem_category_key(size_t category) {
  return category < protocol::kNumMemCategories ? kCategoryKeys[category] : "unknown";
}

std::string format_mib(int64_t bytes) {
  return fmt::format("{:.1f}", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "unknown";
  const int64_t s = std::llround(seconds);
  return fmt::format("{}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

std::string format_count(double value) {
  if (!std::isfinite(value)) return "unknown";
  const int64_t v = std::llround(value);
  const std::string digits = std::to_string(std::llabs(v));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string format_progress(int64_t step, int64_t total_steps) {
  if (total_steps <= 0) return std::to_string(step);
  return fmt::format("{}/{} ({:.1f}%)", step, total_steps,
                     100.0 * static_cast<double>(step) / static_cast<double>(total_steps));
}

std::string format_age_ms(int64_t ms) {
  if (ms < 0) ms = 0;
  if (ms < 10'000) return fmt::format("{:.1f} s ago", static_cast<double>(ms) / 1000.0);
  if (ms < 120'000) return fmt::format("{} s ago", ms / 1000);
  return fmt::format("{} min ago", ms / 60'000);
}

std::string format_status(const protocol::CtlReply& r, const StatusSource& source) {
  std::string out;
  out += fmt::format("job       {}, step {}, world {}\n", protocol::job_state_name(r.state),
                     format_progress(r.step, r.total_steps), r.world_size);
  out += fmt::format("loss      {}   tokens/s {}   ETA {}\n",
                     loss_known(r) ? fmt::format("{:.4f}", r.loss) : std::string("-"),
                     r.step > 0 ? format_count(r.tokens_per_sec) : std::string("-"),
                     format_duration(r.eta_seconds));
  if (!source.run_dir.empty() || !source.endpoint.empty()) {
    out += fmt::format("run dir   {}{}\n", source.run_dir.empty() ? "-" : source.run_dir,
                       source.endpoint.empty() ? "" : " (coordinator " + source.endpoint + ")");
  }
  out += r.last_checkpoint_step > 0 ? fmt::format("checkpoint step {} ({})\n",
                                                  r.last_checkpoint_step, r.last_checkpoint_dir)
                                    : std::string("checkpoint none yet\n");
  if (!r.optimizer_type.empty()) {
    const protocol::StatePlacement& pl = r.placement;
    out += fmt::format("state     optimizer {} on {}{}; parameters on {}, gradients on {}\n",
                       r.optimizer_type, protocol::placement_name(pl.optimizer_states),
                       pl.nvme_path.empty() ? "" : " (" + pl.nvme_path + ")",
                       protocol::placement_name(pl.parameters),
                       protocol::placement_name(pl.gradients));
    for (const protocol::RankMemory& m : r.ranks)
      if (m.offload_resident_bytes > 0 || m.offload_disk_bytes > 0)
        out += fmt::format("          rank {}: offloaded {} MiB in host memory, {} MiB on disk\n",
                           m.rank, format_mib(m.offload_resident_bytes),
                           format_mib(m.offload_disk_bytes));
  }
  if (!r.message.empty()) out += "message   " + indent_continuation(r.message) + "\n";
  if (!r.ok) out += "reply     not ok\n";
  if (r.ranks.empty()) {
    out += r.world_size > 0
               ? fmt::format("ranks     none registered yet (expecting {})\n", r.world_size)
               : std::string("ranks     none registered yet\n");
    return out;
  }
  // Two rows per rank keep current and peak of every category within 100 columns.
  out += fmt::format("\n{:>4}  {:<{}}  {:<7}", "rank", "host", kHostWidth, "MiB");
  for (const char* name : kCategoryColumns) out += fmt::format("{:>10}", name);
  out += fmt::format("{:>10}\n", "total");
  for (const protocol::RankMemory& m : r.ranks) {
    out += fmt::format("{:>4}  {:<{}}  {:<7}", m.rank, fit_host(m.host), kHostWidth, "current");
    for (int64_t b : m.current) out += fmt::format("{:>10}", format_mib(b));
    out += fmt::format("{:>10}\n", format_mib(total_of(m.current)));
    // The sum of per-category peaks is not the peak of the total, so the peak row has no total.
    out +=
        fmt::format("{:>4}  {:<{}}  {:<7}", "", format_age_ms(m.last_seen_ms), kHostWidth, "peak");
    for (int64_t b : m.peak) out += fmt::format("{:>10}", format_mib(b));
    out += "\n";
  }
  return out;
}

nlohmann::ordered_json status_json(const protocol::CtlReply& r, const StatusSource& source) {
  nlohmann::ordered_json j;
  j["ok"] = r.ok;
  j["message"] = r.message;
  j["state"] = protocol::job_state_name(r.state);
  j["step"] = r.step;
  j["total_steps"] = r.total_steps;
  if (r.total_steps > 0) {
    j["progress"] = static_cast<double>(r.step) / static_cast<double>(r.total_steps);
  } else {
    j["progress"] = nullptr;
  }
  j["world_size"] = r.world_size;
  if (loss_known(r)) {
    j["loss"] = r.loss;
  } else {
    j["loss"] = nullptr;
  }
  j["tokens_per_sec"] = std::isfinite(r.tokens_per_sec) ? nlohmann::ordered_json(r.tokens_per_sec)
                                                        : nlohmann::ordered_json(nullptr);
  if (std::isfinite(r.eta_seconds) && r.eta_seconds >= 0) {
    j["eta_seconds"] = r.eta_seconds;
  } else {
    j["eta_seconds"] = nullptr;
  }
  j["run_dir"] = source.run_dir;
  j["endpoint"] = source.endpoint;
  if (r.last_checkpoint_step > 0) {
    j["last_checkpoint"] = {{"step", r.last_checkpoint_step}, {"dir", r.last_checkpoint_dir}};
  } else {
    j["last_checkpoint"] = nullptr;
  }
  j["optimizer"] = r.optimizer_type;
  j["placement"] = {{"parameters", protocol::placement_name(r.placement.parameters)},
                    {"gradients", protocol::placement_name(r.placement.gradients)},
                    {"optimizer_states", protocol::placement_name(r.placement.optimizer_states)},
                    {"nvme_path", r.placement.nvme_path}};
  nlohmann::ordered_json ranks = nlohmann::ordered_json::array();
  for (const protocol::RankMemory& m : r.ranks) {
    nlohmann::ordered_json rank;
    rank["rank"] = m.rank;
    rank["host"] = m.host;
    rank["last_seen_ms"] = m.last_seen_ms;
    rank["memory_current_bytes"] = memory_json(m.current);
    rank["memory_peak_bytes"] = memory_json(m.peak);
    rank["memory_current_total_bytes"] = total_of(m.current);
    rank["offload_resident_bytes"] = m.offload_resident_bytes;
    rank["offload_disk_bytes"] = m.offload_disk_bytes;
    ranks.push_back(std::move(rank));
  }
  j["ranks"] = std::move(ranks);
  return j;
}

}  // namespace zt::ctl
