#include "ctl/report.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "ctl/format.h"
#include "ctl/svg_chart.h"

namespace zt::ctl {

const std::vector<std::string> kMemoryCategories = {
    "parameters", "gradients", "optimizer_states", "activations", "communication", "workspace"};
const std::vector<std::string> kTimePhases = {"forward",   "backward",  "recompute",
                                              "comm_wait", "optimizer", "offload_io"};

size_t PartNames::index(const std::string& name) {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return i;
  names.push_back(name);
  return names.size() - 1;
}

double part_at(const Parts& parts, size_t i) {
  return i < parts.size() ? parts[i] : std::numeric_limits<double>::quiet_NaN();
}

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// More rank series than this in one line chart become min / mean / max over the ranks: a legend
// of 64 colours says nothing.
constexpr size_t kMaxRankSeries = 8;
constexpr size_t kMaxPhaseCharts = 8;
constexpr size_t kMaxEventRows = 2000;

// Calls `fn(line, number, partial)` (a Status) for every line of `path`, read one at a time: the
// metrics of a long run are hundreds of MB. `partial`: the last line has no newline after it, so
// its writer may have been cut off mid-line.
template <typename F>
Status for_each_line(const fs::path& path, F fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(StatusCode::kIoError, "cannot read {}: {}", path.string(),
                      std::strerror(errno));
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const bool partial = in.eof();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    ZT_RETURN_IF_ERROR(fn(line, number, partial));
  }
  if (in.bad()) return make_error(StatusCode::kIoError, "error reading {}", path.string());
  return Status::ok();
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// "parse error at line 1, column 5: syntax error ..." without nlohmann's "[json.exception...]".
std::string json_error(const std::exception& e) {
  std::string what = e.what();
  if (what.rfind("[json.exception", 0) == 0) {
    const size_t close = what.find("] ");
    if (close != std::string::npos) what = what.substr(close + 2);
  }
  return what;
}

// "an array", "a string": for messages about a value of the wrong type.
std::string type_name(const Json& j) {
  if (j.is_null()) return "null";
  if (j.is_array()) return "an array";
  if (j.is_object()) return "an object";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  return "a string";
}

// A number field: NaN when missing or null; an error when of another type.
Result<double> number(const Json& obj, const std::string& key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return kNaN;
  if (!it->is_number())
    return make_error(StatusCode::kDataError, "{}: '{}' is {}, expected a number", where, key,
                      type_name(*it));
  return it->get<double>();
}

Result<int64_t> integer(const Json& j, const std::string& what, const std::string& where) {
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number_float() && std::isfinite(j.get<double>()) &&
      j.get<double>() == std::floor(j.get<double>()))
    return static_cast<int64_t>(j.get<double>());
  return make_error(StatusCode::kDataError, "{}: '{}' is {}, expected an integer", where, what,
                    type_name(j));
}

// An object of named numbers (memory bytes, time per phase) as Parts by position in `names`
// (which learns names it has not seen); `skip` names keys that are not parts ("rank").
Result<Parts> parts_of(const Json& obj, PartNames& names, const std::set<std::string>& skip,
                       const std::string& what, const std::string& where) {
  if (!obj.is_object())
    return make_error(StatusCode::kDataError, "{}: '{}' is {}, expected an object", where, what,
                      type_name(obj));
  Parts out(names.names.size(), kNaN);
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (skip.count(it.key())) continue;
    ZT_ASSIGN_OR_RETURN(double v, number(obj, it.key(), where + ": " + what));
    const size_t i = names.index(it.key());
    if (i >= out.size()) out.resize(i + 1, kNaN);
    out[i] = v;
  }
  return out;
}

Result<StepRecord> parse_step(const Json& j, const std::string& where, RunReport& report) {
  if (!j.is_object())
    return make_error(StatusCode::kDataError, "{}: {}, expected one JSON object per line", where,
                      type_name(j));
  StepRecord r;
  auto step = j.find("step");
  if (step == j.end())
    return make_error(StatusCode::kDataError, "{}: no 'step' (every line needs step and loss)",
                      where);
  ZT_ASSIGN_OR_RETURN(r.step, integer(*step, "step", where));
  if (!j.contains("loss"))
    return make_error(StatusCode::kDataError, "{}: no 'loss' (every line needs step and loss)",
                      where);
  // JSON has no NaN: a diverged loss is written as null, which is a gap, not an error.
  ZT_ASSIGN_OR_RETURN(r.loss, number(j, "loss", where));
  ZT_ASSIGN_OR_RETURN(r.lr, number(j, "lr", where));
  ZT_ASSIGN_OR_RETURN(r.grad_norm, number(j, "grad_norm", where));
  ZT_ASSIGN_OR_RETURN(r.loss_scale, number(j, "loss_scale", where));
  ZT_ASSIGN_OR_RETURN(r.tokens, number(j, "tokens", where));
  ZT_ASSIGN_OR_RETURN(r.step_ms, number(j, "step_ms", where));
  ZT_ASSIGN_OR_RETURN(r.tokens_per_s, number(j, "tokens_per_s", where));
  ZT_ASSIGN_OR_RETURN(r.checkpoint_ms, number(j, "checkpoint_ms", where));
  if (auto it = j.find("skipped"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      return make_error(StatusCode::kDataError, "{}: 'skipped' is {}, expected true or false",
                        where, type_name(*it));
    r.skipped = it->get<bool>();
  }
  if (auto it = j.find("peak_memory_bytes"); it != j.end() && !it->is_null()) {
    if (!it->is_array())
      return make_error(StatusCode::kDataError,
                        "{}: 'peak_memory_bytes' is {}, expected a list (one object per rank)",
                        where, type_name(*it));
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& m = (*it)[i];
      const std::string what = fmt::format("peak_memory_bytes[{}]", i);
      RankMemory rm;
      rm.rank = static_cast<int>(i);
      if (m.is_object() && m.contains("rank")) {
        ZT_ASSIGN_OR_RETURN(int64_t rank, integer(m["rank"], what + ".rank", where));
        rm.rank = static_cast<int>(rank);
      }
      ZT_ASSIGN_OR_RETURN(rm.bytes,
                          parts_of(m, report.memory_categories, {"rank", "total"}, what, where));
      ZT_ASSIGN_OR_RETURN(rm.total, number(m, "total", where + ": " + what));
      if (!std::isfinite(rm.total)) {
        rm.total = 0;
        for (double v : rm.bytes)
          if (std::isfinite(v)) rm.total += v;
      }
      r.peak_memory.push_back(std::move(rm));
    }
  }
  if (auto it = j.find("time_ms"); it != j.end() && !it->is_null()) {
    ZT_ASSIGN_OR_RETURN(Parts p, parts_of(*it, report.time_phases, {}, "time_ms", where));
    r.time_ms = std::move(p);
  }
  if (auto it = j.find("time_ms_by_rank"); it != j.end() && !it->is_null()) {
    if (!it->is_array())
      return make_error(StatusCode::kDataError, "{}: 'time_ms_by_rank' is {}, expected a list",
                        where, type_name(*it));
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& t = (*it)[i];
      const std::string what = fmt::format("time_ms_by_rank[{}]", i);
      RankParts rp;
      rp.rank = static_cast<int>(i);
      if (t.is_object() && t.contains("rank")) {
        ZT_ASSIGN_OR_RETURN(int64_t rank, integer(t["rank"], what + ".rank", where));
        rp.rank = static_cast<int>(rank);
      }
      ZT_ASSIGN_OR_RETURN(rp.parts, parts_of(t, report.time_phases, {"rank"}, what, where));
      r.time_ms_by_rank.push_back(std::move(rp));
    }
  }
  if (auto it = j.find("comm_bytes"); it != j.end() && !it->is_null()) {
    if (it->is_number()) {
      r.comm_bytes = it->get<double>();
    } else if (it->is_array()) {
      double sum = 0;
      for (size_t i = 0; i < it->size(); ++i) {
        const Json& e = (*it)[i];
        const std::string what = fmt::format("comm_bytes[{}]", i);
        int rank = static_cast<int>(i);
        double bytes = kNaN;
        if (e.is_number()) {
          bytes = e.get<double>();
        } else if (e.is_object()) {
          if (e.contains("rank")) {
            ZT_ASSIGN_OR_RETURN(int64_t rk, integer(e["rank"], what + ".rank", where));
            rank = static_cast<int>(rk);
          }
          ZT_ASSIGN_OR_RETURN(bytes, number(e, "bytes", where + ": " + what));
        } else {
          return make_error(StatusCode::kDataError,
                            "{}: '{}' is {}, expected a number or {{rank, bytes}}", where, what,
                            type_name(e));
        }
        if (std::isfinite(bytes)) sum += bytes;
        r.comm_bytes_by_rank.emplace_back(rank, bytes);
      }
      r.comm_bytes = sum;
    } else {
      return make_error(StatusCode::kDataError,
                        "{}: 'comm_bytes' is {}, expected a number or a list per rank", where,
                        type_name(*it));
    }
  }
  return r;
}

Result<PhaseMemory> parse_phase(const Json& j, const std::string& where, RunReport& report) {
  if (!j.is_object())
    return make_error(StatusCode::kDataError, "{}: {}, expected one JSON object per line", where,
                      type_name(j));
  PhaseMemory p;
  for (const char* key : {"step", "rank", "phase", "bytes"})
    if (!j.contains(key))
      return make_error(StatusCode::kDataError,
                        "{}: no '{}' (each line needs step, rank, phase, "
                        "bytes)",
                        where, key);
  ZT_ASSIGN_OR_RETURN(p.step, integer(j["step"], "step", where));
  ZT_ASSIGN_OR_RETURN(int64_t rank, integer(j["rank"], "rank", where));
  p.rank = static_cast<int>(rank);
  if (!j["phase"].is_string())
    return make_error(StatusCode::kDataError, "{}: 'phase' is {}, expected a string", where,
                      type_name(j["phase"]));
  p.phase = j["phase"].get<std::string>();
  ZT_ASSIGN_OR_RETURN(p.bytes, parts_of(j["bytes"], report.memory_categories, {}, "bytes", where));
  return p;
}

// Parses every line of a JSON-lines file with `parse`; a partial last line is skipped with a
// note, anything else malformed is an error naming the file and line.
template <typename T, typename F>
Result<std::vector<T>> read_jsonl(const fs::path& path, F parse, std::vector<std::string>& notes) {
  std::vector<T> out;
  Status st = for_each_line(path, [&](const std::string& line, size_t number, bool partial) {
    const std::string where = fmt::format("{}:{}", path.string(), number);
    if (blank(line)) {
      if (partial) return Status::ok();
      return make_error(StatusCode::kDataError, "{}: empty line (expected one JSON object)", where);
    }
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::parse_error& e) {
      if (!partial)
        return make_error(StatusCode::kDataError, "{}: not valid JSON: {}", where, json_error(e));
      notes.push_back(fmt::format(
          "The last line of {} ({}) is incomplete — the writer was still writing it or was "
          "stopped mid-line — and was left out.",
          path.filename().string(), where));
      return Status::ok();
    }
    Result<T> r = parse(j, where);
    if (!r.is_ok()) return r.status();
    out.push_back(std::move(r).value());
    return Status::ok();
  });
  if (!st.is_ok()) return st;
  return out;
}

// "2024-05-01T12:00:00Z rest" -> {time, rest}. Parsed by hand: std::regex recurses per
// character and can exhaust the stack on a long line.
EventLine parse_event(const std::string& line) {
  const size_t space = line.find(' ');
  const std::string stamp = line.substr(0, space);
  auto digits = [&](size_t from, size_t n) {
    for (size_t i = from; i < from + n; ++i)
      if (i >= stamp.size() || !std::isdigit(static_cast<unsigned char>(stamp[i]))) return false;
    return true;
  };
  const bool is_stamp = stamp.size() >= 19 && digits(0, 4) && stamp[4] == '-' && digits(5, 2) &&
                        stamp[7] == '-' && digits(8, 2) && stamp[10] == 'T' && digits(11, 2) &&
                        stamp[13] == ':' && digits(14, 2) && stamp[16] == ':' && digits(17, 2);
  if (!is_stamp || space == std::string::npos) return {"", line};
  const size_t text = line.find_first_not_of(' ', space);
  return {stamp, text == std::string::npos ? "" : line.substr(text)};
}

// The number right after `before` ("world 2") or right before `after` ("842496 parameters") in
// the first event that has one; -1 when none does.
int64_t event_number(const std::vector<EventLine>& events, const std::string& before,
                     const std::string& after) {
  for (const EventLine& e : events) {
    const std::string& t = e.text;
    const std::string& key = before.empty() ? after : before;
    for (size_t p = t.find(key); p != std::string::npos; p = t.find(key, p + 1)) {
      size_t b, end;
      if (!before.empty()) {
        b = end = p + before.size();
        while (end < t.size() && std::isdigit(static_cast<unsigned char>(t[end]))) ++end;
      } else {
        b = end = p;
        while (b > 0 && std::isdigit(static_cast<unsigned char>(t[b - 1]))) --b;
      }
      if (end > b && end - b < 19) return std::stoll(t.substr(b, end - b));
    }
  }
  return -1;
}

// The word after "dtype " in the first event that has one.
std::string event_dtype(const std::vector<EventLine>& events) {
  for (const EventLine& e : events) {
    const size_t p = e.text.find("dtype ");
    if (p == std::string::npos) continue;
    size_t end = p + 6;
    while (end < e.text.size() && std::isalnum(static_cast<unsigned char>(e.text[end]))) ++end;
    if (end > p + 6) return e.text.substr(p + 6, end - p - 6);
  }
  return "";
}

// ---- summary ----

std::string yaml_scalar(const YAML::Node& root, std::initializer_list<const char*> path) {
  try {
    // reset() re-points the handle; assigning one Node to another would overwrite the config.
    YAML::Node n;
    n.reset(root);
    for (const char* key : path) {
      if (!n.IsMap()) return "";
      const YAML::Node& parent = n;
      const YAML::Node child = parent[key];  // const: a missing key is not inserted
      if (!child) return "";
      n.reset(child);
    }
    if (n.IsScalar()) return n.Scalar();
    if (n.IsSequence()) {
      std::string s = "[";
      for (size_t i = 0; i < n.size(); ++i)
        s += (i ? ", " : "") + (n[i].IsScalar() ? n[i].Scalar() : std::string("…"));
      return s + "]";
    }
  } catch (const YAML::Exception&) {
  }
  return "";
}

std::string mean_tokens_per_s(const std::vector<StepRecord>& steps, std::string* range) {
  // Step 1 pays for first-touch allocations and warm caches; leaving it out when there is more
  // than one step gives the rate the run settles at.
  const size_t first = steps.size() > 1 ? 1 : 0;
  double sum = 0;
  size_t n = 0;
  for (size_t i = first; i < steps.size(); ++i)
    if (std::isfinite(steps[i].tokens_per_s)) sum += steps[i].tokens_per_s, ++n;
  if (n == 0) return "";
  if (range)
    *range = first == 1 ? fmt::format("steps {}–{}; the first step is left out as warm-up",
                                      steps[1].step, steps.back().step)
                        : fmt::format("step {}", steps.front().step);
  return format_count(sum / static_cast<double>(n));
}

struct Peak {
  double bytes = 0;
  int rank = -1;
  int64_t step = 0;
};
Peak peak_memory(const std::vector<StepRecord>& steps) {
  Peak p;
  for (const StepRecord& s : steps)
    for (const RankMemory& m : s.peak_memory)
      if (m.total > p.bytes) p = {m.total, m.rank, s.step};
  return p;
}

int world_size(const RunReport& r) {
  size_t ranks = 0;
  for (const StepRecord& s : r.steps) ranks = std::max(ranks, s.peak_memory.size());
  if (ranks > 0) return static_cast<int>(ranks);
  int64_t w = event_number(r.events, "world ", "");            // zt-worker without a coordinator
  if (w < 0) w = event_number(r.events, "plan sent to ", "");  // the coordinator
  return w > 0 ? static_cast<int>(w) : 0;
}

std::string format_loss(double v) {
  return std::isfinite(v) ? fmt::format("{:.4f}", v) : std::string("n/a");
}

// ---- page ----

struct Figure {
  std::string title;
  std::string caption;  // plain text
  std::string svg;
  bool wide = false;
};

std::string figure_html(const Figure& f) {
  return fmt::format(
      "<figure class=\"zt-figure{}\"><figcaption><h3>{}</h3><p>{}</p></figcaption>{}</figure>\n",
      f.wide ? " zt-wide" : "", svg::html_escape(f.title), svg::html_escape(f.caption), f.svg);
}

std::vector<double> step_x(const std::vector<StepRecord>& steps) {
  std::vector<double> x;
  for (const StepRecord& s : steps) x.push_back(static_cast<double>(s.step));
  return x;
}

std::vector<double> skipped_steps(const std::vector<StepRecord>& steps) {
  std::vector<double> x;
  for (const StepRecord& s : steps)
    if (s.skipped) x.push_back(static_cast<double>(s.step));
  return x;
}

std::string not_recorded(const std::string& id, const std::string& title, const std::string& what) {
  return svg::placeholder_chart(id, title, "Not recorded in this run (" + what + ").");
}

// Per-rank values over steps as line series: one per rank, or min / mean / max over the ranks
// when there are too many for a legend.
std::vector<svg::Series> rank_series(
    const std::vector<StepRecord>& steps, const std::vector<int>& ranks,
    const std::function<double(const StepRecord&, int rank)>& value) {
  std::vector<svg::Series> out;
  const std::vector<double> x = step_x(steps);
  if (ranks.size() <= kMaxRankSeries) {
    for (int rank : ranks) {
      svg::Series s{fmt::format("rank {}", rank), x, {}};
      for (const StepRecord& st : steps) s.y.push_back(value(st, rank));
      out.push_back(std::move(s));
    }
    return out;
  }
  svg::Series lo{"min over ranks", x, {}}, mean{"mean over ranks", x, {}},
      hi{"max over ranks", x, {}};
  for (const StepRecord& st : steps) {
    double a = INFINITY, b = -INFINITY, sum = 0;
    size_t n = 0;
    for (int rank : ranks) {
      const double v = value(st, rank);
      if (!std::isfinite(v)) continue;
      a = std::min(a, v), b = std::max(b, v), sum += v, ++n;
    }
    lo.y.push_back(n ? a : kNaN);
    mean.y.push_back(n ? sum / static_cast<double>(n) : kNaN);
    hi.y.push_back(n ? b : kNaN);
  }
  return {hi, mean, lo};
}

std::vector<int> ranks_in(const std::vector<StepRecord>& steps) {
  std::set<int> ranks;
  for (const StepRecord& s : steps)
    for (const RankMemory& m : s.peak_memory) ranks.insert(m.rank);
  return {ranks.begin(), ranks.end()};
}

const RankMemory* memory_of(const StepRecord& s, int rank) {
  for (const RankMemory& m : s.peak_memory)
    if (m.rank == rank) return &m;
  return nullptr;
}

// Colours by category name, so a category keeps its colour in every memory chart.
std::vector<size_t> category_colours(const std::vector<std::string>& names) {
  std::vector<size_t> out;
  size_t extra = kMemoryCategories.size();
  for (const std::string& n : names) {
    auto it = std::find(kMemoryCategories.begin(), kMemoryCategories.end(), n);
    out.push_back(it == kMemoryCategories.end()
                      ? extra++
                      : static_cast<size_t>(it - kMemoryCategories.begin()));
  }
  return out;
}

std::vector<Figure> training_figures(const RunReport& r, const YAML::Node& cfg) {
  const std::vector<StepRecord>& st = r.steps;
  const std::vector<double> x = step_x(st);
  const std::vector<double> skipped = skipped_steps(st);
  auto series = [&](const std::string& name, double StepRecord::*field) {
    svg::Series s{name, x, {}};
    for (const StepRecord& rec : st) s.y.push_back(rec.*field);
    return s;
  };
  auto line = [&](const std::string& id, const std::string& title, const std::string& y_label,
                  svg::Series s) {
    svg::LineChart c;
    c.id = id, c.title = title, c.x_label = "step", c.y_label = y_label;
    c.series.push_back(std::move(s));
    c.marks = skipped;
    c.marks_label = "skipped step (fp16 overflow)";
    return c;
  };
  std::vector<Figure> out;
  {
    svg::LineChart c =
        line("chart-loss", "Training loss", "loss (nats/token)", series("loss", &StepRecord::loss));
    c.log_y = true;  // used only when the loss falls by ten times or more
    std::string caption =
        "Mean cross-entropy over every target token of the step's global batch, from that step's "
        "forward pass.";
    if (!skipped.empty())
      caption +=
          fmt::format(" Dashed marks: {} step(s) skipped on an fp16 overflow.", skipped.size());
    out.push_back({"Loss", caption, svg::line_chart(c)});
  }
  {
    svg::LineChart c =
        line("chart-lr", "Learning rate", "learning rate", series("lr", &StepRecord::lr));
    std::string sched = yaml_scalar(cfg, {"scheduler", "type"});
    out.push_back({"Learning rate",
                   sched.empty()
                       ? "The rate the optimizer applied at each step."
                       : "The rate the optimizer applied at each step (scheduler " + sched + ").",
                   svg::line_chart(c)});
  }
  {
    svg::LineChart c = line("chart-grad-norm", "Gradient norm", "global gradient norm",
                            series("grad norm", &StepRecord::grad_norm));
    const std::string clip = yaml_scalar(cfg, {"gradient_clipping"});
    std::string caption =
        "Global L2 norm of the gradients before clipping; gaps are steps whose norm was not "
        "finite (fp16 overflow).";
    if (!clip.empty() && clip != "0" && clip != "0.0")
      caption += " Clipping threshold: " + clip + ".";
    out.push_back({"Gradient norm", caption, svg::line_chart(c)});
  }
  {
    svg::LineChart c = line("chart-loss-scale", "Loss scale", "loss scale",
                            series("loss scale", &StepRecord::loss_scale));
    c.log_y = true;
    out.push_back({"Loss scale",
                   "The fp16 dynamic loss scale (halved on an overflow, raised after a quiet "
                   "window); constant 1 in fp32 and bf16 runs.",
                   svg::line_chart(c)});
  }
  return out;
}

std::vector<Figure> speed_figures(const RunReport& r) {
  const std::vector<StepRecord>& st = r.steps;
  const std::vector<double> x = step_x(st);
  std::vector<Figure> out;
  {
    svg::LineChart c;
    c.id = "chart-throughput", c.title = "Throughput", c.x_label = "step";
    c.y_label = "throughput", c.y_unit = "tok/s", c.y_from_zero = true;
    svg::Series s{"tokens/s", x, {}};
    for (const StepRecord& rec : st) {
      s.y.push_back(rec.tokens_per_s);
      if (rec.checkpoint_ms > 0) c.marks.push_back(static_cast<double>(rec.step));
    }
    c.series.push_back(std::move(s));
    c.marks_label = "checkpoint taken after the step";
    out.push_back({"Throughput",
                   "Tokens trained per second at each step (the global batch). Dashed marks: a "
                   "checkpoint was taken after that step.",
                   svg::line_chart(c)});
  }
  // Step time by phase: the job's own breakdown, else the mean of the ranks'.
  bool any_time = false, any_by_rank = false;
  for (const StepRecord& rec : st) {
    any_time = any_time || rec.time_ms || !rec.time_ms_by_rank.empty();
    any_by_rank = any_by_rank || !rec.time_ms_by_rank.empty();
  }
  const std::vector<std::string>& phases = r.time_phases.names;
  if (!any_time) {
    out.push_back(
        {"Step time by phase", "Where each step's time goes.",
         not_recorded("chart-step-time", "Step time by phase", "metrics.jsonl has no time_ms")});
  } else {
    svg::StackedArea a;
    a.id = "chart-step-time", a.title = "Step time by phase", a.x_label = "step";
    a.y_label = "time per step", a.unit = "ms";
    a.layers = phases;
    a.values.assign(phases.size(), {});
    for (const StepRecord& rec : st) {
      std::vector<double> v(phases.size(), 0);
      if (rec.time_ms) {
        for (size_t l = 0; l < phases.size(); ++l) v[l] = part_at(*rec.time_ms, l);
      } else if (!rec.time_ms_by_rank.empty()) {
        for (size_t l = 0; l < phases.size(); ++l) {
          double sum = 0;
          for (const RankParts& rp : rec.time_ms_by_rank) {
            const double p = part_at(rp.parts, l);
            if (std::isfinite(p)) sum += p;
          }
          v[l] = sum / static_cast<double>(rec.time_ms_by_rank.size());
        }
      } else {
        continue;
      }
      a.x.push_back(static_cast<double>(rec.step));
      for (size_t l = 0; l < phases.size(); ++l) a.values[l].push_back(v[l]);
    }
    out.push_back(
        {"Step time by phase",
         "Milliseconds of each step by phase, stacked" +
             std::string(st.front().time_ms || !any_by_rank ? "." : " (mean over ranks)."),
         svg::stacked_area_chart(a)});
  }
  if (any_by_rank) {
    // Mean per rank over the steps that report it: a slow or waiting rank stands out.
    std::map<int, std::pair<std::vector<double>, size_t>> per_rank;
    for (const StepRecord& rec : st)
      for (const RankParts& rp : rec.time_ms_by_rank) {
        auto& [sums, n] = per_rank[rp.rank];
        sums.resize(phases.size(), 0);
        for (size_t l = 0; l < phases.size(); ++l)
          if (std::isfinite(part_at(rp.parts, l))) sums[l] += part_at(rp.parts, l);
        ++n;
      }
    svg::StackedBars b;
    b.id = "chart-step-time-ranks", b.title = "Mean step time per rank", b.x_label = "rank";
    b.y_label = "mean time per step", b.unit = "ms";
    b.layers = phases;
    b.values.assign(phases.size(), {});
    for (const auto& [rank, sn] : per_rank) {
      b.groups.push_back(fmt::format("rank {}", rank));
      for (size_t l = 0; l < phases.size(); ++l)
        b.values[l].push_back(sn.first[l] / static_cast<double>(sn.second));
    }
    out.push_back({"Step time per rank",
                   "Mean milliseconds per step of each rank, by phase: an imbalance between ranks "
                   "shows as comm_wait on the others.",
                   svg::stacked_bar_chart(b)});
  }
  // Communication per step.
  bool any_comm = false;
  std::set<int> comm_ranks;
  double comm_max = 0;
  for (const StepRecord& rec : st) {
    if (rec.comm_bytes) any_comm = true, comm_max = std::max(comm_max, *rec.comm_bytes);
    for (const auto& [rank, bytes] : rec.comm_bytes_by_rank) comm_ranks.insert(rank);
  }
  if (!any_comm) {
    out.push_back(
        {"Communication per step", "Bytes this job sent per step.",
         not_recorded("chart-comm", "Communication per step", "metrics.jsonl has no comm_bytes")});
  } else {
    svg::LineChart c;
    c.id = "chart-comm", c.title = "Communication per step", c.x_label = "step";
    c.y_label = "sent per step", c.y_from_zero = true;
    const svg::ByteUnit u = svg::byte_unit(comm_max);
    c.y_divisor = u.divisor, c.y_unit = u.unit;
    svg::Series total{"whole job", x, {}};
    for (const StepRecord& rec : st) total.y.push_back(rec.comm_bytes ? *rec.comm_bytes : kNaN);
    c.series.push_back(std::move(total));
    if (comm_ranks.size() > 1) {
      std::vector<svg::Series> per = rank_series(
          st, {comm_ranks.begin(), comm_ranks.end()}, [](const StepRecord& rec, int rank) {
            for (const auto& [rk, b] : rec.comm_bytes_by_rank)
              if (rk == rank) return b;
            return kNaN;
          });
      for (svg::Series& s : per) c.series.push_back(std::move(s));
    }
    out.push_back({"Communication per step",
                   "Bytes sent per step by the whole job" +
                       std::string(comm_ranks.size() > 1 ? " and by each rank." : "."),
                   svg::line_chart(c)});
  }
  return out;
}

std::vector<Figure> memory_figures(const RunReport& r) {
  const std::vector<StepRecord>& st = r.steps;
  const std::vector<int> ranks = ranks_in(st);
  std::vector<Figure> out;
  if (ranks.empty()) {
    out.push_back({"Peak memory per rank", "",
                   not_recorded("chart-memory-peak", "Peak memory per rank",
                                "metrics.jsonl has no peak_memory_bytes")});
    out.push_back({"Memory over the run", "",
                   not_recorded("chart-memory-timeline", "Memory over the run",
                                "metrics.jsonl has no peak_memory_bytes")});
  } else {
    // Each rank's bar: its record with the highest total (the peaks are running maxima, so this is
    // normally the last step).
    std::vector<const RankMemory*> top(ranks.size(), nullptr);
    std::vector<int64_t> top_step(ranks.size(), 0);
    for (const StepRecord& rec : st)
      for (size_t i = 0; i < ranks.size(); ++i)
        if (const RankMemory* m = memory_of(rec, ranks[i]);
            m && (!top[i] || m->total >= top[i]->total))
          top[i] = m, top_step[i] = rec.step;
    svg::StackedBars b;
    b.id = "chart-memory-peak", b.title = "Peak memory per rank", b.x_label = "rank";
    b.y_label = "peak memory", b.bytes = true;
    b.layers = r.memory_categories.names;
    b.colours = category_colours(b.layers);
    b.values.assign(b.layers.size(), {});
    std::set<int64_t> steps_used;
    for (size_t i = 0; i < ranks.size(); ++i) {
      b.groups.push_back(fmt::format("rank {}", ranks[i]));
      steps_used.insert(top_step[i]);
      for (size_t l = 0; l < b.layers.size(); ++l)
        b.values[l].push_back(top[i] ? part_at(top[i]->bytes, l) : 0);
    }
    const std::string at = steps_used.size() == 1
                               ? fmt::format("step {}", *steps_used.begin())
                               : std::string("each rank's step with the highest total");
    out.push_back({"Peak memory per rank",
                   "Peak bytes per category on each rank, stacked, at " + at +
                       ". The category peaks need not coincide in time, so a bar can exceed the "
                       "peak total.",
                   svg::stacked_bar_chart(b)});

    svg::LineChart c;
    c.id = "chart-memory-timeline", c.title = "Peak memory over the run", c.x_label = "step";
    c.y_label = "peak memory", c.y_from_zero = true;
    double max_total = 0;
    for (const RankMemory* m : top)
      if (m) max_total = std::max(max_total, m->total);
    const svg::ByteUnit u = svg::byte_unit(max_total);
    c.y_divisor = u.divisor, c.y_unit = u.unit;
    c.series = rank_series(st, ranks, [](const StepRecord& rec, int rank) {
      const RankMemory* m = memory_of(rec, rank);
      return m ? m->total : kNaN;
    });
    out.push_back({"Peak memory over the run", "Each rank's peak total so far, after every step.",
                   svg::line_chart(c)});
  }

  if (r.phase_memory.empty()) {
    out.push_back({"Memory by phase", "",
                   not_recorded("chart-memory-phases", "Memory by phase",
                                r.has_memory_jsonl ? "memory.jsonl is empty"
                                                   : "the run directory has no memory.jsonl")});
    return out;
  }
  // The last step memory.jsonl covers; one chart per rank, phases in the order they were written.
  int64_t last = r.phase_memory.front().step;
  for (const PhaseMemory& p : r.phase_memory) last = std::max(last, p.step);
  std::map<int, std::vector<const PhaseMemory*>> by_rank;
  for (const PhaseMemory& p : r.phase_memory)
    if (p.step == last) by_rank[p.rank].push_back(&p);
  size_t shown = 0;
  for (const auto& [rank, phases] : by_rank) {
    if (shown++ == kMaxPhaseCharts) break;
    svg::StackedBars b;
    b.id = fmt::format("chart-memory-phases-rank-{}", rank);
    b.title = fmt::format("Memory by phase, rank {}, step {}", rank, last);
    b.x_label = "phase", b.y_label = "memory", b.bytes = true;
    b.layers = r.memory_categories.names;
    b.colours = category_colours(b.layers);
    b.values.assign(b.layers.size(), {});
    for (const PhaseMemory* p : phases) {
      b.groups.push_back(p->phase);
      for (size_t l = 0; l < b.layers.size(); ++l) b.values[l].push_back(part_at(p->bytes, l));
    }
    b.width = 1000;
    out.push_back({fmt::format("Memory by phase — rank {}", rank),
                   fmt::format("Bytes in use by category at each phase of step {} (the last "
                               "recorded in memory.jsonl), in the order the phases ran.",
                               last),
                   svg::stacked_bar_chart(b), true});
  }
  if (by_rank.size() > kMaxPhaseCharts)
    out.back().caption += fmt::format(" Ranks after the first {} are not shown.", kMaxPhaseCharts);
  return out;
}

constexpr const char* kCss = R"css(
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #ffffff; --card: #f9fafb;
        --accent: #0072B2; --bad: #b91c1c; --good: #047857; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 24px 28px 48px; color: var(--fg);
       background: var(--bg); line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
header { border-bottom: 3px solid var(--accent); padding-bottom: 10px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 30px 0 12px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0; }
.sub { color: var(--muted); margin: 0; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .detail { color: var(--muted); font-size: 12px; }
.notes { background: #fff7ed; border-left: 4px solid #E69F00; padding: 8px 14px; margin: 16px 0; }
.notes p { margin: 4px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 18px; }
figure.zt-figure { margin: 0; padding: 12px 14px 8px; border: 1px solid var(--line);
                   border-radius: 8px;
                   break-inside: avoid; page-break-inside: avoid; }
figure.zt-wide { grid-column: 1 / -1; }
figcaption p { margin: 2px 0 8px; color: var(--muted); font-size: 13px; }
svg.zt-chart { display: block; width: 100%; height: auto; }
svg.zt-chart .zt-hover rect:hover { fill: rgba(0, 114, 178, 0.08); }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; white-space: nowrap; }
table.summary th { width: 16em; }
table.events td.time { white-space: nowrap; font-variant-numeric: tabular-nums;
                       color: var(--muted); }
tr.bad td { color: var(--bad); }
tr.good td.text { color: var(--good); }
pre { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px;
      overflow: auto; max-height: 36em; font-size: 13px; }
.two { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 18px; }
#run h3 { margin: 18px 0 8px; }
footer { margin-top: 28px; color: var(--muted); font-size: 12px; }
@media print {
  @page { margin: 12mm; }
  body { max-width: none; padding: 0; font-size: 11pt; }
  .grid { grid-template-columns: 1fr 1fr; gap: 10px; }
  .two { grid-template-columns: 1fr; }
  figure.zt-figure, .card, tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  pre { max-height: none; overflow: visible; white-space: pre-wrap; }
  svg.zt-chart .zt-hover { display: none; }
}
)css";

// Walks every chart after the page has loaded and records on <body data-zt-check> whether each
// has drawn data inside its frame (or is a deliberate placeholder); tests read it with a headless
// browser, and a failure also goes to the console.
constexpr const char* kSelfCheck = R"js(
(function () {
  var failures = [], charts = 0, placeholders = 0;
  var all = document.querySelectorAll('svg.zt-chart');
  for (var i = 0; i < all.length; i++) {
    var svg = all[i], id = svg.id || '(chart ' + i + ')';
    var series = Number(svg.getAttribute('data-series'));
    var points = Number(svg.getAttribute('data-points'));
    var els = svg.querySelectorAll('path.zt-series, path.zt-area, rect.zt-bar');
    if (svg.classList.contains('zt-placeholder')) {
      placeholders++;
      if (series !== 0 || points !== 0 || els.length !== 0)
        failures.push(id + ': placeholder with data');
      continue;
    }
    charts++;
    if (!(series > 0 && points > 0)) { failures.push(id + ': declares no data'); continue; }
    if (els.length < series)
      failures.push(id + ': ' + els.length + ' data elements for ' + series + ' series');
    var box = svg.getBoundingClientRect();
    if (!(box.width > 0 && box.height > 0)) failures.push(id + ': not rendered');
    var vb = svg.viewBox.baseVal;
    for (var j = 0; j < els.length; j++) {
      var el = els[j];
      if (el.tagName.toLowerCase() === 'path') {
        var d = el.getAttribute('d') || '';
        if (!/^M/.test(d) || /NaN|Infinity|undefined/.test(d)) {
          failures.push(id + ': bad path data');
          break;
        }
      }
      var b = el.getBBox();
      if (!(b.width > 0 || b.height > 0)) { failures.push(id + ': empty data element'); break; }
      if (b.x < vb.x - 1 || b.y < vb.y - 1 || b.x + b.width > vb.x + vb.width + 1 ||
          b.y + b.height > vb.y + vb.height + 1) {
        failures.push(id + ': data outside the chart');
        break;
      }
    }
  }
  var result = failures.length ? 'fail ' + failures.join('; ')
                               : 'ok charts=' + charts + ' placeholders=' + placeholders;
  document.body.setAttribute('data-zt-check', result);
  if (failures.length) console.error('zt-report self-check: ' + result);
})();
)js";

std::string card(const std::string& label, const std::string& value, const std::string& detail) {
  return fmt::format(
      "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div>"
      "<div class=\"detail\">{}</div></div>",
      svg::html_escape(label), svg::html_escape(value.empty() ? "—" : value),
      svg::html_escape(detail));
}

YAML::Node load_config(const RunReport& r, std::string* note) {
  if (!r.has_config) return YAML::Node();
  try {
    return YAML::Load(r.config_text);
  } catch (const YAML::Exception& e) {
    if (note)
      *note = std::string("config.resolved.yaml does not parse as YAML (") + e.what() +
              "); it is shown as written but left out of the summary.";
    return YAML::Node();
  }
}

double sum_of(const std::vector<StepRecord>& st, double StepRecord::*field) {
  double sum = 0;
  for (const StepRecord& s : st)
    if (std::isfinite(s.*field)) sum += s.*field;
  return sum;
}

}  // namespace

Result<std::string> run_metrics_path(const std::string& run_dir) {
  const fs::path dir(run_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return make_error(StatusCode::kNotFound, "run directory '{}' does not exist", run_dir);
  const fs::path metrics = dir / "metrics.jsonl";
  if (!fs::exists(metrics, ec))
    return make_error(StatusCode::kNotFound,
                      "{} not found: is '{}' a run directory, and has its job finished a step?",
                      metrics.string(), run_dir);
  return metrics.string();
}

Result<RunReport> load_run_report(const std::string& run_dir) {
  RunReport r;
  r.run_dir = run_dir;
  const fs::path dir(run_dir);
  std::error_code ec;
  ZT_ASSIGN_OR_RETURN(const fs::path metrics, run_metrics_path(run_dir));
  ZT_ASSIGN_OR_RETURN(
      std::vector<StepRecord> steps,
      read_jsonl<StepRecord>(
          metrics,
          [&r](const Json& j, const std::string& where) { return parse_step(j, where, r); },
          r.notes));
  if (steps.empty())
    return make_error(StatusCode::kDataError,
                      "{} has no complete step: the job has not finished its first step yet",
                      metrics.string());
  // A resumed run appends the steps after its checkpoint again; the later record of a step is
  // the one that led to the final state.
  // Sorted in place (stable: file order within a step) rather than through a map, so a long
  // run's records are held once.
  std::stable_sort(steps.begin(), steps.end(),
                   [](const StepRecord& a, const StepRecord& b) { return a.step < b.step; });
  size_t repeated = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (i + 1 < steps.size() && steps[i + 1].step == steps[i].step) {
      ++repeated;
      continue;
    }
    r.steps.push_back(std::move(steps[i]));
  }
  steps.clear();
  if (repeated > 0)
    r.notes.push_back(fmt::format(
        "{} step(s) appear more than once in metrics.jsonl (a run resumed from an earlier "
        "checkpoint); the last record of each is shown.",
        repeated));

  const fs::path memory = dir / "memory.jsonl";
  if (fs::exists(memory, ec)) {
    r.has_memory_jsonl = true;
    ZT_ASSIGN_OR_RETURN(r.phase_memory, read_jsonl<PhaseMemory>(
                                            memory,
                                            [&r](const Json& j, const std::string& where) {
                                              return parse_phase(j, where, r);
                                            },
                                            r.notes));
  }
  const fs::path config = dir / "config.resolved.yaml";
  if (fs::exists(config, ec)) {
    std::ifstream in(config, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) return make_error(StatusCode::kIoError, "cannot read {}", config.string());
    r.has_config = true;
    r.config_text = ss.str();
  }
  const fs::path events = dir / "events.log";
  if (fs::exists(events, ec)) {
    r.has_events = true;
    ZT_RETURN_IF_ERROR(for_each_line(events, [&](const std::string& l, size_t, bool) {
      if (!blank(l)) r.events.push_back(parse_event(l));
      return Status::ok();
    }));
  }
  return r;
}

RunSummary summarize(const RunReport& r) {
  RunSummary s;
  auto row = [&](const std::string& label, const std::string& value) {
    if (!value.empty()) s.rows.emplace_back(label, value);
  };
  const YAML::Node cfg = load_config(r, nullptr);
  row("Run directory", r.run_dir);
  {
    const std::string family = yaml_scalar(cfg, {"model", "family"});
    const std::string layers = yaml_scalar(cfg, {"model", "n_layer"});
    if (!layers.empty())
      row("Model",
          fmt::format("{} · {} layers · {} heads · embedding {} · context {} · vocab {}",
                      family == "gpt2" ? "GPT-2" : family, layers,
                      yaml_scalar(cfg, {"model", "n_head"}), yaml_scalar(cfg, {"model", "n_embd"}),
                      yaml_scalar(cfg, {"model", "block_size"}),
                      yaml_scalar(cfg, {"model", "vocab_size"})));
  }
  {
    const int64_t p = event_number(r.events, "", " parameters");
    if (p >= 0)
      row("Parameters", fmt::format("{} ({:.2f} M)", format_count(static_cast<double>(p)),
                                    static_cast<double>(p) / 1e6));
  }
  const int world = world_size(r);
  if (world > 0) row("World size", fmt::format("{} rank{}", world, world == 1 ? "" : "s"));
  {
    const std::string stage = yaml_scalar(cfg, {"zero_optimization", "stage"});
    std::string value = stage.empty() ? "" : "stage " + stage;
    const std::string opt = yaml_scalar(cfg, {"zero_optimization", "offload_optimizer", "device"});
    const std::string par = yaml_scalar(cfg, {"zero_optimization", "offload_param", "device"});
    if (!value.empty() && !opt.empty() && opt != "none") value += "; optimizer state on " + opt;
    if (!value.empty() && !par.empty() && par != "none") value += "; parameter shard on " + par;
    row("ZeRO", value);
  }
  {
    const std::string type = yaml_scalar(cfg, {"optimizer", "type"});
    std::string value = type;
    for (const char* k : {"lr", "betas", "weight_decay"}) {
      const std::string v = yaml_scalar(cfg, {"optimizer", "params", k});
      if (!v.empty() && !value.empty()) value += fmt::format(" · {} {}", k, v);
    }
    const std::string sched = yaml_scalar(cfg, {"scheduler", "type"});
    if (!value.empty() && !sched.empty()) value += " · scheduler " + sched;
    row("Optimizer", value);
  }
  {
    std::string dtype;
    if (yaml_scalar(cfg, {"bf16", "enabled"}) == "true")
      dtype = "bf16 mixed precision";
    else if (yaml_scalar(cfg, {"fp16", "enabled"}) == "true")
      dtype = "fp16 mixed precision";
    else if (cfg && cfg.IsMap())
      dtype = "fp32";
    if (dtype.empty()) dtype = event_dtype(r.events);
    row("Precision", dtype);
  }
  {
    const std::string global = yaml_scalar(cfg, {"train_batch_size"});
    const std::string micro = yaml_scalar(cfg, {"train_micro_batch_size_per_gpu"});
    const std::string accum = yaml_scalar(cfg, {"gradient_accumulation_steps"});
    const std::string ctx = yaml_scalar(cfg, {"model", "block_size"});
    if (!global.empty())
      row("Batch", fmt::format("{} sequences per step ({} per rank × {} accumulation){}", global,
                               micro, accum, ctx.empty() ? "" : " of " + ctx + " tokens"));
    const std::string ac = yaml_scalar(cfg, {"activation_checkpointing", "policy"});
    row("Activation checkpointing", ac);
    row("Backend", yaml_scalar(cfg, {"backend"}));
  }
  const std::vector<StepRecord>& st = r.steps;
  {
    const std::string planned = yaml_scalar(cfg, {"train", "steps"});
    row("Steps run", fmt::format("{} (steps {}–{}){}", st.size(), st.front().step, st.back().step,
                                 planned.empty() ? "" : " of " + planned + " planned"));
  }
  row("Final loss", fmt::format("{} (step {}; {} at step {})", format_loss(st.back().loss),
                                st.back().step, format_loss(st.front().loss), st.front().step));
  {
    std::string range;
    const std::string mean = mean_tokens_per_s(st, &range);
    if (!mean.empty()) row("Mean throughput", fmt::format("{} tokens/s ({})", mean, range));
  }
  {
    const double ms = sum_of(st, &StepRecord::step_ms);
    const double tokens = sum_of(st, &StepRecord::tokens);
    row("Training time",
        fmt::format("{} in steps; {} tokens", format_duration(ms / 1000.0), format_count(tokens)));
  }
  {
    size_t skipped = 0, checkpoints = 0;
    for (const StepRecord& x : st) skipped += x.skipped, checkpoints += x.checkpoint_ms > 0;
    row("Skipped steps", fmt::format("{}", skipped));
    if (checkpoints > 0)
      row("Checkpoints", fmt::format("{} taken; training blocked {:.0f} ms in all", checkpoints,
                                     sum_of(st, &StepRecord::checkpoint_ms)));
  }
  {
    const Peak p = peak_memory(st);
    if (p.rank >= 0)
      row("Peak memory",
          fmt::format("{} (rank {}, step {})", svg::format_bytes(p.bytes), p.rank, p.step));
  }
  return s;
}

std::string render_report_html(const RunReport& r, const std::string& generated_at) {
  using svg::html_escape;
  std::string config_note;
  const YAML::Node cfg = load_config(r, &config_note);
  std::vector<std::string> notes = r.notes;
  if (!config_note.empty()) notes.push_back(config_note);
  if (!r.has_config) notes.push_back("The run directory has no config.resolved.yaml.");
  const std::vector<StepRecord>& st = r.steps;
  const std::string name = fs::path(r.run_dir).filename().empty()
                               ? fs::path(r.run_dir).parent_path().filename().string()
                               : fs::path(r.run_dir).filename().string();

  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += "<title>zerotrain report — " + html_escape(name) + "</title>\n<style>" + kCss +
       "</style>\n</head>\n<body data-zt-check=\"pending\">\n";
  h += fmt::format(
      "<header><h1>zerotrain run report — {}</h1><p class=\"sub\">{} · steps {}–{} · generated "
      "{} by ztctl report</p></header>\n",
      html_escape(name), html_escape(r.run_dir), st.front().step, st.back().step,
      html_escape(generated_at));

  // The numbers a reader looks for first.
  {
    std::string range;
    const std::string mean = mean_tokens_per_s(st, &range);
    const Peak p = peak_memory(st);
    const int world = world_size(r);
    const std::string stage = yaml_scalar(cfg, {"zero_optimization", "stage"});
    double first_loss = kNaN;
    for (const StepRecord& s : st)
      if (std::isfinite(s.loss)) {
        first_loss = s.loss;
        break;
      }
    h += "<section class=\"cards\">";
    h += card("final loss", format_loss(st.back().loss),
              std::isfinite(first_loss)
                  ? fmt::format("from {} at the start", format_loss(first_loss))
                  : "");
    h += card("steps", fmt::format("{}", st.size()),
              fmt::format("{}–{}", st.front().step, st.back().step));
    h += card("throughput", mean.empty() ? "" : mean + " tok/s", "mean");
    h += card("training time", format_duration(sum_of(st, &StepRecord::step_ms) / 1000.0),
              "sum of step times");
    h += card("peak memory", p.rank >= 0 ? svg::format_bytes(p.bytes) : "",
              p.rank >= 0 ? fmt::format("rank {}", p.rank) : "");
    h += card("world", world > 0 ? fmt::format("{} rank{}", world, world == 1 ? "" : "s") : "",
              stage.empty() ? "" : "ZeRO stage " + stage);
    h += "</section>\n";
  }
  if (!notes.empty()) {
    h += "<div class=\"notes\">";
    for (const std::string& n : notes) h += "<p>" + html_escape(n) + "</p>";
    h += "</div>\n";
  }

  auto section = [&](const std::string& id, const std::string& title,
                     const std::vector<Figure>& figs) {
    h += "<section id=\"" + id + "\"><h2>" + html_escape(title) + "</h2><div class=\"grid\">\n";
    for (const Figure& f : figs) h += figure_html(f);
    h += "</div></section>\n";
  };
  section("training", "Training", training_figures(r, cfg));
  section("speed", "Throughput, time and communication", speed_figures(r));
  section("memory", "Memory", memory_figures(r));

  h += "<section id=\"run\"><h2>The run</h2><div class=\"two\"><div><h3>Summary</h3>"
       "<table class=\"summary\">";
  for (const auto& [label, value] : summarize(r).rows)
    h += "<tr><th>" + html_escape(label) + "</th><td>" + html_escape(value) + "</td></tr>";
  h += "</table></div>\n<div><h3>Events</h3>";
  if (!r.has_events || r.events.empty()) {
    h += "<p>No events.log in the run directory.</p>";
  } else {
    h += "<table class=\"events\"><tr><th>time (UTC)</th><th>event</th></tr>";
    size_t rows = 0;
    for (const EventLine& e : r.events) {
      if (rows++ == kMaxEventRows) break;
      std::string lower = e.text;
      for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      const bool bad = lower.find("fail") != std::string::npos ||
                       lower.find("error") != std::string::npos ||
                       lower.find("abort") != std::string::npos;
      const bool good = lower.rfind("finished", 0) == 0 || lower.rfind("stopped", 0) == 0;
      const char* cls = bad ? " class=\"bad\"" : good ? " class=\"good\"" : "";
      h += fmt::format("<tr{}><td class=\"time\">{}</td><td class=\"text\">{}</td></tr>", cls,
                       html_escape(e.time), html_escape(e.text));
    }
    h += "</table>";
    if (r.events.size() > kMaxEventRows)
      h +=
          fmt::format("<p>… and {} more lines in events.log.</p>", r.events.size() - kMaxEventRows);
  }
  h += "</div></div>\n<h3>config.resolved.yaml</h3>";
  h += r.has_config ? "<pre class=\"config\">" + html_escape(r.config_text) + "</pre>"
                    : "<p>Not in the run directory.</p>";
  h += "</section>\n<footer>Charts: hover a chart for the values at a step. Colours: Okabe–Ito "
       "palette.</footer>\n";
  h += std::string("<script>") + kSelfCheck + "</script>\n</body>\n</html>\n";
  return h;
}

Status write_file_atomically(const std::string& path, const std::string& html) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      return make_error(StatusCode::kIoError, "cannot create {}: {}", tmp, std::strerror(errno));
    out << html;
    out.flush();
    if (!out.good()) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return make_error(StatusCode::kIoError, "writing {} failed (disk full?)", tmp);
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    return make_error(StatusCode::kIoError, "cannot rename {} to {}: {}", tmp, path, ec.message());
  }
  return Status::ok();
}

int run_report(const std::string& run_dir, const std::string& out_path, std::ostream& out,
               std::ostream& err) {
  Result<RunReport> report = load_run_report(run_dir);
  if (!report.is_ok()) {
    err << "ztctl report: error: " << report.status().message() << "\n";
    return 1;
  }
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S UTC", &tm);
  const std::string html = render_report_html(*report, stamp);
  if (Status st = write_file_atomically(out_path, html); !st.is_ok()) {
    err << "ztctl report: error: " << st.message() << "\n";
    return 1;
  }
  size_t charts = 0, placeholders = 0;
  for (size_t p = html.find("class=\"zt-chart"); p != std::string::npos;
       p = html.find("class=\"zt-chart", p + 1)) {
    if (html.compare(p, 30, "class=\"zt-chart zt-placeholder") == 0)
      ++placeholders;
    else
      ++charts;
  }
  out << fmt::format("ztctl report: wrote {} ({} steps, {} charts, {} not recorded in this run)\n",
                     out_path, report->steps.size(), charts, placeholders);
  for (const std::string& n : report->notes) out << "ztctl report: note: " << n << "\n";
  return 0;
}

}  // namespace zt::ctl
