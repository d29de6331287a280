// `ztctl report` without a browser: the axis arithmetic of svg_chart (nice ticks, labels), the
// structure of each chart kind (one path per series with one command per point, one rect per
// bar segment, placeholders without data), HTML escaping of everything that comes from the run
// directory, and how the run directory's files are read: malformed lines are errors naming the
// file and line, a cut-off last line is skipped with a note, a failed report writes nothing.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ctl/report.h"
#include "ctl/svg_chart.h"
#include "tests/cpu/test_util.h"

namespace zt::ctl {
namespace {

namespace fs = std::filesystem;
using zt::testing::TempDir;

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1))
    ++n;
  return n;
}

// The value of `attribute` in every element that has `marker` in its start tag (no std::regex:
// it recurses per character and overflows the stack on a long path).
std::vector<std::string> attribute_of(const std::string& svg, const std::string& marker,
                                      const std::string& attribute) {
  std::vector<std::string> out;
  for (size_t p = svg.find(marker); p != std::string::npos; p = svg.find(marker, p + 1)) {
    const size_t end = svg.find('>', p);
    const size_t a = svg.find(" " + attribute + "=\"", p);
    if (a == std::string::npos || a > end) continue;
    const size_t v = a + attribute.size() + 3;
    out.push_back(svg.substr(v, svg.find('"', v) - v));
  }
  return out;
}

// Whether the page has a chart with this id, with data or as a placeholder.
bool has_chart(const std::string& html, const std::string& id, bool placeholder) {
  return html.find(
             std::string(placeholder ? "class=\"zt-chart zt-placeholder\"" : "class=\"zt-chart\"") +
             " id=\"" + id + "\"") != std::string::npos;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// One metrics.jsonl line as the runtime writes it (runtime/train/run_dir.cpp), two ranks.
std::string metrics_line(int step, double loss, const std::string& extra = "") {
  return "{\"step\":" + std::to_string(step) + ",\"loss\":" + std::to_string(loss) +
         ",\"lr\":0.001,\"grad_norm\":1.5,\"loss_scale\":1.0,\"skipped\":false,\"tokens\":2048,"
         "\"step_ms\":300.0,\"tokens_per_s\":6826.6,\"checkpoint_ms\":0.0,\"peak_memory_bytes\":["
         "{\"rank\":0,\"parameters\":3369984,\"gradients\":3468800,\"optimizer_states\":5054976,"
         "\"activations\":41037824,\"communication\":793280,\"workspace\":99328,\"total\":"
         "53824192},{\"rank\":1,\"parameters\":3369984,\"gradients\":3468800,\"optimizer_states\":"
         "5054976,\"activations\":41037824,\"communication\":793280,\"workspace\":99328,\"total\":"
         "53824192}]" +
         extra + "}\n";
}

// Number of points in an SVG path: one per M or L command.
size_t path_points(const std::string& d) { return count(d, "M") + count(d, "L"); }

// ---- axis arithmetic ----

bool is_nice(double step) {
  const double mag = std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  const double m = step / mag;
  for (double nice : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (std::abs(m - nice) < 1e-6) return true;
  return false;
}

TEST(SvgTicks, CoverTheRangeWithNiceSteps) {
  const svg::Ticks t = svg::nice_ticks(0, 9.3, 5);
  EXPECT_DOUBLE_EQ(t.step, 2.5);
  EXPECT_DOUBLE_EQ(t.lo, 0);
  EXPECT_DOUBLE_EQ(t.hi, 10);
  ASSERT_EQ(t.values.size(), 5u);
  EXPECT_DOUBLE_EQ(t.values[2], 5);

  const svg::Ticks small = svg::nice_ticks(0.0012, 0.0087, 5);
  EXPECT_DOUBLE_EQ(small.step, 0.002);
  EXPECT_DOUBLE_EQ(small.lo, 0);
  EXPECT_NEAR(small.hi, 0.01, 1e-15);

  const svg::Ticks neg = svg::nice_ticks(-3.2, 7.9, 6);
  EXPECT_DOUBLE_EQ(neg.step, 2.5);
  EXPECT_DOUBLE_EQ(neg.lo, -5);
  EXPECT_DOUBLE_EQ(neg.hi, 10);

  // Many ranges: every tick a multiple of a 1/2/2.5/5 step, the range covered, a sane count.
  for (double lo : {-1234.5, -1.0, 0.0, 0.00031, 3.7, 1e6}) {
    for (double span : {1e-5, 0.03, 1.0, 7.0, 99.0, 12345.0, 3e9}) {
      const svg::Ticks k = svg::nice_ticks(lo, lo + span, 5);
      EXPECT_TRUE(is_nice(k.step)) << lo << " " << span << " step " << k.step;
      EXPECT_LE(k.lo, lo + 1e-9 * k.step);
      EXPECT_GE(k.hi, lo + span - 1e-9 * k.step);
      EXPECT_GE(k.values.size(), 2u);
      EXPECT_LE(k.values.size(), 10u) << lo << " " << span;
      for (double v : k.values)
        EXPECT_NEAR(v / k.step, std::round(v / k.step), 1e-6) << lo << " " << span;
    }
  }
}

TEST(SvgTicks, DegenerateAndIntegerRanges) {
  const svg::Ticks c = svg::nice_ticks(5, 5, 5);  // a constant loss scale of 5
  EXPECT_LT(c.lo, 5);
  EXPECT_GT(c.hi, 5);
  // 0.95 / 0.025 rounds to 37.99...: no extra tick below.
  const svg::Ticks one = svg::nice_ticks(0.95, 1.05, 5);
  EXPECT_NEAR(one.lo, 0.95, 1e-12);
  EXPECT_NEAR(one.hi, 1.05, 1e-12);
  EXPECT_EQ(one.values.size(), 5u);
  const svg::Ticks zero = svg::nice_ticks(0, 0, 5);
  EXPECT_DOUBLE_EQ(zero.lo, 0);
  EXPECT_DOUBLE_EQ(zero.hi, 1);
  const svg::Ticks none = svg::nice_ticks(NAN, INFINITY, 5);
  EXPECT_DOUBLE_EQ(none.lo, 0);
  EXPECT_DOUBLE_EQ(none.hi, 1);

  const svg::Ticks steps = svg::nice_ticks(1, 7, 5, /*integer=*/true);
  EXPECT_DOUBLE_EQ(steps.step, 2);
  const svg::Ticks few = svg::nice_ticks(1, 3, 8, /*integer=*/true);
  EXPECT_DOUBLE_EQ(few.step, 1);  // never 0.5 steps
  const svg::Ticks quarter = svg::nice_ticks(0, 9, 5, /*integer=*/true);
  EXPECT_DOUBLE_EQ(quarter.step, 5);  // 2.5 is not an integer step
  const svg::Ticks single = svg::nice_ticks(1, 1, 5, /*integer=*/true);
  EXPECT_DOUBLE_EQ(single.lo, 0);
  EXPECT_DOUBLE_EQ(single.hi, 2);
}

TEST(SvgTicks, LogTicksArePowersOfTen) {
  const svg::Ticks t = svg::log_ticks(0.9, 120);
  EXPECT_DOUBLE_EQ(t.lo, 0.1);
  EXPECT_DOUBLE_EQ(t.hi, 1000);
  EXPECT_EQ(t.values, (std::vector<double>{0.1, 1, 10, 100, 1000}));
  const svg::Ticks narrow = svg::log_ticks(3, 40);  // two decades: 1-2-5 ticks
  EXPECT_EQ(narrow.values, (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  const svg::Ticks constant = svg::log_ticks(65536, 65536);
  EXPECT_LT(constant.lo, 65536);
  EXPECT_GT(constant.hi, 65536);
}

TEST(SvgTicks, Labels) {
  EXPECT_EQ(svg::format_tick(0.1 * 3, 0.1), "0.3");
  EXPECT_EQ(svg::format_tick(1.25, 0.25), "1.25");
  EXPECT_EQ(svg::format_tick(2500, 500), "2500");
  EXPECT_EQ(svg::format_tick(15000, 5000), "15k");
  EXPECT_EQ(svg::format_tick(7500, 2500), "7.5k");
  EXPECT_EQ(svg::format_tick(3e9, 1e9), "3G");
  EXPECT_EQ(svg::format_tick(7.5e-4, 2.5e-4), "7.5e-4");
  EXPECT_EQ(svg::format_tick(1e-5, 5e-6), "1e-5");
  EXPECT_EQ(svg::format_tick(0, 0.5), "0");
  EXPECT_EQ(svg::format_tick(-0.0, 1), "0");
  EXPECT_EQ(svg::format_tick(-5, 2.5), "-5.0");
  EXPECT_EQ(svg::format_value(3.14159), "3.142");
  EXPECT_EQ(svg::format_value(65536), "65.54k");
  EXPECT_EQ(svg::format_value(0.000123), "1.23e-4");
  EXPECT_EQ(svg::format_value(NAN), "n/a");
  EXPECT_EQ(svg::format_bytes(53824192), "51.33 MiB");
  EXPECT_EQ(svg::format_bytes(512), "512 B");
  EXPECT_STREQ(svg::byte_unit(3.0 * 1024 * 1024 * 1024).unit, "GiB");
}

// ---- charts ----

TEST(SvgCharts, LineChartHasOnePathPerSeriesWithEveryPoint) {
  svg::LineChart c;
  c.id = "t";
  c.title = "loss";
  c.x_label = "step";
  c.y_label = "loss";
  c.series.push_back({"a", {1, 2, 3, 4, 5}, {5, 4, 3.5, 3.2, 3}});
  // A gap (non-finite) splits the line: 4 points, two subpaths.
  c.series.push_back({"b", {1, 2, 3, 4, 5}, {5.5, 4.5, NAN, 3.6, 3.1}});
  c.series.push_back({"empty", {1, 2}, {NAN, NAN}});
  c.marks = {3};
  c.marks_label = "skipped step";
  const std::string s = svg::line_chart(c);
  EXPECT_EQ(count(s, "<svg "), 1u);
  EXPECT_NE(s.find("class=\"zt-chart\""), std::string::npos);
  EXPECT_NE(s.find("data-series=\"2\""), std::string::npos);
  EXPECT_NE(s.find("data-points=\"9\""), std::string::npos);
  const std::vector<std::string> d = attribute_of(s, "class=\"zt-series\"", "d");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(path_points(d[0]), 5u);
  EXPECT_EQ(count(d[0], "M"), 1u);
  EXPECT_EQ(path_points(d[1]), 4u);
  EXPECT_EQ(count(d[1], "M"), 2u);
  // Every coordinate inside the viewBox.
  for (const std::string& path : d) {
    std::string numbers = path;
    for (char& ch : numbers)
      if (ch == 'M' || ch == 'L') ch = ' ';
    std::istringstream in(numbers);
    double v;
    size_t n = 0;
    for (; in >> v; ++n) {
      EXPECT_GE(v, 0);
      EXPECT_LE(v, 640);
    }
    EXPECT_EQ(n, 2 * path_points(path)) << path;
  }
  EXPECT_NE(s.find("skipped step"), std::string::npos);  // legend and mark tooltip
  EXPECT_NE(s.find("<title>step 3\na: 3.5\nskipped step</title>"), std::string::npos) << "hover";
  EXPECT_EQ(s.find("NaN"), std::string::npos);
  EXPECT_EQ(s.find("nan"), std::string::npos);
}

TEST(SvgCharts, LinePointsAndThinning) {
  svg::LineChart one;
  one.id = "one";
  one.series.push_back({"only", {7}, {2.5}});
  const std::string s = svg::line_chart(one);
  const std::vector<std::string> d = attribute_of(s, "class=\"zt-series\"", "d");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(path_points(d[0]), 1u);
  EXPECT_NE(d[0].find("h0.1"), std::string::npos);  // a lone point still has a box

  svg::LineChart big;
  big.id = "big";
  svg::Series s2{"many", {}, {}};
  for (int i = 0; i < 50000; ++i) {
    s2.x.push_back(i);
    s2.y.push_back(i == 31337 ? 100.0 : std::sin(i * 0.01));
  }
  big.series.push_back(s2);
  const std::string b = svg::line_chart(big);
  EXPECT_NE(b.find("data-points=\"50000\""), std::string::npos);
  const std::vector<std::string> bd = attribute_of(b, "class=\"zt-series\"", "d");
  ASSERT_EQ(bd.size(), 1u);
  EXPECT_LE(path_points(bd[0]), svg::kMaxPathPoints);
  EXPECT_GE(path_points(bd[0]), svg::kMaxPathPoints / 2);
  EXPECT_LE(count(b, "<rect"), 240u + 1);  // hover columns are bucketed
  // The spike survives thinning: some point sits at the top of the plot.
  EXPECT_LT(b.size(), 400000u);
}

TEST(SvgCharts, StackedBarsHaveOneRectPerSegment) {
  svg::StackedBars c;
  c.id = "mem";
  c.title = "memory";
  c.groups = {"rank 0", "rank 1", "rank 2"};
  c.layers = {"parameters", "activations"};
  c.values = {{100, 200, 300}, {50, 0, 25}};
  c.bytes = true;
  const std::string s = svg::stacked_bar_chart(c);
  EXPECT_EQ(count(s, "class=\"zt-bar\""), 5u);
  EXPECT_NE(s.find("data-series=\"2\""), std::string::npos);
  EXPECT_NE(s.find("data-points=\"5\""), std::string::npos);
  EXPECT_NE(s.find("rank 1 · parameters: 200 B (100.0% of 200 B)"), std::string::npos);
  for (const std::string& h : attribute_of(s, "class=\"zt-bar\"", "height"))
    EXPECT_GT(std::stod(h), 0);

  svg::StackedBars zero = c;
  zero.values = {{0, 0, 0}, {0, 0, 0}};
  const std::string z = svg::stacked_bar_chart(zero);
  EXPECT_NE(z.find("zt-placeholder"), std::string::npos);
  EXPECT_EQ(count(z, "zt-bar"), 0u);
}

TEST(SvgCharts, StackedAreaHasOnePathPerLayer) {
  svg::StackedArea c;
  c.id = "time";
  c.x = {1, 2, 3, 4};
  c.layers = {"forward", "backward", "unused"};
  c.values = {{10, 11, 12, 10}, {20, 21, 19, 22}, {0, 0, 0, 0}};
  c.unit = "ms";
  const std::string s = svg::stacked_area_chart(c);
  const std::vector<std::string> d = attribute_of(s, "class=\"zt-area\"", "d");
  ASSERT_EQ(d.size(), 2u);
  for (const std::string& path : d) EXPECT_EQ(path_points(path), 8u);  // top and bottom edges
  EXPECT_NE(s.find("data-series=\"2\""), std::string::npos);
  EXPECT_NE(s.find("data-points=\"8\""), std::string::npos);
  EXPECT_NE(s.find("total: 30 ms"), std::string::npos);
}

TEST(SvgCharts, PlaceholderDeclaresNoData) {
  const std::string s = svg::placeholder_chart("p", "Step time", "Not recorded <here>");
  EXPECT_NE(s.find("class=\"zt-chart zt-placeholder\""), std::string::npos);
  EXPECT_NE(s.find("data-series=\"0\" data-points=\"0\""), std::string::npos);
  EXPECT_NE(s.find("Not recorded &lt;here&gt;"), std::string::npos);
}

TEST(SvgCharts, Escaping) {
  EXPECT_EQ(svg::html_escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
  svg::LineChart c;
  c.id = "x\"><script>";
  c.title = "<b>";
  c.series.push_back({"rank <0> & co", {1, 2}, {1, 2}});
  c.series.push_back({"b", {1, 2}, {2, 3}});
  const std::string s = svg::line_chart(c);
  EXPECT_EQ(s.find("<script>"), std::string::npos);
  EXPECT_EQ(s.find("<b>"), std::string::npos);
  EXPECT_NE(s.find("rank &lt;0&gt; &amp; co"), std::string::npos);
}

// ---- the run directory ----

class ReportDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string m;
    for (int s = 1; s <= 6; ++s) m += metrics_line(s, 5.0 - 0.5 * s);
    write_file(dir.file("metrics.jsonl"), m);
    write_file(dir.file("config.resolved.yaml"),
               "# from a <config> & more\nmodel:\n  family: gpt2\n  n_layer: 4\n  n_head: 4\n"
               "  n_embd: 128\n  block_size: 128\n  vocab_size: 256\nzero_optimization:\n"
               "  stage: 2\noptimizer:\n  type: AdamW\n  params:\n    lr: 0.001\n"
               "bf16:\n  enabled: false\nnote: \"</pre><script>alert(1)</script>\"\n");
    write_file(dir.file("events.log"),
               "2026-01-02T03:04:05Z started: 842496 parameters, world 2, ZeRO stage 2, 6 "
               "steps, dtype fp32\n"
               "2026-01-02T03:04:09Z failed on rank 1: <b>bad</b> & \"quoted\"\n"
               "a line without a stamp\n");
  }

  Result<RunReport> load() { return load_run_report(dir.path()); }
  std::string error_of(const Result<RunReport>& r) { return r.status().message(); }

  TempDir dir;
};

TEST_F(ReportDir, RendersEveryChartAndEscapesTheRunDirectory) {
  Result<RunReport> r = load();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->steps.size(), 6u);
  EXPECT_EQ(r->steps[0].peak_memory.size(), 2u);
  EXPECT_EQ(r->steps[0].peak_memory[1].bytes.size(), 6u);
  ASSERT_EQ(r->events.size(), 3u);
  EXPECT_EQ(r->events[0].time, "2026-01-02T03:04:05Z");
  EXPECT_EQ(r->events[2].time, "");

  const std::string html = render_report_html(*r, "now");
  for (const char* id : {"chart-loss", "chart-lr", "chart-grad-norm", "chart-loss-scale",
                         "chart-throughput", "chart-memory-peak", "chart-memory-timeline"}) {
    EXPECT_TRUE(has_chart(html, id, false)) << id << " missing or a placeholder";
  }
  for (const char* id : {"chart-step-time", "chart-comm", "chart-memory-phases"}) {
    EXPECT_TRUE(has_chart(html, id, true)) << id;
  }
  EXPECT_EQ(count(html, "Not recorded in this run"), 3u);
  EXPECT_EQ(count(html, "class=\"zt-bar\""), 12u);  // 2 ranks x 6 categories

  // Nothing from the run directory reaches the page unescaped.
  EXPECT_EQ(html.find("<script>alert"), std::string::npos);
  EXPECT_NE(html.find("&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("# from a &lt;config&gt; &amp; more"), std::string::npos);
  EXPECT_EQ(html.find("<b>bad</b>"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;bad&lt;/b&gt; &amp; &quot;quoted&quot;"), std::string::npos);
  EXPECT_EQ(count(html, "<script>"), 1u);                                    // only the self-check
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // no network
  EXPECT_EQ(html.find("https://"), std::string::npos);

  const RunSummary s = summarize(*r);
  auto value = [&](const std::string& label) {
    for (const auto& [k, v] : s.rows)
      if (k == label) return v;
    return std::string("(none)");
  };
  EXPECT_EQ(value("ZeRO"), "stage 2");
  EXPECT_EQ(value("Parameters"), "842,496 (0.84 M)");
  EXPECT_EQ(value("World size"), "2 ranks");
  EXPECT_EQ(value("Precision"), "fp32");
  EXPECT_NE(value("Model").find("4 layers"), std::string::npos);
  EXPECT_NE(value("Optimizer").find("AdamW · lr 0.001"), std::string::npos);
  EXPECT_EQ(value("Steps run"), "6 (steps 1–6)");
  EXPECT_EQ(value("Final loss"), "2.0000 (step 6; 4.5000 at step 1)");
  EXPECT_EQ(value("Mean throughput"),
            "6,827 tokens/s (steps 2–6; the first step is left out as warm-up)");
}

TEST_F(ReportDir, OptionalFieldsAreDrawnWhenPresent) {
  std::string m;
  for (int s = 1; s <= 4; ++s)
    m += metrics_line(
        s, 4.0,
        ",\"time_ms\":{\"forward\":100,\"backward\":150,\"recompute\":0,\"comm_wait\":20,"
        "\"optimizer\":30,\"offload_io\":0},\"time_ms_by_rank\":[{\"rank\":0,\"forward\":99,"
        "\"backward\":150,\"comm_wait\":10},{\"rank\":1,\"forward\":101,\"backward\":150,"
        "\"comm_wait\":30}],\"comm_bytes\":[{\"rank\":0,\"bytes\":1048576},{\"rank\":1,"
        "\"bytes\":2097152}]");
  write_file(dir.file("metrics.jsonl"), m);
  std::string mem;
  for (int step : {3, 4})
    for (int rank : {0, 1})
      for (const char* phase : {"forward block 0", "backward block 0", "optimizer"})
        mem += "{\"step\":" + std::to_string(step) + ",\"rank\":" + std::to_string(rank) +
               ",\"phase\":\"" + phase +
               "\",\"bytes\":{\"parameters\":1000,\"activations\":5000,\"gradients\":300}}\n";
  write_file(dir.file("memory.jsonl"), mem);
  Result<RunReport> r = load();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->steps[0].comm_bytes.value_or(0), 3145728);
  EXPECT_EQ(r->phase_memory.size(), 12u);
  const std::string html = render_report_html(*r, "now");
  EXPECT_EQ(count(html, "class=\"zt-chart zt-placeholder\""), 0u);
  EXPECT_EQ(count(html, "Not recorded in this run"), 0u);
  for (const char* id : {"chart-step-time", "chart-step-time-ranks", "chart-comm",
                         "chart-memory-phases-rank-0", "chart-memory-phases-rank-1"}) {
    EXPECT_TRUE(has_chart(html, id, false)) << id;
  }
  // Step time: forward, backward, comm_wait, optimizer (zero layers left out).
  EXPECT_EQ(count(html, "class=\"zt-area\""), 4u);
  EXPECT_NE(html.find("Memory by phase, rank 1, step 4"), std::string::npos);
  EXPECT_NE(html.find("backward block 0 · activations: 4.883 KiB"), std::string::npos);
  // comm_bytes per step: the job (3 MiB) and each rank.
  EXPECT_NE(html.find("whole job: 3 MiB"), std::string::npos);
}

TEST_F(ReportDir, PartialLastLineIsSkippedWithANote) {
  std::ofstream(dir.file("metrics.jsonl"), std::ios::app) << "{\"step\":7,\"loss\":1.2,\"lr\":";
  Result<RunReport> r = load();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->steps.size(), 6u);
  ASSERT_EQ(r->notes.size(), 1u);
  EXPECT_NE(r->notes[0].find("metrics.jsonl:7"), std::string::npos) << r->notes[0];
  EXPECT_NE(render_report_html(*r, "now").find("is incomplete"), std::string::npos);
}

TEST_F(ReportDir, RepeatedStepsKeepTheLastRecord) {
  std::ofstream(dir.file("metrics.jsonl"), std::ios::app)
      << metrics_line(5, 9.0) << metrics_line(6, 8.0);
  Result<RunReport> r = load();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->steps.size(), 6u);
  EXPECT_DOUBLE_EQ(r->steps[5].loss, 8.0);
  ASSERT_EQ(r->notes.size(), 1u);
  EXPECT_NE(r->notes[0].find("2 step(s) appear more than once"), std::string::npos);
}

TEST_F(ReportDir, MalformedInputNamesTheFileAndLine) {
  const std::string metrics = dir.file("metrics.jsonl");
  struct Case {
    std::string content;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"", "has no complete step"},
      {metrics_line(1, 4) + "{\"step\":2,\"loss\":\n" + metrics_line(3, 4),
       metrics + ":2: not valid JSON"},
      {metrics_line(1, 4) + "not json at all\n", metrics + ":2: not valid JSON"},
      {metrics_line(1, 4) + "\n" + metrics_line(2, 4), metrics + ":2: empty line"},
      {"[1, 2]\n", metrics + ":1: an array, expected one JSON object per line"},
      {"{\"loss\": 3}\n", metrics + ":1: no 'step'"},
      {"{\"step\": 1}\n", metrics + ":1: no 'loss'"},
      {"{\"step\": 1.5, \"loss\": 3}\n", metrics + ":1: 'step' is a number, expected an integer"},
      {"{\"step\": 1, \"loss\": \"low\"}\n", metrics + ":1: 'loss' is a string"},
      {"{\"step\": 1, \"loss\": 3, \"skipped\": 0}\n", "'skipped' is a number"},
      {"{\"step\": 1, \"loss\": 3, \"peak_memory_bytes\": {}}\n",
       "'peak_memory_bytes' is an object"},
      {"{\"step\": 1, \"loss\": 3, \"peak_memory_bytes\": [{\"rank\": 0, \"total\": \"x\"}]}\n",
       metrics + ":1: peak_memory_bytes[0]: 'total' is a string"},
      {"{\"step\": 1, \"loss\": 3, \"time_ms\": [1, 2]}\n", "'time_ms' is an array"},
      {"{\"step\": 1, \"loss\": 3, \"comm_bytes\": \"lots\"}\n", "'comm_bytes' is a string"},
  };
  for (const Case& c : cases) {
    write_file(metrics, c.content);
    Result<RunReport> r = load();
    ASSERT_FALSE(r.is_ok()) << c.content;
    EXPECT_NE(error_of(r).find(c.expected), std::string::npos)
        << "got: " << error_of(r) << "\nwanted: " << c.expected;
  }
  fs::remove(metrics);
  EXPECT_NE(error_of(load()).find("metrics.jsonl not found"), std::string::npos);
  EXPECT_NE(error_of(load_run_report(dir.file("nope"))).find("does not exist"), std::string::npos);

  write_file(metrics, metrics_line(1, 4));
  write_file(dir.file("memory.jsonl"),
             "{\"step\":1,\"rank\":0,\"phase\":\"forward\",\"bytes\":{}}\n"
             "{\"step\":1,\"rank\":0,\"bytes\":{}}\n");
  EXPECT_NE(error_of(load()).find(dir.file("memory.jsonl") + ":2: no 'phase'"), std::string::npos)
      << error_of(load());
}

TEST_F(ReportDir, AFailedReportWritesNothing) {
  const std::string out = dir.file("out/report.html");
  fs::create_directories(dir.file("out"));
  write_file(dir.file("metrics.jsonl"), metrics_line(1, 4) + "garbage\n");
  std::ostringstream o, e;
  EXPECT_EQ(run_report(dir.path(), out, o, e), 1);
  EXPECT_NE(e.str().find("metrics.jsonl:2: not valid JSON"), std::string::npos) << e.str();
  EXPECT_TRUE(fs::is_empty(dir.file("out")));

  // A good report replaces an old one whole, leaving no temporary file.
  write_file(out, "old");
  write_file(dir.file("metrics.jsonl"), metrics_line(1, 4) + metrics_line(2, 3));
  std::ostringstream o2, e2;
  ASSERT_EQ(run_report(dir.path(), out, o2, e2), 0) << e2.str();
  EXPECT_NE(o2.str().find("7 charts, 3 not recorded"), std::string::npos) << o2.str();
  const std::string html = read_file(out);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  size_t files = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator(dir.file("out"))) ++files;
  EXPECT_EQ(files, 1u);

  // An unwritable destination is an error, and nothing is left behind.
  std::ostringstream o3, e3;
  EXPECT_EQ(run_report(dir.path(), dir.file("missing/dir/report.html"), o3, e3), 1);
  EXPECT_NE(e3.str().find("cannot create"), std::string::npos) << e3.str();
}

}  // namespace
}  // namespace zt::ctl
