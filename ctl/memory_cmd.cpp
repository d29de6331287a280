#include "ctl/memory_cmd.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "ctl/format.h"
#include "ctl/report.h"

namespace zt::ctl {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// Calls fn(json, where) for every line of `path`; a last line without a newline that does not
// parse is skipped with a note (its writer was cut off), any other bad line is an error.
template <typename F>
Status for_each_json_line(const fs::path& path, std::vector<std::string>& notes, F fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(StatusCode::kIoError, "cannot read {}: {}", path.string(),
                      std::strerror(errno));
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    const bool partial = in.eof();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = fmt::format("{}:{}", path.string(), number);
    const bool blank = line.find_first_not_of(" \t") == std::string::npos;
    Json j;
    try {
      if (blank) throw std::invalid_argument("empty line");
      j = Json::parse(line);
    } catch (const std::exception& e) {
      if (partial) {
        notes.push_back(fmt::format("the last line of {} ({}) is incomplete and was skipped",
                                    path.filename().string(), where));
        return Status::ok();
      }
      return make_error(StatusCode::kDataError, "{}: {}", where,
                        blank ? std::string("empty line (expected one JSON object)")
                              : "not valid JSON: " + std::string(e.what()));
    }
    if (!j.is_object())
      return make_error(StatusCode::kDataError, "{}: expected one JSON object per line", where);
    ZT_RETURN_IF_ERROR(fn(j, where));
  }
  if (in.bad()) return make_error(StatusCode::kIoError, "error reading {}", path.string());
  return Status::ok();
}

Result<int64_t> integer_field(const Json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) return make_error(StatusCode::kDataError, "{}: no '{}'", where, key);
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float() && std::isfinite(it->get<double>()) &&
      it->get<double>() == std::floor(it->get<double>()))
    return static_cast<int64_t>(it->get<double>());
  return make_error(StatusCode::kDataError, "{}: '{}' is not an integer", where, key);
}

// Bytes of an object {category: number}: -1 for a missing category; a non-number is an error.
Result<int64_t> bytes_field(const Json& obj, const std::string& key, const std::string& where,
                            const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return int64_t{-1};
  if (!it->is_number())
    return make_error(StatusCode::kDataError, "{}: '{}.{}' is not a number", where, what, key);
  return static_cast<int64_t>(std::llround(it->get<double>()));
}

Result<std::string> phase_field(const Json& obj, const std::string& key, const std::string& where,
                                const std::string& what) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::string();
  if (!it->is_string())
    return make_error(StatusCode::kDataError, "{}: '{}.{}' is not a string", where, what, key);
  return it->get<std::string>();
}

// The rank of element i of a per-rank list: its "rank", else its position.
Result<int> rank_of(const Json& e, size_t i, const std::string& where, const std::string& what) {
  if (!e.is_object())
    return make_error(StatusCode::kDataError, "{}: '{}' is not an object", where, what);
  if (!e.contains("rank")) return static_cast<int>(i);
  ZT_ASSIGN_OR_RETURN(int64_t rank, integer_field(e, "rank", where + ": " + what));
  return static_cast<int>(rank);
}

Result<std::vector<RankPeaks>> parse_peaks(const Json& line, const std::string& where) {
  auto mem = line.find("peak_memory_bytes");
  if (mem == line.end() || !mem->is_array())
    return make_error(StatusCode::kDataError,
                      "{}: no 'peak_memory_bytes' list (one object per rank) in step {}", where,
                      line["step"].dump());
  std::vector<RankPeaks> out;
  for (size_t i = 0; i < mem->size(); ++i) {
    const std::string what = fmt::format("peak_memory_bytes[{}]", i);
    RankPeaks p;
    ZT_ASSIGN_OR_RETURN(p.rank, rank_of((*mem)[i], i, where, what));
    for (const std::string& c : kMemoryCategories) {
      ZT_ASSIGN_OR_RETURN(int64_t b, bytes_field((*mem)[i], c, where, what));
      p.bytes.push_back(b);
    }
    ZT_ASSIGN_OR_RETURN(p.total, bytes_field((*mem)[i], "total", where, what));
    p.phase.assign(kMemoryCategories.size(), "");
    out.push_back(std::move(p));
  }
  // Which part of the step set each peak; absent in runs written before it was recorded.
  auto phases = line.find("peak_phase");
  if (phases == line.end() || phases->is_null()) return out;
  if (!phases->is_array())
    return make_error(StatusCode::kDataError, "{}: 'peak_phase' is not a list", where);
  for (size_t i = 0; i < phases->size(); ++i) {
    const std::string what = fmt::format("peak_phase[{}]", i);
    ZT_ASSIGN_OR_RETURN(int rank, rank_of((*phases)[i], i, where, what));
    auto p =
        std::find_if(out.begin(), out.end(), [&](const RankPeaks& r) { return r.rank == rank; });
    if (p == out.end())
      return make_error(StatusCode::kDataError, "{}: {} is for rank {}, which has no peaks", where,
                        what, rank);
    for (size_t c = 0; c < kMemoryCategories.size(); ++c) {
      ZT_ASSIGN_OR_RETURN(p->phase[c],
                          phase_field((*phases)[i], kMemoryCategories[c], where, what));
    }
    ZT_ASSIGN_OR_RETURN(p->total_phase, phase_field((*phases)[i], "total", where, what));
  }
  return out;
}

// Sum of the categories of a memory.jsonl byte object; every value must be a number.
Result<int64_t> sum_bytes(const Json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return int64_t{0};
  if (!it->is_object())
    return make_error(StatusCode::kDataError, "{}: '{}' is not an object", where, key);
  int64_t sum = 0;
  for (auto e = it->begin(); e != it->end(); ++e) {
    if (!e->is_number())
      return make_error(StatusCode::kDataError, "{}: '{}.{}' is not a number", where, key, e.key());
    sum += static_cast<int64_t>(std::llround(e->get<double>()));
  }
  return sum;
}

std::string mib(int64_t bytes) { return bytes < 0 ? "-" : format_mib(bytes); }

}  // namespace

Result<MemoryView> load_memory_view(const std::string& run_dir, std::optional<int64_t> step) {
  MemoryView v;
  v.run_dir = run_dir;
  const fs::path dir(run_dir);
  std::error_code ec;
  ZT_ASSIGN_OR_RETURN(const fs::path metrics, run_metrics_path(run_dir));

  // The chosen step's line (the last record of it: a resumed run repeats steps), or the last step.
  Json chosen;
  std::string chosen_where;
  bool any = false;
  Status st =
      for_each_json_line(metrics, v.notes, [&](const Json& j, const std::string& where) -> Status {
        ZT_ASSIGN_OR_RETURN(int64_t s, integer_field(j, "step", where));
        any = true;
        if (step ? s == *step : s >= v.step) {
          v.step = s;
          chosen = j;
          chosen_where = where;
        }
        return Status::ok();
      });
  if (!st.is_ok()) return st;
  if (!any)
    return make_error(StatusCode::kDataError,
                      "{} has no complete step: the job has not finished its first step yet",
                      metrics.string());
  if (chosen.is_null())
    return make_error(StatusCode::kNotFound, "{} has no step {}", metrics.string(), *step);
  ZT_ASSIGN_OR_RETURN(v.ranks, parse_peaks(chosen, chosen_where));

  const fs::path memory = dir / "memory.jsonl";
  if (!fs::exists(memory, ec)) return v;
  v.has_memory_jsonl = true;
  // The latest timeline at or before the step. The lines of one step are written together, so a
  // later block of lines of the same step (a resumed run) replaces the earlier one.
  std::map<int, RankTimeline> acc;
  int64_t previous_line_step = -1;
  st = for_each_json_line(memory, v.notes, [&](const Json& j, const std::string& where) -> Status {
    ZT_ASSIGN_OR_RETURN(int64_t s, integer_field(j, "step", where));
    ZT_ASSIGN_OR_RETURN(int64_t rank, integer_field(j, "rank", where));
    auto phase = j.find("phase");
    if (phase == j.end() || !phase->is_string())
      return make_error(StatusCode::kDataError, "{}: no 'phase' string", where);
    if (!j.contains("bytes"))
      return make_error(StatusCode::kDataError,
                        "{}: no 'bytes' (each line needs step, rank, "
                        "phase, bytes)",
                        where);
    ZT_ASSIGN_OR_RETURN(int64_t total, sum_bytes(j, "bytes", where));
    ZT_ASSIGN_OR_RETURN(int64_t peak, sum_bytes(j, "peak_bytes", where));
    const bool new_block = s != previous_line_step;
    previous_line_step = s;
    if (s > v.step || s < v.timeline_step) return Status::ok();
    if (new_block) {
      acc.clear();
      v.timeline_step = s;
    }
    RankTimeline& t = acc[static_cast<int>(rank)];
    t.rank = static_cast<int>(rank);
    const PhaseTotal part{phase->get<std::string>(), total, peak};
    if (t.parts == 0 || total > t.highest.total) t.highest = part;
    if (peak > 0 && (t.highest_peak.phase.empty() || peak > t.highest_peak.peak_total))
      t.highest_peak = part;
    ++t.parts;
    return Status::ok();
  });
  if (!st.is_ok()) return st;
  for (auto& [rank, t] : acc) v.timelines.push_back(t);
  return v;
}

std::string format_memory_view(const MemoryView& v) {
  std::string s = fmt::format("Run {}, step {} (metrics.jsonl)\n", v.run_dir, v.step);
  s += "Peak memory per rank (MiB) and the part of the step that set it:\n";
  for (const RankPeaks& r : v.ranks) {
    s += fmt::format("rank {}\n", r.rank);
    for (size_t c = 0; c < kMemoryCategories.size(); ++c)
      s += fmt::format("  {:<17}{:>10}  {}\n", kMemoryCategories[c], mib(r.bytes[c]),
                       r.phase[c].empty() ? "(not recorded)" : r.phase[c]);
    s += fmt::format("  {:<17}{:>10}  {}\n", "total", mib(r.total),
                     r.total_phase.empty() ? "(not recorded)" : r.total_phase);
  }
  if (!v.has_memory_jsonl) {
    s += "No memory.jsonl: the run recorded no memory timeline.\n";
  } else if (v.timeline_step == 0) {
    s += fmt::format("memory.jsonl has no timeline at or before step {}.\n", v.step);
  } else {
    s += fmt::format("Memory timeline (memory.jsonl, step {}):\n", v.timeline_step);
    for (const RankTimeline& t : v.timelines) {
      s += fmt::format("  rank {}: {} parts; most in use after \"{}\" ({} MiB)", t.rank, t.parts,
                       t.highest.phase, mib(t.highest.total));
      if (!t.highest_peak.phase.empty())
        s += fmt::format("; highest high-water in \"{}\" ({} MiB)", t.highest_peak.phase,
                         mib(t.highest_peak.peak_total));
      s += "\n";
    }
  }
  for (const std::string& n : v.notes) s += "Note: " + n + "\n";
  return s;
}

nlohmann::ordered_json memory_view_json(const MemoryView& v) {
  Json j;
  j["run_dir"] = v.run_dir;
  j["step"] = v.step;
  auto number = [](int64_t b) { return b < 0 ? Json(nullptr) : Json(b); };
  auto text = [](const std::string& p) { return p.empty() ? Json(nullptr) : Json(p); };
  Json ranks = Json::array();
  for (const RankPeaks& r : v.ranks) {
    Json bytes, phases;
    for (size_t c = 0; c < kMemoryCategories.size(); ++c) {
      bytes[kMemoryCategories[c]] = number(r.bytes[c]);
      phases[kMemoryCategories[c]] = text(r.phase[c]);
    }
    bytes["total"] = number(r.total);
    phases["total"] = text(r.total_phase);
    ranks.push_back({{"rank", r.rank}, {"peak_bytes", bytes}, {"peak_phase", phases}});
  }
  j["ranks"] = ranks;
  Json timeline;
  timeline["file"] = v.has_memory_jsonl;
  timeline["step"] = v.timeline_step > 0 ? Json(v.timeline_step) : Json(nullptr);
  Json per = Json::array();
  for (const RankTimeline& t : v.timelines) {
    Json e;
    e["rank"] = t.rank;
    e["parts"] = t.parts;
    e["highest"] = {{"phase", t.highest.phase}, {"bytes", t.highest.total}};
    e["highest_peak"] = t.highest_peak.phase.empty() ? Json(nullptr)
                                                     : Json{{"phase", t.highest_peak.phase},
                                                            {"bytes", t.highest_peak.peak_total}};
    per.push_back(e);
  }
  timeline["ranks"] = per;
  j["timeline"] = timeline;
  j["notes"] = v.notes;
  return j;
}

int run_memory(const std::string& run_dir, std::optional<int64_t> step, bool json,
               std::ostream& out, std::ostream& err) {
  Result<MemoryView> v = load_memory_view(run_dir, step);
  if (!v.is_ok()) {
    err << "ztctl memory: error: " << v.status().message() << "\n";
    return 1;
  }
  if (json)
    out << memory_view_json(*v).dump(2) << "\n";
  else
    out << format_memory_view(*v);
  return 0;
}

}  // namespace zt::ctl
